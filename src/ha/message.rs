//! What travels on a channel's pub/sub key (`P.client.<ch>`), in Centrifuge's framing:
//!
//! - a history publication: `__p1:<offset>:<epoch>__` then the protobuf `Publication`;
//! - a publication without history: the protobuf `Publication` alone;
//! - a join or a leave: `__j__` or `__l__` then the protobuf `ClientInfo`.
//!
//! Parsing is pure and total: anything else is a precise error, never a panic (the `ha_message`
//! fuzz target holds it to that).

use prost::Message as _;

use super::proto::{ClientInfo, DecodeError, Publication};

const JOIN: &[u8] = b"__j__";
const LEAVE: &[u8] = b"__l__";
const HISTORY: &[u8] = b"__p1:";

/// One pub/sub message, decoded.
#[derive(Debug, PartialEq)]
pub enum Message {
    /// `position`: the offset and epoch of a history publication.
    Publication {
        publication: Publication,
        position: Option<(u64, String)>,
    },
    Join(ClientInfo),
    Leave(ClientInfo),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("history header without its closing `__`")]
    Unterminated,
    #[error("history header offset is not a number")]
    Offset,
    #[error("history header epoch is not UTF-8")]
    Epoch,
    /// Another framing (`__d1:` delta publications, which edgelive never asks for).
    #[error("unknown framing `{0}`")]
    Framing(String),
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

impl Message {
    pub fn parse(bytes: &[u8]) -> Result<Message, MessageError> {
        if let Some(rest) = bytes.strip_prefix(JOIN) {
            return Ok(Message::Join(decode(rest)?));
        }
        if let Some(rest) = bytes.strip_prefix(LEAVE) {
            return Ok(Message::Leave(decode(rest)?));
        }
        let Some(rest) = bytes.strip_prefix(HISTORY) else {
            // A protobuf Publication never starts with `_` (field 11, wire type 7 is invalid).
            if bytes.starts_with(b"__") {
                let head = &bytes[..bytes.len().min(8)];
                return Err(MessageError::Framing(
                    String::from_utf8_lossy(head).into_owned(),
                ));
            }
            return Ok(Message::Publication {
                publication: decode(bytes)?,
                position: None,
            });
        };
        let end = find(rest, b"__").ok_or(MessageError::Unterminated)?;
        let (header, body) = (&rest[..end], &rest[end + 2..]);
        let colon = header
            .iter()
            .position(|&b| b == b':')
            .ok_or(MessageError::Offset)?;
        let offset = std::str::from_utf8(&header[..colon])
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(MessageError::Offset)?;
        let epoch = std::str::from_utf8(&header[colon + 1..]).map_err(|_| MessageError::Epoch)?;
        let mut publication: Publication = decode(body)?;
        // The header is authoritative (older nodes left the field unset).
        publication.offset = offset;
        Ok(Message::Publication {
            publication,
            position: Some((offset, epoch.to_owned())),
        })
    }
}

/// A join or leave message.
pub fn presence_change(join: bool, info: &ClientInfo) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + info.encoded_len());
    out.extend_from_slice(if join { JOIN } else { LEAVE });
    info.encode(&mut out).expect("a Vec grows");
    out
}

fn decode<M: prost::Message + Default>(b: &[u8]) -> Result<M, DecodeError> {
    Ok(M::decode(b)?)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(offset: u64) -> Publication {
        Publication {
            data: b"{\"v\":1}".to_vec(),
            offset,
            ..Default::default()
        }
    }

    #[test]
    fn each_framing_parses() {
        let mut h = b"__p1:42:abcd__".to_vec();
        h.extend(publication(0).encode_to_vec());
        assert_eq!(
            Message::parse(&h).unwrap(),
            Message::Publication {
                publication: publication(42),
                position: Some((42, "abcd".into())),
            }
        );
        let plain = publication(0).encode_to_vec();
        assert!(matches!(
            Message::parse(&plain).unwrap(),
            Message::Publication { position: None, .. }
        ));
        let info = ClientInfo {
            user: "u".into(),
            client: "c".into(),
            ..Default::default()
        };
        assert_eq!(
            Message::parse(&presence_change(true, &info)).unwrap(),
            Message::Join(info.clone())
        );
        assert_eq!(
            Message::parse(&presence_change(false, &info)).unwrap(),
            Message::Leave(info)
        );
    }

    #[test]
    fn bad_headers_are_named() {
        assert_eq!(
            Message::parse(b"__p1:12:ep").unwrap_err(),
            MessageError::Unterminated
        );
        assert_eq!(
            Message::parse(b"__p1:x:ep__").unwrap_err(),
            MessageError::Offset
        );
        assert_eq!(
            Message::parse(b"__p1:__").unwrap_err(),
            MessageError::Offset
        );
        assert!(matches!(
            Message::parse(b"__d1:3:e:0::1:x").unwrap_err(),
            MessageError::Framing(_)
        ));
        assert!(matches!(
            Message::parse(b"__j__\xff\xff").unwrap_err(),
            MessageError::Decode(_)
        ));
    }
}
