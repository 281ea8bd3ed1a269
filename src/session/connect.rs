//! Connect and refresh: who the client is, for how long, and the server-side subscriptions its
//! token names.
//!
//! Token errors follow Centrifugo: an expired connect token gets error 109 (clients fetch a new
//! token and retry), an invalid one closes with 3500 (terminal), no credentials at all get 101
//! and a 3507 close. A refresh with an expired token closes with 3005 (the client reconnects and
//! gets 109), one for another user with 3500.

use std::sync::Arc;

use tracing::debug;

use super::{Outcome, Refused, Session, VERSION};
use crate::auth::{self, Denied, Identity, Source};
use crate::persist::Position;
use crate::protocol::command::{ConnectRequest, RefreshRequest};
use crate::protocol::reply::{self, ClientInfo, SubscribeAnswer};
use crate::protocol::{Disconnect, ErrorCode};

impl Session {
    pub(super) fn connect(&mut self, id: u32, req: ConnectRequest<'_>) -> Outcome {
        let who = match self.credentials(&req.token) {
            Ok(w) => w,
            Err(outcome) => return outcome,
        };
        let info = Arc::new(ClientInfo {
            user: who.user.clone(),
            client: new_client_id(),
            conn_info: who.info.clone(),
            chan_info: None,
        });
        let ping = self.settings.ping_secs;
        self.outbox.set_expiry(who.expires);
        self.send(reply::reply(
            id,
            "connect",
            &reply::ConnectResult {
                client: &info.client,
                version: VERSION,
                ping,
                pong: ping > 0,
                expires: who.expires.is_some(),
                ttl: ttl(who.expires),
            },
        ));
        let channels = who.channels.clone();
        self.info = Some(info);
        self.who = Some(who);
        self.outbox.set_connected();
        // Server-side subscriptions: each answered with a `subscribe` push (or an
        // `unsubscribe` push saying why not), after the connect reply.
        for name in channels {
            let recover = req.subs.get(&name).filter(|s| s.recover).map(|s| Position {
                offset: s.offset,
                epoch: s.epoch.clone(),
            });
            let answer = SubscribeAnswer::Push(Arc::from(name.as_str()));
            if let Err(r) = self.join(&name, answer.clone(), recover) {
                debug!(client = self.id, channel = %name, code = r.code.code(), "server-side subscription refused");
                self.send(answer.error(r.code));
            }
        }
        Outcome::Done
    }

    /// The identity a connect establishes: its token when it has one, else the upgrade's.
    fn credentials(&self, token: &str) -> Result<Identity, Outcome> {
        let auth = &self.settings.auth;
        // In protected mode nothing can verify a token; loopback clients are let in anyway.
        if !token.is_empty() && !auth.is_protected_mode() {
            return auth.verify(token, auth::now()).map_err(|e| {
                debug!(client = self.id, error = %e, "connect token refused");
                match e {
                    Denied::Expired => Outcome::Refused(ErrorCode::TokenExpired.into()),
                    _ => Outcome::Close(Disconnect::INVALID_TOKEN),
                }
            });
        }
        self.upgraded_as.clone().ok_or_else(|| {
            Outcome::RefusedThenClose(
                Refused {
                    code: ErrorCode::Unauthorized,
                    message: Some(Denied::Missing.to_string()),
                },
                Disconnect::PERMISSION_DENIED,
            )
        })
    }

    pub(super) fn refresh(&mut self, id: u32, req: RefreshRequest) -> Outcome {
        let who = self.who.as_mut().expect("commands run after connect");
        if who.source != Source::Jwt {
            // API tokens and loopback connections never expire.
            return Outcome::Refused(ErrorCode::NotAvailable.into());
        }
        if req.token.is_empty() {
            return Outcome::Close(Disconnect::BAD_REQUEST);
        }
        let fresh = match self.settings.auth.verify(&req.token, auth::now()) {
            Ok(f) if f.source == Source::Jwt && f.user == who.user => f,
            Ok(_) => return Outcome::Close(Disconnect::INVALID_TOKEN),
            Err(Denied::Expired) => return Outcome::Close(Disconnect::EXPIRED),
            Err(_) => return Outcome::Close(Disconnect::INVALID_TOKEN),
        };
        who.expires = fresh.expires;
        who.role = fresh.role;
        self.outbox.set_expiry(fresh.expires);
        let client = self.info.as_ref().expect("connected").client.clone();
        self.send(reply::reply(
            id,
            "refresh",
            &reply::RefreshResult {
                client: &client,
                version: VERSION,
                expires: fresh.expires.is_some(),
                ttl: ttl(fresh.expires),
            },
        ));
        Outcome::Done
    }
}

/// Whole seconds until `expires`, at least 1 (0 would read as "no ttl").
fn ttl(expires: Option<f64>) -> u32 {
    expires.map_or(0, |e| {
        (e - auth::now()).ceil().clamp(1.0, u32::MAX as f64) as u32
    })
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
