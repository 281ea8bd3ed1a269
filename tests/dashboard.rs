//! The on-device dashboard: in headless Chromium (Debian's package, driven by playwright-core
//! from npm) against the real daemon, and its HTTP API (Grafana's dashboard API shape, and
//! `/api/status`) directly.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{http, Daemon, Peer};
use serde_json::{json, Value};

const ADMIN: &str = "admin-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";
const PUBLISHER: &str = "publisher-token-0123456789";

fn config() -> String {
    format!(
        r#"
[[auth.tokens]]
name = "admin"
role = "admin"
token = "{ADMIN}"
[[auth.tokens]]
name = "pub"
role = "publisher"
token = "{PUBLISHER}"
[[auth.tokens]]
name = "watcher"
role = "viewer"
token = "{VIEWER}"
"#
    )
}

fn call(d: &Daemon, method: &str, path: &str, token: &str, body: &str) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let (status, text) = http(
        d.addr,
        method,
        path,
        &[("Authorization", &auth)],
        body.as_bytes(),
    );
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

#[test]
fn the_page_in_chromium_draws_streams_backfilled_and_live_and_shares_dashboards() {
    let clients = common::node_clients();
    let d = Daemon::start_with_config(&config(), &[]);
    let open = Daemon::start(&[]);
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let out = Command::new("node")
        .arg("js/dashboard.mjs")
        .env("EDGELIVE_HTTP", d.http_url())
        .env("OPEN_HTTP", open.http_url())
        .env("ADMIN_TOKEN", ADMIN)
        .env("VIEWER_TOKEN", VIEWER)
        .env("SCREENSHOT", &shot)
        .current_dir(&clients)
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("ok dashboard"),
        "dashboard.mjs ({}):\n{stdout}\n{}\n--- daemon log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        d.log_text()
    );
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
}

#[tokio::test]
async fn dashboards_api_validates_versions_roles_bounds_and_persists_across_a_restart() {
    let d = Daemon::start_with_config(&config(), &[]);
    // Watchers of the dashboard hear its events.
    let url = format!("{}?auth_token={VIEWER}", d.ws_url());
    let (mut watcher, _) = Peer::connected(&url).await;

    let save = r#"{"dashboard":{"uid":"boiler","title":"Boiler room","panels":[{"channel":"stream/a/b"}]}}"#;
    assert_eq!(call(&d, "POST", "/api/dashboards/db", VIEWER, save).0, 403);
    let (status, v) = call(&d, "POST", "/api/dashboards/db", PUBLISHER, save);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (
            v["uid"].as_str(),
            v["version"].as_u64(),
            v["status"].as_str()
        ),
        (Some("boiler"), Some(1), Some("success"))
    );
    assert_eq!(v["url"], "/d/boiler/boiler-room");
    let r = common::call(
        &mut watcher,
        2,
        "subscribe",
        json!({"channel": "grafana/dashboard/uid/boiler"}),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");

    // A save from version 1 works once; the second from version 1 is a conflict, unless
    // overwrite.
    let v1 = r#"{"dashboard":{"uid":"boiler","title":"Boiler room","version":1,"panels":[]}}"#;
    let (status, v) = call(&d, "POST", "/api/dashboards/db", PUBLISHER, v1);
    assert_eq!((status, v["version"].as_u64()), (200, Some(2)));
    let event = loop {
        let m = watcher.recv_non_ping().await;
        if m["push"].get("pub").is_some() {
            break m;
        }
    };
    assert_eq!(
        event["push"]["pub"]["data"],
        json!({"uid": "boiler", "action": "saved", "version": 2})
    );
    let (status, v) = call(&d, "POST", "/api/dashboards/db", PUBLISHER, v1);
    assert_eq!(
        (status, v["status"].as_str()),
        (412, Some("version-mismatch"))
    );
    let forced =
        r#"{"dashboard":{"uid":"boiler","title":"Boiler room","version":1},"overwrite":true}"#;
    assert_eq!(
        call(&d, "POST", "/api/dashboards/db", ADMIN, forced).1["version"],
        3
    );

    // Validation, with messages.
    for (body, needle) in [
        ("nope", "expected"),
        (r#"{"dashboard":{"title":""}}"#, "title"),
        (r#"{"dashboard":{"title":"x","uid":"a/b"}}"#, "uid"),
        (r#"{"dashboard":{"title":"x","panels":{}}}"#, "panels"),
    ] {
        let (status, v) = call(&d, "POST", "/api/dashboards/db", ADMIN, body);
        assert_eq!(status, 400, "{body}: {v}");
        assert!(v["message"].as_str().unwrap().contains(needle), "{v}");
    }
    let huge = format!(
        r#"{{"dashboard":{{"title":"x","panels":[{{"note":"{}"}}]}}}}"#,
        "x".repeat(300 * 1024)
    );
    assert_eq!(call(&d, "POST", "/api/dashboards/db", ADMIN, &huge).0, 413);

    // Read, search, and the roles they need.
    let (status, v) = call(&d, "GET", "/api/dashboards/uid/boiler", VIEWER, "");
    assert_eq!(status, 200);
    assert_eq!(v["dashboard"]["version"], 3);
    assert_eq!(v["meta"]["canSave"], false);
    assert_eq!(
        call(&d, "GET", "/api/dashboards/uid/boiler", PUBLISHER, "").1["meta"]["canSave"],
        true
    );
    assert_eq!(
        call(&d, "GET", "/api/dashboards/uid/nope", VIEWER, "").0,
        404
    );
    assert_eq!(
        http(d.addr, "GET", "/api/dashboards/uid/boiler", &[], b"").0,
        401
    );
    let second = r#"{"dashboard":{"title":"Attic"}}"#;
    let (_, v) = call(&d, "POST", "/api/dashboards/db", ADMIN, second);
    let attic = v["uid"].as_str().unwrap().to_owned();
    let (_, list) = call(&d, "GET", "/api/search", VIEWER, "");
    let titles: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Attic", "Boiler room"]);
    let (_, found) = call(&d, "GET", "/api/search?query=boil", VIEWER, "");
    assert_eq!(found.as_array().unwrap().len(), 1);

    // Delete needs publisher, tells the watchers, and is kept across a restart like a save.
    assert_eq!(
        call(
            &d,
            "DELETE",
            &format!("/api/dashboards/uid/{attic}"),
            VIEWER,
            ""
        )
        .0,
        403
    );
    assert_eq!(
        call(
            &d,
            "DELETE",
            &format!("/api/dashboards/uid/{attic}"),
            ADMIN,
            ""
        )
        .0,
        200
    );
    assert_eq!(
        call(
            &d,
            "DELETE",
            &format!("/api/dashboards/uid/{attic}"),
            ADMIN,
            ""
        )
        .0,
        404
    );
    drop(watcher);
    let d = d.restart(true);
    let (status, v) = call(&d, "GET", "/api/dashboards/uid/boiler", VIEWER, "");
    assert_eq!((status, v["dashboard"]["version"].clone()), (200, json!(3)));
    assert_eq!(
        call(&d, "GET", "/api/search", VIEWER, "")
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn the_dashboard_count_is_bounded() {
    let d = Daemon::start(&[]);
    for i in 0..100 {
        let body = format!(r#"{{"dashboard":{{"title":"d{i}"}}}}"#);
        assert_eq!(
            http(d.addr, "POST", "/api/dashboards/db", &[], body.as_bytes()).0,
            200
        );
    }
    let (status, text) = http(
        d.addr,
        "POST",
        "/api/dashboards/db",
        &[],
        br#"{"dashboard":{"title":"one too many"}}"#,
    );
    assert_eq!(status, 400);
    assert!(text.contains("at most 100"), "{text}");
}

#[tokio::test]
async fn status_reports_version_uptime_connections_memory_storage_and_rate() {
    let d = Daemon::start(&[]);
    let (_p, _) = Peer::connected(&d.ws_url()).await;
    for i in 0..5 {
        let body = format!("m v={i}");
        assert_eq!(
            http(d.addr, "POST", "/api/live/push/s", &[], body.as_bytes()).0,
            200
        );
    }
    let (status, text) = http(d.addr, "GET", "/api/status", &[], b"");
    assert_eq!(status, 200, "{text}");
    let s: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["connections"], 1);
    assert_eq!(s["max_connections"], 100);
    assert!(s["memory"]["rss_bytes"].as_u64().unwrap() > 1 << 20);
    assert_eq!(s["storage"]["healthy"], true);
    assert!(s["storage"]["size_bytes"].as_u64().unwrap() > 0);
    assert_eq!(s["publications_total"], 5);
    assert!(s["publications_per_second"].as_f64().unwrap() >= 0.0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, text) = http(d.addr, "GET", "/api/status", &[], b"");
    let s: Value = serde_json::from_str(&text).unwrap();
    assert!(s["uptime_seconds"].as_u64().unwrap() >= 1, "{s}");
}
