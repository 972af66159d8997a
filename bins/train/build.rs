//! Adds the libtorch rpath (see `torch-rpath`) and records how the binary was built, for the
//! provenance every run writes: the git commit of the source tree (and whether it had
//! uncommitted changes), the libtorch version linked against, and the tch version.

use std::path::Path;
use std::process::Command;

fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    torch_rpath::emit();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // Any change to the sources or the git state refreshes the commit and the dirty flag.
    for watched in [".git/HEAD", ".git/index", "crates", "bins", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let commit = git(&root, &["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = match git(&root, &["status", "--porcelain", "--untracked-files=no"]) {
        Some(s) => (!s.is_empty()).to_string(),
        None => "unknown".into(),
    };
    let libtorch = std::env::var_os("DEP_TCH_LIBTORCH_LIB")
        .and_then(|lib| std::fs::read_to_string(Path::new(&lib).join("../build-version")).ok())
        .map_or_else(|| "unknown".into(), |v| v.trim().to_string());
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    let tch = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"tch\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .map_or_else(|| "unknown".into(), |v| v.trim_matches('"').to_string());
    println!("cargo:rustc-env=TRAIN_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=TRAIN_GIT_DIRTY={dirty}");
    println!("cargo:rustc-env=TRAIN_LIBTORCH_VERSION={libtorch}");
    println!("cargo:rustc-env=TRAIN_TCH_VERSION={tch}");
}
