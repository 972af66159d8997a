//! A fake Weights & Biases server for tests: a real HTTP/1.1 server bound to `127.0.0.1:0`,
//! serving each connection on its own thread, that speaks the two endpoints a metrics client
//! uses and records what it was sent. Dev-only: not published, used by the `wandb-http` tests and
//! the trainer's W&B tests.
//!
//! # Overview
//! - [`FakeServer`]: [`FakeServer::start`] binds a loopback port and serves in the background
//!   until dropped; [`FakeServer::url`] is the `WANDB_BASE_URL` to give the client;
//!   [`FakeServer::record`] locks what was recorded; [`FakeServer::update`] changes the
//!   [`Behaviour`] while the server runs.
//! - [`Behaviour`]: the API key it accepts, the entity it reports, the state of a run it has not
//!   seen (`historyLineCount`, `summaryMetrics`, `inserted`), and queued [`Fault`]s per endpoint.
//! - [`Record`]: every request ([`Seen`]), the upsert variables, history lines by offset (and how
//!   often each offset was written), the summary, heartbeats and `complete`/`exitcode`; and the
//!   same per run in [`Record::runs`] ([`RunRecord`]), which is what the upsert answers from.
//! - [`dead_url`]: a base URL on which nothing listens (a server that is down).
//! - [`parse_line`], [`base64()`]: helpers to read history lines and build auth headers.
//!
//! # Protocol, as the real server answers it
//! - `POST /graphql` with the `UpsertBucket` mutation: answered with a bucket carrying the run id
//!   (`name`), display name, config, sweep, `historyLineCount`, `summaryMetrics` and the project
//!   and entity (the request's entity, or [`Behaviour::default_entity`] when it is null). Like a
//!   GraphQL server, `historyLineCount` and `summaryMetrics` are answered only when the query's
//!   `bucket { … }` selection asks for them (a query without a `bucket` selection gets both).
//! - The server keeps each run's state (keyed by entity, project and run id) for as long as it
//!   runs, so two clients one after the other act like a killed process and its resumption: a run
//!   upserted before is answered `inserted: false`, `historyLineCount` = its next free history
//!   line and `summaryMetrics` = the last summary it was sent (a JSON object in a string, `_step`
//!   being the step of its last history row), so a resumed run continues after its own lines.
//!   A run not seen before gets [`Behaviour::history_line_count`],
//!   [`Behaviour::summary_metrics`] and [`Behaviour::inserted`] (a run that existed before the
//!   server started).
//! - `POST /files/{entity}/{project}/{run}/file_stream`: must name the last upserted run (else
//!   404 and the path is kept in [`Record::wrong_paths`]); `wandb-history.jsonl` lines are stored
//!   at `offset + i` (a re-sent offset overwrites), `wandb-summary.json` replaces the summary,
//!   `{}` counts as a heartbeat, `complete`/`exitcode` are recorded.
//! - Every request needs `Authorization: Basic base64("api:" + key)`, else 401.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The API key [`Behaviour::default`] accepts.
pub const TEST_API_KEY: &str = "test-key-123";

/// Request bodies larger than this are refused with 413 (the real server's limit is about
/// 10 MiB; a client must stay under it).
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// An injected answer for one request, consumed in order from [`Behaviour::graphql_faults`] or
/// [`Behaviour::stream_faults`].
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer with this status and, when given, this `Retry-After` value (seconds).
    Status(u16, Option<&'static str>),
    /// Answer with this status and this body (e.g. an error page that quotes secrets).
    Body(u16, String),
    /// Answer with this status and a body echoing the request line and every request header,
    /// `Authorization` included, as some proxies and debugging servers do.
    EchoHeaders(u16),
    /// Read the request, then hold the connection open this long without answering.
    Hang(Duration),
    /// Answer 307 with this `Location`.
    Redirect(String),
    /// Read the request, then close the connection without answering.
    Close,
}

/// How the server behaves; change it while running with [`FakeServer::update`].
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// The accepted API key (Basic auth user `api`).
    pub api_key: String,
    /// Entity reported when the client sends a null entity.
    pub default_entity: String,
    /// `historyLineCount` answered for a run id this server has not seen.
    pub history_line_count: u64,
    /// `summaryMetrics` (a JSON object serialised into a string, e.g. `{"_step": 1000}`)
    /// answered for a run id this server has not seen; `None` answers null.
    pub summary_metrics: Option<String>,
    /// `inserted` answered for a run id this server has not seen.
    pub inserted: bool,
    /// Faults for the next `/graphql` requests.
    pub graphql_faults: VecDeque<Fault>,
    /// Faults for the next `file_stream` requests.
    pub stream_faults: VecDeque<Fault>,
    /// When set, every request hangs this long unanswered (a server that accepts and stalls).
    pub hang_all: Option<Duration>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            api_key: TEST_API_KEY.to_owned(),
            default_entity: "fake-entity".to_owned(),
            history_line_count: 0,
            summary_metrics: None,
            inserted: true,
            graphql_faults: VecDeque::new(),
            stream_faults: VecDeque::new(),
            hang_all: None,
        }
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Request path, e.g. `/graphql`.
    pub path: String,
    /// Status answered; 0 when the request was left unanswered (hang, close).
    pub status: u16,
    /// When the request was read.
    pub at: Instant,
    /// Body length in bytes.
    pub body_len: usize,
    /// Whether the Basic auth header matched the key.
    pub auth_ok: bool,
}

/// What the server keeps for one run across upserts and clients.
#[derive(Debug, Default, Clone)]
pub struct RunRecord {
    /// Successful upserts of this run.
    pub upserts: usize,
    /// History line text by offset.
    pub history: BTreeMap<u64, String>,
    /// How many times each offset was written.
    pub writes: BTreeMap<u64, usize>,
    /// The latest summary text.
    pub summary: Option<String>,
    /// The last `(complete, exitcode)`; an absent or non-integer exit code reads `i64::MIN`.
    pub complete: Option<(bool, i64)>,
}

impl RunRecord {
    /// The first history offset after every recorded line (0 when none).
    pub fn next_offset(&self) -> u64 {
        self.history.keys().next_back().map_or(0, |&k| k + 1)
    }
}

/// Everything the server recorded. The top-level history, summary and `complete` fields hold
/// what arrived for any run (tests with a single run read them); [`Record::runs`] holds the
/// same per run.
#[derive(Debug, Default)]
pub struct Record {
    /// Every request, in arrival order.
    pub requests: Vec<Seen>,
    /// The `variables` of every successful upsert, in order.
    pub upserts: Vec<Value>,
    /// History line text by offset.
    pub history: BTreeMap<u64, String>,
    /// How many times each offset was written.
    pub writes: BTreeMap<u64, usize>,
    /// The latest summary text.
    pub summary: Option<String>,
    /// Empty-body requests to `file_stream`.
    pub heartbeats: usize,
    /// The last `(complete, exitcode)`; an absent or non-integer exit code reads `i64::MIN`.
    pub complete: Option<(bool, i64)>,
    /// `file_stream` paths that did not name the last upserted run.
    pub wrong_paths: Vec<String>,
    /// Per-run state, keyed `entity/project/run_id`.
    pub runs: BTreeMap<String, RunRecord>,
}

impl Record {
    /// The first history offset after every recorded line (0 when none).
    pub fn next_offset(&self) -> u64 {
        self.history.keys().next_back().map_or(0, |&k| k + 1)
    }

    /// History lines in offset order, parsed with [`parse_line`].
    pub fn history_values(&self) -> Vec<Value> {
        self.history.values().map(|l| parse_line(l)).collect()
    }

    /// The summary parsed with [`parse_line`], if one arrived.
    pub fn summary_value(&self) -> Option<Value> {
        self.summary.as_deref().map(parse_line)
    }

    /// The state of run `entity/project/run_id`, if it was upserted.
    pub fn run(&self, entity: &str, project: &str, run_id: &str) -> Option<&RunRecord> {
        self.runs.get(&run_key(entity, project, run_id))
    }
}

fn run_key(entity: &str, project: &str, run_id: &str) -> String {
    format!("{entity}/{project}/{run_id}")
}

/// A running fake server; it stops accepting connections when dropped.
pub struct FakeServer {
    addr: SocketAddr,
    ctx: Arc<Ctx>,
}

impl std::fmt::Debug for FakeServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeServer")
            .field("addr", &self.addr)
            .finish()
    }
}

struct Ctx {
    behaviour: Mutex<Behaviour>,
    record: Mutex<Record>,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not hide what the server recorded.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FakeServer {
    /// Binds `127.0.0.1:0` and serves in background threads.
    ///
    /// # Errors
    /// The bind error when no loopback port is available.
    pub fn start(behaviour: Behaviour) -> std::io::Result<FakeServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let ctx = Arc::new(Ctx {
            behaviour: Mutex::new(behaviour),
            record: Mutex::new(Record::default()),
            stop: AtomicBool::new(false),
        });
        let served = Arc::clone(&ctx);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if served.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let ctx = Arc::clone(&served);
                thread::spawn(move || {
                    // A client that goes away mid-request is not the server's failure.
                    let _ = serve(stream, &ctx);
                });
            }
        });
        Ok(FakeServer { addr, ctx })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Locks and returns what the server recorded so far.
    pub fn record(&self) -> MutexGuard<'_, Record> {
        lock(&self.ctx.record)
    }

    /// Changes the behaviour for the requests that follow.
    pub fn update(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut lock(&self.ctx.behaviour));
    }

    /// Waits until `done(record)` holds or `timeout` passes; returns whether it held.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&Record) -> bool) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if done(&self.record()) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.ctx.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag; failure means it is gone already.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// A base URL on a loopback port where nothing listens: connections are refused, like a server
/// that is down.
///
/// # Errors
/// The bind error when no loopback port is available.
pub fn dead_url() -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    drop(listener);
    Ok(format!("http://{addr}"))
}

/// The `Authorization` header value for `key`.
pub fn basic_auth(key: &str) -> String {
    format!("Basic {}", base64(format!("api:{key}").as_bytes()))
}

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

fn read_request(stream: &TcpStream) -> std::io::Result<Request> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if len > MAX_BODY_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("body of {len} bytes"),
        ));
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let mut parts = request_line.split_whitespace();
    Ok(Request {
        method: parts.next().unwrap_or("").to_owned(),
        path: parts.next().unwrap_or("").to_owned(),
        headers,
        body,
    })
}

fn serve(stream: TcpStream, ctx: &Ctx) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let req = match read_request(&stream) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return respond(stream, 413, None, r#"{"error":"too large"}"#);
        }
        Err(e) => return Err(e),
    };
    let (expected_auth, fault) = {
        let mut b = lock(&ctx.behaviour);
        let fault = match b.hang_all {
            Some(d) => Some(Fault::Hang(d)),
            None if req.path == "/graphql" => b.graphql_faults.pop_front(),
            None => b.stream_faults.pop_front(),
        };
        (basic_auth(&b.api_key), fault)
    };
    let auth_ok = req.headers.get("authorization") == Some(&expected_auth);
    let note = |status: u16| {
        lock(&ctx.record).requests.push(Seen {
            path: req.path.clone(),
            status,
            at: Instant::now(),
            body_len: req.body.len(),
            auth_ok,
        });
    };
    match fault {
        Some(Fault::Hang(d)) => {
            note(0);
            thread::sleep(d);
            return Ok(());
        }
        Some(Fault::Close) => {
            note(0);
            return Ok(());
        }
        Some(Fault::Status(status, retry_after)) => {
            note(status);
            return respond(stream, status, retry_after, r#"{"error":"injected"}"#);
        }
        Some(Fault::Body(status, body)) => {
            note(status);
            return respond(stream, status, None, &body);
        }
        Some(Fault::EchoHeaders(status)) => {
            note(status);
            let mut echo = format!("{} {}\n", req.method, req.path);
            let mut headers: Vec<_> = req.headers.iter().collect();
            headers.sort();
            for (k, v) in headers {
                echo.push_str(&format!("{k}: {v}\n"));
            }
            return respond(stream, status, None, &echo);
        }
        Some(Fault::Redirect(location)) => {
            note(307);
            let head = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let mut stream = stream;
            stream.write_all(head.as_bytes())?;
            return stream.flush();
        }
        None => {}
    }
    if !auth_ok {
        note(401);
        return respond(
            stream,
            401,
            None,
            r#"{"errors":[{"message":"unauthorized"}]}"#,
        );
    }
    if req.method != "POST" {
        note(405);
        return respond(stream, 405, None, "{}");
    }
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        note(400);
        return respond(stream, 400, None, r#"{"error":"bad json"}"#);
    };
    let answer = if req.path == "/graphql" {
        upsert(ctx, &body)
    } else {
        match file_stream(ctx, &req.path, &body) {
            Some(answer) => answer,
            None => {
                note(404);
                return respond(stream, 404, None, "{}");
            }
        }
    };
    note(200);
    respond(stream, 200, None, &answer.to_string())
}

fn entity_of(vars: &Value, default_entity: &str) -> String {
    vars["entity"]
        .as_str()
        .map_or_else(|| default_entity.to_owned(), str::to_owned)
}

fn upsert(ctx: &Ctx, body: &Value) -> Value {
    let vars = body["variables"].clone();
    let query = body["query"].as_str().unwrap_or("");
    let b = lock(&ctx.behaviour).clone();
    let mut rec = lock(&ctx.record);
    let entity = entity_of(&vars, &b.default_entity);
    let key = run_key(
        &entity,
        vars["project"].as_str().unwrap_or(""),
        vars["name"].as_str().unwrap_or(""),
    );
    let run = rec.runs.entry(key).or_default();
    let (line_count, summary, inserted) = if run.upserts > 0 {
        (
            b.history_line_count.max(run.next_offset()),
            run.summary.clone().or(b.summary_metrics.clone()),
            false,
        )
    } else {
        (b.history_line_count, b.summary_metrics.clone(), b.inserted)
    };
    run.upserts += 1;
    let mut bucket = json!({"id": "QnVja2V0OjE=", "name": vars["name"],
        "displayName": vars["displayName"], "description": null, "config": vars["config"],
        "sweepName": vars["sweep"],
        "project": {"id": "UHJvamVjdDox", "name": vars["project"],
                    "entity": {"id": "RW50aXR5OjE=", "name": entity}}});
    if selects(query, "historyLineCount") {
        bucket["historyLineCount"] = json!(line_count);
    }
    if selects(query, "summaryMetrics") {
        bucket["summaryMetrics"] = json!(summary);
    }
    let answer = json!({"data": {"upsertBucket": {"bucket": bucket, "inserted": inserted}}});
    rec.upserts.push(vars);
    answer
}

/// Whether the query's `bucket { … }` selection names `field`; true when the query has no
/// `bucket` selection at all (hand-written test queries).
fn selects(query: &str, field: &str) -> bool {
    let Some(at) = query.find("bucket {").or_else(|| query.find("bucket{")) else {
        return true;
    };
    query[at..]
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .any(|word| word == field)
}

/// Records one `file_stream` body; `None` when the path does not name the upserted run.
fn file_stream(ctx: &Ctx, path: &str, body: &Value) -> Option<Value> {
    let default_entity = lock(&ctx.behaviour).default_entity.clone();
    let mut rec = lock(&ctx.record);
    let expected = rec.upserts.last().map(|v| {
        let entity = entity_of(v, &default_entity);
        let project = v["project"].as_str().unwrap_or("");
        let name = v["name"].as_str().unwrap_or("");
        (
            format!("/files/{entity}/{project}/{name}/file_stream"),
            run_key(&entity, project, name),
        )
    });
    let key = match expected {
        Some((p, key)) if p == path => key,
        _ => {
            rec.wrong_paths.push(path.to_owned());
            return None;
        }
    };
    if body.as_object().is_some_and(|o| o.is_empty()) {
        rec.heartbeats += 1;
    }
    let mut lines = Vec::new();
    if let Some(h) = body.pointer("/files/wandb-history.jsonl") {
        let offset = h["offset"].as_u64().unwrap_or(u64::MAX);
        for (i, line) in h["content"].as_array().into_iter().flatten().enumerate() {
            let at = offset.saturating_add(i as u64);
            lines.push((at, line.as_str().unwrap_or("<not a string>").to_owned()));
        }
    }
    let summary = body
        .pointer("/files/wandb-summary.json/content/0")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let complete = body.get("complete").map(|c| {
        (
            c.as_bool().unwrap_or(false),
            body["exitcode"].as_i64().unwrap_or(i64::MIN),
        )
    });
    let rec = &mut *rec;
    let run = rec.runs.entry(key).or_default();
    for (at, line) in lines {
        rec.history.insert(at, line.clone());
        *rec.writes.entry(at).or_default() += 1;
        run.history.insert(at, line);
        *run.writes.entry(at).or_default() += 1;
    }
    if let Some(s) = summary {
        rec.summary = Some(s.clone());
        run.summary = Some(s);
    }
    if complete.is_some() {
        rec.complete = complete;
        run.complete = complete;
    }
    Some(json!({"exitcode": null, "limits": {}}))
}

fn respond(
    mut stream: TcpStream,
    status: u16,
    retry_after: Option<&str>,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(r) = retry_after {
        head.push_str(&format!("Retry-After: {r}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

/// Standard base64 with padding (RFC 4648), as HTTP Basic auth uses it.
pub fn base64(input: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(input)
}

/// Parses a history or summary line, reading the bare `NaN`, `Infinity` and `-Infinity` values
/// the client writes for non-finite floats as the strings `"NaN"`, `"Infinity"`, `"-Infinity"`
/// (strict JSON has no such numbers).
///
/// # Panics
/// When the line is not a JSON object after that substitution: a test helper, where a malformed
/// line is the failure being looked for.
pub fn parse_line(line: &str) -> Value {
    let patched = line
        .replace(":NaN", ":\"NaN\"")
        .replace(":-Infinity", ":\"-Infinity\"")
        .replace(":Infinity", ":\"Infinity\"");
    match serde_json::from_str::<Value>(&patched) {
        Ok(v) if v.is_object() => v,
        Ok(v) => panic!("line {line:?} is not a JSON object: {v}"),
        Err(e) => panic!("line {line:?} is not JSON: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(addr: SocketAddr, path: &str, auth: Option<&str>, body: &str) -> (u16, String) {
        let mut s = TcpStream::connect(addr).expect("connect");
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(a) = auth {
            req.push_str(&format!("Authorization: {a}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        (status, body)
    }

    #[test]
    fn basic_auth_is_base64_of_api_and_the_key() {
        assert_eq!(basic_auth("test-key-123"), "Basic YXBpOnRlc3Qta2V5LTEyMw==");
    }

    #[test]
    fn parse_line_reads_non_finite_tokens() {
        let v = parse_line(r#"{"a":NaN,"b":-Infinity,"c":Infinity,"d":1.5}"#);
        assert_eq!(
            v,
            json!({"a": "NaN", "b": "-Infinity", "c": "Infinity", "d": 1.5})
        );
    }

    #[test]
    fn requests_without_the_key_are_refused_and_a_reupserted_run_continues() {
        let server = FakeServer::start(Behaviour::default()).expect("start");
        let upsert =
            r#"{"query":"mutation","variables":{"name":"r1","project":"p","entity":null}}"#;
        let (status, _) = post(server.addr(), "/graphql", None, upsert);
        assert_eq!(status, 401);
        let auth = basic_auth(TEST_API_KEY);
        let (status, body) = post(server.addr(), "/graphql", Some(&auth), upsert);
        assert_eq!(status, 200);
        let bucket: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(bucket["data"]["upsertBucket"]["inserted"], json!(true));
        assert_eq!(
            bucket["data"]["upsertBucket"]["bucket"]["project"]["entity"]["name"],
            json!("fake-entity")
        );
        let lines = r#"{"files":{"wandb-history.jsonl":{"offset":0,"content":["{\"_step\":1}","{\"_step\":2}"]}}}"#;
        let (status, _) = post(
            server.addr(),
            "/files/fake-entity/p/r1/file_stream",
            Some(&auth),
            lines,
        );
        assert_eq!(status, 200);
        let (status, _) = post(
            server.addr(),
            "/files/fake-entity/p/other/file_stream",
            Some(&auth),
            lines,
        );
        assert_eq!(status, 404);
        let (_, body) = post(server.addr(), "/graphql", Some(&auth), upsert);
        let bucket: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(bucket["data"]["upsertBucket"]["inserted"], json!(false));
        assert_eq!(
            bucket["data"]["upsertBucket"]["bucket"]["historyLineCount"],
            json!(2)
        );
        let rec = server.record();
        assert_eq!(rec.next_offset(), 2);
        assert_eq!(
            rec.wrong_paths,
            vec!["/files/fake-entity/p/other/file_stream"]
        );
        let statuses: Vec<u16> = rec.requests.iter().map(|r| r.status).collect();
        assert_eq!(statuses, vec![401, 200, 200, 404, 200]);
    }

    #[test]
    fn runs_keep_their_own_state_and_the_upsert_answers_it_when_selected() {
        let server = FakeServer::start(Behaviour::default()).expect("start");
        let auth = basic_auth(TEST_API_KEY);
        let upsert = |name: &str, selection: &str| {
            let body = json!({"query": format!("mutation {{ upsertBucket {{ bucket {{ {selection} }} }} }}"),
                              "variables": {"name": name, "project": "p", "entity": "e"}});
            let (status, text) = post(server.addr(), "/graphql", Some(&auth), &body.to_string());
            assert_eq!(status, 200);
            let v: Value = serde_json::from_str(&text).expect("json");
            v["data"]["upsertBucket"].clone()
        };
        let first = upsert("a", "id name historyLineCount summaryMetrics");
        assert_eq!(first["inserted"], json!(true));
        assert_eq!(first["bucket"]["historyLineCount"], json!(0));
        assert_eq!(first["bucket"]["summaryMetrics"], Value::Null);
        let lines = r#"{"files":{"wandb-history.jsonl":{"offset":0,"content":["{\"_step\":1}","{\"_step\":2}"]},
            "wandb-summary.json":{"offset":0,"content":["{\"_step\":2,\"loss\":NaN}"]}}}"#;
        let (status, _) = post(
            server.addr(),
            "/files/e/p/a/file_stream",
            Some(&auth),
            lines,
        );
        assert_eq!(status, 200);
        // Another run on the same server starts from scratch.
        let other = upsert("b", "id name historyLineCount summaryMetrics");
        assert_eq!(other["inserted"], json!(true));
        assert_eq!(other["bucket"]["historyLineCount"], json!(0));
        // The first run, upserted again (a resumed process), gets its own state back.
        let again = upsert("a", "id name historyLineCount summaryMetrics");
        assert_eq!(again["inserted"], json!(false));
        assert_eq!(again["bucket"]["historyLineCount"], json!(2));
        assert_eq!(
            again["bucket"]["summaryMetrics"],
            json!(r#"{"_step":2,"loss":NaN}"#)
        );
        // Fields the selection does not ask for are not answered.
        let bare = upsert("a", "id name");
        assert!(bare["bucket"].get("historyLineCount").is_none(), "{bare}");
        assert!(bare["bucket"].get("summaryMetrics").is_none(), "{bare}");
        let rec = server.record();
        let a = rec.run("e", "p", "a").expect("run a");
        assert_eq!((a.upserts, a.next_offset()), (3, 2));
        assert_eq!(rec.run("e", "p", "b").map(|b| b.history.len()), Some(0));
    }

    #[test]
    fn body_faults_answer_their_body_and_echo_quotes_the_headers() {
        let server = FakeServer::start(Behaviour {
            graphql_faults: VecDeque::from([
                Fault::Body(400, "no such thing".to_owned()),
                Fault::EchoHeaders(400),
            ]),
            ..Behaviour::default()
        })
        .expect("start");
        let auth = basic_auth(TEST_API_KEY);
        let (status, body) = post(server.addr(), "/graphql", Some(&auth), "{}");
        assert_eq!((status, body.as_str()), (400, "no such thing"));
        let (status, body) = post(server.addr(), "/graphql", Some(&auth), "{}");
        assert_eq!(status, 400);
        assert!(body.contains(&format!("authorization: {auth}")), "{body}");
    }

    #[test]
    fn injected_faults_are_served_in_order() {
        let server = FakeServer::start(Behaviour {
            graphql_faults: VecDeque::from([Fault::Status(429, Some("3"))]),
            ..Behaviour::default()
        })
        .expect("start");
        let auth = basic_auth(TEST_API_KEY);
        let mut s = TcpStream::connect(server.addr()).expect("connect");
        s.write_all(
            format!(
                "POST /graphql HTTP/1.1\r\nAuthorization: {auth}\r\nContent-Length: 2\r\n\r\n{{}}"
            )
            .as_bytes(),
        )
        .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        assert!(out.starts_with("HTTP/1.1 429 "), "{out}");
        assert!(out.contains("Retry-After: 3\r\n"), "{out}");
        server.update(|b| b.graphql_faults.push_back(Fault::Close));
        let (status, _) = post(server.addr(), "/graphql", Some(&auth), "{}");
        assert_eq!(status, 0, "closed without an answer");
    }
}
