//! What the Redis engine is given: where Redis is, how to log in, the key layout and its
//! timings. Built once at start from `[live] ha_engine*` (a reload does not move a node to
//! another Redis).

use std::time::Duration;

use super::keys::Keys;

/// The engine's settings; the password lives only inside `client`.
#[derive(Clone)]
pub struct HaSettings {
    /// Redis's address and credentials, parsed (connecting happens in the engine).
    pub client: redis::Client,
    /// The address without credentials, for logs and `/api/status`.
    pub address: String,
    pub keys: Keys,
    /// A presence entry lives this long unless its node refreshes it (Centrifuge: 60 s)…
    pub presence_ttl: Duration,
    /// … and nodes refresh their clients' entries this often (Centrifuge: 25 s).
    pub presence_refresh: Duration,
    /// A history's meta hash outlives its last publication by this (Grafana: 7 days).
    pub meta_ttl: Duration,
    /// A managed stream's last frame in Redis (Grafana: 7 days).
    pub frame_ttl: Duration,
    /// Writes queued toward Redis; beyond, publishes and pushes are refused (111 / 503).
    pub max_queued: usize,
    /// Reads in flight (subscribes, history, presence); beyond, refused with 111.
    pub max_reads: usize,
    /// Connecting, and waiting for one reply, give up after this: a slow Redis makes the
    /// node degraded, not stuck.
    pub timeout: Duration,
}

impl std::fmt::Debug for HaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HaSettings")
            .field("address", &self.address)
            .field("prefix", &self.keys.prefix())
            .finish_non_exhaustive()
    }
}

/// Where to connect: `host:port`, `redis://[user:pass@]host:port/db`, or `rediss://…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The URL the client takes (`redis://` added to a bare `host:port`).
    pub url: String,
    pub tls: bool,
    /// For logs: the URL without user info.
    pub shown: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddressError {
    #[error("`{0}` is not host:port, redis://host:port/db or rediss://host:port/db")]
    Form(String),
    #[error("`{0}`: {1}")]
    Invalid(String, String),
}

impl Address {
    pub fn parse(s: &str) -> Result<Address, AddressError> {
        let (url, tls) = match s.split_once("://") {
            Some(("redis", _)) => (s.to_owned(), false),
            Some(("rediss", _)) => (s.to_owned(), true),
            Some(_) => return Err(AddressError::Form(s.to_owned())),
            None if s.contains(':') && !s.contains('/') && !s.contains('@') => {
                (format!("redis://{s}"), false)
            }
            None => return Err(AddressError::Form(s.to_owned())),
        };
        let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())
            .map_err(|e| AddressError::Invalid(hide(&url), e.to_string()))?;
        if matches!(info.addr, redis::ConnectionAddr::Unix(_)) {
            return Err(AddressError::Form(s.to_owned()));
        }
        Ok(Address {
            shown: hide(&url),
            url,
            tls,
        })
    }
}

/// The URL with any `user:pass@` replaced by `***@`.
fn hide(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}"),
        None => url.to_owned(),
    }
}

/// The client for `address`, with `password` (when not empty) replacing the URL's and `ca`
/// (PEM) as the only trusted root for `rediss://`.
pub fn client(
    address: &Address,
    password: Option<String>,
    ca: Option<Vec<u8>>,
) -> Result<redis::Client, String> {
    let mut info = redis::IntoConnectionInfo::into_connection_info(address.url.as_str())
        .map_err(|e| e.to_string())?;
    if let Some(p) = password.filter(|p| !p.is_empty()) {
        info.redis.password = Some(p);
    }
    match (address.tls, ca) {
        (true, Some(ca)) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca),
            },
        )
        .map_err(|e| e.to_string()),
        (false, Some(_)) => Err("a CA file is given but the address is not rediss://".into()),
        (_, None) => redis::Client::open(info).map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_take_grafanas_forms() {
        let a = Address::parse("127.0.0.1:6379").unwrap();
        assert_eq!(a.url, "redis://127.0.0.1:6379");
        assert!(!a.tls);
        let b = Address::parse("redis://u:secret@redis.lan:6380/2").unwrap();
        assert_eq!(b.shown, "redis://***@redis.lan:6380/2");
        assert!(Address::parse("rediss://redis.lan:6380").unwrap().tls);
        assert!(matches!(
            Address::parse("http://x:1"),
            Err(AddressError::Form(_))
        ));
        assert!(matches!(
            Address::parse("localhost"),
            Err(AddressError::Form(_))
        ));
        assert!(Address::parse("redis://host:notaport").is_err());
    }
}
