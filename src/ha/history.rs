//! Reading history from Redis: the one script that gives a history's position, publications
//! and a managed stream's last frame in one step, and the history command on it.

use std::sync::Arc;

use prost::Message as _;
use redis::Value;

use super::{proto, Ctx};
use crate::persist::{Busy, HistoryQuery};
use crate::protocol::reply::{self, StoredPublication};
use crate::protocol::ErrorCode;

/// A history read: top, epoch, entries (offset, publication), and a managed stream's frame.
pub struct Read {
    pub top: u64,
    pub epoch: String,
    pub entries: Vec<(u64, proto::Publication)>,
    pub frame: Option<String>,
}

/// A publication from Redis as a reply holds it (`None`: its payload is not JSON).
pub fn stored(offset: u64, p: &proto::Publication) -> Option<StoredPublication> {
    Some(StoredPublication {
        data: p.data_json().ok()?,
        info: match p.info.clone() {
            Some(i) => Some(i.into_reply().ok()?),
            None => None,
        },
        offset,
    })
}

/// Runs the history read script: entries from `from` (none when `None`), at most `count`; a
/// managed stream's frame with `frame`; the position unless `position` is false.
#[allow(clippy::too_many_arguments)]
pub async fn read(
    ctx: &Ctx,
    key: &str,
    from: Option<&str>,
    count: usize,
    reverse: bool,
    frame: bool,
    position: bool,
) -> Result<Read, ErrorCode> {
    let k = &ctx.settings.keys;
    let mut cmd = super::writer::evalsha(
        &ctx.scripts.history_read,
        &[k.stream(key), k.stream_meta(key), k.managed_stream(key)],
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
    .arg(super::new_epoch())
    .arg(if frame { "1" } else { "0" })
    .arg(if position { "1" } else { "0" });
    let (top, epoch, entries, frame): (u64, String, Vec<Value>, Option<String>) =
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
        frame,
    })
}

pub fn history(ctx: &Arc<Ctx>, req: HistoryQuery) -> Result<(), Busy> {
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
async fn history_reply(ctx: &Ctx, req: &HistoryQuery) -> Result<bytes::Bytes, ErrorCode> {
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
        (Some(s), false) => s.offset.saturating_add(1).to_string(),
        (Some(s), true) => (s.offset - 1).to_string(),
        (None, false) => "-".into(),
        (None, true) => "+".into(),
    };
    let skip = req.reverse && req.since.as_ref().is_some_and(|s| s.offset == 1);
    let from = Some(from.as_str()).filter(|_| n > 0 && !skip);
    let r = read(ctx, &req.key, from, n, req.reverse, false, true).await?;
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
