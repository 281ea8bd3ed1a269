//! Stream handlers against the real daemon: Grafana's testdata streams (schema as subscribe data,
//! then data-only frames), one producer per channel while someone watches, stopped after the
//! grace period, visible in /api/live/list and /metrics.

mod common;

use std::time::{Duration, Instant};

use common::{call, eventually, http, Daemon, Peer};
use serde_json::{json, Value};

const TWENTY_HZ: &str = "plugin/testdata/random-20Hz-stream";

fn listed(d: &Daemon) -> Vec<Value> {
    let (status, body) = http(d.addr, "GET", "/api/live/list", &[], b"");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["channels"].as_array().unwrap().clone()
}

#[tokio::test]
async fn testdata_streams_send_the_schema_then_data_only_frames() {
    let d = Daemon::start(&[]);
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    let r = call(&mut p, 2, "subscribe", json!({ "channel": TWENTY_HZ })).await;
    let fields: Vec<&str> = r["subscribe"]["data"]["schema"]["fields"]
        .as_array()
        .unwrap_or_else(|| panic!("schema as subscribe data: {r}"))
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["Time", "Value", "Min", "Max"]);
    for _ in 0..5 {
        let v = p.recv_non_ping().await;
        assert_eq!(v["push"]["channel"], TWENTY_HZ, "{v}");
        let values = &v["push"]["pub"]["data"]["data"]["values"];
        assert_eq!(values.as_array().map(Vec::len), Some(4), "{v}");
        assert!(
            v["push"]["pub"]["data"].get("schema").is_none(),
            "data only: {v}"
        );
    }
    let r = call(
        &mut p,
        3,
        "subscribe",
        json!({"channel": "plugin/testdata/random-labeled-stream"}),
    )
    .await;
    assert_eq!(r["subscribe"]["data"]["schema"]["name"], "labeled", "{r}");
    // Publishing to a testdata stream is refused by its handler; unknown paths do not exist.
    let r = call(
        &mut p,
        4,
        "publish",
        json!({"channel": TWENTY_HZ, "data": {}}),
    )
    .await;
    assert_eq!(r["error"]["code"], 103, "{r}");
    let r = call(
        &mut p,
        5,
        "subscribe",
        json!({"channel": "plugin/testdata/random-1s-stream"}),
    )
    .await;
    assert_eq!(r["error"]["code"], 102, "{r}");
}

#[tokio::test]
async fn one_producer_per_channel_while_someone_watches_then_stopped_after_the_grace() {
    let d = Daemon::start(&[("EDGELIVE_STREAMS_CHECK_EVERY", "1s")]);
    let (mut a, _) = Peer::connected(&d.ws_url()).await;
    let (mut b, _) = Peer::connected(&d.ws_url()).await;
    common::subscribed(
        &call(&mut a, 2, "subscribe", json!({ "channel": TWENTY_HZ })).await,
        2,
    );
    common::subscribed(
        &call(
            &mut b,
            2,
            "subscribe",
            json!({ "channel": format!("1/{TWENTY_HZ}") }),
        )
        .await,
        2,
    );
    // Both receive the same publications from one producer.
    let first = b.recv_non_ping().await;
    assert_eq!(
        first["push"]["channel"],
        format!("1/{TWENTY_HZ}"),
        "{first}"
    );
    assert_eq!(d.metric("edgelive_stream_producers_started_total"), 1);
    assert_eq!(d.metric("edgelive_stream_producers_running"), 1);
    let entry = listed(&d)
        .into_iter()
        .find(|c| c["channel"] == TWENTY_HZ)
        .expect("listed");
    assert_eq!(entry["running"], true, "{entry}");
    assert_eq!(entry["minute_rate"], 1200, "{entry}");
    // A reload: leave and come back within the grace period; the same producer goes on.
    call(&mut a, 3, "unsubscribe", json!({ "channel": TWENTY_HZ })).await;
    drop(b);
    tokio::time::sleep(Duration::from_millis(400)).await;
    common::subscribed(
        &call(&mut a, 4, "subscribe", json!({ "channel": TWENTY_HZ })).await,
        4,
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(d.metric("edgelive_stream_producers_started_total"), 1);
    // Gone for good: stopped after 3 idle checks.
    call(&mut a, 5, "unsubscribe", json!({ "channel": TWENTY_HZ })).await;
    let left = Instant::now();
    eventually("the producer to stop", || {
        d.metric("edgelive_stream_producers_running") == 0
    });
    println!(
        "stopped {:?} after the last subscriber left",
        left.elapsed()
    );
    assert_eq!(d.metric("edgelive_stream_producers_stopped_total"), 1);
    let entry = listed(&d)
        .into_iter()
        .find(|c| c["channel"] == TWENTY_HZ)
        .expect("testdata channels are always listed");
    assert_eq!(entry["running"], false, "{entry}");
    // The next subscriber starts a new one.
    common::subscribed(
        &call(&mut a, 6, "subscribe", json!({ "channel": TWENTY_HZ })).await,
        6,
    );
    assert_eq!(d.metric("edgelive_stream_producers_started_total"), 2);
}
