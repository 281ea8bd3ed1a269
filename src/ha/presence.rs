//! Presence in Redis: this node's entries (one per local subscription of a presence channel),
//! refreshed before their TTL so they live as long as the subscription, and gone within the
//! TTL when the node dies. Reads drop expired entries first, as Centrifuge's do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prost::Message as _;
use tokio_util::sync::CancellationToken;

use super::proto;
use super::writer::Job;
use super::Ctx;
use crate::protocol::reply::ClientInfo;

/// This node's presence entries: channel → client id → protobuf `ClientInfo`. Bounded by the
/// subscriptions, which are bounded by the connection and channel limits.
#[derive(Default)]
pub struct Entries {
    map: Mutex<ByChannel>,
}

/// Channel → client id → protobuf `ClientInfo` (shared: a refresh's snapshot copies pointers,
/// while joins and leaves wait on this map under their channel's lock).
type ByChannel = HashMap<Arc<str>, HashMap<String, Arc<[u8]>>>;

impl Entries {
    fn lock(&self) -> std::sync::MutexGuard<'_, ByChannel> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the entry to Redis, through the write queue (so after any removal queued before
    /// it) and waited for: the subscribe is answered after it, as Centrifuge does, so a client
    /// told it is subscribed is listed on every node.
    pub async fn write(ctx: &Ctx, key: &Arc<str>, info: &ClientInfo) -> Result<(), ()> {
        let (done, written) = tokio::sync::oneshot::channel();
        let job = Job::PresenceAdd {
            key: key.clone(),
            client: info.client.clone(),
            info: proto::ClientInfo::of(info).encode_to_vec().into(),
            done: Some(done),
        };
        ctx.writer.send(job).map_err(|_| ())?;
        match tokio::time::timeout(ctx.settings.timeout * 2, written).await {
            Ok(Ok(true)) => Ok(()),
            _ => Err(()),
        }
    }

    /// Keeps the entry here, to be refreshed (it was written by `write`).
    pub fn keep(&self, key: &Arc<str>, info: &ClientInfo) {
        let bytes: Arc<[u8]> = proto::ClientInfo::of(info).encode_to_vec().into();
        self.lock()
            .entry(key.clone())
            .or_default()
            .insert(info.client.clone(), bytes);
    }

    /// Forgets the entry here; true when it was kept.
    fn forget(&self, key: &Arc<str>, client: &str) -> bool {
        let mut map = self.lock();
        let Some(m) = map.get_mut(key) else {
            return false;
        };
        let was = m.remove(client).is_some();
        if m.is_empty() {
            map.remove(key);
        }
        was
    }

    /// Forgets the entry here and queues its removal from Redis.
    pub fn remove(&self, ctx: &Ctx, key: &Arc<str>, client: &str) {
        self.forget(key, client);
        unwrite(ctx, key, client);
    }

    /// `remove`, only for an entry that was kept (a subscriber ended by a gap on a channel
    /// without presence has none).
    pub fn remove_kept(&self, ctx: &Ctx, key: &Arc<str>, client: &str) {
        if self.forget(key, client) {
            unwrite(ctx, key, client);
        }
    }

    fn snapshot(&self) -> Vec<(Arc<str>, String, Arc<[u8]>)> {
        let map = self.lock();
        map.iter()
            .flat_map(|(k, m)| m.iter().map(|(c, i)| (k.clone(), c.clone(), i.clone())))
            .collect()
    }
}

fn unwrite(ctx: &Ctx, key: &Arc<str>, client: &str) {
    let job = Job::PresenceRemove {
        key: key.clone(),
        client: client.to_owned(),
    };
    if ctx.writer.send(job).is_err() {
        tracing::debug!(channel = %key, client, "redis engine: presence removal left to the TTL");
    }
}

/// Refreshes this node's entries every `presence_refresh`, until `stop`: pipelines of 256 on
/// the command connection, each awaited, apart from the write queue (a refresh of many entries
/// must not crowd publications out of it).
pub async fn refresh(ctx: Arc<Ctx>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(ctx.settings.presence_refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !ctx.link.is_up() {
            continue;
        }
        for chunk in ctx.presence.snapshot().chunks(256) {
            let mut pipe = redis::pipe();
            for (key, client, info) in chunk {
                let job = Job::PresenceAdd {
                    key: key.clone(),
                    client: client.clone(),
                    info: info.clone(),
                    done: None,
                };
                pipe.add_command(job.cmd(&ctx)).ignore();
            }
            if let Err(e) = ctx.query_pipeline(&pipe).await {
                tracing::debug!(error = %e, "redis engine: presence refresh failed");
                break;
            }
        }
    }
}

/// Everyone present on `key`, every node's clients.
pub async fn read(ctx: &Ctx, key: &str) -> Result<Vec<ClientInfo>, redis::RedisError> {
    let k = &ctx.settings.keys;
    let mut cmd = super::writer::evalsha(
        &ctx.scripts.presence_get,
        &[k.presence_expire(key), k.presence_data(key)],
    );
    cmd.arg(super::unix_now());
    let flat: Vec<Vec<u8>> = ctx.query(&cmd).await?;
    let mut out = Vec::with_capacity(flat.len() / 2);
    for pair in flat.chunks_exact(2) {
        match proto::ClientInfo::decode(pair[1].as_slice())
            .map_err(proto::DecodeError::from)
            .and_then(proto::ClientInfo::into_reply)
        {
            Ok(info) => out.push(info),
            Err(e) => {
                ctx.stats.bad_messages.inc();
                tracing::debug!(channel = key, error = %e, "redis engine: presence entry skipped");
            }
        }
    }
    Ok(out)
}
