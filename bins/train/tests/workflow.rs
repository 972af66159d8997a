//! What a researcher sees running `train`: the banner, the provenance of the run, the pointer to
//! the accuracy plot, the refusal to silently do nothing, flags that do not swallow their
//! neighbours, a dry run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_train"))
        .args(args)
        .env_remove("WANDB_API_KEY")
        .env("RUST_LOG", "info")
        .output()
        .expect("running train")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn tiny(dir: &Path, epochs: &str) -> Vec<String> {
    [
        "--config",
        &repo().join("configs/tiny.toml").display().to_string(),
        "--data_dir",
        &dir.join("data").display().to_string(),
        "--save_dir",
        &dir.join("run").display().to_string(),
        "--epochs",
        epochs,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn the_banner_and_the_provenance_say_how_the_run_was_made() {
    let tmp = tempfile::tempdir().unwrap();
    let args = tiny(tmp.path(), "3");
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = train(&refs);
    assert!(out.status.success(), "{}", text(&out));
    let msg = text(&out);
    for want in [
        "libtorch ",
        "Cpu, 1 thread",
        "M parameters (d_model 32, 1 layer, 2 heads, vocabulary",
        "training rows; test rows id_atomic",
        "(fresh, 3 epochs); W&B off (use_wandb = false",
        "accuracy per fact type over training",
    ] {
        assert!(msg.contains(want), "missing {want:?} in:\n{msg}");
    }
    let run = tmp.path().join("run");
    let prov: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(run.join("provenance.json")).unwrap())
            .unwrap();
    let p = &prov[0];
    assert_eq!(
        p["command"][0].as_str().unwrap(),
        env!("CARGO_BIN_EXE_train")
    );
    assert!(
        p["command"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--epochs")
    );
    assert_eq!(p["version"], env!("CARGO_PKG_VERSION"));
    assert!(p["git_commit"].as_str().unwrap().len() >= 7, "{p}");
    assert!(["true", "false", "unknown"].contains(&p["git_dirty"].as_str().unwrap()));
    assert!(p["libtorch"].as_str().unwrap().starts_with('2'), "{p}");
    assert!(p["tch"].as_str().unwrap().starts_with("0."), "{p}");
    assert!(p["device"].as_str().unwrap().starts_with("Cpu"), "{p}");
    assert!(!p["host"].as_str().unwrap().is_empty());
    assert!(p["started_at"].as_str().unwrap().ends_with('Z'));
    // A resumed invocation adds its own entry, and says when there is nothing left to do.
    let out = train(&["--resume", run.to_str().unwrap(), "--epochs", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("nothing to train"), "{}", text(&out));
    let prov: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(run.join("provenance.json")).unwrap())
            .unwrap();
    assert_eq!(prov.len(), 2);
}

#[test]
fn a_dry_run_checks_flags_and_touches_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = tiny(tmp.path(), "3");
    args.push("--dry-run".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = train(&refs);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("would train 3 epochs"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "nothing written"
    );
    let out = train(&["--lr", "fast", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("--lr"), "{}", text(&out));
    // A dry run refuses what the run would refuse: a missing run, a used directory.
    let missing = tmp.path().join("not-there");
    let out = train(&["--resume", missing.to_str().unwrap(), "--dry-run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("not-there/config.toml"),
        "{}",
        text(&out)
    );
    let out = train(&refs[..refs.len() - 1]);
    assert!(out.status.success(), "{}", text(&out));
    let out = train(&refs);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("already holds a run with a checkpoint at epoch 3"));
    let run = tmp.path().join("run");
    let out = train(&[
        "--resume",
        run.to_str().unwrap(),
        "--epochs",
        "5",
        "--dry-run",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "would resume {} from epoch 3 (step ",
            run.display()
        )),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("to epoch 5"), "{}", text(&out));
    let mut over = refs.clone();
    over.push("--overwrite");
    let before = std::fs::read(run.join("metrics.jsonl")).unwrap();
    let out = train(&over);
    assert!(
        text(&out).contains("(replacing a run with a checkpoint at epoch 3"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(run.join("metrics.jsonl")).unwrap(), before);
}

#[test]
fn the_originals_yaml_config_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let out = train(&[
        "--config",
        repo()
            .join("tests/fixtures/original-configs/default.yaml")
            .to_str()
            .unwrap(),
        "--data_dir",
        tmp.path().join("data").to_str().unwrap(),
        "--save_dir",
        tmp.path().join("run").to_str().unwrap(),
        "--num_relations",
        "60",
        "--epochs",
        "2",
        "--no_wandb",
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let cfg = std::fs::read_to_string(tmp.path().join("run/config.toml")).unwrap();
    assert!(
        cfg.contains("n_layer = 2") && cfg.contains("lr = 0.0001"),
        "{cfg}"
    );
}

#[test]
fn a_missing_file_is_named_once_with_its_cause_once() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope.toml");
    let out = train(&["--config", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(msg.contains(&missing.display().to_string()), "{msg}");
    assert_eq!(msg.matches("(os error 2)").count(), 1, "{msg}");
    let out = train(&["--resume", tmp.path().join("run").to_str().unwrap()]);
    let msg = text(&out);
    assert!(msg.contains("run/config.toml"), "{msg}");
    assert_eq!(msg.matches("(os error 2)").count(), 1, "{msg}");
}
