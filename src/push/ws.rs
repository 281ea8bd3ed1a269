//! `GET /api/live/push/:streamId` as a WebSocket (Telegraf's `outputs.websocket`): each text or
//! binary message is one line-protocol body. Nothing is sent back but pings and, at the end, a
//! close: 1007 with the reason when a message does not parse (never a silent drop), 1013 when
//! storage is busy, 1011 when it fails.
//!
//! Unlike Grafana (whose read deadline only pongs extend, so clients drop after ~28 s), any
//! incoming frame counts as life: the connection is closed only after a whole ping interval
//! plus the pong timeout passes with nothing from the client.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocket, WebSocketRead, WebSocketWrite};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};
use tracing::debug;

use super::{PushError, Target};
use crate::auth::{Identity, Role};
use crate::respond::{error, Body};
use crate::state::Shared;
use crate::websocket::{close_for_error, drain, Reassembly};

/// What the writer sends: the reader's answers, and its own pings.
enum Out {
    Ping,
    Pong(Vec<u8>),
    Close(u16, String),
}

/// Validates the target, then upgrades (the connection counts against `max_connections`).
pub fn upgrade(
    mut req: Request<Incoming>,
    shared: &Arc<Shared>,
    stream_id: &str,
    who: Identity,
) -> Response<Body> {
    let target = match super::target(stream_id, req.uri().query(), shared.settings().push_limits) {
        Ok(t) => t,
        Err(e) => return super::http::push_error(&e),
    };
    // A role that can never publish gets its answer before the upgrade; rules are checked
    // per message, for the channels each one makes.
    if who.role < Role::Publisher {
        return error(
            StatusCode::FORBIDDEN,
            &format!(
                "permission denied: push needs the publisher role, {:?} is a viewer",
                who.user
            ),
        );
    }
    let slot = shared.connection_slot();
    if shared
        .settings()
        .max_connections
        .is_some_and(|max| slot.count() > max)
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "connection limit reached");
    }
    let (resp, fut) = match crate::respond::accept_upgrade(&mut req, &shared.settings()) {
        Ok(v) => v,
        Err(refused) => return *refused,
    };
    let shared2 = shared.clone();
    shared.tracker.spawn(async move {
        let _slot = slot;
        match fut.await {
            Ok(ws) => run(crate::websocket::mask_checked(ws), shared2, target, who).await,
            Err(e) => debug!(error = %e, "push upgrade did not complete"),
        }
    });
    resp
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    ws: WebSocket<S>,
    shared: Arc<Shared>,
    target: Target,
    who: Identity,
) {
    let (mut rd, mut wr) = ws.split(tokio::io::split);
    rd.set_auto_close(false);
    rd.set_auto_pong(false);
    let limit = shared.settings().push_max_body;
    rd.set_max_message_size(limit + 1);
    let started = Instant::now();
    // Milliseconds since `started` of the last frame from the client.
    let last_seen = AtomicU64::new(0);
    let (tx, mut rx) = mpsc::channel::<Out>(4);
    let peer_closed = {
        let reader = read_loop(
            &mut rd,
            &shared,
            (&target, &who),
            tx,
            &last_seen,
            started,
            limit,
        );
        let writer = write_loop(&mut wr, &mut rx, &shared, &last_seen, started);
        tokio::pin!(reader, writer);
        tokio::select! {
            peer_closed = &mut reader => {
                let _ = timeout(Duration::from_secs(1), &mut writer).await;
                peer_closed
            }
            _ = &mut writer => false,
        }
    };
    if !peer_closed {
        // As on the Centrifuge endpoint: drop the client's further input until its close or
        // EOF, so our close frame is not lost to a reset.
        let _ = timeout(Duration::from_secs(1), drain(&mut rd)).await;
    }
    debug!(stream = %target.stream_id, "push connection closed");
}

async fn read_loop<S: AsyncRead + Unpin>(
    rd: &mut WebSocketRead<ReadHalf<S>>,
    shared: &Shared,
    (target, who): (&Target, &Identity),
    tx: mpsc::Sender<Out>,
    last_seen: &AtomicU64,
    started: Instant,
    limit: usize,
) -> bool {
    let mut no_send = |_: Frame<'_>| async { Ok::<(), Infallible>(()) };
    let mut assembly = Reassembly::new(limit);
    let close = |code: u16, reason: &str| Out::Close(code, truncate(reason, 120).to_owned());
    loop {
        let frame = match rd.read_frame(&mut no_send).await {
            Ok(f) => f,
            Err(e) => {
                debug!(error = %e, "push read ended");
                let Some(d) = close_for_error(&e) else {
                    return true;
                };
                let _ = tx.send(close(d.code, &d.reason)).await;
                return false;
            }
        };
        last_seen.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let message = match frame.opcode {
            OpCode::Ping => {
                let _ = tx.send(Out::Pong(frame.payload.to_vec())).await;
                continue;
            }
            OpCode::Pong => continue,
            OpCode::Close => {
                let _ = tx.send(close(1000, "")).await;
                return true;
            }
            OpCode::Text | OpCode::Binary | OpCode::Continuation => match assembly.feed(&frame) {
                Ok(Some(m)) => Bytes::from(m.into_owned()),
                Ok(None) => continue,
                Err(d) => {
                    let _ = tx.send(close(d.code, &d.reason)).await;
                    return false;
                }
            },
        };
        let result = super::ingest(shared, message, target, who).await;
        shared.push_stats.record(&result);
        match result {
            Ok(_) => {}
            Err(e) => {
                let code = match e {
                    PushError::Busy => 1013,
                    PushError::Storage | PushError::StreamLimit => 1011,
                    PushError::TooLarge(_) | PushError::TooManyFrames(_) => 1009,
                    PushError::Forbidden { .. } => 1008,
                    _ => 1007,
                };
                debug!(stream = %target.stream_id, error = %e, "push message refused");
                let _ = tx.send(close(code, &e.to_string())).await;
                return false;
            }
        }
    }
}

async fn write_loop<S: AsyncWrite + Unpin>(
    wr: &mut WebSocketWrite<WriteHalf<S>>,
    rx: &mut mpsc::Receiver<Out>,
    shared: &Shared,
    last_seen: &AtomicU64,
    started: Instant,
) {
    let every = shared.settings().ping_interval;
    let grace = shared.settings().pong_timeout;
    let mut next_ping = every.map(|p| Instant::now() + p);
    loop {
        let out = tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => Out::Close(1001, "shutdown".into()),
            m = rx.recv() => match m {
                Some(m) => m,
                None => return,
            },
            _ = sleep_until(next_ping.unwrap_or_else(Instant::now)), if next_ping.is_some() => {
                let every = every.expect("pings are on");
                let seen = started + Duration::from_millis(last_seen.load(Ordering::Relaxed));
                if seen.elapsed() > every + grace {
                    Out::Close(1001, "no data or pong".into())
                } else {
                    next_ping = Some(Instant::now() + every);
                    Out::Ping
                }
            }
        };
        let (frame, last) = match &out {
            Out::Ping => (
                Frame::new(true, OpCode::Ping, None, Payload::Borrowed(&[])),
                false,
            ),
            Out::Pong(p) => (Frame::pong(Payload::Borrowed(p)), false),
            Out::Close(code, reason) => (Frame::close(*code, reason.as_bytes()), true),
        };
        let r = timeout(shared.settings().write_timeout, async {
            wr.write_frame(frame).await?;
            wr.flush().await
        })
        .await;
        if last || !matches!(r, Ok(Ok(()))) {
            return;
        }
    }
}

/// At most `max` bytes, cut at a character boundary (close reasons fit in a control frame).
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
