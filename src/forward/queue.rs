//! One target's durable queue: the storage thread appends to it (in the same group commit that
//! acknowledges the push), the target's sender reads its head and removes what the far side
//! acknowledged. Sizes are kept in atomics so that a push, `/metrics` and the sender read them
//! without touching the disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgelive_storage::{ForwardEntry, ForwardQueue, Removed, Store, StoreError};
use tokio::sync::Notify;
use tracing::{error, info, warn};

use super::config::OnFull;
use super::stats::{DropCause, TargetStats};
use crate::throttle::Throttle;

/// Most bytes one full queue's drop frees beyond what the new entry needs.
const DROP_AT_ONCE: u64 = 512 << 10;
/// At most one "dropping the oldest" line a minute per target (the counter has every drop).
const DROP_LOG_EVERY: Duration = Duration::from_secs(60);

pub struct Queue {
    pub stats: Arc<TargetStats>,
    disk: ForwardQueue,
    max_bytes: u64,
    on_full: OnFull,
    /// The next sequence number; only the storage thread appends.
    next: AtomicU64,
    bytes: AtomicU64,
    points: AtomicU64,
    /// The oldest queued point's acceptance time, ms (0: empty).
    oldest_ms: AtomicU64,
    /// Wakes the sender when points are appended.
    pub wake: Notify,
    /// Drops are logged at most once a minute.
    drop_log: Throttle,
    /// Orders updates of `oldest_ms` between the storage thread and the sender (held only
    /// around reading the queue's head, never across an await).
    head: Mutex<()>,
}

impl Queue {
    /// Opens the target's queue and counts what it holds (at start, before the storage thread
    /// runs).
    pub fn open(
        store: &Store,
        stats: Arc<TargetStats>,
        max_bytes: u64,
        on_full: OnFull,
    ) -> Result<Queue, StoreError> {
        let disk = store.forward_queue(&stats.name)?;
        let t = disk.totals()?;
        if t.entries > 0 {
            info!(target = %stats.name, points = t.points, bytes = t.bytes, "forwarding queue loaded");
        }
        Ok(Queue {
            stats,
            disk,
            max_bytes,
            on_full,
            next: AtomicU64::new(t.next),
            bytes: AtomicU64::new(t.bytes),
            points: AtomicU64::new(t.points),
            oldest_ms: AtomicU64::new(t.oldest_ms),
            wake: Notify::new(),
            drop_log: Throttle::new(DROP_LOG_EVERY),
            head: Mutex::new(()),
        })
    }

    pub fn name(&self) -> &str {
        &self.stats.name
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn points(&self) -> u64 {
        self.points.load(Ordering::Relaxed)
    }

    /// The oldest queued point's acceptance time, ms since the epoch (`None`: empty).
    pub fn oldest_ms(&self) -> Option<u64> {
        match self.oldest_ms.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    /// Whether a push must be refused (`on_full = "refuse"` and no room).
    pub fn refuses(&self) -> bool {
        self.on_full == OnFull::Refuse && self.bytes() >= self.max_bytes
    }

    /// Counts points refused because the queue was full.
    pub fn refused(&self, points: u64) {
        self.stats.drop_points(DropCause::Refused, points);
    }

    /// Storage thread: queues an entry; with `drop_oldest`, makes room by dropping the oldest
    /// entries (a thirty-second of the bound at once, at most `DROP_AT_ONCE`, so drops come in
    /// batches, not one per push, and none holds the storage thread long).
    pub fn append(&self, entry: &ForwardEntry) -> Result<(), StoreError> {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let bytes = self.disk.append(seq, entry)?;
        self.points
            .fetch_add(entry.points as u64, Ordering::Relaxed);
        {
            // Under the lock a removal holds from reading the head to storing its time: an
            // entry appended meanwhile is either seen there or finds 0 here.
            let _head = self.head.lock().unwrap_or_else(|p| p.into_inner());
            if self.oldest_ms.load(Ordering::Relaxed) == 0 {
                self.oldest_ms
                    .store(entry.time_ms.max(1), Ordering::Relaxed);
            }
        }
        let total = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if total > self.max_bytes && self.on_full == OnFull::DropOldest {
            let free = total - self.max_bytes + (self.max_bytes / 32).min(DROP_AT_ONCE);
            let removed = self.disk.remove_oldest(free)?;
            self.count_removed(&removed)?;
            self.stats.drop_points(DropCause::QueueFull, removed.points);
            self.log_drop(removed.points);
        }
        self.wake.notify_one();
        Ok(())
    }

    fn log_drop(&self, points: u64) {
        if self.drop_log.ready() {
            warn!(
                target = %self.name(),
                points,
                dropped_total = self.stats.dropped(DropCause::QueueFull),
                max_queue = self.max_bytes,
                "forwarding queue full: dropped the oldest points (on_full = \"drop_oldest\")"
            );
        }
    }

    /// Blocking: the oldest entries, within `max_points` (at least one entry). Entries that
    /// cannot be decoded (damaged on disk) are removed, counted and logged.
    pub fn read(&self, max_points: u64) -> Result<Vec<(u64, ForwardEntry)>, StoreError> {
        // A request body stays well under any push endpoint's size limit (16 MiB here).
        let w = self.disk.read(max_points, 4 << 20)?;
        if !w.damaged.is_empty() {
            let removed = self.remove(w.damaged.iter().copied())?;
            self.stats.drop_points(DropCause::Damaged, removed.points);
            error!(target = %self.name(), entries = w.damaged.len(), first = w.damaged[0], "damaged forwarding queue entries dropped");
        }
        Ok(w.entries)
    }

    /// Blocking: counts what the queue holds again (after a failed write left the counters
    /// behind).
    pub fn recount(&self) -> Result<(), StoreError> {
        let t = self.disk.totals()?;
        self.bytes.store(t.bytes, Ordering::Relaxed);
        self.points.store(t.points, Ordering::Relaxed);
        self.oldest_ms.store(t.oldest_ms, Ordering::Relaxed);
        Ok(())
    }

    /// Blocking: removes entries the far side took (or refused for good).
    pub fn remove(&self, seqs: impl IntoIterator<Item = u64>) -> Result<Removed, StoreError> {
        let removed = self.disk.remove(seqs)?;
        self.count_removed(&removed)?;
        Ok(removed)
    }

    fn count_removed(&self, r: &Removed) -> Result<(), StoreError> {
        self.bytes
            .fetch_sub(r.bytes.min(self.bytes()), Ordering::Relaxed);
        self.points
            .fetch_sub(r.points.min(self.points()), Ordering::Relaxed);
        let _head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        let oldest = self.disk.oldest_ms()?.map_or(0, |t| t.max(1));
        self.oldest_ms.store(oldest, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(points: u32, time_ms: u64) -> ForwardEntry {
        ForwardEntry {
            stream: "s".into(),
            layout: 0,
            points,
            time_ms,
            lines: vec![b'x'; 1000],
        }
    }

    #[test]
    fn a_full_queue_drops_its_oldest_or_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&edgelive_storage::test_config(dir.path())).unwrap();
        let stats = Arc::new(TargetStats::new("a".into()));
        let q = Queue::open(&store, stats.clone(), 64 << 10, OnFull::DropOldest).unwrap();
        for i in 0..100 {
            q.append(&entry(2, 1000 + i)).unwrap();
        }
        assert!(q.bytes() <= 64 << 10, "{}", q.bytes());
        let dropped = stats.dropped(DropCause::QueueFull);
        assert!(dropped > 0 && dropped % 2 == 0);
        assert_eq!(q.points() + dropped, 200);
        // What is left is the newest, oldest first.
        let head = q.read(1).unwrap();
        assert_eq!(head[0].1.time_ms, 1000 + dropped / 2);
        assert_eq!(q.oldest_ms(), Some(1000 + dropped / 2));
        assert!(!q.refuses());

        let stats = Arc::new(TargetStats::new("r".into()));
        let r = Queue::open(&store, stats.clone(), 8 << 10, OnFull::Refuse).unwrap();
        while !r.refuses() {
            r.append(&entry(1, 5)).unwrap();
        }
        assert_eq!(stats.dropped(DropCause::QueueFull), 0);
        let all: Vec<u64> = r.read(u64::MAX).unwrap().iter().map(|e| e.0).collect();
        r.remove(all).unwrap();
        assert_eq!((r.bytes(), r.points(), r.oldest_ms()), (0, 0, None));
    }
}
