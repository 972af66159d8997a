//! How a run's W&B settings are resolved from the environment and the configuration (flags are
//! merged into the configuration before this point, as the binary does), when W&B stays off, and
//! how the W&B sink encodes the trainer's rows.

mod wandb_common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use trainer::sink::{WandbSink, row};
use trainer::wandb::{self, RUN_ID_FILE, WandbOptions};
use trainer::{MetricsSink, TrainError};
use wandb_common::{fast_options, lookup, tiny_config};
use wandb_fake::{Behaviour, FakeServer, TEST_API_KEY};
use wandb_http::{Mode, Resume};

#[test]
fn project_comes_from_env_then_flag_then_config_then_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = tiny_config(dir.path(), 1);
    let project = |cfg: &trainer::RunConfig, vars: &[(&str, &str)]| {
        wandb::settings_with(cfg, false, lookup(vars))
            .expect("settings")
            .project
    };
    assert_eq!(project(&cfg, &[]), "cfg-project");
    cfg.set("project", "flag-project", "--wandb_project")
        .expect("flag");
    assert_eq!(project(&cfg, &[]), "flag-project");
    assert_eq!(
        project(&cfg, &[("WANDB_PROJECT", "env-project")]),
        "env-project"
    );
    assert_eq!(
        project(&cfg, &[("WANDB_PROJECT", "")]),
        "flag-project",
        "an empty variable counts as unset"
    );
    assert_eq!(
        project(&trainer::RunConfig::default(), &[]),
        "emergent_analogy"
    );
    cfg.wandb.project = "  ".into();
    assert_eq!(project(&cfg, &[]), "emergent_analogy");
}

#[test]
fn run_name_comes_from_env_then_flag_then_config_then_unix_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = tiny_config(dir.path(), 1);
    let name = |cfg: &trainer::RunConfig, vars: &[(&str, &str)]| {
        wandb::settings_with(cfg, false, lookup(vars))
            .expect("settings")
            .display_name
            .expect("a display name is always set")
    };
    assert_eq!(name(&cfg, &[]), "cfg-run");
    cfg.set("run_name", "flag-run", "--wandb_run")
        .expect("flag");
    assert_eq!(name(&cfg, &[]), "flag-run");
    assert_eq!(name(&cfg, &[("WANDB_NAME", "env-name")]), "env-name");
    assert_eq!(
        name(
            &cfg,
            &[
                ("WANDB_NAME", "env-name"),
                ("WANDB_RUN_NAME", "env-run-name")
            ]
        ),
        "env-run-name",
        "WANDB_RUN_NAME beats WANDB_NAME"
    );
    cfg.wandb.run_name = None;
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let fallback = name(&cfg, &[]);
    let secs: u64 = fallback
        .strip_prefix("run_")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{fallback:?} is not run_<unix time>"));
    assert!(
        (before..=before + 5).contains(&secs),
        "{secs} vs now {before}"
    );
}

#[test]
fn online_exactly_with_a_key_and_nothing_disabling_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = tiny_config(dir.path(), 1);
    let online = |cfg: &trainer::RunConfig, vars: &[(&str, &str)]| {
        wandb::settings_with(cfg, false, lookup(vars))
            .expect("settings")
            .is_online()
    };
    let key = ("WANDB_API_KEY", "k");
    assert!(online(&cfg, &[key]));
    assert!(!online(&cfg, &[]), "no key, no W&B");
    for mode in ["disabled", "offline", "dryrun", "OFFLINE"] {
        assert!(!online(&cfg, &[key, ("WANDB_MODE", mode)]), "{mode}");
    }
    assert!(online(&cfg, &[key, ("WANDB_MODE", "online")]));
    cfg.wandb.use_wandb = false;
    assert!(!online(&cfg, &[key]), "use_wandb = false / --no_wandb");
    let s = wandb::settings_with(&cfg, false, lookup(&[key, ("WANDB_MODE", "online")]))
        .expect("settings");
    assert_eq!(
        s.mode,
        Mode::Disabled,
        "no variable re-enables a disabled run"
    );
}

#[test]
fn an_unknown_wandb_mode_is_a_configuration_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = tiny_config(dir.path(), 1);
    match wandb::settings_with(&cfg, false, lookup(&[("WANDB_MODE", "sometimes")])) {
        Err(TrainError::Wandb(e)) => assert!(e.to_string().contains("WANDB_MODE"), "{e}"),
        other => panic!("expected a W&B settings error, got {other:?}"),
    }
}

#[test]
fn sweep_variables_are_honoured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = tiny_config(dir.path(), 1);
    let s = wandb::settings_with(
        &cfg,
        false,
        lookup(&[
            ("WANDB_SWEEP_ID", "sw1"),
            ("WANDB_RUN_ID", "agent01"),
            ("WANDB_ENTITY", "team"),
        ]),
    )
    .expect("settings");
    assert_eq!(s.sweep_id.as_deref(), Some("sw1"));
    assert_eq!(s.run_id, "agent01");
    assert_eq!(s.entity.as_deref(), Some("team"));
}

#[test]
fn resume_reuses_the_stored_run_id_unless_the_environment_names_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = tiny_config(dir.path(), 1);
    std::fs::create_dir_all(&cfg.train.save_dir).expect("save_dir");
    std::fs::write(cfg.train.save_dir.join(RUN_ID_FILE), "stored7\n").expect("write");
    let resumed = wandb::settings_with(&cfg, true, lookup(&[])).expect("settings");
    assert_eq!(resumed.run_id, "stored7");
    assert_eq!(resumed.resume, Some(Resume::Allow));
    let fresh = wandb::settings_with(&cfg, false, lookup(&[])).expect("settings");
    assert_ne!(fresh.run_id, "stored7", "a new run gets a new id");
    assert_eq!(fresh.resume, None);
    assert_eq!(fresh.run_id.len(), 8);
    let agent =
        wandb::settings_with(&cfg, true, lookup(&[("WANDB_RUN_ID", "agent02")])).expect("settings");
    assert_eq!(agent.run_id, "agent02");
    std::fs::remove_file(cfg.train.save_dir.join(RUN_ID_FILE)).expect("remove");
    let nothing_stored = wandb::settings_with(&cfg, true, lookup(&[])).expect("settings");
    assert_eq!(nothing_stored.resume, None, "nothing to resume: a new run");
}

#[test]
fn w_and_b_off_starts_nothing_and_contacts_no_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start(Behaviour::default()).expect("fake server");
    let url = server.url();
    let mut cfg = tiny_config(dir.path(), 1);
    // (what, variables, use_wandb)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, bool);
    let cases: [Case<'_>; 3] = [
        ("no key", vec![("WANDB_BASE_URL", &url)], true),
        (
            "WANDB_MODE=disabled",
            vec![
                ("WANDB_API_KEY", TEST_API_KEY),
                ("WANDB_BASE_URL", &url),
                ("WANDB_MODE", "disabled"),
            ],
            true,
        ),
        (
            "use_wandb = false",
            vec![("WANDB_API_KEY", TEST_API_KEY), ("WANDB_BASE_URL", &url)],
            false,
        ),
    ];
    for (what, vars, use_wandb) in cases {
        cfg.wandb.use_wandb = use_wandb;
        let sink = wandb::start_with(&cfg, false, lookup(&vars), &fast_options()).expect(what);
        assert!(sink.is_none(), "{what}");
    }
    assert!(server.record().requests.is_empty());
    assert!(!cfg.train.save_dir.join(RUN_ID_FILE).exists());
}

#[test]
fn the_sink_sends_non_finite_metrics_as_nan_and_integers_as_integers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = tiny_config(dir.path(), 1);
    let server = FakeServer::start(Behaviour::default()).expect("fake server");
    let options = WandbOptions {
        finish_deadline: Duration::from_secs(5),
        ..fast_options()
    };
    let mut sink: WandbSink = wandb::start_with(
        &cfg,
        false,
        lookup(&[
            ("WANDB_API_KEY", TEST_API_KEY),
            ("WANDB_BASE_URL", &server.url()),
        ]),
        &options,
    )
    .expect("settings")
    .expect("online");
    let url = sink.url().expect("created within the start wait");
    assert!(url.starts_with(&server.url()) && url.ends_with(&sink.run_id().expect("id")));
    let values = [
        ("train/CE_last".to_string(), f64::NAN),
        ("train/ACC_last".to_string(), 0.25),
        ("lr".to_string(), 3e-3),
        ("val_N/total".to_string(), 12.0),
    ];
    let local = row(5, Some(1), &values);
    assert_eq!(local["train/CE_last"], serde_json::Value::Null);
    sink.log(5, &local);
    let handle = sink.report_handle();
    assert!(handle.get().is_none());
    sink.finish(0);
    let report = handle.get().expect("finished");
    assert_eq!((report.rows, report.rows_delivered), (1, 1));
    assert_eq!(sink.run_id(), None, "finished once");
    sink.finish(1);

    let rec = server.record();
    let line = &rec.history[&0];
    assert!(line.contains(r#""train/CE_last":NaN"#), "{line}");
    assert!(line.contains(r#""global_step":5,"#), "{line}");
    assert!(line.contains(r#""epoch":1,"#), "{line}");
    assert!(line.contains(r#""val_N/total":12.0"#), "{line}");
    let parsed = wandb_fake::parse_line(line);
    assert_eq!(parsed["train/ACC_last"], serde_json::json!(0.25));
    assert_eq!(parsed["lr"], serde_json::json!(3e-3));
    assert_eq!(
        rec.complete,
        Some((true, 0)),
        "a second finish sends nothing"
    );
    let summary = rec.summary_value().expect("summary");
    assert_eq!(summary["train/CE_last"], serde_json::json!("NaN"));
}
