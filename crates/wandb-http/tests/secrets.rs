//! The API key never shows in anything the client reports: returned errors (Display and Debug),
//! finish reports, and `tracing` events at every level, even when the server quotes it back.
//!
//! A process-wide `tracing` subscriber records every event of this test binary, so these tests
//! live in their own file.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Mutex, Once};
use std::time::Duration;

use serde_json::Map;
use wandb_fake::{Behaviour, FakeServer, Fault, base64, basic_auth};
use wandb_http::{ClientOptions, Defaults, Run, Settings};

/// Looks like a real key: 40 hex digits.
const KEY: &str = "3f9a0c1d2e4b5a6978877665544332211000ffee";

static EVENTS: Mutex<String> = Mutex::new(String::new());

/// Records every event, all levels, with all its fields.
struct Capture;

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        let _ = write!(self.0, " {}={}", field.name(), value);
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut events = EVENTS.lock().unwrap_or_else(|e| e.into_inner());
        span.record(&mut Fields(&mut events));
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut events = EVENTS.lock().unwrap_or_else(|e| e.into_inner());
        values.record(&mut Fields(&mut events));
    }

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut events = EVENTS.lock().unwrap_or_else(|e| e.into_inner());
        let _ = write!(events, "\n{}", event.metadata().level());
        event.record(&mut Fields(&mut events));
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

fn capture() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        tracing::subscriber::set_global_default(Capture).expect("the only subscriber");
    });
}

fn events() -> String {
    EVENTS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The key, its Basic-auth base64 (padded and not) and the whole header value.
fn secrets() -> Vec<String> {
    let b64 = base64(format!("api:{KEY}").as_bytes());
    vec![
        KEY.to_owned(),
        b64.trim_end_matches('=').to_owned(),
        b64,
        basic_auth(KEY),
    ]
}

/// An error body that quotes the key in every form the fault-injection pass saw.
fn quoting_body() -> String {
    let b64 = base64(format!("api:{KEY}").as_bytes());
    format!(
        r#"{{"error":"invalid key {KEY}","request":{{"headers":{{"Authorization":"Basic {b64}"}}}},"raw":"{b64}"}}"#
    )
}

fn assert_clean(what: &str, text: &str) {
    for secret in secrets() {
        assert!(!text.contains(&secret), "{what} shows a secret: {text}");
    }
}

fn serve(behaviour: Behaviour) -> FakeServer {
    FakeServer::start(Behaviour {
        api_key: KEY.to_owned(),
        ..behaviour
    })
    .expect("fake server on loopback")
}

fn settings(server: &FakeServer) -> Settings {
    let env: HashMap<&str, String> = [
        ("WANDB_API_KEY", KEY.to_owned()),
        ("WANDB_BASE_URL", server.url()),
        ("WANDB_PROJECT", "proj".to_owned()),
        ("WANDB_RUN_ID", "run1".to_owned()),
    ]
    .into_iter()
    .collect();
    Settings::from_lookup(&Defaults::default(), |k| env.get(k).cloned()).expect("settings")
}

fn options() -> ClientOptions {
    ClientOptions {
        start_wait: Duration::from_secs(3),
        min_retry_wait: Duration::from_millis(10),
        max_retry_wait: Duration::from_millis(50),
        max_attempts: 3,
        request_timeout: Duration::from_secs(2),
        fast_flush_interval: Duration::from_millis(30),
        flush_interval: Duration::from_millis(30),
        use_env_proxy: false,
        ..ClientOptions::default()
    }
}

#[test]
fn a_rejected_upsert_quoting_the_key_is_reported_redacted() {
    capture();
    for fault in [
        Fault::Body(400, quoting_body()),
        Fault::EchoHeaders(403),
        // GraphQL errors in a 200 that quote the key.
        Fault::Body(
            200,
            format!(r#"{{"errors":[{{"message":"bad token {KEY}"}}],"data":null}}"#),
        ),
        // A 200 that is not JSON at all.
        Fault::Body(200, quoting_body().replace('{', "<")),
    ] {
        let server = serve(Behaviour {
            graphql_faults: VecDeque::from([fault.clone()]),
            ..Behaviour::default()
        });
        let Err(err) = Run::start_with(settings(&server), Map::new(), options()) else {
            panic!("{fault:?}: started");
        };
        assert_clean("the error", &err.to_string());
        assert_clean("the error's Debug", &format!("{err:?}"));
        assert!(
            err.to_string().contains("<redacted>")
                || matches!(fault, Fault::Body(200, ref b) if b.starts_with('<')),
            "{fault:?}: {err}"
        );
    }
    assert_clean("the log", &events());
}

#[test]
fn failing_streams_quoting_the_key_are_reported_redacted() {
    capture();
    // Retryable answers that quote the key (their reasons are logged), then a final one.
    let server = serve(Behaviour {
        stream_faults: VecDeque::from([
            Fault::Body(503, quoting_body()),
            Fault::EchoHeaders(502),
            Fault::Body(429, quoting_body()),
            Fault::EchoHeaders(500),
            Fault::Body(400, quoting_body()),
        ]),
        ..Behaviour::default()
    });
    let run = Run::start_with(settings(&server), Map::new(), options()).expect("start");
    run.log(0, [("loss", 1.0)].into_iter().collect::<wandb_http::Row>());
    std::thread::sleep(Duration::from_millis(600));
    let report = run.finish(0, Duration::from_secs(5));
    let failure = report.failure.clone().unwrap_or_default();
    assert!(failure.contains("HTTP 400"), "{report:?}");
    assert!(failure.contains("<redacted>"), "{report:?}");
    assert_clean("the report", &format!("{report:?}"));

    // Retryable failures until the finish deadline: the last one ends up in the report.
    let server = serve(Behaviour {
        stream_faults: (0..1000).map(|_| Fault::EchoHeaders(503)).collect(),
        ..Behaviour::default()
    });
    let run = Run::start_with(settings(&server), Map::new(), options()).expect("start");
    run.log(0, [("loss", 1.0)].into_iter().collect::<wandb_http::Row>());
    std::thread::sleep(Duration::from_millis(200));
    let report = run.finish(0, Duration::from_millis(300));
    assert!(
        report
            .failure
            .as_deref()
            .is_some_and(|f| f.contains("authorization: <redacted>")),
        "{report:?}"
    );
    assert_clean("the report", &format!("{report:?}"));
    assert_clean("the log", &events());
}
