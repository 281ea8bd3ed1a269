//! At most one event per interval: a log line that a flood would otherwise repeat (dropped
//! MQTT messages, a forwarding queue dropping its oldest points). The counters beside it keep
//! every occurrence.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Mutex<Option<Instant>>,
}

impl Throttle {
    pub const fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: Mutex::new(None),
        }
    }

    /// True the first time, then once `every` has passed since the last true.
    pub fn ready(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|t| t.elapsed() < self.every) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_interval() {
        let t = Throttle::new(Duration::from_secs(3600));
        assert!(t.ready());
        assert!(!t.ready());
        assert!(Throttle::new(Duration::ZERO).ready());
        let z = Throttle::new(Duration::ZERO);
        assert!(z.ready() && z.ready());
    }
}
