#!/usr/bin/env bash
# TensorBoard reads our event files (run.tensorboard = true) as metrics.jsonl says, resume
# included: gpt-tiny trains 30 of 40 steps with a checkpoint at 20 and 30, the one at 30 is
# removed (as if the job died after step 30 but before that checkpoint), the run resumes
# from step 20, and TensorBoard's own reader must drop the orphaned steps 21-30 of the first
# event file and give every series exactly as metrics.jsonl holds it. Needs the reference venv
# (scripts/ref_env.sh) and prepared data (scripts/quickstart.sh); not part of CI.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"
PY=$(bash scripts/ref_env.sh | tail -1)
cargo build --release -p lantern-cli
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
run="$tmp/tb-run"
args=(--config configs/gpt-tiny.toml --set "run.dir=\"$run\"" --set train.max_steps=40
      --set run.tensorboard=true --set train.eval_every=10 --set checkpoint.every=20 --quiet)
target/release/lantern train "${args[@]}" --stop-after 30
rm -rf "$run/checkpoints/step-00000030"
target/release/lantern train "${args[@]}" --resume
"$PY" scripts/tensorboard_check.py "$run"
