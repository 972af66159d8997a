//! Training, evaluation, checkpoints and run directories for the functor experiment of
//! *Emergent Analogical Reasoning in Transformers* (arXiv 2602.01992).
//!
//! # Overview
//! - [`RunConfig`] (`config`, the `run-config` crate): the typed configuration tree (`[data]`,
//!   `[model]`, `[train]`, `[wandb]`), flat `key=value` overrides, validation naming the key at
//!   fault.
//! - [`run`] (`train`): the loop — seeded shuffles, last-token loss, fused Adam/AdamW with
//!   warm-up, mixed precision on CUDA, per-epoch evaluation, logging, checkpoints, resume.
//! - `eval`: CE / PPL / ACC / PROB / N per fact type and macro averages, in one pass.
//! - `optim`: [`optim::Adam`] (PyTorch semantics, libtorch's fused kernel), the LR schedule, a
//!   device-side loss scaler.
//! - `sink`: the [`MetricsSink`] trait with the local `metrics.jsonl`, W&B and null backends.
//! - `checkpoint`: atomic safetensors checkpoints with a JSON sidecar.
//! - `analysis`: geometry, attention progress, analogy read-out and PCA tracked during training.
//! - `wandb`: resolving W&B settings from the config and environment.
//!
//! # Run directory (`save_dir`)
//! `config.toml` (the resolved config), `metrics.jsonl` (one JSON object per logged row, keys as
//! on W&B), `pca.jsonl` (PCA snapshots), `checkpoints/{last,best,epochNNN}/` and `plots/`.

pub mod analysis;
pub mod checkpoint;
pub mod data;
pub mod eval;
pub mod ffi;
pub mod optim;
pub mod provenance;
pub mod run_dir;
pub mod sink;
pub mod train;
pub mod wandb;

/// The run configuration (the `run-config` crate, re-exported: it builds without libtorch).
pub use run_config as config;

use std::path::PathBuf;

pub use config::{
    DeviceChoice, GeometrySchedule, ModelConfig, OptimizerKind, RunConfig, TrainConfig, WandbConfig,
};
pub use eval::{EvalReport, TypeMetrics};
pub use sink::{JsonlSink, MetricsSink, NullSink, WandbSink};
pub use train::{RunOptions, RunSummary, run, run_members};

/// Keeps large freed blocks in the process heap instead of returning them to the kernel.
///
/// Every step allocates and frees gradient-sized tensors of several MiB (the embedding's and the
/// head's gradients, the logits); glibc serves blocks that size with fresh `mmap`s by default, so
/// their pages fault in again on every step. Raising the `mmap` and trim thresholds turns that
/// into plain reuse: about 14% less wall time for the default configuration on CPU (measured
/// with `GLIBC_TUNABLES`, 300 epochs, three runs each), and it is what makes dropping gradients
/// between steps (instead of zeroing them) pay off. Process-wide; [`run`] applies it, and
/// binaries may call it at start-up. A no-op outside glibc.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes allocator parameters; both values are in range (32 MiB is
    // glibc's maximum mmap threshold on 64-bit targets).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

impl From<run_config::ConfigError> for TrainError {
    fn from(e: run_config::ConfigError) -> Self {
        match e {
            run_config::ConfigError::Config {
                source_name,
                reason,
            } => TrainError::Config {
                source_name,
                reason,
            },
            run_config::ConfigError::Io { path, source } => TrainError::Io { path, source },
        }
    }
}

/// Everything that can stop a run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A configuration value or file is wrong.
    #[error("{source_name}: {reason}")]
    Config {
        /// The file, flag or section at fault.
        source_name: String,
        /// What is wrong (names the key).
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The dataset is missing or malformed.
    #[error(transparent)]
    Data(#[from] kg_data::DataError),
    /// The model rejected its configuration or inputs.
    #[error(transparent)]
    Model(#[from] gpt_rope::ModelError),
    /// A geometry metric failed.
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    /// A libtorch operation failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// The optimiser kernel failed.
    #[error("optimizer: {0}")]
    Optimizer(String),
    /// Reading, restoring or drawing from a random generator failed.
    #[error("random generator: {0}")]
    Rng(String),
    /// A checkpoint is missing, malformed or does not fit the run.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// W&B settings are invalid (a bad `WANDB_*` variable).
    #[error("W&B: {0}")]
    Wandb(#[from] wandb_http::WandbError),
    /// The training loss stopped being finite.
    #[error(
        "the training loss became {value} in epoch {epoch} (step {global_step}); stopping: {kept}"
    )]
    NonFinite {
        /// The epoch.
        epoch: usize,
        /// The global step at its end.
        global_step: u64,
        /// The loss.
        value: f64,
        /// What the run directory keeps (the last good checkpoint, or that there is none).
        kept: String,
    },
    /// The run was interrupted (a signal or the interrupt flag); a `last` checkpoint of where it
    /// stood was written.
    #[error("interrupted; resume with --resume")]
    Interrupted,
}

/// Serialises the unit tests that seed or draw from libtorch's global generator, so that one
/// test's draws cannot land between another's `manual_seed` and its use.
#[cfg(test)]
pub(crate) fn tests_rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}
