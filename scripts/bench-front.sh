#!/usr/bin/env bash
# Front-door benchmarks of issue 15 (docs/BENCHMARKS.md, "Front door").
# Loopback only; every load run is bounded in time.
#
#   scripts/bench-front.sh                       # 3 rounds of 10 s per target
#   ROUNDS=1 DURATION=5s scripts/bench-front.sh  # quick
#
# In one run on one machine, with each load generator in turn (LOADGENS,
# default "wrk oha": wrk with one thread, oha with one worker thread; both
# with CONNECTIONS connections, pinned to LOAD_CPU) and every server
# process pinned to SERVER_CPU:
#   upstream      the upstream alone: bench_hello, a fixed 13-byte body on
#                 every path;
#   nginx_proxy   nginx proxy_pass to it, no auth (keep-alive to the
#                 upstream, one worker, no access log);
#   nginx_auth    nginx with auth_request to Latchkey's /v1/forward-auth
#                 (keep-alive to both), then proxy_pass, copying the
#                 X-Latchkey-* headers (the configuration of
#                 docs/integrations/nginx.conf);
#   gateway       Latchkey's gateway listener in front of the upstream;
#   forward_auth  /v1/forward-auth asked directly, as a proxy asks it;
#   verify        POST /v1/verify with the same credential and app.
# Every request carries an app key (Basic) and targets
# /v2/apps/{appId}, a target route; every answer must be 2xx.
# For each run: requests/s, p99, and the CPU time of every server process
# involved (/proc/PID/stat, the upstream's and nginx's included), so
# throughput per core of server CPU can be compared, and how busy the
# servers were (a run whose servers used less than one core was paced by
# the load generator). Targets run in rounds,
# alternated, and the median over the rounds is reported.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-50}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PORT_BASE=${PORT_BASE:-18400}
NGINX=${NGINX:-/usr/sbin/nginx}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BENCH_OUT=${BENCH_OUT:-$(mktemp -d /tmp/latchkey-front.XXXXXX)}
mkdir -p "$BENCH_OUT"
TICK=$(getconf CLK_TCK)

UP_PORT=$PORT_BASE
LK_PORT=$((PORT_BASE + 1))
GW_PORT=$((PORT_BASE + 2))
NG_PORT=$((PORT_BASE + 3))
NGA_PORT=$((PORT_BASE + 4))

LOADGENS=${LOADGENS:-"wrk oha"}
for tool in taskset curl jq awk $LOADGENS "$NGINX"; do
    command -v "$tool" >/dev/null || { echo "$tool is required (oha: cargo install oha --locked; wrk, nginx: apt-get install wrk nginx-light)" >&2; exit 1; }
done

echo "== building (release)"
cargo build --release --locked -p latchkey -p latchkey-server --bin latchkey --example bench_hello
BIN=$TARGET_DIR/release/latchkey
EX=$TARGET_DIR/release/examples

PIDS=()
cleanup() {
    [ -f "$BENCH_OUT/nginx/nginx.pid" ] && kill "$(cat "$BENCH_OUT/nginx/nginx.pid")" 2>/dev/null || true
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$BENCH_OUT/data"
}
trap cleanup EXIT

start_server() { # NAME command...
    local name=$1
    shift
    taskset -c "$SERVER_CPU" "$@" >"$BENCH_OUT/$name.out" 2>/dev/null &
    PIDS+=($!)
    echo $! >"$BENCH_OUT/$name.pid"
}
wait_for() { # NAME TEXT
    for _ in $(seq 1 1200); do
        grep -q "$2" "$BENCH_OUT/$1.out" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$1 did not start" >&2
    exit 1
}

echo "== machine"
echo "   $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), nproc $(nproc), $(rustc --version), $($NGINX -v 2>&1)"
echo "   servers on CPU $SERVER_CPU, load generators ($LOADGENS) on CPU $LOAD_CPU, $CONNECTIONS connections; output in $BENCH_OUT"
echo "   load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== starting the upstream, Latchkey (with its gateway) and nginx"
"$BIN" init --data-dir "$BENCH_OUT/data" --json >"$BENCH_OUT/init.json"
OPERATOR=$(jq -r .operatorToken "$BENCH_OUT/init.json")
OWNER="$(jq -r .key.id "$BENCH_OUT/init.json"):$(jq -r .key.secret "$BENCH_OUT/init.json")"
start_server upstream "$EX/bench_hello" "127.0.0.1:$UP_PORT"
start_server latchkey "$BIN" serve --data-dir "$BENCH_OUT/data" --listen "127.0.0.1:$LK_PORT" \
    --target-route '/v2/apps/{appId}/users/{userId}' --target-route '/v2/apps/{appId}' \
    --gateway-listen "127.0.0.1:$GW_PORT" --gateway-upstream "http://127.0.0.1:$UP_PORT"
wait_for upstream "listening on"
wait_for latchkey "gateway listening on"
LK=http://127.0.0.1:$LK_PORT

post() { curl -sf -u "$1" -H 'content-type: application/json' -d "$3" "$LK$2"; }
APP=$(post "$OWNER" /v1/apps '{"displayName":"bench"}' | jq -r .app.id)
KEY=$(post "$OWNER" "/v1/apps/$APP/keys" '{"displayName":"bench"}')
KEY_ID=$(echo "$KEY" | jq -r .key.id)
KEY_SECRET=$(echo "$KEY" | jq -r .key.secret)
BASIC=$(printf '%s:%s' "$KEY_ID" "$KEY_SECRET" | base64 -w0)
printf '{"authorization":"Basic %s","appId":"%s"}' "$BASIC" "$APP" >"$BENCH_OUT/verify.json"
TARGET_PATH=/v2/apps/$APP

mkdir -p "$BENCH_OUT/nginx"
cat >"$BENCH_OUT/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $BENCH_OUT/nginx/nginx.pid;
error_log $BENCH_OUT/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $BENCH_OUT/nginx/body;
    proxy_temp_path $BENCH_OUT/nginx/proxy;
    fastcgi_temp_path $BENCH_OUT/nginx/fastcgi;
    uwsgi_temp_path $BENCH_OUT/nginx/uwsgi;
    scgi_temp_path $BENCH_OUT/nginx/scgi;
    upstream api { server 127.0.0.1:$UP_PORT; keepalive 64; }
    upstream latchkey { server 127.0.0.1:$LK_PORT; keepalive 64; }
    proxy_http_version 1.1;
    server {
        listen 127.0.0.1:$NG_PORT;
        location / { proxy_set_header Connection ""; proxy_pass http://api; }
    }
    server {
        listen 127.0.0.1:$NGA_PORT;
        location / {
            auth_request /latchkey;
            auth_request_set \$lk_scope \$upstream_http_x_latchkey_scope;
            auth_request_set \$lk_account \$upstream_http_x_latchkey_account_id;
            auth_request_set \$lk_app \$upstream_http_x_latchkey_app_id;
            auth_request_set \$lk_user \$upstream_http_x_latchkey_user_id;
            auth_request_set \$lk_key \$upstream_http_x_latchkey_key_id;
            proxy_set_header X-Latchkey-Scope \$lk_scope;
            proxy_set_header X-Latchkey-Account-Id \$lk_account;
            proxy_set_header X-Latchkey-App-Id \$lk_app;
            proxy_set_header X-Latchkey-User-Id \$lk_user;
            proxy_set_header X-Latchkey-Key-Id \$lk_key;
            proxy_set_header Connection "";
            proxy_pass http://api;
        }
        location = /latchkey {
            internal;
            proxy_pass http://latchkey/v1/forward-auth;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Connection "";
            proxy_set_header X-Original-URI \$request_uri;
            proxy_set_header X-Original-Method \$request_method;
        }
    }
}
CONF
taskset -c "$SERVER_CPU" "$NGINX" -p "$BENCH_OUT/nginx" -c "$BENCH_OUT/nginx/nginx.conf" \
    >"$BENCH_OUT/nginx.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$NG_PORT/" >/dev/null 2>&1 && break; sleep 0.1; done

# Every target answers 2xx, and the allowed ones carry Latchkey's identity.
curl -sf "http://127.0.0.1:$NG_PORT$TARGET_PATH" >/dev/null
curl -sf -u "$KEY_ID:$KEY_SECRET" "http://127.0.0.1:$NGA_PORT$TARGET_PATH" >/dev/null
curl -sf -u "$KEY_ID:$KEY_SECRET" "http://127.0.0.1:$GW_PORT$TARGET_PATH" >/dev/null
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$NGA_PORT$TARGET_PATH")" = 401 ]
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GW_PORT$TARGET_PATH")" = 401 ]
curl -sfD - -o /dev/null -u "$KEY_ID:$KEY_SECRET" -H "x-forwarded-uri: $TARGET_PATH" "$LK/v1/forward-auth" \
    | grep -qi "^x-latchkey-app-id: $APP"

# The pids whose CPU a target costs.
nginx_pids() { local m; m=$(cat "$BENCH_OUT/nginx/nginx.pid"); echo "$m $(pgrep -P "$m" | xargs)"; }
pids_of() {
    local up lk
    up=$(cat "$BENCH_OUT/upstream.pid")
    lk=$(cat "$BENCH_OUT/latchkey.pid")
    case $1 in
        upstream) echo "$up" ;;
        nginx_proxy) echo "$up $(nginx_pids)" ;;
        nginx_auth) echo "$up $lk $(nginx_pids)" ;;
        gateway) echo "$up $lk" ;;
        forward_auth | verify) echo "$lk" ;;
    esac
}
ticks() { local sum=0 t; for pid in "$@"; do t=$(awk '{ print $14 + $15 }' "/proc/$pid/stat"); sum=$((sum + t)); done; echo $sum; }

# One load run. LOADGEN=oha: oha, one worker thread; LOADGEN=wrk: wrk,
# one thread. Either writes RUN.sum.json: requests, rps, p99_ms, seconds,
# and fails unless every answer was 2xx.
run() { # TARGET RUN DURATION
    local t=$1 name=$2 duration=$3
    local url method=GET body="" args=()
    case $t in
        upstream) url="http://127.0.0.1:$UP_PORT$TARGET_PATH" ;;
        nginx_proxy) url="http://127.0.0.1:$NG_PORT$TARGET_PATH" ;;
        nginx_auth) url="http://127.0.0.1:$NGA_PORT$TARGET_PATH"; args=(-H "authorization: Basic $BASIC") ;;
        gateway) url="http://127.0.0.1:$GW_PORT$TARGET_PATH"; args=(-H "authorization: Basic $BASIC") ;;
        forward_auth) url="$LK/v1/forward-auth"; args=(-H "authorization: Basic $BASIC" -H "x-forwarded-uri: $TARGET_PATH") ;;
        verify) url="$LK/v1/verify"; method=POST body="$BENCH_OUT/verify.json"; args=(-H "authorization: Bearer $OPERATOR") ;;
    esac
    if [ "$LOADGEN" = oha ]; then
        [ -n "$body" ] && args+=(-m POST -T application/json -D "$body")
        taskset -c "$LOAD_CPU" oha --no-tui --output-format json --worker-threads 1 \
            -c "$CONNECTIONS" -z "$duration" "${args[@]}" "$url" >"$BENCH_OUT/$name.json"
        local bad
        bad=$(jq '[.statusCodeDistribution | to_entries[] | select(.key | test("^2") | not) | .value] | add // 0' "$BENCH_OUT/$name.json")
        [ "$bad" = 0 ] || { echo "$name: $bad responses were not 2xx" >&2; jq -c .statusCodeDistribution "$BENCH_OUT/$name.json" >&2; exit 1; }
        jq '{requests: ([.statusCodeDistribution[]] | add), rps: .summary.requestsPerSec,
             p99_ms: (.latencyPercentiles.p99 * 1000), seconds: .summary.total}' \
            "$BENCH_OUT/$name.json" >"$BENCH_OUT/$name.sum.json"
    else
        local script="$BENCH_OUT/$t.lua"
        if [ -n "$body" ]; then
            printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nlocal f = io.open("%s")\nwrk.body = f:read("*a")\nf:close()\n' \
                "$body" >"$script"
        else
            : >"$script"
        fi
        taskset -c "$LOAD_CPU" wrk -t1 -c "$CONNECTIONS" -d "$duration" --latency -s "$script" \
            "${args[@]}" "$url" >"$BENCH_OUT/$name.txt"
        if grep -q 'Non-2xx\|Socket errors' "$BENCH_OUT/$name.txt"; then
            echo "$name: not every answer was 2xx, or sockets failed:" >&2
            cat "$BENCH_OUT/$name.txt" >&2
            exit 1
        fi
        awk -v d="${duration%s}" '
            / requests in / { n = $1; s = $4; sub(/s,?$/, "", s) }
            /Requests\/sec/ { r = $2 }
            $1 == "99%" { v = $2; u = v; sub(/[a-z]+$/, "", v); sub(/^[0-9.]+/, "", u)
                          p = (u == "us") ? v / 1000 : (u == "s") ? v * 1000 : v }
            END { printf "{\"requests\":%d,\"rps\":%s,\"p99_ms\":%s,\"seconds\":%s}\n", n, r, p, s }
        ' "$BENCH_OUT/$name.txt" >"$BENCH_OUT/$name.sum.json"
    fi
}

measure() { # TARGET RUN
    local pids c0 c1 n secs
    pids=$(pids_of "$1")
    # shellcheck disable=SC2086
    c0=$(ticks $pids)
    run "$1" "$2" "$DURATION"
    # shellcheck disable=SC2086
    c1=$(ticks $pids)
    n=$(jq .requests "$BENCH_OUT/$2.sum.json")
    secs=$(jq .seconds "$BENCH_OUT/$2.sum.json")
    jq -n "($c1 - $c0) * 1000000 / $TICK / $n" >"$BENCH_OUT/$2.cpu"
    # Requests per second of server CPU (all its processes together).
    jq -n "$n / (($c1 - $c0) / $TICK)" >"$BENCH_OUT/$2.percore"
    # How busy the server processes were: 1.0 is one core all the time.
    # Below ~0.95 the load generator, not the servers, set the pace.
    jq -n "($c1 - $c0) / $TICK / $secs" >"$BENCH_OUT/$2.busy"
    jq .rps "$BENCH_OUT/$2.sum.json" >"$BENCH_OUT/$2.rps"
    jq .p99_ms "$BENCH_OUT/$2.sum.json" >"$BENCH_OUT/$2.p99"
    printf '   %-22s %8.0f requests/s, p99 %6.2f ms, server CPU %6.1f us/request, servers busy %4.2f cores (%s s)\n' \
        "$2" "$(cat "$BENCH_OUT/$2.rps")" "$(cat "$BENCH_OUT/$2.p99")" "$(cat "$BENCH_OUT/$2.cpu")" \
        "$(cat "$BENCH_OUT/$2.busy")" "$secs"
}
median() { cat "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

TARGETS=${TARGETS:-"upstream nginx_proxy nginx_auth gateway forward_auth verify"}
echo "== $ROUNDS rounds of $DURATION per target, after a $WARMUP warm-up each"
for LOADGEN in $LOADGENS; do
    echo "== $LOADGEN: $ROUNDS rounds of $DURATION per target, after a $WARMUP warm-up each"
    for t in $TARGETS; do run "$t" "$LOADGEN.$t.warmup" "$WARMUP"; done
    for r in $(seq 1 "$ROUNDS"); do
        echo "-- $LOADGEN, round $r"
        for t in $TARGETS; do measure "$t" "$LOADGEN.$t.r$r"; done
    done
done

ratio() { jq -n "$(median "$BENCH_OUT/$1".r*."$3") / $(median "$BENCH_OUT/$2".r*."$3")"; }
for LOADGEN in $LOADGENS; do
    echo "== $LOADGEN: medians over the rounds"
    printf '   %-14s %12s %10s %16s %22s %14s\n' target requests/s p99_ms cpu_us/request requests/s_per_core servers_busy
    for t in $TARGETS; do
        m=$LOADGEN.$t
        printf '   %-14s %12.0f %10.2f %16.1f %22.0f %14.2f\n' "$t" \
            "$(median "$BENCH_OUT/$m".r*.rps)" "$(median "$BENCH_OUT/$m".r*.p99)" \
            "$(median "$BENCH_OUT/$m".r*.cpu)" "$(median "$BENCH_OUT/$m".r*.percore)" \
            "$(median "$BENCH_OUT/$m".r*.busy)"
    done
    echo "== $LOADGEN: targets"
    g=$LOADGEN
    printf '   gateway / nginx_auth, requests/s per core of server CPU: %.2fx (target >= 1.0)\n' "$(ratio "$g.gateway" "$g.nginx_auth" percore)"
    printf '   gateway / nginx_auth, requests/s:                        %.2fx\n' "$(ratio "$g.gateway" "$g.nginx_auth" rps)"
    printf '   gateway / nginx_proxy, requests/s:                       %.2fx (target >= 0.7)\n' "$(ratio "$g.gateway" "$g.nginx_proxy" rps)"
    printf '   gateway / nginx_proxy, requests/s per core:              %.2fx\n' "$(ratio "$g.gateway" "$g.nginx_proxy" percore)"
    printf '   forward_auth / verify, server CPU per request:           %.2fx (target <= 1.2)\n' "$(ratio "$g.forward_auth" "$g.verify" cpu)"
done
