//! End-to-end memory footprint of the real daemon (the binary of this build profile): RSS with
//! no clients, and with 100 idle connected clients. Prints KiB figures and KiB per connection.
//! Run: cargo bench --bench footprint

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgelive"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let l = lines.next().expect("daemon log").unwrap();
        if let Some(a) = l.split("addr=").nth(1) {
            break a.trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss_kib(pid);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let n = 100;
    let conns = rt.block_on(async {
        let mut v = Vec::new();
        for i in 0..n {
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/api/live/ws")).await.unwrap();
            ws.send(Message::text(format!(
                "{{\"id\":1,\"connect\":{{}}}}\n{{\"id\":2,\"subscribe\":{{\"channel\":\"grafana/broadcast/c{}\"}}}}",
                i % 10
            )))
            .await
            .unwrap();
            ws.next().await.unwrap().unwrap();
            v.push(ws);
        }
        v
    });
    std::thread::sleep(Duration::from_millis(500));
    let loaded = rss_kib(pid);
    println!("idle RSS: {idle} KiB");
    println!("RSS with {n} idle connected+subscribed clients: {loaded} KiB");
    println!(
        "per connection: {:.1} KiB",
        (loaded.saturating_sub(idle)) as f64 / n as f64
    );
    drop(conns);
    let _ = child.kill();
    let _ = child.wait();
}
