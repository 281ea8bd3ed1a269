//! Ingest: Influx line protocol parsed (`lineproto`) and converted into Grafana data frames
//! (`convert`), with the stream id and query options of a push and the errors a body can get.
//! Pure: no I/O, no runtime; the push endpoints (`push/`) and exec handlers call it.

pub mod convert;
pub mod lineproto;
pub mod sticky;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub use convert::Layout;
pub use lineproto::{ParseError, Precision};

use crate::auth::Role;
use crate::channel::{Channel, ChannelError};
use crate::frame::FrameJson;
use crate::query::query_pairs;
use sticky::Sticky;

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
    #[error("the forwarding queue of target {0:?} is full (on_full = \"refuse\"); retry later")]
    ForwardFull(String),
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
    sticky: Option<&Sticky>,
) -> Result<Vec<(Arc<str>, FrameJson)>, PushError> {
    frames_echo(body, t, now_ns, sticky, None)
}

/// [`frames`], with `echo` the body's points written back as line protocol in the same pass
/// (see `convert::convert_echo`).
pub fn frames_echo(
    body: &[u8],
    t: &Target,
    now_ns: i64,
    sticky: Option<&Sticky>,
    echo: Option<&mut lineproto::Lines>,
) -> Result<Vec<(Arc<str>, FrameJson)>, PushError> {
    let text = lineproto::utf8(body)?;
    let frames = convert::convert_echo(text, t.layout, t.precision, now_ns, t.limits, echo)?;
    if frames.len() > MAX_FRAMES_PER_REQUEST {
        return Err(PushError::TooManyFrames(frames.len()));
    }
    frames
        .into_iter()
        .map(|mut f| {
            let name = format!("stream/{}/{}", t.stream_id, f.name);
            let channel =
                Channel::parse_bare(&name).map_err(|error| PushError::BadMeasurement {
                    measurement: f.name.clone(),
                    error,
                })?;
            if let Some(sticky) = sticky {
                sticky.fit(channel.key(), &mut f);
            }
            Ok((channel.key().clone(), f.to_json()))
        })
        .collect()
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
    fn a_measurement_that_cannot_form_a_channel_is_refused() {
        let t = target_d("s", None).unwrap();
        let e = frames(b"ok f=1\nbad:name f=1", &t, 0, None).unwrap_err();
        assert!(
            matches!(e, PushError::BadMeasurement { ref measurement, .. } if measurement == "bad:name"),
            "{e}"
        );
        let ok = frames(b"cpu f=1\nmem f=2\ncpu f=3", &t, 0, None).unwrap();
        let names: Vec<&str> = ok.iter().map(|(k, _)| &**k).collect();
        assert_eq!(names, ["stream/s/cpu", "stream/s/mem"]);
    }
}
