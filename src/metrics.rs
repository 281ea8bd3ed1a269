//! `GET /metrics`: Prometheus text exposition of the daemon's counters, written by hand (a few
//! lines of text do not need a registry crate).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::state::Shared;

pub fn render(shared: &Shared) -> String {
    let hub = &shared.hub;
    let mut out = String::with_capacity(1024);
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "edgelive_connections",
        "gauge",
        "Open WebSocket connections.",
        shared.connections() as u64,
    );
    metric(
        "edgelive_channels",
        "gauge",
        "Channels with at least one subscriber.",
        hub.num_channels() as u64,
    );
    metric(
        "edgelive_publications_total",
        "counter",
        "Publications broadcast to subscribers.",
        hub.stats.publications.load(Ordering::Relaxed),
    );
    metric(
        "edgelive_deliveries_total",
        "counter",
        "Messages handed to subscribers' queues.",
        hub.stats.deliveries.load(Ordering::Relaxed),
    );
    metric(
        "edgelive_slow_disconnects_total",
        "counter",
        "Clients disconnected because their queue overflowed (3008 slow).",
        hub.stats.slow_disconnects.load(Ordering::Relaxed),
    );
    metric(
        "edgelive_sequenced_in_memory_total",
        "counter",
        "Publications sequenced in memory where the connections are: history publications by their channel's head, and managed-stream frames from the stream's last frame (the others went through the storage thread).",
        hub.stats.sequenced_in_memory.load(Ordering::Relaxed),
    );
    metric(
        "edgelive_recent_publications_bytes",
        "gauge",
        "Bytes of recent publications the heads keep in memory for recovery.",
        hub.recent_bytes() as u64,
    );
    if let Some(engine) = shared.broker.engine() {
        let s = engine.stats();
        metric(
            "edgelive_redis_up",
            "gauge",
            "1 while the Redis engine's command and pub/sub connections are both up.",
            u64::from(engine.problem().is_none()),
        );
        metric(
            "edgelive_redis_reconnects_total",
            "counter",
            "Redis connections re-established after a loss (command connection).",
            s.reconnects.get(),
        );
        metric(
            "edgelive_redis_pubsub_reconnects_total",
            "counter",
            "Redis pub/sub connections re-established after a loss (every channel resubscribed).",
            s.pubsub_reconnects.get(),
        );
        metric(
            "edgelive_redis_pubsub_channels",
            "gauge",
            "Channels this node is subscribed to in Redis (those with local subscribers).",
            s.channels().max(0) as u64,
        );
        metric(
            "edgelive_redis_commands_in_flight",
            "gauge",
            "Commands sent to Redis and not answered yet.",
            s.in_flight().max(0) as u64,
        );
        metric(
            "edgelive_redis_refused_total",
            "counter",
            "Publications and pushes refused because Redis was down or its queue full.",
            s.refused.get(),
        );
        metric(
            "edgelive_redis_bad_messages_total",
            "counter",
            "Messages, entries and presence records from Redis that did not decode (dropped).",
            s.bad_messages.get(),
        );
        metric(
            "edgelive_redis_insufficient_state_total",
            "counter",
            "Subscriptions told to resubscribe (2500) because publications went by unseen.",
            s.insufficient_state.get(),
        );
        metric(
            "edgelive_redis_ping_microseconds",
            "gauge",
            "The last PING round trip to Redis (one a second).",
            (s.ping.last_seconds() * 1e6) as u64,
        );
        metric(
            "edgelive_redis_write_batches_total",
            "counter",
            "Write pipelines sent to Redis (publications, pushes, presence).",
            s.writes.count(),
        );
        metric(
            "edgelive_redis_write_microseconds_total",
            "counter",
            "Round-trip time of those pipelines, summed (divide by the batches for the mean).",
            (s.writes.sum_seconds() * 1e6) as u64,
        );
    }
    let push = &shared.push_stats;
    metric(
        "edgelive_push_requests_total",
        "counter",
        "Push bodies received: HTTP requests, push WebSocket messages, UDP datagrams.",
        push.requests.load(Ordering::Relaxed),
    );
    metric(
        "edgelive_push_frames_total",
        "counter",
        "Data frames published by the push API.",
        push.frames.load(Ordering::Relaxed),
    );
    metric(
        "edgelive_push_errors_total",
        "counter",
        "Push bodies refused (parse errors, limits, storage).",
        push.errors.load(Ordering::Relaxed),
    );
    let producers = shared.streams.lifecycle.counts();
    metric(
        "edgelive_stream_producers_running",
        "gauge",
        "Stream-handler producers running now (one per watched plugin/ds channel).",
        shared.streams.lifecycle.num_running() as u64,
    );
    for (name, help, value) in [
        (
            "edgelive_stream_producers_started_total",
            "Stream-handler producers started by a first subscriber.",
            producers.started,
        ),
        (
            "edgelive_stream_producers_restarted_total",
            "Stream-handler producer restarts after a failure.",
            producers.restarted,
        ),
        (
            "edgelive_stream_producers_stopped_total",
            "Stream-handler producers stopped (nobody watched, ended, or shutdown).",
            producers.stopped,
        ),
    ] {
        metric(name, "counter", help, value);
    }
    metric(
        "edgelive_http_connections_refused_total",
        "counter",
        "Sockets closed at accept because [server] max_pending_connections HTTP connections were open.",
        shared.refused_connections.load(Ordering::Relaxed),
    );
    let sizes = shared
        .persist
        .sizes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for (name, help, col) in [
        (
            "edgelive_history_channels",
            "Channels with history, per [[history]] pattern.",
            1,
        ),
        (
            "edgelive_history_publications",
            "Publications kept in history, per pattern.",
            2,
        ),
        (
            "edgelive_history_bytes",
            "Bytes of history (keys and values), per pattern.",
            3,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (pattern, channels, entries, bytes) in &sizes.by_pattern {
            let v = [0, *channels, *entries, *bytes][col];
            let _ = writeln!(
                out,
                "{name}{{pattern=\"{}\"}} {v}",
                pattern.replace('"', "'")
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP edgelive_recoveries_total Subscribes that recovered what they missed, by where it was read.\n# TYPE edgelive_recoveries_total counter"
    );
    for (from, n) in [
        ("memory", &hub.stats.recovered_from_memory),
        ("disk", &hub.stats.recovered_from_disk),
    ] {
        let _ = writeln!(
            out,
            "edgelive_recoveries_total{{from=\"{from}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    if !shared.mqtt.is_empty() {
        mqtt(&mut out, &shared.mqtt);
    }
    if !shared.forward.targets().is_empty() {
        forward(&mut out, shared.forward.targets());
    }
    out
}

/// Per `[[forward]]` target: state, queue, age of its oldest point, what went out and what was
/// dropped.
fn forward(out: &mut String, targets: &[std::sync::Arc<crate::forward::Target>]) {
    use crate::forward::stats::{DropCause, State};
    use crate::forward::Target;
    let label = |t: &Target| t.spec.name.replace(['"', '\\', '\n'], "_");
    let _ = writeln!(
        out,
        "# HELP edgelive_forward_state The target's state (1 for the one it is in).\n# TYPE edgelive_forward_state gauge"
    );
    for t in targets {
        let now = t.queue.stats.state();
        for s in [State::Ok, State::Retrying, State::Paused] {
            let _ = writeln!(
                out,
                "edgelive_forward_state{{target=\"{}\",state=\"{}\"}} {}",
                label(t),
                s.label(),
                u8::from(s == now)
            );
        }
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    type Read = fn(&Target, u64) -> f64;
    let series: [(&str, &str, &str, Read); 6] = [
        (
            "edgelive_forward_queue_bytes",
            "gauge",
            "Bytes queued on disk.",
            |t, _| t.queue.bytes() as f64,
        ),
        (
            "edgelive_forward_queue_points",
            "gauge",
            "Points queued.",
            |t, _| t.queue.points() as f64,
        ),
        (
            "edgelive_forward_oldest_age_seconds",
            "gauge",
            "Age of the oldest queued point (0 when empty).",
            |t, now| {
                t.queue
                    .oldest_ms()
                    .map_or(0.0, |o| now.saturating_sub(o) as f64 / 1000.0)
            },
        ),
        (
            "edgelive_forward_sent_points_total",
            "counter",
            "Points the far side acknowledged.",
            |t, _| t.queue.stats.sent_points.load(Ordering::Relaxed) as f64,
        ),
        (
            "edgelive_forward_requests_total",
            "counter",
            "Requests the far side acknowledged.",
            |t, _| t.queue.stats.sent_requests.load(Ordering::Relaxed) as f64,
        ),
        (
            "edgelive_forward_retries_total",
            "counter",
            "Requests that failed and are retried.",
            |t, _| t.queue.stats.retries.load(Ordering::Relaxed) as f64,
        ),
    ];
    for (name, kind, help, read) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for t in targets {
            let _ = writeln!(out, "{name}{{target=\"{}\"}} {}", label(t), read(t, now_ms));
        }
    }
    let _ = writeln!(
        out,
        "# HELP edgelive_forward_dropped_points_total Points that will not reach the far side, by cause.\n# TYPE edgelive_forward_dropped_points_total counter"
    );
    for t in targets {
        for cause in DropCause::ALL {
            let _ = writeln!(
                out,
                "edgelive_forward_dropped_points_total{{target=\"{}\",cause=\"{}\"}} {}",
                label(t),
                cause.label(),
                t.queue.stats.dropped(cause)
            );
        }
    }
}

/// Per bridge: connected, messages in, drops by cause, reconnects.
fn mqtt(out: &mut String, bridges: &[std::sync::Arc<crate::mqtt::stats::BridgeStats>]) {
    let label = |b: &crate::mqtt::stats::BridgeStats| b.name.replace(['"', '\\', '\n'], "_");
    let _ = writeln!(
        out,
        "# HELP edgelive_mqtt_connected Whether the bridge is connected to its broker.\n# TYPE edgelive_mqtt_connected gauge"
    );
    for b in bridges {
        let v = u8::from(b.connected.load(Ordering::Relaxed));
        let _ = writeln!(
            out,
            "edgelive_mqtt_connected{{bridge=\"{}\"}} {v}",
            label(b)
        );
    }
    for (name, help, read) in [
        (
            "edgelive_mqtt_messages_total",
            "Messages received from the broker.",
            (|b: &crate::mqtt::stats::BridgeStats| b.messages.load(Ordering::Relaxed))
                as fn(&crate::mqtt::stats::BridgeStats) -> u64,
        ),
        (
            "edgelive_mqtt_reconnects_total",
            "Failed or lost connections to the broker.",
            |b| b.reconnects.load(Ordering::Relaxed),
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for b in bridges {
            let _ = writeln!(out, "{name}{{bridge=\"{}\"}} {}", label(b), read(b));
        }
    }
    let _ = writeln!(
        out,
        "# HELP edgelive_mqtt_dropped_total Messages dropped, by cause.\n# TYPE edgelive_mqtt_dropped_total counter"
    );
    for b in bridges {
        for (cause, n) in b.dropped() {
            let _ = writeln!(
                out,
                "edgelive_mqtt_dropped_total{{bridge=\"{}\",cause=\"{cause}\"}} {n}",
                label(b)
            );
        }
    }
}
