#!/usr/bin/env bash
# GPT-2 and Llama (and Qwen3, Mistral, Phi-3, OLMo 2, Granite) parity with live transformers, fp32, tolerance 1e-4 max abs:
#  1. a GPT-2 Lantern trained and exported loads in transformers' GPT2LMHeadModel and gives
#     the same logits and loss as Lantern on the same tokens;
#  2. a GPT2LMHeadModel saved by transformers (save_pretrained) loads in Lantern with the same
#     agreement;
#  3. as 1 for a Llama (LlamaForCausalLM, grouped-query attention, untied head), and the greedy
#     text transformers generates from the export is Lantern's. (The other direction for Llama
#     is the golden test tests/tests/hf_llama_golden.rs, on files transformers wrote.)
#  4. as 3 for five of its relatives trained from scratch (model.family): a Qwen3 (head norms,
#     heads of 32 under a width of 64 and 4 heads, attention biases), a Mistral (a sliding
#     window of 16 under 48-token rows and a 44-token generation), a Phi-3 (fused qkv_proj
#     and gate_up_proj, the same window), an OLMo 2 (norms after attention and the MLP,
#     q/k norms over all heads) and a Granite (its multipliers GraniteConfig's 1: the export's
#     keys; tests/golden/granite_tiny checks other values).
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
# llama_family NAME KEYS: a Llama-family model with the [model] keys KEYS (newline-separated)
# trained from scratch, exported, its logits in transformers against Lantern's, and the greedy
# text transformers generates from the export against Lantern's.
llama_family() {
    local name=$1 keys=$2
    sed -e "s/preset = \"gpt-tiny\"/preset = \"llama-tiny\"\nn_kv_head = 2\nintermediate_size = 160\n$keys/" \
      -e "s|$W/run|$W/$name|" "$W/cfg.toml" > "$W/$name.toml"
    $L train --config "$W/$name.toml" --quiet
    $L export --model "$W/$name" --out "$W/$name-export"
    $L score --model "$W/$name-export" --tokens "$W/tokens.json" --dump "$W/ours_$name.safetensors"
    "$PY" scripts/hf_parity.py --model "$W/$name-export" --tokens "$W/tokens.json" --ours "$W/ours_$name.safetensors"
    $L generate --model "$W/$name-export" --prompt "The theory of" --max-new-tokens 40 --temperature 0 \
      --ignore-eot --print-ids 2> "$W/gen.err" >/dev/null
    "$PY" - "$W/$name-export" "$W/gen.err" <<'PYEOF'
import json, sys, torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
folder, err = sys.argv[1], sys.argv[2]
ours = next(l for l in open(err) if l.startswith("sample 1 ids: "))
ours = [int(x) for x in ours.split(": ", 1)[1].strip("[]\n ").split(", ")]
tok = PreTrainedTokenizerFast(tokenizer_file=f"{folder}/tokenizer.json")
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
prompt = tok("The theory of", add_special_tokens=False, return_tensors="pt").input_ids
# Lantern's --ignore-eot keeps going through the end-of-text token, where transformers would
# stop (or, with min_new_tokens, forbid it): no EOS for transformers either.
model.generation_config.eos_token_id = None
out = model.generate(prompt, max_new_tokens=40, do_sample=False, pad_token_id=0)
theirs = out[0, prompt.shape[1]:].tolist()
print(f"{type(model).__name__}: greedy {sum(a == b for a, b in zip(ours, theirs))}/{len(theirs)} "
      f"tokens the same")
sys.exit(0 if ours == theirs else 1)
PYEOF
}

echo "== 3. Lantern Llama -> transformers"
llama_family llama ""
echo "== 4. Lantern Qwen3, Mistral, Phi-3, OLMo 2 and Granite -> transformers"
llama_family qwen3 'family = "qwen3"\nhead_dim = 32\nattention_bias = true'
llama_family mistral 'family = "mistral"\nsliding_window = 16'
llama_family phi3 'family = "phi3"\nsliding_window = 16'
llama_family olmo2 'family = "olmo2"'
llama_family granite 'family = "granite"'
echo "parity: every direction within tolerance"
