//! `[push.udp]`: each datagram is a line-protocol body for one configured stream. UDP has
//! nobody to answer, so a datagram that does not parse, or arrives while storage is busy, is
//! dropped and counted (`edgelive_push_errors_total`) and logged at debug level.

use std::sync::Arc;

use tokio::net::UdpSocket;
use tracing::{debug, warn};

use crate::server::Shared;
use crate::settings::UdpSettings;

/// Largest datagram read (the UDP maximum).
const MAX_DATAGRAM: usize = 65_536;

/// Receives until shutdown.
pub async fn serve(socket: UdpSocket, udp: UdpSettings, shared: Arc<Shared>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, peer) = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(e) => {
                    warn!(error = %e, "udp receive failed");
                    continue;
                }
            },
        };
        let result = super::frames(&buf[..n], &udp.target, super::now_ns()).and_then(|frames| {
            let n = frames.len();
            super::publish_detached(&shared.persist, &shared.settings.router, frames).map(|()| n)
        });
        shared.push_stats.record(&result);
        if let Err(e) = result {
            debug!(%peer, error = %e, "udp datagram dropped");
        }
    }
}
