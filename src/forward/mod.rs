//! Store-and-forward to a central site (`[[forward]]`): what a push or an MQTT bridge
//! publishes on a forwarded stream is queued per target on disk (appended by the storage
//! thread with the group commit that acknowledges the push, so no second sync), and each
//! target's sender posts it as Influx line protocol to the far side's push endpoint, removing
//! it only once answered 2xx.
//!
//! `config` is what the operator writes, `spec` the runtime settings, `lines` the line
//! protocol written for a push or a frame, `queue` the durable queue, `client` the HTTP
//! connection, `sender` the loop with its retry, drop and pause rules, `stats` the counters.

pub mod batch;
pub mod client;
pub mod config;
pub mod lines;
pub mod queue;
pub mod sender;
pub mod spec;
pub mod stats;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use edgelive_storage::{Store, StoreError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use queue::Queue;
use spec::TargetSpec;
use stats::{State, TargetStats};

/// One target: its settings and its queue (whose stats are the target's).
pub struct Target {
    pub spec: Arc<TargetSpec>,
    pub queue: Arc<Queue>,
}

/// Every target; a cheap clone.
#[derive(Clone, Default)]
pub struct Forwarding {
    targets: Arc<[Arc<Target>]>,
    /// Reloads, for the senders (a paused one tries again, every one reads its token file).
    wake: Arc<sender::Wakeups>,
}

impl Forwarding {
    /// Opens each target's queue (blocking: at start, before the runtime). A queue on disk
    /// that no target owns any more is kept (a renamed target may be renamed back) and
    /// named in the log with what it holds.
    pub fn open(specs: &[Arc<TargetSpec>], store: &Store) -> Result<Forwarding, StoreError> {
        let mut targets = Vec::with_capacity(specs.len());
        for spec in specs {
            let stats = Arc::new(TargetStats::new(spec.name.clone()));
            let queue = Queue::open(store, stats, spec.max_queue, spec.on_full)?;
            targets.push(Arc::new(Target {
                spec: spec.clone(),
                queue: Arc::new(queue),
            }));
        }
        for name in store.forward_queue_names() {
            if specs.iter().any(|s| s.name == name) {
                continue;
            }
            let t = store.forward_queue(&name)?.totals()?;
            if t.entries > 0 {
                warn!(target = %name, points = t.points, bytes = t.bytes, "a forwarding queue on disk belongs to no [[forward]] target; kept, not sent");
            }
        }
        Ok(Forwarding {
            targets: targets.into(),
            wake: Arc::default(),
        })
    }

    pub fn targets(&self) -> &[Arc<Target>] {
        &self.targets
    }

    /// The queues a push to `stream` goes to.
    pub fn queues_for(&self, stream: &str) -> Vec<Arc<Queue>> {
        self.targets
            .iter()
            .filter(|t| t.spec.forwards(stream))
            .map(|t| t.queue.clone())
            .collect()
    }

    /// The first target of `queues` refusing new points (`on_full = "refuse"`, full), counting
    /// the refused points there.
    pub fn refusing(queues: &[Arc<Queue>], points: u64) -> Option<String> {
        let q = queues.iter().find(|q| q.refuses())?;
        q.refused(points);
        Some(q.name().to_owned())
    }

    /// Starts every target's sender.
    pub fn start(&self, tracker: &TaskTracker, stop: CancellationToken) {
        for t in self.targets.iter() {
            tracker.spawn(sender::run(t.clone(), self.wake.clone(), stop.clone()));
        }
    }

    /// After a reload: every sender reads its token file again, and paused ones try again
    /// now.
    pub fn reloaded(&self) {
        self.wake.reloads.fetch_add(1, Ordering::Relaxed);
        self.wake.resume.notify_waiters();
    }

    /// Paused targets and why, for `/api/health`.
    pub fn paused(&self) -> Vec<(String, String)> {
        self.targets
            .iter()
            .filter(|t| t.queue.stats.state() == State::Paused)
            .map(|t| {
                let why = t.queue.stats.last_error().unwrap_or_default();
                (t.spec.name.clone(), why)
            })
            .collect()
    }
}
