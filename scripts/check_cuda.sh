#!/usr/bin/env bash
# Compile check of the GPU path (CUDA kernels, cudarc, NCCL) without a GPU: installs the pinned
# CUDA 13.0 toolchain from PyPI (cached in .cuda/), then runs `cargo check` and `cargo clippy`
# of the whole workspace with `--features cuda`. Uses its own target folder because the CUDA
# build of candle differs from the CPU one; set CARGO_TARGET_DIR to share one between clones.
set -euo pipefail
cd "$(dirname "$0")/.."

eval "$(bash scripts/cuda_toolchain.sh --env)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/cuda}"
start=$(date +%s)
cargo check --workspace --all-targets --features cuda
cargo clippy --workspace --all-targets --features cuda --quiet -- -D warnings
echo "cuda compile check passed in $(( $(date +%s) - start ))s"
