//! HTTP endpoints of the push API: `POST /api/live/push/:streamId` (line protocol),
//! `POST /api/live/publish` (JSON on any channel a client could publish to) and
//! `GET /api/live/list` (managed streams). Errors are `{"message": ...}` with a status that
//! says whose fault it is; a client's mistake is never a 500.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::json::CompactJson;
use tokio::sync::oneshot;
use tracing::debug;

use super::PushError;
use crate::auth::{Action, Identity};
use crate::channel::Channel;
use crate::persist::{Ack, Request as StoreRequest};
use crate::respond::{error, json, Body};

use crate::protocol::ErrorCode;
use crate::state::Shared;

/// Why a body could not be read.
pub(crate) enum BodyError {
    TooLarge(usize),
    Timeout,
    Broken(String),
    Encoding(String),
    UnsupportedEncoding(String),
}

impl From<BodyError> for Response<Body> {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge(limit) => error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &PushError::TooLarge(limit).to_string(),
            ),
            BodyError::Timeout => error(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive within [push] body_timeout",
            ),
            BodyError::Broken(m) => error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {m}"),
            ),
            BodyError::Encoding(m) => {
                error(StatusCode::BAD_REQUEST, &PushError::Encoding(m).to_string())
            }
            BodyError::UnsupportedEncoding(enc) => error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!("Content-Encoding {enc:?} is not supported (use gzip or none)"),
            ),
        }
    }
}

/// Reads a whole body within the size limit and time, undoing `Content-Encoding: gzip`.
pub(crate) async fn read_body(
    req: Request<Incoming>,
    limit: usize,
    within: Duration,
) -> Result<Bytes, BodyError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    let encoding = req
        .headers()
        .get(CONTENT_ENCODING)
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let gzip = match encoding.as_str() {
        "" | "identity" => false,
        "gzip" | "x-gzip" => true,
        _ => return Err(BodyError::UnsupportedEncoding(encoding)),
    };
    let collected = tokio::time::timeout(within, Limited::new(req.into_body(), limit).collect())
        .await
        .map_err(|_| BodyError::Timeout)?
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                BodyError::TooLarge(limit)
            } else {
                BodyError::Broken(e.to_string())
            }
        })?;
    let raw = collected.to_bytes();
    if !gzip {
        return Ok(raw);
    }
    // A few KiB of gzip can inflate to the whole limit: always off the event loop.
    tokio::task::spawn_blocking(move || gunzip(&raw, limit))
        .await
        .unwrap_or_else(|_| Err(BodyError::Broken("gzip decoder failed".into())))
}

/// Inflates a gzip body (several members allowed) into at most `limit` bytes; memory never
/// goes past the limit, whatever the compression ratio.
fn gunzip(raw: &[u8], limit: usize) -> Result<Bytes, BodyError> {
    let mut decoder = flate2::read::MultiGzDecoder::new(raw);
    let mut out: Vec<u8> = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match decoder.read(&mut chunk) {
            Ok(0) => return Ok(Bytes::from(out)),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BodyError::Encoding(format!("gzip: {e}"))),
        };
        if out.len() + n > limit {
            return Err(BodyError::TooLarge(limit));
        }
        if out.capacity() < out.len() + n {
            // Grow by doubling, capped at the limit (`extend` alone could double past it).
            let want = (out.capacity() * 2).max(out.len() + n).min(limit);
            out.reserve_exact(want - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// The response for a push that went wrong.
pub fn push_error(e: &PushError) -> Response<Body> {
    let status = match e {
        PushError::TooLarge(_) | PushError::TooManyFrames(_) => StatusCode::PAYLOAD_TOO_LARGE,
        PushError::Busy | PushError::Storage => StatusCode::SERVICE_UNAVAILABLE,
        PushError::StreamLimit | PushError::ForwardFull(_) => StatusCode::INSUFFICIENT_STORAGE,
        PushError::Forbidden { .. } => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut body = serde_json::json!({ "message": e.to_string() });
    if let PushError::Parse(p) = e {
        body["line"] = p.line.into();
        body["column"] = p.column.into();
    }
    let mut r = json(status, body.to_string());
    if matches!(e, PushError::Busy) {
        r.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// `POST /api/live/push/:streamId`: 200 with no body once every frame is published and durable.
pub async fn push(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    stream_id: &str,
    who: Identity,
) -> Response<Body> {
    let result = push_body(req, &shared, stream_id, &who).await;
    shared.push_stats.record(&result);
    match result {
        Ok(_) => Response::new(Body::default()),
        Err(resp) => resp,
    }
}

async fn push_body(
    req: Request<Incoming>,
    shared: &Shared,
    stream_id: &str,
    who: &Identity,
) -> Result<usize, Response<Body>> {
    let refuse = |e: PushError| {
        debug!(stream = stream_id, error = %e, "push refused");
        push_error(&e)
    };
    let settings = &shared.settings();
    let target =
        super::target(stream_id, req.uri().query(), settings.push_limits).map_err(refuse)?;
    let body = read_body(req, settings.push_max_body, settings.push_body_timeout).await?;
    super::ingest(shared, body, &target, who)
        .await
        .map_err(refuse)
}

#[derive(Deserialize)]
struct PublishBody {
    channel: String,
    data: Option<Box<RawValue>>,
}

/// `POST /api/live/publish`: the same rules as a client's publish command; `{}` on success.
pub async fn publish(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    who: &Identity,
) -> Response<Body> {
    let settings = shared.settings();
    let body = match read_body(req, settings.push_max_body, settings.push_body_timeout).await {
        Ok(b) => b,
        Err(e) => return e.into(),
    };
    // Parsed (and compacted) off the event loop when large.
    let parsed = super::sized_work(body.len(), move || {
        serde_json::from_slice::<PublishBody>(&body)
            .map(|p| (p.channel, p.data.map(CompactJson::from_raw)))
    })
    .await;
    let parsed = match parsed {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"channel\": \"...\", \"data\": ...}}: {e}"),
            )
        }
        None => return push_error(&PushError::Storage),
    };
    let Some(data) = parsed.1 else {
        return error(StatusCode::BAD_REQUEST, "publish without data");
    };
    let channel = match Channel::parse(&parsed.0, settings.org_id) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid channel: {e}")),
    };
    let kind = match settings
        .kinds
        .kind_of(&channel)
        .and_then(|k| k.publish.map(|()| k))
    {
        Ok(k) => k,
        Err(code) => return code_response(code),
    };
    if let Err(needed) = settings.auth.check(who, Action::Publish, channel.key()) {
        return push_error(&PushError::Forbidden {
            channel: channel.key().to_string(),
            needed,
        });
    }
    // Written back to the stream's source (an MQTT topic), as for a client's publish command.
    if kind.written_back {
        let Some(writer) = shared.streams.writer(&channel) else {
            return code_response(ErrorCode::NotAvailable);
        };
        return match writer.write(channel.path(), data.as_raw().get()) {
            Ok(()) => json(StatusCode::OK, "{}".into()),
            Err(code) => code_response(code),
        };
    }
    // A stream handler decides a publish on its channels, as for a client's publish command.
    let data = if kind.handler {
        let Some(handler) = shared.streams.handler(&channel) else {
            return code_response(ErrorCode::UnknownChannel);
        };
        match handler.publish(channel.path(), data.as_raw()) {
            Ok(None) => return json(StatusCode::OK, "{}".into()),
            Ok(Some(out)) => match CompactJson::from_string(out) {
                Ok(d) => d,
                Err(_) => return push_error(&PushError::Storage),
            },
            Err(code) => return code_response(code),
        }
    } else {
        data
    };
    let (tx, rx) = oneshot::channel();
    let published = shared
        .broker
        .publish(channel.key(), &kind, data, None, Ack::Channel(tx));
    if published.is_err() {
        return push_error(&PushError::Busy);
    }
    match rx.await {
        Ok(Ok(_)) => json(StatusCode::OK, "{}".into()),
        Ok(Err(code)) => code_response(code),
        Err(_) => push_error(&PushError::Storage),
    }
}

/// HTTP status for a protocol error code.
fn code_response(code: ErrorCode) -> Response<Body> {
    let status = match code {
        ErrorCode::UnknownChannel => StatusCode::NOT_FOUND,
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::LimitExceeded => StatusCode::INSUFFICIENT_STORAGE,
        ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let message = match code {
        ErrorCode::UnknownChannel => "unknown channel".to_owned(),
        ErrorCode::PermissionDenied => "publishing to this channel is not allowed".to_owned(),
        other => other.message().to_owned(),
    };
    error(status, &message)
}

/// `GET /api/live/list`: `{"channels":[{"channel","minute_rate","data":{"schema":...}}]}`,
/// sorted by channel, as Grafana answers it: managed streams and stream-handler channels. Each
/// entry also says how many `subscribers` it has, and a managed stream when it was last pushed
/// to (`last_ms`); channels with history that are neither follow (`"history":true`), for the
/// on-device dashboard's channel list. Grafana's clients ignore keys they do not know.
pub async fn list(shared: Arc<Shared>) -> Response<Body> {
    let (tx, rx) = oneshot::channel();
    if shared
        .persist
        .submit(StoreRequest::List { reply: tx })
        .is_err()
    {
        return push_error(&PushError::Busy);
    }
    let Ok(mut listing) = rx.await else {
        return push_error(&PushError::Storage);
    };
    // With the Redis engine, managed streams live in Redis: every node's.
    if let Some(engine) = shared.broker.engine() {
        match engine.list_streams().await {
            Ok(streams) => listing.streams = streams,
            Err(_) => return push_error(&PushError::Storage),
        }
    }
    let subscribers = |channel: &str| shared.hub.num_subscribers(channel);
    // Managed streams, then stream-handler channels: those whose producer runs, and Grafana's
    // four testdata channels, which Grafana always lists (with its advertised rates).
    let mut entries: Vec<(String, String)> = listing
        .streams
        .iter()
        .map(|l| {
            let mut e = String::from("{\"channel\":");
            crate::frame::json_str(&mut e, &l.channel);
            e.push_str(&format!(
                ",\"minute_rate\":{},\"subscribers\":{},\"last_ms\":{},\"data\":",
                l.minute_rate,
                subscribers(&l.channel),
                l.last_ms
            ));
            e.push_str(&l.schema_only);
            e.push('}');
            (l.channel.clone(), e)
        })
        .collect();
    let running = shared.streams.lifecycle.running();
    let mut handled: Vec<(String, u32)> = crate::streams::testdata::LISTED
        .iter()
        .map(|(c, r)| (c.to_string(), *r))
        .collect();
    for r in &running {
        if !handled.iter().any(|(c, _)| c == &**r) {
            handled.push((r.to_string(), 0));
        }
    }
    for (channel, rate) in handled {
        let mut e = String::from("{\"channel\":");
        crate::frame::json_str(&mut e, &channel);
        let is_running = running.iter().any(|r| **r == *channel);
        e.push_str(&format!(
            ",\"minute_rate\":{rate},\"running\":{is_running},\"subscribers\":{}",
            subscribers(&channel)
        ));
        let schema = Channel::parse_bare(&channel)
            .ok()
            .and_then(|c| Some((shared.streams.handler(&c)?, c)))
            .and_then(|(h, c)| h.subscribe(c.path()).ok().flatten());
        if let Some(s) = schema {
            e.push_str(",\"data\":");
            e.push_str(&s);
        }
        e.push('}');
        entries.push((channel, e));
    }
    for (channel, last_ms) in listing.history {
        if entries.iter().any(|(c, _)| *c == channel) {
            continue;
        }
        let mut e = String::from("{\"channel\":");
        crate::frame::json_str(&mut e, &channel);
        e.push_str(&format!(
            ",\"minute_rate\":0,\"history\":true,\"subscribers\":{},\"last_ms\":{last_ms}}}",
            subscribers(&channel)
        ));
        entries.push((channel, e));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let body: Vec<String> = entries.into_iter().map(|(_, e)| e).collect();
    json(
        StatusCode::OK,
        format!("{{\"channels\":[{}]}}", body.join(",")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gunzip_never_allocates_past_the_limit() {
        let limit = 1 << 20;
        // 1 MiB of zeros packs into about 1 KiB: the old 4 × compressed guess was far off,
        // and growing by doubling could reach twice the limit.
        let exact = gz(&vec![0u8; limit]);
        let out = gunzip(&exact, limit).ok().unwrap();
        assert_eq!(out.len(), limit);
        // Bytes::from(Vec) keeps the allocation: its capacity is what the decoder took.
        let v: Vec<u8> = out.into();
        assert!(v.capacity() <= limit, "{}", v.capacity());
        let bomb = gz(&vec![0u8; limit + 1]);
        assert!(matches!(gunzip(&bomb, limit), Err(BodyError::TooLarge(l)) if l == limit));
        let mut two = gz(b"a v=1\n");
        two.extend(gz(b"b v=2\n"));
        assert_eq!(&gunzip(&two, limit).ok().unwrap()[..], b"a v=1\nb v=2\n");
        assert!(matches!(
            gunzip(b"not gzip", limit),
            Err(BodyError::Encoding(_))
        ));
    }
}
