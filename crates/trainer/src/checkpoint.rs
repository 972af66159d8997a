//! Checkpoints: weights and optimiser state as safetensors, with a JSON sidecar, written so that
//! a crash at any moment leaves at least one readable checkpoint.
//!
//! A checkpoint is a directory `save_dir/checkpoints/<name>/` holding
//! - `model.safetensors`: the parameters under the original's state-dict names;
//! - `optimizer.safetensors`: Adam's moments and step counters, and the state of libtorch's CPU
//!   generator (`rng_state.cpu`), so that dropout continues exactly;
//! - `checkpoint.json`: [`Sidecar`] (config, vocabulary, dataset fingerprint, position, best
//!   macro CE, and the sizes of the two tensor files).
//!
//! # Write protocol
//! 1. Everything is written into `<name>.new/`; each file is flushed to disk (`fsync`), the
//!    sidecar last (it records the sizes of the others), then the directory itself.
//! 2. `<name>` (if any) is renamed to `<name>.old`, `<name>.new` to `<name>`, the parent
//!    directory is synced, and `<name>.old` is removed.
//!
//! A crash leaves some of `<name>.new`, `<name>`, `<name>.old`; a directory is *valid* when its
//! sidecar parses and the tensor files have the recorded sizes, and [`newest_valid`] picks the
//! valid one with the highest step, so there is no moment without a readable checkpoint.

use std::fs::File;
use std::path::{Path, PathBuf};

use tch::Tensor;

use crate::TrainError;

pub use run_config::record::{CHECKPOINT_FORMAT, Position, Sidecar};

const MODEL_FILE: &str = "model.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const SIDECAR_FILE: &str = run_config::record::SIDECAR_FILE;
/// Name of the generator state inside `optimizer.safetensors`.
pub const RNG_STATE: &str = "rng_state.cpu";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Flushes a file or directory to disk.
fn sync(path: &Path) -> Result<(), TrainError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err(path))
}

/// Writes `bytes` to `path` durably: into `<path>.tmp`, synced, renamed over `path`, and the
/// directory synced; a crash leaves the old file or the new one, never a mixture.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    sync(&tmp)?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        sync(dir)?;
    }
    Ok(())
}

/// `<dir>` with `suffix` appended to its file name (`last` → `last.new`).
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dir.with_file_name(name)
}

/// Writes the checkpoint directory `dir` by the protocol of the module docs. `rng_state`, when
/// given, is stored with the optimiser state.
///
/// # Errors
/// I/O errors naming the file (a full disk, a missing permission); the previous checkpoint of
/// that name stays readable.
pub fn save(
    dir: &Path,
    params: &[(String, Tensor)],
    optimizer: &[(String, Tensor)],
    rng_state: Option<&Tensor>,
    sidecar: &Sidecar,
) -> Result<(), TrainError> {
    let new = sibling(dir, ".new");
    if new.exists() {
        std::fs::remove_dir_all(&new).map_err(io_err(&new))?;
    }
    std::fs::create_dir_all(&new).map_err(io_err(&new))?;
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
    let mut opt = to_cpu(optimizer);
    if let Some(state) = rng_state {
        opt.push((RNG_STATE.to_string(), state.shallow_clone()));
    }
    let mut files = Vec::new();
    for (name, tensors) in [(MODEL_FILE, to_cpu(params)), (OPTIMIZER_FILE, opt)] {
        let path = new.join(name);
        Tensor::write_safetensors(&tensors, &path).map_err(|e| match e {
            tch::TchError::Io(source) => TrainError::Io {
                path: path.clone(),
                source,
            },
            other => TrainError::Checkpoint(format!("{}: {other}", path.display())),
        })?;
        sync(&path)?;
        let size = std::fs::metadata(&path).map_err(io_err(&path))?.len();
        files.push((name.to_string(), size));
    }
    let sidecar = Sidecar {
        format_version: CHECKPOINT_FORMAT,
        files,
        ..sidecar.clone()
    };
    let json = serde_json::to_string_pretty(&sidecar)
        .map_err(|e| TrainError::Checkpoint(format!("serialising the sidecar: {e}")))?;
    let sidecar_path = new.join(SIDECAR_FILE);
    std::fs::write(&sidecar_path, json).map_err(io_err(&sidecar_path))?;
    sync(&sidecar_path)?;
    sync(&new)?;
    let old = sibling(dir, ".old");
    if dir.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
        }
        std::fs::rename(dir, &old).map_err(io_err(dir))?;
    }
    std::fs::rename(&new, dir).map_err(io_err(dir))?;
    if let Some(parent) = dir.parent() {
        sync(parent)?;
    }
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
    }
    Ok(())
}

/// A checkpoint read back.
#[derive(Debug)]
pub struct Loaded {
    /// The directory it was read from.
    pub dir: PathBuf,
    /// Parameters by name.
    pub params: Vec<(String, Tensor)>,
    /// Optimiser state by name (without the generator state).
    pub optimizer: Vec<(String, Tensor)>,
    /// The generator state, when the checkpoint has one.
    pub rng_state: Option<Tensor>,
    /// The sidecar.
    pub sidecar: Sidecar,
}

/// Reads and checks the sidecar of `dir` ([`run_config::record::read_sidecar`]).
///
/// # Errors
/// [`TrainError::Io`] when the sidecar is missing, [`TrainError::Checkpoint`] saying what is
/// wrong otherwise.
pub fn read_sidecar(dir: &Path) -> Result<Sidecar, TrainError> {
    run_config::record::read_sidecar(dir).map_err(|e| match e {
        run_config::record::RecordError::Io { path, source } => TrainError::Io { path, source },
        other => TrainError::Checkpoint(other.to_string()),
    })
}

/// Reads a checkpoint directory.
///
/// # Errors
/// As [`read_sidecar`], and unreadable tensor files.
pub fn load(dir: &Path) -> Result<Loaded, TrainError> {
    let sidecar = read_sidecar(dir)?;
    let read = |name: &str| -> Result<Vec<(String, Tensor)>, TrainError> {
        let path = dir.join(name);
        Tensor::read_safetensors(&path)
            .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", path.display())))
    };
    let mut optimizer = read(OPTIMIZER_FILE)?;
    let rng_state = optimizer
        .iter()
        .position(|(n, _)| n == RNG_STATE)
        .map(|i| optimizer.swap_remove(i).1);
    Ok(Loaded {
        dir: dir.to_path_buf(),
        params: read(MODEL_FILE)?,
        optimizer,
        rng_state,
        sidecar,
    })
}

/// The newest valid checkpoint under `save_dir/checkpoints` (highest step; at equal steps
/// `last` before an `epochNNN` before `best`), loaded; invalid or unreadable ones are skipped
/// with a warning. `None` when there is none.
pub fn newest_valid(save_dir: &Path) -> Option<Loaded> {
    let (valid, invalid) = run_config::record::newest_sidecars(save_dir);
    for e in invalid {
        tracing::warn!("skipping checkpoint: {e}");
    }
    valid.into_iter().find_map(|(dir, _)| match load(&dir) {
        Ok(loaded) => Some(loaded),
        Err(e) => {
            tracing::warn!("skipping checkpoint {}: {e}", dir.display());
            None
        }
    })
}

/// Copies `params` into the variables of `vs`, by name: every variable must be present with
/// its shape, and no extra tensor may be left over.
///
/// # Errors
/// [`TrainError::Checkpoint`] naming `origin` and the parameter at fault.
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
            dst.f_copy_(src)?;
        }
        Ok(())
    })
}

/// `save_dir/checkpoints/<name>`.
pub fn path(save_dir: &Path, name: &str) -> PathBuf {
    save_dir.join("checkpoints").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunConfig;

    fn sidecar(step: u64) -> Sidecar {
        Sidecar {
            format_version: CHECKPOINT_FORMAT,
            config: RunConfig::default(),
            vocab: vec!["<e_0>".into()],
            dataset: Some("abc".into()),
            epoch: step as usize,
            global_step: step,
            batch_in_epoch: 1,
            epoch_loss_sum: 2.5,
            best_macro_ce: None,
            files: Vec::new(),
        }
    }

    fn tensors(v: f32) -> Vec<(String, Tensor)> {
        vec![("w".to_string(), Tensor::from_slice(&[v, v]))]
    }

    #[test]
    fn a_checkpoint_round_trips_with_its_position_and_generator_state() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = path(tmp.path(), "last");
        let state = Tensor::from_slice(&[1u8, 2, 3]);
        save(
            &dir,
            &tensors(1.0),
            &tensors(2.0),
            Some(&state),
            &sidecar(7),
        )
        .unwrap();
        let back = load(&dir).unwrap();
        assert_eq!(back.sidecar.position().global_step, 7);
        assert_eq!(back.sidecar.position().batch_in_epoch, 1);
        assert_eq!(back.sidecar.files.len(), 2);
        assert!(back.rng_state.unwrap().equal(&state));
        assert_eq!(
            back.optimizer.len(),
            1,
            "the generator state is not an optimiser entry"
        );
        assert!(back.params[0].1.equal(&Tensor::from_slice(&[1.0f32, 1.0])));
        // Saving again replaces it and leaves no temporary directories.
        save(&dir, &tensors(3.0), &tensors(4.0), None, &sidecar(9)).unwrap();
        let names: Vec<String> = std::fs::read_dir(tmp.path().join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(names, vec!["last"]);
        assert_eq!(load(&dir).unwrap().sidecar.global_step, 9);
    }

    #[test]
    fn every_crash_point_of_a_save_leaves_the_newest_complete_checkpoint_found() {
        let tmp = tempfile::tempdir().unwrap();
        let last = path(tmp.path(), "last");
        save(&last, &tensors(1.0), &tensors(1.0), None, &sidecar(5)).unwrap();
        let stage = |from: &Path, to: &Path| copy_dir(from, to);
        // A crash between the two renames: only `last.old` and `last.new` remain.
        save(
            &path(tmp.path(), "staged"),
            &tensors(2.0),
            &tensors(2.0),
            None,
            &sidecar(6),
        )
        .unwrap();
        stage(&path(tmp.path(), "staged"), &sibling(&last, ".new"));
        std::fs::remove_dir_all(path(tmp.path(), "staged")).unwrap();
        std::fs::rename(&last, sibling(&last, ".old")).unwrap();
        let found = newest_valid(tmp.path()).unwrap();
        assert_eq!(found.sidecar.global_step, 6, "{}", found.dir.display());
        // A crash while writing `last.new`: a torn tensor file; the complete `last.old` wins.
        let torn = sibling(&last, ".new").join(MODEL_FILE);
        let bytes = std::fs::read(&torn).unwrap();
        std::fs::write(&torn, &bytes[..bytes.len() / 2]).unwrap();
        let found = newest_valid(tmp.path()).unwrap();
        assert_eq!(found.sidecar.global_step, 5, "{}", found.dir.display());
        // A crash before the sidecar was written: the directory is ignored.
        std::fs::remove_file(sibling(&last, ".new").join(SIDECAR_FILE)).unwrap();
        assert_eq!(newest_valid(tmp.path()).unwrap().sidecar.global_step, 5);
        // The next save cleans up and succeeds.
        save(&last, &tensors(3.0), &tensors(3.0), None, &sidecar(8)).unwrap();
        assert_eq!(newest_valid(tmp.path()).unwrap().sidecar.global_step, 8);
        assert!(newest_valid(&tmp.path().join("nothing")).is_none());
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }

    #[test]
    fn newer_epoch_checkpoints_win_over_an_older_last() {
        let tmp = tempfile::tempdir().unwrap();
        save(
            &path(tmp.path(), "last"),
            &tensors(1.0),
            &tensors(1.0),
            None,
            &sidecar(3),
        )
        .unwrap();
        save(
            &path(tmp.path(), "epoch004"),
            &tensors(1.0),
            &tensors(1.0),
            None,
            &sidecar(4),
        )
        .unwrap();
        save(
            &path(tmp.path(), "best"),
            &tensors(1.0),
            &tensors(1.0),
            None,
            &sidecar(4),
        )
        .unwrap();
        let found = newest_valid(tmp.path()).unwrap();
        assert!(found.dir.ends_with("epoch004"), "{}", found.dir.display());
    }
}
