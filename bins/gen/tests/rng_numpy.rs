//! End to end: the `gen` binary with `--rng numpy` (or `rng = "numpy"` in `[data]`) writes the
//! original's dataset of the repository fixture byte for byte; bad values fail cleanly.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The original's files, as in `tests/fixtures/python-dataset-e10/`.
const ORIGINAL_FILES: [&str; 9] = [
    "vocab.json",
    "train.json",
    "test.json",
    "ood_atomic.json",
    "id_compositional.json",
    "near_ood_compositional.json",
    "far_ood_compositional.json",
    "id_analogical.json",
    "ood_analogical.json",
];

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/python-dataset-e10")
}

fn gen_cmd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gen"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running gen")
}

fn assert_is_the_fixture(dir: &Path) {
    for name in ORIGINAL_FILES {
        let expected = fs::read(fixture_dir().join(name)).unwrap();
        let written = fs::read(dir.join(name)).unwrap();
        assert!(written == expected, "{name} differs from the original's");
    }
    let meta = fs::read_to_string(dir.join("meta.json")).unwrap();
    assert!(meta.contains("\"rng\": \"numpy\""), "{meta}");
}

#[test]
fn rng_numpy_flag_reproduces_the_fixture() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ds");
    let run = gen_cmd(&["--rng", "numpy", "--output_dir", out.to_str().unwrap()]);
    assert!(run.status.success(), "{run:?}");
    assert_is_the_fixture(&out);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("rng numpy"), "{stdout}");
}

#[test]
fn rng_numpy_in_the_config_reproduces_the_fixture_with_the_original_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("gen.toml");
    fs::write(&config, "[data]\nrng = \"numpy\"\n").unwrap();
    let out = tmp.path().join("ds");
    let run = gen_cmd(&[
        "--config",
        config.to_str().unwrap(),
        "--num_entities",
        "10",
        "--num_relations",
        "10000",
        "--sub_size",
        "5",
        "--seed",
        "42",
        "--output-dir",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{run:?}");
    assert_is_the_fixture(&out);
}

#[test]
fn the_default_stream_stays_chacha() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ds");
    let run = gen_cmd(&["--output_dir", out.to_str().unwrap()]);
    assert!(run.status.success(), "{run:?}");
    let meta = fs::read_to_string(out.join("meta.json")).unwrap();
    assert!(!meta.contains("\"rng\""), "{meta}");
    let train = fs::read(out.join("train.json")).unwrap();
    assert!(train != fs::read(fixture_dir().join("train.json")).unwrap());
}

#[test]
fn unknown_rng_values_are_clear_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ds");
    let run = gen_cmd(&["--rng", "mt19937", "--output_dir", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "a usage error: {stderr}");
    assert!(
        stderr.contains("--rng") && stderr.contains("mt19937"),
        "{stderr}"
    );
    assert!(stderr.contains("chacha, numpy"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let config = tmp.path().join("gen.toml");
    fs::write(&config, "[data]\nrng = \"NumPy\"\n").unwrap();
    let run = gen_cmd(&[
        "--config",
        config.to_str().unwrap(),
        "--output_dir",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("rng") && stderr.contains("\"NumPy\""),
        "{stderr}"
    );
    assert!(stderr.contains("chacha, numpy"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!out.exists(), "nothing is written on error");
}
