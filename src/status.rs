//! `GET /api/status`: the device's state at a glance, for the dashboard's status panel and for
//! scripts: version, uptime, connections of `max_connections`, memory, storage health and size,
//! publications per second.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use hyper::{Response, StatusCode};
use serde_json::json;

use crate::respond::{json, Body};
use crate::state::{RateSample, Shared};

/// Publications per second since the previous call at least a second ago (since the start at
/// first), so two pages polling it do not halve each other's window.
fn publication_rate(sample: &Mutex<RateSample>, count: u64) -> f64 {
    let mut s = sample.lock().unwrap_or_else(PoisonError::into_inner);
    let elapsed = s.at.elapsed().as_secs_f64();
    if elapsed >= 1.0 {
        s.per_second = count.saturating_sub(s.count) as f64 / elapsed;
        s.at = Instant::now();
        s.count = count;
    }
    s.per_second
}

/// Resident memory of this process, bytes (from /proc, which is memory, not disk).
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

pub async fn status(shared: Arc<Shared>) -> Response<Body> {
    let settings = shared.settings();
    let store = shared.persist.store.clone();
    // sled sums its files' sizes: file system calls, off the event loop.
    let size = tokio::task::spawn_blocking(move || store.size_on_disk().ok())
        .await
        .ok()
        .flatten();
    let stats = &shared.hub.stats;
    let publications = stats.publications.load(Ordering::Relaxed);
    let problem = shared.persist.health.degraded();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": shared.started.elapsed().as_secs(),
        "connections": shared.connections(),
        "max_connections": settings.max_connections,
        "memory": { "rss_bytes": rss_bytes() },
        "storage": {
            "healthy": problem.is_none(),
            "problem": problem,
            "size_bytes": size,
            "channels": shared.hub.num_channels(),
        },
        "publications_total": publications,
        "publications_per_second": publication_rate(&shared.publication_rate, publications),
        "deliveries_total": stats.deliveries.load(Ordering::Relaxed),
        "ha_engine": shared.broker.engine().map(|e| {
            let s = e.stats();
            let problem = e.problem();
            json!({
                "engine": "redis",
                "address": e.address(),
                "healthy": problem.is_none(),
                "problem": problem,
                "pubsub_channels": s.channels(),
                "commands_in_flight": s.in_flight(),
                "reconnects": s.reconnects.get() + s.pubsub_reconnects.get(),
                "ping_seconds": s.ping.last_seconds(),
            })
        }),
        "mqtt": shared.mqtt.iter().map(|b| json!({
            "bridge": b.name,
            "connected": b.connected.load(Ordering::Relaxed),
            "messages": b.messages.load(Ordering::Relaxed),
            "reconnects": b.reconnects.load(Ordering::Relaxed),
            "dropped": b.dropped().collect::<std::collections::BTreeMap<_, _>>(),
        })).collect::<Vec<_>>(),
        "forward": shared.forward.targets().iter().map(|t| {
            let s = &t.queue.stats;
            json!({
                "target": t.spec.name,
                "state": s.state().label(),
                "queue_bytes": t.queue.bytes(),
                "queue_points": t.queue.points(),
                "max_queue_bytes": t.spec.max_queue,
                "oldest_age_seconds": t.queue.oldest_ms().map(|o| now_ms.saturating_sub(o) as f64 / 1000.0),
                "sent_points": s.sent_points.load(Ordering::Relaxed),
                "sent_requests": s.sent_requests.load(Ordering::Relaxed),
                "retries": s.retries.load(Ordering::Relaxed),
                "dropped": crate::forward::stats::DropCause::ALL
                    .iter()
                    .map(|c| (c.label(), s.dropped(*c)))
                    .collect::<std::collections::BTreeMap<_, _>>(),
                "last_error": s.last_error(),
            })
        }).collect::<Vec<_>>(),
    });
    json(StatusCode::OK, body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_taken_over_at_least_a_second() {
        let sample = RateSample::new();
        sample.lock().unwrap().at = Instant::now() - std::time::Duration::from_secs(2);
        let rate = publication_rate(&sample, 100);
        assert!((rate - 50.0).abs() < 1.0, "{rate}");
        // Asked again at once: the same figure, not a rate over no time.
        assert_eq!(publication_rate(&sample, 150), rate);
        assert!(rss_bytes().unwrap() > 0);
    }
}
