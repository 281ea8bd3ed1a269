//! HTTP routes: health, metrics, the push and publish endpoints, and the Centrifuge WebSocket
//! upgrade (connection limit).

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use tracing::{debug, warn};

use crate::auth::{Denied, Identity};
use crate::protocol::Disconnect;
use crate::respond::{accept_upgrade, error, json, Body};
use crate::state::Shared;
use crate::websocket::{self, Conn};

/// Paths of the Centrifuge WebSocket endpoint (Grafana's, and centrifuge's default).
const WS_PATHS: [&str; 2] = ["/api/live/ws", "/connection/websocket"];
/// `GET` or `DELETE` `/api/dashboards/uid/:uid`.
const DASHBOARD_PREFIX: &str = "/api/dashboards/uid/";
/// `POST` (line protocol) or `GET` (WebSocket) `/api/live/push/:streamId`.
const PUSH_PREFIX: &str = "/api/live/push/";

pub async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    peer: IpAddr,
) -> Result<Response<Body>, Infallible> {
    let who = shared
        .settings()
        .auth
        .identify(req.headers(), req.uri().query(), peer);
    // Liveness answers everyone, in both modes and whatever credentials came along: a
    // monitoring host or a load balancer on the LAN must not see the device as down. Only the
    // reason of a degraded store, which may name paths, needs an identity.
    if req.method() == Method::GET && req.uri().path() == "/api/health" {
        let access = match &who {
            Ok(Some(_)) => "granted",
            Err(Denied::LoopbackOnly) => "loopback-only",
            _ => "required",
        };
        return Ok(health(&shared, matches!(who, Ok(Some(_))), access));
    }
    // The dashboard's page and files hold no secret: they ask for a token themselves.
    if req.method() == Method::GET && crate::web::serves(req.uri().path()) {
        return Ok(crate::web::asset(req.uri().path(), req.headers()).await);
    }
    // Protected mode refuses other hosts everything else; bad credentials are refused everywhere.
    let who = match who {
        Ok(w) => w,
        Err(denied) => return Ok(refused(&denied, peer)),
    };
    let path = req.uri().path();
    if who.is_none() && !WS_PATHS.contains(&path) {
        // Only the Centrifuge endpoint can take credentials later, in the connect command.
        return Ok(refused(&Denied::Missing, peer));
    }
    let resp = match (req.method(), path) {
        (&Method::GET, "/metrics") => {
            let mut r = Response::new(Body::new(Bytes::from(crate::metrics::render(&shared))));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        (_, p) if WS_PATHS.contains(&p) => websocket_upgrade(req, &shared, who),
        (&Method::GET, "/api/live/list") => crate::push::http::list(shared).await,
        (&Method::GET, "/api/status") => crate::status::status(shared).await,
        (&Method::POST, "/api/dashboards/db") => {
            crate::dashboards::save(req, shared, &expect(who)).await
        }
        (m, p) if p.starts_with(DASHBOARD_PREFIX) => {
            let uid = p[DASHBOARD_PREFIX.len()..].to_owned();
            match *m {
                Method::GET => crate::dashboards::get(shared, &uid, &expect(who)).await,
                Method::DELETE => crate::dashboards::delete(shared, &uid, &expect(who)).await,
                _ => error(StatusCode::METHOD_NOT_ALLOWED, "use GET or DELETE"),
            }
        }
        (&Method::GET, "/api/search") => {
            let query = req.uri().query().map(str::to_owned);
            crate::dashboards::search(shared, query.as_deref()).await
        }
        (&Method::POST, "/api/live/publish") => {
            crate::push::http::publish(req, shared, &expect(who)).await
        }
        (m, p) if p.starts_with(PUSH_PREFIX) => {
            let stream_id = p[PUSH_PREFIX.len()..].to_owned();
            match *m {
                Method::POST => crate::push::http::push(req, shared, &stream_id, expect(who)).await,
                Method::GET => crate::push::ws::upgrade(req, &shared, &stream_id, expect(who)),
                _ => error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "use POST, or GET for a WebSocket",
                ),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    };
    Ok(resp)
}

/// `{"status":"ok"}`, or 503 degraded (with the reason for an identified client). `access`
/// says whether this request's credentials (or protected mode) let it in: "granted",
/// "required" (none, or refused) or "loopback-only", so the dashboard knows whether to ask
/// for a token without provoking a 401.
fn health(shared: &Shared, identified: bool, access: &str) -> Response<Body> {
    let problem = shared.persist.health.degraded().or_else(|| {
        let engine = shared.broker.engine()?;
        engine.problem()
    });
    let (status, body) = match problem {
        None => (
            StatusCode::OK,
            format!(r#"{{"status":"ok","access":"{access}"}}"#),
        ),
        Some(reason) if identified => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "status": "degraded", "reason": reason, "access": access })
                .to_string(),
        ),
        Some(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(r#"{{"status":"degraded","access":"{access}"}}"#),
        ),
    };
    // A paused forwarding target serves local clients as before, so it does not make the
    // device unhealthy; it is named (with why, for an identified client) to be noticed.
    let paused = shared.forward.paused();
    if paused.is_empty() {
        return json(status, body);
    }
    let mut body: serde_json::Value = serde_json::from_str(&body).expect("written above");
    body["forward_paused"] = match identified {
        true => paused
            .into_iter()
            .map(|(target, why)| serde_json::json!({ "target": target, "reason": why }))
            .collect(),
        false => paused.len().into(),
    };
    json(status, body.to_string())
}

/// Every route but the Centrifuge endpoint was refused above without an identity.
fn expect(who: Option<Identity>) -> Identity {
    who.expect("identified before routing")
}

/// 401 for missing, invalid or expired credentials; 403 for a non-loopback peer in protected
/// mode.
fn refused(denied: &Denied, peer: IpAddr) -> Response<Body> {
    debug!(%peer, reason = %denied, "request refused");
    let status = match denied {
        Denied::LoopbackOnly => StatusCode::FORBIDDEN,
        _ => StatusCode::UNAUTHORIZED,
    };
    let mut r = error(status, &denied.to_string());
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

fn websocket_upgrade(
    mut req: Request<Incoming>,
    shared: &Arc<Shared>,
    identity: Option<Identity>,
) -> Response<Body> {
    let settings = &shared.settings();
    if !settings.websocket_enabled {
        return error(
            StatusCode::NOT_FOUND,
            "Live WebSocket endpoints are disabled ([live] max_connections = 0)",
        );
    }
    if req.method() != Method::GET {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET with a WebSocket upgrade",
        );
    }
    let (resp, upgrade) = match accept_upgrade(&mut req, &settings.allowed_origins) {
        Ok(v) => v,
        Err(refused) => return *refused,
    };
    // Counted from here until the connection task ends, handshake included, as in Grafana.
    let slot = shared.connection_slot();
    let refuse = match settings.max_connections {
        Some(max) if slot.count() > max => {
            warn!(max, "Max number of Live connections reached");
            Some(Disconnect::CONNECTION_LIMIT)
        }
        _ => None,
    };
    let conn = Conn {
        id: shared.next_client.fetch_add(1, Ordering::Relaxed),
        broker: shared.broker.clone(),
        settings: shared.websocket_settings(),
        session: shared.session_settings(),
        shutdown: shared.shutdown.clone(),
        refuse,
        identity,
        streams: shared.streams.clone(),
    };
    let tracker = shared.tracker.clone();
    shared.tracker.spawn(async move {
        let ws = match upgrade.await {
            Ok(ws) => ws,
            Err(e) => return debug!(error = %e, "upgrade did not complete"),
        };
        let Some((stream, pre_read)) = websocket::tcp_of(ws) else {
            return warn!("an upgraded connection is not TCP");
        };
        // A task of its own: this one's state (the upgrade, `conn`) is not kept for the
        // connection's whole life, and the future is spawned as it is, not awaited inside
        // another (which would keep two copies of it). The slot goes with it.
        tracker.spawn(websocket::run(stream, pre_read, conn, slot));
    });
    let (parts, _) = resp.into_parts();
    Response::from_parts(parts, Body::default())
}
