//! Managed-stream frames: channel name → the last full frame pushed to it (schema and data JSON
//! kept apart, so a push can compare schemas without re-encoding). Persisted, unlike Grafana's
//! memory cache, so a dashboard that subscribes after a restart still gets the last frame.

use serde::{Deserialize, Serialize};

use crate::{record, Store, StoreError};

/// The last frame of one managed stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFrame {
    /// The frame's `schema` object, JSON text.
    pub schema: String,
    /// The frame's `data` object, JSON text.
    pub data: String,
    /// When it was pushed, ms since the Unix epoch (for idle eviction).
    pub time_ms: u64,
}

impl Store {
    pub fn frame(&self, channel: &str) -> Result<Option<StoredFrame>, StoreError> {
        self.frames
            .get(channel.as_bytes())?
            .map(|v| record::decode(&v, "stream frame"))
            .transpose()
    }

    /// Keeps `schema` and `data` as the channel's last frame (written as a `StoredFrame`,
    /// without copying the parts first).
    pub fn set_frame(
        &self,
        channel: &str,
        schema: &str,
        data: &str,
        time_ms: u64,
    ) -> Result<(), StoreError> {
        #[derive(Serialize)]
        struct Borrowed<'a> {
            schema: &'a str,
            data: &'a str,
            time_ms: u64,
        }
        let value = record::encode(&Borrowed {
            schema,
            data,
            time_ms,
        });
        self.frames.insert(channel.as_bytes(), value)?;
        Ok(())
    }

    pub fn remove_frame(&self, channel: &str) -> Result<(), StoreError> {
        self.frames.remove(channel.as_bytes())?;
        Ok(())
    }

    /// Every stored frame, by channel name.
    pub fn frames(&self) -> impl Iterator<Item = Result<(String, StoredFrame), StoreError>> + '_ {
        self.frames.iter().map(|r| {
            let (k, v) = r?;
            Ok((
                String::from_utf8_lossy(&k).into_owned(),
                record::decode(&v, "stream frame")?,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_config;

    #[test]
    fn frames_survive_a_reopen_and_can_be_removed() {
        let dir = tempfile::tempdir().unwrap();
        let f = StoredFrame {
            schema: r#"{"fields":[]}"#.into(),
            data: r#"{"values":[]}"#.into(),
            time_ms: 42,
        };
        {
            let s = Store::open(&test_config(dir.path())).unwrap();
            assert_eq!(s.frame("stream/a/b").unwrap(), None);
            s.set_frame("stream/a/b", &f.schema, &f.data, f.time_ms)
                .unwrap();
            s.set_frame("stream/a/c", &f.schema, &f.data, f.time_ms)
                .unwrap();
            s.remove_frame("stream/a/c").unwrap();
            s.flush().unwrap();
        }
        let s = Store::open(&test_config(dir.path())).unwrap();
        assert_eq!(s.frame("stream/a/b").unwrap(), Some(f.clone()));
        let all: Vec<_> = s.frames().collect::<Result<_, _>>().unwrap();
        assert_eq!(all, vec![("stream/a/b".to_owned(), f)]);
    }
}
