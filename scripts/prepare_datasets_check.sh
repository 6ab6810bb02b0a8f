#!/usr/bin/env bash
# `lantern prepare` on corpora as `datasets` writes them (Dataset.to_json: JSON Lines, a JSON
# array, gzip; Dataset.to_parquet, and pyarrow's zstd Parquet) gives the same dataset as on the
# text they came from: the fortunes, split into documents by Python (scripts/prepare_datasets_check.py), prepared five ways and compared
# byte for byte (train.bin, val.bin, tokenizer.json, meta.json) with `lantern prepare` of the
# fortune files. Needs the reference venv (scripts/ref_env.sh: datasets) and the fortunes
# (scripts/fetch_fortunes.sh); not part of CI.
#   PY=python LANTERN=target/debug/lantern bash scripts/prepare_datasets_check.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"
PY="${PY:-$(bash scripts/ref_env.sh | tail -1)}"
if [[ -z "${LANTERN:-}" ]]; then
    cargo build --release -p lantern-cli
    LANTERN=target/release/lantern
fi
bash scripts/fetch_fortunes.sh data/raw/fortunes >/dev/null
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$PY" scripts/prepare_datasets_check.py data/raw/fortunes "$tmp"
"$LANTERN" prepare --input data/raw/fortunes --out "$tmp/from-text" --vocab-size 1024 2>/dev/null
status=0
for input in lines.jsonl array.json lines.jsonl.gz table.parquet zstd.parquet; do
    "$LANTERN" prepare --input "$tmp/$input" --out "$tmp/from-$input" --vocab-size 1024 2>/dev/null
    for f in train.bin val.bin tokenizer.json meta.json; do
        if cmp -s "$tmp/from-text/$f" "$tmp/from-$input/$f"; then
            echo "  $input: $f identical"
        else
            echo "  $input: $f DIFFERS"
            status=1
        fi
    done
done
[[ $status == 0 ]] && echo "prepare_datasets_check: every format gives the text's dataset"
exit $status
