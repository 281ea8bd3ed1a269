//! Exec stream handlers (`[[streams.exec]]`): a program on the device produces a channel while
//! someone watches. It starts with the first subscriber (one copy per channel), each line it
//! prints becomes a publication, client publishes reach its stdin, its stderr goes to the log,
//! and the lifecycle stops it when the grace period ends or the daemon shuts down.
//!
//! Output lines are read one at a time and published before the next is read, so a program
//! that prints faster than we publish blocks on its pipe: nothing buffers without bound.
//!
//! - A line starting with `{` is JSON (a Grafana frame, or any document) and is published as
//!   it is. One with a `schema` is also what a new subscriber gets as initial data.
//! - Any other line is Influx line protocol, converted as the push API converts it: the full
//!   frame when the schema changes, data only otherwise; the last full frame is the initial
//!   data of a new subscriber.
//! - Empty lines and `#` comments are skipped; a bad line is dropped with a (throttled) warning.

pub mod config;
pub mod process;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::lifecycle::Run;
use super::{Sender, StreamHandler};
use crate::glob::path_glob;
use crate::protocol::ErrorCode;
pub use config::{ExecConfig, Spec};
use process::{Line, Lines, Process, Throttle};

type Output = BufReader<ChildStdout>;

/// Client publishes waiting for a program's stdin; beyond this a publish gets 111.
const STDIN_QUEUE: usize = 64;
/// Longest stderr line logged whole.
const STDERR_LINE: usize = 4096;

/// The exec handlers of one namespace (several `[[streams.exec]]` may share one; the first
/// whose path pattern matches serves a channel).
pub struct Exec {
    inner: Arc<Inner>,
}

struct Inner {
    specs: Vec<Arc<Spec>>,
    /// Programs running, by channel path.
    running: Mutex<HashMap<Arc<str>, Running>>,
}

struct Running {
    /// Which run registered it: a stopping run must not remove its successor's entry.
    id: u64,
    /// Index of its spec, for `max_running`.
    spec: usize,
    stdin: mpsc::Sender<String>,
    /// The subscribe reply's data: the last full frame the program produced.
    initial: Option<Arc<str>>,
}

impl Exec {
    pub fn new(specs: Vec<Spec>) -> Exec {
        Exec {
            inner: Arc::new(Inner {
                specs: specs.into_iter().map(Arc::new).collect(),
                running: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl Inner {
    fn spec_for(&self, path: &str) -> Option<usize> {
        self.specs
            .iter()
            .position(|s| path_glob(&s.path_pattern, path))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies of spec `i` running, `path` aside.
    fn copies(map: &HashMap<Arc<str>, Running>, i: usize, path: &str) -> usize {
        map.iter()
            .filter(|(p, r)| r.spec == i && p.as_ref() != path)
            .count()
    }
}

impl StreamHandler for Exec {
    fn subscribe(&self, path: &str) -> Result<Option<String>, ErrorCode> {
        let i = self.inner.spec_for(path).ok_or(ErrorCode::UnknownChannel)?;
        let map = self.inner.lock();
        if let Some(r) = map.get(path) {
            return Ok(r.initial.as_deref().map(str::to_owned));
        }
        if Inner::copies(&map, i, path) >= self.inner.specs[i].max_running {
            return Err(ErrorCode::LimitExceeded);
        }
        Ok(None)
    }

    fn run(&self, path: &str, out: Sender, cancel: CancellationToken) -> Run {
        Box::pin(run(self.inner.clone(), Arc::from(path), out, cancel))
    }

    fn publish(&self, path: &str, data: &RawValue) -> Result<Option<String>, ErrorCode> {
        let i = self.inner.spec_for(path).ok_or(ErrorCode::UnknownChannel)?;
        if !self.inner.specs[i].publish {
            return Err(ErrorCode::PermissionDenied);
        }
        let map = self.inner.lock();
        // Nobody watches, so the program does not run: nothing would read this.
        let r = map.get(path).ok_or(ErrorCode::NotAvailable)?;
        r.stdin
            .try_send(json_line(data.get()))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => ErrorCode::TooManyRequests,
                mpsc::error::TrySendError::Closed(_) => ErrorCode::NotAvailable,
            })?;
        Ok(None)
    }
}

/// Removes a run's entry when the run ends, however it ends.
struct Registration {
    inner: Arc<Inner>,
    path: Arc<str>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = self.inner.lock();
        if map.get(&self.path).is_some_and(|r| r.id == self.id) {
            map.remove(&self.path);
        }
    }
}

impl Registration {
    fn set_initial(&self, frame: Arc<str>) {
        if let Some(r) = self.inner.lock().get_mut(&self.path) {
            if r.id == self.id {
                r.initial = Some(frame);
            }
        }
    }
}

static NEXT_RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// One run of the program for `path`: until it exits (clean exit = the stream ended) or the
/// lifecycle cancels it (SIGTERM, then SIGKILL after `stop_timeout`).
async fn run(
    inner: Arc<Inner>,
    path: Arc<str>,
    out: Sender,
    cancel: CancellationToken,
) -> Result<(), String> {
    let i = inner
        .spec_for(&path)
        .ok_or("no [[streams.exec]] matches any more")?;
    let spec = inner.specs[i].clone();
    let program = &spec.command[0];
    let (tx, rx) = mpsc::channel(STDIN_QUEUE);
    let id = NEXT_RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let registration = {
        let mut map = inner.lock();
        if Inner::copies(&map, i, &path) >= spec.max_running {
            return Err(format!(
                "{program}: max_running = {} reached",
                spec.max_running
            ));
        }
        let initial = map.get(&path).and_then(|r| r.initial.clone());
        map.insert(
            path.clone(),
            Running {
                id,
                spec: i,
                stdin: tx,
                initial,
            },
        );
        Registration {
            inner: inner.clone(),
            path: path.clone(),
            id,
        }
    };
    let key = out.channel().clone();
    let env = [("EDGELIVE_CHANNEL", &*key), ("EDGELIVE_PATH", &*path)];
    let (mut proc, pipes) =
        Process::spawn(&spec.command, &env).map_err(|e| format!("cannot start {program}: {e}"))?;
    debug!(channel = %key, pid = proc.pid(), "exec handler started");
    let mut stdout = Lines::new(BufReader::new(pipes.stdout), spec.max_line_bytes);
    let mut stderr = Lines::new(BufReader::new(pipes.stderr), STDERR_LINE);
    let exited = tokio::select! {
        _ = cancel.cancelled() => None,
        status = async {
            let feed = async {
                feed(pipes.stdin, rx).await;
                std::future::pending::<()>().await
            };
            let read = async {
                tokio::join!(
                    pump(&mut stdout, &spec, &registration, &out),
                    log_stderr(&mut stderr, &key)
                )
            };
            tokio::select! {
                _ = feed => {}
                _ = read => {}
            }
            proc.wait().await
        } => Some(status),
    };
    match exited {
        Some(Ok(status)) if status.success() => {
            debug!(channel = %key, "exec handler exited cleanly: the stream ended");
            Ok(())
        }
        Some(Ok(status)) => Err(format!("{program} {status}")),
        Some(Err(e)) => Err(format!("waiting for {program}: {e}")),
        None => {
            // Keep reading while it stops: a program writing its last words to a closed
            // pipe would die of SIGPIPE before its cleanup.
            let read = async {
                tokio::join!(drain(&mut stdout), log_stderr(&mut stderr, &key));
                std::future::pending().await
            };
            let stopped = tokio::select! {
                r = proc.stop(spec.stop_timeout) => r,
                r = read => r,
            };
            match stopped {
                Ok((_, true)) => warn!(channel = %key, %program, timeout = ?spec.stop_timeout,
                    "exec handler ignored SIGTERM; killed"),
                Ok((status, false)) => debug!(channel = %key, %status, "exec handler stopped"),
                Err(e) => warn!(channel = %key, error = %e, "stopping exec handler"),
            }
            Ok(())
        }
    }
}

/// Writes client publishes to the program's stdin until it closes it.
async fn feed(mut stdin: ChildStdin, mut rx: mpsc::Receiver<String>) {
    while let Some(line) = rx.recv().await {
        if stdin.write_all(line.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Publishes each line of the program's output until it closes stdout.
async fn pump(lines: &mut Lines<Output>, spec: &Spec, reg: &Registration, out: &Sender) {
    let mut frames = Frames::new(spec);
    let mut throttle = Throttle::new(5);
    let mut dropped = |problem: String| {
        if let Some(suppressed) = throttle.admit() {
            warn!(channel = %out.channel(), %problem, suppressed, "exec handler output dropped");
        }
    };
    loop {
        let text = match lines.next().await {
            Ok(Some(Line::Text(t))) => t,
            Ok(Some(Line::TooLong(n))) => {
                dropped(format!("a line of {n} bytes, over max_line_bytes"));
                continue;
            }
            Ok(Some(Line::Binary)) => {
                dropped("a line that is not UTF-8".into());
                continue;
            }
            Ok(None) | Err(_) => return,
        };
        let line = text.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match frames.publications(line) {
            Ok(pubs) => {
                for p in pubs {
                    if let Some(full) = p.initial {
                        reg.set_initial(full);
                    }
                    if let Err(e) = out.send(p.payload) {
                        dropped(e);
                    }
                }
            }
            Err(e) => dropped(e),
        }
    }
}

/// Reads the program's output to its end, dropping it.
async fn drain(lines: &mut Lines<Output>) {
    while let Ok(Some(_)) = lines.next().await {}
}

/// Logs the program's stderr, throttled.
async fn log_stderr(lines: &mut Lines<BufReader<ChildStderr>>, key: &str) {
    let mut throttle = Throttle::new(10);
    while let Ok(Some(line)) = lines.next().await {
        let text = match line {
            Line::Text(t) => t,
            Line::TooLong(n) => format!("<{n} bytes>"),
            Line::Binary => "<not UTF-8>".into(),
        };
        if let Some(suppressed) = throttle.admit() {
            warn!(channel = %key, stderr = %text, suppressed, "exec handler says");
        }
    }
}

#[derive(Debug)]
struct Publication {
    payload: String,
    /// A full frame: the initial data of later subscribers.
    initial: Option<Arc<str>>,
}

/// Output lines → publications, the schema sent once.
struct Frames {
    layout: crate::ingest::Layout,
    precision: crate::ingest::Precision,
    /// Schema of the last frame converted from line protocol.
    schema: Option<String>,
}

#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow)]
    schema: Option<&'a RawValue>,
}

impl Frames {
    fn new(spec: &Spec) -> Frames {
        Frames {
            layout: spec.layout,
            precision: spec.precision,
            schema: None,
        }
    }

    fn publications(&mut self, line: &str) -> Result<Vec<Publication>, String> {
        if line.starts_with('{') {
            let probe: Probe<'_> =
                serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
            // The program speaks frames itself: our line-protocol schema is no longer the
            // subscribers' last one.
            self.schema = None;
            return Ok(vec![Publication {
                initial: probe.schema.map(|_| Arc::from(line)),
                payload: line.to_owned(),
            }]);
        }
        let frames = crate::ingest::convert::convert(
            line,
            self.layout,
            self.precision,
            crate::ingest::now_ns(),
        )
        .map_err(|e| format!("line protocol: {e}"))?;
        Ok(frames
            .into_iter()
            .map(|f| {
                let json = f.to_json();
                let full: Arc<str> = Arc::from(json.full());
                let payload = if self.schema.as_deref() == Some(&json.schema) {
                    json.data_only()
                } else {
                    self.schema = Some(json.schema);
                    full.to_string()
                };
                Publication {
                    payload,
                    initial: Some(full),
                }
            })
            .collect())
    }
}

/// A publish's data as one line for the program's stdin: compact (strings cannot hold a raw
/// newline), then `\n`.
fn json_line(json: &str) -> String {
    let mut out = crate::json::minify(json).into_owned();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        toml::from_str::<ExecConfig>("channel = \"plugin/s/*\"\ncommand = [\"x\"]")
            .unwrap()
            .build()
            .unwrap()
    }

    #[test]
    fn line_protocol_sends_the_schema_once_and_json_passes_through() {
        let mut f = Frames::new(&spec());
        let a = f.publications("cpu,host=a v=1 1000000000").unwrap();
        assert!(a[0].payload.starts_with("{\"schema\":"), "{}", a[0].payload);
        let b = f.publications("cpu,host=a v=2 2000000000").unwrap();
        assert!(b[0].payload.starts_with("{\"data\":"), "{}", b[0].payload);
        assert!(b[0].initial.as_deref().unwrap().contains("\"schema\""));
        let c = f.publications("cpu,host=a v=3,w=1 3000000000").unwrap();
        assert!(
            c[0].payload.starts_with("{\"schema\":"),
            "new field, new schema"
        );
        let j = f
            .publications(r#"{"schema":{"fields":[]},"data":{"values":[]}}"#)
            .unwrap();
        assert!(j[0].initial.is_some());
        let d = f.publications(r#"{"data":{"values":[[1]]}}"#).unwrap();
        assert!(d[0].initial.is_none());
        let e = f.publications("cpu,host=a v=4,w=1 4000000000").unwrap();
        assert!(
            e[0].payload.starts_with("{\"schema\":"),
            "after JSON frames"
        );
        assert!(f
            .publications("{not json")
            .unwrap_err()
            .contains("not JSON"));
        assert!(f
            .publications("cpu v=")
            .unwrap_err()
            .contains("line protocol"));
    }

    #[test]
    fn publishes_become_one_line_each() {
        assert_eq!(
            json_line("{\n  \"a\": \"x y\\\" \\n\",\n  \"b\": [1, 2]\n}"),
            "{\"a\":\"x y\\\" \\n\",\"b\":[1,2]}\n"
        );
    }
}
