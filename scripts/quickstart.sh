#!/usr/bin/env bash
# From nothing to a trained GPT: fetch real text (Debian's fortunes), build Lantern, prepare a
# BPE tokenizer and token shards, train gpt-tiny, and print samples. Extra arguments go to
# `lantern train` (e.g. --set ...).
#
# Device: DEVICE=auto (default) trains on the GPU when `nvidia-smi` lists one and its driver
# runs CUDA 13 (the pinned toolchain, scripts/cuda_toolchain.sh), else on the CPU; the line
# before training says which and why. DEVICE=cpu or DEVICE=cuda forces one (with cuda, a
# failed CUDA build is an error instead of a fallback to the CPU).
# `scripts/quickstart.sh --detect` prints the choice and its reason and exits (tested in CI).
# Open MPI (multi-process CPU training, `lantern launch --backend mpi`) is built in where it is
# installed (mpicc or pkg-config finds it); a fresh machine without it gets a binary without
# MPI, which trains in one process all the same.
set -euo pipefail
cd "$(dirname "$0")/.."
DETECT=0
if [ "${1:-}" = --detect ]; then
  DETECT=1
  shift
fi

DEVICE="${DEVICE:-auto}"
WHY="DEVICE=$DEVICE"
if [ "$DEVICE" = auto ]; then
  DEVICE=cpu
  WHY="no GPU found (nvidia-smi lists none)"
  # nvidia-smi's output is read whole before it is searched: under pipefail, `nvidia-smi -L |
  # grep -q` fails at random when grep stops reading before nvidia-smi has written its last
  # line (SIGPIPE), which sent machines with several GPUs to the CPU.
  gpus="$(nvidia-smi -L 2>/dev/null || true)"
  if [[ "$gpus" =~ (^|$'\n')GPU\  ]]; then
    # The driver's CUDA version (nvidia-smi's header); the toolchain is CUDA 13.0.
    header="$(nvidia-smi 2>/dev/null || true)"
    driver_cuda="$(sed -n 's/.*CUDA Version: *\([0-9][0-9]*\).*/\1/p' <<<"$header")"
    driver_cuda="${driver_cuda%%$'\n'*}"
    if [ "${driver_cuda:-0}" -ge 13 ]; then
      DEVICE=cuda
      WHY="nvidia-smi lists a GPU"
    else
      WHY="the GPU's driver runs CUDA ${driver_cuda:-unknown}, the build needs 13.0 (driver 580+)"
    fi
  fi
  AUTO=1
else
  AUTO=0
fi
if ((DETECT)); then
  echo "$DEVICE ($WHY)"
  exit 0
fi

MPI=()
if ! command -v mpicc >/dev/null && ! pkg-config --exists ompi 2>/dev/null; then
  MPI=(--no-default-features)
fi

# The CUDA build: the pinned CUDA 13.0 toolchain from PyPI (scripts/cuda_toolchain.sh, ~1.4 GB,
# cached), candle's kernels built for this GPU's compute capability, and at run time the cu13
# libraries of the toolchain's wheels (never its libcuda link stub: the driver's is used).
cuda_build() {
  local env cap libs
  env="$(bash scripts/cuda_toolchain.sh --env)" || return 1
  eval "$env"
  cap="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null || true)"
  cap="${cap%%$'\n'*}"
  cap="${cap//[. ]/}"
  [ -n "$cap" ] && export CUDA_COMPUTE_CAP="$cap"
  cargo build --release -p lantern-cli "${MPI[@]}" --features cuda || return 1
  libs="$(ls -d "$CUDA_ROOT"/../site/nvidia/*/lib | paste -sd:)"
  export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

bash scripts/fetch_fortunes.sh data/raw/fortunes
if [ "$DEVICE" != cpu ] && ! cuda_build; then
  if ((AUTO)); then
    echo "quickstart: the CUDA build failed (above); training on the CPU instead" >&2
    DEVICE=cpu
    WHY="the CUDA build failed"
  else
    echo "quickstart: the CUDA build failed; DEVICE=cpu trains on the CPU" >&2
    exit 1
  fi
fi
[ "$DEVICE" = cpu ] && cargo build --release -p lantern-cli "${MPI[@]}"
LANTERN=target/release/lantern
echo "quickstart: training on $DEVICE ($WHY)" >&2

if [ ! -f data/fortunes/meta.json ]; then
  $LANTERN prepare --input data/raw/fortunes --out data/fortunes --vocab-size 4096
fi
RESUME=()
[ -d runs/gpt-tiny/checkpoints ] && RESUME=(--resume)
$LANTERN train --config configs/gpt-tiny.toml --set "train.device=$DEVICE" "${RESUME[@]}" "$@"
$LANTERN generate --model runs/gpt-tiny --prompt "The " --max-new-tokens 60 --num-samples 3 --seed 1
echo
echo "run folder: runs/gpt-tiny (metrics.jsonl, loss.png, config.toml, checkpoints/)"
echo "export for transformers: $LANTERN export --model runs/gpt-tiny --out runs/gpt-tiny/hf"
