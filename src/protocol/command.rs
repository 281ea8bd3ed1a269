//! Decoding client frames: one WebSocket message holds one or more JSON commands joined by `\n`.
//!
//! Payloads (`data`) stay raw JSON borrowed from the frame: a publication's bytes go from the
//! client's frame into the one encoded push without being parsed into a value tree.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("empty frame")]
    EmptyFrame,
    #[error("empty line {0} in frame")]
    EmptyLine(usize),
    #[error("line {line}: invalid command JSON: {reason}")]
    BadJson { line: usize, reason: String },
}

/// Splits a frame into its command lines. One trailing `\n` is allowed; any other empty line is
/// an error, as is an empty frame (both close the connection with 3501).
pub fn split_frame(frame: &[u8]) -> Result<impl Iterator<Item = (usize, &[u8])>, FrameError> {
    let body = frame.strip_suffix(b"\n").unwrap_or(frame);
    if body.is_empty() {
        return Err(FrameError::EmptyFrame);
    }
    if let Some(i) = body.split(|&b| b == b'\n').position(<[u8]>::is_empty) {
        return Err(FrameError::EmptyLine(i + 1));
    }
    Ok(body
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l)))
}

/// One decoded command: its id (0 when absent) and what it asks for.
#[derive(Debug)]
pub struct Command<'a> {
    pub id: u32,
    pub method: Method<'a>,
}

#[derive(Debug)]
pub enum Method<'a> {
    Connect(ConnectRequest<'a>),
    Subscribe(SubscribeRequest<'a>),
    Unsubscribe(ChannelRequest<'a>),
    Publish(PublishRequest<'a>),
    Presence(ChannelRequest<'a>),
    PresenceStats(ChannelRequest<'a>),
    History(HistoryRequest<'a>),
    Ping,
    Send,
    Rpc(RpcRequest<'a>),
    Refresh(RefreshRequest),
    SubRefresh(SubRefreshRequest<'a>),
    /// `{}` without a method: the client's pong (or a method this server does not know,
    /// when it carries an id).
    Empty,
}

#[derive(Debug, Default, Deserialize)]
pub struct ConnectRequest<'a> {
    #[serde(default)]
    pub token: String,
    #[serde(default, borrow)]
    pub data: Option<&'a RawValue>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub version: String,
    /// Positions of server-side subscriptions the client wants to recover.
    #[serde(default)]
    pub subs: std::collections::HashMap<String, ServerSubRecovery>,
}

/// A server-side subscription's position in a reconnecting client's connect command.
#[derive(Debug, Default, Deserialize)]
pub struct ServerSubRecovery {
    #[serde(default)]
    pub recover: bool,
    #[serde(default)]
    pub offset: u64,
    #[serde(default)]
    pub epoch: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct SubscribeRequest<'a> {
    #[serde(default, borrow)]
    pub channel: Cow<'a, str>,
    #[serde(default)]
    pub token: String,
    #[serde(default, borrow)]
    pub data: Option<&'a RawValue>,
    #[serde(default)]
    pub recover: bool,
    #[serde(default)]
    pub offset: u64,
    #[serde(default)]
    pub epoch: String,
    #[serde(default)]
    pub delta: String,
    /// Tags filter: not offered, so its presence is answered with 107.
    #[serde(default)]
    pub tf: Option<IgnoredAny>,
    /// 0 = stream subscription; map and shared-poll kinds are not offered (108).
    #[serde(default, rename = "type")]
    pub kind: u32,
    #[serde(default)]
    pub flag: u64,
}

#[derive(Debug, Default, Deserialize)]
pub struct ChannelRequest<'a> {
    #[serde(default, borrow)]
    pub channel: Cow<'a, str>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PublishRequest<'a> {
    #[serde(default, borrow)]
    pub channel: Cow<'a, str>,
    #[serde(default, borrow)]
    pub data: Option<&'a RawValue>,
    #[serde(default, rename = "type")]
    pub kind: u32,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamPosition {
    #[serde(default)]
    pub offset: u64,
    #[serde(default)]
    pub epoch: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct HistoryRequest<'a> {
    #[serde(default, borrow)]
    pub channel: Cow<'a, str>,
    #[serde(default)]
    pub limit: i32,
    #[serde(default)]
    pub since: Option<StreamPosition>,
    #[serde(default)]
    pub reverse: bool,
}

#[derive(Debug, Default, Deserialize)]
pub struct RpcRequest<'a> {
    #[serde(default)]
    pub method: String,
    #[serde(default, borrow)]
    pub data: Option<&'a RawValue>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RefreshRequest {
    #[serde(default)]
    pub token: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct SubRefreshRequest<'a> {
    #[serde(default, borrow)]
    pub channel: Cow<'a, str>,
    #[serde(default)]
    pub token: String,
}

/// The wire shape; unknown fields (`headers`, `flag`, `dict`, …) are ignored as the protocol asks.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(default)]
    id: u32,
    #[serde(default, borrow)]
    connect: Option<ConnectRequest<'a>>,
    #[serde(default, borrow)]
    subscribe: Option<SubscribeRequest<'a>>,
    #[serde(default, borrow)]
    unsubscribe: Option<ChannelRequest<'a>>,
    #[serde(default, borrow)]
    publish: Option<PublishRequest<'a>>,
    #[serde(default, borrow)]
    presence: Option<ChannelRequest<'a>>,
    #[serde(default, borrow)]
    presence_stats: Option<ChannelRequest<'a>>,
    #[serde(default, borrow)]
    history: Option<HistoryRequest<'a>>,
    #[serde(default)]
    ping: Option<IgnoredAny>,
    #[serde(default)]
    send: Option<IgnoredAny>,
    #[serde(default, borrow)]
    rpc: Option<RpcRequest<'a>>,
    #[serde(default)]
    refresh: Option<RefreshRequest>,
    #[serde(default, borrow)]
    sub_refresh: Option<SubRefreshRequest<'a>>,
}

impl<'a> Command<'a> {
    /// Decodes one command line. The first method present wins, in the proto's field order.
    pub fn decode(line: &'a [u8], line_no: usize) -> Result<Command<'a>, FrameError> {
        // serde's derive would also take a JSON array as a struct; a command is an object.
        if line.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(FrameError::BadJson {
                line: line_no,
                reason: "a command must be a JSON object".into(),
            });
        }
        let w: Wire<'a> = serde_json::from_slice(line).map_err(|e| FrameError::BadJson {
            line: line_no,
            reason: e.to_string(),
        })?;
        let method = if let Some(r) = w.connect {
            Method::Connect(r)
        } else if let Some(r) = w.subscribe {
            Method::Subscribe(r)
        } else if let Some(r) = w.unsubscribe {
            Method::Unsubscribe(r)
        } else if let Some(r) = w.publish {
            Method::Publish(r)
        } else if let Some(r) = w.presence {
            Method::Presence(r)
        } else if let Some(r) = w.presence_stats {
            Method::PresenceStats(r)
        } else if let Some(r) = w.history {
            Method::History(r)
        } else if w.ping.is_some() {
            Method::Ping
        } else if w.send.is_some() {
            Method::Send
        } else if let Some(r) = w.rpc {
            Method::Rpc(r)
        } else if let Some(r) = w.refresh {
            Method::Refresh(r)
        } else if let Some(r) = w.sub_refresh {
            Method::SubRefresh(r)
        } else {
            Method::Empty
        };
        Ok(Command { id: w.id, method })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(f: &[u8]) -> Result<Vec<&[u8]>, FrameError> {
        split_frame(f).map(|it| it.map(|(_, l)| l).collect())
    }

    #[test]
    fn frames_split_on_single_newlines() {
        assert_eq!(lines(b"{}").unwrap(), vec![b"{}" as &[u8]]);
        assert_eq!(lines(b"{}\n").unwrap().len(), 1);
        assert_eq!(lines(b"{\"id\":1}\n{\"id\":2}").unwrap().len(), 2);
        assert_eq!(lines(b""), Err(FrameError::EmptyFrame));
        assert_eq!(lines(b"\n"), Err(FrameError::EmptyFrame));
        assert_eq!(lines(b"{}\n\n{}"), Err(FrameError::EmptyLine(2)));
        assert_eq!(lines(b"{}\n\n"), Err(FrameError::EmptyLine(2)));
    }

    #[test]
    fn js_connect_and_subscribe_batch_decodes() {
        let frame = br#"{"connect":{"name":"js"},"id":1}
{"subscribe":{"channel":"grafana/broadcast/x","flag":1},"id":2}"#;
        let cmds: Vec<_> = split_frame(frame)
            .unwrap()
            .map(|(n, l)| Command::decode(l, n).unwrap())
            .collect();
        assert_eq!(cmds[0].id, 1);
        assert!(matches!(&cmds[0].method, Method::Connect(c) if c.name == "js"));
        match &cmds[1].method {
            Method::Subscribe(s) => {
                assert_eq!(s.channel, "grafana/broadcast/x");
                assert_eq!(s.flag, 1);
                assert!(s.tf.is_none());
            }
            m => panic!("{m:?}"),
        }
    }

    #[test]
    fn payloads_stay_raw_and_unknown_fields_are_ignored() {
        let line =
            br#"{"id":7,"publish":{"channel":"a/b/c","data":{"v":[1, 2]}},"headers":{"x":"y"}}"#;
        let c = Command::decode(line, 1).unwrap();
        match c.method {
            Method::Publish(p) => assert_eq!(p.data.unwrap().get(), r#"{"v":[1, 2]}"#),
            m => panic!("{m:?}"),
        }
        assert!(matches!(
            Command::decode(b"{}", 1).unwrap().method,
            Method::Empty
        ));
        assert!(matches!(
            Command::decode(br#"{"send":{"data":1}}"#, 1)
                .unwrap()
                .method,
            Method::Send
        ));
    }

    #[test]
    fn bad_json_names_the_line() {
        for bad in [
            &b"nope"[..],
            b"[1]",
            b"{\"id\":-1}",
            b"{\"subscribe\":5}",
            b"\xff",
        ] {
            match Command::decode(bad, 3) {
                Err(FrameError::BadJson { line: 3, .. }) => {}
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bad)),
            }
        }
    }
}
