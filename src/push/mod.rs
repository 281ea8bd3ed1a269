//! The push API (design §4, §7): Influx line protocol in over HTTP, a WebSocket or UDP,
//! converted into Grafana data frames and published on the managed streams
//! `stream/<streamId>/<measurement>`.
//!
//! Every transport goes through the same two steps: `frames` parses and converts a whole body
//! (nothing is published unless all of it is valid) and `publish` hands the frames to the
//! storage thread, which keeps each channel's last frame, publishes schema-once and answers once
//! the frames are durable per `[storage] durability`.

pub mod convert;
pub mod http;
pub mod lineproto;
pub mod udp;
pub mod ws;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::oneshot;

pub use convert::Layout;
pub use lineproto::{ParseError, Precision};

use crate::auth::{Action, Identity, Role};
use crate::channel::{Channel, ChannelError};
use crate::frame::FrameJson;
use crate::persist::{Ack, Persist, Request, Slots};
use crate::protocol::ErrorCode;
use crate::routing::Router;
use crate::server::Shared;

/// Where a body goes and how it is read.
#[derive(Debug, Clone)]
pub struct Target {
    pub stream_id: String,
    pub layout: Layout,
    pub precision: Precision,
    /// `[push]`'s bounds on what one body may make.
    pub limits: convert::Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0}")]
    Parse(#[from] ParseError),
    #[error("stream id {stream:?}: {error}")]
    BadStream { stream: String, error: ChannelError },
    #[error("measurement {measurement:?} cannot form a channel: {error}")]
    BadMeasurement {
        measurement: String,
        error: ChannelError,
    },
    #[error("unknown gf_live_frame_format {0:?} (expected labels_column or wide)")]
    BadLayout(String),
    #[error("unknown precision {0:?} (expected ns, us, ms or s)")]
    BadPrecision(String),
    #[error("body is larger than the limit of {0} bytes ([push] max_body_size)")]
    TooLarge(usize),
    #[error("{0} frames in one request; the limit is {MAX_FRAMES_PER_REQUEST}")]
    TooManyFrames(usize),
    #[error("cannot decode the body: {0}")]
    Encoding(String),
    #[error("the storage queue is full; retry later")]
    Busy,
    #[error("too many managed streams ([storage] max_channels)")]
    StreamLimit,
    #[error("storage error; see /api/health")]
    Storage,
    #[error("permission denied: publish on {channel} needs the {} role", .needed.name())]
    Forbidden { channel: String, needed: Role },
    #[error("datagrams from {0} are not taken ([push.udp] allowed_sources; loopback only in protected mode)")]
    SourceRefused(std::net::IpAddr),
}

/// Most frames one request may produce (each is one storage request).
pub const MAX_FRAMES_PER_REQUEST: usize = 2048;

/// A validated stream id and the options of the request's query.
pub fn target(
    stream_id: &str,
    query: Option<&str>,
    limits: convert::Limits,
) -> Result<Target, PushError> {
    check_stream_id(stream_id)?;
    let mut t = Target {
        stream_id: stream_id.to_owned(),
        layout: Layout::default(),
        precision: Precision::default(),
        limits,
    };
    for (k, v) in query_pairs(query.unwrap_or("")) {
        match k {
            "gf_live_frame_format" => {
                t.layout = Layout::parse(v).ok_or_else(|| PushError::BadLayout(v.to_owned()))?
            }
            "precision" => {
                t.precision =
                    Precision::parse(v).ok_or_else(|| PushError::BadPrecision(v.to_owned()))?
            }
            _ => {}
        }
    }
    Ok(t)
}

/// A stream id must fit `stream/<id>/<measurement>` as one channel segment.
pub fn check_stream_id(id: &str) -> Result<(), PushError> {
    let bad = |error| PushError::BadStream {
        stream: id.to_owned(),
        error,
    };
    if id.contains('/') {
        return Err(bad(ChannelError::BadChar {
            part: "namespace",
            ch: '/',
        }));
    }
    Channel::parse_bare(&format!("stream/{id}/x")).map_err(bad)?;
    Ok(())
}

/// `a=1&b=2` split into pairs (values are plain tokens here; no percent-decoding needed).
pub fn query_pairs(q: &str) -> impl Iterator<Item = (&str, &str)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Parses and converts a whole body: the frames with their channels, or the first problem.
pub fn frames(
    body: &[u8],
    t: &Target,
    now_ns: i64,
) -> Result<Vec<(Arc<str>, FrameJson)>, PushError> {
    let text = lineproto::utf8(body)?;
    let frames = convert::convert_with(text, t.layout, t.precision, now_ns, t.limits)?;
    if frames.len() > MAX_FRAMES_PER_REQUEST {
        return Err(PushError::TooManyFrames(frames.len()));
    }
    frames
        .into_iter()
        .map(|f| {
            let name = format!("stream/{}/{}", t.stream_id, f.name);
            let channel =
                Channel::parse_bare(&name).map_err(|error| PushError::BadMeasurement {
                    measurement: f.name.clone(),
                    error,
                })?;
            Ok((channel.key().clone(), f.to_json()))
        })
        .collect()
}

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

/// Parses a body, off the event loop when it is large.
async fn parse(body: Bytes, target: &Target) -> Result<Vec<(Arc<str>, FrameJson)>, PushError> {
    let now = now_ns();
    let target = target.clone();
    sized_work(body.len(), move || frames(&body, &target, now))
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
    let frames = parse(body, target).await?;
    for (channel, _) in &frames {
        shared
            .settings
            .auth
            .check(who, Action::Publish, channel)
            .map_err(|needed| PushError::Forbidden {
                channel: channel.to_string(),
                needed,
            })?;
    }
    publish(&shared.persist, &shared.settings.router, frames).await
}

/// Hands the frames to the storage thread (all or none) and waits until each is published and
/// durable as configured.
pub async fn publish(
    persist: &Persist,
    router: &Router,
    frames: Vec<(Arc<str>, FrameJson)>,
) -> Result<usize, PushError> {
    let n = frames.len();
    let mut waits = Vec::with_capacity(n);
    submit(persist, router, frames, || {
        let (tx, rx) = oneshot::channel();
        waits.push(rx);
        Ack::Channel(tx)
    })?;
    for rx in waits {
        match rx.await {
            Ok(Ok(_)) => {}
            Ok(Err(ErrorCode::LimitExceeded)) => return Err(PushError::StreamLimit),
            _ => return Err(PushError::Storage),
        }
    }
    Ok(n)
}

/// Hands the frames over without waiting (UDP has nobody to answer); each frame takes one of
/// `slots` until it is stored, and none is taken beyond `max`.
pub fn publish_detached(
    persist: &Persist,
    router: &Router,
    frames: Vec<(Arc<str>, FrameJson)>,
    slots: &Arc<Slots>,
    max: usize,
) -> Result<(), PushError> {
    let n = frames.len();
    if !slots.try_take(n, max) {
        return Err(PushError::Busy);
    }
    submit(persist, router, frames, || Ack::Release(slots.clone()))
        .inspect_err(|_| slots.give_back(n))
}

/// One storage request per frame, queued all or none.
fn submit(
    persist: &Persist,
    router: &Router,
    frames: Vec<(Arc<str>, FrameJson)>,
    mut ack: impl FnMut() -> Ack,
) -> Result<(), PushError> {
    let requests = frames
        .into_iter()
        .map(|(key, frame)| Request::Push {
            policy: router.history_for(&key),
            key,
            frame,
            ack: ack(),
        })
        .collect();
    persist.submit_all(requests).map_err(|_| PushError::Busy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target_d(id: &str, q: Option<&str>) -> Result<Target, PushError> {
        target(id, q, convert::Limits::default())
    }

    #[test]
    fn targets_validate_stream_ids_and_options() {
        let t = target_d(
            "telegraf",
            Some("gf_live_frame_format=WIDE&precision=ms&x=1"),
        )
        .unwrap();
        assert_eq!(
            (t.layout, t.precision),
            (Layout::Wide, Precision::Milliseconds)
        );
        assert!(matches!(
            target_d("a b", None),
            Err(PushError::BadStream { .. })
        ));
        assert!(matches!(
            target_d("a/b", None),
            Err(PushError::BadStream { .. })
        ));
        assert!(matches!(
            target_d("s", Some("gf_live_frame_format=prometheus")),
            Err(PushError::BadLayout(_))
        ));
        assert!(matches!(
            target_d("s", Some("precision=h")),
            Err(PushError::BadPrecision(_))
        ));
    }

    #[test]
    fn a_detached_publisher_takes_at_most_its_own_share_of_the_queue() {
        let store = crate::persist::TestPersist::start(
            Arc::new(crate::hub::Hub::new(1)),
            &Default::default(),
        );
        let (persist, settings) = (&store.persist, &store.settings);
        let t = target_d("udp", None).unwrap();
        let slots = Arc::new(Slots::default());
        let body: String = (0..3).map(|i| format!("m{i} v=1\n")).collect();
        let three = || frames(body.as_bytes(), &t, 0).unwrap();
        // Three frames do not fit in a share of two: none is taken.
        assert!(matches!(
            publish_detached(persist, &settings.router, three(), &slots, 2),
            Err(PushError::Busy)
        ));
        assert_eq!(slots.taken(), 0);
        publish_detached(persist, &settings.router, three(), &slots, 3).unwrap();
        // Each stored frame gives its slot back.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while slots.taken() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(slots.taken(), 0);
        assert_eq!(persist.queued(), 0);
    }

    #[test]
    fn a_measurement_that_cannot_form_a_channel_is_refused() {
        let t = target_d("s", None).unwrap();
        let e = frames(b"ok f=1\nbad:name f=1", &t, 0).unwrap_err();
        assert!(
            matches!(e, PushError::BadMeasurement { ref measurement, .. } if measurement == "bad:name"),
            "{e}"
        );
        let ok = frames(b"cpu f=1\nmem f=2\ncpu f=3", &t, 0).unwrap();
        let names: Vec<&str> = ok.iter().map(|(k, _)| &**k).collect();
        assert_eq!(names, ["stream/s/cpu", "stream/s/mem"]);
    }
}
