//! Many runs for the price of one: K runs that share every shape (model, batch size, epochs,
//! dataset) trained in one process as one batched computation ([`GptEnsemble`]), each with its
//! own weights, optimiser state, learning rate, weight decay, seed, metrics and run directory.
//!
//! Each member reproduces the run [`crate::run`] would make from its configuration:
//! - initialisation: member `k` is built as `Gpt::new` under `tch::manual_seed(seed_k)`;
//! - data: member `k`'s batch at each step follows its own shuffle ([`epoch_order`] of `seed_k`);
//! - loss: the sum over members of each member's mean last-token cross-entropy, so each member
//!   receives exactly its own gradient;
//! - optimiser: one fused Adam/AdamW call per member over its views of the parameters and
//!   gradients and its own moments, with the member's learning rate, warm-up, kind and weight
//!   decay (and, with mixed precision on CUDA, its own loss scaler);
//! - evaluation: one batched pass over the test split for all members, then the same per-type
//!   reduction as [`crate::eval::evaluate`];
//! - run directory: `config.toml`, `metrics.jsonl` with the same rows as a single run,
//!   `timings.json` (the shared process's seconds, with `batched_members`),
//!   `checkpoints/{last,best,epochNNN}` in the normal checkpoint format (loadable by `--resume`
//!   of a single run and by [`Gpt`]), `pca.jsonl`, plots;
//! - geometry tracking and PCA: the member's weights are copied into a single [`Gpt`] (a few
//!   megabytes, only when a measurement is due) and measured by the same
//!   [`crate::analysis::Analysis`] as a single run.
//!
//! Results equal separate runs up to floating-point summation order (batched matrix products
//! may add in another order): in practice a relative 1e-5 on the losses after a few epochs.
//!
//! Not supported in ensemble mode (rejected by [`compatible`] / [`run_ensemble`], so a sweep runs
//! such experiments separately): `dropout > 0`, because the members' masks would come from one
//! generator and could not equal their separate runs; `--resume`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use gpt_rope::Gpt;
use gpt_rope::ensemble::{GptEnsemble, MemberParam, member_losses};
use tch::{Device, Kind, Tensor, nn::VarStore};

use crate::TrainError;
use crate::analysis::{Analysis, GeometryClock, analyse_epoch};
use crate::checkpoint::{self, Sidecar};
use crate::config::RunConfig;
use crate::data::{DeviceData, Split};
use crate::eval::{EvalReport, MAX_LOGIT_ELEMENTS, report_from_sums, row_metrics};
use crate::optim::{AdamConfig, FusedGroup, GradScaler, clear_grads, fused_adam, lr_at};
use crate::sink::{MetricsSink, Sinks, row};
use crate::train::{
    BEST, LAST, RunSummary, batch_values, epoch_order, load_or_generate, open_run_dir,
    select_device, write_plots, write_timings,
};
pub use run_config::batching::{PER_MEMBER_KEYS, compatible, supported};

/// How an ensemble is started.
#[derive(Default)]
pub struct EnsembleOptions {
    /// Set from another thread (Ctrl-C) to stop all members after the current batch.
    pub interrupt: Option<Arc<AtomicBool>>,
    /// Per member, sinks besides its local `metrics.jsonl` (W&B): empty, or one list per member.
    pub extra_sinks: Vec<Vec<Box<dyn MetricsSink>>>,
    /// No evaluation tables on stdout.
    pub quiet: bool,
}

impl std::fmt::Debug for EnsembleOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnsembleOptions")
            .field("extra_sinks", &self.extra_sinks.len())
            .field("quiet", &self.quiet)
            .finish()
    }
}

/// Trains every configuration of `cfgs` as one ensemble and returns their summaries in order.
///
/// # Errors
/// Configuration errors ([`TrainError::Config`] naming the key that makes two members
/// incompatible), data, I/O and libtorch errors; when a member fails on its own (a non-finite
/// loss) the others finish and the first member error is returned. Use
/// [`run_ensemble_members`] to get every member's outcome.
pub fn run_ensemble(
    cfgs: Vec<RunConfig>,
    opts: EnsembleOptions,
) -> Result<Vec<RunSummary>, TrainError> {
    run_ensemble_members(cfgs, opts)?.into_iter().collect()
}

/// Like [`run_ensemble`], with one outcome per member: the outer error stops all members
/// (setup, data, libtorch, interruption), an inner one concerns its member only
/// ([`TrainError::NonFinite`], a failed measurement or checkpoint).
///
/// Calls [`crate::tune_allocator`], as [`crate::run`] does.
pub fn run_ensemble_members(
    cfgs: Vec<RunConfig>,
    mut opts: EnsembleOptions,
) -> Result<Vec<Result<RunSummary, TrainError>>, TrainError> {
    let config_err = |source_name: String, reason: String| TrainError::Config {
        source_name,
        reason,
    };
    let Some(first) = cfgs.first() else {
        return Err(config_err(
            "ensemble".into(),
            "no configurations given".into(),
        ));
    };
    for (i, cfg) in cfgs.iter().enumerate() {
        cfg.validate()?;
        let origin = || format!("ensemble member {i} ({})", cfg.train.save_dir.display());
        compatible(first, cfg).map_err(|reason| config_err(origin(), reason))?;
        if cfgs[..i]
            .iter()
            .any(|other| other.train.save_dir == cfg.train.save_dir)
        {
            return Err(config_err(
                origin(),
                "`save_dir` is shared with another member; each member needs its own".into(),
            ));
        }
    }
    if !opts.extra_sinks.is_empty() && opts.extra_sinks.len() != cfgs.len() {
        return Err(config_err(
            "ensemble".into(),
            format!(
                "{} lists of extra sinks for {} members",
                opts.extra_sinks.len(),
                cfgs.len()
            ),
        ));
    }
    crate::tune_allocator();
    let device = select_device(first.train.device)?;
    if first.train.threads > 0 {
        tch::set_num_threads(first.train.threads as i32);
    }
    for cfg in &cfgs {
        let dir = &cfg.train.save_dir;
        std::fs::create_dir_all(dir).map_err(|source| TrainError::Io {
            path: dir.clone(),
            source,
        })?;
    }

    let ds = load_or_generate(first)?;
    let data = DeviceData::new(&ds, device);
    if data.train.n == 0 {
        return Err(TrainError::Data(kg_data::DataError::File {
            file: first.train.data_dir.join("train.json"),
            reason: "no training rows".into(),
        }));
    }
    let gpt_cfg = first.model.with_vocab(ds.vocab.len() as i64);
    let seeds: Vec<u64> = cfgs.iter().map(|c| c.train.seed).collect();
    let vs = VarStore::new(device);
    let model = GptEnsemble::from_seeds(&vs.root(), &gpt_cfg, &seeds)?;
    let adam_cfgs = cfgs
        .iter()
        .map(|c| AdamConfig::new(c.train.optimizer, c.train.weight_decay))
        .collect();
    let mut opt = EnsembleAdam::for_model(&model, adam_cfgs)?;
    let amp = first.train.use_amp && device.is_cuda();
    let mut scalers: Option<Vec<GradScaler>> =
        amp.then(|| cfgs.iter().map(|_| GradScaler::new(device)).collect());

    let mut extra = std::mem::take(&mut opts.extra_sinks);
    extra.resize_with(cfgs.len(), Vec::new);
    let mut members = Vec::with_capacity(cfgs.len());
    for (cfg, mut more) in cfgs.into_iter().zip(extra) {
        let save_dir = cfg.train.save_dir.clone();
        let mut sinks = Sinks(vec![Box::new(open_run_dir(&cfg, None)?)]);
        sinks.0.append(&mut more);
        let analysis = Analysis::new(&ds, &save_dir, device)?;
        let clock = GeometryClock::new(
            cfg.train.geometry,
            cfg.train.eval_every,
            &cfg.train.pca_steps,
        );
        members.push(Member {
            summary: RunSummary {
                save_dir,
                ..Default::default()
            },
            cfg,
            sinks,
            analysis,
            clock,
            shadow: None,
            best: None,
            failed: None,
        });
    }

    let mut ens = Ensemble {
        model,
        vocab: ds.vocab.tokens().to_vec(),
        epoch: 0,
        global_step: 0,
        members,
    };
    let outcome = ens.train(&mut opt, scalers.as_deref_mut(), &data, &opts);
    let exit_code = match &outcome {
        Ok(()) => 0,
        Err(TrainError::Interrupted) => 130,
        Err(_) => 1,
    };
    let members = ens.members.len();
    let mut results = Vec::with_capacity(members);
    for k in 0..members {
        // A non-finite loss leaves the weights unusable: keep the last good checkpoint instead.
        let non_finite = matches!(ens.members[k].failed, Some(TrainError::NonFinite { .. }));
        if !non_finite {
            if let Err(e) = ens.save(k, LAST, &opt) {
                ens.members[k].failed.get_or_insert(e);
            }
        }
        let member = &mut ens.members[k];
        if outcome.is_ok() && member.failed.is_none() {
            let pca = sync_shadow(
                &mut member.shadow,
                &ens.model,
                k as i64,
                &member.summary.save_dir,
            )
            .and_then(|shadow| member.analysis.record_pca(shadow, ens.global_step));
            if let Err(e) = pca {
                tracing::warn!("final PCA not recorded: {e}");
            }
        }
        let code = if member.failed.is_some() && exit_code == 0 {
            1
        } else {
            exit_code
        };
        member.sinks.finish(code);
        if let Err(e) = write_timings(&member.summary.save_dir, &member.summary, device, members) {
            tracing::warn!("timings not written: {e}");
        }
        if member.cfg.train.plots {
            write_plots(&member.summary.save_dir);
        }
        results.push(match member.failed.take() {
            Some(e) => Err(e),
            None => Ok(member.summary.clone()),
        });
    }
    outcome.map(|()| results)
}

/// One member's run: its configuration, sinks, analysis and bookkeeping.
struct Member {
    cfg: RunConfig,
    sinks: Sinks,
    analysis: Analysis,
    clock: GeometryClock,
    /// A single model the member's weights are copied into for the analysis, built when first
    /// needed.
    shadow: Option<(VarStore, Gpt)>,
    best: Option<f64>,
    summary: RunSummary,
    /// Set when the member stopped on its own; it is no longer logged, evaluated or saved.
    failed: Option<TrainError>,
}

impl Member {
    fn alive(&self) -> bool {
        self.failed.is_none()
    }

    /// The epoch's analysis, exactly as a single run schedules it (the member's weights are
    /// copied into its shadow model only when something is due).
    fn analyse(
        &mut self,
        model: &GptEnsemble,
        k: i64,
        epoch: usize,
        global_step: u64,
        values: &mut Vec<(String, f64)>,
    ) -> Result<(), TrainError> {
        let save_dir = &self.summary.save_dir;
        let shadow = &mut self.shadow;
        analyse_epoch(
            &mut self.clock,
            &self.analysis,
            epoch,
            global_step,
            || sync_shadow(shadow, model, k, save_dir),
            values,
            &mut self.summary.geometry_seconds,
        )
    }
}

/// Copies member `k`'s current weights into its shadow model (built on first use) and returns
/// the model; `save_dir` names the member in errors.
fn sync_shadow<'a>(
    shadow: &'a mut Option<(VarStore, Gpt)>,
    model: &GptEnsemble,
    k: i64,
    save_dir: &std::path::Path,
) -> Result<&'a Gpt, TrainError> {
    let (vs, gpt) = match shadow.take() {
        Some(built) => shadow.insert(built),
        None => {
            let vs = VarStore::new(model.device());
            let gpt = Gpt::new(&vs.root(), model.config())?;
            shadow.insert((vs, gpt))
        }
    };
    checkpoint::restore_params(vs, &model.member_state(k)?, save_dir)?;
    Ok(gpt)
}

/// The shared model and loop state.
struct Ensemble {
    model: GptEnsemble,
    vocab: Vec<String>,
    epoch: usize,
    global_step: u64,
    members: Vec<Member>,
}

impl Ensemble {
    fn save(&self, k: usize, name: &str, opt: &EnsembleAdam) -> Result<(), TrainError> {
        let member = &self.members[k];
        let sidecar = Sidecar {
            format_version: checkpoint::CHECKPOINT_FORMAT,
            config: member.cfg.clone(),
            vocab: self.vocab.clone(),
            epoch: member.summary.epochs,
            global_step: member.summary.global_step,
            best_macro_ce: member.best,
        };
        checkpoint::save(
            &checkpoint::path(&member.summary.save_dir, name),
            &self.model.member_state(k as i64)?,
            &opt.member_state(k),
            &sidecar,
        )
    }

    fn train(
        &mut self,
        opt: &mut EnsembleAdam,
        mut scalers: Option<&mut [GradScaler]>,
        data: &DeviceData,
        opts: &EnsembleOptions,
    ) -> Result<(), TrainError> {
        let first = self.members[0].cfg.train.clone();
        let device = data.train.ids.device();
        let (n, w) = (data.train.n, data.train.ids.size()[1]);
        let k = self.model.members();
        let interrupted = || {
            opts.interrupt
                .as_ref()
                .is_some_and(|f| f.load(Ordering::Relaxed))
        };
        while self.epoch < first.epochs && self.members.iter().any(Member::alive) {
            let epoch = self.epoch + 1;
            let started = Instant::now();
            let orders: Vec<i64> = self
                .members
                .iter()
                .flat_map(|m| epoch_order(n, m.cfg.train.seed, epoch))
                .collect();
            let orders = Tensor::from_slice(&orders)
                .view([k, n as i64])
                .to_device(device); // (K, n)
            let mut loss_sum = Tensor::zeros([k], (Kind::Float, device));
            let mut batches = 0i64;
            for (bi, start) in (0..n).step_by(first.batch_size).enumerate() {
                if interrupted() {
                    return Err(TrainError::Interrupted);
                }
                let len = first.batch_size.min(n - start) as i64;
                let index = orders.narrow(1, start as i64, len).reshape([k * len]); // (K·len)
                let (ids, pad, positions, answers) = data.train.gather(&index);
                let ids = ids.view([k, len, w]); // (K, len, w)
                let pad = pad.view([k, len, w]); // (K, len, w)
                let positions = positions.view([k, len]); // (K, len)
                let answers = answers.view([k, len]); // (K, len)
                let logits = tch::autocast(scalers.is_some(), || {
                    self.model
                        .forward_at_members(&ids, Some(&pad), &positions, true)
                })?; // K × (len, v)
                let losses = member_losses(&logits, &answers); // (K)
                opt.zero_grad();
                match scalers.as_deref() {
                    Some(s) => {
                        let scales =
                            Tensor::stack(&s.iter().map(|s| &s.scale).collect::<Vec<_>>(), 0);
                        (&losses * scales).sum(Kind::Float).backward();
                    }
                    None => losses.sum(Kind::Float).backward(),
                }
                self.global_step += 1;
                let step = self.global_step;
                let lrs: Vec<f64> = self
                    .members
                    .iter()
                    .map(|m| lr_at(m.cfg.train.lr, m.cfg.train.warmup_steps, step))
                    .collect();
                opt.step(&lrs, scalers.as_deref_mut())?;
                loss_sum += losses.detach();
                batches += 1;
                let due: Vec<bool> = self
                    .members
                    .iter()
                    .map(|m| m.alive() && (bi == 0 || step % m.cfg.train.log_every as u64 == 0))
                    .collect();
                if due.iter().any(|&d| d) {
                    let m = tch::no_grad(|| {
                        let rows: Vec<Tensor> = logits
                            .iter()
                            .zip(answers.unbind(0))
                            .map(|(l, a)| row_metrics(&l.detach(), &a))
                            .collect();
                        Tensor::stack(&rows, 0) // (K, len, 3)
                            .mean_dim(1, false, Kind::Float) // (K, 3)
                    });
                    let m: Vec<f32> = Vec::try_from(m.to_device(Device::Cpu).flatten(0, -1))?;
                    for (i, member) in self.members.iter_mut().enumerate() {
                        if !due[i] {
                            continue;
                        }
                        let values = batch_values(&m[3 * i..3 * i + 3], lrs[i]);
                        member.sinks.log(step, &row(step, None, &values));
                    }
                }
            }
            let ce_epoch: Vec<f32> = Vec::try_from(
                (loss_sum / batches as f64)
                    .to_kind(Kind::Float)
                    .to_device(Device::Cpu),
            )?;
            let train_seconds = started.elapsed().as_secs_f64();
            self.epoch = epoch;
            for (member, &ce) in self.members.iter_mut().zip(&ce_epoch) {
                if !member.alive() {
                    continue;
                }
                member.summary.train_seconds += train_seconds;
                member.summary.steps_this_run += batches as u64;
                if !ce.is_finite() {
                    member.sinks.flush();
                    member.failed = Some(TrainError::NonFinite {
                        epoch,
                        global_step: self.global_step,
                        value: f64::from(ce),
                    });
                    continue;
                }
                member.summary.epochs = epoch;
                member.summary.global_step = self.global_step;
                member.summary.epochs_this_run += 1;
            }

            let eval_started = Instant::now();
            let reports = evaluate_ensemble(&self.model, &data.test)?;
            let eval_seconds = eval_started.elapsed().as_secs_f64();
            for i in 0..self.members.len() {
                if !self.members[i].alive() {
                    continue;
                }
                let report = reports[i].clone();
                let ce = f64::from(ce_epoch[i]);
                if let Err(e) =
                    self.finish_epoch(i, epoch, ce, report, eval_seconds, opt, opts.quiet)
                {
                    self.members[i].sinks.flush();
                    self.members[i].failed = Some(e);
                }
            }
        }
        Ok(())
    }

    /// Logging, printing and checkpoints of member `i` after an epoch, as a single run does them.
    #[allow(clippy::too_many_arguments)]
    fn finish_epoch(
        &mut self,
        i: usize,
        epoch: usize,
        ce_epoch: f64,
        report: EvalReport,
        eval_seconds: f64,
        opt: &EnsembleAdam,
        quiet: bool,
    ) -> Result<(), TrainError> {
        let step = self.global_step;
        let member = &mut self.members[i];
        member.summary.eval_seconds += eval_seconds;
        let mut values = vec![("train/CE_epoch".to_string(), ce_epoch)];
        values.extend(report.to_row());
        member.analyse(&self.model, i as i64, epoch, step, &mut values)?;
        member.sinks.log(step, &row(step, Some(epoch), &values));
        member.sinks.flush();
        let t = &member.cfg.train;
        if !quiet && (epoch % t.eval_every == 0 || epoch == t.epochs) {
            println!(
                "[{}] epoch {epoch}/{} step {step} train CE {ce_epoch:.4}\n{}",
                member.summary.save_dir.display(),
                t.epochs,
                report.table()
            );
        }
        let improved = member.best.is_none_or(|b| report.macro_ce < b);
        if improved {
            member.best = Some(report.macro_ce);
        }
        let save_every = t.save_every;
        member.summary.final_eval = Some(report);
        if save_every > 0 {
            if epoch % save_every == 0 {
                self.save(i, &format!("epoch{epoch:03}"), opt)?;
            }
            if improved {
                self.save(i, BEST, opt)?;
            }
        }
        Ok(())
    }
}

/// Evaluates every member of `model` on every row of `split` in one batched pass per chunk;
/// returns one report per member, as [`crate::eval::evaluate`] would for that member alone.
pub fn evaluate_ensemble(
    model: &GptEnsemble,
    split: &Split,
) -> Result<Vec<EvalReport>, TrainError> {
    let k = model.members();
    let sums = tch::no_grad(|| -> Result<Tensor, TrainError> {
        let device = split.ids.device();
        let v = model.config().vocab_size.max(1);
        let w = split.ids.size()[1];
        let chunk = (MAX_LOGIT_ELEMENTS / (v * k)).max(1);
        // Member m's sums live in rows 7m..7m+7 (types × [ce, acc, prob]).
        let offsets = (Tensor::arange(k, (Kind::Int64, device)) * 7).unsqueeze(1); // (K, 1)
        let mut sums = Tensor::zeros([7 * k, 3], (Kind::Float, device));
        let mut start = 0i64;
        while start < split.n as i64 {
            let len = chunk.min(split.n as i64 - start);
            let ids = split
                .ids
                .narrow(0, start, len)
                .unsqueeze(0)
                .expand([k, len, w], false);
            let pad = split
                .pad
                .narrow(0, start, len)
                .unsqueeze(0)
                .expand([k, len, w], false);
            let positions = split
                .positions
                .narrow(0, start, len)
                .unsqueeze(0)
                .expand([k, len], false);
            let answers = split
                .answers
                .narrow(0, start, len)
                .unsqueeze(0)
                .expand([k, len], false);
            let logits = model.forward_at_members(&ids, Some(&pad), &positions, false)?; // K × (len, v)
            let rows: Vec<Tensor> = logits
                .iter()
                .zip(answers.unbind(0))
                .map(|(l, a)| row_metrics(l, &a))
                .collect();
            let rows = Tensor::cat(&rows, 0); // (K·len, 3)
            let index =
                (split.kinds.narrow(0, start, len).unsqueeze(0) + &offsets).reshape([k * len]);
            let _ = sums.f_index_add_(0, &index, &rows)?;
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

/// Adam/AdamW for the members of an ensemble: per member, one fused-kernel call over the
/// member's views of the parameters ([`MemberParam`]: rows of the stacked block parameters, its
/// own vocabulary tables) and gradients, with its own moments, hyper-parameters and step
/// counters. Member `k`'s state is the state a single run's [`crate::optim::Adam`] would hold.
#[derive(Debug)]
pub struct EnsembleAdam {
    members: Vec<MemberAdam>,
    taken: u64,
    /// Every autograd leaf once (a stacked leaf is shared by all members).
    leaves: Vec<Tensor>,
}

/// One member's parameters and optimiser state.
#[derive(Debug)]
struct MemberAdam {
    params: Vec<MemberParam>,
    /// The member's views of `params`, made once (they share the leaves' storage).
    values: Vec<Tensor>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    /// Float32 step counter of each parameter.
    steps: Vec<Tensor>,
    cfg: AdamConfig,
}

impl EnsembleAdam {
    /// An optimiser over each member's parameters (`members[k]`, in a fixed order) with zeroed
    /// moments; one configuration per member.
    ///
    /// # Errors
    /// [`TrainError::Optimizer`] when there are not as many configurations as members.
    pub fn new(members: Vec<Vec<MemberParam>>, cfgs: Vec<AdamConfig>) -> Result<Self, TrainError> {
        if members.len() != cfgs.len() {
            return Err(TrainError::Optimizer(format!(
                "{} optimiser configurations for {} members",
                cfgs.len(),
                members.len()
            )));
        }
        let members = members
            .into_iter()
            .zip(cfgs)
            .map(|(params, cfg)| {
                let values: Vec<Tensor> = params.iter().map(MemberParam::value).collect();
                MemberAdam {
                    exp_avg: values.iter().map(Tensor::zeros_like).collect(),
                    exp_avg_sq: values.iter().map(Tensor::zeros_like).collect(),
                    steps: values
                        .iter()
                        .map(|v| Tensor::zeros([], (Kind::Float, v.device())))
                        .collect(),
                    values,
                    params,
                    cfg,
                }
            })
            .collect::<Vec<MemberAdam>>();
        // Stacked leaves appear in every member's list: keep member 0's and the members' own.
        let leaves = members
            .iter()
            .enumerate()
            .flat_map(|(k, m)| {
                m.params
                    .iter()
                    .filter(move |p| k == 0 || !p.is_row())
                    .map(|p| p.leaf().shallow_clone())
            })
            .collect();
        Ok(Self {
            members,
            taken: 0,
            leaves,
        })
    }

    /// The optimiser of every member of `model`, member `k` with `cfgs[k]`.
    ///
    /// # Errors
    /// As [`EnsembleAdam::new`].
    pub fn for_model(model: &GptEnsemble, cfgs: Vec<AdamConfig>) -> Result<Self, TrainError> {
        let members = (0..model.members())
            .map(|k| model.member_params(k))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(members, cfgs)
    }

    /// Drops every gradient (the next backward pass writes fresh ones).
    pub fn zero_grad(&mut self) {
        clear_grads(&self.leaves);
    }

    /// One update of every member from the accumulated gradients, member `k` with learning rate
    /// `lrs[k]` (and, for mixed precision, loss scaler `scalers[k]`).
    ///
    /// # Errors
    /// [`TrainError::Optimizer`] when libtorch rejects the update or `lrs` has the wrong length.
    pub fn step(
        &mut self,
        lrs: &[f64],
        mut scalers: Option<&mut [GradScaler]>,
    ) -> Result<(), TrainError> {
        if lrs.len() != self.members.len() {
            return Err(TrainError::Optimizer(format!(
                "{} learning rates for {} members",
                lrs.len(),
                self.members.len()
            )));
        }
        self.taken += 1;
        tch::no_grad(|| -> Result<(), TrainError> {
            for (k, member) in self.members.iter_mut().enumerate() {
                let active: Vec<(usize, Tensor)> = member
                    .params
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| p.grad().map(|g| (i, g)))
                    .collect();
                if active.is_empty() {
                    continue;
                }
                let params: Vec<&Tensor> = active.iter().map(|(i, _)| &member.values[*i]).collect();
                let grads: Vec<&Tensor> = active.iter().map(|(_, g)| g).collect();
                // The kernel reads the step counter; PyTorch increments it just before the call.
                for (i, _) in &active {
                    let _ = member.steps[*i].g_add_scalar_(1.0);
                }
                let pick = |ts: &[Tensor]| -> Vec<Tensor> {
                    active.iter().map(|(i, _)| ts[*i].shallow_clone()).collect()
                };
                let (exp_avgs, exp_avg_sqs, steps) = (
                    pick(&member.exp_avg),
                    pick(&member.exp_avg_sq),
                    pick(&member.steps),
                );
                let scaler = scalers.as_deref_mut().map(|s| &mut s[k]);
                if let Some(s) = &scaler {
                    s.check(&grads);
                }
                fused_adam(
                    &FusedGroup {
                        params: &params,
                        grads: &grads,
                        exp_avgs: &exp_avgs.iter().collect::<Vec<_>>(),
                        exp_avg_sqs: &exp_avg_sqs.iter().collect::<Vec<_>>(),
                        steps: &steps.iter().collect::<Vec<_>>(),
                    },
                    lrs[k],
                    &member.cfg,
                    scaler.as_deref(),
                )?;
                if let Some(s) = scaler {
                    s.update();
                }
            }
            Ok(())
        })
    }

    /// Member `k`'s state under the names of [`crate::optim::Adam::state`] (`exp_avg.<name>`,
    /// `exp_avg_sq.<name>`, `step.<name>`, `optimizer_steps`), for its checkpoints; empty when
    /// `k` is not a member.
    pub fn member_state(&self, k: usize) -> Vec<(String, Tensor)> {
        let Some(member) = self.members.get(k) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(3 * member.params.len() + 1);
        for (i, p) in member.params.iter().enumerate() {
            let name = p.name();
            out.push((format!("exp_avg.{name}"), member.exp_avg[i].shallow_clone()));
            out.push((
                format!("exp_avg_sq.{name}"),
                member.exp_avg_sq[i].shallow_clone(),
            ));
            out.push((format!("step.{name}"), member.steps[i].shallow_clone()));
        }
        out.push(("optimizer_steps".into(), Tensor::from(self.taken as i64)));
        out
    }
}
