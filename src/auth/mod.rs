//! Who may connect and what they may do (design §10).
//!
//! - **Protected mode**: with no credentials configured, loopback clients are served
//!   anonymously with every right and everyone else gets 403.
//! - **API tokens** (`[[auth.tokens]]`) carry a role; only their SHA-256 is kept in memory.
//! - **Connection JWTs** (HS256, Centrifugo's claims) carry `sub`, `exp`, `info`, `channels`
//!   and edgelive's `role`.
//! - **Rules** (`[[auth.rules]]`) raise the role a channel needs.
//!
//! Credentials come from `Authorization: Bearer`, `?auth_token=` (what Grafana's front end
//! puts on the WebSocket URL) or the connect command's `token`.

pub mod config;
pub mod jwt;
pub mod rules;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::json::CompactJson;
use crate::query::{percent_decode, query_pairs};
use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use config::AuthConfig;
pub use rules::Action;
use rules::Rule;

/// Roles, in increasing rights: each has every right of the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Subscribe, presence, history.
    Viewer,
    /// Also push and publish.
    Publisher,
    /// Everything, whatever the rules say.
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Publisher => "publisher",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "publisher" => Some(Role::Publisher),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Where an identity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// No credentials configured and the peer is on loopback.
    Loopback,
    ApiToken,
    Jwt,
    /// A UDP push datagram from an allowed source (`[push.udp]`): UDP carries no credentials.
    Datagram,
}

/// An authenticated client.
#[derive(Debug, Clone)]
pub struct Identity {
    /// ClientInfo `user`: the JWT `sub`, the API token's name, "" for anonymous.
    pub user: String,
    pub role: Role,
    pub source: Source,
    /// JWT `info`, sent as `conn_info`.
    pub info: Option<CompactJson<'static>>,
    /// JWT `exp`, seconds since the epoch.
    pub expires: Option<f64>,
    /// JWT `channels`: server-side subscriptions.
    pub channels: Vec<String>,
    /// Which configured credential let it in (the first 8 bytes of the API token's SHA-256,
    /// or of the JWT secret's), so a reload can tell whether it still exists without keeping
    /// the token itself for the life of the connection.
    pub credential: u64,
}

impl Identity {
    /// A loopback client in protected mode: no user, every right.
    pub fn anonymous() -> Identity {
        Identity {
            user: String::new(),
            role: Role::Admin,
            source: Source::Loopback,
            info: None,
            expires: None,
            channels: Vec::new(),
            credential: 0,
        }
    }
}

/// Why a request or connection is not let in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("credentials required: send Authorization: Bearer <token>, ?auth_token=<token> or a connect token")]
    Missing,
    #[error("edgelive serves only loopback clients while no credentials are configured; set [[auth.tokens]] or [auth] jwt_hmac_secret (or jwt_hmac_secret_file) in the config to let others in")]
    LoopbackOnly,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token expired")]
    Expired,
}

/// Why a connected client's credentials no longer hold after a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Revoked {
    #[error("token revoked")]
    Token,
    #[error("credentials are now required")]
    ProtectedModeEnded,
}

struct ApiToken {
    name: String,
    role: Role,
}

/// The runtime form of `[auth]`, shared read-only.
pub struct Auth {
    /// SHA-256 of each API token → its entry. Looking up a digest leaks nothing useful about
    /// the token through timing.
    tokens: HashMap<[u8; 32], ApiToken>,
    jwt_secret: Option<Vec<u8>>,
    rules: Vec<Rule>,
}

impl std::fmt::Debug for Auth {
    // Never prints a secret or a digest.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.tokens.len())
            .field("jwt", &self.jwt_secret.is_some())
            .field("rules", &self.rules.len())
            .finish()
    }
}

impl Auth {
    /// No credentials: protected mode.
    pub fn protected_mode() -> Auth {
        Auth {
            tokens: HashMap::new(),
            jwt_secret: None,
            rules: Vec::new(),
        }
    }

    /// Builds the runtime object, reading token and secret files. `c` must have passed
    /// `AuthConfig::validate`.
    pub fn from_config(c: &AuthConfig) -> Result<Auth, Vec<String>> {
        let mut problems = Vec::new();
        let mut tokens = HashMap::new();
        for t in &c.tokens {
            let digest = if let Some(tok) = &t.token {
                Some(sha256(tok.as_bytes()))
            } else if let Some(h) = &t.token_sha256 {
                config::parse_sha256(h)
            } else if let Some(f) = &t.token_file {
                match config::read_secret(f) {
                    Ok(tok) => Some(sha256(tok.as_bytes())),
                    Err(e) => {
                        problems.push(format!("[[auth.tokens]] {}: {e}", t.name));
                        None
                    }
                }
            } else {
                None
            };
            if let Some(d) = digest {
                let entry = ApiToken {
                    name: t.name.clone(),
                    role: t.role,
                };
                if tokens.insert(d, entry).is_some() {
                    problems.push(format!(
                        "[[auth.tokens]] {}: the same token is configured twice",
                        t.name
                    ));
                }
            }
        }
        let jwt_secret = match &c.jwt_hmac_secret_file {
            Some(f) => match config::read_secret(f) {
                Ok(s) => Some(s.into_bytes()),
                Err(e) => {
                    problems.push(format!("[auth] jwt_hmac_secret_file: {e}"));
                    None
                }
            },
            None if !c.jwt_hmac_secret.is_empty() => Some(c.jwt_hmac_secret.clone().into_bytes()),
            None => None,
        };
        let rules = c
            .rules
            .iter()
            .map(|r| Rule {
                pattern: r.pattern.clone(),
                subscribe: r.subscribe.unwrap_or(Role::Viewer),
                publish: r.publish.unwrap_or(Role::Publisher),
            })
            .collect();
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Auth {
            tokens,
            jwt_secret,
            rules,
        })
    }

    /// True when no credentials are configured (loopback-only, anonymous).
    pub fn is_protected_mode(&self) -> bool {
        self.tokens.is_empty() && self.jwt_secret.is_none()
    }

    pub fn jwt_secret(&self) -> Option<&[u8]> {
        self.jwt_secret.as_deref()
    }

    /// Checks one token: an API token, or a JWT when a secret is configured.
    pub fn verify(&self, token: &str, now: f64) -> Result<Identity, Denied> {
        if let Some(t) = self.tokens.get(&sha256(token.as_bytes())) {
            return Ok(Identity {
                user: t.name.clone(),
                role: t.role,
                source: Source::ApiToken,
                info: None,
                expires: None,
                channels: Vec::new(),
                credential: fingerprint(&sha256(token.as_bytes())),
            });
        }
        match &self.jwt_secret {
            Some(secret) if jwt::looks_like_jwt(token) => match jwt::verify(token, secret, now) {
                Ok(c) => Ok(Identity {
                    user: c.sub,
                    role: c.role.unwrap_or(Role::Viewer),
                    source: Source::Jwt,
                    info: c.info,
                    expires: c.exp,
                    channels: c.channels,
                    credential: fingerprint(&sha256(secret)),
                }),
                Err(jwt::JwtError::Expired) => Err(Denied::Expired),
                Err(e) => Err(Denied::Invalid(e.to_string())),
            },
            _ => Err(Denied::Invalid("unknown token".into())),
        }
    }

    /// Who an HTTP request (or WebSocket upgrade) is. `Ok(None)`: credentials are configured
    /// but the request carries none; the Centrifuge endpoint may still get a connect token.
    pub fn identify(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        peer: IpAddr,
    ) -> Result<Option<Identity>, Denied> {
        if self.is_protected_mode() {
            return if peer.to_canonical().is_loopback() {
                Ok(Some(Identity::anonymous()))
            } else {
                Err(Denied::LoopbackOnly)
            };
        }
        match credential(headers, query)? {
            Some(token) => self.verify(&token, now()).map(Some),
            None => Ok(None),
        }
    }

    /// Whether a client let in under earlier settings is still let in under these (a reload),
    /// and with which role now: an API token keeps its entry's current role, a JWT its own
    /// claim while its secret is unchanged.
    pub fn recheck(&self, who: &Identity) -> Result<Role, Revoked> {
        match who.source {
            Source::Loopback if self.is_protected_mode() => Ok(who.role),
            Source::Loopback => Err(Revoked::ProtectedModeEnded),
            Source::Datagram => Ok(who.role),
            Source::ApiToken => self
                .tokens
                .iter()
                .find(|(digest, _)| fingerprint(digest) == who.credential)
                .map(|(_, t)| t.role)
                .ok_or(Revoked::Token),
            Source::Jwt => match &self.jwt_secret {
                Some(secret) if fingerprint(&sha256(secret)) == who.credential => Ok(who.role),
                _ => Err(Revoked::Token),
            },
        }
    }

    /// `Ok` when `who` may do `action` on `channel` (a key without org prefix); else the role
    /// it would need.
    pub fn check(&self, who: &Identity, action: Action, channel: &str) -> Result<(), Role> {
        let needed = rules::needed(&self.rules, action, channel);
        if who.role >= needed {
            Ok(())
        } else {
            Err(needed)
        }
    }
}

/// Seconds since the epoch, as JWT times are written.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The first 8 bytes of a SHA-256: names a credential without keeping it.
fn fingerprint(digest: &[u8; 32]) -> u64 {
    u64::from_le_bytes(digest[..8].try_into().expect("8 of 32 bytes"))
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// The hex SHA-256 of a token, for `token_sha256`.
pub fn sha256_hex(token: &str) -> String {
    sha256(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The token a request carries: `Authorization: Bearer …` first, then `?auth_token=`.
fn credential(headers: &HeaderMap, query: Option<&str>) -> Result<Option<String>, Denied> {
    if let Some(v) = headers.get(AUTHORIZATION) {
        let v = v
            .to_str()
            .map_err(|_| Denied::Invalid("Authorization header is not text".into()))?;
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .ok_or_else(|| Denied::Invalid("Authorization must be \"Bearer <token>\"".into()))?;
        return Ok(Some(token.trim().to_owned()));
    }
    let found = query_pairs(query.unwrap_or("")).find(|(k, _)| *k == "auth_token");
    match found {
        Some((_, v)) => percent_decode(v)
            .map(Some)
            .ok_or_else(|| Denied::Invalid("auth_token is not valid percent-encoding".into())),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn configured() -> Auth {
        let c: AuthConfig = toml::from_str(
            r#"
            jwt_hmac_secret = "0123456789abcdef0123"
            [[tokens]]
            name = "grafana"
            role = "viewer"
            token = "viewer-token-0123456789"
            [[tokens]]
            name = "telegraf"
            role = "publisher"
            token_sha256 = "SHA"
            "#
            .replace("SHA", &sha256_hex("publisher-token-0123"))
            .as_str(),
        )
        .unwrap();
        let mut problems = Vec::new();
        c.validate(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        Auth::from_config(&c).unwrap()
    }

    fn auth_from(toml_text: &str) -> Auth {
        let c: AuthConfig = toml::from_str(toml_text).unwrap();
        Auth::from_config(&c).unwrap()
    }

    #[test]
    fn a_reload_keeps_existing_credentials_and_revokes_removed_ones() {
        let before = configured();
        let api = before.verify("viewer-token-0123456789", now()).unwrap();
        let claims = jwt::Claims {
            sub: "ann".into(),
            role: Some(Role::Publisher),
            ..Default::default()
        };
        let jwt = before
            .verify(&jwt::sign(&claims, before.jwt_secret().unwrap()), now())
            .unwrap();
        // The same credentials: both hold, with their roles.
        let same = configured();
        assert_eq!(same.recheck(&api), Ok(Role::Viewer));
        assert_eq!(same.recheck(&jwt), Ok(Role::Publisher));
        // The token's role raised, the JWT secret changed: the token holds with its new role,
        // every JWT signed with the old secret is revoked.
        let after = auth_from(
            r#"
            jwt_hmac_secret = "another-secret-0123456789"
            [[tokens]]
            name = "grafana"
            role = "publisher"
            token = "viewer-token-0123456789"
            "#,
        );
        assert_eq!(after.recheck(&api), Ok(Role::Publisher));
        assert_eq!(after.recheck(&jwt), Err(Revoked::Token));
        // The token gone too; and loopback clients of protected mode once credentials exist.
        let none = auth_from(r#"jwt_hmac_secret = "another-secret-0123456789""#);
        assert_eq!(none.recheck(&api), Err(Revoked::Token));
        assert_eq!(
            none.recheck(&Identity::anonymous()),
            Err(Revoked::ProtectedModeEnded)
        );
        assert_eq!(
            Auth::protected_mode().recheck(&Identity::anonymous()),
            Ok(Role::Admin)
        );
    }

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(AUTHORIZATION, a.parse().unwrap());
        }
        h
    }

    #[test]
    fn protected_mode_serves_loopback_only() {
        let a = Auth::protected_mode();
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
        let lan = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20));
        for peer in [lo, mapped, IpAddr::V6(Ipv6Addr::LOCALHOST)] {
            let who = a.identify(&headers(None), None, peer).unwrap().unwrap();
            assert_eq!((who.role, who.source), (Role::Admin, Source::Loopback));
        }
        let e = a.identify(&headers(None), None, lan).unwrap_err();
        assert_eq!(e, Denied::LoopbackOnly);
        assert!(e.to_string().contains("[[auth.tokens]]"));
    }

    #[test]
    fn tokens_come_from_the_header_or_the_query() {
        let a = configured();
        let lan = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9));
        let who = a
            .identify(&headers(Some("Bearer viewer-token-0123456789")), None, lan)
            .unwrap()
            .unwrap();
        assert_eq!((who.user.as_str(), who.role), ("grafana", Role::Viewer));
        let who = a
            .identify(
                &headers(None),
                Some("x=1&auth_token=publisher%2Dtoken-0123"),
                lan,
            )
            .unwrap()
            .unwrap();
        assert_eq!((who.user.as_str(), who.role), ("telegraf", Role::Publisher));
        // Configured credentials: loopback is not anonymous any more.
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert!(a.identify(&headers(None), None, lo).unwrap().is_none());
        assert!(matches!(
            a.identify(&headers(Some("Bearer nope-nope-nope")), None, lo),
            Err(Denied::Invalid(_))
        ));
        assert!(matches!(
            a.identify(&headers(Some("Basic abc")), None, lo),
            Err(Denied::Invalid(_))
        ));
    }

    #[test]
    fn jwts_carry_user_role_info_and_expiry() {
        let a = configured();
        let claims = jwt::Claims {
            sub: "ann".into(),
            exp: Some(now() + 60.0),
            role: Some(Role::Publisher),
            ..Default::default()
        };
        let t = jwt::sign(&claims, a.jwt_secret().unwrap());
        let who = a.verify(&t, now()).unwrap();
        assert_eq!((who.user.as_str(), who.role), ("ann", Role::Publisher));
        assert_eq!(who.source, Source::Jwt);
        assert_eq!(a.verify(&t, now() + 120.0).unwrap_err(), Denied::Expired);
        let forged = jwt::sign(&claims, b"not the secret at all");
        assert!(matches!(a.verify(&forged, now()), Err(Denied::Invalid(_))));
        let viewer = jwt::sign(
            &jwt::Claims {
                sub: "bob".into(),
                ..Default::default()
            },
            a.jwt_secret().unwrap(),
        );
        assert_eq!(a.verify(&viewer, now()).unwrap().role, Role::Viewer);
    }

    #[test]
    fn roles_are_checked_against_rules() {
        let mut c: AuthConfig = toml::from_str(
            r#"
            jwt_hmac_secret = "0123456789abcdef0123"
            [[rules]]
            pattern = "stream/factory-*/**"
            subscribe = "publisher"
            publish = "admin"
            "#,
        )
        .unwrap();
        let a = Auth::from_config(&c).unwrap();
        let who = |role| Identity {
            role,
            ..Identity::anonymous()
        };
        let ch = "stream/factory-2/press";
        assert_eq!(
            a.check(&who(Role::Viewer), Action::Subscribe, ch),
            Err(Role::Publisher)
        );
        assert!(a
            .check(&who(Role::Publisher), Action::Subscribe, ch)
            .is_ok());
        assert_eq!(
            a.check(&who(Role::Publisher), Action::Publish, ch),
            Err(Role::Admin)
        );
        assert!(a.check(&who(Role::Admin), Action::Publish, ch).is_ok());
        assert_eq!(
            a.check(&who(Role::Viewer), Action::Publish, "stream/x/y"),
            Err(Role::Publisher)
        );
        c.rules[0].publish = Some(Role::Viewer);
        let mut problems = Vec::new();
        c.validate(&mut problems);
        assert!(problems[0].contains("would widen"), "{problems:?}");
    }
}
