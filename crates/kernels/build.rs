//! With the `cuda` feature, compiles every `kernels/*.cu` of the repository to PTX in OUT_DIR
//! (`src/cuda/mod.rs` embeds them with `include_str!`). Without it, does nothing: the CPU build
//! needs no CUDA toolchain.
//!
//! The PTX targets `compute_80`: the driver JIT-compiles it for the GPU it runs on, so one file
//! serves A100 (sm_80) and H100/H200 (sm_90) alike; bf16 conversions need sm_80. nvcc is taken
//! from `NVCC`, then `CUDA_HOME`, `CUDA_PATH`, `CUDA_ROOT` (`bin/nvcc`), then `PATH`, which is
//! what `scripts/cuda_toolchain.sh --env` sets. Its PTX version must be one the GPU node's
//! driver accepts (CUDA 13.0 for driver 580, see docs/cuda.md).

use std::path::{Path, PathBuf};
use std::process::Command;

fn nvcc() -> PathBuf {
    if let Some(p) = std::env::var_os("NVCC") {
        return PathBuf::from(p);
    }
    for var in ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"] {
        if let Some(root) = std::env::var_os(var) {
            let p = Path::new(&root).join("bin").join("nvcc");
            if p.exists() {
                return p;
            }
        }
    }
    PathBuf::from("nvcc")
}

fn main() {
    for var in ["NVCC", "CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let src = manifest.join("../../kernels");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    println!("cargo:rerun-if-changed={}", src.display());
    let entries = std::fs::read_dir(&src)
        .unwrap_or_else(|e| panic!("cannot read the kernel folder {}: {e}", src.display()));
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|x| x.to_str()), Some("cu" | "cuh")))
        .collect();
    files.sort();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let nvcc = nvcc();
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|x| x == "cu"))
    {
        let stem = f.file_stem().and_then(|s| s.to_str()).expect("utf-8 name");
        let ptx = out.join(format!("{stem}.ptx"));
        let status = Command::new(&nvcc)
            .args(["--ptx", "-arch=compute_80", "-O3", "-std=c++17", "-o"])
            .arg(&ptx)
            .arg(f)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): the `cuda` feature needs nvcc; \
                     `eval \"$(scripts/cuda_toolchain.sh --env)\"` installs and exports it",
                    nvcc.display()
                )
            });
        assert!(
            status.success(),
            "nvcc failed on {} ({status})",
            f.display()
        );
    }
}
