//! End-to-end tests of the client against the fake W&B server of the `wandb-fake` crate.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use wandb_http::{ClientOptions, Defaults, FinishReport, Row, Run, Settings, WandbError};

use wandb_fake::{Behaviour, FakeServer, Fault, TEST_API_KEY, base64, parse_line};

const KEY: &str = TEST_API_KEY;

fn serve(behaviour: Behaviour) -> FakeServer {
    FakeServer::start(behaviour).expect("fake server on loopback")
}

fn dead_url() -> String {
    wandb_fake::dead_url().expect("a free loopback port")
}

fn fast_options() -> ClientOptions {
    ClientOptions {
        start_wait: Duration::from_secs(3),
        min_retry_wait: Duration::from_millis(20),
        max_retry_wait: Duration::from_millis(2000),
        give_up_after: Duration::from_secs(5),
        max_attempts: 20,
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(500),
        fast_flush_interval: Duration::from_millis(40),
        fast_flush_period: Duration::from_secs(60),
        flush_interval: Duration::from_millis(40),
        heartbeat_interval: Duration::from_secs(30),
        use_env_proxy: false,
        ..ClientOptions::default()
    }
}

fn settings(base_url: &str, extra: &[(&str, &str)]) -> Settings {
    let mut env: HashMap<String, String> = [
        ("WANDB_API_KEY", KEY),
        ("WANDB_BASE_URL", base_url),
        ("WANDB_PROJECT", "proj"),
        ("WANDB_RUN_ID", "run1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    Settings::from_lookup(&Defaults::default(), |k| env.get(k).cloned()).expect("settings")
}

fn config() -> Map<String, Value> {
    let Value::Object(map) =
        json!({"lr": 0.0001, "batch_size": 64, "num_entities": 100, "use_amp": true})
    else {
        unreachable!()
    };
    map
}

fn metric(key: &str, value: f64) -> Row {
    [(key, value)].into_iter().collect()
}

/// History lines recorded by the server, parsed, in offset order; asserts offsets are contiguous
/// from `first` and every line was written at least once.
fn lines_from(server: &FakeServer, first: u64) -> Vec<Value> {
    let rec = server.record();
    let offsets: Vec<u64> = rec.history.keys().copied().collect();
    let expected: Vec<u64> = (first..first + offsets.len() as u64).collect();
    assert_eq!(
        offsets, expected,
        "history offsets must be contiguous from {first}"
    );
    rec.history.values().map(|l| parse_line(l)).collect()
}

fn assert_all_delivered(report: &FinishReport, rows: u64) {
    assert_eq!(report.rows, rows, "{report:?}");
    assert_eq!(report.rows_delivered, rows, "{report:?}");
    assert_eq!(report.rows_lost, 0, "{report:?}");
    assert!(report.summary_delivered, "{report:?}");
    assert!(report.completed, "{report:?}");
    assert!(!report.timed_out, "{report:?}");
    assert_eq!(report.failure, None, "{report:?}");
}

#[test]
fn happy_path_sends_every_row_once_at_its_offset() {
    let server = serve(Behaviour::default());
    let s = settings(
        &server.url(),
        &[
            ("WANDB_RUN_NAME", "display"),
            ("WANDB_RUN_GROUP", "grp"),
            ("WANDB_TAGS", "a,b"),
            ("WANDB_NOTES", "some notes"),
            ("WANDB_JOB_TYPE", "train"),
            ("WANDB_SWEEP_ID", "sweep42"),
        ],
    );
    let t0 = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let run = Run::start_with(s, config(), fast_options()).expect("start");
    let url = server.url();
    assert_eq!(
        run.url().as_deref(),
        Some(format!("{url}/fake-entity/proj/runs/run1").as_str())
    );
    let info = run.info().expect("info");
    assert_eq!((info.start_offset, info.inserted), (0, true));

    for i in 0..30u64 {
        let step = i * 10;
        run.log(step, metric("train/CE_last", i as f64));
        if i % 2 == 0 {
            let mut extra = Map::new();
            extra.insert("val/macro/CE".into(), json!(100 + i));
            run.log(step, extra);
        }
        if i == 20 {
            run.log(5, metric("late", 1.0));
        }
        if i == 12 {
            std::thread::sleep(Duration::from_millis(150));
        }
    }
    let mut last = Row::new();
    last.set_f64("train/CE_last", f64::NAN)
        .set_f64("inf", f64::NEG_INFINITY);
    run.log(290, last);
    let report = run.finish(0, Duration::from_secs(10));
    assert_all_delivered(&report, 30);
    assert_eq!(report.log_calls, 30 + 15 + 1 + 1);
    assert_eq!(report.dropped_stale_step, 1);
    assert_eq!(report.logs_unprocessed, 0);

    let lines = lines_from(&server, 0);
    assert_eq!(lines.len(), 30);
    let rec = server.record();
    assert!(
        rec.writes.values().all(|&n| n == 1),
        "no offset written twice: {:?}",
        rec.writes
    );
    assert!(rec.requests.len() > 3, "rows were sent in several batches");
    for (i, line) in lines.iter().enumerate() {
        let i = i as u64;
        assert_eq!(line["_step"], json!(i * 10), "line {i}");
        if i < 29 {
            assert_eq!(line["train/CE_last"], json!(i as f64), "line {i}");
        }
        if i % 2 == 0 {
            assert_eq!(
                line["val/macro/CE"],
                json!(100 + i),
                "merged key on line {i}"
            );
        } else {
            assert!(line.get("val/macro/CE").is_none(), "line {i}");
        }
        assert!(line.get("late").is_none());
        let runtime = line["_runtime"].as_f64().expect("_runtime");
        let ts = line["_timestamp"].as_f64().expect("_timestamp");
        assert!((0.0..30.0).contains(&runtime), "runtime {runtime}");
        assert!(ts >= t0 - 1.0 && ts < t0 + 60.0, "timestamp {ts} vs {t0}");
    }
    let last_raw = &rec.history[&29];
    assert!(last_raw.contains(r#""train/CE_last":NaN"#), "{last_raw}");
    assert!(last_raw.contains(r#""inf":-Infinity"#), "{last_raw}");

    let summary = parse_line(rec.summary.as_deref().expect("summary"));
    assert_eq!(summary["_step"], json!(290));
    assert_eq!(summary["train/CE_last"], json!("NaN"));
    assert_eq!(summary["val/macro/CE"], json!(128));
    assert_eq!(
        summary["late"],
        Value::Null,
        "stale rows do not reach the summary"
    );
    assert_eq!(rec.complete, Some((true, 0)));

    assert!(
        rec.requests.iter().all(|r| r.auth_ok),
        "every request carries Basic auth"
    );
    assert!(rec.wrong_paths.is_empty(), "{:?}", rec.wrong_paths);
    assert_eq!(rec.upserts.len(), 1);
    let v = &rec.upserts[0];
    assert_eq!(v["name"], "run1");
    assert_eq!(v["project"], "proj");
    assert_eq!(v["entity"], Value::Null);
    assert_eq!(v["displayName"], "display");
    assert_eq!(v["groupName"], "grp");
    assert_eq!(v["tags"], json!(["a", "b"]));
    assert_eq!(v["notes"], "some notes");
    assert_eq!(v["jobType"], "train");
    assert_eq!(v["sweep"], "sweep42");
    let cfg: Value =
        serde_json::from_str(v["config"].as_str().expect("config is a string")).unwrap();
    assert_eq!(
        cfg,
        json!({"lr": {"value": 0.0001}, "batch_size": {"value": 64},
               "num_entities": {"value": 100}, "use_amp": {"value": true}})
    );
}

#[test]
fn basic_auth_header_is_api_colon_key() {
    assert_eq!(base64(b"api:test-key-123"), "YXBpOnRlc3Qta2V5LTEyMw==");
    // The server's check is what the happy path relies on; a wrong key must fail it.
    let server = serve(Behaviour::default());
    let mut s = settings(&server.url(), &[]);
    s.api_key = Some("wrong".into());
    assert!(Run::start_with(s, config(), fast_options()).is_err());
    assert!(!server.record().requests[0].auth_ok);
}

#[test]
fn throttling_and_server_errors_are_retried_honouring_retry_after() {
    let behaviour = Behaviour {
        graphql_faults: VecDeque::from([Fault::Status(503, None)]),
        stream_faults: VecDeque::from([
            Fault::Status(429, Some("0.4")),
            Fault::Status(500, Some("0")),
            Fault::Status(502, None),
        ]),
        ..Behaviour::default()
    };
    let server = serve(behaviour);
    let run =
        Run::start_with(settings(&server.url(), &[]), config(), fast_options()).expect("start");
    for step in 0..20 {
        run.log(step, metric("loss", step as f64));
    }
    let report = run.finish(0, Duration::from_secs(10));
    assert_all_delivered(&report, 20);
    let lines = lines_from(&server, 0);
    let steps: Vec<u64> = lines.iter().map(|l| l["_step"].as_u64().unwrap()).collect();
    assert_eq!(steps, (0..20).collect::<Vec<_>>());
    let rec = server.record();
    assert_eq!(rec.complete, Some((true, 0)));
    let statuses: Vec<u16> = rec.requests.iter().map(|r| r.status).collect();
    assert_eq!(&statuses[..5], &[503, 200, 429, 500, 502], "{statuses:?}");
    let after_429 = rec.requests[3].at.duration_since(rec.requests[2].at);
    assert!(
        after_429 >= Duration::from_millis(380),
        "Retry-After 0.4 s honoured, waited {after_429:?}"
    );
}

#[test]
fn hanging_server_never_blocks_logging_and_finish_meets_its_deadline() {
    let server = serve(Behaviour {
        hang_all: Some(Duration::from_secs(20)),
        ..Behaviour::default()
    });
    let options = ClientOptions {
        start_wait: Duration::from_millis(300),
        request_timeout: Duration::from_millis(800),
        ..fast_options()
    };
    let t = Instant::now();
    let run = Run::start_with(settings(&server.url(), &[]), config(), options).expect("start");
    let start_took = t.elapsed();
    assert!(
        start_took < Duration::from_millis(1500),
        "start took {start_took:?}"
    );
    assert_eq!(run.url(), None);

    let t = Instant::now();
    let mut slowest = Duration::ZERO;
    for step in 0..10_000 {
        let one = Instant::now();
        run.log(step, metric("loss", 1.0));
        slowest = slowest.max(one.elapsed());
    }
    let log_took = t.elapsed();
    assert!(
        log_took < Duration::from_millis(1000),
        "10k logs took {log_took:?}"
    );
    assert!(
        slowest < Duration::from_millis(50),
        "slowest log call {slowest:?}"
    );

    let t = Instant::now();
    let report = run.finish(1, Duration::from_secs(1));
    let finish_took = t.elapsed();
    assert!(
        finish_took < Duration::from_millis(1500),
        "finish took {finish_took:?}"
    );
    assert_eq!(report.rows_delivered, 0, "{report:?}");
    assert!(!report.completed, "{report:?}");
    assert_eq!(report.log_calls, 10_000);
    assert!(server.record().history.is_empty());
}

#[test]
fn unreachable_server_costs_only_the_start_wait() {
    let url = dead_url();
    let options = ClientOptions {
        start_wait: Duration::from_millis(300),
        ..fast_options()
    };
    let t = Instant::now();
    let run =
        Run::start_with(settings(&url, &[]), config(), options).expect("start while retrying");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "start took {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    for step in 0..1000 {
        run.log(step, metric("loss", 1.0));
    }
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "logging took {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let report = run.finish(0, Duration::from_millis(800));
    assert!(
        t.elapsed() < Duration::from_millis(1300),
        "finish took {:?}",
        t.elapsed()
    );
    assert_eq!(report.rows_delivered, 0);
    assert!(!report.completed);
    assert_eq!(report.url, None);
}

#[test]
fn unreachable_server_gives_up_within_the_retry_budget() {
    let options = ClientOptions {
        give_up_after: Duration::from_millis(300),
        ..fast_options()
    };
    let t = Instant::now();
    let result = Run::start_with(settings(&dead_url(), &[]), config(), options);
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        t.elapsed()
    );
    match result {
        Err(WandbError::GaveUp {
            endpoint, attempts, ..
        }) => {
            assert_eq!(endpoint, "graphql");
            assert!(attempts >= 2, "retried before giving up: {attempts}");
        }
        Err(e) => panic!("expected GaveUp, got {e}"),
        Ok(_) => panic!("expected GaveUp, got a run"),
    }
}

#[test]
fn resume_continues_after_the_existing_history_lines() {
    let server = serve(Behaviour {
        history_line_count: 17,
        inserted: false,
        ..Behaviour::default()
    });
    let s = settings(
        &server.url(),
        &[("WANDB_RESUME", "allow"), ("WANDB_ENTITY", "team")],
    );
    let run = Run::start_with(s, config(), fast_options()).expect("start");
    let info = run.info().expect("info");
    assert_eq!((info.start_offset, info.inserted), (17, false));
    assert_eq!(info.url, format!("{}/team/proj/runs/run1", server.url()));
    for step in 100..105 {
        run.log(step, metric("loss", step as f64));
    }
    let report = run.finish(0, Duration::from_secs(10));
    assert_all_delivered(&report, 5);
    let lines = lines_from(&server, 17);
    let steps: Vec<u64> = lines.iter().map(|l| l["_step"].as_u64().unwrap()).collect();
    assert_eq!(steps, vec![100, 101, 102, 103, 104]);
    assert_eq!(server.record().upserts[0]["entity"], "team");
}

#[test]
fn resume_policies_never_and_must_are_enforced() {
    let existing = serve(Behaviour {
        history_line_count: 3,
        inserted: false,
        ..Behaviour::default()
    });
    let s = settings(&existing.url(), &[("WANDB_RESUME", "never")]);
    assert!(matches!(
        Run::start_with(s, config(), fast_options()),
        Err(WandbError::Resume { .. })
    ));
    let fresh = serve(Behaviour::default());
    let s = settings(&fresh.url(), &[("WANDB_RESUME", "must")]);
    assert!(matches!(
        Run::start_with(s, config(), fast_options()),
        Err(WandbError::Resume { .. })
    ));
    assert!(existing.record().history.is_empty() && fresh.record().history.is_empty());
}

#[test]
fn unauthorized_upsert_fails_at_once_without_retrying() {
    let server = serve(Behaviour::default());
    let mut s = settings(&server.url(), &[]);
    s.api_key = Some("not-the-key".into());
    let t = Instant::now();
    match Run::start_with(s, config(), fast_options()) {
        Err(WandbError::Status {
            endpoint, status, ..
        }) => assert_eq!((endpoint, status), ("graphql", 401)),
        Err(e) => panic!("expected a 401 status error, got {e}"),
        Ok(_) => panic!("expected a 401 status error, got a run"),
    }
    assert!(t.elapsed() < Duration::from_millis(1000));
    assert_eq!(server.record().requests.len(), 1, "no retry after 401");
}

#[test]
fn unauthorized_file_stream_gives_up_and_drops_rows_quietly() {
    let server = serve(Behaviour {
        stream_faults: VecDeque::from([Fault::Status(401, None)]),
        ..Behaviour::default()
    });
    let run =
        Run::start_with(settings(&server.url(), &[]), config(), fast_options()).expect("start");
    run.log(0, metric("loss", 1.0));
    run.log(1, metric("loss", 2.0));
    std::thread::sleep(Duration::from_millis(300));
    for step in 2..50 {
        run.log(step, metric("loss", 1.0));
    }
    let t = Instant::now();
    let report = run.finish(0, Duration::from_secs(5));
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "finish took {:?}",
        t.elapsed()
    );
    assert!(
        report.failure.as_deref().is_some_and(|f| f.contains("401")),
        "{report:?}"
    );
    assert!(!report.completed);
    assert_eq!(report.rows_delivered, 0);
    let rec = server.record();
    let streams = rec
        .requests
        .iter()
        .filter(|r| r.path.ends_with("file_stream"))
        .count();
    assert_eq!(streams, 1, "gave up at the first 401");
    assert_eq!(rec.complete, None);
}

#[test]
fn idle_runs_send_heartbeats() {
    let server = serve(Behaviour::default());
    let options = ClientOptions {
        heartbeat_interval: Duration::from_millis(100),
        ..fast_options()
    };
    let run = Run::start_with(settings(&server.url(), &[]), config(), options).expect("start");
    std::thread::sleep(Duration::from_millis(550));
    let report = run.finish(0, Duration::from_secs(5));
    assert!(report.completed);
    let beats = server.record().heartbeats;
    assert!(
        (3..=7).contains(&beats),
        "{beats} heartbeats in 550 ms at 100 ms"
    );
}

#[test]
fn large_backlogs_are_split_under_the_request_size_limit() {
    let server = serve(Behaviour::default());
    let options = ClientOptions {
        max_request_bytes: 64 * 1024,
        fast_flush_interval: Duration::from_secs(30),
        flush_interval: Duration::from_secs(30),
        ..fast_options()
    };
    let run = Run::start_with(settings(&server.url(), &[]), config(), options).expect("start");
    let text = "z".repeat(5000);
    for step in 0..60 {
        let mut row = Row::new();
        row.set("blob", text.clone()).set("i", step);
        run.log(step, row);
    }
    let report = run.finish(0, Duration::from_secs(10));
    assert_all_delivered(&report, 60);
    let lines = lines_from(&server, 0);
    assert_eq!(lines.len(), 60);
    let rec = server.record();
    let bodies: Vec<usize> = rec
        .requests
        .iter()
        .filter(|r| r.path.ends_with("file_stream"))
        .map(|r| r.body_len)
        .collect();
    assert!(bodies.len() >= 5, "split into several requests: {bodies:?}");
    assert!(bodies.iter().all(|&b| b <= 64 * 1024), "{bodies:?}");
}

#[test]
fn dropping_a_run_marks_it_failed() {
    let server = serve(Behaviour::default());
    let run =
        Run::start_with(settings(&server.url(), &[]), config(), fast_options()).expect("start");
    run.log(3, metric("loss", 1.0));
    drop(run);
    let t = Instant::now();
    while server.record().complete.is_none() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let rec = server.record();
    assert_eq!(rec.complete, Some((true, 1)));
    assert_eq!(rec.history.len(), 1);
}

#[test]
fn settings_that_are_not_online_do_not_start() {
    let server = serve(Behaviour::default());
    assert!(settings(&server.url(), &[]).is_online());
    let s = settings(&server.url(), &[("WANDB_MODE", "offline")]);
    assert!(!s.is_online());
    assert!(matches!(
        Run::start_with(s, config(), fast_options()),
        Err(WandbError::NotOnline { .. })
    ));
    let mut s = settings(&server.url(), &[]);
    s.api_key = None;
    assert!(matches!(
        Run::start_with(s, config(), fast_options()),
        Err(WandbError::MissingApiKey)
    ));
    assert!(server.record().requests.is_empty());
}

#[test]
fn credentials_never_follow_a_redirect_to_another_host() {
    let elsewhere = serve(Behaviour::default());
    let server = serve(Behaviour {
        graphql_faults: VecDeque::from([Fault::Redirect(format!("{}/graphql", elsewhere.url()))]),
        ..Behaviour::default()
    });
    match Run::start_with(settings(&server.url(), &[]), config(), fast_options()) {
        Err(WandbError::Status { status, .. }) => assert_eq!(status, 307),
        Err(e) => panic!("expected the redirect to be refused, got {e}"),
        Ok(_) => panic!("expected the redirect to be refused, got a run"),
    }
    assert!(
        elsewhere.record().requests.is_empty(),
        "the other host was contacted"
    );
}

#[test]
fn run_handle_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Run>();
    let server = serve(Behaviour::default());
    let run =
        Run::start_with(settings(&server.url(), &[]), config(), fast_options()).expect("start");
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let run = &run;
            scope.spawn(move || run.log(t, metric("x", t as f64)));
        }
    });
    let report = run.finish(0, Duration::from_secs(10));
    assert_eq!(report.log_calls, 4);
    assert_eq!(
        report.rows_delivered + report.dropped_stale_step,
        4,
        "{report:?}"
    );
}

/// The steps of history lines, in offset order.
fn steps_of(lines: &[Value]) -> Vec<u64> {
    lines
        .iter()
        .map(|l| l["_step"].as_u64().expect("_step"))
        .collect()
}

#[test]
fn a_killed_run_resumed_from_an_older_checkpoint_sends_each_step_once() {
    let server = serve(Behaviour::default());
    let s = settings(&server.url(), &[("WANDB_RESUME", "allow")]);
    let a = Run::start_with(s.clone(), config(), fast_options()).expect("start A");
    for step in 1..=100 {
        a.log(step, metric("loss", step as f64));
    }
    // Killed: dropped without `finish`; its thread flushes and marks the run failed.
    drop(a);
    assert!(
        server.wait_for(Duration::from_secs(10), |r| r.complete.is_some()),
        "A's thread finished"
    );
    assert_eq!(server.record().complete, Some((true, 1)));

    // The resumed process replays from a checkpoint at step 50.
    let b = Run::start_with(s, config(), fast_options()).expect("start B");
    let info = b.info().expect("info");
    assert_eq!(
        (info.inserted, info.start_offset, info.last_step),
        (false, 100, Some(100))
    );
    for step in 50..=150 {
        b.log(step, metric("loss", step as f64 + 0.5));
    }
    let report = b.finish(0, Duration::from_secs(10));
    assert_all_delivered(&report, 50);
    assert_eq!(report.rows_already_on_server, 51, "{report:?}");

    let lines = lines_from(&server, 0);
    assert_eq!(steps_of(&lines), (1..=150).collect::<Vec<u64>>());
    for line in &lines[..100] {
        assert_eq!(
            line["loss"],
            json!(line["_step"].as_f64().unwrap()),
            "A's rows kept"
        );
    }
    let rec = server.record();
    assert!(
        rec.writes.values().all(|&n| n == 1),
        "no offset written twice: {:?}",
        rec.writes
    );
    let summary = rec.summary_value().expect("summary");
    assert_eq!(summary["_step"], json!(150));
    assert_eq!(summary["loss"], json!(150.5));
    assert_eq!(rec.complete, Some((true, 0)));
    assert_eq!(rec.upserts.len(), 2);
}

#[test]
fn a_hard_killed_run_resumes_without_losing_the_row_it_never_sent() {
    let server = serve(Behaviour::default());
    let s = settings(&server.url(), &[]);
    let a = Run::start_with(s.clone(), config(), fast_options()).expect("start A");
    for step in 1..=100 {
        a.log(step, metric("loss", step as f64));
    }
    // Rows 1..=99 are closed and streamed; row 100 stays open until a larger step or finish.
    assert!(
        server.wait_for(Duration::from_secs(10), |r| {
            r.history.len() == 99
                && r.summary_value()
                    .is_some_and(|s| s["_step"].as_u64() >= Some(99))
        }),
        "A streamed its closed rows"
    );
    // SIGKILL: no drop, no flush. The leaked thread has nothing left to send but heartbeats.
    std::mem::forget(a);

    let b = Run::start_with(s, config(), fast_options()).expect("start B");
    let info = b.info().expect("info");
    assert_eq!(
        (info.start_offset, info.last_step),
        (99, Some(99)),
        "the server's summary step is that of its last history row"
    );
    for step in 50..=150 {
        b.log(step, metric("loss", step as f64));
    }
    let report = b.finish(0, Duration::from_secs(10));
    assert_all_delivered(&report, 51);
    let lines = lines_from(&server, 0);
    assert_eq!(steps_of(&lines), (1..=150).collect::<Vec<u64>>());
}

#[test]
fn resuming_a_run_that_existed_before_skips_up_to_its_summary_step() {
    let server = serve(Behaviour {
        history_line_count: 17,
        inserted: false,
        summary_metrics: Some(
            r#"{"_step": 1000, "loss": 0.25, "val/acc": NaN, "_runtime": 3600.5}"#.to_owned(),
        ),
        ..Behaviour::default()
    });
    let s = settings(&server.url(), &[("WANDB_RESUME", "must")]);
    let run = Run::start_with(s, config(), fast_options()).expect("start");
    let info = run.info().expect("info");
    assert_eq!((info.start_offset, info.last_step), (17, Some(1000)));
    for step in 990..=1005 {
        run.log(step, metric("loss", step as f64));
    }
    let report = run.finish(0, Duration::from_secs(10));
    assert_all_delivered(&report, 5);
    assert_eq!(report.rows_already_on_server, 11);
    let lines = lines_from(&server, 17);
    assert_eq!(steps_of(&lines), (1001..=1005).collect::<Vec<u64>>());
    let summary = server.record().summary_value().expect("summary");
    assert_eq!(summary["_step"], json!(1005));
    assert_eq!(summary["loss"], json!(1005.0));
    assert_eq!(
        summary["val/acc"],
        json!("NaN"),
        "keys only the earlier session had are kept"
    );
}

#[test]
fn a_server_without_the_resume_fields_is_tolerated() {
    // A server answering neither `summaryMetrics` nor a step in it: nothing is skipped.
    let server = serve(Behaviour {
        history_line_count: 4,
        inserted: false,
        summary_metrics: Some("not json".to_owned()),
        ..Behaviour::default()
    });
    let run =
        Run::start_with(settings(&server.url(), &[]), config(), fast_options()).expect("start");
    assert_eq!(run.info().expect("info").last_step, None);
    for step in 0..3 {
        run.log(step, metric("loss", 1.0));
    }
    let report = run.finish(0, Duration::from_secs(10));
    assert_all_delivered(&report, 3);
    assert_eq!(steps_of(&lines_from(&server, 4)), vec![0, 1, 2]);
}

/// Gaps between consecutive `file_stream` requests the server saw, with the earlier status.
fn stream_gaps(server: &FakeServer) -> Vec<(u16, Duration)> {
    let rec = server.record();
    let stream: Vec<_> = rec
        .requests
        .iter()
        .filter(|r| r.path.ends_with("file_stream"))
        .collect();
    stream
        .windows(2)
        .map(|w| (w[0].status, w[1].at.duration_since(w[0].at)))
        .collect()
}

#[test]
fn retry_after_zero_is_floored_and_rows_survive_exhausted_rounds() {
    let floor = Duration::from_millis(100);
    let throttled = 8;
    let server = serve(Behaviour {
        stream_faults: (0..throttled)
            .map(|_| Fault::Status(429, Some("0")))
            .collect(),
        ..Behaviour::default()
    });
    let options = ClientOptions {
        min_retry_wait: floor,
        max_retry_wait: Duration::from_millis(400),
        // Rounds of 3 attempts: the 8 refusals span three rounds.
        max_attempts: 3,
        ..fast_options()
    };
    let run = Run::start_with(settings(&server.url(), &[]), config(), options).expect("start");
    for step in 0..20 {
        run.log(step, metric("loss", step as f64));
        std::thread::sleep(Duration::from_millis(10));
    }
    let report = run.finish(0, Duration::from_secs(20));
    assert_all_delivered(&report, 20);
    assert_eq!(
        steps_of(&lines_from(&server, 0)),
        (0..20).collect::<Vec<u64>>()
    );

    let gaps = stream_gaps(&server);
    let after_429: Vec<Duration> = gaps
        .iter()
        .filter(|(status, _)| *status == 429)
        .map(|&(_, gap)| gap)
        .collect();
    assert_eq!(after_429.len(), throttled, "{gaps:?}");
    assert!(
        after_429.iter().all(|&gap| gap >= floor),
        "every retry waited at least the floor: {gaps:?}"
    );
    let rec = server.record();
    let refused: Vec<Instant> = rec
        .requests
        .iter()
        .filter(|r| r.status == 429)
        .map(|r| r.at)
        .collect();
    let span = refused[refused.len() - 1].duration_since(refused[0]);
    let rate = (refused.len() - 1) as f64 / span.as_secs_f64();
    assert!(
        rate <= 1.0 / floor.as_secs_f64(),
        "{rate:.1} attempts/s over {span:?}"
    );
    assert_eq!(rec.complete, Some((true, 0)));
}

#[test]
fn backoff_keeps_growing_across_rounds_until_the_server_recovers() {
    let min = Duration::from_millis(40);
    let server = serve(Behaviour {
        stream_faults: (0..6).map(|_| Fault::Status(503, None)).collect(),
        ..Behaviour::default()
    });
    let options = ClientOptions {
        min_retry_wait: min,
        max_retry_wait: Duration::from_secs(2),
        max_attempts: 2,
        ..fast_options()
    };
    let run = Run::start_with(settings(&server.url(), &[]), config(), options).expect("start");
    for step in 0..5 {
        run.log(step, metric("loss", step as f64));
    }
    let report = run.finish(0, Duration::from_secs(30));
    assert_all_delivered(&report, 5);
    let gaps = stream_gaps(&server);
    let failed: Vec<Duration> = gaps
        .iter()
        .filter(|(status, _)| *status == 503)
        .map(|&(_, gap)| gap)
        .collect();
    assert_eq!(failed.len(), 6, "{gaps:?}");
    // After failure i the wait is at least max(min, min * 2^i / 2): the rounds of two attempts
    // do not restart the backoff.
    for (i, gap) in failed.iter().enumerate() {
        let least = min.max(min * (1 << i) / 2);
        assert!(*gap >= least, "gap {i} {gap:?} < {least:?}: {gaps:?}");
    }
    assert!(failed[5] >= Duration::from_millis(640), "{gaps:?}");
}

#[test]
fn a_failing_server_at_the_finish_deadline_is_reported_with_its_last_failure() {
    let server = serve(Behaviour {
        stream_faults: (0..1000).map(|_| Fault::Status(503, None)).collect(),
        ..Behaviour::default()
    });
    let options = ClientOptions {
        max_attempts: 2,
        ..fast_options()
    };
    let run = Run::start_with(settings(&server.url(), &[]), config(), options).expect("start");
    run.log(0, metric("loss", 1.0));
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let report = run.finish(0, Duration::from_millis(800));
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(report.rows_delivered, 0, "{report:?}");
    assert!(!report.completed);
    let failure = report.failure.as_deref().unwrap_or("");
    assert!(failure.contains("HTTP 503"), "{report:?}");
}

#[test]
fn names_the_server_chooses_cannot_send_the_key_to_another_host() {
    let elsewhere = serve(Behaviour::default());
    let server = serve(Behaviour {
        default_entity: format!("@{}/graphql?x=", elsewhere.addr()),
        ..Behaviour::default()
    });
    let run =
        Run::start_with(settings(&server.url(), &[]), config(), fast_options()).expect("start");
    run.log(0, metric("loss", 1.0));
    let _ = run.finish(0, Duration::from_secs(5));
    assert!(
        elsewhere.record().requests.is_empty(),
        "the other host was contacted"
    );
    let rec = server.record();
    assert!(
        rec.requests.iter().any(|r| r.path.contains("file_stream")),
        "the stream went to the base host: {:?}",
        rec.requests
    );
    assert!(rec.requests.iter().all(|r| r.auth_ok));
}

#[test]
fn a_base_url_with_credentials_is_refused_before_anything_is_sent() {
    let server = serve(Behaviour::default());
    let with_credentials = server.url().replace("http://", "http://user:pw@");
    let env: HashMap<&str, &str> = [
        ("WANDB_API_KEY", KEY),
        ("WANDB_BASE_URL", with_credentials.as_str()),
    ]
    .into_iter()
    .collect();
    let err = Settings::from_lookup(&Defaults::default(), |k| env.get(k).map(|v| v.to_string()))
        .expect_err("refused");
    let mut s = settings(&server.url(), &[]);
    s.base_url = with_credentials.clone();
    let debug = format!("{s:?}");
    let Err(start_err) = Run::start_with(s, config(), fast_options()) else {
        panic!("started with credentials in the base URL");
    };
    for e in [&err, &start_err] {
        assert!(matches!(e, WandbError::InvalidSetting { key, .. } if key == "WANDB_BASE_URL"));
    }
    for text in [
        err.to_string(),
        format!("{err:?}"),
        start_err.to_string(),
        format!("{start_err:?}"),
        debug,
    ] {
        assert!(!text.contains("pw") && !text.contains("user"), "{text}");
    }
    assert!(err.to_string().contains("WANDB_BASE_URL"));
    assert!(server.record().requests.is_empty());
}
