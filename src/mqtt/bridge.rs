//! One MQTT bridge: a client of the broker (rumqttc, on our event loop) whose messages become
//! rows of managed streams, one channel per topic, through the same path as the push API
//! (sticky fields, history, backfill, `/api/live/list`, rules, metrics).
//!
//! Each message's frames are handed to storage as it arrives (so one group commit covers many),
//! and a QoS 1 message is acknowledged to the broker only once they are stored as `[storage]
//! durability` says, in arrival order (a companion task waits for each and acknowledges it).
//! With `clean_session = false` the broker keeps our subscriptions and queues messages while
//! we are away, so a restart of either side loses nothing acknowledged. When storage is busy
//! the bridge retries and stops reading from the broker meanwhile, which holds the messages. A message
//! that cannot be read (see `payload.rs`) is counted, logged (at most once a minute per cause)
//! and acknowledged, so it is never redelivered forever.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::payload::{self, Dropped};
use super::stats::BridgeStats;
use super::topic;
use super::MqttSpec;
use crate::channel::Channel;
use crate::forward::lines::Lines;
use crate::frame::FrameJson;
use crate::ingest::Layout;
use crate::protocol::ErrorCode;
use crate::push::Forward;
use crate::state::Shared;

/// Messages read from the broker and waiting to be stored and acknowledged.
const PENDING: usize = 1024;

/// A message whose frames were handed to storage, waiting for them to be stored.
type Pending = (Publish, crate::push::Stored);
/// How soon an acknowledgement the client could not queue is tried again.
const ACK_RETRY: Duration = Duration::from_millis(2);
/// At a stop, how long the last acknowledgements may take to go out.
const FLUSH_AT_STOP: Duration = Duration::from_secs(1);
/// How long a message waits before storage is tried again when its queue is full.
const BUSY_RETRY: Duration = Duration::from_millis(50);

/// What the bridge needs besides its settings.
pub struct Parts {
    /// The broker, the settings in force (`[push] sticky_fields`), shutdown.
    pub shared: Arc<Shared>,
    pub stats: Arc<BridgeStats>,
}

fn options(spec: &MqttSpec) -> MqttOptions {
    let mut o = MqttOptions::new(spec.client_id.clone(), spec.host.clone(), spec.port);
    o.set_keep_alive(spec.keep_alive);
    o.set_clean_session(spec.clean_session);
    o.set_manual_acks(true);
    o.set_max_packet_size(spec.limits.max_bytes + 1024, 256 * 1024);
    if let Some((user, password)) = &spec.credentials {
        o.set_credentials(user.clone(), password.clone());
    }
    if let Some(tls) = &spec.tls {
        let config = match &tls.ca {
            Some(ca) => rumqttc::TlsConfiguration::Simple {
                ca: ca.clone(),
                alpn: None,
                client_auth: tls.client.clone(),
            },
            // The system's roots (validation requires ca_file with a client certificate).
            None => rumqttc::TlsConfiguration::default(),
        };
        o.set_transport(rumqttc::Transport::Tls(config));
    }
    o
}

/// Runs the bridge until `stop`.
pub async fn run(spec: Arc<MqttSpec>, parts: Parts) {
    // rustls' process-wide crypto provider, installed by whichever bridge starts first: ring,
    // whose key exchange lacks rustls' newer post-quantum groups (hence the deprecation), but
    // which cross-builds for the board with the C compiler alone (aws-lc needs cmake).
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (client, mut events) = AsyncClient::new(options(&spec), 64);
    let (pending_tx, pending_rx) = tokio::sync::mpsc::channel(PENDING);
    let stop = parts.shared.shutdown.clone();
    let companion = tokio::spawn(acknowledge_stored(
        pending_rx,
        client.clone(),
        parts.stats.clone(),
    ));
    let stats = parts.stats.clone();
    if spec.publish {
        let writer = Arc::new(TopicWriter {
            client: client.clone(),
            qos: spec.qos,
            stats: stats.clone(),
        });
        parts.shared.streams.set_writer(&spec.stream, writer);
    }
    let mut backoff = spec.backoff_min;
    loop {
        let polled = tokio::select! {
            _ = stop.cancelled() => break,
            p = events.poll() => p,
        };
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                stats.connected.store(true, Ordering::Relaxed);
                backoff = spec.backoff_min;
                info!(bridge = %stats.name, broker = %spec.broker, session_present = ack.session_present, "mqtt connected");
                if !ack.session_present {
                    let filters = spec.topics.iter().map(|t| rumqttc::SubscribeFilter {
                        path: t.clone(),
                        qos: spec.qos,
                    });
                    if let Err(e) = client.try_subscribe_many(filters) {
                        warn!(bridge = %stats.name, error = %e, "mqtt subscribe failed");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                stats.messages.fetch_add(1, Ordering::Relaxed);
                // Large payloads are converted off the event loop, as push bodies are.
                let converted = {
                    let (spec, shared, p) = (spec.clone(), parts.shared.clone(), p.clone());
                    crate::push::sized_work(p.payload.len(), move || convert(&spec, &shared, &p))
                        .await
                        .unwrap_or(Err(Dropped::Unreadable))
                };
                match converted {
                    Ok(frames) => {
                        let Some(stored) = submit(&parts.shared, frames, p.retain, &stop).await
                        else {
                            break;
                        };
                        // Bounded: when storage lags this waits, and the broker holds the rest
                        // (QoS 1 messages are bounded by its in-flight window anyway).
                        if pending_tx.send((p, stored)).await.is_err() {
                            break;
                        }
                    }
                    Err(why) => {
                        stats.drop_one(why, &p.topic);
                        let _ = client.try_ack(&p);
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                if stats.connected.swap(false, Ordering::Relaxed) {
                    warn!(bridge = %stats.name, broker = %spec.broker, error = %e, "mqtt disconnected; reconnecting");
                } else {
                    debug!(bridge = %stats.name, error = %e, "mqtt connect failed");
                }
                stats.reconnects.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(spec.backoff_max);
            }
        }
    }
    // Stored messages' acknowledgements go out before we leave (the broker would give them to
    // us again otherwise): the client sends its requests in order, so once the DISCONNECT
    // behind them is written, they are too.
    drop(pending_tx);
    let _ = companion.await;
    if client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(FLUSH_AT_STOP, async {
            loop {
                match events.poll().await {
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                    _ => {}
                }
            }
        })
        .await;
    }
    stats.connected.store(false, Ordering::Relaxed);
}

/// Sends client publishes on the bridge's channels to their topics (`publish = true`).
struct TopicWriter {
    client: AsyncClient,
    qos: QoS,
    stats: Arc<BridgeStats>,
}

impl crate::streams::Writer for TopicWriter {
    fn write(&self, path: &str, data: &str) -> Result<(), ErrorCode> {
        let topic = topic::topic_of(path).map_err(|_| ErrorCode::BadRequest)?;
        // Refused rather than queued while the broker is away: an actuator command that
        // arrives minutes later is worse than an error the client sees now.
        if !self.stats.connected.load(Ordering::Relaxed) {
            return Err(ErrorCode::NotAvailable);
        }
        self.client
            .try_publish(topic, self.qos, false, data.as_bytes().to_vec())
            .map_err(|_| ErrorCode::TooManyRequests)
    }
}

/// A message's frames (each with its channel) and its points for the forwarding targets.
type Converted = (Vec<(Arc<str>, FrameJson)>, Option<Forward>);

/// A message's frames, fitted to their stream's field set and encoded, and its points for the
/// `[[forward]]` targets of the bridge's stream (measurement: the topic's channel path, so the
/// far side makes the same channel).
fn convert(spec: &MqttSpec, shared: &Shared, p: &Publish) -> Result<Converted, Dropped> {
    let name = topic::channel_of(&spec.stream, &p.topic).map_err(|_| Dropped::Topic)?;
    let channel = Channel::parse_bare(&name).map_err(|_| Dropped::Topic)?;
    let now = crate::ingest::now_ns();
    let frames = payload::frames(&p.payload, &p.topic, now, &spec.time_keys, &spec.limits)?;
    let queues = shared.forward.queues_for(&spec.stream);
    let forward = match queues.is_empty() {
        true => None,
        false => {
            let path = &name[("stream/".len() + spec.stream.len() + 1)..];
            let lines = match payload::is_line_protocol(&frames) {
                // Its own lines (tags, types, times as sent), under the topic's path.
                true => std::str::from_utf8(&p.payload)
                    .ok()
                    .and_then(|text| {
                        let limits = crate::ingest::lineproto::LineLimits::default();
                        crate::forward::lines::body_lines_as(text.trim(), now, limits, path).ok()
                    })
                    .unwrap_or_default(),
                false => {
                    let mut lines = Lines::default();
                    for f in &frames {
                        let l = crate::forward::lines::frame_lines(path, f, now);
                        lines.text.push_str(&l.text);
                        lines.points += l.points;
                    }
                    lines
                }
            };
            // The publisher cannot be told to come back later: a target refusing new points
            // (on_full = "refuse", full) does not get this message (counted there); the others
            // and the device itself do.
            Forward::new(queues, &spec.stream, Layout::LabelsColumn, lines, now)
                .and_then(Forward::without_full)
        }
    };
    let sticky = crate::push::sticky(shared);
    let frames = frames
        .into_iter()
        .map(|mut f| {
            if let Some(sticky) = &sticky {
                sticky.fit(channel.key(), &mut f);
            }
            (channel.key().clone(), f.to_json())
        })
        .collect();
    Ok((frames, forward))
}

/// Hands a message's frames to storage, retrying while its queue is full; `None` at a stop
/// (the message is not acknowledged, so the broker gives it to our session again).
async fn submit(
    shared: &Shared,
    (frames, forward): Converted,
    retained: bool,
    stop: &CancellationToken,
) -> Option<crate::push::Stored> {
    loop {
        let submitted = crate::push::submit_frames(
            &shared.broker,
            &shared.persist,
            frames.clone(),
            retained,
            forward.clone(),
        );
        match submitted {
            Ok(stored) => return Some(stored),
            Err(_) => tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(BUSY_RETRY) => {}
            },
        }
    }
}

/// Acknowledges each QoS 1 message to the broker once its frames are stored, in arrival
/// order. It never waits on the MQTT client (whose requests go out only while the bridge
/// polls): an acknowledgement the client cannot queue yet is tried again shortly.
async fn acknowledge_stored(
    mut pending: tokio::sync::mpsc::Receiver<Pending>,
    client: AsyncClient,
    stats: Arc<BridgeStats>,
) {
    let mut unsent: VecDeque<Publish> = VecDeque::new();
    let flush = |unsent: &mut VecDeque<Publish>| {
        while let Some(p) = unsent.front() {
            if client.try_ack(p).is_err() {
                break;
            }
            unsent.pop_front();
        }
    };
    loop {
        let next = if unsent.is_empty() {
            pending.recv().await
        } else {
            match tokio::time::timeout(ACK_RETRY, pending.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    flush(&mut unsent);
                    continue;
                }
            }
        };
        let Some((p, stored)) = next else { break };
        if stored.wait().await.is_err() {
            // Refused for good (the stream table is full): acknowledged and dropped, or the
            // broker would offer it forever; counted, and logged at most once a minute.
            stats.drop_one(Dropped::Refused, &p.topic);
        }
        if p.qos != QoS::AtMostOnce {
            unsent.push_back(p);
        }
        flush(&mut unsent);
    }
    for _ in 0..100 {
        flush(&mut unsent);
        if unsent.is_empty() {
            break;
        }
        tokio::time::sleep(ACK_RETRY).await;
    }
}
