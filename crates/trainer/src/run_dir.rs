//! The run directory (`save_dir`) and the rules that keep a run from being lost or overwritten:
//! one trainer at a time (a lock), no silent reuse (a directory that holds a run is refused
//! unless it is resumed or explicitly overwritten), and the files written next to the metrics
//! log: `config.toml`, `timings.json`, `summary.json`, `plots/`.

use std::path::{Path, PathBuf};

use tch::Device;

use crate::TrainError;
use crate::checkpoint::{self, write_atomic};
use crate::config::RunConfig;
use crate::sink::JsonlSink;
use crate::train::RunSummary;

/// The run's lock file (`flock`ed while a trainer works in the directory; it holds the pid).
pub const LOCK_FILE: &str = ".lock";
/// The record of how the run ended.
pub const SUMMARY_FILE: &str = "summary.json";

/// Files and directories that make up a run's record (what `--overwrite` removes).
const RECORD: [&str; 10] = [
    "config.toml",
    "metrics.jsonl",
    "pca.jsonl",
    "timings.json",
    SUMMARY_FILE,
    "provenance.json",
    "wandb-run-id",
    "report.html",
    "checkpoints",
    "plots",
];

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An exclusive hold on a run directory; released when dropped (or when the process dies).
pub type RunDirLock = signals::DirLock;

/// Takes the lock of `save_dir` (created if needed).
///
/// # Errors
/// [`TrainError::Config`] naming the directory (and the holder's pid) when another process
/// holds it; I/O errors.
pub fn lock(save_dir: &Path) -> Result<RunDirLock, TrainError> {
    std::fs::create_dir_all(save_dir).map_err(io_err(save_dir))?;
    let path = save_dir.join(LOCK_FILE);
    signals::DirLock::acquire(&path).map_err(|e| match e {
        signals::LockError::Held { holder } => TrainError::Config {
            source_name: save_dir.display().to_string(),
            reason: format!("another process (pid {holder}) is training in this run directory"),
        },
        signals::LockError::Io(source) => TrainError::Io { path, source },
    })
}

/// What `save_dir` already holds of a run, in words, or `None` when it holds none.
pub fn existing_run(save_dir: &Path) -> Option<String> {
    if let Some(loaded) = checkpoint::newest_valid(save_dir) {
        let s = &loaded.sidecar;
        return Some(format!(
            "a run with a checkpoint at epoch {}, step {}",
            s.epoch, s.global_step
        ));
    }
    ["metrics.jsonl", "config.toml", "checkpoints"]
        .into_iter()
        .find(|f| save_dir.join(f).exists())
        .map(|f| format!("a run (its {f}) with no valid checkpoint"))
}

/// Refuses a directory that holds a run (for a fresh start without `--overwrite`).
///
/// # Errors
/// [`TrainError::Config`] saying what is there and how to continue or replace it.
pub fn refuse_existing(save_dir: &Path) -> Result<(), TrainError> {
    match existing_run(save_dir) {
        None => Ok(()),
        Some(what) => Err(TrainError::Config {
            source_name: save_dir.display().to_string(),
            reason: format!(
                "already holds {what}; continue it with `train --resume {dir}`, replace it with \
                 --overwrite, or choose another --save_dir",
                dir = save_dir.display()
            ),
        }),
    }
}

/// Refuses to start a fresh run in a directory that holds one ([`refuse_existing`]), unless
/// `overwrite`, in which case the old record is removed.
///
/// # Errors
/// As [`refuse_existing`]; I/O errors of the removal.
pub fn prepare_fresh(save_dir: &Path, overwrite: bool) -> Result<(), TrainError> {
    if !overwrite {
        return refuse_existing(save_dir);
    }
    let Some(what) = existing_run(save_dir) else {
        return Ok(());
    };
    tracing::warn!("--overwrite: removing {what} from {}", save_dir.display());
    for name in RECORD {
        let path = save_dir.join(name);
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else if path.exists() {
            std::fs::remove_file(&path)
        } else {
            Ok(())
        };
        removed.map_err(io_err(&path))?;
    }
    Ok(())
}

/// Opens a run directory's local record and writes its `config.toml`. A resume from a
/// checkpoint at `resume_step` drops the rows of `metrics.jsonl` and `pca.jsonl` after that step
/// (so the lost tail is written exactly once). Returns the `metrics.jsonl` sink.
///
/// # Errors
/// I/O errors naming the file.
pub fn open_record(cfg: &RunConfig, resume_step: Option<u64>) -> Result<JsonlSink, TrainError> {
    let save_dir = &cfg.train.save_dir;
    let metrics_path = save_dir.join("metrics.jsonl");
    if let Some(step) = resume_step {
        for path in [metrics_path.clone(), save_dir.join("pca.jsonl")] {
            JsonlSink::truncate_after(&path, step)?;
        }
    }
    write_atomic(
        &save_dir.join("config.toml"),
        cfg.to_toml_string().as_bytes(),
    )?;
    JsonlSink::open(&metrics_path)
}

/// How a run (or this invocation of it) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Every epoch done.
    Finished,
    /// Stopped by a signal or the interrupt flag; resumable.
    Interrupted,
    /// Stopped by an error (named in the summary).
    Failed,
}

/// Writes `summary.json`: how the run ended, where it stands, its last evaluation, whether its
/// loss diverged, and the error that stopped it.
///
/// # Errors
/// I/O errors naming the file.
pub fn write_summary(
    s: &RunSummary,
    ending: Ending,
    error: Option<&TrainError>,
) -> Result<(), TrainError> {
    let last = s.final_eval.as_ref();
    let json = serde_json::json!({
        "status": match ending {
            Ending::Finished => "finished",
            Ending::Interrupted => "interrupted",
            Ending::Failed => "failed",
        },
        "epochs": s.epochs,
        "global_step": s.global_step,
        "diverged": s.diverged,
        "final_macro_ce": last.map(|r| r.macro_ce),
        "final_macro_acc": last.map(|r| r.macro_acc),
        "final_ood_analogical_acc": last
            .and_then(|r| r.per_type.get(&kg_data::FactType::OodAnalogical))
            .map(|m| m.acc),
        "error": error.map(|e| e.to_string()),
    });
    let text = serde_json::to_string_pretty(&json).unwrap_or_default() + "\n";
    write_atomic(&s.save_dir.join(SUMMARY_FILE), text.as_bytes())
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
///
/// # Errors
/// I/O errors naming the file.
pub fn write_timings(s: &RunSummary, device: Device, members: usize) -> Result<(), TrainError> {
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
        "checkpoint_seconds": s.checkpoint_seconds,
        "steps_per_second": s.steps_this_run as f64 / s.train_seconds.max(1e-9),
        "train_ms_per_step": 1e3 * s.train_seconds / (s.steps_this_run.max(1) as f64),
        "train_seconds_per_epoch": s.train_seconds / epochs,
        "eval_ms_per_epoch": 1e3 * s.eval_seconds / epochs,
        "peak_rss_mib": peak_rss_mib(),
    });
    let text = serde_json::to_string_pretty(&json).unwrap_or_default();
    write_atomic(&s.save_dir.join("timings.json"), text.as_bytes())
}

/// Draws a finished run's plots into `<save_dir>/plots`; a failure is a warning (the run itself
/// is complete).
pub fn write_plots(save_dir: &Path) {
    match plots::write_run_plots(save_dir) {
        Ok(files) => tracing::info!(
            "{} plot files in {}",
            files.len(),
            save_dir.join("plots").display()
        ),
        Err(e) => tracing::warn!("plots not written: {e}"),
    }
}

/// `runs/<stem>-<UTC date and time>`, numbered when that exists: where a run goes when no
/// `save_dir` is given.
pub fn fresh_dir(stem: &str) -> PathBuf {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let base = PathBuf::from("runs").join(format!("{stem}-{}", utc_stamp(now)));
    let mut dir = base.clone();
    let mut n = 2;
    while dir.exists() {
        dir = PathBuf::from(format!("{}-{n}", base.display()));
        n += 1;
    }
    dir
}

/// `YYYYMMDD-HHMMSS` of a Unix time, in UTC.
pub fn utc_stamp(unix: u64) -> String {
    let (days, secs) = ((unix / 86_400) as i64, unix % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps_by_hand() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        // 2026-12-01 08:25:13 UTC.
        assert_eq!(utc_stamp(1_796_113_513), "20261201-082513");
        // 2024-02-29 23:59:59 UTC (a leap day).
        assert_eq!(utc_stamp(1_709_251_199), "20240229-235959");
    }

    #[test]
    fn a_run_directory_is_locked_against_a_second_trainer() {
        let tmp = tempfile::tempdir().unwrap();
        let held = lock(tmp.path()).unwrap();
        let pid = std::process::id().to_string();
        match lock(tmp.path()) {
            Err(TrainError::Config { reason, .. }) => assert!(reason.contains(&pid), "{reason}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        drop(held);
        lock(tmp.path()).unwrap();
    }

    #[test]
    fn a_directory_holding_a_run_is_refused_unless_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(existing_run(tmp.path()), None);
        prepare_fresh(tmp.path(), false).unwrap();
        std::fs::write(tmp.path().join("metrics.jsonl"), "{}\n").unwrap();
        std::fs::write(tmp.path().join("notes.txt"), "mine").unwrap();
        let err = prepare_fresh(tmp.path(), false).unwrap_err().to_string();
        assert!(
            err.contains("--resume") && err.contains("--overwrite"),
            "{err}"
        );
        assert!(tmp.path().join("metrics.jsonl").exists(), "nothing removed");
        prepare_fresh(tmp.path(), true).unwrap();
        assert!(!tmp.path().join("metrics.jsonl").exists());
        assert!(
            tmp.path().join("notes.txt").exists(),
            "only the run's own files go"
        );
    }
}
