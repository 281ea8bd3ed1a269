//! The hub: who is subscribed to which channel, and fan-out.
//!
//! Channels are spread over shards, each behind its own `std::sync::Mutex` that is never held
//! across an `.await`. A broadcast encodes the push once per channel-name form (the bare name,
//! and the org-prefixed name when some subscriber used it) and hands clones of the same `Bytes`
//! to every subscriber's outbox; a full outbox closes that client as slow and nobody waits.
//! Subscribers whose connection is closing are skipped; their session removes them.
//!
//! A history channel's entry may also hold its head (`head.rs`): the broker sequences its
//! publications there, under the same lock as the broadcast, so offsets, recent publications
//! and subscribers change in one order.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::channel_kind::HistoryPolicy;
use crate::frame::FrameJson;
use crate::head::{Head, RecentBudget, RECENT_BUDGET_BYTES};
use crate::outbox::{Outbox, PushError};
use crate::protocol::reply::{self, ClientInfo};

/// Connection id inside the process (the protocol-level id is `ClientInfo::client`).
pub type ClientId = u64;

const SHARDS: usize = 16;

/// One subscription of one connection to one channel.
#[derive(Clone)]
pub struct Subscriber {
    pub client: ClientId,
    pub outbox: Arc<Outbox>,
    /// The client subscribed with the `<org>/` prefix, so its pushes carry that name.
    pub prefixed: bool,
    /// A server-side subscription (a JWT's `channels`): the client cannot resubscribe it
    /// itself, so where a client-side one is told to resubscribe (unsubscribe 2500), its
    /// connection is closed with 3010 to reconnect, as Centrifuge does.
    pub server_side: bool,
    pub info: Arc<ClientInfo>,
}

/// What the hub holds for one channel.
#[derive(Default)]
struct Entry {
    subs: Vec<Subscriber>,
    /// A history channel's head, while memory holds it (the broker sequences there).
    head: Option<Box<Head>>,
    /// Requests of this channel queued at the storage thread that sequence or position
    /// (publish, subscribe, a managed stream's push). While any is queued the head and the
    /// last frame are not used: the storage thread decides, in queue order, and settles each
    /// when done.
    in_flight: u32,
    /// A managed stream's last frame, as the storage thread last settled it and pushes
    /// sequenced here since: what decides schema-once publishing and answers a subscribe.
    last_frame: Option<Arc<FrameJson>>,
    /// With the Redis engine, a history channel's position as delivered here from pub/sub:
    /// what the next publication must follow (else its subscribers lost some).
    remote: Option<Box<Remote>>,
}

/// A history channel's last delivered position (the Redis engine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub epoch: String,
    pub offset: u64,
}

impl Entry {
    fn is_unused(&self) -> bool {
        self.subs.is_empty()
            && self.head.is_none()
            && self.in_flight == 0
            && self.last_frame.is_none()
    }
}

#[derive(Default)]
struct Shard {
    channels: HashMap<Arc<str>, Entry>,
}

/// Counters for metrics and benchmarks.
#[derive(Default)]
pub struct HubStats {
    pub publications: AtomicU64,
    pub deliveries: AtomicU64,
    pub slow_disconnects: AtomicU64,
    /// Subscribers recovered from a head's recent publications (the broker)…
    pub recovered_from_memory: AtomicU64,
    /// … and from disk (the storage thread).
    pub recovered_from_disk: AtomicU64,
    /// Publications sequenced by a head (the rest of the history channels' publications were
    /// sequenced on the storage thread).
    pub sequenced_in_memory: AtomicU64,
}

pub struct Hub {
    shards: Box<[Mutex<Shard>]>,
    /// `"<org>/"`, prepended for subscribers that used the prefixed name.
    org_prefix: String,
    pub stats: HubStats,
    /// Bounds the recent publications every head keeps.
    recent: Arc<RecentBudget>,
}

/// What one broadcast did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fanout {
    pub delivered: usize,
    pub slow: usize,
}

/// One channel under its shard's lock (see `Hub::with`).
pub struct Locked<'a> {
    hub: &'a Hub,
    key: &'a Arc<str>,
    entry: &'a mut Entry,
}

impl Locked<'_> {
    pub fn head(&self) -> Option<&Head> {
        self.entry.head.as_deref()
    }

    pub fn head_mut(&mut self) -> Option<&mut Head> {
        self.entry.head.as_deref_mut()
    }

    /// Gives the channel a head (the storage thread does, from what it stored).
    pub fn install(&mut self, epoch: String, top: u64, reserved: u64, policy: HistoryPolicy) {
        let budget = self.hub.recent.clone();
        self.entry.head = Some(Box::new(Head::new(epoch, top, reserved, policy, budget)));
    }

    /// Takes the head away: until one is installed again, the storage thread sequences.
    pub fn detach(&mut self) -> Option<Box<Head>> {
        self.entry.head.take()
    }

    pub fn in_flight(&self) -> u32 {
        self.entry.in_flight
    }

    /// A request of this channel was queued at the storage thread (see `Entry::in_flight`).
    pub fn begin(&mut self) {
        self.entry.in_flight += 1;
    }

    /// The storage thread is done with one.
    pub fn settle(&mut self) {
        self.entry.in_flight = self.entry.in_flight.saturating_sub(1);
    }

    /// A managed stream's last frame, when memory holds it.
    pub fn last_frame(&self) -> Option<&FrameJson> {
        self.entry.last_frame.as_deref()
    }

    /// Sets (or, with `None`, forgets) a managed stream's last frame.
    pub fn set_last_frame(&mut self, frame: Option<Arc<FrameJson>>) {
        self.entry.last_frame = frame;
    }

    pub fn num_subscribers(&self) -> usize {
        self.entry.subs.len()
    }

    pub fn remote(&self) -> Option<&Remote> {
        self.entry.remote.as_deref()
    }

    pub fn set_remote(&mut self, remote: Option<Remote>) {
        self.entry.remote = remote.map(Box::new);
    }

    /// Whether a client is subscribed.
    pub fn has(&self, client: ClientId) -> bool {
        self.entry.subs.iter().any(|s| s.client == client)
    }

    /// Removes a client's subscription, returning it.
    pub fn remove(&mut self, client: ClientId) -> Option<Subscriber> {
        let i = self.entry.subs.iter().position(|s| s.client == client)?;
        Some(self.entry.subs.swap_remove(i))
    }

    /// Ends the channel for every subscriber (see `Hub::end_channel`), returning them.
    pub fn end_all(&mut self, encode: impl Fn(&str) -> Bytes) -> Vec<Subscriber> {
        self.end_each(|s, name| {
            s.outbox.refuse_subscription(name.key());
            let _ = s.outbox.push(encode(name.as_sent()));
        })
    }

    /// Takes every subscriber away and runs `end` for each (with the channel's name as that
    /// subscriber wrote it), returning them.
    pub fn end_each(&mut self, end: impl Fn(&Subscriber, &Name<'_>)) -> Vec<Subscriber> {
        let subs = std::mem::take(&mut self.entry.subs);
        for s in &subs {
            let sent = match s.prefixed {
                true => std::borrow::Cow::Owned(format!("{}{}", self.hub.org_prefix, self.key)),
                false => std::borrow::Cow::Borrowed(&**self.key),
            };
            end(
                s,
                &Name {
                    key: self.key,
                    sent,
                },
            );
        }
        subs
    }

    /// Sends one push to every subscriber (see `Hub::broadcast`).
    pub fn broadcast(&self, encode: impl Fn(&str) -> Bytes) -> Fanout {
        self.hub.fan_out(self.key, &self.entry.subs, encode)
    }

    /// Adds a subscriber and runs `then` first, so that whatever `then` queues (the subscribe
    /// reply) is in the client's outbox before any publication broadcast after the
    /// subscription exists; then, when `announce`, a join push to everyone, itself included.
    /// A subscriber whose connection is already closing is not added (false): its session has
    /// left, or is leaving, every channel.
    pub fn join(&mut self, sub: Subscriber, announce: bool, then: impl FnOnce()) -> bool {
        if sub.outbox.is_closing() {
            return false;
        }
        let info = announce.then(|| sub.info.clone());
        // Room for one first: most channels on a device have one subscriber (a Vec's first
        // push makes room for four).
        self.entry
            .subs
            .reserve_exact(usize::from(self.entry.subs.is_empty()));
        self.entry.subs.push(sub);
        then();
        if let Some(info) = info {
            self.broadcast(|name| reply::join(name, &info));
        }
        true
    }
}

/// A channel's name for one subscriber (see `Locked::end_each`).
pub struct Name<'a> {
    key: &'a Arc<str>,
    sent: std::borrow::Cow<'a, str>,
}

impl Name<'_> {
    /// The hub's key.
    pub fn key(&self) -> Arc<str> {
        self.key.clone()
    }

    /// As the subscriber wrote it (with the org prefix when it used one).
    pub fn as_sent(&self) -> &str {
        &self.sent
    }
}

impl Hub {
    pub fn new(org_id: i64) -> Hub {
        Hub {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            org_prefix: format!("{org_id}/"),
            stats: HubStats::default(),
            recent: Arc::new(RecentBudget::new(RECENT_BUDGET_BYTES)),
        }
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        let i = (h.finish() as usize) % self.shards.len();
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the channel under its shard's lock (never held across an `.await`, and `f`
    /// does no I/O): what `f` decides and broadcasts is one step in the channel's order.
    pub fn with<R>(&self, key: &Arc<str>, f: impl FnOnce(&mut Locked<'_>) -> R) -> R {
        let mut shard = self.shard(key);
        let entry = shard.channels.entry(key.clone()).or_default();
        let mut locked = Locked {
            hub: self,
            key,
            entry,
        };
        let r = f(&mut locked);
        if locked.entry.is_unused() {
            shard.channels.remove(key);
        }
        r
    }

    /// Adds a subscriber (see `Locked::join`, without the announcement).
    pub fn subscribe(&self, key: &Arc<str>, sub: Subscriber, then: impl FnOnce()) -> bool {
        self.with(key, |ch| ch.join(sub, false, then))
    }

    /// Removes a client's subscription; true if it was there.
    pub fn unsubscribe(&self, key: &str, client: ClientId) -> bool {
        self.remove(key, client).is_some()
    }

    /// `subscribe`, then, when `announce` (channels with join/leave), a join push with the
    /// subscriber's info to everyone on the channel, itself included.
    pub fn join(
        &self,
        key: &Arc<str>,
        sub: Subscriber,
        announce: bool,
        then: impl FnOnce(),
    ) -> bool {
        self.with(key, |ch| ch.join(sub, announce, then))
    }

    /// `unsubscribe`, then, when `announce` and the subscription was there, a leave push to
    /// the channel's remaining subscribers.
    pub fn leave(&self, key: &str, client: ClientId, announce: bool) -> bool {
        let Some(gone) = self.remove(key, client) else {
            return false;
        };
        if announce {
            self.broadcast(key, |name| reply::leave(name, &gone.info));
        }
        true
    }

    fn remove(&self, key: &str, client: ClientId) -> Option<Subscriber> {
        let mut shard = self.shard(key);
        let entry = shard.channels.get_mut(key)?;
        let i = entry.subs.iter().position(|s| s.client == client)?;
        let gone = entry.subs.swap_remove(i);
        if entry.is_unused() {
            shard.channels.remove(key);
        }
        Some(gone)
    }

    /// Sends one push to every subscriber of `key`. `encode` gets the channel name as the
    /// subscriber wrote it and is called at most once per form.
    pub fn broadcast(&self, key: &str, encode: impl Fn(&str) -> Bytes) -> Fanout {
        let shard = self.shard(key);
        let Some(entry) = shard.channels.get(key) else {
            return Fanout::default();
        };
        self.fan_out(key, &entry.subs, encode)
    }

    fn fan_out(&self, key: &str, subs: &[Subscriber], encode: impl Fn(&str) -> Bytes) -> Fanout {
        let mut bare: Option<Bytes> = None;
        let mut prefixed: Option<Bytes> = None;
        let mut out = Fanout::default();
        for s in subs {
            let msg = if s.prefixed {
                prefixed.get_or_insert_with(|| encode(&format!("{}{key}", self.org_prefix)))
            } else {
                bare.get_or_insert_with(|| encode(key))
            };
            match s.outbox.push(msg.clone()) {
                Ok(()) => out.delivered += 1,
                Err(PushError::Slow) => out.slow += 1,
                // Its session is ending and removes the subscription itself (which is what
                // tells the others it left), so it stays listed until then.
                Err(PushError::Closed) => {}
            }
        }
        self.stats.publications.fetch_add(1, Ordering::Relaxed);
        self.stats
            .deliveries
            .fetch_add(out.delivered as u64, Ordering::Relaxed);
        if out.slow > 0 {
            self.stats
                .slow_disconnects
                .fetch_add(out.slow as u64, Ordering::Relaxed);
        }
        out
    }

    /// Ends a channel: every subscriber gets the push `encode` makes (for the name as it wrote
    /// it) and forgets the subscription, which its session drops before its next command.
    /// Returns how many there were.
    pub fn end_channel(&self, key: &str, encode: impl Fn(&str) -> Bytes) -> usize {
        let key: Arc<str> = Arc::from(key);
        self.with(&key, |ch| ch.end_all(encode).len())
    }

    /// Who is subscribed to `key` (presence is answered from here, with no disk and no thread
    /// hop). One entry per connection: a session holds at most one subscription per channel.
    pub fn presence(&self, key: &str) -> Vec<Arc<ClientInfo>> {
        let shard = self.shard(key);
        let Some(entry) = shard.channels.get(key) else {
            return Vec::new();
        };
        entry
            .subs
            .iter()
            .filter(|s| !s.outbox.is_closing())
            .map(|s| s.info.clone())
            .collect()
    }

    pub fn num_subscribers(&self, key: &str) -> usize {
        self.shard(key)
            .channels
            .get(key)
            .map_or(0, |e| e.subs.len())
    }

    /// Channels with at least one subscriber.
    pub fn num_channels(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let shard = s.lock().unwrap_or_else(|e| e.into_inner());
                shard
                    .channels
                    .values()
                    .filter(|e| !e.subs.is_empty())
                    .count()
            })
            .sum()
    }

    /// Takes every head and managed stream's last frame away (the storage thread stops:
    /// nothing more is sequenced or published from memory here).
    pub fn detach_sequencing(&self) {
        for s in self.shards.iter() {
            let mut shard = s.lock().unwrap_or_else(|e| e.into_inner());
            shard.channels.retain(|_, e| {
                e.head = None;
                e.last_frame = None;
                !e.is_unused()
            });
        }
    }

    /// Bytes of recent publications the heads keep.
    pub fn recent_bytes(&self) -> usize {
        self.recent.used()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    fn sub(id: ClientId, user: &str, prefixed: bool, limit: usize) -> Subscriber {
        Subscriber {
            client: id,
            outbox: Arc::new(Outbox::new(limit)),
            prefixed,
            server_side: false,
            info: Arc::new(ClientInfo {
                user: user.into(),
                client: format!("c{id}"),
                conn_info: None,
                chan_info: None,
            }),
        }
    }

    fn drain(o: &Outbox) -> Vec<Bytes> {
        let mut q = VecDeque::new();
        o.drain(&mut q);
        q.into_iter().collect()
    }

    #[test]
    fn broadcast_encodes_once_per_name_form_and_shares_bytes() {
        let hub = Hub::new(1);
        let key: Arc<str> = Arc::from("grafana/broadcast/x");
        let subs: Vec<_> = (0..3).map(|i| sub(i, "", i == 2, 1 << 20)).collect();
        for s in &subs {
            hub.subscribe(&key, s.clone(), || ());
        }
        let calls = std::cell::Cell::new(0);
        let f = hub.broadcast(&key, |name| {
            calls.set(calls.get() + 1);
            Bytes::from(name.to_owned())
        });
        assert_eq!(
            f,
            Fanout {
                delivered: 3,
                slow: 0
            }
        );
        assert_eq!(calls.get(), 2);
        let a = drain(&subs[0].outbox);
        let b = drain(&subs[1].outbox);
        assert_eq!(
            a[0].as_ptr(),
            b[0].as_ptr(),
            "same allocation for every subscriber"
        );
        assert_eq!(&drain(&subs[2].outbox)[0][..], b"1/grafana/broadcast/x");
    }

    #[test]
    fn slow_subscriber_is_cut_and_others_still_receive() {
        let hub = Hub::new(1);
        let key: Arc<str> = Arc::from("a/b/c");
        let fast = sub(1, "", false, 1 << 20);
        let slow = sub(2, "", false, 100);
        hub.subscribe(&key, fast.clone(), || ());
        hub.subscribe(&key, slow.clone(), || ());
        let mut total = Fanout::default();
        for _ in 0..5 {
            let f = hub.broadcast(&key, |_| Bytes::from(vec![b'x'; 40]));
            total.delivered += f.delivered;
            total.slow += f.slow;
        }
        assert_eq!(total.slow, 1);
        assert_eq!(drain(&fast.outbox).len(), 5);
        assert!(slow.outbox.is_closing());
    }

    #[test]
    fn unsubscribe_removes_and_empty_channels_go_away() {
        let hub = Hub::new(1);
        let key: Arc<str> = Arc::from("a/b/c");
        hub.subscribe(&key, sub(1, "u1", false, 100), || ());
        hub.subscribe(&key, sub(2, "u1", false, 100), || ());
        assert_eq!(hub.num_subscribers(&key), 2);
        assert!(hub.unsubscribe(&key, 2));
        assert!(!hub.unsubscribe(&key, 2));
        assert!(hub.unsubscribe(&key, 1));
        assert_eq!(hub.num_channels(), 0);
    }

    /// Presence is the channel's subscribers; a closing connection is not present, but it
    /// stays subscribed until its session leaves, so that leave is what tells the others.
    #[test]
    fn presence_lists_open_subscribers_and_closing_ones_stay_until_they_leave() {
        let hub = Hub::new(1);
        let key: Arc<str> = Arc::from("grafana/broadcast/p");
        let (a, b) = (sub(1, "u1", false, 1 << 20), sub(2, "u2", true, 1 << 20));
        hub.subscribe(&key, a.clone(), || ());
        hub.subscribe(&key, b.clone(), || ());
        let clients = |h: &Hub| -> Vec<String> {
            let mut v: Vec<String> = h.presence(&key).iter().map(|i| i.client.clone()).collect();
            v.sort();
            v
        };
        assert_eq!(clients(&hub), ["c1", "c2"]);
        b.outbox.close(crate::protocol::Disconnect::echo(1000));
        let f = hub.broadcast(&key, |_| Bytes::from_static(b"x"));
        assert_eq!(f.delivered, 1);
        assert_eq!(clients(&hub), ["c1"]);
        assert!(
            hub.unsubscribe(&key, 2),
            "still there for its session to remove"
        );
        assert!(hub.presence("grafana/broadcast/none").is_empty());
    }
}
