//! The crate's error type.
//!
//! No variant ever holds the API key: texts that come from the server or the network pass through
//! the client's redactor first (the key, its Basic-auth base64 form and any `Authorization` value
//! read `<redacted>`), and a base URL is shown without its userinfo.

use std::time::Duration;

/// Everything that can go wrong while configuring or starting a run.
///
/// Streaming failures after [`crate::Run::start`] returned are never errors: they are logged with
/// `tracing` and summarised in [`crate::FinishReport`], because a W&B problem must never stop
/// training.
#[derive(Debug, thiserror::Error)]
pub enum WandbError {
    /// An environment variable or caller setting has a value the client cannot use.
    #[error("setting {key} = {value:?} is invalid: expected {expected}")]
    InvalidSetting {
        /// The variable or field name, e.g. `WANDB_MODE`.
        key: String,
        /// The offending value.
        value: String,
        /// What would have been accepted.
        expected: String,
    },
    /// `Run::start` was called without an API key.
    #[error("no W&B API key: set WANDB_API_KEY")]
    MissingApiKey,
    /// `Run::start` was called while the mode is not online.
    #[error("W&B mode is {mode}, not online")]
    NotOnline {
        /// The configured mode.
        mode: String,
    },
    /// The HTTP client could not be built (TLS backend initialisation).
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// The background thread could not be spawned.
    #[error("cannot spawn the W&B thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The server answered with a status that is not retried (400, 401, 403, 404, …).
    #[error("{endpoint}: HTTP {status}: {body}")]
    Status {
        /// `graphql` or `file_stream`.
        endpoint: &'static str,
        /// The HTTP status code.
        status: u16,
        /// The start of the response body, for the error message.
        body: String,
    },
    /// A retryable failure persisted until the retry budget ran out.
    #[error("{endpoint}: gave up after {attempts} attempts over {elapsed:?}: {last}")]
    GaveUp {
        /// `graphql` or `file_stream`.
        endpoint: &'static str,
        /// How many requests were made.
        attempts: u32,
        /// Time from the first attempt to giving up.
        elapsed: Duration,
        /// The last failure seen.
        last: String,
    },
    /// The finish deadline passed before the request could complete.
    #[error("{endpoint}: deadline reached")]
    Deadline {
        /// `graphql` or `file_stream`.
        endpoint: &'static str,
    },
    /// The server answered 200 but the body is not what the protocol promises.
    #[error("{endpoint}: unexpected response: {detail}")]
    Protocol {
        /// `graphql` or `file_stream`.
        endpoint: &'static str,
        /// What was missing or wrong.
        detail: String,
    },
    /// The GraphQL response carried a non-empty `errors` list.
    #[error("graphql errors: {0}")]
    GraphQl(String),
    /// `WANDB_RESUME=never` but the run already exists, or `must` but it did not.
    #[error("resume policy {policy} violated for run {run_id}: {detail}")]
    Resume {
        /// The policy in force.
        policy: String,
        /// The run id.
        run_id: String,
        /// What the server reported.
        detail: String,
    },
}

impl WandbError {
    /// The same error with every secret [`crate::redact::Redactor`] knows replaced in its texts.
    pub(crate) fn redacted(self, r: &crate::redact::Redactor) -> WandbError {
        match self {
            WandbError::InvalidSetting {
                key,
                value,
                expected,
            } => WandbError::InvalidSetting {
                key,
                value: r.redact(&value),
                expected: r.redact(&expected),
            },
            WandbError::NotOnline { mode } => WandbError::NotOnline {
                mode: r.redact(&mode),
            },
            WandbError::Client(detail) => WandbError::Client(r.redact(&detail)),
            WandbError::Status {
                endpoint,
                status,
                body,
            } => WandbError::Status {
                endpoint,
                status,
                body: r.redact(&body),
            },
            WandbError::GaveUp {
                endpoint,
                attempts,
                elapsed,
                last,
            } => WandbError::GaveUp {
                endpoint,
                attempts,
                elapsed,
                last: r.redact(&last),
            },
            WandbError::Protocol { endpoint, detail } => WandbError::Protocol {
                endpoint,
                detail: r.redact(&detail),
            },
            WandbError::GraphQl(messages) => WandbError::GraphQl(r.redact(&messages)),
            WandbError::Resume {
                policy,
                run_id,
                detail,
            } => WandbError::Resume {
                policy,
                run_id: r.redact(&run_id),
                detail: r.redact(&detail),
            },
            // No text from outside: the I/O error is the OS's, the rest has no strings.
            e
            @ (WandbError::MissingApiKey | WandbError::Spawn(_) | WandbError::Deadline { .. }) => e,
        }
    }
}
