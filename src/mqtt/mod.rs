//! MQTT bridges (`[[mqtt]]`): every topic on the device's broker becomes a managed stream with
//! history. We connect to an existing broker (Mosquitto, usually on the same board); we do not
//! write one. `topic.rs` maps topics to channels, `payload.rs` payloads to frames, `bridge.rs`
//! runs one client per bridge.

pub mod bridge;
pub mod config;
pub mod payload;
pub mod stats;
pub mod topic;

use std::time::Duration;

use rumqttc::QoS;

pub use config::MqttConfig;
use payload::PayloadLimits;

/// One bridge's runtime settings, built from its `MqttConfig` (the password read).
#[derive(Debug, Clone)]
pub struct MqttSpec {
    /// As configured, for logs.
    pub broker: String,
    pub host: String,
    pub port: u16,
    pub client_id: String,
    /// Username and password.
    pub credentials: Option<(String, String)>,
    /// mqtts: the TLS settings, files read.
    pub tls: Option<TlsFiles>,
    pub keep_alive: Duration,
    pub qos: QoS,
    pub clean_session: bool,
    pub topics: Vec<String>,
    pub stream: String,
    /// Client publishes on this bridge's channels go to their topics.
    pub publish: bool,
    pub time_keys: Vec<String>,
    pub limits: PayloadLimits,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

/// What an mqtts bridge trusts and shows (PEM).
#[derive(Clone)]
pub struct TlsFiles {
    /// The CA that signed the broker's certificate; `None`: the system's roots.
    pub ca: Option<Vec<u8>>,
    /// A client certificate and its key.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsFiles {
    // Never prints a key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("ca", &self.ca.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

/// Reads a PEM file (relative: `$CREDENTIALS_DIRECTORY`).
fn pem(path: &std::path::Path) -> Result<Vec<u8>, String> {
    crate::auth::config::read_secret_any(path).map(String::into_bytes)
}

/// The bridges' settings; reads their password files (the problems are theirs). `configs`
/// must have passed validation.
pub fn specs(configs: &[MqttConfig]) -> Result<Vec<MqttSpec>, Vec<String>> {
    let mut problems = Vec::new();
    let mut out = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        let (host, port, tls) = match config::broker_address(&c.broker) {
            Ok(a) => a,
            Err(e) => {
                problems.push(format!("[[mqtt]] #{}: {e}", i + 1));
                continue;
            }
        };
        let password = match &c.password_file {
            Some(f) => match crate::auth::config::read_secret_any(f) {
                Ok(p) => Some(p),
                Err(e) => {
                    problems.push(format!("[[mqtt]] #{}: password_file: {e}", i + 1));
                    continue;
                }
            },
            None => None,
        };
        let tls = if tls {
            let files = (|| -> Result<TlsFiles, String> {
                let ca = c.ca_file.as_deref().map(pem).transpose()?;
                let client = match (&c.cert_file, &c.key_file) {
                    (Some(cert), Some(key)) => Some((pem(cert)?, pem(key)?)),
                    _ => None,
                };
                Ok(TlsFiles { ca, client })
            })();
            match files {
                Ok(f) => Some(f),
                Err(e) => {
                    problems.push(format!("[[mqtt]] #{}: {e}", i + 1));
                    continue;
                }
            }
        } else {
            None
        };
        out.push(MqttSpec {
            broker: c.broker.clone(),
            host,
            port,
            client_id: c.client_id.clone(),
            tls,
            credentials: c
                .username
                .clone()
                .map(|u| (u, password.unwrap_or_default())),
            keep_alive: c.keep_alive,
            qos: if c.qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            clean_session: c.clean_session,
            topics: c.topics.clone(),
            stream: c.stream.clone(),
            publish: c.publish,
            time_keys: c.time_keys.clone(),
            limits: PayloadLimits {
                max_bytes: c.max_payload,
                ..Default::default()
            },
            backoff_min: c.backoff_min,
            backoff_max: c.backoff_max,
        });
    }
    for (i, s) in out.iter().enumerate() {
        if s.publish && out[..i].iter().any(|o| o.publish && o.stream == s.stream) {
            problems.push(format!(
                "[[mqtt]] #{}: another bridge already writes back stream {:?}",
                i + 1,
                s.stream
            ));
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}
