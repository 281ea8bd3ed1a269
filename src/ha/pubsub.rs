//! Pub/sub: this node is subscribed in Redis to the channels its clients watch, on a
//! connection of its own, and hands what arrives to the hub.
//!
//! - One `SUBSCRIBE` per channel with local subscribers (no patterns), batched, in the order
//!   the subscribes and leaves decided them; after a reconnect, every channel again.
//! - A history publication carries its offset and epoch: a channel's subscribers get it only
//!   when it follows what they had. A gap or a new epoch (a node's pub/sub connection broke, or
//!   Redis restarted) tells them instead, with unsubscribe 2500 "insufficient state", to
//!   resubscribe and recover, so a gap is never silent.
//! - After the connection comes back, each history channel's top in Redis is compared with what
//!   was delivered here; where they differ its subscribers are told the same way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::PubSubSink;
use redis::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::message::Message;
use super::Ctx;
use crate::hub::Remote;
use crate::protocol::reply;

/// Most channels in one SUBSCRIBE or UNSUBSCRIBE.
const BATCH: usize = 512;

pub enum Op {
    /// Subscribe (again: Redis ignores a repeat); answered once Redis confirmed, false when the
    /// connection failed first.
    Subscribe(Arc<str>, oneshot::Sender<bool>),
    Unsubscribe(Arc<str>),
}

/// Which channels this node needs in Redis, counted by local subscriptions (and subscribes
/// under way).
pub struct Subscriptions {
    users: Mutex<HashMap<Arc<str>, usize>>,
    /// Unbounded, but each op stands for one subscribe or leave of a connection, and those are
    /// bounded by `max_connections` × `client_channel_limit`.
    ops: mpsc::UnboundedSender<Op>,
    up: AtomicBool,
    /// Counts (re)subscribed connections: a subscribe whose position was read on an earlier
    /// one reads it again (publications may have gone by unseen in between).
    generation: AtomicU64,
}

impl Subscriptions {
    pub fn new() -> (Subscriptions, mpsc::UnboundedReceiver<Op>) {
        let (ops, rx) = mpsc::unbounded_channel();
        let s = Subscriptions {
            users: Mutex::default(),
            ops,
            up: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        };
        (s, rx)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// One more user of `key`; the answer comes once Redis confirmed the subscription.
    pub fn acquire(&self, key: &Arc<str>) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        *users.entry(key.clone()).or_default() += 1;
        // Sent under the lock: Redis sees subscribes and unsubscribes in the order decided here.
        let _ = self.ops.send(Op::Subscribe(key.clone(), tx));
        rx
    }

    /// One user fewer; the last one unsubscribes in Redis.
    pub fn release(&self, key: &Arc<str>) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let Some(n) = users.get_mut(key) else { return };
        *n -= 1;
        if *n == 0 {
            users.remove(key);
            let _ = self.ops.send(Op::Unsubscribe(key.clone()));
        }
    }

    fn keys(&self) -> Vec<Arc<str>> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.keys().cloned().collect()
    }

    fn len(&self) -> usize {
        self.users.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// How often the pub/sub connection is pinged: a connection that went silent (a partition, a
/// host gone without a reset) is noticed within this and the reply timeout.
const PING_EVERY: Duration = Duration::from_secs(5);

/// The pub/sub task, until `stop`.
pub async fn run(ctx: Arc<Ctx>, mut ops: mpsc::UnboundedReceiver<Op>, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    let mut resyncing: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(ctx.settings.timeout, ctx.link.client().get_async_pubsub()) => r,
        };
        let resubscribed = match connected {
            Ok(Ok(pubsub)) => {
                let (sink, stream) = pubsub.split();
                let keys = ctx.subs.keys();
                let names = keys
                    .iter()
                    .map(|k| (true, ctx.settings.keys.client(k)))
                    .collect();
                let done = each(&ctx, &sink, names).await;
                done.iter().all(|ok| *ok).then_some((sink, stream, keys))
            }
            _ => None,
        };
        let Some((mut sink, mut stream, keys)) = resubscribed else {
            // Subscribes waiting now fail (their clients get an error and may retry).
            while let Ok(op) = ops.try_recv() {
                if let Op::Subscribe(_, tx) = op {
                    let _ = tx.send(false);
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        };
        let connected_at = tokio::time::Instant::now();
        ctx.stats
            .channels
            .store(ctx.subs.len() as i64, Ordering::Relaxed);
        ctx.subs.generation.fetch_add(1, Ordering::AcqRel);
        ctx.subs.up.store(true, Ordering::Release);
        if !first {
            ctx.stats.pubsub_reconnects.inc();
            tracing::info!(channels = keys.len(), "redis engine: pub/sub resubscribed");
            // One resync at a time: a newer connection's replaces an unfinished one.
            if let Some(previous) = resyncing.replace(tokio::spawn(resync(ctx.clone(), keys))) {
                previous.abort();
            }
        }
        first = false;
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                m = stream.next() => match m {
                    Some(m) => deliver(&ctx, m.get_channel_name().as_bytes(), m.get_payload_bytes()),
                    None => break,
                },
                op = ops.recv() => {
                    let Some(op) = op else { return };
                    if !apply(&ctx, &sink, op, &mut ops).await {
                        break;
                    }
                }
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(ctx.settings.timeout, sink.ping::<Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        ctx.subs.up.store(false, Ordering::Release);
        tracing::warn!("redis engine: pub/sub connection lost");
        // A connection that did not last starts the next attempt after the backoff, not at
        // once (Redis may be closing it, e.g. over its output buffer limit).
        if connected_at.elapsed() >= Duration::from_secs(10) {
            backoff = Duration::from_millis(100);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// SUBSCRIBE or UNSUBSCRIBE (`subscribe` of each) every one of `names`, one channel per
/// command, pipelined: the client pairs each reply with one command (first in, first out), so a
/// command naming several channels would have its extra replies taken for later commands'
/// confirmations. Each name's outcome; all false when Redis did not answer in time.
async fn each(ctx: &Ctx, sink: &PubSubSink, names: Vec<(bool, String)>) -> Vec<bool> {
    let n = names.len();
    let mut out = Vec::with_capacity(n);
    let mut names = names.into_iter().peekable();
    while names.peek().is_some() {
        let batch: Vec<_> = names
            .by_ref()
            .take(BATCH)
            .map(|(subscribe, name)| {
                let mut sink = sink.clone();
                async move {
                    match subscribe {
                        true => sink.subscribe(name).await.is_ok(),
                        false => sink.unsubscribe(name).await.is_ok(),
                    }
                }
            })
            .collect();
        let len = batch.len();
        // `join_all` polls each in order first, so the commands are sent in this order.
        match tokio::time::timeout(ctx.settings.timeout, futures_util::future::join_all(batch))
            .await
        {
            Ok(done) => out.extend(done),
            Err(_) => out.extend(std::iter::repeat_n(false, len)),
        }
        if out.iter().any(|ok| !ok) {
            break;
        }
    }
    out.resize(n, false);
    out
}

/// Applies `first` and what else is queued, in order, in one pipeline. False when the
/// connection failed.
async fn apply(
    ctx: &Ctx,
    sink: &PubSubSink,
    first: Op,
    ops: &mut mpsc::UnboundedReceiver<Op>,
) -> bool {
    let mut queued = vec![first];
    while queued.len() < BATCH {
        match ops.try_recv() {
            Ok(op) => queued.push(op),
            Err(_) => break,
        }
    }
    let names = queued
        .iter()
        .map(|o| match o {
            Op::Subscribe(k, _) => (true, ctx.settings.keys.client(k)),
            Op::Unsubscribe(k) => (false, ctx.settings.keys.client(k)),
        })
        .collect();
    let done = each(ctx, sink, names).await;
    let all = done.iter().all(|ok| *ok);
    for (op, ok) in queued.into_iter().zip(done) {
        if let Op::Subscribe(_, tx) = op {
            let _ = tx.send(ok);
        }
    }
    ctx.stats
        .channels
        .store(ctx.subs.len() as i64, Ordering::Relaxed);
    all
}

/// One pub/sub message to the channel's local subscribers.
pub fn deliver(ctx: &Ctx, channel: &[u8], payload: &[u8]) {
    let Some(key) = ctx.settings.keys.key_of_client(channel) else {
        return;
    };
    let msg = match Message::parse(payload) {
        Ok(m) => m,
        Err(e) => {
            ctx.stats.bad_messages.inc();
            tracing::debug!(channel = key, error = %e, "redis engine: message dropped");
            return;
        }
    };
    let key: Arc<str> = Arc::from(key);
    match msg {
        Message::Join(info) => announce(ctx, &key, info, reply::join),
        Message::Leave(info) => announce(ctx, &key, info, reply::leave),
        Message::Publication {
            publication,
            position,
        } => {
            let (Ok(data), Ok(info)) = (
                publication.data_json(),
                publication.info.map(|i| i.into_reply()).transpose(),
            ) else {
                ctx.stats.bad_messages.inc();
                return;
            };
            let offset = position.as_ref().map_or(0, |p| p.0);
            let ended = ctx.hub.with(&key, |ch| {
                if ch.num_subscribers() == 0 && ch.in_flight() == 0 {
                    return Vec::new();
                }
                if position.is_none() && data.get().starts_with("{\"schema\"") {
                    // A managed stream without history counts the full frames (schema changes)
                    // delivered: a subscribe that read an older frame reads again (`join.rs`).
                    if let Some(r) = ch.remote().filter(|r| r.epoch.is_empty()) {
                        let counted = r.offset + 1;
                        ch.set_remote(Some(Remote {
                            epoch: String::new(),
                            offset: counted,
                        }));
                    }
                }
                if let Some((offset, epoch)) = position {
                    let follows = match ch.remote() {
                        Some(r) if r.epoch == epoch && offset <= r.offset => return Vec::new(),
                        Some(r) => r.epoch == epoch && offset == r.offset + 1,
                        None => true,
                    };
                    ch.set_remote(Some(Remote { epoch, offset }));
                    if !follows {
                        return super::insufficient_state(ch);
                    }
                }
                ch.broadcast(|name| {
                    reply::publication(
                        name,
                        reply::Publication {
                            data: &data,
                            info: info.as_ref(),
                            offset,
                        },
                    )
                });
                Vec::new()
            });
            if !ended.is_empty() {
                ctx.stats.insufficient_state.add(ended.len() as u64);
                ctx.forget(&key, &ended);
            }
        }
    }
}

/// A join or leave to the channel's local subscribers.
fn announce(
    ctx: &Ctx,
    key: &Arc<str>,
    info: super::proto::ClientInfo,
    encode: fn(&str, &reply::ClientInfo) -> bytes::Bytes,
) {
    let Ok(info) = info.into_reply() else {
        ctx.stats.bad_messages.inc();
        return;
    };
    ctx.hub.broadcast(key, |name| encode(name, &info));
}

/// After pub/sub came back: where a history channel's top in Redis is past what was delivered
/// here (publications went by while this node was not listening), or its epoch changed, its
/// subscribers are told to resubscribe and recover. A top that cannot be read counts as changed.
async fn resync(ctx: Arc<Ctx>, keys: Vec<Arc<str>>) {
    // The command connection may come back a moment after pub/sub.
    let deadline = tokio::time::Instant::now() + ctx.settings.timeout;
    while !ctx.link.is_up() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for key in keys {
        let tracked = ctx
            .hub
            .with(&key, |ch| ch.remote().is_some_and(|r| !r.epoch.is_empty()));
        if !tracked {
            continue;
        }
        let now = ctx.top(&key).await.ok();
        let ended = ctx.hub.with(&key, |ch| {
            let in_step = match (ch.remote(), &now) {
                (Some(had), Some((epoch, top))) => had.epoch == *epoch && had.offset >= *top,
                (None, _) => true,
                _ => false,
            };
            if in_step {
                return Vec::new();
            }
            ch.set_remote(None);
            super::insufficient_state(ch)
        });
        ctx.stats.insufficient_state.add(ended.len() as u64);
        ctx.forget(&key, &ended);
    }
}
