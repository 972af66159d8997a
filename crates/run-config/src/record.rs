//! The sidecar of a checkpoint (`checkpoint.json`), readable without libtorch: what the trainer
//! writes next to a checkpoint's tensors, and what the sweep reads to decide whether a run is
//! finished, resumable or fresh. The tensors themselves are the `trainer` crate's business.
//!
//! A checkpoint directory is *valid* when its sidecar parses, has a known format, and the
//! tensor files have the sizes it records (the trainer writes and syncs the sidecar after
//! them). [`newest_sidecars`] lists the valid checkpoints of a run directory, newest first.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::RunConfig;

/// Version of the checkpoint layout the trainer writes. Version 1 (no position within an
/// epoch, no generator state, no sizes) is still read.
pub const CHECKPOINT_FORMAT: u32 = 2;
/// The sidecar's file name.
pub const SIDECAR_FILE: &str = "checkpoint.json";

/// Where a member's training stood when the checkpoint was taken.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Position {
    /// Completed epochs.
    pub epoch: usize,
    /// Optimiser steps taken.
    pub global_step: u64,
    /// Batches already done of epoch `epoch + 1` (0 at an epoch boundary).
    pub batch_in_epoch: usize,
    /// Sum of the member's batch losses over those batches (a float32 value), for the epoch's
    /// mean training CE.
    pub epoch_loss_sum: f64,
}

/// `checkpoint.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    /// [`CHECKPOINT_FORMAT`].
    pub format_version: u32,
    /// The resolved configuration of the run.
    pub config: RunConfig,
    /// The dataset's vocabulary (token id = index).
    pub vocab: Vec<String>,
    /// The fingerprint of the dataset trained on (`kg_data::Dataset::fingerprint`; absent in
    /// format 1).
    #[serde(default)]
    pub dataset: Option<String>,
    /// Completed epochs.
    pub epoch: usize,
    /// Optimiser steps taken.
    pub global_step: u64,
    /// Batches done of the next epoch (absent in format 1: an epoch boundary).
    #[serde(default)]
    pub batch_in_epoch: usize,
    /// Sum of the batch losses of those batches.
    #[serde(default)]
    pub epoch_loss_sum: f64,
    /// Best macro CE seen so far (`None` before the first evaluation).
    pub best_macro_ce: Option<f64>,
    /// Sizes in bytes of the tensor files, written after them (absent in format 1).
    #[serde(default)]
    pub files: Vec<(String, u64)>,
}

impl Sidecar {
    /// The training position it records.
    pub fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            global_step: self.global_step,
            batch_in_epoch: self.batch_in_epoch,
            epoch_loss_sum: self.epoch_loss_sum,
        }
    }
}

/// Why a checkpoint directory is not valid.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The sidecar cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The sidecar or a file it lists is malformed or incomplete.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Reads and checks the sidecar of checkpoint directory `dir`.
///
/// # Errors
/// [`RecordError::Io`] when the sidecar is missing or unreadable, [`RecordError::Invalid`]
/// saying what is wrong otherwise (a bad format, an interrupted write).
pub fn read_sidecar(dir: &Path) -> Result<Sidecar, RecordError> {
    let path = dir.join(SIDECAR_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| RecordError::Io {
        path: path.clone(),
        source,
    })?;
    let invalid = |reason: String| RecordError::Invalid {
        path: path.clone(),
        reason,
    };
    let sidecar: Sidecar = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    if !(1..=CHECKPOINT_FORMAT).contains(&sidecar.format_version) {
        return Err(invalid(format!(
            "format_version {} is not one this version reads (1 to {CHECKPOINT_FORMAT})",
            sidecar.format_version
        )));
    }
    for (name, size) in &sidecar.files {
        let file = dir.join(name);
        let found = std::fs::metadata(&file).map(|m| m.len()).ok();
        if found != Some(*size) {
            return Err(RecordError::Invalid {
                reason: format!(
                    "{size} bytes expected, {} found (an interrupted write)",
                    found.map_or("none".to_string(), |n| n.to_string())
                ),
                path: file,
            });
        }
    }
    Ok(sidecar)
}

/// The valid checkpoints under `save_dir/checkpoints`, newest first (highest step; at equal
/// steps `last` before an `epochNNN` before `best`), and the invalid ones that have a sidecar
/// (a torn write, a foreign format) with why.
pub fn newest_sidecars(save_dir: &Path) -> (Vec<(PathBuf, Sidecar)>, Vec<RecordError>) {
    let Ok(entries) = std::fs::read_dir(save_dir.join("checkpoints")) else {
        return (Vec::new(), Vec::new());
    };
    let mut valid: Vec<(u64, u8, PathBuf, Sidecar)> = Vec::new();
    let mut invalid = Vec::new();
    for dir in entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()) {
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let rank = match name.split('.').next().unwrap_or("") {
            "last" => 3,
            n if n.starts_with("epoch") => 2,
            _ => 1,
        };
        match read_sidecar(&dir) {
            Ok(s) => valid.push((s.global_step, rank, dir, s)),
            Err(e) if dir.join(SIDECAR_FILE).exists() => invalid.push(e),
            Err(_) => {}
        }
    }
    valid.sort_by_key(|(step, rank, _, _)| std::cmp::Reverse((*step, *rank)));
    (
        valid.into_iter().map(|(_, _, d, s)| (d, s)).collect(),
        invalid,
    )
}
