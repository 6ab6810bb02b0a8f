#!/usr/bin/env bash
# Fine-tune all-MiniLM-L6-v2 with Lantern and with transformers (PyTorch), same split, epochs,
# learning rate, batch size, max length, warmup, weight decay and seed, one after the other on
# this machine, and print both held-out scores and wall times. Five tasks:
#   TASK=classes (default): the fortune's category (scripts/make_fortune_categories.py),
#                           macro-F1 and accuracy;
#   TASK=tags:              token classification, the attribution's author and work
#                           (scripts/make_fortune_tags.py), seqeval's entity F1, P, R and the
#                           word accuracy;
#   TASK=qa:                extractive question answering, who said it and which work it is
#                           from (scripts/make_fortune_qa.py), the squad metric's F1 and exact
#                           match (percent);
#   TASK=qa2:               the same as SQuAD 2.0, each context also asked the question it
#                           does not answer (make_fortune_qa.py --version-2), the squad_v2
#                           metric's F1, exact match and its answerable / unanswerable parts;
#   TASK=choice:            multiple choice, which ending continues a fortune
#                           (scripts/make_fortune_choices.py, SWAG layout), accuracy.
#
#   bash scripts/finetune_compare.sh [--set train.epochs=2 ...]   # extra args go to lantern
#
# (transformers' output goes to stderr through `tee >(cat >&2)`: `tee /dev/stderr` would
# reopen a log file that stderr is redirected to and truncate it.)
# Env: TASK, THREADS (CPU threads for both, default: all), EPOCHS, LR, BATCH, MAX_LENGTH, SEED,
# OPTIM (adamw, the default, sgd, adagrad or rmsprop: train.optimizer and torch.optim's class),
# MOMENTUM (SGD's and RMSprop's, default 0) and GROUP=1 (group_by_length in both; classes and
# tags). SGD wants a larger LR than AdamW, e.g.
#   OPTIM=sgd MOMENTUM=0.9 LR=0.05 bash scripts/finetune_compare.sh
# MODEL=modernbert (a random ModernBERT of MiniLM's size, scripts/make_random_modernbert.py) or
# MODEL=<folder> fine-tunes that encoder in place of all-MiniLM-L6-v2.
# LORA_R=8 (and LORA_ALPHA, default 16; LORA_DROPOUT, default 0): LoRA of that rank on both
# sides (Lantern's [lora], peft's LoraConfig; classes and tags), which wants a larger LR, e.g.
#   LORA_R=8 LR=1e-3 EPOCHS=4 bash scripts/finetune_compare.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"

TASK="${TASK:-classes}"
make_args=(); torch_args=()
case "$TASK" in
    classes) data=data/fortune-categories; config=configs/minilm-fortunes.toml; test=test.jsonl
             metric=macro_f1; keys="macro_f1 accuracy"; make=make_fortune_categories.py; len=64 ;;
    tags)    data=data/fortune-tags; config=configs/minilm-fortune-tags.toml; test=test.conll
             metric=f1; keys="f1 precision recall accuracy"; make=make_fortune_tags.py; len=128 ;;
    qa)      data=data/fortune-qa; config=configs/minilm-fortune-qa.toml; test=test.json
             metric=f1; keys="f1 exact_match"; make=make_fortune_qa.py; len=128 ;;
    qa2)     data=data/fortune-qa2; config=configs/minilm-fortune-qa2.toml; test=test.json
             metric=f1; keys="f1 exact HasAns_f1 NoAns_f1"; make=make_fortune_qa.py; len=128
             make_args=(--version-2); torch_args=(--version-2-with-negative) ;;
    choice)  data=data/fortune-choices; config=configs/minilm-fortune-choice.toml; test=test.jsonl
             metric=accuracy; keys="accuracy"; make=make_fortune_choices.py; len=64 ;;
    *) echo "TASK must be classes, tags, qa, qa2 or choice, not $TASK" >&2; exit 2 ;;
esac
lora_set=(); lora_args=()
if [ -n "${LORA_R:-}" ]; then
    [[ "$TASK" == classes || "$TASK" == tags ]] || { echo "LORA_R: TASK classes or tags" >&2; exit 2; }
    lora_set=(--set lora.r="$LORA_R" --set lora.alpha="${LORA_ALPHA:-16}" --set lora.dropout="${LORA_DROPOUT:-0.0}")
    lora_args=(--lora-r "$LORA_R" --lora-alpha "${LORA_ALPHA:-16}" --lora-dropout "${LORA_DROPOUT:-0.0}")
fi
group_by_length=false; group_args=()
if [ "${GROUP:-0}" = 1 ]; then group_by_length=true; group_args=(--group-by-length); fi
EPOCHS="${EPOCHS:-2}"; LR="${LR:-1e-4}"; BATCH="${BATCH:-32}"; MAX_LENGTH="${MAX_LENGTH:-$len}"
SEED="${SEED:-42}"; THREADS="${THREADS:-$(nproc)}"; OPTIM="${OPTIM:-adamw}"; MOMENTUM="${MOMENTUM:-0}"
PY=$(bash scripts/ref_env.sh | tail -1)
MINILM=$(bash scripts/fetch_minilm.sh | tail -1)
# MODEL=modernbert: a ModernBERT of MiniLM's size with random weights and MiniLM's tokenizer
# (scripts/make_random_modernbert.py; no pretrained one can be fetched here): speeds compare,
# scores only against each other. MODEL=<folder>: any other encoder folder.
case "${MODEL:-}" in
    "") ;;
    modernbert) "$PY" scripts/make_random_modernbert.py --tokenizer-from "$MINILM" \
                    --out runs/random-modernbert >/dev/null
                MINILM=runs/random-modernbert ;;
    *) MINILM="$MODEL" ;;
esac
[[ -d data/raw/fortunes ]] || bash scripts/fetch_fortunes.sh
python3 "scripts/$make" "${make_args[@]}"
cargo build --release -p lantern-cli
run="runs/minilm-$TASK-compare"
rm -rf "$run"

echo "== Lantern ($THREADS threads)"
t0=$(date +%s.%N)
RAYON_NUM_THREADS=$THREADS target/release/lantern finetune --config "$config" \
    --set model.init_from="\"$MINILM\"" --set run.dir="\"$run\"" \
    --set train.epochs="$EPOCHS" --set train.lr="$LR" --set train.batch_size="$BATCH" \
    --set data.max_length="$MAX_LENGTH" --set train.seed="$SEED" \
    --set train.optimizer="\"$OPTIM\"" --set train.momentum="$MOMENTUM" \
    --set train.group_by_length="$group_by_length" "${lora_set[@]}" "$@"
t1=$(date +%s.%N)
target/release/lantern eval --checkpoint "$run" --data "$data/$test" --out "$run/test_eval.json"

echo "== transformers ($THREADS threads)"
torch_json=$("$PY" scripts/finetune_torch.py --task "${TASK%2}" "${torch_args[@]}" --model "$MINILM" --train "$data/train.jsonl" \
    --validation "$data/validation.jsonl" --test "$data/$test" --epochs "$EPOCHS" --lr "$LR" \
    --batch-size "$BATCH" --max-length "$MAX_LENGTH" --seed "$SEED" --warmup-ratio 0.1 \
    --weight-decay 0.01 --optim "$OPTIM" --momentum "$MOMENTUM" --metric "$metric" \
    --threads "$THREADS" "${group_args[@]}" "${lora_args[@]}" | tee >(cat >&2) | tail -1)

python3 - "$run/test_eval.json" "$(python3 -c "print($t1 - $t0)")" "$torch_json" $keys <<'PYEOF'
import json, sys
ours, secs, theirs, keys = json.load(open(sys.argv[1])), float(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4:]
print()
print(f"{'':14}" + "".join(f"{'test ' + k:>18}" for k in keys) + f"{'wall s':>9}")
print(f"{'lantern':14}" + "".join(f"{ours[k]:18.4f}" for k in keys) + f"{secs:9.1f}   (fine-tune incl. startup and evals)")
print(f"{'transformers':14}" + "".join(f"{theirs['test_' + k]:18.4f}" for k in keys)
      + f"{theirs['train_seconds']:9.1f}   (training loop and evals)")
# Percent already for question answering's squad metric; fractions for the others.
points = 1 if keys[0] == "f1" and ("exact_match" in keys or "exact" in keys) else 100
print(f"difference (lantern - transformers): {keys[0]} {points * (ours[keys[0]] - theirs['test_' + keys[0]]):+.2f} points")
PYEOF
