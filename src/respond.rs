//! Building HTTP responses: the body type, JSON and `{"message"}` errors, and the checks both
//! WebSocket endpoints make before upgrading.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST, ORIGIN};
use hyper::{Request, Response, StatusCode};
use tracing::warn;

use crate::origin;

pub type Body = Full<Bytes>;

/// What both WebSocket endpoints (Centrifuge and push) check before upgrading: that it is an
/// upgrade request (400), the Origin with Grafana's rules (403), then the handshake itself.
pub fn accept_upgrade(
    req: &mut Request<Incoming>,
    allowed_origins: &[String],
) -> Result<(Response<Body>, fastwebsockets::upgrade::UpgradeFut), Box<Response<Body>>> {
    if !fastwebsockets::upgrade::is_upgrade_request(req) {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade request",
        )));
    }
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if !origin::allowed(header(ORIGIN), header(HOST), allowed_origins) {
        warn!(origin = ?header(ORIGIN), "Request Origin is not authorized");
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "Request Origin is not authorized",
        )));
    }
    let (resp, upgrade) = fastwebsockets::upgrade::upgrade(req).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            &format!("bad WebSocket upgrade: {e}"),
        ))
    })?;
    let (parts, _) = resp.into_parts();
    Ok((Response::from_parts(parts, Body::default()), upgrade))
}

pub fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Body::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// `{"message": "..."}` with the given status.
pub fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(
        status,
        serde_json::json!({ "message": message }).to_string(),
    )
}
