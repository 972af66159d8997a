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
//!   holding `{"key": {"value": v}, ...}`. On resume the server's `historyLineCount` is where this
//!   session's history lines start, so earlier lines are never overwritten.
//! - `POST {base}/files/{entity}/{project}/{run_id}/file_stream` with
//!   `{"files": {"wandb-history.jsonl": {"offset": line, "content": [rows]},
//!   "wandb-summary.json": {"offset": 0, "content": [summary]}}}`; `{}` as a heartbeat after
//!   [`ClientOptions::heartbeat_interval`] without traffic; `{"complete": true, "exitcode": c}`
//!   at finish. Bodies stay under [`ClientOptions::max_request_bytes`].
//! - Auth is HTTP Basic `api:<key>`; redirects are followed only to the base URL's origin.
//!
//! # Step semantics
//! Rows logged with the same step merge; a larger step closes the open row (it is then sent with
//! the next batch); a lower step is dropped with a warning. Each row gets `_step`, `_runtime`
//! (seconds since [`Run::start`] in this process) and `_timestamp` (Unix seconds). The summary
//! holds the latest value of every key. Non-finite floats: see [`Row`] — values set with
//! [`Row::set_f64`] are sent as `NaN` / `Infinity` / `-Infinity`, like the reference client.
//!
//! # Failure handling
//! Connection errors, timeouts, 408, 429 and 5xx are retried with exponential backoff and jitter
//! (or the server's `Retry-After`), bounded by [`ClientOptions::max_attempts`] and
//! [`ClientOptions::give_up_after`]; 400/401/403/404 stop at once. After giving up the client
//! warns once through `tracing` and drops further rows quietly: the caller's local metrics file
//! is the record of truth. Rows logged while a request is retried keep being accepted.
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
