//! The official clients, unmodified, against the real daemon: `centrifuge` from npm (Node, with
//! the `ws` package) and `centrifuge-python` from PyPI. The packages are installed into
//! `tests/clients/` on first use (`npm ci`, a virtualenv), so `cargo test` works on a fresh
//! machine that has node, npm and python3.

mod common;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use common::Daemon;

/// Installs are serialized: both tests share `tests/clients/`.
static INSTALL: Mutex<()> = Mutex::new(());

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ensure_node_packages() {
    let _g = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = clients_dir();
    if dir.join("node_modules/centrifuge/package.json").exists()
        && dir.join("node_modules/ws").exists()
        && dir.join("node_modules/@grafana/data/package.json").exists()
    {
        return;
    }
    run(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir),
        "npm ci in tests/clients",
    );
}

fn ensure_python_venv() -> PathBuf {
    let _g = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = clients_dir();
    let python = dir.join(".venv/bin/python");
    let ready = python.exists()
        && Command::new(&python)
            .args(["-c", "import centrifuge"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !ready {
        run(
            Command::new("python3")
                .args(["-m", "venv", ".venv"])
                .current_dir(&dir),
            "python3 -m venv",
        );
        run(
            Command::new(&python)
                .args(["-m", "pip", "install", "-q", "-r", "requirements.txt"])
                .current_dir(&dir),
            "pip install -r tests/clients/requirements.txt",
        );
    }
    python
}

/// A daemon pinging every second (so the clients' pong handling is exercised) and one that
/// takes a single connection (for the terminal 3504).
fn daemons() -> (Daemon, Daemon) {
    let main = Daemon::start(&[
        ("EDGELIVE_LIVE_PING_INTERVAL", "1s"),
        ("EDGELIVE_LIVE_PONG_TIMEOUT", "3s"),
    ]);
    let limited = Daemon::start(&[("EDGELIVE_LIVE_MAX_CONNECTIONS", "1")]);
    (main, limited)
}

/// Runs a client script from `tests/clients` with `env`; it must exit 0 and print `done`.
/// `d` is the daemon whose log goes into the failure message.
fn run_script(
    program: impl AsRef<OsStr>,
    script: &str,
    env: &[(&str, String)],
    done: &str,
    d: &Daemon,
) {
    let out = Command::new(program)
        .arg(script)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(clients_dir())
        .output()
        .unwrap_or_else(|e| panic!("{script}: cannot start: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains(done),
        "{script} failed or did not print {done:?} ({}):\n{stdout}\n{}\n--- daemon log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        d.log_text()
    );
}

/// The core scripts get a daemon pinging every second and one limited to one connection.
fn run_core(program: impl AsRef<OsStr>, script: &str) {
    let (main, limited) = daemons();
    let env = [
        ("EDGELIVE_URL", main.ws_url()),
        ("EDGELIVE_LIMITED_URL", limited.ws_url()),
    ];
    run_script(program, script, &env, "ok 3504", &main);
}

#[test]
fn centrifuge_js_pub_sub_presence_join_leave_and_terminal_limit() {
    ensure_node_packages();
    run_core("node", "js/core.mjs");
}

#[test]
fn centrifuge_python_pub_sub_presence_join_leave_and_terminal_limit() {
    run_core(ensure_python_venv(), "py/core.py");
}

#[test]
fn centrifuge_python_history_limit_since_reverse() {
    let python = ensure_python_venv();
    let d = Daemon::start(&[]);
    run_script(
        python,
        "py/history.py",
        &[("EDGELIVE_URL", d.ws_url())],
        "ok history",
        &d,
    );
}

/// centrifuge-js recovers across a reconnect, a clean restart and a SIGKILL of the daemon. The
/// script asks for each restart on stdout and continues when it reads GO.
#[test]
fn centrifuge_js_recovers_across_reconnect_restart_and_sigkill() {
    ensure_node_packages();
    let mut d = Daemon::start_with_config(
        "[[history]]\npattern = \"grafana/broadcast/*\"\nsize = 10000\nttl = \"1h\"\n",
        &[],
    );
    let mut child = Command::new("node")
        .arg("js/recovery.mjs")
        .env("EDGELIVE_URL", d.ws_url())
        .current_dir(clients_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut said = Vec::new();
    for line in stdout.lines().map_while(Result::ok) {
        println!("{line}");
        match line.as_str() {
            "RESTART" => d = d.restart(false),
            "KILL" => d = d.restart(true),
            _ => {
                said.push(line);
                continue;
            }
        }
        writeln!(stdin, "GO").unwrap();
    }
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "recovery script failed: {said:?}\n--- daemon log ---\n{}",
        d.log_text()
    );
    assert!(
        said.iter().any(|l| l.contains("survived SIGKILL")),
        "{said:?}"
    );
}

#[test]
fn grafana_streaming_data_frame_decodes_pushed_frames_across_a_schema_change_and_a_late_join() {
    run_push_script("js/frames.mjs", "ok frames");
}

/// Grafana's StreamingDataFrame never throws on a stream whose field sets alternate (sticky
/// fields), and a late subscriber's frame starts with the backfilled rows, then appends.
#[test]
fn grafana_streaming_data_frame_takes_alternating_field_sets_and_backfill() {
    run_push_script("js/sticky.mjs", "ok sticky");
}

/// A node script that pushes (EDGELIVE_HTTP) and subscribes (EDGELIVE_URL) on a fresh daemon.
fn run_push_script(script: &str, done: &str) {
    ensure_node_packages();
    let d = Daemon::start(&[]);
    let env = [
        ("EDGELIVE_URL", d.ws_url()),
        ("EDGELIVE_HTTP", d.http_url()),
    ];
    run_script("node", script, &env, done, &d);
}

/// Connection JWTs and API tokens with both official clients: refresh through getToken /
/// get_token, a server-side subscription, 109 then a fresh token, 3500 for a forged token, a
/// viewer's publish refused.
#[test]
fn official_clients_authenticate_refresh_and_are_refused_as_they_should() {
    ensure_node_packages();
    let python = ensure_python_venv();
    const SECRET: &str = "real-client-jwt-secret-0123456789";
    const VIEWER: &str = "real-client-viewer-token-01";
    const ADMIN: &str = "real-client-admin-token-01";
    let d = Daemon::start_with_config(
        &format!(
            "[auth]\njwt_hmac_secret = \"{SECRET}\"\nexpired_close_delay = \"2s\"\n\
             [[auth.tokens]]\nname = \"viewer\"\nrole = \"viewer\"\ntoken = \"{VIEWER}\"\n\
             [[auth.tokens]]\nname = \"ops\"\nrole = \"admin\"\ntoken = \"{ADMIN}\"\n"
        ),
        &[],
    );
    let env = [
        ("EDGELIVE_URL", d.ws_url()),
        ("EDGELIVE_HTTP", d.http_url()),
        ("EDGELIVE_JWT_SECRET", SECRET.to_owned()),
        ("EDGELIVE_VIEWER_TOKEN", VIEWER.to_owned()),
        ("EDGELIVE_ADMIN_TOKEN", ADMIN.to_owned()),
    ];
    run_script("node", "js/auth.mjs", &env, "ok auth", &d);
    run_script(python, "py/auth.py", &env, "ok auth", &d);
}

/// centrifuge-js + Grafana's StreamingDataFrame on `random-20Hz-stream`: the schema from the
/// subscribe reply, then about 20 appended rows per second.
#[test]
fn centrifuge_js_receives_about_20_frames_a_second_from_the_testdata_stream() {
    ensure_node_packages();
    let d = Daemon::start(&[]);
    run_script(
        "node",
        "js/testdata.mjs",
        &[("EDGELIVE_URL", d.ws_url())],
        "ok testdata",
        &d,
    );
}
