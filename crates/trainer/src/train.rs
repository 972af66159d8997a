//! The training loop of SPEC §3, read top to bottom: set up (device, data, model, optimiser,
//! run directory, resume), then epochs of shuffled batches with the last-token loss, an
//! evaluation after every epoch, logging, checkpoints, and a clean end.
//!
//! Host synchronisations: one per logged batch (every `log_every` steps and each epoch's first),
//! one at each epoch's end (the epoch loss, which also catches a non-finite loss), and one per
//! evaluation. Everything else stays on the device.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use gpt_rope::{Gpt, last_token_loss};
use indicatif::{ProgressBar, ProgressStyle};
use kg_data::{Dataset, Sampler};
use tch::{Device, Kind, Tensor, nn::VarStore};

use crate::TrainError;
use crate::analysis::{Analysis, GeometryClock, analyse_epoch};
use crate::checkpoint::{self, Sidecar};
use crate::config::{DeviceChoice, RunConfig};
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
    /// Continue the run in `save_dir` from its `last` checkpoint.
    pub resume: bool,
    /// Set from another thread (Ctrl-C) to stop after the current batch.
    pub interrupt: Option<Arc<AtomicBool>>,
    /// Sinks besides the local `metrics.jsonl` (W&B).
    pub extra_sinks: Vec<Box<dyn MetricsSink>>,
    /// No evaluation tables on stdout.
    pub quiet: bool,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("resume", &self.resume)
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
    /// Seconds spent in training steps (this invocation).
    pub train_seconds: f64,
    /// Seconds spent in evaluations (this invocation).
    pub eval_seconds: f64,
    /// Seconds spent in geometry tracking (this invocation).
    pub geometry_seconds: f64,
    /// Optimiser steps taken by this invocation.
    pub steps_this_run: u64,
    /// Epochs run by this invocation.
    pub epochs_this_run: usize,
}

/// Resolves the device choice.
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

/// Trains according to `cfg` (already validated or not: it is validated here).
///
/// Calls [`crate::tune_allocator`] (process-wide glibc thresholds that keep per-step gradient
/// allocations in the heap).
///
/// Initialisation and dropout draw from libtorch's generator, which is global to the process
/// (seeded here from `seed`): runs are reproducible one at a time per process, which is how
/// `train` and the sweep tool run them.
///
/// # Errors
/// Configuration, data, I/O and checkpoint errors; [`TrainError::NonFinite`] when the loss
/// stops being finite (the last good checkpoint is kept); [`TrainError::Interrupted`] when the
/// interrupt flag was raised (a `last` checkpoint is written first, so the run can resume).
pub fn run(cfg: RunConfig, mut opts: RunOptions) -> Result<RunSummary, TrainError> {
    cfg.validate()?;
    crate::tune_allocator();
    let device = select_device(cfg.train.device)?;
    if cfg.train.threads > 0 {
        tch::set_num_threads(cfg.train.threads as i32);
    }
    let save_dir = cfg.train.save_dir.clone();
    std::fs::create_dir_all(&save_dir).map_err(|source| TrainError::Io {
        path: save_dir.clone(),
        source,
    })?;

    let ds = load_or_generate(&cfg)?;
    let data = DeviceData::new(&ds, device);
    if data.train.n == 0 {
        return Err(TrainError::Data(kg_data::DataError::File {
            file: cfg.train.data_dir.join("train.json"),
            reason: "no training rows".into(),
        }));
    }
    let vocab_size = ds.vocab.len() as i64;

    tch::manual_seed(cfg.train.seed as i64);
    let vs = VarStore::new(device);
    let model = Gpt::new(&vs.root(), &cfg.model.with_vocab(vocab_size))?;
    let mut opt = Adam::new(
        named_params(&vs),
        AdamConfig::new(cfg.train.optimizer, cfg.train.weight_decay),
    );
    let amp = cfg.train.use_amp && device.is_cuda();
    let mut scaler = amp.then(|| GradScaler::new(device));

    let (mut epoch, mut global_step, mut best) = (0usize, 0u64, None::<f64>);
    if opts.resume {
        let dir = checkpoint::path(&save_dir, LAST);
        let loaded = checkpoint::load(&dir)?;
        check_resumable(&loaded.sidecar, &cfg, &ds, &dir)?;
        checkpoint::restore_params(&vs, &loaded.params, &dir)?;
        opt.load_state(&loaded.optimizer)?;
        (epoch, global_step, best) = (
            loaded.sidecar.epoch,
            loaded.sidecar.global_step,
            loaded.sidecar.best_macro_ce,
        );
        tracing::info!(
            "resuming {} at epoch {epoch}, step {global_step}",
            save_dir.display()
        );
    }
    let local = open_run_dir(&cfg, opts.resume.then_some(global_step))?;
    let mut sinks = Sinks(vec![Box::new(local)]);
    sinks.0.append(&mut opts.extra_sinks);
    let analysis = Analysis::new(&ds, &save_dir, device)?;
    let mut clock = GeometryClock::new(
        cfg.train.geometry,
        cfg.train.eval_every,
        &cfg.train.pca_steps,
    );

    let mut state = LoopState {
        cfg: &cfg,
        vs: &vs,
        vocab: ds.vocab.tokens().to_vec(),
        epoch,
        global_step,
        best,
        summary: RunSummary {
            save_dir: save_dir.clone(),
            epochs: epoch,
            global_step,
            ..Default::default()
        },
    };
    let outcome = train_epochs(
        &mut state,
        &model,
        &mut opt,
        scaler.as_mut(),
        &data,
        &analysis,
        &mut clock,
        &mut sinks,
        &opts,
    );
    let exit_code = match &outcome {
        Ok(()) => 0,
        Err(TrainError::Interrupted) => 130,
        Err(_) => 1,
    };
    // A non-finite loss leaves the weights unusable: keep the last good checkpoint instead.
    if !matches!(outcome, Err(TrainError::NonFinite { .. })) {
        state.save(LAST, &opt)?;
    }
    if outcome.is_ok() {
        if let Err(e) = analysis.record_pca(&model, state.global_step) {
            tracing::warn!("final PCA not recorded: {e}");
        }
    }
    sinks.finish(exit_code);
    write_timings(&save_dir, &state.summary, device, 1)?;
    if cfg.train.plots {
        write_plots(&save_dir);
    }
    outcome.map(|()| state.summary)
}

/// Draws a finished run's plots into `<save_dir>/plots`; a failure is a warning (the run itself
/// is complete).
pub(crate) fn write_plots(save_dir: &Path) {
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
pub(crate) fn batch_values(m: &[f32], lr: f64) -> [(String, f64); 4] {
    [
        ("train/CE_last".to_string(), f64::from(m[0])),
        ("train/ACC_last".to_string(), f64::from(m[1])),
        ("train/PROB_last".to_string(), f64::from(m[2])),
        ("lr".to_string(), lr),
    ]
}

/// Opens a run directory's local record and writes its `config.toml`. A fresh start removes the
/// `metrics.jsonl` and `pca.jsonl` of an earlier run in the same directory; a resume from a
/// checkpoint at `resume_step` drops their rows after that step, so the lost tail is written
/// exactly once. Returns the `metrics.jsonl` sink.
pub(crate) fn open_run_dir(
    cfg: &RunConfig,
    resume_step: Option<u64>,
) -> Result<JsonlSink, TrainError> {
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

/// Mutable bookkeeping of the loop.
struct LoopState<'a> {
    cfg: &'a RunConfig,
    vs: &'a VarStore,
    vocab: Vec<String>,
    epoch: usize,
    global_step: u64,
    best: Option<f64>,
    summary: RunSummary,
}

impl LoopState<'_> {
    fn save(&self, name: &str, opt: &Adam) -> Result<(), TrainError> {
        let sidecar = Sidecar {
            format_version: checkpoint::CHECKPOINT_FORMAT,
            config: self.cfg.clone(),
            vocab: self.vocab.clone(),
            epoch: self.epoch,
            global_step: self.global_step,
            best_macro_ce: self.best,
        };
        checkpoint::save(
            &checkpoint::path(&self.cfg.train.save_dir, name),
            &named_params(self.vs),
            &opt.state(),
            &sidecar,
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn train_epochs(
    st: &mut LoopState<'_>,
    model: &Gpt,
    opt: &mut Adam,
    mut scaler: Option<&mut GradScaler>,
    data: &DeviceData,
    analysis: &Analysis,
    clock: &mut GeometryClock,
    sinks: &mut Sinks,
    opts: &RunOptions,
) -> Result<(), TrainError> {
    let cfg = st.cfg;
    let t = &cfg.train;
    let device = data.train.ids.device();
    let n = data.train.n;
    let interrupted = || {
        opts.interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
    };
    // A bar on a terminal; elsewhere (logs, CI, sweeps) a plain line every `eval_every` epochs.
    let bar = (!opts.quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(t.epochs as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} epoch {pos}/{len} {elapsed_precise} eta {eta_precise} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_position(st.epoch as u64);
        bar
    });
    while st.epoch < t.epochs {
        let epoch = st.epoch + 1;
        let started = Instant::now();
        // Dropout masks of this epoch come from their own stream, so a resumed run draws the same.
        tch::manual_seed(mix_seed(t.seed, 1 << 32 | epoch as u64) as i64);
        let order = Tensor::from_slice(&epoch_order(n, t.seed, epoch)).to_device(device);
        let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
        let mut batches = 0i64;
        for (bi, start) in (0..n).step_by(t.batch_size).enumerate() {
            if interrupted() {
                return Err(TrainError::Interrupted);
            }
            let len = t.batch_size.min(n - start) as i64;
            let (ids, pad, positions, answers) =
                data.train.gather(&order.narrow(0, start as i64, len));
            let logits = tch::autocast(scaler.is_some(), || {
                model.forward_at(&ids, Some(&pad), &positions, true)
            })?;
            let loss = last_token_loss(&logits, &answers);
            opt.zero_grad();
            match scaler.as_deref_mut() {
                Some(s) => s.scale_loss(&loss).backward(),
                None => loss.backward(),
            }
            st.global_step += 1;
            let lr = lr_at(t.lr, t.warmup_steps, st.global_step);
            opt.step_scaled(lr, scaler.as_deref_mut())?;
            loss_sum += loss.detach();
            batches += 1;
            if bi == 0 || st.global_step % t.log_every as u64 == 0 {
                let m = tch::no_grad(|| {
                    row_metrics(&logits.detach(), &answers).mean_dim(0, false, Kind::Float)
                });
                let m: Vec<f32> =
                    Vec::try_from(m.to_device(Device::Cpu)).map_err(TrainError::from)?;
                let values = batch_values(&m[..3], lr);
                sinks.log(st.global_step, &row(st.global_step, None, &values));
            }
        }
        let ce_epoch = (loss_sum / batches as f64).double_value(&[]);
        st.summary.train_seconds += started.elapsed().as_secs_f64();
        st.summary.steps_this_run += batches as u64;
        if !ce_epoch.is_finite() {
            sinks.flush();
            return Err(TrainError::NonFinite {
                epoch,
                global_step: st.global_step,
                value: ce_epoch,
            });
        }
        st.epoch = epoch;
        st.summary.epochs = epoch;
        st.summary.global_step = st.global_step;
        st.summary.epochs_this_run += 1;

        let eval_started = Instant::now();
        let report = evaluate(model, &data.test)?;
        st.summary.eval_seconds += eval_started.elapsed().as_secs_f64();
        let mut values = vec![("train/CE_epoch".to_string(), ce_epoch)];
        values.extend(report.to_row());
        analyse_epoch(
            clock,
            analysis,
            epoch,
            st.global_step,
            || Ok(model),
            &mut values,
            &mut st.summary.geometry_seconds,
        )?;
        let epoch_row: Row = row(st.global_step, Some(epoch), &values);
        sinks.log(st.global_step, &epoch_row);
        sinks.flush();

        let last_epoch = epoch == t.epochs;
        let ood = report
            .per_type
            .get(&kg_data::FactType::OodAnalogical)
            .map_or(f64::NAN, |m| m.acc);
        let status = format!(
            "step {} train CE {ce_epoch:.4} macro ACC {:.3} OOD analogical ACC {ood:.3}",
            st.global_step, report.macro_acc
        );
        if let Some(bar) = &bar {
            bar.set_position(epoch as u64);
            bar.set_message(status.clone());
        }
        if epoch % t.eval_every == 0 || last_epoch {
            if bar.is_none() {
                tracing::info!("epoch {epoch}/{} {status}", t.epochs);
            }
            if !opts.quiet {
                let table = format!(
                    "epoch {epoch}/{} step {}\n{}",
                    t.epochs,
                    st.global_step,
                    report.table()
                );
                match &bar {
                    Some(bar) => bar.println(table),
                    None => println!("{table}"),
                }
            }
        }
        let improved = st.best.is_none_or(|b| report.macro_ce < b);
        if improved {
            st.best = Some(report.macro_ce);
        }
        if t.save_every > 0 {
            if epoch % t.save_every == 0 {
                st.save(&format!("epoch{epoch:03}"), opt)?;
            }
            if improved {
                st.save(BEST, opt)?;
            }
        }
        st.summary.final_eval = Some(report);
    }
    if let Some(bar) = bar {
        bar.finish();
    }
    Ok(())
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
pub(crate) fn write_timings(
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
    crate::checkpoint::write_atomic(&save_dir.join("timings.json"), text.as_bytes())
}

/// The model's variables by name, in a stable (sorted) order.
pub fn named_params(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut params: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    params
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
