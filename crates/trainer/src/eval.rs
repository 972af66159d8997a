//! Evaluation: last-token CE, PPL, ACC, PROB and N per fact type, and their macro averages.
//!
//! All test rows go through the model (every member at once) in as few forward passes as memory
//! allows (chunks whose `[K·rows, V]` logits stay under [`MAX_LOGIT_ELEMENTS`]); per-row results
//! are summed per member and type on the device, and the only host synchronisation is the final
//! read of a `[K·7, 3]` table.
//!
//! [`evaluate_as_original`] is the original's evaluation, batch by batch, for runs on its random
//! stream.

use std::collections::BTreeMap;

use gpt_rope::{Gpt, Members, Mode};
use kg_data::FactType;
use tch::{Device, Kind, Tensor};

use crate::TrainError;
use crate::config::keys::{self, TypeMetric};
use crate::data::Split;

/// Upper bound on the elements of one chunk's logits (256 MiB of float32).
pub const MAX_LOGIT_ELEMENTS: i64 = 1 << 26;

/// The metrics of one fact type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TypeMetrics {
    /// Mean last-token cross-entropy.
    pub ce: f64,
    /// `exp(min(ce, 20))`.
    pub ppl: f64,
    /// Share of rows whose argmax is the answer.
    pub acc: f64,
    /// Mean softmax probability of the answer.
    pub prob: f64,
    /// Rows.
    pub n: usize,
}

/// The result of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalReport {
    /// Metrics of every type present (N > 0).
    pub per_type: BTreeMap<FactType, TypeMetrics>,
    /// Mean CE over the types present.
    pub macro_ce: f64,
    /// Mean ACC over the types present.
    pub macro_acc: f64,
}

impl EvalReport {
    /// The evaluation's keys and values (`val/macro/CE`, `val_CE/<type>`, …; see
    /// [`crate::config::keys`]).
    pub fn to_row(&self) -> Vec<(String, f64)> {
        let mut row = vec![
            (keys::VAL_MACRO_CE.to_string(), self.macro_ce),
            (keys::VAL_MACRO_ACC.to_string(), self.macro_acc),
        ];
        for (&kind, m) in &self.per_type {
            for metric in TypeMetric::ALL {
                let value = match metric {
                    TypeMetric::Ce => m.ce,
                    TypeMetric::Ppl => m.ppl,
                    TypeMetric::Acc => m.acc,
                    TypeMetric::Prob => m.prob,
                    TypeMetric::N => m.n as f64,
                };
                row.push((keys::per_type(metric, kind), value));
            }
        }
        row
    }

    /// The table printed every `eval_every` epochs.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<24} {:>9} {:>11} {:>7} {:>7} {:>6}\n",
            "type", "CE", "PPL", "ACC", "PROB", "N"
        );
        for (kind, m) in &self.per_type {
            out.push_str(&format!(
                "{:<24} {:>9.4} {:>11.3} {:>7.3} {:>7.3} {:>6}\n",
                kind.as_str(),
                m.ce,
                m.ppl,
                m.acc,
                m.prob,
                m.n
            ));
        }
        out.push_str(&format!(
            "{:<24} {:>9.4} {:>11} {:>7.3}\n",
            "macro", self.macro_ce, "", self.macro_acc
        ));
        out
    }
}

/// Per-row loss, correctness and probability of the answer for `logits` `[b, v]` and `answers`
/// `[b]`: returns `[b, 3]` float32 columns (CE, ACC ∈ {0, 1}, PROB).
pub fn row_metrics(logits: &Tensor, answers: &Tensor) -> Tensor {
    let logits = logits.to_kind(Kind::Float);
    // log p(answer) = logit(answer) − logsumexp(logits): two reads of the `[b, v]` logits (this
    // and the argmax) instead of materialising the whole log-softmax.
    let lse = logits.logsumexp([-1], false); // (b)
    let target_logp = logits
        .gather(1, &answers.unsqueeze(1), false)
        .squeeze_dim(1)
        - lse; // (b)
    let correct = logits
        .argmax(-1, false)
        .eq_tensor(answers)
        .to_kind(Kind::Float); // (b)
    Tensor::stack(&[target_logp.neg(), correct, target_logp.exp()], 1) // (b, 3)
}

/// Per-row correctness of the argmax and softmax probability of the answer, in the original's
/// operations (`argmax == answer`, `softmax(logits)[answer]`, float32): for `logits` `[b, v]`
/// and `answers` `[b]`, two `[b]` float32 tensors. [`row_metrics`] gives the same values by a
/// cheaper route whose last bits differ.
pub fn original_acc_prob(logits: &Tensor, answers: &Tensor) -> (Tensor, Tensor) {
    let logits = logits.to_kind(Kind::Float);
    let acc = logits
        .argmax(-1, false)
        .eq_tensor(answers)
        .to_kind(Kind::Float);
    let prob = logits
        .softmax(-1, Kind::Float)
        .gather(1, &answers.unsqueeze(1), false)
        .squeeze_dim(1);
    (acc, prob)
}

/// Evaluates every member of `model` on every row of `split`, all members in one batched pass
/// per chunk; returns one report per member.
///
/// # Errors
/// Model errors (a test row longer than `max_len`, an id outside the vocabulary) and libtorch
/// failures.
pub fn evaluate(model: &dyn Members, split: &Split) -> Result<Vec<EvalReport>, TrainError> {
    let k = model.members();
    let sums = tch::no_grad(|| -> Result<Tensor, TrainError> {
        let device = split.ids.device();
        let v = model.config().vocab_size.max(1);
        let chunk = (MAX_LOGIT_ELEMENTS / (v * k)).max(1);
        // Member m's sums live in rows 7m..7m+7 (types × [ce, acc, prob]).
        let offsets = (Tensor::arange(k, (Kind::Int64, device)) * 7).unsqueeze(1); // (K, 1)
        let mut sums = Tensor::zeros([7 * k, 3], (Kind::Float, device));
        let mut start = 0i64;
        while start < split.n as i64 {
            let len = chunk.min(split.n as i64 - start);
            // Every member reads the same rows: a broadcast view, no copy.
            let rows = |t: &Tensor| {
                let mut shape = vec![k, len];
                shape.extend(t.size().iter().skip(1));
                t.narrow(0, start, len).unsqueeze(0).expand(&shape, false)
            };
            let logits = model.forward_at_members(
                &rows(&split.ids),
                Some(&rows(&split.pad)),
                &rows(&split.positions),
                Mode::Eval,
            )?; // K × (len, v)
            let answers = split.answers.narrow(0, start, len);
            let per_row: Vec<Tensor> = logits.iter().map(|l| row_metrics(l, &answers)).collect();
            let per_row = Tensor::cat(&per_row, 0); // (K·len, 3)
            let index =
                (split.kinds.narrow(0, start, len).unsqueeze(0) + &offsets).reshape([k * len]);
            let _ = sums.f_index_add_(0, &index, &per_row)?;
            start += len;
        }
        Ok(sums)
    })?;
    // The one host synchronisation of an evaluation.
    let sums: Vec<f32> = Vec::try_from(sums.to_device(Device::Cpu).flatten(0, -1))?;
    Ok(sums
        .chunks(21)
        .map(|member| report_from_sums(member, &split.counts))
        .collect())
}

/// Evaluates a single model as the original's `evaluate_split_by_type` does, for runs on its
/// random stream: the test rows in file order in batches of `batch_size`, each batch as wide as
/// its longest row (the original's `collate_pad`), the model's logits at each row's last
/// position; per row the cross-entropy (`F.cross_entropy(reduction='none')`), the correctness
/// of the argmax and the softmax probability of the answer, summed per type in double precision
/// in row order; the macro averages over the types in the order they first appear. With a model
/// that computes as the original ([`gpt_rope::Gpt::compute_as_original`]) the values are the
/// original's own.
///
/// # Errors
/// Model errors and libtorch failures.
pub fn evaluate_as_original(
    model: &Gpt,
    split: &Split,
    batch_size: usize,
) -> Result<EvalReport, TrainError> {
    let kinds: Vec<i64> = Vec::try_from(split.kinds.to_device(Device::Cpu))?;
    // Per type, in order of first appearance: (kind index, CE, ACC, PROB sums, rows).
    let mut sums: Vec<(usize, f64, f64, f64, usize)> = Vec::new();
    tch::no_grad(|| -> Result<(), TrainError> {
        for start in (0..split.n).step_by(batch_size.max(1)) {
            let len = batch_size.min(split.n - start) as i64;
            let rows = |t: &Tensor| t.narrow(0, start as i64, len);
            let positions = rows(&split.positions);
            let width = positions.max().int64_value(&[]) + 1;
            let logits = model
                .forward_at(
                    &rows(&split.ids).narrow(1, 0, width),
                    Some(&rows(&split.pad).narrow(1, 0, width)),
                    &positions,
                    Mode::Eval,
                )?
                .to_kind(Kind::Float); // (len, v)
            let answers = rows(&split.answers);
            let ce = logits.cross_entropy_loss::<Tensor>(
                &answers,
                None,
                tch::Reduction::None,
                -100,
                0.0,
            );
            let (acc, prob) = original_acc_prob(&logits, &answers);
            let host = |t: Tensor| Vec::<f32>::try_from(t.to_device(Device::Cpu));
            let (ce, acc, prob) = (host(ce)?, host(acc)?, host(prob)?);
            for (i, kind) in kinds[start..start + len as usize].iter().enumerate() {
                let kind = *kind as usize;
                let at = match sums.iter().position(|s| s.0 == kind) {
                    Some(at) => at,
                    None => {
                        sums.push((kind, 0.0, 0.0, 0.0, 0));
                        sums.len() - 1
                    }
                };
                let s = &mut sums[at];
                s.1 += f64::from(ce[i]);
                s.2 += f64::from(acc[i]);
                s.3 += f64::from(prob[i]);
                s.4 += 1;
            }
        }
        Ok(())
    })?;
    let mut per_type = BTreeMap::new();
    let (mut ce_sum, mut acc_sum) = (0.0, 0.0);
    for &(kind, ce, acc, prob, n) in &sums {
        let ce = ce / n as f64;
        let acc = acc / n as f64;
        ce_sum += ce;
        acc_sum += acc;
        per_type.insert(
            FactType::ALL[kind],
            TypeMetrics {
                ce,
                ppl: ce.min(20.0).exp(),
                acc,
                prob: prob / n as f64,
                n,
            },
        );
    }
    let k = sums.len().max(1) as f64;
    Ok(EvalReport {
        per_type,
        macro_ce: ce_sum / k,
        macro_acc: acc_sum / k,
    })
}

/// Turns per-type sums (`[7 × 3]` row-major: CE, ACC, PROB) and counts into the report.
pub fn report_from_sums(sums: &[f32], counts: &[usize; 7]) -> EvalReport {
    let mut per_type = BTreeMap::new();
    for (i, &kind) in FactType::ALL.iter().enumerate() {
        let n = counts[i];
        if n == 0 {
            continue;
        }
        let ce = f64::from(sums[3 * i]) / n as f64;
        per_type.insert(
            kind,
            TypeMetrics {
                ce,
                ppl: ce.min(20.0).exp(),
                acc: f64::from(sums[3 * i + 1]) / n as f64,
                prob: f64::from(sums[3 * i + 2]) / n as f64,
                n,
            },
        );
    }
    let k = per_type.len().max(1) as f64;
    let macro_ce = per_type.values().map(|m| m.ce).sum::<f64>() / k;
    let macro_acc = per_type.values().map(|m| m.acc).sum::<f64>() / k;
    EvalReport {
        per_type,
        macro_ce,
        macro_acc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_metrics_by_hand() {
        // Row 0: logits (0, ln 3, −∞) → p = (1/4, 3/4, 0); answer 1 is the argmax.
        // Row 1: logits (2, 0, 0) with answer 2 → p(2) = 1/(e² + 2), not the argmax.
        let logits =
            Tensor::from_slice(&[0.0f32, 3f32.ln(), f32::NEG_INFINITY, 2.0, 0.0, 0.0]).view([2, 3]);
        let answers = Tensor::from_slice(&[1i64, 2]);
        let m: Vec<f32> = Vec::try_from(row_metrics(&logits, &answers).flatten(0, -1)).unwrap();
        let p1 = 1.0 / (2f64.exp() + 2.0);
        let want = [-(0.75f64.ln()), 1.0, 0.75, -p1.ln(), 0.0, p1];
        for (g, w) in m.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{m:?} vs {want:?}");
        }
    }

    #[test]
    fn report_from_sums_averages_per_type_and_over_types_present() {
        let mut sums = [0f32; 21];
        let mut counts = [0usize; 7];
        // id_atomic: 4 rows, CE sum 2, 3 correct, PROB sum 2; ood_analogical: 2 rows, CE sum 50.
        (sums[0], sums[1], sums[2], counts[0]) = (2.0, 3.0, 2.0, 4);
        (sums[18], sums[19], sums[20], counts[6]) = (50.0, 0.0, 0.0, 2);
        let r = report_from_sums(&sums, &counts);
        assert_eq!(r.per_type.len(), 2);
        let a = r.per_type[&FactType::IdAtomic];
        assert_eq!((a.ce, a.acc, a.prob, a.n), (0.5, 0.75, 0.5, 4));
        assert!((a.ppl - 0.5f64.exp()).abs() < 1e-12);
        let o = r.per_type[&FactType::OodAnalogical];
        assert_eq!(o.ppl, 20f64.exp(), "PPL is exp(min(CE, 20))");
        assert_eq!(r.macro_ce, (0.5 + 25.0) / 2.0);
        assert_eq!(r.macro_acc, 0.75 / 2.0);
        let row = r.to_row();
        assert!(
            row.iter()
                .any(|(k, v)| k == "val_N/ood_analogical" && *v == 2.0)
        );
        assert!(!row.iter().any(|(k, _)| k.ends_with("/id_compositional")));
    }
}
