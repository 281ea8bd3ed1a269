//! The Debian packages, used as an operator uses them.
//!
//! - The amd64 package (`cargo deb -p edgelive`) is installed in a booted Debian 12: a
//!   debootstrapped root (cached under `~/.cache/edgelive/`, keyed by what it was made from)
//!   run by `systemd-nspawn --ephemeral`, so every run starts from the same clean copy. Commands
//!   run inside with `nsenter`; this test's own clients reach the daemon from a thread that
//!   joined the machine's private network namespace.
//! - The arm64 package (`packaging/deb.sh arm64`) is cross-built, and its binary answers
//!   `/api/health` under `qemu-aarch64-static`.
//!
//! Needs root (debootstrap, nspawn, nsenter, Debian packages), which `tests/run` in CI has;
//! `tests/run` installs debootstrap, systemd-container, qemu-user-static and cargo-deb.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{call, Peer};
use serde_json::json;

/// One package build or machine at a time: both are heavy on a 2-core machine.
static HEAVY: Mutex<()> = Mutex::new(());

const VERSION: &str = env!("CARGO_PKG_VERSION");
const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn require_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the package tests boot a Debian machine and install packages: run them as root (CI does)"
    );
}

/// A minimal Debian 12 root with systemd, made once and kept in the cache.
fn debian_root() -> PathBuf {
    const SUITE: &str = "bookworm";
    const INCLUDE: &str = "systemd,systemd-sysv,dbus,curl";
    let key = format!("{SUITE}-minbase-{}", INCLUDE.replace(',', "+"));
    let cache = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
        .join(".cache/edgelive");
    let root = cache.join(&key);
    if root.join("usr/lib/systemd/systemd").exists() {
        return root;
    }
    std::fs::create_dir_all(&cache).unwrap();
    let partial = cache.join(format!("{key}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    run(Command::new("debootstrap")
        .args(["--variant=minbase", &format!("--include={INCLUDE}"), SUITE])
        .arg(&partial)
        .arg("http://deb.debian.org/debian"));
    std::fs::rename(&partial, &root).unwrap();
    root
}

/// A booted Debian machine, stopped (and its ephemeral copy removed) when dropped.
struct Machine {
    nspawn: Child,
    /// The machine's PID 1, as this host sees it.
    init: u32,
}

impl Machine {
    /// Boots a throwaway copy of `root` with `debs` visible at `/debs`.
    fn boot(root: &Path, debs: &Path) -> Machine {
        let name = format!("edgelive-test-{}", std::process::id());
        let nspawn = Command::new("systemd-nspawn")
            .arg("-D")
            .arg(root)
            .args([
                "--ephemeral",
                "--boot",
                "--machine",
                &name,
                // Without these two nspawn wants a system bus to register with.
                "--register=no",
                "--keep-unit",
                // Its own loopback only: port 3030 inside is not the host's.
                "--private-network",
                "--console=pipe",
            ])
            .arg(format!("--bind-ro={}:/debs", debs.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("systemd-nspawn (Debian package systemd-container)");
        let children = format!("/proc/{0}/task/{0}/children", nspawn.id());
        let started = Instant::now();
        let init = loop {
            let listed = std::fs::read_to_string(&children).unwrap_or_default();
            if let Some(pid) = listed.split_whitespace().next() {
                break pid.parse().unwrap();
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the machine did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let m = Machine { nspawn, init };
        // "offline" until PID 1 has become systemd and set up /run/systemd; then `--wait` waits
        // for the boot to finish. "degraded" is fine: some units of a full system have nothing
        // to do in a container.
        loop {
            let state = m.sh("systemctl is-system-running --wait || true");
            if state.contains("running") || state.contains("degraded") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the machine did not boot: {state}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        m
    }

    /// Runs a shell script inside; returns its exit status and output (stdout then stderr).
    fn try_sh(&self, script: &str) -> (bool, String) {
        let out = Command::new("nsenter")
            .args(["-t", &self.init.to_string(), "-a", "sh", "-c", script])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .expect("nsenter (Debian package util-linux)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Runs a shell script inside, which must succeed; returns its output.
    fn sh(&self, script: &str) -> String {
        let (ok, text) = self.try_sh(script);
        assert!(ok, "`{script}` failed inside the machine:\n{text}");
        text
    }

    /// Runs `f` on a thread inside the machine's network namespace, with a runtime of its own.
    fn on_its_network<T: Send>(&self, f: impl AsyncFnOnce() -> T + Send) -> T {
        let netns = format!("/proc/{}/ns/net", self.init);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(&netns).unwrap();
                use std::os::fd::AsRawFd;
                let joined = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(joined, 0, "setns: {}", std::io::Error::last_os_error());
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(f())
            })
            .join()
            .unwrap()
        })
    }

    /// Waits until the service answers on its loopback (after a start or restart).
    fn wait_healthy(&self) {
        self.sh(
            "for i in $(seq 1 100); do \
               curl -sf http://127.0.0.1:3030/api/health && exit 0; sleep 0.1; \
             done; systemctl status edgelive --no-pager; journalctl -u edgelive --no-pager | tail -30; exit 1",
        );
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        // SIGTERM makes nspawn power the machine off; its ephemeral copy goes with it.
        unsafe { libc::kill(self.nspawn.id() as i32, libc::SIGTERM) };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

const DAEMON: &str = "127.0.0.1:3030";

fn addr() -> SocketAddr {
    DAEMON.parse().unwrap()
}

/// Pushes line protocol with a bearer token; returns the status.
fn push(token: &str, stream: &str, body: &str) -> u16 {
    let auth = format!("Bearer {token}");
    let path = format!("/api/live/push/{stream}");
    common::http(
        addr(),
        "POST",
        &path,
        &[("Authorization", &auth)],
        body.as_bytes(),
    )
    .0
}

/// The values of a history read of `channel`, oldest first.
async fn history(token: &str, channel: &str) -> Vec<f64> {
    let url = format!("ws://{DAEMON}/api/live/ws");
    let mut p = Peer::connect(&url).await;
    let r = call(&mut p, 1, "connect", json!({ "token": token })).await;
    assert!(r.get("connect").is_some(), "{r}");
    let r = call(
        &mut p,
        2,
        "history",
        json!({ "channel": channel, "limit": 100 }),
    )
    .await;
    r["history"]["publications"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"))
        .iter()
        .flat_map(|p| {
            // labels_column frames: the labels, the time, then the fields.
            let values = p["data"]["data"]["values"][2].as_array().cloned();
            values.unwrap_or_else(|| panic!("{p}"))
        })
        .map(|v| v.as_f64().unwrap_or_else(|| panic!("{v}")))
        .collect()
}

#[test]
fn amd64_package_installs_a_secured_service_that_reloads_restarts_and_purges() {
    require_root();
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let debs = tempfile::tempdir().unwrap();
    run(Command::new(env!("CARGO"))
        .args(["deb", "-p", "edgelive", "--output"])
        .arg(debs.path())
        .current_dir(MANIFEST));
    let deb = format!("edgelive_{VERSION}-1_amd64.deb");
    assert!(debs.path().join(&deb).exists());
    let m = Machine::boot(&debian_root(), debs.path());

    // The README's install command; the postinst says where the admin token is.
    let said = m.sh(&format!("apt-get install -y -q /debs/{deb}"));
    assert!(
        said.contains("/etc/edgelive/credentials/admin.token"),
        "{said}"
    );
    assert_eq!(m.sh("systemctl is-active edgelive").trim(), "active");
    // Credentials: random, 0600, the service user's; the service runs as that user.
    let creds = m.sh("stat -c '%a %U %s' /etc/edgelive/credentials/admin.token /etc/edgelive/credentials/jwt.key");
    assert_eq!(creds, "600 edgelive 64\n600 edgelive 64\n", "{creds}");
    let user = m.sh("stat -c %U /proc/$(systemctl show -p MainPID --value edgelive)");
    assert_eq!(user.trim(), "edgelive");
    m.wait_healthy();
    let admin = m.sh("cat /etc/edgelive/credentials/admin.token");
    // The README's second command: a viewer token minted with the installed key.
    let viewer = m.sh(
        "edgelive token --config /etc/edgelive/edgelive.toml --sub alice --role viewer --ttl 1h",
    );
    let viewer = viewer.trim();

    // Points pushed, then read back as history; anonymous access is refused off-loopback
    // only, but credentials are configured, so here too.
    let (admin2, viewer2) = (admin.clone(), viewer.to_owned());
    let values = m.on_its_network(async move || {
        assert_eq!(push(&admin2, "plant", "boiler temp=1\nboiler temp=2"), 200);
        assert_eq!(push(&admin2, "plant", "boiler temp=3"), 200);
        assert_eq!(push("not-a-token-at-all", "plant", "boiler temp=4"), 401);
        assert_eq!(push(&viewer2, "plant", "boiler temp=4"), 403);
        history(&viewer2, "stream/plant/boiler").await
    });
    assert_eq!(values, vec![1.0, 2.0, 3.0]);

    // A restart, and a crash (SIGKILL; Restart=on-failure brings it back), keep the history.
    m.sh("systemctl restart edgelive");
    m.wait_healthy();
    m.sh("kill -KILL $(systemctl show -p MainPID --value edgelive)");
    m.sh("for i in $(seq 1 100); do systemctl is-active -q edgelive && exit 0; sleep 0.1; done; exit 1");
    m.wait_healthy();
    let viewer2 = viewer.to_owned();
    let values = m.on_its_network(async move || history(&viewer2, "stream/plant/boiler").await);
    assert_eq!(values, vec![1.0, 2.0, 3.0]);

    // A new admin token in the credential file, applied by `systemctl reload`: the old token's
    // open connection is closed with 3500 and the old token refused; the new one works.
    let (old, viewer2) = (admin.clone(), viewer.to_owned());
    let new = "a-new-admin-token-0123456789abcdef".to_owned();
    let new2 = new.clone();
    let script = format!(
        "printf %s {new} > /etc/edgelive/credentials/admin.token && systemctl reload edgelive"
    );
    let m_ref = &m;
    m.on_its_network(async move || {
        let url = format!("ws://{DAEMON}/api/live/ws");
        let mut p = Peer::connect(&url).await;
        let r = call(&mut p, 1, "connect", json!({ "token": old })).await;
        assert!(r.get("connect").is_some(), "{r}");
        let mut v = Peer::connect(&url).await;
        let r = call(&mut v, 1, "connect", json!({ "token": viewer2 })).await;
        assert!(r.get("connect").is_some(), "{r}");
        // systemctl (a process inside the machine) runs from this thread's point of view too.
        let reloaded = tokio::task::spawn_blocking({
            let script = script.clone();
            let init = m_ref.init;
            move || {
                Command::new("nsenter")
                    .args(["-t", &init.to_string(), "-a", "sh", "-c", &script])
                    .status()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        assert!(reloaded.success());
        let ended = p.until_closed(Duration::from_secs(10)).await;
        assert_eq!(ended, common::Ended::Close(3500, "token revoked".into()));
        assert_eq!(push(&old, "plant", "boiler temp=5"), 401);
        assert_eq!(push(&new2, "plant", "boiler temp=5"), 200);
        // The viewer's JWT still holds: its connection stays and reads the new point.
        let r = call(
            &mut v,
            2,
            "history",
            json!({ "channel": "stream/plant/boiler", "limit": 100 }),
        )
        .await;
        assert_eq!(
            r["history"]["publications"].as_array().map(Vec::len),
            Some(3),
            "{r}"
        );
    });
    let status = m.sh("systemctl show -p StatusText --value edgelive");
    assert_eq!(status.trim(), "config reloaded");
    // A broken file changes nothing, and says so.
    m.sh("cp /etc/edgelive/edgelive.toml /root/good.toml && echo 'nonsense = [' >> /etc/edgelive/edgelive.toml && systemctl reload edgelive");
    let status = m.sh("systemctl show -p StatusText --value edgelive");
    assert!(status.contains("refused"), "{status}");
    assert_eq!(m.sh("systemctl is-active edgelive").trim(), "active");
    m.sh("cp /root/good.toml /etc/edgelive/edgelive.toml");
    // The journal has the daemon's priorities: the refusal is an error.
    let errors = m.sh("journalctl -u edgelive -p err --no-pager -o cat");
    assert!(errors.contains("config reload refused"), "{errors}");

    // An upgrade (the same package again) keeps credentials and data.
    m.sh(&format!("apt-get install -y -q --reinstall /debs/{deb}"));
    m.wait_healthy();
    assert_eq!(
        m.sh("cat /etc/edgelive/credentials/admin.token"),
        new,
        "the upgrade kept the credentials"
    );
    let viewer2 = viewer.to_owned();
    let values = m.on_its_network(async move || history(&viewer2, "stream/plant/boiler").await);
    assert_eq!(values, vec![1.0, 2.0, 3.0, 5.0]);

    // The watchdog is on and fed.
    assert_eq!(
        m.sh("systemctl show -p WatchdogUSec --value edgelive")
            .trim(),
        "30s"
    );

    // Purge removes credentials and data.
    m.sh("apt-get purge -y -q edgelive");
    let (gone, listing) = m.try_sh("ls /etc/edgelive/credentials /var/lib/edgelive");
    assert!(!gone, "{listing}");
}

#[test]
fn arm64_package_cross_builds_and_its_binary_answers_health() {
    require_root();
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    run(Command::new(Path::new(MANIFEST).join("packaging/deb.sh"))
        .arg("arm64")
        .current_dir(MANIFEST));
    let deb = Path::new(MANIFEST).join(format!("target/debian/edgelive_{VERSION}-1_arm64.deb"));
    let info = run(Command::new("dpkg-deb").arg("-I").arg(&deb));
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("Architecture: arm64"), "{info}");
    assert!(info.contains("Depends: libc6 (>="), "{info}");

    let bin = Path::new(MANIFEST).join("target/aarch64-unknown-linux-gnu/release/edgelive");
    let version = run(Command::new("qemu-aarch64-static")
        .args(["-L", "/"])
        .arg(&bin)
        .arg("--version"));
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("edgelive {VERSION} (aarch64-unknown-linux-gnu)")
    );
    // `-L /`: the arm64 libc that deb.sh installed (Debian's multiarch paths).
    let data = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut daemon = Command::new("qemu-aarch64-static")
        .args(["-L", "/"])
        .arg(&bin)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let started = Instant::now();
    let answered = loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            break common::http(addr, "GET", "/api/health", &[], b"");
        }
        if started.elapsed() > Duration::from_secs(60) {
            break (0, "no answer within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = daemon.wait().unwrap();
    assert_eq!(
        answered,
        (200, r#"{"status":"ok","access":"granted"}"#.to_owned())
    );
    assert!(status.success(), "{status}");
}
