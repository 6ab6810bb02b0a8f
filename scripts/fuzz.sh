#!/usr/bin/env bash
# Fuzz every reader of on-disk data for a bounded time each, one target after the other, and
# print executions/s and coverage per target. A scheduled job, not part of CI.
#
#   scripts/fuzz.sh [seconds-per-target]          (default 60)
#   FUZZ_TARGETS="shard config" scripts/fuzz.sh 300
#
# Needs a nightly toolchain (`rustup toolchain install nightly`); installs cargo-fuzz if it is
# missing. Corpora grow in fuzz/corpus/<target> (git-ignored), seeded from fuzz/seeds/<target>;
# a crashing input lands in fuzz/artifacts/<target>/ and the script exits non-zero. Reproduce
# one with `cargo +nightly fuzz run -s none <target> <file>`, then add it as a regression test.
#
# Sanitizer "none": the readers are safe Rust (the shard target checks bytes without mmap), so
# AddressSanitizer would add build time and a 2-3x slowdown for little; panics, overflows
# (debug assertions are on) and out-of-memory are still caught.
set -euo pipefail
secs=${1:-60}
cd "$(dirname "$0")/.."
targets=${FUZZ_TARGETS:-"config shard checkpoint_model trainer_state documents records"}

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: no nightly toolchain; install one with: rustup toolchain install nightly" >&2
    exit 1
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz
fi

cargo +nightly fuzz build -s none
mkdir -p fuzz/target/logs
status=0
summary=()
for t in $targets; do
    mkdir -p "fuzz/corpus/$t"
    log="fuzz/target/logs/$t.log"
    echo "== $t: ${secs}s ==" >&2
    # -rss_limit_mb: a reader that tries to allocate from a lying header fails loudly here.
    dict=()
    if [[ -f "fuzz/dicts/$t.dict" ]]; then dict=(-dict="fuzz/dicts/$t.dict"); fi
    if cargo +nightly fuzz run -s none "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" \
        >"$log" 2>&1; then
        result=ok
    else
        result="FAILED (see $log and fuzz/artifacts/$t/)"
        status=1
    fi
    last=$(grep -E '^#[0-9]+' "$log" | grep 'cov:' | tail -1 || true)
    cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
    ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
    corp=$(sed -nE 's/.* corp: ([0-9]+).*/\1/p' <<<"$last")
    execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$log")
    rate=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+)/\1/p' "$log")
    rss=$(sed -nE 's/^stat::peak_rss_mb: *([0-9]+)/\1/p' "$log")
    summary+=("$(printf '%-17s %6ss %12s execs %8s exec/s  cov %6s  ft %6s  corpus %6s  rss %5s MB  %s' \
        "$t" "$secs" "${execs:--}" "${rate:--}" "${cov:--}" "${ft:--}" "${corp:--}" "${rss:--}" "$result")")
done
echo
printf '%s\n' "${summary[@]}"
exit $status
