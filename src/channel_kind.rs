//! What each kind of channel supports (design §5): which scopes exist, where clients may publish,
//! which channels have presence and join/leave, and which keep history (`[[history]]` rules).

use std::time::Duration;

use serde::Deserialize;

use crate::channel::{Channel, Scope};
use crate::glob::path_glob;
use crate::protocol::ErrorCode;

/// `[[history]]`: channels matching `pattern` keep their last `size` publications for `ttl`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HistoryRule {
    /// Path glob over the channel name without org prefix (`crate::glob`): `*` within one
    /// `/`-separated segment, `**` across segments.
    pub pattern: String,
    /// Publications kept; 0 turns history off for these channels.
    pub size: u64,
    /// How long a publication is kept.
    #[serde(with = "crate::duration")]
    pub ttl: Duration,
}

/// History when the config has no `[[history]]`: broadcast and managed streams keep some.
pub fn default_history() -> Vec<HistoryRule> {
    vec![
        HistoryRule {
            pattern: "grafana/broadcast/**".into(),
            size: 100,
            ttl: Duration::from_secs(600),
        },
        HistoryRule {
            pattern: "stream/**".into(),
            size: 1000,
            ttl: Duration::from_secs(3600),
        },
    ]
}

/// History settings of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPolicy {
    /// Publications kept.
    pub size: u64,
    /// How long each is kept.
    pub ttl: Duration,
}

/// The behaviour of one channel, decided from its scope, namespace and the history rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelKind {
    /// presence / presence_stats answer (else 108).
    pub presence: bool,
    /// Subscribers receive join/leave pushes and their own subscribe emits them.
    pub join_leave: bool,
    /// Client publish (and `POST /api/live/publish`) is allowed, else this error.
    pub publish: Result<(), ErrorCode>,
    /// Publications get offsets and are kept; subscribers can recover.
    pub history: Option<HistoryPolicy>,
    /// A managed stream: fed by the push API, its last frame is the subscribe reply's data.
    pub managed: bool,
    /// A stream handler's channel (`plugin/…`, `ds/…`): it authorizes subscribes and publishes
    /// and a producer runs while someone watches.
    pub handler: bool,
    /// A managed stream written back to its source: a client publish goes to the stream's
    /// writer (an MQTT bridge with `publish = true` sends it to the topic), not to subscribers.
    pub written_back: bool,
}

impl ChannelKind {
    /// Channels sequenced on the storage thread: their publications get offsets (history) or
    /// update the kept last frame (managed streams), so subscribes and publications are ordered
    /// there. Presence alone is not among them: it is answered from the hub's memory.
    pub fn is_sequenced(&self) -> bool {
        self.history.is_some() || self.managed
    }
}

/// Decides each channel's kind from its scope and namespace, the stream handlers there are and
/// the `[[history]]` rules.
#[derive(Debug, Clone, Default)]
pub struct ChannelKinds {
    history: Vec<HistoryRule>,
    /// `scope/namespace` of every stream handler.
    handlers: Vec<String>,
    /// Stream ids whose channels are written back to their source (`stream/<id>/…`).
    written_back: Vec<String>,
}

impl ChannelKinds {
    pub fn new(history: Vec<HistoryRule>, handlers: Vec<String>) -> ChannelKinds {
        ChannelKinds {
            history,
            handlers,
            written_back: Vec::new(),
        }
    }

    /// These streams' channels take client publishes, for their writers.
    pub fn with_written_back(mut self, streams: Vec<String>) -> ChannelKinds {
        self.written_back = streams;
        self
    }

    /// The kind of a channel; `Err` is the error a subscribe, publish or presence gets for it.
    pub fn kind_of(&self, channel: &Channel) -> Result<ChannelKind, ErrorCode> {
        let mut kind = match (channel.scope(), channel.namespace()) {
            // Grafana's broadcast feature: anyone publishes, presence and join/leave on.
            (Scope::Grafana, "broadcast") => ChannelKind {
                presence: true,
                join_leave: true,
                publish: Ok(()),
                history: None,
                managed: false,
                handler: false,
                written_back: false,
            },
            // Grafana's dashboard events (`grafana/dashboard/uid/<uid>`): the server publishes
            // `{"uid","action"}` when a dashboard is saved or deleted; watchers see each other
            // through presence and join/leave, as in Grafana.
            (Scope::Grafana, "dashboard") => ChannelKind {
                presence: true,
                join_leave: true,
                publish: Err(ErrorCode::PermissionDenied),
                history: None,
                managed: false,
                handler: false,
                written_back: false,
            },
            // Managed streams are fed only by the push API and bridges; a bridge that writes
            // back takes client publishes on its stream.
            (Scope::Stream, ns) => {
                let written_back = self.written_back.iter().any(|s| s == ns);
                ChannelKind {
                    presence: false,
                    join_leave: false,
                    publish: if written_back {
                        Ok(())
                    } else {
                        Err(ErrorCode::PermissionDenied)
                    },
                    history: None,
                    managed: true,
                    handler: false,
                    written_back,
                }
            }
            // Stream handlers decide subscribes and publishes themselves.
            (Scope::Plugin | Scope::Ds, _)
                if self.handlers.iter().any(|h| h == channel.scope_namespace()) =>
            {
                ChannelKind {
                    presence: false,
                    join_leave: false,
                    publish: Ok(()),
                    history: None,
                    managed: false,
                    handler: true,
                    written_back: false,
                }
            }
            // Other grafana features, namespaces without a handler and unknown scopes do not
            // exist here.
            _ => return Err(ErrorCode::UnknownChannel),
        };
        kind.history = self.history_for(channel.key());
        Ok(kind)
    }

    /// The first matching `[[history]]` rule, if it keeps anything.
    pub fn history_for(&self, key: &str) -> Option<HistoryPolicy> {
        self.history
            .iter()
            .find(|r| path_glob(&r.pattern, key))
            .filter(|r| r.size > 0)
            .map(|r| HistoryPolicy {
                size: r.size,
                ttl: r.ttl,
            })
    }

    /// The pattern a channel's history is accounted under (for size reports).
    pub fn pattern_of(&self, key: &str) -> Option<&str> {
        self.history
            .iter()
            .find(|r| path_glob(&r.pattern, key))
            .map(|r| r.pattern.as_str())
    }

    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.history.iter().map(|r| r.pattern.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str) -> Result<ChannelKind, ErrorCode> {
        ChannelKinds::new(
            default_history(),
            crate::streams::exec::config::namespaces(&[]),
        )
        .kind_of(&Channel::parse(name, 1).unwrap())
    }

    #[test]
    fn scopes_route_as_designed() {
        let b = r("grafana/broadcast/x").unwrap();
        assert!(b.presence && b.join_leave && b.is_sequenced());
        assert_eq!(b.publish, Ok(()));
        assert_eq!(b.history.unwrap().size, 100);
        let s = r("1/stream/s/m").unwrap();
        assert_eq!(s.publish, Err(ErrorCode::PermissionDenied));
        assert_eq!(s.history.unwrap().size, 1000);
        let t = r("plugin/testdata/random-2s-stream").unwrap();
        assert!(t.handler && !t.is_sequenced());
        assert_eq!(r("plugin/other/x"), Err(ErrorCode::UnknownChannel));
        assert_eq!(r("ds/uid/x"), Err(ErrorCode::UnknownChannel));
        let d = r("grafana/dashboard/uid/x").unwrap();
        assert!(d.presence && d.join_leave);
        assert_eq!(d.publish, Err(ErrorCode::PermissionDenied));
        assert_eq!(r("grafana/other/x"), Err(ErrorCode::UnknownChannel));
        assert_eq!(r("watch/x/y"), Err(ErrorCode::UnknownChannel));
    }

    #[test]
    fn first_matching_rule_wins_and_size_zero_turns_history_off() {
        let rules = vec![
            HistoryRule {
                pattern: "stream/quiet/*".into(),
                size: 0,
                ttl: Duration::from_secs(1),
            },
            HistoryRule {
                pattern: "stream/**".into(),
                size: 7,
                ttl: Duration::from_secs(1),
            },
        ];
        let kinds = ChannelKinds::new(rules, Vec::new());
        assert_eq!(kinds.history_for("stream/quiet/m"), None);
        assert_eq!(kinds.history_for("stream/loud/m").unwrap().size, 7);
        assert_eq!(kinds.pattern_of("stream/quiet/m"), Some("stream/quiet/*"));
        let k = kinds
            .kind_of(&Channel::parse("stream/quiet/m", 1).unwrap())
            .unwrap();
        assert!(k.managed && k.history.is_none());
    }

    /// History patterns are path globs like every channel pattern: `*` stays within a
    /// segment, `**` reaches below; the defaults keep history for deep channels too.
    #[test]
    fn history_patterns_are_path_globs() {
        let rule = |pattern: &str, size| HistoryRule {
            pattern: pattern.into(),
            size,
            ttl: Duration::from_secs(1),
        };
        let kinds = ChannelKinds::new(vec![rule("stream/*", 3), rule("stream/**", 9)], Vec::new());
        assert_eq!(kinds.history_for("stream/a").unwrap().size, 3);
        assert_eq!(kinds.history_for("stream/a/b/c").unwrap().size, 9);
        assert_eq!(kinds.pattern_of("stream/a/b"), Some("stream/**"));
        let defaults = ChannelKinds::new(default_history(), Vec::new());
        assert_eq!(defaults.history_for("stream/a/b/c").unwrap().size, 1000);
        assert_eq!(
            defaults.history_for("grafana/broadcast/a/b").unwrap().size,
            100
        );
        assert_eq!(defaults.history_for("streams/a/b"), None);
    }
}
