//! What each `[storage] durability` level costs, end to end against the real daemon of this
//! build profile (issue 13):
//! - acknowledged publications/s with 8 and with 256 publishes in flight (one client,
//!   200-byte payloads, a channel with history);
//! - publish-reply latency p50/p99 at a steady 1,000/s;
//! - sync calls per second the daemon makes (`perf stat` on the syscall tracepoints of every
//!   thread: fsync, fdatasync, sync_file_range) at a steady 1,000/s and 10,000/s (several
//!   clients).
//!
//! On this machine's disk (the temp dir), and on an ext4 on a tmpfs-backed loop device for
//! contrast when run as root (skipped otherwise).
//!
//! Run: cargo bench --bench durability

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{connect, publish, publish_cmd, Daemon, Ws};

const CONFIG: &str = "[[history]]\npattern = \"grafana/broadcast/**\"\nsize = 1000\nttl = \"1h\"\n";
const LEVELS: [&str; 3] = ["batched", "crash", "none"];

/// The publish replies in the next frame: (id, acknowledged); an error is only 111, the
/// storage queue being full (the daemon past its capacity).
async fn acks<S>(ws: &mut S) -> Vec<(u64, bool)>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        if let Message::Text(t) = ws.next().await.unwrap().unwrap() {
            return t
                .split('\n')
                .filter_map(|l| {
                    let v: Value = serde_json::from_str(l).unwrap();
                    if v.get("error").is_some() {
                        assert_eq!(v["error"]["code"], 111, "publish failed: {v}");
                    }
                    Some((v["id"].as_u64()?, v.get("publish").is_some()))
                })
                .collect();
        }
    }
}

/// `n` publications with at most `window` unacknowledged; acknowledged per second.
async fn throughput(ws: &mut Ws, n: u64, window: u64) -> f64 {
    n as f64
        / publish(ws, "grafana/broadcast/tput", n, window)
            .await
            .as_secs_f64()
}

/// Publishes at `rate`/s for `secs` on one connection; the reply latencies of the acknowledged
/// ones, sorted, and how many were refused (111).
async fn steady(ws: Ws, rate: u64, secs: u64, channel: String) -> (Vec<Duration>, usize) {
    let (mut tx, mut rx) = ws.split();
    let n = rate * secs;
    let every = Duration::from_secs_f64(1.0 / rate as f64);
    let mut sent_at = std::collections::HashMap::new();
    let mut lat = Vec::with_capacity(n as usize);
    let start = tokio::time::Instant::now();
    let mut next = 0u64;
    let mut refused = 0;
    while ((lat.len() + refused) as u64) < n {
        let due = start + every * next as u32;
        tokio::select! {
            _ = tokio::time::sleep_until(due), if next < n => {
                let id = 10 + next;
                sent_at.insert(id, Instant::now());
                tx.send(Message::text(publish_cmd(id, &channel))).await.unwrap();
                next += 1;
            }
            got = acks(&mut rx) => {
                for (id, ok) in got {
                    let at = sent_at.remove(&id).unwrap();
                    if ok {
                        lat.push(at.elapsed());
                    } else {
                        refused += 1;
                    }
                }
            }
        }
    }
    lat.sort();
    (lat, refused)
}

/// `rate`/s spread over enough connections, for `secs`; all latencies, sorted, and refusals.
async fn steady_total(addr: &str, rate: u64, secs: u64) -> (Vec<Duration>, usize) {
    let conns = rate.div_ceil(1000);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let ws = connect(addr).await;
        tasks.push(tokio::spawn(steady(
            ws,
            rate / conns,
            secs,
            format!("grafana/broadcast/steady{c}"),
        )));
    }
    let (mut all, mut refused) = (Vec::new(), 0);
    for t in tasks {
        let (lat, r) = t.await.unwrap();
        all.extend(lat);
        refused += r;
    }
    all.sort();
    (all, refused)
}

fn pct(v: &[Duration], p: f64) -> f64 {
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)].as_secs_f64() * 1e6
}

/// Sync calls/s of `pid` while `work` runs: `perf stat` on the syscall tracepoints of every
/// thread (no ptrace, so the daemon keeps its speed; strace -p stops it at every call).
async fn syncs_per_s<F: std::future::Future>(
    pid: u32,
    secs: f64,
    work: F,
) -> (Option<String>, F::Output) {
    const CALLS: [&str; 3] = ["fdatasync", "fsync", "sync_file_range"];
    let events: Vec<String> = CALLS
        .iter()
        .map(|c| format!("syscalls:sys_enter_{c}"))
        .collect();
    let perf = match Command::new("perf")
        .args([
            "stat",
            "-x",
            ",",
            "-e",
            &events.join(","),
            "-p",
            &pid.to_string(),
        ])
        .args(["--", "sleep", &format!("{secs}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(p) => p,
        Err(_) => return (None, work.await),
    };
    let done = work.await;
    let Ok(out) = perf.wait_with_output() else {
        return (None, done);
    };
    let text = String::from_utf8_lossy(&out.stderr);
    let mut parts = Vec::new();
    for (call, event) in CALLS.iter().zip(&events) {
        let n: f64 = text
            .lines()
            .find(|l| l.contains(event.as_str()))
            .and_then(|l| l.split(',').next()?.parse().ok())
            .unwrap_or(0.0);
        parts.push(format!("{call} {:.0}/s", n / secs));
    }
    (Some(parts.join(", ")), done)
}

/// An ext4 on a loop device backed by tmpfs, when we may make one (root); unmounted on drop.
struct TmpfsLoop {
    mount: tempfile::TempDir,
    image: PathBuf,
    dev: String,
}

impl TmpfsLoop {
    fn make() -> Option<TmpfsLoop> {
        let image =
            Path::new("/dev/shm").join(format!("edgelive-bench-{}.img", std::process::id()));
        let ok = |c: &mut Command| {
            c.stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ok(Command::new("truncate").args(["-s", "512M"]).arg(&image)) {
            return None;
        }
        let dev = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&image)
            .output()
            .ok()?;
        let dev = String::from_utf8_lossy(&dev.stdout).trim().to_owned();
        let mount = tempfile::tempdir().unwrap();
        if dev.is_empty()
            || !ok(Command::new("mkfs.ext4").args(["-q", &dev]))
            || !ok(Command::new("mount").arg(&dev).arg(mount.path()))
        {
            let _ = std::fs::remove_file(&image);
            return None;
        }
        Some(TmpfsLoop { mount, image, dev })
    }
}

impl Drop for TmpfsLoop {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mount.path()).status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

async fn run_on(place: &str, parent: &Path) {
    println!("\n{place}:\n");
    println!("| durability | acked/s, 8 in flight | acked/s, 256 in flight | reply p50 / p99 at 1,000/s | sync calls at 1,000/s | at 10,000/s |");
    println!("|---|---:|---:|---:|---|---|");
    // DURABILITY_LEVELS=crash,none runs only those.
    let only = std::env::var("DURABILITY_LEVELS").unwrap_or_default();
    for level in LEVELS
        .into_iter()
        .filter(|l| only.is_empty() || only.split(',').any(|o| o == *l))
    {
        let d = Daemon::start_in(
            parent,
            CONFIG,
            &[
                ("EDGELIVE_STORAGE_DURABILITY", level),
                ("EDGELIVE_LIVE_MAX_CONNECTIONS", "-1"),
                ("EDGELIVE_LIVE_CLIENT_COMMAND_RATE", "0"),
                ("EDGELIVE_LIVE_MESSAGE_SIZE_LIMIT", "1048576"),
            ],
        );
        let mut ws = connect(&d.addr).await;
        throughput(&mut ws, 2_000, 256).await;
        let t8 = throughput(&mut ws, 5_000, 8).await;
        let t256 = throughput(&mut ws, 20_000, 256).await;
        let (lat, refused) = steady_total(&d.addr, 1000, 5).await;
        let pid = d.child.id();
        let (s1k, _) = syncs_per_s(pid, 5.0, steady_total(&d.addr, 1000, 5)).await;
        let (s10k, (_, refused10k)) = syncs_per_s(pid, 5.0, steady_total(&d.addr, 10_000, 5)).await;
        let note = |n: usize| {
            if n > 0 {
                format!(" ({n} refused with 111)")
            } else {
                String::new()
            }
        };
        println!(
            "| {level} | {t8:.0} | {t256:.0} | {:.0} / {:.0} µs{} | {} | {}{} |",
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            note(refused),
            s1k.unwrap_or_else(|| "(no perf)".into()),
            s10k.unwrap_or_else(|| "(no perf)".into()),
            note(refused10k),
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        run_on("this machine's disk (temp dir)", &std::env::temp_dir()).await;
        match TmpfsLoop::make() {
            Some(l) => run_on("ext4 on a tmpfs-backed loop device", l.mount.path()).await,
            None => println!("\n(no tmpfs-backed loop device: needs root, losetup, mkfs.ext4)"),
        }
    });
}
