#!/usr/bin/env python3
"""Turns compare.sh's per-run JSON lines into one markdown table: medians per server, and
edgelive ÷ peer ratios. Usage: compare_table.py results.jsonl"""
import json
import statistics
import sys

TARGETS = ["edgelive", "mosquitto", "nchan"]

# (label, scenario, variant, value from one run's result)
ROWS = [
    ("Idle RSS, no clients (KiB)", "idle", "off", lambda r: r["idle_rss_kib"]),
    ("… of which anonymous (heap, stacks; not the binary's and libraries' pages) (KiB)", "idle",
     "off", lambda r: r["idle_anon_kib"]),
    ("RSS per idle connection, 100 subscribers (KiB)", "idle", "off",
     lambda r: r["points"][1]["kib_per_connection"]),
    ("RSS per idle connection, 1,000 subscribers (KiB)", "idle", "off",
     lambda r: r["points"][-1]["kib_per_connection"]),
    ("… of which anonymous (KiB)", "idle", "off",
     lambda r: r["points"][-1]["anon_kib_per_connection"]),
    ("RSS above idle 10 s after 1,000 connections closed (KiB)", "idle", "off",
     lambda r: r["above_idle_after_close_kib"]),
    ("Fan-out 1→100, 1,000 msg/s (100k deliveries/s): server CPU per delivery (µs)", "fanout",
     "off", lambda r: r["server_us_per_delivery"]),
    ("… p50 latency (µs)", "fanout", "off", lambda r: r["p50_us"]),
    ("… p99 latency (µs)", "fanout", "off", lambda r: r["p99_us"]),
    ("… share delivered", "fanout", "off", lambda r: r["delivered_share"]),
    ("… generator CPU (cores)", "fanout", "off", lambda r: r["generator_cores"]),
    ("… publish reply p50 while fanning out (µs)", "fanout", "off", lambda r: r["ack_p50_us"]),
    ("… publish reply p99 while fanning out (µs)", "fanout", "off", lambda r: r["ack_p99_us"]),
    ("Fan-out capacity: highest msg/s with every message delivered (√2 steps)", "capacity", "off",
     lambda r: r["best"]["rate"] if r["best"] else 0),
    ("… deliveries/s at that rate", "capacity", "off",
     lambda r: r["best"]["deliveries_per_s"] if r["best"] else None),
    ("… server CPU per delivery at that rate (µs)", "capacity", "off",
     lambda r: r["best"]["server_us_per_delivery"] if r["best"] else None),
    ("… p99 latency at that rate (µs)", "capacity", "off",
     lambda r: r["best"]["p99_us"] if r["best"] else None),
    ("… generator CPU at that rate (cores)", "capacity", "off",
     lambda r: r["best"]["generator_cores"] if r["best"] else None),
    ("1,000 subscribers on own channels, 10,000 msg/s round-robin: server CPU per delivery (µs)",
     "channels", "off", lambda r: r["server_us_per_delivery"]),
    ("… p50 latency (µs)", "channels", "off", lambda r: r["p50_us"]),
    ("… p99 latency (µs)", "channels", "off", lambda r: r["p99_us"]),
    ("… share delivered", "channels", "off", lambda r: r["delivered_share"]),
    ("Ingest, one subscriber per measurement: points/s", "ingest", "off",
     lambda r: r["points_per_s"]),
    ("… server CPU per point (µs)", "ingest", "off", lambda r: r["server_us_per_point"]),
    ("History on: fan-out 1→100 at 1,000 msg/s, server CPU per delivery (µs)", "fanout", "on",
     lambda r: r["server_us_per_delivery"]),
    ("… p50 latency (µs)", "fanout", "on", lambda r: r["p50_us"]),
    ("… p99 latency (µs)", "fanout", "on", lambda r: r["p99_us"]),
    ("… publish reply p50 while fanning out, batched durability (µs)", "fanout", "on",
     lambda r: r["ack_p50_us"]),
    ("… publish reply p99 while fanning out, batched durability (µs)", "fanout", "on",
     lambda r: r["ack_p99_us"]),
    ("History on: ingest points/s", "ingest", "on", lambda r: r["points_per_s"]),
    ("History memory (100 channels × 1,000 × 200 B): memory growth ÷ payload", "history", "on",
     lambda r: r["growth_over_payload"]),
]


def fmt(v):
    if v is None:
        return "—"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def cell(med, lo, hi):
    """The median, and the spread of the runs (min–max) when there was more than one."""
    if med is None:
        return "—"
    if lo == hi:
        return fmt(med)
    return f"{fmt(med)} ({fmt(lo)}–{fmt(hi)})"


def main():
    runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    print("Medians, with the spread of the runs (min–max) in brackets.")
    print()
    print("| measurement | edgelive | Mosquitto | nchan | edgelive ÷ Mosquitto | edgelive ÷ nchan |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, scenario, variant, get in ROWS:
        med, spread = {}, {}
        for t in TARGETS:
            vals = []
            for r in runs:
                if (r["target"], r["scenario"], r["variant"]) != (t, scenario, variant):
                    continue
                try:
                    v = get(r["result"]) if r["result"] is not None else None
                except (KeyError, IndexError, TypeError):
                    v = None
                if v is not None and v == v:  # NaN: nothing measured
                    vals.append(float(v))
            med[t] = statistics.median(vals) if vals else None
            spread[t] = (min(vals), max(vals)) if vals else (None, None)
        e = med["edgelive"]
        ratio = lambda p: fmt(e / p) if e is not None and p else "—"
        cells = [cell(med[t], *spread[t]) for t in TARGETS]
        print(f"| {label} | {' | '.join(cells)} | "
              f"{ratio(med['mosquitto'])} | {ratio(med['nchan'])} |")
    failed = [r for r in runs if r["result"] is None]
    if failed:
        print()
        print("Failed runs: " + ", ".join(f"{r['target']}/{r['scenario']}/{r['variant']}" for r in failed))


if __name__ == "__main__":
    main()
