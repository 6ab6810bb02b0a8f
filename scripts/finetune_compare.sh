#!/usr/bin/env bash
# Fine-tune all-MiniLM-L6-v2 on the fortune-category task with Lantern and with transformers
# (PyTorch), same split, epochs, learning rate, batch size, max length, warmup, weight decay and
# seed, one after the other on this machine, and print both held-out macro-F1 and wall times.
#
#   bash scripts/finetune_compare.sh [--set train.epochs=2 ...]   # extra args go to lantern
#
# Env: THREADS (CPU threads for both, default: all), EPOCHS, LR, BATCH, MAX_LENGTH, SEED.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"

EPOCHS="${EPOCHS:-2}"; LR="${LR:-1e-4}"; BATCH="${BATCH:-32}"; MAX_LENGTH="${MAX_LENGTH:-64}"
SEED="${SEED:-42}"; THREADS="${THREADS:-$(nproc)}"
PY=$(bash scripts/ref_env.sh | tail -1)
MINILM=$(bash scripts/fetch_minilm.sh | tail -1)
[[ -d data/raw/fortunes ]] || bash scripts/fetch_fortunes.sh
python3 scripts/make_fortune_categories.py
data=data/fortune-categories
cargo build --release -p lantern-cli
run=runs/minilm-fortunes-compare
rm -rf "$run"

echo "== Lantern ($THREADS threads)"
t0=$(date +%s.%N)
RAYON_NUM_THREADS=$THREADS target/release/lantern finetune --config configs/minilm-fortunes.toml \
    --set model.init_from="\"$MINILM\"" --set run.dir="\"$run\"" \
    --set train.epochs="$EPOCHS" --set train.lr="$LR" --set train.batch_size="$BATCH" \
    --set data.max_length="$MAX_LENGTH" --set train.seed="$SEED" "$@"
t1=$(date +%s.%N)
target/release/lantern eval --checkpoint "$run" --data "$data/test.jsonl" --out "$run/test_metrics.json"
lantern_f1=$(python3 -c "import json; print(json.load(open('$run/test_metrics.json'))['macro_f1'])")
lantern_acc=$(python3 -c "import json; print(json.load(open('$run/test_metrics.json'))['accuracy'])")
lantern_s=$(python3 -c "print($t1 - $t0)")

echo "== transformers ($THREADS threads)"
torch_json=$("$PY" scripts/finetune_torch.py --model "$MINILM" --train "$data/train.jsonl" \
    --validation "$data/validation.jsonl" --test "$data/test.jsonl" --epochs "$EPOCHS" --lr "$LR" \
    --batch-size "$BATCH" --max-length "$MAX_LENGTH" --seed "$SEED" --warmup-ratio 0.1 \
    --weight-decay 0.01 --metric macro_f1 --threads "$THREADS" | tee /dev/stderr | tail -1)

python3 - "$lantern_f1" "$lantern_acc" "$lantern_s" "$torch_json" <<'PYEOF'
import json, sys
lf1, lacc, ls = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
t = json.loads(sys.argv[4])
print()
print(f"{'':14} {'test macro-F1':>14} {'test accuracy':>14} {'wall s':>8}")
print(f"{'lantern':14} {lf1:14.4f} {lacc:14.4f} {ls:8.1f}   (fine-tune incl. startup and evals)")
print(f"{'transformers':14} {t['test_macro_f1']:14.4f} {t['test_accuracy']:14.4f} {t['train_seconds']:8.1f}   (training loop and evals)")
print(f"difference (lantern - transformers): macro-F1 {100 * (lf1 - t['test_macro_f1']):+.2f} points")
PYEOF
