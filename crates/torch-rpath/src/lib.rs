//! Build-script helper that makes executables linked against libtorch runnable in place.
//!
//! torch-sys adds an rpath only to its own examples and tests, so a crate of ours that links
//! libtorch would produce test and binary executables that cannot find `libtorch_cpu.so` without
//! `LD_LIBRARY_PATH`. A crate that depends on `torch-sys` directly sees the directory torch-sys
//! linked against as `DEP_TCH_LIBTORCH_LIB`; its build script calls [`emit`], which turns that
//! directory into an rpath for the crate's own executables (tests, binaries, examples, benches).
//!
//! Two details matter on CUDA machines:
//! - the directory is canonicalised, so that `libtorch_cuda.so`'s own `$ORIGIN`-relative search
//!   path (into the pip layout's `nvidia/*/lib`) resolves from the real location;
//! - rustc links with `--as-needed`, which would drop `libtorch_cuda.so` because nothing refers to
//!   it by symbol (its kernels register themselves when it loads); when it exists it is linked
//!   with `--no-as-needed` so that CUDA is available at run time.

use std::path::{Path, PathBuf};

/// Emits the cargo instructions described in the crate documentation.
///
/// Call it from the `build.rs` of a crate that depends on `torch-sys` directly. Outside a build
/// script (no `DEP_TCH_LIBTORCH_LIB`) it emits nothing.
pub fn emit() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Some(dir) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    let dir = PathBuf::from(dir);
    for arg in link_args(&dir) {
        println!("cargo:rustc-link-arg={arg}");
    }
}

/// The linker arguments [`emit`] passes for the libtorch library directory `dir`.
pub fn link_args(dir: &Path) -> Vec<String> {
    let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut args = vec![format!("-Wl,-rpath,{}", real.display())];
    if real.join("libtorch_cuda.so").exists() {
        args.push("-Wl,--no-as-needed".to_string());
        args.push("-ltorch_cuda".to_string());
        args.push("-Wl,--as-needed".to_string());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_dir_gets_only_an_rpath() {
        let dir = std::env::temp_dir().join(format!("torch-rpath-cpu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let args = link_args(&dir);
        let real = std::fs::canonicalize(&dir).unwrap();
        assert_eq!(args, vec![format!("-Wl,-rpath,{}", real.display())]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cuda_dir_forces_libtorch_cuda() {
        let dir = std::env::temp_dir().join(format!("torch-rpath-cuda-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("libtorch_cuda.so"), b"").unwrap();
        let args = link_args(&dir);
        assert_eq!(args.len(), 4);
        assert_eq!(
            &args[1..],
            ["-Wl,--no-as-needed", "-ltorch_cuda", "-Wl,--as-needed"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
