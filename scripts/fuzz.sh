#!/usr/bin/env bash
# Fuzzing (docs/SECURITY.md): builds the cargo-fuzz targets in fuzz/ and
# runs each for a bounded time, two at a time, from the checked-in seeds;
# prints each target's final libFuzzer stats and fails on any crash
# (a panic, a failed assertion, a timeout or running out of memory).
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET]    (default 60)
#
# Stable Rust: the build below (-s none, no sanitizer) passes rustc only
# stable flags (-Cpasses=sancov-module, -Cllvm-args=..., --cfg fuzzing).
# Only a sanitizer build (cargo-fuzz's default, -s address) needs
# -Zsanitizer, which stable rustc takes only with RUSTC_BOOTSTRAP=1; to
# run with AddressSanitizer by hand, set it on that cargo-fuzz command
# alone (fuzz/README.md), never in the workspace's config: with it, build
# scripts that probe for nightly features may switch them on.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS="${1:-60}"
case "$SECS" in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET]" >&2; exit 2 ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# cargo-fuzz has no --locked: check that fuzz/Cargo.lock is up to date
# first, so that the build below uses exactly the locked versions.
cargo metadata --manifest-path fuzz/Cargo.toml --locked --format-version 1 >/dev/null

# No AddressSanitizer (-s none): our crates forbid `unsafe`, so it would
# watch only dependencies' unsafe code, at a fraction of the executions
# per second, and it needs unstable rustc flags. Debug assertions and
# overflow checks stay on (cargo-fuzz's default).
start=$(date +%s)
nice -n 19 cargo fuzz build -s none
echo "fuzz targets built in $(( $(date +%s) - start )) s"

work=fuzz/target/scratch-corpus
rm -rf "$work"
run_one() {
    local t=$1 log rc
    log="fuzz/target/fuzz-$t.log"
    mkdir -p "$work/$t"
    # New inputs go to the scratch corpus (first directory); the seeds
    # (second) are only read.
    set +e
    nice -n 19 cargo fuzz run -s none "$t" "$work/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$SECS" -timeout=10 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    local done_line execs
    done_line=$(grep -a -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
    execs=$(grep -a '^stat::number_of_executed_units' "$log" | awk '{print $2}' || true)
    if [ "$rc" -eq 0 ]; then
        echo "$t: ok, ${execs:-?} executions; ${done_line:-no stats line}"
    else
        echo "$t: FAILED (exit $rc); the end of $log:"
        tail -n 40 "$log"
        ls -1 "fuzz/artifacts/$t" 2>/dev/null | sed "s|^|  artifact: fuzz/artifacts/$t/|"
    fi
    return "$rc"
}
export -f run_one
export SECS work

targets=$(cargo fuzz list)
failed=0
printf '%s\n' $targets | xargs -P 2 -I{} bash -c 'run_one "$1"' _ {} || failed=1
echo "fuzzing took $(( $(date +%s) - start )) s in all"
if [ "$failed" -ne 0 ]; then
    echo "fuzzing found a crash: reproduce with" \
        "cargo fuzz run -s none TARGET fuzz/artifacts/TARGET/FILE" >&2
    exit 1
fi
