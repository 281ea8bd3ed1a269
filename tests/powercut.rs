//! Power loss (issue 13): an acknowledged publication survives a power cut, and a client
//! positioned beyond what survived is told it did not recover.
//!
//! The data dir lives on `cutfs` (tests/cutfs), a FUSE filesystem that keeps every write in
//! memory until the file is `fsync`ed and drops everything unsynced on SIGUSR1: the power cut
//! POSIX allows. Each cut: a publisher keeps 8 publishes in flight at full speed, and after a
//! random number of acknowledgements the daemon is SIGKILLed and the cache dropped at once; then
//! the filesystem is remounted on what reached its backing dir and the daemon restarted on it.
//!
//! The same filesystem can hold every `fsync` (a slow disk), which shows what waits for
//! durability and what does not.
//!
//! `POWERCUT_CUTS=N` runs N cuts per case (a soak by hand), `POWERCUT_SEED=S` replays a run.
mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::{call, subscribed_with_history, Daemon, Peer};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const CH: &str = "grafana/broadcast/powercut";
const CONFIG: &str =
    "[[history]]\npattern = \"grafana/broadcast/*\"\nsize = 1000000\nttl = \"1h\"\n";
const IN_FLIGHT: u64 = 8;
/// Acknowledgements before the cut, drawn uniformly: bounded so a run stays short in CI.
const ACKS: std::ops::RangeInclusive<usize> = 20..=8000;

/// A running cutfs mount. Dropping it unmounts and ends the process, also on a panic.
struct CutFs {
    child: Child,
    stdout: BufReader<ChildStdout>,
    mountpoint: PathBuf,
}

/// The cutfs binary, next to the daemon's. `cargo test --workspace` builds it (its package has
/// a test of its own); when only this test was built, it is built here with the same cargo.
fn cutfs_bin() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_edgelive"))
        .parent()
        .expect("target dir");
    let bin = dir.join("cutfs");
    if !bin.exists() {
        let target = dir.parent().expect("target root");
        let mut build = Command::new(env!("CARGO"));
        build.args([
            "build",
            "-p",
            "edgelive-cutfs",
            "--bin",
            "cutfs",
            "--target-dir",
        ]);
        build.arg(target);
        if dir.file_name() == Some(std::ffi::OsStr::new("release")) {
            build.arg("--release");
        }
        let st = build.status().expect("run cargo");
        assert!(st.success(), "building cutfs failed: {st}");
    }
    bin
}

fn signal(pid: u32, sig: libc::c_int) {
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}

fn is_mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let p = path.to_string_lossy();
    info.lines()
        .any(|l| l.split_whitespace().nth(4) == Some(p.as_ref()))
}

impl CutFs {
    fn mount(backing: &Path, mountpoint: &Path) -> CutFs {
        std::fs::create_dir_all(mountpoint).unwrap();
        let mut child = Command::new(cutfs_bin())
            .arg(backing)
            .arg(mountpoint)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn cutfs");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut fs = CutFs {
            child,
            stdout,
            mountpoint: mountpoint.to_owned(),
        };
        // The line comes after the mount handshake; EOF means cutfs failed (its stderr says why).
        assert_eq!(fs.line(), "mounted", "cutfs did not mount");
        fs
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.stdout.read_line(&mut l).expect("cutfs stdout");
        l.trim_end().to_owned()
    }

    /// The power cut: every unsynced write is gone. Returns cutfs's account of what it dropped.
    fn cut(&mut self) -> String {
        signal(self.child.id(), libc::SIGUSR1);
        let l = self.line();
        assert!(l.starts_with("cut "), "cutfs answered {l:?}");
        l
    }

    /// Holds every `fsync` (a slow disk) until `release`.
    fn hold(&mut self) {
        signal(self.child.id(), libc::SIGUSR2);
        assert_eq!(self.line(), "held");
    }

    fn release(&mut self) {
        signal(self.child.id(), libc::SIGUSR2);
        assert_eq!(self.line(), "released");
    }

    /// Unmounts and waits (bounded) for cutfs to exit.
    fn unmount(mut self) {
        signal(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "cutfs exited with {st}");
                break;
            }
            assert!(Instant::now() < deadline, "cutfs did not unmount");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !is_mounted(&self.mountpoint),
            "still mounted after cutfs exited"
        );
    }
}

impl Drop for CutFs {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if is_mounted(&self.mountpoint) {
            // cutfs died without unmounting: detach the dead mount so the temp dir can go.
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.mountpoint)
                .status();
        }
    }
}

/// What one cut did, printed so a failure can be read and replayed.
struct Figures {
    acks: usize,
    lost: usize,
    /// Age at the cut of the oldest lost acknowledgement.
    oldest_lost: Option<Duration>,
    stored: usize,
    top: u64,
    seen: u64,
    epoch_changed: bool,
    cutfs: String,
}

fn payload(n: u64) -> Value {
    json!({"n": n, "pad": format!("{n:0>64}")})
}

/// One round: publish until `acks` acknowledgements, SIGKILL the daemon (and cut the power
/// when `cut`), restart on what survived, and check what a client can see. Returns the figures
/// and the violations found.
async fn round(durability: &str, acks: usize, cut: bool) -> (Figures, Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let backing = tmp.path().join("disk");
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&backing).unwrap();
    let env = [
        ("EDGELIVE_STORAGE_DURABILITY", durability),
        ("EDGELIVE_STORAGE_MAX_READ", "1000000"),
        // Full speed on one connection: the per-connection command rate limit off.
        ("EDGELIVE_LIVE_CLIENT_COMMAND_RATE", "0"),
        // The whole history in one reply (~150 bytes a publication) fits the client's queue.
        ("EDGELIVE_LIVE_CLIENT_QUEUE_MAX_SIZE", "67108864"),
    ];
    let mut fs = CutFs::mount(&backing, &mnt);
    let data = mnt.join("data");
    let mut d = Daemon::start_with_config_in(&data, CONFIG, &env);

    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    let r = call(&mut p, 2, "subscribe", json!({"channel": CH})).await;
    let epoch = subscribed_with_history(&r, 2)["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut acked: Vec<(u64, Instant)> = Vec::new();
    // offset → n of every publication the subscriber was sent.
    let mut seen: HashMap<u64, u64> = HashMap::new();
    let (mut next, mut in_flight) = (1u64, 0u64);
    while acked.len() < acks {
        while in_flight < IN_FLIGHT {
            let cmd = json!({"id": 1000 + next, "publish": {"channel": CH, "data": payload(next)}});
            p.send(&cmd.to_string()).await;
            next += 1;
            in_flight += 1;
        }
        let m = p.recv_non_ping().await;
        if let Some(o) = m["push"]["pub"]["offset"].as_u64() {
            seen.insert(o, m["push"]["pub"]["data"]["n"].as_u64().unwrap());
        } else if m["publish"].is_object() {
            acked.push((m["id"].as_u64().unwrap() - 1000, Instant::now()));
            in_flight -= 1;
        } else if !m["push"].is_object() {
            panic!("unexpected reply {m}");
        }
    }
    let cut_at = Instant::now();
    d.kill();
    let cutfs = if cut {
        let l = fs.cut();
        drop(d);
        fs.unmount();
        fs = CutFs::mount(&backing, &mnt);
        l
    } else {
        drop(d);
        "no cut".into()
    };
    drop(p);
    let d = Daemon::start_with_config_in(&data, CONFIG, &env);
    let (mut s, _) = Peer::connected(&d.ws_url()).await;
    let h = call(&mut s, 3, "history", json!({"channel": CH, "limit": -1})).await;
    let h = &h["history"];
    let pubs = h["publications"].as_array().cloned().unwrap_or_default();
    let stored: HashMap<u64, (u64, Value)> = pubs
        .iter()
        .map(|p| {
            let data = p["data"].clone();
            (
                data["n"].as_u64().unwrap(),
                (p["offset"].as_u64().unwrap(), data),
            )
        })
        .collect();
    let top = h["offset"].as_u64().unwrap_or(0);
    let epoch_changed = h["epoch"] != epoch.as_str();
    let mut bad = Vec::new();

    let lost: Vec<&(u64, Instant)> = acked
        .iter()
        .filter(|(n, _)| stored.get(n).map(|(_, v)| v) != Some(&payload(*n)))
        .collect();
    if let Some((n, _)) = lost.first() {
        bad.push(format!(
            "{} acknowledged publications lost (first n={n})",
            lost.len()
        ));
    }
    let offs: Vec<u64> = pubs.iter().map(|p| p["offset"].as_u64().unwrap()).collect();
    // The stored offsets run without a hole; the top may be above the last of them (offsets
    // reserved before the stop are skipped, never reused), and then recovery into that skip
    // must say it is not exact.
    let last = offs.last().copied().unwrap_or(0);
    let first = offs.first().copied().unwrap_or(1);
    if offs != (first..=last).collect::<Vec<_>>() || top < last {
        bad.push(format!(
            "stored offsets {first}..{last} have holes (top {top})"
        ));
    }
    if !epoch_changed {
        // Under the same epoch an offset a client saw names the same publication.
        let by_offset: HashMap<u64, u64> = stored.iter().map(|(n, (o, _))| (*o, *n)).collect();
        for (o, n) in &seen {
            if let Some(now) = by_offset.get(o).filter(|now| *now != n) {
                bad.push(format!(
                    "offset {o} was n={n}, now n={now} under the same epoch"
                ));
            }
        }
    }
    let top_seen = seen.keys().copied().max().unwrap_or(0);
    let r = call(
        &mut s,
        4,
        "subscribe",
        json!({"channel": CH, "recover": true, "offset": top_seen, "epoch": epoch}),
    )
    .await;
    let r = &r["subscribe"];
    if epoch_changed || top_seen > last {
        if r["recovered"] == true || r["was_recovering"] != true {
            bad.push(format!(
                "position {top_seen} beyond the surviving top {last} (epoch changed: \
                 {epoch_changed}) answered {r}"
            ));
        }
    } else if r["recovered"] == true {
        // A recovery is exact: every offset after the position, up to the top.
        let got: Vec<u64> = r["publications"]
            .as_array()
            .map(|a| a.iter().map(|p| p["offset"].as_u64().unwrap()).collect())
            .unwrap_or_default();
        if got != (top_seen + 1..=top).collect::<Vec<_>>() {
            bad.push(format!(
                "recovered from {top_seen} with offsets {got:?}, top {top}"
            ));
        }
    } else if r["was_recovering"] != true {
        bad.push(format!(
            "recovery from {top_seen} not acknowledged as one: {r}"
        ));
    }
    drop(s);
    drop(d);
    drop(fs);
    let figures = Figures {
        acks: acked.len(),
        lost: lost.len(),
        oldest_lost: lost.first().map(|(_, at)| cut_at - *at),
        stored: stored.len(),
        top,
        seen: top_seen,
        epoch_changed,
        cutfs,
    };
    (figures, bad)
}

/// Runs `POWERCUT_CUTS` (default `default_cuts`) rounds with random cut points; returns every
/// round's violations, labelled, after printing the figures.
async fn rounds(durability: &str, cut: bool, default_cuts: usize) -> Vec<String> {
    let cuts = std::env::var("POWERCUT_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cuts);
    let seed = std::env::var("POWERCUT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    println!("durability={durability} cut={cut} cuts={cuts} POWERCUT_SEED={seed}");
    let mut all = Vec::new();
    for i in 0..cuts {
        let acks = rng.random_range(ACKS);
        let (f, bad) = round(durability, acks, cut).await;
        println!(
            "  round {i}: acks={} lost={} oldest_lost={:?} stored={} top={} seen={} \
             epoch_changed={} [{}]",
            f.acks, f.lost, f.oldest_lost, f.stored, f.top, f.seen, f.epoch_changed, f.cutfs
        );
        all.extend(
            bad.into_iter()
                .map(|b| format!("round {i} ({} acks): {b}", f.acks)),
        );
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_batched_loses_no_acknowledged_publication() {
    let bad = rounds("batched", true, 6).await;
    assert!(
        bad.is_empty(),
        "durability = \"batched\" under power cuts:\n{}",
        bad.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_durability_loses_nothing_acknowledged_on_sigkill() {
    let bad = rounds("crash", false, 3).await;
    assert!(
        bad.is_empty(),
        "durability = \"crash\" under SIGKILL:\n{}",
        bad.join("\n")
    );
    // Not promised for "crash": only shown, for the record.
    let under_cut = rounds("crash", true, 2).await;
    println!("durability = \"crash\" under power cuts (not asserted): {under_cut:?}");
}

/// Sends a publish and returns without waiting for its reply.
async fn send_publish(p: &mut Peer, id: u64, ch: &str, n: u64) {
    let cmd = json!({"id": id, "publish": {"channel": ch, "data": {"n": n}}});
    p.send(&cmd.to_string()).await;
}

/// The next reply (a message with an id).
async fn next_reply(p: &mut Peer) -> Value {
    loop {
        let m = p.recv_non_ping().await;
        if m.get("id").is_some() {
            return m;
        }
    }
}

/// The next publication push: its channel and publication.
async fn next_pub(p: &mut Peer) -> (String, Value) {
    loop {
        let m = p.recv_non_ping().await;
        if let Some(publication) = m["push"].get("pub") {
            let ch = m["push"]["channel"].as_str().unwrap().to_owned();
            return (ch, publication.clone());
        }
    }
}

/// Acknowledgement by channel kind, with the disk's syncs held: a publication on a channel
/// with history is broadcast at once and acknowledged only once it is durable (`batched`); one
/// on a channel without history is acknowledged at once and does not queue behind it; with
/// `durability = "none"` nothing waits for the disk. Order, not time, is what is checked.
#[tokio::test]
async fn only_what_is_stored_waits_for_the_disk_and_fan_out_never_does() {
    const KEPT: &str = "grafana/broadcast/kept";
    const QUIET: &str = "grafana/broadcast/quiet/x";
    let config = "[[history]]\npattern = \"grafana/broadcast/quiet/*\"\nsize = 0\nttl = \"1h\"\n\
                  [[history]]\npattern = \"grafana/broadcast/*\"\nsize = 100\nttl = \"1h\"\n";
    for durability in ["batched", "none"] {
        let tmp = tempfile::tempdir().unwrap();
        let backing = tmp.path().join("disk");
        std::fs::create_dir_all(&backing).unwrap();
        let mut fs = CutFs::mount(&backing, &tmp.path().join("mnt"));
        let env = [("EDGELIVE_STORAGE_DURABILITY", durability)];
        let d = Daemon::start_with_config_in(&tmp.path().join("mnt/data"), config, &env);
        let (mut p, _) = Peer::connected(&d.ws_url()).await;
        let (mut s, _) = Peer::connected(&d.ws_url()).await;
        for (id, ch) in [(2, KEPT), (3, QUIET)] {
            let r = call(&mut s, id, "subscribe", json!({"channel": ch})).await;
            assert!(r.get("error").is_none(), "{r}");
        }
        // The first publication creates the channel (its reservation is synced).
        send_publish(&mut p, 10, KEPT, 1).await;
        assert_eq!(next_reply(&mut p).await, json!({"id": 10, "publish": {}}));
        assert_eq!(next_pub(&mut s).await.1["offset"], 1);

        fs.hold();
        send_publish(&mut p, 11, KEPT, 2).await;
        send_publish(&mut p, 12, QUIET, 3).await;
        // Both reach the subscriber while the disk is held: fan-out does not wait for it.
        let (ch, kept) = next_pub(&mut s).await;
        assert_eq!((ch.as_str(), kept["offset"].clone()), (KEPT, json!(2)));
        let (ch, quiet) = next_pub(&mut s).await;
        assert_eq!((ch.as_str(), quiet["data"]["n"].clone()), (QUIET, json!(3)));
        let first = next_reply(&mut p).await;
        let second = match durability {
            // Stored and not yet durable: its acknowledgement waits; the other does not.
            "batched" => {
                assert_eq!(first, json!({"id": 12, "publish": {}}), "{durability}");
                fs.release();
                next_reply(&mut p).await
            }
            // Nothing waits for the disk: in order, while it is still held.
            _ => {
                assert_eq!(first, json!({"id": 11, "publish": {}}), "{durability}");
                let second = next_reply(&mut p).await;
                fs.release();
                second
            }
        };
        let expected = if durability == "batched" { 11 } else { 12 };
        assert_eq!(
            second,
            json!({"id": expected, "publish": {}}),
            "{durability}"
        );
        let h = call(&mut p, 20, "history", json!({"channel": KEPT, "limit": -1})).await;
        let stored: Vec<u64> = h["history"]["publications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["data"]["n"].as_u64().unwrap())
            .collect();
        assert_eq!(stored, [1, 2], "{durability}: {h}");
        drop((p, s));
        drop(d);
        fs.unmount();
    }
}

/// Under systemd's watchdog (`WATCHDOG_USEC`), `WATCHDOG=1` goes out while the storage threads
/// make progress, stops while one is stuck on a held `fsync` (so systemd, not the daemon, decides
/// to restart it), and resumes once the disk answers.
#[tokio::test]
async fn systemd_watchdog_is_fed_only_while_the_storage_threads_make_progress() {
    use std::os::unix::net::UnixDatagram;
    use std::sync::{Arc, Mutex};
    const KEPT: &str = "grafana/broadcast/watched";
    let tmp = tempfile::tempdir().unwrap();
    let backing = tmp.path().join("disk");
    std::fs::create_dir_all(&backing).unwrap();
    let mut fs = CutFs::mount(&backing, &tmp.path().join("mnt"));
    let sock_path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // Every WATCHDOG=1, with when it arrived.
    let pings: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listener = {
        let (pings, stop) = (pings.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    if String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1") {
                        pings.lock().unwrap().push(Instant::now());
                    }
                }
            }
        })
    };
    let since = |t: Instant| pings.lock().unwrap().iter().filter(|p| **p >= t).count();
    let env = [
        ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "1000000"),
    ];
    let d = Daemon::start_with_config_in(&tmp.path().join("mnt/data"), CONFIG, &env);
    let start = Instant::now();
    common::eventually("WATCHDOG=1 every half period", || since(start) >= 2);
    let (mut p, _) = Peer::connected(&d.ws_url()).await;
    send_publish(&mut p, 10, KEPT, 1).await;
    assert_eq!(next_reply(&mut p).await, json!({"id": 10, "publish": {}}));

    // A publication whose commit waits on the held disk: the flush thread is stuck in fsync.
    fs.hold();
    send_publish(&mut p, 11, KEPT, 2).await;
    assert!(d.logged("storage thread stalled"), "{}", d.log_text());
    // From a half period after the stall was seen (2 s), no ping; the daemon does not exit.
    let quiet_from = Instant::now() + Duration::from_millis(600);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        since(quiet_from),
        0,
        "WATCHDOG=1 sent while a storage thread was stuck"
    );
    let r = call(&mut p, 12, "presence_stats", json!({"channel": KEPT})).await;
    assert_eq!(r["id"], 12, "the event loop still answers: {r}");

    fs.release();
    assert_eq!(next_reply(&mut p).await, json!({"id": 11, "publish": {}}));
    let released = Instant::now();
    common::eventually("WATCHDOG=1 again", || since(released) >= 1);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    listener.join().unwrap();
    drop(p);
    drop(d);
    fs.unmount();
}
