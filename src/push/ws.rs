//! `GET /api/live/push/:streamId` as a WebSocket (Telegraf's `outputs.websocket`): each text or
//! binary message is one line-protocol body. Nothing is sent back but pings and, at the end, a
//! close: 1007 with the reason when a message does not parse (never a silent drop), 1013 when
//! storage is busy, 1011 when it fails.
//!
//! Unlike Grafana (whose read deadline only pongs extend, so clients drop after ~28 s), any
//! incoming frame counts as life: the connection is closed only after a whole ping interval
//! plus the pong timeout passes with nothing from the client.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming as Body;
use hyper::{Request, Response, StatusCode};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};
use tracing::debug;

use super::{PushError, Target};
use crate::auth::{Identity, Role};
use crate::respond::error;
use crate::state::Shared;
use crate::websocket::{
    tcp_of, write_close, write_frame, Incoming, MessageReader, ReadEnd, CLOSE_LINGER,
};
use crate::wsframe::OpCode;

/// What the writer sends: the reader's answers, and its own pings.
enum Out {
    Ping,
    Pong(Vec<u8>),
    Close(u16, String),
}

/// Validates the target, then upgrades (the connection counts against `max_connections`).
pub fn upgrade(
    mut req: Request<Body>,
    shared: &Arc<Shared>,
    stream_id: &str,
    who: Identity,
) -> Response<crate::respond::Body> {
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
    let (resp, fut) =
        match crate::respond::accept_upgrade(&mut req, &shared.settings().allowed_origins) {
            Ok(v) => v,
            Err(refused) => return *refused,
        };
    let shared2 = shared.clone();
    shared.tracker.spawn(async move {
        let _slot = slot;
        match fut.await.map(tcp_of) {
            Ok(Some((stream, pre_read))) => run(stream, pre_read, shared2, target, who).await,
            Ok(None) => debug!("an upgraded push connection is not TCP"),
            Err(e) => debug!(error = %e, "push upgrade did not complete"),
        }
    });
    resp
}

async fn run(
    mut stream: TcpStream,
    pre_read: Bytes,
    shared: Arc<Shared>,
    target: Target,
    who: Identity,
) {
    let (rd, mut wr) = stream.split();
    let limit = shared.settings().push_max_body;
    let mut reader = MessageReader::new(limit, &pre_read);
    drop(pre_read);
    let started = Instant::now();
    // Milliseconds since `started` of the last frame from the client.
    let last_seen = AtomicU64::new(0);
    let (tx, mut rx) = mpsc::channel::<Out>(4);
    let peer_closed = {
        let reading = read_loop(
            &mut reader,
            &rd,
            &shared,
            (&target, &who),
            tx,
            &last_seen,
            started,
        );
        let writing = write_loop(&mut wr, &mut rx, &shared, &last_seen, started);
        tokio::pin!(reading, writing);
        tokio::select! {
            peer_closed = &mut reading => {
                let _ = timeout(CLOSE_LINGER, &mut writing).await;
                peer_closed
            }
            _ = &mut writing => false,
        }
    };
    if !peer_closed {
        // As on the Centrifuge endpoint: drop the client's further input until its close or
        // EOF, so our close frame is not lost to a reset.
        let _ = timeout(CLOSE_LINGER, reader.drain(&rd)).await;
    }
    debug!(stream = %target.stream_id, "push connection closed");
}

async fn read_loop(
    reader: &mut MessageReader,
    rd: &ReadHalf<'_>,
    shared: &Shared,
    (target, who): (&Target, &Identity),
    tx: mpsc::Sender<Out>,
    last_seen: &AtomicU64,
    started: Instant,
) -> bool {
    let close = |code: u16, reason: &str| Out::Close(code, reason.to_owned());
    loop {
        let seen = || last_seen.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let incoming = match reader.next_with(rd, seen).await {
            Ok(i) => i,
            Err(ReadEnd::Gone) => {
                debug!("push read ended");
                return true;
            }
            Err(ReadEnd::Broken(d)) => {
                let _ = tx.send(close(d.code, &d.reason)).await;
                return false;
            }
        };
        let message = match incoming {
            Incoming::Ping(payload) => {
                let _ = tx.send(Out::Pong(payload.to_vec())).await;
                continue;
            }
            Incoming::Pong => continue,
            Incoming::Close(_) => {
                let _ = tx.send(close(1000, "")).await;
                return true;
            }
            Incoming::Message(m) => Bytes::copy_from_slice(m),
            Incoming::Reassembled(m) => Bytes::from(m),
        };
        let result = super::ingest(shared, message, target, who).await;
        shared.push_stats.record(&result);
        match result {
            Ok(_) => {}
            Err(e) => {
                let code = match e {
                    PushError::Busy | PushError::ForwardFull(_) => 1013,
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

async fn write_loop(
    wr: &mut WriteHalf<'_>,
    rx: &mut mpsc::Receiver<Out>,
    shared: &Shared,
    last_seen: &AtomicU64,
    started: Instant,
) {
    let ws = shared.websocket_settings();
    let every = ws.ping_interval;
    let grace = ws.pong_timeout;
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
        let last = matches!(out, Out::Close(..));
        let r = timeout(ws.write_timeout, async {
            match &out {
                Out::Ping => write_frame(wr, OpCode::Ping, &[]).await,
                Out::Pong(p) => write_frame(wr, OpCode::Pong, p).await,
                Out::Close(code, reason) => write_close(wr, *code, reason).await,
            }
        })
        .await;
        if last || !matches!(r, Ok(Ok(()))) {
            return;
        }
    }
}
