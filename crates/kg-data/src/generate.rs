//! The construction of the synthetic knowledge graph, step by step.
//!
//! [`generate`] draws from the stream that [`DataConfig::rng`] names:
//! - [`RngKind::Chacha`] (the default): this crate's seeded ChaCha20 [`Sampler`] and the build
//!   order below. Byte-stable across platforms and releases, the same distribution as the
//!   original's generator, but not its draws.
//! - [`RngKind::Numpy`]: NumPy's `default_rng(seed)` ([`crate::numpy_rng`]) with the original
//!   builder's own order of operations (see `generate_numpy.rs`): the files of the original's
//!   `generate_data.py` for the same parameters and seed, byte for byte.
//!
//! With ChaCha, every random choice is drawn from one [`Sampler`] in a fixed order, so a seed
//! and the parameters determine the dataset exactly. The order of draws is part of the format:
//! 1. shuffle the entity indices `0..N` (E1 = first `sub_size`, E2 = next `sub_size`, the rest
//!    are "other" entities);
//! 2. shuffle E2 (sorted by index) to get the images of E1 (sorted by index): the functor;
//! 3. for each E1 head in index order and each E1 tail in index order (tail ≠ head), draw a
//!    relation with `below(R)`, redrawing relations this head already uses unless
//!    `duplicate_relation`; then the same for the other entities, repeats allowed;
//! 4. shuffle the atomic facts of step 3 (E1 edges, then other edges, in draw order) and keep
//!    the first `round(n·(1 − atomic_ood_ratio))` as ID;
//! 5. mirror every ID E1 fact into E2 (no draws);
//! 6. for each source entity in index order, each out-edge sorted by (relation, tail) and each
//!    out-edge of the tail likewise, skip paths returning to the source and texts already
//!    produced; a path with an OOD hop is far-OOD (no draw), any other draws one `unit_f64`
//!    and is near-OOD when it is below `compositional_ood_ratio`;
//! 7. list `(e, <f>, f(e))` for E1 in index order, then `(f(e), <f_inv>, e)` when requested,
//!    shuffle, and keep the first `round(n·(1 − analogical_ood_ratio))` as ID.
//!
//! Rounding is half-to-even, as Python's `round`. Within each type the written rows are sorted
//! by token ids, so file order does not depend on the order of draws.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::{
    DataConfig, DataError, Dataset, Example, FORMAT_VERSION, FactType, Meta, RngKind, Sampler,
    Vocab,
};

/// One directed edge `(head, relation, tail)` as token ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Edge {
    h: u32,
    r: u32,
    t: u32,
}

/// `round(n · keep_share)` with Python's half-to-even rule, clamped to `0..=n`.
pub(crate) fn split_point(n: usize, ood_ratio: f64) -> usize {
    let kept = (n as f64 * (1.0 - ood_ratio)).round_ties_even();
    // The product lies in [0, n] for ratios in [0, 1]; the clamp guards float edge cases.
    (kept.max(0.0) as usize).min(n)
}

/// Generates the dataset for `cfg`: vocabulary, train rows (ID facts), test rows
/// (every fact with its type) and [`Meta`], from the stream [`DataConfig::rng`] names (see the
/// module docs).
///
/// # Errors
/// [`DataError::Config`] when [`DataConfig::validate`] rejects `cfg`; generation itself cannot
/// fail afterwards.
pub fn generate(cfg: &DataConfig) -> Result<Dataset, DataError> {
    match cfg.rng {
        RngKind::Chacha => generate_chacha(cfg),
        RngKind::Numpy => crate::generate_numpy::generate_numpy(cfg),
    }
}

/// [`generate`] with this crate's ChaCha20 stream and build order.
fn generate_chacha(cfg: &DataConfig) -> Result<Dataset, DataError> {
    cfg.validate()?;
    let n = cfg.num_entities;
    let sub = cfg.resolved_sub_size();
    let vocab = Vocab::build(n, cfg.num_relations, cfg.include_f_inverse);
    // validate() guarantees every id below fits in u32; relations follow the entities.
    let relation_base = n as u32;
    let num_rel = cfg.num_relations as u64;
    let mut rng = Sampler::new(cfg.seed);

    // Step 1: categories.
    let mut perm: Vec<u32> = (0..n as u32).collect();
    rng.shuffle(&mut perm);
    let mut e1 = perm[..sub].to_vec();
    let mut e2 = perm[sub..2 * sub].to_vec();
    let mut others = perm[2 * sub..].to_vec();
    e1.sort_unstable();
    e2.sort_unstable();
    others.sort_unstable();

    // Step 2: functor.
    let mut images = e2.clone();
    rng.shuffle(&mut images);
    let f: HashMap<u32, u32> = e1.iter().copied().zip(images.iter().copied()).collect();

    // Step 3: complete graphs on E1 and on the other entities.
    let mut atomic = Vec::new();
    for &h in &e1 {
        let mut used = HashSet::new();
        for &t in e1.iter().filter(|&&t| t != h) {
            let r = loop {
                let r = rng.below(num_rel);
                // validate() ensures sub − 1 ≤ R, so this terminates.
                if cfg.duplicate_relation || used.insert(r) {
                    break r;
                }
            };
            atomic.push(Edge {
                h,
                r: relation_base + r as u32,
                t,
            });
        }
    }
    for &h in &others {
        for &t in others.iter().filter(|&&t| t != h) {
            let r = rng.below(num_rel);
            atomic.push(Edge {
                h,
                r: relation_base + r as u32,
                t,
            });
        }
    }

    // Step 4: atomic split.
    rng.shuffle(&mut atomic);
    let n_id = split_point(atomic.len(), cfg.atomic_ood_ratio);
    let mut facts: Vec<(Edge, bool)> = atomic
        .iter()
        .enumerate()
        .map(|(i, &e)| (e, i >= n_id))
        .collect();

    // Step 5: E2 mirrors the ID E1 facts.
    let mirrored: Vec<(Edge, bool)> = facts
        .iter()
        .filter_map(|&(e, ood)| {
            let (fh, ft) = (f.get(&e.h)?, f.get(&e.t)?);
            (!ood).then_some((
                Edge {
                    h: *fh,
                    r: e.r,
                    t: *ft,
                },
                false,
            ))
        })
        .collect();
    facts.extend(mirrored);

    let mut out: Vec<Vec<(u32, u32, bool)>> = vec![Vec::new(); n];
    for &(e, ood) in &facts {
        out[e.h as usize].push((e.r, e.t, ood));
    }
    for edges in &mut out {
        edges.sort_unstable();
    }

    let mut test: Vec<Example> = facts
        .iter()
        .map(|&(e, ood)| Example {
            tokens: vec![e.h, e.r, e.t],
            kind: if ood {
                FactType::OodAtomic
            } else {
                FactType::IdAtomic
            },
        })
        .collect();

    // Step 6: two-hop facts.
    let mut seen = HashSet::new();
    for s in 0..n as u32 {
        for &(r1, b, ood1) in &out[s as usize] {
            for &(r2, t, ood2) in &out[b as usize] {
                if t == s {
                    continue;
                }
                let tokens = vec![s, r1, r2, t];
                // With repeated relations two paths can spell the same text; keep the first.
                if !seen.insert(tokens.clone()) {
                    continue;
                }
                let kind = if ood1 || ood2 {
                    FactType::FarOodCompositional
                } else if rng.unit_f64() < cfg.compositional_ood_ratio {
                    FactType::NearOodCompositional
                } else {
                    FactType::IdCompositional
                };
                test.push(Example { tokens, kind });
            }
        }
    }

    // Step 7: functor facts.
    let functor_id = vocab.functor_id();
    let inverse_id = vocab.functor_inverse_id();
    let mut analogical: Vec<Vec<u32>> = Vec::new();
    if let Some(fid) = functor_id {
        analogical.extend(e1.iter().map(|e| vec![*e, fid, f[e]]));
    }
    if let Some(iid) = inverse_id {
        analogical.extend(e1.iter().map(|e| vec![f[e], iid, *e]));
    }
    rng.shuffle(&mut analogical);
    let n_id = split_point(analogical.len(), cfg.analogical_ood_ratio);
    test.extend(
        analogical
            .into_iter()
            .enumerate()
            .map(|(i, tokens)| Example {
                tokens,
                kind: if i < n_id {
                    FactType::IdAnalogical
                } else {
                    FactType::OodAnalogical
                },
            }),
    );

    test.sort_by(|a, b| a.kind.cmp(&b.kind).then_with(|| a.tokens.cmp(&b.tokens)));
    Ok(assemble(cfg, vocab, test, (&e1, &e2, &others), &f))
}

/// A generated dataset from its test rows (in file order): the training rows are the ID ones,
/// and `meta.json` records `cfg` with `sub_size` resolved, the categories `(E1, E2, others)`
/// (each sorted by id), the functor `f`, the per-type counts and the sizes.
pub(crate) fn assemble(
    cfg: &DataConfig,
    vocab: Vocab,
    test: Vec<Example>,
    (e1, e2, others): (&[u32], &[u32], &[u32]),
    f: &HashMap<u32, u32>,
) -> Dataset {
    let train: Vec<Example> = test.iter().filter(|e| e.kind.is_id()).cloned().collect();
    let meta = build_meta(cfg, &vocab, (e1, e2, others), f, &test, train.len());
    Dataset {
        vocab,
        train,
        test,
        meta: Some(meta),
    }
}

fn build_meta(
    cfg: &DataConfig,
    vocab: &Vocab,
    (e1, e2, others): (&[u32], &[u32], &[u32]),
    f: &HashMap<u32, u32>,
    test: &[Example],
    train_rows: usize,
) -> Meta {
    let name = |ids: &[u32]| -> Vec<String> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.iter()
            .filter_map(|&id| vocab.token(id).map(str::to_string))
            .collect()
    };
    let mut counts: BTreeMap<FactType, usize> = FactType::ALL.iter().map(|&t| (t, 0)).collect();
    for ex in test {
        *counts.entry(ex.kind).or_default() += 1;
    }
    let mut sources = e1.to_vec();
    sources.sort_unstable();
    Meta {
        format_version: FORMAT_VERSION,
        params: DataConfig {
            sub_size: Some(cfg.resolved_sub_size()),
            ..cfg.clone()
        },
        e1: name(e1),
        e2: name(e2),
        others: name(others),
        functor: sources
            .iter()
            .filter_map(|e| {
                Some((
                    vocab.token(*e)?.to_string(),
                    vocab.token(*f.get(e)?)?.to_string(),
                ))
            })
            .collect(),
        counts,
        train_rows,
        vocab_size: vocab.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_point_rounds_half_to_even_like_python() {
        // Python: round(2.5) == 2, round(3.5) == 4, round(5 * 0.6) == 3.
        assert_eq!(split_point(5, 0.5), 2);
        assert_eq!(split_point(7, 0.5), 4);
        assert_eq!(split_point(5, 0.4), 3);
        assert_eq!(split_point(20, 0.0), 20);
        assert_eq!(split_point(20, 1.0), 0);
        assert_eq!(split_point(0, 0.3), 0);
        assert_eq!(split_point(10, 0.25), 8); // 7.5 -> 8
        assert_eq!(split_point(6, 0.25), 4); // 4.5 -> 4
    }

    #[test]
    fn default_config_has_the_spec_counts() {
        let ds = generate(&DataConfig::default()).unwrap();
        let c = ds.counts();
        assert_eq!(c[&FactType::IdAtomic], 40);
        assert_eq!(c[&FactType::OodAtomic], 0);
        assert_eq!(
            c[&FactType::IdCompositional] + c[&FactType::NearOodCompositional],
            120
        );
        assert_eq!(c[&FactType::FarOodCompositional], 0);
        assert_eq!(c[&FactType::IdAnalogical], 3);
        assert_eq!(c[&FactType::OodAnalogical], 2);
        assert_eq!(ds.vocab.len(), 10_011);
    }
}
