//! The configuration of a run of the functor experiment of *Emergent Analogical Reasoning in
//! Transformers* (arXiv 2602.01992): what `train` reads, `sweep` expands and every run directory
//! records in `config.toml`.
//!
//! # Overview
//! - [`RunConfig`]: the typed tree — `[data]` ([`kg_data::DataConfig`]), `[model]`
//!   ([`GptConfig`]), `[train]` ([`TrainConfig`]) and `[wandb]` ([`WandbConfig`]) — read from
//!   TOML, overridden by flat `key=value` pairs ([`RunConfig::set`]), validated naming the key at
//!   fault ([`RunConfig::validate`]).
//! - [`GptConfig`]: the model's hyper-parameters (the `gpt-rope` crate builds the model from it).
//! - [`batching`]: which runs may train together as one batched ensemble.
//! - [`fields`]: every configuration key once: table, flag, kind, per-member rule, description.
//! - [`record`]: a checkpoint's sidecar and which checkpoints of a run are valid (what the
//!   sweep reads to tell finished, resumable and fresh runs apart).
//! - [`yaml`]: the original's YAML configs and sweep files, read as ours.
//! - [`keys`]: the names of everything a run records (metrics rows, W&B, plots), defined once.
//!
//! No libtorch: programs that only read, write or expand configurations (sweeps, Slurm scripts,
//! reports) build without it.

pub mod batching;
pub mod fields;
pub mod keys;
mod model;
pub mod record;
mod run;
pub mod yaml;

use std::path::PathBuf;

pub use model::{GptConfig, InvalidKey};
pub use run::{
    DeviceChoice, GeometrySchedule, ModelConfig, OptimizerKind, RunConfig, TrainConfig, WandbConfig,
};

/// A configuration file that cannot be read, or a key or value that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key or value is wrong.
    #[error("{source_name}: {reason}")]
    Config {
        /// The file, flag or section at fault.
        source_name: String,
        /// What is wrong (names the key).
        reason: String,
    },
    /// Reading the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}
