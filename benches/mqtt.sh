#!/usr/bin/env bash
# MQTT bridge throughput: one mosquitto_pub through edgelive to 10 Centrifuge subscribers, at
# QoS 0 and QoS 1, and the daemon's CPU per message. Needs mosquitto, mosquitto-clients and
# tests/clients/node_modules (tests/run installs them). Usage: benches/mqtt.sh  (N=20000)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p edgelive >&2
dir=$(mktemp -d)
chmod 777 "$dir"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mport=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n' "$mport" >"$dir/mosquitto.conf"
mosquitto -c "$dir/mosquitto.conf" 2>"$dir/mosquitto.log" &
mpid=$!
cleanup() { kill "$mpid" "${dpid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
for qos in 0 1; do
  port=$(free_port)
  printf '[[mqtt]]\nbroker = "mqtt://127.0.0.1:%s"\nclient_id = "bench-%s"\nclean_session = true\ntopics = ["bench/#"]\nqos = %s\n' \
    "$mport" "$qos" "$qos" >"$dir/edgelive.toml"
  rm -rf "$dir/data"
  target/release/edgelive --config "$dir/edgelive.toml" --listen "127.0.0.1:$port" --data-dir "$dir/data" 2>"$dir/log" &
  dpid=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/metrics" | grep -q 'edgelive_mqtt_connected{bridge="bench-'"$qos"'"} 1' && break; sleep 0.1; done
  EDGELIVE_URL="ws://127.0.0.1:$port/api/live/ws" MQTT_PORT=$mport DAEMON_PID=$dpid QOS=$qos node benches/mqtt.mjs
  kill "$dpid"; wait "$dpid" 2>/dev/null || true
done
