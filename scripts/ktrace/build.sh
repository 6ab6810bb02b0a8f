#!/usr/bin/env bash
# Build scripts/ktrace/ktrace.c into a CUDA injection library (see its header):
#   scripts/ktrace/build.sh OUT.so
# It needs CUPTI 13.0's headers and library, taken from the pinned nvidia-cuda-cupti wheel
# (fetched once into LANTERN_CUDA_DIR, default ~/.cache/lantern/cuda, next to the CUDA
# toolchain whose cuda.h it includes), and gcc. scripts/bundle.sh ships the result;
# scripts/check_cuda.sh builds it so that CI compiles it.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:?usage: $0 OUT.so}"

export LANTERN_CUDA_DIR="${LANTERN_CUDA_DIR:-$HOME/.cache/lantern/cuda}"
eval "$(bash scripts/cuda_toolchain.sh --env)"
PIN="nvidia-cuda-cupti==13.0.85"
CUPTI="$LANTERN_CUDA_DIR/cupti"
if [[ "$(cat "$CUPTI/stamp" 2>/dev/null)" != "$PIN" ]]; then
  rm -rf "$CUPTI"
  mkdir -p "$CUPTI"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --no-deps --no-compile \
    --disable-pip-version-check --target "$CUPTI/site" "$PIN"
  echo "$PIN" >"$CUPTI/stamp"
fi
INC="$CUPTI/site/nvidia/cu13/include"
LIB="$CUPTI/site/nvidia/cu13/lib"
[[ -f "$INC/cupti.h" && -f "$LIB/libcupti.so.13" ]] || {
  echo "ktrace: $PIN has no cupti.h or libcupti.so.13 under $CUPTI/site/nvidia/cu13" >&2
  exit 1
}
# NEEDED libcupti.so.13, resolved at run time through LD_LIBRARY_PATH (never an rpath into
# this machine's cache).
gcc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -shared -fPIC -fvisibility=hidden \
  -I"$INC" -I"$CUDA_ROOT/include" scripts/ktrace/ktrace.c -o "$OUT" \
  "$LIB/libcupti.so.13" -lpthread
echo "ktrace: built $OUT" >&2
