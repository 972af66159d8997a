//! The original's build order (`build_dataset_with_functor` and `save_dataset` of
//! `toy_model/src/data/builder.py`) over NumPy's stream ([`NumpyRng`]): `rng = "numpy"`.
//!
//! For the same parameters and seed this writes the files of the original's
//! `generate_data.py` byte for byte (`vocab.json`, `train.json`, `test.json` and the six
//! per-type files; `meta.json` is this crate's addition and records `"rng": "numpy"`). The
//! default stream stays this crate's ChaCha20 one ([`crate::Sampler`], see `generate.rs`).
//!
//! The calls, in the original's order, quirks included:
//! 1. `permutation(N)`: E1 = its first `sub_size` entries, E2 the next `sub_size`, the rest
//!    are the "other" entities; all three keep that permuted order;
//! 2. `permutation(E2)`: the images of E1 (in its order): the functor;
//! 3. `choice(R, size=R, replace=False)`: a permuted relation list `R_sub`;
//! 4. for each E1 head and each E1 tail ≠ head (permuted order): `choice(R_sub)` with
//!    `duplicate_relation`, otherwise `choice` of the relations of `R_sub` (in its order) this
//!    head has not used yet; then for the other entities alike, always `choice(R_sub)`;
//! 5. `shuffle` of a copy of those atomic facts (E1 edges, then other edges); the first
//!    `round(n·(1 − atomic_ood_ratio))` (half to even) are ID, the rest OOD;
//! 6. every ID E1 fact, in that shuffled order, is mirrored into E2 (no draws);
//! 7. for each entity in index order, each out-edge of it and each out-edge of its tail, in
//!    insertion order (E1 and other edges as drawn, E2 edges as mirrored), skip paths back to
//!    the source; a path with an OOD hop is far-OOD, any other draws `uniform()` and is ID when
//!    the draw is `> compositional_ood_ratio`, near-OOD otherwise. Repeated texts are kept,
//!    as in the original;
//! 8. the `<f>` facts of E1 (permuted order), then the `<f_inv>` facts when requested,
//!    `shuffle`d; the first `round(n·(1 − analogical_ood_ratio))` are ID.
//!
//! The atomic and analogical facts of each type are written as the original's `sorted()` sets
//! of token-text tuples (Python string order, so `<e_10>` sorts before `<e_2>`); compositional
//! facts keep the order of step 7. `train.json` is ID atomic + ID compositional + ID analogical.
//!
//! Parameters are this crate's [`DataConfig`], as `generate_data.py` passes its config values:
//! in particular `duplicate_relation` defaults to false there and here (the builder function's
//! own default, true, is not used by that script). Parameter sets the original would accept but
//! [`DataConfig::validate`] rejects (E1 of fewer than two entities; fewer relations than a head
//! needs without `duplicate_relation`, where the original silently builds fewer edges) are
//! errors here. Repeated texts (possible with `duplicate_relation` and among the "other"
//! entities) are written as the original writes them, possibly once ID and once OOD; such a
//! dataset is written exactly but [`Dataset::load`] rejects it as inconsistent.

use std::collections::{HashMap, HashSet};

use crate::generate::{assemble, split_point};
use crate::numpy_rng::NumpyRng;
use crate::{DataConfig, DataError, Dataset, Example, FactType, Vocab};

/// One fact as token ids, in the original's tuple order.
type Fact = [u32; 3];

/// The position in `0..len` of the `k`-th entry not at one of `skipped` (sorted ascending).
fn kth_unskipped(skipped: &[usize], k: usize) -> usize {
    let mut pos = k;
    for &s in skipped {
        if s <= pos {
            pos += 1;
        } else {
            break;
        }
    }
    pos
}

/// Sorts facts as Python sorts tuples of their token texts.
fn sort_as_python(vocab: &Vocab, facts: impl IntoIterator<Item = Fact>) -> Vec<Fact> {
    let mut keyed: Vec<(Vec<&str>, Fact)> = facts
        .into_iter()
        .map(|fact| {
            let key = fact
                .iter()
                .map(|&id| vocab.token(id).unwrap_or_default())
                .collect();
            (key, fact)
        })
        .collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, fact)| fact).collect()
}

/// An error for a NumPy call that would raise in the original (excluded by `validate()`).
fn impossible(reason: &str) -> DataError {
    DataError::Config {
        key: "rng",
        value: "\"numpy\"".into(),
        reason: reason.into(),
    }
}

/// [`crate::generate()`] for [`crate::RngKind::Numpy`]: the original's dataset for `cfg`.
///
/// # Errors
/// [`DataError::Config`] when [`DataConfig::validate`] rejects `cfg`.
pub(crate) fn generate_numpy(cfg: &DataConfig) -> Result<Dataset, DataError> {
    cfg.validate()?;
    let n = cfg.num_entities;
    let sub = cfg.resolved_sub_size();
    let num_rel = cfg.num_relations;
    let vocab = Vocab::build(n, num_rel, cfg.include_f_inverse);
    // validate() guarantees every id below fits in u32; relations follow the entities.
    let relation_id = |r: u64| (n as u64 + r) as u32;
    let mut rng = NumpyRng::new(cfg.seed);

    // 1–2: categories and functor.
    let perm: Vec<u32> = rng.permutation(n).into_iter().map(|e| e as u32).collect();
    let e1 = perm[..sub].to_vec();
    let e2 = perm[sub..2 * sub].to_vec();
    let others = perm[2 * sub..].to_vec();
    let mut images = e2.clone();
    rng.shuffle(&mut images);
    let f: HashMap<u32, u32> = e1.iter().copied().zip(images.iter().copied()).collect();

    // 3: the relation list.
    let r_sub = rng
        .choice_without_replacement(num_rel as u64, num_rel as u64)
        .ok_or_else(|| impossible("choice(R, size=R, replace=False) failed"))?;

    // 4: E1 and the other entities, each a complete directed graph.
    let mut atomics: Vec<Fact> = Vec::new();
    let mut out_edges: Vec<Vec<(u32, u32)>> = vec![Vec::new(); n];
    for &h in &e1 {
        // Positions in r_sub of the relations this head already uses, ascending.
        let mut used: Vec<usize> = Vec::new();
        for &t in &e1 {
            if t == h {
                continue;
            }
            let r = if cfg.duplicate_relation {
                *rng.choice(&r_sub)
                    .ok_or_else(|| impossible("choice of an empty relation list"))?
            } else {
                let available = num_rel - used.len();
                if available == 0 {
                    break;
                }
                let k = rng
                    .integers_below(available as u64)
                    .ok_or_else(|| impossible("choice of an empty relation list"))?;
                // k < available ≤ R, so it fits usize.
                let p = kth_unskipped(&used, k as usize);
                let at = used.partition_point(|&u| u < p);
                used.insert(at, p);
                r_sub[p]
            };
            atomics.push([h, relation_id(r), t]);
            out_edges[h as usize].push((relation_id(r), t));
        }
    }
    for &h in &others {
        for &t in &others {
            if t == h {
                continue;
            }
            let r = *rng
                .choice(&r_sub)
                .ok_or_else(|| impossible("choice of an empty relation list"))?;
            atomics.push([h, relation_id(r), t]);
            out_edges[h as usize].push((relation_id(r), t));
        }
    }
    // 5: atomic split.
    let mut shuffled = atomics;
    rng.shuffle(&mut shuffled);
    let n_id = split_point(shuffled.len(), cfg.atomic_ood_ratio);
    let (id_list, ood_list) = shuffled.split_at(n_id);
    let mut id_atomic: HashSet<Fact> = id_list.iter().copied().collect();
    let ood_atomic: HashSet<Fact> = ood_list.iter().copied().collect();

    // 6: E2 mirrors the ID E1 facts, in shuffled order.
    for &[h, r, t] in id_list {
        if let (Some(&h2), Some(&t2)) = (f.get(&h), f.get(&t)) {
            id_atomic.insert([h2, r, t2]);
            out_edges[h2 as usize].push((r, t2));
        }
    }

    // 7: two-hop paths.
    let mut id_comp = Vec::new();
    let mut near_comp = Vec::new();
    let mut far_comp = Vec::new();
    for ent in 0..n as u32 {
        for &(r1, b) in &out_edges[ent as usize] {
            for &(r2, t) in &out_edges[b as usize] {
                if t == ent {
                    continue;
                }
                let fact = vec![ent, r1, r2, t];
                if ood_atomic.contains(&[ent, r1, b]) || ood_atomic.contains(&[b, r2, t]) {
                    far_comp.push(fact);
                } else if rng.uniform() > cfg.compositional_ood_ratio {
                    id_comp.push(fact);
                } else {
                    near_comp.push(fact);
                }
            }
        }
    }

    // 8: functor facts.
    let mut analogical: Vec<Fact> = Vec::new();
    if let Some(fid) = vocab.functor_id() {
        analogical.extend(e1.iter().map(|e| [*e, fid, f[e]]));
    }
    if let Some(iid) = vocab.functor_inverse_id() {
        analogical.extend(e1.iter().map(|e| [f[e], iid, *e]));
    }
    rng.shuffle(&mut analogical);
    let n_id = split_point(analogical.len(), cfg.analogical_ood_ratio);
    let (id_analog, ood_analog) = analogical.split_at(n_id);

    // save_dataset's order of test.json.
    let mut test: Vec<Example> = Vec::new();
    let mut push = |facts: Vec<Vec<u32>>, kind: FactType| {
        test.extend(facts.into_iter().map(|tokens| Example { tokens, kind }));
    };
    let sorted = |facts: Vec<Fact>| -> Vec<Vec<u32>> {
        sort_as_python(&vocab, facts)
            .into_iter()
            .map(|f| f.to_vec())
            .collect()
    };
    push(sorted(id_atomic.into_iter().collect()), FactType::IdAtomic);
    push(
        sorted(ood_atomic.into_iter().collect()),
        FactType::OodAtomic,
    );
    push(id_comp, FactType::IdCompositional);
    push(near_comp, FactType::NearOodCompositional);
    push(far_comp, FactType::FarOodCompositional);
    push(sorted(id_analog.to_vec()), FactType::IdAnalogical);
    push(sorted(ood_analog.to_vec()), FactType::OodAnalogical);
    Ok(assemble(cfg, vocab, test, (&e1, &e2, &others), &f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kth_unskipped_walks_past_the_skipped_positions() {
        let all: Vec<usize> = (0..10).collect();
        for skipped in [vec![], vec![0], vec![3, 4, 7], vec![0, 1, 2, 9], vec![5]] {
            let kept: Vec<usize> = all
                .iter()
                .copied()
                .filter(|p| !skipped.contains(p))
                .collect();
            for (k, &expected) in kept.iter().enumerate() {
                assert_eq!(kth_unskipped(&skipped, k), expected, "{skipped:?} k={k}");
            }
        }
    }

    #[test]
    fn python_order_puts_e_10_before_e_2() {
        let vocab = Vocab::build(12, 3, false);
        let rel = 12;
        let facts = vec![[2, rel, 1], [10, rel, 1], [1, rel, 2], [1, rel, 10]];
        let sorted = sort_as_python(&vocab, facts);
        // "<e_10>" < "<e_1>" < "<e_2>": ">" sorts after the digits.
        assert_eq!(
            sorted,
            [[10, rel, 1], [1, rel, 10], [1, rel, 2], [2, rel, 1]]
        );
    }
}
