#!/usr/bin/env bash
# Fan-out 1→100 through the Redis engine: two edgelive nodes on one redis-server (Debian's),
# subscribers spread over both, the publisher on the first; beside it the same load on one node
# without Redis. History off and on (1,000 kept). Prints one markdown table of medians:
# edgelive CPU per delivery (both nodes together, and per node: half of it), Redis's CPU per
# delivery, and the delivery latency p50/p99.
#
#   benches/redis.sh            # RUNS=3, about 2 minutes on 2 cores
#   RUNS=1 benches/redis.sh     # a quick look
#
# The servers (both nodes and Redis) are pinned to CPU 0, the generator to CPU 1, as in
# compare.sh; PIN=0 turns pinning off.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
work=$(mktemp -d /tmp/edgelive-redis.XXXXXX)
results=$work/results.jsonl
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

command -v redis-server >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
}
systemctl stop redis-server 2>/dev/null || true
cargo build --release --locked -q -p edgelive -p edgelive-loadgen
loadgen=target/release/loadgen
pin_server=() pin_gen=()
if [ "${PIN:-1}" != 0 ] && [ "$(nproc)" -ge 2 ]; then
  pin_server=(taskset -c 0)
  pin_gen=(taskset -c 1)
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_health() {
  for _ in $(seq 200); do
    curl -fs "http://127.0.0.1:$1/api/health" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "node on port $1 did not become healthy" >&2
  return 1
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# node NAME SIZE [REDIS_PORT]: starts a node; sets PORT and PID.
node() {
  PORT=$(free_port)
  local dir=$work/$1 && mkdir -p "$dir"
  local ha=""
  [ -n "${3:-}" ] && ha="ha_engine = \"redis\"
ha_engine_address = \"127.0.0.1:$3\""
  cat > "$dir/edgelive.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
[storage]
path = "$dir/data"
durability = "batched"
[live]
max_connections = 2000
client_command_rate = 0
$ha
[[history]]
pattern = "grafana/broadcast/*"
size = $2
ttl = "1h"
TOML
  "${pin_server[@]}" target/release/edgelive --config "$dir/edgelive.toml" >"$dir/log" 2>&1 &
  PID=$!
  pids+=("$PID")
  wait_health "$PORT"
}

stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  pids=()
}

# record SETUP HISTORY REDIS_PID LOADGEN_ARGS...
record() {
  local setup=$1 history=$2 rpid=$3
  shift 3
  local before=0 after=0 out
  [ "$rpid" != - ] && before=$(cpu_ticks "$rpid")
  out=$(timeout 120 "${pin_gen[@]}" "$loadgen" --target edgelive "$@" fanout --subs 100 --rate 1000 --secs 3)
  [ "$rpid" != - ] && after=$(cpu_ticks "$rpid")
  echo "{\"setup\":\"$setup\",\"history\":\"$history\",\"redis_ticks\":$((after - before)),\"result\":$out}" >> "$results"
}

for size in 0 1000; do
  history=off
  [ "$size" -gt 0 ] && history=on
  for _ in $(seq "$RUNS"); do
    node single "$size"
    record "one node" "$history" - --addr "127.0.0.1:$PORT" --pids "$PID"
    stop_all
    rport=$(free_port)
    rdir=$work/redis && rm -rf "$rdir" && mkdir -p "$rdir"
    "${pin_server[@]}" redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$rdir" >/dev/null 2>&1 &
    rpid=$!
    pids+=("$rpid")
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$rport") 2>/dev/null && break; sleep 0.05; done
    node a "$size" "$rport"; a_port=$PORT a_pid=$PID
    node b "$size" "$rport"; b_port=$PORT b_pid=$PID
    record "two nodes + Redis" "$history" "$rpid" --addr "127.0.0.1:$a_port" --spread-to "127.0.0.1:$b_port" --pids "$a_pid,$b_pid"
    stop_all
    rm -rf "$work/single" "$work/a" "$work/b"
  done
done

python3 - "$results" "$(getconf CLK_TCK)" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
tck = float(sys.argv[2])
print("| setup | history | edgelive µs/delivery (all nodes) | per node | Redis µs/delivery | p50 µs | p99 µs | delivered |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
keys = []
for r in rows:
    k = (r["setup"], r["history"])
    if k not in keys:
        keys.append(k)
for k in keys:
    rs = [r for r in rows if (r["setup"], r["history"]) == k and r["result"]]
    med = lambda f: statistics.median(f(r) for r in rs)
    us = med(lambda r: r["result"]["server_us_per_delivery"])
    nodes = 2 if k[0].startswith("two") else 1
    redis = med(lambda r: r["redis_ticks"] / tck * 1e6 / max(r["result"]["delivered"], 1))
    print(f"| {k[0]} | {k[1]} | {us:.2f} | {us / nodes:.2f} | {redis:.2f} | {med(lambda r: r['result']['p50_us']):.0f} | {med(lambda r: r['result']['p99_us']):.0f} | {med(lambda r: r['result']['delivered_share']):.3f} |")
PY
