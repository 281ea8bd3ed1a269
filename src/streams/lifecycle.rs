//! One producer per channel while someone watches (design §8, Grafana's RunStream manager).
//!
//! The first subscriber starts the channel's producer; later ones share it. Who watches is not
//! counted here but asked of the hub (`Watchers`), as Grafana asks centrifuge, so no count can
//! drift. After the last one leaves, the producer keeps running through `grace_checks` checks
//! `check_every` apart (Grafana: 3 × 5 s), and a re-check under the lock, so a page reload
//! does not restart it. A producer that
//! fails is restarted after a backoff that doubles from `backoff_min` to `backoff_max`; one that
//! ends cleanly is not, and `on_end` tells its subscribers to resubscribe.
//!
//! Nothing here awaits while holding the map's lock; each channel's supervisor is one task.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// A producer's run: `Ok` when it ended on its own (not restarted), `Err` when it failed.
pub type Run = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Starts one run of a channel's producer; called again for each restart.
pub type Start = Arc<dyn Fn(CancellationToken) -> Run + Send + Sync>;

/// Runs once when a producer ends on its own.
pub type OnEnd = Box<dyn FnOnce() + Send>;

/// How many subscribers a channel has now.
pub type Watchers = Arc<dyn Fn(&str) -> usize + Send + Sync>;

#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub grace_checks: u32,
    pub check_every: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            grace_checks: 3,
            check_every: Duration::from_secs(5),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// Producer counters for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub started: u64,
    pub restarted: u64,
    pub stopped: u64,
}

struct Entry {
    /// A subscriber arrived since the last idle check (it may not be in the hub yet when its
    /// subscribe goes through the storage thread).
    touched: bool,
    /// Which supervisor owns it: a newer one may run the same channel while an older one's
    /// producer is still winding down.
    id: u64,
}

#[derive(Default)]
struct State {
    channels: HashMap<Arc<str>, Entry>,
    counts: Counts,
    next_id: u64,
}

pub struct Lifecycle {
    state: Mutex<State>,
    timings: Timings,
    /// Parent of every producer's token: shutdown stops them all.
    shutdown: CancellationToken,
    watchers: Watchers,
    /// Every supervisor, so shutdown can wait until each producer has stopped (an exec
    /// handler's program has exited) before the daemon exits.
    tasks: TaskTracker,
}

impl Lifecycle {
    pub fn new(
        timings: Timings,
        shutdown: CancellationToken,
        watchers: Watchers,
    ) -> Arc<Lifecycle> {
        Arc::new(Lifecycle {
            state: Mutex::new(State::default()),
            timings,
            shutdown,
            watchers,
            tasks: TaskTracker::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A subscriber arrived on `key`: starts its producer unless one runs. `setup` is called
    /// only to start one: how to run it, and what to do when it ends cleanly (its subscribers
    /// should resubscribe). Must be called on a runtime.
    pub fn ensure(self: &Arc<Self>, key: &Arc<str>, setup: impl FnOnce() -> (Start, OnEnd)) {
        let mut st = self.lock();
        if let Some(e) = st.channels.get_mut(key) {
            e.touched = true;
            return;
        }
        let (start, on_end) = setup();
        let cancel = self.shutdown.child_token();
        st.next_id += 1;
        let id = st.next_id;
        st.channels.insert(key.clone(), Entry { touched: true, id });
        st.counts.started += 1;
        drop(st);
        self.tasks.spawn(
            self.clone()
                .supervise(key.clone(), id, start, cancel, on_end),
        );
    }

    /// Waits until every producer has stopped; call after shutdown was signalled.
    pub async fn stopped(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// How many producers run.
    pub fn num_running(&self) -> usize {
        self.lock().channels.len()
    }

    /// Channels whose producer runs, sorted.
    pub fn running(&self) -> Vec<Arc<str>> {
        let mut v: Vec<Arc<str>> = self.lock().channels.keys().cloned().collect();
        v.sort();
        v
    }

    pub fn counts(&self) -> Counts {
        self.lock().counts
    }

    /// Whether anyone watches `key`, or arrived since the last check.
    fn watched(&self, key: &str) -> bool {
        let touched = self
            .lock()
            .channels
            .get_mut(key)
            .is_some_and(|e| std::mem::take(&mut e.touched));
        touched || (self.watchers)(key) > 0
    }

    /// Runs the producer, restarts it on failure, and stops it once nobody has watched for the
    /// grace period. A stopped producer is cancelled and then awaited, so it can clean up
    /// (an exec handler's program gets SIGTERM and time to exit).
    async fn supervise(
        self: Arc<Self>,
        key: Arc<str>,
        id: u64,
        start: Start,
        cancel: CancellationToken,
        on_end: OnEnd,
    ) {
        let t = self.timings;
        let mut backoff = t.backoff_min;
        let mut idle_checks = 0;
        let mut next_check = tokio::time::Instant::now() + t.check_every;
        let mut run: Option<Run> = Some(start(cancel.child_token()));
        let mut restart_at: Option<tokio::time::Instant> = None;
        loop {
            let running = async {
                match run.as_mut() {
                    Some(r) => r.await,
                    None => std::future::pending().await,
                }
            };
            let restart = async {
                match restart_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                result = running => {
                    run = None;
                    match result {
                        Ok(()) => {
                            debug!(channel = %key, "producer ended");
                            self.remove(&key, id, &cancel);
                            on_end();
                            return;
                        }
                        Err(e) => {
                            warn!(channel = %key, error = %e, retry_in = ?backoff, "producer failed");
                            restart_at = Some(tokio::time::Instant::now() + backoff);
                            backoff = (backoff * 2).min(t.backoff_max);
                        }
                    }
                }
                _ = restart => {
                    restart_at = None;
                    self.lock().counts.restarted += 1;
                    run = Some(start(cancel.child_token()));
                }
                _ = tokio::time::sleep_until(next_check) => {
                    // From now, not from the missed deadline: after a stall (the device
                    // suspended, the runtime starved) the checks it missed are skipped rather
                    // than run back-to-back, which would end the grace period at once.
                    next_check = tokio::time::Instant::now() + t.check_every;
                    if self.watched(&key) {
                        idle_checks = 0;
                        continue;
                    }
                    idle_checks += 1;
                    if idle_checks >= t.grace_checks && self.stop_if_idle(&key, &cancel) {
                        debug!(channel = %key, "producer stopped: nobody watches");
                        break;
                    }
                }
            }
        }
        // Stopped (idle or shutdown): the token is cancelled; let the run wind down.
        self.remove(&key, id, &cancel);
        if let Some(r) = run {
            let _ = r.await;
        }
    }

    /// The re-check: under the lock, removes the channel only if still nobody watches.
    fn stop_if_idle(&self, key: &str, cancel: &CancellationToken) -> bool {
        let mut st = self.lock();
        if st.channels.get(key).is_some_and(|e| e.touched) || (self.watchers)(key) > 0 {
            return false;
        }
        st.channels.remove(key);
        st.counts.stopped += 1;
        cancel.cancel();
        true
    }

    fn remove(&self, key: &str, id: u64, cancel: &CancellationToken) {
        let mut st = self.lock();
        if st.channels.get(key).is_some_and(|e| e.id == id) {
            st.channels.remove(key);
            st.counts.stopped += 1;
        }
        cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::time::{advance, Instant};

    /// Subscriber counts the tests set by hand.
    #[derive(Default)]
    struct Hub(Mutex<HashMap<String, usize>>);

    impl Hub {
        fn set(&self, key: &str, n: usize) {
            self.0.lock().unwrap().insert(key.to_owned(), n);
        }
    }

    fn lifecycle(shutdown: CancellationToken) -> (Arc<Lifecycle>, Arc<Hub>) {
        let hub = Arc::new(Hub::default());
        let h = hub.clone();
        let watchers: Watchers = Arc::new(move |k| *h.0.lock().unwrap().get(k).unwrap_or(&0));
        (Lifecycle::new(Timings::default(), shutdown, watchers), hub)
    }

    /// A producer that runs until cancelled, counting its starts.
    fn forever(starts: Arc<AtomicUsize>) -> Start {
        Arc::new(move |cancel: CancellationToken| {
            starts.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                cancel.cancelled().await;
                Ok(())
            })
        })
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_producer_per_channel_kept_through_the_grace_period() {
        let (lc, hub) = lifecycle(CancellationToken::new());
        let starts = Arc::new(AtomicUsize::new(0));
        let key: Arc<str> = Arc::from("plugin/testdata/x");
        hub.set(&key, 2);
        lc.ensure(&key, || (forever(starts.clone()), Box::new(|| {})));
        lc.ensure(&key, || (forever(starts.clone()), Box::new(|| {})));
        settle().await;
        assert_eq!(
            starts.load(Ordering::SeqCst),
            1,
            "the second subscriber shares it"
        );
        hub.set(&key, 0);
        // A reload: back within the grace period, the same producer goes on.
        advance(Duration::from_secs(12)).await;
        settle().await;
        hub.set(&key, 1);
        lc.ensure(&key, || (forever(starts.clone()), Box::new(|| {})));
        advance(Duration::from_secs(30)).await;
        settle().await;
        assert_eq!(lc.running(), vec![key.clone()]);
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        // Gone for good: stopped after three idle checks 5 s apart.
        hub.set(&key, 0);
        let left = Instant::now();
        while !lc.running().is_empty() {
            advance(Duration::from_secs(1)).await;
            settle().await;
        }
        let after = left.elapsed();
        assert!(
            after >= Duration::from_secs(10) && after <= Duration::from_secs(16),
            "{after:?}"
        );
        assert_eq!(lc.counts().stopped, 1);
        // The next subscriber starts a new one.
        hub.set(&key, 1);
        lc.ensure(&key, || (forever(starts.clone()), Box::new(|| {})));
        settle().await;
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        assert_eq!(lc.counts().started, 2);
    }

    /// A stall (the device suspended, the runtime starved) is not idle time anyone could have
    /// come back in: the checks it missed are skipped, not fired back-to-back, so the whole
    /// grace period still follows it.
    #[tokio::test(start_paused = true)]
    async fn a_stall_does_not_use_up_the_grace_period() {
        let (lc, hub) = lifecycle(CancellationToken::new());
        let starts = Arc::new(AtomicUsize::new(0));
        let key: Arc<str> = Arc::from("plugin/testdata/stall");
        hub.set(&key, 1);
        lc.ensure(&key, || (forever(starts.clone()), Box::new(|| {})));
        settle().await;
        hub.set(&key, 0);
        // Four check periods pass at once: at most one check may run for them.
        advance(Duration::from_secs(20)).await;
        settle().await;
        assert_eq!(lc.running(), vec![key.clone()], "stopped by missed checks");
        // Two more checks (idle) still leave it running; the third stops it.
        for _ in 0..2 {
            advance(Duration::from_secs(5)).await;
            settle().await;
        }
        assert_eq!(
            lc.running(),
            vec![key.clone()],
            "stopped before three checks"
        );
        advance(Duration::from_secs(5)).await;
        settle().await;
        assert!(lc.running().is_empty());
        assert_eq!(starts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_producer_is_restarted_with_doubling_backoff() {
        let (lc, _hub) = lifecycle(CancellationToken::new());
        let at = Arc::new(Mutex::new(Vec::new()));
        let t0 = Instant::now();
        let log = at.clone();
        let start: Start = Arc::new(move |_| {
            log.lock().unwrap().push(t0.elapsed());
            Box::pin(async { Err("sensor unplugged".to_string()) })
        });
        let key: Arc<str> = Arc::from("plugin/x/y");
        lc.ensure(&key, || (start, Box::new(|| {})));
        for _ in 0..200 {
            advance(Duration::from_millis(100)).await;
            settle().await;
        }
        let starts = at.lock().unwrap().clone();
        let gaps: Vec<u128> = starts
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis())
            .collect();
        assert!(
            gaps.starts_with(&[200, 400, 800, 1600, 3200, 5000]),
            "{gaps:?}"
        );
        assert!(lc.counts().restarted >= 6);
    }

    #[tokio::test(start_paused = true)]
    async fn a_producer_that_ends_cleanly_is_not_restarted_and_says_so() {
        let (lc, _hub) = lifecycle(CancellationToken::new());
        let starts = Arc::new(AtomicUsize::new(0));
        let s = starts.clone();
        let start: Start = Arc::new(move |_| {
            s.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(()) })
        });
        let ended = Arc::new(AtomicUsize::new(0));
        let e = ended.clone();
        let key: Arc<str> = Arc::from("plugin/x/done");
        let on_end: OnEnd = Box::new(move || {
            e.fetch_add(1, Ordering::SeqCst);
        });
        lc.ensure(&key, || (start, on_end));
        advance(Duration::from_secs(30)).await;
        settle().await;
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        assert_eq!(ended.load(Ordering::SeqCst), 1);
        assert!(lc.running().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_every_producer() {
        let shutdown = CancellationToken::new();
        let (lc, _hub) = lifecycle(shutdown.clone());
        let starts = Arc::new(AtomicUsize::new(0));
        for k in ["plugin/a/1", "plugin/a/2"] {
            lc.ensure(&Arc::from(k), || (forever(starts.clone()), Box::new(|| {})));
        }
        settle().await;
        assert_eq!(lc.running().len(), 2);
        shutdown.cancel();
        settle().await;
        assert!(lc.running().is_empty());
        assert_eq!(lc.counts().stopped, 2);
    }
}
