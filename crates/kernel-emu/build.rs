//! Compiles the kernel sources of `kernels/` as C++ against the emulation headers in
//! `include/` (see `include/cuda_emu.h`), one wrapper per kernel file in `cpp/`.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let kernels = manifest.join("../../kernels");
    for dir in [
        manifest.join("cpp"),
        manifest.join("include"),
        kernels.clone(),
    ] {
        println!("cargo:rerun-if-changed={}", dir.display());
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            println!(
                "cargo:rerun-if-changed={}",
                e.expect("dir entry").path().display()
            );
        }
    }
    let mut wrappers: Vec<PathBuf> = std::fs::read_dir(manifest.join("cpp"))
        .expect("cpp folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cpp"))
        .collect();
    wrappers.sort();
    cc::Build::new()
        .cpp(true)
        .std("c++20")
        .include(manifest.join("include"))
        // Only explicit fmaf/__fmaf_rn may fuse, as the kernels' exact-rounding paths assume.
        .flag("-ffp-contract=off")
        .flag("-fno-fast-math")
        .flag_if_supported("-Wno-unknown-pragmas")
        .flag_if_supported("-Wno-sign-compare")
        .flag_if_supported("-Wno-unused-parameter")
        .opt_level(2)
        .files(&wrappers)
        .compile("lantern_kernel_emu");
}
