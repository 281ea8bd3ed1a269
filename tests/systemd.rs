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
        .args(["security", "--offline=true", "--threshold=20"])
        .arg(&local)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exposure above 2.0:\n{said}");
}
