//! Per-connection command rate limit: a token bucket for commands, and a second bucket that
//! measures persistence in abuse.
//!
//! A command when the first bucket is empty is refused (error 111, which clients treat as
//! temporary). Each refusal also takes from the abuse bucket, which refills at the same rate:
//! a client that slows down to the rate after a 111 recovers, one that keeps sending well
//! beyond it empties the abuse bucket and is disconnected (3013 "too many requests").

use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Over the rate: refuse this command with 111.
    Refused,
    /// Over the rate for too long: close the connection with 3013.
    Abusive,
}

#[derive(Debug)]
pub struct RateLimit {
    /// Tokens per second; 0 = unlimited.
    rate: f64,
    burst: f64,
    tokens: f64,
    patience: f64,
    last: Instant,
}

impl RateLimit {
    pub fn new(rate: u32, burst: u32, now: Instant) -> RateLimit {
        RateLimit {
            rate: rate as f64,
            burst: burst.max(1) as f64,
            tokens: burst.max(1) as f64,
            patience: burst.max(1) as f64,
            last: now,
        }
    }

    /// Takes one command at `now`.
    pub fn take(&mut self, now: Instant) -> Verdict {
        if self.rate == 0.0 {
            return Verdict::Allowed;
        }
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * self.rate;
        self.last = now;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.patience = (self.patience + refill).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allowed;
        }
        self.patience -= 1.0;
        if self.patience < 0.0 {
            Verdict::Abusive
        } else {
            Verdict::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_passes_then_refusals_then_a_close_when_it_keeps_on() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(10, 20, t0);
        for _ in 0..20 {
            assert_eq!(r.take(t0), Verdict::Allowed);
        }
        for _ in 0..20 {
            assert_eq!(r.take(t0), Verdict::Refused);
        }
        assert_eq!(r.take(t0), Verdict::Abusive);
    }

    #[test]
    fn a_client_that_slows_down_recovers() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(10, 20, t0);
        for _ in 0..30 {
            r.take(t0);
        }
        // At the rate, every command passes again and patience refills.
        let mut t = t0;
        for _ in 0..100 {
            t += Duration::from_millis(100);
            assert_eq!(r.take(t), Verdict::Allowed);
        }
        // A pause refills the burst.
        t += Duration::from_secs(2);
        for _ in 0..20 {
            assert_eq!(r.take(t), Verdict::Allowed);
        }
        assert_eq!(r.take(t), Verdict::Refused);
    }

    #[test]
    fn rate_zero_is_unlimited() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(0, 1, t0);
        for _ in 0..10_000 {
            assert_eq!(r.take(t0), Verdict::Allowed);
        }
    }
}
