//! End-to-end memory footprint of the real daemon (the binary of this build profile): RSS with
//! no clients, and with 100 idle connected clients. Prints KiB figures and KiB per connection.
//! Run: cargo bench --bench footprint

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

mod common;

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let d = common::Daemon::start("", &[]);
    let addr = d.addr.clone();
    std::thread::sleep(Duration::from_millis(500));
    let idle = d.rss_kib();

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
    let loaded = d.rss_kib();
    println!("idle RSS: {idle} KiB");
    println!("RSS with {n} idle connected+subscribed clients: {loaded} KiB");
    println!(
        "per connection: {:.1} KiB",
        (loaded.saturating_sub(idle)) as f64 / n as f64
    );
    drop(conns);
}
