//! One target's runtime settings, built from its `ForwardConfig` (token and CA files read).

use std::path::PathBuf;
use std::time::Duration;

use super::config::{url_parts, ForwardConfig, OnFull, UrlParts};
use crate::glob::path_glob;

/// What `gf_live_frame_format` a queued entry asks the far side for (stored as a byte).
pub fn layout_byte(layout: crate::ingest::Layout) -> u8 {
    match layout {
        crate::ingest::Layout::LabelsColumn => 0,
        crate::ingest::Layout::Wide => 1,
    }
}

#[derive(Clone)]
pub struct TargetSpec {
    pub name: String,
    pub url: UrlParts,
    /// The bearer token as read at start (a paused target reads `token_file` again).
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub streams: Vec<String>,
    pub stream_prefix: String,
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub gzip: bool,
    pub timeout: Duration,
    /// https: the CA (PEM) from `ca_file`; `None`: the system's roots.
    pub ca: Option<Vec<u8>>,
    pub max_queue: u64,
    pub on_full: OnFull,
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl std::fmt::Debug for TargetSpec {
    // Never prints the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetSpec")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("token", &self.token.is_some())
            .field("streams", &self.streams)
            .field("stream_prefix", &self.stream_prefix)
            .finish_non_exhaustive()
    }
}

impl TargetSpec {
    /// `config` must have passed validation.
    pub fn from_config(c: &ForwardConfig) -> Result<TargetSpec, String> {
        let at = format!("[[forward]] {}", c.name());
        let token = match (&c.token, &c.token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(path)) => Some(read_token(path).map_err(|e| format!("{at}: {e}"))?),
            (None, None) => None,
        };
        let ca = c
            .ca_file
            .as_deref()
            .map(crate::auth::config::read_secret_any)
            .transpose()
            .map_err(|e| format!("{at}: ca_file {e}"))?
            .map(String::into_bytes);
        Ok(TargetSpec {
            name: c.name(),
            url: url_parts(&c.url).map_err(|e| format!("{at}: {e}"))?,
            token,
            token_file: c.token_file.clone(),
            streams: c.streams.clone(),
            stream_prefix: c.stream_prefix.clone(),
            batch_size: c.batch_size,
            flush_interval: c.flush_interval,
            gzip: c.gzip,
            timeout: c.timeout,
            ca,
            max_queue: c.max_queue.0,
            on_full: c.on_full,
            retry_min: c.retry_min,
            retry_max: c.retry_max,
        })
    }

    /// Whether pushes to `stream` go to this target.
    pub fn forwards(&self, stream: &str) -> bool {
        self.streams.iter().any(|g| path_glob(g, stream))
    }

    /// The request path for `stream`'s points in `layout` (the byte of `layout_byte`).
    pub fn path(&self, stream: &str, layout: u8) -> String {
        let id = format!("{}{stream}", self.stream_prefix);
        let mut p = self.url.path.replace("{stream}", &id);
        if layout == 1 {
            p.push(if p.contains('?') { '&' } else { '?' });
            p.push_str("gf_live_frame_format=wide");
        }
        p
    }
}

/// Reads a token file (relative: `$CREDENTIALS_DIRECTORY`); surrounding whitespace is not
/// part of the token.
pub fn read_token(path: &std::path::Path) -> Result<String, String> {
    let t = crate::auth::config::read_secret_any(path)?;
    let t = t.trim();
    if t.is_empty() || t.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!(
            "{}: the token is empty or holds spaces",
            path.display()
        ));
    }
    Ok(t.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_take_the_prefixed_stream_and_the_layout() {
        let c: ForwardConfig = toml::from_str(
            "url = \"http://c:3000/api/live/push/{stream}\"\nstreams = [\"plant*\", \"mqtt\"]\nstream_prefix = \"pi-17-\"\ntoken = \"t\"",
        )
        .unwrap();
        let s = TargetSpec::from_config(&c).unwrap();
        assert!(s.forwards("plant1") && s.forwards("mqtt") && !s.forwards("mqtt2"));
        assert_eq!(s.path("plant1", 0), "/api/live/push/pi-17-plant1");
        assert_eq!(
            s.path("plant1", 1),
            "/api/live/push/pi-17-plant1?gf_live_frame_format=wide"
        );
        assert!(!format!("{s:?}").contains("\"t\""));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tok");
        std::fs::write(&f, "  abc\n").unwrap();
        assert_eq!(read_token(&f).unwrap(), "abc");
        std::fs::write(&f, "\n").unwrap();
        assert!(read_token(&f).is_err());
    }
}
