#!/usr/bin/env bash
# GPT-2 (default), Llama (ARCH=llama), Qwen2 (ARCH=qwen2), Qwen3 (ARCH=qwen3) or Mistral
# (ARCH=mistral) sequence and token classification parity with live
# transformers, end to end through the `lantern` binary, fp32, logits within 1e-4 max abs
# (scripts/gpt2_cls_parity.py holds the checks):
#  1. `lantern prepare` of four fortune categories (byte-level BPE, vocabulary 512) and
#     `lantern train` of a small GPT (2 layers, width 64, 4 heads, context 64, 150 steps);
#     with ARCH=llama a small Llama instead (preset llama-tiny: 2 layers, width 64, 4 query
#     heads sharing 2 key/value heads, SwiGLU width 160, context 64, the same data and steps);
#     with ARCH=qwen2, qwen3, mistral, gemma3, gemma2, gemma, olmo2, smollm3 or phi3, a
#     Qwen2ForCausalLM,
#     Qwen3ForCausalLM, MistralForCausalLM, Gemma3ForCausalLM, Gemma2ForCausalLM (soft caps 50
#     and 30), GemmaForCausalLM, Olmo2ForCausalLM, SmolLM3ForCausalLM or Phi3ForCausalLM of the
#     same sizes made by
#     transformers (scripts/hf_make_random_llama.py: Qwen2's q/k/v biases redrawn so they
#     matter; Qwen3's head norms and heads of 32 under a width of 64; Mistral's and Phi-3's
#     sliding window 16, shorter than the 64 tokens; Phi-3's fused layers), which `lantern
#     train` (model.init_from) pretrains for the same 150 steps, ending in Qwen2For.../
#     Qwen3For.../MistralFor... classifiers below;
#  2. `lantern finetune` from that run folder (model.init_from) on the fortune categories
#     (scripts/make_fortune_categories.py): GPT2ForSequenceClassification (with ARCH=llama
#     LlamaForSequenceClassification), max_length 64, 2 epochs, batch 16, lr 1e-3, warmup 0.1,
#     weight decay 0.01, seed 42, exported to <run>/model;
#  3. transformers' GPT2ForSequenceClassification.from_pretrained(<run>/model) (with ARCH=llama
#     LlamaForSequenceClassification: the Python picks the classes from config.json's
#     model_type) on the validation texts (tokenizer.json, truncated to max_length, padded on the
#     right with pad_token_id, with the attention mask) against `lantern predict`'s logits, in
#     the same batches and in batches of other sizes (other padding); transformers' accuracy,
#     macro-F1 and loss against `lantern eval`'s, and its test-set scores against the run's
#     test_metrics.json; the folder as transformers alone loads it: AutoTokenizer (from
#     tokenizer_config.json: the pad token of config.json's pad_token_id, the same ids) and
#     pipeline("text-classification") in batches of 8, whose labels are `lantern predict`'s;
#  4. `lantern finetune` of the same model for token classification on the fortune attributions
#     (scripts/make_fortune_tags.py: IOB2 PER/WORK tags of words, `problem_type =
#     "token_classification"`): GPT2ForTokenClassification (with ARCH=llama
#     LlamaForTokenClassification), max_length 64, 3 epochs, the same batch, lr, warmup, weight
#     decay and seed, early-stopping metric seqeval's entity F1;
#  5. transformers' GPT2ForTokenClassification.from_pretrained(<run>/model) (with ARCH=llama
#     LlamaForTokenClassification) on the validation sentences (the words encoded as run_ner
#     does with add_prefix_space=True, is_split_into_words, truncated to max_length, padded on
#     the right with pad_token_id, with the attention mask): each word's first-sub-token logits
#     against `lantern predict`'s per-word logits and probabilities in four batchings, the same
#     tags and entities, and seqeval's entity precision/recall/F1, word accuracy and the loss
#     against `lantern eval`'s; the test set against the run's test_metrics.json.
# Both families pad with the end-of-text id (`<|endoftext|>`), and both encode words with the
# prefix space: `lantern prepare`'s byte-level BPE is the same for both. (For a Llama, run_ner's
# own AutoTokenizer loading is printed, not checked: it does not add the prefix space.)
# With COMPARE=1, a second stage fine-tunes the same pretrained model with transformers
# (scripts/finetune_torch.py on `lantern export --model <gpt run>`, a GPT2LMHeadModel folder;
# with ARCH=llama on `lantern export --model <llama run>`, a LlamaForCausalLM folder) with the
# same recipes (epochs, lr, batch, max length, warmup, weight decay, seed; the dropout rates are
# the pretraining config's, in config.json, in both (a Llama has none); the token classifier's
# dropout is 0.1 in both, transformers' default without classifier_dropout) and prints both test
# macro-F1, accuracy and wall times, then both test entity F1 (precision, recall), word accuracy
# and wall times of the token classifiers. By hand, the same comparison is:
#   lantern export --model <gpt run> --out gpt-hf
#   python scripts/finetune_torch.py --model gpt-hf --train train.jsonl --validation validation.jsonl \
#       --test test.jsonl --epochs 2 --batch-size 16 --lr 1e-3 --max-length 64 --warmup-ratio 0.1 \
#       --weight-decay 0.01 --seed 42 --metric macro_f1
#   python scripts/finetune_torch.py --task tags --model gpt-hf --train tags/train.jsonl \
#       --validation tags/validation.jsonl --test tags/test.conll --epochs 3 --batch-size 16 \
#       --lr 1e-3 --max-length 64 --warmup-ratio 0.1 --weight-decay 0.01 --seed 42 --metric f1
# Needs the test-only venv (scripts/ref_env.sh) and the fortunes text (scripts/fetch_fortunes.sh).
#   bash scripts/gpt2_cls_parity.sh
#   ARCH=llama bash scripts/gpt2_cls_parity.sh
#   ARCH=qwen2 bash scripts/gpt2_cls_parity.sh   # or qwen3, mistral, gemma3, gemma2, gemma, olmo2, smollm3, phi3
#   COMPARE=1 bash scripts/gpt2_cls_parity.sh
# Env: ARCH (gpt2, the default, llama, qwen2, qwen3, mistral, gemma3, gemma2, gemma, olmo2, smollm3 or phi3), COMPARE, THREADS (CPU threads of both fine-tunes in
# the comparison, default: all), KEEP=1 keeps the work folder (printed), CARGO_TARGET_DIR (where
# the release binary is built).
set -euo pipefail
cd "$(dirname "$0")/.."

ARCH="${ARCH:-gpt2}"
# BASE: the pretraining run's folder under the work folder; WHAT and CLS: the model and its
# classes' prefix in the headings; MODEL_TOML: its [model] section.
case "$ARCH" in
    gpt2)
        BASE=gpt; WHAT=GPT; CLS=GPT2
        MODEL_TOML='preset = "gpt-tiny"
n_layer = 2
n_embd = 64
n_head = 4
n_positions = 64' ;;
    llama)
        BASE=llama; WHAT=Llama; CLS=Llama
        MODEL_TOML='preset = "llama-tiny"
n_layer = 2
n_embd = 64
n_head = 4
n_kv_head = 2
intermediate_size = 160
n_positions = 64' ;;
    qwen2|qwen3|mistral|gemma3|gemma2|gemma|olmo2|smollm3|phi3)
        # Llama's relatives start from a transformers-made folder of their own family (the
        # Llama presets' sizes), which `lantern train` continues to pretrain.
        BASE=$ARCH; WHAT=$ARCH
        CLS=$(case $ARCH in qwen2) echo Qwen2 ;; qwen3) echo Qwen3 ;; gemma3) echo Gemma3Text ;;
              gemma2) echo Gemma2 ;; gemma) echo Gemma ;; olmo2) echo Olmo2 ;; phi3) echo Phi3 ;;
              smollm3) echo SmolLM3 ;; *) echo Mistral ;; esac)
        MODEL_TOML= ;;
    *) echo "ARCH must be gpt2, llama, qwen2, qwen3, mistral, gemma3, gemma2, gemma, olmo2, smollm3 or phi3, not '$ARCH'" >&2; exit 2 ;;
esac

PY=$(bash scripts/ref_env.sh | tail -n 1)
bash scripts/fetch_fortunes.sh data/raw/fortunes >/dev/null
cargo build --release -q -p lantern-cli
L=${CARGO_TARGET_DIR:-target}/release/lantern
W=$(mktemp -d)
if [[ "${KEEP:-0}" == 1 ]]; then
    echo "work folder: $W"
else
    trap 'rm -rf "$W"' EXIT
fi
F=data/raw/fortunes
EPOCHS=2; BATCH=16; LR=1e-3; MAX_LENGTH=64; WARMUP=0.1; DECAY=0.01; SEED=42
TAG_EPOCHS=3
THREADS="${THREADS:-$(nproc)}"

echo "== 1. pretrain a small $WHAT on fortunes"
$L prepare --input $F/computers $F/science $F/politics $F/literature --out "$W/data" --vocab-size 512
if [[ $ARCH != gpt2 && $ARCH != llama ]]; then
    "$PY" scripts/hf_make_random_llama.py --family "${ARCH/gemma3/gemma3_text}" --out "$W/hf-base" \
        --tokenizer "$W/data/tokenizer.json" --vocab 512 --sliding-window 16
    # The text as the model's own tokenizer splits it (Qwen2's has its own pre-tokenizer).
    rm -r "$W/data"
    $L prepare --input $F/computers $F/science $F/politics $F/literature --out "$W/data" \
        --tokenizer "$W/hf-base/tokenizer.json"
    MODEL_TOML="init_from = \"$W/hf-base\""
fi
cat > "$W/$BASE.toml" <<TOML
[model]
$MODEL_TOML
[data]
dir = "$W/data"
[train]
batch_size = 16
seq_len = 64
max_steps = 150
lr = 3e-3
eval_every = 0
[run]
dir = "$W/$BASE"
TOML
$L train --config "$W/$BASE.toml" --quiet

# finetune NAME DATA TEST EPOCHS METRIC [DATA KEYS]: fine-tunes the pretrained model on
# $W/DATA/{train,validation}.jsonl and $W/DATA/TEST into $W/NAME; sets `secs` to its wall time.
finetune() {
    cat > "$W/$1.toml" <<TOML
[run]
dir = "$W/$1"
[model]
init_from = "$W/$BASE"
[data]
train = "$W/$2/train.jsonl"
validation = "$W/$2/validation.jsonl"
test = "$W/$2/$3"
max_length = $MAX_LENGTH
${6:-}
[train]
epochs = $4
batch_size = $BATCH
lr = $LR
warmup_ratio = $WARMUP
weight_decay = $DECAY
seed = $SEED
[early_stopping]
metric = "$5"
TOML
    local t0 t1
    t0=$(date +%s.%N)
    RAYON_NUM_THREADS=$THREADS $L finetune --config "$W/$1.toml" --quiet
    t1=$(date +%s.%N)
    secs=$(python3 -c "print(round($t1 - $t0, 1))")
    echo "fine-tuned in $secs s"
}

echo "== 2. fine-tune it for sequence classification (${CLS}ForSequenceClassification)"
python3 scripts/make_fortune_categories.py --raw $F --out "$W/cats"
finetune cls cats test.jsonl "$EPOCHS" macro_f1
lantern_secs=$secs

echo "== 3. transformers vs lantern predict / eval"
"$PY" scripts/gpt2_cls_parity.py --lantern "$L" --run "$W/cls" --data "$W/cats/validation.jsonl" \
    --test "$W/cats/test.jsonl" --max-length $MAX_LENGTH --work "$W/parity"

if [[ $ARCH == gemma3 || $ARCH == olmo2 ]]; then
    # transformers has no token classifier for Gemma 3 or OLMo 2.
    exit 0
fi
echo "== 4. fine-tune it for token classification (${CLS}ForTokenClassification)"
python3 scripts/make_fortune_tags.py --raw $F --out "$W/tags"
finetune tag tags test.conll "$TAG_EPOCHS" f1 'problem_type = "token_classification"'
lantern_tag_secs=$secs

echo "== 5. transformers vs lantern predict / eval (token classifier)"
"$PY" scripts/gpt2_cls_parity.py --task tags --lantern "$L" --run "$W/tag" --data "$W/tags/validation.jsonl" \
    --test "$W/tags/test.conll" --max-length $MAX_LENGTH --work "$W/parity-tags"

if [[ "${COMPARE:-0}" == 1 ]]; then
    echo "== 6. the same fine-tune in transformers ($THREADS threads)"
    $L export --model "$W/$BASE" --out "$W/$BASE-hf"
    torch_json=$("$PY" scripts/finetune_torch.py --model "$W/$BASE-hf" --train "$W/cats/train.jsonl" \
        --validation "$W/cats/validation.jsonl" --test "$W/cats/test.jsonl" --epochs $EPOCHS \
        --batch-size $BATCH --lr $LR --max-length $MAX_LENGTH --warmup-ratio $WARMUP \
        --weight-decay $DECAY --seed $SEED --metric macro_f1 --threads "$THREADS" \
        | tee >(cat >&2) | tail -1)
    python3 - "$W/cls/test_metrics.json" "$lantern_secs" "$torch_json" <<'PYEOF'
import json, sys
ours, secs, theirs = json.load(open(sys.argv[1])), float(sys.argv[2]), json.loads(sys.argv[3])
print()
print(f"{'':14}{'test macro_f1':>15}{'test accuracy':>15}{'wall s':>9}")
print(f"{'lantern':14}{ours['macro_f1']:15.4f}{ours['accuracy']:15.4f}{secs:9.1f}   (fine-tune incl. startup, evals, test)")
print(f"{'transformers':14}{theirs['test_macro_f1']:15.4f}{theirs['test_accuracy']:15.4f}"
      f"{theirs['train_seconds']:9.1f}   (training loop and evals)")
print(f"difference (lantern - transformers): macro_f1 {100 * (ours['macro_f1'] - theirs['test_macro_f1']):+.2f} points, "
      f"accuracy {100 * (ours['accuracy'] - theirs['test_accuracy']):+.2f} points")
PYEOF
    echo "== 7. the same token-classification fine-tune in transformers ($THREADS threads)"
    torch_json=$("$PY" scripts/finetune_torch.py --task tags --model "$W/$BASE-hf" --train "$W/tags/train.jsonl" \
        --validation "$W/tags/validation.jsonl" --test "$W/tags/test.conll" --epochs $TAG_EPOCHS \
        --batch-size $BATCH --lr $LR --max-length $MAX_LENGTH --warmup-ratio $WARMUP \
        --weight-decay $DECAY --seed $SEED --metric f1 --threads "$THREADS" \
        | tee >(cat >&2) | tail -1)
    python3 - "$W/tag/test_metrics.json" "$lantern_tag_secs" "$torch_json" <<'PYEOF'
import json, sys
ours, secs, theirs = json.load(open(sys.argv[1])), float(sys.argv[2]), json.loads(sys.argv[3])
print()
print(f"{'':14}{'test F1':>9}{'precision':>11}{'recall':>8}{'accuracy':>10}{'wall s':>9}")
print(f"{'lantern':14}{ours['f1']:9.4f}{ours['precision']:11.4f}{ours['recall']:8.4f}{ours['accuracy']:10.4f}"
      f"{secs:9.1f}   (fine-tune incl. startup, evals, test)")
print(f"{'transformers':14}{theirs['test_f1']:9.4f}{theirs['test_precision']:11.4f}{theirs['test_recall']:8.4f}"
      f"{theirs['test_accuracy']:10.4f}{theirs['train_seconds']:9.1f}   (training loop and evals)")
print(f"difference (lantern - transformers): entity F1 {100 * (ours['f1'] - theirs['test_f1']):+.2f} points, "
      f"word accuracy {100 * (ours['accuracy'] - theirs['test_accuracy']):+.2f} points")
PYEOF
fi
echo "$ARCH sequence and token classification parity: PASS"
