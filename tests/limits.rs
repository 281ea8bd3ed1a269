//! Limits, origin checks, slow clients, shutdown and the CLI contract, against the real daemon.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{http, Daemon, Ended, Peer};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::{self, Message};

#[tokio::test]
async fn the_101st_connection_is_closed_with_3504_by_default() {
    let d = Daemon::start(&[]);
    let mut peers = Vec::new();
    for _ in 0..100 {
        peers.push(Peer::connected(&d.ws_url()).await.0);
    }
    let mut extra = Peer::connect(&d.ws_url()).await;
    assert_eq!(
        extra.until_closed(Duration::from_secs(10)).await,
        Ended::Close(3504, "connection limit".into())
    );
    // The 100 are still served.
    for p in peers.iter_mut().take(3) {
        p.send(r#"{"id":2,"ping":{}}"#).await;
        assert_eq!(p.recv_non_ping().await["id"], 2);
    }
    // A freed slot is usable again (slots free once the closed connections' tasks end).
    drop(extra);
    drop(peers.pop());
    let mut attempts = 0;
    let mut again = loop {
        let mut p = Peer::connect(&d.ws_url()).await;
        p.send(r#"{"id":1,"connect":{}}"#).await;
        match p.try_recv(Duration::from_secs(10)).await {
            Ok(r) if r["connect"]["client"].is_string() => break p,
            other => {
                attempts += 1;
                assert!(attempts < 50, "slot never freed: {other:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    again.send(r#"{"id":2,"ping":{}}"#).await;
    assert_eq!(again.recv_non_ping().await["id"], 2);
}

#[tokio::test]
async fn max_connections_minus_one_is_unlimited() {
    let d = Daemon::start(&[("EDGELIVE_LIVE_MAX_CONNECTIONS", "-1")]);
    let mut peers = Vec::new();
    for _ in 0..150 {
        peers.push(Peer::connected(&d.ws_url()).await.0);
    }
    let last = peers.last_mut().unwrap();
    last.send(r#"{"id":2,"ping":{}}"#).await;
    assert_eq!(last.recv_non_ping().await["id"], 2);
}

#[tokio::test]
async fn max_connections_zero_disables_the_websocket_endpoints() {
    let d = Daemon::start(&[("EDGELIVE_LIVE_MAX_CONNECTIONS", "0")]);
    for path in ["/api/live/ws", "/connection/websocket"] {
        match tokio_tungstenite::connect_async(format!("ws://{}{path}", d.addr)).await {
            Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 404),
            other => panic!("expected 404, got {:?}", other.map(|_| ())),
        }
    }
    assert_eq!(http(d.addr, "GET", "/api/health", &[], b"").0, 200);
}

async fn upgrade_with_origin(d: &Daemon, origin: &str) -> Result<(), u16> {
    let mut req = d.ws_url().into_client_request().unwrap();
    req.headers_mut().insert("Origin", origin.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => Ok(()),
        Err(tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn origins_are_checked_with_grafanas_rules() {
    let d = Daemon::start(&[("EDGELIVE_LIVE_ALLOWED_ORIGINS", "https://*.example.com")]);
    assert_eq!(
        upgrade_with_origin(&d, &format!("http://{}", d.addr)).await,
        Ok(())
    );
    assert_eq!(
        upgrade_with_origin(&d, "https://dash.example.com").await,
        Ok(())
    );
    assert_eq!(
        upgrade_with_origin(&d, "https://evil.example.org").await,
        Err(403)
    );
    assert_eq!(upgrade_with_origin(&d, "null").await, Err(403));
    let d = Daemon::start(&[]);
    assert_eq!(
        upgrade_with_origin(&d, "http://192.0.2.1:3000").await,
        Err(403)
    );
}

#[tokio::test]
async fn a_message_over_the_size_limit_closes_1009_even_when_fragmented() {
    let d = Daemon::start(&[("EDGELIVE_LIVE_MESSAGE_SIZE_LIMIT", "1024")]);
    // One frame over the limit.
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    let big = format!(
        r#"{{"id":2,"publish":{{"channel":"grafana/broadcast/x","data":"{}"}}}}"#,
        "x".repeat(1100)
    );
    let _ = p.send_raw(Message::text(big)).await;
    assert_eq!(
        p.until_closed(Duration::from_secs(10)).await,
        Ended::Close(1009, "message too big".into())
    );

    // Fragments of 400 bytes each: every frame is small, the message is not.
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    let chunk = vec![b' '; 400];
    let first = Frame::message(chunk.clone(), OpCode::Data(Data::Text), false);
    p.send_raw(Message::Frame(first)).await.unwrap();
    // Fragments keep coming after the one over the limit: the server drops them while its
    // close is on the way, so the client sees the close and not a reset.
    for _ in 0..20 {
        let cont = Frame::message(chunk.clone(), OpCode::Data(Data::Continue), false);
        if p.send_raw(Message::Frame(cont)).await.is_err() {
            break;
        }
    }
    assert_eq!(
        p.until_closed(Duration::from_secs(10)).await,
        Ended::Close(1009, "message too big".into())
    );

    // A fragmented message under the limit works.
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    let msg = br#"{"id":5,"ping":{}}"#;
    let (a, b) = msg.split_at(7);
    p.send_raw(Message::Frame(Frame::message(
        a.to_vec(),
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    p.send_raw(Message::Frame(Frame::message(
        b.to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .unwrap();
    assert_eq!(p.recv().await, json!({"id":5,"ping":{}}));
}

#[tokio::test]
async fn a_slow_client_is_closed_with_3008_and_the_others_get_everything() {
    let d = Daemon::start(&[("EDGELIVE_LIVE_CLIENT_QUEUE_MAX_SIZE", "65536")]);
    let ch = "grafana/broadcast/flood";
    let sub = |id: u32| format!(r#"{{"id":{id},"subscribe":{{"channel":"{ch}"}}}}"#);
    let (mut slow, _) = Peer::connected(&d.ws_url()).await;
    slow.send(&sub(2)).await;
    let (mut fast, _) = Peer::connected(&d.ws_url()).await;
    fast.send(&sub(2)).await;
    assert_eq!(fast.recv().await["id"], 2);
    // The fast client reads all the time; the slow one never reads, so its socket buffers
    // and then its queue fill. The publisher waits for each reply.
    let n: u64 = 1500;
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < n {
            let m = fast.recv_non_ping().await;
            if let Some(i) = m["push"]["pub"]["data"]["i"].as_u64() {
                assert_eq!(i, got, "in order, none missing");
                got += 1;
            }
        }
    });
    let (mut publisher, _) = Peer::connected(&d.ws_url()).await;
    let payload = "p".repeat(8000);
    for i in 0..n {
        publisher
            .send(&format!(
                r#"{{"id":{},"publish":{{"channel":"{ch}","data":{{"i":{i},"p":"{payload}"}}}}}}"#,
                i + 2
            ))
            .await;
        assert_eq!(publisher.recv_non_ping().await["id"], i + 2);
    }
    tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("fast client got everything")
        .unwrap();
    // The slow client was cut: once it reads, it finds the end of its connection.
    let end = slow.until_closed(Duration::from_secs(30)).await;
    assert!(
        matches!(&end, Ended::Eof) || end == Ended::Close(3008, "slow".into()),
        "{end:?}"
    );
    let (status, metrics) = http(d.addr, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("edgelive_slow_disconnects_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_publication_beyond_the_queue_limit_gets_close_3008_slow() {
    // With the smallest queue allowed, one publication larger than it overflows the queue
    // while the writer is idle, so the close frame itself can be seen.
    let d = Daemon::start(&[("EDGELIVE_LIVE_CLIENT_QUEUE_MAX_SIZE", "1024")]);
    let (mut slow, _) = Peer::connected(&d.ws_url()).await;
    slow.send(r#"{"id":2,"subscribe":{"channel":"grafana/broadcast/b"}}"#)
        .await;
    assert_eq!(slow.recv().await["id"], 2);
    let (mut publisher, _) = Peer::connected(&d.ws_url()).await;
    let big = format!(
        r#"{{"id":2,"publish":{{"channel":"grafana/broadcast/b","data":"{}"}}}}"#,
        "d".repeat(1500)
    );
    publisher.send(&big).await;
    assert_eq!(
        publisher.recv_non_ping().await,
        json!({"id":2,"publish":{}})
    );
    assert_eq!(
        slow.until_closed(Duration::from_secs(10)).await,
        Ended::Close(3008, "slow".into())
    );
}

#[tokio::test]
async fn sigterm_closes_every_client_with_3001_and_exits_0() {
    let mut d = Daemon::start(&[]);
    let mut peers = Vec::new();
    for _ in 0..5 {
        let (mut p, _) = Peer::connected(&d.ws_url()).await;
        p.send(r#"{"id":2,"subscribe":{"channel":"grafana/broadcast/x"}}"#)
            .await;
        peers.push(p);
    }
    let waiter = tokio::task::spawn_blocking(move || {
        let r = d.terminate(Duration::from_secs(10));
        (r, d)
    });
    for p in &mut peers {
        assert_eq!(
            p.until_closed(Duration::from_secs(10)).await,
            Ended::Close(3001, "shutdown".into())
        );
    }
    let ((status, took), d) = waiter.await.unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(d.logged("SIGTERM"), "{}", d.log_text());
}

#[test]
fn check_config_exits_0_or_78_with_every_problem() {
    let bin = env!("CARGO_BIN_EXE_edgelive");
    // The packaged file requires the credentials the package makes at install
    // (/etc/edgelive/credentials): here a copy names a temp dir instead. Without the files it
    // is refused, naming them; with them it passes.
    let creds = tempfile::tempdir().unwrap();
    let packaged = creds.path().join("edgelive.toml");
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/edgelive.toml"))
            .unwrap();
    let here = format!("{}/", creds.path().display());
    std::fs::write(&packaged, text.replace("/etc/edgelive/credentials/", &here)).unwrap();
    let out = Command::new(bin)
        .arg("check-config")
        .arg(&packaged)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin.token") && err.contains("jwt.key"),
        "{err}"
    );
    std::fs::write(
        creds.path().join("admin.token"),
        "an-admin-token-0123456789\n",
    )
    .unwrap();
    std::fs::write(creds.path().join("jwt.key"), "a-jwt-key-0123456789abcdef").unwrap();
    let out = Command::new(bin)
        .arg("check-config")
        .arg(&packaged)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[live]\nmax_connections = -7\nmystery = true\n[server]\nlisten = \"x\"\n",
    )
    .unwrap();
    let out = Command::new(bin)
        .args(["check-config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mystery") && err.contains("listen"), "{err}");

    // The daemon refuses to start on it with the same code; bad flags are usage errors.
    let out = Command::new(bin)
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let out = Command::new(bin)
        .args(["--listen", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = Command::new(bin).args(["--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[tokio::test]
async fn environment_overrides_reach_the_protocol() {
    let d = Daemon::start(&[
        ("EDGELIVE_LIVE_PING_INTERVAL", "7s"),
        ("EDGELIVE_LIVE_CLIENT_CHANNEL_LIMIT", "1"),
    ]);
    let mut p = Peer::connect(&d.ws_url()).await;
    p.send(r#"{"id":1,"connect":{}}"#).await;
    assert_eq!(p.recv().await["connect"]["ping"], 7);
    p.send("{\"id\":2,\"subscribe\":{\"channel\":\"stream/a/b\"}}\n{\"id\":3,\"subscribe\":{\"channel\":\"stream/a/c\"}}").await;
    // Replies match commands by id; they need not come in order.
    let (a, b) = (p.recv().await, p.recv().await);
    let (ok, err) = if a["id"] == 2 { (a, b) } else { (b, a) };
    assert!(ok["subscribe"].is_object(), "{ok}");
    assert_eq!(err["id"], 3);
    assert_eq!(err["error"]["code"], 106);
}

#[test]
fn unrelated_edgelive_variables_do_not_stop_the_daemon() {
    // Someone's EDGELIVE_HOME, a test's setting and the names the daemon gives exec handler
    // programs are not config sections: ignored, while a real override still applies.
    let d = Daemon::start(&[
        ("EDGELIVE_HOME", "/x"),
        ("EDGELIVE_CONFORMANCE_DIR", "/y"),
        ("EDGELIVE_CHANNEL", "plugin/a/b"),
        ("EDGELIVE_LIVE_MAX_CONNECTIONS", "0"),
    ]);
    let (status, _) = http(d.addr, "GET", "/api/health", &[], b"");
    assert_eq!(status, 200);
    // max_connections = 0 turns the WebSocket endpoint off.
    let (status, _) = http(d.addr, "GET", "/api/live/ws", &[], b"");
    assert_eq!(status, 404);
}

#[test]
fn an_unknown_key_of_a_known_section_in_the_environment_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgelive"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("EDGELIVE_")) {
        cmd.env_remove(k);
    }
    let out = cmd
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("EDGELIVE_LIVE_NO_SUCH_KEY", "1")
        .env("EDGELIVE_HOME", "/x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no_such_key"), "{err}");
    assert!(!err.contains("[home]"), "{err}");
}
