#!/usr/bin/env bash
# Greedy text generation, Lantern against transformers, side by side in one run
# (scripts/bench_generate.py): a GPT-2-sized model (12 x 768, 12 heads, 1024 positions) with
# random weights and the fortunes tokenizer (vocabulary 4096), made once into
# target/bench-generate/ by transformers itself (scripts/hf_make_random_gpt2.py).
#   N=200 THREADS=2 REPEATS=3 bash scripts/bench_generate.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-200}"
THREADS="${THREADS:-2}"
REPEATS="${REPEATS:-3}"
PY="$(bash scripts/ref_env.sh | tail -n 1)"
cargo build --release -q -p lantern-cli
if [[ ! -f data/fortunes/tokenizer.json ]]; then
  bash scripts/fetch_fortunes.sh data/raw/fortunes >/dev/null
  target/release/lantern prepare --input data/raw/fortunes --out data/fortunes --vocab-size 4096
fi
DIR=target/bench-generate/gpt2-sized
if [[ ! -f $DIR/model.safetensors ]]; then
  "$PY" scripts/hf_make_random_gpt2.py --out "$DIR" --n-layer 12 --n-embd 768 --n-head 12 \
    --vocab 4096 --n-positions 1024 --init-std 0 >/dev/null
fi
cp data/fortunes/tokenizer.json "$DIR/"
"$PY" scripts/bench_generate.py --lantern target/release/lantern --model "$DIR" \
  --max-new-tokens "$N" --threads "$THREADS" --repeats "$REPEATS"
