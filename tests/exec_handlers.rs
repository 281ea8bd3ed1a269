//! Exec stream handlers against the real daemon, with a real shell script as the program:
//! frames arrive (schema once, then data only; the last full frame for late subscribers),
//! client publishes reach its stdin, the program is stopped after the grace period and when
//! the daemon gets SIGTERM (SIGKILL when it ignores SIGTERM), a clean exit tells subscribers
//! to resubscribe (2500), a failing one is restarted, and no process is left behind.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{call, eventually, http, Daemon, Peer};
use serde_json::{json, Value};

/// The program. Behaviour by channel path:
/// - `room-*`: records its pid and its sleeper's, prints a line-protocol point every 100 ms
///   and echoes each stdin line (a client publish) back, so it is published;
/// - `stubborn`: the same, but ignores SIGTERM (and SIGPIPE);
/// - `once`: prints two points and exits 0;
/// - `broken`: says so on stderr and exits 1.
const SCRIPT: &str = r#"#!/bin/sh
echo $$ > "$EXEC_PIDS/$EDGELIVE_PATH.pid"
case "$EDGELIVE_PATH" in
  once) echo "level,tank=a litres=1"; echo "level,tank=a litres=2"; exit 0 ;;
  broken) echo "sensor unplugged" >&2; exit 1 ;;
  stubborn) trap '' TERM PIPE ;;
esac
exec 3<&0
while read -r line <&3; do echo "$line"; done &
i=0
while :; do
  i=$((i+1))
  echo "temp,room=$EDGELIVE_PATH celsius=$i"
  # Written aside and renamed, so a kill between the two never leaves the file empty.
  sleep 0.1 & echo $! > "$EXEC_PIDS/$EDGELIVE_PATH.sleeper.new"
  mv "$EXEC_PIDS/$EDGELIVE_PATH.sleeper.new" "$EXEC_PIDS/$EDGELIVE_PATH.sleeper"; wait $!
done
"#;

struct Setup {
    daemon: Daemon,
    pids: tempfile::TempDir,
}

fn start(extra: &str) -> Setup {
    let pids = tempfile::tempdir().unwrap();
    let script = pids.path().join("sensor.sh");
    std::fs::write(&script, SCRIPT).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = format!(
        r#"
[streams]
check_every = "300ms"
backoff_min = "100ms"
{extra}
[[streams.exec]]
channel = "plugin/sensors/room-*"
command = ["{s}"]
publish = true

[[streams.exec]]
channel = "plugin/sensors/*"
command = ["{s}"]
stop_timeout = "1s"
"#,
        s = script.display()
    );
    let daemon =
        Daemon::start_with_config(&config, &[("EXEC_PIDS", pids.path().to_str().unwrap())]);
    Setup { daemon, pids }
}

/// Waits (bounded) for the program to write its pid file.
fn pid(dir: &Path, name: &str) -> i32 {
    eventually(&format!("{name} to be written"), || {
        std::fs::read_to_string(dir.join(name)).is_ok_and(|s| s.trim().parse::<i32>().is_ok())
    });
    std::fs::read_to_string(dir.join(name))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Gone, or a zombie of whoever adopted it (then it no longer runs).
fn dead(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}

/// The next publication on `channel`, skipping other pushes.
async fn publication(p: &mut Peer, channel: &str) -> Value {
    loop {
        let v = p.recv_non_ping().await;
        if v["push"]["channel"] == channel && v["push"].get("pub").is_some() {
            return v["push"]["pub"]["data"].clone();
        }
    }
}

#[tokio::test]
async fn a_shell_script_produces_frames_while_watched_and_is_stopped_after_the_grace() {
    let Setup { daemon: d, pids } = start("");
    let kitchen = "plugin/sensors/room-kitchen";
    let (mut a, _) = Peer::connected(&d.ws_url()).await;
    common::subscribed(
        &call(&mut a, 2, "subscribe", json!({ "channel": kitchen })).await,
        2,
    );
    let first = publication(&mut a, kitchen).await;
    let names: Vec<&str> = first["schema"]["fields"]
        .as_array()
        .unwrap_or_else(|| panic!("the first frame has the schema: {first}"))
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["labels", "time", "celsius"], "{first}");
    let second = publication(&mut a, kitchen).await;
    assert!(second.get("schema").is_none(), "then data only: {second}");
    assert_eq!(
        second["data"]["values"][0][0], "room=room-kitchen",
        "{second}"
    );
    let program = pid(pids.path(), "room-kitchen.pid");
    assert!(!dead(program));

    // A late subscriber gets the last full frame as its subscribe data.
    let (mut b, _) = Peer::connected(&d.ws_url()).await;
    let r = call(&mut b, 2, "subscribe", json!({ "channel": kitchen })).await;
    assert!(
        r["subscribe"]["data"]["schema"]["fields"].is_array(),
        "schema for the late subscriber: {r}"
    );
    // A client publish goes to the program's stdin; this one echoes it, so it is published.
    let r = call(
        &mut b,
        3,
        "publish",
        json!({"channel": kitchen, "data": {"set": 21}}),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    let echoed = loop {
        let p = publication(&mut a, kitchen).await;
        if p.get("set").is_some() {
            break p;
        }
    };
    assert_eq!(echoed, json!({"set": 21}));
    assert_eq!(
        d.metric("edgelive_stream_producers_started_total"),
        1,
        "shared"
    );
    let (_, list) = http(d.addr, "GET", "/api/live/list", &[], b"");
    assert!(list.contains(kitchen), "{list}");

    // Where publishing is off, or the path matches no [[streams.exec]]:
    let r = call(
        &mut b,
        4,
        "publish",
        json!({"channel": "plugin/sensors/other", "data": {}}),
    )
    .await;
    assert_eq!(r["error"]["code"], 103, "{r}");
    let r = call(
        &mut b,
        5,
        "subscribe",
        json!({"channel": "plugin/nothing/x"}),
    )
    .await;
    assert_eq!(r["error"]["code"], 102, "{r}");

    // Everyone leaves: after 3 idle checks 300 ms apart the program and its children go.
    let sleeper_file = pids.path().join("room-kitchen.sleeper");
    drop(a);
    drop(b);
    let left = Instant::now();
    eventually("the program to stop", || dead(program));
    println!(
        "program gone {:?} after the last subscriber",
        left.elapsed()
    );
    let sleeper: i32 = std::fs::read_to_string(&sleeper_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eventually("its child to stop", || dead(sleeper));
    eventually("the metrics to say so", || {
        d.metric("edgelive_stream_producers_running") == 0
    });
    assert_eq!(d.metric("edgelive_stream_producers_stopped_total"), 1);
    // Nobody watches, so nothing would read a publish.
    let (mut c, _) = Peer::connected(&d.ws_url()).await;
    let r = call(
        &mut c,
        2,
        "publish",
        json!({"channel": kitchen, "data": {}}),
    )
    .await;
    assert_eq!(r["error"]["code"], 108, "{r}");
}

#[tokio::test]
async fn a_clean_exit_ends_the_stream_and_a_failing_program_is_restarted() {
    let Setup { daemon: d, pids } = start("");
    let (mut a, _) = Peer::connected(&d.ws_url()).await;
    let once = "plugin/sensors/once";
    common::subscribed(
        &call(&mut a, 2, "subscribe", json!({ "channel": once })).await,
        2,
    );
    let end = loop {
        let v = a.recv_non_ping().await;
        if v["push"].get("unsubscribe").is_some() {
            break v;
        }
    };
    assert_eq!(end["push"]["channel"], once, "{end}");
    assert_eq!(
        end["push"]["unsubscribe"]["code"], 2500,
        "resubscribe: {end}"
    );
    let broken = "plugin/sensors/broken";
    common::subscribed(
        &call(&mut a, 3, "subscribe", json!({ "channel": broken })).await,
        3,
    );
    eventually("restarts with backoff", || {
        d.metric("edgelive_stream_producers_restarted_total") >= 2
    });
    assert!(d.logged("sensor unplugged"), "stderr is logged");
    assert!(d.logged("exit status: 1"), "the failure is logged");
    drop(pids);
}

#[tokio::test]
async fn sigterm_to_the_daemon_stops_every_program_even_one_that_ignores_sigterm() {
    let Setup {
        daemon: mut d,
        pids,
    } = start("");
    let (mut a, _) = Peer::connected(&d.ws_url()).await;
    for (id, path) in [(2, "room-hall"), (3, "stubborn")] {
        let channel = format!("plugin/sensors/{path}");
        common::subscribed(
            &call(&mut a, id, "subscribe", json!({ "channel": channel })).await,
            id,
        );
        publication(&mut a, &channel).await;
    }
    let programs = [
        pid(pids.path(), "room-hall.pid"),
        pid(pids.path(), "stubborn.pid"),
        pid(pids.path(), "room-hall.sleeper"),
        pid(pids.path(), "stubborn.sleeper"),
    ];
    let (status, took) = d.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    println!("daemon stopped in {took:?}");
    for p in programs {
        eventually(&format!("process {p} to be gone"), || dead(p));
    }
    assert!(d.logged("ignored SIGTERM; killed"), "{}", d.log_text());
}
