//! Timing and size knobs of the client. The defaults suit a real server; tests shrink them to
//! milliseconds.

use std::time::Duration;

/// Retry, cadence, timeout and size limits of a [`crate::Run`].
#[derive(Debug, Clone, PartialEq)]
pub struct ClientOptions {
    /// How long [`crate::Run::start`] waits for the upsert before returning without a URL
    /// (default 3 s). The upsert keeps going in the background either way.
    pub start_wait: Duration,
    /// First backoff wait after a retryable failure (default 2 s), doubling with every further
    /// consecutive failure. It is also the floor of *every* wait between two attempts, whatever
    /// a `Retry-After` says (`0` included), so a throttling server sees at most one request per
    /// `min_retry_wait`. Tests shrink it to milliseconds; a zero is treated as 1 ms.
    pub min_retry_wait: Duration,
    /// Cap on one backoff wait, also on a `Retry-After` (default 60 s).
    pub max_retry_wait: Duration,
    /// End a round of retries of one request once it has lasted this long (default 5 min).
    /// After a round of retryable failures the rows stay queued and the next flush tries again,
    /// the backoff continuing from where it was; only the finish deadline ends the retrying.
    pub give_up_after: Duration,
    /// End a round of retries of one request after this many attempts (default 30); see
    /// [`ClientOptions::give_up_after`].
    pub max_attempts: u32,
    /// Timeout of one HTTP request, connection included (default 30 s).
    pub request_timeout: Duration,
    /// Timeout for establishing a connection (default 10 s).
    pub connect_timeout: Duration,
    /// Flush cadence during the first [`ClientOptions::fast_flush_period`] (default 2 s).
    pub fast_flush_interval: Duration,
    /// How long after start the fast cadence applies (default 60 s).
    pub fast_flush_period: Duration,
    /// Flush cadence afterwards (default 15 s).
    pub flush_interval: Duration,
    /// Send an empty heartbeat after this long without a request (default 30 s).
    pub heartbeat_interval: Duration,
    /// Capacity of the queue between [`crate::Run::log`] and the background thread (default 4096);
    /// a log call finding it full is dropped and counted.
    pub queue_capacity: usize,
    /// Closed rows held while the server is unreachable (default 100 000). A row closed while
    /// the backlog is full is dropped with a warning and counted in
    /// [`crate::FinishReport::rows_lost`]; the summary still gets its values.
    pub max_pending_rows: usize,
    /// Bytes of encoded rows held while the server is unreachable (default 64 MiB); beyond it
    /// rows are dropped like beyond [`ClientOptions::max_pending_rows`].
    pub max_pending_bytes: usize,
    /// Upper bound on one request body in bytes (default 8 MiB, under the server's ~10 MiB).
    pub max_request_bytes: usize,
    /// Honour `HTTP(S)_PROXY` / `NO_PROXY` from the environment (default true); tests against a
    /// loopback server turn it off.
    pub use_env_proxy: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            start_wait: Duration::from_secs(3),
            min_retry_wait: Duration::from_secs(2),
            max_retry_wait: Duration::from_secs(60),
            give_up_after: Duration::from_secs(300),
            max_attempts: 30,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            fast_flush_interval: Duration::from_secs(2),
            fast_flush_period: Duration::from_secs(60),
            flush_interval: Duration::from_secs(15),
            heartbeat_interval: Duration::from_secs(30),
            queue_capacity: 4096,
            max_pending_rows: 100_000,
            max_pending_bytes: 64 << 20,
            max_request_bytes: 8 << 20,
            use_env_proxy: true,
        }
    }
}
