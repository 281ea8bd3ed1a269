//! Group commit: the flusher takes every acknowledgement waiting, commits once (covering every
//! write the sequencer applied before it queued them: sled's flush, and under
//! `durability = "batched"` the `fdatasync` that makes it survive a power cut), then answers
//! them all. The more publications wait, the more one commit covers. While it
//! flushes, the sequencer keeps applying and broadcasting; the next flush takes what piled up.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use edgelive_storage::{Reach, Store};

use super::{Ack, Health};
use crate::protocol::ErrorCode;
use crate::watchdog::Progress;

/// An acknowledgement and the offset it is for.
pub(super) type Pending = (Ack, u64);

/// Most acknowledgements waiting for a flush. During a disk stall the sequencer blocks on a
/// full queue (so its own queue fills and clients get 111, and the watchdog sees the stall)
/// instead of piling acknowledgements up without bound.
pub(super) const MAX_PENDING: usize = 16 * 1024;

pub(super) fn start(
    store: Arc<Store>,
    health: Arc<Health>,
    progress: Arc<Progress>,
    reach: Reach,
) -> std::io::Result<(mpsc::SyncSender<Pending>, JoinHandle<()>)> {
    let (tx, rx) = mpsc::sync_channel::<Pending>(MAX_PENDING);
    let handle = std::thread::Builder::new()
        .name("edgelive-flush".into())
        .spawn(move || {
            let mut batch = Vec::new();
            while let Ok(first) = rx.recv() {
                batch.push(first);
                batch.extend(rx.try_iter());
                progress.busy();
                let result = store.commit(reach);
                progress.idle();
                if let Err(e) = &result {
                    health.degrade(format!("flush failed: {e}"));
                }
                for (ack, offset) in batch.drain(..) {
                    ack.complete(match &result {
                        Ok(()) => Ok(offset),
                        Err(_) => Err(ErrorCode::Internal),
                    });
                }
            }
        })?;
    Ok((tx, handle))
}
