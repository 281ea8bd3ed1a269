#!/usr/bin/env bash
# The on-device dashboard's costs: page weight, navigation to first chart with 1,000 backfilled
# points in Chromium, and the daemon's CPU while 5 pages watch a 20 Hz stream. Needs
# tests/clients/node_modules (tests/run installs it) and Debian's chromium.
# Usage: benches/dashboard.sh        (WATCH_SECONDS=30 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p edgelive >&2
data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/release/edgelive --listen "127.0.0.1:$port" --data-dir "$data" 2>"$data/log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/api/health" >/dev/null && break; sleep 0.1; done
EDGELIVE_HTTP="http://127.0.0.1:$port" DAEMON_PID=$pid node benches/dashboard.mjs
