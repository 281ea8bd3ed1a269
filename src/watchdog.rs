//! Watches the storage threads and the event loop.
//!
//! A sled call normally takes microseconds (a flush, milliseconds on an SD card). A thread busy
//! with one request for longer than `STALL` is logged, and so is an event loop that has not
//! run its heartbeat task for as long. sled 0.34.7 can deadlock under write load (see
//! `edgelive_storage::SEGMENT_SIZE`); a stuck storage thread would otherwise hold every history
//! channel forever. Acknowledged publications are on disk, and clients recover after the
//! restart or are told they cannot.
//!
//! - Under systemd's watchdog (`WatchdogSec=` in the unit, so `WATCHDOG_USEC` is set), this
//!   thread sends `WATCHDOG=1` every half period while the event loop and every storage
//!   thread make progress, and stops sending while one is stalled: systemd sees the stall and
//!   restarts the service (its journal says "Watchdog timeout").
//! - Without it, a storage thread stuck past `STALL_EXIT` ends the process with EX_SOFTWARE
//!   (70) so that the service manager restarts it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

/// Busy this long on one request counts as a stall.
const STALL: Duration = Duration::from_secs(2);
/// Stuck this long: give up and let the service manager restart us.
const STALL_EXIT: Duration = Duration::from_secs(30);
/// How often the event loop's heartbeat task runs; it counts as stalled after `STALL` more.
const BEAT: Duration = Duration::from_secs(1);

/// When a storage thread started its current request (0 = idle), in ms since `epoch`.
pub struct Progress {
    epoch: Instant,
    busy_since_ms: AtomicU64,
    name: &'static str,
}

impl Progress {
    pub fn new(name: &'static str) -> Arc<Progress> {
        Arc::new(Progress {
            epoch: Instant::now(),
            busy_since_ms: AtomicU64::new(0),
            name,
        })
    }

    pub fn busy(&self) {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        self.busy_since_ms.store(now, Ordering::Release);
    }

    pub fn idle(&self) {
        self.busy_since_ms.store(0, Ordering::Release);
    }

    /// How long the current request has been running.
    fn busy_for(&self) -> Option<Duration> {
        match self.busy_since_ms.load(Ordering::Acquire) {
            0 => None,
            since => Some(Duration::from_millis(
                (self.epoch.elapsed().as_millis() as u64 + 1).saturating_sub(since),
            )),
        }
    }
}

/// Proof that the event loop runs: a task on it stamps this every `BEAT`.
pub struct Heartbeat {
    epoch: Instant,
    /// When the task last ran, in ms since `epoch` (0 = not running: before start-up and
    /// after shutdown began, when nothing is owed).
    last_ms: AtomicU64,
}

impl Heartbeat {
    pub fn new() -> Arc<Heartbeat> {
        Arc::new(Heartbeat {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    fn beat(&self) {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        self.last_ms.store(now, Ordering::Release);
    }

    /// How long since the task last ran, while it runs.
    fn silent_for(&self) -> Option<Duration> {
        match self.last_ms.load(Ordering::Acquire) {
            0 => None,
            last => Some(Duration::from_millis(
                (self.epoch.elapsed().as_millis() as u64 + 1).saturating_sub(last),
            )),
        }
    }

    /// The event loop's side: stamps the heartbeat until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut every = tokio::time::interval(BEAT);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = every.tick() => self.beat(),
            }
        }
        self.last_ms.store(0, Ordering::Release);
    }
}

/// Starts the watchdog thread; it runs for the life of the process. `systemd`: the watchdog
/// period systemd asked for (`sd_notify::watchdog_enabled()`).
pub fn start(
    watched: Vec<Arc<Progress>>,
    event_loop: Arc<Heartbeat>,
    systemd: Option<Duration>,
) -> std::io::Result<()> {
    let period = systemd.map_or(STALL / 2, |d| (d / 2).min(STALL / 2));
    std::thread::Builder::new().name("edgelive-watch".into()).spawn(move || {
        let mut warned: Vec<bool> = vec![false; watched.len()];
        let mut loop_warned = false;
        loop {
            std::thread::sleep(period);
            let mut progressing = true;
            for (i, p) in watched.iter().enumerate() {
                match p.busy_for() {
                    Some(t) if t >= STALL_EXIT && systemd.is_none() => {
                        error!(thread = p.name, stuck_for = ?t, "storage thread stuck; exiting so the service manager restarts edgelive");
                        std::process::exit(70);
                    }
                    Some(t) if t >= STALL => {
                        progressing = false;
                        if !warned[i] {
                            warn!(thread = p.name, busy_for = ?t, "storage thread stalled");
                            warned[i] = true;
                        }
                    }
                    _ => warned[i] = false,
                }
            }
            match event_loop.silent_for() {
                Some(t) if t >= STALL + BEAT => {
                    progressing = false;
                    if !loop_warned {
                        warn!(silent_for = ?t, "event loop stalled");
                        loop_warned = true;
                    }
                }
                _ => loop_warned = false,
            }
            if systemd.is_some() && progressing {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
        }
    })?;
    Ok(())
}
