//! Writes toward Redis, in order: publications, pushes, presence changes and join/leave
//! messages go through one bounded queue to one task, which sends whatever is queued as one
//! pipeline (up to `BATCH`) and waits for its replies before the next. One channel's
//! publications therefore reach Redis in the order the broker took them, and a burst costs one
//! round trip per batch, not per message. Each acknowledgement waits for Redis's reply: that is
//! what "durable" means with this engine.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use redis::aio::ConnectionLike;
use redis::{Cmd, Value};
use tokio::sync::mpsc;

use super::Ctx;
use crate::channel_kind::HistoryPolicy;
use crate::persist::Ack;
use crate::protocol::ErrorCode;

/// Most commands in one pipeline.
const BATCH: usize = 256;

pub enum Job {
    /// A publication (protobuf `Publication`), with history or without.
    Publish {
        key: Arc<str>,
        payload: Vec<u8>,
        history: Option<HistoryPolicy>,
        ack: Ack,
    },
    /// A managed stream's frame: the last frame in Redis decides full or data-only.
    Push {
        key: Arc<str>,
        /// `{"schema":…}` and the whole frame, as Grafana's frame cache keeps them.
        schema: String,
        frame: String,
        full: Vec<u8>,
        data_only: Vec<u8>,
        history: Option<HistoryPolicy>,
        /// An MQTT retained value, with its time column (compared as any other when `None`):
        /// skipped when it repeats the last frame but for its time.
        retained: Option<Option<usize>>,
        ack: Ack,
    },
    PresenceAdd {
        key: Arc<str>,
        client: String,
        info: Arc<[u8]>,
        /// Told whether Redis took it (a subscribe waits for it before its reply).
        done: Option<tokio::sync::oneshot::Sender<bool>>,
    },
    PresenceRemove {
        key: Arc<str>,
        client: String,
    },
    /// A join or leave message (`message.rs`).
    Announce {
        key: Arc<str>,
        message: Vec<u8>,
    },
}

impl Job {
    pub fn cmd(&self, ctx: &Ctx) -> Cmd {
        let k = &ctx.settings.keys;
        let meta_ttl = ctx.settings.meta_ttl.as_secs();
        match self {
            Job::Publish {
                key,
                payload,
                history: None,
                ..
            } => {
                let mut c = redis::cmd("PUBLISH");
                c.arg(k.client(key)).arg(payload.as_slice());
                c
            }
            Job::Publish {
                key,
                payload,
                history: Some(h),
                ..
            } => {
                let mut c = evalsha(
                    &ctx.scripts.publish_history,
                    &[k.stream(key), k.stream_meta(key)],
                );
                c.arg(payload.as_slice())
                    .arg(h.size.max(1))
                    .arg(h.ttl.as_secs().max(1))
                    .arg(k.client(key))
                    .arg(meta_ttl)
                    .arg(super::new_epoch());
                c
            }
            Job::Push {
                key,
                schema,
                frame,
                full,
                data_only,
                history,
                retained,
                ..
            } => {
                let mut c = evalsha(
                    &ctx.scripts.push_frame,
                    &[k.managed_stream(key), k.stream(key), k.stream_meta(key)],
                );
                c.arg(schema.as_str())
                    .arg(frame.as_str())
                    .arg(full.as_slice())
                    .arg(data_only.as_slice())
                    .arg(ctx.settings.frame_ttl.as_secs().max(1))
                    .arg(if history.is_some() { "1" } else { "0" })
                    .arg(history.map_or(1, |h| h.size.max(1)))
                    .arg(history.map_or(1, |h| h.ttl.as_secs().max(1)))
                    .arg(k.client(key))
                    .arg(meta_ttl)
                    .arg(super::new_epoch())
                    .arg(if retained.is_some() { "1" } else { "0" })
                    // Lua counts from 1; 0 = no time column.
                    .arg(retained.flatten().map_or(0, |t| t + 1))
                    .arg(super::unix_ms());
                c
            }
            Job::PresenceAdd {
                key, client, info, ..
            } => {
                let ttl = ctx.settings.presence_ttl.as_secs();
                let mut c = evalsha(
                    &ctx.scripts.presence_add,
                    &[k.presence_expire(key), k.presence_data(key)],
                );
                c.arg(ttl)
                    .arg(super::unix_now() + ttl)
                    .arg(client.as_str())
                    .arg(&info[..]);
                c
            }
            Job::PresenceRemove { key, client } => {
                let mut c = evalsha(
                    &ctx.scripts.presence_remove,
                    &[k.presence_expire(key), k.presence_data(key)],
                );
                c.arg(client.as_str());
                c
            }
            Job::Announce { key, message } => {
                let mut c = redis::cmd("PUBLISH");
                c.arg(k.client(key)).arg(message.as_slice());
                c
            }
        }
    }

    /// Tells whoever waits how it went.
    pub fn complete(self, result: Result<Value, ErrorCode>) {
        let ack = match self {
            Job::Publish { ack, .. } | Job::Push { ack, .. } => ack,
            Job::PresenceAdd {
                done: Some(done), ..
            } => {
                let _ = done.send(result.is_ok());
                return;
            }
            _ => return,
        };
        let offset =
            result.map(|v| redis::from_redis_value::<(u64, String)>(&v).map_or(0, |(o, _)| o));
        ack.complete(offset);
    }
}

/// `EVALSHA sha numkeys keys…` (the scripts are loaded on every new connection).
pub fn evalsha(script: &redis::Script, keys: &[String]) -> Cmd {
    let mut c = redis::cmd("EVALSHA");
    c.arg(script.get_hash()).arg(keys.len());
    for k in keys {
        c.arg(k.as_str());
    }
    c
}

/// The write queue had no room.
#[derive(Debug)]
pub struct Full;

/// The queue's sending side.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    pub fn new(capacity: usize) -> (Writer, mpsc::Receiver<Job>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Writer { tx }, rx)
    }

    /// Queues `job`, or gives it back when the queue is full or the writer gone.
    pub fn send(&self, job: Job) -> Result<(), Box<Job>> {
        self.tx.try_send(job).map_err(|e| {
            Box::new(match e {
                mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => j,
            })
        })
    }
}

impl Writer {
    /// Queues all of `jobs` or none (`Err` when the queue has no room for all).
    pub fn send_all(&self, jobs: Vec<Job>) -> Result<(), Full> {
        let permits = self.tx.try_reserve_many(jobs.len()).map_err(|_| Full)?;
        for (permit, job) in permits.zip(jobs) {
            permit.send(job);
        }
        Ok(())
    }
}

/// The writer task: until the queue closes.
pub async fn run(ctx: Arc<Ctx>, mut rx: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let Some(super::link::Conn { mut conn, number }) = ctx.link.current() else {
            for job in batch.drain(..) {
                ctx.stats.refused.inc();
                job.complete(Err(ErrorCode::Internal));
            }
            continue;
        };
        let mut pipe = redis::pipe();
        for job in &batch {
            pipe.add_command(job.cmd(&ctx));
        }
        let n = batch.len();
        ctx.stats.in_flight.fetch_add(n as i64, Ordering::Relaxed);
        let started = Instant::now();
        let replies = conn.req_packed_commands(&pipe, 0, n).await;
        ctx.stats.in_flight.fetch_sub(n as i64, Ordering::Relaxed);
        match replies {
            Ok(values) if values.len() == n => {
                ctx.stats.writes.record(started.elapsed());
                for (job, v) in batch.drain(..).zip(values) {
                    match v.extract_error() {
                        Ok(v) => job.complete(Ok(v)),
                        Err(e) => {
                            tracing::warn!(error = %e, "redis engine: a write was refused");
                            ctx.link.failed(&e, number);
                            ctx.stats.refused.inc();
                            job.complete(Err(ErrorCode::Internal));
                        }
                    }
                }
            }
            other => {
                if let Err(e) = &other {
                    ctx.link.failed(e, number);
                }
                for job in batch.drain(..) {
                    ctx.stats.refused.inc();
                    job.complete(Err(ErrorCode::Internal));
                }
            }
        }
    }
}
