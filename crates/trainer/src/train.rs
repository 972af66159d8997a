//! The training loop, read top to bottom: set up (device, data, model, optimiser, run
//! directories, resume), then epochs of shuffled batches with the last-token loss, an evaluation
//! after every epoch, logging, checkpoints, and a clean end.
//!
//! One loop drives K ≥ 1 members: [`run`] is the K = 1 case (the model is a [`Gpt`]), and
//! [`run_members`] trains K compatible configurations (see [`crate::config::batching`]) as one
//! [`GptEnsemble`]. A `Member` owns everything that is its own: configuration, sinks, analysis,
//! best value, summary, and its place in the optimiser; what the members share is the model's
//! computation, the data and the step. Each member reproduces the run its configuration makes
//! alone:
//! - initialisation: member `k` is `Gpt::new` under `tch::manual_seed(seed_k)`;
//! - data: member `k`'s batch at each step follows its own shuffle ([`epoch_order`] of `seed_k`);
//! - loss: the sum over members of each member's mean last-token cross-entropy, so each member
//!   receives exactly its own gradient;
//! - optimiser: one fused Adam/AdamW call per member with its own learning rate, warm-up, kind,
//!   weight decay and (mixed precision on CUDA) loss scaler;
//! - evaluation, logging, checkpoints, resume, analysis: per member, into its own run directory.
//!
//! Batched members equal their separate runs up to floating-point summation order (batched
//! matrix products may add in another order): in practice a relative 1e-5 on the losses after a
//! few epochs.
//!
//! Host synchronisations: one per logged batch (every `log_every` steps and each epoch's first),
//! one at each epoch's end (the epoch loss, which also catches a non-finite loss), and one per
//! evaluation. Everything else stays on the device.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use gpt_rope::ensemble::{GptEnsemble, member_losses};
use gpt_rope::{Gpt, Members, Mode};
use indicatif::{ProgressBar, ProgressStyle};
use kg_data::{Dataset, Sampler};
use tch::{Device, Kind, Tensor, nn::VarStore};

use crate::TrainError;
use crate::analysis::{Analysis, GeometryClock, analyse_epoch};
use crate::checkpoint::{self, Sidecar};
use crate::config::{DeviceChoice, RunConfig, batching, keys};
use crate::data::DeviceData;
use crate::eval::{EvalReport, evaluate, row_metrics};
use crate::optim::{Adam, AdamConfig, GradScaler, lr_at};
use crate::sink::{JsonlSink, MetricsSink, Row, Sinks, row};

/// Name of the checkpoint written at the end of every run and read by `--resume`.
pub const LAST: &str = "last";
/// Name of the checkpoint of the best macro CE.
pub const BEST: &str = "best";

/// How a run is started.
#[derive(Default)]
pub struct RunOptions {
    /// Continue each member's run in its `save_dir` from its `last` checkpoint.
    pub resume: bool,
    /// Set from another thread (Ctrl-C) to stop after the current batch.
    pub interrupt: Option<Arc<AtomicBool>>,
    /// Per member, sinks besides its local `metrics.jsonl` (W&B): empty, or one list per
    /// member.
    pub extra_sinks: Vec<Vec<Box<dyn MetricsSink>>>,
    /// No evaluation tables on stdout.
    pub quiet: bool,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("resume", &self.resume)
            .field("extra_sinks", &self.extra_sinks.len())
            .field("quiet", &self.quiet)
            .finish()
    }
}

/// What a finished run reports.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// The run directory.
    pub save_dir: PathBuf,
    /// Completed epochs.
    pub epochs: usize,
    /// Optimiser steps.
    pub global_step: u64,
    /// The last evaluation.
    pub final_eval: Option<EvalReport>,
    /// Seconds spent in training steps (this invocation; shared with the other members).
    pub train_seconds: f64,
    /// Seconds spent in evaluations (this invocation; shared with the other members).
    pub eval_seconds: f64,
    /// Seconds spent in geometry tracking (this invocation).
    pub geometry_seconds: f64,
    /// Optimiser steps taken by this invocation.
    pub steps_this_run: u64,
    /// Epochs run by this invocation.
    pub epochs_this_run: usize,
}

/// Resolves the device choice.
///
/// # Errors
/// [`TrainError::Config`] for `cuda` when libtorch sees no CUDA device.
pub fn select_device(choice: DeviceChoice) -> Result<Device, TrainError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => Ok(Device::cuda_if_available()),
        DeviceChoice::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        DeviceChoice::Cuda => Err(TrainError::Config {
            source_name: "device".into(),
            reason: "`device = cuda` but libtorch sees no CUDA device".into(),
        }),
    }
}

/// Loads the dataset of `cfg.train.data_dir`, generating it from `cfg.data` first when the
/// directory holds none.
///
/// # Errors
/// Data and I/O errors.
pub fn load_or_generate(cfg: &RunConfig) -> Result<Dataset, TrainError> {
    let dir = &cfg.train.data_dir;
    if Dataset::exists(dir) {
        return Ok(Dataset::load(dir)?);
    }
    tracing::info!(
        "no dataset in {}; generating one from the [data] parameters",
        dir.display()
    );
    let ds = kg_data::generate(&cfg.data)?;
    ds.save(dir)?;
    Ok(ds)
}

/// A seed for (`seed`, `stream`) pairs: SplitMix64 of their combination, so that every epoch
/// has its own shuffle and dropout stream, reproducible on resume.
pub fn mix_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The visiting order of `n` training rows in epoch `epoch` (1-based).
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<i64> {
    let mut order: Vec<i64> = (0..n as i64).collect();
    Sampler::new(mix_seed(seed, epoch as u64)).shuffle(&mut order);
    order
}

/// Trains according to `cfg` (validated here): the one-member case of [`run_members`].
///
/// Initialisation and dropout draw from libtorch's generator, which is global to the process
/// (seeded here from `seed`): runs are reproducible one at a time per process, which is how
/// `train` and the sweep tool run them.
///
/// # Errors
/// Configuration, data, I/O and checkpoint errors; [`TrainError::NonFinite`] when the loss
/// stops being finite (the last good checkpoint is kept); [`TrainError::Interrupted`] when the
/// interrupt flag was raised (a `last` checkpoint is written first, so the run can resume).
pub fn run(cfg: RunConfig, opts: RunOptions) -> Result<RunSummary, TrainError> {
    run_members(vec![cfg], opts)?
        .pop()
        .unwrap_or_else(|| unreachable!("one configuration gives one outcome"))
}

/// Trains every configuration of `cfgs` and returns one outcome per member, in order. One
/// configuration trains a [`Gpt`]; several must be compatible ([`batching::compatible`]) and
/// train as one batched [`GptEnsemble`].
///
/// The outer error stops all members (setup, data, libtorch, interruption); an inner one
/// concerns its member only ([`TrainError::NonFinite`], a failed measurement or checkpoint),
/// and the other members go on.
///
/// Calls [`crate::tune_allocator`] (process-wide glibc thresholds that keep per-step gradient
/// allocations in the heap).
///
/// # Errors
/// As [`run`]; [`TrainError::Config`] naming the member and the key that makes two members
/// incompatible, or a `save_dir` used twice.
pub fn run_members(
    cfgs: Vec<RunConfig>,
    mut opts: RunOptions,
) -> Result<Vec<Result<RunSummary, TrainError>>, TrainError> {
    check_members(&cfgs, &opts)?;
    let first = &cfgs[0];
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
    let vs = VarStore::new(device);
    let model = if cfgs.len() == 1 {
        tch::manual_seed(first.train.seed as i64);
        Model::Single(Gpt::new(&vs.root(), &gpt_cfg)?)
    } else {
        let seeds: Vec<u64> = cfgs.iter().map(|c| c.train.seed).collect();
        Model::Batched(GptEnsemble::from_seeds(&vs.root(), &gpt_cfg, &seeds)?)
    };
    let adam_cfgs = cfgs
        .iter()
        .map(|c| AdamConfig::new(c.train.optimizer, c.train.weight_decay))
        .collect();
    let mut opt = Adam::for_model(model.members(), adam_cfgs)?;
    let amp = first.train.use_amp && device.is_cuda();
    let scalers = amp.then(|| cfgs.iter().map(|_| GradScaler::new(device)).collect());

    let (mut epoch, mut global_step) = (0usize, 0u64);
    let mut bests = vec![None; cfgs.len()];
    if opts.resume {
        let mut at: Option<(PathBuf, usize, u64)> = None;
        for (k, cfg) in cfgs.iter().enumerate() {
            let dir = checkpoint::path(&cfg.train.save_dir, LAST);
            let loaded = checkpoint::load(&dir)?;
            check_resumable(&loaded.sidecar, cfg, &ds, &dir)?;
            model.members().load_member(k as i64, &loaded.params)?;
            opt.load_member_state(k, &loaded.optimizer)?;
            let (e, s) = (loaded.sidecar.epoch, loaded.sidecar.global_step);
            if let Some((other, e0, s0)) = &at {
                if (e, s) != (*e0, *s0) {
                    return Err(TrainError::Checkpoint(format!(
                        "{}: at epoch {e}, step {s}, but {} is at epoch {e0}, step {s0}: members resumed together must have been saved together",
                        dir.display(),
                        other.display()
                    )));
                }
            }
            at = Some((dir, e, s));
            (epoch, global_step) = (e, s);
            bests[k] = loaded.sidecar.best_macro_ce;
        }
        tracing::info!("resuming at epoch {epoch}, step {global_step}");
    }

    let mut extra = std::mem::take(&mut opts.extra_sinks);
    extra.resize_with(cfgs.len(), Vec::new);
    let mut members = Vec::with_capacity(cfgs.len());
    for ((cfg, mut more), best) in cfgs.into_iter().zip(extra).zip(bests) {
        let save_dir = cfg.train.save_dir.clone();
        let mut sinks = Sinks(vec![Box::new(open_run_dir(
            &cfg,
            opts.resume.then_some(global_step),
        )?)]);
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
                epochs: epoch,
                global_step,
                ..Default::default()
            },
            cfg,
            sinks,
            analysis,
            clock,
            shadow: None,
            best,
            failed: None,
            status: String::new(),
        });
    }

    let mut trainer = Trainer {
        model,
        _vs: vs,
        opt,
        scalers,
        vocab: ds.vocab.tokens().to_vec(),
        epoch,
        global_step,
        members,
    };
    let outcome = trainer.train(&data, &opts);
    trainer.finish(outcome, device)
}

/// The checks before anything is created: every configuration valid, several ones compatible
/// with the first and each with its own `save_dir`, one list of extra sinks per member.
fn check_members(cfgs: &[RunConfig], opts: &RunOptions) -> Result<(), TrainError> {
    let config_err = |source_name: String, reason: String| TrainError::Config {
        source_name,
        reason,
    };
    let Some(first) = cfgs.first() else {
        return Err(config_err(
            "members".into(),
            "no configurations given".into(),
        ));
    };
    for (i, cfg) in cfgs.iter().enumerate() {
        cfg.validate()?;
        if cfgs.len() == 1 {
            break;
        }
        let origin = || format!("ensemble member {i} ({})", cfg.train.save_dir.display());
        batching::compatible(first, cfg).map_err(|reason| config_err(origin(), reason))?;
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
            "members".into(),
            format!(
                "{} lists of extra sinks for {} members",
                opts.extra_sinks.len(),
                cfgs.len()
            ),
        ));
    }
    Ok(())
}

/// The model being trained: one [`Gpt`], or K members batched.
enum Model {
    Single(Gpt),
    Batched(GptEnsemble),
}

impl Model {
    fn members(&self) -> &dyn Members {
        match self {
            Model::Single(gpt) => gpt,
            Model::Batched(ensemble) => ensemble,
        }
    }
}

/// One member's run: its configuration, sinks, analysis and bookkeeping.
struct Member {
    cfg: RunConfig,
    sinks: Sinks,
    analysis: Analysis,
    clock: GeometryClock,
    /// For a batched member, a single model its weights are copied into for the analysis,
    /// built when first needed.
    shadow: Option<(VarStore, Gpt)>,
    best: Option<f64>,
    summary: RunSummary,
    /// Set when the member stopped on its own; it is no longer logged, evaluated or saved.
    failed: Option<TrainError>,
    /// The one-line state after its last evaluation.
    status: String,
}

impl Member {
    fn alive(&self) -> bool {
        self.failed.is_none()
    }

    /// Member `k` as a [`Gpt`] for the analysis: the model itself when it is one, else the
    /// member's shadow with its current weights copied in.
    fn as_gpt<'a>(
        shadow: &'a mut Option<(VarStore, Gpt)>,
        model: &'a dyn Members,
        k: i64,
        save_dir: &Path,
    ) -> Result<&'a Gpt, TrainError> {
        if let Some(gpt) = model.as_gpt() {
            return Ok(gpt);
        }
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
}

/// The shared loop state.
struct Trainer {
    model: Model,
    /// Owns the model's variables.
    _vs: VarStore,
    opt: Adam,
    /// One loss scaler per member, with mixed precision on CUDA.
    scalers: Option<Vec<GradScaler>>,
    vocab: Vec<String>,
    /// Completed epochs.
    epoch: usize,
    global_step: u64,
    members: Vec<Member>,
}

impl Trainer {
    /// Writes member `k`'s checkpoint `name`.
    fn save(&self, k: usize, name: &str) -> Result<(), TrainError> {
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
            &self.model.members().member_state(k as i64)?,
            &self.opt.member_state(k),
            &sidecar,
        )
    }

    fn train(&mut self, data: &DeviceData, opts: &RunOptions) -> Result<(), TrainError> {
        let first = self.members[0].cfg.train.clone();
        let device = data.train.ids.device();
        let (n, w) = (data.train.n, data.train.ids.size()[1]);
        let k = self.members.len() as i64;
        let interrupted = || {
            opts.interrupt
                .as_ref()
                .is_some_and(|f| f.load(Ordering::Relaxed))
        };
        let bar = progress_bar(opts.quiet, first.epochs, self.epoch);
        while self.epoch < first.epochs && self.members.iter().any(Member::alive) {
            let epoch = self.epoch + 1;
            let started = Instant::now();
            // Dropout masks of this epoch come from their own stream, so a resumed run draws the
            // same. (Only single runs use dropout: batched members cannot have it.)
            tch::manual_seed(mix_seed(first.seed, 1 << 32 | epoch as u64) as i64);
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
                let logits = tch::autocast(self.scalers.is_some(), || {
                    self.model.members().forward_at_members(
                        &ids,
                        Some(&pad),
                        &positions,
                        Mode::Train,
                    )
                })?; // K × (len, v)
                let losses = member_losses(&logits, &answers); // (K)
                self.opt.zero_grad()?;
                match self.scalers.as_deref() {
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
                self.opt.step(&lrs, self.scalers.as_deref_mut())?;
                loss_sum += losses.detach();
                batches += 1;
                let due: Vec<bool> = self
                    .members
                    .iter()
                    .map(|m| m.alive() && (bi == 0 || step % m.cfg.train.log_every as u64 == 0))
                    .collect();
                if due.iter().any(|&d| d) {
                    self.log_batch(&logits, &answers, &due, &lrs)?;
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
            if !self.members.iter().any(Member::alive) {
                break;
            }

            let eval_started = Instant::now();
            let reports = evaluate(self.model.members(), &data.test)?;
            let eval_seconds = eval_started.elapsed().as_secs_f64();
            for (i, report) in reports.into_iter().enumerate() {
                if !self.members[i].alive() {
                    continue;
                }
                let ce = f64::from(ce_epoch[i]);
                if let Err(e) =
                    self.finish_epoch(i, epoch, ce, report, eval_seconds, opts.quiet, &bar)
                {
                    self.members[i].sinks.flush();
                    self.members[i].failed = Some(e);
                }
            }
            if let Some(bar) = &bar {
                bar.set_position(epoch as u64);
                bar.set_message(self.progress_message());
            }
        }
        if let Some(bar) = bar {
            bar.finish();
        }
        Ok(())
    }

    /// Logs the training row of every member that is `due`.
    fn log_batch(
        &mut self,
        logits: &[Tensor],
        answers: &Tensor,
        due: &[bool],
        lrs: &[f64],
    ) -> Result<(), TrainError> {
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
        let step = self.global_step;
        for (i, member) in self.members.iter_mut().enumerate() {
            if due[i] {
                let values = batch_values(&m[3 * i..3 * i + 3], lrs[i]);
                member.sinks.log(step, &row(step, None, &values));
            }
        }
        Ok(())
    }

    /// Logging, analysis, printing and checkpoints of member `i` after an epoch.
    #[allow(clippy::too_many_arguments)]
    fn finish_epoch(
        &mut self,
        i: usize,
        epoch: usize,
        ce_epoch: f64,
        report: EvalReport,
        eval_seconds: f64,
        quiet: bool,
        bar: &Option<ProgressBar>,
    ) -> Result<(), TrainError> {
        let step = self.global_step;
        let several = self.members.len() > 1;
        let model = self.model.members();
        let member = &mut self.members[i];
        member.summary.eval_seconds += eval_seconds;
        let mut values = vec![(keys::TRAIN_CE_EPOCH.to_string(), ce_epoch)];
        values.extend(report.to_row());
        let save_dir = member.summary.save_dir.clone();
        let shadow = &mut member.shadow;
        analyse_epoch(
            &mut member.clock,
            &member.analysis,
            epoch,
            step,
            || Member::as_gpt(shadow, model, i as i64, &save_dir),
            &mut values,
            &mut member.summary.geometry_seconds,
        )?;
        let epoch_row: Row = row(step, Some(epoch), &values);
        member.sinks.log(step, &epoch_row);
        member.sinks.flush();

        member.status = status(step, ce_epoch, &report);
        let t = &member.cfg.train;
        if epoch % t.eval_every == 0 || epoch == t.epochs {
            let who = if several {
                format!("[{}] ", save_dir.display())
            } else {
                String::new()
            };
            if bar.is_none() {
                tracing::info!("{who}epoch {epoch}/{} {}", t.epochs, member.status);
            }
            if !quiet {
                let table = format!(
                    "{who}epoch {epoch}/{} step {step}\n{}",
                    t.epochs,
                    report.table()
                );
                match bar {
                    Some(bar) => bar.println(table),
                    None => println!("{table}"),
                }
            }
        }
        let improved = member.best.is_none_or(|b| report.macro_ce < b);
        if improved {
            member.best = Some(report.macro_ce);
        }
        let save_every = t.save_every;
        member.summary.final_eval = Some(report);
        if save_every > 0 {
            if epoch % save_every == 0 {
                self.save(i, &format!("epoch{epoch:03}"))?;
            }
            if improved {
                self.save(i, BEST)?;
            }
        }
        Ok(())
    }

    /// The progress bar's message: the member's status, or the range over members.
    fn progress_message(&self) -> String {
        let alive: Vec<&Member> = self.members.iter().filter(|m| m.alive()).collect();
        match alive[..] {
            [m] => m.status.clone(),
            _ => {
                let ood: Vec<f64> = alive
                    .iter()
                    .filter_map(|m| m.summary.final_eval.as_ref().map(ood_analogical_acc))
                    .collect();
                let lo = ood.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = ood.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                format!(
                    "step {} {}/{} members, OOD analogical ACC {lo:.3}-{hi:.3}",
                    self.global_step,
                    alive.len(),
                    self.members.len()
                )
            }
        }
    }

    /// The end of every member: `last` checkpoint (unless its loss stopped being finite: the
    /// last good checkpoint is kept), final PCA, sinks finished with the member's exit code,
    /// timings, plots. Returns `outcome`'s error (shared by all members) or one outcome per
    /// member.
    fn finish(
        mut self,
        outcome: Result<(), TrainError>,
        device: Device,
    ) -> Result<Vec<Result<RunSummary, TrainError>>, TrainError> {
        let exit_code = match &outcome {
            Ok(()) => 0,
            Err(TrainError::Interrupted) => 130,
            Err(_) => 1,
        };
        let k = self.members.len();
        let mut results = Vec::with_capacity(k);
        for i in 0..k {
            let non_finite = matches!(self.members[i].failed, Some(TrainError::NonFinite { .. }));
            if !non_finite {
                if let Err(e) = self.save(i, LAST) {
                    self.members[i].failed.get_or_insert(e);
                }
            }
            let model = self.model.members();
            let member = &mut self.members[i];
            if outcome.is_ok() && member.failed.is_none() {
                let save_dir = member.summary.save_dir.clone();
                let pca = Member::as_gpt(&mut member.shadow, model, i as i64, &save_dir)
                    .and_then(|gpt| member.analysis.record_pca(gpt, self.global_step));
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
            if let Err(e) = write_timings(&member.summary.save_dir, &member.summary, device, k) {
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
}

/// A bar on a terminal; elsewhere (logs, CI, sweeps) a plain line every `eval_every` epochs.
fn progress_bar(quiet: bool, epochs: usize, done: usize) -> Option<ProgressBar> {
    (!quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(epochs as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} epoch {pos}/{len} {elapsed_precise} eta {eta_precise} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_position(done as u64);
        bar
    })
}

fn ood_analogical_acc(report: &EvalReport) -> f64 {
    report
        .per_type
        .get(&kg_data::FactType::OodAnalogical)
        .map_or(f64::NAN, |m| m.acc)
}

/// One line of a member's state after an evaluation.
fn status(step: u64, ce_epoch: f64, report: &EvalReport) -> String {
    format!(
        "step {step} train CE {ce_epoch:.4} macro ACC {:.3} OOD analogical ACC {:.3}",
        report.macro_acc,
        ood_analogical_acc(report)
    )
}

/// Draws a finished run's plots into `<save_dir>/plots`; a failure is a warning (the run itself
/// is complete).
fn write_plots(save_dir: &Path) {
    match plots::write_run_plots(save_dir) {
        Ok(files) => tracing::info!(
            "{} plot files in {}",
            files.len(),
            save_dir.join("plots").display()
        ),
        Err(e) => tracing::warn!("plots not written: {e}"),
    }
}

/// The values of a logged training batch: `[CE, ACC, PROB]` means of its rows (as
/// [`row_metrics`] columns) and the learning rate.
fn batch_values(m: &[f32], lr: f64) -> [(String, f64); 4] {
    [
        (keys::TRAIN_CE_LAST.to_string(), f64::from(m[0])),
        (keys::TRAIN_ACC_LAST.to_string(), f64::from(m[1])),
        (keys::TRAIN_PROB_LAST.to_string(), f64::from(m[2])),
        (keys::LR.to_string(), lr),
    ]
}

/// Opens a run directory's local record and writes its `config.toml`. A fresh start removes the
/// `metrics.jsonl` and `pca.jsonl` of an earlier run in the same directory; a resume from a
/// checkpoint at `resume_step` drops their rows after that step, so the lost tail is written
/// exactly once. Returns the `metrics.jsonl` sink.
fn open_run_dir(cfg: &RunConfig, resume_step: Option<u64>) -> Result<JsonlSink, TrainError> {
    let save_dir = &cfg.train.save_dir;
    let metrics_path = save_dir.join("metrics.jsonl");
    for path in [metrics_path.clone(), save_dir.join("pca.jsonl")] {
        match resume_step {
            Some(step) => {
                JsonlSink::truncate_after(&path, step)?;
            }
            None if path.exists() => {
                std::fs::remove_file(&path).map_err(|source| TrainError::Io {
                    path: path.clone(),
                    source,
                })?
            }
            None => {}
        }
    }
    checkpoint::write_atomic(
        &save_dir.join("config.toml"),
        cfg.to_toml_string().as_bytes(),
    )?;
    JsonlSink::open(&metrics_path)
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`), when known.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Writes `timings.json`: where this invocation's time went, for benchmarks. `members` is the
/// number of runs trained in the same batched process (1 for a single run); their training and
/// evaluation seconds are the shared process's.
fn write_timings(
    save_dir: &Path,
    s: &RunSummary,
    device: Device,
    members: usize,
) -> Result<(), TrainError> {
    let epochs = s.epochs_this_run.max(1) as f64;
    let json = serde_json::json!({
        "device": format!("{device:?}"),
        "batched_members": members,
        "threads": tch::get_num_threads(),
        "epochs": s.epochs_this_run,
        "steps": s.steps_this_run,
        "train_seconds": s.train_seconds,
        "eval_seconds": s.eval_seconds,
        "geometry_seconds": s.geometry_seconds,
        "steps_per_second": s.steps_this_run as f64 / s.train_seconds.max(1e-9),
        "train_ms_per_step": 1e3 * s.train_seconds / (s.steps_this_run.max(1) as f64),
        "train_seconds_per_epoch": s.train_seconds / epochs,
        "eval_ms_per_epoch": 1e3 * s.eval_seconds / epochs,
        "peak_rss_mib": peak_rss_mib(),
    });
    let text = serde_json::to_string_pretty(&json).unwrap_or_default();
    checkpoint::write_atomic(&save_dir.join("timings.json"), text.as_bytes())
}

/// A run can resume only with the same model, optimiser and data as its checkpoint.
fn check_resumable(
    sidecar: &Sidecar,
    cfg: &RunConfig,
    ds: &Dataset,
    dir: &Path,
) -> Result<(), TrainError> {
    let then = &sidecar.config;
    let mismatch = |what: &str| {
        Err(TrainError::Checkpoint(format!(
            "{}: cannot resume: `{what}` differs from the checkpoint's configuration",
            dir.display()
        )))
    };
    if then.model != cfg.model {
        return mismatch("[model]");
    }
    if then.train.seed != cfg.train.seed {
        return mismatch("seed");
    }
    if then.train.batch_size != cfg.train.batch_size {
        return mismatch("batch_size");
    }
    if then.train.optimizer != cfg.train.optimizer {
        return mismatch("optimizer");
    }
    if sidecar.vocab != ds.vocab.tokens() {
        return mismatch("vocabulary (data_dir)");
    }
    Ok(())
}
