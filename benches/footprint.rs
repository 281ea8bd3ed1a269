//! End-to-end memory footprint of the real daemon (the binary of this build profile): RSS with
//! no clients, with N idle connected and subscribed clients (N = 100 and 1,000), and 10 s
//! after they all closed (how much the allocator gives back). Prints KiB figures.
//! Run: cargo bench --bench footprint

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

mod common;

const CONFIG: &str = "[live]\nmax_connections = 2000\nclient_command_rate = 0\n";

fn main() {
    // 1,000 clients and their server ends need more than the default 1,024 descriptors.
    raise_fd_limit();
    let d = common::Daemon::start(CONFIG, &[]);
    let addr = d.addr.clone();
    std::thread::sleep(Duration::from_millis(500));
    let idle = d.rss_kib();
    println!("idle RSS: {idle} KiB");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for n in [100usize, 1000] {
        let conns = rt.block_on(async {
            let mut v = Vec::new();
            for i in 0..n {
                let url = format!("ws://{addr}/api/live/ws");
                let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
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
        println!(
            "RSS with {n} idle clients: {loaded} KiB, {:.1} KiB per connection",
            loaded.saturating_sub(idle) as f64 / n as f64
        );
        drop(conns);
        std::thread::sleep(Duration::from_secs(10));
        println!(
            "RSS 10 s after the {n} closed: {} KiB ({} KiB above idle)",
            d.rss_kib(),
            d.rss_kib() as i64 - idle as i64
        );
    }
}

fn raise_fd_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}
