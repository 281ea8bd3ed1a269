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

pub use crate::ingest::{
    frames, frames_echo, now_ns, target, Layout, Precision, PushError, Target,
};

use crate::auth::{Action, Identity};
use crate::broker::Broker;
use crate::forward::lines::{echo_capacity, Lines};
use crate::forward::queue::Queue;
use crate::forward::Forwarding;
use crate::frame::FrameJson;
use crate::persist::{Ack, Persist, Request, Slots};
use crate::protocol::ErrorCode;
use crate::state::Shared;
use edgelive_storage::ForwardEntry;

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

/// Parses a body, off the event loop when it is large; with `forward`, also writes its
/// points again as line protocol for the `[[forward]]` targets (in the same pass).
async fn parse(
    body: Bytes,
    target: &Target,
    sticky: Option<Arc<Sticky>>,
    forward: bool,
) -> Result<(Vec<(Arc<str>, FrameJson)>, Option<Lines>, i64), PushError> {
    let now = now_ns();
    let target = target.clone();
    sized_work(body.len(), move || {
        let mut lines = forward.then(|| Lines::with_capacity(echo_capacity(body.len())));
        let frames = frames_echo(&body, &target, now, sticky.as_deref(), lines.as_mut())?;
        Ok((frames, lines, now))
    })
    .await
    .unwrap_or(Err(PushError::Storage))
}

/// A push's points for the `[[forward]]` targets of its stream.
#[derive(Clone)]
pub struct Forward {
    pub queues: Vec<Arc<Queue>>,
    /// One, or several for a push over `ENTRY_MAX_BYTES` or `ENTRY_MAX_POINTS`.
    pub entries: Vec<ForwardEntry>,
}

impl Forward {
    /// The entries for `lines` pushed to `stream` at `now_ns`; `None` without points.
    pub fn new(
        queues: Vec<Arc<Queue>>,
        stream: &str,
        layout: Layout,
        lines: Lines,
        now_ns: i64,
    ) -> Option<Forward> {
        if lines.points == 0 || queues.is_empty() {
            return None;
        }
        let entries = lines
            .into_parts()
            .into_iter()
            .map(|part| ForwardEntry {
                stream: stream.to_owned(),
                layout: crate::forward::spec::layout_byte(layout),
                points: part.points,
                time_ms: (now_ns / 1_000_000).max(1) as u64,
                lines: part.text.into_bytes(),
            })
            .collect();
        Some(Forward { queues, entries })
    }

    fn points(&self) -> u64 {
        self.entries.iter().map(|e| e.points as u64).sum()
    }

    /// `Err` naming the target when one refuses new points (`on_full = "refuse"`, full); the
    /// refused points are counted there.
    pub fn check_room(&self) -> Result<(), PushError> {
        match Forwarding::refusing(&self.queues, self.points()) {
            Some(target) => Err(PushError::ForwardFull(target)),
            None => Ok(()),
        }
    }

    /// Leaves out the targets refusing new points (counting the points there); `None` when
    /// none is left. For MQTT bridges, whose publishers cannot be told to come back later.
    pub fn without_full(mut self) -> Option<Forward> {
        let points = self.points();
        self.queues.retain(|q| {
            let refuses = q.refuses();
            if refuses {
                q.refused(points);
            }
            !refuses
        });
        (!self.queues.is_empty()).then_some(self)
    }

    /// The request that queues it, acknowledged by `ack`.
    fn request(self, ack: Ack) -> Request {
        Request::Forward {
            queues: self.queues,
            entries: self.entries,
            ack,
        }
    }
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
    let queues = shared.forward.queues_for(&target.stream_id);
    let (frames, lines, now) = parse(body, target, sticky(shared), !queues.is_empty()).await?;
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
    let forward =
        lines.and_then(|l| Forward::new(queues, &target.stream_id, target.layout, l, now));
    if let Some(f) = &forward {
        f.check_room()?;
    }
    submit_frames(&shared.broker, &shared.persist, frames, false, forward)?
        .wait()
        .await
}

/// Hands frames (and their points for `[[forward]]` targets) over at once (`Busy` when the
/// storage queue is full, and then nothing was taken), so a bridge can read on while they are
/// stored; `Stored::wait` completes when they are.
///
/// The forwarding entry goes to the storage thread ahead of the frames, in the same
/// reservation, acknowledged by nobody: the commit that acknowledges the frames covers it, so a
/// forwarded push costs no second sync. With the Redis engine the frames do not pass there and
/// the entry is acknowledged on its own.
pub fn submit_frames(
    broker: &Broker,
    persist: &Persist,
    frames: Vec<(Arc<str>, FrameJson)>,
    retained: bool,
    forward: Option<Forward>,
) -> Result<Stored, PushError> {
    let count = frames.len();
    let mut waits = Vec::with_capacity(count + 1);
    let before = forward.map(|f| f.request(Ack::Discard));
    let back = broker
        .push_after(
            frames,
            retained,
            || {
                let (tx, rx) = oneshot::channel();
                waits.push(rx);
                Ack::Channel(tx)
            },
            before,
        )
        .map_err(|_| PushError::Busy)?;
    if let Some(Request::Forward {
        queues, entries, ..
    }) = back
    {
        let (tx, rx) = oneshot::channel();
        waits.push(rx);
        // Refused (the storage queue is full): the acknowledgement is dropped with it, and
        // the push fails (its frames went out; a retry publishes them again).
        let _ = persist.submit(Request::Forward {
            queues,
            entries,
            ack: Ack::Channel(tx),
        });
    }
    Ok(Stored { waits, count })
}

/// Frames handed over by `submit_frames`, until they are stored.
pub struct Stored {
    waits: Vec<oneshot::Receiver<Result<u64, ErrorCode>>>,
    /// Frames (the forwarding entry may add a wait).
    count: usize,
}

impl Stored {
    /// How many frames were stored, once all are.
    pub async fn wait(self) -> Result<usize, PushError> {
        let n = self.count;
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

/// Hands the frames (and their points for `[[forward]]` targets) over without waiting (UDP
/// has nobody to answer); each frame takes one of `slots` until it is stored, and none is
/// taken beyond `max`. The forwarding entry is queued as `submit_frames` queues it.
pub fn publish_detached(
    broker: &Broker,
    persist: &Persist,
    frames: Vec<(Arc<str>, FrameJson)>,
    forward: Option<Forward>,
    slots: &Arc<Slots>,
    max: usize,
) -> Result<(), PushError> {
    let n = frames.len();
    if !slots.try_take(n, max) {
        return Err(PushError::Busy);
    }
    let before = forward.map(|f| f.request(Ack::Discard));
    let back = broker
        .push_after(frames, false, || Ack::Release(slots.clone()), before)
        .map_err(|_| PushError::Busy)
        .inspect_err(|_| slots.give_back(n))?;
    if let Some(req) = back {
        // The Redis engine took the frames; nobody waits for the entry either way.
        let _ = persist.submit(req);
    }
    Ok(())
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
            publish_detached(&broker, persist, three(), None, &slots, 2),
            Err(PushError::Busy)
        ));
        assert_eq!(slots.taken(), 0);
        publish_detached(&broker, persist, three(), None, &slots, 3).unwrap();
        // Each stored frame gives its slot back.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while slots.taken() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(slots.taken(), 0);
        assert_eq!(persist.queued(), 0);
    }
}
