//! MQTT topic ↔ channel path: a message on topic `T` goes to `stream/<stream>/<T>`, one
//! channel per real topic (never merged by the filter that matched it), levels kept as path
//! segments.
//!
//! A channel path allows ASCII letters, digits, `_ - . =` and `/`; a topic allows almost any
//! UTF-8. The mapping is a reversible escape, so write-back finds the topic again:
//! - a byte outside `A-Z a-z 0-9 _ - .` becomes `=HH` (two upper-case hex digits; UTF-8 is
//!   escaped byte by byte), `=` itself included (`=3D`);
//! - an empty level (a leading or trailing `/`, or `//`) becomes a lone `=`.
//!
//! `sensors/room 1/temp` → `sensors/room=201/temp`; `/plant/x` → `=/plant/x`. A topic whose
//! channel would exceed the channel length limit is refused (and counted by the bridge).

use crate::channel::MAX_CHANNEL_LEN;

/// Why a topic cannot be a channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("the topic is empty")]
    Empty,
    #[error(
        "the channel for topic {topic:?} would be {len} bytes; the limit is {MAX_CHANNEL_LEN}"
    )]
    TooLong { topic: String, len: usize },
    #[error("{0:?} is not an escaped topic")]
    NotEscaped(String),
}

fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// The channel path of `topic` (the part after `stream/<stream>/`).
pub fn path_of(topic: &str) -> String {
    let mut out = String::with_capacity(topic.len() + 8);
    for (i, level) in topic.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if level.is_empty() {
            out.push('=');
            continue;
        }
        for &b in level.as_bytes() {
            if plain(b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("={b:02X}"));
            }
        }
    }
    out
}

/// The channel a message on `topic` goes to, for a bridge feeding stream `stream`.
pub fn channel_of(stream: &str, topic: &str) -> Result<String, TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    let channel = format!("stream/{stream}/{}", path_of(topic));
    if channel.len() > MAX_CHANNEL_LEN {
        return Err(TopicError::TooLong {
            topic: topic.chars().take(64).collect(),
            len: channel.len(),
        });
    }
    Ok(channel)
}

/// The topic a channel path came from (the reverse of `path_of`).
pub fn topic_of(path: &str) -> Result<String, TopicError> {
    let bad = || TopicError::NotEscaped(path.chars().take(64).collect());
    let mut bytes = Vec::with_capacity(path.len());
    for (i, level) in path.split('/').enumerate() {
        if i > 0 {
            bytes.push(b'/');
        }
        if level == "=" {
            continue;
        }
        let raw = level.as_bytes();
        let mut j = 0;
        while j < raw.len() {
            match raw[j] {
                b'=' => {
                    let hex = level.get(j + 1..j + 3).ok_or_else(bad)?;
                    bytes.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                    j += 3;
                }
                b if plain(b) => {
                    bytes.push(b);
                    j += 1;
                }
                _ => return Err(bad()),
            }
        }
    }
    String::from_utf8(bytes).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Channel;

    #[test]
    fn topics_map_to_valid_channels_and_back() {
        for topic in [
            "sensors/room1/temp",
            "sensors/room 1/temp",
            "/plant/x",
            "plant/x/",
            "a//b",
            "ünïcode/°C",
            "with=equals/and+plus#",
            "/",
        ] {
            let channel = channel_of("mqtt", topic).unwrap();
            Channel::parse_bare(&channel).unwrap_or_else(|e| panic!("{topic}: {channel}: {e}"));
            let path = channel.strip_prefix("stream/mqtt/").unwrap();
            assert_eq!(topic_of(path).unwrap(), topic, "{channel}");
        }
        assert_eq!(path_of("sensors/room 1/temp"), "sensors/room=201/temp");
        assert_eq!(path_of("/plant/x"), "=/plant/x");
        assert_eq!(path_of("a=b"), "a=3Db");
    }

    #[test]
    fn long_and_empty_topics_and_bad_escapes_are_refused() {
        assert_eq!(channel_of("mqtt", ""), Err(TopicError::Empty));
        assert!(matches!(
            channel_of("mqtt", &"x".repeat(200)),
            Err(TopicError::TooLong { len: 212, .. })
        ));
        for bad in ["a=4", "a=ZZ", "a b", "=C3"] {
            assert!(topic_of(bad).is_err(), "{bad}");
        }
    }
}
