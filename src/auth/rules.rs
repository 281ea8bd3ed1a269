//! Per-channel rules (`[[auth.rules]]`): patterns that raise the role needed to subscribe to
//! (subscribe, presence, history) or publish on (client publish, HTTP publish, push) a channel.
//!
//! Patterns are path globs over the channel name without the org prefix: `*` matches within one
//! `/`-separated segment, `**` across segments, `?` one character other than `/`. The first rule
//! whose pattern matches decides; rules only narrow, never widen, the defaults.

use super::Role;

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

/// True when `text` matches the path glob `pattern` as a whole.
pub fn path_glob(pattern: &str, text: &str) -> bool {
    #[derive(Clone, Copy)]
    enum Tok {
        Byte(u8),
        One,
        Star,
        Globstar,
    }
    let p = pattern.as_bytes();
    let mut toks = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        toks.push(match p[i] {
            b'*' if p.get(i + 1) == Some(&b'*') => {
                i += 1;
                Tok::Globstar
            }
            b'*' => Tok::Star,
            b'?' => Tok::One,
            b => Tok::Byte(b),
        });
        i += 1;
    }
    let t = text.as_bytes();
    // ok[j]: the tokens so far match text[..j]. One row per token: O(pattern × text).
    let mut ok = vec![false; t.len() + 1];
    ok[0] = true;
    for tok in toks {
        let mut next = vec![false; t.len() + 1];
        for j in 0..=t.len() {
            next[j] = match tok {
                Tok::Byte(b) => j > 0 && ok[j - 1] && t[j - 1] == b,
                Tok::One => j > 0 && ok[j - 1] && t[j - 1] != b'/',
                Tok::Star => ok[j] || (j > 0 && next[j - 1] && t[j - 1] != b'/'),
                Tok::Globstar => ok[j] || (j > 0 && next[j - 1]),
            };
        }
        ok = next;
    }
    ok[t.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_globs_keep_star_within_a_segment() {
        assert!(path_glob(
            "stream/factory-*/**",
            "stream/factory-7/press/temp"
        ));
        assert!(path_glob("stream/factory-*/*", "stream/factory-7/press"));
        assert!(!path_glob(
            "stream/factory-*/*",
            "stream/factory-7/press/temp"
        ));
        assert!(!path_glob("stream/factory-*/**", "stream/office/press"));
        assert!(!path_glob("stream/*", "stream/a/b"));
        assert!(path_glob("stream/**", "stream/a/b"));
        assert!(path_glob("**", "grafana/broadcast/x"));
        assert!(path_glob("grafana/broadcast/x?", "grafana/broadcast/x1"));
        assert!(!path_glob("grafana/broadcast/x?", "grafana/broadcast/x/"));
        assert!(!path_glob("a", "ab"));
        assert!(path_glob("", ""));
    }

    /// The obvious recursive definition, exponential but fine for short strings.
    fn reference(p: &[u8], t: &[u8]) -> bool {
        match p {
            [] => t.is_empty(),
            [b'*', b'*', rest @ ..] => (0..=t.len()).any(|i| reference(rest, &t[i..])),
            [b'*', rest @ ..] => (0..=t.len())
                .take_while(|&i| !t[..i].contains(&b'/'))
                .any(|i| reference(rest, &t[i..])),
            [b'?', rest @ ..] => t.first().is_some_and(|&c| c != b'/') && reference(rest, &t[1..]),
            [c, rest @ ..] => t.first() == Some(c) && reference(rest, &t[1..]),
        }
    }

    proptest::proptest! {
        #[test]
        fn path_glob_agrees_with_the_recursive_definition(
            p in "[ab/*?]{0,8}",
            t in "[ab/]{0,10}",
        ) {
            proptest::prop_assert_eq!(path_glob(&p, &t), reference(p.as_bytes(), t.as_bytes()));
        }
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
