//! A fake W&B server: a real HTTP/1.1 server on 127.0.0.1:0, one thread per connection, that
//! routes `/graphql` and `/files/{entity}/{project}/{run}/file_stream`, checks Basic auth,
//! answers the upsert like the real server, records history lines by offset, the summary and
//! `complete`/`exitcode`, and can inject statuses with `Retry-After` or hang.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// An injected answer for one request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and optional `Retry-After` value.
    Status(u16, Option<&'static str>),
    /// Read the request, then hold the connection open without answering.
    Hang(Duration),
    /// Answer 307 with this `Location`.
    Redirect(String),
}

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct Behaviour {
    pub api_key: String,
    /// Entity reported when the client sends null.
    pub default_entity: String,
    /// `historyLineCount` in the upsert answer.
    pub history_line_count: u64,
    /// `inserted` in the upsert answer.
    pub inserted: bool,
    pub graphql_faults: VecDeque<Fault>,
    pub stream_faults: VecDeque<Fault>,
    /// Every request hangs for this long.
    pub hang_all: Option<Duration>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            api_key: "test-key-123".to_owned(),
            default_entity: "fake-entity".to_owned(),
            history_line_count: 0,
            inserted: true,
            graphql_faults: VecDeque::new(),
            stream_faults: VecDeque::new(),
            hang_all: None,
        }
    }
}

/// One request as seen by the server.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub status: u16,
    pub at: Instant,
    pub body_len: usize,
    pub auth_ok: bool,
}

/// Everything the server recorded.
#[derive(Debug, Default)]
pub struct Record {
    pub requests: Vec<Seen>,
    pub upserts: Vec<Value>,
    /// History line text by offset.
    pub history: BTreeMap<u64, String>,
    /// How many times each offset was written.
    pub writes: BTreeMap<u64, usize>,
    pub summary: Option<String>,
    pub heartbeats: usize,
    pub complete: Option<(bool, i64)>,
    /// file_stream paths that did not match the upserted run.
    pub wrong_paths: Vec<String>,
}

pub struct FakeServer {
    pub addr: SocketAddr,
    pub record: Arc<Mutex<Record>>,
}

struct Ctx {
    behaviour: Mutex<Behaviour>,
    record: Arc<Mutex<Record>>,
    expected_auth: String,
}

impl FakeServer {
    pub fn start(behaviour: Behaviour) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let record = Arc::new(Mutex::new(Record::default()));
        let ctx = Arc::new(Ctx {
            expected_auth: format!(
                "Basic {}",
                base64(format!("api:{}", behaviour.api_key).as_bytes())
            ),
            behaviour: Mutex::new(behaviour),
            record: Arc::clone(&record),
        });
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let ctx = Arc::clone(&ctx);
                thread::spawn(move || {
                    let _ = serve(stream, &ctx);
                });
            }
        });
        FakeServer { addr, record }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().expect("record lock")
    }
}

/// A port on which nothing listens (connections are refused).
pub fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    format!("http://{addr}")
}

fn serve(stream: TcpStream, ctx: &Ctx) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
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
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let auth_ok = headers.get("authorization") == Some(&ctx.expected_auth);
    let is_graphql = path == "/graphql";

    let fault = {
        let mut b = ctx.behaviour.lock().expect("behaviour lock");
        match b.hang_all {
            Some(d) => Some(Fault::Hang(d)),
            None if is_graphql => b.graphql_faults.pop_front(),
            None => b.stream_faults.pop_front(),
        }
    };
    let seen = |status: u16| Seen {
        path: path.clone(),
        status,
        at: Instant::now(),
        body_len: body.len(),
        auth_ok,
    };
    match fault {
        Some(Fault::Hang(d)) => {
            ctx.record
                .lock()
                .expect("record lock")
                .requests
                .push(seen(0));
            thread::sleep(d);
            return Ok(());
        }
        Some(Fault::Status(status, retry_after)) => {
            ctx.record
                .lock()
                .expect("record lock")
                .requests
                .push(seen(status));
            return respond(stream, status, retry_after, r#"{"error":"injected"}"#);
        }
        Some(Fault::Redirect(location)) => {
            ctx.record
                .lock()
                .expect("record lock")
                .requests
                .push(seen(307));
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
        ctx.record
            .lock()
            .expect("record lock")
            .requests
            .push(seen(401));
        return respond(
            stream,
            401,
            None,
            r#"{"errors":[{"message":"unauthorized"}]}"#,
        );
    }
    let Ok(json) = serde_json::from_slice::<Value>(&body) else {
        ctx.record
            .lock()
            .expect("record lock")
            .requests
            .push(seen(400));
        return respond(stream, 400, None, r#"{"error":"bad json"}"#);
    };
    if method != "POST" {
        ctx.record
            .lock()
            .expect("record lock")
            .requests
            .push(seen(405));
        return respond(stream, 405, None, "{}");
    }
    let answer = if is_graphql {
        let vars = json["variables"].clone();
        let b = ctx.behaviour.lock().expect("behaviour lock");
        let entity = vars["entity"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| b.default_entity.clone());
        let answer = json!({"data": {"upsertBucket": {
            "bucket": {"id": "QnVja2V0OjE=", "name": vars["name"], "displayName": vars["displayName"],
                       "description": null, "config": vars["config"], "sweepName": vars["sweep"],
                       "historyLineCount": b.history_line_count,
                       "project": {"id": "UHJvamVjdDox", "name": vars["project"],
                                   "entity": {"id": "RW50aXR5OjE=", "name": entity}}},
            "inserted": b.inserted}}});
        ctx.record.lock().expect("record lock").upserts.push(vars);
        answer
    } else {
        let mut rec = ctx.record.lock().expect("record lock");
        let expected = rec.upserts.last().map(|v| {
            let b = ctx.behaviour.lock().expect("behaviour lock");
            let entity = v["entity"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| b.default_entity.clone());
            format!(
                "/files/{}/{}/{}/file_stream",
                entity,
                v["project"].as_str().unwrap_or(""),
                v["name"].as_str().unwrap_or("")
            )
        });
        if expected.as_deref() != Some(path.as_str()) {
            rec.wrong_paths.push(path.clone());
            rec.requests.push(seen(404));
            drop(rec);
            return respond(stream, 404, None, "{}");
        }
        if json.as_object().is_some_and(|o| o.is_empty()) {
            rec.heartbeats += 1;
        }
        if let Some(h) = json.pointer("/files/wandb-history.jsonl") {
            let offset = h["offset"].as_u64().unwrap_or(u64::MAX);
            for (i, line) in h["content"].as_array().into_iter().flatten().enumerate() {
                let at = offset + i as u64;
                rec.history
                    .insert(at, line.as_str().unwrap_or("<not a string>").to_owned());
                *rec.writes.entry(at).or_default() += 1;
            }
        }
        if let Some(s) = json
            .pointer("/files/wandb-summary.json/content/0")
            .and_then(Value::as_str)
        {
            rec.summary = Some(s.to_owned());
        }
        if json.get("complete").is_some() {
            rec.complete = Some((
                json["complete"].as_bool().unwrap_or(false),
                json["exitcode"].as_i64().unwrap_or(i64::MIN),
            ));
        }
        json!({"exitcode": null, "limits": {}})
    };
    ctx.record
        .lock()
        .expect("record lock")
        .requests
        .push(seen(200));
    respond(stream, 200, None, &answer.to_string())
}

fn respond(
    mut stream: TcpStream,
    status: u16,
    retry_after: Option<&str>,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
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

/// Standard base64 with padding.
pub fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// Parses a history/summary line, mapping the bare non-finite tokens to strings so
/// `serde_json` accepts it.
pub fn parse_line(line: &str) -> Value {
    let patched = line
        .replace(":NaN", ":\"NaN\"")
        .replace(":-Infinity", ":\"-Infinity\"")
        .replace(":Infinity", ":\"Infinity\"");
    serde_json::from_str(&patched).unwrap_or_else(|e| panic!("line {line:?} is not JSON: {e}"))
}
