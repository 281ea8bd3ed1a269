//! The command connection to Redis: one multiplexed connection (commands pipelined in the
//! order they are sent), kept up by a supervisor task that reconnects with backoff, loads the
//! scripts on every new connection and pings once a second (the round-trip metric, and how a
//! silent Redis is noticed). While it is down, stateful work is refused at once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, RedisError, Script};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::stats::HaStats;

/// The connection, with which one it is.
#[derive(Clone)]
pub struct Conn {
    pub conn: MultiplexedConnection,
    pub number: u64,
}

pub struct Link {
    client: Client,
    address: String,
    timeout: Duration,
    conn: Mutex<Option<Conn>>,
    /// Counts connections made: an error from an earlier one does not take a newer one down.
    made: AtomicU64,
    up: AtomicBool,
    /// Why Redis is unusable, for `/api/health`.
    problem: Mutex<Option<String>>,
    /// Wakes the supervisor when a command found the connection broken.
    lost: Notify,
    scripts: Vec<Script>,
    pub stats: Arc<HaStats>,
}

impl Link {
    pub fn new(
        client: Client,
        address: String,
        timeout: Duration,
        scripts: Vec<Script>,
        stats: Arc<HaStats>,
    ) -> Link {
        Link {
            client,
            address,
            timeout,
            conn: Mutex::new(None),
            made: AtomicU64::new(0),
            up: AtomicBool::new(false),
            problem: Mutex::new(Some("not connected to Redis yet".into())),
            lost: Notify::new(),
            scripts,
            stats,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// The connection, while Redis is up.
    pub fn current(&self) -> Option<Conn> {
        if !self.is_up() {
            return None;
        }
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A command on connection `number` failed; when the failure is that connection's (and
    /// it is still the current one), it is dropped and the supervisor reconnects. A script
    /// missing from Redis's cache (it restarted, or was flushed) is reloaded the same way. A
    /// timeout alone is not the connection's: the once-a-second PING decides that.
    pub fn failed(&self, e: &RedisError, number: u64) {
        let broken = e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.kind() == redis::ErrorKind::NoScriptError;
        if broken && number == self.made.load(Ordering::Acquire) {
            self.down(format!("Redis at {}: {e}", self.address));
        }
    }

    fn down(&self, reason: String) {
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(reason = %reason, "redis engine down");
        }
        *self.problem.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.lost.notify_one();
    }

    async fn connect(&self) -> Result<MultiplexedConnection, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout);
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        for s in &self.scripts {
            s.prepare_invoke().load_async(&mut conn).await?;
        }
        Ok(conn)
    }

    /// Keeps the connection up until `stop`.
    pub async fn supervise(self: Arc<Self>, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let mut first = true;
        loop {
            let attempt = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.connect() => r,
            };
            match attempt {
                Ok(conn) => {
                    let number = self.made.fetch_add(1, Ordering::AcqRel) + 1;
                    *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(Conn {
                        conn: conn.clone(),
                        number,
                    });
                    *self.problem.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    self.up.store(true, Ordering::Release);
                    if !first {
                        self.stats.reconnects.inc();
                    }
                    first = false;
                    tracing::info!(address = %self.address, "redis engine connected");
                    backoff = Duration::from_millis(100);
                    self.watch(conn, &stop).await;
                    if stop.is_cancelled() {
                        return;
                    }
                }
                Err(e) => {
                    self.down(format!("Redis at {}: {e}", self.address));
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Pings once a second until the connection fails (here or in a command).
    async fn watch(&self, mut conn: MultiplexedConnection, stop: &CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.lost.notified() => {
                    if !self.is_up() {
                        return;
                    }
                }
                _ = tick.tick() => {
                    let started = Instant::now();
                    let r = conn.req_packed_command(&redis::cmd("PING")).await;
                    match r {
                        Ok(_) => self.stats.ping.record(started.elapsed()),
                        Err(e) => {
                            self.down(format!("Redis at {}: {e}", self.address));
                            return;
                        }
                    }
                }
            }
        }
    }
}
