#!/usr/bin/env bash
# Supervised fine-tuning, Lantern vs TRL's SFTTrainer on this machine, in one run: the same
# random Llama (4 layers, 256 wide, 4 heads, intermediate 688, the fortunes' 4096-entry BPE),
# the same prompt-completion records (the first 512 of data/fortune-sft), batch 16 padded to
# its longest, max_length 128, one epoch (32 steps), fp32 AdamW, the same thread count.
# Prints each side's tokens/s (the examples' input tokens a step reads on average, over the
# median step time after 2 warmup steps) and the ratio. Needs the prepared fortunes
# (data/fortunes/tokenizer.json) and the reference venv (scripts/ref_env.sh).
# PACKING=1: both pack the records into rows of max_length (TRL's packing=True, best-fit
# decreasing; its batches padding-free), so a step is 16 rows and the epoch fewer steps.
# DPO=1: the same prompts as preferences (data/fortune-sft/preference: the author chosen,
# another rejected), Lantern's DPO against TRL's DPOTrainer, both with the reference's
# log-probabilities computed before the timed steps; a step is 16 preferences, 32 rows.
# KTO=1: the same preferences unpaired (2 examples each), Lantern's KTO against TRL's
# KTOTrainer (its sequential sampler, reference precomputed); a step is 16 examples and their
# 16 KL rows.
# REWARD=1: the same preferences for a reward model (the Llama with a one-output score head,
# LlamaForSequenceClassification), `lantern finetune` with problem_type reward_modeling
# against TRL's RewardTrainer; a step is 16 preferences, 32 sequences read whole (tokens/s
# counts them all), with a backward through both.
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS="${THREADS:-2}"
N="${N:-512}"
PACKING="${PACKING:-0}"
DPO="${DPO:-0}"
KTO="${KTO:-0}"
REWARD="${REWARD:-0}"
layout=prompt-completion
pack_set=() pack_flag=()
if [[ "$PACKING" == 1 ]]; then pack_set=(--set data.packing=true); pack_flag=(--packing); fi
if [[ "$DPO" == 1 ]]; then layout=preference; pack_flag=(--dpo); PACKING=dpo; fi
if [[ "$KTO" == 1 ]]; then
    layout=preference; pack_set=(--set 'data.loss_type="kto"'); pack_flag=(--kto); PACKING=kto
fi
if [[ "$REWARD" == 1 ]]; then layout=preference; pack_flag=(--reward); PACKING=reward; fi
PY=$(bash scripts/ref_env.sh | tail -n 1)
cargo build --release -q -p lantern-cli
[[ -f data/fortune-sft/$layout/train.jsonl ]] || python3 scripts/make_fortune_sft.py >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" scripts/hf_make_random_llama.py --family llama --out "$tmp/model" \
    --tokenizer data/fortunes/tokenizer.json --vocab 4096 --hidden 256 --layers 4 --heads 4 \
    --kv-heads 4 --intermediate 688 --positions 256 >/dev/null
# What AutoTokenizer needs to know the end-of-sequence token TRL appends.
cat > "$tmp/model/tokenizer_config.json" <<'JSON'
{"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|endoftext|>",
 "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "model_max_length": 256}
JSON
head -n "$N" "data/fortune-sft/$layout/train.jsonl" > "$tmp/train.jsonl"
head -n 32 "data/fortune-sft/$layout/validation.jsonl" > "$tmp/val.jsonl"
# One config for both loops: `lantern train` (SFT, DPO, KTO: no evaluation, no checkpoint)
# or, with REWARD=1, `lantern finetune`, whose evaluation after the epoch is outside the
# timed steps.
command=(train --config "$tmp/run.toml" --quiet "${pack_set[@]}")
data_extra="" loop_extra=$'eval_every = 0\nlog_every = 1000\n[checkpoint]\nevery = 0'
if [[ "$REWARD" == 1 ]]; then
    command=(finetune --config "$tmp/run.toml" --quiet)
    data_extra='problem_type = "reward_modeling"' loop_extra=""
fi
cat > "$tmp/run.toml" <<TOML
[model]
init_from = "$tmp/model"
[data]
$data_extra
train = "$tmp/train.jsonl"
validation = "$tmp/val.jsonl"
max_length = 128
[train]
device = "cpu"
batch_size = 16
epochs = 1
lr = 1e-4
schedule = "constant"
warmup_steps = 0
beta2 = 0.999
weight_decay = 0.0
grad_clip = 1.0
$loop_extra
[run]
dir = "$tmp/run"
TOML
RAYON_NUM_THREADS=$THREADS target/release/lantern "${command[@]}"
trl=$(OMP_NUM_THREADS=$THREADS "$PY" scripts/bench_sft_torch.py --model "$tmp/model" \
    --train "$tmp/train.jsonl" --batch 16 --max-length 128 --threads "$THREADS" \
    "${pack_flag[@]}" 2>/dev/null | tail -n 1)
"$PY" - "$tmp/run/metrics.jsonl" "$trl" "$THREADS" "$PACKING" <<'PYEOF'
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
train = [r for r in recs if r.get("kind") == "train"]
steps = len(train)
ours_step = statistics.median(r["step_ms"] for r in train[2:]) / 1e3
# Pretraining's loop counts tokens_seen; fine-tuning's records hold each step's tokens.
ours_tok = (train[-1]["tokens_seen"] / steps if "tokens_seen" in train[-1]
            else statistics.mean(r["tokens"] for r in train))
ours = ours_tok / ours_step
trl = json.loads(sys.argv[2])
what = {"1": "packed rows of prompt-completion records", "dpo": "preferences (DPO)",
        "kto": "unpaired examples and their KL rows (KTO)",
        "reward": "preferences, both sequences scored (reward model)"}.get(
    sys.argv[4], "prompt-completion records")
kind = {"dpo": "DPO", "kto": "KTO", "reward": "Reward"}.get(sys.argv[4], "SFT")
print(f"{kind}: Llama 4x256 (vocab 4096), {steps} steps of 16 {what}, "
      f"max_length 128, fp32, {sys.argv[3]} threads, median step after 2 warmups")
print(f"{'implementation':<22}{'tokens/step':>12}{'step ms':>10}{'tokens/s':>10}")
ours_cmd = "lantern finetune" if sys.argv[4] == "reward" else "lantern train"
print(f"{ours_cmd:<22}{ours_tok:>12.0f}{ours_step * 1e3:>10.1f}{ours:>10.0f}")
trainer = f"trl {kind}Trainer"
print(f"{trainer:<22}{trl['tokens_per_step']:>12.0f}{trl['step_ms_median']:>10.1f}"
      f"{trl['tokens_per_s']:>10.0f}")
print(f"ratio lantern / trl: {ours / trl['tokens_per_s']:.2f}")
PYEOF
