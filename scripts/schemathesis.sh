#!/usr/bin/env bash
# schemathesis against docs/openapi.json, with the real server (issue 16,
# attack suite).
#
# Builds and starts the `latchkey` binary on a temporary data directory and
# a loopback port, then runs schemathesis (a pinned version from PyPI) with
# each kind of credential in turn: the operator token, a verifier token, an
# account owner's key (Basic), an app key (Basic), an app-scope JWT and an
# appUser JWT. Each kind gets a world of its own (scripts/schemathesis_world.py)
# whose real ids are given as the path parameters, so generated requests
# reach real apps, keys, users, webhooks and service accounts.
#
# Checks: no 5xx (not_a_server_error); every response conforms to the
# document: documented status code, content type, headers and schema; and
# a request that breaks the document's schema is refused
# (negative_data_rejection).
#
# Each kind runs in passes, so that what a pass deletes or rotates cannot
# starve the others of real objects:
#   writes     every operation but DELETEs and key rotations;
#   deletions  DELETEs and key rotations;
#   own key    (account owner only) rotating the caller's own key, last:
#              a rotation with graceSeconds 0 ends the credential itself.
# The runs with JWTs leave out PATCH /v1/apps/{app_id}: a generated
# maxTokenTtlSeconds refuses every JWT without exp, their own included
# (the app key's Basic run covers that operation with the same scope).
#
# Prints a summary; exits non-zero on any failure. Bounded in time: each
# pass has a --max-time, about three minutes in all (SCHEMATHESIS_SCALE=2
# doubles every bound, for a longer local hunt). For a hunt, also:
# SCHEMATHESIS_KINDS="app-jwt operator" runs those kinds alone, and
# SCHEMATHESIS_KEEP=1 keeps the work directory (server log, each pass's
# full output and JUnit report).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SCHEMATHESIS_VERSION=4.32.5
SCALE="${SCHEMATHESIS_SCALE:-1}"
# Seconds per pass; every pass of every kind together stays near 3 minutes.
WRITES_SECONDS=$((18 * SCALE))
DELETIONS_SECONDS=$((6 * SCALE))
OWN_KEY_SECONDS=$((3 * SCALE))

# pip puts console scripts here when it installs as a user or in a venv.
PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$HOME/.local/bin:$PATH"
export PATH
if [ "$(schemathesis --version 2>/dev/null || true)" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
    echo "installing schemathesis $SCHEMATHESIS_VERSION"
    python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

if [ -z "${LATCHKEY_ST_LATCHKEY:-}" ]; then
    echo "building latchkey (debug)"
    cargo build --quiet -p latchkey --locked
    TARGET_DIR=$(cargo metadata --format-version 1 --no-deps --locked \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    # The rest runs in a network namespace of its own, with loopback only:
    # the fixtures and schemathesis create webhooks with targets on the
    # internet, and the server would try to deliver to them. There, no
    # delivery (nor its DNS lookup) can leave the machine.
    if ! unshare --net true 2>/dev/null; then
        echo "scripts/schemathesis.sh needs 'unshare --net' (root), so that no webhook delivery leaves the machine" >&2
        exit 1
    fi
    LATCHKEY_ST_LATCHKEY="$TARGET_DIR/debug/latchkey" exec unshare --net bash "$ROOT/scripts/schemathesis.sh" "$@"
fi
ip link set lo up
LATCHKEY=$LATCHKEY_ST_LATCHKEY

WORK=$(mktemp -d)
[ -n "${SCHEMATHESIS_KEEP:-}" ] && echo "work directory: $WORK (kept)"
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    [ -n "${SCHEMATHESIS_KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$PORT"
"$LATCHKEY" init --data-dir "$WORK/data" --json > "$WORK/init.json"
# The throttle on failed credentials is lifted: schemathesis sends broken
# credentials by design, and a 429 would hide the answers under test.
LATCHKEY_LOG=warn "$LATCHKEY" serve --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" \
    --auth-failures-per-address 1000000 --auth-failures-per-key 1000000 \
    > "$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
    if curl -fsS "$BASE/healthz" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        cat "$WORK/server.log" >&2
        echo "latchkey exited before answering" >&2
        exit 1
    fi
    sleep 0.1
done
curl -fsS "$BASE/healthz" >/dev/null

# positive_data_acceptance is left out: it counts every 400 to a
# schema-valid request as a failure, and several rules are stated in the
# document's prose only (an `after` cursor must name an item of the list,
# expiresAt must be in the future, accountId is the operator's alone, no
# control characters, no trigger twice). SCHEMATHESIS_CHECKS=... adds it
# for a hunt.
CHECKS=${SCHEMATHESIS_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection}
SUMMARY="$WORK/summary.tsv"
FAILED=0
START=$SECONDS

# run KIND PASS SECONDS [schemathesis filter options...]
run() {
    local kind=$1 pass=$2 seconds=$3
    shift 3
    local dir="$WORK/$kind-$pass"
    mkdir -p "$dir"
    local t0=$SECONDS rc=0
    echo
    echo "== schemathesis: $kind, $pass (at most ${seconds}s)"
    # Run from the pass's own directory: schemathesis keeps caches and
    # reports in the working directory, which must not be the repository.
    # One worker: schemathesis's threads call ast.parse through hypothesis,
    # which CPython 3.11 before 3.11.8 does not survive in parallel
    # ("AST constructor recursion depth mismatch", a runtime error here).
    (cd "$dir" && schemathesis --config-file "$WORK/$kind.toml" run "$ROOT/docs/openapi.json" \
        --url "$BASE" \
        -H "Authorization: $(cat "$WORK/$kind.auth")" \
        --checks "$CHECKS" \
        --max-time "$seconds" \
        --workers 1 \
        --request-timeout 10 \
        --generation-database none \
        --report junit --report-junit-path "$dir/junit.xml" \
        --no-color \
        "$@") > "$dir/out.txt" 2>&1 || rc=$?
    # schemathesis's own summary: its last lines.
    sed -n '/SUMMARY/,$p' "$dir/out.txt"
    if [ "$rc" -ne 0 ]; then
        FAILED=1
        # The failures themselves, each with a curl to reproduce it
        # (schemathesis prints them after its summary; long lines cut).
        sed -n '/^=* \(ERRORS\|FAILURES\) =*$/,$p' "$dir/out.txt" | cut -c1-600 | head -300
        if ! grep -q SUMMARY "$dir/out.txt"; then tail -40 "$dir/out.txt" | cut -c1-600; fi
    fi
    python3 - "$dir/junit.xml" "$dir/out.txt" "$kind" "$pass" "$((SECONDS - t0))" "$rc" >> "$SUMMARY" <<'PY'
import re
import sys
import xml.etree.ElementTree as ET
junit, out, kind, phase, seconds, rc = sys.argv[1:]
try:
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    failed = sum(1 for c in cases if c.find("failure") is not None or c.find("error") is not None)
except (OSError, ET.ParseError):
    failed = "?"
with open(out, errors="replace") as f:
    text = f.read()
tested = re.search(r"Tested: (\d+)", text)
generated = re.search(r"(\d+) generated", text)
def found(m):
    return m.group(1) if m else "?"
print(f"{kind}\t{phase}\t{found(tested)}\t{found(generated)}\t{failed}\t{seconds}\t{rc}")
PY
}

DELETIONS_REGEX='^(DELETE .*|POST .*/rotate)$'
for kind in ${SCHEMATHESIS_KINDS:-operator verifier account-basic app-basic app-jwt appuser-jwt}; do
    python3 scripts/schemathesis_world.py "$BASE" "$WORK/init.json" "$kind" "$WORK/$kind.auth" \
        > "$WORK/$kind.toml"
    writes_excluded=()
    if [ "$kind" = app-jwt ] || [ "$kind" = appuser-jwt ]; then
        writes_excluded=(--exclude-name 'PATCH /v1/apps/{app_id}')
    fi
    run "$kind" writes "$WRITES_SECONDS" --exclude-name-regex "$DELETIONS_REGEX" "${writes_excluded[@]}"
    if [ "$kind" = account-basic ]; then
        run "$kind" deletions "$DELETIONS_SECONDS" --include-name-regex "$DELETIONS_REGEX" \
            --exclude-path '/v1/account/keys/{key_id}/rotate'
        run "$kind" own-key "$OWN_KEY_SECONDS" --include-path '/v1/account/keys/{key_id}/rotate'
    else
        run "$kind" deletions "$DELETIONS_SECONDS" --include-name-regex "$DELETIONS_REGEX"
    fi
done

echo
echo "== schemathesis summary (per pass: operations tested, test cases sent, failed tests, seconds, exit code)"
printf '%-14s %-10s %10s %7s %7s %8s %5s\n' credential pass operations cases failed seconds rc
while IFS=$'\t' read -r kind pass ops cases failed seconds rc; do
    printf '%-14s %-10s %10s %7s %7s %8s %5s\n' "$kind" "$pass" "$ops" "$cases" "$failed" "$seconds" "$rc"
done < "$SUMMARY"
awk -F'\t' '{ n += $4 } END { print "test cases in all: " n }' "$SUMMARY"
echo "total: $((SECONDS - START)) s"
# The server's own account of the run: its warnings and errors (a 5xx is
# logged there with its cause, which the answer never shows).
if grep -q 'ERROR' "$WORK/server.log"; then
    echo "the server logged errors:" >&2
    grep 'ERROR' "$WORK/server.log" | cut -c1-300 | head -20 >&2
    FAILED=1
fi
echo "server log: $(grep -c 'WARN' "$WORK/server.log" || true) warnings, $(grep -c 'ERROR' "$WORK/server.log" || true) errors"
if [ "$FAILED" -ne 0 ]; then
    echo "schemathesis found failures (above): fix the server or docs/openapi.json" >&2
    exit 1
fi
echo "schemathesis: no failures"
