//! Ensemble training against separate runs: three members with different seeds, learning
//! rates, weight decays and analysis schedules write the same `metrics.jsonl` rows (same keys,
//! same global steps, values within float tolerance), the same checkpoints and PCA records as
//! three `trainer::run` calls; the per-member optimiser equals separate `Adam`s; incompatible
//! configurations are rejected naming the key. On CUDA (`#[ignore]`d, run by
//! `scripts/device-check.sh` on a GPU machine), sixteen batched members equal sixteen separate
//! runs within the same tolerances, in float32.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use gpt_rope::MemberParam;
use serde_json::Value;
use tch::{Device, Kind, Tensor};
use trainer::config::batching::compatible;
use trainer::optim::{Adam, AdamConfig};
use trainer::{DeviceChoice, GeometrySchedule, OptimizerKind, RunConfig, RunOptions, TrainError};

/// Tests seed and draw from libtorch's global generator; they take turns so that one test's
/// draws cannot land between another's `manual_seed` and its initialisation.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The repository root the configurations are read from: `ANALOGY_TEST_ROOT` when it is set (the
/// device bundle, run away from the source tree), else the source tree.
fn repo_root() -> PathBuf {
    std::env::var_os("ANALOGY_TEST_ROOT").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."),
        PathBuf::from,
    )
}

/// The device of the CUDA tests; without one they fail, saying so.
fn cuda() -> Device {
    trainer::train::select_device(DeviceChoice::Cuda).unwrap_or_else(|e| panic!("{e}"))
}

fn tiny(root: &Path, name: &str) -> RunConfig {
    let path = repo_root().join("configs/tiny.toml");
    let mut cfg = RunConfig::from_file(&path).unwrap();
    cfg.train.data_dir = root.join("data");
    cfg.train.save_dir = root.join(name);
    cfg.model.d_model = 32;
    cfg.train.epochs = 3;
    cfg.train.threads = 1;
    cfg.train.plots = false;
    cfg.train.geometry = GeometrySchedule::Off;
    cfg.train.device = DeviceChoice::Cpu;
    cfg.wandb.use_wandb = false;
    cfg
}

/// The three members: different seeds, learning rates, weight decays, optimiser kinds and
/// analysis schedules.
fn members(root: &Path, prefix: &str) -> Vec<RunConfig> {
    let mut a = tiny(root, &format!("{prefix}_a"));
    a.train.seed = 1;
    a.train.lr = 3e-3;
    let mut b = tiny(root, &format!("{prefix}_b"));
    b.train.seed = 2;
    b.train.lr = 1e-3;
    b.train.weight_decay = 0.01;
    b.train.geometry = GeometrySchedule::Eval;
    b.train.eval_every = 1;
    let mut c = tiny(root, &format!("{prefix}_c"));
    c.train.seed = 3;
    c.train.lr = 5e-3;
    c.train.weight_decay = 0.1;
    c.train.optimizer = OptimizerKind::Adamw;
    c.train.warmup_steps = 4;
    c.train.log_every = 3;
    vec![a, b, c]
}

fn read_rows(dir: &Path) -> Vec<serde_json::Map<String, Value>> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap()
                .as_object()
                .unwrap()
                .clone()
        })
        .collect()
}

/// Every file under `dir`, recursively.
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn quiet() -> RunOptions {
    RunOptions {
        quiet: true,
        ..Default::default()
    }
}

/// Every member's summary, or the first error.
fn run_ensemble(
    cfgs: Vec<RunConfig>,
    opts: RunOptions,
) -> Result<Vec<trainer::RunSummary>, TrainError> {
    trainer::run_members(cfgs, opts)?.into_iter().collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-4 * a.abs().max(b.abs()) + 1e-6
}

/// Sixteen members for CUDA, in float32: the three kinds of [`members`] in turn, each member with
/// a seed and a learning rate of its own.
fn sixteen_on_cuda(root: &Path, prefix: &str) -> Vec<RunConfig> {
    let kinds = members(root, prefix);
    (0..16)
        .map(|i| {
            let mut c = kinds[i % kinds.len()].clone();
            c.train.seed = 100 + i as u64;
            c.train.lr *= 1.0 + 0.1 * i as f64;
            c.train.save_dir = root.join(format!("{prefix}_{i:02}"));
            c.train.device = DeviceChoice::Cuda;
            c.train.use_amp = false;
            c
        })
        .collect()
}

/// The configurations `make(root, prefix)` trained one by one and as one batched ensemble write
/// the same records.
fn batched_members_equal_separate_runs(make: fn(&Path, &str) -> Vec<RunConfig>) {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let separate = make(root, "separate");
    let mut summaries = Vec::new();
    for cfg in separate.clone() {
        summaries.push(trainer::run(cfg, quiet()).unwrap());
    }
    let batched = make(root, "batched");
    let got = run_ensemble(batched.clone(), quiet()).unwrap();
    let n = separate.len();
    assert_eq!(got.len(), n);

    for (k, (sep, bat)) in separate.iter().zip(&batched).enumerate() {
        let (sd, bd) = (&sep.train.save_dir, &bat.train.save_dir);
        assert_eq!(got[k].save_dir, *bd);
        assert_eq!(got[k].global_step, summaries[k].global_step);
        assert_eq!(got[k].epochs, 3);
        // The same files as the separate run, and timings that say the process was shared.
        let listing = |dir: &std::path::Path| -> BTreeSet<String> {
            walk(dir)
                .into_iter()
                .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(listing(bd), listing(sd), "member {k}: run directory files");
        let members = |dir: &std::path::Path| {
            let t: Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("timings.json")).unwrap())
                    .unwrap();
            t["batched_members"].as_u64()
        };
        assert_eq!((members(bd), members(sd)), (Some(n as u64), Some(1)));

        let (want, rows) = (read_rows(sd), read_rows(bd));
        assert_eq!(rows.len(), want.len(), "member {k}: number of metric rows");
        assert!(rows.len() > 3, "member {k}: train and epoch rows expected");
        for (i, (w, r)) in want.iter().zip(&rows).enumerate() {
            let wk: BTreeSet<_> = w.keys().collect();
            let rk: BTreeSet<_> = r.keys().collect();
            assert_eq!(rk, wk, "member {k} row {i}: keys");
            assert_eq!(r["global_step"], w["global_step"], "member {k} row {i}");
            for (key, wv) in w {
                let (Some(a), Some(b)) = (wv.as_f64(), r[key].as_f64()) else {
                    assert_eq!(&r[key], wv, "member {k} row {i} `{key}`");
                    continue;
                };
                assert!(
                    close(a, b),
                    "member {k} row {i} `{key}`: separate {a} vs batched {b}"
                );
            }
        }
        // Geometry only where the member asked for it, as in its separate run.
        let has_geometry = rows
            .iter()
            .any(|r| r.keys().any(|key| key.starts_with("geom/")));
        assert_eq!(
            has_geometry,
            bat.train.geometry == GeometrySchedule::Eval,
            "member {k}"
        );
        // The training loss moved: the rows are not trivially equal.
        let ce: Vec<f64> = rows
            .iter()
            .filter_map(|r| r.get("train/CE_epoch").and_then(Value::as_f64))
            .collect();
        assert_eq!(ce.len(), 3);
        assert!(ce[2] < ce[0], "member {k}: train CE did not fall: {ce:?}");

        // The member's config.toml is its own resolved config.
        let toml = std::fs::read_to_string(bd.join("config.toml")).unwrap();
        assert_eq!(RunConfig::from_toml_str(&toml).unwrap(), *bat);

        // Checkpoints: same names, shapes and values (within tolerance), same sidecar counters.
        let a = trainer::checkpoint::load(&sd.join("checkpoints/last")).unwrap();
        let b = trainer::checkpoint::load(&bd.join("checkpoints/last")).unwrap();
        assert_eq!(b.sidecar.epoch, a.sidecar.epoch);
        assert_eq!(b.sidecar.global_step, a.sidecar.global_step);
        assert_eq!(b.sidecar.vocab, a.sidecar.vocab);
        for (side, (x, y)) in [
            ("model", (&a.params, &b.params)),
            ("optimizer", (&a.optimizer, &b.optimizer)),
        ] {
            let names = |v: &Vec<(String, Tensor)>| {
                v.iter().map(|(n, _)| n.clone()).collect::<BTreeSet<_>>()
            };
            assert_eq!(names(y), names(x), "member {k} {side} names");
            for (name, t) in x {
                let u = &y.iter().find(|(n, _)| n == name).unwrap().1;
                assert_eq!(u.size(), t.size(), "member {k} {side} `{name}`");
                let scale = t.abs().max().double_value(&[]).max(1e-6);
                let d = (u.to_kind(Kind::Double) - t.to_kind(Kind::Double))
                    .abs()
                    .max()
                    .double_value(&[]);
                assert!(
                    d <= 1e-3 * scale,
                    "member {k} {side} `{name}` differs by {d:e} (max {scale:e})"
                );
            }
        }
        // PCA snapshots at the same steps.
        let steps = |dir: &Path| -> Vec<Value> {
            std::fs::read_to_string(dir.join("pca.jsonl"))
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()["global_step"].clone())
                .collect()
        };
        assert_eq!(steps(bd), steps(sd), "member {k}: PCA steps");
    }
}

#[test]
fn three_batched_members_equal_three_separate_runs() {
    batched_members_equal_separate_runs(members);
}

#[test]
#[ignore = "needs a CUDA device; run by scripts/device-check.sh"]
fn on_cuda_sixteen_batched_members_equal_sixteen_separate_runs() {
    cuda();
    batched_members_equal_separate_runs(sixteen_on_cuda);
}

#[test]
fn per_member_fused_adam_equals_separate_adams() {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(4);
    let shapes: [&[i64]; 3] = [&[5, 3], &[7], &[2, 2, 2]];
    let k = 3;
    let cfgs = [
        AdamConfig::new(OptimizerKind::Adam, 0.0),
        AdamConfig::new(OptimizerKind::Adam, 0.1),
        AdamConfig::new(OptimizerKind::Adamw, 0.05),
    ];
    let stacked: Vec<(String, Tensor)> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut full = vec![k];
            full.extend_from_slice(s);
            (
                format!("p{i}"),
                Tensor::randn(full, (Kind::Float, Device::Cpu)).set_requires_grad(true),
            )
        })
        .collect();
    let singles: Vec<Vec<(String, Tensor)>> = (0..k)
        .map(|m| {
            stacked
                .iter()
                .map(|(n, p)| (n.clone(), p.detach().get(m).copy().set_requires_grad(true)))
                .collect()
        })
        .collect();
    // Every stacked tensor is shared by the members, except the last, which member `m` owns as
    // its own copy (the layout of an ensemble's vocabulary tables).
    let owned: Vec<Tensor> = (0..k)
        .map(|m| {
            let (_, last) = stacked.last().unwrap();
            last.detach().get(m).copy().set_requires_grad(true)
        })
        .collect();
    let member_params = |m: i64| -> Vec<MemberParam> {
        let n = stacked.len();
        stacked
            .iter()
            .enumerate()
            .map(|(i, (name, p))| {
                if i + 1 == n {
                    MemberParam::own(name.as_str(), &owned[m as usize])
                } else {
                    MemberParam::row(name.as_str(), p, m)
                }
            })
            .collect()
    };
    let mut ens = Adam::new((0..k).map(member_params).collect(), cfgs.to_vec()).unwrap();
    assert!(Adam::new(vec![member_params(0)], cfgs.to_vec()).is_err());
    let mut opts: Vec<Adam> = singles
        .iter()
        .zip(&cfgs)
        .map(|(ps, c)| {
            Adam::single(
                ps.iter()
                    .map(|(n, p)| (n.clone(), p.shallow_clone()))
                    .collect(),
                *c,
            )
        })
        .collect();
    for step in 1..=4 {
        let grads: Vec<Tensor> = stacked.iter().map(|(_, p)| Tensor::randn_like(p)).collect();
        ens.zero_grad().unwrap();
        let n = stacked.len();
        let shared: Tensor = stacked[..n - 1]
            .iter()
            .zip(&grads)
            .map(|((_, p), g)| (p * g).sum(Kind::Float))
            .sum();
        let own: Tensor = owned
            .iter()
            .enumerate()
            .map(|(m, p)| (p * grads[n - 1].get(m as i64)).sum(Kind::Float))
            .sum();
        (shared + own).backward();
        let lrs = [0.01 * step as f64, 0.02, 0.005 * step as f64];
        ens.step(&lrs, None).unwrap();
        for (m, opt) in opts.iter_mut().enumerate() {
            opt.zero_grad().unwrap();
            let loss: Tensor = singles[m]
                .iter()
                .zip(&grads)
                .map(|((_, p), g)| (p * g.get(m as i64)).sum(Kind::Float))
                .sum();
            loss.backward();
            opt.step(&[lrs[m]], None).unwrap();
        }
    }
    for m in 0..k {
        for (i, ((name, p), (_, q))) in stacked.iter().zip(&singles[m as usize]).enumerate() {
            let value = if i + 1 == stacked.len() {
                owned[m as usize].detach()
            } else {
                p.detach().get(m)
            };
            let d = (value - q).abs().max().double_value(&[]);
            assert!(d < 1e-6, "member {m} `{name}` differs by {d:e}");
        }
        let want = opts[m as usize].member_state(0);
        let got = ens.member_state(m as usize);
        assert_eq!(got.len(), want.len());
        for ((gn, gt), (wn, wt)) in got.iter().zip(&want) {
            assert_eq!(gn, wn);
            let d = (gt.to_kind(Kind::Double) - wt.to_kind(Kind::Double))
                .abs()
                .max()
                .double_value(&[]);
            assert!(d < 1e-6, "member {m} state `{gn}` differs by {d:e}");
        }
    }
    // One learning rate per member is required.
    assert!(ens.step(&[0.1], None).is_err());
}

#[test]
fn incompatible_configurations_are_rejected_naming_the_key() {
    let root = Path::new("/nonexistent-ensemble-test");
    let base = tiny(root, "a");
    let mut other = tiny(root, "b");
    other.train.seed = 9;
    other.train.lr = 0.1;
    other.train.weight_decay = 0.3;
    other.train.pca_steps = vec![];
    other.wandb.run_name = Some("other".into());
    assert_eq!(compatible(&base, &other), Ok(()));

    type Change = Box<dyn Fn(&mut RunConfig)>;
    let cases: Vec<(&str, Change)> = vec![
        ("batch_size", Box::new(|c| c.train.batch_size = 8)),
        ("d_model", Box::new(|c| c.model.d_model = 64)),
        ("n_layer", Box::new(|c| c.model.n_layer = 2)),
        ("epochs", Box::new(|c| c.train.epochs = 4)),
        (
            "data_dir",
            Box::new(|c| c.train.data_dir = "elsewhere".into()),
        ),
        ("num_entities", Box::new(|c| c.data.num_entities = 10)),
        (
            "analogical_ood_ratio",
            Box::new(|c| c.data.analogical_ood_ratio = 0.5),
        ),
        ("data.seed", Box::new(|c| c.data.seed = 1)),
        ("dropout", Box::new(|c| c.model.dropout = 0.1)),
        ("use_amp", Box::new(|c| c.train.use_amp = false)),
    ];
    for (key, change) in cases {
        let mut cfg = tiny(root, "b");
        change(&mut cfg);
        let msg = compatible(&base, &cfg).expect_err(key);
        assert!(msg.contains(&format!("`{key}`")), "{key}: {msg}");
        // run_ensemble rejects the pair before touching the disk.
        match run_ensemble(vec![base.clone(), cfg], RunOptions::default()) {
            Err(TrainError::Config { reason, .. }) => {
                assert!(reason.contains(&format!("`{key}`")), "{key}: {reason}")
            }
            other => panic!("{key}: expected a config error, got {other:?}"),
        }
    }
    // Two members may not share a run directory.
    match run_ensemble(vec![base.clone(), base], RunOptions::default()) {
        Err(TrainError::Config { reason, .. }) => {
            assert!(reason.contains("`save_dir`"), "{reason}")
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    assert!(run_ensemble(vec![], RunOptions::default()).is_err());
}

#[test]
fn batched_members_resume_like_single_runs() {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let with_epochs = |prefix: &str, epochs: usize| -> Vec<RunConfig> {
        let mut cfgs = members(root, prefix);
        for c in &mut cfgs {
            c.train.epochs = epochs;
        }
        cfgs
    };
    run_ensemble(with_epochs("whole", 5), quiet()).unwrap();
    run_ensemble(with_epochs("resumed", 2), quiet()).unwrap();
    let resumed = run_ensemble(
        with_epochs("resumed", 5),
        RunOptions {
            resume: true,
            ..quiet()
        },
    )
    .unwrap();
    assert!(
        resumed
            .iter()
            .all(|s| s.epochs == 5 && s.epochs_this_run == 3)
    );
    for (whole, part) in with_epochs("whole", 5)
        .iter()
        .zip(&with_epochs("resumed", 5))
    {
        let (a, b) = (
            read_rows(&whole.train.save_dir),
            read_rows(&part.train.save_dir),
        );
        assert_eq!(a.len(), b.len(), "{}", part.train.save_dir.display());
        for (ra, rb) in a.iter().zip(&b) {
            assert_eq!(ra, rb, "{}", part.train.save_dir.display());
        }
    }

    // Members saved at different points cannot resume together.
    let mut mixed = with_epochs("mixed", 2);
    run_ensemble(mixed.clone(), quiet()).unwrap();
    let mut longer = mixed[0].clone();
    longer.train.epochs = 3;
    trainer::run(
        longer,
        RunOptions {
            resume: true,
            ..quiet()
        },
    )
    .unwrap();
    for c in &mut mixed {
        c.train.epochs = 4;
    }
    match run_ensemble(
        mixed,
        RunOptions {
            resume: true,
            ..quiet()
        },
    ) {
        Err(TrainError::Checkpoint(msg)) => {
            assert!(msg.contains("mixed_a") && msg.contains("epoch 2"), "{msg}")
        }
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}
