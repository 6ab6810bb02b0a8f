#!/usr/bin/env bash
# Install the pinned CUDA 13.0 build toolchain from PyPI into .cuda/ of this checkout
# and print the environment that `cargo build/check --features cuda` needs.
#
#   scripts/cuda_toolchain.sh          install if needed, then show the env to export
#   scripts/cuda_toolchain.sh --env    same, but stdout carries only `export ...` lines:
#                                        eval "$(scripts/cuda_toolchain.sh --env)"
#
# Layout (everything under .cuda/, which git ignores):
#   .cuda/site/   the pinned wheels, installed with `pip --no-deps --target`
#   .cuda/root/   a CUDA root that candle-kernels (cudaforge) and cudarc accept:
#                 bin/ nvcc..., include/ (CUDA headers + nccl.h), nvvm/,
#                 lib64/ unversioned .so names for the linker + the libcuda.so link stub
#   .cuda/stamp   the pin list (and layout version) of the finished install
#
# Everything is pinned to CUDA 13.0 because the GPU nodes run driver 580 (CUDA 13.0):
# PTX from a newer nvcc does not load there, and a newer nvvm breaks ptxas at build time.
# See docs/cuda.md.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# LANTERN_CUDA_DIR puts the toolchain elsewhere, e.g. one shared by several checkouts: cargo
# reruns candle's 11-minute nvcc build whenever the toolkit's path changes.
CUDA_DIR="${LANTERN_CUDA_DIR:-$REPO/.cuda}"
SITE="$CUDA_DIR/site"
ROOT="$CUDA_DIR/root"
STAMP="$CUDA_DIR/stamp"

# Every wheel, pinned exactly. Installed with --no-deps so nothing unpinned comes along.
PINS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35
  nvidia-nccl-cu13==2.27.7
)
# Bump when the layout of .cuda/root changes, so existing installs are redone.
LAYOUT=1
COMPUTE_CAP=90 # sm_90a: H100 / H200

ENV_ONLY=0
case "${1:-}" in
  "") ;;
  --env) ENV_ONLY=1 ;;
  -h | --help)
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "usage: $0 [--env]" >&2
    exit 2
    ;;
esac

log() { echo "cuda_toolchain: $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

stamp_text() {
  echo "layout=$LAYOUT"
  printf '%s\n' "${PINS[@]}"
}

print_env() {
  # All the usual root variables point here: cudarc adds lib dirs of every one that is set
  # (CUDA_HOME first), so a stale one from the shell could bring in another toolkit's libs.
  # LIBRARY_PATH is for the linker only. Deliberately no LD_LIBRARY_PATH: lib64/ holds the
  # libcuda.so link stub, and at run time on a GPU node the real driver's libcuda.so.1 must be
  # the one that loads (the stub answers every call with CUDA_ERROR_STUB_LIBRARY).
  cat <<EOF
export PATH="$ROOT/bin:\${PATH}"
export CUDA_ROOT="$ROOT"
export CUDA_HOME="$ROOT"
export CUDA_PATH="$ROOT"
export CUDA_TOOLKIT_ROOT_DIR="$ROOT"
export NVCC="$ROOT/bin/nvcc"
export CUDA_COMPUTE_CAP=$COMPUTE_CAP
export LIBRARY_PATH="$ROOT/lib64\${LIBRARY_PATH:+:\${LIBRARY_PATH}}"
EOF
}

is_installed() {
  [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(stamp_text)" && -x "$ROOT/bin/nvcc" &&
    -f "$ROOT/lib64/libcuda.so" ]]
}

# Link stub for the driver library. No wheel ships libcuda (it comes with the driver), but
# cudarc's dynamic-linking asks the linker for -lcuda. The stub defines every function cuda.h
# declares, taken from the preprocessed header so the versioned names (cuMemAlloc_v2, ...)
# are the ones defined, has the driver's soname libcuda.so.1, and returns
# CUDA_ERROR_STUB_LIBRARY (34) from every call should it ever be loaded by mistake.
build_stub() {
  local inc="$1" out="$2" tmp
  tmp="$(mktemp -d)"
  # shellcheck disable=SC2064 # expand $tmp now
  trap "rm -rf '$tmp'" EXIT
  printf '#include <cuda.h>\n' >"$tmp/names.c"
  # cudarc's driver bindings also cover cudaProfiler.h, which no pinned wheel ships; its three
  # functions (exported by the real libcuda.so.1 too) are listed by hand.
  printf '%s\n' cuProfilerInitialize cuProfilerStart cuProfilerStop >"$tmp/names"
  # Default names, the per-thread-stream variants (_ptds/_ptsz) and the legacy unversioned
  # names, which the real libcuda.so.1 exports as well.
  local defs
  for defs in "" "-DCUDA_API_PER_THREAD_DEFAULT_STREAM" "-D__CUDA_API_VERSION_INTERNAL"; do
    # shellcheck disable=SC2086 # $defs is one flag or none
    gcc -E -P $defs -I "$inc" "$tmp/names.c" >"$tmp/pre.c"
    # -aux-info writes one prototype per line for every function declared in the unit.
    gcc -fsyntax-only -w -aux-info "$tmp/protos" "$tmp/pre.c"
    sed -n 's/.*[^A-Za-z0-9_]\(cu[A-Za-z0-9_]*\) (.*/\1/p' "$tmp/protos" >>"$tmp/names"
  done
  sort -u "$tmp/names" -o "$tmp/names"
  local n
  n="$(wc -l <"$tmp/names")"
  ((n > 300)) || die "found only $n driver functions in cuda.h; the stub would be incomplete"
  local must
  for must in cuInit cuMemAlloc_v2 cuLaunchKernel cuProfilerStart; do
    grep -qx "$must" "$tmp/names" || die "$must missing from the stub names"
  done
  {
    echo "/* libcuda.so link stub, generated by scripts/cuda_toolchain.sh. Never load it. */"
    sed 's/.*/int &(void) { return 34; \/* CUDA_ERROR_STUB_LIBRARY *\/ }/' "$tmp/names"
  } >"$tmp/stub.c"
  gcc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$out" "$tmp/stub.c"
  log "link stub: $n driver functions"
  rm -rf "$tmp"
  trap - EXIT
}

install() {
  python3 -c 'import sys' 2>/dev/null || die "python3 not found; install Python 3 first"
  python3 -m pip --version >/dev/null 2>&1 ||
    die "pip is missing for $(command -v python3): install it (e.g. 'apt-get install python3-pip' or 'python3 -m ensurepip --upgrade')"
  command -v gcc >/dev/null || die "gcc not found (needed for the libcuda link stub)"

  rm -rf "$ROOT" "$STAMP" "$CUDA_DIR/site.tmp" "$CUDA_DIR/root.tmp"
  local t0=$SECONDS
  # The wheels are only (re)installed when the pin list changed; a layout change alone
  # just rebuilds root/.
  if [[ ! -f "$SITE/.pins" || "$(cat "$SITE/.pins")" != "$(printf '%s\n' "${PINS[@]}")" ]]; then
    rm -rf "$SITE"
    log "installing ${#PINS[@]} pinned wheels into $SITE (about 1.4 GB) ..."
    # --no-deps: only the listed pins; nvidia-cuda-nvcc would otherwise pull an unpinned nvvm.
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --no-deps --no-compile --disable-pip-version-check \
      --target "$CUDA_DIR/site.tmp" "${PINS[@]}" >&2
    printf '%s\n' "${PINS[@]}" >"$CUDA_DIR/site.tmp/.pins"
    mv "$CUDA_DIR/site.tmp" "$SITE"
    log "pip done in $((SECONDS - t0)) s"
  fi

  local cu="$SITE/nvidia/cu13" nccl="$SITE/nvidia/nccl" r="$CUDA_DIR/root.tmp"
  [[ -x "$cu/bin/nvcc" ]] || die "nvcc not found at $cu/bin/nvcc; the wheel layout changed"
  [[ -f "$cu/include/cuda.h" ]] || die "cuda.h not found under $cu/include"
  [[ -f "$nccl/include/nccl.h" ]] || die "nccl.h not found under $nccl/include"
  mkdir -p "$r/include" "$r/lib64"

  # Relative links, so the folder keeps working if the checkout moves.
  ln -s ../site/nvidia/cu13/bin "$r/bin"
  ln -s ../site/nvidia/cu13/nvvm "$r/nvvm"
  local f
  for f in "$cu"/include/* "$nccl"/include/*; do
    ln -s "../../site/${f#"$SITE"/}" "$r/include/$(basename "$f")"
  done

  # lib64: every versioned library (the linker follows DT_NEEDED, e.g. libcublas -> libcublasLt)
  # plus the unversioned development names that -lcudart, -lcublas, ... look for.
  for f in "$cu"/lib/*.so* "$cu"/lib/*.a "$nccl"/lib/*.so*; do
    ln -s "../../site/${f#"$SITE"/}" "$r/lib64/$(basename "$f")"
  done
  local lib sonames
  for lib in cudart cublas cublasLt curand nvrtc nccl; do
    sonames=("$r/lib64/lib$lib.so."*) # sorted: the shortest (the soname) comes first
    [[ -e "${sonames[0]}" ]] || die "lib$lib.so.* not found in the wheels"
    ln -s "$(basename "${sonames[0]}")" "$r/lib64/lib$lib.so"
  done
  build_stub "$r/include" "$r/lib64/libcuda.so"

  local version
  version="$("$r/bin/nvcc" --version)"
  [[ "$version" == *"release 13.0,"* ]] || die "nvcc is not CUDA 13.0: $version"
  mv "$r" "$ROOT"
  stamp_text >"$STAMP"
  log "installed in $((SECONDS - t0)) s; $(du -sh "$CUDA_DIR" | cut -f1) in $CUDA_DIR"
}

if ! is_installed; then
  mkdir -p "$CUDA_DIR"
  # One installer at a time per checkout; a waiting one finds the work done.
  exec 9>"$CUDA_DIR/.lock"
  flock 9
  is_installed || install
  flock -u 9
fi

if ((ENV_ONLY)); then
  print_env
else
  echo "CUDA 13.0 toolchain ready in $ROOT. Export this (or: eval \"\$($0 --env)\"):"
  print_env
fi
