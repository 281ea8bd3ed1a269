//! Subscribing through Redis, and leaving.
//!
//! A subscribe first has Redis confirm the channel's pub/sub subscription, then reads the
//! history's position (and what a recovering client missed) and, for a managed stream, its last
//! frame, in one script; then, under the channel's lock, it compares with what pub/sub delivered
//! here meanwhile: the reply's position is what was delivered (publications after it arrive from
//! pub/sub), and a recovering client's missed publications are read again when pub/sub ran
//! ahead of the read. Its channel counts it in flight meanwhile, so pub/sub keeps the channel's
//! position even before a first subscriber is joined.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::history::{read, stored, Read};
use super::{proto, Ctx};
use crate::channel_kind::ChannelKind;
use crate::hub::{ClientId, Remote, Subscriber};
use crate::json::CompactJson;
use crate::persist::backfill;
use crate::persist::{Busy, SubscribeQuery};
use crate::protocol::reply::{self, ClientInfo, StoredPublication};
use crate::protocol::ErrorCode;

/// Reads repeated while pub/sub runs ahead of them (or reconnects) before the subscribe gives
/// up with 100.
const ATTEMPTS: usize = 10;

/// A subscribe under way.
pub struct Pending {
    key: Arc<str>,
    client: ClientId,
    /// The connection left the channel before this subscribe was joined.
    cancelled: bool,
}

pub fn subscribe(ctx: &Arc<Ctx>, req: SubscribeQuery) -> Result<(), Busy> {
    let permit = ctx
        .subscribes
        .clone()
        .try_acquire_owned()
        .map_err(|_| Busy)?;
    let number = ctx.next_pending.fetch_add(1, Ordering::Relaxed);
    ctx.hub.with(&req.key, |ch| {
        ch.begin();
        if req.kind.managed && req.kind.history.is_none() && ch.remote().is_none() {
            // Counts the stream's publications delivered here (see `deliver`).
            ch.set_remote(Some(Remote {
                epoch: String::new(),
                offset: 0,
            }));
        }
    });
    lock_pending(ctx).insert(
        number,
        Pending {
            key: req.key.clone(),
            client: req.sub.client,
            cancelled: false,
        },
    );
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let key = req.key.clone();
        let (outbox, answer) = (req.sub.outbox.clone(), req.answer.clone());
        let Err(code) = run(&ctx, req, number).await else {
            return;
        };
        // Undo the channel's count and the pending mark (`run` released the Redis
        // subscription). The session forgets the subscription, unless it left it before (then
        // the subscription it holds now, if any, is a later subscribe's).
        let pending = ctx.hub.with(&key, |ch| {
            ch.settle();
            lock_pending(&ctx).remove(&number)
        });
        if let Some(p) = pending {
            if !p.cancelled {
                outbox.refuse_subscription(key.clone());
            }
            let _ = outbox.push(answer.error(code));
        }
    });
    Ok(())
}

fn lock_pending(ctx: &Ctx) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, Pending>> {
    ctx.pending.lock().unwrap_or_else(|e| e.into_inner())
}

/// The subscribe, once Redis is asked; `Err` before the client was joined (the Redis
/// subscription given back).
async fn run(ctx: &Arc<Ctx>, req: SubscribeQuery, number: u64) -> Result<(), ErrorCode> {
    if !ctx.link.is_up() {
        return Err(ErrorCode::Internal);
    }
    let confirmed = ctx.subs.acquire(&req.key);
    let confirmed = tokio::time::timeout(ctx.settings.timeout, confirmed).await;
    if !matches!(confirmed, Ok(Ok(true))) {
        ctx.subs.release(&req.key);
        return Err(ErrorCode::Internal);
    }
    let got = position(ctx, &req, number).await;
    if got.is_err() {
        ctx.subs.release(&req.key);
    }
    got
}

async fn position(ctx: &Arc<Ctx>, req: &SubscribeQuery, number: u64) -> Result<(), ErrorCode> {
    let key = &req.key;
    if req.kind.presence {
        // Before the reply, through the write queue (so after any removal queued before it).
        // Removed again below unless joined (a leave before the join finds nothing to remove).
        let written = super::presence::Entries::write(ctx, key, &req.sub.info).await;
        if written.is_err() {
            unwrite_presence(ctx, req);
            return Err(ErrorCode::Internal);
        }
    }
    let joined = join_positioned(ctx, req, number).await;
    if req.kind.presence && !matches!(joined, Ok(true)) {
        unwrite_presence(ctx, req);
    }
    joined.map(|_| ())
}

/// Removes the presence entry a subscribe wrote and did not keep, unless the client holds the
/// channel (or is subscribing to it again): entries are per client and channel. Decided under
/// the channel's lock, as joins and leaves are.
fn unwrite_presence(ctx: &Arc<Ctx>, req: &SubscribeQuery) {
    let (key, client) = (&req.key, req.sub.client);
    ctx.hub.with(key, |ch| {
        let held = ch.has(client)
            || lock_pending(ctx)
                .values()
                .any(|p| p.key == *key && p.client == client && !p.cancelled);
        if !held {
            ctx.presence.remove(ctx, key, &req.sub.info.client);
        }
    });
}

/// Reads and joins; `Ok(true)` when the client was joined.
async fn join_positioned(
    ctx: &Arc<Ctx>,
    req: &SubscribeQuery,
    number: u64,
) -> Result<bool, ErrorCode> {
    let key = &req.key;
    for attempt in 0..ATTEMPTS {
        // Read after this: a reconnect in between may have missed publications the read saw.
        let generation = ctx.subs.generation();
        let counted = ctx.hub.with(key, |ch| ch.remote().map(|r| r.offset));
        let read = read_subscribe(ctx, key, req).await?;
        // Parsed before taking the lock.
        let initial = match (req.kind.managed, &read) {
            (true, Some(r)) => r
                .frame
                .as_ref()
                .and_then(|f| CompactJson::from_string(f.clone()).ok()),
            _ => req.initial.clone(),
        };
        let first = attempt == 0;
        let step = ctx.hub.with(key, |ch| {
            if ctx.subs.generation() != generation {
                return Step::Again;
            }
            if let (Some(r), Some(had)) = (&read, ch.remote()) {
                let history = !r.epoch.is_empty();
                // Pub/sub delivered past the read: what a recovering client missed, or a
                // managed stream's frame (its schema may have changed since), must be read
                // again to reach the live stream.
                let behind = had.epoch == r.epoch && had.offset > r.top;
                if history && behind && (req.recover.is_some() || req.kind.managed) {
                    return Step::Again;
                }
                // Another epoch than pub/sub's: the read may be the older one; once more.
                if history && had.epoch != r.epoch && first {
                    return Step::Again;
                }
                // A managed stream without history: a full frame (a schema change) delivered
                // since the read.
                if !history && Some(had.offset) != counted {
                    return Step::Again;
                }
            }
            ch.settle();
            // Left before it was joined: answered all the same (its commands are answered in
            // the order a Centrifuge server runs them: this subscribe, then the unsubscribe),
            // not joined.
            let cancelled = lock_pending(ctx)
                .remove(&number)
                .is_none_or(|p| p.cancelled);
            let mut ended = Vec::new();
            let msg = match read.as_ref().filter(|r| !r.epoch.is_empty()) {
                None => req.answer.result(&reply::SubscribeResult {
                    data: initial.as_ref(),
                    ..Default::default()
                }),
                Some(r) => {
                    // The position is what was delivered here: publications after it (some
                    // perhaps already in the read) arrive from pub/sub.
                    let top = match ch.remote() {
                        Some(had) if had.epoch == r.epoch => had.offset,
                        had => {
                            if had.is_some() {
                                // Redis started a new epoch: those here hold positions of the
                                // old one.
                                ended = super::insufficient_state(ch);
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
            if cancelled {
                let _ = outbox.push(msg);
                return Step::Cancelled { ended };
            }
            let added = ch.join(req.sub.clone(), false, || {
                let _ = outbox.push(msg);
            });
            if added {
                // Here, under the lock: a leave that follows is ordered after these.
                let info = &req.sub.info;
                if req.kind.presence {
                    ctx.presence.keep(key, info);
                }
                if req.kind.join_leave {
                    announce(ctx, key, info, true);
                }
            }
            Step::Joined { added, ended }
        });
        match step {
            Step::Again => continue,
            Step::Cancelled { ended } => {
                ctx.forget(key, &ended);
                ctx.subs.release(key);
                return Ok(false);
            }
            Step::Joined { added, ended } => {
                ctx.forget(key, &ended);
                if !added {
                    // Its connection closed meanwhile; its session already left.
                    ctx.subs.release(key);
                }
                return Ok(added);
            }
        }
    }
    Err(ErrorCode::Internal)
}

enum Step {
    /// Read again (see `position`).
    Again,
    /// The connection left before it was joined (answered, not joined).
    Cancelled {
        /// Subscribers ended because the epoch changed.
        ended: Vec<Subscriber>,
    },
    Joined {
        added: bool,
        /// Subscribers ended because the epoch changed.
        ended: Vec<Subscriber>,
    },
}

/// What a subscribe reads: a history's position (with what a recovering client missed) and a
/// managed stream's frame (with its backfill rows), `None` when neither applies.
async fn read_subscribe(
    ctx: &Ctx,
    key: &str,
    req: &SubscribeQuery,
) -> Result<Option<Read>, ErrorCode> {
    let (history, managed) = (req.kind.history.is_some(), req.kind.managed);
    if !history && !managed {
        return Ok(None);
    }
    let recover = req.recover.as_ref().filter(|_| history);
    let from = recover.map(|p| p.offset.saturating_add(1).to_string());
    let count = if recover.is_some() {
        ctx.max_read + 1
    } else {
        0
    };
    let mut r = read(ctx, key, from.as_deref(), count, false, managed, history).await?;
    if managed && history && ctx.backfill.rows > 0 {
        if let Some(frame) = r.frame.take() {
            r.frame = Some(backfilled(ctx, key, r.top, frame).await?);
        }
    }
    Ok(Some(r))
}

/// The subscribe result of a history channel whose position here is `top`.
fn answer(
    ctx: &Ctx,
    req: &SubscribeQuery,
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
        let need = top.saturating_sub(pos.offset);
        let missed: Vec<StoredPublication> = r
            .entries
            .iter()
            .filter(|(o, _)| *o > pos.offset && *o <= top)
            .filter_map(|(o, p)| stored(*o, p))
            .collect();
        // Every offset from the client's to the top, each convertible: nothing left out.
        let whole = missed.len() as u64 == need
            && missed
                .iter()
                .enumerate()
                .all(|(i, p)| p.offset == pos.offset + 1 + i as u64);
        if pos.epoch == r.epoch && pos.offset <= top && need as usize <= ctx.max_read && whole {
            publications = missed;
            res.recovered = true;
            res.offset = pos.offset;
            res.publications = &publications;
        }
    }
    req.answer.result(&res)
}

/// A managed stream's last frame extended with its recent rows from the history in Redis, up
/// to `top` (`[push.backfill]`, `persist::backfill`).
async fn backfilled(ctx: &Ctx, key: &str, top: u64, frame: String) -> Result<String, ErrorCode> {
    #[derive(serde::Deserialize)]
    struct Full<'a> {
        #[serde(borrow)]
        schema: &'a serde_json::value::RawValue,
    }
    let Some(schema) = serde_json::from_str::<Full<'_>>(&frame)
        .ok()
        .map(|f| f.schema.get().to_owned())
    else {
        return Ok(frame);
    };
    let b = &ctx.backfill;
    let r = read(ctx, key, Some(&top.to_string()), b.rows, true, false, false).await?;
    let records: Vec<(u64, String)> = r
        .entries
        .into_iter()
        .filter_map(|(_, p)| Some((p.time.max(0) as u64, String::from_utf8(p.data).ok()?)))
        .collect();
    let bounds = backfill::Bounds {
        rows: b.rows,
        since_ms: (super::unix_ms().max(0) as u64).saturating_sub(b.window.as_millis() as u64),
        max_bytes: b.max_bytes,
    };
    Ok(backfill::merge(&schema, &records, bounds).unwrap_or(frame))
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
            // Subscribes under way: they see this and undo themselves.
            for p in lock_pending(ctx).values_mut() {
                if p.key == *key && p.client == client {
                    p.cancelled = true;
                }
            }
            return false;
        }
        // Under the lock, as the subscribe added them.
        if kind.presence {
            ctx.presence.remove(ctx, key, &info.client);
        }
        if kind.join_leave {
            announce(ctx, key, info, false);
        }
        true
    });
    if gone {
        ctx.subs.release(key);
    }
}
