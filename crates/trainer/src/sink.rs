//! Where logged rows go: a [`MetricsSink`] trait with the local JSON-lines file (always on), a
//! W&B backend and a null one.
//!
//! A row is a flat map of metric names to numbers, logged at a global step. The local file is
//! the source of truth: it is written whatever happens to W&B.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::TrainError;
use crate::config::keys;

/// A logged row: metric name → value.
pub type Row = Map<String, Value>;

/// A destination for logged rows.
pub trait MetricsSink {
    /// Records `row` at `step`. Must not block training for long.
    fn log(&mut self, step: u64, row: &Row);
    /// Makes what was logged durable (called at the end of every epoch).
    ///
    /// # Errors
    /// The record of truth (the local file) reports a failed write here: the run stops rather
    /// than train on without its metrics. Remote sinks never fail (they log and go on).
    fn flush(&mut self) -> Result<(), TrainError> {
        Ok(())
    }
    /// Ends the run with a process-style exit code (0 = finished).
    fn finish(&mut self, _exit_code: i32) {}
}

/// Discards everything.
#[derive(Debug, Default)]
pub struct NullSink;

impl MetricsSink for NullSink {
    fn log(&mut self, _step: u64, _row: &Row) {}
}

/// Appends one JSON object per row to `metrics.jsonl`. Non-finite numbers are written as `null`
/// (JSON has no NaN).
#[derive(Debug)]
pub struct JsonlSink {
    path: PathBuf,
    out: BufWriter<File>,
    /// The first write error; nothing is written after it.
    failed: Option<std::io::Error>,
}

impl JsonlSink {
    /// Opens `path` for appending (creating it).
    pub fn open(path: &Path) -> Result<Self, TrainError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| TrainError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            failed: None,
        })
    }

    /// Keeps only the rows whose `global_step` is at most `step` (used when resuming from a
    /// checkpoint taken at `step`, so that the rows of the lost tail are written once).
    pub fn truncate_after(path: &Path, step: u64) -> Result<usize, TrainError> {
        if !path.exists() {
            return Ok(0);
        }
        let io = |source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        };
        let reader = BufReader::new(File::open(path).map_err(io)?);
        let lines: Vec<String> = reader.lines().collect::<Result<_, _>>().map_err(io)?;
        let mut kept = String::new();
        let mut n = 0;
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let row: Value = match serde_json::from_str(line) {
                Ok(row) => row,
                // A half-written last line (the process died writing it) is dropped: the rows it
                // held are written again from the checkpoint.
                Err(e) if i + 1 == lines.len() => {
                    tracing::warn!(
                        "{}: line {} is incomplete ({e}); dropped",
                        path.display(),
                        i + 1
                    );
                    continue;
                }
                Err(e) => {
                    return Err(TrainError::Checkpoint(format!(
                        "{}: line {}: not a JSON object: {e}",
                        path.display(),
                        i + 1
                    )));
                }
            };
            if row
                .get(keys::GLOBAL_STEP)
                .and_then(Value::as_u64)
                .is_some_and(|s| s <= step)
            {
                kept.push_str(line);
                kept.push('\n');
                n += 1;
            }
        }
        crate::checkpoint::write_atomic(path, kept.as_bytes())?;
        Ok(n)
    }
}

impl MetricsSink for JsonlSink {
    fn log(&mut self, _step: u64, row: &Row) {
        if self.failed.is_some() {
            return;
        }
        // A map of strings to numbers always serialises.
        let line = serde_json::to_string(row).unwrap_or_default();
        if let Err(e) = writeln!(self.out, "{line}") {
            self.failed = Some(e);
        }
    }

    fn flush(&mut self) -> Result<(), TrainError> {
        if self.failed.is_none()
            && let Err(e) = self
                .out
                .flush()
                .and_then(|()| self.out.get_ref().sync_data())
        {
            self.failed = Some(e);
        }
        match &self.failed {
            None => Ok(()),
            Some(e) => Err(TrainError::Io {
                path: self.path.clone(),
                source: std::io::Error::new(e.kind(), e.to_string()),
            }),
        }
    }

    fn finish(&mut self, _exit_code: i32) {
        if let Err(e) = self.flush() {
            tracing::error!("{e}");
        }
    }
}

/// How long the end of a run waits for a W&B server that never answered the run's creation.
pub const UNREACHED_FINISH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(3);

/// Sends rows to a W&B run (see the `wandb-http` crate); never blocks training.
///
/// Floats go out with [`wandb_http::Row::set_f64`], so a diverging loss shows on W&B as `NaN`
/// instead of a gap: the trainer's rows hold `null` only where a metric was not finite (see
/// [`row`]), and this sink sends such a `null` as `NaN` (±∞ were already folded into it).
/// Integers (`global_step`, `epoch`) stay integers.
pub struct WandbSink {
    run: Option<wandb_http::Run>,
    finish_deadline: std::time::Duration,
    report: FinishReportHandle,
}

impl std::fmt::Debug for WandbSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WandbSink")
            .field("active", &self.run.is_some())
            .field("finish_deadline", &self.finish_deadline)
            .finish()
    }
}

/// A shared slot that receives the [`wandb_http::FinishReport`] when a [`WandbSink`] finishes, so
/// a caller that handed the sink to [`crate::run`] can still see what was delivered.
#[derive(Debug, Clone, Default)]
pub struct FinishReportHandle(std::sync::Arc<std::sync::OnceLock<wandb_http::FinishReport>>);

impl FinishReportHandle {
    /// The report, once the sink has finished.
    pub fn get(&self) -> Option<wandb_http::FinishReport> {
        self.0.get().cloned()
    }
}

impl WandbSink {
    /// Wraps a started run; finishing waits at most
    /// [`crate::wandb::DEFAULT_FINISH_DEADLINE`].
    pub fn new(run: wandb_http::Run) -> Self {
        Self {
            run: Some(run),
            finish_deadline: crate::wandb::DEFAULT_FINISH_DEADLINE,
            report: FinishReportHandle::default(),
        }
    }

    /// Sets how long [`MetricsSink::finish`] waits for the last rows and the exit code.
    pub fn with_finish_deadline(mut self, deadline: std::time::Duration) -> Self {
        self.finish_deadline = deadline;
        self
    }

    /// The run's page, once the server has answered.
    pub fn url(&self) -> Option<String> {
        self.run.as_ref().and_then(|r| r.url())
    }

    /// The W&B run id (`None` after finishing).
    pub fn run_id(&self) -> Option<String> {
        self.run.as_ref().map(|r| r.run_id().to_string())
    }

    /// Where the finish report will appear.
    pub fn report_handle(&self) -> FinishReportHandle {
        self.report.clone()
    }
}

/// The W&B form of a trainer row: non-integer numbers as floats, `null` (a non-finite metric) as
/// `NaN`, everything else unchanged.
pub fn wandb_row(row: &Row) -> wandb_http::Row {
    let mut out = wandb_http::Row::new();
    for (key, value) in row {
        match value {
            Value::Number(n) if n.is_f64() => {
                out.set_f64(key.clone(), n.as_f64().unwrap_or(f64::NAN));
            }
            Value::Null => {
                out.set_f64(key.clone(), f64::NAN);
            }
            other => {
                out.set(key.clone(), other.clone());
            }
        }
    }
    out
}

impl MetricsSink for WandbSink {
    fn log(&mut self, step: u64, row: &Row) {
        if let Some(run) = &self.run {
            run.log(step, wandb_row(row));
        }
    }

    fn finish(&mut self, exit_code: i32) {
        let Some(run) = self.run.take() else {
            return;
        };
        // A run the server never created (down or hanging since the start) has nothing to flush
        // that could still arrive in time: waiting the whole deadline would only delay the exit.
        let deadline = if run.url().is_some() {
            self.finish_deadline
        } else {
            self.finish_deadline.min(UNREACHED_FINISH_DEADLINE)
        };
        let report = run.finish(exit_code, deadline);
        let outcome = if report.completed {
            format!(
                "run marked {} (exit code {exit_code})",
                if exit_code == 0 { "finished" } else { "failed" }
            )
        } else if report.timed_out {
            format!("exit code not confirmed within {deadline:?}")
        } else {
            "exit code not confirmed".to_string()
        };
        let summary = if report.summary_delivered {
            "summary delivered"
        } else {
            "summary not delivered"
        };
        let line = format!(
            "W&B: {} of {} history rows delivered, {summary}, {outcome}",
            report.rows_delivered, report.rows
        );
        if report.completed && report.rows_lost == 0 {
            tracing::info!("{line}");
        } else {
            match &report.failure {
                Some(why) => tracing::warn!("{line}; {why}; metrics.jsonl has every row"),
                None => tracing::warn!("{line}; metrics.jsonl has every row"),
            }
        }
        if let Some(url) = &report.url {
            eprintln!("W&B run: {url}");
        }
        // Only this method fills the slot, and `run.take()` above makes it run once.
        let _ = self.report.0.set(report);
    }
}

/// Several sinks behind one.
#[derive(Default)]
pub struct Sinks(pub Vec<Box<dyn MetricsSink>>);

impl std::fmt::Debug for Sinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sinks({})", self.0.len())
    }
}

impl MetricsSink for Sinks {
    fn log(&mut self, step: u64, row: &Row) {
        for s in &mut self.0 {
            s.log(step, row);
        }
    }

    fn flush(&mut self) -> Result<(), TrainError> {
        let mut first = Ok(());
        for s in &mut self.0 {
            let outcome = s.flush();
            if first.is_ok() {
                first = outcome;
            }
        }
        first
    }

    fn finish(&mut self, exit_code: i32) {
        for s in &mut self.0 {
            s.finish(exit_code);
        }
    }
}

/// Builds a row from (key, value) pairs plus `global_step` (and `epoch` when given); non-finite
/// values become `null`.
pub fn row(global_step: u64, epoch: Option<usize>, values: &[(String, f64)]) -> Row {
    let mut r = Row::new();
    r.insert(keys::GLOBAL_STEP.into(), Value::from(global_step));
    if let Some(e) = epoch {
        r.insert(keys::EPOCH.into(), Value::from(e));
    }
    for (k, v) in values {
        r.insert(
            k.clone(),
            serde_json::Number::from_f64(*v).map_or(Value::Null, Value::Number),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_of_the_local_record_is_an_error_at_the_next_flush() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("metrics.jsonl");
        let mut sink = JsonlSink::open(&path).unwrap();
        sink.log(1, &row(1, None, &[("lr".into(), 0.1)]));
        sink.flush().unwrap();
        // A full disk: the writer's file becomes /dev/full (writes fail with ENOSPC).
        sink.out = BufWriter::new(
            OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .expect("/dev/full"),
        );
        sink.log(2, &row(2, None, &[("lr".into(), 0.1)]));
        match sink.flush() {
            Err(TrainError::Io { path: p, source }) => {
                assert_eq!(p, path);
                assert_eq!(source.raw_os_error(), None, "a copied error");
                assert!(source.to_string().contains("space"), "{source}");
            }
            other => panic!("expected an I/O error, got {other:?}"),
        }
        // Once failed, it stays failed: nothing more is written.
        sink.log(3, &row(3, None, &[]));
        assert!(sink.flush().is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    }

    #[test]
    fn a_torn_last_line_is_dropped_on_resume_and_other_bad_lines_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("metrics.jsonl");
        std::fs::write(
            &path,
            "{\"global_step\":1}\n{\"global_step\":2}\n{\"global_step\":3,\"lr\":0.",
        )
        .unwrap();
        assert_eq!(JsonlSink::truncate_after(&path, 10).unwrap(), 2);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"global_step\":1}\n{\"global_step\":2}\n"
        );
        std::fs::write(
            &path,
            "{\"global_step\":1}\nnot json\n{\"global_step\":2}\n",
        )
        .unwrap();
        assert!(JsonlSink::truncate_after(&path, 10).is_err());
    }
}
