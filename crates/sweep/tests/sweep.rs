//! Sweep files, expansion, cache keys, the runner (with fake and real `train` binaries), Slurm.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use kg_data::DataConfig;
use sweep::runner::{STATUS_FILE, is_finished};
use sweep::{Layout, RunOptions, Status, Sweep, SweepError, SweepSpec};

/// The profile folder of the target directory these tests were built for (`just test` builds in
/// release, a plain `cargo test` in debug).
const PROFILE: &str = if cfg!(debug_assertions) {
    "debug"
} else {
    "release"
};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tiny() -> PathBuf {
    workspace()
        .join("configs/tiny.toml")
        .canonicalize()
        .unwrap()
}

/// Writes a sweep file whose base is the tiny config, and returns its path.
fn sweep_file(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("s.toml");
    let text = format!(
        "name = \"t\"\nbase = {:?}\n{body}",
        tiny().display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn layout(dir: &Path) -> Layout {
    Layout {
        out_root: dir.join("runs"),
        cache_root: dir.join("cache"),
    }
}

fn expand(dir: &Path, body: &str) -> Sweep {
    let spec = SweepSpec::load(&sweep_file(dir, body)).unwrap();
    Sweep::new(spec, layout(dir)).unwrap()
}

fn names(s: &Sweep) -> Vec<String> {
    s.experiments.iter().map(|e| e.name.clone()).collect()
}

#[test]
fn grid_is_the_nested_loop_in_file_order_with_seeds_innermost() {
    let dir = tempfile::tempdir().unwrap();
    let s = expand(
        dir.path(),
        "seeds = [1, 2]\n[fixed]\nepochs = 2\n[parameters]\nlr = [0.001, 0.003]\nbatch_size = [8, 16, 32]\n",
    );
    assert_eq!(s.experiments.len(), 12);
    let n = names(&s);
    assert_eq!(n[0], "lr=0.001,batch_size=8,seed=1");
    assert_eq!(n[1], "lr=0.001,batch_size=8,seed=2");
    assert_eq!(n[2], "lr=0.001,batch_size=16,seed=1");
    assert_eq!(n[6], "lr=0.003,batch_size=8,seed=1");
    assert_eq!(n[11], "lr=0.003,batch_size=32,seed=2");
    for (i, e) in s.experiments.iter().enumerate() {
        assert_eq!(e.index, i);
        assert_eq!(e.config.train.epochs, 2, "fixed applies to all");
        assert!(e.invalid.is_none());
    }
    let e = &s.experiments[9];
    assert_eq!(e.name, "lr=0.003,batch_size=16,seed=2");
    assert_eq!(e.config.train.lr, 0.003);
    assert_eq!(e.config.train.batch_size, 16);
    assert_eq!(e.config.train.seed, 2, "`seed` is the training seed");
    assert_eq!(e.config.data.seed, 42, "the generator seed is untouched");
    assert_eq!(e.run_dir, dir.path().join("runs/t").join(&e.name));
    assert_eq!(e.config.train.save_dir, e.run_dir);
    // Order of keys in the file is the loop order, not the alphabet.
    let s2 = expand(
        dir.path(),
        "[parameters]\nbatch_size = [8, 16]\nlr = [0.001, 0.003]\n",
    );
    assert_eq!(names(&s2)[1], "batch_size=8,lr=0.003");
    assert_eq!(s2.experiments.len(), 4);
}

#[test]
fn random_sampling_is_seeded_distinct_and_drawn_from_the_grid() {
    let dir = tempfile::tempdir().unwrap();
    let params = "[parameters]\nlr = [0.001, 0.002, 0.003, 0.004]\nbatch_size = [8, 16, 32]\nd_model = [16, 32]\n";
    let grid: BTreeSet<String> = names(&expand(dir.path(), params)).into_iter().collect();
    assert_eq!(grid.len(), 24);
    let draw = |seed: u64, count: usize| {
        names(&expand(
            dir.path(),
            &format!("method = \"random\"\ncount = {count}\nseed = {seed}\n{params}"),
        ))
    };
    let a = draw(7, 5);
    assert_eq!(a, draw(7, 5), "same seed, same draw");
    assert_eq!(a.len(), 5);
    let distinct: BTreeSet<&String> = a.iter().collect();
    assert_eq!(distinct.len(), 5, "no repeats");
    assert!(a.iter().all(|n| grid.contains(n)));
    let others: Vec<Vec<String>> = (0..10).map(|s| draw(100 + s, 5)).collect();
    assert!(others.iter().any(|o| *o != a), "the seed matters");
    // Asking for more than there is gives the whole grid, once each.
    let all: BTreeSet<String> = draw(3, 100).into_iter().collect();
    assert_eq!(all, grid);
}

fn load_err(body: &str) -> (PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = sweep_file(dir.path(), body);
    let err = SweepSpec::load(&path).unwrap_err();
    (path, err.to_string())
}

#[test]
fn validation_errors_name_the_file_and_the_key() {
    let cases = [
        ("[parameters]\nlearning_rate = [0.1]\n", "learning_rate"),
        ("[parameters]\nbatch_size = [\"many\"]\n", "batch_size"),
        ("[fixed]\ndevice = \"tpu\"\n", "device"),
        ("[fixed]\nsave_dir = \"x\"\n", "save_dir"),
        ("seeds = [1]\n[parameters]\nseed = [1, 2]\n", "seed"),
        (
            "[fixed]\nlr = 0.1\n[parameters]\ntrain.lr = [0.1]\n",
            "train.lr",
        ),
        ("[parameters]\nlr = 0.1\n", "parameters.lr"),
        ("[parameters]\nlr = []\n", "lr"),
        ("[fixed]\n\"data.seed\" = 1\ndata_seed = 2\n", "data_seed"),
    ];
    for (body, key) in cases {
        let (path, msg) = load_err(body);
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains(key),
            "{body:?}: {msg}"
        );
    }
    let (_, msg) = load_err("method = \"random\"\n[parameters]\nlr = [0.1]\n");
    assert!(msg.contains("count"), "{msg}");
    let (_, msg) = load_err("method = \"sobol\"\n");
    assert!(msg.contains("sobol"), "{msg}");
    let (_, msg) = load_err("colour = 1\n");
    assert!(msg.contains("colour"), "{msg}");
    // A bad base names the base.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(&path, "name = \"t\"\nbase = \"missing.toml\"\n").unwrap();
    let err = SweepSpec::load(&path).unwrap_err();
    assert!(matches!(err, SweepError::Base { .. }), "{err}");
    assert!(err.to_string().contains("missing.toml"));
}

#[test]
fn names_are_single_safe_path_components_and_unique() {
    let dir = tempfile::tempdir().unwrap();
    let s = expand(
        dir.path(),
        "seeds = [1]\n[parameters]\nproject = [\"a/b\", \"a_b\", \"x y\", \"..\", \"ü\"]\n",
    );
    let n = names(&s);
    let distinct: BTreeSet<&String> = n.iter().collect();
    assert_eq!(distinct.len(), n.len(), "{n:?}");
    for name in &n {
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._=,+-".contains(c)),
            "{name}"
        );
        assert_eq!(Path::new(name).components().count(), 1, "{name}");
    }
    // The values themselves reach the config unchanged.
    assert_eq!(s.experiments[0].config.wandb.project, "a/b");
    assert_eq!(s.experiments[1].config.wandb.project, "a_b");
}

#[test]
fn cache_key_differs_for_every_data_field_and_is_stable() {
    let base = DataConfig::default();
    let mut variants: Vec<(&str, DataConfig)> = Vec::new();
    let mut v = |name, f: &dyn Fn(&mut DataConfig)| {
        let mut c = base.clone();
        f(&mut c);
        variants.push((name, c));
    };
    v("num_entities", &|c| c.num_entities = 12);
    v("num_relations", &|c| c.num_relations = 999);
    v("sub_size", &|c| c.sub_size = Some(4));
    v("atomic_ood_ratio", &|c| c.atomic_ood_ratio = 0.05);
    v("compositional_ood_ratio", &|c| {
        c.compositional_ood_ratio = 0.2
    });
    v("analogical_ood_ratio", &|c| c.analogical_ood_ratio = 0.1);
    v("include_f_inverse", &|c| c.include_f_inverse = true);
    v("duplicate_relation", &|c| c.duplicate_relation = true);
    v("seed", &|c| c.seed = 43);
    let base_key = sweep::cache::data_key(&base);
    let mut keys = BTreeSet::from([base_key.clone()]);
    for (field, c) in &variants {
        let k = sweep::cache::data_key(c);
        assert!(
            keys.insert(k.clone()),
            "changing {field} gave a key seen before: {k}"
        );
    }
    // Stable: the same config gives the same key, and the key of the default config is pinned
    // (a change here orphans every cached dataset, so it must be deliberate).
    assert_eq!(sweep::cache::data_key(&base.clone()), base_key);
    assert_eq!(base_key, "composition_functor.10.10000.5-924c93bc6fc9");
    assert!(base_key.starts_with(&base.dir_name()));
}

/// A stand-in for `train`: fails (exit 3, a message on stderr) for batch size 16, otherwise
/// writes a finished checkpoint sidecar into its save_dir, as the real one does.
fn fake_train(dir: &Path) -> PathBuf {
    let path = dir.join("fake-train");
    let script = r#"#!/bin/sh
save=""
epochs=""
for a in "$@"; do
  case "$a" in
    train.save_dir=*) save="${a#train.save_dir=}" ;;
    train.batch_size=16) echo "first line" >&2; echo "boom: batch 16 is cursed" >&2; exit 3 ;;
  esac
done
mkdir -p "$save/checkpoints/last"
echo '{"format_version": 2, "config": {}, "vocab": [], "epoch": 2, "global_step": 4}' > "$save/checkpoints/last/checkpoint.json"
echo "$@" > "$save/args.txt"
"#;
    std::fs::write(&path, script).unwrap();
    let mut perm = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&path, perm).unwrap();
    path
}

#[test]
fn failures_are_reported_and_the_sweep_goes_on_and_restarts_skip_finished_runs() {
    let dir = tempfile::tempdir().unwrap();
    // n_head = 3 does not divide d_model = 32: invalid, reported, skipped.
    let s = expand(
        dir.path(),
        "[fixed]\nepochs = 2\n[parameters]\nn_head = [2, 3]\nbatch_size = [8, 16]\n",
    );
    assert!(s.experiments[0].invalid.is_none());
    assert!(
        s.experiments[2]
            .invalid
            .as_deref()
            .unwrap()
            .contains("n_head")
    );
    let opts = RunOptions::new(fake_train(dir.path()), 2);
    let out = sweep::run_sweep(&s, &opts).unwrap();
    let words: Vec<&str> = out.iter().map(|o| o.status.word()).collect();
    assert_eq!(words, ["finished", "failed", "invalid", "invalid"]);
    match &out[1].status {
        Status::Failed {
            exit_code,
            stderr_tail,
        } => {
            assert_eq!(*exit_code, Some(3));
            assert_eq!(
                stderr_tail,
                &["first line".to_string(), "boom: batch 16 is cursed".into()]
            );
        }
        other => panic!("{other:?}"),
    }
    // Every outcome is in the status log, as JSON.
    let log = std::fs::read_to_string(s.dir().join(STATUS_FILE)).unwrap();
    let rows: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4);
    assert!(
        rows.iter()
            .any(|r| r["status"] == "failed" && r["exit_code"] == 3)
    );
    // The command really carried the experiment's values.
    let args = std::fs::read_to_string(s.experiments[0].run_dir.join("args.txt")).unwrap();
    assert!(
        args.contains("train.batch_size=8") && args.contains("model.n_head=2"),
        "{args}"
    );

    // Restart with a train binary that does not exist: the finished run is skipped (not run),
    // the other one fails to start, and the sweep still completes.
    let opts = RunOptions::new(dir.path().join("no-such-train"), 1);
    let out = sweep::run_sweep(&s, &opts).unwrap();
    let words: Vec<&str> = out.iter().map(|o| o.status.word()).collect();
    assert_eq!(words, ["skipped", "failed", "invalid", "invalid"]);
    match &out[1].status {
        Status::Failed {
            exit_code: None,
            stderr_tail,
        } => assert!(stderr_tail[0].contains("no-such-train"), "{stderr_tail:?}"),
        other => panic!("{other:?}"),
    }
    let table = sweep::summary_table(&out);
    assert!(table.contains("n_head=2,batch_size=8") && table.contains("skipped"));
    assert!(table.contains("1/4 complete"), "{table}");
}

#[test]
fn a_checkpoint_short_of_the_last_epoch_is_not_finished() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("r");
    assert!(!is_finished(&run, 2));
    std::fs::create_dir_all(run.join("checkpoints/last")).unwrap();
    let sidecar = run.join("checkpoints/last/checkpoint.json");
    let at = |epoch: u32| {
        format!(
            r#"{{"format_version": 2, "config": {{}}, "vocab": [], "epoch": {epoch}, "global_step": {}}}"#,
            2 * epoch
        )
    };
    std::fs::write(&sidecar, at(1)).unwrap();
    assert!(!is_finished(&run, 2));
    std::fs::write(&sidecar, at(2)).unwrap();
    assert!(is_finished(&run, 2));
    // A sidecar whose tensor files do not have the sizes it records is not a valid checkpoint.
    let torn = r#"{"format_version": 2, "config": {}, "vocab": [], "epoch": 2, "global_step": 4, "files": [["model.safetensors", 100]]}"#;
    std::fs::write(&sidecar, torn).unwrap();
    assert!(!is_finished(&run, 2));
    std::fs::write(&sidecar, "not json").unwrap();
    assert!(!is_finished(&run, 2));
}

#[test]
fn slurm_script_is_valid_bash_and_passes_shellcheck() {
    let dir = tempfile::tempdir().unwrap();
    let s = expand(
        dir.path(),
        "seeds = [1, 2, 3]\n[parameters]\nbatch_size = [8, 16]\n",
    );
    for ensemble in [1, 8] {
        let opts = sweep::slurm::SlurmOptions {
            cpus_per_task: 4,
            mem: "8G".into(),
            time: "01:00:00".into(),
            gpus: 1,
            partition: Some("gpu".into()),
            max_parallel: Some(2),
            extra_lines: vec!["#SBATCH --account=lab".into()],
            sweep_bin: PathBuf::from("/opt/my tools/sweep"),
            train_bin: PathBuf::from("/opt/bin/train"),
            workdir: PathBuf::from("/work/repo"),
            scale: "full".into(),
            ensemble,
        };
        let text = sweep::slurm::script(&s, Path::new("configs/paper/x.toml"), &opts);
        assert!(text.starts_with("#!/bin/bash\n"));
        // One task per experiment, or one per batch: the three seeds of each batch size.
        let array = if ensemble == 1 {
            "#SBATCH --array=0-5%2"
        } else {
            "#SBATCH --array=0-1%2"
        };
        for line in [
            array,
            "#SBATCH --cpus-per-task=4",
            "#SBATCH --gres=gpu:1",
            "#SBATCH --partition=gpu",
            "#SBATCH --account=lab",
            "#SBATCH --job-name=t",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        if ensemble == 1 {
            assert!(text.contains("run-one configs/paper/x.toml"), "{text}");
            assert!(
                text.contains("--index \"${SLURM_ARRAY_TASK_ID}\""),
                "{text}"
            );
        } else {
            assert!(text.contains("run-batch configs/paper/x.toml"), "{text}");
            assert!(
                text.contains("--ensemble 8 --batch \"${SLURM_ARRAY_TASK_ID}\""),
                "{text}"
            );
            assert!(
                text.contains("batch_size=8,seed=1 | batch_size=8,seed=2 | batch_size=8,seed=3"),
                "{text}"
            );
        }
        assert!(text.contains("'/opt/my tools/sweep'"), "{text}");
        // #SBATCH lines must come before the first command.
        let first_cmd = text.lines().position(|l| l.starts_with("set ")).unwrap();
        assert!(
            text.lines()
                .skip(first_cmd)
                .all(|l| !l.starts_with("#SBATCH"))
        );
        let path = dir.path().join("job.sbatch");
        std::fs::write(&path, &text).unwrap();
        let bash = Command::new("bash").arg("-n").arg(&path).output().unwrap();
        assert!(
            bash.status.success(),
            "{}",
            String::from_utf8_lossy(&bash.stderr)
        );
        let shellcheck = Path::new("/usr/bin/shellcheck");
        if shellcheck.exists() {
            let out = Command::new(shellcheck).arg(&path).output().unwrap();
            assert!(
                out.status.success(),
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            eprintln!("shellcheck not installed: only `bash -n` checked");
        }
    }
}

/// The real `train` binary of this workspace, built once per test process.
fn real_train() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "train"])
            // The profile these tests were built in (`just test` builds in release).
            .args(if cfg!(debug_assertions) {
                &[][..]
            } else {
                &["--release"][..]
            })
            .current_dir(workspace())
            .status()
            .expect("running cargo build -p train");
        assert!(status.success(), "cargo build -p train failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join("target"));
        target.join(PROFILE).join("train")
    })
}

const REAL: &str = "seeds = [1, 2]\n[fixed]\nepochs = 2\nplots = false\nuse_wandb = false\n";

#[test]
fn run_one_runs_exactly_the_indexed_experiment_with_the_real_train() {
    let dir = tempfile::tempdir().unwrap();
    let s = expand(
        dir.path(),
        &format!("{REAL}[parameters]\nlr = [0.001, 0.003]\n"),
    );
    assert_eq!(s.experiments.len(), 4);
    let mut opts = RunOptions::new(real_train().to_path_buf(), 1);
    opts.threads = Some(1);
    let out = sweep::run_one(&s, 2, &opts).unwrap();
    assert_eq!(out.status, Status::Finished, "{out:?}");
    assert_eq!(out.experiment, "lr=0.003,seed=1");
    for (i, e) in s.experiments.iter().enumerate() {
        assert_eq!(e.run_dir.join("config.toml").exists(), i == 2, "{}", e.name);
    }
    let cfg =
        run_config::RunConfig::from_file(&s.experiments[2].run_dir.join("config.toml")).unwrap();
    assert_eq!(cfg.train.lr, 0.003);
    assert_eq!(cfg.train.seed, 1);
    assert_eq!(cfg.train.epochs, 2);
    assert_eq!(cfg.train.data_dir, s.experiments[2].data_dir);
    assert!(is_finished(&s.experiments[2].run_dir, 2));
    let err = sweep::run_one(&s, 4, &opts).unwrap_err();
    assert!(
        matches!(
            err,
            SweepError::Index {
                index: 4,
                count: 4,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn tiny_end_to_end_sweep_with_the_real_train() {
    let dir = tempfile::tempdir().unwrap();
    let s = expand(dir.path(), REAL);
    assert_eq!(names(&s), ["seed=1", "seed=2"]);
    let mut opts = RunOptions::new(real_train().to_path_buf(), 2);
    opts.threads = Some(1);
    let out = sweep::run_sweep(&s, &opts).unwrap();
    for o in &out {
        assert_eq!(o.status, Status::Finished, "{o:?}");
        let acc = o.final_macro_acc.expect("final macro ACC");
        assert!((0.0..=1.0).contains(&acc));
        assert!(o.final_ood_analogical_acc.is_some());
    }
    // One dataset for both seeds, in the cache, with its provenance.
    let data: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .collect();
    assert_eq!(data.len(), 1);
    assert!(
        s.experiments[0]
            .data_dir
            .join(sweep::cache::DATA_CONFIG_FILE)
            .is_file()
    );
    // Different seeds, different runs.
    let m0 = std::fs::read_to_string(s.experiments[0].run_dir.join("metrics.jsonl")).unwrap();
    let m1 = std::fs::read_to_string(s.experiments[1].run_dir.join("metrics.jsonl")).unwrap();
    assert_ne!(m0, m1);
    // A restart runs nothing.
    let again = sweep::run_sweep(&s, &opts).unwrap();
    assert!(
        again
            .iter()
            .all(|o| o.status == Status::Skipped && o.seconds == 0.0)
    );
    assert_eq!(again[0].final_macro_acc, out[0].final_macro_acc);
    // What a figure drawn later reports: the runs that happened, not the skips.
    assert_eq!(sweep::runner::recorded_outcomes(&s), out);
}

/// The groups of `plan` as experiment indices.
fn groups(s: &Sweep, jobs: usize, ensemble: usize) -> Vec<Vec<usize>> {
    let mut opts = RunOptions::new(PathBuf::from("train"), jobs);
    opts.ensemble = ensemble;
    sweep::runner::plan(s, &opts)
        .iter()
        .map(|g| g.iter().map(|e| e.index).collect())
        .collect()
}

#[test]
fn plan_batches_experiments_whose_shapes_agree_and_keeps_every_job_busy() {
    let dir = tempfile::tempdir().unwrap();
    // lr and seed are per-run keys; batch_size fixes a shape.
    let s = expand(
        dir.path(),
        "seeds = [1, 2, 3]\n[fixed]\nepochs = 2\n[parameters]\nbatch_size = [8, 16]\nlr = [0.001, 0.003]\n",
    );
    // Indices: batch 8 → 0..6, batch 16 → 6..12.
    assert_eq!(
        groups(&s, 1, 8),
        [(0..6).collect::<Vec<_>>(), (6..12).collect()]
    );
    // Two classes for two jobs: still one group each.
    assert_eq!(groups(&s, 2, 8).len(), 2);
    // Four jobs: each class is cut in two balanced groups.
    assert_eq!(
        groups(&s, 4, 8),
        [vec![0, 1, 2], vec![3, 4, 5], vec![6, 7, 8], vec![9, 10, 11]]
    );
    // At most `ensemble` members, in balanced groups: a class of 6 with at most 4 is 3 + 3.
    assert_eq!(groups(&s, 1, 4), groups(&s, 4, 8));
    assert_eq!(
        groups(&s, 1, 5).iter().map(Vec::len).collect::<Vec<_>>(),
        [3, 3, 3, 3]
    );
    // `--ensemble 1`: one process per experiment.
    assert_eq!(
        groups(&s, 1, 1),
        (0..12).map(|i| vec![i]).collect::<Vec<_>>()
    );

    // Dropout cannot be batched; an invalid experiment and a finished one stay on their own.
    let s = expand(
        dir.path(),
        "seeds = [1, 2]\n[fixed]\nepochs = 2\n[parameters]\ndropout = [0.0, 0.1]\nn_head = [2, 3]\n",
    );
    // 0,1: dropout 0 n_head 2 (batched); 2,3: n_head 3 (invalid); 4..8: dropout 0.1.
    assert!(s.experiments[2].invalid.is_some());
    assert_eq!(
        groups(&s, 1, 8),
        [
            vec![0, 1],
            vec![2],
            vec![3],
            vec![4],
            vec![5],
            vec![6],
            vec![7]
        ]
    );
    let done = s.experiments[1].run_dir.join("checkpoints/last");
    std::fs::create_dir_all(&done).unwrap();
    std::fs::write(
        done.join("checkpoint.json"),
        r#"{"format_version": 2, "config": {}, "vocab": [], "epoch": 2, "global_step": 4}"#,
    )
    .unwrap();
    assert_eq!(groups(&s, 1, 8)[..2], [vec![0], vec![1]]);
}

#[test]
fn a_batched_sweep_gives_the_runs_of_separate_ones_and_a_diverging_member_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    // lr 1e30 sends its member's loss to infinity in the first epoch.
    let body = format!("{REAL}[parameters]\nlr = [0.003, 1e30]\n");
    let s = expand(dir.path(), &body);
    assert_eq!(s.experiments.len(), 4);
    let mut opts = RunOptions::new(real_train().to_path_buf(), 1);
    opts.threads = Some(1);
    assert_eq!(
        sweep::runner::plan(&s, &opts).len(),
        1,
        "one batched process"
    );
    let out = sweep::run_sweep(&s, &opts).unwrap();
    let words: Vec<&str> = out.iter().map(|o| o.status.word()).collect();
    assert_eq!(words, ["finished", "finished", "failed", "failed"]);
    for o in &out {
        let cmd = o.command.as_deref().unwrap();
        assert!(cmd.contains("--ensemble"), "{cmd}");
    }
    match &out[2].status {
        Status::Failed {
            exit_code,
            stderr_tail,
        } => {
            assert_eq!(*exit_code, Some(1));
            let text = stderr_tail.join("\n");
            let dir = s.experiments[2].run_dir.display().to_string();
            assert!(
                text.contains(&dir) && text.contains("training loss became"),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Every member's directory has the process's logs and its own configuration.
    for e in &s.experiments {
        assert!(e.run_dir.join("train.stderr.log").is_file(), "{}", e.name);
        let cfg = run_config::RunConfig::from_file(&e.run_dir.join("config.toml")).unwrap();
        assert_eq!(cfg.train.save_dir, e.run_dir);
        assert_eq!(cfg.train.lr, e.config.train.lr);
    }

    // The same finished experiments run separately give the same metrics.
    let separate = tempfile::tempdir().unwrap();
    let s1 = expand(
        separate.path(),
        &format!("{REAL}[parameters]\nlr = [0.003]\n"),
    );
    let mut opts1 = RunOptions::new(real_train().to_path_buf(), 1);
    opts1.threads = Some(1);
    opts1.ensemble = 1;
    let out1 = sweep::run_sweep(&s1, &opts1).unwrap();
    assert!(out1.iter().all(|o| o.status == Status::Finished));
    for (batched, alone) in s.experiments[..2].iter().zip(&s1.experiments) {
        assert_eq!(batched.name, alone.name);
        let read = |e: &sweep::Experiment| -> Vec<serde_json::Value> {
            std::fs::read_to_string(e.run_dir.join("metrics.jsonl"))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let (a, b) = (read(batched), read(alone));
        assert_eq!(a.len(), b.len(), "{}", batched.name);
        for (x, y) in a.iter().zip(&b) {
            let (x, y) = (x.as_object().unwrap(), y.as_object().unwrap());
            assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>());
            for (k, v) in x {
                if let (Some(p), Some(q)) = (v.as_f64(), y[k].as_f64()) {
                    assert!(
                        (p - q).abs() <= 1e-4 * q.abs().max(1.0),
                        "{} {k}: {p} vs {q}",
                        batched.name
                    );
                }
            }
        }
    }
    // A restart skips the finished members and runs the failed ones again (alone: one lr).
    let again = sweep::run_sweep(&s, &opts).unwrap();
    let words: Vec<&str> = again.iter().map(|o| o.status.word()).collect();
    assert_eq!(words, ["skipped", "skipped", "failed", "failed"]);
}

#[test]
fn run_batch_runs_exactly_its_batch_as_one_ensemble_and_batches_do_not_move() {
    let dir = tempfile::tempdir().unwrap();
    let s = expand(
        dir.path(),
        &REAL.replace("seeds = [1, 2]", "seeds = [1, 2, 3]"),
    );
    let ids = |s: &Sweep| -> Vec<Vec<usize>> {
        sweep::runner::batches(s, 2)
            .iter()
            .map(|b| b.iter().map(|e| e.index).collect())
            .collect()
    };
    // Three compatible seeds, at most two per batch: 2 + 1.
    assert_eq!(ids(&s), [vec![0, 1], vec![2]]);
    let mut opts = RunOptions::new(real_train().to_path_buf(), 1);
    opts.threads = Some(1);
    opts.ensemble = 2;
    let out = sweep::run_batch(&s, 0, &opts).unwrap();
    assert_eq!(out.len(), 2);
    for o in &out {
        assert_eq!(o.status, Status::Finished, "{o:?}");
        assert!(o.command.as_deref().unwrap().contains("--ensemble"));
    }
    assert!(!s.experiments[2].run_dir.join("config.toml").exists());
    // Finished runs do not change the batches (task i stays task i), and are skipped.
    assert_eq!(ids(&s), [vec![0, 1], vec![2]]);
    let again = sweep::run_batch(&s, 0, &opts).unwrap();
    assert!(again.iter().all(|o| o.status == Status::Skipped));
    // A batch of one trains on its own.
    let last = sweep::run_batch(&s, 1, &opts).unwrap();
    assert_eq!(last[0].status, Status::Finished);
    assert!(!last[0].command.as_deref().unwrap().contains("--ensemble"));
    let err = sweep::run_batch(&s, 2, &opts).unwrap_err();
    assert!(
        matches!(
            err,
            SweepError::Batch {
                index: 2,
                count: 2,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn the_originals_sweep_yaml_expands_into_its_grid() {
    let file = workspace().join("tests/fixtures/original-configs/sweep_config.yaml");
    let spec = SweepSpec::load(&file).unwrap();
    assert_eq!(spec.name, "sweep_config");
    let dir = tempfile::tempdir().unwrap();
    let s = Sweep::new(spec, layout(dir.path())).unwrap();
    // 1·1·1·6·5·1 data combinations × 4·4·4 optimiser ones.
    assert_eq!(s.experiments.len(), 6 * 5 * 64);
    let e = &s.experiments[0];
    assert_eq!(e.config.data.num_entities, 30);
    assert_eq!((e.config.train.seed, e.config.data.seed), (2, 2));
    assert_eq!(e.config.train.epochs, 1000);
    assert!(s.experiments.iter().all(|e| e.invalid.is_none()));
}
