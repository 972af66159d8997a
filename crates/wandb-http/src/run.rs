//! The run handle and its background thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Url;
use serde_json::{Map, Value, json};

use crate::error::WandbError;
use crate::history::{History, Logged, Stamp};
use crate::options::ClientOptions;
use crate::rng::SmallRng;
use crate::row::{Row, encode_config};
use crate::settings::{Mode, Resume, Settings, run_page_url};
use crate::transport::{Attempt, Endpoint, Transport, backoff};

/// The GraphQL mutation that creates or resumes a run.
pub const UPSERT_BUCKET_QUERY: &str = "mutation UpsertBucket($id: String, $name: String, $project: String, $entity: String, \
$groupName: String, $description: String, $displayName: String, $notes: String, $commit: String, \
$config: JSONString, $host: String, $debug: Boolean, $program: String, $repo: String, $jobType: String, \
$state: String, $sweep: String, $tags: [String!], $summaryMetrics: JSONString) {
  upsertBucket(input: {id: $id, name: $name, groupName: $groupName, modelName: $project, entityName: $entity, \
description: $description, displayName: $displayName, notes: $notes, config: $config, commit: $commit, \
host: $host, debug: $debug, jobProgram: $program, jobRepo: $repo, jobType: $jobType, state: $state, \
sweep: $sweep, tags: $tags, summaryMetrics: $summaryMetrics}) {
    bucket { id name displayName description config sweepName historyLineCount project { id name entity { id name } } }
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
    /// Why streaming stopped early, if it did.
    pub failure: Option<String>,
}

/// Counters shared between the handle and the thread, readable even if the thread is stuck.
#[derive(Debug, Default)]
struct Shared {
    log_calls: AtomicU64,
    dropped_not_queued: AtomicU64,
    dropped_stale_step: AtomicU64,
    logs_processed: AtomicU64,
    rows: AtomicU64,
    rows_delivered: AtomicU64,
    summary_delivered: AtomicBool,
    completed: AtomicBool,
    info: OnceLock<RunInfo>,
    failure: Mutex<Option<String>>,
    finish: Mutex<Option<FinishRequest>>,
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
            logs_unprocessed: log_calls.saturating_sub(dropped_not_queued + processed),
            rows,
            rows_delivered,
            rows_lost: rows.saturating_sub(rows_delivered),
            summary_delivered: self.summary_delivered.load(Ordering::SeqCst),
            completed: self.completed.load(Ordering::SeqCst),
            timed_out,
            failure: self.failure.lock().ok().and_then(|f| f.clone()),
        }
    }

    fn fail(&self, error: &WandbError) {
        tracing::warn!(%error, "W&B streaming stopped; further metrics go to the local files only");
        if let Ok(mut f) = self.failure.lock() {
            f.get_or_insert_with(|| error.to_string());
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
    /// retrying then, the run is returned anyway (with `url()` still `None`), rows are buffered,
    /// and they are sent once the upsert succeeds.
    ///
    /// `config` is sent flat: each top-level key becomes `{"value": v}`.
    ///
    /// # Errors
    /// Settings that are invalid, not online, or lack a key; and any upsert failure that is
    /// final within `start_wait` (401/403/404, GraphQL errors, a resume policy violation).
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
        let (start_tx, start_rx) = sync_channel(1);
        let (done_tx, done_rx) = sync_channel(1);
        let shared = Arc::new(Shared::default());
        let started = Instant::now();
        let run_id = settings.run_id.clone();
        let start_wait = options.start_wait;
        let worker = Worker {
            rx,
            connected: true,
            shared: Arc::clone(&shared),
            history: History::new(options.max_pending_rows, options.max_request_bytes),
            rng: SmallRng::from_entropy(),
            last_request: started,
            started,
            finishing: None,
            stale_seen: 0,
            transport,
            settings,
            options,
        };
        thread::Builder::new()
            .name("wandb-http".to_owned())
            .spawn(move || worker.run(config, start_tx, done_tx))
            .map_err(WandbError::Spawn)?;
        match start_rx.recv_timeout(start_wait) {
            Ok(Ok(info)) => tracing::info!(url = %info.url, "W&B run started"),
            Ok(Err(e)) => return Err(e),
            Err(RecvTimeoutError::Timeout) => {
                tracing::warn!(
                    ?start_wait,
                    "W&B run creation still pending; continuing in the background"
                );
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(WandbError::Protocol {
                    endpoint: "graphql",
                    detail: "the background thread ended before the upsert finished".to_owned(),
                });
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
    transport: Transport,
    settings: Settings,
    options: ClientOptions,
}

impl Worker {
    fn run(
        mut self,
        config: Map<String, Value>,
        start_tx: SyncSender<Result<RunInfo, WandbError>>,
        done_tx: SyncSender<FinishReport>,
    ) {
        let stream_url = match self.upsert(&config) {
            Ok(info) => {
                self.history.start_at(info.start_offset);
                let url = self.transport.url(&[
                    "files",
                    &info.entity,
                    &info.project,
                    &info.run_id,
                    "file_stream",
                ]);
                let _ = self.shared.info.set(info.clone());
                let _ = start_tx.try_send(Ok(info));
                url
            }
            Err(e) => {
                if !matches!(e, WandbError::Deadline { .. }) {
                    self.shared.fail(&e);
                }
                let _ = start_tx.try_send(Err(e));
                self.count_unsent();
                return;
            }
        };
        drop(start_tx);
        let result = self
            .stream(&stream_url)
            .and_then(|()| self.complete(&stream_url));
        if let Err(e) = &result {
            if !matches!(e, WandbError::Deadline { .. }) {
                self.shared.fail(e);
            }
        }
        self.count_unsent();
        let _ = done_tx.try_send(self.shared.report(false));
    }

    /// Makes `rows` count every row formed, including an open one the thread never closed.
    fn count_unsent(&mut self) {
        self.history.close_open();
        self.shared
            .rows
            .store(self.history.rows_closed, Ordering::SeqCst);
    }

    fn upsert(&mut self, config: &Map<String, Value>) -> Result<RunInfo, WandbError> {
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
        let info = parse_upsert_response(&text, &self.settings)?;
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
            _ => Ok(info),
        }
    }

    /// Streams until the handle is finished or dropped, then flushes everything.
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
                if self.history.has_unsent() {
                    self.flush_once(url)?;
                } else {
                    self.post_with_retry("file_stream", url, "{}")?;
                }
            }
        }
        self.history.close_open();
        self.shared
            .rows
            .store(self.history.rows_closed, Ordering::SeqCst);
        // Bounded: every successful round removes at least one row or the summary change.
        while self.history.has_unsent() {
            self.flush_once(url)?;
        }
        Ok(())
    }

    fn complete(&mut self, url: &Url) -> Result<(), WandbError> {
        let exit_code = self.finishing.map(|f| f.exit_code).unwrap_or(1);
        let body = json!({"complete": true, "exitcode": exit_code}).to_string();
        self.post_with_retry("file_stream", url, &body)?;
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
    /// otherwise a heartbeat.
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
        self.last_request + interval
    }

    fn on_log(&mut self, msg: LogMsg) {
        self.shared.logs_processed.fetch_add(1, Ordering::SeqCst);
        match self.history.log(msg.step, msg.row, msg.stamp) {
            Logged::Accepted => {}
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
        self.shared
            .rows
            .store(self.history.rows_closed, Ordering::SeqCst);
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

    /// One request with retries, bounded by `max_attempts`, `give_up_after` and the finish
    /// deadline. Rows logged meanwhile keep being accepted.
    fn post_with_retry(
        &mut self,
        endpoint: Endpoint,
        url: &Url,
        body: &str,
    ) -> Result<String, WandbError> {
        let first = Instant::now();
        let mut attempts = 0u32;
        loop {
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
                Attempt::Success(text) => return Ok(text),
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
                    let elapsed = first.elapsed();
                    if attempts >= self.options.max_attempts.max(1)
                        || elapsed >= self.options.give_up_after
                    {
                        return Err(WandbError::GaveUp {
                            endpoint,
                            attempts,
                            elapsed,
                            last: reason,
                        });
                    }
                    let wait = match retry_after {
                        Some(w) => w.min(self.options.max_retry_wait),
                        None => backoff(
                            attempts - 1,
                            self.options.min_retry_wait,
                            self.options.max_retry_wait,
                            &mut self.rng,
                        ),
                    };
                    tracing::debug!(endpoint, attempts, ?wait, %reason, "W&B request failed; retrying");
                    self.wait(wait);
                }
            }
        }
    }

    /// Sleeps for `wait` (cut at the finish deadline) while still accepting queued rows.
    fn wait(&mut self, wait: Duration) {
        let mut until = Instant::now() + wait;
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

/// Reads the upsert answer, falling back to the requested names where the server omits them.
fn parse_upsert_response(text: &str, settings: &Settings) -> Result<RunInfo, WandbError> {
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
    Ok(RunInfo {
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
    })
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
        let info = parse_upsert_response(text, &settings()).unwrap();
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
            }
        );
        let err = parse_upsert_response(r#"{"data":{"upsertBucket":{"bucket":{}}}}"#, &settings());
        assert!(matches!(err, Err(WandbError::Protocol { .. })), "{err:?}");
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
