//! The state every request handler and connection shares: settings, the hub, the storage
//! threads and the broker over them, stream handlers, counters and the connection count.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::hub::Hub;
use crate::persist::Persist;
use crate::session::SessionSettings;
use crate::settings::Settings;
use crate::streams::Streams;
use crate::websocket::WebSocketSettings;

/// State every request handler and connection shares.
pub struct Shared {
    /// Swapped whole at a reload (SIGHUP); each request reads the one in force when it began.
    settings: ArcSwap<Settings>,
    pub hub: Arc<Hub>,
    /// The storage threads (history, presence).
    pub persist: Persist,
    /// Where publications, subscribes, history and presence go.
    pub broker: Broker,
    /// What every session reads of the settings. A reload sends the new ones; each connection
    /// watches this, so one whose credentials were revoked is closed at once, not at its next
    /// command.
    session: watch::Sender<Arc<SessionSettings>>,
    /// What a new WebSocket connection takes (open ones keep theirs: limits and timers are not
    /// credentials).
    websocket: ArcSwap<WebSocketSettings>,
    /// Open WebSocket connections (including ones being refused over the limit).
    connections: AtomicUsize,
    pub next_client: AtomicU64,
    /// Cancelled on SIGTERM/SIGINT; every connection watches it.
    pub shutdown: CancellationToken,
    /// Every task the server spawns, so shutdown can wait for them.
    pub tracker: TaskTracker,
    pub push_stats: PushStats,
    /// Stream handlers and the producers running for their channels.
    pub streams: Arc<Streams>,
    /// Sockets closed at accept because `max_pending_connections` HTTP connections were open.
    pub refused_connections: AtomicU64,
    /// WebSocket connections closed since the heap was last trimmed.
    pub(crate) closed_since_trim: AtomicUsize,
    /// When the server started (`/api/status` uptime).
    pub started: std::time::Instant,
    /// The MQTT bridges' counters (one per `[[mqtt]]`, in order).
    pub mqtt: Vec<Arc<crate::mqtt::stats::BridgeStats>>,
    /// `[[forward]]` targets: their queues and counters.
    pub forward: crate::forward::Forwarding,
    /// `/api/status`'s publication rate between two calls.
    pub publication_rate: std::sync::Mutex<RateSample>,
}

/// Push API counters for `/metrics` (HTTP requests, WebSocket messages and UDP datagrams).
#[derive(Default)]
pub struct PushStats {
    pub requests: AtomicU64,
    pub frames: AtomicU64,
    pub errors: AtomicU64,
}

impl PushStats {
    /// Counts one body: the frames it published, or its refusal.
    pub fn record<E>(&self, result: &Result<usize, E>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(n) => self.frames.fetch_add(*n as u64, Ordering::Relaxed),
            Err(_) => self.errors.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// The publication count when `/api/status` last took its rate.
pub struct RateSample {
    pub(crate) at: std::time::Instant,
    pub(crate) count: u64,
    pub(crate) per_second: f64,
}

impl RateSample {
    pub fn new() -> std::sync::Mutex<RateSample> {
        std::sync::Mutex::new(RateSample {
            at: std::time::Instant::now(),
            count: 0,
            per_second: 0.0,
        })
    }
}

/// One counted WebSocket connection; dropping it frees the slot.
pub struct ConnectionSlot {
    shared: Arc<Shared>,
    count: usize,
}

impl ConnectionSlot {
    /// Connections open when this one was counted, itself included.
    pub fn count(&self) -> usize {
        self.count
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.shared.connections.fetch_sub(1, Ordering::AcqRel);
        self.shared
            .closed_since_trim
            .fetch_add(1, Ordering::Relaxed);
    }
}

impl Shared {
    pub fn new(
        settings: Arc<Settings>,
        hub: Arc<Hub>,
        persist: Persist,
        forward: crate::forward::Forwarding,
        shutdown: CancellationToken,
    ) -> Arc<Shared> {
        let mut broker = Broker::new(
            hub.clone(),
            persist.clone(),
            settings.kinds.clone(),
            settings.max_read,
            settings.backfill.rows > 0,
        );
        if let Some(ha) = &settings.ha {
            let engine = crate::ha::Engine::start(
                ha.clone(),
                hub.clone(),
                settings.max_read,
                settings.backfill.clone(),
                shutdown.clone(),
            );
            broker = broker.with_engine(engine);
        }
        let streams = Streams::new(
            broker.clone(),
            settings.stream_timings,
            &settings.exec,
            shutdown.clone(),
        );
        let mqtt = settings
            .mqtt
            .iter()
            .map(|m| crate::mqtt::stats::BridgeStats::new(m.client_id.clone()))
            .collect();
        Arc::new(Shared {
            streams,
            hub,
            persist,
            broker,
            session: watch::Sender::new(Arc::new((&*settings).into())),
            websocket: ArcSwap::from_pointee((&*settings).into()),
            settings: ArcSwap::new(settings),
            connections: AtomicUsize::new(0),
            next_client: AtomicU64::new(1),
            shutdown,
            tracker: TaskTracker::new(),
            push_stats: PushStats::default(),
            refused_connections: AtomicU64::new(0),
            closed_since_trim: AtomicUsize::new(0),
            mqtt,
            forward,
            started: std::time::Instant::now(),
            publication_rate: RateSample::new(),
        })
    }

    /// The settings in force now.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    /// The limits and timers a new WebSocket connection takes.
    pub fn websocket_settings(&self) -> Arc<WebSocketSettings> {
        self.websocket.load_full()
    }

    /// What a new session starts with, and where it hears of a reload.
    pub fn session_settings(&self) -> watch::Receiver<Arc<SessionSettings>> {
        self.session.subscribe()
    }

    /// Puts reloaded settings in force: new requests and connections use them, the broker and
    /// stream handlers take their parts (history rules and exec tables for channels created
    /// from now on), and every session re-checks its credentials and subscriptions.
    pub fn apply(&self, settings: Arc<Settings>) {
        self.broker.set_kinds(settings.kinds.clone());
        self.streams.set_exec(&settings.exec);
        self.settings.store(settings.clone());
        self.websocket.store(Arc::new((&*settings).into()));
        self.session.send_replace(Arc::new((&*settings).into()));
        // A forwarding target's token file may have been rotated or fixed.
        self.forward.reloaded();
    }

    pub fn connection_slot(self: &Arc<Self>) -> ConnectionSlot {
        let count = self.connections.fetch_add(1, Ordering::AcqRel) + 1;
        ConnectionSlot {
            shared: self.clone(),
            count,
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }
}
