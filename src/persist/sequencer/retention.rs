//! Retention on the storage thread: the timeline ages are measured on, TTL trimming and
//! forgetting idle channels and managed-stream frames, a few channels per run.

use tracing::warn;

use super::{Sequencer, SWEEP_CHANNELS, TRIM_BATCH};
use crate::clock::{now_ms, Timeline};

impl Sequencer {
    /// Starts the retention timeline no earlier than the newest stored stamp, and says so when
    /// the wall clock is behind it (a board without an RTC that booted in 1970).
    pub(super) fn start_clock(&mut self) {
        let newest = self
            .channels
            .values()
            .map(|c| c.meta.last_ms)
            .max()
            .unwrap_or(0)
            .max(self.frames.newest_ms());
        self.clock = Timeline::start(newest);
        let wall = now_ms();
        if newest > wall.saturating_add(crate::clock::STEP_TOLERANCE_MS) {
            warn!(
                behind_s = (newest - wall) / 1000,
                "the wall clock is behind the newest stored history; history ages continue from the stored time"
            );
        }
    }

    /// Logs a step of the wall clock once: ages keep following the monotonic clock, so a step
    /// neither expires history nor keeps it longer.
    pub(super) fn watch_clock(&mut self) {
        let step = self.clock.wall_step_ms(now_ms());
        if step != 0 && step.abs_diff(self.logged_step_ms) > crate::clock::STEP_TOLERANCE_MS {
            warn!(
                step_s = step / 1000,
                "the wall clock was stepped; history retention keeps measuring ages on the monotonic clock until restart"
            );
        }
        self.logged_step_ms = step;
    }

    /// Retention for a few channels per run: TTL trimming and forgetting idle channels.
    pub(super) fn sweep(&mut self) {
        let idle_ms = self.settings.frame_idle_ttl.as_millis() as u64;
        self.watch_clock();
        let now = self.clock.now_ms();
        match self.frames.evict_idle(&self.store, now, idle_ms) {
            // The broker publishes from memory no more: its next push comes here.
            Ok(gone) => {
                for key in &gone {
                    self.hub.with(key, |ch| ch.set_last_frame(None));
                }
            }
            Err(e) => self.health.degrade(e.to_string()),
        }
        if self.sweep_queue.is_empty() {
            self.sweep_queue = self.channels.keys().cloned().collect();
        }
        let idle_ms = self.settings.channel_idle_ttl.as_millis() as u64;
        for _ in 0..SWEEP_CHANNELS {
            let Some(key) = self.sweep_queue.pop() else {
                break;
            };
            let Some(ch) = self.channels.get_mut(&key) else {
                continue;
            };
            // Forgotten only when idle, nobody watches and nothing of it is on its way here:
            // its head goes with it, so what comes next is sequenced here again.
            let top = ch.meta.top;
            let forget = now.saturating_sub(ch.meta.last_ms) > idle_ms
                && self.hub.with(&key, |c| {
                    let unused = c.num_subscribers() == 0
                        && c.in_flight() == 0
                        && c.head().is_none_or(|h| h.top == top);
                    if unused {
                        c.detach();
                    }
                    unused
                });
            if forget {
                // The history holding a managed stream's newest frame goes: the frame first.
                let dropped = self
                    .frames
                    .write_back(&self.store, &key)
                    .and_then(|()| self.store.drop_channel(&key, ch.meta.id));
                match dropped {
                    Ok(()) => {
                        self.channels.remove(&key);
                    }
                    Err(e) => self.health.degrade(e.to_string()),
                }
                continue;
            }
            let Some(policy) = ch.policy else { continue };
            let cutoff = now.saturating_sub(policy.ttl.as_millis() as u64);
            if ch.meta.last_ms < cutoff {
                // Every record may expire now, the one holding the stream's frame with them.
                if let Err(e) = self.frames.write_back(&self.store, &key) {
                    self.health.degrade(e.to_string());
                    continue;
                }
            }
            match self.store.remove_expired(ch.meta.id, cutoff, TRIM_BATCH) {
                Ok(removed) if removed.entries > 0 => {
                    ch.size.entries -= removed.entries.min(ch.size.entries);
                    ch.size.bytes -= removed.bytes.min(ch.size.bytes);
                    ch.first = self
                        .store
                        .first_offset(ch.meta.id)
                        .ok()
                        .flatten()
                        .unwrap_or(ch.meta.top + 1);
                    if removed.entries as usize == TRIM_BATCH {
                        // More to trim: look at this channel again in the next run.
                        self.sweep_queue.insert(0, key);
                    }
                }
                Ok(_) => {}
                Err(e) => self.health.degrade(e.to_string()),
            }
        }
    }
}
