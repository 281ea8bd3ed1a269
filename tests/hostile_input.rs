//! Hostile and careless input, round two, against the real daemon: input that used to hurt
//! other clients or the whole daemon (a pretty-printed publish breaking every subscriber's
//! framing, a JWT `info` doing the same to joins and presence, extreme numbers, reads filling
//! the channel limit, one push line costing quadratic time, UDP bypassing the rules).
//!
//! `Peer` splits every frame on `\n` and parses each line, as centrifuge-js does, so a raw
//! newline inside a message fails these tests.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{call, http, subscribed_with_history, Daemon, Peer};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

const SECRET: &str = "test-jwt-secret-0123456789abcdef";
const PUBLISHER: &str = "publisher-token-0123456789";

/// An HS256 token over `payload` exactly as written (whitespace kept), as another issuer
/// could write it.
fn raw_jwt(payload: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(payload.as_bytes());
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{header}.{body}").as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{header}.{body}.{sig}")
}

fn secured(extra: &str) -> Daemon {
    let toml = format!(
        "[auth]\njwt_hmac_secret = \"{SECRET}\"\n\n[[auth.tokens]]\nname = \"telegraf\"\nrole = \"publisher\"\ntoken = \"{PUBLISHER}\"\n{extra}"
    );
    Daemon::start_with_config(&toml, &[])
}

#[tokio::test]
async fn a_pretty_printed_http_publish_reaches_subscribers_history_and_recovery_compact() {
    let d = Daemon::start(&[]);
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    let r = call(
        &mut p,
        2,
        "subscribe",
        json!({"channel": "grafana/broadcast/room"}),
    )
    .await;
    let sub = subscribed_with_history(&r, 2);
    let epoch = sub["epoch"].as_str().unwrap().to_owned();
    // What `curl -d @event.json` sends: a pretty-printed file with CRLF line ends.
    let body = "{\r\n  \"channel\": \"grafana/broadcast/room\",\r\n  \"data\": {\r\n    \"text\": \"two  spaces\",\r\n    \"n\": [ 1,\n 2 ]\r\n  }\r\n}\r\n";
    let (status, resp) = http(d.addr, "POST", "/api/live/publish", &[], body.as_bytes());
    assert_eq!((status, resp.as_str()), (200, "{}"));
    let want = json!({"text": "two  spaces", "n": [1, 2]});
    loop {
        let m = p.recv_non_ping().await;
        if m["push"]["pub"].is_object() {
            assert_eq!(m["push"]["pub"]["data"], want, "{m}");
            break;
        }
    }
    let h = call(
        &mut p,
        3,
        "history",
        json!({"channel": "grafana/broadcast/room", "limit": -1}),
    )
    .await;
    assert_eq!(h["history"]["publications"][0]["data"], want, "{h}");
    // A reconnecting client recovers it through the same encoder.
    let (mut q, _) = Peer::connected(&d.ws_url()).await;
    let r = call(
        &mut q,
        2,
        "subscribe",
        json!({"channel": "grafana/broadcast/room", "recover": true, "offset": 0, "epoch": epoch}),
    )
    .await;
    let res = subscribed_with_history(&r, 2);
    assert_eq!(res["recovered"], true, "{r}");
    assert_eq!(res["publications"][0]["data"], want, "{r}");
}

#[tokio::test]
async fn a_pretty_printed_jwt_info_is_compact_in_joins_presence_and_publications() {
    let d = secured("");
    let observer_token = raw_jwt(r#"{"sub":"observer"}"#);
    let (mut obs, _) = connect(&d, &observer_token).await;
    let r = call(
        &mut obs,
        2,
        "subscribe",
        json!({"channel": "grafana/broadcast/lab"}),
    )
    .await;
    subscribed_with_history(&r, 2);
    // Another issuer's token, its payload pretty-printed.
    let pretty = raw_jwt("{\n  \"sub\": \"kiosk\",\n  \"role\": \"publisher\",\n  \"info\": {\n    \"room\": \"lab 1\"\n  }\n}");
    let (mut k, _) = connect(&d, &pretty).await;
    let r = call(
        &mut k,
        2,
        "subscribe",
        json!({"channel": "grafana/broadcast/lab"}),
    )
    .await;
    subscribed_with_history(&r, 2);
    let join = loop {
        let m = obs.recv_non_ping().await;
        if m["push"]["join"]["info"]["user"] == "kiosk" {
            break m;
        }
    };
    assert_eq!(
        join["push"]["join"]["info"]["conn_info"],
        json!({"room": "lab 1"}),
        "{join}"
    );
    let r = call(
        &mut k,
        3,
        "publish",
        json!({"channel": "grafana/broadcast/lab", "data": {"v": 1}}),
    )
    .await;
    assert_eq!(r["publish"], json!({}), "{r}");
    let p = obs.recv_non_ping().await;
    assert_eq!(
        p["push"]["pub"]["info"]["conn_info"],
        json!({"room": "lab 1"}),
        "{p}"
    );
    let r = call(
        &mut obs,
        3,
        "presence",
        json!({"channel": "grafana/broadcast/lab"}),
    )
    .await;
    let entries = r["presence"]["presence"].as_object().unwrap();
    assert_eq!(entries.len(), 2, "{r}");
    // `edgelive token --info` with a pretty-printed file's contents mints a compact claim.
    let config = d.dir().join("edgelive.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgelive"))
        .args(["--config", config.to_str().unwrap(), "token", "--sub", "x"])
        .args(["--info", "{\n  \"room\": \"lab\"\n}\n"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap();
    let payload = token.trim().split('.').nth(1).unwrap();
    let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert!(payload.contains(r#""info":{"room":"lab"}"#), "{payload}");
}

async fn connect(d: &Daemon, token: &str) -> (Peer, Value) {
    let mut p = Peer::connect(&d.ws_url()).await;
    let r = call(&mut p, 1, "connect", json!({ "token": token })).await;
    assert!(r["connect"].is_object(), "{r}");
    (p, r)
}

#[tokio::test]
async fn a_never_expiring_jwt_and_extreme_offsets_keep_the_daemon_serving() {
    let d = secured("");
    // exp near i64::MAX: "never". It used to overflow the expiry timer (closed at once in
    // release builds, a panic in debug ones).
    let never = raw_jwt(r#"{"sub":"forever","role":"publisher","exp":9223372036854775807}"#);
    let (mut p, r) = connect(&d, &never).await;
    assert_eq!(r["connect"]["expires"], true, "{r}");
    let r = call(
        &mut p,
        2,
        "publish",
        json!({"channel": "grafana/broadcast/x", "data": {"n": 1}}),
    )
    .await;
    assert_eq!(r["publish"], json!({}), "{r}");
    let h = call(
        &mut p,
        3,
        "history",
        json!({"channel": "grafana/broadcast/x"}),
    )
    .await;
    let epoch = h["history"]["epoch"].as_str().unwrap().to_owned();
    // since.offset = u64::MAX used to panic the storage thread (debug) or wrap (release).
    for (id, body) in [
        (
            4,
            json!({"channel": "grafana/broadcast/x", "limit": -1, "since": {"offset": u64::MAX, "epoch": epoch}}),
        ),
        (
            5,
            json!({"channel": "grafana/broadcast/x", "limit": i32::MAX, "reverse": true, "since": {"offset": u64::MAX, "epoch": epoch}}),
        ),
        (
            6,
            json!({"channel": "grafana/broadcast/x", "limit": i32::MIN, "since": {"offset": u64::MAX}}),
        ),
    ] {
        let h = call(&mut p, id, "history", body).await;
        assert!(h["history"]["publications"].is_array(), "{h}");
    }
    let r = call(
        &mut p,
        7,
        "subscribe",
        json!({"channel": "grafana/broadcast/x", "recover": true, "offset": u64::MAX, "epoch": epoch}),
    )
    .await;
    let res = subscribed_with_history(&r, 7);
    assert_ne!(res["recovered"], true, "{r}");
    // Storage still answers, and the connection was not closed by a wrapped timer.
    let r = call(
        &mut p,
        8,
        "publish",
        json!({"channel": "grafana/broadcast/x", "data": {"n": 2}}),
    )
    .await;
    assert_eq!(r["publish"], json!({}), "{r}");
}

#[tokio::test]
async fn reads_create_no_durable_channel_state_so_a_viewer_cannot_fill_the_limit() {
    let d = Daemon::start(&[("EDGELIVE_STORAGE_MAX_CHANNELS", "4")]);
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    // Far more reads of distinct channels than the limit: subscribe/unsubscribe pairs and
    // history reads, on both history patterns.
    let mut id = 2;
    for i in 0..12 {
        for ch in [format!("grafana/broadcast/r{i}"), format!("stream/s/m{i}")] {
            let r = call(&mut p, id, "subscribe", json!({ "channel": ch })).await;
            let first = subscribed_with_history(&r, id)["epoch"].clone();
            id += 1;
            let r = call(&mut p, id, "unsubscribe", json!({ "channel": ch })).await;
            assert!(r["unsubscribe"].is_object(), "{r}");
            id += 1;
            let h = call(&mut p, id, "history", json!({ "channel": ch, "limit": 1 })).await;
            // A channel without publications answers one epoch while it is remembered.
            assert_eq!(h["history"]["epoch"], first, "{h}");
            assert_eq!(h["history"]["offset"], 0, "{h}");
            id += 1;
        }
    }
    // Publications still create channels, up to the limit and no further.
    for i in 0..4 {
        let r = call(
            &mut p,
            id,
            "publish",
            json!({"channel": format!("grafana/broadcast/w{i}"), "data": {"i": i}}),
        )
        .await;
        assert_eq!(r["publish"], json!({}), "{r}");
        id += 1;
    }
    let r = call(
        &mut p,
        id,
        "publish",
        json!({"channel": "grafana/broadcast/w5", "data": {}}),
    )
    .await;
    assert_eq!(r["error"]["code"], 106, "{r}");
}

#[tokio::test]
async fn the_first_publication_keeps_the_epoch_its_subscribers_were_told() {
    let d = Daemon::start(&[]);
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    let r = call(
        &mut p,
        2,
        "subscribe",
        json!({"channel": "grafana/broadcast/new"}),
    )
    .await;
    let sub = subscribed_with_history(&r, 2);
    assert_eq!(sub.get("offset"), None, "{r}");
    let r = call(
        &mut p,
        3,
        "publish",
        json!({"channel": "grafana/broadcast/new", "data": {"a": 1}}),
    )
    .await;
    assert_eq!(r["publish"], json!({}), "{r}");
    let h = call(
        &mut p,
        4,
        "history",
        json!({"channel": "grafana/broadcast/new"}),
    )
    .await;
    assert_eq!(h["history"]["epoch"], sub["epoch"], "{h}");
    assert_eq!(h["history"]["offset"], 1, "{h}");
    // So a client that saw offset 0 under that epoch recovers exactly what followed.
    let (mut q, _) = Peer::connected(&d.ws_url()).await;
    let r = call(
        &mut q,
        2,
        "subscribe",
        json!({"channel": "grafana/broadcast/new", "recover": true, "offset": 0, "epoch": sub["epoch"]}),
    )
    .await;
    let res = subscribed_with_history(&r, 2);
    assert_eq!(res["recovered"], true, "{r}");
    assert_eq!(res["publications"][0]["data"], json!({"a": 1}), "{r}");
}

#[test]
fn a_push_line_repeating_a_key_or_too_wide_is_a_400_naming_the_line() {
    let d = Daemon::start(&[]);
    // 40,000 repeats of one field key took 1.1 s on the event loop.
    let mut line = String::from("ok v=1\nm ");
    for i in 0..40_000 {
        line.push_str(&format!("x={i},"));
    }
    line.push_str("x=0\n");
    let (status, resp) = http(d.addr, "POST", "/api/live/push/s", &[], line.as_bytes());
    assert_eq!(status, 400, "{resp}");
    let v: Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(v["line"], 2, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("max_fields_per_line"),
        "{v}"
    );
    let tags: String = (0..300).map(|i| format!(",t{i}=v")).collect();
    let (status, resp) = http(
        d.addr,
        "POST",
        "/api/live/push/s",
        &[],
        format!("m{tags} x=1").as_bytes(),
    );
    assert_eq!(status, 400, "{resp}");
    assert!(resp.contains("max_tags_per_line"), "{resp}");
    // Sparse fields: each new column pads every earlier row.
    let sparse: String = (0..1500).map(|i| format!("m f{i}=1\n")).collect();
    let (status, resp) = http(d.addr, "POST", "/api/live/push/s", &[], sparse.as_bytes());
    assert_eq!(status, 400, "{resp}");
    assert!(resp.contains("max_values_per_request"), "{resp}");
    // Nothing of those requests was published, and ordinary pushes go on.
    let (status, _) = http(d.addr, "POST", "/api/live/push/s", &[], b"ok v=2");
    assert_eq!(status, 200);
    let (_, list) = http(d.addr, "GET", "/api/live/list", &[], b"");
    assert!(!list.contains("stream/s/m\""), "{list}");
}

/// `edgelive_push_errors_total`, read with the publisher's token.
fn push_errors(d: &Daemon) -> u64 {
    let auth = format!("Bearer {PUBLISHER}");
    let (_, m) = http(d.addr, "GET", "/metrics", &[("Authorization", &auth)], b"");
    m.lines()
        .find_map(|l| l.strip_prefix("edgelive_push_errors_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no push error count in {m}"))
}

#[tokio::test]
async fn udp_datagrams_follow_the_rules_and_the_allowed_sources() {
    let d = secured(
        r#"
[push.udp]
listen = "127.0.0.1:0"
stream = "udp"

[[auth.rules]]
pattern = "stream/udp/secret*"
publish = "admin"
"#,
    );
    let addr = d.udp_addr();
    let (mut p, _) = connect(&d, PUBLISHER).await;
    for (id, ch) in [(2, "stream/udp/secret"), (3, "stream/udp/open")] {
        let r = call(&mut p, id, "subscribe", json!({ "channel": ch })).await;
        subscribed_with_history(&r, id);
    }
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"secret v=1", addr).unwrap();
    sock.send_to(b"open v=2", addr).unwrap();
    let m = p.recv_non_ping().await;
    assert_eq!(m["push"]["channel"], "stream/udp/open", "{m}");
    common::eventually("the refused datagram is counted", || push_errors(&d) == 1);
    // The rule held: nothing was stored on the protected channel.
    let h = call(
        &mut p,
        4,
        "history",
        json!({"channel": "stream/udp/secret"}),
    )
    .await;
    assert_eq!(h["history"]["offset"], 0, "{h}");

    // Loopback is not among the allowed sources: every datagram is dropped.
    let d = secured("[push.udp]\nlisten = \"127.0.0.1:0\"\nallowed_sources = [\"10.9.0.0/16\"]\n");
    let addr = d.udp_addr();
    sock.send_to(b"open v=3", addr).unwrap();
    common::eventually("the datagram from a source not allowed is counted", || {
        push_errors(&d) == 1
    });
    let (_, list) = http(
        d.addr,
        "GET",
        "/api/live/list",
        &[("Authorization", &format!("Bearer {PUBLISHER}"))],
        b"",
    );
    assert!(!list.contains("stream/udp/open"), "{list}");
}
