//! `[[forward]]`: targets that receive this device's pushed streams (a central Grafana or
//! edgelive push endpoint). What the operator writes, and the checks that name every problem.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::size::ByteSize;

/// What a full queue does with the next push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFull {
    /// Drops the oldest queued points to make room (Telegraf's behaviour), counted and logged.
    #[default]
    DropOldest,
    /// Refuses the push: HTTP 507 Insufficient Storage, nothing published.
    Refuse,
}

impl<'de> Deserialize<'de> for OnFull {
    // By hand, so that the error names the key (serde's names only the variants).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "drop_oldest" => Ok(OnFull::DropOldest),
            "refuse" => Ok(OnFull::Refuse),
            _ => Err(serde::de::Error::custom(format!(
                "on_full = {s:?}: expected \"drop_oldest\" or \"refuse\""
            ))),
        }
    }
}

/// One target.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// Names the target in logs, metrics and its queue on disk (renaming it starts an empty
    /// queue). Default: the URL's host.
    #[serde(default)]
    pub name: Option<String>,
    /// The far side's push endpoint, `{stream}` standing for the (prefixed) stream id:
    /// `https://central:3000/api/live/push/{stream}`.
    pub url: String,
    /// The bearer token (a Grafana service account's, or an edgelive API token).
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the token (relative: `$CREDENTIALS_DIRECTORY`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Which push stream ids go there (globs; MQTT bridges' streams too).
    #[serde(default = "default_streams")]
    pub streams: Vec<String>,
    /// Put before each stream id on the far side, so many devices stay apart.
    #[serde(default)]
    pub stream_prefix: String,
    /// Most points in one request.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// A smaller batch waits at most this long for more points.
    #[serde(default = "default_flush_interval", with = "crate::duration")]
    pub flush_interval: Duration,
    /// Sends bodies with `Content-Encoding: gzip` (edgelive centrals decode it).
    #[serde(default)]
    pub gzip: bool,
    /// Longest a request may take, from connecting to the answer's last byte.
    #[serde(default = "default_timeout", with = "crate::duration")]
    pub timeout: Duration,
    /// https: the CA that signed the far side's certificate (PEM); without it the system's
    /// roots. Relative: `$CREDENTIALS_DIRECTORY`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The queue's bound on disk.
    #[serde(default = "default_max_queue", deserialize_with = "max_queue")]
    pub max_queue: ByteSize,
    #[serde(default)]
    pub on_full: OnFull,
    /// Retry delays: from `retry_min`, doubling with jitter, up to `retry_max`.
    #[serde(default = "default_retry_min", with = "crate::duration")]
    pub retry_min: Duration,
    #[serde(default = "default_retry_max", with = "crate::duration")]
    pub retry_max: Duration,
}

fn default_streams() -> Vec<String> {
    vec!["*".into()]
}
fn default_batch_size() -> usize {
    1000
}
fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
/// A day at a few hundred points a second fits; on a Pi's SD card it is a small share.
fn default_max_queue() -> ByteSize {
    ByteSize(64 << 20)
}
fn default_retry_min() -> Duration {
    Duration::from_secs(1)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(60)
}

/// `max_queue`, its errors naming the key.
fn max_queue<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
    ByteSize::deserialize(d).map_err(|e| serde::de::Error::custom(format!("max_queue: {e}")))
}

/// The parts of a target URL, `{stream}` still in `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlParts {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, beginning with `/`.
    pub path: String,
}

/// Splits `http[s]://host[:port]/path` (IPv6 hosts in brackets).
pub fn url_parts(url: &str) -> Result<UrlParts, String> {
    let (rest, tls) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(r), _) => (r, false),
        (_, Some(r)) => (r, true),
        _ => return Err(format!("url {url:?} must start with http:// or https://")),
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.contains('@') {
        return Err(format!(
            "url {url:?}: put credentials in token or token_file, not the URL"
        ));
    }
    let (host, port) =
        crate::hostport::split(authority).map_err(|e| format!("url {url:?}: {e}"))?;
    let port = port.unwrap_or(if tls { 443 } else { 80 });
    if !path.contains("{stream}") {
        return Err(format!(
            "url {url:?} must contain {{stream}} where the stream id goes (…/api/live/push/{{stream}})"
        ));
    }
    let probe = path.replace("{stream}", "x");
    if probe.parse::<hyper::Uri>().is_err() || probe.contains(['{', '}', '#']) {
        return Err(format!("url {url:?}: the path is not a valid URI path"));
    }
    Ok(UrlParts {
        tls,
        host: host.to_owned(),
        port,
        path: path.to_owned(),
    })
}

/// A stream glob: the characters of stream ids, with `*` and `?`.
fn valid_stream_glob(g: &str) -> bool {
    !g.is_empty()
        && g.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.=*?".contains(&b))
}

/// A target's name: also a sled tree name and a metric label.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
}

impl ForwardConfig {
    /// The target's name: as configured, else the URL's host.
    pub fn name(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => match url_parts(&self.url) {
                Ok(u) => u.host,
                // The host as written, for naming a target whose URL has other problems.
                Err(_) => {
                    let rest = self.url.split_once("://").map_or("", |(_, r)| r);
                    let authority = rest.split('/').next().unwrap_or("");
                    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
                    crate::hostport::split(authority)
                        .map_or(host, |(h, _)| h)
                        .to_owned()
                }
            },
        }
    }

    /// Every problem of the target numbered `n` (1-based).
    pub fn validate(&self, n: usize, problems: &mut Vec<String>) {
        let at = format!("[[forward]] #{n}");
        match url_parts(&self.url) {
            Err(e) => problems.push(format!("{at}: {e}")),
            Ok(u) if !u.tls && self.ca_file.is_some() => {
                problems.push(format!("{at}: ca_file needs an https:// url"))
            }
            Ok(_) => {}
        }
        if !valid_name(&self.name()) {
            problems.push(format!(
                "{at}: name {:?} must be 1 to 64 letters, digits, _ - . or :",
                self.name()
            ));
        }
        if self.token.is_some() && self.token_file.is_some() {
            problems.push(format!("{at}: token and token_file are exclusive"));
        }
        if self
            .token
            .as_deref()
            .is_some_and(|t| t.is_empty() || t.bytes().any(|b| b.is_ascii_control() || b == b' '))
        {
            problems.push(format!("{at}: token must be non-empty, without spaces"));
        }
        if self.streams.is_empty() {
            problems.push(format!("{at}: streams is empty"));
        }
        for g in &self.streams {
            if !valid_stream_glob(g) {
                problems.push(format!(
                    "{at}: stream pattern {g:?} may hold letters, digits, _ - . = and the wildcards * ?"
                ));
            }
        }
        if !self.stream_prefix.is_empty()
            && crate::ingest::check_stream_id(&format!("{}x", self.stream_prefix)).is_err()
        {
            problems.push(format!(
                "{at}: stream_prefix {:?} must be letters, digits, _ - . or =",
                self.stream_prefix
            ));
        }
        if self.batch_size == 0 || self.batch_size > 100_000 {
            problems.push(format!("{at}: batch_size must be 1 to 100000 points"));
        }
        if self.flush_interval < Duration::from_millis(10)
            || self.flush_interval > Duration::from_secs(3600)
        {
            problems.push(format!("{at}: flush_interval must be 10ms to 1h"));
        }
        if self.timeout < Duration::from_millis(100) || self.timeout > Duration::from_secs(600) {
            problems.push(format!("{at}: timeout must be 100ms to 10m"));
        }
        if self.url.contains("gf_live_frame_format") {
            problems.push(format!(
                "{at}: url must not set gf_live_frame_format (each push's own is sent)"
            ));
        }
        if self.stream_prefix.len() > 64 {
            problems.push(format!("{at}: stream_prefix is longer than 64 bytes"));
        }
        if self.max_queue.0 < 1 << 20 {
            problems.push(format!(
                "{at}: max_queue = {} is below 1MiB",
                self.max_queue
            ));
        }
        if self.retry_min.is_zero()
            || self.retry_max < self.retry_min
            || self.retry_max > Duration::from_secs(3600)
        {
            problems.push(format!(
                "{at}: retry_min must be positive and at most retry_max, which is at most 1h"
            ));
        }
    }
}

/// Problems across targets: names must differ (each owns its queue).
pub fn validate_all(targets: &[ForwardConfig], problems: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    for (i, t) in targets.iter().enumerate() {
        t.validate(i + 1, problems);
        if !seen.insert(t.name()) {
            problems.push(format!(
                "[[forward]] #{}: another target is named {:?} (each owns a queue): set name",
                i + 1,
                t.name()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_and_checked() {
        let u = url_parts("https://central.example:3000/api/live/push/{stream}").unwrap();
        assert_eq!(
            u,
            UrlParts {
                tls: true,
                host: "central.example".into(),
                port: 3000,
                path: "/api/live/push/{stream}".into()
            }
        );
        assert_eq!(url_parts("http://[::1]/p/{stream}").unwrap().port, 80);
        assert_eq!(url_parts("http://[::1]:9/p/{stream}").unwrap().host, "::1");
        for bad in [
            "ftp://x/{stream}",
            "http://x/api/live/push/",
            "http://x:port/{stream}",
            "http:///{stream}",
            "http://u:p@x/{stream}",
            "http://x/a b/{stream}",
        ] {
            assert!(url_parts(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_problem_is_named() {
        let c: ForwardConfig = toml::from_str(
            r#"
url = "http://central:3000/api/live/push/{stream}"
token = "a"
token_file = "t"
streams = ["ok*", "bad/one"]
stream_prefix = "pi 17"
batch_size = 0
max_queue = "10KiB"
ca_file = "ca.pem"
retry_min = "10s"
retry_max = "1s"
"#,
        )
        .unwrap();
        let mut problems = Vec::new();
        validate_all(&[c.clone(), c], &mut problems);
        let first: Vec<_> = problems.iter().filter(|p| p.contains("#1:")).collect();
        assert_eq!(first.len(), 7, "{problems:#?}");
        assert!(problems
            .iter()
            .any(|p| p.contains("another target is named \"central\"")));
        assert!(toml::from_str::<ForwardConfig>("url = \"http://x/{stream}\"\nbogus = 1").is_err());
        let ok: ForwardConfig =
            toml::from_str("url = \"http://x/{stream}\"\non_full = \"refuse\"").unwrap();
        assert_eq!(
            (ok.on_full, ok.max_queue),
            (OnFull::Refuse, ByteSize(64 << 20))
        );
        let mut none = Vec::new();
        ok.validate(1, &mut none);
        assert!(none.is_empty(), "{none:?}");
    }

    /// The commented example in config/edgelive.toml is valid and shows the defaults.
    #[test]
    fn the_packaged_example_parses_with_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/edgelive.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let example: String = text
            .lines()
            .skip_while(|l| *l != "# [[forward]]")
            .skip(1)
            .take_while(|l| l.starts_with('#'))
            .filter_map(|l| l.strip_prefix("# "))
            .map(|l| format!("{l}\n"))
            .collect();
        let c: ForwardConfig = toml::from_str(&example).unwrap();
        let d: ForwardConfig = toml::from_str("url = \"http://x/{stream}\"").unwrap();
        assert_eq!(
            (
                c.batch_size,
                c.flush_interval,
                c.gzip,
                c.timeout,
                c.max_queue
            ),
            (
                d.batch_size,
                d.flush_interval,
                d.gzip,
                d.timeout,
                d.max_queue
            )
        );
        assert_eq!(
            (
                c.on_full,
                c.retry_min,
                c.retry_max,
                &c.streams,
                &c.stream_prefix
            ),
            (
                d.on_full,
                d.retry_min,
                d.retry_max,
                &d.streams,
                &d.stream_prefix
            )
        );
        let mut problems = Vec::new();
        c.validate(1, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
    }
}
