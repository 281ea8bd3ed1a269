//! The storage thread: writes and, where no head does, sequences every history channel and
//! managed stream (see the module above), and runs retention.
//!
//! Offsets are reserved durably in blocks: before an offset beyond the reservation is handed
//! out, here or by a head, the extended reservation is written and synced (a head's is
//! extended once half of it is used, so it rarely runs out). A clean stop records every channel's
//! exact top; after a crash a channel resumes above its reservation, so an offset that a
//! subscriber may have received is never reused for different content, and a client positioned
//! among lost publications is told `recovered: false` instead of being handed a silent gap.

use std::collections::HashMap;

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use edgelive_storage::{
    ChannelMeta, HistorySize, Publication as Stored, Publisher, Store, StoreError,
};

mod reads;
mod retention;
mod sizes;

pub use sizes::HistorySizes;

use super::flusher::Pending;
use super::frames::LastFrames;
use super::{info_json, Ack, Health, Position, Request, Slots, StorageSettings};
use crate::channel_kind::{ChannelKind, HistoryPolicy};
use crate::config::Durability;
use crate::head::Sequenced;
use crate::hub::{Hub, Subscriber};
use crate::json::CompactJson;
use crate::protocol::reply::{self, ClientInfo, Publication};
use crate::protocol::ErrorCode;
use crate::watchdog::Progress;

/// Offsets reserved per durable write of a channel's meta.
const RESERVE_BLOCK: u64 = 4096;
/// How often retention runs, and how many channels one run looks at.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
const SWEEP_CHANNELS: usize = 64;
/// Most publications one trim removes (trimming is incremental).
const TRIM_BATCH: usize = 256;

/// What the sequencer keeps in memory per channel with history.
struct Chan {
    meta: ChannelMeta,
    /// Lowest stored offset (top + 1 when nothing is stored).
    first: u64,
    policy: Option<HistoryPolicy>,
    size: HistorySize,
}

pub struct Sequencer {
    store: Arc<Store>,
    hub: Arc<Hub>,
    settings: StorageSettings,
    flush: mpsc::SyncSender<Pending>,
    health: Arc<Health>,
    sizes: Arc<Mutex<HistorySizes>>,
    queued: Arc<Slots>,
    channels: HashMap<Arc<str>, Chan>,
    /// Managed streams' last frames.
    frames: LastFrames,
    /// Epochs handed to subscribers and history readers of channels that have no publication
    /// yet. A read never creates durable state (a viewer could otherwise fill
    /// `max_channels` with reads of random names until `channel_idle_ttl`); the first
    /// publication creates the channel with the epoch its readers were already told. Bounded
    /// by `max_channels`: when full, promises nobody is subscribed to are forgotten (their
    /// holders just get `recovered: false` later).
    promised: HashMap<Arc<str>, String>,
    /// Round-robin position of retention over `channels`.
    sweep_queue: Vec<Arc<str>>,
    /// What retention stamps and ages are measured on (never steps with the wall clock).
    clock: Timeline,
    /// The last wall-clock step logged, so a step is logged once.
    logged_step_ms: i64,
    /// Seen by the watchdog.
    progress: Arc<Progress>,
}

use crate::clock::Timeline;

/// What the sequencer works with, handed over by `Persist::start`.
pub struct Parts {
    pub store: Arc<Store>,
    pub hub: Arc<Hub>,
    pub settings: StorageSettings,
    pub flush: mpsc::SyncSender<Pending>,
    pub health: Arc<Health>,
    pub sizes: Arc<Mutex<HistorySizes>>,
    pub queued: Arc<Slots>,
    pub progress: Arc<Progress>,
    /// Managed streams' field sets, reset when their frames are evicted.
    pub sticky: Arc<crate::ingest::sticky::Sticky>,
}

impl Sequencer {
    pub fn new(p: Parts) -> Sequencer {
        Sequencer {
            store: p.store,
            hub: p.hub,
            settings: p.settings,
            flush: p.flush,
            health: p.health,
            sizes: p.sizes,
            queued: p.queued,
            channels: HashMap::new(),
            frames: LastFrames::new(p.sticky),
            promised: HashMap::new(),
            sweep_queue: Vec::new(),
            clock: Timeline::start(0),
            logged_step_ms: 0,
            progress: p.progress,
        }
    }

    /// Loads every channel and logs the history size per pattern (before the daemon listens).
    pub fn start(&mut self) {
        if let Err(e) = self.load() {
            self.health.degrade(format!("cannot load channels: {e}"));
        }
        match self.frames.load(&self.store) {
            Ok(n) if n > 0 => info!(streams = n, "managed stream frames loaded"),
            Ok(_) => {}
            Err(e) => self
                .health
                .degrade(format!("cannot load managed stream frames: {e}")),
        }
        if let Err(e) = self.restore_frames() {
            self.health
                .degrade(format!("cannot read managed streams' history: {e}"));
        }
        self.start_clock();
        self.publish_sizes(true);
    }

    pub fn run(mut self, rx: mpsc::Receiver<Request>) {
        let mut last_sweep = Instant::now();
        loop {
            match rx.recv_timeout(SWEEP_EVERY) {
                Ok(req) => {
                    self.queued.give_back(1);
                    if matches!(req, Request::Stop) {
                        self.finish_writes(&rx);
                        break;
                    }
                    self.progress.busy();
                    self.handle(req);
                    self.progress.idle();
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                self.progress.busy();
                self.sweep();
                self.progress.idle();
                self.publish_sizes(false);
                last_sweep = Instant::now();
            }
        }
        self.stop_cleanly();
    }

    /// At a stop: takes every head and last frame away, so nothing more is sequenced or
    /// published in memory, then stores what was before that (its writes are queued already).
    /// Other late requests are dropped: their clients are being closed.
    fn finish_writes(&mut self, rx: &mpsc::Receiver<Request>) {
        self.hub.detach_sequencing();
        for req in rx.try_iter() {
            self.queued.give_back(1);
            if matches!(
                req,
                Request::Append { .. } | Request::PushSequenced { .. } | Request::Forward { .. }
            ) {
                self.handle(req);
            }
        }
    }

    /// Loads every channel with history. After an unclean stop (a crash or a power cut: no
    /// clean-stop mark) each channel whose reservation lies above its recorded top resumes
    /// above the reservation (`Store::resume`), keeping its epoch: offsets up to the
    /// reservation may have been seen, so they are never handed out again, and a client
    /// positioned among them gets `recovered: false`. Each such decision is logged.
    fn load(&mut self) -> Result<(), StoreError> {
        let stored: Vec<(String, ChannelMeta)> = self.store.channels().collect::<Result<_, _>>()?;
        let clean = self.store.was_clean_stop();
        if !clean && !stored.is_empty() {
            warn!(
                channels = stored.len(),
                "unclean stop (crash or power cut): what was not acknowledged may be lost; every channel keeps its epoch and resumes above its offset reservation"
            );
        }
        for (name, before) in stored {
            let top_before = before.top;
            let meta = self.store.resume(&name, before)?;
            let size = self.store.history_size(meta.id)?;
            let first = self.store.first_offset(meta.id)?.unwrap_or(meta.top + 1);
            if meta.top != top_before {
                let last = self.store.last_offset(meta.id)?.unwrap_or(0);
                warn!(
                    channel = %name,
                    epoch = %meta.epoch,
                    last_stored = last,
                    resumes_after = meta.top,
                    "channel resumes above its offset reservation"
                );
            }
            let policy = self.settings.kinds.history_for(&name);
            self.channels.insert(
                Arc::from(name),
                Chan {
                    meta,
                    first,
                    policy,
                    size,
                },
            );
        }
        Ok(())
    }

    /// Managed streams with history store a data-only push only in history (see
    /// `frames.rs`): after a crash, each takes its newest record back as its last frame.
    fn restore_frames(&mut self) -> Result<(), StoreError> {
        for key in self.frames.keys() {
            let Some(ch) = self.channels.get(&key) else {
                continue;
            };
            let Some(last) = self.store.last_offset(ch.meta.id)? else {
                continue;
            };
            if let Some((_, p)) = self.store.read(ch.meta.id, last, last, 1, false)?.pop() {
                self.frames.restore(&key, &p.data, p.time_ms);
            }
        }
        Ok(())
    }

    /// Records every channel's exact top and every managed stream's newest frame, so that a
    /// clean restart recovers exactly and needs no history to rebuild a frame.
    fn stop_cleanly(&mut self) {
        let mut failed = self.frames.write_back_all(&self.store).err();
        for (name, ch) in &mut self.channels {
            ch.meta.reserved = ch.meta.top;
            if let Err(e) = self.store.save_channel(name, &ch.meta) {
                failed = Some(e);
            }
        }
        if let Err(e) = self
            .store
            .mark_clean_stop()
            .and_then(|()| self.store.sync())
        {
            failed = Some(e);
        }
        match failed {
            None => info!(channels = self.channels.len(), "storage stopped cleanly"),
            Some(e) => warn!(error = %e, "storage could not record a clean stop"),
        }
    }

    fn handle(&mut self, req: Request) {
        match req {
            Request::Subscribe(super::SubscribeQuery {
                key,
                kind,
                sub,
                answer,
                recover,
                initial,
            }) => {
                self.subscribe(key.clone(), kind, sub, answer, recover, initial);
                if kind.managed {
                    self.settle_stream(&key);
                    self.settle(&key, self.stream_head(kind.history));
                } else {
                    self.settle(&key, kind.history);
                }
            }
            Request::Unsubscribe {
                key,
                kind,
                client,
                info,
            } => {
                // The session found it absent from the hub: its subscribe was still queued
                // here then and has added it since.
                self.hub.leave(&key, client, kind.join_leave);
                if kind.presence {
                    if let Err(e) = self.store.presence_remove(&key, &info.client) {
                        self.fail(&e);
                    }
                }
            }
            Request::Publish {
                key,
                policy,
                data,
                info,
                ack,
            } => {
                self.publish(key.clone(), policy, data, info, ack);
                self.settle(&key, policy);
            }
            Request::Append {
                key,
                publication,
                ack,
            } => self.append_sequenced(&key, &publication, ack),
            Request::Push {
                key,
                policy,
                frame,
                retained,
                ack,
            } => {
                self.push(key.clone(), policy, frame, retained, ack);
                self.settle_stream(&key);
                self.settle(&key, self.stream_head(policy));
            }
            Request::PushSequenced {
                key,
                frame,
                publication,
                ack,
            } => self.push_sequenced(&key, frame, publication, ack),
            Request::Forward {
                queues,
                entries,
                ack,
            } => {
                for q in &queues {
                    for entry in &entries {
                        if let Err(e) = q.append(entry) {
                            warn!(target = %q.name(), error = %e, "cannot queue points for forwarding");
                            self.fail(&e);
                            ack.complete(Err(ErrorCode::Internal));
                            return;
                        }
                    }
                }
                // Nobody waits for an entry queued ahead of its push's frames: their
                // acknowledgement's commit covers it (handing the flusher an acknowledgement
                // here would start a commit of its own).
                if !matches!(ack, Ack::Discard) {
                    self.acknowledge(ack, 0);
                }
            }
            Request::List { reply } => {
                let streams = self.frames.list(self.clock.now_ms());
                let mut history: Vec<(String, u64)> = self
                    .channels
                    .iter()
                    .filter(|(k, _)| !k.starts_with("stream/"))
                    .map(|(k, c)| (k.to_string(), c.meta.last_ms))
                    .collect();
                history.sort();
                let _ = reply.send(super::Listing { streams, history });
            }
            Request::History(super::HistoryQuery {
                key,
                policy,
                outbox,
                id,
                limit,
                since,
                reverse,
            }) => {
                let msg = self
                    .history(&key, policy, id, limit, since, reverse)
                    .unwrap_or_else(|code| reply::error(id, code, None));
                let _ = outbox.push(msg);
            }
            Request::PresenceWrite { key, client, info } => {
                let written = match info {
                    Some(info) => self.store.presence_add(&key, &client, &info),
                    None => self.store.presence_remove(&key, &client).map(|_| ()),
                };
                if let Err(e) = written {
                    self.fail(&e);
                }
            }
            Request::Stop => {}
        }
    }

    /// A subscribe or publish of the channel is done (see `Request`). A history channel
    /// stored here gets its head in the hub (or has it brought up to date), so what follows
    /// is sequenced there until the next request that must come here.
    fn settle(&self, key: &Arc<str>, head: Option<HistoryPolicy>) {
        let chan = self.channels.get(key);
        self.hub.with(key, |ch| {
            if let (Some(policy), Some(chan)) = (head, chan) {
                let meta = &chan.meta;
                match ch.head_mut() {
                    Some(h) if h.top == meta.top && h.epoch == meta.epoch => {
                        h.reserved = h.reserved.max(meta.reserved);
                    }
                    _ => ch.install(meta.epoch.clone(), meta.top, meta.reserved, policy),
                }
            }
            ch.settle();
        });
    }

    /// What a managed stream's head keeps: with backfill on, its subscribes are answered here
    /// from disk, so the head only hands out offsets and keeps no recent publications (which
    /// would take the hub-wide budget from channels that recover from memory).
    fn stream_head(&self, policy: Option<HistoryPolicy>) -> Option<HistoryPolicy> {
        policy.map(|p| match self.settings.backfill.rows {
            0 => p,
            _ => HistoryPolicy { size: 0, ..p },
        })
    }

    /// Gives the broker a managed stream's last frame (or takes it away when there is none),
    /// before its request is settled.
    fn settle_stream(&self, key: &Arc<str>) {
        let frame = self.frames.frame_of(key).cloned();
        self.hub.with(key, |ch| ch.set_last_frame(frame));
    }

    fn fail(&self, e: &StoreError) {
        self.health.degrade(e.to_string());
    }

    /// The epoch a reader of a channel without publications is told: the one already promised,
    /// else a new one, remembered while there is room.
    fn promise(&mut self, key: &Arc<str>) -> String {
        if let Some(e) = self.promised.get(key) {
            return e.clone();
        }
        let epoch = edgelive_storage::new_epoch();
        if self.promised.len() >= self.settings.max_channels {
            let hub = &self.hub;
            self.promised.retain(|k, _| hub.num_subscribers(k) > 0);
        }
        if self.promised.len() < self.settings.max_channels {
            self.promised.insert(key.clone(), epoch.clone());
        }
        epoch
    }

    /// A channel's state for a publication: created on the first one (with the epoch promised
    /// to its readers), the only way durable channel state comes to be.
    fn channel(
        &mut self,
        key: &Arc<str>,
        policy: Option<HistoryPolicy>,
    ) -> Result<&mut Chan, ErrorCode> {
        if !self.channels.contains_key(key) {
            if self.channels.len() >= self.settings.max_channels {
                warn!(
                    max = self.settings.max_channels,
                    "channel limit reached; refusing a new channel"
                );
                return Err(ErrorCode::LimitExceeded);
            }
            let epoch = self
                .promised
                .remove(key)
                .unwrap_or_else(edgelive_storage::new_epoch);
            let created = self
                .store
                .create_channel_with_epoch(key, epoch, self.clock.now_ms());
            let meta = created.map_err(|e| {
                self.fail(&e);
                ErrorCode::Internal
            })?;
            let first = meta.top + 1;
            let chan = Chan {
                meta,
                first,
                policy,
                size: HistorySize::default(),
            };
            self.channels.insert(key.clone(), chan);
        }
        let ch = self.channels.get_mut(key).expect("inserted above");
        ch.policy = policy;
        Ok(ch)
    }

    fn subscribe(
        &mut self,
        key: Arc<str>,
        kind: ChannelKind,
        sub: Subscriber,
        answer: reply::SubscribeAnswer,
        recover: Option<Position>,
        initial: Option<CompactJson<'static>>,
    ) {
        if sub.outbox.is_closing() {
            return;
        }
        let initial = initial.or_else(|| {
            kind.managed
                .then(|| self.managed_initial(&key, kind.history.is_some()))
                .flatten()
                .and_then(|s| CompactJson::from_string(s).ok())
        });
        let msg = match kind.history {
            None => answer.result(&reply::SubscribeResult {
                data: initial.as_ref(),
                ..Default::default()
            }),
            Some(policy) => match self.subscribe_result(&key, policy, &answer, recover, initial) {
                Ok(m) => m,
                Err(code) => {
                    sub.outbox.refuse_subscription(key);
                    let _ = sub.outbox.push(answer.error(code));
                    return;
                }
            },
        };
        let info = sub.info.clone();
        let outbox = sub.outbox.clone();
        let added = self.hub.join(&key, sub, kind.join_leave, || {
            let _ = outbox.push(msg);
        });
        if !added {
            // The connection closed meanwhile; its session has left without it.
            return;
        }
        if kind.presence {
            // After the reply is queued: sled's copy is behind the hot path.
            if let Err(e) = self
                .store
                .presence_add(&key, &info.client, &info_json(&info))
            {
                self.fail(&e);
            }
        }
    }

    /// A managed stream's subscribe data: its last frame, extended with its recent rows from
    /// history where it keeps history and `[push.backfill]` is on (`backfill.rs`).
    fn managed_initial(&self, key: &Arc<str>, history: bool) -> Option<String> {
        let last = self.frames.initial_data(key)?;
        let b = &self.settings.backfill;
        let Some(ch) = self.channels.get(key).filter(|_| history && b.rows > 0) else {
            return Some(last);
        };
        let schema = self.frames.schema_of(key)?;
        let records: Vec<(u64, String)> = self
            .store
            .read(ch.meta.id, ch.first, ch.meta.top, b.rows, true)
            .unwrap_or_default()
            .into_iter()
            .map(|(_, p)| (p.time_ms, p.data))
            .collect();
        let bounds = super::backfill::Bounds {
            rows: b.rows,
            since_ms: self
                .clock
                .now_ms()
                .saturating_sub(b.window.as_millis() as u64),
            max_bytes: b.max_bytes,
        };
        Some(super::backfill::merge(schema, &records, bounds).unwrap_or(last))
    }

    /// A managed-stream frame: published like any publication (with history when the
    /// channel keeps it), schema only when it changed, and then recorded as the last frame.
    /// Only a frame that went out becomes the last one: a failed one must not make the next
    /// push data only for subscribers that never had its schema.
    fn push(
        &mut self,
        key: Arc<str>,
        policy: Option<HistoryPolicy>,
        frame: crate::frame::FrameJson,
        retained: bool,
        ack: Ack,
    ) {
        let max = self.settings.max_channels;
        if retained && self.frames.repeats(&key, &frame) {
            self.acknowledge(ack, 0);
            return;
        }
        let Some(payload) = self.frames.payload_for(&key, &frame, max) else {
            warn!(max, "managed stream limit reached; refusing a new stream");
            ack.complete(Err(ErrorCode::LimitExceeded));
            return;
        };
        let data = CompactJson::from_encoder(&payload);
        let now = self.clock.now_ms();
        match policy {
            Some(policy) => match self.append(&key, policy, &data, None) {
                Ok(offset) => {
                    // The record holds the frame if this write fails (see `LastFrames`).
                    let kept = self
                        .frames
                        .keep(&self.store, &key, Arc::new(frame), now, true);
                    if let Err(e) = kept {
                        self.fail(&e);
                    }
                    self.announce(&key, offset, data, None);
                    self.acknowledge(ack, offset);
                }
                Err(code) => ack.complete(Err(code)),
            },
            // No history: the kept last frame is what must be durable before the ack.
            None => match self
                .frames
                .keep(&self.store, &key, Arc::new(frame), now, false)
            {
                Ok(()) => {
                    self.broadcast(&key, &data, None, 0);
                    self.acknowledge(ack, 0);
                }
                Err(e) => {
                    self.fail(&e);
                    ack.complete(Err(ErrorCode::Internal));
                }
            },
        }
    }

    fn publish(
        &mut self,
        key: Arc<str>,
        policy: Option<HistoryPolicy>,
        data: CompactJson<'static>,
        info: Option<Arc<ClientInfo>>,
        ack: Ack,
    ) {
        let Some(policy) = policy else {
            // A presence channel without history: sequenced here only to keep one order.
            self.broadcast(&key, &data, info.as_deref(), 0);
            ack.complete(Ok(0));
            return;
        };
        match self.append(&key, policy, &data, info.as_deref()) {
            Ok(offset) => {
                self.announce(&key, offset, data, info);
                self.acknowledge(ack, offset);
            }
            Err(code) => ack.complete(Err(code)),
        }
    }

    /// Keeps a stored publication in the channel's head (if memory holds one) and broadcasts
    /// it.
    fn announce(
        &self,
        key: &Arc<str>,
        offset: u64,
        data: CompactJson<'static>,
        info: Option<Arc<ClientInfo>>,
    ) {
        let p = Arc::new(Sequenced {
            offset,
            data,
            info,
            at: Instant::now(),
        });
        self.hub.with(key, |ch| {
            if let Some(head) = ch.head_mut() {
                head.record(p.clone());
            }
            ch.broadcast(|name| p.push(name));
        });
    }

    /// Keeps a managed-stream frame the broker published from memory as the stream's last
    /// frame (its stream is known there, so no stream limit applies), stores its publication
    /// where the channel keeps history, and acknowledges it once durable.
    fn push_sequenced(
        &mut self,
        key: &Arc<str>,
        frame: Arc<crate::frame::FrameJson>,
        publication: Option<Arc<Sequenced>>,
        ack: Ack,
    ) {
        let now = self.clock.now_ms();
        let kept = self
            .frames
            .keep(&self.store, key, frame, now, publication.is_some());
        if let Err(e) = kept {
            self.fail(&e);
            if let (Some(p), Some(ch)) = (&publication, self.channels.get_mut(key)) {
                // Subscribers have it: its offset is spent (see `append_sequenced`).
                ch.meta.top = ch.meta.top.max(p.offset);
            }
            ack.complete(Err(ErrorCode::Internal));
            return;
        }
        match publication {
            Some(p) => self.append_sequenced(key, &p, ack),
            None => self.acknowledge(ack, 0),
        }
    }

    /// Stores a publication a head sequenced, then keeps the head's reservation ahead of it.
    fn append_sequenced(&mut self, key: &Arc<str>, p: &Sequenced, ack: Ack) {
        match self.write(key, p.offset, &p.data, p.info.as_deref()) {
            Ok(()) => {
                self.reserve_ahead(key);
                self.acknowledge(ack, p.offset);
            }
            Err(code) => {
                // Subscribers already have it: its offset is spent, as after a crash, so the
                // next publication gets the one after (a reader finds a hole, never a reuse).
                if let Some(ch) = self.channels.get_mut(key) {
                    ch.meta.top = ch.meta.top.max(p.offset);
                }
                ack.complete(Err(code))
            }
        }
    }

    /// Extends a channel's reservation once half of it is used, synced before the head may
    /// hand out the new offsets, so a head rarely runs out and sends a publication here.
    fn reserve_ahead(&mut self, key: &Arc<str>) {
        let Some(ch) = self.channels.get(key) else {
            return;
        };
        if ch.meta.top + RESERVE_BLOCK / 2 <= ch.meta.reserved {
            return;
        }
        // On failure the head keeps its reservation; past it, publications come here and fail.
        let Ok(reserved) = self.extend_reservation(key) else {
            return;
        };
        self.hub.with(key, |c| {
            if let Some(h) = c.head_mut() {
                h.reserved = h.reserved.max(reserved);
            }
        });
    }

    /// Hands a publication to the channel's subscribers (encoded once by the hub).
    fn broadcast(&self, key: &str, data: &CompactJson<'_>, info: Option<&ClientInfo>, offset: u64) {
        self.hub.broadcast(key, |name| {
            reply::publication(name, Publication { data, info, offset })
        });
    }

    /// Acknowledges a write now, or after the group commit that covers it (`batched`).
    fn acknowledge(&self, ack: Ack, offset: u64) {
        match self.settings.durability {
            Durability::None => ack.complete(Ok(offset)),
            Durability::Batched | Durability::Crash => {
                if let Err(mpsc::SendError((ack, _))) = self.flush.send((ack, offset)) {
                    ack.complete(Err(ErrorCode::Internal));
                }
            }
        }
    }

    /// Reserves the next `RESERVE_BLOCK` offsets above the channel's top, synced (not only
    /// flushed) before any of them is broadcast: an offset a subscriber saw must never be
    /// handed out again after a power cut. Returns the new reservation.
    fn extend_reservation(&mut self, key: &Arc<str>) -> Result<u64, ErrorCode> {
        let now = self.clock.now_ms();
        let reach = super::reach(self.settings.durability);
        let ch = self.channels.get_mut(key).ok_or(ErrorCode::Internal)?;
        let mut meta = ch.meta.clone();
        meta.reserved = meta.top + RESERVE_BLOCK;
        meta.last_ms = now;
        let saved = self
            .store
            .save_channel(key, &meta)
            .and_then(|()| self.store.commit(reach));
        if let Err(e) = saved {
            self.health.degrade(e.to_string());
            return Err(ErrorCode::Internal);
        }
        ch.meta.reserved = meta.reserved;
        Ok(meta.reserved)
    }

    /// Assigns the next offset (creating the channel, extending its reservation when needed),
    /// stores the publication, trims by size.
    fn append(
        &mut self,
        key: &Arc<str>,
        policy: HistoryPolicy,
        data: &CompactJson<'_>,
        info: Option<&ClientInfo>,
    ) -> Result<u64, ErrorCode> {
        let ch = self.channel(key, Some(policy))?;
        let offset = ch.meta.top + 1;
        if offset > ch.meta.reserved {
            self.extend_reservation(key)?;
        }
        self.write(key, offset, data, info)?;
        Ok(offset)
    }

    /// Stores a publication at its offset (above the channel's top, within its reservation)
    /// and trims the history by size.
    fn write(
        &mut self,
        key: &Arc<str>,
        offset: u64,
        data: &CompactJson<'_>,
        info: Option<&ClientInfo>,
    ) -> Result<(), ErrorCode> {
        let store = self.store.clone();
        let health = self.health.clone();
        let fail = |e: StoreError| {
            health.degrade(e.to_string());
            ErrorCode::Internal
        };
        let now = self.clock.now_ms();
        let Some(ch) = self.channels.get_mut(key) else {
            warn!(channel = %key, offset, "a publication for a channel that is not stored");
            return Err(ErrorCode::Internal);
        };
        if offset <= ch.meta.top || offset > ch.meta.reserved {
            warn!(channel = %key, offset, top = ch.meta.top, "a publication out of sequence");
            return Err(ErrorCode::Internal);
        }
        let record = Stored {
            data: data.get().to_owned(),
            info: info.map(|i| Publisher {
                user: i.user.clone(),
                client: i.client.clone(),
                conn_info: i.conn_info.as_ref().map(|r| r.get().to_owned()),
                chan_info: i.chan_info.as_ref().map(|r| r.get().to_owned()),
            }),
            time_ms: now,
        };
        let bytes = store.append(ch.meta.id, offset, &record).map_err(fail)?;
        ch.meta.top = offset;
        ch.meta.last_ms = now;
        ch.size.entries += 1;
        ch.size.bytes += bytes;
        let Some(policy) = ch.policy else {
            return Ok(());
        };
        if offset + 1 > ch.first + policy.size {
            let keep_from = offset + 1 - policy.size;
            let removed = store
                .remove_history(ch.meta.id, ch.first, keep_from, TRIM_BATCH)
                .map_err(fail)?;
            if removed.entries > 0 {
                ch.size.entries -= removed.entries.min(ch.size.entries);
                ch.size.bytes -= removed.bytes.min(ch.size.bytes);
                ch.first = store
                    .first_offset(ch.meta.id)
                    .map_err(fail)?
                    .unwrap_or(offset + 1);
            }
        }
        Ok(())
    }
}
