#!/usr/bin/env bash
# edgelive vs Mosquitto (MQTT over WebSocket) vs nginx + nchan, same machine, same run, on
# loopback: idle footprint, fan-out, many channels, ingest, history. Installs the peers from
# Debian's packages if missing, builds edgelive and the load generator (benches/loadgen),
# starts each server on a free loopback port, runs every scenario RUNS times, stops
# everything, and prints one markdown table (medians) with edgelive ÷ peer ratios.
#
#   benches/compare.sh                 # RUNS=3, about 10 minutes on 2 cores
#   RUNS=1 benches/compare.sh          # a quick look
#   RESULTS=out.jsonl benches/compare.sh   # keep the raw per-run JSON
#
# Every server runs pinned to CPU 0 and the generator to CPU 1 (SERVER_CPU, GEN_CPU), so
# neither takes the other's core and runs are steadier; PIN=0 turns pinning off.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
work=$(mktemp -d /tmp/edgelive-compare.XXXXXX)
results=${RESULTS:-$work/results.jsonl}
: > "$results"
server_pids=()

cleanup() {
  for p in "${server_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${server_pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT INT TERM

need=()
command -v mosquitto >/dev/null || need+=(mosquitto)
command -v nginx >/dev/null || need+=(nginx-light)
[ -e /usr/lib/nginx/modules/ngx_nchan_module.so ] || need+=(libnginx-mod-nchan)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian starts the packaged services; the comparison runs its own copies on loopback.
systemctl stop mosquitto nginx 2>/dev/null || true

cargo build --release --locked -q -p edgelive -p edgelive-loadgen
loadgen=target/release/loadgen
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true  # 1,000 subscribers need more than 1,024 descriptors

pin_server=() pin_gen=()
if [ "${PIN:-1}" != 0 ] && [ "$(nproc)" -ge 2 ]; then
  pin_server=(taskset -c "${SERVER_CPU:-0}")
  pin_gen=(taskset -c "${GEN_CPU:-1}")
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "server on port $1 did not start" >&2
  return 1
}

# start_<server> VARIANT: sets PORT and PIDS (comma-separated).
start_edgelive() { # off | on
  PORT=$(free_port)
  local dir=$work/edgelive && rm -rf "$dir" && mkdir -p "$dir"
  local size=0
  [ "$1" = on ] && size=1000
  cat > "$dir/edgelive.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
[storage]
path = "$dir/data"
durability = "batched"
[live]
# The generator holds up to 1,000 subscribers and publishes faster than a client usually may.
max_connections = 2000
client_command_rate = 0
[[history]]
pattern = "grafana/broadcast/*"
size = $size
ttl = "1h"
[[history]]
pattern = "stream/*"
size = $size
ttl = "1h"
TOML
  "${pin_server[@]}" target/release/edgelive --config "$dir/edgelive.toml" >"$dir/log" 2>&1 &
  server_pids+=($!)
  PIDS=$!
  wait_port "$PORT"
}

start_nchan() { # off | on (messages kept per channel: 0 or 1000)
  PORT=$(free_port)
  local dir=$work/nginx && rm -rf "$dir" && mkdir -p "$dir/logs"
  local keep="nchan_store_messages off;"
  [ "$1" = on ] && keep="nchan_message_buffer_length 1000; nchan_message_timeout 1h;"
  cat > "$dir/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes 1;
worker_rlimit_nofile 16384;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  # nginx closes a keep-alive connection after 1,000 requests by default; publishers send more.
  keepalive_requests 100000000;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  server {
    listen 127.0.0.1:$PORT;
    location ~ ^/pub/(.+)\$ { nchan_publisher; nchan_channel_id \$1; $keep }
    location ~ ^/sub/(.+)\$ { nchan_subscriber websocket; nchan_channel_id \$1; }
  }
}
CONF
  "${pin_server[@]}" nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' >"$dir/out.log" 2>&1 &
  local master=$!
  server_pids+=("$master")
  wait_port "$PORT"
  # Master and worker, measured together.
  PIDS=$(echo "$master" $(pgrep -P "$master") | tr ' ' ',')
}

start_mosquitto() { # off
  PORT=$(free_port)
  local tcp
  tcp=$(free_port)
  local dir=$work/mosquitto && rm -rf "$dir" && mkdir -p "$dir"
  # Mosquitto 2.0.11 refuses to start with only a websockets listener; the TCP one is unused.
  cat > "$dir/mosquitto.conf" <<CONF
listener $tcp 127.0.0.1
listener $PORT 127.0.0.1
protocol websockets
socket_domain ipv4
allow_anonymous true
persistence false
CONF
  "${pin_server[@]}" mosquitto -c "$dir/mosquitto.conf" >"$dir/log" 2>&1 &
  server_pids+=($!)
  PIDS=$!
  wait_port "$PORT"
}

stop_servers() {
  for p in "${server_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${server_pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  server_pids=()
}

# run TARGET VARIANT SCENARIO ARGS...: one run, its JSON line tagged and appended.
run() {
  local target=$1 variant=$2 scenario=$3
  shift 3
  local out
  if out=$(timeout 120 "${pin_gen[@]}" "$loadgen" --target "$target" --addr "127.0.0.1:$PORT" --pids "$PIDS" "$scenario" "$@"); then
    echo "{\"target\":\"$target\",\"variant\":\"$variant\",\"scenario\":\"$scenario\",\"result\":$out}" >> "$results"
  else
    echo "{\"target\":\"$target\",\"variant\":\"$variant\",\"scenario\":\"$scenario\",\"result\":null}" >> "$results"
    echo "loadgen $target $scenario failed; the server's log ends:" >&2
    tail -n 5 "$work"/*/log "$work"/*/out.log "$work"/nginx/logs/error.log 2>/dev/null >&2 || true
  fi
}

started=$(date +%s)
for target in ${TARGETS:-edgelive mosquitto nchan}; do
  echo "== $target" >&2
  # Memory: a fresh server for each run.
  for _ in $(seq "$RUNS"); do
    "start_$target" off; run "$target" off idle --counts 100,1000; stop_servers
  done
  "start_$target" off
  for _ in $(seq "$RUNS"); do
    run "$target" off fanout --subs 100 --rate 1000 --secs 3
    run "$target" off channels --subs 1000 --rate 10000 --secs 3
    run "$target" off ingest --secs 3
  done
  run "$target" off capacity --subs 100 --from 1000 --max 200000 --secs 2
  stop_servers
  if [ "$target" != mosquitto ]; then
    "start_$target" on
    for _ in $(seq "$RUNS"); do
      run "$target" on fanout --subs 100 --rate 1000 --secs 3
      run "$target" on ingest --secs 3
    done
    stop_servers
    for _ in $(seq "$RUNS"); do
      "start_$target" on; run "$target" on history --channels 100 --per-channel 1000; stop_servers
    done
  fi
done
echo "took $(( $(date +%s) - started )) s" >&2

python3 benches/compare_table.py "$results"
