//! The WebSocket transport of one client connection: it only moves bytes.
//!
//! One task per connection runs two futures side by side over the two halves of its TCP
//! socket: the reader (whole messages in, handed to the session; `reader`) and the writer
//! (outbox out, several queued messages coalesced into one text frame joined by `\n`, plus the
//! ping, pong-deadline and connect-deadline timers; `writer`). fastwebsockets performs the
//! upgrade handshake; the frames after it are ours (`wsframe` says why).

mod reader;
mod writer;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::tcp::WriteHalf;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::debug;

// What the push endpoint's WebSocket uses too.
pub use reader::{Incoming, MessageReader, ReadEnd};
pub use writer::{write_close, write_frame};

use reader::close_reply;
use writer::write_coalesced;

use crate::broker::Broker;
use crate::clock::now_ms;
use crate::hub::ClientId;
use crate::outbox::Outbox;
use crate::protocol::reply::PING;
use crate::protocol::Disconnect;
use crate::session::Session;
use crate::settings::Settings;
use crate::wsframe::OpCode;

/// What a WebSocket connection reads of the settings: its limits and timers. Built once per
/// (re)load and shared by every connection opened under it.
#[derive(Debug, Clone)]
pub struct WebSocketSettings {
    /// Largest message a client may send (whole, or reassembled from fragments).
    pub message_size_limit: usize,
    /// Bytes queued for a client before it is closed as slow (3008).
    pub queue_max_size: usize,
    /// Time to connect before the connection is closed as stale (3502).
    pub connect_timeout: Duration,
    /// Grace after expired credentials before the close (3005).
    pub expired_close_delay: Duration,
    pub ping_interval: Option<Duration>,
    pub pong_timeout: Duration,
    /// A write that takes longer ends the connection.
    pub write_timeout: Duration,
}

impl From<&Settings> for WebSocketSettings {
    fn from(s: &Settings) -> WebSocketSettings {
        WebSocketSettings {
            message_size_limit: s.message_size_limit,
            queue_max_size: s.client_queue_max_size,
            connect_timeout: s.connect_timeout,
            expired_close_delay: s.expired_close_delay,
            ping_interval: s.ping_interval,
            pong_timeout: s.pong_timeout,
            write_timeout: s.write_timeout,
        }
    }
}

/// What an idle connection may keep of the coalescing buffer and its drained queue; a batch
/// of at most `IDLE_BUF_BYTES` frees more than that.
const IDLE_BUF_BYTES: usize = 4096;
const IDLE_QUEUE_LEN: usize = 16;
/// After this long without writing, the writer gives back its queue and coalescing buffer
/// and the outbox its empty queue: an idle connection keeps none (about 0.5 KiB each after a
/// connect and a subscribe; the same timer as the pings, no future of its own).
const IDLE_RELEASE: Duration = Duration::from_millis(250);
/// How long a connection over the limit may take to send its first frame before it is closed.
const REFUSE_WAIT: Duration = Duration::from_millis(500);
/// After our close frame, how long the peer gets to answer before the socket is dropped.
pub const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Everything a connection needs from the server.
pub struct Conn {
    pub id: ClientId,
    pub broker: Broker,
    /// The transport's limits and timers.
    pub settings: Arc<WebSocketSettings>,
    /// The session's, and where a reload sends new ones.
    pub session: watch::Receiver<Arc<crate::session::SessionSettings>>,
    pub shutdown: CancellationToken,
    /// Close at once with this code (the connection limit), without reading anything.
    pub refuse: Option<Disconnect>,
    /// Who the upgrade request authenticated, if anyone.
    pub identity: Option<crate::auth::Identity>,
    pub streams: Arc<crate::streams::Streams>,
}

/// The upgraded connection's TCP socket, and what the HTTP server had read past the request.
/// `None` if the server's connections are not plain TCP (they always are).
pub fn tcp_of(
    ws: fastwebsockets::WebSocket<TokioIo<hyper::upgrade::Upgraded>>,
) -> Option<(TcpStream, Bytes)> {
    let parts = ws
        .into_inner()
        .into_inner()
        .downcast::<TokioIo<TcpStream>>()
        .ok()?;
    Some((parts.io.into_inner(), parts.read_buf))
}

/// Sets the connection up (its outbox and session) and returns the future that serves it. The
/// setup is not part of that future, so the connection's task keeps only what it needs for its
/// whole life, not the `Conn` it was made from. `hold` is dropped when the connection ends (its
/// place in the connection count).
pub fn run<H: Send + 'static>(
    stream: TcpStream,
    pre_read: Bytes,
    conn: Conn,
    hold: H,
) -> impl std::future::Future<Output = ()> {
    let outbox = Arc::new(Outbox::new(conn.settings.queue_max_size));
    let refuse = conn.refuse.clone();
    let id = conn.id;
    let settings = conn.settings.clone();
    let shutdown = conn.shutdown;
    let mut reload = conn.session;
    // The reader hands it messages and the writer hands it reloads; both run in this one task
    // and lock it only between awaits, so the lock is never contended.
    let session = Mutex::new(Session::new(
        conn.id,
        outbox.clone(),
        conn.broker,
        reload.borrow_and_update().clone(),
        conn.streams,
        conn.identity,
    ));
    // Made here, so the future does not keep `pre_read` too.
    let mut reader = MessageReader::new(settings.message_size_limit, &pre_read);
    drop(pre_read);
    async move {
        let mut stream = stream;
        let (rd, mut wr) = stream.split();
        if let Some(d) = refuse {
            // Over the limit: the close answers the client's first frame (its connect), as
            // Centrifuge refuses at connect, or comes after `REFUSE_WAIT` if nothing arrives.
            // Closed before the client has sent its connect, centrifuge-python can take the
            // close for a lost transport and reconnect instead of stopping at the terminal code
            // (its tests saw that twice in nine runs).
            let _ = timeout(REFUSE_WAIT, reader.next(&rd)).await;
            outbox.close(d);
        }
        // One await for both loops, so their futures share the task's memory with the
        // drain's below instead of each having a place of its own (1 KB per connection).
        let peer_closed = read_and_write(
            (id, &mut reader, &rd),
            &mut wr,
            &outbox,
            &settings,
            &shutdown,
            &session,
            &mut reload,
        )
        .await;
        if !peer_closed {
            // Our close frame is out; read and drop what the peer still sends until its close
            // or EOF (bounded), so unread input does not turn our FIN into a reset that could
            // eat the close frame before the peer reads it.
            let _ = timeout(CLOSE_LINGER, reader.drain(&rd)).await;
        }
        debug!(client = id, "connection closed");
        drop(session);
        drop(hold);
    }
}

/// Runs the reader and the writer until either ends, then gives the other `CLOSE_LINGER` to
/// finish. Returns true when the peer closed or ended the stream.
async fn read_and_write(
    (id, reader, rd): (ClientId, &mut MessageReader, &tokio::net::tcp::ReadHalf<'_>),
    wr: &mut WriteHalf<'_>,
    outbox: &Outbox,
    settings: &WebSocketSettings,
    shutdown: &CancellationToken,
    session: &Mutex<Session>,
    reload: &mut watch::Receiver<Arc<crate::session::SessionSettings>>,
) -> bool {
    let reading = read_loop(id, reader, rd, session, outbox);
    let writing = write_loop(wr, outbox, settings, shutdown, session, reload);
    tokio::pin!(reading, writing);
    tokio::select! {
        peer_closed = &mut reading => {
            // The peer closed or broke the stream, or broke the protocol; let the writer send
            // what it owes.
            outbox.close(Disconnect::echo(1000));
            let _ = timeout(CLOSE_LINGER, &mut writing).await;
            peer_closed
        }
        _ = &mut writing => {
            timeout(CLOSE_LINGER, &mut reading).await.unwrap_or(false)
        }
    }
}

/// The session, for one synchronous call (a panic in an earlier one already ended the task).
fn lock(session: &Mutex<Session>) -> std::sync::MutexGuard<'_, Session> {
    session.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads whole messages and hands them to the session until the peer goes away or a close is
/// due. Returns true when the peer sent a close frame or ended the stream.
async fn read_loop(
    id: ClientId,
    reader: &mut MessageReader,
    rd: &tokio::net::tcp::ReadHalf<'_>,
    session: &Mutex<Session>,
    outbox: &Outbox,
) -> bool {
    loop {
        let incoming = match reader.next(rd).await {
            Ok(i) => i,
            Err(ReadEnd::Gone) => {
                debug!(client = id, "read ended");
                return true;
            }
            Err(ReadEnd::Broken(d)) => {
                debug!(client = id, code = d.code, "client broke the protocol");
                outbox.close(d);
                return false;
            }
        };
        if let Incoming::Close(payload) = incoming {
            outbox.close(close_reply(payload));
            return true;
        }
        // A connection that is closing (refused over the limit, slow, shutting down) handles
        // nothing more: a batched connect+subscribe must not join channels on its way out.
        if outbox.is_closing() {
            return false;
        }
        let done = match incoming {
            Incoming::Ping(payload) => {
                outbox.pong(Bytes::copy_from_slice(payload));
                Ok(())
            }
            Incoming::Pong | Incoming::Close(_) => Ok(()),
            Incoming::Message(message) => lock(session).handle_message(message),
            Incoming::Reassembled(message) => lock(session).handle_message(&message),
        };
        if let Err(d) = done {
            debug!(client = id, code = d.code, reason = %d.reason, "closing after the client's input");
            outbox.close(d);
            return false;
        }
    }
}

/// Drains the outbox into the socket and runs the connection's timers, until a close is sent.
async fn write_loop(
    wr: &mut WriteHalf<'_>,
    outbox: &Outbox,
    settings: &WebSocketSettings,
    shutdown: &CancellationToken,
    session: &Mutex<Session>,
    reload: &mut watch::Receiver<Arc<crate::session::SessionSettings>>,
) {
    // False once the sender is gone (the server is stopping): `changed` would then be ready
    // at every turn.
    let mut reloads = true;
    let stale_at = Instant::now() + settings.connect_timeout;
    let grace_ms = settings.expired_close_delay.as_millis() as u64;
    let mut next_ping: Option<Instant> = None;
    let mut pong_due: Option<Instant> = None;
    let mut queue: VecDeque<Bytes> = VecDeque::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut release_at: Option<Instant> = None;
    loop {
        let connected = outbox.is_connected();
        if connected && next_ping.is_none() {
            next_ping = settings.ping_interval.map(|p| Instant::now() + p);
        }
        // Credentials that expired and were not refreshed within the grace close the connection.
        // The expiry is a client's number (a JWT `exp` may be near i64::MAX for "never"):
        // saturating, and a deadline past what `Instant` holds is no deadline.
        let expire_at = outbox.expiry_ms().and_then(|ms| {
            let left = ms.saturating_add(grace_ms).saturating_sub(now_ms());
            Instant::now().checked_add(Duration::from_millis(left))
        });
        let deadline = [
            (!connected).then_some(stale_at),
            next_ping,
            pong_due,
            release_at,
            expire_at,
        ]
        .into_iter()
        .flatten()
        .min();
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => outbox.close(Disconnect::SHUTDOWN),
            _ = outbox.wait() => {}
            changed = reload.changed(), if reloads => match changed {
                Ok(()) => {
                    let new = reload.borrow_and_update().clone();
                    if let Err(d) = lock(session).reconfigure(new) {
                        outbox.close(d);
                    }
                }
                Err(_) => reloads = false,
            },
            _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                let now = Instant::now();
                if !outbox.is_connected() && now >= stale_at {
                    outbox.close(Disconnect::STALE);
                }
                if outbox.expiry_ms().is_some_and(|ms| now_ms() >= ms.saturating_add(grace_ms)) {
                    outbox.close(Disconnect::EXPIRED);
                }
                if release_at.is_some_and(|t| now >= t) {
                    release_at = None;
                    queue = VecDeque::new();
                    buf = Vec::new();
                    outbox.release();
                }
                if pong_due.is_some_and(|t| now >= t) {
                    pong_due = None;
                    if outbox.awaiting_pong.load(Ordering::Acquire) {
                        outbox.close(Disconnect::NO_PONG);
                    }
                }
                if let (Some(t), Some(every)) = (next_ping, settings.ping_interval) {
                    if now >= t {
                        next_ping = Some(now + every);
                        if outbox.push(Bytes::from_static(PING)).is_ok() && pong_due.is_none() {
                            outbox.awaiting_pong.store(true, Ordering::Release);
                            pong_due = Some(now + settings.pong_timeout);
                        }
                    }
                }
            }
        }
        let drained = outbox.drain(&mut queue);
        let writes = drained.pong.is_some() || !queue.is_empty();
        let result = async {
            if let Some(p) = drained.pong {
                write_frame(wr, OpCode::Pong, &p).await?;
            }
            let written = write_coalesced(wr, &mut queue, &mut buf).await?;
            // A small batch means the load fell: memory a burst grew is given back, so an
            // idle connection keeps little, while steady traffic reuses what it has.
            if written <= IDLE_BUF_BYTES {
                if buf.capacity() > IDLE_BUF_BYTES {
                    buf = Vec::new();
                }
                if queue.capacity() > IDLE_QUEUE_LEN {
                    queue = VecDeque::new();
                }
            }
            if let Some(d) = &drained.close {
                debug!(code = d.code, reason = %d.reason, "sending close");
                write_close(wr, d.code, &d.reason).await?;
            }
            Ok::<(), std::io::Error>(())
        };
        match timeout(settings.write_timeout, result).await {
            Ok(Ok(())) if drained.close.is_none() => {
                if writes {
                    release_at = Some(Instant::now() + IDLE_RELEASE);
                }
            }
            Ok(Ok(())) => return,
            Ok(Err(e)) => {
                debug!(error = %e, "write failed");
                return;
            }
            Err(_) => {
                debug!("write timed out");
                return;
            }
        }
    }
}
