//! A target's sender: takes the queue's head in batches, one request per stream (the far
//! side's URL names the stream), and removes each batch once the far side answered 2xx.
//!
//! - Points of one stream leave in the order they were accepted: once a stream's batch fails,
//!   the round sends nothing more of that stream (other streams go on), and the next round
//!   starts again from the queue's head.
//! - A failure (no connection, a timeout, 5xx, 429, …) is retried after a delay that doubles
//!   from `retry_min` up to `retry_max`, with jitter (a fleet whose central comes back does not
//!   reconnect in step), and never shorter than the far side's `Retry-After`.
//! - An answer that retrying cannot change (400, 413, 422; 414, 415) drops the batch with a log
//!   line naming it, after splitting it down to the one push it is about (400, 413, 422).
//! - 500 three times to one batch splits it too; a single push answered 500 three times is
//!   dropped as poison once the far side has taken anything else since its first failure (a
//!   central answering 500 to everything loses nothing).
//! - 401 and 403 pause the target until its token changes: the token file is read again at
//!   once, every `PAUSE_RECHECK` and at a reload.
//!
//! Delivery is at least once: a batch the far side stored but whose answer was lost (a timeout,
//! a cut link, this daemon killed before the removal was written) is sent again.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::batch::{batches, Batch};
use super::client::{tls_config, Client};
use super::spec::read_token;
use super::stats::{DropCause, State};
use super::Target;

/// How often a paused target tries again (reading its token file first).
pub const PAUSE_RECHECK: Duration = Duration::from_secs(300);
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// 500 answers to one batch before it is split (and, alone, dropped as poison).
const POISON_STRIKES: u32 = 3;

/// What to do after an answer.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Sent,
    /// Dropped for good.
    Rejected,
    /// Refused for a reason that one of its pushes may carry: send it in halves.
    Split,
    Pause,
    Retry(Option<Duration>),
    /// 500: retried, and counted against the batch (see `POISON_STRIKES`).
    Strike(Option<Duration>),
}

fn outcome(status: StatusCode, entries: usize, retry_after: Option<Duration>) -> Outcome {
    match status.as_u16() {
        200..=299 => Outcome::Sent,
        401 | 403 => Outcome::Pause,
        400 | 413 | 422 if entries > 1 => Outcome::Split,
        400 | 413 | 414 | 415 | 422 => Outcome::Rejected,
        500 => Outcome::Strike(retry_after),
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

/// Reloads and resumptions a sender hears of.
#[derive(Default)]
pub struct Wakeups {
    /// Wakes paused senders.
    pub resume: Notify,
    /// Counts reloads: a sender that sees it change reads its token file again.
    pub reloads: AtomicU64,
}

/// 500 answers per batch head (its first entry's sequence number), and since when.
#[derive(Default)]
struct Strikes {
    heads: HashMap<u64, (u32, Instant)>,
    /// The far side's last 2xx.
    last_success: Option<Instant>,
}

impl Strikes {
    /// Whether batches from `head` are split before they are sent (it had its 500s).
    fn struck_out(&self, head: u64) -> bool {
        self.heads
            .get(&head)
            .is_some_and(|(n, _)| *n >= POISON_STRIKES)
    }

    /// A 500 to the batch starting at `head`: retried (`Strike`) until `POISON_STRIKES`, then
    /// split, or dropped when it is one push and the far side has taken something else since
    /// its first 500.
    fn strike(&mut self, head: u64, entries: usize, hint: Option<Duration>) -> Outcome {
        let now = Instant::now();
        let (n, since) = self.heads.entry(head).or_insert((0, now));
        *n += 1;
        if *n < POISON_STRIKES {
            return Outcome::Strike(hint);
        }
        let since = *since;
        if entries > 1 {
            // Still counted: a later round splits a batch from this head before sending it.
            return Outcome::Split;
        }
        match self.last_success {
            Some(ok) if ok > since => {
                self.heads.remove(&head);
                Outcome::Rejected
            }
            _ => Outcome::Strike(hint),
        }
    }
}

/// A sender's state between rounds.
struct Sender {
    target: Arc<Target>,
    client: Client,
    token: Option<String>,
    strikes: Strikes,
    reloads_seen: u64,
}

/// Sends the target's queue until `stop`.
pub async fn run(target: Arc<Target>, wake: Arc<Wakeups>, stop: CancellationToken) {
    let spec = target.spec.clone();
    let stats = target.queue.stats.clone();
    // A target whose TLS settings cannot be built waits (paused) for a reload to try again.
    let client = loop {
        let ca = spec.ca.clone();
        let built = match spec.url.tls {
            false => Some(Client::new(spec.clone(), None)),
            true => blocking(move || tls_config(ca.as_deref()))
                .await
                .map(|c| c.and_then(|c| Client::new(spec.clone(), Some(c)))),
        };
        match built {
            Some(Ok(c)) => break c,
            Some(Err(e)) => {
                if stats.set_state(State::Paused) != State::Paused {
                    error!(target = %spec.name, error = %e, "forwarding cannot start");
                }
                stats.set_error(Some(e));
            }
            None => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PAUSE_RECHECK) => {}
            _ = wake.resume.notified() => {}
        }
    };
    let mut s = Sender {
        client,
        token: spec.token.clone(),
        strikes: Strikes::default(),
        reloads_seen: wake.reloads.load(Ordering::Relaxed),
        target,
    };
    let mut failures = 0u32;
    let mut last_round: Option<Instant> = None;
    while wait_for_batch(&s.target, last_round, &stop).await {
        last_round = Some(Instant::now());
        let reloads = wake.reloads.load(Ordering::Relaxed);
        if reloads != s.reloads_seen {
            s.reloads_seen = reloads;
            s.reread_token().await;
        }
        let end = tokio::select! {
            _ = stop.cancelled() => break,
            end = s.round() => end,
        };
        match end {
            RoundEnd::Done => {
                failures = 0;
                if stats.set_state(State::Ok) != State::Ok {
                    stats.set_error(None);
                    info!(target = %spec.name, queued_points = s.target.queue.points(), "forwarding resumed");
                }
            }
            RoundEnd::Retry(hint, why) => {
                stats.retries.fetch_add(1, Ordering::Relaxed);
                let delay = backoff(failures, spec.retry_min, spec.retry_max)
                    .max(hint.unwrap_or_default().min(MAX_RETRY_AFTER));
                failures = failures.saturating_add(1);
                debug!(target = %spec.name, error = %why, ?delay, "forwarding attempt failed");
                if stats.set_state(State::Retrying) != State::Retrying {
                    warn!(target = %spec.name, error = %why, queued_points = s.target.queue.points(), "forwarding failed; points stay queued and are retried");
                }
                stats.set_error(Some(why));
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            RoundEnd::Pause(why) => {
                // A token rotated in its file meanwhile is tried at once.
                if s.reread_token().await {
                    continue;
                }
                if stats.set_state(State::Paused) != State::Paused {
                    error!(target = %spec.name, answer = %why, "forwarding paused: the far side refused our credentials; fix token or token_file (read again every 5 minutes and at a reload)");
                }
                stats.set_error(Some(why));
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(PAUSE_RECHECK) => {}
                    _ = wake.resume.notified() => {}
                }
                s.reread_token().await;
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

impl Sender {
    /// Reads `token_file` again (if the target has one); whether the token changed.
    async fn reread_token(&mut self) -> bool {
        let Some(path) = self.target.spec.token_file.clone() else {
            return false;
        };
        match blocking(move || read_token(&path)).await {
            Some(Ok(t)) if self.token.as_deref() != Some(t.as_str()) => {
                info!(target = %self.target.spec.name, "forwarding token read again from token_file");
                self.token = Some(t);
                true
            }
            Some(Err(e)) => {
                warn!(target = %self.target.spec.name, error = %e, "cannot read token_file");
                false
            }
            _ => false,
        }
    }

    /// Sends one window of the queue's head, a request per stream and layout.
    async fn round(&mut self) -> RoundEnd {
        let target = self.target.clone();
        let (spec, stats) = (&target.spec, &target.queue.stats);
        let gzip = spec.gzip;
        let (q, max) = (target.queue.clone(), spec.batch_size as u64);
        let window = blocking(move || {
            let w = q.read(max)?;
            if w.is_empty() {
                // The counters say points are queued but none is (a failed write left them
                // behind): count again rather than come back at once.
                q.recount()?;
            }
            Ok::<_, edgelive_storage::StoreError>(
                batches(w)
                    .into_iter()
                    .map(|b| {
                        let body = b.body(gzip);
                        (b, body)
                    })
                    .collect::<VecDeque<_>>(),
            )
        })
        .await;
        let mut todo = match window {
            Some(Ok(w)) => w,
            Some(Err(e)) => return RoundEnd::Retry(None, format!("cannot read the queue: {e}")),
            None => return RoundEnd::Retry(None, "cannot read the queue".into()),
        };
        let heads: Vec<u64> = todo.iter().map(|(b, _)| b.seqs[0]).collect();
        let mut failed: Vec<String> = Vec::new();
        let mut failure: Option<(Option<Duration>, String)> = None;
        while let Some((batch, body)) = todo.pop_front() {
            if failed.contains(&batch.stream) {
                continue;
            }
            if batch.entries.len() > 1 && self.strikes.struck_out(batch.seqs[0]) {
                match split(batch, gzip).await {
                    Some([first, second]) => {
                        todo.push_front(second);
                        todo.push_front(first);
                        continue;
                    }
                    None => return RoundEnd::Retry(None, "cannot split a batch".into()),
                }
            }
            let Some(body) = body else {
                return RoundEnd::Retry(None, "cannot compress a batch".into());
            };
            let path = spec.path(&batch.stream, batch.layout);
            let answer = match self
                .client
                .post(&path, body, gzip, self.token.as_deref())
                .await
            {
                Ok(a) => a,
                Err(e) => return RoundEnd::Retry(None, e.to_string()),
            };
            let status = answer.status;
            let why = || format!("{status}: {}", answer.body.trim());
            let head = batch.seqs[0];
            let mut outcome = outcome(status, batch.entries.len(), answer.retry_after);
            if let Outcome::Strike(hint) = outcome {
                outcome = self.strikes.strike(head, batch.entries.len(), hint);
                if outcome == Outcome::Rejected {
                    warn!(target = %spec.name, stream = %batch.stream, points = batch.points, "the far side answered 500 three times to one push while taking others: dropped as poison");
                }
            }
            match outcome {
                Outcome::Sent => {
                    self.strikes.heads.remove(&head);
                    self.strikes.last_success = Some(Instant::now());
                    match remove(&target, batch.seqs).await {
                        Ok(points) => stats.sent_points.fetch_add(points, Ordering::Relaxed),
                        Err(e) => return RoundEnd::Retry(None, e),
                    };
                    stats.sent_requests.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Rejected => {
                    warn!(
                        target = %spec.name,
                        stream = %batch.stream,
                        status = status.as_u16(),
                        points = batch.points,
                        first_entry = head,
                        answer = %answer.body.trim(),
                        "the far side refused a batch that retrying cannot change; dropped"
                    );
                    match remove(&target, batch.seqs).await {
                        Ok(points) => stats.drop_points(DropCause::Rejected, points),
                        Err(e) => return RoundEnd::Retry(None, e),
                    }
                }
                Outcome::Split => match split(batch, gzip).await {
                    Some([first, second]) => {
                        todo.push_front(second);
                        todo.push_front(first);
                    }
                    None => return RoundEnd::Retry(None, "cannot split a batch".into()),
                },
                Outcome::Pause => return RoundEnd::Pause(why()),
                Outcome::Retry(hint) | Outcome::Strike(hint) => {
                    failed.push(batch.stream);
                    failure.get_or_insert_with(|| (hint, why()));
                }
            }
        }
        // Strikes are kept for heads still at the front of their stream.
        self.strikes.heads.retain(|h, _| heads.contains(h));
        match failure {
            Some((hint, why)) => RoundEnd::Retry(hint, why),
            None => RoundEnd::Done,
        }
    }
}

/// The halves of a batch with their bodies (compressed off the event loop).
async fn split(batch: Batch, gzip: bool) -> Option<[(Batch, Option<Bytes>); 2]> {
    blocking(move || {
        let (a, b) = batch.split();
        let (ba, bb) = (a.body(gzip), b.body(gzip));
        [(a, ba), (b, bb)]
    })
    .await
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

    #[test]
    fn answers_decide_what_happens_to_a_batch() {
        let s = |c| StatusCode::from_u16(c).unwrap();
        assert_eq!(outcome(s(204), 1, None), Outcome::Sent);
        assert_eq!(outcome(s(400), 5, None), Outcome::Split);
        assert_eq!(outcome(s(400), 1, None), Outcome::Rejected);
        assert_eq!(outcome(s(413), 5, None), Outcome::Split);
        assert_eq!(outcome(s(413), 1, None), Outcome::Rejected);
        assert_eq!(outcome(s(414), 5, None), Outcome::Rejected);
        assert_eq!(outcome(s(401), 1, None), Outcome::Pause);
        assert_eq!(outcome(s(403), 1, None), Outcome::Pause);
        let later = Some(Duration::from_secs(7));
        assert_eq!(outcome(s(429), 1, later), Outcome::Retry(later));
        assert_eq!(outcome(s(503), 1, None), Outcome::Retry(None));
        assert_eq!(outcome(s(404), 1, None), Outcome::Retry(None));
        assert_eq!(outcome(s(500), 1, None), Outcome::Strike(None));
    }

    #[test]
    fn a_push_answered_500_is_split_then_dropped_only_while_others_go_through() {
        let mut s = Strikes::default();
        let hint = None;
        // A batch of several pushes: split after the third 500.
        assert_eq!(s.strike(1, 4, hint), Outcome::Strike(None));
        assert_eq!(s.strike(1, 4, hint), Outcome::Strike(None));
        assert_eq!(s.strike(1, 4, hint), Outcome::Split);
        // One push, the far side taking nothing else: kept, however often it fails.
        for _ in 0..10 {
            assert_eq!(s.strike(1, 1, hint), Outcome::Strike(None));
        }
        // The far side took another request since: the push is poison.
        s.last_success = Some(Instant::now());
        assert_eq!(s.strike(1, 1, hint), Outcome::Rejected);
        assert!(s.heads.is_empty());
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
