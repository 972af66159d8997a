//! A sweep that is stopped or killed leaves no `train` running and nothing lost: one `sweep run`
//! per directory at a time, its children stop (with a checkpoint) or die with it, and a restart
//! resumes what was interrupted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

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

/// The debug `train` binary (built once).
fn train_bin() -> &'static Path {
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
            .expect("cargo build -p train");
        assert!(status.success());
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join("target"))
            .join(PROFILE)
            .join("train")
    })
}

/// A one-experiment sweep of the tiny preset, long enough to be caught running.
fn sweep_file(dir: &Path) -> PathBuf {
    let tiny = workspace()
        .join("configs/tiny.toml")
        .canonicalize()
        .unwrap();
    let path = dir.join("s.toml");
    let text = format!(
        "name = \"t\"\nbase = {:?}\n[fixed]\nepochs = 1500\ncheckpoint_seconds = 0.0\nplots = false\n",
        tiny.display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn sweep(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sweep"));
    c.args(["run"])
        .arg(sweep_file(dir))
        .arg("--out")
        .arg(dir.join("runs"))
        .arg("--cache")
        .arg(dir.join("cache"))
        .arg("--train-bin")
        .arg(train_bin())
        .args(["--threads", "1"])
        .env_remove("WANDB_API_KEY");
    c
}

/// The run directory of the only experiment.
fn run_dir(dir: &Path) -> PathBuf {
    dir.join("runs/t/base")
}

/// Waits until the experiment's `train` is running (it holds its run directory's lock and has
/// logged an epoch); returns its pid.
fn train_pid(dir: &Path) -> i32 {
    let started = Instant::now();
    loop {
        let run = run_dir(dir);
        let logged = std::fs::read_to_string(run.join("metrics.jsonl"))
            .is_ok_and(|t| t.contains("\"epoch\""));
        if let (true, Ok(pid)) = (logged, std::fs::read_to_string(run.join(".lock"))) {
            if let Ok(pid) = pid.trim().parse() {
                return pid;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "train never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn wait_gone(pid: i32) -> bool {
    let started = Instant::now();
    while alive(pid) && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    !alive(pid)
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

fn finish(dir: &Path) -> String {
    let out = sweep(dir).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    text
}

#[test]
fn a_second_sweep_on_the_same_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut first = sweep(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = train_pid(tmp.path());
    let out = sweep(tmp.path()).output().unwrap();
    let msg = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(
        msg.contains("another sweep") && msg.contains(&first.id().to_string()),
        "{msg}"
    );
    assert!(alive(pid), "the first sweep's run is untouched");
    signal(&first, libc::SIGTERM);
    first.wait().unwrap();
    assert!(wait_gone(pid));
}

#[test]
fn a_killed_sweep_leaves_no_orphan_and_a_restart_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = sweep(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = train_pid(tmp.path());
    signal(&s, libc::SIGKILL);
    s.wait().unwrap();
    assert!(wait_gone(pid), "train {pid} outlived its sweep");
    // It got SIGTERM from the kernel and checkpointed where it stood.
    let log = std::fs::read_to_string(run_dir(tmp.path()).join("train.stderr.log")).unwrap();
    assert!(log.contains("writing a checkpoint"), "{log}");
    let text = finish(tmp.path());
    let log = std::fs::read_to_string(run_dir(tmp.path()).join("train.stderr.log")).unwrap();
    assert!(log.contains("resuming"), "{log}\n{text}");
    // One line per experiment with its result, and the progress of the whole sweep.
    assert!(text.contains("finished ("), "{text}");
    assert!(text.contains("OOD analogical ACC"), "{text}");
    assert!(text.contains("sweep: 1/1 experiments done"), "{text}");
}

#[test]
fn a_stopped_sweep_stops_its_children_with_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let s = sweep(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = train_pid(tmp.path());
    signal(&s, libc::SIGTERM);
    let out = s.wait_with_output().unwrap();
    assert!(!alive(pid));
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("interrupted"), "{msg}");
    let ck = std::fs::read_to_string(run_dir(tmp.path()).join("checkpoints/last/checkpoint.json"))
        .unwrap();
    assert!(ck.contains("\"global_step\""));
    finish(tmp.path());
}
