#!/usr/bin/env bash
# What the metrics, request ids and refusal log cost `POST /v1/verify`:
# server instructions per request (callgrind, user space, every thread of
# the server) of this branch against main, measured in the same run.
#
#   scripts/bench-metrics.sh            # builds both (release), then measures
#   BASE_BIN=… BRANCH_BIN=… scripts/bench-metrics.sh   # measures given binaries
#   N=20000 WARMUP=2000 ROUNDS=2 …      # requests measured, warm-up, rounds
#
# Each server runs under `valgrind --tool=callgrind --instr-atstart=no`;
# instrumentation is switched on (callgrind_control -i on) after start-up
# and a warm-up, N verifications of a valid Basic credential are sent on
# one keep-alive connection by a Python loop (so the count is exact), then
# instrumentation is switched off and the server stopped. Instructions per
# request = the run's total Ir / N.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
N="${N:-10000}"
WARMUP="${WARMUP:-1000}"
ROUNDS="${ROUNDS:-1}"
WORK="$(mktemp -d)"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$WORK"' EXIT

build() { # build DIR TARGET -> path of the release binary
    (cd "$1" && CARGO_TARGET_DIR="$2" cargo build --release -p latchkey >&2)
    echo "$2/release/latchkey"
}

if [ -z "${BASE_BIN:-}" ]; then
    # Its own worktree and target directory: path dependencies of two
    # worktrees in one target directory share artifact names.
    git -C "$ROOT" worktree add --detach "$WORK/base" main >&2
    BASE_BIN="$(build "$WORK/base" "${BASE_TARGET:-$ROOT/../target-bench-base}")"
    cp "$BASE_BIN" "$WORK/latchkey-base"
    BASE_BIN="$WORK/latchkey-base"
    git -C "$ROOT" worktree remove --force "$WORK/base" >&2
fi
if [ -z "${BRANCH_BIN:-}" ]; then
    BRANCH_BIN="$(build "$ROOT" "${BRANCH_TARGET:-${CARGO_TARGET_DIR:-$ROOT/target}}")"
fi

CLIENT='
import http.client, json, sys
port, auth, operator, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
body = json.dumps({"authorization": auth})
conn = http.client.HTTPConnection("127.0.0.1", port)
headers = {"authorization": operator, "content-type": "application/json"}
for _ in range(n):
    conn.request("POST", "/v1/verify", body, headers)
    r = conn.getresponse()
    data = r.read()
    if r.status != 200 or b"\"valid\":true" not in data:
        sys.exit("unexpected answer: %d %r" % (r.status, data))
'

# measure NAME BINARY -> instructions per request
measure() {
    local name="$1" bin="$2" data="$WORK/data-$1" port out
    "$bin" init --data-dir "$data" --json > "$WORK/init-$name.json"
    local key secret operator
    key=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["key"]["id"])' "$WORK/init-$name.json")
    secret=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["key"]["secret"])' "$WORK/init-$name.json")
    operator=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["operatorToken"])' "$WORK/init-$name.json")
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    out="$WORK/callgrind-$name.out"
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
        "$bin" serve --data-dir "$data" --listen "127.0.0.1:$port" \
        > "$WORK/serve-$name.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 600); do
        grep -q "listening on" "$WORK/serve-$name.log" && break
        sleep 0.1
    done
    local auth="Basic $(printf '%s:%s' "$key" "$secret" | base64 -w0)"
    python3 -c "$CLIENT" "$port" "$auth" "Bearer $operator" "$WARMUP"
    callgrind_control -i on "$pid" > /dev/null
    python3 -c "$CLIENT" "$port" "$auth" "Bearer $operator" "$N"
    callgrind_control -i off "$pid" > /dev/null
    kill -TERM "$pid"
    wait "$pid" || true
    local ir
    ir=$(grep -E '^totals:' "$out" | head -1 | awk '{print $2}')
    echo $(( ir / N ))
}

echo "requests measured per run: $N (after $WARMUP of warm-up)" >&2
for round in $(seq 1 "$ROUNDS"); do
    base=$(measure "base$round" "$BASE_BIN")
    branch=$(measure "branch$round" "$BRANCH_BIN")
    ratio=$(python3 -c "print(f'{($branch - $base) / $base * 100:+.2f}%')")
    echo "round $round: main $base instructions/request, branch $branch, difference $ratio"
done
