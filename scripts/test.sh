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

# The debug build of the workspace and its two dozen test binaries takes 7 to 10 GB. A disk that
# fills while linking makes the linker die with a bus error that names no cause, so say it first.
need_gb=9
target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir"
free_gb=$(df -Pk "$target_dir" | awk 'NR==2 {print int($4 / 1048576)}')
if [ "$free_gb" -lt "$need_gb" ]; then
  used_gb=$(du -sk "$target_dir" | awk '{print int($1 / 1048576)}')
  if [ $((free_gb + used_gb)) -lt "$need_gb" ]; then
    echo "test.sh: $target_dir has ${free_gb} GB free on its disk (and ${used_gb} GB already built);" \
      "the test build needs about ${need_gb} GB. Free some space first." >&2
    exit 1
  fi
fi

bash scripts/fetch_fortunes.sh data/raw/fortunes >/dev/null
cargo fmt --all --check
cargo clippy --workspace --exclude candle-core --all-targets --quiet -- -D warnings
cargo test --workspace
