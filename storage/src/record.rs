//! Stored values: a version byte followed by `rmp_serde::to_vec_named`, so fields can be added
//! (with `#[serde(default)]`) without breaking data written by an older edgelive.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// Version byte in front of every value this crate writes.
const VALUE_VERSION: u8 = 1;

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![VALUE_VERSION];
    // Serializing plain structs of strings and integers to a Vec cannot fail.
    out.extend(rmp_serde::to_vec_named(v).expect("msgpack encoding of a plain struct"));
    out
}

pub(crate) fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&VALUE_VERSION, rest)) => {
            rmp_serde::from_slice(rest).map_err(|e| StoreError::Corrupt {
                what,
                reason: e.to_string(),
            })
        }
        Some((v, _)) => Err(StoreError::Corrupt {
            what,
            reason: format!("unknown value version {v}"),
        }),
        None => Err(StoreError::Corrupt {
            what,
            reason: "empty value".into(),
        }),
    }
}

/// Who published: the publisher's ClientInfo, with raw JSON kept as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Publisher {
    pub user: String,
    pub client: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn_info: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chan_info: Option<String>,
}

/// One publication in a channel's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publication {
    /// Payload as raw JSON text, exactly as published.
    pub data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Publisher>,
    /// Milliseconds since the Unix epoch when it was stored (for TTL trimming).
    pub time_ms: u64,
}

/// What is kept per channel in the `channels` tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelMeta {
    /// Prefix of the channel's history keys.
    pub id: u64,
    /// Identifies this incarnation of the history; changes only when the history is lost.
    pub epoch: String,
    /// Highest offset known to be assigned. After a crash, the reservation below.
    pub top: u64,
    /// Offsets up to here may have been handed out; a restart after a crash resumes above it.
    pub reserved: u64,
    /// Last publication, ms since the Unix epoch (for the meta TTL).
    pub last_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_old_readers_ignore_new_fields() {
        let p = Publication {
            data: "{\"v\":1}".into(),
            info: Some(Publisher {
                user: "u".into(),
                client: "c".into(),
                ..Default::default()
            }),
            time_ms: 5,
        };
        let b = encode(&p);
        assert_eq!(b[0], VALUE_VERSION);
        assert_eq!(decode::<Publication>(&b, "t").unwrap(), p);

        #[derive(Serialize)]
        struct Newer<'a> {
            data: &'a str,
            time_ms: u64,
            added_later: u32,
        }
        let b = encode(&Newer {
            data: "1",
            time_ms: 2,
            added_later: 3,
        });
        let p: Publication = decode(&b, "t").unwrap();
        assert_eq!((p.data.as_str(), p.time_ms, p.info), ("1", 2, None));
        assert!(decode::<Publication>(&[9, 1, 2], "t").is_err());
        assert!(decode::<Publication>(&[], "t").is_err());
    }
}
