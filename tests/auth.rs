//! Access control against the real daemon: protected mode, API tokens and roles, connection
//! JWTs (expired, forged, refreshed, minted by `edgelive token`), per-channel rules.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{call, http, Daemon, Ended, Peer};
use edgelive::auth::jwt::{self, Claims};
use serde_json::json;

const SECRET: &str = "test-jwt-secret-0123456789abcdef";
const VIEWER: &str = "viewer-token-0123456789";
const PUBLISHER: &str = "publisher-token-0123456789";
const ADMIN: &str = "admin-token-0123456789abc";

/// A daemon with a JWT secret, three API tokens (inline, from a file, as a SHA-256) and a rule.
/// Returned with the directory of its token file, which `edgelive token` reads again.
fn secured() -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("publisher.token");
    std::fs::write(&token_file, format!("{PUBLISHER}\n")).unwrap();
    let toml = format!(
        r#"
[auth]
jwt_hmac_secret = "{SECRET}"
expired_close_delay = "1s"

[[auth.tokens]]
name = "dash"
role = "viewer"
token = "{VIEWER}"

[[auth.tokens]]
name = "telegraf"
role = "publisher"
token_file = "{}"

[[auth.tokens]]
name = "ops"
role = "admin"
token_sha256 = "{}"

[[auth.rules]]
pattern = "stream/factory-*/**"
subscribe = "publisher"
publish = "admin"
"#,
        token_file.display(),
        edgelive::auth::sha256_hex(ADMIN)
    );
    (Daemon::start_with_config(&toml, &[]), dir)
}

fn bearer(token: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {token}"))
}

fn token(claims: Claims) -> String {
    jwt::sign(&claims, SECRET.as_bytes())
}

fn now() -> f64 {
    edgelive::auth::now()
}

/// The first global, non-loopback IPv4 address of this machine.
fn lan_address() -> std::net::Ipv4Addr {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .expect("the ip command (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| {
            panic!("this test needs a non-loopback IPv4 address; `ip addr` shows none:\n{text}")
        })
}

#[tokio::test]
async fn protected_mode_serves_loopback_and_refuses_other_hosts_with_403() {
    let d = Daemon::start_with_config_on("0.0.0.0:0", "", &[]);
    let lan = std::net::SocketAddr::from((lan_address(), d.addr.port()));
    let lo = std::net::SocketAddr::from(([127, 0, 0, 1], d.addr.port()));
    // Liveness answers a monitoring host on the LAN too (it reveals nothing); the rest not.
    let (status, body) = http(lan, "GET", "/api/health", &[], b"");
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"status":"ok","access":"loopback-only"}"#)
    );
    let (_, body) = http(lo, "GET", "/api/health", &[], b"");
    assert_eq!(body, r#"{"status":"ok","access":"granted"}"#);
    for path in ["/metrics", "/api/live/list"] {
        let (status, body) = http(lan, "GET", path, &[], b"");
        assert_eq!(status, 403, "{path}: {body}");
        assert!(
            body.contains("[[auth.tokens]]") && body.contains("jwt_hmac_secret"),
            "{body}"
        );
        assert_eq!(http(lo, "GET", path, &[], b"").0, 200, "{path}");
    }
    let (status, _) = http(lan, "POST", "/api/live/push/s", &[], b"cpu v=1");
    assert_eq!(status, 403);
    assert_eq!(http(lo, "POST", "/api/live/push/s", &[], b"cpu v=1").0, 200);
    let refused = tokio_tungstenite::connect_async(format!("ws://{lan}/api/live/ws")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("expected 403 at the upgrade, got {other:?}"),
    }
    let (_, client) = Peer::connected(&format!("ws://{lo}/api/live/ws")).await;
    assert!(!client.is_empty());
}

#[test]
fn http_endpoints_need_credentials_once_configured() {
    let (d, _tokens) = secured();
    let a = d.addr;
    assert_eq!(http(a, "GET", "/api/health", &[], b"").0, 200);
    // Liveness whatever credentials a probe carries.
    let (k, v) = bearer("a-stale-probe-token");
    assert_eq!(http(a, "GET", "/api/health", &[(k, &v)], b"").0, 200);
    for (method, path, body) in [
        ("GET", "/metrics", &b""[..]),
        ("GET", "/api/live/list", b""),
        ("POST", "/api/live/push/s", b"cpu v=1"),
        (
            "POST",
            "/api/live/publish",
            br#"{"channel":"grafana/broadcast/x","data":{}}"#,
        ),
    ] {
        let (status, text) = http(a, method, path, &[], body);
        assert_eq!(status, 401, "{path} without credentials: {text}");
        assert!(text.contains("credentials required"), "{text}");
        let (k, v) = bearer("not-a-configured-token");
        let (status, text) = http(a, method, path, &[(k, &v)], body);
        assert_eq!(status, 401, "{path} with a bad token: {text}");
        assert!(text.contains("invalid token"), "{text}");
    }
    let (k, v) = bearer(VIEWER);
    assert_eq!(http(a, "GET", "/api/live/list", &[(k, &v)], b"").0, 200);
    assert_eq!(http(a, "GET", "/metrics", &[(k, &v)], b"").0, 200);
}

#[test]
fn a_viewer_token_cannot_push_or_publish() {
    let (d, _tokens) = secured();
    let a = d.addr;
    let (k, v) = bearer(VIEWER);
    let (status, body) = http(a, "POST", "/api/live/push/s", &[(k, &v)], b"cpu v=1");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("needs the publisher role"), "{body}");
    let publish = br#"{"channel":"grafana/broadcast/x","data":{"a":1}}"#;
    assert_eq!(
        http(a, "POST", "/api/live/publish", &[(k, &v)], publish).0,
        403
    );
    // The publisher's token comes from a file, the admin's is configured as a SHA-256.
    let (k, v) = bearer(PUBLISHER);
    assert_eq!(
        http(a, "POST", "/api/live/push/s", &[(k, &v)], b"cpu v=1").0,
        200
    );
    assert_eq!(
        http(a, "POST", "/api/live/publish", &[(k, &v)], publish).0,
        200
    );
    let path = format!("/api/live/push/s?auth_token={ADMIN}");
    assert_eq!(http(a, "POST", &path, &[], b"cpu v=2").0, 200);
}

#[tokio::test]
async fn a_websocket_client_without_credentials_is_refused_never_served_anonymously() {
    let (d, _tokens) = secured();
    let mut p = Peer::connect(&d.ws_url()).await;
    p.send(r#"{"id":1,"connect":{}}"#).await;
    let r = p.recv().await;
    assert_eq!(r["error"]["code"], 101, "{r}");
    assert_eq!(
        p.until_closed(Duration::from_secs(5)).await,
        Ended::Close(3507, "permission denied".into())
    );
    // An unknown API token in the connect command is an invalid token.
    let mut p = Peer::connect(&d.ws_url()).await;
    p.send(r#"{"id":1,"connect":{"token":"nope-nope-nope-nope"}}"#)
        .await;
    assert_eq!(
        p.until_closed(Duration::from_secs(5)).await,
        Ended::Close(3500, "invalid token".into())
    );
}

#[tokio::test]
async fn an_expired_jwt_gets_109_and_a_forged_one_3500() {
    let (d, _tokens) = secured();
    let expired = token(Claims {
        sub: "ann".into(),
        exp: Some(now() - 10.0),
        ..Default::default()
    });
    let mut p = Peer::connect(&d.ws_url()).await;
    let r = call(&mut p, 1, "connect", json!({ "token": expired })).await;
    assert_eq!(r["error"]["code"], 109, "{r}");
    assert_eq!(r["error"]["message"], "token expired");
    let forged = jwt::sign(
        &Claims {
            sub: "ann".into(),
            role: Some(edgelive::auth::Role::Admin),
            ..Default::default()
        },
        b"guessed-secret-0123456789abcdef",
    );
    let mut p = Peer::connect(&d.ws_url()).await;
    p.send(&json!({"id": 1, "connect": {"token": forged}}).to_string())
        .await;
    assert_eq!(
        p.until_closed(Duration::from_secs(5)).await,
        Ended::Close(3500, "invalid token".into())
    );
}

#[tokio::test]
async fn credentials_on_the_url_the_header_or_in_connect_authenticate_the_websocket() {
    let (d, _tokens) = secured();
    let publish = json!({"channel": "grafana/broadcast/x", "data": {"v": 1}});
    // Grafana's front end: ?auth_token= on the URL.
    let url = format!("{}?auth_token={VIEWER}", d.ws_url());
    let (mut p, _) = Peer::connected(&url).await;
    let r = call(&mut p, 2, "publish", publish.clone()).await;
    assert_eq!(r["error"]["code"], 103, "a viewer cannot publish: {r}");
    // Authorization header (centrifuge-python and Node clients can send one).
    let (k, v) = bearer(PUBLISHER);
    let mut p = Peer::connect_with_headers(&d.ws_url(), &[(k, &v)]).await;
    call(&mut p, 1, "connect", json!({})).await;
    let r = call(&mut p, 2, "publish", publish.clone()).await;
    assert_eq!(r["publish"], json!({}), "{r}");
    // A JWT in the connect command: user and info show in presence.
    let t = token(Claims {
        sub: "ann".into(),
        exp: Some(now() + 600.0),
        info: Some(edgelive::json::CompactJson::from_string(r#"{"desk":4}"#.into()).unwrap()),
        ..Default::default()
    });
    let mut p = Peer::connect(&d.ws_url()).await;
    let r = call(&mut p, 1, "connect", json!({ "token": t })).await;
    assert_eq!(r["connect"]["expires"], true, "{r}");
    let ttl = r["connect"]["ttl"].as_u64().unwrap();
    assert!((590..=600).contains(&ttl), "{r}");
    common::subscribed(
        &call(
            &mut p,
            2,
            "subscribe",
            json!({"channel": "grafana/broadcast/x"}),
        )
        .await,
        2,
    );
    let r = call(
        &mut p,
        3,
        "presence",
        json!({"channel": "grafana/broadcast/x"}),
    )
    .await;
    let entry = r["presence"]["presence"]
        .as_object()
        .and_then(|m| m.values().next().cloned())
        .expect("one presence entry");
    assert_eq!(entry["user"], "ann", "{r}");
    assert_eq!(entry["conn_info"], json!({"desk": 4}), "{r}");
}

#[tokio::test]
async fn rules_narrow_who_may_subscribe_push_and_read_history() {
    let (d, _tokens) = secured();
    let ch = "stream/factory-1/press";
    let (mut viewer, _) = Peer::connected(&format!("{}?auth_token={VIEWER}", d.ws_url())).await;
    for (id, cmd) in [(2, "subscribe"), (3, "history"), (4, "presence")] {
        let r = call(&mut viewer, id, cmd, json!({ "channel": ch })).await;
        assert_eq!(r["error"]["code"], 103, "{cmd}: {r}");
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .contains("needs the publisher role"),
            "{r}"
        );
    }
    let (mut watcher, _) = Peer::connected(&format!("{}?auth_token={PUBLISHER}", d.ws_url())).await;
    common::subscribed(
        &call(&mut watcher, 2, "subscribe", json!({ "channel": ch })).await,
        2,
    );
    let (k, v) = bearer(PUBLISHER);
    let (status, body) = http(
        d.addr,
        "POST",
        "/api/live/push/factory-1",
        &[(k, &v)],
        b"press p=1",
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("needs the admin role"), "{body}");
    // A push that would touch a ruled channel publishes nothing at all.
    let (status, _) = http(
        d.addr,
        "POST",
        "/api/live/push/factory-1",
        &[(k, &v)],
        b"other o=1\npress p=1",
    );
    assert_eq!(status, 403);
    let (k, v) = bearer(ADMIN);
    assert_eq!(
        http(
            d.addr,
            "POST",
            "/api/live/push/factory-1",
            &[(k, &v)],
            b"press p=7"
        )
        .0,
        200
    );
    let got = watcher.recv_non_ping().await;
    assert_eq!(got["push"]["channel"], ch, "{got}");
    assert!(got.to_string().contains("[7]"), "{got}");
}

#[tokio::test]
async fn a_jwt_connection_is_closed_3005_when_not_refreshed_and_stays_when_refreshed() {
    let (d, _tokens) = secured();
    let short = |sub: &str| {
        token(Claims {
            sub: sub.into(),
            exp: Some(now() + 1.0),
            ..Default::default()
        })
    };
    let mut lazy = Peer::connect(&d.ws_url()).await;
    let r = call(&mut lazy, 1, "connect", json!({ "token": short("ann") })).await;
    assert_eq!(r["connect"]["ttl"], 1, "{r}");
    let mut diligent = Peer::connect(&d.ws_url()).await;
    call(
        &mut diligent,
        1,
        "connect",
        json!({ "token": short("ann") }),
    )
    .await;
    let fresh = token(Claims {
        sub: "ann".into(),
        exp: Some(now() + 3600.0),
        ..Default::default()
    });
    let r = call(&mut diligent, 2, "refresh", json!({ "token": fresh })).await;
    assert_eq!(r["refresh"]["expires"], true, "{r}");
    assert!(r["refresh"]["client"].is_string(), "{r}");
    // Expiry (1 s) plus the configured grace (1 s): the lazy one goes, the refreshed one stays.
    assert_eq!(
        lazy.until_closed(Duration::from_secs(10)).await,
        Ended::Close(3005, "connection expired".into())
    );
    let r = call(&mut diligent, 3, "ping", json!({})).await;
    assert_eq!(r["ping"], json!({}), "{r}");
    // Refreshing as somebody else is an invalid token.
    let other = token(Claims {
        sub: "bob".into(),
        ..Default::default()
    });
    diligent
        .send(&json!({"id": 4, "refresh": {"token": other}}).to_string())
        .await;
    assert_eq!(
        diligent.until_closed(Duration::from_secs(5)).await,
        Ended::Close(3500, "invalid token".into())
    );
}

#[tokio::test]
async fn edgelive_token_mints_a_jwt_the_daemon_accepts() {
    let (d, _tokens) = secured();
    let config = d.dir().join("edgelive.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_edgelive"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "token",
            "--sub",
            "kiosk",
        ])
        .args([
            "--ttl",
            "2h",
            "--role",
            "publisher",
            "--info",
            r#"{"room":"lab"}"#,
        ])
        .args(["--channel", "grafana/broadcast/kiosk"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let minted = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let claims = jwt::verify(&minted, SECRET.as_bytes(), now()).unwrap();
    assert_eq!(claims.sub, "kiosk");
    assert_eq!(claims.role, Some(edgelive::auth::Role::Publisher));
    let ttl = claims.exp.unwrap() - now();
    assert!((7100.0..=7200.0).contains(&ttl), "{ttl}");
    // The token's channel is a server-side subscription: a subscribe push after connect.
    let mut p = Peer::connect(&d.ws_url()).await;
    let r = call(&mut p, 1, "connect", json!({ "token": minted })).await;
    assert_eq!(r["connect"]["expires"], true, "{r}");
    let push = p.recv_non_ping().await;
    assert_eq!(push["push"]["channel"], "grafana/broadcast/kiosk", "{push}");
    assert_eq!(push["push"]["subscribe"]["recoverable"], true, "{push}");
    let r = call(
        &mut p,
        2,
        "publish",
        json!({"channel": "grafana/broadcast/kiosk", "data": {"hello": 1}}),
    )
    .await;
    assert_eq!(r["publish"], json!({}), "{r}");
    let mut bad = Command::new(env!("CARGO_BIN_EXE_edgelive"))
        .args(["token", "--sub", "x", "--role", "root"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(64), "unknown role is a usage error");
    bad = Command::new(env!("CARGO_BIN_EXE_edgelive"))
        .args(["token", "--sub", "x"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(78), "no secret configured");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("jwt_hmac_secret"));
}

#[tokio::test]
async fn the_push_websocket_needs_a_publisher() {
    let (d, _tokens) = secured();
    let url = format!("ws://{}/api/live/push/s?auth_token={VIEWER}", d.addr);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("expected 403 at the upgrade, got {other:?}"),
    }
    let url = format!("ws://{}/api/live/push/s", d.addr);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected 401 at the upgrade, got {other:?}"),
    }
    let url = format!("ws://{}/api/live/push/s?auth_token={PUBLISHER}", d.addr);
    assert!(tokio_tungstenite::connect_async(url).await.is_ok());
}
