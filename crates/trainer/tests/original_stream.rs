//! `rng = "torch"` against runs of the Python original (`tests/fixtures/original-run-e10/` and
//! `original-run-e10-dropout/`, written by `scripts/original-run-fixture.py`: the original's
//! `train()` on the repository's original-made dataset, seed 42, its default hyper-parameters,
//! one CPU thread; 100 epochs, and 30 with dropout 0.1): the initial weights are the original's
//! bit for bit, the epochs visit the rows in the original's order, and training follows the
//! original's logged rows (every type's ACC identical at every epoch, PROB within 1e-4; on the
//! machine kind the fixtures were made on, every logged value is the original's bit for bit,
//! which the tests print). A resumed run equals the uninterrupted one, and what the stream cannot
//! reproduce is refused naming the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tch::{Device, Kind, nn::VarStore};
use trainer::config::TrainRng;
use trainer::{DeviceChoice, GeometrySchedule, MetricsSink, RunConfig, RunOptions, TrainError};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture() -> PathBuf {
    repo().join("tests/fixtures/original-run-e10")
}

fn dropout_fixture() -> PathBuf {
    repo().join("tests/fixtures/original-run-e10-dropout")
}

fn dataset() -> PathBuf {
    repo().join("tests/fixtures/python-dataset-e10")
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn rows(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// libtorch's generator is global to the process: tests that draw from it take this lock.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    TORCH_RNG
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn quiet() -> RunOptions {
    RunOptions {
        quiet: true,
        ..RunOptions::default()
    }
}

/// The run of the fixture in `fixture`: `configs/original.toml` with the settings the original
/// ran with (its `default.yaml` has two layers), on the original's stream, one thread, on the
/// CPU, `epochs` epochs, nothing but the metrics log.
fn run_of(fixture: &Path, save_dir: &Path, epochs: usize) -> RunConfig {
    let mut cfg = RunConfig::from_file(&repo().join("configs/original.toml")).unwrap();
    let recorded = &json(&fixture.join("initial-weights.json"))["config"];
    cfg.model.n_layer = recorded["n_layer"].as_i64().unwrap();
    cfg.model.d_model = recorded["d_model"].as_i64().unwrap();
    cfg.model.n_head = recorded["n_head"].as_i64().unwrap();
    cfg.model.max_len = recorded["max_len"].as_i64().unwrap();
    cfg.model.dropout = recorded["dropout"].as_f64().unwrap();
    cfg.train.data_dir = dataset();
    cfg.train.save_dir = save_dir.to_path_buf();
    cfg.train.rng = TrainRng::Torch;
    cfg.train.seed = 42;
    cfg.train.epochs = epochs;
    cfg.train.threads = 1;
    cfg.train.device = DeviceChoice::Cpu;
    cfg.train.geometry = GeometrySchedule::Off;
    cfg.train.pca_steps = Vec::new();
    cfg.train.plots = false;
    cfg.wandb.use_wandb = false;
    cfg
}

/// [`run_of`] the dropout-free fixture.
fn original_run(save_dir: &Path, epochs: usize) -> RunConfig {
    run_of(&fixture(), save_dir, epochs)
}

/// The model of the fixture's configuration, built as `train --rng torch` builds it.
fn original_model(vs: &VarStore) -> gpt_rope::Gpt {
    let ds = kg_data::Dataset::load(&dataset()).unwrap();
    let cfg = original_run(Path::new("unused"), 1);
    let gpt_cfg = cfg.model.with_vocab(ds.vocab.len() as i64);
    trainer::train::build_model(&vs.root(), &gpt_cfg, &cfg.train).unwrap()
}

#[test]
fn initial_weights_are_the_originals_bit_for_bit() {
    let _rng = rng_lock();
    let vs = VarStore::new(Device::Cpu);
    let model = original_model(&vs);
    let ours: BTreeMap<String, tch::Tensor> = model.named_parameters().into_iter().collect();
    let want = json(&fixture().join("initial-weights.json"));
    let params = want["params"].as_array().unwrap();
    assert_eq!(params.len(), ours.len(), "the same parameters");
    for p in params {
        let name = p["name"].as_str().unwrap();
        let t = ours
            .get(name)
            .unwrap_or_else(|| panic!("no parameter {name}"));
        let shape: Vec<i64> = p["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_i64().unwrap())
            .collect();
        assert_eq!(t.size(), shape, "{name}");
        let values: Vec<f32> = Vec::try_from(t.to_kind(Kind::Float).flatten(0, -1)).unwrap();
        // Written as Python's shortest float64 text of each float32; read back, each is the
        // float32 it was (the parser's float64 may miss by an ulp, the float32 cannot).
        let first: Vec<f32> = p["first"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(values[..first.len()], first, "{name}: first values");
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let digest: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            digest,
            p["sha256"].as_str().unwrap(),
            "{name}: the float32 bytes differ (sum {} vs {})",
            values.iter().map(|&v| f64::from(v)).sum::<f64>(),
            p["sum"]
        );
    }
}

#[test]
fn epochs_visit_the_rows_in_the_originals_order() {
    let _rng = rng_lock();
    let vs = VarStore::new(Device::Cpu);
    let _model = original_model(&vs);
    let order = json(&fixture().join("order.json"));
    let n = order["rows"].as_u64().unwrap() as usize;
    let epochs = order["epochs"].as_array().unwrap();
    assert!(epochs.len() >= 3, "the fixture records several epochs");
    for (e, want) in epochs.iter().enumerate() {
        let want: Vec<i64> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let got = trainer::train::torch_epoch_order(n).unwrap();
        assert_eq!(got, want, "epoch {}", e + 1);
        // The evaluation loader's iterator draws its seed after every epoch.
        trainer::ffi::draw_loader_seed().unwrap();
    }
}

/// Per-epoch evaluation rows of a metrics log, keyed by epoch.
fn epoch_rows(log: &[Value]) -> BTreeMap<u64, &Value> {
    log.iter()
        .filter_map(|r| r.get("epoch").and_then(Value::as_u64).map(|e| (e, r)))
        .collect()
}

const TYPES: [&str; 5] = [
    "id_atomic",
    "id_compositional",
    "near_ood_compositional",
    "id_analogical",
    "ood_analogical",
];

/// How our metrics log compares with the original's.
struct Comparison {
    /// Largest PROB difference over types and epochs.
    dprob: f64,
    /// Largest macro CE difference.
    dce: f64,
    /// Values of the original's rows (batch and epoch rows) that ours has bit for bit, and all.
    identical: (usize, usize),
}

/// Compares our metrics log with the original's (in `fixture`) for its first `epochs` epochs:
/// ACC identical for every type at every epoch, PROB within 1e-4, macro CE within 1e-3; counts
/// the values of the original's rows that are ours bit for bit.
fn follows_the_original(ours: &[Value], fixture: &Path, epochs: u64) -> Comparison {
    let theirs_log = rows(&fixture.join("metrics.jsonl"));
    let steps: BTreeMap<u64, &Value> = ours
        .iter()
        .filter(|r| r.get("train/CE_last").is_some())
        .map(|r| (r["global_step"].as_u64().unwrap(), r))
        .collect();
    let (ours, theirs) = (epoch_rows(ours), epoch_rows(&theirs_log));
    let mut identical = (0, 0);
    for row in &theirs_log {
        let mine = match row.get("epoch").and_then(Value::as_u64) {
            Some(e) if e > epochs => continue,
            Some(e) => ours.get(&e).copied(),
            None if row["global_step"].as_u64().unwrap()
                > theirs[&epochs]["global_step"].as_u64().unwrap() =>
            {
                continue;
            }
            None => steps.get(&row["global_step"].as_u64().unwrap()).copied(),
        };
        for (key, value) in row.as_object().unwrap() {
            identical.1 += 1;
            if mine.and_then(|m| m.get(key)).and_then(Value::as_f64) == value.as_f64() {
                identical.0 += 1;
            }
        }
    }
    assert!(theirs.len() as u64 >= epochs && ours.len() as u64 >= epochs);
    let (mut dprob, mut dce) = (0f64, 0f64);
    for epoch in 1..=epochs {
        let (a, b) = (ours[&epoch], theirs[&epoch]);
        assert_eq!(a["global_step"], b["global_step"], "epoch {epoch}: step");
        for t in TYPES {
            let get = |r: &Value, m: &str| r[format!("val_{m}/{t}")].as_f64().unwrap();
            let n = get(b, "N");
            assert_eq!(get(a, "N"), n, "epoch {epoch} {t}: N");
            assert_eq!(
                (get(a, "ACC") * n).round(),
                (get(b, "ACC") * n).round(),
                "epoch {epoch} {t}: ACC {} vs the original's {}",
                get(a, "ACC"),
                get(b, "ACC")
            );
            let d = (get(a, "PROB") - get(b, "PROB")).abs();
            assert!(
                d < 1e-4,
                "epoch {epoch} {t}: PROB {} vs the original's {}",
                get(a, "PROB"),
                get(b, "PROB")
            );
            dprob = dprob.max(d);
        }
        let macro_ce = |r: &Value| r["val/macro/CE"].as_f64().unwrap();
        let d = (macro_ce(a) - macro_ce(b)).abs();
        assert!(
            d < 1e-3,
            "epoch {epoch}: macro CE {} vs {}",
            macro_ce(a),
            macro_ce(b)
        );
        dce = dce.max(d);
    }
    Comparison {
        dprob,
        dce,
        identical,
    }
}

#[test]
fn training_follows_the_originals_trajectory() {
    let _rng = rng_lock();
    let tmp = tempfile::tempdir().unwrap();
    let epochs = 100;
    let cfg = original_run(&tmp.path().join("run"), epochs);
    let started = std::time::Instant::now();
    trainer::run(cfg.clone(), quiet()).unwrap();
    let log = rows(&cfg.train.save_dir.join("metrics.jsonl"));
    report(
        "no dropout",
        &follows_the_original(&log, &fixture(), epochs as u64),
        epochs,
        started,
    );
}

fn report(what: &str, c: &Comparison, epochs: usize, started: std::time::Instant) {
    eprintln!(
        "{what}: {epochs} epochs in {:.1} s: max |ΔPROB| {:.2e}, max |Δ macro CE| {:.2e}; {} of {} logged values bit for bit the original's",
        started.elapsed().as_secs_f64(),
        c.dprob,
        c.dce,
        c.identical.0,
        c.identical.1
    );
}

#[test]
fn dropout_masks_are_the_originals() {
    let _rng = rng_lock();
    let tmp = tempfile::tempdir().unwrap();
    let epochs = 30;
    let cfg = run_of(&dropout_fixture(), &tmp.path().join("run"), epochs);
    assert_eq!(cfg.model.dropout, 0.1);
    let started = std::time::Instant::now();
    trainer::run(cfg.clone(), quiet()).unwrap();
    let log = rows(&cfg.train.save_dir.join("metrics.jsonl"));
    report(
        "dropout 0.1",
        &follows_the_original(&log, &dropout_fixture(), epochs as u64),
        epochs,
        started,
    );
}

/// Raises the interrupt flag once the training row of step `at` is logged (with `log_every = 1`
/// every step has one): the run stops before the next batch, mid-epoch when `at` is.
struct StopAt {
    at: u64,
    flag: Arc<AtomicBool>,
}

impl MetricsSink for StopAt {
    fn log(&mut self, step: u64, _row: &trainer::sink::Row) {
        if step == self.at {
            self.flag.store(true, Ordering::Relaxed);
        }
    }
}

/// The metrics log of a resumed run (stopped `how`) row for row the uninterrupted one's.
fn same_rows(resumed: &[Value], straight: &[Value], how: &str) {
    assert_eq!(resumed.len(), straight.len(), "stopped {how}: rows");
    for (a, b) in resumed.iter().zip(straight) {
        assert_eq!(a, b, "stopped {how}: the resumed run's row differs");
    }
}

/// Runs of `fixture`'s configuration stopped at an epoch's end and in the middle of an epoch,
/// then resumed, give the metrics of the uninterrupted run, row for row; returns a resumable
/// run directory's configuration.
fn resumes_exactly(fixture: &Path, tmp: &Path) -> RunConfig {
    let run = |name: &str, epochs: usize| {
        let mut cfg = run_of(fixture, &tmp.join(name), epochs);
        cfg.train.log_every = 1;
        cfg.train.checkpoint_seconds = 0.0;
        cfg
    };
    let straight = run("straight", 5);
    trainer::run(straight.clone(), quiet()).unwrap();
    let want = rows(&straight.train.save_dir.join("metrics.jsonl"));
    assert_eq!(epoch_rows(&want).len(), 5);
    follows_the_original(&want, fixture, 5);

    // Stopped at an epoch's end, resumed with more epochs.
    let mut at_end = run("at-end", 2);
    trainer::run(at_end.clone(), quiet()).unwrap();
    at_end.train.epochs = 5;
    let resume = || RunOptions {
        resume: true,
        ..quiet()
    };
    let resumed = trainer::run(at_end.clone(), resume()).unwrap();
    assert_eq!(resumed.epochs_this_run, 3);
    same_rows(
        &rows(&at_end.train.save_dir.join("metrics.jsonl")),
        &want,
        "at an epoch's end",
    );

    // Stopped in the middle of epoch 3 (after its second of three batches), resumed.
    let mid = run("mid-epoch", 5);
    let flag = Arc::new(AtomicBool::new(false));
    let stopping = RunOptions {
        interrupt: Some(flag.clone()),
        extra_sinks: vec![vec![Box::new(StopAt { at: 8, flag })]],
        ..quiet()
    };
    let err = trainer::run(mid.clone(), stopping).unwrap_err();
    assert!(matches!(err, TrainError::Interrupted), "{err}");
    let ck = trainer::checkpoint::load(&mid.train.save_dir.join("checkpoints/last")).unwrap();
    assert_eq!((ck.sidecar.epoch, ck.sidecar.batch_in_epoch), (2, 2));
    trainer::run(mid.clone(), resume()).unwrap();
    same_rows(
        &rows(&mid.train.save_dir.join("metrics.jsonl")),
        &want,
        "mid-epoch",
    );
    at_end
}

#[test]
fn a_resumed_run_equals_the_uninterrupted_one() {
    let _rng = rng_lock();
    let tmp = tempfile::tempdir().unwrap();
    let done = resumes_exactly(&fixture(), tmp.path());
    // The stream is part of what a checkpoint resumes.
    let mut other = done;
    other.train.rng = TrainRng::Ours;
    other.train.epochs = 6;
    let resume = RunOptions {
        resume: true,
        ..quiet()
    };
    let err = trainer::run(other, resume).unwrap_err().to_string();
    assert!(err.contains("`rng`"), "{err}");
}

#[test]
fn a_resumed_run_with_dropout_equals_the_uninterrupted_one() {
    let _rng = rng_lock();
    let tmp = tempfile::tempdir().unwrap();
    resumes_exactly(&dropout_fixture(), tmp.path());
}

#[test]
fn what_the_stream_cannot_reproduce_is_refused_naming_the_key() {
    let _rng = rng_lock();
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = original_run(&tmp.path().join("tied"), 1);
    cfg.model.tie_weights = true;
    let err = trainer::run(cfg, quiet()).unwrap_err().to_string();
    assert!(
        err.contains("`rng`") && err.contains("`tie_weights`"),
        "{err}"
    );

    let a = original_run(&tmp.path().join("a"), 1);
    let mut b = original_run(&tmp.path().join("b"), 1);
    b.train.seed = 7;
    let err = trainer::run_members(vec![a, b], quiet())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`rng`") && err.contains("ensemble"), "{err}");
    assert!(!tmp.path().join("a").join("metrics.jsonl").exists());
}

#[test]
fn our_stream_is_what_it_was() {
    let _rng = rng_lock();
    // The default stream's order: ChaCha20 of `mix_seed(seed, epoch)`, pinned (a change here
    // changes every run made on our stream).
    let order = trainer::train::epoch_order(149, 42, 1);
    assert_eq!(
        order[..12],
        [102, 57, 115, 95, 41, 9, 38, 66, 137, 11, 67, 79],
        "our stream's first epoch"
    );
    // Without the key a run is on our stream, which is not the original's; `rng = "ours"`
    // is recorded as no key at all.
    let tmp = tempfile::tempdir().unwrap();
    let mut ours = original_run(&tmp.path().join("ours"), 2);
    ours.train.rng = TrainRng::default();
    assert_eq!(ours.train.rng, TrainRng::Ours);
    trainer::run(ours.clone(), quiet()).unwrap();
    let recorded = std::fs::read_to_string(ours.train.save_dir.join("config.toml")).unwrap();
    assert!(!recorded.contains("rng ="), "{recorded}");
    let ours_log = rows(&ours.train.save_dir.join("metrics.jsonl"));
    let theirs = rows(&fixture().join("metrics.jsonl"));
    assert_ne!(
        epoch_rows(&ours_log)[&1]["val/macro/CE"],
        epoch_rows(&theirs)[&1]["val/macro/CE"],
        "our stream is not the original's"
    );
}
