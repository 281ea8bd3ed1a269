//! Dashboards saved on the device, through Grafana's dashboard HTTP API shape, so scripts
//! written for Grafana work against edgelive:
//!
//! - `POST /api/dashboards/db` `{"dashboard": {"uid", "title", "panels", …}, "overwrite"}` →
//!   `{"uid", "version", "status": "success", "url", "slug"}`; 412 `version-mismatch` when the
//!   dashboard changed since the version the client sent, unless `overwrite`;
//! - `GET /api/dashboards/uid/:uid` → `{"dashboard", "meta"}`, 404 when absent;
//! - `DELETE /api/dashboards/uid/:uid`;
//! - `GET /api/search[?query=]` → the dashboards, by title.
//!
//! A viewer reads, a publisher saves and deletes. Each is at most `MAX_BYTES` and there are at
//! most `MAX_DASHBOARDS`. A save or delete publishes Grafana's dashboard event `{"uid",
//! "action": "saved" | "deleted"}` (a save adds its `version`) on
//! `grafana/dashboard/uid/<uid>`, so every open page
//! showing it reloads it. sled runs on the blocking pool, never on the event loop.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tracing::{debug, warn};

use crate::auth::{Identity, Role};
use crate::channel::Channel;
use crate::json::CompactJson;
use crate::persist::Ack;
use crate::respond::{error, json, Body};
use crate::state::Shared;
use edgelive_storage::{Store, StoredDashboard};

/// Largest dashboard JSON, bytes (413 beyond).
pub const MAX_BYTES: usize = 256 * 1024;
/// Most dashboards on one device (a new one beyond is refused with 400).
pub const MAX_DASHBOARDS: usize = 100;
/// Longest uid, as Grafana's.
const MAX_UID: usize = 40;

#[derive(Deserialize)]
struct SaveBody {
    dashboard: Map<String, Value>,
    #[serde(default)]
    overwrite: bool,
}

/// Why a save is refused.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("{0}")]
    Invalid(String),
    #[error("the dashboard has been changed by someone else")]
    VersionMismatch,
    #[error("at most {MAX_DASHBOARDS} dashboards can be saved on this device")]
    TooMany,
    #[error("storage: {0}")]
    Storage(String),
}

fn refused(e: &Refused) -> Response<Body> {
    let (status, kind) = match e {
        Refused::Invalid(_) | Refused::TooMany => (StatusCode::BAD_REQUEST, "invalid"),
        Refused::VersionMismatch => (StatusCode::PRECONDITION_FAILED, "version-mismatch"),
        Refused::Storage(_) => (StatusCode::SERVICE_UNAVAILABLE, "storage"),
    };
    let body = json!({"message": e.to_string(), "status": kind});
    json(status, body.to_string())
}

/// A uid Grafana would take: letters, digits, `-` and `_`, at most 40.
fn valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= MAX_UID
        && uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Grafana's slug: lower case, runs of other characters as one `-`.
fn slug(title: &str) -> String {
    let mut s = String::with_capacity(title.len());
    for c in title.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            s.push(c);
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    s.trim_matches('-').to_owned()
}

fn new_uid() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..9)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Runs a store call on the blocking pool.
async fn on_store<T: Send + 'static>(
    shared: &Shared,
    f: impl FnOnce(&Store) -> Result<T, edgelive_storage::StoreError> + Send + 'static,
) -> Result<T, Refused> {
    let store = shared.persist.store.clone();
    match tokio::task::spawn_blocking(move || f(&store)).await {
        Ok(r) => r.map_err(|e| Refused::Storage(e.to_string())),
        Err(e) => Err(Refused::Storage(e.to_string())),
    }
}

fn role_needed(who: &Identity, role: Role) -> Option<Response<Body>> {
    (who.role < role).then(|| {
        error(
            StatusCode::FORBIDDEN,
            &format!("this needs the {} role", role.name()),
        )
    })
}

/// `POST /api/dashboards/db`.
pub async fn save(req: Request<Incoming>, shared: Arc<Shared>, who: &Identity) -> Response<Body> {
    if let Some(r) = role_needed(who, Role::Publisher) {
        return r;
    }
    let settings = shared.settings();
    let body = match crate::push::http::read_body(req, MAX_BYTES, settings.push_body_timeout).await
    {
        Ok(b) => b,
        Err(e) => return e.into(),
    };
    let parsed: SaveBody = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return refused(&Refused::Invalid(format!(
                "expected {{\"dashboard\": {{\"title\": …}}, \"overwrite\": false}}: {e}"
            )))
        }
    };
    let mut dashboard = parsed.dashboard;
    let title = match dashboard
        .get("title")
        .and_then(Value::as_str)
        .map(str::trim)
    {
        Some(t) if !t.is_empty() && t.len() <= 256 => t.to_owned(),
        _ => {
            return refused(&Refused::Invalid(
                "dashboard.title must be a non-empty string of at most 256 bytes".into(),
            ))
        }
    };
    let uid = match dashboard.get("uid") {
        None | Some(Value::Null) => new_uid(),
        Some(Value::String(u)) if u.is_empty() => new_uid(),
        Some(Value::String(u)) if valid_uid(u) => u.clone(),
        Some(other) => {
            return refused(&Refused::Invalid(format!(
                "dashboard.uid {other} is not 1 to {MAX_UID} letters, digits, - or _"
            )))
        }
    };
    if dashboard
        .get("panels")
        .is_some_and(|p| !p.is_array() && !p.is_null())
    {
        return refused(&Refused::Invalid(
            "dashboard.panels must be an array".into(),
        ));
    }
    let sent_version = dashboard.get("version").and_then(Value::as_u64);
    let overwrite = parsed.overwrite;
    let user = who.user.clone();
    let saved = on_store(&shared, {
        let uid = uid.clone();
        move |store| {
            let old = store.dashboard(&uid)?;
            Ok((old, store.num_dashboards()))
        }
    })
    .await;
    let (old, count) = match saved {
        Ok(v) => v,
        Err(e) => return refused(&e),
    };
    let version = match &old {
        Some(old) if !overwrite && sent_version != Some(old.version) => {
            return refused(&Refused::VersionMismatch)
        }
        Some(old) => old.version + 1,
        None if count >= MAX_DASHBOARDS => return refused(&Refused::TooMany),
        None => 1,
    };
    dashboard.insert("uid".into(), Value::String(uid.clone()));
    dashboard.insert("version".into(), json!(version));
    dashboard.insert("title".into(), Value::String(title.clone()));
    let text = Value::Object(dashboard).to_string();
    if text.len() > MAX_BYTES {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("a dashboard is at most {MAX_BYTES} bytes"),
        );
    }
    let now = crate::clock::now_ms();
    let record = StoredDashboard {
        json: text,
        title: title.clone(),
        version,
        created_ms: old.as_ref().map_or(now, |o| o.created_ms),
        updated_ms: now,
        updated_by: user,
    };
    // The version check and the write are apart: two saves of one uid at once may both
    // pass it, as in Grafana without its database transaction; the later write wins.
    let written = on_store(&shared, {
        let uid = uid.clone();
        move |store| store.set_dashboard(&uid, &record)
    })
    .await;
    if let Err(e) = written {
        warn!(uid, error = %e, "saving a dashboard failed");
        return refused(&e);
    }
    announce(&shared, &uid, "saved", Some(version));
    let slug = slug(&title);
    let body = json!({
        "uid": uid,
        "version": version,
        "status": "success",
        "slug": slug,
        "url": format!("/d/{uid}/{slug}"),
    });
    json(StatusCode::OK, body.to_string())
}

/// `GET /api/dashboards/uid/:uid`.
pub async fn get(shared: Arc<Shared>, uid: &str, who: &Identity) -> Response<Body> {
    let owned = uid.to_owned();
    let found = match on_store(&shared, move |store| store.dashboard(&owned)).await {
        Ok(f) => f,
        Err(e) => return refused(&e),
    };
    let Some(d) = found else {
        return error(StatusCode::NOT_FOUND, "Dashboard not found");
    };
    let can_save = who.role >= Role::Publisher;
    let slug = slug(&d.title);
    let meta = json!({
        "type": "db",
        "slug": slug,
        "url": format!("/d/{uid}/{slug}"),
        "version": d.version,
        "created": rfc3339(d.created_ms),
        "updated": rfc3339(d.updated_ms),
        "updatedBy": d.updated_by,
        "canSave": can_save,
        "canEdit": can_save,
        "canDelete": can_save,
    });
    // The stored JSON is ours (written compact above): spliced in, not parsed again.
    json(
        StatusCode::OK,
        format!("{{\"dashboard\":{},\"meta\":{meta}}}", d.json),
    )
}

/// `DELETE /api/dashboards/uid/:uid`.
pub async fn delete(shared: Arc<Shared>, uid: &str, who: &Identity) -> Response<Body> {
    if let Some(r) = role_needed(who, Role::Publisher) {
        return r;
    }
    let owned = uid.to_owned();
    let removed = on_store(&shared, move |store| {
        let d = store.dashboard(&owned)?;
        if d.is_some() {
            store.remove_dashboard(&owned)?;
        }
        Ok(d)
    })
    .await;
    match removed {
        Ok(Some(d)) => {
            announce(&shared, uid, "deleted", None);
            let body = json!({
                "title": d.title,
                "message": format!("Dashboard {} deleted", d.title),
                "uid": uid,
            });
            json(StatusCode::OK, body.to_string())
        }
        Ok(None) => error(StatusCode::NOT_FOUND, "Dashboard not found"),
        Err(e) => refused(&e),
    }
}

/// `GET /api/search`: every dashboard whose title contains `query` (any case), by title.
pub async fn search(shared: Arc<Shared>, query: Option<&str>) -> Response<Body> {
    let needle = query
        .and_then(|q| {
            crate::query::query_pairs(q)
                .find(|(k, _)| *k == "query")
                .and_then(|(_, v)| crate::query::percent_decode(&v.replace('+', " ")))
                .map(|v| v.to_lowercase())
        })
        .unwrap_or_default();
    let all = match on_store(&shared, |store| store.dashboards()).await {
        Ok(a) => a,
        Err(e) => return refused(&e),
    };
    let mut hits: Vec<Value> = all
        .into_iter()
        .filter(|(_, d)| d.title.to_lowercase().contains(&needle))
        .map(|(uid, d)| {
            let slug = slug(&d.title);
            json!({
                "uid": uid,
                "title": d.title,
                "uri": format!("db/{slug}"),
                "url": format!("/d/{uid}/{slug}"),
                "type": "dash-db",
                "tags": [],
                "isStarred": false,
            })
        })
        .collect();
    hits.sort_by(|a, b| {
        let t = |v: &Value| v["title"].as_str().unwrap_or_default().to_lowercase();
        t(a).cmp(&t(b))
    });
    json(StatusCode::OK, Value::Array(hits).to_string())
}

/// Publishes Grafana's dashboard event to whoever watches the dashboard (with the saved
/// version, so the page that saved it can tell its own save).
fn announce(shared: &Shared, uid: &str, action: &str, version: Option<u64>) {
    let settings = shared.settings();
    let Ok(channel) = Channel::parse_bare(&format!("grafana/dashboard/uid/{uid}")) else {
        return;
    };
    let Ok(kind) = settings.kinds.kind_of(&channel) else {
        return;
    };
    let mut event = json!({"uid": uid, "action": action});
    if let Some(v) = version {
        event["version"] = json!(v);
    }
    let event = event.to_string();
    let Ok(data) = CompactJson::from_string(event) else {
        return;
    };
    if shared
        .broker
        .publish(channel.key(), &kind, data, None, Ack::Discard)
        .is_err()
    {
        debug!(uid, "dashboard event dropped: the storage queue is full");
    }
}

/// Milliseconds since the epoch as RFC 3339, as Grafana writes `created` and `updated`.
fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_and_slugs_follow_grafana() {
        assert!(valid_uid("a-b_C9"));
        assert!(!valid_uid(""));
        assert!(!valid_uid("a/b"));
        assert!(!valid_uid(&"x".repeat(41)));
        assert!(valid_uid(&new_uid()));
        assert_eq!(slug("Boiler room: Temps & more!"), "boiler-room-temps-more");
        assert_eq!(slug("Ünïcode"), "ünïcode");
    }
}
