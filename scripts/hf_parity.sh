#!/usr/bin/env bash
# GPT-2 parity with live transformers, both directions, fp32, tolerance 1e-4 max abs:
#  1. a model Lantern trained and exported loads in transformers' GPT2LMHeadModel and gives
#     the same logits and loss as Lantern on the same tokens;
#  2. a GPT2LMHeadModel saved by transformers (save_pretrained) loads in Lantern with the same
#     agreement.
# Needs the test-only venv (scripts/ref_env.sh) and the fortunes text (scripts/fetch_fortunes.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=$(bash scripts/ref_env.sh | tail -n 1)
bash scripts/fetch_fortunes.sh data/raw/fortunes >/dev/null
cargo build --release -q -p lantern-cli
L=target/release/lantern
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

echo "== 1. Lantern -> transformers"
$L prepare --input data/raw/fortunes/science --out "$W/data" --vocab-size 512 >/dev/null
cat > "$W/cfg.toml" <<TOML
[model]
preset = "gpt-tiny"
n_layer = 2
n_embd = 64
n_head = 4
n_positions = 64
[data]
dir = "$W/data"
[train]
batch_size = 8
seq_len = 64
max_steps = 30
lr = 3e-3
eval_every = 0
[run]
dir = "$W/run"
TOML
$L train --config "$W/cfg.toml" --quiet
$L export --model "$W/run" --out "$W/export"
"$PY" - "$W/tokens.json" <<'PYEOF'
import json, random, sys
random.seed(0)
json.dump({"input_ids": [[random.randrange(512) for _ in range(48)] for _ in range(3)]}, open(sys.argv[1], "w"))
PYEOF
$L score --model "$W/export" --tokens "$W/tokens.json" --dump "$W/ours.safetensors"
"$PY" scripts/hf_parity.py --model "$W/export" --tokens "$W/tokens.json" --ours "$W/ours.safetensors"

echo "== 2. transformers -> Lantern"
"$PY" scripts/hf_make_random_gpt2.py --out "$W/hf"
$L score --model "$W/hf" --tokens "$W/hf/tokens.json" --dump "$W/ours_hf.safetensors"
"$PY" scripts/hf_parity.py --model "$W/hf" --tokens "$W/hf/tokens.json" --ours "$W/ours_hf.safetensors"
echo "parity: both directions within tolerance"
