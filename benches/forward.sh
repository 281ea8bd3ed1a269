#!/usr/bin/env bash
# [[forward]] benchmarks (see benches/forward.py): points/s forwarded by one edge on one core
# with gzip off and on, catch-up after a 10-minute outage at 1,000 points/s, disk bytes per
# queued point. Needs python3 and taskset (util-linux). Usage: benches/forward.sh
# (POINTS=200000 OUTAGE_POINTS=600000; `benches/forward.sh throughput` or `catchup` alone).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p edgelive >&2
exec python3 benches/forward.py "$@"
