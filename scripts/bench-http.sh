#!/usr/bin/env bash
# HTTP and system-level benchmarks of issue 6 (docs/BENCHMARKS.md, "HTTP and
# system level"). Loopback only; every load run is bounded in time or count.
#
#   scripts/bench-http.sh                 # everything (~12 minutes)
#   SEED_KEYS=0 ROUNDS=1 scripts/bench-http.sh   # quick: no 10^6-key phase
#
# What it does:
#  1. builds `latchkey` and the benchmark examples of latchkey-server
#     (bench_hello, bench_diy, bench_seed, bench_coldstart, bench_commits)
#     in release mode, and installs oha (`cargo install oha --locked`) when
#     it is missing;
#  2. starts, each pinned to SERVER_CPU: the bare axum hello-world server;
#     a fresh `latchkey serve` (temporary data dir, --max-keys-per-owner
#     1000); the do-it-yourself baseline (Basic, SHA-256, one SQL lookup of
#     the key hash in SQLite with Latchkey's settings); and a second
#     `latchkey serve` of the same data dir that also writes the access-log
#     line of every verification (LATCHKEY_LOG=...,latchkey::access=debug;
#     by default verifications are logged at DEBUG, management calls at
#     INFO);
#     (With THROUGHPUT_ONLY=1 it stops after step 4; TARGETS="hello
#     verify_basic" limits step 4 to those targets; the target
#     verify_limited verifies a key with a rate limit and credits.)
#  3. creates an app and an app key through the API and mints an HS256 JWT
#     with that key (`latchkey token`);
#  4. maximum throughput, once with each load generator of LOADGENS
#     (default "wrk oha": wrk with one thread, oha with one worker thread;
#     see docs/BENCHMARKS.md for why they disagree, and the "server busy"
#     column, which says which of the two set the pace): ROUNDS rounds,
#     each running every target for DURATION with the generator pinned to
#     LOAD_CPU and CONNECTIONS connections (one warm-up run per target first), hello world before and after each
#     other target (its ratio is taken against the mean of those two
#     hello runs, the median over the rounds is reported): POST /v1/verify with the app
#     key's Basic header and with the JWT (the operator token authenticates
#     the call); GET /v1/apps/{appId} with the app key; the DIY baseline;
#     POST /v1/verify (Basic) with its access-log line on. For each run it also
#     records the server process's CPU time (/proc/PID/stat), so that the
#     CPU cost per request can be compared even when other work shares the
#     machine;
#  5. fixed rate at half of each best maximum (oha -q, with latency
#     correction), or at LATENCY_RATE for every target: p50 and p99;
#  6. key creation over HTTP: CREATE_KEYS keys across KEY_APPS apps with
#     the owner's key (audit trail on, as always), and the disk's commit
#     rate with the same SQLite settings (bench_commits) for reference;
#  7. with SEED_KEYS > 0: seeds that many live keys into another data dir
#     (bench_seed), measures cold start (exec to "latchkey listening on")
#     and VmRSS against an empty store (bench_coldstart, 3 runs each), then
#     measures POST /v1/verify (Basic) and the DIY baseline at that size;
#  8. prints a table with the ratios; oha's JSON stays in $BENCH_OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-50}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
CREATE_KEYS=${CREATE_KEYS:-5000}
KEY_APPS=${KEY_APPS:-10}
SEED_KEYS=${SEED_KEYS:-1000000}
KEYS_PER_APP=${KEYS_PER_APP:-10}
PORT_BASE=${PORT_BASE:-17400}
# Latchkey's own default (one INFO line per request). Its stderr goes to
# /dev/null so that the disk does not fill, but every line is still
# formatted and written.
LOG_LEVEL=${LATCHKEY_LOG:-info,sqlx=warn}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BENCH_OUT=${BENCH_OUT:-$(mktemp -d /tmp/latchkey-bench.XXXXXX)}
mkdir -p "$BENCH_OUT"
TICK=$(getconf CLK_TCK)

HELLO_PORT=$PORT_BASE
LK_PORT=$((PORT_BASE + 1))
DIY_PORT=$((PORT_BASE + 2))
LOGGED_PORT=$((PORT_BASE + 3))
BIG_PORT=$((PORT_BASE + 4))
BIG_DIY_PORT=$((PORT_BASE + 5))

LOADGENS=${LOADGENS:-"wrk oha"}
FIRST=${LOADGENS%% *}
for tool in taskset curl jq awk; do
    command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done
if [[ " $LOADGENS " == *" wrk "* ]] && ! command -v wrk >/dev/null; then
    echo "wrk is required (apt-get install wrk), or LOADGENS=oha" >&2
    exit 1
fi
if ! command -v oha >/dev/null; then
    echo "== installing oha (cargo install oha --locked)"
    cargo install oha --locked
fi

echo "== building (release)"
cargo build --release --locked -p latchkey -p latchkey-server --bin latchkey \
    --example bench_hello --example bench_diy --example bench_seed \
    --example bench_coldstart --example bench_commits --example bench_latency
BIN=$TARGET_DIR/release/latchkey
EX=$TARGET_DIR/release/examples

PIDS=()
declare -A PID_OF
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$BENCH_OUT/data" "$BENCH_OUT/big" "$BENCH_OUT/empty"
}
trap cleanup EXIT

# start_server NAME command...: pinned to SERVER_CPU, output in NAME.out.
start_server() {
    local name=$1
    shift
    taskset -c "$SERVER_CPU" "$@" >"$BENCH_OUT/$name.out" 2>/dev/null &
    PIDS+=($!)
    PID_OF[$name]=$!
}

# wait_for NAME: until NAME.out says it listens (120 s at most).
wait_for() {
    for _ in $(seq 1 1200); do
        grep -q "listening on" "$BENCH_OUT/$1.out" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$1 did not start" >&2
    exit 1
}

# oha_json RUN URL [oha args...]: one run, JSON in $BENCH_OUT/RUN.json;
# fails unless every response was 2xx.
oha_json() {
    local run=$1 url=$2
    shift 2
    taskset -c "$LOAD_CPU" oha --no-tui --output-format json --worker-threads 1 \
        -c "$CONNECTIONS" "$@" "$url" >"$BENCH_OUT/$run.json"
    local bad
    bad=$(jq '[.statusCodeDistribution | to_entries[] | select(.key | test("^2") | not) | .value] | add // 0' \
        "$BENCH_OUT/$run.json")
    if [ "$bad" != "0" ]; then
        echo "$run: $bad responses were not 2xx:" >&2
        jq -c .statusCodeDistribution "$BENCH_OUT/$run.json" >&2
        exit 1
    fi
}

# wrk_json RUN URL [oha-style args...]: the same run with wrk (one thread,
# pinned to LOAD_CPU), its figures written in oha's JSON shape so that
# everything below reads either; fails unless every response was 2xx.
# Takes the oha arguments this script uses: -m, -H, -T, -D, -a, -z.
wrk_json() {
    local run=$1 url=$2
    shift 2
    local method=GET body="" duration=$DURATION args=() script="$BENCH_OUT/$run.lua"
    while [ $# -gt 0 ]; do
        case $1 in
            -m) method=$2; shift 2 ;;
            -H) args+=(-H "$2"); shift 2 ;;
            -T) args+=(-H "content-type: $2"); shift 2 ;;
            -D) body=$2; shift 2 ;;
            -a) args+=(-H "authorization: Basic $(printf '%s' "$2" | base64 -w0)"); shift 2 ;;
            -z) duration=$2; shift 2 ;;
            *) echo "wrk_json: unsupported argument $1" >&2; exit 1 ;;
        esac
    done
    printf 'wrk.method = "%s"\n' "$method" >"$script"
    [ -n "$body" ] && printf 'local f = io.open("%s")\nwrk.body = f:read("*a")\nf:close()\n' "$body" >>"$script"
    taskset -c "$LOAD_CPU" wrk -t1 -c "$CONNECTIONS" -d "$duration" --latency -s "$script" \
        "${args[@]}" "$url" >"$BENCH_OUT/$run.txt"
    if grep -q 'Non-2xx\|Socket errors' "$BENCH_OUT/$run.txt"; then
        echo "$run: not every response was 2xx, or sockets failed:" >&2
        cat "$BENCH_OUT/$run.txt" >&2
        exit 1
    fi
    awk '
        function secs(t,   v, u) { v = t; u = t; sub(/[a-z]+$/, "", v); sub(/^[0-9.]+/, "", u)
                                    return (u == "us") ? v / 1e6 : (u == "ms") ? v / 1e3 : (u == "m") ? v * 60 : v }
        / requests in / { n = $1; s = $4; sub(/,$/, "", s); total = secs(s) }
        /Requests\/sec/ { r = $2 }
        $1 == "50%" { p50 = secs($2) }
        $1 == "99%" { p99 = secs($2) }
        END { printf "{\"statusCodeDistribution\":{\"2xx\":%d},\"summary\":{\"requestsPerSec\":%s,\"total\":%s},\"latencyPercentiles\":{\"p50\":%s,\"p99\":%s}}\n", n, r, total, p50, p99 }
    ' "$BENCH_OUT/$run.txt" >"$BENCH_OUT/$run.json"
}
# load_json RUN URL [args...]: oha_json or wrk_json, as LOADGEN says.
load_json() { if [ "$LOADGEN" = wrk ]; then wrk_json "$@"; else oha_json "$@"; fi; }

# CPU time (user + system, clock ticks) of a process and all its threads.
proc_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# Bytes a process caused to be written to storage (its database writes).
proc_written() { awk '/^write_bytes/ { print $2 }' "/proc/$1/io"; }
requests() { jq '[.statusCodeDistribution[]] | add' "$BENCH_OUT/$1.json"; }
rps() { jq '.summary.requestsPerSec' "$BENCH_OUT/$1.json"; }
ms() { jq ".latencyPercentiles[\"$2\"] * 1000" "$BENCH_OUT/$1.json"; }

# The targets: which server answers, and the oha arguments of a request.
server_of() {
    case $1 in
        hello) echo hello ;;
        diy) echo diy ;;
        verify_basic_logged) echo logged ;;
        verify_basic_big) echo big ;;
        diy_big) echo diy-big ;;
        *) echo latchkey ;;
    esac
}
# target TARGET RUN [extra oha args...]
target() {
    local t=$1 run=$2
    shift 2
    case $t in
        hello) load_json "$run" "http://127.0.0.1:$HELLO_PORT/" "$@" ;;
        verify_basic) load_json "$run" "$LK/v1/verify" -m POST -H "authorization: Bearer $OPERATOR" \
            -T application/json -D "$BENCH_OUT/verify-basic.json" "$@" ;;
        verify_jwt) load_json "$run" "$LK/v1/verify" -m POST -H "authorization: Bearer $OPERATOR" \
            -T application/json -D "$BENCH_OUT/verify-jwt.json" "$@" ;;
        verify_limited) load_json "$run" "$LK/v1/verify" -m POST -H "authorization: Bearer $OPERATOR" \
            -T application/json -D "$BENCH_OUT/verify-limited.json" "$@" ;;
        get_app) load_json "$run" "$LK/v1/apps/$APP" -a "$KEY_ID:$KEY_SECRET" "$@" ;;
        diy) load_json "$run" "http://127.0.0.1:$DIY_PORT/" -a "$KEY_ID:$KEY_SECRET" "$@" ;;
        verify_basic_logged) load_json "$run" "http://127.0.0.1:$LOGGED_PORT/v1/verify" -m POST \
            -H "authorization: Bearer $OPERATOR" -T application/json -D "$BENCH_OUT/verify-basic.json" "$@" ;;
        verify_basic_big) load_json "$run" "http://127.0.0.1:$BIG_PORT/v1/verify" -m POST \
            -H "authorization: Bearer $BIG_OPERATOR" -T application/json -D "$BENCH_OUT/verify-big.json" "$@" ;;
        diy_big) load_json "$run" "http://127.0.0.1:$BIG_DIY_PORT/" -a "$SAMPLE_ID:$SAMPLE_SECRET" "$@" ;;
    esac
}

# raw_request TARGET FILE: the target's request as raw HTTP/1.1 bytes, and
# prints the address it goes to (for bench_latency).
raw_request() {
    local t=$1 file=$2 port path method=GET auth body=""
    case $t in
        hello) port=$HELLO_PORT path=/ ;;
        verify_basic | verify_jwt | verify_limited) port=$LK_PORT path=/v1/verify method=POST auth="Bearer $OPERATOR"
            body=$(cat "$BENCH_OUT/verify-${t#verify_}.json") ;;
        verify_basic_logged) port=$LOGGED_PORT path=/v1/verify method=POST auth="Bearer $OPERATOR"
            body=$(cat "$BENCH_OUT/verify-basic.json") ;;
        get_app) port=$LK_PORT path=/v1/apps/$APP auth="Basic $BASIC" ;;
        diy) port=$DIY_PORT path=/ auth="Basic $BASIC" ;;
        *) return 1 ;;
    esac
    {
        printf '%s %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\n' "$method" "$path" "$port"
        [ -n "${auth:-}" ] && printf 'Authorization: %s\r\n' "$auth"
        [ -n "$body" ] && printf 'Content-Type: application/json\r\nContent-Length: %s\r\n' "${#body}"
        printf '\r\n%s' "$body"
    } >"$file"
    echo "127.0.0.1:$port"
}

# measure TARGET RUN: a DURATION run; writes RUN.cpu (server CPU
# microseconds per request) and prints a line.
measure() {
    local t=$1 run=$2 pid c0 c1 w0 w1
    pid=${PID_OF[$(server_of "$t")]}
    c0=$(proc_ticks "$pid")
    w0=$(proc_written "$pid")
    target "$t" "$run" -z "$DURATION"
    c1=$(proc_ticks "$pid")
    w1=$(proc_written "$pid")
    jq -n "($c1 - $c0) * 1000000 / $TICK / $(requests "$run")" >"$BENCH_OUT/$run.cpu"
    jq -n "($w1 - $w0) / $(requests "$run")" >"$BENCH_OUT/$run.written"
    # Cores the server used: below ~0.95 the load generator set the pace.
    jq -n "($c1 - $c0) / $TICK / $(jq .summary.total "$BENCH_OUT/$run.json")" >"$BENCH_OUT/$run.busy"
    printf '   %-24s %8.0f requests/s, server CPU %6.1f us/request, server busy %4.2f cores, p99 %.2f ms, %.2f bytes written to storage per request\n' \
        "$run" "$(rps "$run")" "$(cat "$BENCH_OUT/$run.cpu")" "$(cat "$BENCH_OUT/$run.busy")" "$(ms "$run" p99)" "$(cat "$BENCH_OUT/$run.written")"
}

# best TARGET: the highest requests/s of its rounds; cost TARGET: the
# median CPU microseconds per request of its rounds.
best() {
    for f in "$BENCH_OUT/$1".r*.json; do jq .summary.requestsPerSec "$f"; done | sort -g | tail -1
}
# median_of FILE...: the median of the numbers in the files.
median_of() { cat "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
cost() { median_of "$BENCH_OUT/$1".r*.cpu; }
# bracketed TARGET KIND: the median over the rounds of RUN.KIND (ratio or
# cpuratio, see measure_between); 1 for hello itself.
bracketed() {
    case $1 in hello | *.hello) echo 1; return ;; esac
    ls "$BENCH_OUT/$1".r*."$2" >/dev/null 2>&1 || { echo null; return; }
    median_of "$BENCH_OUT/$1".r*."$2"
}

echo "== machine"
echo "   $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), nproc $(nproc), $(rustc --version)"
echo "   servers on CPU $SERVER_CPU, load generators ($LOADGENS) on CPU $LOAD_CPU, $CONNECTIONS connections; output in $BENCH_OUT"
echo "   load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== starting the servers"
"$BIN" init --data-dir "$BENCH_OUT/data" --json >"$BENCH_OUT/init.json"
OPERATOR=$(jq -r .operatorToken "$BENCH_OUT/init.json")
OWNER="$(jq -r .key.id "$BENCH_OUT/init.json"):$(jq -r .key.secret "$BENCH_OUT/init.json")"
start_server hello "$EX/bench_hello" "127.0.0.1:$HELLO_PORT"
LATCHKEY_LOG=$LOG_LEVEL start_server latchkey \
    "$BIN" serve --data-dir "$BENCH_OUT/data" --listen "127.0.0.1:$LK_PORT" --max-keys-per-owner 1000
wait_for hello
wait_for latchkey
LK=http://127.0.0.1:$LK_PORT

post() { # CREDENTIAL(id:secret) PATH BODY
    curl -sf -u "$1" -H 'content-type: application/json' -d "$3" "$LK$2"
}
APP=$(post "$OWNER" /v1/apps '{"displayName":"bench"}' | jq -r .app.id)
KEY=$(post "$OWNER" "/v1/apps/$APP/keys" '{"displayName":"bench"}')
KEY_ID=$(echo "$KEY" | jq -r .key.id)
KEY_SECRET=$(echo "$KEY" | jq -r .key.secret)
BASIC=$(printf '%s:%s' "$KEY_ID" "$KEY_SECRET" | base64 -w0)
JWT=$(LATCHKEY_SECRET=$KEY_SECRET "$BIN" token --key-id "$KEY_ID" --scope app --ttl 3600)
printf '{"authorization":"Basic %s","appId":"%s"}' "$BASIC" "$APP" >"$BENCH_OUT/verify-basic.json"
printf '{"authorization":"Bearer %s","appId":"%s"}' "$JWT" "$APP" >"$BENCH_OUT/verify-jwt.json"
# A key with a rate limit and credits that the run cannot use up (issue
# 18): every verification counts against the limit and spends a credit.
LIMITED=$(post "$OWNER" "/v1/apps/$APP/keys" '{"displayName":"limited","ratelimit":{"limit":4000000000,"windowSeconds":86400},"credits":{"remaining":1000000000000}}')
LIMITED_BASIC=$(printf '%s:%s' "$(echo "$LIMITED" | jq -r .key.id)" "$(echo "$LIMITED" | jq -r .key.secret)" | base64 -w0)
printf '{"authorization":"Basic %s","appId":"%s"}' "$LIMITED_BASIC" "$APP" >"$BENCH_OUT/verify-limited.json"
for kind in basic jwt limited; do
    curl -sf -H "authorization: Bearer $OPERATOR" -H 'content-type: application/json' \
        --data-binary "@$BENCH_OUT/verify-$kind.json" "$LK/v1/verify" | jq -e '.valid == true' >/dev/null \
        || { echo "verify with $kind is not valid" >&2; exit 1; }
done
curl -sf -u "$KEY_ID:$KEY_SECRET" "$LK/v1/apps/$APP" | jq -e ".app.id == \"$APP\"" >/dev/null

start_server diy "$EX/bench_diy" --db "$BENCH_OUT/data/diy.db" \
    --listen "127.0.0.1:$DIY_PORT" --credential "$KEY_ID:$KEY_SECRET"
# Started after the key exists, so its index already holds it.
LATCHKEY_LOG="$LOG_LEVEL,latchkey::access=debug" start_server logged \
    "$BIN" serve --data-dir "$BENCH_OUT/data" --listen "127.0.0.1:$LOGGED_PORT"
wait_for diy
wait_for logged
curl -sf -u "$KEY_ID:$KEY_SECRET" "http://127.0.0.1:$DIY_PORT/" | jq -e '.valid == true' >/dev/null

TARGETS=${TARGETS:-"hello verify_basic verify_jwt get_app diy verify_basic_logged"}
echo "== maximum throughput ($ROUNDS rounds of $DURATION per target, after a $WARMUP warm-up)"
# Every target's run is bracketed by two runs of hello world, and its
# ratio is taken against their mean: on this shared VM the machine's speed
# moves by up to 30% within a minute, so a ratio of runs far apart in time
# measures the machine as much as the server.
# measure_between TARGET RUN BEFORE AFTER: runs TARGET as RUN, then hello
# world as AFTER (BEFORE is the hello run just before), and writes
# RUN.ratio (requests/s against the two hello runs' mean) and RUN.cpuratio
# (their mean CPU per request against RUN's).
measure_between() {
    local t=$1 run=$2 before=$3 after=$4
    measure "$t" "$run"
    LAST_KEY_USE=$(date +%s) # read by the lastUsedAt check after the rounds
    measure hello "$after"
    jq -n "$(rps "$run") * 2 / ($(rps "$before") + $(rps "$after"))" >"$BENCH_OUT/$run.ratio"
    jq -n "($(cat "$BENCH_OUT/$before.cpu") + $(cat "$BENCH_OUT/$after.cpu")) / 2 / $(cat "$BENCH_OUT/$run.cpu")" \
        >"$BENCH_OUT/$run.cpuratio"
}
for LOADGEN in $LOADGENS; do
    g=$LOADGEN
    echo "-- $g"
    target hello "$g.hello.warmup" -z "$WARMUP"
    for t in $TARGETS; do [ "$t" = hello ] || target "$t" "$g.$t.warmup" -z "$WARMUP"; done
    for r in $(seq 1 "$ROUNDS"); do
        echo "-- $g, round $r"
        k=0
        measure hello "$g.hello.r$r.$k"
        for t in $TARGETS; do
            [ "$t" = hello ] && continue
            k=$((k + 1))
            measure_between "$t" "$g.$t.r$r" "$g.hello.r$r.$((k - 1))" "$g.hello.r$r.$k"
        done
    done
done
# The phases below use oha (its fixed-rate mode) and name runs without a
# generator.
LOADGEN=oha

# lastUsedAt: the key was used until the end of the last run above that
# was not hello world's; one flush interval (10 s by default) later the
# store must hold that time, although (see the bytes written per request)
# no request wrote to the store.
LAST_RUN_END=${LAST_KEY_USE:-$(date +%s)}
sleep 11
LAST_USED=$(curl -sf -u "$OWNER" "$LK/v1/apps/$APP/keys/$KEY_ID" | jq -r .key.lastUsedAt)
LAST_USED_AGE=$((LAST_RUN_END - $(date -d "$LAST_USED" +%s)))
echo "== lastUsedAt of the benchmark key: $LAST_USED, ${LAST_USED_AGE} s before the last run ended (read at least 11 s later; flush interval 10 s)"

if [ "${THROUGHPUT_ONLY:-0}" = 1 ]; then
    SEED_KEYS=0
else
    echo "== latency at half of each best maximum (fixed rate, latency correction)"
    for t in $TARGETS; do
        # LATENCY_RATE=N: that fixed rate for every target instead.
        rate=${LATENCY_RATE:-$(jq -n "$(best "$FIRST.$t") / 2 | floor")}
        target "$t" "$t.half" -z "$DURATION" -q "$rate" --latency-correction
        printf '   %-20s at %6s/s: p50 %.3f ms, p99 %.3f ms (oha)\n' "$t" "$rate" "$(ms "$t.half" p50)" "$(ms "$t.half" p99)"
        # The same rate from the lean probe (oha's fixed-rate mode on one
        # core falls behind above ~40,000 requests/s).
        addr=$(raw_request "$t" "$BENCH_OUT/$t.http")
        taskset -c "$LOAD_CPU" "$EX/bench_latency" --addr "$addr" --request "$BENCH_OUT/$t.http" \
            --rate "$rate" --seconds "${DURATION%s}" --connections "$CONNECTIONS" >"$BENCH_OUT/$t.probe.json"
        printf '   %-20s at %6s/s: p50 %.3f ms, p99 %.3f ms (bench_latency)\n' "$t" "$rate" \
            "$(jq .p50 "$BENCH_OUT/$t.probe.json")" "$(jq .p99 "$BENCH_OUT/$t.probe.json")"
    done

    echo "== key creation over HTTP ($CREATE_KEYS keys across $KEY_APPS apps, $CONNECTIONS connections)"
    : >"$BENCH_OUT/key-urls.txt"
    for i in $(seq 1 "$KEY_APPS"); do
        id=$(post "$OWNER" /v1/apps "{\"displayName\":\"keys $i\"}" | jq -r .app.id)
        echo "$LK/v1/apps/$id/keys" >>"$BENCH_OUT/key-urls.txt"
    done
    c0=$(proc_ticks "${PID_OF[latchkey]}")
    oha_json create_keys "$BENCH_OUT/key-urls.txt" --urls-from-file -n "$CREATE_KEYS" \
        -m POST -a "$OWNER" -T application/json -d '{"displayName":"bench"}'
    c1=$(proc_ticks "${PID_OF[latchkey]}")
    CREATED=$(jq '.statusCodeDistribution["201"] // 0' "$BENCH_OUT/create_keys.json")
    KEYS_PER_S=$(jq "$CREATED / .summary.total" "$BENCH_OUT/create_keys.json")
    KEY_CPU=$(jq -n "($c1 - $c0) * 1000000 / $TICK / $CREATED")
    printf '   %s keys created, %.0f keys/s, server CPU %.0f us/key, p99 %.1f ms\n' \
        "$CREATED" "$KEYS_PER_S" "$KEY_CPU" "$(ms create_keys p99)"
    "$EX/bench_commits" --db "$BENCH_OUT/data/commits.db" --count 1000 >"$BENCH_OUT/commits.json"
    COMMITS_PER_S=$(jq .commitsPerSecond "$BENCH_OUT/commits.json")
    printf '   the disk: %.0f SQLite commits/s (WAL, synchronous FULL, one row each)\n' "$COMMITS_PER_S"
    echo "   newest audit event: $(curl -sf -u "$OWNER" "$LK/v1/audit?limit=1" | jq -r '.events[0].action // empty')"
fi

if [ "$SEED_KEYS" -gt 0 ]; then
    echo "== $SEED_KEYS live keys in SQLite ($KEYS_PER_APP per app)"
    "$BIN" init --data-dir "$BENCH_OUT/empty" --json >/dev/null
    "$BIN" init --data-dir "$BENCH_OUT/big" --json >"$BENCH_OUT/big-init.json"
    "$EX/bench_seed" --data-dir "$BENCH_OUT/big" --keys "$SEED_KEYS" --keys-per-app "$KEYS_PER_APP" \
        >"$BENCH_OUT/seed.json" 2>/dev/null
    echo "   seeded in $(jq '.seconds * 10 | floor / 10' "$BENCH_OUT/seed.json") s"
    "$EX/bench_coldstart" --bin "$BIN" --data-dir "$BENCH_OUT/empty" --runs 3 >"$BENCH_OUT/cold-empty.jsonl"
    "$EX/bench_coldstart" --bin "$BIN" --data-dir "$BENCH_OUT/big" --runs 3 >"$BENCH_OUT/cold-big.jsonl" 2>/dev/null
    median() { jq -s "map(.$1) | sort | .[length / 2 | floor]" "$2"; }
    COLD_MS=$(median coldStartMs "$BENCH_OUT/cold-big.jsonl")
    EMPTY_RSS=$(median vmRssKiB "$BENCH_OUT/cold-empty.jsonl")
    BIG_RSS=$(median vmRssKiB "$BENCH_OUT/cold-big.jsonl")
    BIG_HWM=$(median vmHwmKiB "$BENCH_OUT/cold-big.jsonl")
    PER_KEY=$(jq -n "($BIG_RSS - $EMPTY_RSS) * 1024 / $SEED_KEYS")
    printf '   cold start %.0f ms (runs: %s)\n' "$COLD_MS" \
        "$(jq -s -c 'map(.coldStartMs | floor)' "$BENCH_OUT/cold-big.jsonl")"
    printf '   VmRSS empty %s KiB, with keys %s KiB (peak %s KiB): %.0f bytes per key\n' \
        "$EMPTY_RSS" "$BIG_RSS" "$BIG_HWM" "$PER_KEY"

    echo "== POST /v1/verify (Basic) and the DIY baseline with $SEED_KEYS keys"
    BIG_OPERATOR=$(jq -r .operatorToken "$BENCH_OUT/big-init.json")
    SAMPLE_ID=$(jq -r .sampleKeyId "$BENCH_OUT/seed.json")
    SAMPLE_SECRET=$(jq -r .sampleSecret "$BENCH_OUT/seed.json")
    printf '{"authorization":"Basic %s"}' "$(printf '%s:%s' "$SAMPLE_ID" "$SAMPLE_SECRET" | base64 -w0)" \
        >"$BENCH_OUT/verify-big.json"
    LATCHKEY_LOG=$LOG_LEVEL start_server big \
        "$BIN" serve --data-dir "$BENCH_OUT/big" --listen "127.0.0.1:$BIG_PORT"
    start_server diy-big "$EX/bench_diy" --db "$BENCH_OUT/big/diy.db" \
        --listen "127.0.0.1:$BIG_DIY_PORT" --credential "$SAMPLE_ID:$SAMPLE_SECRET" --extra-rows "$SEED_KEYS"
    wait_for big
    wait_for diy-big
    k=0
    measure hello "hello.big$k"
    for t in verify_basic_big diy_big; do
        target "$t" "$t.warmup" -z "$WARMUP"
        k=$((k + 1))
        measure_between "$t" "$t.r1" "hello.big$((k - 1))" "hello.big$k"
    done
fi

echo
echo "== results: servers on one core (CPU $SERVER_CPU), load generators ($LOADGENS) on CPU $LOAD_CPU, $CONNECTIONS connections"
echo "   load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
row() { # RUN_PREFIXED_TARGET TARGET HELLO
    local b c half="-" probe="-"
    b=$(best "$1")
    c=$(cost "$1")
    if [ -f "$BENCH_OUT/$2.half.json" ]; then
        half=$(printf '%.2f ms, %.2f ms' "$(ms "$2.half" p50)" "$(ms "$2.half" p99)")
    fi
    if [ -f "$BENCH_OUT/$2.probe.json" ]; then
        probe=$(printf '%.2f ms, %.2f ms' "$(jq .p50 "$BENCH_OUT/$2.probe.json")" "$(jq .p99 "$BENCH_OUT/$2.probe.json")")
    fi
    printf '| %s | %.0f | %.2f | %.2f | %.1f | %.2f | %.2f | %s | %s |\n' "$1" "$b" "$(jq -n "$b / $3")" \
        "$(bracketed "$1" ratio)" "$c" "$(bracketed "$1" cpuratio)" "$(median_of "$BENCH_OUT/$1".r*.busy)" "$half" "$probe"
}
echo "| run | best requests/s | x hello's best | x hello, bracketed (median) | server CPU us/request (median) | hello's CPU / this, bracketed (median) | server busy, cores (median) | at half the best rate: p50, p99 (oha) | the same (bench_latency) |"
echo "|---|---|---|---|---|---|---|---|---|"
for g in $LOADGENS; do
    HELLO=$(best "$g.hello")
    for t in $TARGETS; do row "$g.$t" "$t" "$HELLO"; done
done
if [ "$SEED_KEYS" -gt 0 ]; then
    HELLO=$(best "$FIRST.hello")
    for t in verify_basic_big diy_big; do row "$t" "$t" "$HELLO"; done
fi
echo
printf '| lastUsedAt after the runs | %s s before the last run ended, read at least 11 s later (flush interval 10 s) | bytes written to storage per verify request: %s |\n' \
    "$LAST_USED_AGE" "$(cat "$BENCH_OUT"/*.verify_basic.r*.written | sort -g | tail -1)"
[ "${THROUGHPUT_ONLY:-0}" = 1 ] || printf '| key creation over HTTP | %.0f keys/s (target >= 1000) | server CPU %.0f us/key | disk: %.0f commits/s |\n' \
    "$KEYS_PER_S" "$KEY_CPU" "$COMMITS_PER_S"
if [ "$SEED_KEYS" -gt 0 ]; then
    printf '| cold start, %s keys | %.0f ms (target <= 5000) |\n' "$SEED_KEYS" "$COLD_MS"
    printf '| VmRSS growth per key | %.0f bytes (target <= 512); peak VmHWM %s KiB |\n' "$PER_KEY" "$BIG_HWM"
fi
echo "raw oha output: $BENCH_OUT/*.json"
