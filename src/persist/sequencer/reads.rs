//! Reads on the storage thread: a subscribe's position and recovery, and the history command.
//! None of them creates durable channel state.

use edgelive_storage::Publication as Stored;

use std::sync::Arc;

use super::{Position, Sequencer};
use crate::channel_kind::HistoryPolicy;
use crate::json::CompactJson;
use crate::protocol::reply::{self, ClientInfo, StoredPublication};
use crate::protocol::ErrorCode;

impl Sequencer {
    /// Position, and recovery when asked (design §6): the missed publications when the epoch
    /// matches and every one of them is still stored, else none and the current top.
    pub(super) fn subscribe_result(
        &mut self,
        key: &Arc<str>,
        policy: HistoryPolicy,
        answer: &reply::SubscribeAnswer,
        recover: Option<Position>,
        initial: Option<CompactJson<'static>>,
    ) -> Result<bytes::Bytes, ErrorCode> {
        let max_read = self.settings.max_read as u64;
        let store = self.store.clone();
        if !self.channels.contains_key(key) {
            // Nothing published yet: a position at 0 under the promised epoch, stored nowhere.
            let epoch = self.promise(key);
            let mut res = reply::SubscribeResult {
                recoverable: true,
                positioned: true,
                epoch: &epoch,
                data: initial.as_ref(),
                ..Default::default()
            };
            if let Some(pos) = recover {
                res.was_recovering = true;
                res.recovered = pos.offset == 0 && (pos.epoch.is_empty() || pos.epoch == epoch);
            }
            return Ok(answer.result(&res));
        }
        let ch = self.channels.get_mut(key).expect("checked above");
        ch.policy = Some(policy);
        let mut res = reply::SubscribeResult {
            recoverable: true,
            positioned: true,
            epoch: &ch.meta.epoch,
            offset: ch.meta.top,
            data: initial.as_ref(),
            ..Default::default()
        };
        let recovered;
        if let Some(pos) = recover {
            res.was_recovering = true;
            let top = ch.meta.top;
            let same_epoch = pos.epoch.is_empty() || pos.epoch == ch.meta.epoch;
            let missed = top.saturating_sub(pos.offset);
            let possible =
                same_epoch && pos.offset <= top && missed <= max_read && pos.offset + 1 >= ch.first;
            if possible {
                let items = store
                    .read(ch.meta.id, pos.offset + 1, top, missed as usize, false)
                    .unwrap_or_default();
                let complete = items.len() as u64 == missed
                    && items.first().is_none_or(|(o, _)| *o == pos.offset + 1);
                if complete {
                    recovered = items
                        .into_iter()
                        .filter_map(|(o, p)| stored(o, p))
                        .collect::<Vec<_>>();
                    if recovered.len() as u64 == missed {
                        let n = &self.hub.stats.recovered_from_disk;
                        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        res.recovered = true;
                        res.offset = pos.offset;
                        res.publications = &recovered;
                    }
                }
            }
        }
        Ok(answer.result(&res))
    }

    /// The history command (design §6): `limit` 0 = position only, -1 = all (capped),
    /// `since` = after that position, `reverse` = newest first; 112 on an epoch mismatch.
    pub(super) fn history(
        &mut self,
        key: &Arc<str>,
        policy: Option<HistoryPolicy>,
        id: u32,
        limit: i32,
        since: Option<Position>,
        reverse: bool,
    ) -> Result<bytes::Bytes, ErrorCode> {
        let Some(policy) = policy else {
            return Err(ErrorCode::NotAvailable);
        };
        if reverse && since.as_ref().is_some_and(|s| s.offset == 0) {
            return Err(ErrorCode::BadRequest);
        }
        let max_read = self.settings.max_read;
        let store = self.store.clone();
        if !self.channels.contains_key(key) {
            // Nothing published yet: an empty history under the promised epoch.
            let epoch = self.promise(key);
            if since
                .as_ref()
                .is_some_and(|s| !s.epoch.is_empty() && s.epoch != epoch)
            {
                return Err(ErrorCode::UnrecoverablePosition);
            }
            return Ok(reply::reply(
                id,
                "history",
                &reply::HistoryResult {
                    publications: &[],
                    epoch: &epoch,
                    offset: 0,
                },
            ));
        }
        let ch = self.channels.get_mut(key).expect("checked above");
        ch.policy = Some(policy);
        if let Some(s) = &since {
            if !s.epoch.is_empty() && s.epoch != ch.meta.epoch {
                return Err(ErrorCode::UnrecoverablePosition);
            }
        }
        let n = match limit {
            0 => 0,
            l if l < 0 => max_read,
            l => (l as usize).min(max_read),
        };
        let top = ch.meta.top;
        let items = if n == 0 {
            Ok(Vec::new())
        } else if reverse {
            let to = since.as_ref().map_or(top, |s| s.offset - 1).min(top);
            store.read(ch.meta.id, ch.first, to, n, true)
        } else {
            let from = since
                .as_ref()
                .map_or(ch.first, |s| s.offset.saturating_add(1))
                .max(ch.first);
            store.read(ch.meta.id, from, top, n, false)
        }
        .map_err(|e| {
            self.health.degrade(e.to_string());
            ErrorCode::Internal
        })?;
        let pubs: Vec<StoredPublication> = items
            .into_iter()
            .filter_map(|(o, p)| stored(o, p))
            .collect();
        let ch = &self.channels[key];
        Ok(reply::reply(
            id,
            "history",
            &reply::HistoryResult {
                publications: &pubs,
                epoch: &ch.meta.epoch,
                offset: top,
            },
        ))
    }
}

/// A stored publication as the protocol sends it.
fn stored(offset: u64, p: Stored) -> Option<StoredPublication> {
    // Compacted on the way out too: a record written before compaction was enforced may hold
    // a raw newline.
    let raw = |s: String| CompactJson::from_string(s).ok();
    Some(StoredPublication {
        data: raw(p.data)?,
        info: p.info.map(|i| ClientInfo {
            user: i.user,
            client: i.client,
            conn_info: i.conn_info.and_then(raw),
            chan_info: i.chan_info.and_then(raw),
        }),
        offset,
    })
}
