//! `[[forward]]`: an edge daemon forwarding its pushed streams to a central one (both the real
//! binary on loopback), through an outage of the central and a SIGKILL of the edge; and
//! against a fake central (a socket this test answers by hand) for what a real one does not
//! do on demand: refuse a batch, answer late, ask for smaller bodies.

mod common;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{call, eventually, free_port, http, subscribed, Daemon, Peer};
use serde_json::{json, Value};

const TOKEN: &str = "central-token-0123456789abcdef";

/// A central edgelive: a token for the edge, history for every stream.
fn central(port: u16) -> Daemon {
    Daemon::start_with_config_on(
        &format!("127.0.0.1:{port}"),
        &format!(
            r#"
[storage]
max_read = 10000
[[history]]
pattern = "stream/**"
size = 10000
ttl = "1h"
[[auth.tokens]]
name = "edge"
role = "publisher"
token = "{TOKEN}"
"#
        ),
        &[],
    )
}

/// An edge whose `[[forward]]` table is `forward` (plus fast retries).
fn edge(forward: &str) -> Daemon {
    Daemon::start_with_config(
        &format!(
            "[[forward]]\nretry_min = \"100ms\"\nretry_max = \"400ms\"\nflush_interval = \"50ms\"\n{forward}"
        ),
        &[],
    )
}

fn push(d: &Daemon, stream: &str, body: &str) -> (u16, String) {
    http(
        d.addr,
        "POST",
        &format!("/api/live/push/{stream}"),
        &[],
        body.as_bytes(),
    )
}

/// The edge's `/api/status` entry for its first target.
fn target_status(d: &Daemon) -> Value {
    let (st, body) = http(d.addr, "GET", "/api/status", &[], b"");
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["forward"][0].clone()
}

fn labelled_metric(d: &Daemon, series: &str) -> u64 {
    d.series(series)
        .unwrap_or_else(|| panic!("{series} not in /metrics"))
}

/// Point `i`: value `i`, a timestamp with a sub-millisecond part.
fn point(i: u64) -> String {
    format!("m v={i} {}\n", ts(i))
}

fn ts(i: u64) -> i64 {
    1_700_000_000_000_000_000 + i as i64 * 1_000_123
}

/// `(time ns, v)` rows of a managed-stream publication's frame (Grafana's `labels_column`
/// layout: labels, time, then the fields).
fn rows(data: &Value) -> Vec<(i64, u64)> {
    let frame = &data["data"];
    let times = frame["values"][1].as_array().expect("a time column");
    let values = frame["values"][2].as_array().expect("a value column");
    let nanos = frame["nanos"][1].as_array();
    times
        .iter()
        .zip(values)
        .enumerate()
        .map(|(r, (t, v))| {
            let extra = nanos.map_or(0, |n| {
                n[r].as_i64().unwrap_or_else(|| panic!("nanos in {data}"))
            });
            (
                t.as_i64().unwrap_or_else(|| panic!("time in {data}")) * 1_000_000 + extra,
                v.as_f64().unwrap() as u64,
            )
        })
        .collect()
}

/// A connected peer on the central (with the token).
async fn central_peer(c: &Daemon) -> Peer {
    let (p, _) = Peer::connected(&format!("{}?auth_token={TOKEN}", c.ws_url())).await;
    p
}

/// Every row the central's history holds for `channel`, in order.
async fn central_rows(c: &Daemon, channel: &str) -> Vec<(i64, u64)> {
    let mut p = central_peer(c).await;
    let h = call(
        &mut p,
        9,
        "history",
        json!({"channel": channel, "limit": -1}),
    )
    .await;
    let pubs = h["history"]["publications"]
        .as_array()
        .unwrap_or_else(|| panic!("{h}"));
    pubs.iter().flat_map(|p| rows(&p["data"])).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_reach_the_central_once_in_order_through_an_outage_and_a_kill() {
    let c = central(free_port());
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("central.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let mut edge_daemon = Some(edge(&format!(
        "name = \"central\"\nurl = \"http://{}/api/live/push/{{stream}}\"\ntoken_file = \"{}\"\nstreams = [\"plant*\"]\nstream_prefix = \"pi-17-\"\ngzip = true\n",
        c.addr,
        token.display()
    )));
    let e = edge_daemon.as_ref().unwrap();
    const CH: &str = "stream/pi-17-plant1/m";

    // Live: a subscriber on the central sees each point with its value and exact time.
    let mut sub = central_peer(&c).await;
    subscribed(
        &call(&mut sub, 2, "subscribe", json!({"channel": CH})).await,
        2,
    );
    let mut next = 0u64;
    for _ in 0..10 {
        assert_eq!(push(e, "plant1", &point(next)).0, 200);
        next += 1;
    }
    // A stream no pattern names stays on the edge.
    assert_eq!(push(e, "other", "m v=1\n").0, 200);
    let mut seen = Vec::new();
    while seen.len() < 10 {
        let m = sub.recv_non_ping().await;
        if m["push"]["pub"].is_object() {
            seen.extend(rows(&m["push"]["pub"]["data"]));
        }
    }
    let expected: Vec<(i64, u64)> = (0..10).map(|i| (ts(i), i)).collect();
    assert_eq!(seen, expected);
    eventually("the queue to drain", || {
        target_status(e)["queue_points"] == 0
    });

    // The central goes away; the edge keeps accepting, and is killed and restarted meanwhile.
    let c = c.restart_after(false, || {
        let e = edge_daemon.as_ref().unwrap();
        for _ in 0..100 {
            assert_eq!(push(e, "plant1", &point(next)).0, 200);
            next += 1;
        }
        eventually("the target to retry", || {
            target_status(e)["state"] == "retrying"
        });
        let s = target_status(e);
        assert_eq!(s["queue_points"], 100, "{s}");
        assert!(s["last_error"].as_str().unwrap().contains("connect"), "{s}");
        assert!(s["oldest_age_seconds"].as_f64().unwrap() >= 0.0, "{s}");
        let body: String = (0..50).map(|i| point(next + i)).collect();
        assert_eq!(push(e, "plant1", &body).0, 200);
        next += 50;
        let killed = edge_daemon.take().unwrap();
        edge_daemon = Some(killed.restart(true));
        let e = edge_daemon.as_ref().unwrap();
        let s = target_status(e);
        assert_eq!(s["queue_points"], 150, "the queue outlived SIGKILL: {s}");
        for _ in 0..50 {
            assert_eq!(push(e, "plant1", &point(next)).0, 200);
            next += 1;
        }
    });
    let e = edge_daemon.as_ref().unwrap();
    assert!(e.logged("forwarding queue loaded"), "{}", e.log_text());

    eventually("the edge to catch up", || {
        let s = target_status(e);
        s["queue_points"] == 0 && s["state"] == "ok"
    });
    assert!(e.logged("forwarding resumed"), "{}", e.log_text());
    let expected: Vec<(i64, u64)> = (0..next).map(|i| (ts(i), i)).collect();
    assert_eq!(
        central_rows(&c, CH).await,
        expected,
        "every point once, in order"
    );
    assert_eq!(
        labelled_metric(e, "edgelive_forward_queue_points{target=\"central\"}"),
        0
    );
    assert_eq!(
        labelled_metric(e, "edgelive_forward_state{target=\"central\",state=\"ok\"}"),
        1
    );
    let s = target_status(e);
    assert_eq!(
        s["dropped"],
        json!({"damaged": 0, "queue_full": 0, "refused": 0, "rejected": 0})
    );
}

/// One request the fake central received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How the fake central answers a request.
enum Reply {
    Status(u16, &'static str),
    /// Answers 204 (without `Connection: close`) and closes the connection, as a server
    /// whose keep-alive timeout ran out.
    NoContentThenClose,
    /// Reads the request and never answers.
    Hang,
}

type Answerer = Box<dyn FnMut(&Received) -> Reply + Send>;

/// An HTTP/1.1 server on a loopback port, answering as `answer` says and keeping every
/// request it answered 2xx.
struct FakeCentral {
    addr: SocketAddr,
    accepted: Arc<Mutex<Vec<Received>>>,
    seen: Arc<Mutex<usize>>,
    answer: Arc<Mutex<Answerer>>,
    stop: Arc<AtomicBool>,
}

impl FakeCentral {
    fn start(answer: Answerer) -> FakeCentral {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let f = FakeCentral {
            addr: listener.local_addr().unwrap(),
            accepted: Default::default(),
            seen: Default::default(),
            answer: Arc::new(Mutex::new(answer)),
            stop: Default::default(),
        };
        let (accepted, seen, answer, stop) = (
            f.accepted.clone(),
            f.seen.clone(),
            f.answer.clone(),
            f.stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (accepted, seen, answer, stop) =
                            (accepted.clone(), seen.clone(), answer.clone(), stop.clone());
                        std::thread::spawn(move || serve(s, accepted, seen, answer, stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        f
    }

    fn set(&self, answer: Answerer) {
        *self.answer.lock().unwrap() = answer;
    }

    /// The bodies' lines it accepted, in order.
    fn lines(&self) -> Vec<String> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| r.body.lines().map(str::to_owned).collect::<Vec<_>>())
            .collect()
    }
}

impl Drop for FakeCentral {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    s: TcpStream,
    accepted: Arc<Mutex<Vec<Received>>>,
    seen: Arc<Mutex<usize>>,
    answer: Arc<Mutex<Answerer>>,
    stop: Arc<AtomicBool>,
) {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut out = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    while !stop.load(Ordering::Relaxed) {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue
            }
            Err(_) => return,
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut raw = vec![0; len];
        r.get_mut()
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        if r.read_exact(&mut raw).is_err() {
            return;
        }
        r.get_mut()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let gzip = headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("content-encoding") && v == "gzip");
        let body = if gzip {
            let mut s = String::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_string(&mut s)
                .unwrap();
            s
        } else {
            String::from_utf8(raw).unwrap()
        };
        let req = Received {
            path,
            headers,
            body,
        };
        *seen.lock().unwrap() += 1;
        let reply = (answer.lock().unwrap())(&req);
        match reply {
            Reply::Hang => {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            Reply::NoContentThenClose => {
                accepted.lock().unwrap().push(req);
                let _ = out.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
                return;
            }
            Reply::Status(code, extra) => {
                if (200..300).contains(&code) {
                    accepted.lock().unwrap().push(req);
                }
                let body = format!("{{\"status\":{code}}}");
                let msg = format!(
                    "HTTP/1.1 {code} X\r\nContent-Length: {}\r\n{extra}\r\n{body}",
                    body.len()
                );
                if out.write_all(msg.as_bytes()).is_err() {
                    return;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_lines_a_refused_batch_does_not_block_and_413_splits() {
    let fake = FakeCentral::start(Box::new(|_| Reply::Status(204, "")));
    let e = &edge(&format!(
        "url = \"http://{}/push/{{stream}}?org=1\"\ntoken = \"abc\"\nstreams = [\"s*\"]\nstream_prefix = \"dev7.\"\n",
        fake.addr
    ));
    // Names, tags and field types as pushed; timestamps in nanoseconds; the receive time
    // where a line had none; `precision` applied.
    let body = "cpu,host=a\\,b,k\\ 1=v\\=w f\\ x=1.5,i=-3i,u=7u,b=t,s=\"q\\\"x\" 1700000000123\nmem free=2\n";
    let (st, text) = http(
        e.addr,
        "POST",
        "/api/live/push/s1?precision=ms",
        &[],
        body.as_bytes(),
    );
    assert_eq!(st, 200, "{text}");
    eventually("the batch to arrive", || fake.lines().len() == 2);
    let got = fake.accepted.lock().unwrap()[0].clone();
    assert_eq!(got.path, "/push/dev7.s1?org=1");
    assert_eq!(got.header("authorization"), Some("Bearer abc"));
    assert_eq!(got.header("content-encoding"), None);
    assert_eq!(
        got.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let lines = fake.lines();
    assert_eq!(
        lines[0],
        "cpu,host=a\\,b,k\\ 1=v\\=w f\\ x=1.5,i=-3i,u=7u,b=true,s=\"q\\\"x\" 1700000000123000000"
    );
    let (head, stamp) = lines[1].rsplit_once(' ').unwrap();
    assert_eq!(head, "mem free=2.0");
    assert!(stamp.parse::<i64>().unwrap() > 1_700_000_000_000_000_000);
    // The wide layout is asked for as it was pushed.
    assert_eq!(
        http(
            e.addr,
            "POST",
            "/api/live/push/s2?gf_live_frame_format=wide",
            &[],
            b"w v=1 5\n"
        )
        .0,
        200
    );
    eventually("the wide batch", || fake.lines().len() == 3);
    assert_eq!(
        fake.accepted.lock().unwrap()[1].path,
        "/push/dev7.s2?org=1&gf_live_frame_format=wide"
    );

    // The central refuses one batch for good (400): it is dropped, counted, logged, and the
    // next one goes through.
    fake.set(Box::new(|r| match r.body.contains("poison") {
        true => Reply::Status(400, ""),
        false => Reply::Status(204, ""),
    }));
    assert_eq!(push(e, "s1", "poison v=1 1\npoison v=2 2\n").0, 200);
    eventually("the rejected batch to be dropped", || {
        target_status(e)["dropped"]["rejected"] == 2
    });
    assert!(
        e.logged("the far side refused a batch that retrying cannot change; dropped"),
        "{}",
        e.log_text()
    );
    assert_eq!(push(e, "s1", "after v=1 3\n").0, 200);
    eventually("the next batch", || {
        fake.lines().last().map(String::as_str) == Some("after v=1.0 3")
    });

    // 503 holds points back; then 413 for any body over three lines splits the batch until
    // each part fits, and nothing is dropped.
    fake.set(Box::new(|_| Reply::Status(503, "Retry-After: 0\r\n")));
    for i in 0..8 {
        assert_eq!(push(e, "s1", &format!("split v={i} {i}\n")).0, 200);
    }
    eventually("the target to retry", || {
        target_status(e)["state"] == "retrying"
    });
    let before = fake.lines().len();
    fake.set(Box::new(|r| match r.body.lines().count() > 3 {
        true => Reply::Status(413, ""),
        false => Reply::Status(200, ""),
    }));
    eventually("the split batches", || fake.lines().len() == before + 8);
    let tail: Vec<String> = fake.lines()[before..].to_vec();
    let expected: Vec<String> = (0..8).map(|i| format!("split v={i}.0 {i}")).collect();
    assert_eq!(tail, expected);
    let s = target_status(e);
    assert_eq!(s["dropped"]["rejected"], 2, "{s}");
    assert_eq!(s["state"], "ok", "{s}");

    // 400 for a batch of several pushes: split down to the push it is about; only that one
    // is dropped, the others arrive in order.
    fake.set(Box::new(|_| Reply::Status(503, "Retry-After: 0\r\n")));
    for i in 0..6 {
        let field = if i == 3 { "bad" } else { "v" };
        assert_eq!(push(e, "s1", &format!("four {field}={i} {i}\n")).0, 200);
    }
    eventually("the target to retry", || {
        target_status(e)["queue_points"] == 6
    });
    let before = fake.lines().len();
    fake.set(Box::new(|r| match r.body.contains("bad=") {
        true => Reply::Status(400, ""),
        false => Reply::Status(204, ""),
    }));
    eventually("the good pushes", || fake.lines().len() == before + 5);
    let expected: Vec<String> = [0, 1, 2, 4, 5]
        .iter()
        .map(|i| format!("four v={i}.0 {i}"))
        .collect();
    assert_eq!(fake.lines()[before..].to_vec(), expected);
    eventually("one push dropped", || {
        target_status(e)["dropped"]["rejected"] == 3
    });

    // 500 to one push while the far side takes the others: other streams go on at once, and
    // after three tries the push is dropped as poison; its stream goes on after it.
    fake.set(Box::new(|r| match r.body.contains("poison") {
        true => Reply::Status(500, ""),
        false => Reply::Status(204, ""),
    }));
    let before = fake.lines().len();
    assert_eq!(push(e, "s1", "poison v=1 10\n").0, 200);
    assert_eq!(push(e, "s1", "behind v=1 11\n").0, 200);
    assert_eq!(push(e, "s3", "other v=1 12\n").0, 200);
    eventually("the other stream", || {
        fake.lines()[before..].contains(&"other v=1.0 12".to_owned())
    });
    eventually("the poison dropped and its stream going on", || {
        fake.lines()[before..].contains(&"behind v=1.0 11".to_owned())
    });
    let s = target_status(e);
    assert_eq!(s["dropped"]["rejected"], 4, "{s}");
    assert!(e.logged("dropped as poison"), "{}", e.log_text());
}

#[test]
fn a_connection_the_far_side_closed_is_replaced_without_a_retry() {
    let fake = FakeCentral::start(Box::new(|_| Reply::NoContentThenClose));
    let e = &edge(&format!("url = \"http://{}/push/{{stream}}\"\n", fake.addr));
    for i in 0..5 {
        assert_eq!(push(e, "s", &format!("m v={i} {i}\n")).0, 200);
        eventually("the point to arrive", || fake.lines().len() == i + 1);
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = target_status(e);
    assert_eq!(
        (s["retries"].as_u64(), s["state"].as_str()),
        (Some(0), Some("ok")),
        "{s}"
    );
    assert_eq!(s["sent_requests"], 5, "{s}");
}

#[test]
fn a_full_queue_drops_the_oldest_or_refuses_with_507() {
    // Nobody listens on the target's port: everything stays queued.
    let port = free_port();
    let e = &Daemon::start_with_config(
        &format!(
            r#"
[[forward]]
name = "dropping"
url = "http://127.0.0.1:{port}/api/live/push/{{stream}}"
streams = ["d"]
max_queue = "1MiB"
[[forward]]
name = "refusing"
url = "http://127.0.0.1:{port}/api/live/push/{{stream}}"
streams = ["r"]
max_queue = "1MiB"
on_full = "refuse"
"#
        ),
        &[],
    );
    let status = |i: usize| {
        let (_, body) = http(e.addr, "GET", "/api/status", &[], b"");
        serde_json::from_str::<Value>(&body).unwrap()["forward"][i].clone()
    };
    // 2,000 pushes of 10 points, about 1.6 MiB of line protocol.
    let body = |n: u64| -> String {
        (0..10)
            .map(|k| {
                format!(
                    "m,sensor=s{k} value={n}.{k},padding=\"{}\" {}\n",
                    "x".repeat(40),
                    n * 10 + k
                )
            })
            .collect()
    };
    for n in 0..2000 {
        assert_eq!(push(e, "d", &body(n)).0, 200);
    }
    let s = status(0);
    let (queued, dropped) = (
        s["queue_points"].as_u64().unwrap(),
        s["dropped"]["queue_full"].as_u64().unwrap(),
    );
    assert!(dropped > 0, "{s}");
    assert_eq!(
        queued + dropped,
        20_000,
        "every point queued or counted: {s}"
    );
    assert!(s["queue_bytes"].as_u64().unwrap() <= 1 << 20, "{s}");
    assert!(e.logged("forwarding queue full: dropped the oldest points"));
    assert_eq!(
        labelled_metric(
            e,
            "edgelive_forward_dropped_points_total{target=\"dropping\",cause=\"queue_full\"}"
        ),
        dropped
    );

    let mut accepted = 0;
    let refused = loop {
        let (st, text) = push(e, "r", &body(accepted));
        if st != 200 {
            break (st, text);
        }
        accepted += 1;
        assert!(accepted < 3000, "never refused");
    };
    assert_eq!(refused.0, 507, "{}", refused.1);
    assert!(
        refused.1.contains("\\\"refusing\\\"") || refused.1.contains("refusing"),
        "{}",
        refused.1
    );
    let s = status(1);
    assert_eq!(s["queue_points"], accepted * 10, "{s}");
    assert_eq!(s["dropped"]["refused"], 10, "{s}");
    assert_eq!(s["dropped"]["queue_full"], 0, "{s}");
    // The refused push was not published either: the stream's last frame is the push before.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let frame = rt.block_on(async {
        let (mut p, _) = Peer::connected(&e.ws_url()).await;
        let r = call(&mut p, 2, "subscribe", json!({"channel": "stream/r/m"})).await;
        subscribed(&r, 2)["data"].to_string()
    });
    assert!(frame.contains(&format!("{}.1", accepted - 1)), "{frame}");
    assert!(!frame.contains(&format!("{accepted}.1")), "{frame}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_pauses_the_target_until_it_is_fixed() {
    let c = central(free_port());
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("central.token");
    std::fs::write(&token, "wrong-token-0123456789\n").unwrap();
    let e = &edge(&format!(
        "url = \"http://{}/api/live/push/{{stream}}\"\ntoken_file = \"{}\"\n",
        c.addr,
        token.display()
    ));
    assert_eq!(push(e, "p", "m v=1 1\n").0, 200);
    eventually("the target to pause", || {
        target_status(e)["state"] == "paused"
    });
    let s = target_status(e);
    assert!(s["last_error"].as_str().unwrap().starts_with("401"), "{s}");
    assert_eq!(s["queue_points"], 1, "nothing is dropped: {s}");
    assert!(e.logged("forwarding paused"), "{}", e.log_text());
    let (st, health) = http(e.addr, "GET", "/api/health", &[], b"");
    assert_eq!(st, 200, "the device itself is healthy: {health}");
    let h: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(h["forward_paused"][0]["target"], "127.0.0.1", "{h}");
    // Paused means paused: no retries while the token is wrong.
    let retries = s["retries"].clone();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(target_status(e)["retries"], retries);

    // The token file is fixed and the daemon reloaded: the target resumes.
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    e.hangup();
    eventually("the target to resume", || {
        let s = target_status(e);
        s["state"] == "ok" && s["queue_points"] == 0
    });
    assert_eq!(central_rows(&c, "stream/p/m").await, vec![(1, 1)]);
    let (_, health) = http(e.addr, "GET", "/api/health", &[], b"");
    assert!(!health.contains("forward_paused"), "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_central_that_never_answers_does_not_stall_the_edge() {
    let fake = FakeCentral::start(Box::new(|_| Reply::Hang));
    let e = &edge(&format!(
        "url = \"http://{}/push/{{stream}}\"\ntimeout = \"1s\"\n",
        fake.addr
    ));
    let (mut local, _) = Peer::connected(&e.ws_url()).await;
    subscribed(
        &call(&mut local, 2, "subscribe", json!({"channel": "stream/s/m"})).await,
        2,
    );
    assert_eq!(push(e, "s", "m v=0 0\n").0, 200);
    eventually("a request to hang", || *fake.seen.lock().unwrap() >= 1);
    // While the forwarder waits for its answer, the edge serves pushes and subscribers (the
    // runtime has one thread: a blocked event loop would stall all of it).
    let mut pending: VecDeque<u64> = VecDeque::new();
    for i in 1..=200 {
        assert_eq!(push(e, "s", &format!("m v={i} {i}\n")).0, 200);
        pending.push_back(i);
    }
    let mut got = 0;
    while got < 201 {
        let m = local.recv_non_ping().await;
        if m["push"]["pub"].is_object() {
            got += m["push"]["pub"]["data"]["data"]["values"][1]
                .as_array()
                .unwrap()
                .len();
        }
    }
    eventually("the timeout to be seen", || {
        let s = target_status(e);
        s["state"] == "retrying"
            && s["last_error"]
                .as_str()
                .unwrap_or("")
                .contains("no answer within 1s")
    });
    assert_eq!(target_status(e)["queue_points"], 201);
    eventually("a second attempt on a new connection", || {
        *fake.seen.lock().unwrap() >= 2
    });
}

/// `edgelive check-config` on a file holding `toml`: exit code and stderr.
fn check_config(toml: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edgelive.toml");
    std::fs::write(&path, toml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgelive"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_names_every_problem_of_a_target() {
    const BAD: &str = "[[forward]]\nurl = \"http://central/api/live/push/\"\ntoken = \"a\"\ntoken_file = \"missing.token\"\n";
    let (code, err) = check_config(&format!("{BAD}on_full = \"sometimes\"\n"));
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("on_full"), "{err}");
    let (_, err) = check_config(&format!("{BAD}max_queue = \"12 parsecs\"\n"));
    assert!(
        err.contains("max_queue") && err.contains("not a size"),
        "{err}"
    );
    let (code, err) = check_config(&format!(
        "{BAD}streams = [\"a/b\"]\n[[forward]]\nurl = \"https://central/x/{{stream}}\"\n"
    ));
    assert_ne!(code, Some(0), "{err}");
    for needle in [
        "must contain {stream}",
        "token and token_file are exclusive",
        "stream pattern \"a/b\"",
        "another target is named \"central\"",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
}
