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
    pub keep_alive: Duration,
    pub qos: QoS,
    pub clean_session: bool,
    pub topics: Vec<String>,
    pub stream: String,
    pub time_keys: Vec<String>,
    pub limits: PayloadLimits,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

/// The bridges' settings; reads their password files (the problems are theirs). `configs`
/// must have passed validation.
pub fn specs(configs: &[MqttConfig]) -> Result<Vec<MqttSpec>, Vec<String>> {
    let mut problems = Vec::new();
    let mut out = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        let (host, port) = match config::broker_address(&c.broker) {
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
        out.push(MqttSpec {
            broker: c.broker.clone(),
            host,
            port,
            client_id: c.client_id.clone(),
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
            time_keys: c.time_keys.clone(),
            limits: PayloadLimits {
                max_bytes: c.max_payload,
                ..Default::default()
            },
            backoff_min: c.backoff_min,
            backoff_max: c.backoff_max,
        });
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}
