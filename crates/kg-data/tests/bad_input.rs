//! Every malformed or inconsistent input is an error naming its file and row, never a panic.

use std::fs;
use std::path::{Path, PathBuf};

use kg_data::json::{self, Row};
use kg_data::{DataConfig, DataError, Dataset, generate};
use tempfile::TempDir;

fn fresh() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let cfg = DataConfig {
        num_entities: 8,
        num_relations: 50,
        sub_size: Some(4),
        analogical_ood_ratio: 0.25,
        ..DataConfig::default()
    };
    generate(&cfg).unwrap().save(dir.path()).unwrap();
    dir
}

fn rows(dir: &Path, name: &str) -> Vec<Row> {
    json::read_rows(&dir.join(name)).unwrap()
}

fn put_rows(dir: &Path, name: &str, rows: &[Row]) {
    fs::write(dir.join(name), json::rows_to_py_json(rows)).unwrap();
}

/// Edits row `i` of `name` and expects the load to fail on that file and row.
fn expect_row_error(name: &str, i: usize, edit: impl FnOnce(&mut Row), needle: &str) {
    let dir = fresh();
    let mut rs = rows(dir.path(), name);
    edit(&mut rs[i]);
    put_rows(dir.path(), name, &rs);
    match Dataset::load(dir.path()) {
        Err(DataError::Row {
            file, row, reason, ..
        }) => {
            assert_eq!(file, dir.path().join(name));
            assert_eq!(row, i, "{reason}");
            assert!(reason.contains(needle), "{reason:?} lacks {needle:?}");
        }
        other => panic!("{name} row {i}: expected a row error, got {other:?}"),
    }
}

fn file_error(dir: &Path) -> (PathBuf, String) {
    match Dataset::load(dir) {
        Err(DataError::File { file, reason }) => (file, reason),
        other => panic!("expected a file error, got {other:?}"),
    }
}

#[test]
fn test_rows() {
    expect_row_error(
        "test.json",
        2,
        |r| r.kind = Some("atomic".into()),
        "unknown fact type",
    );
    expect_row_error("test.json", 0, |r| r.kind = None, "missing type");
    expect_row_error(
        "test.json",
        3,
        |r| r.target_text = format!("{}<e_99>", r.input_text),
        "not in the vocabulary",
    );
    expect_row_error(
        "test.json",
        4,
        |r| r.input_text = format!("{} ", r.input_text),
        "expected '<'",
    );
    expect_row_error(
        "test.json",
        1,
        |r| r.input_text = "<e_0><r_49>".into(),
        "does not start with input",
    );
    expect_row_error(
        "test.json",
        1,
        |r| r.target_text = format!("{}<e_0>", r.target_text),
        "plus one token",
    );
    expect_row_error(
        "test.json",
        1,
        |r| r.kind = Some("ood_analogical".into()),
        "must have the shape",
    );
    expect_row_error(
        "test.json",
        5,
        |r| {
            r.input_text = "<e_1><r_2><r_3>".into();
            r.target_text = "<e_1><r_2><r_3><f>".into();
            r.kind = Some("id_compositional".into());
        },
        "must have the shape",
    );
}

#[test]
fn one_text_with_two_types() {
    let dir = fresh();
    let mut rs = rows(dir.path(), "test.json");
    let mut twin = rs[0].clone();
    twin.kind = Some("ood_atomic".into());
    rs.push(twin);
    put_rows(dir.path(), "test.json", &rs);
    // Keep the per-type file consistent so the conflict itself is what fails.
    fs::remove_file(dir.path().join("ood_atomic.json")).unwrap();
    match Dataset::load(dir.path()) {
        Err(DataError::Row { row, reason, .. }) => {
            assert_eq!(row, rs.len() - 1);
            assert!(reason.contains("but id_atomic in row 0"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn train_rows() {
    let dir = fresh();
    let test = rows(dir.path(), "test.json");
    let ood = test
        .iter()
        .find(|r| r.kind.as_deref() == Some("ood_analogical"))
        .unwrap()
        .clone();
    expect_row_error(
        "train.json",
        2,
        |r| {
            r.input_text = ood.input_text.clone();
            r.target_text = ood.target_text.clone();
        },
        "must be an ID fact",
    );
    expect_row_error(
        "train.json",
        0,
        |r| {
            r.input_text = "<e_0><r_49>".into();
            r.target_text = "<e_0><r_49><e_0>".into();
        },
        "not among the facts",
    );
    expect_row_error(
        "train.json",
        1,
        |r| r.kind = Some("id_analogical".into()),
        "typed",
    );
    expect_row_error(
        "train.json",
        1,
        |r| r.input_text = "<f>".into(),
        "does not start with input",
    );
}

#[test]
fn vocabulary() {
    let dir = fresh();
    let mut vocab = json::read_strings(&dir.path().join("vocab.json")).unwrap();
    vocab[3] = "<cat>".into();
    fs::write(
        dir.path().join("vocab.json"),
        json::strings_to_py_json(&vocab),
    )
    .unwrap();
    match Dataset::load(dir.path()) {
        Err(DataError::Row {
            file, row: 3, text, ..
        }) => {
            assert!(file.ends_with("vocab.json"));
            assert_eq!(text, "<cat>");
        }
        other => panic!("{other:?}"),
    }
    vocab[3] = "<e_0>".into();
    fs::write(
        dir.path().join("vocab.json"),
        json::strings_to_py_json(&vocab),
    )
    .unwrap();
    assert!(matches!(
        Dataset::load(dir.path()),
        Err(DataError::Row { row: 3, .. })
    ));
    fs::write(dir.path().join("vocab.json"), "[\"<e_0>\", 7]").unwrap();
    assert!(matches!(
        Dataset::load(dir.path()),
        Err(DataError::Row { row: 1, .. })
    ));
    fs::write(dir.path().join("vocab.json"), "[\"<e_0>\"").unwrap();
    assert!(matches!(
        Dataset::load(dir.path()),
        Err(DataError::Json { .. })
    ));
}

#[test]
fn whole_files() {
    let dir = fresh();
    fs::write(dir.path().join("test.json"), "{}").unwrap();
    let (file, reason) = file_error(dir.path());
    assert!(file.ends_with("test.json") && reason.contains("expected a JSON array"));

    let dir = fresh();
    fs::remove_file(dir.path().join("train.json")).unwrap();
    assert!(!Dataset::exists(dir.path()));
    match Dataset::load(dir.path()) {
        Err(DataError::Missing { path }) => assert!(path.ends_with("train.json")),
        other => panic!("{other:?}"),
    }

    let dir = fresh();
    fs::write(dir.path().join("train.json"), "").unwrap();
    assert!(matches!(
        Dataset::load(dir.path()),
        Err(DataError::Json { .. })
    ));
}

#[test]
fn per_type_files_must_match_test_json() {
    let dir = fresh();
    let mut rs = rows(dir.path(), "id_compositional.json");
    rs.swap(0, 1);
    put_rows(dir.path(), "id_compositional.json", &rs);
    match Dataset::load(dir.path()) {
        Err(DataError::Row { file, row: 0, .. }) => {
            assert!(file.ends_with("id_compositional.json"))
        }
        other => panic!("{other:?}"),
    }

    let dir = fresh();
    let mut rs = rows(dir.path(), "id_analogical.json");
    rs.pop();
    put_rows(dir.path(), "id_analogical.json", &rs);
    let (file, reason) = file_error(dir.path());
    assert!(file.ends_with("id_analogical.json"), "{reason}");
}

#[test]
fn analogical_facts_that_are_not_a_bijection() {
    let dir = fresh();
    let mut rs = rows(dir.path(), "test.json");
    let functor_rows: Vec<usize> = rs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.input_text.ends_with("<f>"))
        .map(|(i, _)| i)
        .collect();
    // Give the second <f> fact the first one's image.
    let image = rs[functor_rows[0]]
        .target_text
        .replace(&rs[functor_rows[0]].input_text, "");
    let second = &mut rs[functor_rows[1]];
    second.target_text = format!("{}{}", second.input_text, image);
    put_rows(dir.path(), "test.json", &rs);
    for name in [
        "id_analogical.json",
        "ood_analogical.json",
        "train.json",
        "meta.json",
    ] {
        fs::remove_file(dir.path().join(name)).unwrap();
    }
    put_rows(dir.path(), "train.json", &[]);
    let (file, reason) = file_error(dir.path());
    assert!(file.ends_with("test.json"));
    assert!(reason.contains("same image"), "{reason}");
}

#[test]
fn inconsistent_meta() {
    type Edit = fn(&mut serde_json::Value);
    let edits: [(&str, Edit); 5] = [
        ("counts.id_atomic", |m| m["counts"]["id_atomic"] = 1.into()),
        ("vocab_size", |m| m["vocab_size"] = 3.into()),
        ("train_rows", |m| m["train_rows"] = 0.into()),
        ("functor", |m| {
            let a = m["functor"][0][1].clone();
            m["functor"][0][1] = m["functor"][1][1].clone();
            m["functor"][1][1] = a;
        }),
        ("newer", |m| m["format_version"] = 99.into()),
    ];
    for (needle, edit) in edits {
        let dir = fresh();
        let path = dir.path().join("meta.json");
        let mut meta: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        edit(&mut meta);
        fs::write(&path, meta.to_string()).unwrap();
        let (file, reason) = file_error(dir.path());
        assert_eq!(file, path);
        assert!(reason.contains(needle), "{reason:?} lacks {needle:?}");
    }

    let dir = fresh();
    let path = dir.path().join("meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    meta["colour"] = "blue".into();
    fs::write(&path, meta.to_string()).unwrap();
    match Dataset::load(dir.path()) {
        Err(DataError::Json { file, error }) => {
            assert_eq!(file, path);
            assert!(error.to_string().contains("colour"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unwritable_output_directory() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a_file");
    fs::write(&blocker, "x").unwrap();
    let target = blocker.join("dataset");
    let ds = generate(&DataConfig::default()).unwrap();
    match ds.save(&target) {
        Err(DataError::Io { path, .. }) => assert_eq!(path, target),
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_configs_fail_before_generating() {
    for (cfg, key) in [
        (
            DataConfig {
                sub_size: Some(6),
                ..DataConfig::default()
            },
            "sub_size",
        ),
        (
            DataConfig {
                compositional_ood_ratio: f64::NAN,
                ..DataConfig::default()
            },
            "compositional_ood_ratio",
        ),
        (
            DataConfig {
                num_relations: 0,
                ..DataConfig::default()
            },
            "num_relations",
        ),
        (
            DataConfig {
                num_entities: 3,
                ..DataConfig::default()
            },
            "sub_size",
        ),
    ] {
        match generate(&cfg) {
            Err(DataError::Config { key: k, .. }) => assert_eq!(k, key),
            other => panic!("{cfg:?}: {other:?}"),
        }
    }
}
