//! The Redis engine (`[live] ha_engine = "redis"`) against a real `redis-server` (Debian's
//! package) started here on a free loopback port with its own directory: three edgelive nodes
//! share channels, history, recovery, presence and managed streams; the keys and payloads in
//! Redis are checked against Centrifuge's layout with protobufjs; a SIGKILLed node's presence
//! goes with the TTL; Redis lost and back.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    call, eventually, http, node_clients, subscribed, subscribed_with_history, Daemon, Peer,
};
use serde_json::{json, Value};

struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    /// Starts redis-server on a free port (no persistence: a restart loses everything).
    fn start(dir: &Path) -> Redis {
        // A port found free may be taken by another test's port-0 listener before Redis
        // binds it: then Redis exits, and another port is tried.
        for _ in 0..5 {
            if let Some(r) = Redis::start_on(dir, common::free_port()) {
                return r;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    fn start_on(dir: &Path, port: u16) -> Option<Redis> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server (tests/run installs it)");
        let mut r = Redis {
            child,
            port,
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while r.conn().is_none() {
            if r.child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(r)
    }

    fn conn(&self) -> Option<redis::Connection> {
        let c = redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).ok()?;
        let mut conn = c.get_connection().ok()?;
        redis::cmd("PING").query::<String>(&mut conn).ok()?;
        Some(conn)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops it and starts an empty one on the same port (the nodes know that one).
    fn restart(mut self) -> Redis {
        self.kill();
        let (dir, port) = (self.dir.clone(), self.port);
        drop(self);
        Redis::start_on(&dir, port).expect("redis-server restarts on its port")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn node(redis: &Redis, extra: &str) -> Daemon {
    let d = Daemon::start_with_config(
        &format!(
            "[live]\nha_engine = \"redis\"\nha_engine_address = \"127.0.0.1:{}\"\n{extra}",
            redis.port
        ),
        &[],
    );
    eventually("the node is connected to Redis", || healthy(&d));
    d
}

fn healthy(d: &Daemon) -> bool {
    http(d.addr, "GET", "/api/health", &[], b"").0 == 200
}

const PUSH_HEADERS: [(&str, &str); 2] = [
    ("Content-Type", "text/plain; charset=utf-8"),
    ("Authorization", "Bearer glsa_not_checked_yet"),
];

/// The next push on `ch` (other pushes and replies skipped).
async fn next_pub(p: &mut Peer, ch: &str) -> Value {
    loop {
        let m = p.recv_non_ping().await;
        if m["push"]["channel"] == ch && m["push"]["pub"].is_object() {
            return m["push"]["pub"].clone();
        }
    }
}

async fn publish(p: &mut Peer, id: u64, ch: &str, data: Value) -> Value {
    call(p, id, "publish", json!({"channel": ch, "data": data})).await
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Decodes protobuf bytes with protobufjs (`tests/clients/js/redis_decode.mjs`).
fn decode_with_protobufjs(publications: &[Vec<u8>], infos: &[Vec<u8>]) -> Value {
    let dir = node_clients();
    let mut child = Command::new("node")
        .arg("js/redis_decode.mjs")
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node");
    let input = json!({
        "publications": publications.iter().map(|p| hex(p)).collect::<Vec<_>>(),
        "client_infos": infos.iter().map(|p| hex(p)).collect::<Vec<_>>(),
    });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_channels_history_presence_and_streams() {
    let tmp = tempfile::tempdir().unwrap();
    let redis = Redis::start(tmp.path());
    let (a, b, c) = (node(&redis, ""), node(&redis, ""), node(&redis, ""));
    let ch = "grafana/broadcast/shared";

    // A client on each node, all on one history channel with presence and join/leave.
    let (mut pa, a_id) = Peer::connected(&a.ws_url()).await;
    let (mut pb, b_id) = Peer::connected(&b.ws_url()).await;
    let (mut pc, c_id) = Peer::connected(&c.ws_url()).await;
    let ra = subscribed_with_history(
        &call(&mut pa, 1, "subscribe", json!({"channel": ch})).await,
        1,
    );
    let epoch = ra["epoch"].as_str().unwrap().to_owned();
    subscribed_with_history(
        &call(&mut pb, 1, "subscribe", json!({"channel": ch})).await,
        1,
    );
    let rc = subscribed_with_history(
        &call(&mut pc, 1, "subscribe", json!({"channel": ch})).await,
        1,
    );
    assert_eq!(rc["epoch"], epoch, "one epoch in Redis for every node");

    // B's client publishes: A's receives it with B's info and Redis's offset.
    assert_eq!(
        publish(&mut pb, 2, ch, json!({"n": 1})).await,
        json!({"id": 2, "publish": {}})
    );
    let p1 = next_pub(&mut pa, ch).await;
    assert_eq!(p1["data"], json!({"n": 1}));
    assert_eq!(p1["offset"], 1);
    assert_eq!(p1["info"]["client"], b_id.as_str());
    assert_eq!(next_pub(&mut pc, ch).await["offset"], 1);

    // Presence on A lists the clients of all three nodes.
    let pr = call(&mut pa, 3, "presence", json!({"channel": ch})).await;
    let mut present: Vec<String> = pr["presence"]["presence"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    present.sort();
    let mut want = vec![a_id.clone(), b_id.clone(), c_id.clone()];
    want.sort();
    assert_eq!(present, want, "{pr}");
    let st = call(&mut pb, 4, "presence_stats", json!({"channel": ch})).await;
    assert_eq!(st["presence_stats"]["num_clients"], 3, "{st}");

    // C's push API: A's subscriber of the managed stream gets the frame; a later subscriber on
    // B gets the last frame (kept in Redis) as its subscribe data.
    let stream = "stream/plant/line";
    subscribed(
        &call(&mut pa, 5, "subscribe", json!({"channel": stream})).await,
        5,
    );
    let (st, body) = http(
        c.addr,
        "POST",
        "/api/live/push/plant",
        &PUSH_HEADERS,
        b"line,site=a temp=21.5 1700000000000000000\n",
    );
    assert_eq!(st, 200, "{body}");
    let frame = next_pub(&mut pa, stream).await;
    assert_eq!(frame["data"]["schema"]["name"], "line", "{frame}");
    assert_eq!(frame["data"]["data"]["values"][2], json!([21.5]), "{frame}");
    // The same schema again (from A this time): data only, as the last frame in Redis decides.
    let (st, body) = http(
        a.addr,
        "POST",
        "/api/live/push/plant",
        &PUSH_HEADERS,
        b"line,site=a temp=22.5 1700000001000000000\n",
    );
    assert_eq!(st, 200, "{body}");
    let second = next_pub(&mut pa, stream).await;
    assert!(second["data"]["schema"].is_null(), "{second}");
    assert_eq!(
        second["data"]["data"]["values"][2],
        json!([22.5]),
        "{second}"
    );
    // A subscriber on B: the last frame with both rows backfilled from the history in Redis.
    let late = subscribed(
        &call(&mut pb, 6, "subscribe", json!({"channel": stream})).await,
        6,
    );
    assert_eq!(late["data"]["schema"]["name"], "line", "{late}");
    // Every node lists the stream, pushed through others.
    let (st, body) = http(b.addr, "GET", "/api/live/list", &[], b"");
    assert_eq!(st, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    let listed = list["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == stream)
        .unwrap_or_else(|| panic!("{list}"))
        .clone();
    assert_eq!(listed["data"]["schema"]["name"], "line", "{listed}");
    assert!(
        listed["last_ms"].as_u64().unwrap() > 1_700_000_000_000,
        "{listed}"
    );
    assert_eq!(
        late["data"]["data"]["values"][2],
        json!([21.5, 22.5]),
        "{late}"
    );

    // Recovery across nodes: A's client goes away at offset 1; three more are published; it
    // comes back on B and gets exactly those.
    drop(pa);
    for n in 2..=4 {
        assert_eq!(
            publish(&mut pb, 10 + n, ch, json!({"n": n})).await["publish"],
            json!({})
        );
    }
    let (mut back, _) = Peer::connected(&b.ws_url()).await;
    let r = subscribed(
        &call(
            &mut back,
            1,
            "subscribe",
            json!({"channel": ch, "recover": true, "offset": 1, "epoch": epoch}),
        )
        .await,
        1,
    );
    assert_eq!(r["recovered"], true, "{r}");
    let offsets: Vec<u64> = r["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [2, 3, 4], "{r}");
    assert_eq!(r["publications"][2]["data"], json!({"n": 4}));

    // The layout in Redis, read raw.
    let mut conn = redis.conn().unwrap();
    let key = format!("1/{ch}");
    let meta: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("gf_live.stream.meta.{key}"))
        .query(&mut conn)
        .unwrap();
    assert_eq!(meta["e"], epoch);
    assert_eq!(meta["s"], "4");
    let entries: Entries = redis::cmd("XRANGE")
        .arg(format!("gf_live.stream.{key}"))
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .unwrap();
    let ids: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(ids, ["1-0", "2-0", "3-0", "4-0"]);
    assert_eq!(entries[0].1[0].0, "d");
    let infos: std::collections::HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
        .arg(format!("gf_live.presence.data.{key}"))
        .query(&mut conn)
        .unwrap();
    let expiry: Vec<(String, u64)> = redis::cmd("ZRANGE")
        .arg(format!("gf_live.presence.expire.{key}"))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(&mut conn)
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        expiry
            .iter()
            .all(|(c, at)| infos.contains_key(c) && *at > now),
        "{expiry:?}"
    );
    let cached: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg("gf_live.managed_stream.1/stream/plant/line")
        .query(&mut conn)
        .unwrap();
    let schema: Value = serde_json::from_str(&cached["schema"]).unwrap();
    assert_eq!(schema["schema"]["name"], "line");
    let cached_frame: Value = serde_json::from_str(&cached["frame"]).unwrap();
    assert_eq!(cached_frame["data"]["values"][2], json!([22.5]));

    // A raw pub/sub message: Centrifuge's `__p1:<offset>:<epoch>__` header, then the protobuf.
    let client = redis::Client::open(format!("redis://127.0.0.1:{}", redis.port)).unwrap();
    let mut sub_conn = client.get_connection().unwrap();
    let mut ps = sub_conn.as_pubsub();
    ps.subscribe(format!("gf_live.client.{key}")).unwrap();
    ps.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(
        publish(&mut pb, 20, ch, json!({"n": 5})).await["publish"],
        json!({})
    );
    let raw: Vec<u8> = ps.get_message().unwrap().get_payload_bytes().to_vec();
    let header = format!("__p1:5:{epoch}__");
    assert!(
        raw.starts_with(header.as_bytes()),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );

    let decoded = decode_with_protobufjs(
        &[entries[0].1[0].1.clone(), raw[header.len()..].to_vec()],
        &infos.values().cloned().collect::<Vec<_>>(),
    );
    assert_eq!(
        decoded["publications"][0]["data"],
        json!({"n": 1}),
        "{decoded}"
    );
    assert_eq!(
        decoded["publications"][0]["info"]["client"],
        b_id.as_str(),
        "{decoded}"
    );
    assert!(decoded["publications"][0]["time"].as_u64().unwrap() > 1_700_000_000_000);
    assert_eq!(
        decoded["publications"][1]["data"],
        json!({"n": 5}),
        "{decoded}"
    );
    let mut clients: Vec<String> = decoded["client_infos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["client"].as_str().unwrap().to_owned())
        .collect();
    clients.sort();
    assert!(
        clients.contains(&b_id) && clients.contains(&c_id),
        "{decoded}"
    );
}

/// The client ids present on `ch`, sorted.
async fn present(p: &mut Peer, ch: &str) -> Vec<String> {
    let r = call(p, 9, "presence", json!({"channel": ch})).await;
    let mut v: Vec<String> = r["presence"]["presence"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    v.sort();
    v
}

/// XRANGE's reply: (entry id, [(field, value)]).
type Entries = Vec<(String, Vec<(String, Vec<u8>)>)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_presence_goes_with_the_ttl() {
    let tmp = tempfile::tempdir().unwrap();
    let redis = Redis::start(tmp.path());
    // Refreshed every 25/60 of it (1.7 s): a margin of over 2 s for a refresh delayed on a
    // loaded machine, and still well under the waits below.
    let ttl = "ha_presence_ttl = \"4s\"\n";
    let (a, mut c) = (node(&redis, ttl), node(&redis, ttl));
    let ch = "grafana/broadcast/ghosts";
    let (mut pa, a_id) = Peer::connected(&a.ws_url()).await;
    let (mut pc, c_id) = Peer::connected(&c.ws_url()).await;
    subscribed(
        &call(&mut pa, 1, "subscribe", json!({"channel": ch})).await,
        1,
    );
    subscribed(
        &call(&mut pc, 1, "subscribe", json!({"channel": ch})).await,
        1,
    );
    let mut both = vec![a_id.clone(), c_id.clone()];
    both.sort();
    assert_eq!(present(&mut pa, ch).await, both);
    c.kill();
    // Well past the TTL, A's own client is still there (its node refreshes it); C's is gone.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = present(&mut pa, ch).await;
        if now == [a_id.clone()] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "C's client still present: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(present(&mut pa, ch).await, std::slice::from_ref(&a_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lost_and_back_refuses_then_recovers_without_a_silent_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let redis = Redis::start(tmp.path());
    let (a, b) = (node(&redis, ""), node(&redis, ""));
    let ch = "grafana/broadcast/outage";
    let (mut pa, _) = Peer::connected(&a.ws_url()).await;
    let (mut pb, _) = Peer::connected(&b.ws_url()).await;
    let r = subscribed_with_history(
        &call(&mut pa, 1, "subscribe", json!({"channel": ch})).await,
        1,
    );
    let epoch = r["epoch"].as_str().unwrap().to_owned();
    for n in 1..=2 {
        assert_eq!(
            publish(&mut pb, n, ch, json!({"n": n})).await["publish"],
            json!({})
        );
        assert_eq!(next_pub(&mut pa, ch).await["offset"], n);
    }

    // Redis goes away: refused at once, health degraded, clients stay connected.
    let _redis = {
        let mut redis = redis;
        redis.kill();
        eventually("A reports degraded", || !healthy(&a));
        let refused = publish(&mut pb, 10, ch, json!({"n": 3})).await;
        assert_eq!(refused["error"]["code"], 100, "{refused}");
        let (st, body) = http(
            a.addr,
            "POST",
            "/api/live/push/plant",
            &PUSH_HEADERS,
            b"m v=1\n",
        );
        assert_eq!(st, 503, "{body}");
        let (st, body) = http(a.addr, "GET", "/api/health", &[], b"");
        assert_eq!(st, 503);
        assert!(body.contains("degraded"), "{body}");
        assert!(a.metric("edgelive_redis_refused_total") >= 1);
        redis.restart()
    };
    eventually("A is healthy again", || healthy(&a));
    eventually("B is healthy again", || healthy(&b));

    // Redis came back empty (a new epoch): A's client is told to resubscribe, and its recovery
    // reports what it cannot give instead of a silent gap.
    loop {
        let m = pa.recv_non_ping().await;
        assert!(
            m["push"]["pub"].is_null(),
            "a publication before the resubscribe: {m}"
        );
        if m["push"]["unsubscribe"].is_object() {
            assert_eq!(m["push"]["unsubscribe"]["code"], 2500, "{m}");
            break;
        }
    }
    let r = subscribed(
        &call(
            &mut pa,
            2,
            "subscribe",
            json!({"channel": ch, "recover": true, "offset": 2, "epoch": epoch}),
        )
        .await,
        2,
    );
    assert_eq!(r["was_recovering"], true, "{r}");
    assert!(r.get("recovered").is_none(), "{r}");
    assert_ne!(r["epoch"], epoch, "{r}");
    assert_eq!(
        publish(&mut pb, 11, ch, json!({"n": 4})).await["publish"],
        json!({})
    );
    let p = next_pub(&mut pa, ch).await;
    assert_eq!(p["data"], json!({"n": 4}));
    assert_eq!(p["offset"], 1);
    assert!(a.metric("edgelive_redis_pubsub_reconnects_total") >= 1);
}

/// A connection that subscribes, unsubscribes and subscribes again at once, or goes away
/// while its subscribe is under way, leaves nothing behind: every command answered, the last
/// subscribe in force, no presence entry and no Redis subscription once it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribes_racing_leaves_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let redis = Redis::start(tmp.path());
    let (a, b) = (node(&redis, ""), node(&redis, ""));
    let ch = "grafana/broadcast/races";
    let (mut observer, observer_id) = Peer::connected(&b.ws_url()).await;
    subscribed(
        &call(&mut observer, 1, "subscribe", json!({"channel": ch})).await,
        1,
    );
    for round in 0..10u64 {
        let (mut p, p_id) = Peer::connected(&a.ws_url()).await;
        // Three commands in one frame: subscribe, unsubscribe, subscribe.
        p.send(&format!(
            "{}\n{}\n{}",
            json!({"id": 1, "subscribe": {"channel": ch}}),
            json!({"id": 2, "unsubscribe": {"channel": ch}}),
            json!({"id": 3, "subscribe": {"channel": ch}}),
        ))
        .await;
        let mut answered = std::collections::BTreeSet::new();
        while answered.len() < 3 {
            let m = p.recv_non_ping().await;
            if let Some(id) = m["id"].as_u64() {
                assert!(m.get("error").is_none(), "round {round}: {m}");
                answered.insert(id);
            }
        }
        // The last subscribe is in force: a publication from B arrives, once.
        assert_eq!(
            publish(&mut observer, 10 + round, ch, json!({"round": round})).await["publish"],
            json!({})
        );
        assert_eq!(next_pub(&mut p, ch).await["data"]["round"], round);
        // And it is present: the first subscribe's undoing did not take the last one's entry.
        let listed = present(&mut observer, ch).await;
        assert!(listed.contains(&p_id), "round {round}: {listed:?}");
        // A subscribe under way when its connection goes.
        let (mut gone, _) = Peer::connected(&a.ws_url()).await;
        gone.send(&json!({"id": 1, "subscribe": {"channel": ch}}).to_string())
            .await;
        drop(gone);
        drop(p);
    }
    eventually("only the observer is present", || {
        let mut conn = redis.conn().unwrap();
        let present: Vec<String> = redis::cmd("HKEYS")
            .arg(format!("gf_live.presence.data.1/{ch}"))
            .query(&mut conn)
            .unwrap();
        present == [observer_id.clone()]
    });
    eventually("A holds no Redis subscription", || {
        a.metric("edgelive_redis_pubsub_channels") == 0
    });
    // And stays so past a presence refresh (no entry kept to be refreshed back).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        present(&mut observer, ch).await,
        std::slice::from_ref(&observer_id)
    );
}

/// `rediss://` with a CA file and a password from a file; a node started before Redis, and
/// one with the wrong password, are degraded until they can work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_ca_file_and_a_password_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    common::certificates(dir);
    std::fs::write(dir.join("redis.pass"), "s3cret-for-tests\n").unwrap();
    std::fs::write(dir.join("wrong.pass"), "not-it\n").unwrap();
    // Held until Redis starts, so that no other test's port-0 listener takes it meanwhile (the
    // node connects to it and gets no answer: degraded, as with no Redis at all).
    let hold = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hold.local_addr().unwrap().port();
    let config = |pass: &str| {
        format!(
            "[live]\nha_engine = \"redis\"\nha_engine_address = \"rediss://127.0.0.1:{port}\"\n\
             ha_engine_ca_file = \"{}\"\nha_engine_password_file = \"{}\"\n",
            dir.join("ca.crt").display(),
            dir.join(pass).display()
        )
    };
    // Redis is not there yet: the node serves, degraded.
    let a = Daemon::start_with_config(&config("redis.pass"), &[]);
    let (st, body) = http(a.addr, "GET", "/api/health", &[], b"");
    assert_eq!(st, 503, "{body}");
    drop(hold);
    let mut redis = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
        .args([
            "--tls-cert-file",
            "server.crt",
            "--tls-key-file",
            "server.key",
        ])
        .args([
            "--tls-ca-cert-file",
            "ca.crt",
            "--requirepass",
            "s3cret-for-tests",
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server");
    struct Reap<'a>(&'a mut Child);
    impl Drop for Reap<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _reap = Reap(&mut redis);
    eventually("the node reaches Redis over TLS", || healthy(&a));
    let wrong = Daemon::start_with_config(&config("wrong.pass"), &[]);
    std::thread::sleep(Duration::from_secs(1));
    assert!(!healthy(&wrong), "a wrong password must not look healthy");
    // It works: a history publication round trip through Redis over TLS.
    let ch = "grafana/broadcast/tls";
    let (mut p, _) = Peer::connected(&a.ws_url()).await;
    subscribed_with_history(
        &call(&mut p, 1, "subscribe", json!({"channel": ch})).await,
        1,
    );
    assert_eq!(
        publish(&mut p, 2, ch, json!({"over": "tls"})).await["publish"],
        json!({})
    );
    let got = next_pub(&mut p, ch).await;
    assert_eq!(got["data"], json!({"over": "tls"}));
    assert_eq!(got["offset"], 1);
}

/// A server-side subscription (a JWT's `channels`) whose position fell into a gap is ended by
/// closing its connection with 3010 "insufficient state" (its client reconnects and recovers),
/// since only the server can subscribe it again; as Centrifuge does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_side_subscription_in_a_gap_reconnects() {
    let tmp = tempfile::tempdir().unwrap();
    let redis = Redis::start(tmp.path());
    let secret = "redis-test-jwt-secret-0123456789";
    let a = node(&redis, &format!("[auth]\njwt_hmac_secret = \"{secret}\"\n"));
    let ch = "grafana/broadcast/server-side";
    let t = edgelive::auth::jwt::sign(
        &edgelive::auth::jwt::Claims {
            sub: "kiosk".into(),
            channels: vec![ch.into()],
            ..Default::default()
        },
        secret.as_bytes(),
    );
    let mut p = Peer::connect(&a.ws_url()).await;
    p.send(&json!({"id": 1, "connect": {"token": t}}).to_string())
        .await;
    // The connect reply, then the subscribe push of the server-side subscription.
    loop {
        let m = p.recv_non_ping().await;
        if m["push"]["subscribe"].is_object() {
            assert_eq!(m["push"]["subscribe"]["recoverable"], true, "{m}");
            break;
        }
    }
    let redis = redis.restart();
    // Redis came back empty (a new epoch): the connection is closed with 3010.
    match p.until_closed(Duration::from_secs(20)).await {
        common::Ended::Close(code, reason) => {
            assert_eq!((code, reason.as_str()), (3010, "insufficient state"))
        }
        other => panic!("expected close 3010, got {other:?}"),
    }
    drop(redis);
}
