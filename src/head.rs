//! The head of a history channel, held in memory where the connections are: its epoch, its top
//! offset, the offsets reserved durably ahead of it, and its most recent publications.
//!
//! With a head, a publication is sequenced and broadcast by the publisher's own task under the
//! hub's shard lock (no hop to the storage thread and back, and the writers it wakes run on
//! the same runtime), and a subscriber that reconnects after a short absence recovers from
//! memory. The storage thread writes what the heads sequenced, in order, and answers what
//! they cannot: recovery deeper than the recent publications, a channel not yet loaded, and
//! offsets beyond the reservation.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::channel_kind::HistoryPolicy;
use bytes::Bytes;

use crate::json::CompactJson;
use crate::protocol::reply::{self, ClientInfo, Publication};

/// Most recent publications one head keeps (fewer when the channel keeps fewer).
const RECENT_MAX: usize = 1024;
/// Most bytes of recent publications one head keeps.
const RECENT_BYTES_MAX: usize = 64 * 1024;
/// Most bytes of recent publications all heads keep together: memory on a 256 MiB board stays
/// bounded however many channels there are; beyond it a channel keeps fewer (and recovery
/// goes to disk). Measured with 100 channels × 1,000 publications of 200 B: 8 MiB took history
/// memory from 1.9× to 2.1–2.3× the payload, 2 MiB left it at 1.85–1.96×.
pub const RECENT_BUDGET_BYTES: usize = 2 * 1024 * 1024;
/// What a kept publication costs beyond its payload (the `Arc`, its slot, the info pointer).
const ENTRY_OVERHEAD: usize = 64;

/// A stream position as the client sent it.
#[derive(Debug, Clone)]
pub struct Position {
    pub offset: u64,
    pub epoch: String,
}

/// A publication with its offset, shared by the head's recent list and the write queued for
/// the storage thread (one copy of the payload for both).
#[derive(Debug)]
pub struct Sequenced {
    pub offset: u64,
    pub data: CompactJson<'static>,
    pub info: Option<Arc<ClientInfo>>,
    /// When it was sequenced, for the channel's TTL in memory.
    pub at: Instant,
}

impl Sequenced {
    /// Its publication push, for subscribers who wrote the channel as `name`.
    pub fn push(&self, name: &str) -> Bytes {
        reply::publication(
            name,
            Publication {
                data: &self.data,
                info: self.info.as_deref(),
                offset: self.offset,
            },
        )
    }

    fn cost(&self) -> usize {
        ENTRY_OVERHEAD + self.data.get().len()
    }
}

/// Bytes of recent publications held by every head of one hub.
#[derive(Debug)]
pub struct RecentBudget {
    used: AtomicUsize,
    limit: usize,
}

impl RecentBudget {
    pub fn new(limit: usize) -> RecentBudget {
        RecentBudget {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// What the recent publications answer to a subscriber's position.
#[derive(Debug)]
pub enum Recovery {
    /// Every missed publication, oldest first (none when nothing was missed).
    Recovered(Vec<Arc<Sequenced>>),
    /// The position cannot be recovered whatever is stored (another epoch, ahead of the top,
    /// or more missed than `max_read`): `recovered: false`.
    Unrecoverable,
    /// Older than what memory holds: the storage thread reads it.
    Cold,
}

#[derive(Debug)]
pub struct Head {
    pub epoch: String,
    /// The newest offset handed out.
    pub top: u64,
    /// Offsets up to here are durably reserved: one may be broadcast before it is stored.
    pub reserved: u64,
    /// The newest publications, contiguous and ending at `top` (or empty).
    recent: VecDeque<Arc<Sequenced>>,
    bytes: usize,
    keep: usize,
    ttl: Duration,
    budget: Arc<RecentBudget>,
}

impl Head {
    pub fn new(
        epoch: String,
        top: u64,
        reserved: u64,
        policy: HistoryPolicy,
        budget: Arc<RecentBudget>,
    ) -> Head {
        Head {
            epoch,
            top,
            reserved: reserved.max(top),
            recent: VecDeque::new(),
            bytes: 0,
            keep: (policy.size as usize).min(RECENT_MAX),
            ttl: policy.ttl,
            budget,
        }
    }

    /// The next offset, if it is within the durable reservation.
    pub fn next_offset(&self) -> Option<u64> {
        let next = self.top.checked_add(1)?;
        (next <= self.reserved).then_some(next)
    }

    /// Records the publication sequenced at `top + 1`, dropping the oldest kept ones beyond
    /// the channel's, the head's or the hub's bound.
    pub fn record(&mut self, p: Arc<Sequenced>) {
        if p.offset != self.top.wrapping_add(1) {
            // Not contiguous (cannot happen while the broker and storage thread agree): what
            // is kept could no longer be trusted to be gap-free.
            self.clear();
        }
        self.top = p.offset;
        let cost = p.cost();
        self.recent.push_back(p);
        self.bytes += cost;
        self.budget.used.fetch_add(cost, Ordering::Relaxed);
        while !self.recent.is_empty()
            && (self.recent.len() > self.keep
                || self.bytes > RECENT_BYTES_MAX
                || self.budget.used() > self.budget.limit)
        {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some(old) = self.recent.pop_front() {
            let cost = old.cost();
            self.bytes -= cost;
            self.budget.used.fetch_sub(cost, Ordering::Relaxed);
        }
    }

    fn clear(&mut self) {
        while !self.recent.is_empty() {
            self.pop_oldest();
        }
    }

    /// The oldest offset memory holds (`top + 1` when it holds none).
    fn first_recent(&self) -> u64 {
        self.recent
            .front()
            .map_or(self.top.saturating_add(1), |p| p.offset)
    }

    /// What a subscriber at `pos` missed, from memory (design §6: all of it from the position
    /// on, in this epoch, within `max_read`, or nothing).
    pub fn recover(&self, pos: &Position, max_read: usize, now: Instant) -> Recovery {
        let same_epoch = pos.epoch.is_empty() || pos.epoch == self.epoch;
        if !same_epoch || pos.offset > self.top || self.top - pos.offset > max_read as u64 {
            return Recovery::Unrecoverable;
        }
        if pos.offset == self.top {
            return Recovery::Recovered(Vec::new());
        }
        let from = pos.offset + 1;
        let first = self.first_recent();
        if from < first {
            return Recovery::Cold;
        }
        let missed: Vec<Arc<Sequenced>> = self
            .recent
            .range((from - first) as usize..)
            .cloned()
            .collect();
        // The oldest one must still be within the TTL; else the disk's answer is the truth.
        if missed
            .first()
            .is_some_and(|p| now.saturating_duration_since(p.at) > self.ttl)
        {
            return Recovery::Cold;
        }
        Recovery::Recovered(missed)
    }

    /// Publications kept in memory (tests and metrics).
    pub fn recent_len(&self) -> usize {
        self.recent.len()
    }
}

impl Drop for Head {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(size: u64) -> HistoryPolicy {
        HistoryPolicy {
            size,
            ttl: Duration::from_secs(60),
        }
    }

    fn p(offset: u64, at: Instant) -> Arc<Sequenced> {
        Arc::new(Sequenced {
            offset,
            data: CompactJson::from_string(format!("{{\"n\":{offset}}}")).unwrap(),
            info: None,
            at,
        })
    }

    fn pos(offset: u64, epoch: &str) -> Position {
        Position {
            offset,
            epoch: epoch.into(),
        }
    }

    fn offsets(r: Recovery) -> Vec<u64> {
        match r {
            Recovery::Recovered(v) => v.iter().map(|p| p.offset).collect(),
            other => panic!("not recovered: {other:?}"),
        }
    }

    #[test]
    fn offsets_stay_within_the_reservation() {
        let budget = Arc::new(RecentBudget::new(1 << 20));
        let mut h = Head::new("e".into(), 5, 7, policy(10), budget);
        let now = Instant::now();
        assert_eq!(h.next_offset(), Some(6));
        h.record(p(6, now));
        h.record(p(7, now));
        assert_eq!(h.next_offset(), None, "8 is not reserved yet");
        h.reserved = 20;
        assert_eq!(h.next_offset(), Some(8));
    }

    #[test]
    fn recovers_exactly_what_was_missed_or_defers_to_disk() {
        let budget = Arc::new(RecentBudget::new(1 << 20));
        let mut h = Head::new("e".into(), 10, 100, policy(3), budget);
        let now = Instant::now();
        // Nothing recent yet: anything behind the top is the disk's to answer.
        assert!(matches!(h.recover(&pos(9, "e"), 100, now), Recovery::Cold));
        assert!(offsets(h.recover(&pos(10, "e"), 100, now)).is_empty());
        for o in 11..=15 {
            h.record(p(o, now));
        }
        assert_eq!(h.recent_len(), 3, "the channel keeps 3");
        assert_eq!(offsets(h.recover(&pos(12, "e"), 100, now)), [13, 14, 15]);
        assert_eq!(offsets(h.recover(&pos(14, ""), 100, now)), [15]);
        assert!(matches!(h.recover(&pos(11, "e"), 100, now), Recovery::Cold));
        assert!(matches!(
            h.recover(&pos(12, "other"), 100, now),
            Recovery::Unrecoverable
        ));
        assert!(matches!(
            h.recover(&pos(16, "e"), 100, now),
            Recovery::Unrecoverable
        ));
        assert!(matches!(
            h.recover(&pos(12, "e"), 2, now),
            Recovery::Unrecoverable
        ));
        // Past the TTL, memory does not answer.
        let later = now + Duration::from_secs(61);
        assert!(matches!(
            h.recover(&pos(12, "e"), 100, later),
            Recovery::Cold
        ));
    }

    #[test]
    fn the_shared_budget_bounds_every_head_and_is_given_back() {
        let one = p(1, Instant::now()).cost();
        let budget = Arc::new(RecentBudget::new(3 * one));
        let mut a = Head::new("a".into(), 0, 100, policy(100), budget.clone());
        let mut b = Head::new("b".into(), 0, 100, policy(100), budget.clone());
        let now = Instant::now();
        for o in 1..=3 {
            a.record(p(o, now));
        }
        b.record(p(1, now));
        assert_eq!((a.recent_len(), b.recent_len()), (3, 0), "b keeps none");
        a.record(p(4, now));
        assert_eq!(a.recent_len(), 3);
        assert!(budget.used() <= 3 * one);
        // Still contiguous and ending at the top.
        assert_eq!(offsets(a.recover(&pos(1, "a"), 100, now)), [2, 3, 4]);
        assert!(matches!(a.recover(&pos(0, "a"), 100, now), Recovery::Cold));
        drop(a);
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
