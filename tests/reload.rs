//! SIGHUP reloads the config file: what can change live takes effect without dropping an
//! authorised connection, revoked credentials close theirs, a broken file changes nothing, and
//! systemd hears `RELOADING=1` (with `MONOTONIC_USEC=`) and then `STATUS=` and `READY=1`.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use common::{call, Daemon, Ended, Peer};
use serde_json::json;

const ADMIN: &str = "admin-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";
const OLD_PUB: &str = "old-publisher-token-0123456789";
const NEW_PUB: &str = "new-publisher-token-0123456789";

/// The config, with what the test changes between reloads.
fn config(
    dir: &Path,
    origin: &str,
    max_body: usize,
    rule: &str,
    level: &str,
    max_read: usize,
) -> String {
    format!(
        r#"
[auth]
jwt_hmac_secret_file = "{dir}/jwt.key"
[[auth.tokens]]
name = "admin"
role = "admin"
token = "{ADMIN}"
[[auth.tokens]]
name = "watcher"
role = "viewer"
token = "{VIEWER}"
[[auth.tokens]]
name = "pub"
role = "publisher"
token_file = "{dir}/pub.token"
{rule}
[live]
allowed_origins = ["{origin}"]
[push]
max_body_size = {max_body}
[storage]
max_read = {max_read}
[log]
level = "{level}"
"#,
        dir = dir.display()
    )
}

/// Notifications the daemon sent, one datagram each, in order.
fn notifications(sock: &UnixDatagram) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = sock.recv(&mut buf) {
        out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    out
}

/// Waits (bounded) for a notification containing `needle`; returns every one seen until then.
fn wait_for(sock: &UnixDatagram, needle: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.iter().any(|m: &String| m.contains(needle)) {
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no {needle:?} in time ({e}); saw {seen:?}"));
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    seen
}

async fn connect(d: &Daemon, token: &str) -> Peer {
    let mut p = Peer::connect(&d.ws_url()).await;
    let r = call(&mut p, 1, "connect", json!({ "token": token })).await;
    assert!(r.get("connect").is_some(), "{r}");
    p
}

async fn origin_allowed(d: &Daemon, origin: &str) -> bool {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = d.ws_url().into_client_request().unwrap();
    req.headers_mut().insert("Origin", origin.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => true,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 403 => false,
        Err(e) => panic!("{e}"),
    }
}

fn push(d: &Daemon, token: &str, body: &[u8]) -> u16 {
    let auth = format!("Bearer {token}");
    common::http(
        d.addr,
        "POST",
        "/api/live/push/lab",
        &[("Authorization", &auth)],
        body,
    )
    .0
}

#[tokio::test]
async fn sighup_applies_credentials_rules_origins_limits_and_log_level_live() {
    let creds = tempfile::tempdir().unwrap();
    let dir = creds.path();
    std::fs::write(dir.join("jwt.key"), "a-jwt-key-0123456789abcdef").unwrap();
    std::fs::write(dir.join("pub.token"), OLD_PUB).unwrap();
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let before = config(dir, "https://a.example", 1024, "", "info", 1000);
    // RUST_LOG (which the test harness sets) would win over [log] level.
    let env = [
        ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
        ("RUST_LOG", ""),
    ];
    let d = Daemon::start_with_config(&before, &env);
    wait_for(&sock, "READY=1");
    let config_path = d.dir().join("edgelive.toml");

    // A JWT viewer (key unchanged by the reload), a token viewer subscribed where the new rules
    // will forbid it, a publisher whose token file will change, and a viewer elsewhere.
    let jwt = std::process::Command::new(env!("CARGO_BIN_EXE_edgelive"))
        .args(["token", "--config"])
        .arg(&config_path)
        .args(["--sub", "ann", "--role", "viewer"])
        .output()
        .unwrap();
    let jwt = String::from_utf8(jwt.stdout).unwrap().trim().to_owned();
    let mut ann = connect(&d, &jwt).await;
    let mut watcher = connect(&d, VIEWER).await;
    let r = call(
        &mut watcher,
        2,
        "subscribe",
        json!({"channel": "stream/secret/x"}),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    let mut publisher = connect(&d, OLD_PUB).await;
    let mut bystander = connect(&d, VIEWER).await;
    let r = call(
        &mut bystander,
        2,
        "subscribe",
        json!({"channel": "stream/lab/room"}),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");

    assert!(!origin_allowed(&d, "https://b.example").await);
    let big = format!("room v=1,pad=\"{}\"", "x".repeat(2000));
    assert_eq!(push(&d, OLD_PUB, big.as_bytes()), 413);
    assert!(!d.log_text().contains("DEBUG"));

    // The new file: the publisher's token replaced, a rule that needs publisher to watch
    // stream/secret, another origin, a larger body, debug logs, and a key that needs a restart.
    std::fs::write(dir.join("pub.token"), NEW_PUB).unwrap();
    let rule = "[[auth.rules]]\npattern = \"stream/secret/**\"\nsubscribe = \"publisher\"\n";
    let after = config(dir, "https://b.example", 100_000, rule, "debug", 7);
    std::fs::write(&config_path, &after).unwrap();
    notifications_drain(&sock);
    d.hangup();
    let said = wait_for(&sock, "READY=1");
    let reloading = said
        .iter()
        .position(|m| m.contains("RELOADING=1"))
        .expect("RELOADING=1");
    assert!(said[reloading].contains("MONOTONIC_USEC="), "{said:?}");
    let ready = said.iter().position(|m| m.contains("READY=1")).unwrap();
    assert!(reloading < ready, "{said:?}");
    assert!(
        said[ready].contains("STATUS=config reloaded; needs a restart for [storage]"),
        "{said:?}"
    );

    // Revoked and denied connections are closed at the reload, with their reasons.
    assert_eq!(
        publisher.until_closed(Duration::from_secs(10)).await,
        Ended::Close(3500, "token revoked".into())
    );
    assert_eq!(
        watcher.until_closed(Duration::from_secs(10)).await,
        Ended::Close(3507, "permission denied".into())
    );
    // The authorised ones stay and keep working.
    assert_eq!(
        push(&d, NEW_PUB, big.as_bytes()),
        200,
        "the new token and the larger body"
    );
    let (ch, _) = next_publication(&mut bystander).await;
    assert_eq!(ch, "stream/lab/room");
    let r = call(
        &mut ann,
        3,
        "subscribe",
        json!({"channel": "stream/lab/room"}),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    let r = call(
        &mut ann,
        4,
        "subscribe",
        json!({"channel": "stream/secret/y"}),
    )
    .await;
    assert_eq!(
        r["error"]["code"], 103,
        "the new rule applies to new subscribes: {r}"
    );
    assert_eq!(push(&d, OLD_PUB, b"room v=2"), 401);
    assert!(origin_allowed(&d, "https://b.example").await);
    assert!(!origin_allowed(&d, "https://a.example").await);
    assert!(d.logged("DEBUG"), "the debug level is in force");
    assert!(
        d.logged("takes effect at the next restart"),
        "{}",
        d.log_text()
    );

    // A broken file: every problem logged, nothing changes, systemd is told.
    let broken = after.replace("[live]", "[live]\nno_such_key = 1") + "\nnonsense = [\n";
    std::fs::write(&config_path, broken).unwrap();
    notifications_drain(&sock);
    d.hangup();
    let said = wait_for(&sock, "READY=1");
    assert!(
        said.last()
            .unwrap()
            .contains("STATUS=config reload refused"),
        "{said:?}"
    );
    assert!(d.logged("config reload refused"));
    assert_eq!(push(&d, NEW_PUB, b"room v=3"), 200);
    assert!(origin_allowed(&d, "https://b.example").await);
    let r = call(
        &mut ann,
        5,
        "presence_stats",
        json!({"channel": "stream/lab/room"}),
    )
    .await;
    assert!(
        r.get("error").is_some() || r.get("presence_stats").is_some(),
        "{r}"
    );
    drop((ann, bystander));
}

/// Empties the socket's queue of notifications already sent.
fn notifications_drain(sock: &UnixDatagram) {
    sock.set_nonblocking(true).unwrap();
    let _ = notifications(sock);
    sock.set_nonblocking(false).unwrap();
}

async fn next_publication(p: &mut Peer) -> (String, serde_json::Value) {
    loop {
        let v = p.recv_non_ping().await;
        if let Some(push) = v.get("push") {
            if push.get("pub").is_some() {
                return (
                    push["channel"].as_str().unwrap().to_owned(),
                    push["pub"].clone(),
                );
            }
        }
    }
}

#[tokio::test]
async fn sighup_with_the_connection_limit_lowered_refuses_only_new_connections() {
    let d = Daemon::start_with_config("[live]\nmax_connections = 100\n", &[]);
    let path = d.dir().join("edgelive.toml");
    let (mut a, _) = Peer::connected(&d.ws_url()).await;
    let (mut b, _) = Peer::connected(&d.ws_url()).await;
    std::fs::write(&path, "[live]\nmax_connections = 2\n").unwrap();
    d.hangup();
    assert!(d.logged("config reloaded"));
    // Both stay; the third is refused as over the limit.
    let mut c = Peer::connect(&d.ws_url()).await;
    c.send(r#"{"id":1,"connect":{}}"#).await;
    assert_eq!(
        c.until_closed(Duration::from_secs(10)).await,
        Ended::Close(3504, "connection limit".into())
    );
    let r = call(&mut a, 7, "presence_stats", json!({"channel": "x"})).await;
    assert!(r.get("id").is_some(), "{r}");
    let r = call(&mut b, 7, "presence_stats", json!({"channel": "x"})).await;
    assert!(r.get("id").is_some(), "{r}");
}

/// A program printing a point tagged with `src` every 100 ms.
fn program(dir: &Path, src: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("{src}.sh"));
    let text = format!("#!/bin/sh\nwhile :; do echo \"probe,src={src} x=1\"; sleep 0.1; done\n");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn exec_config(program: &Path, broadcast_history: u64) -> String {
    format!(
        r#"
[[history]]
pattern = "grafana/broadcast/**"
size = {broadcast_history}
ttl = "1h"

[[streams.exec]]
channel = "plugin/probe/*"
command = ["{}"]
"#,
        program.display()
    )
}

/// The next publication on `channel`, as text.
async fn next_on(p: &mut Peer, channel: &str) -> String {
    loop {
        let (ch, publication) = next_publication(p).await;
        if ch == channel {
            return publication.to_string();
        }
    }
}

#[tokio::test]
async fn sighup_gives_new_channels_the_new_exec_command_and_history_rules() {
    let dir = tempfile::tempdir().unwrap();
    let a = program(dir.path(), "a");
    let b = program(dir.path(), "b");
    let d = Daemon::start_with_config(&exec_config(&a, 10), &[]);
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    let r = call(
        &mut p,
        2,
        "subscribe",
        json!({"channel": "plugin/probe/one"}),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    assert!(next_on(&mut p, "plugin/probe/one").await.contains("src=a"));

    std::fs::write(d.dir().join("edgelive.toml"), exec_config(&b, 0)).unwrap();
    d.hangup();
    assert!(d.logged("config reloaded"), "{}", d.log_text());

    // A channel started after the reload runs the new command; the running one keeps its own.
    let r = call(
        &mut p,
        3,
        "subscribe",
        json!({"channel": "plugin/probe/two"}),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    assert!(next_on(&mut p, "plugin/probe/two").await.contains("src=b"));
    assert!(next_on(&mut p, "plugin/probe/one").await.contains("src=a"));

    // A channel created after the reload takes the new [[history]] rule: none.
    let (mut s, _) = Peer::connected(&d.ws_url()).await;
    let r = call(
        &mut s,
        4,
        "subscribe",
        json!({"channel": "grafana/broadcast/late"}),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    assert!(r["subscribe"].get("epoch").is_none(), "no history: {r}");
    let r = call(
        &mut p,
        5,
        "publish",
        json!({"channel": "grafana/broadcast/late", "data": {"n": 1}}),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    let publication = next_on(&mut s, "grafana/broadcast/late").await;
    assert!(!publication.contains("offset"), "{publication}");
}
