//! The push API (design §4, §7): Influx line protocol in over HTTP, a WebSocket or UDP,
//! converted into Grafana data frames and published on the managed streams
//! `stream/<streamId>/<measurement>`.
//!
//! Every transport goes through the same two steps: `frames` parses and converts a whole body
//! (nothing is published unless all of it is valid) and `publish` hands the frames to the
//! storage thread, which keeps each channel's last frame, publishes schema-once and answers once
//! the frames are durable per `[storage] durability`.

pub mod http;
pub mod udp;
pub mod ws;

use crate::ingest::sticky::Sticky;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

pub use crate::ingest::{frames, now_ns, target, Layout, Precision, PushError, Target};

use crate::auth::{Action, Identity};
use crate::broker::Broker;
use crate::frame::FrameJson;
use crate::persist::{Ack, Slots};
use crate::protocol::ErrorCode;
use crate::state::Shared;

/// Work on inputs larger than this (parsing, decompressing) runs on the blocking pool, not on
/// the event loop.
const INLINE_PARSE_BYTES: usize = 256 * 1024;

/// Runs `work` on an input of `size` bytes: inline when small, else on the blocking pool so
/// that the event loop keeps serving every other client. `None` if the work panicked.
pub async fn sized_work<T: Send + 'static>(
    size: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    if size <= INLINE_PARSE_BYTES {
        return Some(work());
    }
    tokio::task::spawn_blocking(work).await.ok()
}

/// The managed streams' field sets, when `[push] sticky_fields` is on.
pub(crate) fn sticky(shared: &Shared) -> Option<Arc<Sticky>> {
    shared
        .settings()
        .push_sticky
        .then(|| shared.persist.sticky.clone())
}

/// Parses a body, off the event loop when it is large.
async fn parse(
    body: Bytes,
    target: &Target,
    sticky: Option<Arc<Sticky>>,
) -> Result<Vec<(Arc<str>, FrameJson)>, PushError> {
    let now = now_ns();
    let target = target.clone();
    sized_work(body.len(), move || {
        frames(&body, &target, now, sticky.as_deref())
    })
    .await
    .unwrap_or(Err(PushError::Storage))
}

/// A whole body from HTTP or the push WebSocket: parsed, converted, published and durable.
/// Returns how many frames it made.
/// `who` must be allowed to publish on every channel the body makes, or nothing is published.
pub async fn ingest(
    shared: &Shared,
    body: Bytes,
    target: &Target,
    who: &Identity,
) -> Result<usize, PushError> {
    let frames = parse(body, target, sticky(shared)).await?;
    for (channel, _) in &frames {
        shared
            .settings()
            .auth
            .check(who, Action::Publish, channel)
            .map_err(|needed| PushError::Forbidden {
                channel: channel.to_string(),
                needed,
            })?;
    }
    publish(&shared.broker, frames).await
}

/// Hands the frames to the broker (all or none) and waits until each is published and durable
/// as configured.
pub async fn publish(
    broker: &Broker,
    frames: Vec<(Arc<str>, FrameJson)>,
) -> Result<usize, PushError> {
    publish_frames(broker, frames, false).await
}

/// `publish`, for an MQTT message that may be retained (see `Request::Push`).
pub async fn publish_frames(
    broker: &Broker,
    frames: Vec<(Arc<str>, FrameJson)>,
    retained: bool,
) -> Result<usize, PushError> {
    submit_frames(broker, frames, retained)?.wait().await
}

/// Hands frames over at once (`Busy` when the storage queue is full, and then nothing was
/// taken), so a bridge can read on while they are stored; `Stored::wait` completes when
/// they are.
pub fn submit_frames(
    broker: &Broker,
    frames: Vec<(Arc<str>, FrameJson)>,
    retained: bool,
) -> Result<Stored, PushError> {
    let mut waits = Vec::with_capacity(frames.len());
    broker
        .push(frames, retained, || {
            let (tx, rx) = oneshot::channel();
            waits.push(rx);
            Ack::Channel(tx)
        })
        .map_err(|_| PushError::Busy)?;
    Ok(Stored { waits })
}

/// Frames handed over by `submit_frames`, until they are stored.
pub struct Stored {
    waits: Vec<oneshot::Receiver<Result<u64, ErrorCode>>>,
}

impl Stored {
    /// How many were stored, once all are.
    pub async fn wait(self) -> Result<usize, PushError> {
        let n = self.waits.len();
        for rx in self.waits {
            match rx.await {
                Ok(Ok(_)) => {}
                Ok(Err(ErrorCode::LimitExceeded)) => return Err(PushError::StreamLimit),
                _ => return Err(PushError::Storage),
            }
        }
        Ok(n)
    }
}

/// Hands the frames over without waiting (UDP has nobody to answer); each frame takes one of
/// `slots` until it is stored, and none is taken beyond `max`.
pub fn publish_detached(
    broker: &Broker,
    frames: Vec<(Arc<str>, FrameJson)>,
    slots: &Arc<Slots>,
    max: usize,
) -> Result<(), PushError> {
    let n = frames.len();
    if !slots.try_take(n, max) {
        return Err(PushError::Busy);
    }
    broker
        .push(frames, false, || Ack::Release(slots.clone()))
        .map_err(|_| PushError::Busy)
        .inspect_err(|_| slots.give_back(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detached_publisher_takes_at_most_its_own_share_of_the_queue() {
        let hub = Arc::new(crate::hub::Hub::new(1));
        let store = crate::persist::TestPersist::start(hub.clone(), &Default::default());
        let (persist, settings) = (&store.persist, &store.settings);
        let broker = Broker::new(hub, persist.clone(), settings.kinds.clone(), 100, false);
        let t = target("udp", None, Default::default()).unwrap();
        let slots = Arc::new(Slots::default());
        let body: String = (0..3).map(|i| format!("m{i} v=1\n")).collect();
        let three = || frames(body.as_bytes(), &t, 0, None).unwrap();
        // Three frames do not fit in a share of two: none is taken.
        assert!(matches!(
            publish_detached(&broker, three(), &slots, 2),
            Err(PushError::Busy)
        ));
        assert_eq!(slots.taken(), 0);
        publish_detached(&broker, three(), &slots, 3).unwrap();
        // Each stored frame gives its slot back.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while slots.taken() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(slots.taken(), 0);
        assert_eq!(persist.queued(), 0);
    }
}
