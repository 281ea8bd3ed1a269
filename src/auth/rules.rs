//! Per-channel rules (`[[auth.rules]]`): patterns that raise the role needed to subscribe to
//! (subscribe, presence, history) or publish on (client publish, HTTP publish, push) a channel.
//!
//! Patterns are path globs (`crate::glob`, the dialect of every channel pattern) over the channel
//! name without the org prefix: `*` matches within one `/`-separated segment, `**` across
//! segments, `?` one character other than `/`. The first rule whose pattern matches decides;
//! rules only narrow, never widen, the defaults.

use super::Role;
use crate::glob::path_glob;

/// What a client wants to do on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Subscribe, presence, presence stats, history.
    Subscribe,
    /// Client publish, `POST /api/live/publish`, push.
    Publish,
}

impl Action {
    /// The role needed where no rule matches.
    pub fn default_role(self) -> Role {
        match self {
            Action::Subscribe => Role::Viewer,
            Action::Publish => Role::Publisher,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::Subscribe => "subscribe",
            Action::Publish => "publish",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub pattern: String,
    pub subscribe: Role,
    pub publish: Role,
}

impl Rule {
    pub fn needs(&self, action: Action) -> Role {
        match action {
            Action::Subscribe => self.subscribe,
            Action::Publish => self.publish,
        }
    }
}

/// The role `action` on `channel` (a key without org prefix) needs under `rules`.
pub fn needed(rules: &[Rule], action: Action, channel: &str) -> Role {
    rules
        .iter()
        .find(|r| path_glob(&r.pattern, channel))
        .map_or(action.default_role(), |r| r.needs(action))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `*` at the end of a rule covers one segment: the channels below keep the defaults
    /// (check-config warns about it); `**` covers everything below.
    #[test]
    fn a_globstar_rule_protects_deeper_channels_and_a_star_rule_does_not() {
        let rule = |pattern: &str| Rule {
            pattern: pattern.into(),
            subscribe: Role::Viewer,
            publish: Role::Admin,
        };
        let deep = "grafana/broadcast/a/b";
        let globstar = [rule("grafana/broadcast/**")];
        assert_eq!(needed(&globstar, Action::Publish, deep), Role::Admin);
        assert_eq!(
            needed(&globstar, Action::Publish, "grafana/broadcast/a"),
            Role::Admin
        );
        let star = [rule("grafana/broadcast/*")];
        assert_eq!(
            needed(&star, Action::Publish, "grafana/broadcast/a"),
            Role::Admin
        );
        assert_eq!(needed(&star, Action::Publish, deep), Role::Publisher);
    }

    #[test]
    fn the_first_matching_rule_decides_and_defaults_apply_elsewhere() {
        let rules = vec![
            Rule {
                pattern: "stream/factory-*/**".into(),
                subscribe: Role::Publisher,
                publish: Role::Admin,
            },
            Rule {
                pattern: "stream/**".into(),
                subscribe: Role::Admin,
                publish: Role::Admin,
            },
        ];
        let ch = "stream/factory-1/press";
        assert_eq!(needed(&rules, Action::Subscribe, ch), Role::Publisher);
        assert_eq!(needed(&rules, Action::Publish, ch), Role::Admin);
        assert_eq!(
            needed(&rules, Action::Subscribe, "stream/office/x"),
            Role::Admin
        );
        assert_eq!(
            needed(&rules, Action::Publish, "grafana/broadcast/x"),
            Role::Publisher
        );
        assert_eq!(
            needed(&rules, Action::Subscribe, "grafana/broadcast/x"),
            Role::Viewer
        );
    }
}
