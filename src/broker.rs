//! The broker, in Centrifuge's sense: the one place that decides where a publication goes,
//! how a subscribe is positioned and recovered, and where history and presence come from.
//! Sessions, `POST /api/live/publish` and stream producers all call it; none of them knows
//! whether a channel is sequenced in memory or on the storage thread.
//!
//! - A channel without history or managed stream: broadcast by the hub at once, acknowledged
//!   at once; presence and join/leave from the hub's memory.
//! - A history channel whose head is in memory (see `head.rs`) and has no request queued at the
//!   storage thread: the publication gets the next reserved offset, is kept among the recent
//!   ones and broadcast, all under the channel's shard lock; its write is queued for the storage
//!   thread, which acknowledges it once durable. A subscribe is answered from the head,
//!   recovering from memory when the recent publications cover the position.
//! - A managed stream whose last frame memory holds (the storage thread hands it over once it
//!   has seen the stream) and, with history, whose head has a reserved offset: its frame is
//!   published here the same way, schema-once, and its write (the frame, the history record)
//!   queued; a subscribe is answered with the last frame unless backfill rows must be read.
//! - Otherwise (a channel not loaded yet, a reservation used up, recovery deeper than memory,
//!   a stream's first push since the start, backfill from disk, a retained MQTT value): the
//!   request goes to the storage thread, counted in the channel's in-flight requests, so
//!   nothing is sequenced in memory until it is settled there.
//!
//! Either way one order holds per channel: queue order at the storage thread follows the shard
//! lock, so a read there sees every write sequenced before it.
//!
//! With the Redis engine (`ha.rs`, `[live] ha_engine = "redis"`) every channel but a stream
//! handler's goes through Redis instead: publications, pushes, subscribes, history and presence;
//! the hub only fans out what arrives from Redis's pub/sub. A stream handler's channel stays
//! local: its producer runs on the node its subscribers are connected to.

use arc_swap::ArcSwap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::channel_kind::{ChannelKind, ChannelKinds, HistoryPolicy};
use crate::frame::FrameJson;
use crate::ha::Engine;
use crate::head::{Head, Position, Recovery, Sequenced};
use crate::hub::{ClientId, Hub, Locked, Subscriber};
use crate::json::CompactJson;
use crate::persist::{info_json, Ack, Busy, HistoryQuery, Persist, Request, SubscribeQuery};
use crate::protocol::reply::{self, ClientInfo, Publication, StoredPublication, SubscribeAnswer};
use crate::protocol::ErrorCode;

/// Cheap-clone handle (one pointer per connection that holds it).
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

/// The hub, the storage threads and what the broker reads of the settings.
struct Inner {
    hub: Arc<Hub>,
    persist: Persist,
    /// Which channels keep history (a push's frames are stored by their rule); a reload swaps
    /// it for channels created from then on.
    kinds: ArcSwap<ChannelKinds>,
    /// Most publications one recovery returns (`[storage] max_read`).
    max_read: usize,
    /// `[push.backfill]` is on: a managed stream with history answers a subscribe with rows
    /// read from disk, so its subscribes go to the storage thread.
    backfill: bool,
    /// The Redis engine, when on.
    engine: Option<Engine>,
}

/// How a subscribe went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// Answered here; `presence_written`: its presence entry was queued for sled, so leaving
    /// queues the removal.
    Here { presence_written: bool },
    /// Queued at the storage thread, which answers it and writes its presence.
    Queued,
}

impl Broker {
    pub fn new(
        hub: Arc<Hub>,
        persist: Persist,
        kinds: ChannelKinds,
        max_read: usize,
        backfill: bool,
    ) -> Broker {
        Broker {
            inner: Arc::new(Inner {
                hub,
                persist,
                kinds: ArcSwap::from_pointee(kinds),
                max_read,
                backfill,
                engine: None,
            }),
        }
    }

    /// Puts channels on the Redis engine (before the broker is cloned).
    pub fn with_engine(mut self, engine: Engine) -> Broker {
        Arc::get_mut(&mut self.inner)
            .expect("the engine is given before the broker is shared")
            .engine = Some(engine);
        self
    }

    pub fn engine(&self) -> Option<&Engine> {
        self.inner.engine.as_ref()
    }

    /// The engine, for a channel it carries (every channel but a stream handler's).
    fn engine_for(&self, kind: &ChannelKind) -> Option<&Engine> {
        self.inner.engine.as_ref().filter(|_| !kind.handler)
    }

    /// Reloaded history rules and handler namespaces.
    pub fn set_kinds(&self, kinds: ChannelKinds) {
        self.inner.kinds.store(Arc::new(kinds));
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.inner.hub
    }

    /// A push body's frames, all or none (`Err` when the storage queue cannot take them all:
    /// nothing happened); `ack` makes each frame's acknowledgement, completed once the frame
    /// is durable. A stream whose last frame memory holds (and, with history, whose head has a
    /// reserved offset) is published here, schema-once, under the channel's lock, and only its
    /// write is queued; the others (a stream not seen since the start, a retained MQTT value
    /// that may repeat, a request still queued on the channel) go to the storage thread.
    pub fn push(
        &self,
        frames: Vec<(Arc<str>, FrameJson)>,
        retained: bool,
        ack: impl FnMut() -> Ack,
    ) -> Result<(), Busy> {
        self.push_after(frames, retained, ack, None).map(drop)
    }

    /// `push`, with `before` queued to the storage thread ahead of the frames in the same
    /// reservation (all or nothing): a push's forwarding entry, written before the frames so
    /// the commit that acknowledges them covers it. Without the storage thread (the Redis
    /// engine) `before` is handed back, for the caller to queue itself.
    pub fn push_after(
        &self,
        frames: Vec<(Arc<str>, FrameJson)>,
        retained: bool,
        mut ack: impl FnMut() -> Ack,
        before: Option<Request>,
    ) -> Result<Option<Request>, Busy> {
        let kinds = self.inner.kinds.load();
        if let Some(engine) = &self.inner.engine {
            engine.push(frames, retained, |key| kinds.history_for(key), ack)?;
            return Ok(before);
        }
        let mut places = self
            .inner
            .persist
            .reserve(frames.len() + usize::from(before.is_some()))?;
        if let Some(req) = before {
            places.send(req)?;
        }
        for (key, frame) in frames {
            let policy = kinds.history_for(&key);
            let ack = ack();
            self.inner.hub.with(&key, |ch| {
                let here = match retained {
                    false => self.sequence_here(ch, policy, &frame),
                    true => None,
                };
                if let Some(p) = here {
                    let frame = Arc::new(frame);
                    // Queued under the lock, before the broadcast: the storage thread sees each
                    // channel's writes in the order they were sequenced, and nothing goes out
                    // that cannot be stored.
                    places.send(Request::PushSequenced {
                        key: key.clone(),
                        frame: frame.clone(),
                        publication: policy.map(|_| p.clone()),
                        ack,
                    })?;
                    ch.broadcast(|name| p.push(name));
                    if let Some(head) = ch.head_mut().filter(|_| policy.is_some()) {
                        head.record(p);
                    }
                    ch.set_last_frame(Some(frame));
                    let n = &self.inner.hub.stats.sequenced_in_memory;
                    n.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                ch.begin();
                let queued = places.send(Request::Push {
                    key: key.clone(),
                    policy,
                    frame,
                    retained,
                    ack,
                });
                if queued.is_err() {
                    ch.settle();
                }
                queued
            })?;
        }
        Ok(None)
    }

    /// A managed-stream frame's publication, sequenced in memory when memory can: the
    /// stream's last frame is here, no request of the channel is queued, and with history the
    /// head has a reserved offset (without, the offset is 0). Schema and data when the schema
    /// changed, else data only.
    fn sequence_here(
        &self,
        ch: &Locked<'_>,
        policy: Option<HistoryPolicy>,
        frame: &FrameJson,
    ) -> Option<Arc<Sequenced>> {
        let last = ch.last_frame().filter(|_| ch.in_flight() == 0)?;
        let offset = match policy {
            None => 0,
            Some(_) => ch.head().and_then(Head::next_offset)?,
        };
        let payload = if last.schema == frame.schema {
            frame.data_only()
        } else {
            frame.full()
        };
        Some(Arc::new(Sequenced {
            offset,
            data: CompactJson::from_encoder(&payload),
            info: None,
            at: Instant::now(),
        }))
    }

    /// Publishes on a routed channel; `ack` is completed once the publication is durable (at
    /// once where nothing is stored). `Err` when the storage queue is full: nothing happened.
    pub fn publish(
        &self,
        key: &Arc<str>,
        kind: &ChannelKind,
        data: CompactJson<'_>,
        info: Option<Arc<ClientInfo>>,
        ack: Ack,
    ) -> Result<(), Busy> {
        if let Some(engine) = self.engine_for(kind) {
            return engine.publish(key, kind.history, &data, info.as_deref(), ack);
        }
        if !kind.is_sequenced() {
            self.inner.hub.broadcast(key, |name| {
                reply::publication(
                    name,
                    Publication {
                        data: &data,
                        info: info.as_deref(),
                        offset: 0,
                    },
                )
            });
            ack.complete(Ok(0));
            return Ok(());
        }
        let data = data.into_owned();
        self.inner.hub.with(key, |ch| {
            let next = match (ch.in_flight(), kind.managed) {
                (0, false) => ch.head().and_then(Head::next_offset),
                _ => None,
            };
            let Some(offset) = next else {
                ch.begin();
                let queued = self.inner.persist.submit(Request::Publish {
                    key: key.clone(),
                    policy: kind.history,
                    data,
                    info,
                    ack,
                });
                if queued.is_err() {
                    ch.settle();
                }
                return queued;
            };
            let p = Arc::new(Sequenced {
                offset,
                data,
                info,
                at: Instant::now(),
            });
            // Queued first: a full queue refuses the publication before it has an offset.
            self.inner.persist.submit(Request::Append {
                key: key.clone(),
                publication: p.clone(),
                ack,
            })?;
            ch.broadcast(|name| p.push(name));
            ch.head_mut().expect("it gave the offset").record(p);
            let n = &self.inner.hub.stats.sequenced_in_memory;
            n.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
    }

    /// Subscribes `sub`, answering with `answer` (a reply, or a push for a server-side
    /// subscription) before any publication that follows it. `initial` is a stream handler's
    /// subscribe data. `Err` when the storage queue is full: nothing happened.
    pub fn subscribe(
        &self,
        key: &Arc<str>,
        kind: ChannelKind,
        sub: Subscriber,
        answer: SubscribeAnswer,
        recover: Option<Position>,
        initial: Option<String>,
    ) -> Result<Joined, Busy> {
        let query = SubscribeQuery {
            key: key.clone(),
            kind,
            sub,
            answer,
            recover,
            initial: initial.and_then(|s| CompactJson::from_string(s).ok()),
        };
        if let Some(engine) = self.engine_for(&kind) {
            return engine.subscribe(query).map(|()| Joined::Queued);
        }
        let joined = self.inner.hub.with(key, |ch| {
            let (answer, recover, initial) =
                (&query.answer, query.recover.as_ref(), &query.initial);
            let ready = if !kind.is_sequenced() {
                Some(answer.result(&reply::SubscribeResult {
                    data: initial.as_ref(),
                    ..Default::default()
                }))
            } else if ch.in_flight() > 0 {
                None
            } else if !kind.managed {
                ch.head()
                    .and_then(|h| self.answer_from(h, answer, recover, initial))
            } else {
                self.answer_managed(ch, kind, answer, recover)
            };
            let Some(msg) = ready else {
                ch.begin();
                let queued = self.inner.persist.submit(Request::Subscribe(query));
                if queued.is_err() {
                    ch.settle();
                }
                return queued.map(|()| None);
            };
            let sub = query.sub;
            let outbox = sub.outbox.clone();
            let info = sub.info.clone();
            let added = ch.join(sub, kind.join_leave, || {
                let _ = outbox.push(msg);
            });
            Ok(Some(added.then_some(info)))
        })?;
        let Some(added) = joined else {
            // The storage thread answers it and writes its presence.
            return Ok(Joined::Queued);
        };
        let presence_written = match added {
            // After the reply is queued: sled's copy is behind the hot path.
            Some(info) if kind.presence => self.write_presence(key, &info.client, Some(&info)),
            _ => false,
        };
        Ok(Joined::Here { presence_written })
    }

    /// Leaves a channel (and tells its remaining subscribers, where it has join/leave).
    /// `joined` is how the subscribe went. Never refused: a session that ends calls it.
    pub fn leave(
        &self,
        key: &Arc<str>,
        kind: ChannelKind,
        client: ClientId,
        info: &Arc<ClientInfo>,
        joined: Joined,
    ) {
        if let Some(engine) = self.engine_for(&kind) {
            return engine.leave(key, kind, client, info);
        }
        let was = self.inner.hub.leave(key, client, kind.join_leave);
        let presence_written = match joined {
            // Its subscribe may still be queued at the storage thread, which would add it:
            // the storage thread removes it after that (and sends the leave then).
            Joined::Queued if !was => {
                self.inner.persist.submit_always(Request::Unsubscribe {
                    key: key.clone(),
                    kind,
                    client,
                    info: info.clone(),
                });
                return;
            }
            Joined::Queued => kind.presence,
            Joined::Here { presence_written } => presence_written,
        };
        if presence_written {
            self.inner.persist.submit_always(Request::PresenceWrite {
                key: key.clone(),
                client: info.client.clone(),
                info: None,
            });
        }
    }

    /// Queues a presence entry for sled (`None` removes it); false when the queue is full.
    fn write_presence(&self, key: &Arc<str>, client: &str, info: Option<&ClientInfo>) -> bool {
        self.inner
            .persist
            .submit(Request::PresenceWrite {
                key: key.clone(),
                client: client.to_owned(),
                info: info.map(info_json),
            })
            .is_ok()
    }

    /// The history command: read on the storage thread (after every write queued before it),
    /// or from Redis.
    pub fn history(&self, kind: &ChannelKind, query: HistoryQuery) -> Result<(), Busy> {
        match self.engine_for(kind) {
            Some(engine) => engine.history(query),
            None => self.inner.persist.submit(Request::History(query)),
        }
    }

    /// Who is subscribed to a channel: from the hub's memory (at once), or with the Redis
    /// engine every node's clients (once read). `Err` when too many reads are in flight.
    pub fn presence(
        &self,
        key: &Arc<str>,
        kind: &ChannelKind,
        done: impl FnOnce(Result<Vec<Arc<ClientInfo>>, ErrorCode>) + Send + 'static,
    ) -> Result<(), Busy> {
        if let Some(engine) = self.engine_for(kind) {
            return engine.presence(key, done);
        }
        done(Ok(self.inner.hub.presence(key)));
        Ok(())
    }

    /// A managed stream's subscribe reply from memory: its last frame as the data, and with
    /// history the head's position; `None` when only the storage thread can answer (the
    /// stream not seen since the start, or backfill rows to read from disk).
    fn answer_managed(
        &self,
        ch: &Locked<'_>,
        kind: ChannelKind,
        answer: &SubscribeAnswer,
        recover: Option<&Position>,
    ) -> Option<Bytes> {
        let initial = Some(CompactJson::from_encoder(&ch.last_frame()?.full()));
        match kind.history {
            None => Some(answer.result(&reply::SubscribeResult {
                data: initial.as_ref(),
                ..Default::default()
            })),
            Some(_) if self.inner.backfill => None,
            Some(_) => self.answer_from(ch.head()?, answer, recover, &initial),
        }
    }

    /// The subscribe reply from a head, or `None` when only the disk can answer.
    fn answer_from(
        &self,
        head: &Head,
        answer: &SubscribeAnswer,
        recover: Option<&Position>,
        initial: &Option<CompactJson<'static>>,
    ) -> Option<Bytes> {
        let mut res = reply::SubscribeResult {
            recoverable: true,
            positioned: true,
            epoch: &head.epoch,
            offset: head.top,
            data: initial.as_ref(),
            ..Default::default()
        };
        let publications: Vec<StoredPublication>;
        if let Some(pos) = recover {
            res.was_recovering = true;
            match head.recover(pos, self.inner.max_read, Instant::now()) {
                Recovery::Cold => return None,
                Recovery::Unrecoverable => {}
                Recovery::Recovered(missed) => {
                    publications = missed
                        .iter()
                        .map(|p| StoredPublication {
                            data: p.data.clone(),
                            info: p.info.as_deref().cloned(),
                            offset: p.offset,
                        })
                        .collect();
                    res.recovered = true;
                    res.offset = pos.offset;
                    res.publications = &publications;
                    let n = &self.inner.hub.stats.recovered_from_memory;
                    n.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Some(answer.result(&res))
    }
}
