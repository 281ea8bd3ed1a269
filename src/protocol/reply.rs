//! Encoding replies and pushes as compact JSON. No raw newline can appear: everything we
//! write is serialized by serde_json, and every embedded payload (publication data,
//! `conn_info`, presence entries, subscribe data) is a [`CompactJson`], which can only be made
//! by validating and compacting (`crate::json`).
//!
//! Rules the clients depend on: the result object is always present on success, `error` is
//! absent on success, `message` is always in errors, `user`/`client` always in ClientInfo,
//! zero values are omitted elsewhere.

use bytes::Bytes;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::json::CompactJson;

use super::ErrorCode;

/// Server ping (an empty reply); the client answers with an empty command.
pub const PING: &[u8] = b"{}";

/// Who a publication or presence entry belongs to.
#[derive(Debug, Clone, Serialize)]
pub struct ClientInfo {
    pub user: String,
    pub client: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conn_info: Option<CompactJson<'static>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chan_info: Option<CompactJson<'static>>,
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}
fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}
fn is_false(v: &bool) -> bool {
    !*v
}

#[derive(Serialize)]
pub struct ConnectResult<'a> {
    pub client: &'a str,
    pub version: &'a str,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ping: u32,
    #[serde(skip_serializing_if = "is_false")]
    pub pong: bool,
    /// The connection's credentials expire; the client refreshes within `ttl` seconds.
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
}

/// The refresh command's result; `client` is included because centrifuge-js copies it.
#[derive(Serialize)]
pub struct RefreshResult<'a> {
    pub client: &'a str,
    pub version: &'a str,
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
}

/// Where a subscribe result goes: the reply to a subscribe command, or a `subscribe` push for
/// a server-side subscription (a JWT's `channels`), named as the token names it.
#[derive(Debug, Clone)]
pub enum SubscribeAnswer {
    Reply(u32),
    Push(std::sync::Arc<str>),
}

impl SubscribeAnswer {
    pub fn result(&self, res: &SubscribeResult<'_>) -> Bytes {
        match self {
            SubscribeAnswer::Reply(id) => reply(*id, "subscribe", res),
            SubscribeAnswer::Push(channel) => push(channel, PushKind::Subscribe(res)),
        }
    }

    /// A refused server-side subscription is reported as an unsubscribe push with the error.
    pub fn error(&self, code: ErrorCode) -> Bytes {
        match self {
            SubscribeAnswer::Reply(id) => error(*id, code, None),
            SubscribeAnswer::Push(channel) => unsubscribe(channel, 2000, code.message()),
        }
    }
}

/// A publication read back from history (recovery, the history command).
#[derive(Debug, Serialize)]
pub struct StoredPublication {
    pub data: CompactJson<'static>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<ClientInfo>,
    pub offset: u64,
}

#[derive(Serialize, Default)]
pub struct SubscribeResult<'a> {
    #[serde(skip_serializing_if = "is_false")]
    pub recoverable: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub epoch: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub publications: &'a [StoredPublication],
    #[serde(skip_serializing_if = "is_false")]
    pub recovered: bool,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    #[serde(skip_serializing_if = "is_false")]
    pub positioned: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a CompactJson<'a>>,
    #[serde(skip_serializing_if = "is_false")]
    pub was_recovering: bool,
}

/// The history command's result: `publications`, `epoch` and `offset` are always present.
#[derive(Serialize)]
pub struct HistoryResult<'a> {
    pub publications: &'a [StoredPublication],
    pub epoch: &'a str,
    pub offset: u64,
}

/// `{"presence":{"<client>":ClientInfo,...}}`, and `{"presence":{}}` when nobody is there.
/// Entries are (client id, ClientInfo as stored JSON).
pub struct PresenceResult<'a>(pub &'a [(String, CompactJson<'static>)]);

impl Serialize for PresenceResult<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Entries<'a>(&'a [(String, CompactJson<'static>)]);
        impl Serialize for Entries<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_map(self.0.iter().map(|(c, i)| (c, i)))
            }
        }
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("presence", &Entries(self.0))?;
        m.end()
    }
}

#[derive(Serialize)]
pub struct PresenceStatsResult {
    pub num_clients: u32,
    pub num_users: u32,
}

/// A result with no fields: `{}`.
#[derive(Serialize)]
pub struct Empty {}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: u32,
    message: &'a str,
    #[serde(skip_serializing_if = "is_false")]
    temporary: bool,
}

/// `{"id":N,"<name>":<result>}`
pub fn reply<T: Serialize>(id: u32, name: &str, result: &T) -> Bytes {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"{\"id\":");
    out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    serde_json::to_writer(&mut out, result).expect("reply serializes");
    out.push(b'}');
    Bytes::from(out)
}

/// `{"id":N,"error":{"code":C,"message":"..."}}`
pub fn error(id: u32, code: ErrorCode, message: Option<&str>) -> Bytes {
    let body = ErrorBody {
        code: code.code(),
        message: message.unwrap_or(code.message()),
        temporary: code.temporary(),
    };
    reply(id, "error", &body)
}

#[derive(Serialize)]
struct Push<'a, T: Serialize> {
    push: PushBody<'a, T>,
}

#[derive(Serialize)]
struct PushBody<'a, T: Serialize> {
    channel: &'a str,
    #[serde(flatten)]
    kind: T,
}

#[derive(Serialize)]
enum PushKind<'a> {
    #[serde(rename = "pub")]
    Pub(Publication<'a>),
    #[serde(rename = "join")]
    Join { info: &'a ClientInfo },
    #[serde(rename = "leave")]
    Leave { info: &'a ClientInfo },
    #[serde(rename = "unsubscribe")]
    Unsubscribe { code: u32, reason: &'a str },
    #[serde(rename = "subscribe")]
    Subscribe(&'a SubscribeResult<'a>),
}

#[derive(Serialize)]
pub struct Publication<'a> {
    pub data: &'a CompactJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<&'a ClientInfo>,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
}

fn push(channel: &str, kind: PushKind<'_>) -> Bytes {
    let mut out = Vec::with_capacity(96);
    serde_json::to_writer(
        &mut out,
        &Push {
            push: PushBody { channel, kind },
        },
    )
    .expect("push serializes");
    Bytes::from(out)
}

/// `{"push":{"channel":"c","pub":{"data":...,"info":...,"offset":N}}}`
pub fn publication(channel: &str, p: Publication<'_>) -> Bytes {
    push(channel, PushKind::Pub(p))
}

pub fn join(channel: &str, info: &ClientInfo) -> Bytes {
    push(channel, PushKind::Join { info })
}

pub fn leave(channel: &str, info: &ClientInfo) -> Bytes {
    push(channel, PushKind::Leave { info })
}

pub fn unsubscribe(channel: &str, code: u32, reason: &str) -> Bytes {
    push(channel, PushKind::Unsubscribe { code, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(c: &str) -> ClientInfo {
        ClientInfo {
            user: String::new(),
            client: c.into(),
            conn_info: None,
            chan_info: None,
        }
    }

    #[test]
    fn replies_have_the_exact_shapes_clients_expect() {
        assert_eq!(
            &reply(2, "subscribe", &SubscribeResult::default())[..],
            br#"{"id":2,"subscribe":{}}"#
        );
        let c = ConnectResult {
            client: "abc",
            version: "0.1.0",
            ping: 25,
            pong: true,
            expires: false,
            ttl: 0,
        };
        assert_eq!(
            &reply(1, "connect", &c)[..],
            br#"{"id":1,"connect":{"client":"abc","version":"0.1.0","ping":25,"pong":true}}"#
        );
        assert_eq!(
            &error(4, ErrorCode::BadRequest, None)[..],
            br#"{"id":4,"error":{"code":107,"message":"bad request"}}"#
        );
        assert_eq!(
            &error(4, ErrorCode::Internal, None)[..],
            br#"{"id":4,"error":{"code":100,"message":"internal server error","temporary":true}}"#
        );
        let h = HistoryResult {
            publications: &[],
            epoch: "e",
            offset: 0,
        };
        assert_eq!(
            &reply(6, "history", &h)[..],
            br#"{"id":6,"history":{"publications":[],"epoch":"e","offset":0}}"#
        );
        let stats = PresenceStatsResult {
            num_clients: 0,
            num_users: 0,
        };
        assert_eq!(
            &reply(5, "presence_stats", &stats)[..],
            br#"{"id":5,"presence_stats":{"num_clients":0,"num_users":0}}"#
        );
    }

    #[test]
    fn presence_is_keyed_by_client_and_empty_is_an_object() {
        let raw =
            |c: &str| CompactJson::from_string(serde_json::to_string(&info(c)).unwrap()).unwrap();
        let both = [("a".to_string(), raw("a")), ("b".to_string(), raw("b"))];
        let r = reply(3, "presence", &PresenceResult(&both));
        assert_eq!(
            &r[..],
            br#"{"id":3,"presence":{"presence":{"a":{"user":"","client":"a"},"b":{"user":"","client":"b"}}}}"#
        );
        let r = reply(3, "presence", &PresenceResult(&[]));
        assert_eq!(&r[..], br#"{"id":3,"presence":{"presence":{}}}"#);
    }

    #[test]
    fn pushes_embed_raw_payloads() {
        let data = CompactJson::from_string("{ \"v\": 1 }".into()).unwrap();
        let a = info("a");
        let p = publication(
            "grafana/broadcast/x",
            Publication {
                data: &data,
                info: Some(&a),
                offset: 0,
            },
        );
        assert_eq!(
            &p[..],
            br#"{"push":{"channel":"grafana/broadcast/x","pub":{"data":{"v":1},"info":{"user":"","client":"a"}}}}"#
        );
        assert_eq!(
            &join("c/d/e", &a)[..],
            br#"{"push":{"channel":"c/d/e","join":{"info":{"user":"","client":"a"}}}}"#
        );
        assert_eq!(
            &unsubscribe("c/d/e", 2000, "server unsubscribe")[..],
            br#"{"push":{"channel":"c/d/e","unsubscribe":{"code":2000,"reason":"server unsubscribe"}}}"#
        );
    }
}
