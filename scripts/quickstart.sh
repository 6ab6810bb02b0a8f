#!/usr/bin/env bash
# From nothing to a trained GPT: fetch real text (Debian's fortunes), build Lantern, prepare a
# BPE tokenizer and token shards, train gpt-tiny (CPU, or the GPU with a CUDA build and
# DEVICE=cuda), and print samples. Extra arguments go to `lantern train` (e.g. --set ...).
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE="${DEVICE:-cpu}"
FEATURES=()
[ "$DEVICE" != cpu ] && FEATURES=(--features cuda)

bash scripts/fetch_fortunes.sh data/raw/fortunes
cargo build --release -p lantern-cli "${FEATURES[@]}"
LANTERN=target/release/lantern

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
