//! The Centrifuge protocol against the real daemon, with a raw WebSocket peer.

mod common;

use std::time::Duration;

use common::{http, subscribed_with_history, Daemon, Ended, Peer};
use serde_json::json;

#[tokio::test]
async fn health_answers_ok_once_listening() {
    let d = Daemon::start(&[]);
    let (status, body) = http(d.addr, "GET", "/api/health", &[], b"");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        json!({"status":"ok","access":"granted"})
    );
    let (status, body) = http(d.addr, "GET", "/nowhere", &[], b"");
    assert_eq!(status, 404);
    assert!(body.contains("\"message\""), "{body}");
}

#[tokio::test]
async fn connect_reply_has_client_ping_and_pong() {
    let d = Daemon::start(&[]);
    let mut p = Peer::connect(&d.ws_url()).await;
    p.send(r#"{"id":1,"connect":{"name":"js"}}"#).await;
    let r = p.recv().await;
    assert_eq!(r["id"], 1);
    assert_eq!(r["connect"]["ping"], 25);
    assert_eq!(r["connect"]["pong"], true);
    assert_eq!(r["connect"]["client"].as_str().unwrap().len(), 36);
    assert!(r.get("error").is_none());
    // The alias endpoint speaks the same protocol.
    let mut p = Peer::connect(&format!("ws://{}/connection/websocket", d.addr)).await;
    p.send(r#"{"id":1,"connect":{}}"#).await;
    assert!(p.recv().await["connect"]["client"].is_string());
}

#[tokio::test]
async fn batched_connect_and_subscribe_are_answered_in_order() {
    let d = Daemon::start(&[]);
    let mut p = Peer::connect(&d.ws_url()).await;
    p.send("{\"connect\":{\"name\":\"js\"},\"id\":1}\n{\"subscribe\":{\"channel\":\"grafana/broadcast/a\",\"flag\":1},\"id\":2}\n{\"subscribe\":{\"channel\":\"stream/s/m\"},\"id\":3}")
        .await;
    assert_eq!(p.recv().await["id"], 1);
    subscribed_with_history(&p.recv().await, 2);
    let join = p.recv().await;
    assert_eq!(join["push"]["channel"], "grafana/broadcast/a");
    assert!(join["push"]["join"]["info"]["client"].is_string());
    subscribed_with_history(&p.recv().await, 3);
}

#[tokio::test]
async fn broadcast_reaches_every_subscriber_including_the_publisher() {
    let d = Daemon::start(&[]);
    let ch = "grafana/broadcast/room";
    let (mut a, a_id) = Peer::connected(&d.ws_url()).await;
    let (mut b, b_id) = Peer::connected(&d.ws_url()).await;
    a.send(&format!(r#"{{"id":2,"subscribe":{{"channel":"{ch}"}}}}"#))
        .await;
    let sub_a = subscribed_with_history(&a.recv().await, 2);
    assert_eq!(
        sub_a["offset"],
        json!(null),
        "a new channel is at offset 0 (omitted)"
    );
    assert_eq!(
        a.recv().await["push"]["join"]["info"]["client"],
        a_id.as_str()
    );
    // b uses the org-prefixed name a Grafana front end would use.
    b.send(&format!(r#"{{"id":2,"subscribe":{{"channel":"1/{ch}"}}}}"#))
        .await;
    let sub_b = subscribed_with_history(&b.recv().await, 2);
    assert_eq!(sub_b["epoch"], sub_a["epoch"], "one channel, one epoch");
    assert_eq!(b.recv().await["push"]["channel"], format!("1/{ch}"));
    // a sees b's join under the bare name.
    let j = a.recv().await;
    assert_eq!(j["push"]["channel"], ch);
    assert_eq!(j["push"]["join"]["info"]["client"], b_id.as_str());

    a.send(&format!(
        r#"{{"id":3,"publish":{{"channel":"{ch}","data":{{"text":"hi","n":[1,2.5,null]}}}}}}"#
    ))
    .await;
    let pa = a.recv().await;
    assert_eq!(pa["push"]["channel"], ch);
    assert_eq!(
        pa["push"]["pub"]["data"],
        json!({"text":"hi","n":[1,2.5,null]})
    );
    assert_eq!(pa["push"]["pub"]["info"]["client"], a_id.as_str());
    assert_eq!(pa["push"]["pub"]["offset"], 1);
    assert_eq!(a.recv().await, json!({"id":3,"publish":{}}));
    let pb = b.recv().await;
    assert_eq!(pb["push"]["channel"], format!("1/{ch}"));
    assert_eq!(pb["push"]["pub"]["data"]["text"], "hi");

    // presence lists both, keyed by client id; stats count one (anonymous) user.
    a.send(&format!(r#"{{"id":4,"presence":{{"channel":"{ch}"}}}}"#))
        .await;
    let pr = a.recv().await;
    let entries = pr["presence"]["presence"].as_object().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[&a_id]["user"], "");
    assert_eq!(entries[&b_id]["client"], b_id.as_str());
    a.send(&format!(
        r#"{{"id":5,"presence_stats":{{"channel":"{ch}"}}}}"#
    ))
    .await;
    assert_eq!(
        a.recv().await,
        json!({"id":5,"presence_stats":{"num_clients":2,"num_users":1}})
    );

    // b leaves: unsubscribe reply, a gets the leave.
    b.send(&format!(
        r#"{{"id":3,"unsubscribe":{{"channel":"1/{ch}"}}}}"#
    ))
    .await;
    assert_eq!(b.recv().await, json!({"id":3,"unsubscribe":{}}));
    assert_eq!(
        a.recv().await["push"]["leave"]["info"]["client"],
        b_id.as_str()
    );
    // Leaving a channel one is not in still succeeds.
    b.send(r#"{"id":4,"unsubscribe":{"channel":"grafana/broadcast/other"}}"#)
        .await;
    assert_eq!(b.recv().await, json!({"id":4,"unsubscribe":{}}));

    // An abrupt disconnect is a leave too.
    let (mut c, c_id) = Peer::connected(&d.ws_url()).await;
    c.send(&format!(r#"{{"id":2,"subscribe":{{"channel":"{ch}"}}}}"#))
        .await;
    assert_eq!(c.recv().await["id"], 2);
    assert_eq!(
        a.recv().await["push"]["join"]["info"]["client"],
        c_id.as_str()
    );
    drop(c);
    assert_eq!(
        a.recv().await["push"]["leave"]["info"]["client"],
        c_id.as_str()
    );
}

#[tokio::test]
async fn errors_carry_codes_and_messages_and_keep_the_connection() {
    let d = Daemon::start(&[]);
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    let cases = [
        (
            r#"{"id":2,"subscribe":{"channel":"stream/bad name/x"}}"#,
            107,
        ),
        (r#"{"id":3,"subscribe":{"channel":"stream/a[b/x"}}"#, 107),
        (r#"{"id":4,"subscribe":{"channel":"2/stream/a/x"}}"#, 107),
        (
            r#"{"id":5,"subscribe":{"channel":"plugin/testdata/no-such-stream"}}"#,
            102,
        ),
        (r#"{"id":6,"subscribe":{"channel":"ds/uid/x"}}"#, 102),
        (
            r#"{"id":7,"publish":{"channel":"stream/a/b","data":{"x":1}}}"#,
            103,
        ),
        (
            r#"{"id":8,"history":{"channel":"grafana/broadcast/x","since":{"offset":1,"epoch":"nope"}}}"#,
            112,
        ),
        (
            r#"{"id":15,"history":{"channel":"grafana/broadcast/x","reverse":true,"since":{"offset":0}}}"#,
            107,
        ),
        (
            r#"{"id":9,"rpc":{"method":"grafana.query","data":{}}}"#,
            104,
        ),
        (r#"{"id":10,"refresh":{"token":"t"}}"#, 108),
        (
            r#"{"id":11,"subscribe":{"channel":"stream/a/b","type":2}}"#,
            108,
        ),
        (
            r#"{"id":12,"subscribe":{"channel":"stream/a/b","tf":{"filter":{}}}}"#,
            107,
        ),
        (r#"{"id":13,"presence":{"channel":"stream/a/b"}}"#, 108),
        (
            r#"{"id":14,"publish":{"channel":"grafana/broadcast/x"}}"#,
            107,
        ),
    ];
    for (cmd, code) in cases {
        p.send(cmd).await;
        let r = p.recv_non_ping().await;
        assert_eq!(r["error"]["code"], code, "{cmd} -> {r}");
        assert!(!r["error"]["message"].as_str().unwrap().is_empty());
    }
    p.send(r#"{"id":20,"subscribe":{"channel":"stream/a/b"}}"#)
        .await;
    subscribed_with_history(&p.recv().await, 20);
    p.send(r#"{"id":21,"subscribe":{"channel":"1/stream/a/b"}}"#)
        .await;
    assert_eq!(p.recv().await["error"]["code"], 105);
    // `send` gets no reply; the next command's reply comes next.
    p.send("{\"send\":{\"data\":{\"x\":1}}}\n{\"id\":22,\"ping\":{}}")
        .await;
    assert_eq!(p.recv().await, json!({"id":22,"ping":{}}));
}

#[tokio::test]
async fn the_129th_channel_is_refused_with_106() {
    let d = Daemon::start(&[]);
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    let frame: Vec<String> = (0..129)
        .map(|i| {
            format!(
                r#"{{"id":{},"subscribe":{{"channel":"stream/s/m{i}"}}}}"#,
                i + 2
            )
        })
        .collect();
    p.send(&frame.join("\n")).await;
    // The 106 is answered at once; the subscriptions by the storage thread: match by id.
    let mut ok = 0;
    for _ in 0..129 {
        let r = p.recv().await;
        if r["id"] == 130 {
            assert_eq!(r["error"]["code"], 106);
        } else {
            subscribed_with_history(&r, r["id"].as_u64().unwrap());
            ok += 1;
        }
    }
    assert_eq!(ok, 128);
}

#[tokio::test]
async fn malformed_input_closes_with_3501() {
    let d = Daemon::start(&[]);
    let cases: [(&str, bool); 6] = [
        (r#"{"id":1,"subscribe":{"channel":"stream/a/b"}}"#, false), // before connect
        ("this is not json", false),
        ("{\"id\":1,\"connect\":{}}\n\n{\"id\":2,\"ping\":{}}", false), // empty line
        ("", false),                                                    // empty frame
        (r#"{"id":2,"connect":{}}"#, true),                             // second connect
        (r#"{"id":2,"subscribe":{"channel":""}}"#, true),               // empty channel
    ];
    for (msg, connect_first) in cases {
        let mut p = if connect_first {
            Peer::connected(&d.ws_url()).await.0
        } else {
            Peer::connect(&d.ws_url()).await
        };
        p.send(msg).await;
        assert_eq!(
            p.until_closed(Duration::from_secs(10)).await,
            Ended::Close(3501, "bad request".into()),
            "{msg:?}"
        );
    }
    // The daemon is still fine.
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    p.send(r#"{"id":2,"ping":{}}"#).await;
    assert_eq!(p.recv().await["id"], 2);
}

#[tokio::test]
async fn server_pings_and_a_client_that_never_pongs_is_closed_3012() {
    let d = Daemon::start(&[
        ("EDGELIVE_LIVE_PING_INTERVAL", "1s"),
        ("EDGELIVE_LIVE_PONG_TIMEOUT", "1s"),
    ]);
    // A client that answers pings stays; pings arrive even while nothing else happens.
    let (mut good, _) = Peer::connected(&d.ws_url()).await;
    let (mut bad, _) = Peer::connected(&d.ws_url()).await;
    for _ in 0..3 {
        assert_eq!(good.recv().await, json!({}));
        good.send("{}").await;
    }
    assert_eq!(
        bad.until_closed(Duration::from_secs(10)).await,
        Ended::Close(3012, "no pong".into())
    );
    good.send(r#"{"id":9,"ping":{}}"#).await;
    assert_eq!(good.recv_non_ping().await["id"], 9);
}

#[tokio::test]
async fn a_client_that_never_connects_is_closed_3502() {
    let d = Daemon::start(&[("EDGELIVE_LIVE_CONNECT_TIMEOUT", "1s")]);
    let mut p = Peer::connect(&d.ws_url()).await;
    assert_eq!(
        p.until_closed(Duration::from_secs(10)).await,
        Ended::Close(3502, "stale".into())
    );
}

#[tokio::test]
async fn a_burst_of_publications_arrives_complete_and_in_order() {
    // How many frames carry them depends on scheduling; the writer's coalescing itself is
    // tested deterministically in src/websocket.rs.
    let d = Daemon::start(&[]);
    let (mut sub, _) = Peer::connected(&d.ws_url()).await;
    sub.send(r#"{"id":2,"subscribe":{"channel":"grafana/broadcast/burst"}}"#)
        .await;
    sub.recv().await;
    sub.recv().await; // own join
    let (mut publisher, _) = Peer::connected(&d.ws_url()).await;
    let frame: Vec<String> = (0..200)
        .map(|i| format!(r#"{{"id":{},"publish":{{"channel":"grafana/broadcast/burst","data":{{"i":{i}}}}}}}"#, i + 2))
        .collect();
    publisher.send(&frame.join("\n")).await;
    for i in 0..200 {
        let m = sub.recv_non_ping().await;
        assert_eq!(m["push"]["pub"]["data"]["i"], i, "in order");
        assert_eq!(m["push"]["pub"]["offset"], i + 1);
    }
}

#[tokio::test]
async fn the_multi_thread_runtime_serves_the_same_protocol() {
    let d = Daemon::start(&[("EDGELIVE_RUNTIME_WORKERS", "2")]);
    let (mut a, _) = Peer::connected(&d.ws_url()).await;
    let (mut b, _) = Peer::connected(&d.ws_url()).await;
    for p in [&mut a, &mut b] {
        p.send(r#"{"id":2,"subscribe":{"channel":"grafana/broadcast/mt"}}"#)
            .await;
        subscribed_with_history(&p.recv().await, 2);
    }
    b.send(r#"{"id":3,"publish":{"channel":"grafana/broadcast/mt","data":{"v":1}}}"#)
        .await;
    loop {
        let m = a.recv_non_ping().await;
        if m["push"]["pub"].is_object() {
            assert_eq!(m["push"]["pub"]["data"], json!({"v":1}));
            break;
        }
    }
}

#[tokio::test]
async fn an_empty_subprotocol_header_is_accepted_and_never_echoed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let d = Daemon::start(&[]);
    let mut s = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    let req = format!(
        "GET /api/live/ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: \r\n\r\n",
        d.addr
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "connection closed during the handshake");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert!(!head.contains("sec-websocket-protocol"), "{head}");
}

#[test]
fn a_client_that_never_finishes_its_headers_is_dropped() {
    use std::io::{Read, Write};
    let d = Daemon::start(&[("EDGELIVE_SERVER_HEADER_READ_TIMEOUT", "1s")]);
    let mut s = std::net::TcpStream::connect(d.addr).unwrap();
    s.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut buf = Vec::new();
    // hyper answers 408 or just closes; either way the read ends instead of hanging.
    let r = s.read_to_end(&mut buf);
    assert!(r.is_ok(), "connection still open: {r:?}");
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

/// Presence and join/leave are the hub's, from memory: with two workers, peers that vanish
/// without a close frame leave presence, each with one leave push, on a channel with history
/// (subscribed through the storage thread) and on one with presence only.
#[tokio::test]
async fn presence_follows_abrupt_disconnects_with_two_workers() {
    let toml = r#"
[runtime]
workers = 2

[[history]]
pattern = "grafana/broadcast/kept/**"
size = 10
ttl = "1m"

[[history]]
pattern = "grafana/broadcast/**"
size = 0
ttl = "1m"
"#;
    let d = Daemon::start_with_config(toml, &[]);
    for ch in ["grafana/broadcast/kept/p", "grafana/broadcast/live/p"] {
        let (mut watcher, watcher_id) = Peer::connected(&d.ws_url()).await;
        watcher
            .send(&format!(r#"{{"id":2,"subscribe":{{"channel":"{ch}"}}}}"#))
            .await;
        let r = watcher.recv_non_ping().await;
        assert_eq!(r["id"], 2, "{r}");
        let mut peers = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..12 {
            let (mut p, id) = Peer::connected(&d.ws_url()).await;
            p.send(&format!(r#"{{"id":2,"subscribe":{{"channel":"{ch}"}}}}"#))
                .await;
            assert_eq!(p.recv_non_ping().await["id"], 2);
            peers.push(p);
            ids.push(id);
        }
        let mut joined = std::collections::HashSet::new();
        while joined.len() < 13 {
            let m = watcher.recv_non_ping().await;
            if let Some(c) = m["push"]["join"]["info"]["client"].as_str() {
                assert!(joined.insert(c.to_owned()), "one join per client: {m}");
            }
        }
        // Half of them vanish: the socket is dropped without a close frame.
        let gone: std::collections::HashSet<String> = ids.drain(..6).collect();
        for p in peers.drain(..6) {
            drop(p);
        }
        let mut left = std::collections::HashSet::new();
        while left.len() < 6 {
            let Ok(m) = watcher.try_recv(Duration::from_secs(10)).await else {
                panic!("{ch}: a leave is missing; gone {gone:?}, left {left:?}");
            };
            if let Some(c) = m["push"]["leave"]["info"]["client"].as_str() {
                assert!(left.insert(c.to_owned()), "one leave per client: {m}");
            }
        }
        assert_eq!(left, gone, "{ch}");
        let pr = common::call(&mut watcher, 3, "presence", json!({ "channel": ch })).await;
        let entries = pr["presence"]["presence"].as_object().unwrap();
        let present: std::collections::HashSet<String> = entries.keys().cloned().collect();
        let mut expected: std::collections::HashSet<String> = ids.iter().cloned().collect();
        expected.insert(watcher_id.clone());
        assert_eq!(present, expected, "{ch}");
        let st = common::call(&mut watcher, 4, "presence_stats", json!({ "channel": ch })).await;
        assert_eq!(st["presence_stats"]["num_clients"], 7, "{ch}");
        assert_eq!(st["presence_stats"]["num_users"], 1, "{ch}");
    }
}
