//! Mechanism tracking during training: the geometry metrics of the `metrics` crate on
//! the model's embedding and head, the attention progress measure and the analogy read-out from
//! a traced forward pass over the analogical facts, and the 2-D PCA of entity embeddings written
//! to `pca.jsonl` for the functor-arrow picture.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use gpt_rope::Gpt;
use kg_data::{Dataset, FactType};
use serde_json::json;
use tch::{Device, Tensor};

use crate::TrainError;
use crate::config::{GeometrySchedule, keys};

/// The analogical facts of one split as a batch of inputs `e_s <f>`.
#[derive(Debug)]
struct FactBatch {
    /// `(e_s, e_t)` token ids.
    pairs: Vec<(i64, i64)>,
    /// `[n, 2]` inputs `e_s <f>`.
    inputs: Tensor,
    targets: Vec<i64>,
}

impl FactBatch {
    fn new(pairs: Vec<(i64, i64)>, functor_id: i64, device: Device) -> Self {
        let flat: Vec<i64> = pairs.iter().flat_map(|&(s, _)| [s, functor_id]).collect();
        let inputs = Tensor::from_slice(&flat)
            .view([pairs.len() as i64, 2])
            .to_device(device); // (n, 2)
        let targets = pairs.iter().map(|&(_, t)| t).collect();
        Self {
            pairs,
            inputs,
            targets,
        }
    }
}

/// Everything the tracking needs from the dataset, prepared once.
#[derive(Debug)]
pub struct Analysis {
    enabled: bool,
    functor_id: i64,
    functor_pairs: Vec<(i64, i64)>,
    e2: Vec<i64>,
    id: FactBatch,
    ood: FactBatch,
    /// Entity ids and their group names, for the PCA.
    entities: Vec<(i64, &'static str)>,
    ood_sources: BTreeSet<i64>,
    tokens: Vec<String>,
    pca_path: PathBuf,
    /// The step of the last snapshot this process wrote (the end-of-training one is not
    /// repeated at the same step).
    last_pca_step: std::cell::Cell<Option<u64>>,
}

impl Analysis {
    /// Prepares the tracking for `ds`; a dataset without a usable functor (fewer than three
    /// pairs) disables it with a warning instead of failing the run.
    pub fn new(ds: &Dataset, save_dir: &Path, device: Device) -> Result<Self, TrainError> {
        let functor_id = ds.vocab.functor_id().map(i64::from);
        let functor = ds.functor().ok();
        let (enabled, functor_id, functor) = match (functor_id, functor) {
            (Some(f), Some(fun)) if fun.pairs.len() >= 3 => (true, f, Some(fun)),
            (f, _) => {
                tracing::warn!(
                    "geometry tracking off: the dataset has no functor with at least three pairs"
                );
                (false, f.unwrap_or(0), None)
            }
        };
        let facts = |kind: FactType| -> Vec<(i64, i64)> {
            ds.test_of(kind)
                .filter(|ex| ex.tokens.len() == 3 && i64::from(ex.tokens[1]) == functor_id)
                .map(|ex| (i64::from(ex.tokens[0]), i64::from(ex.tokens[2])))
                .collect()
        };
        let mut entities = Vec::new();
        let (mut functor_pairs, mut e2, mut ood_sources) =
            (Vec::new(), Vec::new(), BTreeSet::new());
        if let Some(fun) = &functor {
            functor_pairs = fun
                .pairs
                .iter()
                .map(|&(a, b)| (i64::from(a), i64::from(b)))
                .collect();
            e2 = fun.e2.iter().map(|&e| i64::from(e)).collect();
            ood_sources = fun.ood_sources.iter().map(|&e| i64::from(e)).collect();
            let (e1, e2s): (BTreeSet<u32>, BTreeSet<u32>) = (
                fun.e1.iter().copied().collect(),
                fun.e2.iter().copied().collect(),
            );
            for id in ds.vocab.entity_ids() {
                let group = if e1.contains(&id) {
                    "E1"
                } else if e2s.contains(&id) {
                    "E2"
                } else {
                    "other"
                };
                entities.push((i64::from(id), group));
            }
        }
        Ok(Self {
            enabled,
            functor_id,
            functor_pairs,
            e2,
            id: FactBatch::new(facts(FactType::IdAnalogical), functor_id, device),
            ood: FactBatch::new(facts(FactType::OodAnalogical), functor_id, device),
            entities,
            ood_sources,
            tokens: ds.vocab.tokens().to_vec(),
            pca_path: save_dir.join("pca.jsonl"),
            last_pca_step: std::cell::Cell::new(None),
        })
    }

    /// The geometry and mechanism metrics of `model` now, as metrics-log (key, value) pairs.
    pub fn geometry(&self, model: &Gpt) -> Result<Vec<(String, f64)>, TrainError> {
        if !self.enabled {
            return Ok(Vec::new());
        }
        let (e, u) = (model.tok_emb(), model.head_weight());
        let report = metrics::geometry_report(
            e,
            u,
            &self.functor_pairs,
            self.functor_id,
            &self.id.pairs,
            &self.ood.pairs,
        )?;
        let mut out: Vec<(String, f64)> = report
            .entries()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let keys = [
            (
                &self.id,
                metrics::keys::ATTN_PROGRESS_ID,
                metrics::keys::HIT1_ID,
                metrics::keys::MRR_ID,
            ),
            (
                &self.ood,
                metrics::keys::ATTN_PROGRESS_OOD,
                metrics::keys::HIT1_OOD,
                metrics::keys::MRR_OOD,
            ),
        ];
        for (batch, attn_key, hit_key, mrr_key) in keys {
            if batch.pairs.is_empty() {
                continue;
            }
            let trace = tch::no_grad(|| model.forward_traced(&batch.inputs, None))?;
            let attn = metrics::attention_progress(
                &trace.attention[0],
                metrics::ANALOGY_QUERY_POS,
                metrics::ANALOGY_SOURCE_POS,
            )?;
            let logits = trace.logits.select(1, 1); // (n, v): the answer is read after `<f>`
            let readout = metrics::analogy_readout(&logits, &batch.targets, &self.e2)?;
            out.push((attn_key.to_string(), attn));
            out.push((hit_key.to_string(), readout.hit1));
            out.push((mrr_key.to_string(), readout.mrr));
        }
        Ok(out)
    }

    /// Appends the 2-D PCA of the entity embeddings at `global_step` to `pca.jsonl`, recording
    /// the `pca_steps` it answers (`requested`; empty for the end of training, which is not
    /// written again when a snapshot was just taken at that step).
    pub fn record_pca(
        &self,
        model: &Gpt,
        global_step: u64,
        requested: &[u64],
    ) -> Result<(), TrainError> {
        if !self.enabled || (requested.is_empty() && self.last_pca_step.get() == Some(global_step))
        {
            return Ok(());
        }
        self.last_pca_step.set(Some(global_step));
        let ids: Vec<i64> = self.entities.iter().map(|&(id, _)| id).collect();
        let pca = metrics::pca_2d_rows(model.tok_emb(), &ids)?;
        let name = |id: i64| self.tokens.get(id as usize).cloned().unwrap_or_default();
        let points: Vec<_> = self
            .entities
            .iter()
            .zip(&pca.coords)
            .map(|(&(id, group), xy)| json!({"token": name(id), "group": group, "x": xy[0], "y": xy[1]}))
            .collect();
        let arrows: Vec<_> = self
            .functor_pairs
            .iter()
            .map(|&(s, t)| json!({"from": name(s), "to": name(t), "ood": self.ood_sources.contains(&s)}))
            .collect();
        let line = json!({
            keys::GLOBAL_STEP: global_step,
            "requested_steps": requested,
            "explained_variance_ratio": pca.explained_variance_ratio,
            "points": points,
            "arrows": arrows,
        });
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.pca_path)
            .map_err(|source| TrainError::Io {
                path: self.pca_path.clone(),
                source,
            })?;
        writeln!(file, "{line}").map_err(|source| TrainError::Io {
            path: self.pca_path.clone(),
            source,
        })
    }
}

/// The analysis due after `epoch`, as every run (single or ensemble member) schedules it:
/// geometry (its values appended to `values`, its time added to `geometry_seconds`) and the PCA
/// snapshot. `model` gives the model to measure; it is called only when something is due.
///
/// # Errors
/// Errors of `model` and of the measurements.
#[allow(clippy::too_many_arguments)]
pub fn analyse_epoch<'m>(
    clock: &mut GeometryClock,
    analysis: &Analysis,
    epoch: usize,
    global_step: u64,
    model: impl FnOnce() -> Result<&'m Gpt, TrainError>,
    values: &mut Vec<(String, f64)>,
    geometry_seconds: &mut f64,
) -> Result<(), TrainError> {
    let geometry = clock.geometry_due(epoch, global_step);
    let pca = clock.pca_due(global_step);
    if !geometry && pca.is_empty() {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let model = model()?;
    if geometry {
        values.extend(analysis.geometry(model)?);
    }
    if !pca.is_empty() {
        analysis.record_pca(model, global_step, &pca)?;
    }
    if geometry {
        *geometry_seconds += started.elapsed().as_secs_f64();
    }
    Ok(())
}

/// Decides when the geometry metrics and the PCA are computed.
#[derive(Debug)]
pub struct GeometryClock {
    schedule: GeometrySchedule,
    eval_every: usize,
    next_log_step: f64,
    pca_steps: BTreeSet<u64>,
}

/// Ratio between consecutive log-spaced steps: twelve per decade.
const LOG_STEP_RATIO: f64 = 1.211_527_658_628_58;

impl GeometryClock {
    /// A clock for `schedule`, with PCA recorded at the global steps `pca_steps`.
    pub fn new(schedule: GeometrySchedule, eval_every: usize, pca_steps: &[u64]) -> Self {
        Self {
            schedule,
            eval_every: eval_every.max(1),
            next_log_step: 1.0,
            pca_steps: pca_steps.iter().copied().collect(),
        }
    }

    /// Whether the geometry is due after `epoch` (1-based) ending at `global_step`.
    pub fn geometry_due(&mut self, epoch: usize, global_step: u64) -> bool {
        match self.schedule {
            GeometrySchedule::Off => false,
            GeometrySchedule::Eval => epoch == 1 || epoch % self.eval_every == 0,
            GeometrySchedule::Log => {
                if (global_step as f64) < self.next_log_step {
                    return false;
                }
                while self.next_log_step <= global_step as f64 {
                    self.next_log_step =
                        (self.next_log_step * LOG_STEP_RATIO).max(self.next_log_step + 1.0);
                }
                true
            }
        }
    }

    /// Puts the clock where it stands after `epochs` epochs of `steps_per_epoch` steps, as if it
    /// had run through them (a resumed run then measures at the steps an uninterrupted one
    /// does).
    pub fn replay(&mut self, epochs: usize, steps_per_epoch: u64) {
        for epoch in 1..=epochs {
            let step = epoch as u64 * steps_per_epoch;
            self.geometry_due(epoch, step);
            self.pca_due(step);
        }
    }

    /// The requested PCA steps reached by `global_step` and not yet answered (each fires once,
    /// at the end of the epoch that passes it); empty when none is due.
    pub fn pca_due(&mut self, global_step: u64) -> Vec<u64> {
        let due: Vec<u64> = self.pca_steps.range(..=global_step).copied().collect();
        for s in &due {
            self.pca_steps.remove(s);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_schedule_fires_on_the_first_and_every_nth_epoch() {
        let mut c = GeometryClock::new(GeometrySchedule::Eval, 10, &[]);
        let fired: Vec<usize> = (1..=30)
            .filter(|&e| c.geometry_due(e, e as u64 * 3))
            .collect();
        assert_eq!(fired, vec![1, 10, 20, 30]);
        let mut off = GeometryClock::new(GeometrySchedule::Off, 10, &[]);
        assert!((1..=30).all(|e| !off.geometry_due(e, e as u64)));
    }

    #[test]
    fn log_schedule_is_dense_early_and_sparse_late() {
        let mut c = GeometryClock::new(GeometrySchedule::Log, 10, &[]);
        let fired: Vec<u64> = (1..=10_000u64).filter(|&s| c.geometry_due(1, s)).collect();
        assert_eq!(&fired[..5], &[1, 2, 3, 4, 5]);
        // About twelve per decade over four decades.
        assert!((40..=56).contains(&fired.len()), "{} firings", fired.len());
        let in_last_decade = fired.iter().filter(|&&s| s > 1000).count();
        assert!((10..=14).contains(&in_last_decade), "{in_last_decade}");
    }

    #[test]
    fn a_replayed_clock_fires_where_an_uninterrupted_one_does() {
        let fired = |clock: &mut GeometryClock, epochs: std::ops::RangeInclusive<usize>| {
            epochs
                .filter(|&e| {
                    let g = clock.geometry_due(e, e as u64 * 3);
                    !clock.pca_due(e as u64 * 3).is_empty() || g
                })
                .collect::<Vec<_>>()
        };
        let new = || GeometryClock::new(GeometrySchedule::Log, 10, &[4, 40, 41, 200]);
        let whole = fired(&mut new(), 1..=100);
        let mut resumed = new();
        resumed.replay(37, 3);
        let tail = fired(&mut resumed, 38..=100);
        assert_eq!(
            tail,
            whole.into_iter().filter(|&e| e > 37).collect::<Vec<_>>()
        );
        assert!(!tail.is_empty());
    }

    #[test]
    fn pca_steps_fire_once_when_passed() {
        let mut c = GeometryClock::new(GeometrySchedule::Off, 1, &[5, 6, 20]);
        assert!(c.pca_due(3).is_empty());
        assert_eq!(c.pca_due(7), [5, 6]);
        assert!(c.pca_due(8).is_empty());
        assert_eq!(c.pca_due(21), [20]);
        assert!(c.pca_due(100).is_empty());
    }
}
