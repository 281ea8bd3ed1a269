//! One client's protocol state: connected or not, its subscriptions, its identity.
//!
//! The transport hands complete messages to `handle_message`; everything the session answers
//! goes into the connection's outbox, so replies and pushes keep one order. A session never
//! awaits: it runs synchronously between two reads. `Err(Disconnect)` means "close the
//! connection with this code"; dropping the session leaves every channel it was in.

mod connect;
mod reconfigure;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tracing::debug;

use crate::auth::{Action, Auth, Identity};
use crate::broker::{Broker, Joined};
use crate::channel::Channel;
use crate::channel_kind::ChannelKind;
use crate::channel_kind::ChannelKinds;
use crate::hub::{ClientId, Subscriber};
use crate::json::CompactJson;
use crate::outbox::Outbox;
use crate::persist::{Ack, Position};
use crate::protocol::command::{ChannelRequest, HistoryRequest, PublishRequest, SubscribeRequest};
use crate::protocol::reply::{self, ClientInfo, SubscribeAnswer};
use crate::protocol::{split_frame, Command, Disconnect, ErrorCode, Method};
use crate::ratelimit::{RateLimit, Verdict};
use crate::settings::Settings;
use crate::streams::{StreamHandler, Streams};

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

/// Outcome of one command: a reply was queued, an error reply is due, or the connection closes
/// (after an error reply, for a connect without credentials).
enum Outcome {
    Done,
    Refused(Refused),
    Close(Disconnect),
    RefusedThenClose(Refused, Disconnect),
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
    /// How the broker took the subscribe (what leaving must undo).
    joined: Joined,
}

/// What a session reads of the settings (built once, shared by every session).
pub struct SessionSettings {
    pub org_id: i64,
    /// Each channel's kind: where it may be published, presence, history.
    pub kinds: ChannelKinds,
    /// Credentials, roles and channel rules.
    pub auth: Arc<Auth>,
    pub client_channel_limit: usize,
    /// Seconds between server pings, told to the client at connect (0: none).
    pub ping_secs: u32,
    /// Commands per second on average (0 = unlimited), and in one burst.
    pub command_rate: u32,
    pub command_burst: u32,
}

impl From<&Settings> for SessionSettings {
    fn from(s: &Settings) -> SessionSettings {
        SessionSettings {
            org_id: s.org_id,
            kinds: s.kinds.clone(),
            auth: s.auth.clone(),
            client_channel_limit: s.client_channel_limit,
            ping_secs: s.ping_interval.map_or(0, |d| d.as_secs() as u32),
            command_rate: s.command_rate,
            command_burst: s.command_burst,
        }
    }
}

pub struct Session {
    id: ClientId,
    outbox: Arc<Outbox>,
    settings: Arc<SessionSettings>,
    /// Where publications, subscribes, history and presence go.
    broker: Broker,
    /// Who the HTTP upgrade authenticated (loopback in protected mode, a bearer token or
    /// `auth_token`); a connect token takes precedence.
    upgraded_as: Option<Identity>,
    /// Set by a successful connect: the credentials in force.
    who: Option<Identity>,
    /// Stream handlers and their producers (`plugin/…`, `ds/…`).
    streams: Arc<Streams>,
    /// Set by a successful connect.
    info: Option<Arc<ClientInfo>>,
    /// Keyed by canonical channel name: `1/a/b/c` and `a/b/c` are one subscription.
    subs: HashMap<Arc<str>, Subscription>,
    limit: RateLimit,
}

impl Session {
    pub fn new(
        id: ClientId,
        outbox: Arc<Outbox>,
        broker: Broker,
        settings: Arc<SessionSettings>,
        streams: Arc<Streams>,
        upgraded_as: Option<Identity>,
    ) -> Self {
        let limit = RateLimit::new(
            settings.command_rate,
            settings.command_burst,
            Instant::now(),
        );
        Session {
            id,
            outbox,
            broker,
            settings,
            streams,
            upgraded_as,
            who: None,
            info: None,
            subs: HashMap::new(),
            limit,
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
        let now = Instant::now();
        for (n, line) in lines {
            let cmd = Command::decode(line, n).map_err(|e| {
                debug!(client = self.id, error = %e, "bad command");
                Disconnect::BAD_REQUEST
            })?;
            let id = cmd.id;
            match self.limit.take(now) {
                Verdict::Allowed => {}
                // A pong is still taken: refusing it would only end in a "no pong" close.
                Verdict::Refused if id == 0 => {}
                Verdict::Refused => {
                    self.send(reply::error(id, ErrorCode::TooManyRequests, None));
                    continue;
                }
                Verdict::Abusive => {
                    debug!(client = self.id, "command rate exceeded persistently");
                    return Err(Disconnect::TOO_MANY_REQUESTS);
                }
            }
            match self.handle(cmd) {
                Outcome::Done => {}
                Outcome::Refused(r) => {
                    self.send(reply::error(id, r.code, r.message.as_deref()));
                }
                Outcome::Close(d) => return Err(d),
                Outcome::RefusedThenClose(r, d) => {
                    self.send(reply::error(id, r.code, r.message.as_deref()));
                    return Err(d);
                }
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
            Method::Refresh(req) => self.refresh(id, req),
            // Subscription tokens are not issued, so there is nothing to refresh.
            Method::SubRefresh(_) => Outcome::Refused(ErrorCode::NotAvailable.into()),
            Method::Send => Outcome::Done,
            Method::Empty => Outcome::Refused(ErrorCode::MethodNotFound.into()),
        }
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
        let recover = req.recover.then(|| Position {
            offset: req.offset,
            epoch: req.epoch.clone(),
        });
        self.join(&req.channel, SubscribeAnswer::Reply(id), recover)
            .into()
    }

    /// Subscribes to `name`, answering with a reply (subscribe command) or a push (server-side
    /// subscription).
    fn join(
        &mut self,
        name: &str,
        answer: SubscribeAnswer,
        recover: Option<Position>,
    ) -> Result<(), Refused> {
        let (channel, kind) = self.channel(name)?;
        self.permit(Action::Subscribe, &channel)?;
        let key = channel.key().clone();
        if self.subs.contains_key(&key) {
            return Err(ErrorCode::AlreadySubscribed.into());
        }
        if self.subs.len() >= self.settings.client_channel_limit {
            return Err(ErrorCode::LimitExceeded.into());
        }
        // A stream handler authorizes the subscribe and may give its initial data.
        let handler = match kind.handler {
            true => Some(self.handler(&channel)?),
            false => None,
        };
        let initial = match &handler {
            Some(h) => h.subscribe(channel.path())?,
            None => None,
        };
        let sub = Subscriber {
            client: self.id,
            outbox: self.outbox.clone(),
            prefixed: channel.prefixed,
            server_side: matches!(answer, SubscribeAnswer::Push(_)),
            info: self.info.clone().expect("connected"),
        };
        let joined = self
            .broker
            .subscribe(&key, kind, sub, answer, recover, initial)
            .map_err(|_| Refused::from(ErrorCode::TooManyRequests))?;
        if let Some(h) = handler {
            self.streams.watch(&channel, h, kind);
        }
        self.subs.insert(key, Subscription { kind, joined });
        Ok(())
    }

    /// The stream handler of a channel routed to one.
    fn handler(&self, channel: &Channel) -> Result<Arc<dyn StreamHandler>, Refused> {
        self.streams
            .handler(channel)
            .ok_or_else(|| ErrorCode::UnknownChannel.into())
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
        self.permit(Action::Publish, &channel)?;
        kind.publish?;
        // Written back to the stream's source (an MQTT topic), not published here.
        if kind.written_back {
            let writer = self
                .streams
                .writer(&channel)
                .ok_or(Refused::from(ErrorCode::NotAvailable))?;
            writer.write(channel.path(), data.get())?;
            self.send(reply::reply(id, "publish", &reply::Empty {}));
            return Ok(());
        }
        // A stream handler decides: refuse, accept silently, or publish what it returns.
        let data = if kind.handler {
            match self.handler(&channel)?.publish(channel.path(), data)? {
                None => {
                    self.send(reply::reply(id, "publish", &reply::Empty {}));
                    return Ok(());
                }
                Some(json) => CompactJson::from_string(json)
                    .map_err(|_| Refused::from(ErrorCode::Internal))?,
            }
        } else {
            CompactJson::new(data)
        };
        let ack = Ack::Reply {
            outbox: self.outbox.clone(),
            id,
        };
        // The reply comes once the publication is durable (at once where nothing is stored).
        self.broker
            .publish(channel.key(), &kind, data, self.info.clone(), ack)
            .map_err(|_| ErrorCode::TooManyRequests.into())
    }

    fn presence(&mut self, id: u32, req: ChannelRequest<'_>, stats: bool) -> Result<(), Refused> {
        let (channel, kind) = self.channel_for_read(&req.channel)?;
        self.permit(Action::Subscribe, &channel)?;
        if !kind.presence {
            return Err(ErrorCode::NotAvailable.into());
        }
        // From the hub's memory, or with the Redis engine every node's clients.
        let outbox = self.outbox.clone();
        self.broker
            .presence(channel.key(), &kind, move |present| {
                let present = match present {
                    Ok(p) => p,
                    Err(code) => {
                        let _ = outbox.push(reply::error(id, code, None));
                        return;
                    }
                };
                let msg = if stats {
                    let users: std::collections::HashSet<&str> =
                        present.iter().map(|i| i.user.as_str()).collect();
                    let r = reply::PresenceStatsResult {
                        num_clients: present.len() as u32,
                        num_users: users.len() as u32,
                    };
                    reply::reply(id, "presence_stats", &r)
                } else {
                    let list: Vec<(String, CompactJson<'static>)> = present
                        .iter()
                        .map(|i| (i.client.clone(), CompactJson::of(&**i)))
                        .collect();
                    reply::reply(id, "presence", &reply::PresenceResult(&list))
                };
                let _ = outbox.push(msg);
            })
            .map_err(|_| ErrorCode::TooManyRequests.into())
    }

    fn history(&mut self, id: u32, req: HistoryRequest<'_>) -> Result<(), Refused> {
        let (channel, kind) = self.channel_for_read(&req.channel)?;
        self.permit(Action::Subscribe, &channel)?;
        if kind.history.is_none() {
            return Err(ErrorCode::NotAvailable.into());
        }
        let since = req.since.map(|s| Position {
            offset: s.offset,
            epoch: s.epoch,
        });
        let query = crate::persist::HistoryQuery {
            key: channel.key().clone(),
            policy: kind.history,
            outbox: self.outbox.clone(),
            id,
            limit: req.limit,
            since,
            reverse: req.reverse,
        };
        self.broker
            .history(&kind, query)
            .map_err(|_| ErrorCode::TooManyRequests.into())
    }

    /// Parses and routes a channel named in a command.
    fn channel(&self, name: &str) -> Result<(Channel, ChannelKind), Refused> {
        let channel = Channel::parse(name, self.settings.org_id).map_err(|e| Refused {
            code: ErrorCode::BadRequest,
            message: Some(format!("bad request: {e}")),
        })?;
        let kind = self.settings.kinds.kind_of(&channel)?;
        Ok((channel, kind))
    }

    /// The connection's role allows `action` on `channel` under the rules (else 103).
    fn permit(&self, action: Action, channel: &Channel) -> Result<(), Refused> {
        let who = self.who.as_ref().expect("commands run after connect");
        self.settings
            .auth
            .check(who, action, channel.key())
            .map_err(|needed| Refused {
                code: ErrorCode::PermissionDenied,
                message: Some(format!(
                    "permission denied: {} on {} needs the {} role",
                    action.name(),
                    channel.key(),
                    needed.name()
                )),
            })
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
        let Some(info) = &self.info else { return };
        self.broker.leave(key, sub.kind, self.id, info, sub.joined);
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

fn trim(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests;
