//! History end to end, against the real daemon of this build profile:
//! - append throughput (publish → acknowledgement) with durability "batched" and "none",
//!   one client keeping up to 256 publishes in flight, 200-byte payloads;
//! - recovery of 1,000 publications (subscribe with recover, reply received), median of 20;
//! - RSS and disk size with 100 channels × 1,000 publications of 200 bytes.
//!
//! Run: cargo bench --bench history

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

const CONFIG: &str = "[[history]]\npattern = \"grafana/broadcast/*\"\nsize = 1000\nttl = \"1h\"\n";

mod common;
use common::{connect, next_values, publish, Daemon};

fn start(durability: &str) -> Daemon {
    Daemon::start(
        CONFIG,
        &[
            ("EDGELIVE_STORAGE_DURABILITY", durability),
            ("EDGELIVE_LIVE_MAX_CONNECTIONS", "-1"),
            ("EDGELIVE_LIVE_MESSAGE_SIZE_LIMIT", "1048576"),
        ],
    )
}

fn du_kib(path: &std::path::Path) -> u64 {
    let out = std::process::Command::new("du")
        .arg("-sk")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for durability in ["batched", "none"] {
            let d = start(durability);
            let mut ws = connect(&d.addr).await;
            publish(&mut ws, "grafana/broadcast/warmup", 2000, 256).await;
            let n = 20_000;
            let took = publish(&mut ws, "grafana/broadcast/append", n, 256).await;
            println!(
                "append, durability {durability}: {n} publications in {:.2} s = {:.0}/s",
                took.as_secs_f64(),
                n as f64 / took.as_secs_f64()
            );
        }

        let d = start("batched");
        let mut ws = connect(&d.addr).await;
        publish(&mut ws, "grafana/broadcast/recover", 1000, 256).await;
        let mut times = Vec::new();
        for i in 0..20 {
            let mut s = connect(&d.addr).await;
            let started = Instant::now();
            s.send(Message::text(format!(
                r#"{{"id":{},"subscribe":{{"channel":"grafana/broadcast/recover","recover":true,"offset":0,"epoch":""}}}}"#,
                2 + i
            )))
            .await
            .unwrap();
            let v = next_values(&mut s).await;
            times.push(started.elapsed());
            let pubs = v[0]["subscribe"]["publications"].as_array().map_or(0, Vec::len);
            assert_eq!(pubs, 1000, "{}", v[0]);
        }
        times.sort();
        println!("recovery of 1,000 publications: median {:.2} ms", times[10].as_secs_f64() * 1e3);

        let d = start("batched");
        let before = d.rss_kib();
        let mut ws = connect(&d.addr).await;
        let started = Instant::now();
        for c in 0..100 {
            publish(&mut ws, &format!("grafana/broadcast/ch{c}"), 1000, 256).await;
        }
        let took = started.elapsed();
        std::thread::sleep(Duration::from_secs(2));
        let after = d.rss_kib();
        let disk = du_kib(&d.dir.path().join("data"));
        let payload_kib = 100 * 1000 * 200 / 1024;
        println!(
            "100 channels x 1,000 x 200 B ({payload_kib} KiB of payload, written in {:.1} s): RSS {before} -> {after} KiB (+{} KiB), data dir {disk} KiB",
            took.as_secs_f64(),
            after.saturating_sub(before)
        );
    });
}
