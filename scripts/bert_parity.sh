#!/usr/bin/env bash
# BERT parity with transformers through the `lantern` binary (needs the reference venv and the
# MiniLM checkpoint; not part of CI). See scripts/bert_parity.py for the checks.
#   bash scripts/bert_parity.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"
PY=$(bash scripts/ref_env.sh | tail -1)
MINILM=$(bash scripts/fetch_minilm.sh | tail -1)
[[ -d data/raw/fortunes ]] || bash scripts/fetch_fortunes.sh
cargo build --release -p lantern-cli
"$PY" scripts/bert_parity.py --lantern target/release/lantern --minilm "$MINILM"
