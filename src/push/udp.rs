//! `[push.udp]`: each datagram is a line-protocol body for one configured stream. UDP has
//! nobody to answer, so a datagram that does not parse, comes from a source not allowed,
//! makes a channel its role may not publish on, or arrives while UDP's share of the storage
//! queue is full, is dropped and counted (`edgelive_push_errors_total`) and logged at debug
//! level.
//!
//! Trust model: UDP carries no credentials, so a datagram is taken on its source address
//! alone (`allowed_sources`, loopback by default and always loopback only in protected mode)
//! and publishes with `role` under `[[auth.rules]]`. Source addresses can be forged on a
//! shared network: open UDP to the LAN only where every host on it may publish.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tracing::{debug, warn};

use super::PushError;
use crate::auth::Action;
use crate::forward::lines::{echo_capacity, Lines};
use crate::persist::Slots;
use crate::settings::UdpSettings;
use crate::state::Shared;

/// Largest datagram read (the UDP maximum).
const MAX_DATAGRAM: usize = 65_536;

/// Receives until shutdown.
pub async fn serve(socket: UdpSocket, udp: UdpSettings, shared: Arc<Shared>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // Frames from UDP not yet stored: UDP's own bound on the shared storage queue.
    let slots = Arc::new(Slots::default());
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
        let result = take(&buf[..n], peer.ip(), &udp, &shared, &slots);
        shared.push_stats.record(&result);
        if let Err(e) = result {
            debug!(%peer, error = %e, "udp datagram dropped");
        }
    }
}

/// One datagram: source, parse, rules, bound, then published; how many frames it made.
fn take(
    datagram: &[u8],
    source: IpAddr,
    udp: &UdpSettings,
    shared: &Shared,
    slots: &Arc<Slots>,
) -> Result<usize, PushError> {
    let source = source.to_canonical();
    let allowed = udp.allowed_sources.iter().any(|net| net.contains(&source))
        && (source.is_loopback() || !shared.settings().auth.is_protected_mode());
    if !allowed {
        return Err(PushError::SourceRefused(source));
    }
    let sticky = super::sticky(shared);
    let now = super::now_ns();
    let t = &udp.target;
    let queues = shared.forward.queues_for(&t.stream_id);
    let mut lines =
        (!queues.is_empty()).then(|| Lines::with_capacity(echo_capacity(datagram.len())));
    let frames = super::frames_echo(datagram, t, now, sticky.as_deref(), lines.as_mut())?;
    for (channel, _) in &frames {
        shared
            .settings()
            .auth
            .check(&udp.identity, Action::Publish, channel)
            .map_err(|needed| PushError::Forbidden {
                channel: channel.to_string(),
                needed,
            })?;
    }
    let forward = lines.and_then(|l| super::Forward::new(queues, &t.stream_id, t.layout, l, now));
    if let Some(f) = &forward {
        f.check_room()?;
    }
    let n = frames.len();
    super::publish_detached(
        &shared.broker,
        &shared.persist,
        frames,
        forward,
        slots,
        udp.max_queued,
    )?;
    Ok(n)
}
