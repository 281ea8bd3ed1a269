//! What each kind of channel supports (design §5): which scopes exist, where clients may publish,
//! and which channels have presence and join/leave.

use crate::channel::{Channel, Scope};
use crate::protocol::ErrorCode;

/// The behaviour of one channel, decided from its scope and namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelKind {
    /// presence / presence_stats answer (else 108).
    pub presence: bool,
    /// Subscribers receive join/leave pushes and their own subscribe emits them.
    pub join_leave: bool,
    /// Client publish (and `POST /api/live/publish`) is allowed, else this error.
    pub publish: Result<(), ErrorCode>,
}

/// Routes a channel; `Err` is the error a subscribe, publish or presence gets for it.
pub fn route(channel: &Channel) -> Result<ChannelKind, ErrorCode> {
    match (channel.scope(), channel.namespace()) {
        // Grafana's broadcast feature: anyone publishes, presence and join/leave on.
        (Scope::Grafana, "broadcast") => Ok(ChannelKind {
            presence: true,
            join_leave: true,
            publish: Ok(()),
        }),
        // Managed streams are fed only by the push API.
        (Scope::Stream, _) => Ok(ChannelKind {
            presence: false,
            join_leave: false,
            publish: Err(ErrorCode::PermissionDenied),
        }),
        // Stream handlers (plugin/ds) arrive with their own issue; other grafana features and
        // unknown scopes do not exist here.
        _ => Err(ErrorCode::UnknownChannel),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str) -> Result<ChannelKind, ErrorCode> {
        route(&Channel::parse(name, 1).unwrap())
    }

    #[test]
    fn scopes_route_as_designed() {
        assert!(r("grafana/broadcast/x").unwrap().presence);
        assert_eq!(r("grafana/broadcast/x").unwrap().publish, Ok(()));
        assert_eq!(
            r("stream/s/m").unwrap().publish,
            Err(ErrorCode::PermissionDenied)
        );
        assert_eq!(
            r("plugin/testdata/random-2s-stream"),
            Err(ErrorCode::UnknownChannel)
        );
        assert_eq!(r("ds/uid/x"), Err(ErrorCode::UnknownChannel));
        assert_eq!(r("grafana/dashboard/uid/x"), Err(ErrorCode::UnknownChannel));
        assert_eq!(r("watch/x/y"), Err(ErrorCode::UnknownChannel));
    }
}
