//! Key and channel names in Redis, Centrifuge's layout under one prefix (Grafana's is
//! `gf_live`, or `<ha_prefix>.gf_live`). A channel is named as Grafana names it there: with
//! its org, `1/stream/telegraf/cpu`, so edgelive nodes and Grafana servers sharing one Redis
//! and one org meet on the same keys.

/// The names of one deployment's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
    /// `"<org>/"`, between the prefix's part and the hub's channel key.
    org: String,
}

impl Keys {
    /// Grafana's prefix from `ha_prefix` (see `prefix`), channels of `org_id`.
    pub fn new(ha_prefix: &str, org_id: i64) -> Keys {
        Keys {
            prefix: prefix(ha_prefix),
            org: format!("{org_id}/"),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The pub/sub channel of a hub key: `P.client.<org>/<key>`.
    pub fn client(&self, key: &str) -> String {
        self.join("client", key)
    }

    /// The history stream: entry id = offset, field `d` = the protobuf publication.
    pub fn stream(&self, key: &str) -> String {
        self.join("stream", key)
    }

    /// The history's meta hash: `e` epoch, `s` top offset.
    pub fn stream_meta(&self, key: &str) -> String {
        self.join("stream.meta", key)
    }

    /// Presence: client id → protobuf `ClientInfo`.
    pub fn presence_data(&self, key: &str) -> String {
        self.join("presence.data", key)
    }

    /// Presence expiry: client id scored by when it expires (unix seconds).
    pub fn presence_expire(&self, key: &str) -> String {
        self.join("presence.expire", key)
    }

    /// A managed stream's last frame (Grafana's `managedstream` Redis cache): hash with
    /// `schema` and `frame`.
    pub fn managed_stream(&self, key: &str) -> String {
        self.join("managed_stream", key)
    }

    /// A `SCAN MATCH` pattern for this org's managed streams' last frames (glob characters in
    /// the prefix escaped).
    pub fn managed_streams_pattern(&self) -> String {
        let mut p = String::new();
        for c in self.join("managed_stream", "").chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                p.push('\\');
            }
            p.push(c);
        }
        p.push('*');
        p
    }

    /// The hub key of a managed stream's last-frame key, when it is one of ours.
    pub fn key_of_managed_stream<'a>(&self, key: &'a str) -> Option<&'a str> {
        let rest = key.strip_prefix(self.prefix.as_str())?;
        let rest = rest.strip_prefix(".managed_stream.")?;
        rest.strip_prefix(self.org.as_str())
    }

    /// The hub key of a pub/sub channel name, when it is one of ours (this prefix, this org).
    pub fn key_of_client<'a>(&self, channel: &'a [u8]) -> Option<&'a str> {
        let rest = channel.strip_prefix(self.prefix.as_bytes())?;
        let rest = rest.strip_prefix(b".client.")?;
        let rest = rest.strip_prefix(self.org.as_bytes())?;
        std::str::from_utf8(rest).ok()
    }

    fn join(&self, what: &str, key: &str) -> String {
        let mut s =
            String::with_capacity(self.prefix.len() + what.len() + self.org.len() + key.len() + 2);
        s.push_str(&self.prefix);
        s.push('.');
        s.push_str(what);
        s.push('.');
        s.push_str(&self.org);
        s.push_str(key);
        s
    }
}

/// Grafana's Redis prefix: `gf_live`, or `<ha_prefix>.gf_live` when `ha_prefix` is set.
pub fn prefix(ha_prefix: &str) -> String {
    match ha_prefix {
        "" => "gf_live".to_owned(),
        p => format!("{p}.gf_live"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_centrifuges_layout_under_grafanas_prefix() {
        let k = Keys::new("", 1);
        assert_eq!(k.client("stream/a/b"), "gf_live.client.1/stream/a/b");
        assert_eq!(k.stream("x/y/z"), "gf_live.stream.1/x/y/z");
        assert_eq!(k.stream_meta("x/y/z"), "gf_live.stream.meta.1/x/y/z");
        assert_eq!(k.presence_data("x/y/z"), "gf_live.presence.data.1/x/y/z");
        assert_eq!(
            k.presence_expire("x/y/z"),
            "gf_live.presence.expire.1/x/y/z"
        );
        let site = Keys::new("site-a", 2);
        assert_eq!(site.client("a/b/c"), "site-a.gf_live.client.2/a/b/c");
        assert_eq!(
            site.key_of_client(b"site-a.gf_live.client.2/a/b/c"),
            Some("a/b/c")
        );
        assert_eq!(site.key_of_client(b"site-a.gf_live.client.1/a/b/c"), None);
        assert_eq!(site.key_of_client(b"gf_live.client.2/a/b/c"), None);
        let odd = Keys::new("a*b", 1);
        assert_eq!(
            odd.managed_streams_pattern(),
            "a\\*b.gf_live.managed_stream.1/*"
        );
        assert_eq!(
            odd.key_of_managed_stream("a*b.gf_live.managed_stream.1/stream/x/y"),
            Some("stream/x/y")
        );
    }
}
