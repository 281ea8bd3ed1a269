//! Channel patterns through the binary: `check-config` and start-up warn about each pattern
//! whose lone `*` no longer crosses `/` (history, exec) or leaves deeper channels open (auth
//! rules), naming the `**` spelling; the config is still accepted.

mod common;

use std::process::Command;

use common::Daemon;

const CONFIG: &str = r#"
[[history]]
pattern = "stream/*"
size = 10
ttl = "1m"

[[history]]
pattern = "grafana/broadcast/**"
size = 10
ttl = "1m"

[[streams.exec]]
channel = "plugin/sensors/*"
command = ["sh", "-c", "echo x"]

[[auth.rules]]
pattern = "grafana/broadcast/*"
publish = "admin"

[[auth.rules]]
pattern = "stream/factory-*/**"
publish = "admin"
"#;

#[test]
fn check_config_warns_about_lone_stars_and_still_passes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edgelive.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edgelive"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning: ")).collect();
    assert_eq!(warnings.len(), 3, "{err}");
    assert!(
        warnings[0].contains("[[history]] #1")
            && warnings[0].contains("`stream/*`")
            && warnings[0].contains("one /-separated segment")
            && warnings[0].contains("`stream/**`"),
        "{err}"
    );
    assert!(
        warnings[1].contains("[[streams.exec]] #1") && warnings[1].contains("`plugin/sensors/**`"),
        "{err}"
    );
    assert!(
        warnings[2].contains("[[auth.rules]] #1") && warnings[2].contains("`grafana/broadcast/**`"),
        "{err}"
    );
    // The packaged file's patterns mean what they meant: no warning there.
    // (It names the credentials the package makes; a copy names a temp dir instead.)
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(
        creds.path().join("admin.token"),
        "an-admin-token-0123456789",
    )
    .unwrap();
    std::fs::write(creds.path().join("jwt.key"), "a-jwt-key-0123456789abcdef").unwrap();
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/edgelive.toml"))
            .unwrap();
    let packaged = creds.path().join("edgelive.toml");
    let here = format!("{}/", creds.path().display());
    std::fs::write(&packaged, text.replace("/etc/edgelive/credentials/", &here)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edgelive"))
        .arg("check-config")
        .arg(&packaged)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("warning"), "{err}");
}

#[test]
fn the_daemon_logs_the_same_warnings_at_start() {
    let d = Daemon::start_with_config(CONFIG, &[]);
    assert!(
        d.logged("write `stream/**` to match below it as before"),
        "{}",
        d.log_text()
    );
    assert!(d.logged("`grafana/broadcast/**`"), "{}", d.log_text());
}
