#!/usr/bin/env bash
# A bounded fuzzing run of every target (CI runs it after the tests): installs nightly and
# cargo-fuzz if missing, builds all targets once, then runs each for SECONDS (default 30)
# from its committed seeds. Fails on the first crash, panic, hang (a run over 10 s) or
# out-of-memory (over 2 GiB), leaving the input in fuzz/artifacts/TARGET/.
#
# Usage: fuzz/run.sh [SECONDS] [TARGET...]
#        fuzz/run.sh --build-only       (install and build, run nothing: CI builds while
#                                        the tests run)
set -euo pipefail
cd "$(dirname "$0")"
build_only=
if [ "${1:-}" = --build-only ]; then
    build_only=1
    shift
fi
secs=${1:-30}
shift || true
if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for f in fuzz_targets/*.rs; do
        t=${f#fuzz_targets/}
        targets+=("${t%.rs}")
    done
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# Overflow checks and debug assertions on (an overflow on input is a bug); no
# sanitizer: the workspace has no unsafe code, and without one the build takes half as
# long and each run twice as many inputs.
flags=(--debug-assertions --sanitizer none)
cargo +nightly fuzz build "${flags[@]}"
if [ -n "$build_only" ]; then
    exit 0
fi

# New inputs go to a scratch directory, not the committed seeds; so do the targets' own
# files (a store, a host root), on tmpfs when there is one.
work=$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)
trap 'rm -rf "$work"' EXIT
export IMAGER_FUZZ_SCRATCH=$work
# One target per core at a time: each is one process, so two cores run two targets at
# full speed, and CI waits half as long.
jobs_max=${FUZZ_JOBS:-$(nproc)}
run_target() {
    local t=$1
    mkdir -p "$work/$t" "corpus/$t" "artifacts/$t"
    if cargo +nightly fuzz run "${flags[@]}" "$t" "$work/$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
        -print_final_stats=1 >"$work/$t.log" 2>&1; then
        echo ok >"$work/$t.status"
    else
        echo failed >"$work/$t.status"
    fi
}
for t in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n || true; done
    echo "fuzz: $t for ${secs}s"
    run_target "$t" &
done
wait
failed=()
for t in "${targets[@]}"; do
    if [ "$(cat "$work/$t.status" 2>/dev/null)" != ok ]; then
        echo "fuzz: $t failed:"
        tail -n 40 "$work/$t.log"
        failed+=("$t")
    else
        echo "fuzz: $t: $(grep -E '^stat::number_of_executed_units' "$work/$t.log" || true)"
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${secs}s each without a failure"
