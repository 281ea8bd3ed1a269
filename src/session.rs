//! One client's protocol state: connected or not, its subscriptions, its identity.
//!
//! The transport hands complete messages to `handle_message`; everything the session answers
//! goes into the connection's outbox, so replies and pushes keep one order. A session never
//! awaits: it runs synchronously between two reads. `Err(Disconnect)` means "close the
//! connection with this code"; dropping the session leaves every channel it was in.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tracing::debug;

use crate::channel::Channel;
use crate::hub::{ClientId, Hub, Subscriber};
use crate::outbox::Outbox;
use crate::persist::{Ack, Persist, Position, Request};
use crate::protocol::command::{
    ChannelRequest, ConnectRequest, HistoryRequest, PublishRequest, SubscribeRequest,
};
use crate::protocol::reply::{self, ClientInfo, Publication};
use crate::protocol::{split_frame, Command, Disconnect, ErrorCode, Method};
use crate::routing::ChannelKind;
use crate::settings::Settings;

/// Version string sent in the connect reply.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A command's failure that the client gets as an error reply (the connection stays).
struct Refused {
    code: ErrorCode,
    message: Option<String>,
}

impl From<ErrorCode> for Refused {
    fn from(code: ErrorCode) -> Self {
        Refused {
            code,
            message: None,
        }
    }
}

/// Outcome of one command: a reply was queued, an error reply is due, or the connection closes.
enum Outcome {
    Done,
    Refused(Refused),
    Close(Disconnect),
}

impl From<Result<(), Refused>> for Outcome {
    fn from(r: Result<(), Refused>) -> Self {
        match r {
            Ok(()) => Outcome::Done,
            Err(e) => Outcome::Refused(e),
        }
    }
}

struct Subscription {
    kind: ChannelKind,
}

pub struct Session {
    id: ClientId,
    outbox: Arc<Outbox>,
    hub: Arc<Hub>,
    settings: Arc<Settings>,
    /// Stateful channels (history, presence) are handled by the storage thread.
    persist: Persist,
    /// Set by a successful connect.
    info: Option<Arc<ClientInfo>>,
    /// Keyed by canonical channel name: `1/a/b/c` and `a/b/c` are one subscription.
    subs: HashMap<Arc<str>, Subscription>,
}

impl Session {
    pub fn new(
        id: ClientId,
        outbox: Arc<Outbox>,
        hub: Arc<Hub>,
        settings: Arc<Settings>,
        persist: Persist,
    ) -> Self {
        Session {
            id,
            outbox,
            hub,
            settings,
            persist,
            info: None,
            subs: HashMap::new(),
        }
    }

    /// Handles one WebSocket message: one or more commands joined by `\n`, in order.
    pub fn handle_message(&mut self, msg: &[u8]) -> Result<(), Disconnect> {
        for key in self.outbox.take_refused() {
            self.subs.remove(&key);
        }
        let lines = split_frame(msg).map_err(|e| {
            debug!(client = self.id, error = %e, "bad frame");
            Disconnect::BAD_REQUEST
        })?;
        for (n, line) in lines {
            let cmd = Command::decode(line, n).map_err(|e| {
                debug!(client = self.id, error = %e, "bad command");
                Disconnect::BAD_REQUEST
            })?;
            let id = cmd.id;
            match self.handle(cmd) {
                Outcome::Done => {}
                Outcome::Refused(r) => {
                    self.send(reply::error(id, r.code, r.message.as_deref()));
                }
                Outcome::Close(d) => return Err(d),
            }
        }
        Ok(())
    }

    fn handle(&mut self, cmd: Command<'_>) -> Outcome {
        let id = cmd.id;
        match cmd.method {
            // The pong: an empty command without id. Harmless at any time.
            Method::Empty if id == 0 => {
                self.outbox.awaiting_pong.store(false, Ordering::Release);
                Outcome::Done
            }
            // `send` is fire-and-forget; there is no handler for it, so it is dropped.
            Method::Send if self.info.is_some() => Outcome::Done,
            _ if id == 0 => Outcome::Close(Disconnect::BAD_REQUEST),
            Method::Connect(req) if self.info.is_none() => self.connect(id, req),
            _ if self.info.is_none() => Outcome::Close(Disconnect::BAD_REQUEST),
            Method::Connect(_) => Outcome::Close(Disconnect::BAD_REQUEST),
            Method::Subscribe(req) => self.subscribe(id, req),
            Method::Unsubscribe(req) => self.unsubscribe(id, req),
            Method::Publish(req) => self.publish(id, req).into(),
            Method::Presence(req) => self.presence(id, req, false).into(),
            Method::PresenceStats(req) => self.presence(id, req, true).into(),
            Method::History(req) => self.history(id, req).into(),
            Method::Ping => {
                self.send(reply::reply(id, "ping", &reply::Empty {}));
                Outcome::Done
            }
            Method::Rpc(req) => Outcome::Refused(Refused {
                code: ErrorCode::MethodNotFound,
                message: Some(format!("method not found: {:?}", trim(&req.method))),
            }),
            // No tokens yet: nothing to refresh.
            Method::Refresh(_) | Method::SubRefresh(_) => {
                Outcome::Refused(ErrorCode::NotAvailable.into())
            }
            Method::Send => Outcome::Done,
            Method::Empty => Outcome::Refused(ErrorCode::MethodNotFound.into()),
        }
    }

    fn connect(&mut self, id: u32, _req: ConnectRequest<'_>) -> Outcome {
        let info = Arc::new(ClientInfo {
            user: String::new(),
            client: new_client_id(),
            conn_info: None,
            chan_info: None,
        });
        let ping = self
            .settings
            .ping_interval
            .map_or(0, |d| d.as_secs() as u32);
        self.send(reply::reply(
            id,
            "connect",
            &reply::ConnectResult {
                client: &info.client,
                version: VERSION,
                ping,
                pong: ping > 0,
            },
        ));
        self.info = Some(info);
        self.outbox.set_connected();
        Outcome::Done
    }

    fn subscribe(&mut self, id: u32, req: SubscribeRequest<'_>) -> Outcome {
        if req.channel.is_empty() || !matches!(req.delta.as_str(), "" | "fossil") {
            return Outcome::Close(Disconnect::BAD_REQUEST);
        }
        if req.kind != 0 {
            // Map and shared-poll subscriptions are not offered.
            return Outcome::Refused(ErrorCode::NotAvailable.into());
        }
        if req.tf.is_some() {
            return Outcome::Refused(Refused {
                code: ErrorCode::BadRequest,
                message: Some("tags filter is not supported".into()),
            });
        }
        let (channel, kind) = match self.channel(&req.channel) {
            Ok(v) => v,
            Err(r) => return Outcome::Refused(r),
        };
        let key = channel.key().clone();
        if self.subs.contains_key(&key) {
            return Outcome::Refused(ErrorCode::AlreadySubscribed.into());
        }
        if self.subs.len() >= self.settings.client_channel_limit {
            return Outcome::Refused(ErrorCode::LimitExceeded.into());
        }
        let info = self.info.clone().expect("connected");
        let sub = Subscriber {
            client: self.id,
            outbox: self.outbox.clone(),
            prefixed: channel.prefixed,
            info: info.clone(),
        };
        if kind.is_stateful() {
            let recover = req.recover.then(|| Position {
                offset: req.offset,
                epoch: req.epoch.clone(),
            });
            let r = Request::Subscribe {
                key: key.clone(),
                kind,
                sub,
                id,
                recover,
            };
            if self.persist.submit(r).is_err() {
                return Outcome::Refused(ErrorCode::TooManyRequests.into());
            }
            self.subs.insert(key, Subscription { kind });
            return Outcome::Done;
        }
        let ok = reply::reply(id, "subscribe", &reply::SubscribeResult::default());
        let outbox = &self.outbox;
        self.hub.subscribe(&key, sub, || {
            let _ = outbox.push(ok);
        });
        self.subs.insert(key, Subscription { kind });
        Outcome::Done
    }

    fn unsubscribe(&mut self, id: u32, req: ChannelRequest<'_>) -> Outcome {
        if req.channel.is_empty() {
            return Outcome::Close(Disconnect::BAD_REQUEST);
        }
        // Succeeds whether or not the client was subscribed; a name that does not parse was
        // never subscribed.
        if let Ok(channel) = Channel::parse(&req.channel, self.settings.org_id) {
            self.leave(channel.key());
        }
        self.send(reply::reply(id, "unsubscribe", &reply::Empty {}));
        Outcome::Done
    }

    fn publish(&mut self, id: u32, req: PublishRequest<'_>) -> Result<(), Refused> {
        if req.kind != 0 {
            return Err(ErrorCode::NotAvailable.into());
        }
        let data = req.data.ok_or_else(|| Refused {
            code: ErrorCode::BadRequest,
            message: Some("publish without data".into()),
        })?;
        let (channel, kind) = self.channel(&req.channel)?;
        kind.publish?;
        if kind.is_stateful() {
            let r = Request::Publish {
                key: channel.key().clone(),
                policy: kind.history,
                data: data.to_owned(),
                info: self.info.clone(),
                ack: Ack::Reply {
                    outbox: self.outbox.clone(),
                    id,
                },
            };
            // The reply comes from the storage thread once the publication is durable.
            return self
                .persist
                .submit(r)
                .map_err(|_| ErrorCode::TooManyRequests.into());
        }
        let info = self.info.as_deref();
        self.hub.broadcast(channel.key(), |name| {
            reply::publication(
                name,
                Publication {
                    data,
                    info,
                    offset: 0,
                },
            )
        });
        self.send(reply::reply(id, "publish", &reply::Empty {}));
        Ok(())
    }

    fn presence(&mut self, id: u32, req: ChannelRequest<'_>, stats: bool) -> Result<(), Refused> {
        let (channel, kind) = self.channel_for_read(&req.channel)?;
        if !kind.presence {
            return Err(ErrorCode::NotAvailable.into());
        }
        let r = Request::Presence {
            key: channel.key().clone(),
            outbox: self.outbox.clone(),
            id,
            stats,
        };
        self.persist
            .submit(r)
            .map_err(|_| ErrorCode::TooManyRequests.into())
    }

    fn history(&mut self, id: u32, req: HistoryRequest<'_>) -> Result<(), Refused> {
        let (channel, kind) = self.channel_for_read(&req.channel)?;
        if kind.history.is_none() {
            return Err(ErrorCode::NotAvailable.into());
        }
        let r = Request::History {
            key: channel.key().clone(),
            policy: kind.history,
            outbox: self.outbox.clone(),
            id,
            limit: req.limit,
            since: req.since.map(|s| Position {
                offset: s.offset,
                epoch: s.epoch,
            }),
            reverse: req.reverse,
        };
        self.persist
            .submit(r)
            .map_err(|_| ErrorCode::TooManyRequests.into())
    }

    /// Parses and routes a channel named in a command.
    fn channel(&self, name: &str) -> Result<(Channel, ChannelKind), Refused> {
        let channel = Channel::parse(name, self.settings.org_id).map_err(|e| Refused {
            code: ErrorCode::BadRequest,
            message: Some(format!("bad request: {e}")),
        })?;
        let kind = self.settings.router.route(&channel)?;
        Ok((channel, kind))
    }

    fn channel_for_read(&self, name: &str) -> Result<(Channel, ChannelKind), Refused> {
        if name.is_empty() {
            return Err(Refused {
                code: ErrorCode::BadRequest,
                message: Some("bad request: channel is empty".into()),
            });
        }
        self.channel(name)
    }

    /// Drops one subscription and tells the channel's remaining subscribers.
    fn leave(&mut self, key: &Arc<str>) {
        let Some(sub) = self.subs.remove(key) else {
            return;
        };
        self.hub.unsubscribe(key, self.id);
        if sub.kind.is_stateful() {
            // Presence and the leave push are the storage thread's, in order with the subscribe.
            if let Some(info) = &self.info {
                self.persist.submit_always(Request::Unsubscribe {
                    key: key.clone(),
                    kind: sub.kind,
                    client: self.id,
                    info: info.clone(),
                });
            }
        }
    }

    fn send(&self, msg: Bytes) {
        // A full or closing outbox already decided this connection's fate.
        let _ = self.outbox.push(msg);
    }

    pub fn num_subscriptions(&self) -> usize {
        self.subs.len()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Nothing more goes out; a subscribe still queued at the storage thread sees this.
        self.outbox.close(Disconnect::echo(1000));
        let keys: Vec<Arc<str>> = self.subs.keys().cloned().collect();
        for key in keys {
            self.leave(&key);
        }
    }
}

/// A random UUIDv4, as centrifuge uses for client ids.
fn new_client_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!(
        "{}-{}-{}-{}-{}",
        h(0..4),
        h(4..6),
        h(6..8),
        h(8..10),
        h(10..16)
    )
}

fn trim(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::persist::Threads;
    use std::collections::VecDeque;
    use std::time::{Duration, Instant};

    /// A hub, a real store in a temp dir, and its storage threads.
    struct World {
        hub: Arc<Hub>,
        settings: Arc<Settings>,
        persist: Persist,
        threads: Option<Threads>,
        _dir: tempfile::TempDir,
    }

    impl World {
        fn new() -> World {
            let dir = tempfile::tempdir().unwrap();
            let store =
                edgelive_storage::Store::open(&edgelive_storage::test_config(dir.path())).unwrap();
            let settings = Arc::new(Settings::from_config(&Config::default()));
            let hub = Arc::new(Hub::new(1));
            let (persist, threads) = Persist::start(store, hub.clone(), settings.clone()).unwrap();
            World {
                hub,
                settings,
                persist,
                threads: Some(threads),
                _dir: dir,
            }
        }

        fn session(&self, id: ClientId) -> (Session, Arc<Outbox>) {
            let outbox = Arc::new(Outbox::new(1 << 20));
            let s = Session::new(
                id,
                outbox.clone(),
                self.hub.clone(),
                self.settings.clone(),
                self.persist.clone(),
            );
            (s, outbox)
        }
    }

    impl Drop for World {
        fn drop(&mut self) {
            if let Some(t) = self.threads.take() {
                self.persist.clone().stop(t);
            }
        }
    }

    /// Waits (bounded) until `n` messages are queued, and takes them.
    fn out(o: &Outbox, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        let mut q = VecDeque::new();
        while got.len() < n && Instant::now() < deadline {
            o.drain(&mut q);
            got.extend(q.drain(..).map(|b| String::from_utf8(b.to_vec()).unwrap()));
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(got.len(), n, "{got:?}");
        got
    }

    #[test]
    fn connect_then_subscribe_then_publish_reaches_the_publisher() {
        let w = World::new();
        let (mut s, o) = w.session(1);
        s.handle_message(b"{\"connect\":{\"name\":\"js\"},\"id\":1}\n{\"subscribe\":{\"channel\":\"grafana/broadcast/x\",\"flag\":1},\"id\":2}")
            .unwrap();
        let msgs = out(&o, 3);
        assert!(
            msgs[0].starts_with("{\"id\":1,\"connect\":{\"client\":\""),
            "{msgs:?}"
        );
        assert!(
            msgs[1].starts_with("{\"id\":2,\"subscribe\":{\"recoverable\":true,\"epoch\":\""),
            "{msgs:?}"
        );
        assert!(msgs[2].contains("\"join\""));
        s.handle_message(br#"{"id":3,"publish":{"channel":"grafana/broadcast/x","data":{"a":1}}}"#)
            .unwrap();
        let msgs = out(&o, 2);
        assert!(msgs[0].starts_with(
            r#"{"push":{"channel":"grafana/broadcast/x","pub":{"data":{"a":1},"info""#
        ));
        assert!(msgs[0].ends_with(r#""offset":1}}}"#), "{msgs:?}");
        assert_eq!(msgs[1], r#"{"id":3,"publish":{}}"#);
    }

    #[test]
    fn protocol_violations_close_with_3501() {
        let w = World::new();
        let (mut s, _) = w.session(1);
        assert_eq!(
            s.handle_message(br#"{"id":1,"subscribe":{"channel":"a/b/c"}}"#),
            Err(Disconnect::BAD_REQUEST)
        );
        let (mut s, _) = w.session(2);
        assert_eq!(s.handle_message(b"not json"), Err(Disconnect::BAD_REQUEST));
        let (mut s, _) = w.session(3);
        s.handle_message(br#"{"id":1,"connect":{}}"#).unwrap();
        assert_eq!(
            s.handle_message(br#"{"id":2,"connect":{}}"#),
            Err(Disconnect::BAD_REQUEST)
        );
    }

    #[test]
    fn errors_are_replies_with_codes() {
        let w = World::new();
        let (mut s, o) = w.session(1);
        s.handle_message(br#"{"id":1,"connect":{}}"#).unwrap();
        out(&o, 1);
        let cases: &[(&[u8], u32)] = &[
            (br#"{"id":2,"subscribe":{"channel":"bad channel/x/y"}}"#, 107),
            (br#"{"id":3,"subscribe":{"channel":"plugin/testdata/random-2s-stream"}}"#, 102),
            (br#"{"id":4,"publish":{"channel":"stream/a/b","data":{}}}"#, 103),
            (br#"{"id":5,"history":{"channel":"grafana/broadcast/x","since":{"offset":1,"epoch":"other"}}}"#, 112),
            (br#"{"id":6,"rpc":{"method":"nope"}}"#, 104),
            (br#"{"id":7,"presence":{"channel":"stream/a/b"}}"#, 108),
            (br#"{"id":8,"subscribe":{"channel":"stream/a/b","type":1}}"#, 108),
            (br#"{"id":9,"subscribe":{"channel":"stream/a/b","tf":{}}}"#, 107),
            (br#"{"id":10,"refresh":{"token":"x"}}"#, 108),
        ];
        for (cmd, code) in cases {
            s.handle_message(cmd).unwrap();
            let m = out(&o, 1);
            assert!(m[0].contains(&format!("\"code\":{code},")), "{m:?}");
            assert!(m[0].contains("\"message\":\""), "{m:?}");
        }
    }

    #[test]
    fn dropping_a_session_leaves_its_channels() {
        let w = World::new();
        let (mut a, oa) = w.session(1);
        let (mut b, ob) = w.session(2);
        a.handle_message(br#"{"id":1,"connect":{}}"#).unwrap();
        a.handle_message(br#"{"id":2,"subscribe":{"channel":"1/grafana/broadcast/x"}}"#)
            .unwrap();
        out(&oa, 3);
        b.handle_message(br#"{"id":1,"connect":{}}"#).unwrap();
        b.handle_message(br#"{"id":2,"subscribe":{"channel":"grafana/broadcast/x"}}"#)
            .unwrap();
        out(&ob, 3);
        out(&oa, 1); // b's join
        b.handle_message(br#"{"id":3,"presence_stats":{"channel":"grafana/broadcast/x"}}"#)
            .unwrap();
        assert_eq!(
            out(&ob, 1)[0],
            r#"{"id":3,"presence_stats":{"num_clients":2,"num_users":1}}"#
        );
        drop(a);
        let m = out(&ob, 1);
        assert!(
            m[0].starts_with(r#"{"push":{"channel":"grafana/broadcast/x","leave""#),
            "{m:?}"
        );
        b.handle_message(br#"{"id":4,"presence_stats":{"channel":"grafana/broadcast/x"}}"#)
            .unwrap();
        assert_eq!(
            out(&ob, 1)[0],
            r#"{"id":4,"presence_stats":{"num_clients":1,"num_users":1}}"#
        );
        assert_eq!(w.hub.num_subscribers("grafana/broadcast/x"), 1);
    }
}
