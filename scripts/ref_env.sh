#!/usr/bin/env bash
# Create (idempotently) the test-only Python reference environment .venv-ref/ in the repo
# root: PyTorch + transformers + safetensors + numpy, seqeval (the NER metrics that
# transformers' run_ner reports), tensorboard (to read our event files) and peft (the LoRA
# reference: adapters, their gradients and merges), trl and datasets (the SFTTrainer reference of
# scripts/make_sft_golden.py), used by the parity tests and the CPU/GPU
# speed baseline. The Rust build never needs it.
#
#   scripts/ref_env.sh            # creates or reuses .venv-ref; last stdout line = its python
#   PY=$(scripts/ref_env.sh | tail -1)
#
# Env: PYTHON (interpreter to build the venv from, default python3), REF_VENV (default
# <repo>/.venv-ref). A stamp file holding the pins makes a second run instant; changing a pin
# below (or deleting the stamp) reinstalls. torch comes from PyPI: the wheel pulls ~5 GB of
# CUDA libraries; we only use it on CPU here (it also works on a GPU node).
set -euo pipefail

PINS="torch==2.15.0 transformers==5.24.0 safetensors==0.8.0 numpy==2.4.6 seqeval==1.2.2 tensorboard==2.21.0 peft==0.21.2 trl==1.16.0 datasets==5.2.0"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
venv="${REF_VENV:-$repo/.venv-ref}"
python="${PYTHON:-python3}"
constraints="$here/ref_constraints.txt"
stamp="$venv/.lantern-ref-stamp"
want="pins: $PINS | constraints: $(sha256sum "$constraints" | cut -c1-16)"

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "$venv/bin/python"
    exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating venv $venv with $("$python" --version 2>&1)" >&2
    "$python" -m venv "$venv"
fi
rm -f "$stamp"
echo "installing $PINS (slow the first time: torch + CUDA wheels, ~5 GB)" >&2
# shellcheck disable=SC2086
nice -n 10 "$venv/bin/python" -m pip install --disable-pip-version-check \
    -c "$constraints" $PINS >&2
"$venv/bin/python" - >&2 <<'PYEOF'
import numpy, peft, safetensors, seqeval, tensorboard, torch, transformers
print("torch", torch.__version__, "transformers", transformers.__version__,
      "safetensors", safetensors.__version__, "numpy", numpy.__version__, "peft", peft.__version__)
PYEOF
echo "$want" > "$stamp"
echo "$venv/bin/python"
