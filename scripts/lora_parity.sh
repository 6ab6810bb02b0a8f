#!/usr/bin/env bash
# LoRA parity with live peft and transformers, end to end through the `lantern` binary:
#  1. `lantern finetune` of all-MiniLM-L6-v2 (scripts/fetch_minilm.sh; or INIT, any
#     transformers folder of a family Lantern fine-tunes) on the fortune categories
#     (scripts/make_fortune_categories.py) with `[lora]` r=8, alpha=16 on the query and value
#     projections (peft's default targets), lr 1e-3, STEPS optimizer steps (default 60);
#  2. scripts/lora_parity.py: peft's PeftModel over the pretrained folder with the run's
#     adapter/ gives `lantern predict`'s logits on the validation texts; peft's
#     merge_and_unload() is the run's model.safetensors; transformers alone loads the run's
#     model folder with the same logits; peft counts the same trained parameters.
# Needs the test-only venv (scripts/ref_env.sh, peft included). KEEP=1 keeps the work folder.
#   bash scripts/lora_parity.sh
#   lantern export --model runs/gpt-tiny --out /tmp/gpt-hf && INIT=/tmp/gpt-hf bash scripts/lora_parity.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash scripts/ref_env.sh | tail -1)
INIT="${INIT:-$(bash scripts/fetch_minilm.sh | tail -1)}"
STEPS="${STEPS:-60}"
[[ -d data/raw/fortunes ]] || bash scripts/fetch_fortunes.sh
python3 scripts/make_fortune_categories.py >/dev/null
cargo build --release -p lantern-cli
work=$(mktemp -d /tmp/lora-parity.XXXX)
[ "${KEEP:-0}" = 1 ] && echo "work folder: $work" || trap 'rm -rf "$work"' EXIT
target/release/lantern finetune --config configs/minilm-fortunes.toml \
    --set model.init_from="\"$INIT\"" --set run.dir="\"$work/run\"" \
    --set train.max_steps="$STEPS" --set train.lr=1e-3 --set train.eval_every_steps=30 \
    --set lora.r=8 --set lora.alpha=16 | tee "$work/finetune.log"
"$PY" scripts/lora_parity.py --run "$work/run" --init "$INIT" \
    --data data/fortune-categories/validation.jsonl --lantern target/release/lantern \
    --log "$work/finetune.log"
