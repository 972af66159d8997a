//! Fault injection against the real `train` binary: the ways a run is interrupted or fed a bad
//! directory, and what the user gets (a resumable run, a clear error, nothing lost or
//! overwritten). One test per finding of the fault-injection pass; `scripts/kill-resume.sh`
//! runs the random `kill -9` study at a larger N.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn train() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_train"));
    c.env_remove("WANDB_API_KEY").env("RUST_LOG", "info");
    c
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The tiny preset with its dataset under `root` and the run in `root/<name>`, checkpointing at
/// every epoch end.
fn tiny(root: &Path, name: &str, epochs: usize) -> Vec<String> {
    vec![
        "--config".into(),
        repo().join("configs/tiny.toml").display().to_string(),
        "--data_dir".into(),
        root.join("data").display().to_string(),
        "--save_dir".into(),
        root.join(name).display().to_string(),
        "--epochs".into(),
        epochs.to_string(),
        "--checkpoint_seconds".into(),
        "0".into(),
        "--plots".into(),
        "false".into(),
        "--quiet".into(),
    ]
}

fn run(args: &[String]) -> Output {
    no_panic(train().args(args).output().expect("running train"))
}

/// Whatever a fault does, `train` answers with an exit status and a message, never a panic.
fn no_panic(out: Output) -> Output {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() != Some(101) && !stderr.contains("panicked"),
        "train panicked: {stderr}"
    );
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn rows(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn epochs_logged(dir: &Path) -> u64 {
    rows(dir)
        .iter()
        .filter_map(|r| r.get("epoch").and_then(Value::as_u64))
        .max()
        .unwrap_or(0)
}

fn checkpoint(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("checkpoints/last/checkpoint.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Spawns a run and waits until it has logged `epochs` epochs (or ended).
fn spawn_until(args: &[String], dir: &Path, epochs: u64) -> Child {
    let child = train()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning train");
    let started = Instant::now();
    while epochs_logged(dir) < epochs && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on the pid of a child this test spawned and has not waited for yet.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// A reference run, uninterrupted.
fn reference(root: &Path, epochs: usize) -> Vec<Value> {
    let out = run(&tiny(root, "reference", epochs));
    assert!(out.status.success(), "{}", text(&out));
    rows(&root.join("reference"))
}

fn resume(dir: &Path) -> Output {
    no_panic(
        train()
            .args(["--resume", &dir.display().to_string(), "--quiet"])
            .output()
            .unwrap(),
    )
}

/// Finding 1: a killed run (SIGKILL at a random epoch, several times in a row, a resumed run
/// included) resumes from its newest checkpoint, losing at most one epoch, and ends with the
/// metrics of an uninterrupted run.
#[test]
fn killed_runs_resume_losing_at_most_one_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let want = reference(tmp.path(), 200);
    let dir = tmp.path().join("killed");
    let args = tiny(tmp.path(), "killed", 200);
    // Pseudo-random kill points (epochs), fixed so that a failure can be replayed.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |lo: u64, hi: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        lo + x % (hi - lo)
    };
    let mut at = 0;
    for round in 0..3 {
        at = next(at + 5, at + 60);
        let mut child = if round == 0 {
            spawn_until(&args, &dir, at)
        } else {
            let child = train()
                .args(["--resume", &dir.display().to_string(), "--quiet"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let started = Instant::now();
            while epochs_logged(&dir) < at && started.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(5));
            }
            child
        };
        signal(&child, libc::SIGKILL);
        let _ = child.wait();
        let logged = epochs_logged(&dir);
        let saved = checkpoint(&dir)["epoch"].as_u64().unwrap();
        assert!(
            logged.saturating_sub(saved) <= 1,
            "round {round}: {logged} epochs logged, checkpoint at {saved}"
        );
    }
    let out = resume(&dir);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("newest valid checkpoint"),
        "{}",
        text(&out)
    );
    assert_eq!(
        rows(&dir),
        want,
        "the resumed run differs from the uninterrupted one"
    );
}

/// Findings 1, 2 and 10: SIGTERM, SIGHUP and SIGINT stop at the next batch with 128 + the signal,
/// a second signal 2 ms later does no harm, the checkpoint holds the position within the epoch,
/// and the resumed run equals the uninterrupted one.
#[test]
fn stop_signals_checkpoint_mid_epoch_and_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let want = reference(tmp.path(), 120);
    for (i, (sig, code)) in [
        (libc::SIGTERM, 143),
        (libc::SIGHUP, 129),
        (libc::SIGINT, 130),
        (libc::SIGINT, 130),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("signal{i}");
        let dir = tmp.path().join(&name);
        let child = spawn_until(&tiny(tmp.path(), &name, 120), &dir, 20 + 15 * i as u64);
        signal(&child, sig);
        std::thread::sleep(Duration::from_millis(2));
        signal(&child, sig);
        let out = no_panic(child.wait_with_output().unwrap());
        let stderr = String::from_utf8_lossy(&out.stderr);
        // The second signal does no harm: the exit status, the checkpoint and the resumed run
        // are those of one signal. (Whether it is seen on its own, "already stopping", depends on
        // timing: the kernel merges a signal that arrives before the first is handled.)
        assert_eq!(out.status.code(), Some(code), "signal {sig}: {stderr}");
        assert!(stderr.contains("train --resume"), "{stderr}");
        let ck = checkpoint(&dir);
        let summary: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(summary["status"], "interrupted");
        let out = resume(&dir);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(rows(&dir), want, "signal {sig}, stopped at {ck}");
    }
}

/// Finding 3: a data_dir with files but no complete dataset is an error naming what is missing,
/// and nothing is generated over the files that are there.
#[test]
fn an_incomplete_dataset_is_never_regenerated_over() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("python");
    std::fs::create_dir_all(&data).unwrap();
    let fixture = repo().join("tests/fixtures/python-dataset-e10");
    for e in std::fs::read_dir(&fixture).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), data.join(e.file_name())).unwrap();
    }
    for missing in ["train.json", "vocab.json"] {
        let before = std::fs::read_dir(&fixture).unwrap().count();
        std::fs::remove_file(data.join(missing)).unwrap();
        let mut args = tiny(tmp.path(), &format!("run-{missing}"), 2);
        args.extend(["--data_dir".into(), data.display().to_string()]);
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(
            text(&out).contains(missing) && text(&out).contains("nothing is generated"),
            "{}",
            text(&out)
        );
        // Every other file is still the original's.
        for e in std::fs::read_dir(&data).unwrap() {
            let e = e.unwrap();
            let original = std::fs::read(fixture.join(e.file_name())).unwrap();
            assert_eq!(std::fs::read(e.path()).unwrap(), original);
        }
        assert_eq!(std::fs::read_dir(&data).unwrap().count(), before - 1);
        std::fs::copy(fixture.join(missing), data.join(missing)).unwrap();
    }
}

/// Finding 5: a second run into an existing run directory is refused without touching it;
/// --overwrite replaces it; without a save_dir every run gets a fresh directory.
#[test]
fn an_existing_run_is_never_overwritten_silently() {
    let tmp = tempfile::tempdir().unwrap();
    let args = tiny(tmp.path(), "run", 3);
    assert!(run(&args).status.success());
    let dir = tmp.path().join("run");
    let before = std::fs::read(dir.join("metrics.jsonl")).unwrap();
    let out = run(&args);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("already holds") && text(&out).contains("--resume"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(dir.join("metrics.jsonl")).unwrap(), before);
    let mut over = args.clone();
    over.push("--overwrite".into());
    let out = run(&over);
    assert!(out.status.success(), "{}", text(&out));
    // --resume combined with another --save_dir is refused.
    let out = train()
        .args([
            "--resume",
            &dir.display().to_string(),
            "--save_dir",
            "elsewhere",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("cannot be combined with --resume"),
        "{}",
        text(&out)
    );
    // Without a save_dir: runs/<config>-<time>, a new one each time.
    let fresh = |_: usize| {
        let mut a = tiny(tmp.path(), "unused", 1);
        let i = a.iter().position(|x| x == "--save_dir").unwrap();
        a.drain(i..i + 2);
        let out = train().args(&a).current_dir(tmp.path()).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    };
    fresh(0);
    fresh(1);
    let made: Vec<String> = std::fs::read_dir(tmp.path().join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(made.len(), 2, "{made:?}");
    assert!(made.iter().all(|m| m.starts_with("tiny-")), "{made:?}");
}

/// Finding 6: the recorded [data] is the dataset's own, not the configuration's defaults.
#[test]
fn the_recorded_config_is_the_truth_about_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    // The original's dataset has no meta.json: its counts are recovered from the files.
    let mut args = tiny(tmp.path(), "python", 1);
    args.extend([
        "--data_dir".into(),
        repo()
            .join("tests/fixtures/python-dataset-e10")
            .display()
            .to_string(),
        "--num_entities".into(),
        "20".into(),
        "--num_relations".into(),
        "7".into(),
    ]);
    let out = run(&args);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("no meta.json"), "{}", text(&out));
    let cfg: toml::Value =
        toml::from_str(&std::fs::read_to_string(tmp.path().join("python/config.toml")).unwrap())
            .unwrap();
    let data = &cfg["data"];
    assert_eq!(data["num_entities"].as_integer(), Some(10));
    assert_eq!(data["num_relations"].as_integer(), Some(10_000));
    assert_eq!(data["sub_size"].as_integer(), Some(5));
    assert_eq!(data["analogical_ood_ratio"].as_float(), Some(0.4));
    // A dataset of ours carries its parameters; a differing [data] is warned about.
    let mut args = tiny(tmp.path(), "ours", 1);
    args.extend(["--num_entities".into(), "12".into()]);
    assert!(run(&tiny(tmp.path(), "made", 1)).status.success());
    let out = run(&args);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("num_entities (12 vs 8)"),
        "{}",
        text(&out)
    );
    let cfg: toml::Value =
        toml::from_str(&std::fs::read_to_string(tmp.path().join("ours/config.toml")).unwrap())
            .unwrap();
    assert_eq!(cfg["data"]["num_entities"].as_integer(), Some(8));
}

/// Finding 7: a full disk stops the run with an error naming the file, and what was written
/// before stays resumable once there is room. Runs where a small tmpfs can be mounted (root).
#[test]
fn a_full_disk_stops_the_run_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mount = tmp.path().join("small");
    std::fs::create_dir_all(&mount).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=600k", "tmpfs"])
        .arg(&mount)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here (the unit test of JsonlSink covers ENOSPC)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.clone());
    // The dataset elsewhere; the run directory on the small disk, which fills within epochs.
    let mut args = tiny(tmp.path(), "unused", 3000);
    let i = args.iter().position(|x| x == "--save_dir").unwrap();
    args[i + 1] = mount.join("run").display().to_string();
    let out = run(&args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("No space left on device"), "{msg}");
    assert!(!msg.contains("panicked"), "{msg}");
    let run_dir = mount.join("run");
    let saved = checkpoint(&run_dir)["global_step"].as_u64().unwrap();
    // Every complete line is JSON; a torn last line (if any) is dropped on resume.
    let text_log = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let complete = text_log
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).is_ok())
        .count();
    assert!(complete > 0);
    // Move the run to a disk with room and resume it there.
    let roomy = tmp.path().join("moved");
    assert!(
        Command::new("cp")
            .args(["-r"])
            .arg(&run_dir)
            .arg(&roomy)
            .status()
            .unwrap()
            .success()
    );
    let out = train()
        .args([
            "--resume",
            &roomy.display().to_string(),
            "--epochs",
            "60",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("step {saved}")),
        "{}",
        text(&out)
    );
}

/// Finding 10: sizes that cannot fit and absurd thread counts are clear errors, not panics.
#[test]
fn impossible_sizes_are_refused_before_allocation() {
    let tmp = tempfile::tempdir().unwrap();
    for (flag, value, want) in [
        ("--d_model", "1048576", "d_model = 1048576"),
        ("--threads", "100000", "`threads` must be at most 1024"),
    ] {
        let mut args = tiny(tmp.path(), &format!("run{flag}"), 1);
        args.extend([flag.into(), value.into()]);
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{flag}: {}", text(&out));
        assert!(text(&out).contains(want), "{flag}: {}", text(&out));
        assert!(!text(&out).contains("panicked"), "{flag}: {}", text(&out));
    }
}

/// Finding 11: a diverging loss is reported; a NaN before any checkpoint says so; resuming on
/// another dataset with the same vocabulary is refused.
#[test]
fn silent_acceptance_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = tiny(tmp.path(), "diverging", 30);
    args.extend(["--lr".into(), "1e3".into()]);
    let out = run(&args);
    let msg = text(&out);
    assert!(out.status.success(), "{msg}");
    assert!(msg.contains("the training loss diverged"), "{msg}");
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("diverging/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["diverged"], true, "{summary}");
    assert!(
        rows(&tmp.path().join("diverging"))
            .iter()
            .any(|r| r.get("train/diverged").is_some()),
        "the flag is in the metrics log (and so on W&B)"
    );
    // A NaN in the first epoch: no "last good checkpoint" that does not exist.
    let mut args = tiny(tmp.path(), "nan", 5);
    args.extend(["--lr".into(), "1e30".into()]);
    let out = run(&args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("no checkpoint had been written yet"),
        "{}",
        text(&out)
    );
    // Another dataset with the same vocabulary (another data seed).
    assert!(run(&tiny(tmp.path(), "a", 3)).status.success());
    let other = tmp.path().join("other-data");
    let mut make = tiny(tmp.path(), "b", 1);
    make.extend([
        "--data_dir".into(),
        other.display().to_string(),
        "--data_seed".into(),
        "9".into(),
    ]);
    assert!(run(&make).status.success());
    let out = train()
        .args([
            "--resume",
            &tmp.path().join("a").display().to_string(),
            "--data_dir",
            &other.display().to_string(),
            "--epochs",
            "6",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("not the dataset the run trained on"),
        "{}",
        text(&out)
    );
}

/// A closed stdout (`train | head -n 1`, a terminal gone) does not stop the run: the evaluation
/// tables are dropped, the run trains to its end and records every epoch.
#[test]
fn a_closed_stdout_does_not_stop_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = tiny(tmp.path(), "a", 4);
    args.retain(|a| a != "--quiet");
    args.extend(["--eval_every".into(), "1".into()]);
    let mut child = train()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(epochs_logged(&tmp.path().join("a")), 4);
}
