//! Running experiments as `train` child processes: side by side with `--jobs`, batched into
//! ensembles where their shapes agree, skipping finished runs, resuming interrupted ones,
//! recording every outcome.
//!
//! [`plan`] groups the experiments that may train together (their configurations differ only in
//! per-run keys, as `run_config::batching::compatible` decides: seeds, learning rates, weight
//! decays, …) into batched `train --ensemble` processes of at most [`RunOptions::ensemble`]
//! members; every other experiment is its own process. A crash or a bad value in one process
//! cannot take the others down, and a non-finite loss stops only its own member. The process's
//! stdout and stderr go to `train.stdout.log` and `train.stderr.log` in each member's run
//! directory, and one JSON line per experiment is appended to `<sweep dir>/sweep-status.jsonl`.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use run_config::{RunConfig, keys};
use serde::Serialize;

use crate::cache;
use crate::error::{Result, io_err};
use crate::experiment::{Experiment, Sweep};

/// Name of the per-sweep outcome log.
pub const STATUS_FILE: &str = "sweep-status.jsonl";
/// Lines of a failed run's stderr kept in its status row.
pub const TAIL_LINES: usize = 20;
/// Exit statuses of `train` stopped by SIGINT, SIGTERM or SIGHUP (it wrote a `last` checkpoint
/// of where it stood first).
const INTERRUPTED_EXITS: [i32; 3] = [130, 143, 129];
/// The lock file of a sweep directory, held by `sweep run` while it runs.
pub const LOCK_FILE: &str = ".sweep.lock";
/// Default of [`RunOptions::ensemble`]: members per batched `train` process.
pub const DEFAULT_ENSEMBLE: usize = 8;
/// Name of a batched member's resolved configuration in its run directory.
pub const MEMBER_CONFIG: &str = "ensemble-member.toml";

/// How to run experiments.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Experiments run side by side.
    pub jobs: usize,
    /// libtorch threads per run; `None`: `max(1, cores / jobs)`.
    pub threads: Option<usize>,
    /// The `train` executable.
    pub train_bin: PathBuf,
    /// Raised (e.g. by Ctrl-C) to start no further experiment.
    pub stop: Option<Arc<AtomicBool>>,
    /// Print one line per started and finished experiment to stderr.
    pub verbose: bool,
    /// Most experiments trained together in one batched `train --ensemble` process; 1 runs
    /// every experiment on its own.
    pub ensemble: usize,
}

impl RunOptions {
    /// Options running `train_bin` with `jobs` jobs and the default thread split.
    pub fn new(train_bin: PathBuf, jobs: usize) -> Self {
        Self {
            jobs: jobs.max(1),
            threads: None,
            train_bin,
            stop: None,
            verbose: false,
            ensemble: DEFAULT_ENSEMBLE,
        }
    }

    /// libtorch threads per run.
    pub fn threads_per_job(&self) -> usize {
        self.threads
            .unwrap_or_else(|| (available_cores() / self.jobs.max(1)).max(1))
    }
}

/// Cores this process may use.
pub fn available_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// What became of one experiment.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    /// `train` ran to the last epoch.
    Finished,
    /// A finished run was found (`checkpoints/last` at the last epoch); nothing was run.
    Skipped,
    /// The combination is not a valid configuration.
    Invalid {
        /// The validation error.
        reason: String,
    },
    /// Its dataset could not be generated.
    DataFailed {
        /// The error.
        reason: String,
    },
    /// `train` could not start or exited with a failure.
    Failed {
        /// Exit code; none when it could not start or was killed by a signal.
        exit_code: Option<i32>,
        /// The last lines of its stderr (or why it could not start).
        stderr_tail: Vec<String>,
    },
    /// `train` was interrupted (it wrote a checkpoint; a restarted sweep resumes it).
    Interrupted,
    /// Not started because the sweep was stopped.
    NotStarted,
}

impl Status {
    /// Short word for tables.
    pub fn word(&self) -> &'static str {
        match self {
            Status::Finished => "finished",
            Status::Skipped => "skipped",
            Status::Invalid { .. } => "invalid",
            Status::DataFailed { .. } => "data-failed",
            Status::Failed { .. } => "failed",
            Status::Interrupted => "interrupted",
            Status::NotStarted => "not-started",
        }
    }

    /// True when the run directory holds a complete run.
    pub fn is_complete(&self) -> bool {
        matches!(self, Status::Finished | Status::Skipped)
    }
}

/// One row of `sweep-status.jsonl` and of the summary table.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Outcome {
    /// Experiment index.
    pub index: usize,
    /// Experiment name.
    pub experiment: String,
    /// What happened.
    #[serde(flatten)]
    pub status: Status,
    /// Wall time of the `train` process, seconds (0 when none ran).
    pub seconds: f64,
    /// The command that ran, when one did.
    pub command: Option<String>,
    /// Final `val/macro/ACC`, from the run's `metrics.jsonl`.
    pub final_macro_acc: Option<f64>,
    /// Final `val_ACC/ood_analogical`.
    pub final_ood_analogical_acc: Option<f64>,
    /// First step at which `val_ACC/ood_analogical` reached [`ONSET_THRESHOLD`].
    #[serde(default)]
    pub onset_step: Option<u64>,
}

/// The recorded outcome of each experiment of `sweep`, from its `sweep-status.jsonl`, in
/// experiment order: the last row of a run that happened (finished, failed, interrupted, …),
/// else its last row (skipped), else not started. What `reproduce --plots-only` reports for runs
/// it did not run itself; unreadable rows are left out.
pub fn recorded_outcomes(sweep: &Sweep) -> Vec<Outcome> {
    let path = sweep.dir().join(STATUS_FILE);
    let rows: Vec<Outcome> = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    sweep
        .experiments
        .iter()
        .map(|e| {
            let mine = || rows.iter().rev().filter(|o| o.experiment == e.name);
            mine()
                .find(|o| !matches!(o.status, Status::Skipped | Status::NotStarted))
                .or_else(|| mine().next())
                .cloned()
                .map(|o| Outcome {
                    index: e.index,
                    ..o
                })
                .unwrap_or_else(|| Outcome::not_started(e))
        })
        .collect()
}

/// The OOD analogical accuracy that marks the onset of analogy (as in the paper's figures).
pub const ONSET_THRESHOLD: f64 = 0.5;

impl Outcome {
    /// The outcome of `e` before anything happened to it.
    fn not_started(e: &Experiment) -> Self {
        Self {
            index: e.index,
            experiment: e.name.clone(),
            status: Status::NotStarted,
            seconds: 0.0,
            command: None,
            final_macro_acc: None,
            final_ood_analogical_acc: None,
            onset_step: None,
        }
    }

    /// `finished (12.3 s): OOD analogical ACC 1.000, onset at step 312` and the like.
    pub fn progress(&self) -> String {
        let mut line = format!("{} ({:.1} s)", self.status.word(), self.seconds);
        if let Some(acc) = self.final_ood_analogical_acc {
            line += &format!(": OOD analogical ACC {acc:.3}");
            line += &match self.onset_step {
                Some(s) => format!(", onset at step {s}"),
                None => ", no onset".to_string(),
            };
        }
        line
    }
}

/// The completed epochs of the newest valid checkpoint of `run_dir`, with the configuration
/// stored there; `None` when it has none.
pub fn last_checkpoint(run_dir: &Path) -> Option<(u64, Option<RunConfig>)> {
    let (valid, _) = run_config::record::newest_sidecars(run_dir);
    let (_, sidecar) = valid.into_iter().next()?;
    Some((sidecar.epoch as u64, Some(sidecar.config)))
}

/// True when the run directory holds a run finished at `epochs` epochs.
pub fn is_finished(run_dir: &Path, epochs: usize) -> bool {
    last_checkpoint(run_dir).is_some_and(|(e, _)| e >= epochs as u64)
}

/// What an experiment's run directory holds, from one read of its `last` checkpoint sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunState {
    /// A run finished at the experiment's epochs.
    Finished,
    /// An unfinished checkpoint written with the same configuration (thread count aside), so
    /// resuming gives the run the sweep asks for.
    Resumable,
    /// Nothing usable (no valid checkpoint, or one of another configuration): the run starts
    /// from scratch, replacing what its directory holds (`train --overwrite`: a sweep owns its
    /// run directories).
    Fresh,
}

fn run_state(e: &Experiment) -> RunState {
    match last_checkpoint(&e.run_dir) {
        Some((epoch, _)) if epoch >= e.config.train.epochs as u64 => RunState::Finished,
        Some((_, Some(mut stored))) => {
            stored.train.threads = e.config.train.threads;
            if stored == e.config {
                RunState::Resumable
            } else {
                RunState::Fresh
            }
        }
        _ => RunState::Fresh,
    }
}

/// An exclusive hold on a sweep directory (released when dropped, or when the process dies).
pub type SweepLock = signals::DirLock;

/// Takes the lock of sweep directory `dir`, so that two `sweep run` never work on the same
/// runs at once (array tasks of `run-one`/`run-batch` share a directory by design and do not
/// take it; each `train` locks its own run directory).
///
/// # Errors
/// [`crate::SweepError::Locked`] naming the directory and the holder's pid; I/O errors.
pub fn lock_dir(dir: &Path) -> Result<SweepLock> {
    let path = dir.join(LOCK_FILE);
    signals::DirLock::acquire(&path).map_err(|e| match e {
        signals::LockError::Held { holder } => crate::SweepError::Locked {
            dir: dir.to_path_buf(),
            pid: holder,
        },
        signals::LockError::Io(source) => io_err(&path)(source),
    })
}

/// Generates every dataset the sweep needs, serially, before any run starts (parallel runs then
/// only read them). Returns, per cache directory, the error of the ones that failed.
pub fn prepare_datasets(sweep: &Sweep, verbose: bool) -> Vec<(PathBuf, String)> {
    ensure_datasets(sweep.experiments.iter(), verbose)
}

/// Generates the datasets of the valid experiments among `experiments`, each cache directory
/// once; returns the failed ones with their errors.
fn ensure_datasets<'a>(
    experiments: impl Iterator<Item = &'a Experiment>,
    verbose: bool,
) -> Vec<(PathBuf, String)> {
    let mut seen: Vec<&Path> = Vec::new();
    let mut failed = Vec::new();
    for e in experiments.filter(|e| e.invalid.is_none()) {
        if seen.contains(&e.data_dir.as_path()) {
            continue;
        }
        seen.push(&e.data_dir);
        match cache::ensure_dataset(&e.config.data, &e.data_dir) {
            Ok(true) if verbose => eprintln!("generated dataset {}", e.data_dir.display()),
            Ok(_) => {}
            Err(err) => failed.push((e.data_dir.clone(), err.to_string())),
        }
    }
    failed
}

/// Runs every experiment of the sweep (`opts.jobs` at a time) and returns their outcomes in
/// sweep order. Failures of single experiments are outcomes, not errors.
///
/// # Errors
/// Only when the sweep directory or the status log cannot be written.
pub fn run_sweep(sweep: &Sweep, opts: &RunOptions) -> Result<Vec<Outcome>> {
    let dir = sweep.dir();
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let _lock = lock_dir(&dir)?;
    let data_failures = prepare_datasets(sweep, opts.verbose);
    let status = Arc::new(StatusLog::open(&dir.join(STATUS_FILE))?);
    let work = plan(sweep, opts);
    let processes = work.len();
    let queue: Mutex<VecDeque<Vec<&Experiment>>> = Mutex::new(work.into());
    let results: Mutex<Vec<Outcome>> = Mutex::new(Vec::new());
    let threads = opts.threads_per_job();
    let total = sweep.experiments.len();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..opts.jobs.max(1).min(processes.max(1)) {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().map(|mut q| q.pop_front()).ok().flatten();
                    let Some(group) = next else { break };
                    let outcomes = match group[..] {
                        [e] => vec![run_experiment(sweep, e, opts, threads, &data_failures)],
                        _ => run_group(&group, opts, threads, &data_failures),
                    };
                    for outcome in outcomes {
                        status.append(&outcome);
                        if let Ok(mut r) = results.lock() {
                            r.push(outcome);
                            if opts.verbose {
                                eprintln!("{}", eta_line(&r, total, started.elapsed()));
                            }
                        }
                    }
                }
            });
        }
    });
    let mut out = results.into_inner().unwrap_or_default();
    out.sort_by_key(|o| o.index);
    if let Some(e) = status.error() {
        return Err(e);
    }
    Ok(out)
}

/// `sweep: 3/12 experiments done, about 2 min 10 s left`: the time left estimated from the
/// experiments that ran so far (skipped and invalid ones cost nothing).
fn eta_line(done: &[Outcome], total: usize, elapsed: std::time::Duration) -> String {
    let ran = done.iter().filter(|o| o.seconds > 0.0).count();
    let left = total.saturating_sub(done.len());
    let mut line = format!("sweep: {}/{total} experiments done", done.len());
    if ran > 0 && left > 0 {
        let per = elapsed.as_secs_f64() / done.len() as f64;
        let secs = (per * left as f64).round() as u64;
        line += &format!(
            ", about {} left",
            if secs >= 60 {
                format!("{} min {} s", secs / 60, secs % 60)
            } else {
                format!("{secs} s")
            }
        );
    }
    line
}

/// The processes a sweep runs, in order: each entry is one `train` process, either one
/// experiment or (two or more) experiments batched as an ensemble.
///
/// Experiments that will really train (valid, not finished, not resuming a checkpoint) are
/// sorted into classes whose configurations `run_config::batching::compatible` accepts together.
/// A class of `n` is cut into balanced groups of at most [`RunOptions::ensemble`] members, and
/// small enough that the classes give every one of the `jobs` slots work: with `c` classes,
/// each gets `max(1, jobs / c)` groups at least (when it has that many experiments). Everything
/// else (invalid, finished, resumable) is a process of its own, which reports it.
pub fn plan<'a>(sweep: &'a Sweep, opts: &RunOptions) -> Vec<Vec<&'a Experiment>> {
    grouped(sweep, opts.ensemble, opts.jobs, |e| {
        run_state(e) != RunState::Fresh
    })
}

/// The batches of a sweep for job arrays (`sweep slurm`, `sweep run-batch`): valid experiments
/// that may train together are cut into balanced groups of at most `ensemble`, every other
/// experiment is a batch of its own. A pure function of the sweep and `ensemble` (unlike
/// [`plan`], it does not look at which runs are finished), so array task `i` is the same batch
/// in the script and in every task.
pub fn batches(sweep: &Sweep, ensemble: usize) -> Vec<Vec<&Experiment>> {
    grouped(sweep, ensemble, 1, |_| false)
}

/// The experiments of `sweep` in groups, ordered by their first index: those that cannot be
/// batched (batching off, invalid, dropout, or `alone`) each on their own, the others as
/// [`group_compatible`] cuts them.
fn grouped(
    sweep: &Sweep,
    ensemble: usize,
    jobs: usize,
    alone: impl Fn(&Experiment) -> bool,
) -> Vec<Vec<&Experiment>> {
    let (singles, batchable): (Vec<&Experiment>, Vec<&Experiment>) =
        sweep.experiments.iter().partition(|e| {
            ensemble <= 1
                || e.invalid.is_some()
                || run_config::batching::supported(&e.config).is_err()
                || alone(e)
        });
    let mut out: Vec<Vec<&Experiment>> = singles.into_iter().map(|e| vec![e]).collect();
    out.extend(group_compatible(batchable, ensemble, jobs));
    out.sort_by_key(|g| g.first().map_or(usize::MAX, |e| e.index));
    out
}

/// Sorts `experiments` into classes that `run_config::batching::compatible` accepts together and
/// cuts each class into balanced groups of at most `ensemble`, small enough that the classes
/// give each of `jobs` slots work.
fn group_compatible(
    experiments: Vec<&Experiment>,
    ensemble: usize,
    jobs: usize,
) -> Vec<Vec<&Experiment>> {
    let mut classes: Vec<Vec<&Experiment>> = Vec::new();
    for e in experiments {
        match classes
            .iter_mut()
            .find(|c| run_config::batching::compatible(&c[0].config, &e.config).is_ok())
        {
            Some(class) => class.push(e),
            None => classes.push(vec![e]),
        }
    }
    let slots_per_class = (jobs.max(1) / classes.len().max(1)).max(1);
    let mut out = Vec::new();
    for class in classes {
        let n = class.len();
        let size = ensemble.min(n.div_ceil(slots_per_class)).max(1);
        let groups = n.div_ceil(size);
        // Balanced: the first `n % groups` groups get one more member.
        let (base, extra) = (n / groups, n % groups);
        let mut rest = &class[..];
        for g in 0..groups {
            let take = base + usize::from(g < extra);
            let (group, tail) = rest.split_at(take);
            out.push(group.to_vec());
            rest = tail;
        }
    }
    out
}

/// The `train` arguments of a batched group (without the program): `--ensemble` with each
/// member's configuration file ([`MEMBER_CONFIG`] in its run directory), then `--overwrite`
/// (a group is formed of fresh experiments only: what their directories hold is not resumable)
/// and `--quiet`.
pub fn group_args(group: &[&Experiment]) -> Vec<String> {
    let mut args = vec!["--ensemble".to_string()];
    args.extend(
        group
            .iter()
            .map(|e| e.run_dir.join(MEMBER_CONFIG).display().to_string()),
    );
    args.push("--overwrite".into());
    args.push("--quiet".into());
    args
}

/// Runs a batched group as one `train --ensemble` process and returns one outcome per member.
fn run_group(
    group: &[&Experiment],
    opts: &RunOptions,
    threads: usize,
    data_failures: &[(PathBuf, String)],
) -> Vec<Outcome> {
    let mut outs: Vec<Outcome> = group.iter().map(|e| Outcome::not_started(e)).collect();
    let names = group
        .iter()
        .map(|e| e.name.as_str())
        .collect::<Vec<_>>()
        .join(" | ");
    let say = |what: &str| {
        if opts.verbose {
            eprintln!("[{} runs, batched] {what} {names}", group.len(),);
        }
    };
    // Members share every non-per-run key, the dataset included.
    if let Some((_, reason)) = data_failures.iter().find(|(d, _)| *d == group[0].data_dir) {
        for out in &mut outs {
            out.status = Status::DataFailed {
                reason: reason.clone(),
            };
        }
        say("dataset failed:");
        return outs;
    }
    if opts.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
        return outs;
    }
    // Each member's resolved configuration, as the member's `train` would get it.
    for (e, out) in group.iter().zip(&mut outs) {
        let mut cfg = e.config.clone();
        cfg.train.threads = threads;
        let path = e.run_dir.join(MEMBER_CONFIG);
        let written = std::fs::create_dir_all(&e.run_dir)
            .and_then(|()| std::fs::write(&path, cfg.to_toml_string()));
        if let Err(err) = written {
            out.status = Status::Failed {
                exit_code: None,
                stderr_tail: vec![format!("cannot write {}: {err}", path.display())],
            };
        }
    }
    if outs.iter().any(|o| o.status != Status::NotStarted) {
        for out in &mut outs {
            if out.status == Status::NotStarted {
                out.status = Status::Failed {
                    exit_code: None,
                    stderr_tail: vec![
                        "not started: another member's configuration could not be written".into(),
                    ],
                };
            }
        }
        return outs;
    }
    let args = group_args(group);
    let command = shell_line(&opts.train_bin, &args);
    say("start");
    let started = Instant::now();
    let first = &group[0].run_dir;
    let status = spawn_train(&opts.train_bin, &args, first, opts.stop.as_deref());
    let seconds = started.elapsed().as_secs_f64();
    for (e, out) in group.iter().zip(&mut outs) {
        if e.run_dir != *first {
            // Every member's directory gets the logs of the process it ran in.
            for log in ["train.stdout.log", "train.stderr.log"] {
                let _ = std::fs::copy(first.join(log), e.run_dir.join(log));
            }
        }
        out.status = match &status {
            Status::Failed { .. } if is_finished(&e.run_dir, e.config.train.epochs) => {
                Status::Finished
            }
            other => other.clone(),
        };
        out.seconds = seconds;
        out.command = Some(command.clone());
        fill_finals(out, &e.run_dir);
    }
    if opts.verbose {
        for (e, out) in group.iter().zip(&outs) {
            eprintln!(
                "[{} runs, batched] {}: {}",
                group.len(),
                out.progress(),
                e.name
            );
        }
    }
    outs
}

/// Runs exactly experiment `index` (what one Slurm array task does), generating its dataset if
/// missing, and records the outcome in the status log.
///
/// # Errors
/// [`crate::SweepError::Index`] when out of range; status-log I/O errors.
pub fn run_one(sweep: &Sweep, index: usize, opts: &RunOptions) -> Result<Outcome> {
    let e = sweep.get(index)?;
    let mut outcomes = run_listed(sweep, &[e], opts)?;
    Ok(outcomes.remove(0))
}

/// Runs batch `index` of [`batches`] (what one array task does when the job array is batched):
/// its finished members are skipped, interrupted ones resume on their own, the rest train as one
/// `train --ensemble` process (or alone, when one is left). Generates missing datasets and
/// records every member's outcome in the status log; returns them in sweep order.
///
/// # Errors
/// [`crate::SweepError::Batch`] when out of range; status-log I/O errors.
pub fn run_batch(sweep: &Sweep, index: usize, opts: &RunOptions) -> Result<Vec<Outcome>> {
    let all = batches(sweep, opts.ensemble);
    let batch = all.get(index).ok_or(crate::SweepError::Batch {
        file: sweep.spec.file.clone(),
        index,
        count: all.len(),
    })?;
    run_listed(sweep, batch, opts)
}

/// Runs `experiments` in this process (an array task's share): generates their missing
/// datasets, skips the finished ones, resumes the interrupted ones on their own, trains the rest
/// as one `train --ensemble` process (or alone, when one is left), and records every outcome in
/// the status log. Returns the outcomes in sweep order (one per experiment).
fn run_listed(
    sweep: &Sweep,
    experiments: &[&Experiment],
    opts: &RunOptions,
) -> Result<Vec<Outcome>> {
    let dir = sweep.dir();
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let data_failures = ensure_datasets(experiments.iter().copied(), opts.verbose);
    let status = StatusLog::open(&dir.join(STATUS_FILE))?;
    let threads = opts.threads_per_job();
    let (together, alone): (Vec<&Experiment>, Vec<&Experiment>) =
        experiments.iter().copied().partition(|e| {
            e.invalid.is_none()
                && !data_failures.iter().any(|(d, _)| *d == e.data_dir)
                && run_state(e) == RunState::Fresh
        });
    let mut outcomes: Vec<Outcome> = alone
        .iter()
        .map(|e| run_experiment(sweep, e, opts, threads, &data_failures))
        .collect();
    outcomes.extend(match together[..] {
        [] => Vec::new(),
        [e] => vec![run_experiment(sweep, e, opts, threads, &data_failures)],
        _ => run_group(&together, opts, threads, &data_failures),
    });
    outcomes.sort_by_key(|o| o.index);
    for o in &outcomes {
        status.append(o);
    }
    if let Some(err) = status.error() {
        return Err(err);
    }
    Ok(outcomes)
}

fn run_experiment(
    sweep: &Sweep,
    e: &Experiment,
    opts: &RunOptions,
    threads: usize,
    data_failures: &[(PathBuf, String)],
) -> Outcome {
    let mut out = Outcome::not_started(e);
    let say = |what: &str| {
        if opts.verbose {
            eprintln!(
                "[{}/{}] {what} {}",
                e.index + 1,
                sweep.experiments.len(),
                e.name
            );
        }
    };
    if let Some(reason) = &e.invalid {
        out.status = Status::Invalid {
            reason: reason.clone(),
        };
        say("invalid:");
        return out;
    }
    if let Some((_, reason)) = data_failures.iter().find(|(d, _)| *d == e.data_dir) {
        out.status = Status::DataFailed {
            reason: reason.clone(),
        };
        say("dataset failed:");
        return out;
    }
    let state = run_state(e);
    if state == RunState::Finished {
        out.status = Status::Skipped;
        fill_finals(&mut out, &e.run_dir);
        say("already finished:");
        return out;
    }
    if opts.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
        return out;
    }
    let args = if state == RunState::Resumable {
        vec![
            "--resume".to_string(),
            e.run_dir.display().to_string(),
            "--set".into(),
            format!("train.threads={threads}"),
            "--quiet".into(),
        ]
    } else {
        let mut args = sweep.train_args(e, threads);
        args.push("--overwrite".into());
        args
    };
    out.command = Some(shell_line(&opts.train_bin, &args));
    say("start");
    let started = Instant::now();
    out.status = spawn_train(&opts.train_bin, &args, &e.run_dir, opts.stop.as_deref());
    out.seconds = started.elapsed().as_secs_f64();
    fill_finals(&mut out, &e.run_dir);
    say(&format!("{}:", out.progress()));
    out
}

/// Runs `train` with its output in `run_dir`'s logs. The child is told to stop (SIGTERM: it
/// checkpoints where it stands) when `stop` is raised, and dies with this process if this one
/// is killed, so a stopped or killed sweep leaves no orphans behind.
fn spawn_train(bin: &Path, args: &[String], run_dir: &Path, stop: Option<&AtomicBool>) -> Status {
    let cannot = |why: String| Status::Failed {
        exit_code: None,
        stderr_tail: vec![why],
    };
    if let Err(e) = std::fs::create_dir_all(run_dir) {
        return cannot(format!("cannot create {}: {e}", run_dir.display()));
    }
    let err_path = run_dir.join("train.stderr.log");
    let (Ok(stdout), Ok(stderr)) = (
        File::create(run_dir.join("train.stdout.log")),
        File::create(&err_path),
    ) else {
        return cannot(format!("cannot create the logs in {}", run_dir.display()));
    };
    let mut command = Command::new(bin);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: the hook only calls prctl(2), which is async-signal-safe.
        unsafe {
            command.pre_exec(signals::die_with_parent);
        }
    }
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => return cannot(format!("could not start {}: {e}", bin.display())),
    };
    let mut told = false;
    let exit = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        if !told && stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
            told = true;
            #[cfg(unix)]
            // SAFETY: kill(2) on the pid of our own child, which has not been waited for.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let exit = match exit {
        Ok(s) => s,
        Err(e) => return cannot(format!("waiting for {}: {e}", bin.display())),
    };
    match exit.code() {
        Some(0) => Status::Finished,
        Some(code) if INTERRUPTED_EXITS.contains(&code) => Status::Interrupted,
        code => Status::Failed {
            exit_code: code,
            stderr_tail: tail(&err_path, TAIL_LINES),
        },
    }
}

/// The last `n` lines of a text file (empty when unreadable).
fn tail(path: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn fill_finals(out: &mut Outcome, run_dir: &Path) {
    let Ok(m) = plots::RunMetrics::read(&run_dir.join(plots::METRICS_FILE)) else {
        return;
    };
    if let Some(row) = m.last_epoch_row() {
        out.final_macro_acc = row.get(keys::VAL_MACRO_ACC).copied();
        out.final_ood_analogical_acc = row.get(keys::OOD_ANALOGICAL_ACC).copied();
    }
    out.onset_step = m
        .get(keys::OOD_ANALOGICAL_ACC)
        .and_then(|s| crate::reproduce::onset(&s.points, ONSET_THRESHOLD));
}

/// A command as one line a shell would run (arguments single-quoted where needed).
pub fn shell_line(bin: &Path, args: &[String]) -> String {
    std::iter::once(bin.display().to_string())
        .chain(args.iter().cloned())
        .map(|a| shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `s` quoted for a POSIX shell when it contains anything beyond a safe set.
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-=,+/:@%".contains(c));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The append-only status log, shared by the job threads; the first write error is kept.
struct StatusLog {
    file: Mutex<File>,
    path: PathBuf,
    error: Mutex<Option<std::io::Error>>,
}

impl StatusLog {
    fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_err(path))?;
        Ok(Self {
            file: Mutex::new(file),
            path: path.to_path_buf(),
            error: Mutex::new(None),
        })
    }

    fn append(&self, o: &Outcome) {
        let mut line = serde_json::to_string(o).unwrap_or_default();
        line.push('\n');
        // One write per line: appends of a few hundred bytes stay whole even when several Slurm
        // tasks share the file.
        let res = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("status log lock poisoned"))
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = res
            && let Ok(mut slot) = self.error.lock()
        {
            slot.get_or_insert(e);
        }
    }

    fn error(&self) -> Option<crate::SweepError> {
        let e = self.error.lock().ok()?.take()?;
        Some(crate::SweepError::Io {
            path: self.path.clone(),
            source: e,
        })
    }
}

/// The final table: experiment, status, seconds, final macro ACC, final OOD analogical ACC.
pub fn summary_table(outcomes: &[Outcome]) -> String {
    let width = outcomes
        .iter()
        .map(|o| o.experiment.len())
        .max()
        .unwrap_or(0)
        .max("experiment".len());
    let num = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.3}"));
    let mut s = format!(
        "{:<width$}  {:<12} {:>8}  {:>9}  {:>10}  {:>7}\n",
        "experiment", "status", "seconds", "macro ACC", "OOD analog", "onset"
    );
    for o in outcomes {
        s.push_str(&format!(
            "{:<width$}  {:<12} {:>8.1}  {:>9}  {:>10}  {:>7}\n",
            o.experiment,
            o.status.word(),
            o.seconds,
            num(o.final_macro_acc),
            num(o.final_ood_analogical_acc),
            o.onset_step.map_or("-".to_string(), |s| s.to_string())
        ));
    }
    let complete = outcomes.iter().filter(|o| o.status.is_complete()).count();
    s.push_str(&format!("{complete}/{} complete\n", outcomes.len()));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_counts_the_experiments_that_ran() {
        let ran = |seconds: f64| Outcome {
            index: 0,
            experiment: "e".into(),
            status: Status::Finished,
            seconds,
            command: None,
            final_macro_acc: None,
            final_ood_analogical_acc: None,
            onset_step: None,
        };
        let done = [ran(10.0), ran(0.0)];
        let line = eta_line(&done, 6, std::time::Duration::from_secs(20));
        assert_eq!(line, "sweep: 2/6 experiments done, about 40 s left");
        let line = eta_line(&done, 200, std::time::Duration::from_secs(20));
        assert!(line.ends_with("about 33 min 0 s left"), "{line}");
        assert_eq!(
            eta_line(&[ran(0.0)], 1, std::time::Duration::ZERO),
            "sweep: 1/1 experiments done"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("--set"), "--set");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(
            shell_line(Path::new("/x/train"), &["--set".into(), "k=[1, 2]".into()]),
            "/x/train --set 'k=[1, 2]'"
        );
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.log");
        std::fs::write(&p, "a\nb\nc\nd\n").unwrap();
        assert_eq!(tail(&p, 2), vec!["c", "d"]);
        assert_eq!(tail(&p, 10).len(), 4);
        assert!(tail(&dir.path().join("none"), 3).is_empty());
    }
}
