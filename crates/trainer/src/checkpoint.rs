//! Checkpoints: weights and optimiser state as safetensors, with a JSON sidecar.
//!
//! A checkpoint is a directory `save_dir/checkpoints/<name>/` holding
//! - `model.safetensors`: the parameters under the original's state-dict names;
//! - `optimizer.safetensors`: Adam's moments and step counters;
//! - `checkpoint.json`: [`Sidecar`] (config, vocabulary, epoch, global step, best macro CE).
//!
//! Writes are atomic: the directory is written under a temporary name and renamed into place,
//! so a crash leaves either the old checkpoint or the new one, never a mixture.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::TrainError;
use crate::config::RunConfig;

/// Version of the checkpoint layout.
pub const CHECKPOINT_FORMAT: u32 = 1;

/// `checkpoint.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    /// [`CHECKPOINT_FORMAT`].
    pub format_version: u32,
    /// The resolved configuration of the run.
    pub config: RunConfig,
    /// The dataset's vocabulary (token id = index).
    pub vocab: Vec<String>,
    /// Completed epochs.
    pub epoch: usize,
    /// Optimiser steps taken.
    pub global_step: u64,
    /// Best macro CE seen so far (`None` before the first evaluation).
    pub best_macro_ce: Option<f64>,
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|source| TrainError::Io {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a checkpoint directory `dir` atomically.
pub fn save(
    dir: &Path,
    params: &[(String, Tensor)],
    optimizer: &[(String, Tensor)],
    sidecar: &Sidecar,
) -> Result<(), TrainError> {
    let tmp = dir.with_extension("tmp");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrainError::Io { path, source }
    };
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    // Safetensors wants contiguous CPU tensors.
    let to_cpu = |ts: &[(String, Tensor)]| -> Vec<(String, Tensor)> {
        ts.iter()
            .map(|(n, t)| {
                (
                    n.clone(),
                    t.detach().to_device(tch::Device::Cpu).contiguous(),
                )
            })
            .collect()
    };
    Tensor::write_safetensors(&to_cpu(params), tmp.join("model.safetensors"))?;
    Tensor::write_safetensors(&to_cpu(optimizer), tmp.join("optimizer.safetensors"))?;
    let json = serde_json::to_string_pretty(sidecar)
        .map_err(|e| TrainError::Checkpoint(format!("serialising the sidecar: {e}")))?;
    std::fs::write(tmp.join("checkpoint.json"), json).map_err(io(&tmp))?;
    let old = dir.with_extension("old");
    if dir.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        std::fs::rename(dir, &old).map_err(io(dir))?;
    }
    std::fs::rename(&tmp, dir).map_err(io(dir))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(())
}

/// A checkpoint read back.
#[derive(Debug)]
pub struct Loaded {
    /// Parameters by name.
    pub params: Vec<(String, Tensor)>,
    /// Optimiser state by name.
    pub optimizer: Vec<(String, Tensor)>,
    /// The sidecar.
    pub sidecar: Sidecar,
}

/// Reads a checkpoint directory.
pub fn load(dir: &Path) -> Result<Loaded, TrainError> {
    let sidecar_path = dir.join("checkpoint.json");
    let text = std::fs::read_to_string(&sidecar_path).map_err(|source| TrainError::Io {
        path: sidecar_path.clone(),
        source,
    })?;
    let sidecar: Sidecar = serde_json::from_str(&text)
        .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", sidecar_path.display())))?;
    if sidecar.format_version != CHECKPOINT_FORMAT {
        return Err(TrainError::Checkpoint(format!(
            "{}: format_version {} is not the supported {CHECKPOINT_FORMAT}",
            sidecar_path.display(),
            sidecar.format_version
        )));
    }
    let read = |name: &str| -> Result<Vec<(String, Tensor)>, TrainError> {
        let path = dir.join(name);
        Tensor::read_safetensors(&path)
            .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", path.display())))
    };
    Ok(Loaded {
        params: read("model.safetensors")?,
        optimizer: read("optimizer.safetensors")?,
        sidecar,
    })
}

/// Copies `params` into the variables of `vs`, by name: every variable must be present with
/// its shape, and no extra tensor may be left over.
pub fn restore_params(
    vs: &tch::nn::VarStore,
    params: &[(String, Tensor)],
    origin: &Path,
) -> Result<(), TrainError> {
    let mut vars = vs.variables();
    if vars.len() != params.len() {
        return Err(TrainError::Checkpoint(format!(
            "{}: {} tensors for a model of {} parameters",
            origin.display(),
            params.len(),
            vars.len()
        )));
    }
    tch::no_grad(|| {
        for (name, src) in params {
            let dst = vars.get_mut(name).ok_or_else(|| {
                TrainError::Checkpoint(format!("{}: unknown parameter `{name}`", origin.display()))
            })?;
            if dst.size() != src.size() {
                return Err(TrainError::Checkpoint(format!(
                    "{}: `{name}` has shape {:?}, the model expects {:?}",
                    origin.display(),
                    src.size(),
                    dst.size()
                )));
            }
            dst.copy_(src);
        }
        Ok(())
    })
}

/// `save_dir/checkpoints/<name>`.
pub fn path(save_dir: &Path, name: &str) -> PathBuf {
    save_dir.join("checkpoints").join(name)
}
