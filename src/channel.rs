//! Channel addresses: `scope/namespace/path`, Grafana's rules (design §5).
//!
//! A channel is split on its first two `/`. Scope and namespace allow ASCII letters, digits and
//! `_ - .`; the path also `/` and `=`. Grafana's regex `[A-z]` accidentally admits
//! ``[ \ ] ^ ` ``; we do not. The whole name (without the org prefix) is at most 160 bytes.
//! A Grafana front end prefixes the org id (`1/stream/telegraf/cpu`); that form is accepted when
//! the id equals ours, and the client keeps seeing the exact name it used.

use std::fmt;
use std::sync::Arc;

/// Longest channel name without the org prefix, as in Grafana.
pub const MAX_CHANNEL_LEN: usize = 160;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("channel is empty")]
    Empty,
    #[error("channel is {0} bytes long; the limit is {MAX_CHANNEL_LEN}")]
    TooLong(usize),
    #[error("channel must have three non-empty parts scope/namespace/path")]
    MissingParts,
    #[error("invalid character {ch:?} in the {part} of the channel")]
    BadChar { part: &'static str, ch: char },
    #[error("channel is prefixed with org {got}, but this server serves org {ours}")]
    WrongOrg { got: String, ours: i64 },
}

/// The scopes Grafana Live knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Grafana,
    Plugin,
    Ds,
    Stream,
    /// Syntactically valid but unknown to us (e.g. Grafana's `watch`): answered 102.
    Other,
}

/// A parsed channel. `key` is the canonical name (no org prefix) that the hub and storage use;
/// `prefixed` says whether the client wrote the `<org>/` form, so pushes can echo it.
#[derive(Clone, PartialEq, Eq)]
pub struct Channel {
    key: Arc<str>,
    ns_start: usize,
    path_start: usize,
    pub prefixed: bool,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Channel({:?}, prefixed={})", self.key, self.prefixed)
    }
}

impl Channel {
    /// Parses a name as a client sends it, with or without the org prefix.
    pub fn parse(name: &str, org_id: i64) -> Result<Channel, ChannelError> {
        if name.is_empty() {
            return Err(ChannelError::Empty);
        }
        let (bare, prefixed) = match name.split_once('/') {
            Some((first, rest))
                if !first.is_empty() && first.bytes().all(|b| b.is_ascii_digit()) =>
            {
                if first.parse::<i64>().ok() != Some(org_id) {
                    return Err(ChannelError::WrongOrg {
                        got: first.chars().take(20).collect(),
                        ours: org_id,
                    });
                }
                (rest, true)
            }
            _ => (name, false),
        };
        let mut c = Channel::parse_bare(bare)?;
        c.prefixed = prefixed;
        Ok(c)
    }

    /// Parses a canonical name (no org prefix), e.g. one built by the push API.
    pub fn parse_bare(name: &str) -> Result<Channel, ChannelError> {
        if name.is_empty() {
            return Err(ChannelError::Empty);
        }
        if name.len() > MAX_CHANNEL_LEN {
            return Err(ChannelError::TooLong(name.len()));
        }
        let mut parts = name.splitn(3, '/');
        let scope = parts.next().unwrap_or("");
        let ns = parts.next().unwrap_or("");
        let path = parts.next().unwrap_or("");
        if scope.is_empty() || ns.is_empty() || path.is_empty() {
            return Err(ChannelError::MissingParts);
        }
        check_chars(scope, "scope", false)?;
        check_chars(ns, "namespace", false)?;
        check_chars(path, "path", true)?;
        Ok(Channel {
            key: Arc::from(name),
            ns_start: scope.len() + 1,
            path_start: scope.len() + ns.len() + 2,
            prefixed: false,
        })
    }

    /// Canonical name, without the org prefix.
    pub fn key(&self) -> &Arc<str> {
        &self.key
    }

    pub fn scope(&self) -> Scope {
        match &self.key[..self.ns_start - 1] {
            "grafana" => Scope::Grafana,
            "plugin" => Scope::Plugin,
            "ds" => Scope::Ds,
            "stream" => Scope::Stream,
            _ => Scope::Other,
        }
    }

    /// `scope/namespace`, the part a stream handler is registered under.
    pub fn scope_namespace(&self) -> &str {
        &self.key[..self.path_start - 1]
    }

    pub fn namespace(&self) -> &str {
        &self.key[self.ns_start..self.path_start - 1]
    }

    pub fn path(&self) -> &str {
        &self.key[self.path_start..]
    }
}

fn check_chars(part: &str, what: &'static str, is_path: bool) -> Result<(), ChannelError> {
    let ok = |c: char| {
        c.is_ascii_alphanumeric()
            || matches!(c, '_' | '-' | '.')
            || (is_path && matches!(c, '/' | '='))
    };
    match part.chars().find(|&c| !ok(c)) {
        Some(ch) => Err(ChannelError::BadChar { part: what, ch }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_channels_from_grafana_tests() {
        for name in [
            "plugin/testdata/random-20Hz-stream",
            "ds/uid/path/with/slashes",
            "stream/telegraf/cpu",
            "grafana/dashboard/uid/abc",
            "watch/dashboard.grafana.app/x",
            "stream/s/a=b.c",
            "grafana/broadcast/x_y-z",
        ] {
            let c = Channel::parse(name, 1).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&**c.key(), name);
            assert!(!c.prefixed);
        }
        let c = Channel::parse("ds/uid/path/with/slashes", 1).unwrap();
        assert_eq!(c.scope(), Scope::Ds);
        assert_eq!(c.namespace(), "uid");
        assert_eq!(c.path(), "path/with/slashes");
    }

    #[test]
    fn invalid_channels_are_rejected_precisely() {
        assert_eq!(Channel::parse("", 1), Err(ChannelError::Empty));
        assert_eq!(
            Channel::parse("grafana", 1),
            Err(ChannelError::MissingParts)
        );
        assert_eq!(Channel::parse("a/b", 1), Err(ChannelError::MissingParts));
        assert_eq!(Channel::parse("a//c", 1), Err(ChannelError::MissingParts));
        assert!(matches!(
            Channel::parse("stream/test/%", 1),
            Err(ChannelError::BadChar {
                part: "path",
                ch: '%'
            })
        ));
        assert!(Channel::parse("stream/cpu/ test", 1).is_err());
        assert!(Channel::parse("stream/cpu/ѓ", 1).is_err());
        assert!(Channel::parse("grafana=/test=/path", 1).is_err());
        assert!(Channel::parse("stream/a,b/c", 1).is_err());
        // Grafana's [A-z] quirk is not copied.
        for bad in [
            "stream/a[b/c",
            "stream/ns/p\\q",
            "stream/ns/p^q",
            "stream/ns/p`q",
            "stre]am/n/p",
        ] {
            assert!(Channel::parse(bad, 1).is_err(), "{bad}");
        }
        let long = format!("stream/ns/{}", "p".repeat(151));
        assert_eq!(Channel::parse(&long, 1), Err(ChannelError::TooLong(161)));
        assert!(Channel::parse(&format!("stream/ns/{}", "p".repeat(150)), 1).is_ok());
    }

    #[test]
    fn org_prefix_is_accepted_for_our_org_only() {
        let c = Channel::parse("1/stream/telegraf/cpu", 1).unwrap();
        assert!(c.prefixed);
        assert_eq!(&**c.key(), "stream/telegraf/cpu");
        assert!(matches!(
            Channel::parse("2/stream/telegraf/cpu", 1),
            Err(ChannelError::WrongOrg { .. })
        ));
        // A prefix does not count against the 160 bytes.
        let name = format!("1/stream/ns/{}", "p".repeat(150));
        assert!(Channel::parse(&name, 1).is_ok());
    }
}
