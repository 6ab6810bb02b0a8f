#!/usr/bin/env bash
# The test suite: formatting, lints, and every test of the workspace on CPU.
# Fetches the real-text corpus the tests train on (Debian's fortunes) first.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/fetch_fortunes.sh data/raw/fortunes >/dev/null
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
