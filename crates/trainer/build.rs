//! Adds the libtorch rpath (see `torch-rpath`) and compiles the C++ shim (`csrc/shim.cpp`: fused
//! Adam, gradients, generator state) against the libtorch headers that torch-sys linked against.

use std::path::PathBuf;

fn main() {
    torch_rpath::emit();
    println!("cargo:rerun-if-changed=csrc/shim.cpp");
    let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") else {
        panic!("torch-sys did not report its libtorch directory (DEP_TCH_LIBTORCH_LIB)");
    };
    let lib = std::fs::canonicalize(PathBuf::from(&lib)).unwrap_or_else(|_| PathBuf::from(lib));
    let include = lib.parent().map(|p| p.join("include")).unwrap_or_default();
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_string());
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    cc::Build::new()
        .cpp(true)
        .file("csrc/shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .flag_if_supported("-Wno-unused-parameter")
        .warnings(false)
        .compile("trainer_shim");
}
