#!/usr/bin/env bash
# The test suite: formatting, lints, and every test of the workspace on CPU.
# Fetches the real-text corpus the tests train on (Debian's fortunes) first.
set -euo pipefail
cd "$(dirname "$0")/.."

# Open MPI (the CPU collectives of lantern-comm and its multi-process tests) and clang (bindgen
# of the `mpi` crate). Installed only where missing; CI runs as root.
mpi_pkgs=(libopenmpi-dev openmpi-bin libclang-dev clang)
missing=()
for p in "${mpi_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

bash scripts/fetch_fortunes.sh data/raw/fortunes >/dev/null
cargo fmt --all --check
cargo clippy --workspace --exclude candle-core --all-targets --quiet -- -D warnings
cargo test --workspace
