//! The Redis engine (`[live] ha_engine = "redis"`): channels, history, presence and managed
//! streams' last frames shared by every node on one Redis, in Centrifuge's key layout so that
//! edgelive nodes and Centrifuge-based ones (Grafana with `ha_engine = redis`) meet there.
//!
//! The broker hands this engine everything stateful when it is on; the hub still does the
//! local fan-out. A publication goes to Redis first and reaches local subscribers the way it
//! reaches every other node's, from pub/sub, so all nodes see one order per channel.
//!
//! - `writer.rs`: the ordered, bounded write queue (publications, pushes, presence);
//! - `pubsub.rs`: the channels subscribed in Redis and what arrives on them;
//! - `join.rs`: subscribes (positioned, recovered, with a managed stream's frame), leaves;
//! - `history.rs`: the read script's results, and the history command;
//! - `presence.rs`: this node's presence entries and their refresh;
//! - `link.rs`: the command connection, kept up.
//!
//! Not taken part in: Centrifuge's control channel (`P.control`, `P.node.<id>`: node info,
//! surveys, remote disconnects). Centrifuge-based nodes therefore do not count our nodes or
//! clients in their node lists and `/api/live/list`-style surveys, and their disconnect or
//! unsubscribe commands do not reach our clients.

mod history;
mod join;
pub mod keys;
mod link;
pub mod message;
mod presence;
pub mod proto;
mod pubsub;
mod scripts;
pub mod settings;
pub mod stats;
mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prost::Message as _;
use rand::Rng;
use redis::aio::ConnectionLike;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::channel_kind::{ChannelKind, HistoryPolicy};
use crate::config::BackfillConfig;
use crate::frame::FrameJson;
use crate::hub::{ClientId, Hub, Subscriber};
use crate::json::CompactJson;
use crate::persist::{Ack, Busy};
use crate::protocol::reply::ClientInfo;
use crate::protocol::ErrorCode;

pub use settings::HaSettings;
pub use stats::HaStats;
use writer::{Job, Writer};

/// The scripts, loaded on every new connection and run by their hash.
struct Scripts {
    publish_history: redis::Script,
    push_frame: redis::Script,
    history_read: redis::Script,
    presence_add: redis::Script,
    presence_remove: redis::Script,
    presence_get: redis::Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            publish_history: scripts::publish_history(),
            push_frame: scripts::push_frame(),
            history_read: scripts::history_read(),
            presence_add: scripts::presence_add(),
            presence_remove: scripts::presence_remove(),
            presence_get: scripts::presence_get(),
        }
    }

    fn all(&self) -> Vec<redis::Script> {
        vec![
            self.publish_history.clone(),
            self.push_frame.clone(),
            self.history_read.clone(),
            self.presence_add.clone(),
            self.presence_remove.clone(),
            self.presence_get.clone(),
        ]
    }
}

/// What the engine's tasks share.
struct Ctx {
    settings: HaSettings,
    hub: Arc<Hub>,
    link: Arc<link::Link>,
    writer: Writer,
    subs: pubsub::Subscriptions,
    presence: presence::Entries,
    scripts: Scripts,
    stats: Arc<HaStats>,
    /// Subscribes under way, each by its own number (one connection may subscribe, leave and
    /// subscribe again to one channel before the first is done).
    pending: Mutex<HashMap<u64, join::Pending>>,
    next_pending: std::sync::atomic::AtomicU64,
    /// Bounds subscribes under way…
    subscribes: Arc<Semaphore>,
    /// … and other reads in flight (history, presence), apart: subscribes waiting for Redis
    /// during an outage do not starve them.
    reads: Arc<Semaphore>,
    /// Most publications one recovery or history read returns.
    max_read: usize,
    backfill: BackfillConfig,
}

impl Ctx {
    /// One command on the command connection (refused at once while Redis is down).
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let Some(link::Conn { mut conn, number }) = self.link.current() else {
            return Err(unavailable());
        };
        self.stats
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let r = conn.req_packed_command(cmd).await;
        self.stats
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let v = r
            .and_then(|v| v.extract_error())
            .inspect_err(|e| self.link.failed(e, number))?;
        redis::from_owned_redis_value(v)
    }

    /// A pipeline on the command connection; its replies are not wanted.
    async fn query_pipeline(&self, pipe: &redis::Pipeline) -> redis::RedisResult<()> {
        let Some(link::Conn { mut conn, number }) = self.link.current() else {
            return Err(unavailable());
        };
        pipe.query_async::<()>(&mut conn)
            .await
            .inspect_err(|e| self.link.failed(e, number))
    }

    /// A history's epoch and top offset.
    async fn top(&self, key: &str) -> redis::RedisResult<(String, u64)> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.settings.keys.stream_meta(key))
            .arg("e")
            .arg("s");
        let (e, s): (Option<String>, Option<u64>) = self.query(&cmd).await?;
        Ok((e.unwrap_or_default(), s.unwrap_or(0)))
    }

    /// Subscribers the hub no longer holds (ended by a gap): their Redis subscription and
    /// presence go too. They resubscribe, which adds both again.
    fn forget(&self, key: &Arc<str>, gone: &[Subscriber]) {
        for s in gone {
            self.subs.release(key);
            self.presence.remove_kept(self, key, &s.info.client);
        }
    }
}

/// What a command gets while Redis is down (refused at once, never sent).
fn unavailable() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::IoError, "Redis is unavailable"))
}

/// Tells every subscriber of a channel that publications went by unseen: a client-side
/// subscription gets unsubscribe 2500 "insufficient state" (the client resubscribes and
/// recovers), a server-side one's connection is closed with 3010 (it reconnects and recovers),
/// as Centrifuge does. Returns them (for `Ctx::forget`).
fn insufficient_state(ch: &mut crate::hub::Locked<'_>) -> Vec<Subscriber> {
    ch.end_each(|s, name| match s.server_side {
        true => s
            .outbox
            .close(crate::protocol::Disconnect::INSUFFICIENT_STATE),
        false => {
            s.outbox.refuse_subscription(name.key());
            let msg =
                crate::protocol::reply::unsubscribe(name.as_sent(), 2500, "insufficient state");
            let _ = s.outbox.push(msg);
        }
    })
}

/// Cheap-clone handle.
#[derive(Clone)]
pub struct Engine {
    ctx: Arc<Ctx>,
}

impl Engine {
    /// Starts the engine's tasks on the current runtime; they stop with `stop`.
    pub fn start(
        settings: HaSettings,
        hub: Arc<Hub>,
        max_read: usize,
        backfill: BackfillConfig,
        stop: CancellationToken,
    ) -> Engine {
        let stats = Arc::new(HaStats::default());
        let scripts = Scripts::new();
        let link = Arc::new(link::Link::new(
            settings.client.clone(),
            settings.address.clone(),
            settings.timeout,
            scripts.all(),
            stats.clone(),
        ));
        let (writer, jobs) = Writer::new(settings.max_queued);
        let (subs, ops) = pubsub::Subscriptions::new();
        let settings_max_reads = settings.max_reads.max(1);
        let reads = Arc::new(Semaphore::new(settings_max_reads));
        let ctx = Arc::new(Ctx {
            settings,
            hub,
            link: link.clone(),
            writer,
            subs,
            presence: presence::Entries::default(),
            scripts,
            stats,
            pending: Mutex::default(),
            next_pending: std::sync::atomic::AtomicU64::new(0),
            subscribes: Arc::new(Semaphore::new(settings_max_reads)),
            reads,
            max_read,
            backfill,
        });
        tokio::spawn(link.supervise(stop.clone()));
        tokio::spawn(writer::run(ctx.clone(), jobs));
        tokio::spawn(pubsub::run(ctx.clone(), ops, stop.clone()));
        tokio::spawn(presence::refresh(ctx.clone(), stop));
        Engine { ctx }
    }

    /// Why the engine cannot serve stateful work now, if it cannot.
    pub fn problem(&self) -> Option<String> {
        if let Some(p) = self.ctx.link.problem() {
            return Some(p);
        }
        (!self.ctx.subs.is_up()).then(|| "Redis pub/sub is not connected".to_owned())
    }

    pub fn address(&self) -> &str {
        &self.ctx.settings.address
    }

    pub fn stats(&self) -> &HaStats {
        &self.ctx.stats
    }

    /// A publication to every node's subscribers (with history, under Redis's next offset);
    /// `ack` completes once Redis has it, with 100 at once while Redis is down. `Err` when the
    /// queue toward Redis is full: nothing happened.
    pub fn publish(
        &self,
        key: &Arc<str>,
        history: Option<HistoryPolicy>,
        data: &CompactJson<'_>,
        info: Option<&ClientInfo>,
        ack: Ack,
    ) -> Result<(), Busy> {
        if !self.ctx.link.is_up() {
            self.ctx.stats.refused.inc();
            ack.complete(Err(ErrorCode::Internal));
            return Ok(());
        }
        let payload = publication(data.get(), info).encode_to_vec();
        let job = Job::Publish {
            key: key.clone(),
            payload,
            history,
            ack,
        };
        self.ctx.writer.send(job).map_err(|_| {
            self.ctx.stats.refused.inc();
            Busy
        })
    }

    /// A push body's frames, all queued or none (`Err`: the queue cannot take them all).
    /// `retained`: MQTT retained values (a bridge that subscribes again is given them again),
    /// not published again when one repeats the stream's last frame in Redis but for its time,
    /// as the storage thread does without Redis (decided in the push's script).
    pub fn push(
        &self,
        frames: Vec<(Arc<str>, FrameJson)>,
        retained: bool,
        history: impl Fn(&str) -> Option<HistoryPolicy>,
        mut ack: impl FnMut() -> Ack,
    ) -> Result<(), Busy> {
        if !self.ctx.link.is_up() {
            self.ctx.stats.refused.add(frames.len() as u64);
            for _ in &frames {
                ack().complete(Err(ErrorCode::Internal));
            }
            return Ok(());
        }
        let jobs: Vec<Job> = frames
            .into_iter()
            .map(|(key, frame)| {
                let h = history(&key);
                push_job(key, &frame, h, retained, ack())
            })
            .collect();
        self.ctx.writer.send_all(jobs).map_err(|_| {
            self.ctx.stats.refused.inc();
            Busy
        })
    }

    /// Subscribes through Redis: answered (and joined to the hub) once Redis confirmed the
    /// channel's subscription and the position was read. `Err` when too many reads are in
    /// flight: nothing happened.
    pub fn subscribe(&self, req: crate::persist::SubscribeQuery) -> Result<(), Busy> {
        join::subscribe(&self.ctx, req)
    }

    /// Leaves a channel on this node (see `Broker::leave`).
    pub fn leave(&self, key: &Arc<str>, kind: ChannelKind, client: ClientId, info: &ClientInfo) {
        join::leave(&self.ctx, key, kind, client, info)
    }

    /// The history command, answered into `outbox` once read.
    pub fn history(&self, req: crate::persist::HistoryQuery) -> Result<(), Busy> {
        history::history(&self.ctx, req)
    }

    /// Every managed stream in Redis (this org's, any node's), for `/api/live/list`: its
    /// schema and last push; the per-minute rate is each node's own and not kept in Redis (0).
    /// At most `MAX_LISTED`, found with SCAN (which does not block Redis).
    pub async fn list_streams(&self) -> Result<Vec<crate::persist::Listed>, ErrorCode> {
        const MAX_LISTED: usize = 10_000;
        let ctx = &self.ctx;
        let _permit = ctx
            .reads
            .clone()
            .try_acquire_owned()
            .map_err(|_| ErrorCode::TooManyRequests)?;
        let pattern = ctx.settings.keys.managed_streams_pattern();
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, found): (u64, Vec<String>) =
                ctx.query(&cmd).await.map_err(|_| ErrorCode::Internal)?;
            keys.extend(found);
            cursor = next;
            if cursor == 0 || keys.len() >= MAX_LISTED {
                break;
            }
        }
        keys.sort();
        keys.dedup();
        keys.truncate(MAX_LISTED);
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(256) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.cmd("HMGET").arg(k).arg("schema").arg("t");
            }
            let Some(link::Conn { mut conn, number }) = ctx.link.current() else {
                return Err(ErrorCode::Internal);
            };
            let rows: Vec<(Option<String>, Option<u64>)> = pipe
                .query_async(&mut conn)
                .await
                .inspect_err(|e| ctx.link.failed(e, number))
                .map_err(|_| ErrorCode::Internal)?;
            for (k, (schema, t)) in chunk.iter().zip(rows) {
                let (Some(channel), Some(schema)) =
                    (ctx.settings.keys.key_of_managed_stream(k), schema)
                else {
                    continue;
                };
                if CompactJson::from_string(schema.clone()).is_err() {
                    ctx.stats.bad_messages.inc();
                    continue;
                }
                out.push(crate::persist::Listed {
                    channel: channel.to_owned(),
                    minute_rate: 0,
                    last_ms: t.unwrap_or(0),
                    schema_only: schema,
                });
            }
        }
        Ok(out)
    }

    /// Who is present, every node's clients; `done` gets the list or the error.
    pub fn presence(
        &self,
        key: &Arc<str>,
        done: impl FnOnce(Result<Vec<Arc<ClientInfo>>, ErrorCode>) + Send + 'static,
    ) -> Result<(), Busy> {
        let permit = self
            .ctx
            .reads
            .clone()
            .try_acquire_owned()
            .map_err(|_| Busy)?;
        let (ctx, key) = (self.ctx.clone(), key.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let r = presence::read(&ctx, &key).await;
            done(
                r.map(|v| v.into_iter().map(Arc::new).collect())
                    .map_err(|_| ErrorCode::Internal),
            );
        });
        Ok(())
    }
}

/// A managed stream's frame as the write queue takes it: both payloads, Redis's last frame
/// decides which goes out.
fn push_job(
    key: Arc<str>,
    frame: &FrameJson,
    history: Option<HistoryPolicy>,
    retained: bool,
    ack: Ack,
) -> Job {
    // The whole frame encoded once, for its payload and for the last-frame hash; both payloads
    // carry one time.
    let whole = frame.full();
    let full = publication(&whole, None);
    let mut data_only = publication(&frame.data_only(), None);
    data_only.time = full.time;
    let (full, data_only) = (full.encode_to_vec(), data_only.encode_to_vec());
    Job::Push {
        key,
        schema: frame.schema_only(),
        frame: whole,
        full,
        data_only,
        history,
        // The time column is compared as any other when the schema has none.
        retained: retained.then(|| crate::persist::frames::time_column(&frame.schema)),
        ack,
    }
}

/// A publication's protobuf (offset and epoch travel beside it, in Redis's header and entry id).
fn publication(data: &str, info: Option<&ClientInfo>) -> proto::Publication {
    proto::Publication {
        data: data.as_bytes().to_vec(),
        info: info.map(proto::ClientInfo::of),
        time: unix_ms(),
        ..Default::default()
    }
}

/// An epoch for a history that has none: 8 random letters, as Centrifuge makes them.
fn new_epoch() -> String {
    let mut rng = rand::rng();
    (0..8)
        .map(|_| {
            let i = rng.random_range(0..52u8);
            char::from(if i < 26 { b'a' + i } else { b'A' + i - 26 })
        })
        .collect()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_eight_letters() {
        let e = new_epoch();
        assert_eq!(e.len(), 8);
        assert!(e.bytes().all(|b| b.is_ascii_alphabetic()));
    }
}
