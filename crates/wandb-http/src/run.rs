//! The run handle and its background thread.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Url;
use serde_json::{Map, Value, json};

use crate::error::WandbError;
use crate::history::{History, Logged, Stamp};
use crate::options::ClientOptions;
use crate::rng::SmallRng;
use crate::row::{Field, Row, encode_config};
use crate::settings::{Mode, Resume, Settings, run_page_url};
use crate::transport::{Attempt, Endpoint, Transport, retry_wait};

/// The GraphQL mutation that creates or resumes a run.
pub const UPSERT_BUCKET_QUERY: &str = "mutation UpsertBucket($id: String, $name: String, $project: String, $entity: String, \
$groupName: String, $description: String, $displayName: String, $notes: String, $commit: String, \
$config: JSONString, $host: String, $debug: Boolean, $program: String, $repo: String, $jobType: String, \
$state: String, $sweep: String, $tags: [String!], $summaryMetrics: JSONString) {
  upsertBucket(input: {id: $id, name: $name, groupName: $groupName, modelName: $project, entityName: $entity, \
description: $description, displayName: $displayName, notes: $notes, config: $config, commit: $commit, \
host: $host, debug: $debug, jobProgram: $program, jobRepo: $repo, jobType: $jobType, state: $state, \
sweep: $sweep, tags: $tags, summaryMetrics: $summaryMetrics}) {
    bucket { id name displayName description config sweepName historyLineCount summaryMetrics project { id name entity { id name } } }
    inserted
  }
}";

/// How long the background thread may keep flushing after a [`Run`] is dropped without
/// [`Run::finish`].
const DROP_FINISH_GRACE: Duration = Duration::from_secs(5);
/// Stale-step warnings printed before further ones are only counted.
const STALE_WARNINGS: u64 = 5;

/// What the server said about the run once the upsert succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    /// The entity the run lives in (the server's choice when none was configured).
    pub entity: String,
    /// The project name as stored by the server.
    pub project: String,
    /// The run id (the run's `name` in the API).
    pub run_id: String,
    /// Display name, if any.
    pub display_name: Option<String>,
    /// The run page.
    pub url: String,
    /// The history line this session starts writing at (`historyLineCount`; 0 for a new run).
    pub start_offset: u64,
    /// The step of the run's last history row on the server (the `_step` of its
    /// `summaryMetrics`) when it already had one: this session does not send history rows at or
    /// below it. `None` for a new run, or when the server did not say.
    pub last_step: Option<u64>,
    /// False when the run already existed, i.e. this session resumes it.
    pub inserted: bool,
}

/// What [`Run::finish`] managed to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishReport {
    /// The run page, if the upsert succeeded.
    pub url: Option<String>,
    /// Calls to [`Run::log`].
    pub log_calls: u64,
    /// Log calls dropped before reaching the background thread: its queue was full, or streaming
    /// had already stopped.
    pub dropped_not_queued: u64,
    /// Log calls dropped because their step was lower than the open row's.
    pub dropped_stale_step: u64,
    /// History rows (distinct steps) not sent because the resumed run already had their step
    /// ([`RunInfo::last_step`]); their values still went into the summary. Not counted in
    /// `rows`.
    pub rows_already_on_server: u64,
    /// Log calls the background thread never processed (it gave up or the deadline passed first).
    pub logs_unprocessed: u64,
    /// History rows formed (distinct accepted steps), including the row open at finish.
    pub rows: u64,
    /// History rows the server acknowledged.
    pub rows_delivered: u64,
    /// `rows - rows_delivered`.
    pub rows_lost: u64,
    /// The final summary was acknowledged.
    pub summary_delivered: bool,
    /// The `complete`/`exitcode` message was acknowledged.
    pub completed: bool,
    /// `finish` returned at its deadline while the background thread was still busy.
    pub timed_out: bool,
    /// Why streaming stopped early, if it did: a non-retryable answer, or the finish deadline
    /// passing while the server kept failing (with its last failure). Secrets are redacted.
    pub failure: Option<String>,
}

/// Where the upsert result goes: to [`Run::start`] while it waits, nowhere once it stopped.
#[derive(Debug)]
enum StartSlot {
    Waiting,
    Abandoned,
    Done(Result<RunInfo, WandbError>),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counters shared between the handle and the thread, readable even if the thread is stuck.
#[derive(Debug, Default)]
struct Shared {
    log_calls: AtomicU64,
    dropped_not_queued: AtomicU64,
    dropped_stale_step: AtomicU64,
    rows_skipped: AtomicU64,
    logs_processed: AtomicU64,
    rows: AtomicU64,
    rows_delivered: AtomicU64,
    summary_delivered: AtomicBool,
    completed: AtomicBool,
    info: OnceLock<RunInfo>,
    failure: Mutex<Option<String>>,
    /// `endpoint: reason` of the last retryable failure while the streak lasts (redacted).
    last_failure: Mutex<Option<String>>,
    finish: Mutex<Option<FinishRequest>>,
    start: Mutex<Option<StartSlot>>,
    start_changed: Condvar,
}

impl Shared {
    fn report(&self, timed_out: bool) -> FinishReport {
        let log_calls = self.log_calls.load(Ordering::SeqCst);
        let dropped_not_queued = self.dropped_not_queued.load(Ordering::SeqCst);
        let processed = self.logs_processed.load(Ordering::SeqCst);
        let rows = self.rows.load(Ordering::SeqCst);
        let rows_delivered = self.rows_delivered.load(Ordering::SeqCst);
        FinishReport {
            url: self.info.get().map(|i| i.url.clone()),
            log_calls,
            dropped_not_queued,
            dropped_stale_step: self.dropped_stale_step.load(Ordering::SeqCst),
            rows_already_on_server: self.rows_skipped.load(Ordering::SeqCst),
            logs_unprocessed: log_calls.saturating_sub(dropped_not_queued + processed),
            rows,
            rows_delivered,
            rows_lost: rows.saturating_sub(rows_delivered),
            summary_delivered: self.summary_delivered.load(Ordering::SeqCst),
            completed: self.completed.load(Ordering::SeqCst),
            timed_out,
            failure: lock(&self.failure)
                .clone()
                .or_else(|| self.outage_failure()),
        }
    }

    /// While the server is failing, why the run ends without being complete.
    fn outage_failure(&self) -> Option<String> {
        lock(&self.last_failure).as_ref().map(|last| {
            format!("finish deadline reached while the server was failing; last failure: {last}")
        })
    }

    /// Records why streaming stopped (the error must be redacted already) and warns once.
    fn fail(&self, error: &WandbError) {
        tracing::warn!(%error, "W&B streaming stopped; further metrics go to the local files only");
        lock(&self.failure).get_or_insert_with(|| error.to_string());
    }

    /// Hands the upsert result to a waiting [`Run::start`]. Returns the result back when start
    /// no longer waits.
    fn offer_start(
        &self,
        result: Result<RunInfo, WandbError>,
    ) -> Option<Result<RunInfo, WandbError>> {
        let mut slot = lock(&self.start);
        match *slot {
            Some(StartSlot::Waiting) => {
                *slot = Some(StartSlot::Done(result));
                self.start_changed.notify_all();
                None
            }
            _ => Some(result),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct FinishRequest {
    exit_code: i32,
    deadline: Instant,
}

struct LogMsg {
    step: u64,
    row: Row,
    stamp: Stamp,
}

/// A live W&B run. Cheap to share by reference across threads (`Send + Sync`).
///
/// Created by [`Run::start`]; [`Run::log`] queues rows for the background thread; [`Run::finish`]
/// flushes and marks the run finished or failed. Dropping a run without `finish` lets the thread
/// flush for a few seconds and mark the run failed (exit code 1), without waiting for it.
pub struct Run {
    tx: Option<SyncSender<LogMsg>>,
    shared: Arc<Shared>,
    done: Mutex<Receiver<FinishReport>>,
    run_id: String,
    started: Instant,
}

impl Run {
    /// [`Run::start_with`] with [`ClientOptions::default`].
    pub fn start(settings: Settings, config: Map<String, Value>) -> Result<Run, WandbError> {
        Run::start_with(settings, config, ClientOptions::default())
    }

    /// Creates or resumes the run and starts the background thread.
    ///
    /// The upsert runs on that thread; this waits at most `options.start_wait` for it, so a hanging
    /// or unreachable server delays the caller by no more than that. If the upsert is still
    /// retrying then, the run is returned anyway (with `url()` still `None`), rows are buffered
    /// (within [`ClientOptions::max_pending_rows`] / [`ClientOptions::max_pending_bytes`]), the
    /// upsert keeps being retried with backoff until it succeeds, fails for good or the finish
    /// deadline passes, and the rows are sent once it succeeds.
    ///
    /// `config` is sent flat: each top-level key becomes `{"value": v}`.
    ///
    /// # Errors
    /// Settings that are invalid (a base URL with credentials included), not online, or lack a
    /// key; and any upsert failure that is final within `start_wait` (400/401/403/404, GraphQL
    /// errors, a resume policy violation, or [`WandbError::GaveUp`] when a whole round of
    /// retries fails before `start_wait` ends). Error texts never contain the key.
    pub fn start_with(
        settings: Settings,
        config: Map<String, Value>,
        options: ClientOptions,
    ) -> Result<Run, WandbError> {
        settings.validate()?;
        if settings.mode != Mode::Online {
            return Err(WandbError::NotOnline {
                mode: settings.mode.to_string(),
            });
        }
        let api_key = settings
            .api_key
            .clone()
            .filter(|k| !k.is_empty())
            .ok_or(WandbError::MissingApiKey)?;
        let transport = Transport::new(
            &settings.base_url,
            &api_key,
            &options,
            !options.use_env_proxy,
        )?;
        let (tx, rx) = sync_channel(options.queue_capacity.max(1));
        let (done_tx, done_rx) = sync_channel(1);
        let shared = Arc::new(Shared {
            start: Mutex::new(Some(StartSlot::Waiting)),
            ..Shared::default()
        });
        let started = Instant::now();
        let run_id = settings.run_id.clone();
        let start_wait = options.start_wait;
        let worker = Worker {
            rx,
            connected: true,
            shared: Arc::clone(&shared),
            history: History::new(
                options.max_pending_rows,
                options.max_pending_bytes,
                options.max_request_bytes,
            ),
            rng: SmallRng::from_entropy(),
            last_request: started,
            started,
            finishing: None,
            stale_seen: 0,
            failures: 0,
            retry_at: None,
            outage_rounds: 0,
            transport,
            settings,
            options,
        };
        thread::Builder::new()
            .name("wandb-http".to_owned())
            .spawn(move || worker.run(config, done_tx))
            .map_err(WandbError::Spawn)?;
        let slot = {
            let guard = lock(&shared.start);
            let (mut guard, _) = shared
                .start_changed
                .wait_timeout_while(guard, start_wait, |slot| {
                    matches!(slot, Some(StartSlot::Waiting))
                })
                .unwrap_or_else(PoisonError::into_inner);
            match guard.take() {
                Some(StartSlot::Done(result)) => Some(result),
                _ => {
                    // From now on the worker keeps retrying on its own.
                    *guard = Some(StartSlot::Abandoned);
                    None
                }
            }
        };
        match slot {
            Some(Ok(info)) => tracing::info!(url = %info.url, "W&B run started"),
            Some(Err(e)) => return Err(e),
            None => {
                tracing::warn!(
                    ?start_wait,
                    "W&B run creation still pending; continuing in the background"
                );
            }
        }
        Ok(Run {
            tx: Some(tx),
            shared,
            done: Mutex::new(done_rx),
            run_id,
            started,
        })
    }

    /// The run page, once the upsert has succeeded.
    pub fn url(&self) -> Option<String> {
        self.shared.info.get().map(|i| i.url.clone())
    }

    /// The server's view of the run, once the upsert has succeeded.
    pub fn info(&self) -> Option<RunInfo> {
        self.shared.info.get().cloned()
    }

    /// The run id this handle was started with (known before the upsert completes).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Queues a row of metrics for `step`. Never blocks and never fails: when the queue is full or
    /// streaming has stopped, the row is dropped (and counted in the [`FinishReport`]).
    ///
    /// Rows with the same step are merged; a larger step closes the previous row; a lower step is
    /// dropped with a warning. `_step`, `_runtime` and `_timestamp` are added.
    pub fn log(&self, step: u64, row: impl Into<Row>) {
        self.shared.log_calls.fetch_add(1, Ordering::Relaxed);
        let Some(tx) = &self.tx else { return };
        let msg = LogMsg {
            step,
            row: row.into(),
            stamp: Stamp {
                runtime: self.started.elapsed().as_secs_f64(),
                timestamp: unix_now(),
            },
        };
        match tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let n = self
                    .shared
                    .dropped_not_queued
                    .fetch_add(1, Ordering::Relaxed);
                if n == 0 {
                    tracing::warn!("W&B queue full; dropping rows until it drains");
                }
            }
            // The thread gave up; it already warned once.
            Err(TrySendError::Disconnected(_)) => {
                self.shared
                    .dropped_not_queued
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Flushes the open row and the summary, then marks the run finished (`exit_code` 0) or
    /// failed (non-zero). Returns within `deadline` whatever the server does.
    pub fn finish(mut self, exit_code: i32, deadline: Duration) -> FinishReport {
        let until = Instant::now() + deadline;
        self.request_finish(exit_code, until);
        let outcome = match self.done.lock() {
            Ok(rx) => rx.recv_timeout(until.saturating_duration_since(Instant::now())),
            Err(_) => Err(RecvTimeoutError::Disconnected),
        };
        let report = match outcome {
            Ok(report) => report,
            Err(RecvTimeoutError::Timeout) => self.shared.report(true),
            Err(RecvTimeoutError::Disconnected) => self.shared.report(false),
        };
        if let Some(url) = &report.url {
            tracing::info!(%url, delivered = report.rows_delivered, lost = report.rows_lost, "W&B run finished");
        }
        report
    }

    fn request_finish(&mut self, exit_code: i32, deadline: Instant) {
        if let Ok(mut slot) = self.shared.finish.lock() {
            slot.get_or_insert(FinishRequest {
                exit_code,
                deadline,
            });
        }
        // Closing the channel wakes the thread; it drains what is queued, then finishes.
        self.tx = None;
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if self.tx.is_some() {
            self.request_finish(1, Instant::now() + DROP_FINISH_GRACE);
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// The background thread's state.
struct Worker {
    rx: Receiver<LogMsg>,
    connected: bool,
    shared: Arc<Shared>,
    history: History,
    rng: SmallRng,
    last_request: Instant,
    started: Instant,
    finishing: Option<FinishRequest>,
    stale_seen: u64,
    /// Consecutive failed attempts, across requests and endpoints; reset by any success.
    failures: u32,
    /// No attempt before this instant (the backoff after the last failure).
    retry_at: Option<Instant>,
    /// Rounds of retries that ended without success during the current outage.
    outage_rounds: u32,
    transport: Transport,
    settings: Settings,
    options: ClientOptions,
}

impl Worker {
    fn run(mut self, config: Map<String, Value>, done_tx: SyncSender<FinishReport>) {
        let Some(info) = self.upsert_until_done(&config) else {
            self.count_unsent();
            let _ = done_tx.try_send(self.shared.report(false));
            return;
        };
        let stream_url = self.transport.url(&[
            "files",
            &info.entity,
            &info.project,
            &info.run_id,
            "file_stream",
        ]);
        let result = self
            .stream(&stream_url)
            .and_then(|()| self.complete(&stream_url));
        if let Err(e) = result {
            self.stopped(&self.redact(e));
        }
        self.count_unsent();
        let _ = done_tx.try_send(self.shared.report(false));
    }

    fn redact(&self, e: WandbError) -> WandbError {
        e.redacted(self.transport.redactor())
    }

    /// Records why the thread stops: a final error, or the finish deadline passing while the
    /// server was failing (then with its last failure). A deadline after a healthy exchange
    /// is not a failure.
    fn stopped(&self, e: &WandbError) {
        match e {
            WandbError::Deadline { .. } => {
                if let Some(why) = self.shared.outage_failure() {
                    tracing::warn!("W&B: {why}");
                    lock(&self.shared.failure).get_or_insert(why);
                }
            }
            e => self.shared.fail(e),
        }
    }

    /// The upsert, retried round after round on retryable failures until it succeeds, fails
    /// for good, or the finish deadline passes; `None` when it did not succeed (the reason is
    /// recorded and handed to [`Run::start`] if it still waits). A round that ends while
    /// `Run::start` still waits is reported to it as [`WandbError::GaveUp`] instead of being
    /// retried: the caller then decides, and nothing has been logged yet.
    fn upsert_until_done(&mut self, config: &Map<String, Value>) -> Option<RunInfo> {
        loop {
            let e = match self.upsert(config) {
                Ok((info, summary)) => {
                    self.history.start_at(info.start_offset);
                    if let Some(step) = info.last_step {
                        tracing::info!(
                            step,
                            history_lines = info.start_offset,
                            "W&B run resumed; history rows up to its last step are not sent again"
                        );
                    }
                    self.history.resume_from(info.last_step, summary);
                    self.store_rows();
                    let _ = self.shared.info.set(info.clone());
                    let _ = self.shared.offer_start(Ok(info.clone()));
                    return Some(info);
                }
                Err(e) => self.redact(e),
            };
            if matches!(e, WandbError::GaveUp { .. }) {
                let mut slot = lock(&self.shared.start);
                if matches!(*slot, Some(StartSlot::Waiting)) {
                    self.shared.fail(&e);
                    *slot = Some(StartSlot::Done(Err(e)));
                    self.shared.start_changed.notify_all();
                    return None;
                }
                drop(slot);
                self.round_failed(&e);
                continue;
            }
            self.stopped(&e);
            let _ = self.shared.offer_start(Err(e));
            return None;
        }
    }

    /// Publishes the row counters.
    fn store_rows(&self) {
        self.shared
            .rows
            .store(self.history.rows_closed, Ordering::SeqCst);
        self.shared
            .rows_skipped
            .store(self.history.rows_skipped, Ordering::SeqCst);
    }

    /// Makes `rows` count every row formed, including an open one the thread never closed.
    fn count_unsent(&mut self) {
        self.history.close_open();
        self.store_rows();
    }

    fn upsert(
        &mut self,
        config: &Map<String, Value>,
    ) -> Result<(RunInfo, BTreeMap<String, Field>), WandbError> {
        let s = &self.settings;
        let variables = json!({
            "name": s.run_id,
            "project": s.project,
            "entity": s.entity,
            "displayName": s.display_name,
            "groupName": s.group,
            "notes": s.notes,
            "tags": if s.tags.is_empty() { Value::Null } else { json!(s.tags) },
            "jobType": s.job_type,
            "sweep": s.sweep_id,
            "config": encode_config(config),
            "summaryMetrics": Value::Null,
        });
        let body = json!({"query": UPSERT_BUCKET_QUERY, "variables": variables}).to_string();
        let url = self.transport.url(&["graphql"]);
        let text = self.post_with_retry("graphql", &url, &body)?;
        let (info, summary) = parse_upsert_response(&text, &self.settings)?;
        match self.settings.resume {
            Some(Resume::Never) if !info.inserted => Err(WandbError::Resume {
                policy: Resume::Never.to_string(),
                run_id: info.run_id,
                detail: format!(
                    "the run already exists with {} history lines",
                    info.start_offset
                ),
            }),
            Some(Resume::Must) if info.inserted => Err(WandbError::Resume {
                policy: Resume::Must.to_string(),
                run_id: info.run_id,
                detail: "the run did not exist (the server has now created it)".to_owned(),
            }),
            _ => Ok((info, summary)),
        }
    }

    /// Streams until the handle is finished or dropped, then flushes everything. Rounds of
    /// retries that end on retryable failures leave the rows queued for the next flush; only a
    /// non-retryable answer or the finish deadline ends this early.
    fn stream(&mut self, url: &Url) -> Result<(), WandbError> {
        while self.finishing.is_none() {
            let due = self.next_due();
            match self
                .rx
                .recv_timeout(due.saturating_duration_since(Instant::now()))
            {
                Ok(msg) => self.on_log(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => self.on_disconnect(),
            }
            if self.finishing.is_none() && Instant::now() >= self.next_due() {
                let sent = if self.history.has_unsent() {
                    self.flush_once(url)
                } else {
                    self.post_with_retry("file_stream", url, "{}").map(drop)
                };
                self.tolerate(sent)?;
            }
        }
        self.history.close_open();
        self.store_rows();
        // Bounded: every successful round removes at least one row or the summary change, and
        // failing rounds end at the finish deadline.
        while self.history.has_unsent() {
            let sent = self.flush_once(url);
            self.tolerate(sent)?;
        }
        Ok(())
    }

    /// A round of retries that ended on retryable failures is not fatal: the caller tries again
    /// later. Anything else is passed on.
    fn tolerate(&mut self, result: Result<(), WandbError>) -> Result<(), WandbError> {
        match result {
            Err(e @ WandbError::GaveUp { .. }) => {
                let e = self.redact(e);
                self.round_failed(&e);
                Ok(())
            }
            other => other,
        }
    }

    /// Warns once per outage that the server keeps failing and rows are kept.
    fn round_failed(&mut self, e: &WandbError) {
        self.outage_rounds += 1;
        if self.outage_rounds == 1 {
            tracing::warn!(
                error = %e,
                pending_rows = self.history.pending_rows(),
                max_pending_rows = self.options.max_pending_rows,
                "W&B keeps failing; rows stay queued and are retried with backoff"
            );
        } else {
            tracing::debug!(error = %e, rounds = self.outage_rounds, "W&B still failing");
        }
    }

    fn complete(&mut self, url: &Url) -> Result<(), WandbError> {
        let exit_code = self.finishing.map(|f| f.exit_code).unwrap_or(1);
        let body = json!({"complete": true, "exitcode": exit_code}).to_string();
        loop {
            match self.post_with_retry("file_stream", url, &body) {
                Ok(_) => break,
                Err(e @ WandbError::GaveUp { .. }) => self.tolerate(Err(e))?,
                Err(e) => return Err(e),
            }
        }
        self.shared.completed.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn flush_once(&mut self, url: &Url) -> Result<(), WandbError> {
        let Some(batch) = self.history.next_batch() else {
            self.history.give_up_summary();
            return Ok(());
        };
        self.post_with_retry("file_stream", url, &batch.body)?;
        self.history.acknowledge(&batch);
        self.shared
            .rows_delivered
            .fetch_add(batch.rows as u64, Ordering::SeqCst);
        self.shared
            .summary_delivered
            .store(self.history.summary_delivered(), Ordering::SeqCst);
        Ok(())
    }

    /// When the next request is due: a flush at the current cadence when something is unsent,
    /// otherwise a heartbeat; never before the backoff after a failure has passed.
    fn next_due(&self) -> Instant {
        let interval = if self.history.has_unsent() {
            if self.started.elapsed() < self.options.fast_flush_period {
                self.options.fast_flush_interval
            } else {
                self.options.flush_interval
            }
        } else {
            self.options.heartbeat_interval
        };
        let due = self.last_request + interval;
        self.retry_at.map_or(due, |at| due.max(at))
    }

    fn on_log(&mut self, msg: LogMsg) {
        self.shared.logs_processed.fetch_add(1, Ordering::SeqCst);
        match self.history.log(msg.step, msg.row, msg.stamp) {
            Logged::Accepted | Logged::AlreadyOnServer { .. } => {}
            Logged::Stale { open_step } => {
                self.shared
                    .dropped_stale_step
                    .fetch_add(1, Ordering::SeqCst);
                self.stale_seen += 1;
                if self.stale_seen <= STALE_WARNINGS {
                    tracing::warn!(
                        step = msg.step,
                        open_step,
                        "W&B row dropped: step lower than the current one{}",
                        if self.stale_seen == STALE_WARNINGS {
                            " (further ones counted silently)"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
        self.store_rows();
    }

    fn on_disconnect(&mut self) {
        self.connected = false;
        let request = self.shared.finish.lock().ok().and_then(|slot| *slot);
        self.finishing = Some(request.unwrap_or(FinishRequest {
            exit_code: 1,
            deadline: Instant::now() + DROP_FINISH_GRACE,
        }));
    }

    fn deadline(&self) -> Option<Instant> {
        self.finishing.map(|f| f.deadline)
    }

    /// One round of attempts at a request, bounded by `max_attempts`, `give_up_after` and the
    /// finish deadline. Every attempt after a failure waits for the backoff first
    /// ([`retry_wait`]: exponential in the consecutive failures, at least `min_retry_wait`, at
    /// least `Retry-After`, at most `max_retry_wait`), also when it starts a new round, so the
    /// server never sees a storm. Rows logged meanwhile keep being accepted.
    fn post_with_retry(
        &mut self,
        endpoint: Endpoint,
        url: &Url,
        body: &str,
    ) -> Result<String, WandbError> {
        let first = Instant::now();
        let mut attempts = 0u32;
        loop {
            if let Some(at) = self.retry_at {
                self.wait(at);
            }
            let mut timeout = self.options.request_timeout;
            if let Some(deadline) = self.deadline() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(WandbError::Deadline { endpoint });
                }
                timeout = timeout.min(left);
            }
            attempts += 1;
            let attempt = self.transport.post(url, body.to_owned(), timeout);
            self.last_request = Instant::now();
            match attempt {
                Attempt::Success(text) => {
                    if self.outage_rounds > 0 {
                        tracing::info!(endpoint, "W&B reachable again; sending the queued rows");
                    }
                    self.failures = 0;
                    self.retry_at = None;
                    *lock(&self.shared.last_failure) = None;
                    self.outage_rounds = 0;
                    return Ok(text);
                }
                Attempt::Fatal { status, body } => {
                    return Err(WandbError::Status {
                        endpoint,
                        status,
                        body,
                    });
                }
                Attempt::Retry {
                    reason,
                    retry_after,
                } => {
                    let wait = retry_wait(self.failures, retry_after, &self.options, &mut self.rng);
                    self.failures = self.failures.saturating_add(1);
                    self.retry_at = Some(self.last_request + wait);
                    *lock(&self.shared.last_failure) = Some(format!("{endpoint}: {reason}"));
                    tracing::debug!(endpoint, attempts, ?wait, %reason, "W&B request failed; retrying");
                    let elapsed = first.elapsed();
                    if attempts >= self.options.max_attempts.max(1)
                        || elapsed + wait > self.options.give_up_after
                    {
                        return Err(WandbError::GaveUp {
                            endpoint,
                            attempts,
                            elapsed,
                            last: reason,
                        });
                    }
                }
            }
        }
    }

    /// Waits until `until` (cut at the finish deadline) while still accepting queued rows.
    fn wait(&mut self, until: Instant) {
        let mut until = until;
        loop {
            if let Some(deadline) = self.deadline() {
                until = until.min(deadline);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            if !self.connected {
                thread::sleep(left);
                return;
            }
            match self.rx.recv_timeout(left) {
                Ok(msg) => self.on_log(msg),
                Err(RecvTimeoutError::Timeout) => return,
                Err(RecvTimeoutError::Disconnected) => self.on_disconnect(),
            }
        }
    }
}

/// Reads the upsert answer, falling back to the requested names where the server omits them;
/// also the run's summary as the server has it (empty when absent or unreadable).
fn parse_upsert_response(
    text: &str,
    settings: &Settings,
) -> Result<(RunInfo, BTreeMap<String, Field>), WandbError> {
    let protocol = |detail: String| WandbError::Protocol {
        endpoint: "graphql",
        detail,
    };
    let value: Value =
        serde_json::from_str(text).map_err(|e| protocol(format!("body is not JSON ({e})")))?;
    if let Some(errors) = value
        .get("errors")
        .and_then(Value::as_array)
        .filter(|e| !e.is_empty())
    {
        let messages: Vec<String> = errors
            .iter()
            .map(|e| {
                e.get("message")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| e.to_string())
            })
            .collect();
        return Err(WandbError::GraphQl(messages.join("; ")));
    }
    let upsert = value
        .pointer("/data/upsertBucket")
        .ok_or_else(|| protocol("no data.upsertBucket".to_owned()))?;
    let bucket = upsert
        .get("bucket")
        .filter(|b| b.is_object())
        .ok_or_else(|| protocol("no data.upsertBucket.bucket".to_owned()))?;
    let text_at = |pointer: &str| {
        bucket
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let entity = text_at("/project/entity/name")
        .or_else(|| settings.entity.clone())
        .ok_or_else(|| protocol("no project.entity.name and no entity configured".to_owned()))?;
    let project = text_at("/project/name").unwrap_or_else(|| settings.project.clone());
    let run_id = text_at("/name").unwrap_or_else(|| settings.run_id.clone());
    let start_offset = match bucket.get("historyLineCount") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_u64().ok_or_else(|| {
            protocol(format!(
                "historyLineCount is {v}, expected a non-negative integer"
            ))
        })?,
    };
    let summary = bucket
        .get("summaryMetrics")
        .map(read_summary_metrics)
        .unwrap_or_default();
    let last_step = summary.get("_step").and_then(step_of);
    let info = RunInfo {
        url: run_page_url(&settings.base_url, &entity, &project, &run_id),
        display_name: text_at("/displayName").or_else(|| settings.display_name.clone()),
        inserted: upsert
            .get("inserted")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        entity,
        project,
        run_id,
        start_offset,
        last_step,
    };
    Ok((info, summary))
}

/// A summary `_step`: a non-negative integer, or a float holding one.
fn step_of(field: &Field) -> Option<u64> {
    let whole = |x: f64| (x.fract() == 0.0 && (0.0..9.0e15).contains(&x)).then_some(x as u64);
    match field {
        Field::Json(v) => v.as_u64().or_else(|| v.as_f64().and_then(whole)),
        Field::Float(x) => whole(*x),
    }
}

/// The bucket's `summaryMetrics`: a JSON object serialised into a string (an object as such is
/// accepted too), whose values may be the bare `NaN` / `Infinity` / `-Infinity` tokens the
/// reference client writes. Absent, null or unreadable reads as an empty summary.
fn read_summary_metrics(value: &Value) -> BTreeMap<String, Field> {
    let parsed = match value {
        Value::Null => return BTreeMap::new(),
        Value::Object(_) => Some(value.clone()),
        Value::String(text) => parse_lenient(text),
        _ => None,
    };
    match parsed {
        Some(Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| (k, field_from_lenient(v)))
            .collect(),
        _ => {
            tracing::warn!(
                "W&B upsert: summaryMetrics is not a JSON object; steps the run already has may be sent again"
            );
            BTreeMap::new()
        }
    }
}

/// The non-finite tokens and the marker strings that stand in for them while parsing: a NUL
/// character then the marker, which no real summary value holds.
const LENIENT_TOKENS: [(&str, &str, f64); 3] = [
    ("-Infinity", "-inf", f64::NEG_INFINITY),
    ("Infinity", "inf", f64::INFINITY),
    ("NaN", "nan", f64::NAN),
];

/// Parses JSON that may hold bare `NaN`, `Infinity` and `-Infinity` values, which are read as
/// marker strings and turned back into floats by [`field_from_lenient`].
fn parse_lenient(text: &str) -> Option<Value> {
    if let Ok(v) = serde_json::from_str(text) {
        return Some(v);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some((token, marker, _)) =
            LENIENT_TOKENS.iter().find(|(t, _, _)| rest.starts_with(t))
        {
            out.push_str("\"\\u0000");
            out.push_str(marker);
            out.push('"');
            rest = &rest[token.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    serde_json::from_str(&out).ok()
}

/// A top-level summary value: marker strings from [`parse_lenient`] become floats again; inside
/// nested values they become null (a `serde_json::Value` cannot hold them).
fn field_from_lenient(value: Value) -> Field {
    fn marker(s: &str) -> Option<f64> {
        let name = s.strip_prefix('\0')?;
        LENIENT_TOKENS
            .iter()
            .find(|(_, m, _)| *m == name)
            .map(|&(_, _, x)| x)
    }
    fn scrub(v: Value) -> Value {
        match v {
            Value::String(s) if marker(&s).is_some() => Value::Null,
            Value::Array(a) => Value::Array(a.into_iter().map(scrub).collect()),
            Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, scrub(v))).collect()),
            v => v,
        }
    }
    match value {
        Value::String(s) => match marker(&s) {
            Some(x) => Field::Float(x),
            None => Field::Json(Value::String(s)),
        },
        v => Field::Json(scrub(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Defaults;

    fn settings() -> Settings {
        Settings::from_lookup(&Defaults::default(), |k| match k {
            "WANDB_PROJECT" => Some("p".into()),
            "WANDB_RUN_ID" => Some("r1".into()),
            _ => None,
        })
        .unwrap()
    }

    #[test]
    fn upsert_response_fields_are_read_and_missing_ones_fall_back() {
        let text = r#"{"data":{"upsertBucket":{"bucket":{"name":"r1","displayName":"d","historyLineCount":7,
            "project":{"name":"p2","entity":{"name":"me"}}},"inserted":false}}}"#;
        let (info, summary) = parse_upsert_response(text, &settings()).unwrap();
        assert_eq!(
            info,
            RunInfo {
                entity: "me".into(),
                project: "p2".into(),
                run_id: "r1".into(),
                display_name: Some("d".into()),
                url: "https://wandb.ai/me/p2/runs/r1".into(),
                start_offset: 7,
                inserted: false,
                last_step: None,
            }
        );
        assert!(summary.is_empty(), "no summaryMetrics: nothing is skipped");
        let err = parse_upsert_response(r#"{"data":{"upsertBucket":{"bucket":{}}}}"#, &settings());
        assert!(matches!(err, Err(WandbError::Protocol { .. })), "{err:?}");
    }

    fn with_summary(summary: Value) -> (Option<u64>, BTreeMap<String, Field>) {
        let text = json!({"data": {"upsertBucket": {"bucket": {"name": "r1", "historyLineCount": 3,
            "summaryMetrics": summary, "project": {"name": "p", "entity": {"name": "e"}}},
            "inserted": false}}})
        .to_string();
        let (info, summary) = parse_upsert_response(&text, &settings()).unwrap();
        (info.last_step, summary)
    }

    #[test]
    fn summary_metrics_give_the_last_step_and_odd_forms_are_tolerated() {
        let (step, summary) = with_summary(json!(
            r#"{"_step": 1000, "loss": 0.5, "_wandb": {"runtime": 9}}"#
        ));
        assert_eq!(step, Some(1000));
        assert_eq!(summary["loss"], Field::Json(json!(0.5)));
        assert_eq!(summary["_wandb"], Field::Json(json!({"runtime": 9})));
        // Bare non-finite tokens, as the reference client writes them, also inside strings.
        let (step, summary) = with_summary(json!(
            r#"{"_step":12.0,"a":NaN,"b":-Infinity,"c":Infinity,"s":"NaN, \"Infinity\"","n":{"x":NaN}}"#
        ));
        assert_eq!(step, Some(12));
        assert!(matches!(summary["a"], Field::Float(x) if x.is_nan()));
        assert_eq!(summary["b"], Field::Float(f64::NEG_INFINITY));
        assert_eq!(summary["c"], Field::Float(f64::INFINITY));
        assert_eq!(summary["s"], Field::Json(json!("NaN, \"Infinity\"")));
        assert_eq!(summary["n"], Field::Json(json!({"x": null})));
        // An object instead of a string is read the same.
        assert_eq!(with_summary(json!({"_step": 5})).0, Some(5));
        // Absent, null, empty, unparseable, not an object, or a step that is no step: no floor.
        for odd in [
            Value::Null,
            json!("{}"),
            json!("{not json"),
            json!("[1, 2]"),
            json!(17),
            json!(r#"{"_step": -3}"#),
            json!(r#"{"_step": 2.5}"#),
            json!(r#"{"_step": "7"}"#),
        ] {
            assert_eq!(with_summary(odd.clone()).0, None, "{odd}");
        }
    }

    #[test]
    fn the_upsert_asks_for_the_resume_fields() {
        let selection = UPSERT_BUCKET_QUERY.split("bucket {").nth(1).unwrap();
        assert!(selection.contains(" historyLineCount "), "{selection}");
        assert!(selection.contains(" summaryMetrics "), "{selection}");
    }

    #[test]
    fn graphql_errors_in_a_200_are_errors() {
        let err = parse_upsert_response(
            r#"{"errors":[{"message":"permission denied"}],"data":null}"#,
            &settings(),
        );
        match err {
            Err(WandbError::GraphQl(m)) => assert_eq!(m, "permission denied"),
            other => panic!("{other:?}"),
        }
    }
}
