//! Push API costs.
//!
//! 1. criterion: parse + convert (labels_column and wide) + frame JSON encoding of a
//!    Telegraf-like batch (`cpu` input: 13 CPUs × 10 fields, 80 timestamps = 1,040 points),
//!    one core; throughput in points per second.
//! 2. end to end against the release daemon: `POST /api/live/push` at a fixed rate with one
//!    subscriber on the measurement's channel; push → subscriber latency percentiles.
//!
//! Run: cargo bench --bench push

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use edgelive::ingest::convert::{convert, Layout};
use edgelive::ingest::lineproto::{Line, Parser};
use edgelive::ingest::Precision;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

mod common;

const FIELDS: [&str; 10] = [
    "usage_guest",
    "usage_guest_nice",
    "usage_idle",
    "usage_iowait",
    "usage_irq",
    "usage_nice",
    "usage_softirq",
    "usage_steal",
    "usage_system",
    "usage_user",
];

fn batch(timestamps: usize) -> (String, usize) {
    let mut s = String::new();
    let mut points = 0;
    for t in 0..timestamps {
        for cpu in 0..13 {
            s.push_str(&format!("cpu,cpu=cpu{cpu},host=raspberrypi "));
            for (i, f) in FIELDS.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(&format!("{f}={}.{}", (cpu * 7 + i * 3 + t) % 100, t % 997));
            }
            s.push_str(&format!(
                " {}\n",
                1_700_000_000_000_000_000i64 + t as i64 * 1_000_000_000
            ));
            points += 1;
        }
    }
    (s, points)
}

fn parse_and_convert(c: &mut Criterion) {
    let (body, points) = batch(80);
    let mut g = c.benchmark_group("push");
    g.throughput(Throughput::Elements(points as u64));
    g.bench_function("parse only", |b| {
        b.iter(|| {
            let mut p = Parser::new(&body, Precision::Nanoseconds);
            let mut line = Line::default();
            let mut n = 0;
            while let Some(r) = p.next(&mut line) {
                r.unwrap();
                n += line.fields.len();
            }
            n
        })
    });
    for (name, layout) in [
        ("labels_column", Layout::LabelsColumn),
        ("wide", Layout::Wide),
    ] {
        g.bench_function(format!("parse+convert+encode {name}"), |b| {
            b.iter(|| {
                let frames = convert(&body, layout, Precision::Nanoseconds, 0).unwrap();
                frames.iter().map(|f| f.to_json().data.len()).sum::<usize>()
            })
        });
    }
    // What a push to a forwarded stream adds: its points written again as line protocol.
    g.bench_function("labels_column + forward lines, two passes", |b| {
        b.iter(|| {
            let frames = convert(&body, Layout::LabelsColumn, Precision::Nanoseconds, 0).unwrap();
            let lines = edgelive::forward::lines::body_lines(
                &body,
                Precision::Nanoseconds,
                0,
                Default::default(),
            )
            .unwrap();
            frames.iter().map(|f| f.to_json().data.len()).sum::<usize>() + lines.text.len()
        })
    });
    g.bench_function("labels_column + forward lines, one pass", |b| {
        b.iter(|| {
            let mut lines = edgelive::forward::lines::Lines::default();
            let frames = edgelive::ingest::convert::convert_echo(
                &body,
                Layout::LabelsColumn,
                Precision::Nanoseconds,
                0,
                Default::default(),
                Some(&mut lines),
            )
            .unwrap();
            frames.iter().map(|f| f.to_json().data.len()).sum::<usize>() + lines.text.len()
        })
    });
    g.finish();
}

criterion_group!(benches, parse_and_convert);

/// Push at `rate` per second for `secs`, one line each, and time each until the subscriber has it.
fn end_to_end(rate: u32, secs: u32) {
    let d = common::Daemon::start("", &[]);
    let addr = d.addr.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut ws = rt.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/api/live/ws")).await.unwrap();
        ws.send(Message::text("{\"id\":1,\"connect\":{}}\n{\"id\":2,\"subscribe\":{\"channel\":\"stream/bench/cpu\"}}")).await.unwrap();
        let mut replies = 0;
        while replies < 2 {
            if let Some(Ok(Message::Text(t))) = ws.next().await {
                replies += t.split('\n').count();
            }
        }
        ws
    });
    let mut conn = TcpStream::connect(&addr).unwrap();
    conn.set_nodelay(true).unwrap();
    let every = Duration::from_secs_f64(1.0 / f64::from(rate));
    let mut lat = Vec::new();
    let start = Instant::now();
    for i in 0..rate * secs {
        let due = start + every * i;
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let body = format!("cpu,cpu=cpu0 usage_idle={i}.5,usage_user=1");
        let t0 = Instant::now();
        write!(
            conn,
            "POST /api/live/push/bench HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        rt.block_on(async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) if t.contains("\"pub\"") => break,
                    Some(Ok(_)) => continue,
                    other => panic!("subscriber lost: {other:?}"),
                }
            }
        });
        lat.push(t0.elapsed());
        // Read the 200 (fixed size: no body) before the next request on this connection.
        let mut buf = [0u8; 512];
        let n = conn.read(&mut buf).unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "push -> subscriber at {rate}/s for {secs}s ({} pushes, durability batched): p50 {:?}, p99 {:?}, max {:?}",
        lat.len(),
        pct(0.50),
        pct(0.99),
        lat[lat.len() - 1]
    );
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    end_to_end(200, 5);
}
