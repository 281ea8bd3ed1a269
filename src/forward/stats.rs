//! One target's counters and state, for `/metrics`, `/api/status` and `/api/health`.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

/// Where a target stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Sending, or waiting for points.
    Ok = 0,
    /// The last request failed (no connection, a timeout, 5xx, 429): trying again later.
    Retrying = 1,
    /// The far side refused the credentials (401, 403): nothing is sent until the token is
    /// fixed (checked every `PAUSE_RECHECK`, and at a reload).
    Paused = 2,
}

impl State {
    pub fn label(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Retrying => "retrying",
            State::Paused => "paused",
        }
    }

    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Retrying,
            2 => State::Paused,
            _ => State::Ok,
        }
    }
}

/// Why points left a queue without reaching the far side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropCause {
    /// The queue was full (`on_full = "drop_oldest"`): the oldest went.
    QueueFull,
    /// The far side answered that retrying cannot help (400, 413 for one entry, …).
    Rejected,
    /// Not queued: the queue was full (`on_full = "refuse"`) and the push got 507.
    Refused,
    /// Damaged on disk (undecodable): removed so the queue goes on.
    Damaged,
}

impl DropCause {
    pub const ALL: [DropCause; 4] = [
        DropCause::QueueFull,
        DropCause::Rejected,
        DropCause::Refused,
        DropCause::Damaged,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DropCause::QueueFull => "queue_full",
            DropCause::Rejected => "rejected",
            DropCause::Refused => "refused",
            DropCause::Damaged => "damaged",
        }
    }
}

#[derive(Debug)]
pub struct TargetStats {
    pub name: String,
    state: AtomicU8,
    /// Points the far side acknowledged (2xx).
    pub sent_points: AtomicU64,
    /// Requests answered 2xx.
    pub sent_requests: AtomicU64,
    /// Requests that failed and will be tried again.
    pub retries: AtomicU64,
    dropped: [AtomicU64; 4],
    /// The last failure, as logged.
    last_error: Mutex<Option<String>>,
}

impl TargetStats {
    pub fn new(name: String) -> TargetStats {
        TargetStats {
            name,
            state: AtomicU8::new(State::Ok as u8),
            sent_points: AtomicU64::new(0),
            sent_requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            dropped: Default::default(),
            last_error: Mutex::new(None),
        }
    }

    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Sets the state; returns the one before (the caller logs a change).
    pub fn set_state(&self, s: State) -> State {
        State::from_u8(self.state.swap(s as u8, Ordering::Relaxed))
    }

    pub fn drop_points(&self, why: DropCause, points: u64) {
        self.dropped[why as usize].fetch_add(points, Ordering::Relaxed);
    }

    pub fn dropped(&self, why: DropCause) -> u64 {
        self.dropped[why as usize].load(Ordering::Relaxed)
    }

    pub fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_drops_are_kept_apart() {
        let s = TargetStats::new("t".into());
        assert_eq!(s.set_state(State::Paused), State::Ok);
        assert_eq!(s.state(), State::Paused);
        s.drop_points(DropCause::Rejected, 3);
        s.drop_points(DropCause::QueueFull, 1);
        assert_eq!(
            DropCause::ALL.map(|d| s.dropped(d)),
            [1, 3, 0, 0],
            "counted under their own cause"
        );
        s.set_error(Some("boom".into()));
        assert_eq!(s.last_error().as_deref(), Some("boom"));
    }
}
