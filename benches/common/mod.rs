//! The real daemon (the binary of this build profile) for end-to-end benchmarks: port 0, a
//! temporary data dir, killed when dropped. Its warnings and errors are echoed to stderr.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Daemon {
    pub child: Child,
    /// `IP:port` it listens on.
    pub addr: String,
    pub dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Starts it with `config` (TOML, may be empty) and environment overrides.
    pub fn start(config: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_in(std::env::temp_dir().as_path(), config, env)
    }

    /// Like `start`, with its directory (config and data) under `parent`.
    pub fn start_in(parent: &std::path::Path, config: &str, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir_in(parent).unwrap();
        let cfg = dir.path().join("edgelive.toml");
        std::fs::write(&cfg, config).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgelive"));
        cmd.args(["--listen", "127.0.0.1:0", "--config"])
            .arg(&cfg)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("RUST_LOG", "warn,edgelive=info")
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let l = lines.next().expect("daemon log").unwrap();
            if l.contains("listening") {
                if let Some(a) = l.split("addr=").nth(1) {
                    break a.trim().to_owned();
                }
            }
        };
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                if ["WARN", "ERROR", "panicked"].iter().any(|w| l.contains(w)) {
                    eprintln!("daemon: {l}");
                }
            }
        });
        Daemon { child, addr, dir }
    }

    /// Resident memory, KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A Centrifuge connection to the daemon at `addr`, connected (the reply taken).
pub async fn connect(addr: &str) -> Ws {
    use futures_util::{SinkExt, StreamExt};
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/api/live/ws"))
        .await
        .unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        r#"{"id":1,"connect":{}}"#,
    ))
    .await
    .unwrap();
    ws.next().await.unwrap().unwrap();
    ws
}

/// Replies (and pushes) in the next frame, one JSON value per line.
pub async fn next_values(ws: &mut Ws) -> Vec<serde_json::Value> {
    use futures_util::StreamExt;
    loop {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = ws.next().await.unwrap().unwrap()
        {
            return t
                .split('\n')
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        }
    }
}

/// A publish command with a 200-byte command body's worth of payload.
pub fn publish_cmd(id: u64, channel: &str) -> String {
    let payload = "x".repeat(190);
    format!(r#"{{"id":{id},"publish":{{"channel":"{channel}","data":"{payload}"}}}}"#)
}

/// Publishes `n` messages to `channel`, at most `window` unacknowledged; returns the duration.
pub async fn publish(ws: &mut Ws, channel: &str, n: u64, window: u64) -> std::time::Duration {
    use futures_util::SinkExt;
    let started = std::time::Instant::now();
    let (mut sent, mut acked) = (0u64, 0u64);
    while acked < n {
        let mut batch = Vec::new();
        while sent < n && sent - acked < window {
            sent += 1;
            batch.push(publish_cmd(10 + sent, channel));
        }
        if !batch.is_empty() {
            ws.send(tokio_tungstenite::tungstenite::Message::text(
                batch.join("\n"),
            ))
            .await
            .unwrap();
        }
        for v in next_values(ws).await {
            if v.get("publish").is_some() {
                acked += 1;
            } else if v.get("error").is_some() {
                panic!("publish failed: {v}");
            }
        }
    }
    started.elapsed()
}
