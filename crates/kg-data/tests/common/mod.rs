//! Invariant checks shared by the integration tests.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use kg_data::{Dataset, Example, FactType, Functor};

/// The Python original's dataset, in the repository's `tests/fixtures`.
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/python-dataset-e10")
}

/// `round(n · (1 − ratio))`, half to even, as the spec's split rule reads in Python.
pub fn py_split(n: usize, ood_ratio: f64) -> usize {
    (n as f64 * (1.0 - ood_ratio)).round_ties_even() as usize
}

/// Atomic fact: (head, relation, tail, is_ood).
pub type Atomic = (u32, u32, u32, bool);

/// What the checks learned about a dataset, for extra assertions by the caller.
pub struct Report {
    pub functor: Functor,
    pub others: Vec<u32>,
    pub e1_atomic: Vec<Atomic>,
    pub other_atomic: Vec<Atomic>,
}

/// Checks the structural invariants of a generated dataset that hold for every parameter set, using only
/// the facts (the functor is recovered from them, as for a dataset without `meta.json`).
pub fn check_invariants(ds: &Dataset, duplicate_relation: bool) -> Report {
    let functor = ds.functor().expect("functor");
    let f: HashMap<u32, u32> = functor.pairs.iter().copied().collect();
    let e1: BTreeSet<u32> = functor.e1.iter().copied().collect();
    let e2: BTreeSet<u32> = functor.e2.iter().copied().collect();
    let others: Vec<u32> = ds
        .vocab
        .entity_ids()
        .into_iter()
        .filter(|e| !e1.contains(e) && !e2.contains(e))
        .collect();
    assert_eq!(e1.len(), e2.len(), "E1 and E2 have sub_size entities each");

    // test.json holds every fact once.
    let mut seen = BTreeSet::new();
    for ex in &ds.test {
        assert!(
            seen.insert(ex.tokens.clone()),
            "duplicate test fact {:?}",
            ex.tokens
        );
    }

    // Atomic facts per category.
    let atomic: Vec<Atomic> = ds
        .test
        .iter()
        .filter(|e| matches!(e.kind, FactType::IdAtomic | FactType::OodAtomic))
        .map(|e| {
            (
                e.tokens[0],
                e.tokens[1],
                e.tokens[2],
                e.kind == FactType::OodAtomic,
            )
        })
        .collect();
    let in_cat = |set: &dyn Fn(u32) -> bool| -> Vec<Atomic> {
        atomic
            .iter()
            .copied()
            .filter(|&(h, _, t, _)| {
                if set(h) {
                    assert!(set(t), "edge leaves its category: {h} -> {t}");
                    true
                } else {
                    false
                }
            })
            .collect()
    };
    let e1_atomic = in_cat(&|x| e1.contains(&x));
    let e2_atomic = in_cat(&|x| e2.contains(&x));
    let other_set: BTreeSet<u32> = others.iter().copied().collect();
    let other_atomic = in_cat(&|x| other_set.contains(&x));
    assert_eq!(
        e1_atomic.len() + e2_atomic.len() + other_atomic.len(),
        atomic.len()
    );

    // E1 and the others are complete directed graphs: one edge per ordered pair.
    for (facts, nodes) in [(&e1_atomic, e1.len()), (&other_atomic, others.len())] {
        let pairs: BTreeSet<(u32, u32)> = facts.iter().map(|&(h, _, t, _)| (h, t)).collect();
        assert_eq!(pairs.len(), facts.len(), "one edge per ordered pair");
        assert_eq!(facts.len(), nodes * nodes.saturating_sub(1));
        assert!(facts.iter().all(|&(h, _, t, _)| h != t), "no self-loops");
    }

    // E2 is exactly the functor image of the ID E1 facts, all ID.
    assert!(
        e2_atomic.iter().all(|&(.., ood)| !ood),
        "E2 has no OOD atomic facts"
    );
    let mirrored: BTreeSet<(u32, u32, u32)> = e1_atomic
        .iter()
        .filter(|&&(.., ood)| !ood)
        .map(|&(h, r, t, _)| (f[&h], r, f[&t]))
        .collect();
    let e2_set: BTreeSet<(u32, u32, u32)> =
        e2_atomic.iter().map(|&(h, r, t, _)| (h, r, t)).collect();
    assert_eq!(e2_set, mirrored);

    // Distinct relations on one head's out-edges in E1 (hence E2) unless allowed.
    if !duplicate_relation {
        let mut per_head: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
        for &(h, r, _, _) in e1_atomic.iter().chain(&e2_atomic) {
            assert!(
                per_head.entry(h).or_default().insert(r),
                "head {h} repeats relation {r}"
            );
        }
    }

    // Compositional facts are exactly the 2-hop paths with t != s; far-OOD iff an OOD hop.
    let mut out: BTreeMap<u32, Vec<Atomic>> = BTreeMap::new();
    for &a in &atomic {
        out.entry(a.0).or_default().push(a);
    }
    let mut paths: BTreeMap<[u32; 4], Vec<bool>> = BTreeMap::new();
    for &(s, r1, b, ood1) in &atomic {
        for &(_, r2, t, ood2) in out.get(&b).map(Vec::as_slice).unwrap_or(&[]) {
            if t != s {
                paths.entry([s, r1, r2, t]).or_default().push(ood1 || ood2);
            }
        }
    }
    let comp: Vec<&Example> = ds.test.iter().filter(|e| e.kind.fact_len() == 4).collect();
    let comp_set: BTreeSet<[u32; 4]> = comp
        .iter()
        .map(|e| [e.tokens[0], e.tokens[1], e.tokens[2], e.tokens[3]])
        .collect();
    assert_eq!(comp_set, paths.keys().copied().collect::<BTreeSet<_>>());
    for ex in &comp {
        let key = [ex.tokens[0], ex.tokens[1], ex.tokens[2], ex.tokens[3]];
        let via = &paths[&key];
        if via.len() == 1 {
            assert_eq!(ex.kind == FactType::FarOodCompositional, via[0], "{key:?}");
        } else if ex.kind == FactType::FarOodCompositional {
            assert!(via.iter().any(|&o| o), "{key:?}");
        } else {
            assert!(via.iter().any(|&o| !o), "{key:?}");
        }
    }

    // Analogical facts: one <f> fact per E1 entity, matching the functor.
    let fid = ds.vocab.functor_id().expect("<f>");
    let forward: Vec<&Example> = ds
        .test
        .iter()
        .filter(|e| e.tokens.len() == 3 && e.tokens[1] == fid)
        .collect();
    assert_eq!(forward.len(), e1.len());
    if let Some(iid) = ds.vocab.functor_inverse_id() {
        let inverse: BTreeSet<(u32, u32)> = ds
            .test
            .iter()
            .filter(|e| e.tokens.len() == 3 && e.tokens[1] == iid)
            .map(|e| (e.tokens[0], e.tokens[2]))
            .collect();
        let expected: BTreeSet<(u32, u32)> = functor.pairs.iter().map(|&(a, b)| (b, a)).collect();
        assert_eq!(inverse, expected);
    }

    // train.json = the ID facts, nothing else.
    let id_facts: Vec<&Example> = ds.test.iter().filter(|e| e.kind.is_id()).collect();
    assert_eq!(ds.train.len(), id_facts.len());
    let id_set: BTreeSet<&Vec<u32>> = id_facts.iter().map(|e| &e.tokens).collect();
    for ex in &ds.train {
        assert!(ex.kind.is_id());
        assert!(id_set.contains(&ex.tokens));
    }
    let counts = ds.counts();
    assert_eq!(counts.values().sum::<usize>(), ds.test.len());
    assert_eq!(
        ds.train.len(),
        counts[&FactType::IdAtomic]
            + counts[&FactType::IdCompositional]
            + counts[&FactType::IdAnalogical]
    );

    Report {
        functor,
        others,
        e1_atomic,
        other_atomic,
    }
}

/// The entity token ids named in `names`.
pub fn ids(ds: &Dataset, names: &[String]) -> Vec<u32> {
    names
        .iter()
        .map(|n| ds.vocab.id(n).expect("token"))
        .collect()
}
