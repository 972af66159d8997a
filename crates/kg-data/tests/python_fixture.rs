//! The dataset written by the Python original reads, tokenises, recovers its functor and
//! writes back byte for byte.

mod common;

use std::fs;

use common::{check_invariants, fixture_dir};
use kg_data::{Dataset, FactType, json, pad_inputs};

#[test]
fn every_file_writes_back_byte_identical() {
    let dir = fixture_dir();
    let mut checked = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let original = fs::read_to_string(&path).unwrap();
        let written = if path.file_name().unwrap() == "vocab.json" {
            json::strings_to_py_json(&json::read_strings(&path).unwrap())
        } else {
            json::rows_to_py_json(&json::read_rows(&path).unwrap())
        };
        assert_eq!(written, original, "{}", path.display());
        checked += 1;
    }
    assert_eq!(checked, 9);
}

#[test]
fn loads_with_the_counts_of_its_readme() {
    let ds = Dataset::load(&fixture_dir()).unwrap();
    assert!(ds.meta.is_none());
    assert_eq!(ds.vocab.len(), 10_011);
    assert_eq!(ds.train.len(), 149);
    assert_eq!(ds.test.len(), 165);
    let c = ds.counts();
    let expected = [
        (FactType::IdAtomic, 40),
        (FactType::OodAtomic, 0),
        (FactType::IdCompositional, 106),
        (FactType::NearOodCompositional, 14),
        (FactType::FarOodCompositional, 0),
        (FactType::IdAnalogical, 3),
        (FactType::OodAnalogical, 2),
    ];
    for (kind, n) in expected {
        assert_eq!(c[&kind], n, "{kind}");
    }
    let first = &ds.train[0];
    assert_eq!(
        ds.vocab.decode(&first.tokens).unwrap(),
        "<e_0><r_2530><e_7>"
    );
    assert_eq!(first.tokens, [0, 10 + 2530, 7]);
    assert_eq!(first.kind, FactType::IdAtomic);
    assert_eq!(ds.train.last().unwrap().kind, FactType::IdAnalogical);
}

#[test]
fn recovers_the_functor_from_the_analogical_facts() {
    let ds = Dataset::load(&fixture_dir()).unwrap();
    let f = ds.functor().unwrap();
    // Read off id_analogical.json and ood_analogical.json.
    assert_eq!(f.pairs, [(0, 2), (3, 4), (5, 9), (6, 8), (7, 1)]);
    assert_eq!(f.e1, [0, 3, 5, 6, 7]);
    assert_eq!(f.e2, [1, 2, 4, 8, 9]);
    assert_eq!(f.ood_sources, [0, 5]);
    assert_eq!(f.image(6), Some(8));
    assert_eq!(f.image(1), None);
}

#[test]
fn satisfies_the_generation_invariants() {
    let ds = Dataset::load(&fixture_dir()).unwrap();
    let report = check_invariants(&ds, false);
    assert!(report.others.is_empty());
    assert_eq!(report.e1_atomic.len(), 20);
}

#[test]
fn saving_the_loaded_fixture_reproduces_its_files() {
    let ds = Dataset::load(&fixture_dir()).unwrap();
    let out = tempfile::tempdir().unwrap();
    ds.save(out.path()).unwrap();
    for entry in fs::read_dir(fixture_dir()).unwrap() {
        let entry = entry.unwrap();
        let written = fs::read(out.path().join(entry.file_name())).unwrap();
        assert_eq!(
            written,
            fs::read(entry.path()).unwrap(),
            "{:?}",
            entry.file_name()
        );
    }
    assert!(!out.path().join("meta.json").exists(), "no meta to write");
    assert_eq!(Dataset::load(out.path()).unwrap(), ds);
}

#[test]
fn pads_the_fixture_rows() {
    let ds = Dataset::load(&fixture_dir()).unwrap();
    let pad = ds.vocab.len() as i64;
    let p = pad_inputs(&ds.test, pad);
    assert_eq!((p.rows, p.width), (165, 3));
    let atomic_rows = p.lengths.iter().filter(|&&l| l == 2).count();
    assert_eq!(atomic_rows, 40 + 3 + 2);
    assert_eq!(p.row(0).unwrap(), [0, 2540, pad]);
    assert_eq!(p.answers[0], 7);
}
