//! `gen` never writes over files that are there, and never leaves half a dataset.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `gen`; whatever a fault does, it answers with an exit status and a message, never a
/// panic.
fn run_gen(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_gen"))
        .args(args)
        .output()
        .expect("running gen");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() != Some(101) && !stderr.contains("panicked"),
        "gen panicked: {stderr}"
    );
    out
}

fn listing(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn an_existing_directory_is_refused_or_replaced_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let d = dir.to_str().unwrap();
    let first = run_gen(&[
        "--output_dir",
        d,
        "--num_entities",
        "8",
        "--num_relations",
        "40",
    ]);
    assert!(first.status.success(), "{first:?}");
    let before = listing(&dir);
    // A second gen into it: refused, nothing changed, the way out named.
    let out = run_gen(&[
        "--output_dir",
        d,
        "--num_entities",
        "6",
        "--num_relations",
        "40",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains("not empty") && msg.contains("--overwrite"),
        "{msg}"
    );
    assert_eq!(listing(&dir), before);
    // A user's own file makes a directory non-empty too.
    let mine = tmp.path().join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "keep").unwrap();
    let out = run_gen(&["--output_dir", mine.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(mine.join("notes.txt")).unwrap(),
        "keep"
    );
    // --overwrite replaces the whole dataset (no file of the old one is left).
    let out = run_gen(&[
        "--output_dir",
        d,
        "--num_entities",
        "6",
        "--num_relations",
        "40",
        "--overwrite",
    ]);
    assert!(out.status.success(), "{out:?}");
    let meta = std::fs::read_to_string(dir.join("meta.json")).unwrap();
    assert!(meta.contains("\"num_entities\": 6"), "{meta}");
    assert_ne!(listing(&dir), before);
    // An empty directory is fine.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(
        run_gen(&["--output_dir", empty.to_str().unwrap()])
            .status
            .success()
    );
    // Nothing but the datasets is left beside them (no staging directories).
    let mut names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["data", "empty", "mine"]);
}

#[test]
fn a_failed_write_leaves_no_partial_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    // The output's parent is a file: the dataset cannot be written at all.
    let blocker = tmp.path().join("a_file");
    std::fs::write(&blocker, "x").unwrap();
    let dir = blocker.join("data");
    let out = run_gen(&["--output_dir", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("a_file"), "{msg}");
    assert_eq!(std::fs::read_to_string(&blocker).unwrap(), "x");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
}

#[test]
fn a_dry_run_writes_nothing_and_the_config_names_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("c.toml");
    let data = tmp.path().join("from-config");
    std::fs::write(
        &cfg,
        format!(
            "[data]\nnum_entities = 8\nnum_relations = 40\n[train]\ndata_dir = \"{}\"\n",
            data.display()
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let out = run_gen(&["--config", c, "--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "would generate 8 entities (E1/E2 of 4), 40 relations, seed 42, rng chacha into {}",
            data.display()
        )),
        "{text}"
    );
    assert!(!data.exists(), "a dry run wrote the dataset");
    // Without --output_dir the dataset goes where train reads it.
    let out = run_gen(&["--config", c]);
    assert!(out.status.success());
    assert!(data.join("train.json").is_file());
    let before = listing(&data);
    let out = run_gen(&["--config", c, "--seed", "3", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    let out = run_gen(&["--config", c, "--seed", "3", "--overwrite", "--dry-run"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("(replacing what is there)"));
    assert_eq!(listing(&data), before, "a dry run changed the dataset");
}
