//! Metrics that need a forward pass: the attention progress measure and the analogy read-out.
//!
//! The trainer runs the model on a batch of analogical inputs and hands the layer-0 attention
//! weights or the answer-position logits to these functions.

use std::collections::HashSet;

use tch::{Kind, Tensor};

use crate::error::{MetricsError, Result, TorchContext};
use crate::tensor_util::{check_ids, matrix_dims, mean_value};

/// Position of `<f>` in an analogical input `e_s <f>`: the query of the attention progress
/// measure, and the position whose logits predict `f(e_s)`.
pub const ANALOGY_QUERY_POS: i64 = 1;

/// Position of the source entity `e_s` in an analogical input `e_s <f>`.
pub const ANALOGY_SOURCE_POS: i64 = 0;

/// Attention progress measure (paper Eq. 2): mean over batch and heads of
/// `attn[b, h, query_pos, key_pos]`.
///
/// # Arguments
/// * `attn` - [B, H, T, T] attention weights (after softmax) of one layer, layer 0 in the paper;
///   the last two dimensions are query and key positions. B, H ≥ 1.
/// * `query_pos` - query position, [`ANALOGY_QUERY_POS`] for `e_s <f>` inputs.
/// * `key_pos` - key position, [`ANALOGY_SOURCE_POS`] for `e_s <f>` inputs.
///
/// # Errors
/// `Shape` if `attn` is not 4-D, `TooFew` for an empty batch or no heads, `IdOutOfRange` for a
/// position outside the sequence, `Torch`.
pub fn attention_progress(attn: &Tensor, query_pos: i64, key_pos: i64) -> Result<f64> {
    const W: &str = "attention_progress";
    let &[b, h, t_q, t_k] = attn.size().as_slice() else {
        return Err(MetricsError::Shape {
            what: W,
            expected: "[B, H, T, T]".to_string(),
            found: attn.size(),
        });
    };
    for (what, count) in [
        ("attention_progress: batch", b),
        ("attention_progress: heads", h),
    ] {
        if count < 1 {
            return Err(MetricsError::TooFew {
                what,
                expected: 1,
                found: 0,
            });
        }
    }
    check_ids(&[query_pos], t_q, "attention_progress: query_pos")?;
    check_ids(&[key_pos], t_k, "attention_progress: key_pos")?;
    let weights = attn
        .f_detach()
        .and_then(|a| a.f_select(2, query_pos)) // (B, H, T)
        .and_then(|a| a.f_select(2, key_pos)) // (B, H)
        .and_then(|a| a.f_to_kind(Kind::Double))
        .ctx(W)?;
    mean_value(&weights, W)
}

/// Rank of each target among the candidate ids by logit, 1 = best.
///
/// Ties count against the target: rank = number of candidates whose logit is not strictly
/// below the target's (the target included). A model with constant logits therefore gets the
/// worst rank, not a perfect score, and a NaN logit never improves a rank.
///
/// # Arguments
/// * `logits` - [B, V] logits at the answer position.
/// * `targets` - B target ids, each one of `candidates`.
/// * `candidates` - distinct ids in `0..V` to rank among (E2's entity ids for the analogy
///   read-out); at least one.
///
/// # Returns
/// B ranks in `1..=candidates.len()`.
///
/// # Errors
/// `Shape`, `LengthMismatch` (targets vs B), `TooFew` (empty batch or candidate set),
/// `IdOutOfRange`, `DuplicateId`, `TargetNotCandidate`, `Torch`.
pub fn candidate_ranks(logits: &Tensor, targets: &[i64], candidates: &[i64]) -> Result<Vec<i64>> {
    const W: &str = "candidate_ranks";
    let (b, v) = matrix_dims(logits, "candidate_ranks: logits")?;
    if targets.len() as i64 != b {
        return Err(MetricsError::LengthMismatch {
            what: "candidate_ranks: targets",
            expected: b as usize,
            found: targets.len(),
        });
    }
    if targets.is_empty() {
        return Err(MetricsError::TooFew {
            what: "candidate_ranks: targets",
            expected: 1,
            found: 0,
        });
    }
    if candidates.is_empty() {
        return Err(MetricsError::TooFew {
            what: "candidate_ranks: candidates",
            expected: 1,
            found: 0,
        });
    }
    check_ids(candidates, v, "candidate_ranks: candidates")?;
    let mut set = HashSet::with_capacity(candidates.len());
    for &id in candidates {
        if !set.insert(id) {
            return Err(MetricsError::DuplicateId {
                what: "candidate_ranks: candidates",
                id,
            });
        }
    }
    if let Some(row) = targets.iter().position(|id| !set.contains(id)) {
        return Err(MetricsError::TargetNotCandidate {
            what: "candidate_ranks: targets",
            row,
            id: targets[row],
        });
    }

    let device = logits.device();
    let to_device = |ids: &[i64]| Tensor::f_from_slice(ids).and_then(|t| t.f_to_device(device));
    let cand_index = to_device(candidates).ctx(W)?; // (K,)
    let target_index = to_device(targets).and_then(|t| t.f_unsqueeze(1)).ctx(W)?; // (B, 1)
    let logits = logits
        .f_detach()
        .and_then(|l| l.f_to_kind(Kind::Double))
        .ctx(W)?;
    let cand_logits = logits.f_index_select(1, &cand_index).ctx(W)?; // (B, K)
    let target_logits = logits.f_gather(1, &target_index, false).ctx(W)?; // (B, 1)
    let below = cand_logits
        .f_lt_tensor(&target_logits)
        .and_then(|m| m.f_sum_dim_intlist(1i64, false, Kind::Int64))
        .ctx(W)?; // (B,)
    let ranks = below
        .f_neg()
        .and_then(|n| n.f_add_scalar(candidates.len() as i64))
        .and_then(|r| r.f_to_device(tch::Device::Cpu))
        .ctx(W)?;
    Vec::<i64>::try_from(&ranks).ctx(W)
}

/// Hit@1 and mean reciprocal rank of a read-out, from [`candidate_ranks`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Readout {
    /// Share of rows whose target is ranked first.
    pub hit1: f64,
    /// Mean of 1 / rank.
    pub mrr: f64,
    /// Number of rows.
    pub n: usize,
}

/// Analogy read-out: hit@1 and MRR of the targets ranked among the candidates (E2's ids).
///
/// Ranks follow [`candidate_ranks`] (ties count against the target).
///
/// # Arguments
/// * `logits` - [B, V] logits at the answer position of analogical facts.
/// * `targets` - B target ids `f(e_s)`.
/// * `candidates` - distinct candidate ids, E2's entity token ids.
///
/// # Errors
/// Those of [`candidate_ranks`].
pub fn analogy_readout(logits: &Tensor, targets: &[i64], candidates: &[i64]) -> Result<Readout> {
    let ranks = candidate_ranks(logits, targets, candidates)?;
    Ok(readout_from_ranks(&ranks))
}

/// Hit@1 and MRR of a non-empty list of ranks ≥ 1.
fn readout_from_ranks(ranks: &[i64]) -> Readout {
    let n = ranks.len();
    let hits = ranks.iter().filter(|&&r| r == 1).count();
    let rr: f64 = ranks.iter().map(|&r| 1.0 / r as f64).sum();
    Readout {
        hit1: hits as f64 / n as f64,
        mrr: rr / n as f64,
        n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{self, to_mat};
    use tch::Device;

    fn logits_table(rows: &[[f64; 6]]) -> Tensor {
        let flat: Vec<f64> = rows.iter().flatten().copied().collect();
        Tensor::from_slice(&flat).view([rows.len() as i64, 6])
    }

    #[test]
    fn attention_progress_matches_its_loop_twin() {
        tch::manual_seed(4);
        let attn = Tensor::randn([3, 2, 4, 4], (Kind::Float, Device::Cpu)).softmax(-1, Kind::Float);
        for (q, k) in [(1, 0), (3, 2), (0, 0)] {
            let mut sum = 0.0;
            for b in 0..3 {
                for h in 0..2 {
                    sum += attn.double_value(&[b, h, q, k]);
                }
            }
            let found = attention_progress(&attn, q, k).unwrap();
            assert!(
                (found - sum / 6.0).abs() < 1e-7,
                "({q}, {k}): {found} vs {}",
                sum / 6.0
            );
        }
    }

    #[test]
    fn attention_progress_hand_case() {
        // Two inputs, one head, T = 2: the `<f>` row puts 0.25 and 0.75 on the source.
        let attn =
            Tensor::from_slice(&[1.0f32, 0.0, 0.25, 0.75, 1.0, 0.0, 0.75, 0.25]).view([2, 1, 2, 2]);
        let found = attention_progress(&attn, ANALOGY_QUERY_POS, ANALOGY_SOURCE_POS).unwrap();
        assert!((found - 0.5).abs() < 1e-12);
        // The other key of the same row.
        assert!((attention_progress(&attn, 1, 1).unwrap() - 0.5).abs() < 1e-12);
        // Query 0 attends only to itself.
        assert!((attention_progress(&attn, 0, 0).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn attention_progress_rejects_bad_input() {
        let attn = Tensor::zeros([2, 1, 3, 3], (Kind::Float, Device::Cpu));
        assert!(matches!(
            attention_progress(&attn, 3, 0),
            Err(MetricsError::IdOutOfRange {
                id: 3,
                bound: 3,
                ..
            })
        ));
        assert!(matches!(
            attention_progress(&attn, 1, -1),
            Err(MetricsError::IdOutOfRange { id: -1, .. })
        ));
        assert!(matches!(
            attention_progress(&attn.squeeze_dim(1), 1, 0),
            Err(MetricsError::Shape { .. })
        ));
        let empty = Tensor::zeros([0, 1, 3, 3], (Kind::Float, Device::Cpu));
        assert!(matches!(
            attention_progress(&empty, 1, 0),
            Err(MetricsError::TooFew { .. })
        ));
    }

    #[test]
    fn readout_hand_table() {
        // Candidates are ids 2, 3, 4; id 0 has the largest logit but is not a candidate.
        let logits = logits_table(&[
            [10.0, 0.0, 0.1, 0.9, 0.5, 0.0], // target 3: best candidate → rank 1
            [10.0, 0.0, 0.7, 0.6, 0.5, 0.0], // target 4: below 2 and 3 → rank 3
            [10.0, 0.0, 0.4, 0.4, 0.1, 0.0], // target 2: tied with 3 → rank 2 (ties count against)
        ]);
        let targets = [3, 4, 2];
        let candidates = [2, 3, 4];
        assert_eq!(
            candidate_ranks(&logits, &targets, &candidates).unwrap(),
            vec![1, 3, 2]
        );
        let r = analogy_readout(&logits, &targets, &candidates).unwrap();
        assert_eq!(r.n, 3);
        assert!((r.hit1 - 1.0 / 3.0).abs() < 1e-12);
        assert!((r.mrr - (1.0 + 1.0 / 3.0 + 0.5) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn constant_logits_get_the_worst_rank() {
        let logits = Tensor::zeros([2, 6], (Kind::Float, Device::Cpu));
        let r = analogy_readout(&logits, &[2, 4], &[2, 3, 4, 5]).unwrap();
        assert_eq!(r.hit1, 0.0);
        assert!((r.mrr - 0.25).abs() < 1e-12);
    }

    #[test]
    fn ranks_match_their_loop_twin() {
        tch::manual_seed(9);
        let logits = Tensor::randn([8, 20], (Kind::Float, Device::Cpu));
        let candidates: Vec<i64> = (10..20).rev().collect();
        let targets: Vec<i64> = (0..8).map(|i| 10 + (i * 3) % 10).collect();
        let found = candidate_ranks(&logits, &targets, &candidates).unwrap();
        let expected = reference::ranks(&to_mat(&logits), &targets, &candidates);
        assert_eq!(found, expected);
        assert!(found.iter().all(|&r| (1..=10).contains(&r)));
    }

    #[test]
    fn readout_rejects_bad_input() {
        let logits = Tensor::zeros([2, 6], (Kind::Float, Device::Cpu));
        assert!(matches!(
            candidate_ranks(&logits, &[2], &[2, 3]),
            Err(MetricsError::LengthMismatch {
                expected: 2,
                found: 1,
                ..
            })
        ));
        assert!(matches!(
            candidate_ranks(&logits, &[2, 5], &[2, 3]),
            Err(MetricsError::TargetNotCandidate { row: 1, id: 5, .. })
        ));
        assert!(matches!(
            candidate_ranks(&logits, &[2, 3], &[2, 3, 2]),
            Err(MetricsError::DuplicateId { id: 2, .. })
        ));
        assert!(matches!(
            candidate_ranks(&logits, &[2, 3], &[2, 3, 6]),
            Err(MetricsError::IdOutOfRange {
                index: 2,
                id: 6,
                bound: 6,
                ..
            })
        ));
        assert!(matches!(
            candidate_ranks(&logits, &[2, 3], &[]),
            Err(MetricsError::TooFew { .. })
        ));
        let empty = Tensor::zeros([0, 6], (Kind::Float, Device::Cpu));
        assert!(matches!(
            candidate_ranks(&empty, &[], &[2]),
            Err(MetricsError::TooFew { .. })
        ));
        assert!(matches!(
            candidate_ranks(&logits.view([12]), &[2], &[2]),
            Err(MetricsError::Shape { .. })
        ));
    }
}
