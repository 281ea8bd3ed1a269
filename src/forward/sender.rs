//! A target's sender: takes the queue's head in batches, one request per stream (the far
//! side's URL names the stream), and removes each batch once the far side answered 2xx.
//!
//! - Points of one stream leave in the order they were accepted: a batch that fails stops the
//!   round, and the next round starts again from the queue's head.
//! - A failure (no connection, a timeout, 5xx, 429, …) is retried after a delay that doubles
//!   from `retry_min` up to `retry_max`, with jitter (a fleet whose central comes back does not
//!   reconnect in step), and never shorter than the far side's `Retry-After`.
//! - An answer that retrying cannot change (400, 413 for a single entry, 414, 415, 422) drops
//!   that batch with a log line naming it; 413 for several entries splits the batch first.
//! - 401 and 403 pause the target until its token changes: the token file is read again every
//!   `PAUSE_RECHECK` and at a reload.
//!
//! Delivery is at least once: a batch the far side stored but whose answer was lost (a timeout,
//! a cut link, this daemon killed before the removal was written) is sent again.

use std::collections::VecDeque;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use edgelive_storage::ForwardEntry;
use hyper::StatusCode;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::client::{tls_config, Client};
use super::spec::read_token;
use super::stats::{DropCause, State};
use super::Target;

/// How often a paused target tries again (reading its token file first).
pub const PAUSE_RECHECK: Duration = Duration::from_secs(300);
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// One request: consecutive entries of one stream and layout.
struct Batch {
    stream: String,
    layout: u8,
    seqs: Vec<u64>,
    entries: Vec<ForwardEntry>,
    points: u64,
}

impl Batch {
    /// The body, gzipped if asked (call off the event loop for large batches).
    fn body(&self, gzip: bool) -> Bytes {
        let len: usize = self.entries.iter().map(|e| e.lines.len()).sum();
        let mut raw = Vec::with_capacity(len);
        for e in &self.entries {
            raw.extend_from_slice(&e.lines);
        }
        match gzip {
            false => Bytes::from(raw),
            true => Bytes::from(gzipped(&raw)),
        }
    }

    /// The first half and the rest (a batch of at least two entries).
    fn split(self) -> (Batch, Batch) {
        let half = self.entries.len() / 2;
        let mut first = Batch {
            stream: self.stream.clone(),
            layout: self.layout,
            seqs: self.seqs,
            entries: self.entries,
            points: 0,
        };
        let second_seqs = first.seqs.split_off(half);
        let second_entries = first.entries.split_off(half);
        first.points = first.entries.iter().map(|e| e.points as u64).sum();
        let second = Batch {
            stream: self.stream,
            layout: self.layout,
            points: second_entries.iter().map(|e| e.points as u64).sum(),
            seqs: second_seqs,
            entries: second_entries,
        };
        (first, second)
    }
}

/// Stack of the thread a body is compressed on. miniz_oxide's compressor state holds a 64 KiB
/// buffer inline and is built on the stack before it is boxed: on the runtime's 256 KiB
/// threads (`[runtime] thread_stack_size`) a debug build overflowed (seen in tests/forward.rs),
/// so compression gets a thread of its own (a batch costs one spawn, about 20 µs).
const GZIP_STACK: usize = 2 << 20;

/// `raw` as one gzip member (fast level: bodies are mostly repeated names and digits).
fn gzipped(raw: &[u8]) -> Vec<u8> {
    let encode = || {
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(raw.len() / 4),
            flate2::Compression::fast(),
        );
        // Writing to a Vec cannot fail.
        let _ = enc.write_all(raw);
        enc.finish().unwrap_or_default()
    };
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("edgelive-gzip".into())
            .stack_size(GZIP_STACK)
            .spawn_scoped(s, encode)
            .ok()
            .and_then(|t| t.join().ok())
    })
    .unwrap_or_default()
}

/// Groups a window of the queue by stream and layout, each group in queue order.
fn batches(window: Vec<(u64, ForwardEntry)>) -> Vec<Batch> {
    let mut out: Vec<Batch> = Vec::new();
    for (seq, e) in window {
        match out
            .iter_mut()
            .find(|b| b.stream == e.stream && b.layout == e.layout)
        {
            Some(b) => {
                b.points += e.points as u64;
                b.seqs.push(seq);
                b.entries.push(e);
            }
            None => out.push(Batch {
                stream: e.stream.clone(),
                layout: e.layout,
                seqs: vec![seq],
                points: e.points as u64,
                entries: vec![e],
            }),
        }
    }
    out
}

/// What to do after an answer.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Sent,
    /// Dropped for good.
    Rejected,
    /// 413 for several entries: send them in halves.
    Split,
    Pause,
    Retry(Option<Duration>),
}

fn outcome(status: StatusCode, entries: usize, retry_after: Option<Duration>) -> Outcome {
    match status.as_u16() {
        200..=299 => Outcome::Sent,
        401 | 403 => Outcome::Pause,
        413 if entries > 1 => Outcome::Split,
        400 | 413 | 414 | 415 | 422 => Outcome::Rejected,
        _ => Outcome::Retry(retry_after),
    }
}

/// The delay before attempt `n` (from 0): doubling from `min`, capped at `max`, jittered
/// into its upper half.
fn backoff(n: u32, min: Duration, max: Duration) -> Duration {
    let full = min.saturating_mul(1u32 << n.min(20)).min(max);
    full.mul_f64(0.5 + rand::random::<f64>() * 0.5)
}

/// Runs blocking queue work off the event loop.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

/// How a round over the queue's head ended.
enum RoundEnd {
    Done,
    Retry(Option<Duration>, String),
    Pause(String),
}

/// Sends the target's queue until `stop`.
pub async fn run(target: Arc<Target>, resume: Arc<tokio::sync::Notify>, stop: CancellationToken) {
    let spec = target.spec.clone();
    let stats = target.queue.stats.clone();
    let tls = match spec.url.tls {
        false => None,
        true => {
            let ca = spec.ca.clone();
            match blocking(move || tls_config(ca.as_deref())).await {
                Some(Ok(c)) => Some(c),
                Some(Err(e)) => {
                    error!(target = %spec.name, error = %e, "forwarding cannot start");
                    stats.set_error(Some(e));
                    stats.set_state(State::Paused);
                    return;
                }
                None => return,
            }
        }
    };
    let mut client = match Client::new(spec.clone(), tls) {
        Ok(c) => c,
        Err(e) => {
            error!(target = %spec.name, error = %e, "forwarding cannot start");
            stats.set_error(Some(e));
            stats.set_state(State::Paused);
            return;
        }
    };
    let mut token = spec.token.clone();
    let mut failures = 0u32;
    let mut last_round: Option<Instant> = None;
    while wait_for_batch(&target, last_round, &stop).await {
        last_round = Some(Instant::now());
        let end = tokio::select! {
            _ = stop.cancelled() => break,
            end = round(&target, &mut client, token.as_deref()) => end,
        };
        match end {
            RoundEnd::Done => {
                failures = 0;
                let before = stats.set_state(State::Ok);
                if before != State::Ok {
                    stats.set_error(None);
                    info!(target = %spec.name, queued_points = target.queue.points(), "forwarding resumed");
                }
            }
            RoundEnd::Retry(hint, why) => {
                stats
                    .retries
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let delay = backoff(failures, spec.retry_min, spec.retry_max)
                    .max(hint.unwrap_or_default().min(MAX_RETRY_AFTER));
                failures = failures.saturating_add(1);
                debug!(target = %spec.name, error = %why, ?delay, "forwarding attempt failed");
                if stats.set_state(State::Retrying) != State::Retrying {
                    warn!(target = %spec.name, error = %why, queued_points = target.queue.points(), "forwarding failed; points stay queued and are retried");
                }
                stats.set_error(Some(why));
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            RoundEnd::Pause(why) => {
                if stats.set_state(State::Paused) != State::Paused {
                    error!(target = %spec.name, answer = %why, "forwarding paused: the far side refused our credentials; fix token or token_file (read again every 5 minutes and at a reload)");
                }
                stats.set_error(Some(why));
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(PAUSE_RECHECK) => {}
                    _ = resume.notified() => {}
                }
                if let Some(path) = spec.token_file.clone() {
                    match blocking(move || read_token(&path)).await {
                        Some(Ok(t)) => token = Some(t),
                        Some(Err(e)) => {
                            warn!(target = %spec.name, error = %e, "cannot read token_file")
                        }
                        None => {}
                    }
                }
            }
        }
    }
}

/// Waits until a round is due: a whole batch is queued, or some points are and
/// `flush_interval` has passed since the last round. `false` at a stop.
async fn wait_for_batch(
    target: &Target,
    last_round: Option<Instant>,
    stop: &CancellationToken,
) -> bool {
    let q = &target.queue;
    let spec = &target.spec;
    loop {
        let points = q.points();
        if points >= spec.batch_size as u64 {
            return true;
        }
        let due = last_round.map(|t| t + spec.flush_interval);
        if points > 0 && due.is_none_or(|d| d <= Instant::now()) {
            return true;
        }
        let until = due.filter(|_| points > 0);
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = q.wake.notified() => {}
            _ = async {
                match until {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => return true,
        }
    }
}

/// Sends one window of the queue's head, a request per stream.
async fn round(target: &Arc<Target>, client: &mut Client, token: Option<&str>) -> RoundEnd {
    let spec = &target.spec;
    let stats = &target.queue.stats;
    let gzip = spec.gzip;
    let (q, max) = (target.queue.clone(), spec.batch_size as u64);
    let window = blocking(move || {
        q.read(max).map(|w| {
            batches(w)
                .into_iter()
                .map(|b| {
                    let body = b.body(gzip);
                    (b, body)
                })
                .collect::<VecDeque<_>>()
        })
    })
    .await;
    let mut todo = match window {
        Some(Ok(w)) => w,
        Some(Err(e)) => return RoundEnd::Retry(None, format!("cannot read the queue: {e}")),
        None => return RoundEnd::Retry(None, "cannot read the queue".into()),
    };
    while let Some((batch, body)) = todo.pop_front() {
        let path = spec.path(&batch.stream, batch.layout);
        let answer = match client.post(&path, body, gzip, token).await {
            Ok(a) => a,
            Err(e) => return RoundEnd::Retry(None, e.to_string()),
        };
        let status = answer.status;
        match outcome(status, batch.entries.len(), answer.retry_after) {
            Outcome::Sent => {
                if let Err(e) = remove(target, batch.seqs).await {
                    return RoundEnd::Retry(None, e);
                }
                use std::sync::atomic::Ordering::Relaxed;
                stats.sent_points.fetch_add(batch.points, Relaxed);
                stats.sent_requests.fetch_add(1, Relaxed);
            }
            Outcome::Rejected => {
                warn!(
                    target = %spec.name,
                    stream = %batch.stream,
                    status = status.as_u16(),
                    points = batch.points,
                    first_entry = batch.seqs[0],
                    answer = %answer.body.trim(),
                    "the far side refused a batch that retrying cannot change; dropped"
                );
                match remove(target, batch.seqs).await {
                    Ok(points) => stats.drop_points(DropCause::Rejected, points),
                    Err(e) => return RoundEnd::Retry(None, e),
                }
            }
            Outcome::Split => {
                let (a, b) = batch.split();
                let halves = blocking(move || {
                    let (ba, bb) = (a.body(gzip), b.body(gzip));
                    [(a, ba), (b, bb)]
                })
                .await;
                let Some([first, second]) = halves else {
                    return RoundEnd::Retry(None, "cannot split a batch".into());
                };
                todo.push_front(second);
                todo.push_front(first);
            }
            Outcome::Pause => {
                return RoundEnd::Pause(format!("{status}: {}", answer.body.trim()));
            }
            Outcome::Retry(hint) => {
                return RoundEnd::Retry(hint, format!("{status}: {}", answer.body.trim()));
            }
        }
    }
    RoundEnd::Done
}

/// Removes entries from the queue (off the event loop); the points actually removed.
async fn remove(target: &Arc<Target>, seqs: Vec<u64>) -> Result<u64, String> {
    let q = target.queue.clone();
    match blocking(move || q.remove(seqs)).await {
        Some(Ok(r)) => Ok(r.points),
        Some(Err(e)) => Err(format!("cannot remove sent points from the queue: {e}")),
        None => Err("cannot remove sent points from the queue".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(stream: &str, points: u32) -> ForwardEntry {
        ForwardEntry {
            stream: stream.into(),
            layout: 0,
            points,
            time_ms: 1,
            lines: format!("{stream} v={points}\n").into_bytes(),
        }
    }

    #[test]
    fn a_window_is_grouped_by_stream_in_queue_order() {
        let w = vec![(1, e("a", 1)), (2, e("b", 2)), (3, e("a", 3))];
        let b = batches(w);
        assert_eq!(b.len(), 2);
        assert_eq!(
            (b[0].stream.as_str(), &b[0].seqs[..], b[0].points),
            ("a", &[1, 3][..], 4)
        );
        assert_eq!(&b[0].body(false)[..], b"a v=1\na v=3\n");
        let zipped = b[1].body(true);
        let mut gz = flate2::read::GzDecoder::new(&zipped[..]);
        let mut s = String::new();
        std::io::Read::read_to_string(&mut gz, &mut s).unwrap();
        assert_eq!(s, "b v=2\n");
        let (x, y) = batches(vec![(1, e("a", 1)), (2, e("a", 2)), (3, e("a", 3))])
            .remove(0)
            .split();
        assert_eq!(
            (x.seqs, x.points, y.seqs, y.points),
            (vec![1], 1, vec![2, 3], 5)
        );
    }

    #[test]
    fn answers_decide_what_happens_to_a_batch() {
        let s = |c| StatusCode::from_u16(c).unwrap();
        assert_eq!(outcome(s(204), 1, None), Outcome::Sent);
        assert_eq!(outcome(s(400), 5, None), Outcome::Rejected);
        assert_eq!(outcome(s(413), 5, None), Outcome::Split);
        assert_eq!(outcome(s(413), 1, None), Outcome::Rejected);
        assert_eq!(outcome(s(401), 1, None), Outcome::Pause);
        assert_eq!(outcome(s(403), 1, None), Outcome::Pause);
        let later = Some(Duration::from_secs(7));
        assert_eq!(outcome(s(429), 1, later), Outcome::Retry(later));
        assert_eq!(outcome(s(503), 1, None), Outcome::Retry(None));
        assert_eq!(outcome(s(404), 1, None), Outcome::Retry(None));
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        for n in 0..40 {
            let d = backoff(n, min, max);
            let full = min.saturating_mul(1 << n.min(20)).min(max);
            assert!(d >= full / 2 && d <= full, "{n}: {d:?}");
        }
    }
}
