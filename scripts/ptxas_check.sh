#!/usr/bin/env bash
# Assembles every kernels/*.cu for the GPUs we run on, as the driver will at load time, so a
# kernel that the driver would refuse (too much shared memory, bad PTX) fails here, in CI, and
# not on a GPU node. The PTX is made with crates/kernels/build.rs's nvcc flags (compute_80);
# ptxas then assembles it for sm_80 (A100) and sm_90 (H100/H200) and prints each kernel's
# registers, shared memory and spills: the numbers to read when tuning occupancy.
# Needs nvcc and ptxas on PATH (scripts/cuda_toolchain.sh --env); called by check_cuda.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
printf '%-40s %-6s %5s %8s %7s\n' kernel arch regs smem spill
for cu in kernels/*.cu; do
  stem=$(basename "$cu" .cu)
  nvcc --ptx -arch=compute_80 -O3 -std=c++17 -o "$tmp/$stem.ptx" "$cu"
  for arch in sm_80 sm_90; do
    if ! ptxas -arch=$arch -v "$tmp/$stem.ptx" -o "$tmp/$stem.$arch.cubin" >"$tmp/log" 2>&1; then
      echo "ptxas failed on $cu for $arch:" >&2
      cat "$tmp/log" >&2
      status=1
      continue
    fi
    # ptxas -v prints, per entry: "Compiling entry function 'NAME'", then the frame line with
    # "N bytes spill stores", then "Used R registers, ... S bytes smem".
    awk -v arch=$arch '
      /Compiling entry function/ { match($0, /'"'"'[^'"'"']+'"'"'/); name = substr($0, RSTART + 1, RLENGTH - 2) }
      /spill stores/ { spill = $5 }
      /Used [0-9]+ registers/ {
        regs = $5; smem = 0
        if (match($0, /[0-9]+ bytes smem/)) smem = substr($0, RSTART, RLENGTH - 11)
        printf "%-40s %-6s %5s %8s %7s\n", name, arch, regs, smem, spill
      }' "$tmp/log"
  done
done
exit $status
