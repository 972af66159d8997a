//! Seeded end-to-end runs on a tiny graph: the model learns (ID accuracy 1.0 within a bounded
//! number of steps), a resumed run equals an uninterrupted one, the Python original's dataset
//! trains, and a non-finite loss stops the run.

use std::path::{Path, PathBuf};

use serde_json::Value;
use trainer::{GeometrySchedule, RunConfig, RunOptions, TrainError};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `configs/tiny.toml` with data and run directories inside `dir`.
fn tiny(dir: &Path, name: &str) -> RunConfig {
    let mut cfg = RunConfig::from_file(&repo().join("configs/tiny.toml")).unwrap();
    cfg.train.data_dir = dir.join("data");
    cfg.train.save_dir = dir.join(name);
    cfg.train.plots = false;
    cfg.wandb.use_wandb = false;
    cfg
}

/// libtorch's random generator is global to the process: runs that initialise models or draw
/// dropout masks at the same time interleave their draws. Tests that compare runs take this lock.
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

fn rows(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn tiny_graph_is_memorised_within_200_steps() {
    let _rng = rng_lock();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny(tmp.path(), "run");
    let summary = trainer::run(cfg.clone(), quiet()).unwrap();
    assert!(summary.global_step <= 200, "{} steps", summary.global_step);
    let eval = summary.final_eval.unwrap();
    for kind in [
        kg_data::FactType::IdAtomic,
        kg_data::FactType::IdCompositional,
        kg_data::FactType::IdAnalogical,
    ] {
        assert_eq!(
            eval.per_type[&kind].acc,
            1.0,
            "{kind:?} not memorised: {}",
            eval.table()
        );
    }
    // The metrics log: batch rows and one epoch row per epoch, with the keys of `run_config::keys`.
    let log = rows(&cfg.train.save_dir.join("metrics.jsonl"));
    let epochs: Vec<&Value> = log.iter().filter(|r| r.get("epoch").is_some()).collect();
    assert_eq!(epochs.len(), cfg.train.epochs);
    let first = epochs[0];
    for key in [
        "global_step",
        "train/CE_epoch",
        "val/macro/CE",
        "val/macro/ACC",
        "val_CE/id_atomic",
        "val_PPL/id_atomic",
        "val_ACC/ood_analogical",
        "val_PROB/ood_analogical",
        "val_N/id_compositional",
        "geom/dirichlet_energy",
        "geom/parallelism/ood_analogical",
        "geom/attn_progress/ood_analogical",
    ] {
        assert!(first.get(key).is_some(), "epoch row lacks {key}: {first}");
    }
    let batch = log
        .iter()
        .find(|r| r.get("train/CE_last").is_some())
        .unwrap();
    for key in ["train/ACC_last", "train/PROB_last", "lr", "global_step"] {
        assert!(batch.get(key).is_some(), "batch row lacks {key}");
    }
    // Macro CE falls.
    let ce = |r: &Value| r["val/macro/CE"].as_f64().unwrap();
    assert!(ce(epochs.last().unwrap()) < ce(epochs[0]));
    // The final checkpoint holds the original's parameter names.
    let ck = trainer::checkpoint::load(&cfg.train.save_dir.join("checkpoints/last")).unwrap();
    assert_eq!(ck.sidecar.epoch, cfg.train.epochs);
    assert!(
        ck.params
            .iter()
            .any(|(n, _)| n == "blocks.0.attn.qkv.weight")
    );
    // PCA at the epoch ends passing the requested steps 1 and 20, then at the end of training.
    let pca = rows(&cfg.train.save_dir.join("pca.jsonl"));
    let asked: Vec<(u64, Value)> = pca
        .iter()
        .map(|r| {
            (
                r["global_step"].as_u64().unwrap(),
                r["requested_steps"].clone(),
            )
        })
        .collect();
    assert_eq!(asked.len(), 3, "{asked:?}");
    assert_eq!(asked[0].1, serde_json::json!([1]));
    assert_eq!(asked[1].1, serde_json::json!([20]));
    assert!(asked[1].0 >= 20 && asked[0].0 < 20, "{asked:?}");
    assert_eq!(asked[2], (ck.sidecar.global_step, serde_json::json!([])));
}

#[test]
fn a_pca_step_at_the_last_step_is_not_written_twice() {
    let _rng = rng_lock();
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = tiny(tmp.path(), "last");
    cfg.train.epochs = 3;
    cfg.train.geometry = GeometrySchedule::Off;
    cfg.train.pca_steps = vec![1, 1_000_000];
    trainer::run(cfg.clone(), quiet()).unwrap();
    let steps: Vec<u64> = rows(&cfg.train.save_dir.join("pca.jsonl"))
        .iter()
        .map(|r| r["global_step"].as_u64().unwrap())
        .collect();
    let first = steps[0];
    cfg.train.pca_steps = vec![first * 3];
    cfg.train.save_dir = tmp.path().join("again");
    trainer::run(cfg.clone(), quiet()).unwrap();
    let again: Vec<Value> = rows(&cfg.train.save_dir.join("pca.jsonl"));
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0]["requested_steps"], serde_json::json!([first * 3]));
    assert_eq!(steps, vec![first, first * 3]);
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    let _rng = rng_lock();
    let tmp = tempfile::tempdir().unwrap();
    let mut straight = tiny(tmp.path(), "straight");
    straight.train.epochs = 6;
    straight.model.dropout = 0.1;
    straight.train.geometry = GeometrySchedule::Off;
    trainer::run(straight.clone(), quiet()).unwrap();

    let mut split = straight.clone();
    split.train.save_dir = tmp.path().join("split");
    split.train.epochs = 3;
    trainer::run(split.clone(), quiet()).unwrap();
    split.train.epochs = 6;
    let resumed = trainer::run(
        split.clone(),
        RunOptions {
            resume: true,
            ..quiet()
        },
    )
    .unwrap();
    assert_eq!(resumed.epochs_this_run, 3);

    let a = rows(&straight.train.save_dir.join("metrics.jsonl"));
    let b = rows(&split.train.save_dir.join("metrics.jsonl"));
    assert_eq!(
        a, b,
        "metrics of the resumed run differ from the uninterrupted run"
    );
}

#[test]
fn resume_rejects_a_different_model() {
    let _rng = rng_lock();
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = tiny(tmp.path(), "run");
    cfg.train.epochs = 1;
    trainer::run(cfg.clone(), quiet()).unwrap();
    cfg.model.d_model = 64;
    let err = trainer::run(
        cfg,
        RunOptions {
            resume: true,
            ..quiet()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("[model]"), "{err}");
}

#[test]
fn python_fixture_dataset_trains_and_reports_every_type() {
    let _rng = rng_lock();
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = RunConfig::default();
    cfg.train.data_dir = repo().join("tests/fixtures/python-dataset-e10");
    cfg.train.save_dir = tmp.path().join("run");
    cfg.train.epochs = 2;
    cfg.train.threads = 1;
    cfg.train.plots = false;
    cfg.wandb.use_wandb = false;
    let s = trainer::run(cfg, quiet()).unwrap();
    let eval = s.final_eval.unwrap();
    let n: Vec<(String, usize)> = eval
        .per_type
        .iter()
        .map(|(k, m)| (k.as_str().to_string(), m.n))
        .collect();
    let want = [
        ("id_atomic", 40),
        ("id_compositional", 106),
        ("near_ood_compositional", 14),
        ("id_analogical", 3),
        ("ood_analogical", 2),
    ];
    assert_eq!(n, want.map(|(k, v)| (k.to_string(), v)).to_vec());
    assert_eq!(s.global_step, 2 * 149usize.div_ceil(64) as u64);
}

#[test]
fn a_non_finite_loss_stops_the_run() {
    let _rng = rng_lock();
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = tiny(tmp.path(), "run");
    cfg.train.epochs = 3;
    cfg.train.lr = 1e30;
    let err = trainer::run(cfg, quiet()).unwrap_err();
    assert!(matches!(err, TrainError::NonFinite { .. }), "{err}");
}

#[test]
fn missing_dataset_is_generated_from_the_data_table() {
    let _rng = rng_lock();
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = tiny(tmp.path(), "run");
    cfg.train.epochs = 1;
    assert!(!kg_data::Dataset::exists(&cfg.train.data_dir));
    trainer::run(cfg.clone(), quiet()).unwrap();
    let ds = kg_data::Dataset::load(&cfg.train.data_dir).unwrap();
    assert_eq!(ds.vocab.len(), 8 + 50 + 1);
}
