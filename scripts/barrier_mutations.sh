#!/usr/bin/env bash
# Checks that the emulator tests catch a missing barrier: removes each `__syncthreads();` of
# kernels/ in turn, runs the emulator tests that use that file, and prints whether a test
# failed (and in which run order) or not. Not part of CI: about 20 minutes on 2 cores, since
# every mutation rebuilds the emulated kernels.
#
#   bash scripts/barrier_mutations.sh [FILE ...]     default: every kernels/*.cu and *.cuh
#
# Each file is restored after its mutation, and on exit whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

files=("$@")
[ ${#files[@]} -gt 0 ] || files=(kernels/*.cu kernels/*.cuh)
backup=$(mktemp)
current=""
restore() { [ -z "$current" ] || cp "$backup" "$current"; rm -f "$backup"; }
trap restore EXIT

caught=0
missed=0
for f in "${files[@]}"; do
  name=$(basename "$f")
  name=${name%.*}
  case $name in
    attention) tests=(--test attention) ;;
    common) tests=(--test kernels -- layer_norm rms_norm softmax cross_entropy grad_norm bias_act) ;;
    *) tests=(--test kernels -- "$name") ;;
  esac
  for line in $(grep -n '__syncthreads();' "$f" | cut -d: -f1); do
    cp "$f" "$backup"
    current=$f
    sed -i "${line}s|__syncthreads();|/* removed */|" "$f"
    out=$(cargo test -q -p lantern-kernel-emu "${tests[@]}" 2>&1 || true)
    cp "$backup" "$f"
    current=""
    if grep -q "test result: FAILED" <<<"$out"; then
      order=$(grep "emulator order" <<<"$out" | tail -1 | sed 's/emulator order: //')
      echo "$f:$line caught (failed in $order order)"
      caught=$((caught + 1))
    elif grep -q "test result: ok" <<<"$out"; then
      echo "$f:$line MISSED (the tests pass without it)"
      missed=$((missed + 1))
    else
      echo "$f:$line ERROR (the tests did not run):" >&2
      tail -20 <<<"$out" >&2
      exit 1
    fi
  done
done
echo "barriers removed one at a time: $caught caught, $missed missed"
