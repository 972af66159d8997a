//! `train --rng torch` from the command line: the flag exists, and what the original's stream
//! cannot reproduce (a tied head, several members in one process) is refused before anything
//! runs, naming the key.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_train"))
        .args(args)
        .env_remove("WANDB_API_KEY")
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

#[test]
fn the_originals_stream_is_a_flag_and_its_refusals_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let config = repo().join("configs/original.toml").display().to_string();
    let save = tmp.path().join("run").display().to_string();
    let base = ["--config", &config, "--save_dir", &save, "--dry-run"];

    let out = train(&[&base[..], &["--rng", "torch"]].concat());
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("would train"), "{}", text(&out));

    let out = train(&[&base[..], &["--rng", "torch", "--print-config"]].concat());
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("rng = \"torch\""), "{}", text(&out));

    let out = train(&[&base[..], &["--rng", "torch", "--dropout", "0.1"]].concat());
    assert!(
        out.status.success(),
        "dropout is reproduced: {}",
        text(&out)
    );

    let out = train(&[&base[..], &["--rng", "torch", "--tie_weights"]].concat());
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("`rng`") && msg.contains("`tie_weights`"),
        "{msg}"
    );

    let out = train(&[&base[..], &["--rng", "numpy"]].concat());
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(msg.contains("--rng") && msg.contains("torch"), "{msg}");

    let out = train(&[
        "--ensemble",
        &config,
        &config,
        "--rng",
        "torch",
        "--dry-run",
    ]);
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("`rng`") && msg.contains("ensemble") && msg.contains("one per process"),
        "{msg}"
    );
}
