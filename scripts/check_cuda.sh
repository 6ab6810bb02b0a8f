#!/usr/bin/env bash
# Compile check of the GPU path (CUDA kernels, cudarc, NCCL) without a GPU: installs the pinned
# CUDA 13.0 toolchain from PyPI (cached in .cuda/), then runs `cargo check` and `cargo clippy`
# of the whole workspace with `--features cuda`. The CUDA build of candle runs nvcc over its
# kernels for about 11 minutes on 2 cores, so its target folder lives outside the checkout
# (LANTERN_CUDA_TARGET, default ~/.cache/lantern/target-cuda) and later clones on the same
# machine reuse it; a fresh machine pays the 11 minutes once. Lantern's own kernels
# (kernels/*.cu) are compiled to PTX by crates/kernels/build.rs during the check: about 3 s of
# nvcc CPU time (20 s wall on a busy 2-core machine); the whole check with a warm target folder
# took 13 s (2026-11-24).
set -euo pipefail
cd "$(dirname "$0")/.."

eval "$(bash scripts/cuda_toolchain.sh --env)"
export CARGO_TARGET_DIR="${LANTERN_CUDA_TARGET:-$HOME/.cache/lantern/target-cuda}"
start=$(date +%s)
cargo check --workspace --all-targets --features cuda
cargo clippy --workspace --exclude candle-core --all-targets --features cuda --quiet -- -D warnings
# Every kernel assembled for sm_80 and sm_90 by ptxas, as the driver will do at load time,
# with each kernel's registers, shared memory and spills printed.
bash scripts/ptxas_check.sh
# The GPU bundle's configuration (scripts/bundle.sh): CUDA and NCCL, no Open MPI.
cargo check -p lantern-cli --no-default-features --features cuda
# The bundle's kernel tracer (CUPTI), compiled with -Werror against CUPTI 13.0's headers.
bash scripts/ktrace/build.sh "$CARGO_TARGET_DIR/libktrace.so"
echo "cuda compile check passed in $(( $(date +%s) - start ))s"
