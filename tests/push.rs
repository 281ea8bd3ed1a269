//! The push API against the real daemon: requests as Telegraf sends them (headers, batches,
//! gzip with chunked transfer), errors that lose nothing, managed streams (schema once, last
//! frame to late subscribers, kept across a restart), `/api/live/publish`, `/api/live/list`,
//! the push WebSocket and UDP.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{call, http, subscribed, Daemon, Ended, Peer};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// A subscriber on `channel`; returns the subscribe result.
async fn subscriber(d: &Daemon, channel: &str) -> (Peer, Value) {
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    let r = call(&mut p, 2, "subscribe", json!({"channel": channel})).await;
    let res = subscribed(&r, 2);
    (p, res)
}

/// The next publication's data on a subscriber (join/leave pushes skipped).
async fn next_pub(p: &mut Peer) -> Value {
    loop {
        let m = p.recv_non_ping().await;
        if m["push"]["join"].is_object() || m["push"]["leave"].is_object() {
            continue;
        }
        assert!(m["push"]["pub"].is_object(), "{m}");
        return m["push"]["pub"]["data"].clone();
    }
}

/// What Telegraf's `outputs.http` sends with `data_format = "influx"`.
const TELEGRAF_HEADERS: [(&str, &str); 3] = [
    ("User-Agent", "Telegraf/1.30.0 Go/1.22.1"),
    ("Content-Type", "text/plain; charset=utf-8"),
    ("Authorization", "Bearer glsa_not_checked_yet"),
];

fn push(d: &Daemon, path: &str, body: &str) -> (u16, String) {
    http(d.addr, "POST", path, &TELEGRAF_HEADERS, body.as_bytes())
}

/// A gzip body sent with chunked transfer encoding, as Go's HTTP client sends a compressed
/// Telegraf batch.
fn push_gzip_chunked(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: Telegraf/1.30.0 Go/1.22.1\r\n\
         Transfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\
         Content-Type: text/plain; charset=utf-8\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in gz.chunks(100) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    s.write_all(&req).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, resp.split_once("\r\n\r\n").unwrap().1.to_owned())
}

fn field_names(frame: &Value) -> Vec<String> {
    frame["schema"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn telegraf_batches_reach_subscribers_as_grafana_frames_schema_once() {
    let d = Daemon::start(&[]);
    let (mut cpu, res) = subscriber(&d, "stream/telegraf/cpu").await;
    assert!(res.get("data").is_none(), "no frame yet: {res}");
    let (mut prefixed, _) = subscriber(&d, "1/stream/telegraf/cpu").await;

    let batch = "cpu,cpu=cpu0,host=pi usage_idle=90.5,usage_user=2i 1700000000000000123\n\
                 cpu,cpu=cpu1,host=pi usage_idle=80,usage_user=7i 1700000000000000123\n\
                 mem,host=pi used_percent=41.2 1700000000000000123\n";
    let (status, body) = push(&d, "/api/live/push/telegraf", batch);
    assert_eq!((status, body.as_str()), (200, ""));
    let f = next_pub(&mut cpu).await;
    assert_eq!(f["schema"]["name"], "cpu");
    assert_eq!(
        field_names(&f),
        ["labels", "time", "usage_idle", "usage_user"]
    );
    assert_eq!(
        f["data"],
        json!({"values": [["cpu=cpu0, host=pi", "cpu=cpu1, host=pi"],
                          [1700000000000u64, 1700000000000u64], [90.5, 80], [2, 7]],
               "nanos": [null, [123, 123], null, null]})
    );
    // The org-prefixed subscriber sees the same frame under the name it used.
    let m = prefixed.recv_non_ping().await;
    assert_eq!(m["push"]["channel"], "1/stream/telegraf/cpu");
    assert_eq!(m["push"]["pub"]["data"], f);
    assert!(
        m["push"]["pub"]["offset"].as_u64().unwrap() >= 1,
        "history is on: {m}"
    );

    // Same schema: data only.
    let (status, _) = push(
        &d,
        "/api/live/push/telegraf",
        "cpu,cpu=cpu0,host=pi usage_idle=1,usage_user=3i 1700000001000000000",
    );
    assert_eq!(status, 200);
    let f = next_pub(&mut cpu).await;
    assert!(f.get("schema").is_none(), "{f}");
    assert_eq!(f["data"]["values"][2], json!([1]));

    // A new field changes the schema: schema and data again. The stream keeps the fields it
    // has seen in order of first appearance (sticky fields), as Grafana orders them within one
    // body: the new one comes last.
    let (status, _) = push(
        &d,
        "/api/live/push/telegraf",
        "cpu,cpu=cpu0,host=pi usage_idle=1,usage_user=3i,usage_system=4 1700000002000000000",
    );
    assert_eq!(status, 200);
    let f = next_pub(&mut cpu).await;
    assert_eq!(
        field_names(&f),
        ["labels", "time", "usage_idle", "usage_user", "usage_system"]
    );

    // A late subscriber gets the last full frame as subscribe data.
    let (_late, res) = subscriber(&d, "stream/telegraf/cpu").await;
    assert_eq!(res["data"], f, "{res}");
}

#[tokio::test]
async fn gzip_with_chunked_transfer_is_accepted_as_telegraf_sends_it() {
    let d = Daemon::start(&[]);
    let (mut p, _) = subscriber(&d, "stream/gz/disk").await;
    let mut batch = String::new();
    for i in 0..500 {
        batch.push_str(&format!(
            "disk,device=sda{},path=/ used={}i,free={}i 1700000000000000000\n",
            i % 4,
            i,
            1000 - i
        ));
    }
    let (status, body) = push_gzip_chunked(d.addr, "/api/live/push/gz", &batch);
    assert_eq!((status, body.as_str()), (200, ""));
    let f = next_pub(&mut p).await;
    assert_eq!(f["data"]["values"][0].as_array().unwrap().len(), 500);
    assert_eq!(f["data"]["values"][2][499], 501);
}

#[tokio::test]
async fn a_bad_line_is_a_400_naming_it_and_nothing_of_the_request_is_published() {
    let d = Daemon::start(&[]);
    let (mut p, _) = subscriber(&d, "stream/s/ok").await;
    let (status, body) = push(
        &d,
        "/api/live/push/s",
        "ok f=1\nok f=2\nok f=\"unterminated\n",
    );
    assert_eq!(status, 400, "{body}");
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (e["line"].as_u64(), e["column"].as_u64()),
        (Some(3), Some(6)),
        "{e}"
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("unterminated string"),
        "{e}"
    );
    assert_eq!(
        p.try_recv(Duration::from_millis(300)).await,
        Err(Ended::Timeout)
    );
    assert!(managed_streams(&d).is_empty());

    // A measurement that cannot be a channel is refused; the valid line with it is not sent.
    let (status, body) = push(&d, "/api/live/push/s", "ok f=1\nbad:name f=1");
    assert_eq!(status, 400);
    assert!(body.contains("bad:name"), "{body}");
    assert_eq!(
        p.try_recv(Duration::from_millis(300)).await,
        Err(Ended::Timeout)
    );
    // A stream id that cannot be a channel, an unknown layout, an unknown encoding.
    assert_eq!(push(&d, "/api/live/push/a%20b", "ok f=1").0, 400);
    let (status, body) = push(
        &d,
        "/api/live/push/s?gf_live_frame_format=prometheus",
        "ok f=1",
    );
    assert_eq!(status, 400);
    assert!(body.contains("gf_live_frame_format"), "{body}");
    let (status, _) = http(
        d.addr,
        "POST",
        "/api/live/push/s",
        &[("Content-Encoding", "br")],
        b"ok f=1",
    );
    assert_eq!(status, 415);
    let (status, _) = http(
        d.addr,
        "POST",
        "/api/live/push/s",
        &[("Content-Encoding", "gzip")],
        b"not gzip",
    );
    assert_eq!(status, 400);
    // The daemon and the subscriber are fine: a good push still arrives.
    assert_eq!(push(&d, "/api/live/push/s", "ok f=9").0, 200);
    assert_eq!(next_pub(&mut p).await["data"]["values"][2], json!([9]));
}

#[tokio::test]
async fn an_oversized_body_is_413_also_after_gzip_decoding() {
    let d = Daemon::start(&[("EDGELIVE_PUSH_MAX_BODY_SIZE", "4096")]);
    let big = "m f=1\n".repeat(1000);
    assert_eq!(push(&d, "/api/live/push/s", &big).0, 413);
    // Small on the wire, too large once decoded.
    let (status, body) = push_gzip_chunked(d.addr, "/api/live/push/s", &big);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("max_body_size"), "{body}");
    assert_eq!(push(&d, "/api/live/push/s", "m f=1").0, 200);
}

#[tokio::test]
async fn wide_format_publishes_one_frame_per_timestamp_and_precision_scales_time() {
    let d = Daemon::start(&[]);
    let (mut p, _) = subscriber(&d, "stream/w/cpu").await;
    let body = "cpu,cpu=a u=1 1700000000\ncpu,cpu=b u=2 1700000000\ncpu,cpu=a u=3 1700000001\n";
    let (status, _) = push(
        &d,
        "/api/live/push/w?gf_live_frame_format=wide&precision=s",
        body,
    );
    assert_eq!(status, 200);
    let first = next_pub(&mut p).await;
    assert_eq!(field_names(&first), ["time", "u", "u"]);
    assert_eq!(first["schema"]["fields"][2]["labels"], json!({"cpu": "b"}));
    assert_eq!(first["data"]["values"][0], json!([1700000000000u64]));
    // The second timestamp's frame lacks u{cpu=b}: padded with null to the stream's field
    // set (sticky fields), it has the first one's schema and goes out as data only.
    let second = next_pub(&mut p).await;
    assert!(second.get("schema").is_none(), "{second}");
    assert_eq!(
        second["data"]["values"],
        json!([[1700000001000u64], [3], [null]])
    );
}

#[test]
fn the_last_frame_and_history_survive_a_restart_and_list_shows_streams() {
    // The last frame alone in the subscribe reply (backfill is tested in real_clients.rs).
    let d = Daemon::start(&[("EDGELIVE_PUSH_BACKFILL", "{rows = 0}")]);
    for i in 0..3 {
        let (status, _) = push(
            &d,
            "/api/live/push/plant",
            &format!("temp,room=a c={i}.5 {}000000000", 1_700_000_000 + i),
        );
        assert_eq!(status, 200);
    }
    push(&d, "/api/live/push/plant", "hum,room=a rh=40");
    let channels = managed_streams(&d);
    assert_eq!(channels.len(), 2, "{channels:?}");
    assert_eq!(channels[0]["channel"], "stream/plant/hum");
    assert_eq!(channels[1]["channel"], "stream/plant/temp");
    assert_eq!(channels[1]["minute_rate"], 3);
    assert_eq!(channels[1]["data"]["schema"]["name"], "temp");
    assert!(channels[1]["data"].get("data").is_none());

    let d = d.restart(false);
    let rt = runtime();
    rt.block_on(async {
        let (mut p, res) = subscriber(&d, "stream/plant/temp").await;
        assert_eq!(res["data"]["schema"]["name"], "temp", "{res}");
        assert_eq!(res["data"]["data"]["values"][2], json!([2.5]));
        // History recovers every publication, the first with its schema.
        let h = call(
            &mut p,
            3,
            "history",
            json!({"channel": "stream/plant/temp", "limit": -1}),
        )
        .await;
        let pubs = h["history"]["publications"].as_array().unwrap();
        assert_eq!(pubs.len(), 3, "{h}");
        assert!(pubs[0]["data"]["schema"].is_object());
        assert!(pubs[1]["data"].get("schema").is_none());
        // Same schema after the restart: still data only.
        assert_eq!(push(&d, "/api/live/push/plant", "temp,room=a c=7").0, 200);
        let f = next_pub(&mut p).await;
        assert!(f.get("schema").is_none(), "{f}");
    });
    let (_, list) = http(d.addr, "GET", "/api/live/list", &[], b"");
    assert!(list.contains("stream/plant/hum"), "{list}");
}

#[tokio::test]
async fn the_publish_endpoint_follows_the_client_publish_rules() {
    let d = Daemon::start(&[]);
    let (mut p, _) = subscriber(&d, "grafana/broadcast/room").await;
    let body = br#"{"channel":"1/grafana/broadcast/room","data":{"text":"hi"}}"#;
    let (status, resp) = http(d.addr, "POST", "/api/live/publish", &[], body);
    assert_eq!((status, resp.as_str()), (200, "{}"));
    assert_eq!(next_pub(&mut p).await, json!({"text": "hi"}));
    let cases: [(&[u8], u16); 5] = [
        (br#"{"channel":"stream/s/m","data":{}}"#, 403),
        (br#"{"channel":"plugin/x/y","data":{}}"#, 404),
        (br#"{"channel":"bad channel","data":{}}"#, 400),
        (br#"{"channel":"grafana/broadcast/room"}"#, 400),
        (b"not json", 400),
    ];
    for (body, want) in cases {
        let (status, resp) = http(d.addr, "POST", "/api/live/publish", &[], body);
        assert_eq!(status, want, "{}: {resp}", String::from_utf8_lossy(body));
        assert!(serde_json::from_str::<Value>(&resp).unwrap()["message"].is_string());
    }
}

#[tokio::test]
async fn websocket_push_takes_binary_and_text_messages_and_closes_1007_on_bad_input() {
    let d = Daemon::start(&[]);
    let (mut p, _) = subscriber(&d, "stream/wsp/env").await;
    let url = format!("ws://{}/api/live/push/wsp", d.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    // Telegraf's outputs.websocket sends binary frames by default.
    ws.send(Message::binary(
        &b"env,room=a t=21.5 1700000000000000000\n"[..],
    ))
    .await
    .unwrap();
    assert_eq!(next_pub(&mut p).await["data"]["values"][2], json!([21.5]));
    ws.send(Message::text("env,room=a t=22 1700000001000000000"))
        .await
        .unwrap();
    assert_eq!(next_pub(&mut p).await["data"]["values"][2], json!([22]));
    ws.send(Message::text("env t=1\nenv t=")).await.unwrap();
    let closed = loop {
        match ws.next().await {
            Some(Ok(Message::Close(Some(c)))) => break (u16::from(c.code), c.reason.to_string()),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(closed.0, 1007);
    assert!(closed.1.contains("line 2"), "{closed:?}");
    assert_eq!(
        p.try_recv(Duration::from_millis(300)).await,
        Err(Ended::Timeout)
    );
    // A browser page from another origin may not push (same rules as /api/live/ws).
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", "http://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn websocket_push_is_pinged_kept_alive_by_data_and_dropped_when_silent() {
    let d = Daemon::start(&[
        ("EDGELIVE_LIVE_PING_INTERVAL", "1s"),
        ("EDGELIVE_LIVE_PONG_TIMEOUT", "1s"),
    ]);
    let url = format!("ws://{}/api/live/push/alive", d.addr);
    // A sender that never reads (so never answers a ping) but keeps sending stays connected.
    let (mut busy, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    for i in 0..12 {
        busy.send(Message::text(format!("m v={i}"))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let mut pings = 0;
    loop {
        match tokio::time::timeout(Duration::from_millis(200), busy.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(Message::Close(c)))) => panic!("busy sender was closed: {c:?}"),
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("busy sender lost: {other:?}"),
            Err(_) => break,
        }
    }
    assert!(pings >= 2, "pings {pings}");
    // A silent client is dropped after the ping interval plus the pong timeout.
    let (mut silent, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        // Reading answers pings, so do not read until the server has given up: wait, then read.
        tokio::time::sleep(Duration::from_secs(3)).await;
        loop {
            match silent.next().await {
                Some(Ok(Message::Close(c))) => return c.map(|c| u16::from(c.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("a silent push client is dropped");
    assert_eq!(ended, Some(1001));
}

#[tokio::test]
async fn udp_datagrams_become_frames_and_bad_ones_are_counted() {
    let d = Daemon::start(&[(
        "EDGELIVE_PUSH_UDP",
        r#"{listen = "127.0.0.1:0", stream = "sensors"}"#,
    )]);
    let addr = d.udp_addr();
    let (mut p, _) = subscriber(&d, "stream/sensors/soil").await;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"soil,bed=3 moisture=0.31", addr).unwrap();
    assert_eq!(next_pub(&mut p).await["data"]["values"][2], json!([0.31]));
    sock.send_to(b"soil,bed=3 moisture=", addr).unwrap();
    sock.send_to(b"soil,bed=3 moisture=0.32", addr).unwrap();
    assert_eq!(next_pub(&mut p).await["data"]["values"][2], json!([0.32]));
    let (_, metrics) = http(d.addr, "GET", "/metrics", &[], b"");
    assert!(
        metrics.contains("edgelive_push_errors_total 1"),
        "{metrics}"
    );
}

#[test]
fn an_acknowledged_last_frame_survives_sigkill_also_without_history() {
    let d = Daemon::start_with_config(
        "[[history]]\npattern = \"grafana/broadcast/*\"\nsize = 10\nttl = \"1m\"\n",
        &[],
    );
    for i in 0..20 {
        let (status, _) = push(&d, "/api/live/push/k", &format!("m,a=b v={i}"));
        assert_eq!(status, 200);
    }
    let d = d.restart(true);
    let rt = runtime();
    rt.block_on(async {
        let (_p, res) = subscriber(&d, "stream/k/m").await;
        assert!(res.get("recoverable").is_none(), "no history here: {res}");
        assert_eq!(res["data"]["data"]["values"][2], json!([19]), "{res}");
    });
}

/// With history, a data-only push is stored once, as its history record: after SIGKILL the
/// last frame is rebuilt from the schema of the last change and the newest record's data.
#[test]
fn with_history_the_last_frame_comes_back_from_history_after_sigkill() {
    // The last frame alone in the subscribe reply (backfill is tested in real_clients.rs).
    let d = Daemon::start(&[("EDGELIVE_PUSH_BACKFILL", "{rows = 0}")]);
    for body in [
        "m,a=b v=1",
        "m,a=b v=2",
        "m,a=b v=10,w=1",
        "m,a=b v=11,w=2",
        "m,a=b v=12,w=3",
    ] {
        assert_eq!(push(&d, "/api/live/push/k", body).0, 200);
    }
    let d = d.restart(true);
    let rt = runtime();
    rt.block_on(async {
        let (_p, res) = subscriber(&d, "stream/k/m").await;
        assert_eq!(
            field_names(&res["data"]),
            ["labels", "time", "v", "w"],
            "{res}"
        );
        let values = &res["data"]["data"]["values"];
        assert_eq!(
            (&values[2], &values[3]),
            (&json!([12]), &json!([3])),
            "{res}"
        );
    });
}

/// A stream's history may expire while its last frame must stay: retention writes the frame
/// before it expires the record holding it, so a SIGKILL after that still finds it.
#[test]
fn an_expired_history_keeps_the_last_frame_across_sigkill() {
    let d = Daemon::start_with_config(
        "[[history]]\npattern = \"stream/**\"\nsize = 100\nttl = \"1s\"\n",
        &[],
    );
    for i in 1..=3 {
        assert_eq!(push(&d, "/api/live/push/t", &format!("m v={i}")).0, 200);
    }
    let rt = runtime();
    rt.block_on(async {
        let (mut p, _) = subscriber(&d, "stream/t/m").await;
        let mut h = Value::Null;
        for i in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            h = call(
                &mut p,
                10 + i,
                "history",
                json!({"channel": "stream/t/m", "limit": -1}),
            )
            .await;
            if h["history"]["publications"] == json!([]) {
                break;
            }
        }
        assert_eq!(h["history"]["publications"], json!([]), "not expired: {h}");
    });
    // An acknowledged push elsewhere: its group commit makes the expiry durable too.
    assert_eq!(push(&d, "/api/live/push/other", "x v=1").0, 200);
    let d = d.restart(true);
    rt.block_on(async {
        let (_p, res) = subscriber(&d, "stream/t/m").await;
        assert_eq!(res["data"]["data"]["values"][2], json!([3]), "{res}");
    });
}

/// A runtime for the tests that restart the daemon between async parts.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The managed streams in `/api/live/list` (it also lists stream-handler channels).
fn managed_streams(d: &Daemon) -> Vec<Value> {
    let (status, list) = http(d.addr, "GET", "/api/live/list", &[], b"");
    assert_eq!(status, 200, "{list}");
    let list: Value = serde_json::from_str(&list).unwrap();
    list["channels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["channel"].as_str().unwrap().starts_with("stream/"))
        .cloned()
        .collect()
}

/// Backfill: with history, the subscribe reply holds the stream's recent rows (the last frame
/// extended); without history, the last frame alone.
#[tokio::test]
async fn the_subscribe_reply_is_backfilled_from_history_only_where_history_is_kept() {
    let config = "[[history]]\npattern = \"stream/quiet/**\"\nsize = 0\nttl = \"1h\"\n\
                  [[history]]\npattern = \"stream/**\"\nsize = 100\nttl = \"1h\"\n";
    let d = Daemon::start_with_config(config, &[]);
    for stream in ["kept", "quiet"] {
        for i in 0..3 {
            let body = format!("m v={i}");
            let (status, _) = push(&d, &format!("/api/live/push/{stream}"), &body);
            assert_eq!(status, 200);
        }
    }
    let (_, kept) = subscriber(&d, "stream/kept/m").await;
    assert_eq!(
        kept["data"]["data"]["values"][2],
        json!([0, 1, 2]),
        "{kept}"
    );
    assert!(kept["data"]["schema"].is_object());
    let (_, quiet) = subscriber(&d, "stream/quiet/m").await;
    assert_eq!(quiet["data"]["data"]["values"][2], json!([2]), "{quiet}");
}

/// After a stream's first push (which the storage thread sequences and then hands over), its
/// pushes are published from memory where the connections are: in order, offsets without a
/// hole, schema once, and a late subscriber is answered from memory with the last frame. The
/// same without history (offset 0). Counted by `edgelive_sequenced_in_memory_total`.
#[tokio::test]
async fn a_managed_stream_is_published_from_memory_after_its_first_push() {
    let d = Daemon::start(&[("EDGELIVE_PUSH_BACKFILL", "{rows = 0}")]);
    let in_memory = "edgelive_sequenced_in_memory_total";
    let (mut a, _) = subscriber(&d, "stream/mem/m").await;
    for i in 1..=20 {
        // A new field at 10 changes the schema: sent again, from memory too.
        let body = match i {
            ..10 => format!("m,a=b v={i}"),
            _ => format!("m,a=b v={i},w=1"),
        };
        assert_eq!(push(&d, "/api/live/push/mem", &body).0, 200);
    }
    let mut schemas = Vec::new();
    for i in 1..=20u64 {
        let m = loop {
            let m = a.recv_non_ping().await;
            if m["push"]["pub"].is_object() {
                break m;
            }
        };
        let p = &m["push"]["pub"];
        assert_eq!(p["offset"], i, "{m}");
        assert_eq!(p["data"]["data"]["values"][2], json!([i]), "{m}");
        if p["data"].get("schema").is_some() {
            schemas.push(i);
        }
    }
    assert_eq!(schemas, [1, 10]);
    assert_eq!(d.metric(in_memory), 19);
    let (_late, res) = subscriber(&d, "stream/mem/m").await;
    assert_eq!(field_names(&res["data"]), ["labels", "time", "v", "w"]);
    assert_eq!(res["data"]["data"]["values"][2], json!([20]), "{res}");
    assert_eq!(res["offset"], 20, "{res}");

    let d = Daemon::start_with_config(
        "[[history]]\npattern = \"grafana/broadcast/*\"\nsize = 10\nttl = \"1m\"\n",
        &[],
    );
    let (mut a, _) = subscriber(&d, "stream/mem/m").await;
    for i in 1..=5 {
        assert_eq!(push(&d, "/api/live/push/mem", &format!("m v={i}")).0, 200);
    }
    for i in 1..=5 {
        let data = next_pub(&mut a).await;
        assert_eq!(data["data"]["values"][2], json!([i]), "{data}");
        assert_eq!(data.get("schema").is_some(), i == 1, "{data}");
    }
    assert_eq!(d.metric(in_memory), 4);
    let (_late, res) = subscriber(&d, "stream/mem/m").await;
    assert_eq!(res["data"]["data"]["values"][2], json!([5]), "{res}");
}
