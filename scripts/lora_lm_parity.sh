#!/usr/bin/env bash
# LoRA continued pretraining (`lantern train` with [lora], peft's CAUSAL_LM) checked against
# live peft and transformers, end to end through the `lantern` binary:
#  1. `lantern prepare` tokenizes the Star Trek fortunes (data/raw/fortunes/startrek) with the
#     pretrained model's own tokenizer.json (default split: 5 % of the documents held out);
#  2. `lantern train --config configs/gpt-tiny.toml` (ARCH=gpt, the default) or
#     configs/llama-tiny.toml (ARCH=llama) continues the pretrained model (BASE, default the
#     newest checkpoint of runs/gpt-tiny or runs/llama-tiny, a transformers folder) on that
#     text with `[lora]` r=8, alpha=16, lr 1e-3, STEPS optimizer steps (default 60): GPT-2 on
#     peft's default targets (c_attn), Llama on target_modules="all-linear" (the attention's
#     four projections and the MLP's three);
#  3. scripts/lora_lm_parity.py, on the validation documents (val.bin decoded back to text,
#     each document followed by <|endoftext|>, as in the shard): peft's PeftModel over BASE with the checkpoint's
#     adapter/ gives `lantern score --json`'s perplexity (rel. diff <= 1e-5) and `lantern
#     score --dump`'s logits on a few windows of token ids (max abs diff <= 1e-4); peft's
#     merge_and_unload() is the checkpoint's model.safetensors (every tensor, <= 1e-6; tied
#     weights checked as ties); transformers alone loads the checkpoint folder with the same
#     perplexity; peft counts the trained parameters lantern printed; the adapted model's
#     perplexity is below BASE's.
# ARCH=bert: masked-LM pretraining (BertForMaskedLM, peft's modules_to_save=["cls"]) over the
#     pretrained all-MiniLM-L6-v2 (BASE, default scripts/fetch_minilm.sh's folder: a bare
#     BertModel, so lantern draws the MLM head fresh and trains it in full), configs/bert-tiny.toml
#     with seq_len 128, STEPS default 30, query/value adapted; no perplexity (no causal LM):
#     scripts/lora_lm_parity.py checks peft's logits against transformers'
#     BertForMaskedLM.from_pretrained(<checkpoint>), merge_and_unload(), the trained-parameter
#     count and the adapter's task_type null / modules_to_save ["cls"].
# Needs the pretrained runs (or BASE=<folder>): `lantern prepare --input data/raw/fortunes --out
# data/fortunes --vocab-size 4096`, then `lantern train --config configs/gpt-tiny.toml`
# (runs/gpt-tiny) and `lantern train --config configs/llama-tiny.toml` (runs/llama-tiny); and
# the test-only venv (scripts/ref_env.sh, peft included). Builds with cargo (honours
# CARGO_TARGET_DIR). KEEP=1 keeps the work folder.
#   bash scripts/lora_lm_parity.sh
#   ARCH=llama bash scripts/lora_lm_parity.sh
#   ARCH=bert bash scripts/lora_lm_parity.sh
#   lantern export --model runs/gpt-tiny --out /tmp/gpt-hf && BASE=/tmp/gpt-hf bash scripts/lora_lm_parity.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH="${ARCH:-gpt}"
case "$ARCH" in
    gpt) sets=(); STEPS="${STEPS:-60}" ;;
    llama) sets=(--set 'lora.target_modules="all-linear"'); STEPS="${STEPS:-60}" ;;
    bert) sets=(--set train.seq_len=128); STEPS="${STEPS:-30}"
        [[ -n "${BASE:-}" ]] || BASE=$(bash scripts/fetch_minilm.sh | tail -1) ;;
    *) echo "ARCH=$ARCH: gpt, llama or bert" >&2; exit 2 ;;
esac
config="configs/$ARCH-tiny.toml"
if [[ -z "${BASE:-}" ]]; then
    BASE=$(ls -d "runs/$ARCH-tiny"/checkpoints/step-* 2>/dev/null | sort | tail -1 || true)
    if [[ -z "$BASE" ]]; then
        echo "no pretrained runs/$ARCH-tiny: make it first with" >&2
        echo "  lantern prepare --input data/raw/fortunes --out data/fortunes --vocab-size 4096" >&2
        echo "  lantern train --config $config" >&2
        echo "or pass BASE=<a transformers folder: config.json, model.safetensors, tokenizer.json>" >&2
        exit 2
    fi
fi
for f in config.json model.safetensors tokenizer.json; do
    [[ -f "$BASE/$f" ]] || { echo "BASE=$BASE has no $f" >&2; exit 2; }
done
BASE=$(cd "$BASE" && pwd)
PY=$(bash scripts/ref_env.sh | tail -1)
[[ -d data/raw/fortunes ]] || bash scripts/fetch_fortunes.sh
cargo build --release -p lantern-cli
lantern="${CARGO_TARGET_DIR:-target}/release/lantern"
work=$(mktemp -d "/tmp/lora-lm-parity-$ARCH.XXXX")
[ "${KEEP:-0}" = 1 ] && echo "work folder: $work" || trap 'rm -rf "$work"' EXIT
echo "base model: $BASE"
"$lantern" prepare --input data/raw/fortunes/startrek --tokenizer "$BASE/tokenizer.json" \
    --out "$work/data"
# Progress (the `LoRA r=... : N of M parameters trained` line included) goes to stderr.
"$lantern" train --config "$config" \
    --set model.init_from="\"$BASE\"" --set run.dir="\"$work/run\"" \
    --set data.dir="\"$work/data\"" --set train.max_steps="$STEPS" --set train.eval_every=30 \
    --set lora.r=8 --set lora.alpha=16 --set train.lr=1e-3 "${sets[@]}" 2>&1 \
    | tee "$work/train.log"
"$PY" scripts/lora_lm_parity.py --run "$work/run" --base "$BASE" --data "$work/data" \
    --lantern "$lantern" --log "$work/train.log"
