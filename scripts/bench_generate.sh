#!/usr/bin/env bash
# Greedy text generation, Lantern against transformers, side by side in one run
# (scripts/bench_generate.py): a GPT-2-sized model (12 x 768, 12 heads, 1024 positions) with
# random weights and the fortunes tokenizer (vocabulary 4096), made once into
# target/bench-generate/ by transformers itself (scripts/hf_make_random_gpt2.py). ARCH=llama:
# a Llama of the same width and depth instead (12 x 768, 12 query heads sharing 4 key/value
# heads, MLP 2048, untied head, 1024 positions), made by transformers' LlamaForCausalLM.
#   N=200 THREADS=2 REPEATS=3 [ARCH=llama] bash scripts/bench_generate.sh
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
case "${ARCH:-gpt2}" in
  gpt2)
    DIR=target/bench-generate/gpt2-sized
    if [[ ! -f $DIR/model.safetensors ]]; then
      "$PY" scripts/hf_make_random_gpt2.py --out "$DIR" --n-layer 12 --n-embd 768 --n-head 12 \
        --vocab 4096 --n-positions 1024 --init-std 0 >/dev/null
    fi ;;
  llama)
    DIR=target/bench-generate/llama-gpt2-sized
    if [[ ! -f $DIR/model.safetensors ]]; then
      "$PY" - "$DIR" <<'PYEOF'
import sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
torch.manual_seed(0)
config = LlamaConfig(vocab_size=4096, hidden_size=768, intermediate_size=2048,
                     num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4,
                     max_position_embeddings=1024, tie_word_embeddings=False,
                     bos_token_id=None, eos_token_id=None, pad_token_id=None)
LlamaForCausalLM(config).save_pretrained(sys.argv[1], safe_serialization=True)
PYEOF
    fi ;;
  *) echo "ARCH=${ARCH}: expected gpt2 or llama" >&2; exit 2 ;;
esac
cp data/fortunes/tokenizer.json "$DIR/"
"$PY" scripts/bench_generate.py --lantern target/release/lantern --model "$DIR" \
  --max-new-tokens "$N" --threads "$THREADS" --repeats "$REPEATS"
