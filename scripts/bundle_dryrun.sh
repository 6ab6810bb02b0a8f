#!/usr/bin/env bash
# A dry run of the GPU bundle's run.sh on this machine, without a GPU: the bundle is packed
# around a CPU release build (scripts/bundle.sh --binary) and run.sh runs every stage on the CPU
# with a small GPT, the reference venv's PyTorch as the baseline (scripts/ref_env.sh), and a
# short batch search. It checks the script itself (stages, time limits, the batch search, the
# JSON lines, the tables) before a GPU node's scarce minutes are spent on it; no figure it
# prints means anything about the GPU.
#
#   scripts/bundle_dryrun.sh [OUTDIR]     (default: a temporary folder; printed at the end)
#
# The CPU bundle goes to target/bundle-dryrun; the GPU bundle in bundle/ is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${1:-$(mktemp -d)}"
PY="$(bash scripts/ref_env.sh | tail -n 1)"
cargo build --release -q -p lantern-cli
BUNDLE_DIR=target/bundle-dryrun bash scripts/bundle.sh --binary target/release/lantern >/dev/null
# The tracer too, so that its stage runs (it records nothing without a GPU).
bash scripts/ktrace/build.sh target/bundle-dryrun/lib/libktrace.so

rc=0
DEVICE=cpu PYTHON="$PY" BUDGET=400 BATCHES="4 2" STEPS=3 WARMUP=1 \
  MODEL="--n-layer 2 --n-embd 128 --n-head 4 --vocab 512 --seq-len 64" \
  bash target/bundle-dryrun/run.sh "$OUT" || rc=$?

fail() {
  echo "bundle_dryrun: $*" >&2
  exit 1
}
((rc == 0)) || fail "run.sh exited with $rc (see $OUT/bench.log)"
for f in env.txt selfcheck.log bench.jsonl bench.log table.md; do
  [[ -s "$OUT/$f" ]] || fail "run.sh wrote no $f"
done
grep -q "^selfcheck passed" "$OUT/selfcheck.log" || fail "selfcheck did not pass"
grep -q "^trainer passed" "$OUT/selfcheck.log" || fail "the trainer's resume check did not pass"
grep -q "^generate passed" "$OUT/selfcheck.log" || fail "the generation check did not pass"
grep -q "^score passed" "$OUT/selfcheck.log" || fail "the perplexity check did not pass"
grep -q "^choices passed" "$OUT/selfcheck.log" || fail "the multiple-choice check did not pass"
grep -q '| sample (' "$OUT/selfcheck.log" || fail "the trainer wrote no sample"
grep -q '"impl": "batch-choice", "batch": 4' "$OUT/bench.jsonl" || fail "the batch search did not choose 4"
for want in lantern pytorch-eager pytorch-compile lantern-kernels; do
  grep -q "\"impl\": *\"$want\"" "$OUT/bench.jsonl" || fail "no $want line in bench.jsonl"
done
grep -q "| Lantern |" "$OUT/table.md" || fail "table.md has no Lantern row"
echo "bundle_dryrun: run.sh passed every stage on the CPU; results in $OUT"
