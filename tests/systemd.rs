//! systemd integration: readiness and stopping notifications on a fake NOTIFY_SOCKET, and the
//! shipped unit file checked by `systemd-analyze` (syntax, and a hardening score ≤ 2.0).

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::Daemon;

fn recv_state(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn ready_once_listening_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut d = Daemon::start(&[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    assert!(recv_state(&sock).contains("READY=1"));
    // Ready means accepting: health answers right away.
    assert_eq!(common::http(d.addr, "GET", "/api/health", &[], b"").0, 200);
    let (status, _) = d.terminate(Duration::from_secs(10));
    assert!(status.success());
    assert!(recv_state(&sock).contains("STOPPING=1"));
}

#[test]
fn unit_file_verifies_and_is_hardened() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/edgelive.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains("Type=notify"));
    // Reload by SIGHUP (systemd 252 has no Type=notify-reload) with the shell's own kill, and
    // the watchdog the daemon feeds.
    assert!(text.contains("ExecReload=/bin/sh -c \"kill -HUP ${MAINPID}\""));
    assert!(text.contains("WatchdogSec="));
    // verify checks that ExecStart exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("edgelive.service");
    std::fs::write(
        &local,
        text.replace("/usr/bin/edgelive", env!("CARGO_BIN_EXE_edgelive")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&local)
        .output()
        .expect("systemd-analyze (Debian package systemd) must be installed");
    // verify exits 0 on unknown keys, so any output at all is a failure.
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=15"])
        .arg(&local)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exposure above 1.5:\n{said}");
}

/// Lines the daemon wrote to `stderr` (a pipe) until it logged `until`, then stops it.
fn logged_until(cmd: &mut Command, until: &str) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just made and are owned here alone.
    let (read, write) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    let journal = {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::fstat(fds[1], &mut st) }, 0);
        format!("{}:{}", st.st_dev, st.st_ino)
    };
    let data = tempfile::tempdir().unwrap();
    let mut child = cmd
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env("JOURNAL_STREAM", journal)
        .env_remove("RUST_LOG")
        .stderr(write)
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(read).lines() {
        let line = line.unwrap();
        let done = line.contains(until);
        lines.push(line);
        if done {
            break;
        }
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    lines
}

#[test]
fn under_journald_lines_carry_their_priority_and_no_colours_or_timestamps() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgelive"));
    let lines = logged_until(&mut cmd, "listening");
    assert!(!lines.is_empty());
    for line in &lines {
        assert!(
            line.starts_with("<6> INFO ") || line.starts_with("<4> WARN "),
            "{line:?}"
        );
        assert!(!line.contains('\u{1b}'), "{line:?}");
    }
    // Not when stderr is something else than the stream JOURNAL_STREAM names.
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edgelive"))
        .args(["--listen", "not-an-address"])
        .arg("--data-dir")
        .arg(data.path())
        .env("JOURNAL_STREAM", "1:2")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).starts_with('<'));
}

#[test]
fn json_log_format_writes_one_object_per_line() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgelive"));
    cmd.env("EDGELIVE_LOG_FORMAT", "json");
    let lines = logged_until(&mut cmd, "listening");
    let last: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(last["level"], "INFO");
    assert_eq!(last["fields"]["message"], "listening");
    assert!(last["fields"]["addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    for line in &lines {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
}

#[test]
fn version_names_the_build_target() {
    let out = Command::new(env!("CARGO_BIN_EXE_edgelive"))
        .arg("--version")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let target = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    assert_eq!(
        said.trim(),
        format!("edgelive {} ({target})", env!("CARGO_PKG_VERSION"))
    );
}
