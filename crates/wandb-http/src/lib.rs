//! A small Weights & Biases client that speaks W&B's HTTP protocol directly: create or resume a
//! run, stream history rows and the summary, send heartbeats, and mark the run finished or failed.
//! It needs neither Python nor the W&B SDK, and it never stops or slows the program that uses it.
//!
//! # Overview
//! - [`Settings`]: API key, base URL, entity, project, run id, display name, group, tags, notes,
//!   job type, sweep id, resume policy and [`Mode`], resolved from the caller's [`Defaults`] with
//!   every `WANDB_*` environment variable winning ([`Settings::from_env`], or
//!   [`Settings::from_lookup`] with any variable source). [`Settings::is_online`] decides whether
//!   to use W&B at all.
//! - [`Run`]: [`Run::start`] upserts the run (GraphQL `UpsertBucket`, flat config) on a background
//!   thread and waits only briefly for it; [`Run::log`] queues a [`Row`] without blocking;
//!   [`Run::finish`] flushes and sends the exit code within a deadline, returning a
//!   [`FinishReport`].
//! - [`ClientOptions`]: retry, cadence, timeout and size limits.
//! - [`WandbError`]: configuration and start-up failures; later failures are only logged.
//!
//! # Protocol
//! - `POST {base}/graphql` with `UpsertBucket` ([`UPSERT_BUCKET_QUERY`]); `config` is a string
//!   holding `{"key": {"value": v}, ...}`. The answer's bucket is read for entity, project, run
//!   name, `historyLineCount` and `summaryMetrics` (see "Resuming"); missing fields are tolerated.
//! - `POST {base}/files/{entity}/{project}/{run_id}/file_stream` with
//!   `{"files": {"wandb-history.jsonl": {"offset": line, "content": [rows]},
//!   "wandb-summary.json": {"offset": 0, "content": [summary]}}}`; `{}` as a heartbeat after
//!   [`ClientOptions::heartbeat_interval`] without traffic; `{"complete": true, "exitcode": c}`
//!   at finish. Bodies stay under [`ClientOptions::max_request_bytes`].
//! - Auth is HTTP Basic `api:<key>`, sent only to the base URL's origin (scheme, host, port):
//!   redirects elsewhere are not followed, names the server returns are percent-encoded path
//!   segments, and a base URL carrying credentials (`https://name:secret@host`) is refused by
//!   [`Settings::validate`] with an error that does not show them.
//!
//! # Step semantics
//! Rows logged with the same step merge; a larger step closes the open row (it is then sent with
//! the next batch); a lower step is dropped with a warning. Each row gets `_step`, `_runtime`
//! (seconds since [`Run::start`] in this process) and `_timestamp` (Unix seconds). The summary
//! holds the latest value of every key of the closed rows (as in the reference client, which
//! updates it when a row is committed) and is sent with the request that delivers the last
//! pending row, so the server's summary `_step` is never ahead of its history. Non-finite
//! floats: see [`Row`] — values set with [`Row::set_f64`] are sent as `NaN` / `Infinity` /
//! `-Infinity`, like the reference client.
//!
//! # Resuming
//! When the run id already exists (a killed run started again, with any [`Resume`] policy but
//! `Never`), the upsert answer says where its history ends: `historyLineCount`, the next free
//! history line, is where this session's lines start, so earlier lines are never overwritten;
//! and the `_step` of `summaryMetrics` (a JSON object in a string, bare `NaN`/`Infinity`
//! accepted) is the step of its last history row ([`RunInfo::last_step`]). A trainer resumed
//! from a checkpoint older than what the killed process had streamed replays steps the server
//! already has: every history row whose step is at or below that last step is not sent — also
//! rows logged before the upsert answered — so the history never goes backwards or repeats a
//! step. Those rows still update the summary (whose `_step` never goes back), they are counted
//! in [`FinishReport::rows_already_on_server`] and not in `rows`, and keys of the server's
//! summary that this session does not log are kept. When the answer has no usable
//! `summaryMetrics` nothing is skipped (and a malformed one is warned about). `_runtime` starts
//! again from 0 in the resumed session.
//!
//! # Failure handling
//! Connection errors, timeouts, 408, 429 and 5xx are retryable. Every wait between two attempts
//! is the exponential backoff (from [`ClientOptions::min_retry_wait`], doubling with each
//! consecutive failure, with jitter, capped at [`ClientOptions::max_retry_wait`]) or the
//! server's `Retry-After` when that is longer — never less than `min_retry_wait` (default 2 s),
//! so `Retry-After: 0` cannot make a storm. A round of retries of one request ends after
//! [`ClientOptions::max_attempts`] or [`ClientOptions::give_up_after`]; the rows then stay queued
//! and the next flush tries again, the backoff continuing to grow up to its cap, until the server
//! recovers or the finish deadline passes (then [`FinishReport::failure`] names the last
//! failure). Only 400/401/403/404 and other non-retryable answers turn streaming off for the run:
//! the client warns once through `tracing` and drops further rows quietly, the caller's local
//! metrics file being the record of truth. Rows logged while a request is retried keep being
//! accepted.
//!
//! Memory while the server is unreachable is bounded: closed rows wait in a backlog of at most
//! [`ClientOptions::max_pending_rows`] rows (default 100 000) and
//! [`ClientOptions::max_pending_bytes`] encoded bytes (default 64 MiB), behind a queue of
//! [`ClientOptions::queue_capacity`] log calls. A row closed while the backlog is full is dropped
//! with a warning (counted in [`FinishReport::rows_lost`]; the summary still gets its values),
//! and a log call finding the queue full is dropped (counted in
//! [`FinishReport::dropped_not_queued`]).
//!
//! # Secrets
//! Nothing the client prints or returns — [`WandbError`] (Display and Debug),
//! [`FinishReport::failure`], `tracing` events, [`Settings`]'s Debug — contains the API key: the
//! key, its Basic-auth form (`base64("api:" + key)`) and any `Authorization: …` value in a
//! server's answer or a network error are replaced by `<redacted>`, and a base URL is shown
//! without its userinfo.
//!
//! # Example
//! ```no_run
//! use serde_json::{Map, json};
//! use wandb_http::{Defaults, Row, Run, Settings};
//!
//! # fn main() -> Result<(), wandb_http::WandbError> {
//! let defaults = Defaults { project: Some("emergent_analogy".into()), ..Defaults::default() };
//! let settings = Settings::from_env(&defaults)?;
//! if settings.is_online() {
//!     let mut config = Map::new();
//!     config.insert("lr".into(), json!(1e-4));
//!     let run = Run::start(settings, config)?;
//!     if let Some(url) = run.url() {
//!         println!("W&B run: {url}");
//!     }
//!     let mut row = Row::new();
//!     row.set_f64("train/CE_last", 0.7).set("epoch", 1);
//!     run.log(50, row);
//!     let report = run.finish(0, std::time::Duration::from_secs(30));
//!     println!("{} of {} rows delivered", report.rows_delivered, report.rows);
//! }
//! # Ok(())
//! # }
//! ```

mod error;
mod history;
mod options;
mod redact;
mod rng;
mod row;
mod run;
mod settings;
mod transport;

pub use error::WandbError;
pub use options::ClientOptions;
pub use row::{Row, encode_config};
pub use run::{FinishReport, Run, RunInfo, UPSERT_BUCKET_QUERY};
pub use settings::{
    DEFAULT_BASE_URL, DEFAULT_PROJECT, Defaults, Mode, Resume, Settings, run_page_url,
};
