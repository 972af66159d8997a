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
    DeviceChoice, GeometrySchedule, ModelConfig, OptimizerKind, RunConfig, TrainConfig, TrainRng,
    WandbConfig,
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

/// An error and its causes as one line, `outer: cause: cause`, each cause once: a cause whose
/// text the line already ends with (an error that prints its source itself) is not repeated.
pub fn error_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod error_text_tests {
    use super::*;

    #[test]
    fn each_cause_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let err = ConfigError::Io {
            path: PathBuf::from("/x.toml"),
            source: io(),
        };
        assert_eq!(error_text(&err), "/x.toml: No such file");
        #[derive(Debug, thiserror::Error)]
        #[error("reading the run's configuration")]
        struct Outer(#[source] ConfigError);
        let outer = Outer(ConfigError::Io {
            path: PathBuf::from("/x.toml"),
            source: io(),
        });
        assert_eq!(
            error_text(&outer),
            "reading the run's configuration: /x.toml: No such file"
        );
    }
}
