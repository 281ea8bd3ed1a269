//! Wall-clock time as the store and the wire write it, and the timeline retention measures
//! ages on.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Milliseconds on the wall clock's scale that never step: read from the wall clock once (or
/// from the newest stored stamp, when the wall clock is behind it), then advanced by the
/// monotonic clock. Retention stamps and ages use it, so a board without an RTC that boots in
/// 1970 and then syncs NTP neither expires its history at once nor keeps it for decades.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    base_ms: u64,
    base: Instant,
}

/// How far the wall clock may drift from the timeline before it counts as a step.
pub const STEP_TOLERANCE_MS: u64 = 60_000;

impl Timeline {
    /// Starts at the wall clock, or at `floor_ms` (the newest stamp already stored) when the
    /// wall clock is behind it: time on the timeline never goes backwards across restarts.
    pub fn start(floor_ms: u64) -> Timeline {
        Timeline::starting_at(now_ms().max(floor_ms))
    }

    /// A timeline whose present is `ms`.
    pub fn starting_at(ms: u64) -> Timeline {
        Timeline {
            base_ms: ms,
            base: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.base_ms
            .saturating_add(self.base.elapsed().as_millis() as u64)
    }

    /// The wall clock minus the timeline, in ms, when they differ by more than
    /// [`STEP_TOLERANCE_MS`] (the wall clock was stepped), else 0.
    pub fn wall_step_ms(&self, wall_ms: u64) -> i64 {
        let diff = wall_ms as i128 - self.now_ms() as i128;
        if diff.unsigned_abs() > STEP_TOLERANCE_MS as u128 {
            diff.clamp(i64::MIN as i128, i64::MAX as i128) as i64
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_follows_the_monotonic_clock_and_never_starts_behind_the_store() {
        let t = Timeline::start(0);
        assert!(t.now_ms().abs_diff(now_ms()) < 1000);
        assert_eq!(t.wall_step_ms(now_ms()), 0);
        // Stored stamps from a run when the clock was right; the board booted in 1970 now.
        let later = now_ms() + 3_600_000;
        let t = Timeline::start(later);
        assert!(t.now_ms() >= later);
        // NTP steps the wall clock a day forward: seen as a step, ages unaffected.
        let booted_1970 = Timeline::starting_at(5_000);
        let synced = 1_800_000_000_000;
        assert!(booted_1970.wall_step_ms(synced) > 0);
        assert!(booted_1970.now_ms() < 10_000);
        assert!(booted_1970.wall_step_ms(0) == 0);
        assert!(Timeline::starting_at(u64::MAX).now_ms() == u64::MAX);
    }
}
