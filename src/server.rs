//! The listener, shared server state and graceful shutdown.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use crate::state::Shared;

/// Closed connections that make a heap trim worth it, and how often that is looked at.
const TRIM_AFTER_CLOSED: usize = 16;
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Accepts connections until shutdown, then waits (bounded) for every connection to close.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let shutdown = shared.shutdown.clone();
    // HTTP connections that have not become WebSockets (or finished): a flood of half-open
    // sockets is closed at accept beyond this, so it costs a socket each, never a task.
    let pending = Arc::new(Semaphore::new(shared.settings().max_pending_connections));
    shared.tracker.spawn(trim_after_closes(shared.clone()));
    // The watchdog tells systemd we are alive only while this task runs.
    shared
        .tracker
        .spawn(shared.persist.heartbeat.clone().run(shutdown.clone()));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            if shared.refused_connections.fetch_add(1, Ordering::Relaxed) % 1000 == 0 {
                warn!(%peer, max = shared.settings().max_pending_connections, "too many pending HTTP connections; closing new ones at accept");
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        shared
            .tracker
            .spawn(serve_http(stream, peer, shared.clone(), permit));
    }
    drop(listener);
    shared.tracker.close();
    if tokio::time::timeout(shared.settings().shutdown_timeout, shared.tracker.wait())
        .await
        .is_err()
    {
        warn!(
            left = shared.tracker.len(),
            "shutdown timeout: closing remaining connections"
        );
    }
    // Producers were cancelled with everything else; exec handlers' programs get their
    // SIGTERM and stop_timeout (then SIGKILL), so this wait is bounded by the longest one.
    let producers = shared.settings().producers_stop_timeout();
    if tokio::time::timeout(producers, shared.streams.lifecycle.stopped())
        .await
        .is_err()
    {
        warn!(
            left = shared.streams.lifecycle.num_running(),
            "producers still stopping at exit"
        );
    }
    info!("stopped");
}

/// Gives freed heap pages back after a burst of connections closed (see `allocator`), so RSS
/// returns to about idle on a board with little memory.
async fn trim_after_closes(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(TRIM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let closed = shared.closed_since_trim.load(Ordering::Relaxed);
        if closed >= TRIM_AFTER_CLOSED {
            // Subtracted, not reset: closes counted meanwhile count for the next trim.
            shared
                .closed_since_trim
                .fetch_sub(closed, Ordering::Relaxed);
            let _ = tokio::task::spawn_blocking(crate::allocator::trim).await;
        }
    }
}

/// Serves one HTTP connection; `_permit` is its pending-connection slot, released when hyper
/// hands an upgraded socket over or the connection ends.
async fn serve_http(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
) {
    let svc_shared = shared.clone();
    let ip = peer.ip();
    let service = service_fn(move |req| crate::http::handle(req, svc_shared.clone(), ip));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.settings().header_read_timeout)
        .max_buf_size(shared.settings().max_header_bytes)
        .max_header_size(shared.settings().max_header_bytes)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let res = tokio::select! {
        r = conn.as_mut() => r,
        _ = shared.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = res {
        debug!(%peer, error = %e, "http connection ended with an error");
    }
}
