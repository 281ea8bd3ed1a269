//! Watches the storage threads. A sled call normally takes microseconds (a flush, milliseconds
//! on an SD card). A thread busy with one request for longer than `STALL` is logged; one stuck
//! past `STALL_EXIT` ends the process with EX_SOFTWARE (70) so that systemd restarts it.
//! sled 0.34.7 can deadlock under write load (see `edgelive_storage::SEGMENT_SIZE`); a stuck
//! storage thread would otherwise hold every history channel forever. Acknowledged
//! publications are on disk, and clients recover after the restart or are told they cannot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, warn};

/// Busy this long on one request counts as a stall.
const STALL: Duration = Duration::from_secs(2);
/// Stuck this long: give up and let the service manager restart us.
const STALL_EXIT: Duration = Duration::from_secs(30);

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

/// Starts the watchdog thread; it runs for the life of the process.
pub fn start(watched: Vec<Arc<Progress>>) -> std::io::Result<()> {
    std::thread::Builder::new().name("edgelive-watch".into()).spawn(move || {
        let mut warned: Vec<bool> = vec![false; watched.len()];
        loop {
            std::thread::sleep(STALL / 2);
            for (i, p) in watched.iter().enumerate() {
                match p.busy_for() {
                    Some(t) if t >= STALL_EXIT => {
                        error!(thread = p.name, stuck_for = ?t, "storage thread stuck; exiting so the service manager restarts edgelive");
                        std::process::exit(70);
                    }
                    Some(t) if t >= STALL => {
                        if !warned[i] {
                            warn!(thread = p.name, busy_for = ?t, "storage thread stalled");
                            warned[i] = true;
                        }
                    }
                    _ => warned[i] = false,
                }
            }
        }
    })?;
    Ok(())
}
