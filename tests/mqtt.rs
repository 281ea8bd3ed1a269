//! MQTT bridges against a real Mosquitto (Debian's package), started here on a free loopback
//! port with its own directory, and stopped: payloads of every kind become frames on one
//! channel per topic or counted drops, retained values are there at start, and QoS 1 messages
//! queued for our persistent session while we were away arrive once, in order, across a
//! restart of the broker.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{call, eventually, free_port, http, Daemon, Peer};
use serde_json::{json, Value};

/// A Mosquitto of our own.
struct Mosquitto {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Mosquitto {
    /// Starts it on `port` with persistence in `dir` (kept across restarts), `extra` config.
    fn start(dir: &Path, port: u16, extra: &str) -> Mosquitto {
        // Run as root, Mosquitto drops to its own user: it must be able to write its
        // persistence file here.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {}/\nlog_dest stderr\n{extra}",
                dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (Debian package mosquitto; tests/run installs it)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "mosquitto did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Mosquitto {
            child,
            port,
            dir: dir.to_owned(),
        }
    }

    /// Stops it with SIGTERM (it writes its persistence file) and waits.
    fn stop(mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }

    fn publish(&self, topic: &str, payload: &[u8], args: &[&str]) {
        let file = self.dir.join("payload");
        std::fs::write(&file, payload).unwrap();
        let st = Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-q",
                "1",
                "-t",
                topic,
                "-f",
            ])
            .arg(&file)
            .args(args)
            .status()
            .expect("mosquitto_pub (Debian package mosquitto-clients)");
        assert!(st.success());
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bridge_config(port: u16, extra: &str) -> String {
    let clean = if extra.contains("clean_session") {
        ""
    } else {
        "clean_session = true\n"
    };
    format!(
        "[[mqtt]]\nbroker = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"edgelive-test\"\n{clean}\
         topics = [\"sensors/#\", \"plant/+/state\"]\nstream = \"mqtt\"\nmax_payload = 1024\n\
         backoff_min = \"100ms\"\nbackoff_max = \"500ms\"\n{extra}"
    )
}

fn metric(d: &Daemon, line_start: &str) -> Option<u64> {
    d.series(line_start.trim_end())
}

fn connected(d: &Daemon) -> bool {
    metric(d, "edgelive_mqtt_connected{bridge=\"edgelive-test\"} ") == Some(1)
}

fn dropped(d: &Daemon, cause: &str) -> u64 {
    metric(
        d,
        &format!("edgelive_mqtt_dropped_total{{bridge=\"edgelive-test\",cause=\"{cause}\"}} "),
    )
    .unwrap()
}

/// Every row of a channel's history: the publications' data, oldest first.
async fn rows(d: &Daemon, channel: &str) -> Vec<Value> {
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    let r = call(
        &mut p,
        9,
        "history",
        json!({"channel": channel, "limit": -1}),
    )
    .await;
    r["history"]["publications"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|p| p["data"].clone())
        .collect()
}

async fn wait_rows(d: &Daemon, channel: &str, n: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let r = rows(d, channel).await;
        if r.len() >= n || started.elapsed() > Duration::from_secs(15) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A new client's subscribe reply on `channel`.
async fn subscribe(d: &Daemon, channel: &str) -> Value {
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    call(&mut p, 2, "subscribe", json!({ "channel": channel })).await
}

/// The field names of a full frame.
fn names(frame: &Value) -> Vec<String> {
    frame["schema"]["fields"]
        .as_array()
        .unwrap_or_else(|| panic!("no schema: {frame}"))
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn payloads_become_frames_on_one_channel_per_topic_or_counted_drops() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path(), free_port(), "");
    let d = Daemon::start_with_config(&bridge_config(broker.port, ""), &[]);
    eventually("the bridge connects", || connected(&d));

    broker.publish(
        "sensors/room1/env",
        br#"{"env":{"t":21.5,"rh":40},"ok":true,"ts":1700000000}"#,
        &[],
    );
    broker.publish("sensors/bare", b"42", &[]);
    broker.publish("sensors/lp", b"env,room=a temp=20 1700000000000000000", &[]);
    broker.publish("sensors/a/x", b"1", &[]);
    broker.publish("sensors/b/x", b"2", &[]);
    broker.publish("plant/3/state", b"running", &[]);
    broker.publish("sensors/room 1", b"7", &[]);
    broker.publish("sensors/bin", &[0xff, 0xfe, 0x00], &[]);
    broker.publish("sensors/big", &vec![b'1'; 2000], &[]);
    broker.publish("sensors/deep", "[".repeat(100).as_bytes(), &[]);

    let env = wait_rows(&d, "stream/mqtt/sensors/room1/env", 1).await;
    assert_eq!(names(&env[0]), ["time", "env.rh", "env.t", "ok"]);
    assert_eq!(
        env[0]["data"]["values"],
        json!([[1700000000000u64], [40], [21.5], [true]])
    );
    let bare = wait_rows(&d, "stream/mqtt/sensors/bare", 1).await;
    assert_eq!(names(&bare[0]), ["time", "value"]);
    assert_eq!(bare[0]["data"]["values"][1], json!([42]));
    let lp = wait_rows(&d, "stream/mqtt/sensors/lp", 1).await;
    assert_eq!(names(&lp[0]), ["labels", "time", "temp"]);
    // A wildcard yields one channel per topic.
    assert_eq!(wait_rows(&d, "stream/mqtt/sensors/a/x", 1).await.len(), 1);
    assert_eq!(wait_rows(&d, "stream/mqtt/sensors/b/x", 1).await.len(), 1);
    let state = wait_rows(&d, "stream/mqtt/plant/3/state", 1).await;
    assert_eq!(state[0]["data"]["values"][1], json!(["running"]));
    // A topic outside the channel alphabet is escaped, reversibly.
    assert_eq!(
        wait_rows(&d, "stream/mqtt/sensors/room=201", 1).await.len(),
        1
    );
    let (_, list) = http(d.addr, "GET", "/api/live/list", &[], b"");
    assert!(list.contains("stream/mqtt/sensors/room=201"), "{list}");

    eventually("the drops are counted", || {
        dropped(&d, "not_utf8") == 1
            && dropped(&d, "too_large") == 1
            && dropped(&d, "too_deep") == 1
    });
    assert!(d.logged("mqtt message dropped"), "{}", d.log_text());
    assert_eq!(
        metric(
            &d,
            "edgelive_mqtt_messages_total{bridge=\"edgelive-test\"} "
        ),
        Some(10)
    );
    let (_, status) = http(d.addr, "GET", "/api/status", &[], b"");
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["mqtt"][0]["connected"], true, "{status}");
}

#[tokio::test]
async fn retained_values_are_the_initial_data() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path(), free_port(), "");
    broker.publish("sensors/setpoint", b"{\"c\":19.5}", &["-r"]);
    let d = Daemon::start_with_config(&bridge_config(broker.port, ""), &[]);
    eventually("the bridge connects", || connected(&d));
    wait_rows(&d, "stream/mqtt/sensors/setpoint", 1).await;
    let r = subscribe(&d, "stream/mqtt/sensors/setpoint").await;
    assert_eq!(
        r["subscribe"]["data"]["data"]["values"][1],
        json!([19.5]),
        "{r}"
    );
}

#[tokio::test]
async fn qos1_messages_queued_while_we_were_away_arrive_once_in_order_across_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker = Mosquitto::start(dir.path(), port, "");
    let config = bridge_config(port, "clean_session = false\n");
    let d = Daemon::start_with_config(&config, &[]);
    eventually("the bridge connects", || connected(&d));
    broker.publish("sensors/seq", b"0", &[]);
    assert_eq!(wait_rows(&d, "stream/mqtt/sensors/seq", 1).await.len(), 1);

    // We go away; the broker queues for our session, and restarts (its queue persisted).
    let mut restarted = None;
    let d = d.restart_after(false, || {
        for i in 1..=5 {
            broker.publish("sensors/seq", i.to_string().as_bytes(), &[]);
        }
        broker.stop();
        restarted = Some(Mosquitto::start(dir.path(), port, ""));
    });
    let broker = restarted.unwrap();
    eventually("the bridge reconnects", || connected(&d));
    let seq = wait_rows(&d, "stream/mqtt/sensors/seq", 6).await;
    let values: Vec<Value> = seq
        .iter()
        .map(|r| r["data"]["values"][1][0].clone())
        .collect();
    assert_eq!(
        values,
        json!([0, 1, 2, 3, 4, 5]).as_array().unwrap().clone()
    );
    // Nothing more comes: each was acknowledged once stored.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rows(&d, "stream/mqtt/sensors/seq").await.len(), 6);
    drop(broker);
}

/// A Mosquitto that wants a username and password (`mosquitto_passwd`).
fn with_password(dir: &Path, port: u16) -> Mosquitto {
    let file = dir.join("passwords");
    let st = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&file)
        .args(["bridge", "s3cret"])
        .status()
        .expect("mosquitto_passwd");
    assert!(st.success());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    Mosquitto::start(
        dir,
        port,
        &format!("allow_anonymous false\npassword_file {}\n", file.display()),
    )
}

#[tokio::test]
async fn a_password_protected_broker_and_client_publishes_written_back_to_the_topic() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = with_password(dir.path(), port);
    std::fs::write(dir.path().join("mqtt.password"), "s3cret\n").unwrap();
    let tokens = "[[auth.tokens]]\nname = \"ops\"\nrole = \"publisher\"\ntoken = \"publisher-token-0123456789\"\n\
                  [[auth.tokens]]\nname = \"eye\"\nrole = \"viewer\"\ntoken = \"viewer-token-0123456789\"\n";
    let config = format!(
        "{tokens}{}",
        bridge_config(
            port,
            &format!(
                "username = \"bridge\"\npassword_file = \"{}\"\npublish = true\n",
                dir.path().join("mqtt.password").display()
            )
        )
    );
    let d = Daemon::start_with_config(&config, &[]);
    let auth = [("Authorization", "Bearer publisher-token-0123456789")];
    let connected_with_token = |d: &Daemon| {
        let (_, text) = http(d.addr, "GET", "/metrics", &auth, b"");
        text.contains("edgelive_mqtt_connected{bridge=\"edgelive-test\"} 1")
    };
    eventually("the bridge logs in", || connected_with_token(&d));

    // What the bridge writes back reaches a subscriber of the topic.
    let mut sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-u",
            "bridge",
            "-P",
            "s3cret",
        ])
        .args(["-t", "actuators/#", "-v", "-C", "1", "-W", "20"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("{}?auth_token=publisher-token-0123456789", d.ws_url());
    let (mut p, _) = Peer::connected(&url).await;
    // mosquitto_sub says nothing once subscribed: publish until it has received one.
    for id in 2.. {
        let r = call(
            &mut p,
            id,
            "publish",
            json!({"channel": "stream/mqtt/actuators/valve=201", "data": {"open": true}}),
        )
        .await;
        assert_eq!(r, json!({"id": id, "publish": {}}));
        if sub.try_wait().unwrap().is_some() || id > 60 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let out = sub.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"actuators/valve 1 {"open":true}"#
    );
    // A viewer may not write back.
    let url = format!("{}?auth_token=viewer-token-0123456789", d.ws_url());
    let (mut v, _) = Peer::connected(&url).await;
    let r = call(
        &mut v,
        2,
        "publish",
        json!({"channel": "stream/mqtt/actuators/valve", "data": 1}),
    )
    .await;
    assert_eq!(r["error"]["code"], 103, "{r}");
    // With the broker away the publish is refused, not queued.
    broker.child.kill().unwrap();
    broker.child.wait().unwrap();
    eventually("the bridge sees the broker gone", || {
        !connected_with_token(&d)
    });
    let r = call(
        &mut p,
        100,
        "publish",
        json!({"channel": "stream/mqtt/actuators/valve", "data": 2}),
    )
    .await;
    assert_eq!(r["error"]["code"], 108, "{r}");
}

#[tokio::test]
async fn a_wrong_password_keeps_the_bridge_out_and_retrying() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = with_password(dir.path(), port);
    std::fs::write(dir.path().join("mqtt.password"), "wrong").unwrap();
    let config = bridge_config(
        port,
        &format!(
            "username = \"bridge\"\npassword_file = \"{}\"\n",
            dir.path().join("mqtt.password").display()
        ),
    );
    let d = Daemon::start_with_config(&config, &[]);
    eventually("it retries", || {
        metric(
            &d,
            "edgelive_mqtt_reconnects_total{bridge=\"edgelive-test\"} ",
        )
        .unwrap_or(0)
            >= 2
    });
    assert!(!connected(&d));
}

#[tokio::test]
async fn mqtts_with_the_brokers_ca_and_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d_ = dir.path();
    common::certificates(d_);
    let port = free_port();
    // The plain listener on `port` stays for mosquitto_pub; TLS on another port.
    let tls_port = free_port();
    let broker = Mosquitto::start(
        d_,
        port,
        &format!(
            "listener {tls_port} 127.0.0.1\ncafile {0}/ca.crt\ncertfile {0}/server.crt\n\
             keyfile {0}/server.key\nrequire_certificate true\n",
            d_.display()
        ),
    );
    let config = format!(
        "[[mqtt]]\nbroker = \"mqtts://127.0.0.1:{tls_port}\"\nclient_id = \"edgelive-test\"\n\
         topics = [\"sensors/#\"]\nca_file = \"{0}/ca.crt\"\ncert_file = \"{0}/client.crt\"\n\
         key_file = \"{0}/client.key\"\nbackoff_min = \"100ms\"\n",
        d_.display()
    );
    let d = Daemon::start_with_config(&config, &[]);
    eventually("the bridge connects over TLS", || connected(&d));
    broker.publish("sensors/tls", b"{\"t\":1}", &[]);
    let r = wait_rows(&d, "stream/mqtt/sensors/tls", 1).await;
    assert_eq!(r[0]["data"]["values"][1], json!([1]), "{r:?}");

    // Without the client certificate the broker refuses us: never connected, retrying.
    let config = format!(
        "[[mqtt]]\nbroker = \"mqtts://127.0.0.1:{tls_port}\"\nclient_id = \"edgelive-test\"\n\
         topics = [\"sensors/#\"]\nca_file = \"{0}/ca.crt\"\nbackoff_min = \"100ms\"\n",
        d_.display()
    );
    let refused = Daemon::start_with_config(&config, &[]);
    eventually("it retries", || {
        metric(
            &refused,
            "edgelive_mqtt_reconnects_total{bridge=\"edgelive-test\"} ",
        )
        .unwrap_or(0)
            >= 2
    });
    assert!(!connected(&refused));
}

/// centrifuge-js subscribes to an MQTT-fed stream and Grafana's StreamingDataFrame decodes
/// what arrives (nested JSON flattened, a field that comes and goes padded).
#[test]
fn grafana_streaming_data_frame_decodes_mqtt_messages() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path(), free_port(), "");
    let d = Daemon::start_with_config(&bridge_config(broker.port, ""), &[]);
    eventually("the bridge connects", || connected(&d));
    let clients = common::node_clients();
    let out = Command::new("node")
        .arg("js/mqtt.mjs")
        .env("EDGELIVE_URL", d.ws_url())
        .env("MQTT_PORT", broker.port.to_string())
        .current_dir(&clients)
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ok mqtt"),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log_text()
    );
}

/// A message storage refuses for good (more streams than `max_channels`) is acknowledged,
/// counted and logged, and the bridge goes on with the others.
#[tokio::test]
async fn messages_for_streams_beyond_the_limit_are_counted_and_the_bridge_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path(), free_port(), "");
    let config = format!(
        "[storage]\nmax_channels = 2\n{}",
        bridge_config(broker.port, "")
    );
    let d = Daemon::start_with_config(&config, &[]);
    eventually("the bridge connects", || connected(&d));
    for topic in ["sensors/a", "sensors/b", "sensors/c", "sensors/a"] {
        broker.publish(topic, b"1", &[]);
    }
    assert_eq!(wait_rows(&d, "stream/mqtt/sensors/a", 2).await.len(), 2);
    assert_eq!(dropped(&d, "refused"), 1);
    assert!(d.logged("storage refused it"), "{}", d.log_text());
}

/// With the Redis engine (`ha_engine = "redis"`, a real redis-server here), a retained value
/// the bridge is given again when it reconnects is compared in Redis with the stream's last
/// frame (its time aside) and not published again; a new value is.
#[tokio::test]
async fn retained_values_through_redis_are_not_published_again() {
    let dir = tempfile::tempdir().unwrap();
    let redis_port = free_port();
    struct Reap(Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _redis = Reap(
        Command::new("redis-server")
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (tests/run installs it)"),
    );
    let xlen = || -> Option<u64> {
        let client = ::redis::Client::open(format!("redis://127.0.0.1:{redis_port}")).ok()?;
        let mut conn = client.get_connection().ok()?;
        ::redis::cmd("XLEN")
            .arg("gf_live.stream.1/stream/mqtt/sensors/setpoint")
            .query(&mut conn)
            .ok()
    };
    eventually("redis-server answers", || xlen().is_some());
    let broker = Mosquitto::start(dir.path(), free_port(), "");
    broker.publish("sensors/setpoint", b"{\"c\":19.5}", &["-r"]);
    let config = format!(
        "{}[live]\nha_engine = \"redis\"\nha_engine_address = \"127.0.0.1:{redis_port}\"\n",
        bridge_config(broker.port, "")
    );
    let d = Daemon::start_with_config(&config, &[]);
    eventually("the bridge connects", || connected(&d));
    eventually("the retained value is in Redis", || xlen() == Some(1));
    // The bridge connects again and is given the retained value again: nothing new in Redis.
    let d = d.restart(false);
    eventually("the bridge reconnects", || connected(&d));
    broker.publish("sensors/setpoint", b"{\"c\":20}", &[]);
    eventually("the new value is in Redis", || xlen() >= Some(2));
    assert_eq!(xlen(), Some(2), "the retained value was published again");
    let r = subscribe(&d, "stream/mqtt/sensors/setpoint").await;
    assert_eq!(
        r["subscribe"]["data"]["data"]["values"][1],
        json!([19.5, 20]),
        "{r}"
    );
}

/// An MQTT-fed stream forwarded (`[[forward]]`) to a central edgelive: the central's channel is
/// the device's under the prefixed stream, with the fields and time the device made of the
/// message.
#[tokio::test]
async fn mqtt_streams_are_forwarded_to_a_central_on_the_same_channels() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path(), free_port(), "");
    let central = Daemon::start(&[]);
    let d = Daemon::start_with_config(
        &format!(
            "{}[[forward]]\nurl = \"http://{}/api/live/push/{{stream}}\"\nstreams = [\"mqtt\"]\nstream_prefix = \"pi-\"\nflush_interval = \"50ms\"\n",
            bridge_config(broker.port, ""),
            central.addr
        ),
        &[],
    );
    eventually("the bridge connects", || connected(&d));
    broker.publish(
        "sensors/room 1/env",
        br#"{"env":{"t":21.5},"ok":true,"note":"a b","ts":1700000000}"#,
        &[],
    );
    // Line protocol keeps its tags and types; the topic's path is its measurement there.
    broker.publish(
        "sensors/lp",
        b"env,room=a temp=20,n=3i 1700000000000000000",
        &[],
    );
    let local = wait_rows(&d, "stream/mqtt/sensors/room=201/env", 1).await;
    assert_eq!(local.len(), 1);
    let lp = wait_rows(&central, "stream/pi-mqtt/sensors/lp", 1).await;
    assert_eq!(lp.len(), 1, "the line-protocol message reached the central");
    assert_eq!(names(&lp[0]), ["labels", "time", "n", "temp"]);
    assert_eq!(
        lp[0]["data"]["values"],
        json!([["room=a"], [1700000000000u64], [3], [20]])
    );
    let far = wait_rows(&central, "stream/pi-mqtt/sensors/room=201/env", 1).await;
    assert_eq!(far.len(), 1, "nothing reached the central");
    let mut fields = names(&far[0]);
    fields.sort();
    assert_eq!(fields, ["env.t", "labels", "note", "ok", "time"]);
    let column = |name: &str| {
        let i = names(&far[0]).iter().position(|n| n == name).unwrap();
        far[0]["data"]["values"][i].clone()
    };
    assert_eq!(column("time"), json!([1700000000000u64]));
    assert_eq!(column("env.t"), json!([21.5]));
    assert_eq!(column("ok"), json!([true]));
    assert_eq!(column("note"), json!(["a b"]));
    let (_, status) = http(d.addr, "GET", "/api/status", &[], b"");
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["forward"][0]["sent_points"], 2, "{status}");
}
