//! History, recovery, durability and retention against the real daemon and a real sled database.

mod common;

use std::time::Duration;

use common::{call, http, subscribed_with_history, Daemon, Peer};
use serde_json::{json, Value};

const CH: &str = "grafana/broadcast/hist";

async fn publish(p: &mut Peer, id: u64, ch: &str, n: u64) {
    p.send(&format!(
        r#"{{"id":{id},"publish":{{"channel":"{ch}","data":{{"n":{n}}}}}}}"#
    ))
    .await;
    loop {
        let r = p.recv_non_ping().await;
        if r["id"] == id {
            assert_eq!(r, json!({"id": id, "publish": {}}));
            return;
        }
    }
}

fn ns(pubs: &Value) -> Vec<u64> {
    pubs.as_array()
        .unwrap()
        .iter()
        .map(|p| p["data"]["n"].as_u64().unwrap())
        .collect()
}

fn offsets(pubs: &Value) -> Vec<u64> {
    pubs.as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn history_supports_limit_since_reverse_and_checks_the_epoch() {
    let d = Daemon::start(&[]);
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    for n in 1..=10 {
        publish(&mut p, 100 + n, CH, n).await;
    }
    let h = call(&mut p, 2, "history", json!({"channel": CH, "limit": 0})).await;
    assert_eq!(h["history"]["publications"], json!([]));
    assert_eq!(h["history"]["offset"], 10);
    let epoch = h["history"]["epoch"].as_str().unwrap().to_owned();

    let h = call(&mut p, 3, "history", json!({"channel": CH, "limit": -1})).await;
    assert_eq!(
        ns(&h["history"]["publications"]),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(
        offsets(&h["history"]["publications"]),
        (1..=10).collect::<Vec<_>>()
    );

    let h = call(
        &mut p,
        4,
        "history",
        json!({"channel": CH, "limit": 3, "since": {"offset": 4, "epoch": epoch}}),
    )
    .await;
    assert_eq!(ns(&h["history"]["publications"]), vec![5, 6, 7]);

    let h = call(
        &mut p,
        5,
        "history",
        json!({"channel": CH, "limit": 2, "reverse": true}),
    )
    .await;
    assert_eq!(ns(&h["history"]["publications"]), vec![10, 9]);

    let h = call(
        &mut p,
        6,
        "history",
        json!({"channel": CH, "limit": 10, "reverse": true, "since": {"offset": 4, "epoch": ""}}),
    )
    .await;
    assert_eq!(ns(&h["history"]["publications"]), vec![3, 2, 1]);

    let h = call(
        &mut p,
        7,
        "history",
        json!({"channel": CH, "limit": 5, "since": {"offset": 2, "epoch": "XXXXXXXX"}}),
    )
    .await;
    assert_eq!(h["error"]["code"], 112);

    // A publication read back keeps its publisher info.
    let h = call(&mut p, 8, "history", json!({"channel": CH, "limit": 1})).await;
    assert!(
        h["history"]["publications"][0]["info"]["client"].is_string(),
        "{h}"
    );
}

#[tokio::test]
async fn the_history_limit_is_capped_by_config() {
    let d = Daemon::start(&[("EDGELIVE_STORAGE_MAX_READ", "4")]);
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    for n in 1..=6 {
        publish(&mut p, 100 + n, CH, n).await;
    }
    let h = call(&mut p, 2, "history", json!({"channel": CH, "limit": -1})).await;
    assert_eq!(ns(&h["history"]["publications"]), vec![1, 2, 3, 4]);
    // Recovery of more than the cap cannot be complete: not recovered, current top.
    let mut s = Peer::connected(&d.ws_url()).await.0;
    let r = call(
        &mut s,
        2,
        "subscribe",
        json!({"channel": CH, "recover": true, "offset": 1, "epoch": ""}),
    )
    .await;
    let r = subscribed_with_history(&r, 2);
    assert_eq!(
        (
            r["was_recovering"].clone(),
            r["recovered"].clone(),
            r["offset"].clone()
        ),
        (json!(true), json!(null), json!(6))
    );
}

#[tokio::test]
async fn a_reconnecting_subscriber_recovers_exactly_what_it_missed() {
    let d = Daemon::start(&[]);
    let (mut publisher, _) = Peer::connected(&d.ws_url()).await;
    let (mut s, _) = Peer::connected(&d.ws_url()).await;
    let r = call(&mut s, 2, "subscribe", json!({"channel": CH})).await;
    let epoch = subscribed_with_history(&r, 2)["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    for n in 1..=3 {
        publish(&mut publisher, 10 + n, CH, n).await;
    }
    let mut last = 0;
    while last < 3 {
        let m = s.recv_non_ping().await;
        if let Some(o) = m["push"]["pub"]["offset"].as_u64() {
            assert_eq!(o, last + 1);
            last = o;
        }
    }
    drop(s);
    for n in 4..=9 {
        publish(&mut publisher, 10 + n, CH, n).await;
    }
    let (mut s, _) = Peer::connected(&d.ws_url()).await;
    let r = call(
        &mut s,
        2,
        "subscribe",
        json!({"channel": CH, "recover": true, "offset": last, "epoch": epoch}),
    )
    .await;
    let r = subscribed_with_history(&r, 2);
    assert_eq!(r["recovered"], true);
    assert_eq!(r["was_recovering"], true);
    assert_eq!(r["offset"], 3, "the client's own position");
    assert_eq!(ns(&r["publications"]), vec![4, 5, 6, 7, 8, 9]);
    assert_eq!(offsets(&r["publications"]), vec![4, 5, 6, 7, 8, 9]);
    // Live publications continue right after, with no gap and no duplicate.
    publish(&mut publisher, 30, CH, 10).await;
    loop {
        let m = s.recv_non_ping().await;
        if let Some(o) = m["push"]["pub"]["offset"].as_u64() {
            assert_eq!(o, 10);
            break;
        }
    }
    // Nothing missed: recovered with no publications.
    let (mut s2, _) = Peer::connected(&d.ws_url()).await;
    let r = call(
        &mut s2,
        2,
        "subscribe",
        json!({"channel": CH, "recover": true, "offset": 10, "epoch": epoch}),
    )
    .await;
    let r = subscribed_with_history(&r, 2);
    assert_eq!(
        (r["recovered"].clone(), r["publications"].clone()),
        (json!(true), json!(null))
    );
    // Another epoch: not recovered, no publications, the current top.
    let (mut s3, _) = Peer::connected(&d.ws_url()).await;
    let r = call(
        &mut s3,
        2,
        "subscribe",
        json!({"channel": CH, "recover": true, "offset": 2, "epoch": "ZZZZZZZZ"}),
    )
    .await;
    let r = subscribed_with_history(&r, 2);
    assert_eq!(r["was_recovering"], true);
    assert!(
        r.get("recovered").is_none() && r.get("publications").is_none(),
        "{r}"
    );
    assert_eq!(r["offset"], 10);
}

/// The value of `edgelive_recoveries_total{from="…"}`.
fn recoveries(d: &Daemon, from: &str) -> u64 {
    let m = http(d.addr, "GET", "/metrics", &[], b"").1;
    let series = format!("edgelive_recoveries_total{{from=\"{from}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {m}"))
}

/// Recovery from the channel's recent publications in memory, from disk when memory does not
/// reach back far enough, and from disk after a restart (memory starts empty), all exact.
#[tokio::test]
async fn recovery_is_served_from_memory_and_from_disk_across_a_restart() {
    let d = Daemon::start(&[]);
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    for n in 1..=6 {
        publish(&mut p, 100 + n, CH, n).await;
    }
    let h = call(&mut p, 2, "history", json!({"channel": CH, "limit": 0})).await;
    let epoch = h["history"]["epoch"].as_str().unwrap().to_owned();
    let recover =
        |offset: u64| json!({"channel": CH, "recover": true, "offset": offset, "epoch": epoch});
    let recovered = |r: &Value, id| {
        let r = subscribed_with_history(r, id);
        assert_eq!(r["recovered"], true, "{r}");
        ns(&r["publications"])
    };
    // The first publication created the channel on the storage thread, which then gave it its
    // head; the head sequenced the others and keeps them.
    let (mut s, _) = Peer::connected(&d.ws_url()).await;
    let r = call(&mut s, 3, "subscribe", recover(3)).await;
    assert_eq!(recovered(&r, 3), [4, 5, 6]);
    assert_eq!((recoveries(&d, "memory"), recoveries(&d, "disk")), (1, 0));
    // Older than memory reaches: the disk answers, as exactly.
    let (mut s2, _) = Peer::connected(&d.ws_url()).await;
    let r = call(&mut s2, 3, "subscribe", recover(0)).await;
    assert_eq!(recovered(&r, 3), [1, 2, 3, 4, 5, 6]);
    assert_eq!((recoveries(&d, "memory"), recoveries(&d, "disk")), (1, 1));
    drop((p, s, s2));

    let d = d.restart(false);
    let (mut s, _) = Peer::connected(&d.ws_url()).await;
    let r = call(&mut s, 3, "subscribe", recover(2)).await;
    assert_eq!(recovered(&r, 3), [3, 4, 5, 6]);
    assert_eq!((recoveries(&d, "memory"), recoveries(&d, "disk")), (0, 1));
    // Live publications go on right after it, and memory serves the next recovery again.
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    publish(&mut p, 4, CH, 7).await;
    let live = loop {
        let m = s.recv_non_ping().await;
        if let Some(o) = m["push"]["pub"]["offset"].as_u64() {
            break o;
        }
    };
    assert_eq!(live, 7);
    let (mut s2, _) = Peer::connected(&d.ws_url()).await;
    let r = call(&mut s2, 3, "subscribe", recover(6)).await;
    assert_eq!(recovered(&r, 3), [7]);
    assert_eq!((recoveries(&d, "memory"), recoveries(&d, "disk")), (1, 1));
}

#[tokio::test]
async fn publications_trimmed_by_size_cannot_be_recovered() {
    let d = Daemon::start_with_config(
        "[[history]]\npattern = \"grafana/broadcast/*\"\nsize = 5\nttl = \"1h\"\n",
        &[],
    );
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    for n in 1..=12 {
        publish(&mut p, 100 + n, CH, n).await;
    }
    let h = call(&mut p, 2, "history", json!({"channel": CH, "limit": -1})).await;
    assert_eq!(ns(&h["history"]["publications"]), vec![8, 9, 10, 11, 12]);
    let (mut s, _) = Peer::connected(&d.ws_url()).await;
    let r = call(
        &mut s,
        2,
        "subscribe",
        json!({"channel": CH, "recover": true, "offset": 3, "epoch": ""}),
    )
    .await;
    let r = subscribed_with_history(&r, 2);
    assert!(r.get("recovered").is_none(), "{r}");
    let r = call(
        &mut s,
        3,
        "subscribe",
        json!({"channel": "1/grafana/broadcast/other", "recover": true, "offset": 0, "epoch": ""}),
    )
    .await;
    assert_eq!(subscribed_with_history(&r, 3)["recovered"], true);
}

#[tokio::test]
async fn ttl_expiry_empties_history_but_keeps_position_and_epoch() {
    let d = Daemon::start_with_config(
        "[[history]]\npattern = \"grafana/broadcast/*\"\nsize = 100\nttl = \"1s\"\n",
        &[],
    );
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    for n in 1..=3 {
        publish(&mut p, 100 + n, CH, n).await;
    }
    let h = call(&mut p, 2, "history", json!({"channel": CH, "limit": -1})).await;
    let epoch = h["history"]["epoch"].clone();
    assert_eq!(ns(&h["history"]["publications"]).len(), 3);
    let mut h = Value::Null;
    for i in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        h = call(
            &mut p,
            10 + i,
            "history",
            json!({"channel": CH, "limit": -1}),
        )
        .await;
        if h["history"]["publications"] == json!([]) {
            break;
        }
    }
    assert_eq!(
        h["history"]["publications"],
        json!([]),
        "expired publications stay: {h}"
    );
    assert_eq!(
        (
            h["history"]["offset"].clone(),
            h["history"]["epoch"].clone()
        ),
        (json!(3), epoch)
    );
}

#[tokio::test]
async fn a_clean_restart_keeps_epoch_offsets_and_history_and_clears_presence() {
    let d = Daemon::start(&[]);
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    let r = call(&mut p, 2, "subscribe", json!({"channel": CH})).await;
    let epoch = subscribed_with_history(&r, 2)["epoch"].clone();
    for n in 1..=5 {
        publish(&mut p, 100 + n, CH, n).await;
    }
    drop(p);
    let d = d.restart(false);
    let (mut s, _) = Peer::connected(&d.ws_url()).await;
    let r = call(&mut s, 2, "presence_stats", json!({"channel": CH})).await;
    assert_eq!(
        r["presence_stats"],
        json!({"num_clients": 0, "num_users": 0})
    );
    let r = call(
        &mut s,
        3,
        "subscribe",
        json!({"channel": CH, "recover": true, "offset": 2, "epoch": epoch}),
    )
    .await;
    let r = subscribed_with_history(&r, 3);
    assert_eq!(r["epoch"], epoch);
    assert_eq!(r["recovered"], true, "{r}");
    assert_eq!(ns(&r["publications"]), vec![3, 4, 5]);
    publish(&mut s, 4, CH, 6).await;
    let h = call(&mut s, 5, "history", json!({"channel": CH, "limit": -1})).await;
    assert_eq!(
        offsets(&h["history"]["publications"]),
        vec![1, 2, 3, 4, 5, 6],
        "offsets continue after a clean restart"
    );
}

#[tokio::test]
async fn sigkill_loses_no_acknowledged_publication_and_never_reuses_an_offset() {
    let d = Daemon::start_with_config(
        "[[history]]\npattern = \"grafana/broadcast/*\"\nsize = 100000\nttl = \"1h\"\n",
        &[],
    );
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    let (mut watcher, _) = Peer::connected(&d.ws_url()).await;
    let r = call(&mut watcher, 2, "subscribe", json!({"channel": CH})).await;
    let epoch = subscribed_with_history(&r, 2)["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    // Publish without waiting, so publications are in flight when the process dies.
    let total = 400u64;
    for n in 1..=total {
        p.send(&format!(
            r#"{{"id":{},"publish":{{"channel":"{CH}","data":{{"n":{n}}}}}}}"#,
            1000 + n
        ))
        .await;
    }
    let mut acked = Vec::new();
    let mut seen = 0u64;
    // Kill once about half are acknowledged.
    while acked.len() < (total / 2) as usize {
        let r = p.recv_non_ping().await;
        if r["publish"].is_object() {
            acked.push(r["id"].as_u64().unwrap() - 1000);
        }
    }
    while let Ok(m) = watcher.try_recv(Duration::from_millis(1)).await {
        if let Some(o) = m["push"]["pub"]["offset"].as_u64() {
            seen = seen.max(o);
        }
    }
    let d = d.restart(true);
    // The unclean stop and each channel's decision are logged.
    assert!(
        d.logged("unclean stop (crash or power cut)"),
        "{}",
        d.log_text()
    );
    assert!(
        d.logged("channel resumes above its offset reservation"),
        "{}",
        d.log_text()
    );
    let (mut s, _) = Peer::connected(&d.ws_url()).await;
    let h = call(&mut s, 2, "history", json!({"channel": CH, "limit": -1})).await;
    assert_eq!(
        h["history"]["epoch"],
        epoch.as_str(),
        "the epoch survives a crash"
    );
    let stored = ns(&h["history"]["publications"]);
    let offs = offsets(&h["history"]["publications"]);
    for n in &acked {
        assert!(
            stored.contains(n),
            "acknowledged publication {n} lost; stored {stored:?}"
        );
    }
    assert_eq!(
        offs,
        (1..=offs.len() as u64).collect::<Vec<_>>(),
        "stored offsets are contiguous"
    );
    assert_eq!(
        stored,
        (1..=stored.len() as u64).collect::<Vec<_>>(),
        "in publish order"
    );
    let top = h["history"]["offset"].as_u64().unwrap();
    println!(
        "acked {} stored {} seen live {seen} top after restart {top}",
        acked.len(),
        stored.len()
    );
    assert!(
        top >= seen,
        "top {top} below an offset a subscriber saw ({seen})"
    );
    // A subscriber positioned where publications may be lost is told so.
    let r = call(
        &mut s,
        3,
        "subscribe",
        json!({"channel": CH, "recover": true, "offset": stored.len(), "epoch": epoch}),
    )
    .await;
    let r = subscribed_with_history(&r, 3);
    if top > stored.len() as u64 {
        assert!(
            r.get("recovered").is_none(),
            "a gap must not be recovered: {r}"
        );
    }
    // New publications get offsets above anything handed out before the crash.
    publish(&mut s, 4, CH, 9999).await;
    let h = call(
        &mut s,
        5,
        "history",
        json!({"channel": CH, "limit": 1, "reverse": true}),
    )
    .await;
    let newest = offsets(&h["history"]["publications"])[0];
    assert!(
        newest > seen && newest > top.min(seen),
        "offset {newest} reused (seen {seen}, top {top})"
    );
}

#[tokio::test]
async fn durability_none_acknowledges_and_stores() {
    let d = Daemon::start(&[("EDGELIVE_STORAGE_DURABILITY", "none")]);
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    for n in 1..=20 {
        publish(&mut p, 100 + n, CH, n).await;
    }
    let d = d.restart(false);
    let (mut s, _) = Peer::connected(&d.ws_url()).await;
    let h = call(&mut s, 2, "history", json!({"channel": CH, "limit": -1})).await;
    assert_eq!(
        ns(&h["history"]["publications"]),
        (1..=20).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn history_size_is_reported_and_bounded_under_constant_publishing() {
    let d = Daemon::start_with_config(
        "[[history]]\npattern = \"grafana/broadcast/*\"\nsize = 50\nttl = \"1h\"\n",
        &[],
    );
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    let payload = "x".repeat(200);
    let frame: Vec<String> = (1..=2000)
        .map(|n| {
            format!(
                r#"{{"id":{n},"publish":{{"channel":"{CH}","data":{{"n":{n},"p":"{payload}"}}}}}}"#
            )
        })
        .collect();
    for chunk in frame.chunks(100) {
        p.send(&chunk.join("\n")).await;
    }
    let mut acks = 0;
    while acks < 2000 {
        if p.recv_non_ping().await["publish"].is_object() {
            acks += 1;
        }
    }
    let h = call(&mut p, 9000, "history", json!({"channel": CH, "limit": -1})).await;
    assert_eq!(
        ns(&h["history"]["publications"]),
        (1951..=2000).collect::<Vec<_>>()
    );
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = http(d.addr, "GET", "/metrics", &[], b"").1;
        if metrics.contains("edgelive_history_publications{pattern=\"grafana/broadcast/*\"} 50") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metrics.contains("edgelive_history_publications{pattern=\"grafana/broadcast/*\"} 50"),
        "{metrics}"
    );
    let bytes: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("edgelive_history_bytes{pattern=\"grafana/broadcast/*\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        bytes > 50 * 200 && bytes < 50 * 600,
        "history bytes {bytes} not bounded by size"
    );
    let d = d.restart(false);
    assert!(d.logged("history size"), "startup logs the history size");
}

#[test]
fn an_incompatible_data_dir_is_refused_with_78_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let db = sled::Config::new()
            .path(&data)
            .segment_size(edgelive_storage::SEGMENT_SIZE)
            .open()
            .unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("format_version", &[200u8])
            .unwrap();
        db.flush().unwrap();
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgelive"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(78),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("format version 200"));
    let db = sled::Config::new()
        .path(&data)
        .segment_size(edgelive_storage::SEGMENT_SIZE)
        .open()
        .unwrap();
    assert_eq!(
        db.open_tree("meta")
            .unwrap()
            .get("format_version")
            .unwrap()
            .unwrap()
            .as_ref(),
        [200u8]
    );
}

#[tokio::test]
async fn a_full_disk_refuses_publishes_with_100_reports_degraded_and_keeps_serving() {
    let d = Daemon::start_on_small_disk("1m", &[]);
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    let (mut other, _) = Peer::connected(&d.ws_url()).await;
    let big = "x".repeat(30_000);
    let mut refused = None;
    for id in 2..400u64 {
        p.send(&format!(
            r#"{{"id":{id},"publish":{{"channel":"{CH}","data":{{"p":"{big}"}}}}}}"#
        ))
        .await;
        let r = loop {
            let r = p.recv_non_ping().await;
            if r["id"] == id {
                break r;
            }
        };
        if r.get("error").is_some() {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("a 1 MiB disk must fill up");
    assert_eq!(r["error"]["code"], 100, "{r}");
    let (status, body) = http(d.addr, "GET", "/api/health", &[], b"");
    assert_eq!(status, 503, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "degraded");
    assert!(
        health["reason"].as_str().unwrap().contains("No space left"),
        "{health}"
    );
    // The daemon is up and other clients are served.
    let r = call(&mut other, 2, "presence_stats", json!({"channel": CH})).await;
    assert!(r["presence_stats"].is_object(), "{r}");
    other.send(r#"{"id":3,"ping":{}}"#).await;
    assert_eq!(other.recv_non_ping().await, json!({"id":3,"ping":{}}));
    assert!(d.logged("storage degraded"), "{}", d.log_text());
}

#[tokio::test]
async fn a_clean_restart_is_not_reported_as_a_crash_and_a_damaged_store_is_refused() {
    let d = Daemon::start(&[]);
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    publish(&mut p, 2, CH, 1).await;
    drop(p);
    let mut d = d.restart(false);
    assert!(!d.logged("unclean stop"), "{}", d.log_text());
    let (st, _) = d.terminate(Duration::from_secs(10));
    assert!(st.success());
    // Garbage over the head of sled's log: sled 0.34 would open it as an empty database.
    let log = d.data_dir().join("db");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.iter_mut().take(4096).for_each(|b| *b = 0xA5);
    std::fs::write(&log, &bytes).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgelive"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(d.data_dir())
        .env_remove("EDGELIVE_STORAGE_DURABILITY")
        .output()
        .unwrap();
    let err =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(err.contains("damaged"), "{err}");
    // Nothing was changed: the damaged file is as it was left.
    assert_eq!(std::fs::read(&log).unwrap(), bytes);
}

/// libfaketime (Debian `libfaketime`), which `tests/run` installs.
fn libfaketime() -> std::path::PathBuf {
    std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists())
        .expect("libfaketime (Debian package libfaketime; tests/run installs it)")
}

#[tokio::test]
async fn a_wall_clock_step_neither_expires_history_nor_drops_its_epoch() {
    // A board without an RTC: it boots in 1970, takes publications, then NTP steps the wall
    // clock 56 years ahead. Only the wall clock is faked; the monotonic clock runs true.
    let clock = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(clock.path(), "@1970-01-02 00:00:00\n").unwrap();
    let lib = libfaketime();
    let d = Daemon::start(&[
        ("LD_PRELOAD", lib.to_str().unwrap()),
        ("FAKETIME_TIMESTAMP_FILE", clock.path().to_str().unwrap()),
        ("FAKETIME_NO_CACHE", "1"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ]);
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    for n in 1..=3 {
        publish(&mut p, 10 + n, CH, n).await;
    }
    let h = call(&mut p, 2, "history", json!({"channel": CH, "limit": -1})).await;
    let epoch = h["history"]["epoch"].clone();
    assert_eq!(ns(&h["history"]["publications"]), vec![1, 2, 3], "{h}");
    drop(p);
    std::fs::write(clock.path(), "@2026-12-02 12:00:00\n").unwrap();
    // The sweep that sees the step logs it, then trims by the monotonic timeline.
    common::eventually("the step is logged", || {
        d.logged("the wall clock was stepped")
    });
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    let h = call(&mut p, 2, "history", json!({"channel": CH, "limit": -1})).await;
    assert_eq!(
        h["history"]["epoch"], epoch,
        "the channel was not dropped: {h}"
    );
    assert_eq!(
        ns(&h["history"]["publications"]),
        vec![1, 2, 3],
        "a 10 minute history is not expired by a clock step: {h}"
    );
}
