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
//! Nothing is lost: every member's run directory is locked while it trains; a directory that
//! holds a run is refused unless it is resumed or explicitly overwritten; the resumable `last`
//! checkpoint is refreshed at epoch ends (`checkpoint_every`, `checkpoint_seconds`) and written
//! where the run stands when it is interrupted, mid-epoch included (the batch, the partial epoch
//! loss and the generator state), so a resumed run gives the metrics of an uninterrupted one; a
//! failed write of the local metrics log stops the run.
//!
//! Host synchronisations: one per logged batch (every `log_every` steps and each epoch's first),
//! one at each epoch's end (the epoch loss, which also catches a non-finite loss), and one per
//! evaluation. Everything else stays on the device.

use std::io::{IsTerminal, Write};
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
use crate::checkpoint::{self, Loaded, Position, Sidecar};
use crate::config::{DeviceChoice, RunConfig, TrainConfig, TrainRng, batching, keys};
use crate::data::DeviceData;
use crate::eval::{EvalReport, evaluate, evaluate_as_original, original_acc_prob, row_metrics};
use crate::ffi;
use crate::optim::{Adam, AdamConfig, GradScaler, lr_at};
use crate::run_dir::{self, Ending, RunDirLock};
use crate::sink::{MetricsSink, Row, Sinks, row};

pub use crate::data::load_or_generate;

/// Name of the checkpoint written at the end of every run and read by `--resume`.
pub const LAST: &str = "last";
/// Name of the checkpoint of the best macro CE.
pub const BEST: &str = "best";

/// How a run is started.
#[derive(Default)]
pub struct RunOptions {
    /// Continue each member's run in its `save_dir` from its newest valid checkpoint.
    pub resume: bool,
    /// Start afresh in a `save_dir` that holds a run, removing its record (without it, such a
    /// directory is refused).
    pub overwrite: bool,
    /// Set from another thread (Ctrl-C) to stop after the current batch.
    pub interrupt: Option<Arc<AtomicBool>>,
    /// Per member, sinks besides its local `metrics.jsonl` (W&B): empty, or one list per
    /// member.
    pub extra_sinks: Vec<Vec<Box<dyn MetricsSink>>>,
    /// No evaluation tables on stdout.
    pub quiet: bool,
    /// How this invocation was started, recorded in each member's `provenance.json` and shown
    /// in the banner (the program fills it; a library caller may leave it empty).
    pub provenance: Option<crate::provenance::Provenance>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("resume", &self.resume)
            .field("overwrite", &self.overwrite)
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
    /// Seconds spent writing `last` checkpoints during training (this invocation).
    pub checkpoint_seconds: f64,
    /// Whether the training loss grew far above where it started (three times the first epoch's
    /// and at least one nat more): the run goes on, but it is flagged here and warned about.
    pub diverged: bool,
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

/// The visiting order of `n` training rows in the next epoch on the original's stream
/// ([`TrainRng::Torch`]), drawn from libtorch's default CPU generator as an epoch of the
/// original's `DataLoader(shuffle=True)` draws it: `iter(loader)` draws the iterator's base seed,
/// then its `RandomSampler` draws a seed and returns `torch.randperm(n)` under a fresh generator
/// seeded with it. The batches are this order cut in `batch_size` pieces, the last one partial.
///
/// # Errors
/// [`TrainError::Rng`] when libtorch fails.
pub fn torch_epoch_order(n: usize) -> Result<Vec<i64>, TrainError> {
    ffi::draw_loader_seed()?; // the iterator's `_base_seed`, unused without workers
    let seed = ffi::draw_loader_seed()?;
    Ok(Vec::<i64>::try_from(ffi::randperm(n as i64, seed)?)?)
}

/// Builds the model of a single run under `vs` from its seed: on our stream
/// ([`TrainRng::Ours`]) [`Gpt::new`] after `tch::manual_seed(seed)`; on the original's
/// ([`TrainRng::Torch`]) then `tch::manual_seed(seed)` again and [`Gpt::init_as_original`], so
/// that the weights and the generator stand where the original's stand after building its model,
/// and the model computes as the original ([`Gpt::compute_as_original`]).
///
/// # Errors
/// Model errors (an invalid configuration).
pub fn build_model(
    vs: &tch::nn::Path,
    cfg: &gpt_rope::GptConfig,
    train: &TrainConfig,
) -> Result<Gpt, TrainError> {
    tch::manual_seed(train.seed as i64);
    let mut gpt = Gpt::new(vs, cfg)?;
    if train.rng == TrainRng::Torch {
        tch::manual_seed(train.seed as i64);
        gpt.init_as_original()?;
        gpt.compute_as_original();
    }
    Ok(gpt)
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
    mut cfgs: Vec<RunConfig>,
    mut opts: RunOptions,
) -> Result<Vec<Result<RunSummary, TrainError>>, TrainError> {
    check_members(&cfgs, &opts)?;
    crate::tune_allocator();
    let device = select_device(cfgs[0].train.device)?;
    if cfgs[0].train.threads > 0 {
        tch::set_num_threads(cfgs[0].train.threads as i32);
    }
    // One trainer per run directory (a fresh one where none is given), and no silent reuse of
    // one.
    let mut locks = Vec::with_capacity(cfgs.len());
    for cfg in &mut cfgs {
        if cfg.train.save_dir.as_os_str().is_empty() {
            cfg.train.save_dir = run_dir::fresh_dir("run");
        }
        locks.push(run_dir::lock(&cfg.train.save_dir)?);
    }
    let resumed = if opts.resume {
        cfgs.iter()
            .map(|c| {
                checkpoint::newest_valid(&c.train.save_dir)
                    .map(Some)
                    .ok_or_else(|| {
                        TrainError::Checkpoint(format!(
                            "{}: no valid checkpoint to resume from (the run stopped before its                              first one); start it again with --overwrite",
                            c.train.save_dir.display()
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?
    } else {
        for c in &cfgs {
            run_dir::prepare_fresh(&c.train.save_dir, opts.overwrite)?;
        }
        cfgs.iter().map(|_| None).collect()
    };

    let ds = crate::data::load_or_generate(&cfgs[0])?;
    let (params, notes) = crate::data::recorded_params(&ds, &cfgs[0].data);
    for note in notes {
        tracing::warn!("{}: {note}", cfgs[0].train.data_dir.display());
    }
    for cfg in &mut cfgs {
        cfg.data = params.clone();
    }
    let repeated = ds.repeated_rows();
    if let Some((file, row, earlier)) = repeated.first() {
        tracing::warn!(
            "{}: {} rows repeat an earlier row of their file (first: {file} row {row} = row {earlier}); they are kept, as the original's loader keeps them",
            cfgs[0].train.data_dir.display(),
            repeated.len()
        );
    }
    let data = DeviceData::new(&ds, device);
    if data.train.n == 0 {
        return Err(TrainError::Data(kg_data::DataError::File {
            file: cfgs[0].train.data_dir.join("train.json"),
            reason: "no training rows".into(),
        }));
    }
    let gpt_cfg = cfgs[0].model.with_vocab(ds.vocab.len() as i64);
    check_fits(&gpt_cfg, cfgs.len(), device)?;
    let vs = VarStore::new(device);
    let model = if cfgs.len() == 1 {
        Model::Single(build_model(&vs.root(), &gpt_cfg, &cfgs[0].train)?)
    } else {
        let seeds: Vec<u64> = cfgs.iter().map(|c| c.train.seed).collect();
        Model::Batched(GptEnsemble::from_seeds(&vs.root(), &gpt_cfg, &seeds)?)
    };
    let amp = cfgs[0].train.use_amp && device.is_cuda();
    // The original's stream also takes the original's optimiser where it ran it: PyTorch's
    // single-tensor Adam (its CPU default) wherever no loss scaling is needed.
    let adam_cfgs = cfgs
        .iter()
        .map(|c| {
            let adam = AdamConfig::new(c.train.optimizer, c.train.weight_decay);
            match c.train.rng {
                TrainRng::Torch if !amp => adam.unfused(),
                _ => adam,
            }
        })
        .collect();
    let mut opt = Adam::for_model(model.members(), adam_cfgs)?;
    let scalers = amp.then(|| cfgs.iter().map(|_| GradScaler::new(device)).collect());

    let fingerprint = ds.fingerprint();
    let (start, resume) = restore(&cfgs, resumed, &ds, &fingerprint, model.members(), &mut opt)?;
    if opts.resume && cfgs[0].train.rng == TrainRng::Torch && resume.rng_state.is_none() {
        return Err(TrainError::Checkpoint(format!(
            "{}: cannot resume with `rng` = \"torch\": the checkpoint holds no generator state",
            cfgs[0].train.save_dir.display()
        )));
    }
    banner(&cfgs, &ds, &gpt_cfg, device, &opts, start);
    if start.epoch >= cfgs[0].train.epochs {
        tracing::warn!(
            "the run already has {} epochs (epochs = {}): nothing to train; raise --epochs to continue it",
            start.epoch,
            cfgs[0].train.epochs
        );
    }
    if let Some(p) = &opts.provenance {
        for cfg in &cfgs {
            p.record(&cfg.train.save_dir)?;
        }
    }
    let mut extra = std::mem::take(&mut opts.extra_sinks);
    extra.resize_with(cfgs.len(), Vec::new);
    let mut members = Vec::with_capacity(cfgs.len());
    for ((cfg, mut more), best) in cfgs.into_iter().zip(extra).zip(resume.bests) {
        let save_dir = cfg.train.save_dir.clone();
        let mut sinks = Sinks(vec![Box::new(run_dir::open_record(
            &cfg,
            opts.resume.then_some(start.global_step),
        )?)]);
        sinks.0.append(&mut more);
        let analysis = Analysis::new(&ds, &save_dir, device)?;
        let mut clock = GeometryClock::new(
            cfg.train.geometry,
            cfg.train.eval_every,
            &cfg.train.pca_steps,
        );
        clock.replay(
            start.epoch,
            data.train.n.div_ceil(cfg.train.batch_size) as u64,
        );
        members.push(Member {
            summary: RunSummary {
                save_dir,
                epochs: start.epoch,
                global_step: start.global_step,
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
            first_ce: None,
            saved: None,
            last_checkpoint: Instant::now(),
        });
    }

    let mut trainer = Trainer {
        model,
        _vs: vs,
        opt,
        scalers,
        vocab: ds.vocab.tokens().to_vec(),
        dataset: fingerprint,
        epoch: start.epoch,
        global_step: start.global_step,
        members,
        resume_in_epoch: (start.batch_in_epoch > 0)
            .then_some((start.batch_in_epoch, resume.loss_sums)),
        resume_rng: resume.rng_state,
        epoch_rng: None,
        stopped_in_epoch: None,
        _locks: locks,
    };
    let outcome = trainer.train(&data, &opts);
    trainer.finish(outcome, device)
}

/// The few lines a run prints first (and its log keeps): what runs, on what, into where.
fn banner(
    cfgs: &[RunConfig],
    ds: &Dataset,
    gpt: &gpt_rope::GptConfig,
    device: Device,
    opts: &RunOptions,
    start: Position,
) {
    let p = opts.provenance.clone().unwrap_or_default();
    let dirty = match p.git_dirty.as_str() {
        "true" => ", with uncommitted changes",
        _ => "",
    };
    let commit: String = p.git_commit.chars().take(10).collect();
    tracing::info!(
        "train {} (commit {commit}{dirty}), libtorch {}, tch {}; {device:?}, {} thread{}",
        p.version,
        p.libtorch,
        p.tch,
        tch::get_num_threads(),
        if tch::get_num_threads() == 1 { "" } else { "s" }
    );
    tracing::info!(
        "model: {:.2} M parameters (d_model {}, {} layer{}, {} head{}, vocabulary {}){}",
        gpt.num_params() as f64 / 1e6,
        gpt.d_model,
        gpt.n_layer,
        if gpt.n_layer == 1 { "" } else { "s" },
        gpt.n_head,
        if gpt.n_head == 1 { "" } else { "s" },
        gpt.vocab_size,
        if cfgs.len() > 1 {
            format!(", {} members batched", cfgs.len())
        } else {
            String::new()
        }
    );
    let counts: Vec<String> = ds
        .counts()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(t, n)| format!("{} {n}", t.as_str()))
        .collect();
    tracing::info!(
        "data: {}: {} training rows; test rows {}",
        cfgs[0].train.data_dir.display(),
        ds.train.len(),
        counts.join(", ")
    );
    let how = if start.global_step > 0 {
        format!(
            "resumed at epoch {}, step {}",
            start.epoch, start.global_step
        )
    } else {
        "fresh".to_string()
    };
    let dirs: Vec<String> = cfgs
        .iter()
        .map(|c| c.train.save_dir.display().to_string())
        .collect();
    tracing::info!(
        "run: {} ({how}, {} epochs); W&B {}",
        dirs.join(", "),
        cfgs[0].train.epochs,
        if p.wandb.is_empty() { "off" } else { &p.wandb }
    );
}

/// What the checkpoints of resumed members give besides their weights and optimiser state.
struct Resumed {
    /// Best macro CE of each member.
    bests: Vec<Option<f64>>,
    /// Each member's partial epoch loss, when resumed mid-epoch.
    loss_sums: Vec<f64>,
    /// The generator state to continue a mid-epoch dropout stream with.
    rng_state: Option<Tensor>,
}

/// Loads every resumed member (weights, optimiser state) after checking that its checkpoint fits
/// the run; all members must stand at the same position. Returns that position (the start for
/// fresh runs) and the rest of what the checkpoints hold.
fn restore(
    cfgs: &[RunConfig],
    resumed: Vec<Option<Loaded>>,
    ds: &Dataset,
    fingerprint: &str,
    model: &dyn Members,
    opt: &mut Adam,
) -> Result<(Position, Resumed), TrainError> {
    let mut out = Resumed {
        bests: vec![None; cfgs.len()],
        loss_sums: vec![0.0; cfgs.len()],
        rng_state: None,
    };
    let mut start: Option<(PathBuf, Position)> = None;
    for (k, (cfg, loaded)) in cfgs.iter().zip(resumed).enumerate() {
        let Some(loaded) = loaded else {
            continue;
        };
        check_resumable(&loaded.sidecar, cfg, ds, fingerprint, &loaded.dir)?;
        model.load_member(k as i64, &loaded.params)?;
        opt.load_member_state(k, &loaded.optimizer)?;
        let at = loaded.sidecar.position();
        if let Some((other, first)) = &start {
            let same = |p: &Position| (p.epoch, p.global_step, p.batch_in_epoch);
            if same(&at) != same(first) {
                return Err(TrainError::Checkpoint(format!(
                    "{}: at epoch {}, step {}, but {} is at epoch {}, step {}: members resumed together must have been saved together",
                    loaded.dir.display(),
                    at.epoch,
                    at.global_step,
                    other.display(),
                    first.epoch,
                    first.global_step
                )));
            }
        }
        let within = if at.batch_in_epoch > 0 {
            format!(", batch {} of epoch {}", at.batch_in_epoch, at.epoch + 1)
        } else {
            String::new()
        };
        tracing::info!(
            "resuming {} from {} (epoch {}, step {}{within}): its newest valid checkpoint",
            cfg.train.save_dir.display(),
            loaded.dir.display(),
            at.epoch,
            at.global_step
        );
        out.bests[k] = loaded.sidecar.best_macro_ce;
        out.loss_sums[k] = at.epoch_loss_sum;
        out.rng_state = out.rng_state.or(loaded.rng_state);
        start = Some((loaded.dir, at));
    }
    Ok((start.map(|(_, p)| p).unwrap_or_default(), out))
}

/// Refuses a model that cannot fit before anything is allocated: its weights, gradients and
/// Adam's two moments (16 bytes a parameter, per member) against the memory this machine has
/// free (on CPU; a CUDA device reports its own out-of-memory error).
fn check_fits(cfg: &gpt_rope::GptConfig, members: usize, device: Device) -> Result<(), TrainError> {
    let (v, c, l) = (
        cfg.vocab_size as f64,
        cfg.d_model as f64,
        cfg.n_layer as f64,
    );
    // Embedding and head, then per block qkv, out, two MLP matrices and small vectors.
    let params = 2.0 * v * c + l * (12.0 * c * c + 13.0 * c);
    let needed = 16.0 * params * members as f64;
    let gib = |b: f64| b / (1u64 << 30) as f64;
    let available = match device {
        Device::Cpu => available_memory(),
        _ => None,
    };
    let too_big = needed > 1e15 || available.is_some_and(|a| needed > a);
    if too_big {
        return Err(TrainError::Config {
            source_name: "model".into(),
            reason: format!(
                "d_model = {}, n_layer = {}, vocabulary {} ({members} member(s)) need about {:.1} GiB for weights, gradients and Adam's moments{}",
                cfg.d_model,
                cfg.n_layer,
                cfg.vocab_size,
                gib(needed),
                available.map_or(String::new(), |a| format!(
                    ", more than the {:.1} GiB free here",
                    gib(a)
                ))
            ),
        });
    }
    Ok(())
}

/// Free memory of this machine in bytes (Linux `MemAvailable`), when known.
fn available_memory() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
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
    /// Training CE of the first epoch of this invocation (the divergence check's baseline).
    first_ce: Option<f64>,
    /// The last checkpoint written, in words (what a failure keeps).
    saved: Option<String>,
    /// When `last` was last written.
    last_checkpoint: Instant,
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
    /// [`Dataset::fingerprint`] of the dataset, recorded in checkpoints.
    dataset: String,
    /// Completed epochs.
    epoch: usize,
    global_step: u64,
    members: Vec<Member>,
    /// Resuming mid-epoch: the batches already done of the next epoch and each member's partial
    /// epoch loss.
    resume_in_epoch: Option<(usize, Vec<f64>)>,
    /// The generator state of a resumed checkpoint, restored at the start of the next epoch (on
    /// our stream only when it was written mid-epoch).
    resume_rng: Option<Tensor>,
    /// On the original's stream, the generator state at the start of the current epoch, before
    /// its order was drawn: what a mid-epoch checkpoint records, so that a resumed run draws the
    /// same order again.
    epoch_rng: Option<Tensor>,
    /// Where an interrupted epoch stopped: batches done and each member's partial loss.
    stopped_in_epoch: Option<(usize, Vec<f64>)>,
    /// Held for the whole run: one trainer per run directory.
    _locks: Vec<RunDirLock>,
}

impl Trainer {
    /// Writes member `k`'s checkpoint `name` at the trainer's position (mid-epoch when it was
    /// interrupted there), with the generator state.
    fn save(&mut self, k: usize, name: &str) -> Result<(), TrainError> {
        let started = Instant::now();
        let member = &self.members[k];
        let (batch_in_epoch, epoch_loss_sum) = match &self.stopped_in_epoch {
            Some((batch, sums)) => (*batch, sums[k]),
            None => (0, 0.0),
        };
        let sidecar = Sidecar {
            format_version: checkpoint::CHECKPOINT_FORMAT,
            config: member.cfg.clone(),
            vocab: self.vocab.clone(),
            dataset: Some(self.dataset.clone()),
            epoch: self.epoch,
            global_step: self.global_step,
            batch_in_epoch,
            epoch_loss_sum,
            best_macro_ce: member.best,
            files: Vec::new(),
        };
        let dir = checkpoint::path(&member.summary.save_dir, name);
        let rng = match (&self.epoch_rng, &self.stopped_in_epoch) {
            (Some(at_epoch_start), Some(_)) => at_epoch_start.shallow_clone(),
            _ => ffi::cpu_rng_state()?,
        };
        checkpoint::save(
            &dir,
            &self.model.members().member_state(k as i64)?,
            &self.opt.member_state(k),
            Some(&rng),
            &sidecar,
        )?;
        let member = &mut self.members[k];
        member.saved = Some(format!(
            "{} (epoch {}, step {})",
            dir.display(),
            self.epoch,
            self.global_step
        ));
        member.summary.checkpoint_seconds += started.elapsed().as_secs_f64();
        Ok(())
    }

    fn train(&mut self, data: &DeviceData, opts: &RunOptions) -> Result<(), TrainError> {
        let first = self.members[0].cfg.train.clone();
        let device = data.train.ids.device();
        let (n, w) = (data.train.n, data.train.ids.size()[1]);
        let k = self.members.len() as i64;
        let torch = first.rng == TrainRng::Torch;
        let interrupted = || {
            opts.interrupt
                .as_ref()
                .is_some_and(|f| f.load(Ordering::Relaxed))
        };
        let bar = progress_bar(opts.quiet, first.epochs, self.epoch);
        while self.epoch < first.epochs && self.members.iter().any(Member::alive) {
            let epoch = self.epoch + 1;
            let started = Instant::now();
            // A run resumed mid-epoch continues at its batch, with its partial losses and the
            // generator where it stopped.
            let (skip, sums) = self
                .resume_in_epoch
                .take()
                .unwrap_or_else(|| (0, vec![0.0; k as usize]));
            let orders: Vec<i64> = match first.rng {
                TrainRng::Ours => {
                    // Dropout masks of this epoch come from their own stream, so a resumed run
                    // draws the same. (Only single runs use dropout: batched members cannot.)
                    tch::manual_seed(mix_seed(first.seed, 1 << 32 | epoch as u64) as i64);
                    if let Some(state) = self.resume_rng.take()
                        && skip > 0
                    {
                        ffi::set_cpu_rng_state(&state)?;
                    }
                    self.members
                        .iter()
                        .flat_map(|m| epoch_order(n, m.cfg.train.seed, epoch))
                        .collect()
                }
                TrainRng::Torch => {
                    // One generator for the whole run, continued from a checkpoint where the
                    // run stopped (at an epoch's end, or this epoch's start when it stopped
                    // mid-epoch); one member (the ensemble rule refuses more).
                    if let Some(state) = self.resume_rng.take() {
                        ffi::set_cpu_rng_state(&state)?;
                    }
                    self.epoch_rng = Some(ffi::cpu_rng_state()?);
                    torch_epoch_order(n)?
                }
            };
            let orders = Tensor::from_slice(&orders)
                .view([k, n as i64])
                .to_device(device); // (K, n)
            // On the original's stream the epoch loss is its own: each batch's loss read back and
            // weighed by its rows, summed in double precision (one member).
            let mut running: f64 = if torch { sums[0] } else { 0.0 };
            let sums: Vec<f32> = sums.iter().map(|&x| x as f32).collect();
            let mut loss_sum = Tensor::from_slice(&sums).to_device(device); // (K)
            let mut batches = skip as i64;
            // On the original's stream with dropout, the batches done before a mid-epoch stop
            // are run forward again (without gradients) for their dropout draws, so that the
            // generator, restored to the epoch's start, stands where the stopped run left it.
            let replay = torch && self.members[0].cfg.model.dropout > 0.0;
            for (bi, start) in (0..n).step_by(first.batch_size).enumerate() {
                if bi < skip && !replay {
                    continue;
                }
                if bi >= skip && interrupted() {
                    let partial: Vec<f64> = if torch {
                        vec![running]
                    } else {
                        let partial: Vec<f32> = Vec::try_from(loss_sum.to_device(Device::Cpu))?;
                        partial.into_iter().map(f64::from).collect()
                    };
                    self.stopped_in_epoch = Some((bi, partial));
                    return Err(TrainError::Interrupted);
                }
                let len = first.batch_size.min(n - start) as i64;
                let index = orders.narrow(1, start as i64, len).reshape([k * len]); // (K·len)
                let (ids, pad, positions, answers) = data.train.gather(&index);
                let mut ids = ids.view([k, len, w]); // (K, len, w)
                let mut pad = pad.view([k, len, w]); // (K, len, w)
                let positions = positions.view([k, len]); // (K, len)
                let answers = answers.view([k, len]); // (K, len)
                if torch {
                    // As wide as the batch's longest row, as the original's `collate_pad` pads
                    // it: the shapes its dropout masks are drawn in.
                    let width = positions.max().int64_value(&[]) + 1;
                    ids = ids.narrow(2, 0, width);
                    pad = pad.narrow(2, 0, width);
                }
                if bi < skip {
                    tch::no_grad(|| {
                        self.model.members().forward_at_members(
                            &ids,
                            Some(&pad),
                            &positions,
                            Mode::Train,
                        )
                    })?;
                    continue;
                }
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
                if torch {
                    running += losses.f_double_value(&[0])? * len as f64;
                } else {
                    loss_sum += losses.detach();
                }
                batches += 1;
                let due: Vec<bool> = self
                    .members
                    .iter()
                    .map(|m| m.alive() && (bi == 0 || step % m.cfg.train.log_every as u64 == 0))
                    .collect();
                if due.iter().any(|&d| d) {
                    self.log_batch(&logits, &answers, &losses, &due, &lrs)?;
                }
            }
            let ce_epoch: Vec<f64> = if torch {
                vec![running / n as f64]
            } else {
                let ce: Vec<f32> = Vec::try_from(
                    (loss_sum / batches as f64)
                        .to_kind(Kind::Float)
                        .to_device(Device::Cpu),
                )?;
                ce.into_iter().map(f64::from).collect()
            };
            let train_seconds = started.elapsed().as_secs_f64();
            self.epoch = epoch;
            for (member, &ce) in self.members.iter_mut().zip(&ce_epoch) {
                if !member.alive() {
                    continue;
                }
                member.summary.train_seconds += train_seconds;
                member.summary.steps_this_run += batches as u64;
                if !ce.is_finite() {
                    let _ = member.sinks.flush();
                    member.failed = Some(TrainError::NonFinite {
                        epoch,
                        global_step: self.global_step,
                        value: ce,
                        kept: match &member.saved {
                            Some(saved) => format!("the last good checkpoint is kept: {saved}"),
                            None => "no checkpoint had been written yet".into(),
                        },
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

            if torch {
                // The original's evaluation loader draws its iterator's base seed.
                ffi::draw_loader_seed()?;
            }
            let eval_started = Instant::now();
            let reports = match self.model.members().as_gpt() {
                Some(gpt) if torch => {
                    vec![evaluate_as_original(gpt, &data.test, first.batch_size)?]
                }
                _ => evaluate(self.model.members(), &data.test)?,
            };
            let eval_seconds = eval_started.elapsed().as_secs_f64();
            for (i, report) in reports.into_iter().enumerate() {
                if !self.members[i].alive() {
                    continue;
                }
                let ce = ce_epoch[i];
                if let Err(e) =
                    self.finish_epoch(i, epoch, ce, report, eval_seconds, opts.quiet, &bar)
                {
                    let _ = self.members[i].sinks.flush();
                    self.members[i].failed = Some(e);
                }
            }
            if epoch < first.epochs {
                self.refresh_checkpoints(epoch);
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

    /// Logs the training row of every member that is `due`: the batch's mean CE, ACC and PROB
    /// (on the original's stream as the original computes them: its loss, the mean correctness
    /// of the argmax, the mean softmax probability of the answer).
    fn log_batch(
        &mut self,
        logits: &[Tensor],
        answers: &Tensor,
        losses: &Tensor,
        due: &[bool],
        lrs: &[f64],
    ) -> Result<(), TrainError> {
        let torch = self.members[0].cfg.train.rng == TrainRng::Torch;
        let m = tch::no_grad(|| {
            if torch {
                let rows: Vec<Tensor> = logits
                    .iter()
                    .zip(answers.unbind(0))
                    .zip(losses.detach().unbind(0))
                    .map(|((l, a), loss)| {
                        let (acc, prob) = original_acc_prob(&l.detach(), &a);
                        Tensor::stack(&[loss, acc.mean(Kind::Float), prob.mean(Kind::Float)], 0)
                    })
                    .collect();
                return Tensor::stack(&rows, 0); // (K, 3)
            }
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
        let baseline = *member.first_ce.get_or_insert(ce_epoch);
        if !member.summary.diverged && ce_epoch > 3.0 * baseline && ce_epoch > baseline + 1.0 {
            member.summary.diverged = true;
            tracing::warn!(
                "{}: the training loss diverged: train CE {ce_epoch:.4e} in epoch {epoch}, over three times the {baseline:.4} it started from (is the learning rate {} too large?); the run goes on",
                member.summary.save_dir.display(),
                member.cfg.train.lr
            );
            values.push((keys::DIVERGED.to_string(), 1.0));
        }
        let epoch_row: Row = row(step, Some(epoch), &values);
        member.sinks.log(step, &epoch_row);
        // The local metrics log is the record of truth: a run does not train on without it.
        member.sinks.flush()?;

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
                    // A closed stdout (`train | head`) must not stop the run; the values are
                    // in metrics.jsonl.
                    None => {
                        let _ = writeln!(std::io::stdout(), "{table}");
                    }
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

    /// Refreshes the resumable `last` checkpoint of every member due after `epoch`: every
    /// `checkpoint_every` epochs, and not sooner than `checkpoint_seconds` after its previous
    /// one. A failed write stops that member (its previous checkpoint stays valid).
    fn refresh_checkpoints(&mut self, epoch: usize) {
        for k in 0..self.members.len() {
            let m = &self.members[k];
            let t = &m.cfg.train;
            let due = m.alive()
                && epoch % t.checkpoint_every == 0
                && m.last_checkpoint.elapsed().as_secs_f64() >= t.checkpoint_seconds;
            if !due {
                continue;
            }
            match self.save(k, LAST) {
                Ok(()) => self.members[k].last_checkpoint = Instant::now(),
                Err(e) => self.members[k].failed = Some(e),
            }
        }
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

    /// The end of every member: `last` checkpoint where the run stands (unless its loss stopped
    /// being finite: the last good checkpoint is kept), final PCA, sinks finished with the
    /// member's exit code, `summary.json`, timings, plots. Returns `outcome`'s error (shared by
    /// all members) or one outcome per member.
    fn finish(
        mut self,
        outcome: Result<(), TrainError>,
        device: Device,
    ) -> Result<Vec<Result<RunSummary, TrainError>>, TrainError> {
        let (exit_code, ending) = match &outcome {
            Ok(()) => (0, Ending::Finished),
            Err(TrainError::Interrupted) => (130, Ending::Interrupted),
            Err(_) => (1, Ending::Failed),
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
                    .and_then(|gpt| member.analysis.record_pca(gpt, self.global_step, &[]));
                if let Err(e) = pca {
                    tracing::warn!("final PCA not recorded: {e}");
                }
            }
            let (code, own_ending) = match (&member.failed, exit_code) {
                (Some(_), 0) => (1, Ending::Failed),
                _ => (exit_code, ending),
            };
            member.sinks.finish(code);
            let error = member.failed.as_ref().or(outcome.as_ref().err());
            if let Err(e) = run_dir::write_summary(&member.summary, own_ending, error) {
                tracing::warn!("summary not written: {e}");
            }
            if let Err(e) = run_dir::write_timings(&member.summary, device, k) {
                tracing::warn!("timings not written: {e}");
            }
            if member.cfg.train.plots {
                run_dir::write_plots(&member.summary.save_dir);
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

/// A run can resume only with the same model, optimiser and data as its checkpoint.
fn check_resumable(
    sidecar: &Sidecar,
    cfg: &RunConfig,
    ds: &Dataset,
    fingerprint: &str,
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
    if then.train.rng != cfg.train.rng {
        return mismatch("rng");
    }
    if then.train.optimizer != cfg.train.optimizer {
        return mismatch("optimizer");
    }
    if sidecar.vocab != ds.vocab.tokens() {
        return mismatch("vocabulary (data_dir)");
    }
    if sidecar.dataset.as_deref().is_some_and(|d| d != fingerprint) {
        return Err(TrainError::Checkpoint(format!(
            "{}: cannot resume on {}: it is not the dataset the run trained on (its facts differ)",
            dir.display(),
            cfg.train.data_dir.display()
        )));
    }
    Ok(())
}
