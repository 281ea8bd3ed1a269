//! The Redis engine's counters, read by `/metrics` and `/api/status`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Round trips: their sum and count (a Prometheus summary without quantiles) and the last.
#[derive(Default)]
pub struct Latency {
    sum_us: AtomicU64,
    count: AtomicU64,
    last_us: AtomicU64,
}

impl Latency {
    pub fn record(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.last_us.store(us, Ordering::Relaxed);
    }
    pub fn sum_seconds(&self) -> f64 {
        self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
    }
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
    pub fn last_seconds(&self) -> f64 {
        self.last_us.load(Ordering::Relaxed) as f64 / 1e6
    }
}

#[derive(Default)]
pub struct HaStats {
    /// The command connection came back after being lost.
    pub reconnects: Counter,
    /// The pub/sub connection came back after being lost.
    pub pubsub_reconnects: Counter,
    /// PING round trips, once a second.
    pub ping: Latency,
    /// Round trips of the write batches (publications, pushes, presence).
    pub writes: Latency,
    /// Commands sent and not answered yet.
    pub in_flight: AtomicI64,
    /// Channels this node is subscribed to in Redis.
    pub channels: AtomicI64,
    /// Writes refused or failed because Redis was down, failed them, or its queue was full.
    pub refused: Counter,
    /// Pub/sub messages that did not parse (logged, dropped).
    pub bad_messages: Counter,
    /// Times subscribers were told their position fell into a gap (unsubscribe 2500).
    pub insufficient_state: Counter,
}

impl HaStats {
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }
    pub fn channels(&self) -> i64 {
        self.channels.load(Ordering::Relaxed)
    }
}
