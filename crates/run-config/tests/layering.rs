//! The layering the README's ARCHITECTURE section promises: the crates that read, write or expand
//! configurations, datasets, metrics and plots build without libtorch. Checked on the resolved
//! dependency graph of the workspace (`cargo metadata`), normal dependencies only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Package name → names of its normal (non-dev, non-build) dependencies.
fn normal_dependencies() -> BTreeMap<String, Vec<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1"])
        .current_dir(&root)
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let names: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    meta["resolve"]["nodes"]
        .as_array()
        .expect("resolve graph")
        .iter()
        .map(|node| {
            let deps = node["deps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|k| k["kind"].is_null())
                })
                .map(|d| names[d["pkg"].as_str().unwrap()].to_string())
                .collect();
            (names[node["id"].as_str().unwrap()].to_string(), deps)
        })
        .collect()
}

fn closure(graph: &BTreeMap<String, Vec<String>>, start: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![start.to_string()];
    while let Some(name) = todo.pop() {
        if seen.insert(name.clone()) {
            todo.extend(graph.get(&name).into_iter().flatten().cloned());
        }
    }
    seen
}

#[test]
fn libtorch_free_crates_do_not_depend_on_tch() {
    let graph = normal_dependencies();
    for name in [
        "kg-data",
        "run-config",
        "wandb-http",
        "plots",
        "sweep",
        "sweep-cli",
    ] {
        assert!(graph.contains_key(name), "{name} is in the workspace");
        let deps = closure(&graph, name);
        for torch in ["tch", "torch-sys"] {
            assert!(!deps.contains(torch), "{name} depends on {torch}");
        }
    }
    // The check itself can fail: the model crate does depend on tch.
    assert!(closure(&graph, "gpt-rope").contains("tch"));
}
