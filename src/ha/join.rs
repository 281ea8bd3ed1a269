//! Subscribing through Redis, leaving, and the history command.
//!
//! A subscribe first has Redis confirm the channel's pub/sub subscription, then reads the
//! history's position (and what a recovering client missed) and, for a managed stream, its last
//! frame; then, under the channel's lock, it checks what pub/sub delivered here meanwhile: the
//! reply's position is never behind a publication already broadcast (that read is repeated),
//! and publications after it arrive from pub/sub. Its channel counts it in flight meanwhile, so
//! pub/sub keeps the channel's position even before a first subscriber is joined.

use std::sync::Arc;

use prost::Message as _;
use redis::Value;

use super::{proto, Ctx};
use crate::channel_kind::{ChannelKind, HistoryPolicy};
use crate::head::Position;
use crate::hub::{ClientId, Remote, Subscriber};
use crate::json::CompactJson;
use crate::outbox::Outbox;
use crate::persist::backfill;
use crate::persist::Busy;
use crate::protocol::reply::{self, ClientInfo, StoredPublication, SubscribeAnswer};
use crate::protocol::ErrorCode;

/// Reads repeated while pub/sub runs ahead of them before the subscribe gives up (100).
const ATTEMPTS: usize = 5;

pub struct SubscribeRequest {
    pub key: Arc<str>,
    pub kind: ChannelKind,
    pub sub: Subscriber,
    pub answer: SubscribeAnswer,
    pub recover: Option<Position>,
    /// A stream handler's subscribe data.
    pub initial: Option<CompactJson<'static>>,
}

pub struct HistoryRequest {
    pub key: Arc<str>,
    pub policy: Option<HistoryPolicy>,
    pub outbox: Arc<Outbox>,
    pub id: u32,
    pub limit: i32,
    pub since: Option<Position>,
    pub reverse: bool,
}

/// A history read: top, epoch, entries (offset, publication).
struct Read {
    top: u64,
    epoch: String,
    entries: Vec<(u64, proto::Publication)>,
}

pub fn subscribe(ctx: &Arc<Ctx>, req: SubscribeRequest) -> Result<(), Busy> {
    let permit = ctx.reads.clone().try_acquire_owned().map_err(|_| Busy)?;
    ctx.hub.with(&req.key, |ch| ch.begin());
    ctx.pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert((req.key.clone(), req.sub.client), false);
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let (key, client) = (req.key.clone(), req.sub.client);
        let (outbox, answer) = (req.sub.outbox.clone(), req.answer.clone());
        let limit = ctx.settings.timeout * 2;
        let joined = match tokio::time::timeout(limit, run(&ctx, req)).await {
            Ok(r) => r,
            Err(_) => Err(ErrorCode::Internal),
        };
        if let Err(code) = joined {
            // Undo: the channel's count, the pending mark and (taken in `run`) the Redis
            // subscription; the session forgets the subscription.
            let was_pending = ctx.hub.with(&key, |ch| {
                ch.settle();
                take_pending(&ctx, &key, client).is_some()
            });
            if was_pending {
                outbox.refuse_subscription(key.clone());
                let _ = outbox.push(answer.error(code));
            }
        }
    });
    Ok(())
}

/// The subscribe, once Redis is asked; `Err` before the client was joined.
async fn run(ctx: &Arc<Ctx>, req: SubscribeRequest) -> Result<(), ErrorCode> {
    if !ctx.link.is_up() {
        return Err(ErrorCode::Internal);
    }
    let confirmed = ctx.subs.acquire(&req.key);
    if !matches!(confirmed.await, Ok(true)) {
        ctx.subs.release(&req.key);
        return Err(ErrorCode::Internal);
    }
    let got = position(ctx, &req).await;
    if got.is_err() {
        ctx.subs.release(&req.key);
    }
    got
}

async fn position(ctx: &Arc<Ctx>, req: &SubscribeRequest) -> Result<(), ErrorCode> {
    let key = &req.key;
    let initial = match req.kind.managed {
        true => managed_initial(ctx, key, req.kind.history.is_some()).await?,
        false => req.initial.clone(),
    };
    for _ in 0..ATTEMPTS {
        let read = match req.kind.history {
            Some(_) => Some(read_position(ctx, key, req.recover.as_ref()).await?),
            None => None,
        };
        let step = ctx.hub.with(key, |ch| {
            if let (Some(r), Some(had)) = (&read, ch.remote()) {
                if had.epoch == r.epoch && had.offset > r.top {
                    return Step::Again;
                }
            }
            ch.settle();
            match take_pending(ctx, key, req.sub.client) {
                Some(false) => {}
                _ => return Step::Cancelled,
            }
            let mut ended = Vec::new();
            let msg = match &read {
                None => req.answer.result(&reply::SubscribeResult {
                    data: initial.as_ref(),
                    ..Default::default()
                }),
                Some(r) => {
                    let top = match ch.remote() {
                        Some(had) if had.epoch == r.epoch => had.offset,
                        had => {
                            if had.is_some() {
                                // Redis started a new epoch: those here hold positions of the
                                // old one.
                                ended = ch
                                    .end_all(|n| reply::unsubscribe(n, 2500, "insufficient state"));
                            }
                            ch.set_remote(Some(Remote {
                                epoch: r.epoch.clone(),
                                offset: r.top,
                            }));
                            r.top
                        }
                    };
                    answer(ctx, req, r, top, initial.as_ref())
                }
            };
            let outbox = req.sub.outbox.clone();
            let added = ch.join(req.sub.clone(), false, || {
                let _ = outbox.push(msg);
            });
            Step::Joined { added, ended }
        });
        match step {
            Step::Again => continue,
            Step::Cancelled => {
                ctx.subs.release(key);
                return Ok(());
            }
            Step::Joined { added, ended } => {
                ctx.forget(key, &ended);
                if !added {
                    // Its connection closed meanwhile; its session already left.
                    ctx.subs.release(key);
                    return Ok(());
                }
                let info = &req.sub.info;
                if req.kind.presence {
                    ctx.presence.add(ctx, key, info);
                }
                if req.kind.join_leave {
                    announce(ctx, key, info, true);
                }
                return Ok(());
            }
        }
    }
    Err(ErrorCode::Internal)
}

enum Step {
    /// Pub/sub delivered past what was read: read again.
    Again,
    /// The connection left before it was joined.
    Cancelled,
    Joined {
        added: bool,
        /// Subscribers ended because the epoch changed.
        ended: Vec<Subscriber>,
    },
}

/// The subscribe result of a history channel whose position here is `top`.
fn answer(
    ctx: &Ctx,
    req: &SubscribeRequest,
    r: &Read,
    top: u64,
    initial: Option<&CompactJson<'static>>,
) -> bytes::Bytes {
    let mut res = reply::SubscribeResult {
        recoverable: true,
        positioned: true,
        epoch: &r.epoch,
        offset: top,
        data: initial,
        ..Default::default()
    };
    let publications: Vec<StoredPublication>;
    if let Some(pos) = &req.recover {
        res.was_recovering = true;
        let same = pos.epoch == r.epoch;
        let need = top.saturating_sub(pos.offset);
        let missed: Vec<_> = r
            .entries
            .iter()
            .filter(|(o, _)| *o > pos.offset && *o <= top)
            .collect();
        let whole =
            missed.len() as u64 == need && missed.first().is_none_or(|(o, _)| *o == pos.offset + 1);
        if same && pos.offset <= top && need as usize <= ctx.max_read && whole {
            publications = missed.iter().filter_map(|(o, p)| stored(*o, p)).collect();
            res.recovered = true;
            res.offset = pos.offset;
            res.publications = &publications;
        }
    }
    req.answer.result(&res)
}

/// A publication from Redis as a reply holds it (`None`: not ours to send, counted).
fn stored(offset: u64, p: &proto::Publication) -> Option<StoredPublication> {
    Some(StoredPublication {
        data: p.data_json().ok()?,
        info: match p.info.clone() {
            Some(i) => Some(i.into_reply().ok()?),
            None => None,
        },
        offset,
    })
}

/// The position, and with a recovering client what it missed.
async fn read_position(
    ctx: &Ctx,
    key: &str,
    recover: Option<&Position>,
) -> Result<Read, ErrorCode> {
    let count = ctx.max_read + 1;
    match recover {
        Some(p) => read(ctx, key, Some(&(p.offset + 1).to_string()), count, false).await,
        None => read(ctx, key, None, 0, false).await,
    }
}

/// Runs the history read script: entries from `from` (none when `None`), at most `count`.
async fn read(
    ctx: &Ctx,
    key: &str,
    from: Option<&str>,
    count: usize,
    reverse: bool,
) -> Result<Read, ErrorCode> {
    let k = &ctx.settings.keys;
    let mut cmd = super::writer::evalsha(
        &ctx.scripts.history_read,
        &[k.stream(key), k.stream_meta(key)],
    );
    cmd.arg(if from.is_some() && count > 0 {
        "1"
    } else {
        "0"
    })
    .arg(from.unwrap_or("-"))
    .arg(count.max(1))
    .arg(if reverse { "1" } else { "0" })
    .arg(ctx.settings.meta_ttl.as_secs())
    .arg(super::new_epoch());
    let (top, epoch, entries): (u64, String, Vec<Value>) =
        ctx.query(&cmd).await.map_err(|_| ErrorCode::Internal)?;
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let Ok((id, fields)) = redis::from_owned_redis_value::<(String, Vec<Vec<u8>>)>(e) else {
            ctx.stats.bad_messages.inc();
            continue;
        };
        let offset = id.split('-').next().and_then(|o| o.parse::<u64>().ok());
        let data = fields.chunks_exact(2).find(|f| f[0] == b"d").map(|f| &f[1]);
        match (
            offset,
            data.map(|d| proto::Publication::decode(d.as_slice())),
        ) {
            (Some(o), Some(Ok(p))) => out.push((o, p)),
            _ => ctx.stats.bad_messages.inc(),
        }
    }
    Ok(Read {
        top,
        epoch,
        entries: out,
    })
}

/// A managed stream's subscribe data from Redis: its last frame, with its recent rows from
/// history when it keeps history and backfill is on.
async fn managed_initial(
    ctx: &Ctx,
    key: &str,
    history: bool,
) -> Result<Option<CompactJson<'static>>, ErrorCode> {
    let mut cmd = redis::cmd("HGET");
    cmd.arg(ctx.settings.keys.managed_stream(key)).arg("frame");
    let frame: Option<String> = ctx.query(&cmd).await.map_err(|_| ErrorCode::Internal)?;
    let Some(frame) = frame else { return Ok(None) };
    let b = &ctx.backfill;
    let mut text = frame;
    if history && b.rows > 0 {
        #[derive(serde::Deserialize)]
        struct Full<'a> {
            #[serde(borrow)]
            schema: &'a serde_json::value::RawValue,
        }
        let schema = serde_json::from_str::<Full<'_>>(&text)
            .ok()
            .map(|f| f.schema.get().to_owned());
        if let Some(schema) = schema {
            let r = read(ctx, key, Some("+"), b.rows, true).await?;
            let records: Vec<(u64, String)> = r
                .entries
                .into_iter()
                .filter_map(|(_, p)| Some((p.time.max(0) as u64, String::from_utf8(p.data).ok()?)))
                .collect();
            let bounds = backfill::Bounds {
                rows: b.rows,
                since_ms: (super::unix_ms().max(0) as u64)
                    .saturating_sub(b.window.as_millis() as u64),
                max_bytes: b.max_bytes,
            };
            if let Some(merged) = backfill::merge(&schema, &records, bounds) {
                text = merged;
            }
        }
    }
    CompactJson::from_string(text)
        .map(Some)
        .map_err(|_| ErrorCode::Internal)
}

fn take_pending(ctx: &Ctx, key: &Arc<str>, client: ClientId) -> Option<bool> {
    ctx.pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&(key.clone(), client))
}

/// A join or leave message through Redis (every node's subscribers get it, this one's too).
fn announce(ctx: &Ctx, key: &Arc<str>, info: &ClientInfo, join: bool) {
    let message = super::message::presence_change(join, &proto::ClientInfo::of(info));
    let _ = ctx.writer.send(super::writer::Job::Announce {
        key: key.clone(),
        message,
    });
}

pub fn leave(
    ctx: &Arc<Ctx>,
    key: &Arc<str>,
    kind: ChannelKind,
    client: ClientId,
    info: &ClientInfo,
) {
    let gone = ctx.hub.with(key, |ch| {
        let gone = ch.remove(client);
        if gone.is_none() {
            // A subscribe under way: it sees this and undoes itself.
            let mut pending = ctx.pending.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = pending.get_mut(&(key.clone(), client)) {
                *c = true;
            }
        }
        gone
    });
    if gone.is_none() {
        return;
    }
    ctx.subs.release(key);
    if kind.presence {
        ctx.presence.remove(ctx, key, &info.client);
    }
    if kind.join_leave {
        announce(ctx, key, info, false);
    }
}

pub fn history(ctx: &Arc<Ctx>, req: HistoryRequest) -> Result<(), Busy> {
    let permit = ctx.reads.clone().try_acquire_owned().map_err(|_| Busy)?;
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let msg = history_reply(&ctx, &req)
            .await
            .unwrap_or_else(|code| reply::error(req.id, code, None));
        let _ = req.outbox.push(msg);
    });
    Ok(())
}

/// As the storage thread answers it (`persist::sequencer::reads`): `limit` 0 = position only,
/// -1 = all (capped), `since` = after that position, `reverse` = newest first.
async fn history_reply(ctx: &Ctx, req: &HistoryRequest) -> Result<bytes::Bytes, ErrorCode> {
    if req.policy.is_none() {
        return Err(ErrorCode::NotAvailable);
    }
    if req.reverse && req.since.as_ref().is_some_and(|s| s.offset == 0) {
        return Err(ErrorCode::BadRequest);
    }
    let n = match req.limit {
        0 => 0,
        l if l < 0 => ctx.max_read,
        l => (l as usize).min(ctx.max_read),
    };
    let from = match (&req.since, req.reverse) {
        (Some(s), false) => (s.offset + 1).to_string(),
        (Some(s), true) => (s.offset - 1).to_string(),
        (None, false) => "-".into(),
        (None, true) => "+".into(),
    };
    let skip = req.reverse && req.since.as_ref().is_some_and(|s| s.offset == 1);
    let r = read(
        ctx,
        &req.key,
        Some(from.as_str()).filter(|_| n > 0 && !skip),
        n,
        req.reverse,
    )
    .await?;
    if let Some(s) = &req.since {
        if !s.epoch.is_empty() && s.epoch != r.epoch {
            return Err(ErrorCode::UnrecoverablePosition);
        }
    }
    let pubs: Vec<StoredPublication> = r
        .entries
        .iter()
        .filter_map(|(o, p)| stored(*o, p))
        .collect();
    Ok(reply::reply(
        req.id,
        "history",
        &reply::HistoryResult {
            publications: &pubs,
            epoch: &r.epoch,
            offset: r.top,
        },
    ))
}
