//! Test harness: runs the real `edgelive` binary on port 0 with a temporary data dir, and gives
//! tests a raw WebSocket peer (tokio-tungstenite, a different implementation from the server's).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream as TokioTcp;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
    dir: Arc<tempfile::TempDir>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    /// Size of a private tmpfs mounted over the data dir (a small disk that fills up).
    tmpfs: Option<String>,
    /// A data dir elsewhere than `dir/data` (e.g. on a test filesystem's mount).
    data: Option<std::path::PathBuf>,
}

impl Daemon {
    /// Starts the daemon with `EDGELIVE_*` overrides; waits until it logs its address.
    pub fn start(env: &[(&str, &str)]) -> Daemon {
        Self::start_with_args(env, &[])
    }

    pub fn start_with_args(env: &[(&str, &str)], args: &[&str]) -> Daemon {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Self::spawn(dir, "127.0.0.1:0", env, args, None)
    }

    /// Starts the daemon with its data dir on a private tmpfs of `size` (e.g. "1m"), in a
    /// mount namespace of its own (`unshare`; needs root or unprivileged user namespaces).
    pub fn start_on_small_disk(size: &str, env: &[(&str, &str)]) -> Daemon {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::spawn(dir, "127.0.0.1:0", env, Vec::new(), Some(size.to_owned()))
    }

    /// Starts the daemon with a config file holding `toml` (written into its own temp dir).
    pub fn start_with_config(toml: &str, env: &[(&str, &str)]) -> Daemon {
        Self::start_with_config_on("127.0.0.1:0", toml, env)
    }

    /// Like `start_with_config`, listening on `listen` (e.g. "0.0.0.0:0" to be reachable from a
    /// non-loopback address).
    pub fn start_with_config_on(listen: &str, toml: &str, env: &[(&str, &str)]) -> Daemon {
        Self::with_config(listen, None, toml, env)
    }

    /// Like `start_with_config`, with the data dir at `data` (e.g. inside a FUSE mount).
    pub fn start_with_config_in(
        data: &std::path::Path,
        toml: &str,
        env: &[(&str, &str)],
    ) -> Daemon {
        Self::with_config("127.0.0.1:0", Some(data.to_owned()), toml, env)
    }

    fn with_config(
        listen: &str,
        data: Option<std::path::PathBuf>,
        toml: &str,
        env: &[(&str, &str)],
    ) -> Daemon {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let path = dir.path().join("edgelive.toml");
        std::fs::write(&path, toml).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let args = vec!["--config".into(), path.to_string_lossy().into_owned()];
        Self::spawn_in(dir, listen, env, args, None, data)
    }

    /// SIGKILLs the daemon and reaps it: after this it issues no more file system requests.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The directory holding the daemon's config file and data dir.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Stops this daemon (SIGTERM, or SIGKILL when `kill`) and starts a new one on the same
    /// address and data directory.
    pub fn restart(self, kill: bool) -> Daemon {
        self.restart_after(kill, || {})
    }

    /// Like `restart`, running `meanwhile` while the daemon is down.
    pub fn restart_after(mut self, kill: bool, meanwhile: impl FnOnce()) -> Daemon {
        if kill {
            let _ = self.child.kill();
            let _ = self.child.wait();
        } else {
            let (st, _) = self.terminate(Duration::from_secs(10));
            assert!(st.success(), "clean stop failed: {st:?}");
        }
        let (dir, env, args, addr) = (
            self.dir.clone(),
            self.env.clone(),
            self.args.clone(),
            self.addr,
        );
        let tmpfs = self.tmpfs.clone();
        let data = self.data.clone();
        drop(self);
        meanwhile();
        Self::spawn_in(dir, &addr.to_string(), env, args, tmpfs, data)
    }

    pub fn data_dir(&self) -> std::path::PathBuf {
        self.data
            .clone()
            .unwrap_or_else(|| self.dir.path().join("data"))
    }

    fn spawn(
        dir: Arc<tempfile::TempDir>,
        listen: &str,
        env: Vec<(String, String)>,
        args: Vec<String>,
        tmpfs: Option<String>,
    ) -> Daemon {
        Self::spawn_in(dir, listen, env, args, tmpfs, None)
    }

    fn spawn_in(
        dir: Arc<tempfile::TempDir>,
        listen: &str,
        env: Vec<(String, String)>,
        args: Vec<String>,
        tmpfs: Option<String>,
        data: Option<std::path::PathBuf>,
    ) -> Daemon {
        let bin = env!("CARGO_BIN_EXE_edgelive");
        let mut cmd = match &tmpfs {
            None => Command::new(bin),
            Some(size) => {
                let mut c = Command::new("unshare");
                if !is_root() {
                    c.arg("--map-root-user");
                }
                c.args(["--mount", "--propagation", "private", "sh", "-c"])
                    .arg(r#"mount -t tmpfs -o "size=$1" tmpfs "$2" && shift 2 && exec "$@""#)
                    .args(["sh", size])
                    .arg(dir.path())
                    .arg(bin);
                c
            }
        };
        cmd.args(["--listen", listen, "--data-dir"])
            .arg(data.clone().unwrap_or_else(|| dir.path().join("data")))
            .args(&args)
            .env(
                "RUST_LOG",
                std::env::var("TEST_RUST_LOG").unwrap_or("info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("EDGELIVE_")) {
            cmd.env_remove(k);
        }
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn edgelive");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    if let Some(a) = line.split("addr=").nth(1) {
                        let _ = tx.send(a.split_whitespace().next().unwrap_or("").to_owned());
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a.parse().expect("address in log"),
            Err(_) => {
                let _ = child.kill();
                panic!("daemon did not start: {:?}", log.lock().unwrap());
            }
        };
        Daemon {
            child,
            addr,
            log,
            dir,
            env,
            args,
            tmpfs,
            data,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/api/live/ws", self.addr)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends SIGTERM and waits (bounded) for the exit status and how long it took.
    pub fn terminate(&mut self, within: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        unsafe_kill(self.child.id(), "TERM");
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st, started.elapsed());
            }
            if started.elapsed() > within {
                let _ = self.child.kill();
                panic!("daemon did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGHUP: the daemon reloads its config.
    pub fn hangup(&self) {
        unsafe_kill(self.child.id(), "HUP");
    }

    /// Resident memory of the daemon, KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// The value of an unlabelled counter or gauge in `/metrics`.
    pub fn metric(&self, name: &str) -> u64 {
        self.series(name)
            .unwrap_or_else(|| panic!("{name} not in /metrics"))
    }

    /// The value of one series in `/metrics`, labels included (`name{a="b"}`).
    pub fn series(&self, series: &str) -> Option<u64> {
        let (_, text) = http(self.addr, "GET", "/metrics", &[], b"");
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Whether the daemon logs a line containing `needle` within 10 s. Its stderr is read by a
    /// thread, so a line the daemon has already written may not be in `log_text` yet.
    /// The address the `[push.udp]` listener logged.
    pub fn udp_addr(&self) -> SocketAddr {
        assert!(self.logged("udp push receiving"), "{}", self.log_text());
        let log = self.log_text();
        let line = log
            .lines()
            .find(|l| l.contains("udp push receiving"))
            .unwrap();
        line.split("addr=")
            .nth(1)
            .and_then(|a| a.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line}"))
    }

    pub fn logged(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Waits (at most 15 s) for `cond`, polling every 50 ms.
pub fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Effective uid 0 (from /proc, to avoid a libc dependency in tests).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn unsafe_kill(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
}

/// A plain HTTP/1.1 request; returns (status, body).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

pub type Ws = WebSocketStream<MaybeTlsStream<TokioTcp>>;

/// A raw protocol peer.
pub struct Peer {
    pub ws: Ws,
    /// Messages received but not yet taken (a frame may hold several).
    pending: std::collections::VecDeque<Value>,
    /// Frames received, for coalescing checks.
    pub frames: usize,
}

/// How a connection ended, seen from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Close(u16, String),
    Eof,
    /// Nothing arrived in time (the connection is still open).
    Timeout,
}

impl Peer {
    pub async fn connect(url: &str) -> Peer {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        Peer::from_stream(ws)
    }

    /// Connects with extra request headers (e.g. Authorization).
    pub async fn connect_with_headers(url: &str, headers: &[(&str, &str)]) -> Peer {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = url.into_client_request().unwrap();
        for (k, v) in headers {
            req.headers_mut().insert(
                tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("ws connect");
        Peer::from_stream(ws)
    }

    /// Wraps an already connected WebSocket.
    pub fn from_stream(ws: Ws) -> Peer {
        Peer {
            ws,
            pending: Default::default(),
            frames: 0,
        }
    }

    /// Connects and completes the Centrifuge connect; returns the client id.
    pub async fn connected(url: &str) -> (Peer, String) {
        let mut p = Peer::connect(url).await;
        p.send(r#"{"id":1,"connect":{"name":"test"}}"#).await;
        let r = p.recv().await;
        let client = r["connect"]["client"]
            .as_str()
            .expect("client id")
            .to_owned();
        (p, client)
    }

    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_raw(&mut self, msg: Message) -> Result<(), tungstenite::Error> {
        self.ws.send(msg).await
    }

    /// Next JSON message (pings `{}` included), within 10 s.
    pub async fn recv(&mut self) -> Value {
        self.try_recv(Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("expected a message, got {e:?}"))
    }

    /// Next message that is not a server ping.
    pub async fn recv_non_ping(&mut self) -> Value {
        loop {
            let v = self.recv().await;
            if v != serde_json::json!({}) {
                return v;
            }
        }
    }

    pub async fn try_recv(&mut self, wait: Duration) -> Result<Value, Ended> {
        if let Some(v) = self.pending.pop_front() {
            return Ok(v);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Err(Ended::Timeout),
                Ok(None) | Ok(Some(Err(_))) => return Err(Ended::Eof),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => {
                    self.frames += 1;
                    assert!(!t.is_empty(), "empty frame");
                    for line in t.split('\n') {
                        let v: Value = serde_json::from_str(line)
                            .unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}"));
                        self.pending.push_back(v);
                    }
                    return Ok(self.pending.pop_front().unwrap());
                }
                Message::Binary(_) => panic!("server sent a binary frame to a JSON client"),
                Message::Close(c) => {
                    return Err(match c {
                        Some(f) => Ended::Close(u16::from(f.code), f.reason.to_string()),
                        None => Ended::Close(1005, String::new()),
                    })
                }
                _ => continue,
            }
        }
    }

    /// Reads until the connection ends, ignoring data; returns how it ended.
    pub async fn until_closed(&mut self, wait: Duration) -> Ended {
        self.pending.clear();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("connection still open after {wait:?}"),
                Ok(None) | Ok(Some(Err(_))) => return Ended::Eof,
                Ok(Some(Ok(Message::Close(c)))) => {
                    return match c {
                        Some(f) => Ended::Close(u16::from(f.code), f.reason.to_string()),
                        None => Ended::Close(1005, String::new()),
                    }
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

/// Sends command `cmd` with `body` as command `id` and returns its reply (pushes before it are
/// skipped).
pub async fn call(p: &mut Peer, id: u64, cmd: &str, body: Value) -> Value {
    p.send(&serde_json::json!({"id": id, cmd: body}).to_string())
        .await;
    loop {
        let r = p.recv_non_ping().await;
        if r["id"] == id {
            return r;
        }
    }
}

/// Asserts a successful subscribe reply to command `id`; returns its result object.
pub fn subscribed(v: &Value, id: u64) -> Value {
    assert_eq!(v["id"], id, "{v}");
    assert!(v.get("error").is_none(), "{v}");
    assert!(v["subscribe"].is_object(), "{v}");
    v["subscribe"].clone()
}

/// Asserts a subscribe reply of a channel with history: recoverable, positioned, an epoch.
pub fn subscribed_with_history(v: &Value, id: u64) -> Value {
    let r = subscribed(v, id);
    assert_eq!(r["recoverable"], true, "{v}");
    assert_eq!(r["positioned"], true, "{v}");
    assert_eq!(r["epoch"].as_str().map(str::len), Some(8), "{v}");
    r
}

pub fn close_code(c: u16) -> CloseCode {
    CloseCode::from(c)
}

/// `tests/clients`, its npm packages installed first (`npm ci`) unless they are already
/// installed from the current lock file (`tests/run` installs them the same way).
pub fn node_clients() -> std::path::PathBuf {
    static INSTALL: Mutex<()> = Mutex::new(());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let lock = std::fs::read(dir.join("package-lock.json")).expect("package-lock.json");
    let stamp = dir.join("node_modules/.installed-from-package-lock.json");
    if std::fs::read(&stamp).ok() != Some(lock.clone()) {
        let st = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm (tests/run installs it)");
        assert!(st.success(), "npm ci in tests/clients");
        std::fs::write(&stamp, lock).unwrap();
    }
    dir
}

/// A loopback port nobody listens on now (for servers that cannot take port 0).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl.
pub fn certificates(dir: &std::path::Path) {
    let openssl = |args: &[&str]| {
        let st = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(Stdio::null())
            .status()
            .expect("openssl (Debian package openssl)");
        assert!(st.success(), "openssl {args:?}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=edgelive test CA",
    ]);
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, cn) in [("server", "127.0.0.1"), ("client", "bridge")] {
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }
    use std::os::unix::fs::PermissionsExt;
    for f in ["server.key", "client.key", "ca.key"] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}
