#!/usr/bin/env bash
# Lantern vs PyTorch eager on this machine, in one run: the same GPT training step (forward,
# cross-entropy, backward, AdamW) at the same size, fp32, no dropout, same thread count.
# Default size is shared/ANCHORS.md's: 4 layers, 256 wide, 4 heads, T=128, batch 8, vocab 2048.
# Prints both tokens/s (median over measured steps) and the ratio.
# LORA_R=8 (LORA_TARGETS=c_attn,c_fc ...): LoRA of that rank instead, Lantern's `bench --lora-r`
# against peft's get_peft_model over the PyTorch model (alpha = r, no dropout, the rest frozen).
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS="${THREADS:-2}"
STEPS="${STEPS:-10}"
SIZE=(--n-layer 4 --n-embd 256 --n-head 4 --vocab 2048 --seq-len 128 --batch 8)
LORA=()
if [[ "${LORA_R:-0}" != 0 ]]; then
    LORA=(--lora-r "$LORA_R" --lora-targets "${LORA_TARGETS:-c_attn}")
fi
PY=$(bash scripts/ref_env.sh | tail -n 1)
cargo build --release -q -p lantern-cli

ours=$(RAYON_NUM_THREADS=$THREADS target/release/lantern bench "${SIZE[@]}" ${LORA[@]+"${LORA[@]}"} --steps "$STEPS" --warmup 2)
eager=$(OMP_NUM_THREADS=$THREADS "$PY" scripts/bench_torch_gpt.py "${SIZE[@]}" ${LORA[@]+"${LORA[@]}"} --steps "$STEPS" --warmup 2 --threads "$THREADS" --attn manual)
"$PY" - "$ours" "$eager" "$THREADS" <<'PYEOF'
import json, sys
ours, eager, threads = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
lora = f", LoRA r={eager['lora_r']} ({eager['trained_params']} trained; pytorch: peft)" if eager.get("lora_r") else ""
print(f"GPT 4x256, T=128, batch 8, vocab 2048, fp32, {threads} threads{lora}, median of measured steps")
print(f"{'implementation':<22}{'tokens/s':>10}{'step ms':>10}")
for name, r in [("lantern", ours), ("pytorch eager", eager)]:
    print(f"{name:<22}{r['tokens_per_s']:>10.0f}{r['step_ms_median']:>10.1f}")
print(f"ratio lantern / pytorch eager: {ours['tokens_per_s'] / eager['tokens_per_s']:.2f}")
PYEOF
