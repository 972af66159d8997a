//! `rng = "numpy"` reproduces the original's generator byte for byte: the repository fixture and
//! a set of other parameter sets whose file hashes were recorded from the original.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use common::fixture_dir;
use kg_data::{DataConfig, DataError, Dataset, FactType, RngKind, generate};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The nine files the original writes (everything but our `meta.json`).
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

fn numpy(cfg: DataConfig) -> DataConfig {
    DataConfig {
        rng: RngKind::Numpy,
        ..cfg
    }
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn the_python_fixture_is_reproduced_byte_for_byte() {
    // The fixture's parameters are the defaults (tests/fixtures/README.md).
    let cfg = numpy(DataConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let ds = generate(&cfg).unwrap();
    ds.save(dir.path()).unwrap();
    for name in ORIGINAL_FILES {
        let expected = fs::read(fixture_dir().join(name)).unwrap();
        let written = fs::read(dir.path().join(name)).unwrap();
        assert!(written == expected, "{name} differs from the original's");
    }
    let mut expected_names: Vec<String> = ORIGINAL_FILES.iter().map(|s| s.to_string()).collect();
    expected_names.push("meta.json".into());
    expected_names.sort();
    assert_eq!(file_names(dir.path()), expected_names);

    // meta.json records the stream, and the dataset reads back equal.
    let meta_text = fs::read_to_string(dir.path().join("meta.json")).unwrap();
    assert!(meta_text.contains("\"rng\": \"numpy\""), "{meta_text}");
    let back = Dataset::load(dir.path()).unwrap();
    assert_eq!(back, ds);
    assert_eq!(back.meta.unwrap().params.rng, RngKind::Numpy);
}

#[test]
fn the_fixture_functor_and_counts_come_out_of_the_numpy_stream() {
    let ds = generate(&numpy(DataConfig::default())).unwrap();
    let meta = ds.meta.as_ref().unwrap();
    assert_eq!(meta.e1, ["<e_0>", "<e_3>", "<e_5>", "<e_6>", "<e_7>"]);
    assert_eq!(
        ds.functor().unwrap().pairs,
        [(0, 2), (3, 4), (5, 9), (6, 8), (7, 1)]
    );
    let c = ds.counts();
    assert_eq!(c[&FactType::IdCompositional], 106);
    assert_eq!(c[&FactType::NearOodCompositional], 14);
    assert_eq!(meta.counts, c);
}

/// `tests/fixtures/numpy-datasets.json`: one entry per parameter set.
#[derive(Debug, Deserialize)]
struct Recorded {
    /// How the hashes were produced.
    #[allow(dead_code)]
    how: String,
    numpy_version: String,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    params: DataConfig,
    sha256: BTreeMap<String, String>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The hashes in `tests/fixtures/numpy-datasets.json` were produced outside this repository:
/// the original's `toy_model/src/data/builder.py` (`build_dataset_with_functor` with each case's
/// parameters, then `save_dataset`), run with NumPy 2.4.6 in a scratch venv, and
/// `hashlib.sha256` of every file it wrote. The datasets themselves are not stored (too large).
/// The cases cover: |E| 20 / |R| 1000 / seed 7; `include_f_inverse` with atomic OOD and
/// "other" entities; `duplicate_relation` with 5 relations (repeated compositional texts, kept
/// as the original keeps them); |R| 20 000 and 10 001 (the tail-shuffle branch of `choice`);
/// seed 0 and seed 2⁶⁴ − 1 (a two-word `SeedSequence` entropy).
#[test]
fn datasets_of_the_original_match_their_recorded_hashes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/numpy-datasets.json");
    let recorded: Recorded = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(recorded.numpy_version, "2.4.6");
    assert!(recorded.cases.len() >= 5);
    for case in &recorded.cases {
        let cfg = numpy(case.params.clone());
        let dir = tempfile::tempdir().unwrap();
        generate(&cfg).unwrap().save(dir.path()).unwrap();
        let names: Vec<&String> = case.sha256.keys().collect();
        let mut expected_names: Vec<&str> = ORIGINAL_FILES.to_vec();
        expected_names.sort_unstable();
        assert_eq!(names, expected_names, "{}", case.name);
        for (name, hash) in &case.sha256 {
            let bytes = fs::read(dir.path().join(name)).unwrap();
            assert_eq!(&sha256_hex(&bytes), hash, "{}: {name}", case.name);
        }
    }
}

#[test]
fn chacha_meta_leaves_the_stream_implicit_and_numpy_meta_names_it() {
    let chacha = tempfile::tempdir().unwrap();
    generate(&DataConfig::default())
        .unwrap()
        .save(chacha.path())
        .unwrap();
    let text = fs::read_to_string(chacha.path().join("meta.json")).unwrap();
    assert!(!text.contains("\"rng\""), "{text}");
    assert_eq!(
        Dataset::load(chacha.path())
            .unwrap()
            .meta
            .unwrap()
            .params
            .rng,
        RngKind::Chacha
    );
    // The two streams give different graphs from the same seed.
    let a = generate(&DataConfig::default()).unwrap();
    let b = generate(&numpy(DataConfig::default())).unwrap();
    assert_ne!(a.test, b.test);
}

#[test]
fn numpy_generation_validates_the_config_first() {
    let bad = numpy(DataConfig {
        sub_size: Some(6),
        ..DataConfig::default()
    });
    assert!(matches!(
        generate(&bad),
        Err(DataError::Config {
            key: "sub_size",
            ..
        })
    ));
}

#[test]
fn numpy_generation_is_deterministic_and_seeded() {
    let cfg = numpy(DataConfig {
        num_entities: 13,
        num_relations: 30,
        sub_size: Some(4),
        atomic_ood_ratio: 0.3,
        include_f_inverse: true,
        seed: 5,
        ..DataConfig::default()
    });
    let a = generate(&cfg).unwrap();
    assert_eq!(a, generate(&cfg).unwrap());
    let other = generate(&DataConfig { seed: 6, ..cfg }).unwrap();
    assert_ne!(a.test, other.test);
}

#[test]
fn repeated_texts_are_kept_as_the_original_keeps_them() {
    // The "duplicate-relation" case of numpy-datasets.json: 5 relations for 4 out-edges per
    // head, so two paths can spell the same text, once ID and once near-OOD in the original.
    let cfg = numpy(DataConfig {
        num_entities: 12,
        num_relations: 5,
        sub_size: Some(5),
        atomic_ood_ratio: 0.1,
        compositional_ood_ratio: 0.2,
        analogical_ood_ratio: 0.4,
        duplicate_relation: true,
        seed: 11,
        ..DataConfig::default()
    });
    let ds = generate(&cfg).unwrap();
    let mut kinds: BTreeMap<&[u32], Vec<FactType>> = BTreeMap::new();
    for ex in &ds.test {
        kinds.entry(&ex.tokens).or_default().push(ex.kind);
    }
    assert_eq!(kinds.values().filter(|k| k.len() > 1).count(), 7);
    assert_eq!(
        kinds
            .values()
            .filter(|k| k.iter().any(|&t| t != k[0]))
            .count(),
        2
    );
    // Written exactly, but not a dataset this crate reads back: one text, two types.
    let dir = tempfile::tempdir().unwrap();
    ds.save(dir.path()).unwrap();
    let err = Dataset::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("test.json") && err.contains("typed"), "{err}");
}
