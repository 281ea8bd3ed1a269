//! The WebSocket transport of one client connection: it only moves bytes.
//!
//! One task per connection runs two futures side by side: the reader (whole messages in, handed
//! to the session) and the writer (outbox out, several queued messages coalesced into one text
//! frame joined by `\n`, plus the ping, pong-deadline and connect-deadline timers).
//! fastwebsockets' `read_frame` is not cancel-safe, so the reader future lives for the whole
//! connection and is only dropped when the connection ends.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{
    Frame, OpCode, Payload, WebSocket, WebSocketError, WebSocketRead, WebSocketWrite,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::broker::Broker;
use crate::clock::now_ms;
use crate::hub::ClientId;
use crate::masking::MaskCheck;
use crate::outbox::Outbox;
use crate::protocol::reply::PING;
use crate::protocol::Disconnect;
use crate::session::Session;
use crate::settings::Settings;

/// Most bytes coalesced into one outgoing frame (a single larger message still goes alone).
const COALESCE_BYTES: usize = 64 * 1024;
/// What an idle connection may keep of the coalescing buffer and its drained queue; a batch
/// of at most `IDLE_BUF_BYTES` frees more than that.
const IDLE_BUF_BYTES: usize = 4096;
const IDLE_QUEUE_LEN: usize = 16;
/// How long a connection over the limit may take to send its first frame before it is closed.
const REFUSE_WAIT: Duration = Duration::from_millis(500);
/// After our close frame, how long the peer gets to answer before the socket is dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Everything a connection needs from the server.
pub struct Conn {
    pub id: ClientId,
    pub broker: Broker,
    /// The transport's settings (limits, timers).
    pub settings: Arc<Settings>,
    /// The session's, and where a reload sends new ones.
    pub session: watch::Receiver<Arc<crate::session::SessionSettings>>,
    pub shutdown: CancellationToken,
    /// Close at once with this code (the connection limit), without reading anything.
    pub refuse: Option<Disconnect>,
    /// Who the upgrade request authenticated, if anyone.
    pub identity: Option<crate::auth::Identity>,
    pub streams: Arc<crate::streams::Streams>,
}

/// Sets the connection up (the split halves, its outbox and session) and returns the future
/// that serves it. The setup is not part of that future, so the connection's task keeps only
/// what it needs for its whole life, not the `WebSocket` and `Conn` it was made from (about a
/// third of the task's size, measured from the binary's debug info).
pub fn run<S>(ws: WebSocket<S>, conn: Conn) -> impl std::future::Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = ws.split(tokio::io::split);
    // Every frame goes out with writev (its header on the stack), so fastwebsockets' write
    // buffer never grows to the largest small frame and stays that size per connection.
    wr.set_writev_threshold(0);
    rd.set_auto_close(false);
    rd.set_auto_pong(false);
    // fastwebsockets rejects frames of `>= max` bytes; a message of exactly the limit is fine.
    rd.set_max_message_size(conn.settings.message_size_limit + 1);

    let outbox = Arc::new(Outbox::new(conn.settings.client_queue_max_size));
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
    async move {
        if let Some(d) = refuse {
            // Over the limit: the close answers the client's first frame (its connect), as
            // Centrifuge refuses at connect, or comes after `REFUSE_WAIT` if nothing arrives.
            // Closed before the client has sent its connect, centrifuge-python can take the
            // close for a lost transport and reconnect instead of stopping at the terminal code
            // (its tests saw that twice in nine runs).
            let mut no_send = |_: Frame<'_>| async { Ok::<(), Infallible>(()) };
            let _ = timeout(REFUSE_WAIT, rd.read_frame(&mut no_send)).await;
            outbox.close(d);
        }
        let peer_closed = {
            let reader = read_loop(id, &mut rd, &session, &outbox, settings.message_size_limit);
            let writer = write_loop(
                &mut wr,
                &outbox,
                &settings,
                &shutdown,
                &session,
                &mut reload,
            );
            tokio::pin!(reader, writer);
            tokio::select! {
                peer_closed = &mut reader => {
                    // The peer closed or broke the stream, or broke the protocol; let the
                    // writer send what it owes.
                    outbox.close(Disconnect::echo(1000));
                    let _ = timeout(CLOSE_LINGER, &mut writer).await;
                    peer_closed
                }
                _ = &mut writer => {
                    timeout(CLOSE_LINGER, &mut reader).await.unwrap_or(false)
                }
            }
        };
        if !peer_closed {
            // Our close frame is out; read and drop what the peer still sends until its close
            // or EOF (bounded), so unread input does not turn our FIN into a reset that could
            // eat the close frame before the peer reads it.
            let _ = timeout(CLOSE_LINGER, drain(&mut rd)).await;
        }
        debug!(client = id, "connection closed");
        drop(session);
    }
}

/// The session, for one synchronous call (a panic in an earlier one already ended the task).
fn lock(session: &Mutex<Session>) -> std::sync::MutexGuard<'_, Session> {
    session.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads frames until the peer's close frame or the end of the stream, dropping them.
pub(crate) async fn drain<S: AsyncRead + Unpin>(rd: &mut WebSocketRead<ReadHalf<S>>) {
    let mut no_send = |_: Frame<'_>| async { Ok::<(), Infallible>(()) };
    while let Ok(frame) = rd.read_frame(&mut no_send).await {
        if frame.opcode == OpCode::Close {
            return;
        }
    }
}

/// Reads whole messages and hands them to the session until the peer goes away or a close is
/// due. Returns true when the peer sent a close frame or ended the stream.
async fn read_loop<S: AsyncRead + Unpin>(
    id: ClientId,
    rd: &mut WebSocketRead<ReadHalf<S>>,
    session: &Mutex<Session>,
    outbox: &Outbox,
    limit: usize,
) -> bool {
    // Auto-close and auto-pong are off, so fastwebsockets never asks us to send anything here.
    let mut no_send = |_: Frame<'_>| async { Ok::<(), Infallible>(()) };
    let mut assembly = Reassembly::new(limit);
    loop {
        let frame = match rd.read_frame(&mut no_send).await {
            Ok(f) => f,
            Err(e) => {
                let broken = close_for_error(&e);
                debug!(client = id, error = %e, "read ended");
                return match broken {
                    Some(d) => {
                        outbox.close(d);
                        false
                    }
                    None => true,
                };
            }
        };
        if frame.opcode == OpCode::Close {
            outbox.close(close_reply(&frame.payload));
            return true;
        }
        // A connection that is closing (refused over the limit, slow, shutting down) handles
        // nothing more: a batched connect+subscribe must not join channels on its way out.
        if outbox.is_closing() {
            return false;
        }
        let complete: Option<Result<(), Disconnect>> = match frame.opcode {
            OpCode::Close => unreachable!("handled above"),
            OpCode::Ping => {
                outbox.pong(Bytes::copy_from_slice(&frame.payload));
                None
            }
            OpCode::Pong => None,
            OpCode::Text | OpCode::Binary | OpCode::Continuation => match assembly.feed(&frame) {
                Ok(Some(message)) => Some(lock(session).handle_message(&message)),
                Ok(None) => None,
                Err(d) => Some(Err(d)),
            },
        };
        if let Some(Err(d)) = complete {
            debug!(client = id, code = d.code, reason = %d.reason, "closing after the client's input");
            outbox.close(d);
            return false;
        }
    }
}

/// Data messages put back together from their frames. fastwebsockets 0.10 caps each frame but
/// not the total of a fragmented message, so the limit is checked here.
pub(crate) struct Reassembly {
    /// A fragmented message being assembled: (is text, bytes so far).
    partial: Option<(bool, Vec<u8>)>,
    limit: usize,
}

impl Reassembly {
    pub(crate) fn new(limit: usize) -> Reassembly {
        Reassembly {
            partial: None,
            limit,
        }
    }

    /// Takes a data frame (text, binary or continuation): the whole message once it is
    /// complete, `None` while fragments are missing, or the close a broken sequence deserves.
    pub(crate) fn feed<'f>(
        &mut self,
        frame: &'f Frame<'_>,
    ) -> Result<Option<Cow<'f, [u8]>>, Disconnect> {
        match frame.opcode {
            OpCode::Continuation => {}
            _ if self.partial.is_some() => return Err(Disconnect::PROTOCOL_ERROR),
            _ if frame.fin => return Ok(Some(Cow::Borrowed(&frame.payload[..]))),
            op => {
                self.partial = Some((op == OpCode::Text, frame.payload.to_vec()));
                return Ok(None);
            }
        }
        let Some((is_text, buf)) = self.partial.as_mut() else {
            return Err(Disconnect::PROTOCOL_ERROR);
        };
        if buf.len() + frame.payload.len() > self.limit {
            return Err(Disconnect::MESSAGE_TOO_BIG);
        }
        buf.extend_from_slice(&frame.payload);
        if !frame.fin {
            return Ok(None);
        }
        let is_text = *is_text;
        let (_, msg) = self.partial.take().expect("checked above");
        if is_text && std::str::from_utf8(&msg).is_err() {
            return Err(Disconnect::INVALID_PAYLOAD);
        }
        Ok(Some(Cow::Owned(msg)))
    }
}

/// What to answer a client's close frame with (RFC 6455 §5.5.1, §7.4).
fn close_reply(payload: &[u8]) -> Disconnect {
    match payload.len() {
        0 => Disconnect::echo(1000),
        1 => Disconnect::PROTOCOL_ERROR,
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let allowed = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !allowed {
                Disconnect::PROTOCOL_ERROR
            } else if std::str::from_utf8(&payload[2..]).is_err() {
                Disconnect::INVALID_PAYLOAD
            } else {
                Disconnect::echo(code)
            }
        }
    }
}

/// The upgraded socket with client masking enforced (see `masking`).
pub fn mask_checked<S>(ws: WebSocket<S>) -> WebSocket<MaskCheck<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    WebSocket::after_handshake(
        MaskCheck::new(ws.into_inner()),
        fastwebsockets::Role::Server,
    )
}

/// The close code a read error deserves; `None` when the stream is simply gone.
pub(crate) fn close_for_error(e: &WebSocketError) -> Option<Disconnect> {
    match e {
        WebSocketError::IoError(io) if crate::masking::Unmasked::caused(io) => {
            Some(Disconnect::PROTOCOL_ERROR)
        }
        WebSocketError::FrameTooLarge => Some(Disconnect::MESSAGE_TOO_BIG),
        WebSocketError::InvalidUTF8 => Some(Disconnect::INVALID_PAYLOAD),
        WebSocketError::UnexpectedEOF
        | WebSocketError::IoError(_)
        | WebSocketError::ConnectionClosed => None,
        _ => Some(Disconnect::PROTOCOL_ERROR),
    }
}

/// Drains the outbox into the socket and runs the connection's timers, until a close is sent.
async fn write_loop<S: AsyncWrite + Unpin>(
    wr: &mut WebSocketWrite<WriteHalf<S>>,
    outbox: &Outbox,
    settings: &Settings,
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
        let result = async {
            if let Some(p) = drained.pong {
                wr.write_frame(Frame::pong(Payload::Borrowed(&p))).await?;
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
                wr.write_frame(Frame::close(d.code, d.reason.as_bytes()))
                    .await?;
            }
            wr.flush().await
        };
        match timeout(settings.write_timeout, result).await {
            Ok(Ok(())) if drained.close.is_none() => {}
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

/// Writes every queued message, several per frame joined by `\n`; returns the bytes written.
async fn write_coalesced<S: AsyncWrite + Unpin>(
    wr: &mut WebSocketWrite<WriteHalf<S>>,
    queue: &mut VecDeque<Bytes>,
    buf: &mut Vec<u8>,
) -> Result<usize, WebSocketError> {
    let written = queue.iter().map(Bytes::len).sum();
    while let Some(first) = queue.pop_front() {
        let fits = |q: &VecDeque<Bytes>, len: usize| {
            q.front()
                .is_some_and(|m| len + 1 + m.len() <= COALESCE_BYTES)
        };
        if !fits(queue, first.len()) {
            wr.write_frame(Frame::text(Payload::Borrowed(&first)))
                .await?;
            continue;
        }
        buf.clear();
        buf.extend_from_slice(&first);
        while fits(queue, buf.len()) {
            let m = queue.pop_front().expect("checked by fits");
            buf.push(b'\n');
            buf.extend_from_slice(&m);
        }
        wr.write_frame(Frame::text(Payload::Borrowed(buf))).await?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastwebsockets::Role;

    /// 200 queued messages go out as one text frame, joined by `\n`; a message too large to
    /// share a frame goes alone.
    #[tokio::test]
    async fn queued_messages_are_coalesced_into_one_frame() {
        let (server, client) = tokio::io::duplex(1 << 20);
        let (_rd, mut wr) =
            WebSocket::after_handshake(server, Role::Server).split(tokio::io::split);
        let mut queue: VecDeque<Bytes> = (0..200)
            .map(|i| Bytes::from(format!("{{\"i\":{i}}}")))
            .collect();
        queue.push_back(Bytes::from(vec![b'x'; COALESCE_BYTES]));
        queue.push_back(Bytes::from_static(b"{}"));
        let mut buf = Vec::new();
        write_coalesced(&mut wr, &mut queue, &mut buf)
            .await
            .unwrap();
        wr.flush().await.unwrap();
        assert!(queue.is_empty());

        let mut peer = WebSocket::after_handshake(client, Role::Client);
        let first = peer.read_frame().await.unwrap();
        let text = std::str::from_utf8(&first.payload).unwrap();
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines.len(), 200);
        assert_eq!(lines[199], "{\"i\":199}");
        assert_eq!(
            peer.read_frame().await.unwrap().payload.len(),
            COALESCE_BYTES
        );
        assert_eq!(&peer.read_frame().await.unwrap().payload[..], b"{}");
    }
}
