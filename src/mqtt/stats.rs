//! One bridge's counters, for `/metrics` and `/api/status`, and its throttled drop log.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::payload::Dropped;
use crate::throttle::Throttle;

/// A cause of drops is logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// One bridge's counters, for `/metrics` and `/api/status`.
pub struct BridgeStats {
    /// The bridge's name in metrics: its client id.
    pub name: String,
    pub connected: AtomicBool,
    pub messages: AtomicU64,
    pub reconnects: AtomicU64,
    dropped: [AtomicU64; Dropped::ALL.len()],
    logged: [Throttle; Dropped::ALL.len()],
}

impl BridgeStats {
    pub fn new(name: String) -> Arc<BridgeStats> {
        Arc::new(BridgeStats {
            name,
            connected: AtomicBool::new(false),
            messages: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            dropped: Default::default(),
            logged: std::array::from_fn(|_| Throttle::new(LOG_EVERY)),
        })
    }

    /// Drops by cause: (label, count).
    pub fn dropped(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Dropped::ALL
            .iter()
            .zip(&self.dropped)
            .map(|(d, n)| (d.label(), n.load(Ordering::Relaxed)))
    }

    pub fn drop_one(&self, why: Dropped, topic: &str) {
        let i = Dropped::ALL.iter().position(|d| *d == why).unwrap_or(0);
        self.dropped[i].fetch_add(1, Ordering::Relaxed);
        if self.logged[i].ready() {
            warn!(bridge = %self.name, topic, reason = %why, "mqtt message dropped (logged once a minute per reason)");
        }
    }
}
