//! Tiny training runs streaming to the fake W&B server on loopback: every `metrics.jsonl` row
//! reaches the run's history at its global step, the summary and exit code arrive, retries
//! deliver everything, an unreachable or stalled server does not slow training, `--resume`
//! continues the same W&B run, failed runs finish with a non-zero exit code, and each member of
//! an ensemble streams to its own W&B run.
//!
//! Training runs are serialised by a lock: libtorch's thread setting is process-wide, and the
//! wall-time comparisons need a quiet machine.

mod wandb_common;

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use trainer::sink::FinishReportHandle;
use trainer::wandb::{self, RUN_ID_FILE, WandbOptions};
use trainer::{MetricsSink, RunConfig, RunOptions, TrainError};
use wandb_common::{fast_options, lookup, tiny_config};
use wandb_fake::{Behaviour, FakeServer, Fault, TEST_API_KEY};

static TRAINING: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    TRAINING.lock().unwrap_or_else(PoisonError::into_inner)
}

fn serve(behaviour: Behaviour) -> FakeServer {
    FakeServer::start(behaviour).expect("fake server on loopback")
}

/// Starts W&B for `cfg` against `url` (plus `extra` variables) and trains; returns the training
/// outcome, the sink's report handle and the wall time of start + training + finish.
fn train_with_wandb(
    cfg: &RunConfig,
    url: &str,
    extra: &[(&str, &str)],
    options: &WandbOptions,
    opts: RunOptions,
) -> (
    Result<trainer::RunSummary, TrainError>,
    FinishReportHandle,
    Duration,
) {
    let mut vars = vec![("WANDB_API_KEY", TEST_API_KEY), ("WANDB_BASE_URL", url)];
    vars.extend_from_slice(extra);
    let t = Instant::now();
    let sink = wandb::start_with(cfg, opts.resume, lookup(&vars), options)
        .expect("settings")
        .expect("online");
    let handle = sink.report_handle();
    let mut extra_sinks: Vec<Box<dyn MetricsSink>> = vec![Box::new(sink)];
    let opts = RunOptions {
        extra_sinks: {
            let mut all = opts.extra_sinks.into_iter().next().unwrap_or_default();
            all.append(&mut extra_sinks);
            vec![all]
        },
        quiet: true,
        ..opts
    };
    let outcome = trainer::run(cfg.clone(), opts);
    (outcome, handle, t.elapsed())
}

fn quiet() -> RunOptions {
    RunOptions {
        quiet: true,
        ..RunOptions::default()
    }
}

fn metrics_rows(save_dir: &Path) -> Vec<Map<String, Value>> {
    std::fs::read_to_string(save_dir.join("metrics.jsonl"))
        .expect("metrics.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match serde_json::from_str(l) {
            Ok(Value::Object(m)) => m,
            other => panic!("metrics line {l:?} is not an object: {other:?}"),
        })
        .collect()
}

/// The local rows merged per `global_step`, as W&B merges logs of one step into one row.
fn merged_by_step(rows: &[Map<String, Value>]) -> BTreeMap<u64, Map<String, Value>> {
    let mut out: BTreeMap<u64, Map<String, Value>> = BTreeMap::new();
    let mut last = 0;
    for row in rows {
        let step = row["global_step"].as_u64().expect("global_step");
        assert!(
            step >= last,
            "local steps never go back: {step} after {last}"
        );
        last = step;
        out.entry(step).or_default().extend(row.clone());
    }
    out
}

/// A local value as it must read in a history line parsed by `wandb_fake::parse_line`: a local
/// `null` is a non-finite metric, sent as `NaN`.
fn as_sent(local: &Value) -> Value {
    match local {
        Value::Null => json!("NaN"),
        v => v.clone(),
    }
}

fn same_value(local: &Value, remote: &Value) -> bool {
    match (as_sent(local), remote) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (a, b) => &a == b,
    }
}

/// Asserts the server holds exactly one history line per local step, from offset 0, with the
/// same keys and values, each line written once; and the summary holds the latest values.
fn assert_history_matches(server: &FakeServer, save_dir: &Path) -> usize {
    let merged = merged_by_step(&metrics_rows(save_dir));
    assert!(!merged.is_empty(), "the run logged rows");
    let rec = server.record();
    let offsets: Vec<u64> = rec.history.keys().copied().collect();
    assert_eq!(
        offsets,
        (0..merged.len() as u64).collect::<Vec<_>>(),
        "one history line per local step, contiguous from 0"
    );
    assert!(
        rec.writes.values().all(|&n| n == 1),
        "no line overwritten: {:?}",
        rec.writes
    );
    let lines = rec.history_values();
    for ((step, local), line) in merged.iter().zip(&lines) {
        assert_eq!(line["_step"], json!(step), "{line}");
        assert!(line["_runtime"].is_f64() && line["_timestamp"].is_f64());
        let remote: BTreeMap<&String, &Value> = line
            .as_object()
            .expect("object")
            .iter()
            .filter(|(k, _)| !k.starts_with('_'))
            .collect();
        let local_keys: Vec<&String> = local.keys().collect();
        let remote_keys: Vec<&String> = remote.keys().copied().collect();
        assert_eq!(local_keys, remote_keys, "keys at step {step}");
        for (k, v) in local {
            assert!(
                same_value(v, remote[k]),
                "step {step} key {k}: local {v}, W&B {}",
                remote[k]
            );
        }
    }
    let summary = rec.summary_value().expect("summary delivered");
    let (&last_step, _) = merged.iter().next_back().expect("rows");
    assert_eq!(summary["_step"], json!(last_step));
    let mut latest: BTreeMap<&String, &Value> = BTreeMap::new();
    for row in merged.values() {
        latest.extend(row.iter());
    }
    for (k, v) in latest {
        assert!(
            same_value(v, &summary[k]),
            "summary {k}: local {v}, W&B {}",
            summary[k]
        );
    }
    merged.len()
}

#[test]
fn every_local_row_reaches_history_with_its_step_and_the_run_finishes_ok() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = tiny_config(dir.path(), 4);
    let server = serve(Behaviour::default());
    let (outcome, handle, _) = train_with_wandb(
        &cfg,
        &server.url(),
        &[
            ("WANDB_PROJECT", "env-project"),
            ("WANDB_NAME", "env-name"),
            ("WANDB_SWEEP_ID", "sweep-7"),
        ],
        &fast_options(),
        quiet(),
    );
    let summary = outcome.expect("training");
    assert_eq!(summary.epochs, 4);

    let lines = assert_history_matches(&server, &cfg.train.save_dir);
    let rows = metrics_rows(&cfg.train.save_dir);
    assert!(
        lines < rows.len(),
        "some local rows share a step and were merged ({lines} lines, {} rows)",
        rows.len()
    );
    assert!(
        rows.iter().any(|r| r.contains_key("val/macro/CE"))
            && rows.iter().any(|r| r.contains_key("train/CE_last")),
        "both batch and epoch rows were logged"
    );

    let rec = server.record();
    assert_eq!(rec.complete, Some((true, 0)));
    assert!(rec.requests.iter().all(|r| r.auth_ok));
    assert!(rec.wrong_paths.is_empty(), "{:?}", rec.wrong_paths);
    assert_eq!(rec.upserts.len(), 1);
    let v = &rec.upserts[0];
    assert_eq!(
        v["project"], "env-project",
        "WANDB_PROJECT beats the config"
    );
    assert_eq!(v["displayName"], "env-name", "WANDB_NAME beats the config");
    assert_eq!(v["sweep"], "sweep-7");
    let run_id = std::fs::read_to_string(cfg.train.save_dir.join(RUN_ID_FILE)).expect("run id");
    assert_eq!(v["name"], json!(run_id.trim()));
    let config: Value =
        serde_json::from_str(v["config"].as_str().expect("config is a JSON string"))
            .expect("config JSON");
    let config = config.as_object().expect("object");
    assert_eq!(config["lr"], json!({"value": 3e-3}));
    assert_eq!(config["batch_size"], json!({"value": 16}));
    assert_eq!(config["num_entities"], json!({"value": 8}));
    assert_eq!(config["d_model"], json!({"value": 32}));
    assert_eq!(config["epochs"], json!({"value": 4}));
    assert_eq!(config["project"], json!({"value": "cfg-project"}));
    assert!(
        config.values().all(|w| w
            .as_object()
            .is_some_and(|o| o.len() == 1 && !o["value"].is_object())),
        "flat keys, each wrapped once: {config:?}"
    );
    drop(rec);

    let report = handle.get().expect("the sink finished");
    assert_eq!(report.rows, lines as u64, "{report:?}");
    assert_eq!(report.rows_delivered, lines as u64, "{report:?}");
    assert!(report.completed && report.summary_delivered && !report.timed_out);
    assert_eq!(report.dropped_stale_step, 0, "{report:?}");
    assert_eq!(report.log_calls, rows.len() as u64);
}

#[test]
fn throttling_and_server_errors_with_retry_after_lose_nothing() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = tiny_config(dir.path(), 3);
    let server = serve(Behaviour {
        graphql_faults: VecDeque::from([Fault::Status(500, Some("0"))]),
        stream_faults: VecDeque::from([
            Fault::Status(429, Some("0.3")),
            Fault::Status(500, Some("0")),
            Fault::Status(429, Some("0")),
            Fault::Status(503, None),
        ]),
        ..Behaviour::default()
    });
    let (outcome, handle, _) = train_with_wandb(&cfg, &server.url(), &[], &fast_options(), quiet());
    outcome.expect("training");
    let lines = assert_history_matches(&server, &cfg.train.save_dir);
    let rec = server.record();
    assert_eq!(rec.complete, Some((true, 0)));
    let statuses: Vec<u16> = rec.requests.iter().map(|r| r.status).collect();
    assert_eq!(&statuses[..2], &[500, 200], "upsert retried: {statuses:?}");
    assert_eq!(
        &statuses[2..6],
        &[429, 500, 429, 503],
        "stream faults served: {statuses:?}"
    );
    let waited = rec.requests[3].at.duration_since(rec.requests[2].at);
    assert!(
        waited >= Duration::from_millis(280),
        "Retry-After 0.3 s honoured: {waited:?}"
    );
    drop(rec);
    let report = handle.get().expect("finished");
    assert_eq!(report.rows_delivered, lines as u64, "{report:?}");
    assert_eq!(report.rows_lost, 0, "{report:?}");
}

#[test]
fn a_stalled_or_down_server_does_not_slow_training_and_local_metrics_are_complete() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let epochs = 6;
    let base_cfg = tiny_config(&dir.path().join("base"), epochs);
    // Generated once, outside the timings.
    trainer::train::load_or_generate(&base_cfg).expect("dataset");
    let t = Instant::now();
    trainer::run(base_cfg.clone(), quiet()).expect("training without W&B");
    let baseline = t.elapsed();
    let base_rows = metrics_rows(&base_cfg.train.save_dir);
    let shape = |rows: &[Map<String, Value>]| -> Vec<(u64, Vec<String>)> {
        rows.iter()
            .map(|r| {
                (
                    r["global_step"].as_u64().unwrap_or(u64::MAX),
                    r.keys().cloned().collect(),
                )
            })
            .collect()
    };

    let options = WandbOptions {
        client: wandb_http::ClientOptions {
            start_wait: Duration::from_millis(300),
            request_timeout: Duration::from_millis(500),
            ..fast_options().client
        },
        finish_deadline: Duration::from_secs(1),
        ..WandbOptions::default()
    };
    let stalled = serve(Behaviour {
        hang_all: Some(Duration::from_secs(30)),
        ..Behaviour::default()
    });
    let down = wandb_fake::dead_url().expect("free port");
    for (what, url) in [("stalled", stalled.url()), ("down", down)] {
        let mut cfg = base_cfg.clone();
        cfg.train.save_dir = dir.path().join(what);
        let (outcome, handle, took) = train_with_wandb(&cfg, &url, &[], &options, quiet());
        outcome.unwrap_or_else(|e| panic!("{what}: training failed: {e}"));
        let bound = baseline * 2 + Duration::from_secs(3);
        assert!(
            took < bound,
            "{what}: {took:?} with W&B vs {baseline:?} without (bound {bound:?})"
        );
        let rows = metrics_rows(&cfg.train.save_dir);
        assert_eq!(
            shape(&rows),
            shape(&base_rows),
            "{what}: metrics.jsonl complete"
        );
        let report = handle.get().expect("finished");
        assert_eq!(report.rows_delivered, 0, "{what}: {report:?}");
        assert!(!report.completed, "{what}: {report:?}");
        assert_eq!(report.log_calls, rows.len() as u64, "{what}: {report:?}");
    }
    assert!(stalled.record().history.is_empty());
}

#[test]
fn resume_continues_the_same_wandb_run_after_its_history() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = serve(Behaviour::default());
    let first = tiny_config(dir.path(), 2);
    let (outcome, _, _) = train_with_wandb(&first, &server.url(), &[], &fast_options(), quiet());
    outcome.expect("first part");
    let first_lines = server.record().history.len() as u64;
    assert!(first_lines > 0);
    let run_id = wandb::read_run_id(&first.train.save_dir).expect("run id kept");

    let mut second = first.clone();
    second.train.epochs = 4;
    let opts = RunOptions {
        resume: true,
        ..quiet()
    };
    let (outcome, handle, _) = train_with_wandb(&second, &server.url(), &[], &fast_options(), opts);
    let summary = outcome.expect("resumed part");
    assert_eq!((summary.epochs, summary.epochs_this_run), (4, 2));

    let total = assert_history_matches(&server, &second.train.save_dir);
    let rec = server.record();
    assert!(total as u64 > first_lines);
    let names: Vec<&Value> = rec.upserts.iter().map(|u| &u["name"]).collect();
    assert_eq!(names, vec![&json!(run_id), &json!(run_id)], "same W&B run");
    assert_eq!(rec.complete, Some((true, 0)));
    drop(rec);
    let report = handle.get().expect("finished");
    assert_eq!(
        report.rows_delivered,
        total as u64 - first_lines,
        "the resumed session sent only its own lines: {report:?}"
    );
}

/// A run killed after its checkpoint at epoch 4 had streamed up to epoch 8; resumed from that
/// checkpoint, it replays epochs 5 to 8: W&B receives none of them twice and no step goes back.
#[test]
fn a_run_resumed_from_an_older_checkpoint_sends_no_step_twice() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = serve(Behaviour::default());
    let mut cfg = tiny_config(dir.path(), 8);
    cfg.train.save_every = 4;
    let (outcome, _, _) = train_with_wandb(&cfg, &server.url(), &[], &fast_options(), quiet());
    outcome.expect("first part");
    let steps = || -> Vec<u64> {
        server
            .record()
            .history_values()
            .iter()
            .filter_map(|l| l["_step"].as_u64())
            .collect()
    };
    let streamed = steps();
    // The kill: `last` (epoch 8) is gone, the newest valid checkpoint is epoch004.
    for newer in ["last", "best", "epoch008"] {
        std::fs::remove_dir_all(cfg.train.save_dir.join("checkpoints").join(newer)).unwrap();
    }
    let opts = RunOptions {
        resume: true,
        ..quiet()
    };
    let (outcome, _, _) = train_with_wandb(&cfg, &server.url(), &[], &fast_options(), opts);
    assert_eq!(outcome.expect("resumed part").epochs_this_run, 4);
    let steps = steps();
    assert_eq!(
        steps, streamed,
        "the replayed steps were already on the server"
    );
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
    // And the local record holds each step's rows once, as W&B does.
    assert_history_matches(&server, &cfg.train.save_dir);
}

#[test]
fn an_interrupted_run_finishes_the_wandb_run_as_failed() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = tiny_config(dir.path(), 3);
    let server = serve(Behaviour::default());
    let opts = RunOptions {
        interrupt: Some(Arc::new(AtomicBool::new(true))),
        ..quiet()
    };
    let (outcome, handle, _) = train_with_wandb(&cfg, &server.url(), &[], &fast_options(), opts);
    assert!(
        matches!(outcome, Err(TrainError::Interrupted)),
        "{outcome:?}"
    );
    assert_eq!(server.record().complete, Some((true, 130)));
    assert!(handle.get().expect("finished").completed);
}

#[test]
fn a_run_failing_before_training_marks_the_wandb_run_failed() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = tiny_config(dir.path(), 3);
    let server = serve(Behaviour::default());
    let mut bad = cfg.clone();
    // Started with a good config, then handed a bad one: the run stops at validation and the
    // sink is dropped without `finish`.
    bad.train.batch_size = 0;
    let sink = wandb::start_with(
        &cfg,
        false,
        lookup(&[
            ("WANDB_API_KEY", TEST_API_KEY),
            ("WANDB_BASE_URL", &server.url()),
        ]),
        &fast_options(),
    )
    .expect("settings")
    .expect("online");
    let outcome = trainer::run(
        bad,
        RunOptions {
            extra_sinks: vec![vec![Box::new(sink)]],
            ..quiet()
        },
    );
    assert!(
        matches!(outcome, Err(TrainError::Config { .. })),
        "{outcome:?}"
    );
    assert!(
        server.wait_for(Duration::from_secs(5), |r| r.complete.is_some()),
        "the exit code arrived"
    );
    let (complete, exit_code) = server.record().complete.expect("complete");
    assert!(complete);
    assert_ne!(exit_code, 0);
}

#[test]
fn each_ensemble_member_streams_to_its_own_wandb_run() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfgs = Vec::new();
    for (i, seed) in [3u64, 4].into_iter().enumerate() {
        let mut cfg = tiny_config(dir.path(), 4);
        cfg.train.save_dir = dir.path().join(format!("member{i}"));
        cfg.train.seed = seed;
        cfgs.push(cfg);
    }
    // One fake server per member, so each member's W&B run can be checked on its own.
    let servers = [serve(Behaviour::default()), serve(Behaviour::default())];
    let mut sinks = Vec::new();
    let mut handles = Vec::new();
    for (cfg, server) in cfgs.iter().zip(&servers) {
        let url = server.url();
        let vars = [
            ("WANDB_API_KEY", TEST_API_KEY),
            ("WANDB_BASE_URL", url.as_str()),
        ];
        let sink = wandb::start_with(cfg, false, lookup(&vars), &fast_options())
            .expect("settings")
            .expect("online");
        handles.push(sink.report_handle());
        sinks.push(vec![Box::new(sink) as Box<dyn MetricsSink>]);
    }
    let summaries = trainer::run_members(
        cfgs.clone(),
        RunOptions {
            extra_sinks: sinks,
            quiet: true,
            ..Default::default()
        },
    )
    .expect("ensemble");
    assert!(summaries.iter().all(Result::is_ok), "{summaries:?}");
    assert_eq!(summaries.len(), 2);
    let mut run_ids = Vec::new();
    for ((cfg, server), handle) in cfgs.iter().zip(&servers).zip(&handles) {
        let lines = assert_history_matches(server, &cfg.train.save_dir);
        let rec = server.record();
        assert_eq!(rec.complete, Some((true, 0)));
        assert_eq!(rec.upserts.len(), 1);
        let config: Value =
            serde_json::from_str(rec.upserts[0]["config"].as_str().expect("config string"))
                .expect("config JSON");
        assert_eq!(config["seed"], json!({"value": cfg.train.seed}));
        run_ids.push(rec.upserts[0]["name"].clone());
        let report = handle.get().expect("the sink finished");
        assert_eq!(report.rows_delivered, lines as u64, "{report:?}");
    }
    assert_ne!(run_ids[0], run_ids[1], "two W&B runs");
}

#[test]
fn the_run_config_on_wandb_carries_the_provenance() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = tiny_config(dir.path(), 1);
    let server = serve(Behaviour::default());
    let mut options = fast_options();
    options.extra_config.insert(
        "provenance".into(),
        json!({"git_commit": "abc", "host": "h"}),
    );
    let (outcome, _, _) = train_with_wandb(&cfg, &server.url(), &[], &options, quiet());
    outcome.expect("run");
    let rec = server.record();
    let config: Value =
        serde_json::from_str(rec.upserts[0]["config"].as_str().expect("config string")).unwrap();
    assert_eq!(
        config["provenance"],
        json!({"value": {"git_commit": "abc", "host": "h"}})
    );
    assert_eq!(
        config["lr"]["value"],
        json!(cfg.train.lr),
        "the flat keys stay"
    );
}
