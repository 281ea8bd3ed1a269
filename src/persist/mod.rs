//! The storage subsystem of the daemon: one sequencer thread that writes every history channel
//! and managed stream, and one flusher thread for group commit. No sled call ever runs on an
//! async worker.
//!
//! The sequencer takes requests in order (see `broker.rs` for which come here). It stores what
//! a channel's head sequenced in memory (`Append`), keeping the head's offset reservation ahead
//! of it; and it sequences what a head cannot: it assigns the next offset, stores the
//! publication and broadcasts it at once (fan-out never waits for the disk). Either way the
//! publisher's acknowledgement goes to the flusher, which sends it after the flush that covers
//! the write (`durability = "batched"`), or is sent at once (`"none"`). A subscribe that comes
//! here is handled on the same thread: reading the missed publications, adding the subscriber
//! to the hub and queuing the reply happen with no publication of that channel in between, so
//! recovered and live publications are gap-free and duplicate-free and the reply comes first.
//! Settling it gives the channel its head, so what follows is sequenced in memory again.

pub mod backfill;
mod flusher;
pub mod frames;
mod sequencer;

use crate::ingest::sticky::Sticky;
use crate::watchdog::{Heartbeat, Progress};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::channel_kind::ChannelKinds;
use crate::channel_kind::{ChannelKind, HistoryPolicy};
use crate::config::Durability;
use crate::hub::{ClientId, Hub, Subscriber};
use crate::json::CompactJson;
use crate::outbox::Outbox;
use crate::protocol::reply::{self, ClientInfo};
use crate::protocol::ErrorCode;
use crate::settings::Settings;
use edgelive_storage::{Reach, Store};

pub use frames::Listed;
pub use sequencer::HistorySizes;

use crate::frame::FrameJson;

/// Most client requests waiting for the sequencer; beyond, clients get 111 (try again).
const MAX_QUEUED: usize = 4096;

pub use crate::head::Position;
use crate::head::Sequenced;

/// Who is told when a publication is durable (or failed).
pub enum Ack {
    /// A client's publish command: the reply goes into its outbox.
    Reply { outbox: Arc<Outbox>, id: u32 },
    /// An HTTP request waiting for the outcome: the offset, or the error.
    Channel(oneshot::Sender<Result<u64, ErrorCode>>),
    /// Nobody waits (a stream handler's publication).
    Discard,
    /// Nobody waits; gives one slot back to its sender's own bound (UDP push).
    Release(Arc<Slots>),
}

impl Ack {
    pub fn complete(self, result: Result<u64, ErrorCode>) {
        match self {
            Ack::Reply { outbox, id } => {
                let msg = match result {
                    Ok(_) => reply::reply(id, "publish", &reply::Empty {}),
                    Err(code) => reply::error(id, code, None),
                };
                let _ = outbox.push(msg);
            }
            Ack::Channel(tx) => {
                let _ = tx.send(result);
            }
            Ack::Discard => {}
            Ack::Release(slots) => slots.give_back(1),
        }
    }
}

/// A subscribe, as the storage thread or the Redis engine answers it.
pub struct SubscribeQuery {
    pub key: Arc<str>,
    pub kind: ChannelKind,
    pub sub: Subscriber,
    pub answer: crate::protocol::reply::SubscribeAnswer,
    pub recover: Option<Position>,
    /// The subscribe reply's data when a stream handler gives it.
    pub initial: Option<CompactJson<'static>>,
}

/// The history command, as the storage thread or the Redis engine answers it: `limit` 0 =
/// position only, -1 = all (capped), `since` = after that position, `reverse` = newest first;
/// the reply goes into `outbox`.
pub struct HistoryQuery {
    pub key: Arc<str>,
    pub policy: Option<HistoryPolicy>,
    pub outbox: Arc<Outbox>,
    pub id: u32,
    pub limit: i32,
    pub since: Option<Position>,
    pub reverse: bool,
}

/// What the storage thread is asked. Every `Subscribe` and `Publish` is counted in its
/// channel's in-flight requests by the broker and settled by the storage thread.
pub enum Request {
    Subscribe(SubscribeQuery),
    /// Leaving a channel; also sent by a session that ends, so never refused.
    Unsubscribe {
        key: Arc<str>,
        kind: ChannelKind,
        client: ClientId,
        info: Arc<ClientInfo>,
    },
    Publish {
        key: Arc<str>,
        policy: Option<HistoryPolicy>,
        data: CompactJson<'static>,
        info: Option<Arc<ClientInfo>>,
        ack: Ack,
    },
    /// A publication the broker sequenced from the channel's head (and already broadcast):
    /// stored at its offset, then acknowledged as `Publish` is.
    Append {
        key: Arc<str>,
        publication: Arc<Sequenced>,
        ack: Ack,
    },
    /// A frame for a managed stream (push API): kept as the channel's last frame and published
    /// schema-once.
    Push {
        key: Arc<str>,
        policy: Option<HistoryPolicy>,
        frame: FrameJson,
        /// An MQTT retained message: skipped when it repeats the stream's last frame (its
        /// time aside), as after a restart that subscribes again.
        retained: bool,
        ack: Ack,
    },
    /// A managed-stream frame the broker published from the channel's last frame in memory
    /// (and already broadcast, as `publication` where the channel keeps history): kept as
    /// the stream's last frame, the publication stored at its offset, then acknowledged.
    PushSequenced {
        key: Arc<str>,
        frame: Arc<FrameJson>,
        publication: Option<Arc<Sequenced>>,
        ack: Ack,
    },
    /// A push's points for `[[forward]]` targets: appended to each queue. Queued ahead of the
    /// push's frames with `Ack::Discard`, so that the commit acknowledging them covers it too
    /// (one sync for both); acknowledged as a publication is when it comes alone (the Redis
    /// engine took the frames).
    Forward {
        queues: Vec<Arc<crate::forward::queue::Queue>>,
        entries: Vec<edgelive_storage::ForwardEntry>,
        ack: Ack,
    },
    /// The managed streams, for `/api/live/list`.
    List {
        reply: oneshot::Sender<Listing>,
    },
    History(HistoryQuery),
    /// A presence entry written behind the hot path (presence is answered from the hub's
    /// memory; sled keeps a copy, cleared at open): `info` to add, `None` to remove.
    PresenceWrite {
        key: Arc<str>,
        client: String,
        info: Option<Bytes>,
    },
    /// Runs retention now (tests and shutdown use it through `Persist::stop`).
    Stop,
}

/// How far a commit must take writes under `durability`: to the device unless the level only
/// promises to survive a crash.
pub(crate) fn reach(durability: Durability) -> Reach {
    if durability.syncs() {
        Reach::Device
    } else {
        Reach::Kernel
    }
}

/// Places taken in the storage queue by `Persist::reserve`; those not used are given back
/// when it is dropped.
pub struct Reserved<'a> {
    persist: &'a Persist,
    left: usize,
}

impl Reserved<'_> {
    /// Queues a request in a reserved place; `Err` when the sequencer is gone (the request
    /// is dropped, its acknowledgement failing).
    pub fn send(&mut self, req: Request) -> Result<(), Busy> {
        assert!(self.left > 0, "more requests than places reserved");
        self.left -= 1;
        self.persist.tx.send(req).map_err(|_| {
            self.persist.queued.give_back(1);
            Busy
        })
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.persist.queued.give_back(self.left);
    }
}

/// Slots taken against a bound (the storage queue, UDP's share of it), by whoever takes and
/// whoever gives back, on any thread.
#[derive(Debug, Default)]
pub struct Slots(AtomicUsize);

impl Slots {
    /// Takes `n` slots unless that would pass `max`; all or none.
    pub fn try_take(&self, n: usize, max: usize) -> bool {
        if self.0.fetch_add(n, Ordering::AcqRel) + n > max {
            self.0.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Takes `n` slots whatever the bound (requests that must not be refused).
    pub fn take(&self, n: usize) {
        self.0.fetch_add(n, Ordering::AcqRel);
    }

    pub fn give_back(&self, n: usize) {
        self.0.fetch_sub(n, Ordering::AcqRel);
    }

    pub fn taken(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// Why the store is unhealthy, if it is.
#[derive(Default)]
pub struct Health {
    degraded: Mutex<Option<String>>,
}

impl Health {
    pub fn degrade(&self, reason: String) {
        let mut d = self.degraded.lock().unwrap_or_else(|e| e.into_inner());
        if d.is_none() {
            tracing::error!(%reason, "storage degraded");
        }
        *d = Some(reason);
    }

    pub fn degraded(&self) -> Option<String> {
        self.degraded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the storage queue is full")]
pub struct Busy;

/// What the storage threads read of the settings (`[storage]`, the channel kinds).
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// Which channels keep history, and how much.
    pub kinds: ChannelKinds,
    pub durability: Durability,
    /// Most publications a history read or a recovery from disk returns.
    pub max_read: usize,
    /// Most channels with history, and most managed streams.
    pub max_channels: usize,
    /// A channel nobody published on or watched for this long is forgotten.
    pub channel_idle_ttl: Duration,
    /// A managed stream nobody pushed to for this long loses its last frame.
    pub frame_idle_ttl: Duration,
    /// Recent rows in a managed stream's subscribe reply.
    pub backfill: crate::config::BackfillConfig,
}

impl From<&Settings> for StorageSettings {
    fn from(s: &Settings) -> StorageSettings {
        StorageSettings {
            kinds: s.kinds.clone(),
            durability: s.durability,
            max_read: s.max_read,
            max_channels: s.max_channels,
            channel_idle_ttl: s.channel_idle_ttl,
            frame_idle_ttl: s.frame_idle_ttl,
            backfill: s.backfill.clone(),
        }
    }
}

/// Cheap-clone handle to the storage threads.
#[derive(Clone)]
pub struct Persist {
    tx: mpsc::Sender<Request>,
    queued: Arc<Slots>,
    pub health: Arc<Health>,
    pub sizes: Arc<Mutex<HistorySizes>>,
    /// The event loop stamps it (`Heartbeat::run`); the watchdog that also watches these
    /// threads reads it.
    pub heartbeat: Arc<Heartbeat>,
    /// Managed streams' field sets (`[push] sticky_fields`): the push side fits frames to them,
    /// the storage thread forgets a stream's when it evicts its frame.
    pub sticky: Arc<Sticky>,
    /// The store, for what is not in the storage thread's order (saved dashboards; their calls
    /// run on the blocking pool).
    pub store: Arc<Store>,
}

/// What `/api/live/list` shows of the storage thread's channels.
#[derive(Debug, Default)]
pub struct Listing {
    /// Managed streams, sorted by channel.
    pub streams: Vec<Listed>,
    /// Other channels with history: (name, last publication in ms since the epoch).
    pub history: Vec<(String, u64)>,
}

/// The running threads, joined by `Persist::stop`.
pub struct Threads {
    sequencer: JoinHandle<()>,
    flusher: JoinHandle<()>,
}

impl Persist {
    /// Starts the sequencer and flusher threads over an open store.
    pub fn start(
        store: Store,
        hub: Arc<Hub>,
        settings: StorageSettings,
    ) -> std::io::Result<(Persist, Threads)> {
        let store = Arc::new(store);
        let store_handle = store.clone();
        let health = Arc::new(Health::default());
        let sizes = Arc::new(Mutex::new(HistorySizes::default()));
        let queued = Arc::new(Slots::default());
        let seq_progress = Progress::new("edgelive-store");
        let flush_progress = Progress::new("edgelive-flush");
        let heartbeat = Heartbeat::new();
        let sticky = Sticky::new(settings.max_channels);
        crate::watchdog::start(
            vec![seq_progress.clone(), flush_progress.clone()],
            heartbeat.clone(),
            sd_notify::watchdog_enabled(),
        )?;
        let (flush_tx, flusher) = flusher::start(
            store.clone(),
            health.clone(),
            flush_progress,
            reach(settings.durability),
        )?;
        let (tx, rx) = mpsc::channel();
        let mut seq = sequencer::Sequencer::new(sequencer::Parts {
            store,
            hub,
            settings,
            flush: flush_tx,
            health: health.clone(),
            sizes: sizes.clone(),
            queued: queued.clone(),
            progress: seq_progress,
            sticky: sticky.clone(),
        });
        seq.start();
        let sequencer = std::thread::Builder::new()
            .name("edgelive-store".into())
            .spawn(move || seq.run(rx))?;
        Ok((
            Persist {
                tx,
                queued,
                health,
                sizes,
                heartbeat,
                sticky,
                store: store_handle,
            },
            Threads { sequencer, flusher },
        ))
    }

    /// Queues a client's request (all its slots, or none), unless too many are waiting; a send
    /// that fails (the sequencer has stopped) gives the slots back.
    pub fn submit(&self, req: Request) -> Result<(), Busy> {
        if !self.queued.try_take(1, MAX_QUEUED) {
            return Err(Busy);
        }
        self.tx.send(req).map_err(|_| {
            self.queued.give_back(1);
            Busy
        })
    }

    /// Takes `n` places in the queue at once, for requests then queued one by one, each under
    /// its channel's lock (a push body's frames: all or none, in each channel's order).
    pub fn reserve(&self, n: usize) -> Result<Reserved<'_>, Busy> {
        if !self.queued.try_take(n, MAX_QUEUED) {
            return Err(Busy);
        }
        Ok(Reserved {
            persist: self,
            left: n,
        })
    }

    /// Requests waiting for the sequencer (for tests of the bound).
    pub fn queued(&self) -> usize {
        self.queued.taken()
    }

    /// Queues a request that must not be refused (leaving channels). Their number is bounded by
    /// connections × channels per connection.
    pub fn submit_always(&self, req: Request) {
        // Counted like the others so the sequencer's bookkeeping stays simple.
        self.queued.take(1);
        if self.tx.send(req).is_err() {
            self.queued.give_back(1);
        }
    }

    /// Stops the sequencer (which records every channel's exact top, so a clean restart
    /// recovers exactly) and the flusher; blocks until both are done.
    pub fn stop(self, threads: Threads) {
        self.submit_always(Request::Stop);
        drop(self);
        let _ = threads.sequencer.join();
        let _ = threads.flusher.join();
    }
}

/// Encodes a ClientInfo for the presence tree.
pub(crate) fn info_json(info: &ClientInfo) -> Bytes {
    Bytes::from(serde_json::to_vec(info).expect("ClientInfo serializes"))
}

/// The storage threads over a real store in a temp dir, for unit tests; stopped when dropped.
#[cfg(test)]
pub(crate) struct TestPersist {
    pub persist: Persist,
    pub settings: Arc<Settings>,
    threads: Option<Threads>,
    _dir: tempfile::TempDir,
}

#[cfg(test)]
impl TestPersist {
    pub fn start(hub: Arc<Hub>, config: &crate::config::Config) -> TestPersist {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&edgelive_storage::test_config(dir.path())).unwrap();
        let settings = Arc::new(Settings::from_config(config).unwrap());
        let (persist, threads) = Persist::start(store, hub, (&*settings).into()).unwrap();
        TestPersist {
            persist,
            settings,
            threads: Some(threads),
            _dir: dir,
        }
    }

    /// Stops the threads now (as at shutdown).
    pub fn stop(&mut self) {
        if let Some(t) = self.threads.take() {
            self.persist.clone().stop(t);
        }
    }
}

#[cfg(test)]
impl Drop for TestPersist {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request set that cannot be sent (the sequencer has stopped) takes no slot: the queue
    /// bound must not shrink for every client after a storage failure.
    #[test]
    fn failed_submissions_give_their_slots_back() {
        let mut t = TestPersist::start(Arc::new(Hub::new(1)), &Default::default());
        let after = t.persist.clone();
        t.stop();
        let push = |n: u64| Request::Push {
            key: Arc::from(format!("stream/s/m{n}")),
            policy: None,
            retained: false,
            frame: FrameJson {
                schema: "{}".into(),
                data: "{}".into(),
            },
            ack: Ack::Discard,
        };
        let mut places = after.reserve(5).unwrap();
        assert!((0..5).all(|n| places.send(push(n)).is_err()));
        drop(places);
        assert_eq!(after.queued(), 0);
        assert!(after.reserve(MAX_QUEUED + 1).is_err());
        drop(after.reserve(3).unwrap());
        assert_eq!(after.queued(), 0, "unused places are given back");
        assert_eq!(after.submit(push(9)), Err(Busy));
        after.submit_always(Request::Stop);
        assert_eq!(after.queued(), 0);
    }
}
