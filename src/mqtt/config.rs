//! `[[mqtt]]`: bridges from an MQTT broker (Mosquitto, usually on the same board) into managed
//! streams. What the operator writes, and the checks that name every problem.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::payload::PayloadLimits;

/// One bridge.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host[:port]` (1883 by default) or `mqtts://host[:port]` (TLS, 8883).
    pub broker: String,
    /// mqtts: the CA that signed the broker's certificate (PEM); without it the system's
    /// roots. Relative paths: `$CREDENTIALS_DIRECTORY`, as every secret file.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// mqtts: a client certificate and its key (PEM), for brokers that require one.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The client id; with `clean_session = false` the broker keeps this session's
    /// subscriptions and queues its QoS 1 messages while we are away.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the password (relative: `$CREDENTIALS_DIRECTORY`, as every secret file).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_keep_alive", with = "crate::duration")]
    pub keep_alive: Duration,
    /// 0 or 1 (the default): with 1, a message is acknowledged to the broker once it is stored
    /// as `[storage] durability` says, so none is lost across our restarts.
    #[serde(default = "default_qos")]
    pub qos: u8,
    #[serde(default)]
    pub clean_session: bool,
    /// Topic filters (`+`, `#`).
    pub topics: Vec<String>,
    /// Messages go to `stream/<stream>/<topic>`.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// A client publish on one of this bridge's channels (by a role the rules allow: publisher
    /// by default) is sent to the channel's topic, JSON as given, with `qos`.
    #[serde(default)]
    pub publish: bool,
    /// Top-level JSON keys that carry the message's time, first match wins.
    #[serde(default = "default_time_keys")]
    pub time_keys: Vec<String>,
    /// Largest payload, bytes; larger ones are dropped and counted.
    #[serde(default = "default_max_payload")]
    pub max_payload: usize,
    /// Reconnect delays: from `backoff_min`, doubling, up to `backoff_max`.
    #[serde(default = "default_backoff_min", with = "crate::duration")]
    pub backoff_min: Duration,
    #[serde(default = "default_backoff_max", with = "crate::duration")]
    pub backoff_max: Duration,
}

fn default_client_id() -> String {
    "edgelive".into()
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_qos() -> u8 {
    1
}
fn default_stream() -> String {
    "mqtt".into()
}
fn default_time_keys() -> Vec<String> {
    ["time", "timestamp", "ts"].map(String::from).to_vec()
}
fn default_max_payload() -> usize {
    PayloadLimits::default().max_bytes
}
fn default_backoff_min() -> Duration {
    Duration::from_millis(500)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(30)
}

/// A broker address from `mqtt://host[:port]` or `mqtts://host[:port]`: (host, port, TLS).
pub fn broker_address(url: &str) -> Result<(String, u16, bool), String> {
    let (rest, tls) = match (url.strip_prefix("mqtt://"), url.strip_prefix("mqtts://")) {
        (Some(r), _) => (r, false),
        (_, Some(r)) => (r, true),
        _ => {
            return Err(format!(
                "broker {url:?} must start with mqtt:// or mqtts://"
            ))
        }
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = crate::hostport::split(rest).map_err(|e| format!("broker {url:?}: {e}"))?;
    let port = port.unwrap_or(if tls { 8883 } else { 1883 });
    Ok((host.to_owned(), port, tls))
}

/// A valid topic filter: `+` and `#` only as whole levels, `#` only last.
fn valid_filter(f: &str) -> bool {
    if f.is_empty() {
        return false;
    }
    let levels: Vec<&str> = f.split('/').collect();
    levels.iter().enumerate().all(|(i, l)| {
        (!l.contains('+') || *l == "+")
            && (!l.contains('#') || (*l == "#" && i == levels.len() - 1))
    })
}

impl MqttConfig {
    /// Every problem of the bridge numbered `n` (1-based).
    pub fn validate(&self, n: usize, problems: &mut Vec<String>) {
        let at = format!("[[mqtt]] #{n}");
        match broker_address(&self.broker) {
            Err(e) => problems.push(format!("{at}: {e}")),
            Ok((_, _, false))
                if self.ca_file.is_some()
                    || self.cert_file.is_some()
                    || self.key_file.is_some() =>
            {
                problems.push(format!(
                    "{at}: ca_file, cert_file and key_file need an mqtts:// broker"
                ));
            }
            Ok(_) => {}
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            problems.push(format!("{at}: cert_file and key_file go together"));
        }
        if self.cert_file.is_some() && self.ca_file.is_none() {
            problems.push(format!(
                "{at}: a client certificate needs ca_file (the broker's CA) too"
            ));
        }
        if self.client_id.is_empty() || self.client_id.len() > 128 {
            problems.push(format!("{at}: client_id must be 1 to 128 bytes"));
        }
        if self.qos > 1 {
            problems.push(format!("{at}: qos = {} (0 or 1)", self.qos));
        }
        if self.topics.is_empty() {
            problems.push(format!("{at}: topics is empty"));
        }
        for t in &self.topics {
            if !valid_filter(t) {
                problems.push(format!(
                    "{at}: topic filter {t:?} is not valid (+ and # stand for whole levels, # last)"
                ));
            }
        }
        if crate::channel::Channel::parse_bare(&format!("stream/{}/x", self.stream)).is_err()
            || self.stream.contains('/')
        {
            problems.push(format!(
                "{at}: stream {:?} must be letters, digits, _ - or .",
                self.stream
            ));
        }
        if self.password_file.is_some() && self.username.is_none() {
            problems.push(format!("{at}: password_file without username"));
        }
        if self.max_payload == 0 || self.max_payload > 16 << 20 {
            problems.push(format!("{at}: max_payload must be 1 byte to 16 MiB"));
        }
        if self.keep_alive < Duration::from_secs(5) {
            problems.push(format!("{at}: keep_alive must be at least 5s"));
        }
        if self.backoff_min.is_zero() || self.backoff_max < self.backoff_min {
            problems.push(format!(
                "{at}: backoff_min must be positive and at most backoff_max"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_and_filters_are_checked() {
        assert_eq!(
            broker_address("mqtt://127.0.0.1:1884").unwrap(),
            ("127.0.0.1".into(), 1884, false)
        );
        assert_eq!(
            broker_address("mqtt://broker").unwrap(),
            ("broker".into(), 1883, false)
        );
        assert_eq!(
            broker_address("mqtts://broker").unwrap(),
            ("broker".into(), 8883, true)
        );
        assert_eq!(
            broker_address("mqtt://[::1]:1883").unwrap(),
            ("::1".into(), 1883, false)
        );
        assert_eq!(
            broker_address("mqtts://[::1]").unwrap(),
            ("::1".into(), 8883, true)
        );
        assert!(broker_address("http://x").is_err());
        assert!(broker_address("mqtt://x:port").is_err());
        for ok in ["a/b", "sensors/#", "plant/+/state", "#", "+"] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in ["", "a/#/b", "a+/b", "a/b#"] {
            assert!(!valid_filter(bad), "{bad}");
        }
        let c: MqttConfig =
            toml::from_str("broker = \"mqtt://h\"\ntopics = [\"a/#/b\"]\nqos = 2\n").unwrap();
        let mut problems = Vec::new();
        c.validate(1, &mut problems);
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
