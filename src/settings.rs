//! Runtime settings built from the operator's `Config`: resolved values only (no `-1` magic, no
//! `Option`s to re-interpret), shared read-only by every connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Auth;
use crate::channel_kind::ChannelKinds;
use crate::config::{Config, Durability};

/// Hard cap on one incoming WebSocket message when `message_size_limit = -1`.
pub const HARD_MESSAGE_CAP: usize = 64 << 20;

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub header_read_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub org_id: i64,
    /// `None` = unlimited.
    pub max_connections: Option<usize>,
    /// False when `max_connections = 0`: the WebSocket endpoints answer 404.
    pub websocket_enabled: bool,
    pub allowed_origins: Vec<String>,
    pub message_size_limit: usize,
    pub client_queue_max_size: usize,
    pub client_channel_limit: usize,
    /// `None` = no server pings.
    pub ping_interval: Option<Duration>,
    pub pong_timeout: Duration,
    pub connect_timeout: Duration,
    pub write_timeout: Duration,
    /// Channel kinds and history rules.
    pub kinds: ChannelKinds,
    pub durability: Durability,
    /// Most publications a history read or a recovery returns.
    pub max_read: usize,
    pub max_channels: usize,
    pub channel_idle_ttl: Duration,
    /// Largest push body or push WebSocket message.
    pub push_max_body: usize,
    pub push_body_timeout: Duration,
    /// What one push body may make.
    pub push_limits: crate::ingest::convert::Limits,
    pub frame_idle_ttl: Duration,
    /// Managed streams keep the union of their fields (`ingest::sticky`).
    pub push_sticky: bool,
    /// Recent rows in a managed stream's subscribe reply.
    pub backfill: crate::config::BackfillConfig,
    /// The UDP push listener, when on.
    pub udp: Option<UdpSettings>,
    /// Credentials, roles and channel rules.
    pub auth: Arc<Auth>,
    /// Commands a connection may send per second on average (0 = unlimited)...
    pub command_rate: u32,
    /// ...and in one burst.
    pub command_burst: u32,
    /// Most HTTP connections open at once that have not become WebSockets.
    pub max_pending_connections: usize,
    /// Largest request head (request line and headers), bytes.
    pub max_header_bytes: usize,
    /// How long a connection whose credentials expired may stay without a refresh (3005 after).
    pub expired_close_delay: Duration,
    /// Stream handlers' producer lifecycle.
    pub stream_timings: crate::streams::lifecycle::Timings,
    /// `[[streams.exec]]` handlers.
    pub exec: Vec<crate::streams::exec::config::Spec>,
    /// `[[mqtt]]` bridges.
    pub mqtt: Vec<Arc<crate::mqtt::MqttSpec>>,
    /// `[[forward]]` targets (taken at start: a reload keeps them).
    pub forward: Vec<Arc<crate::forward::spec::TargetSpec>>,
    /// The Redis engine, when `[live] ha_engine = "redis"` (taken at start; a reload keeps
    /// the engine the node started with).
    pub ha: Option<crate::ha::settings::HaSettings>,
}

impl Settings {
    /// How long shutdown waits for producers: the longest exec `stop_timeout`, and a second.
    pub fn producers_stop_timeout(&self) -> Duration {
        self.exec
            .iter()
            .map(|s| s.stop_timeout)
            .max()
            .unwrap_or_default()
            + Duration::from_secs(1)
    }
}

#[derive(Debug, Clone)]
pub struct UdpSettings {
    pub listen: SocketAddr,
    pub target: crate::ingest::Target,
    pub allowed_sources: Vec<ipnet::IpNet>,
    /// Who a datagram publishes as, for `[[auth.rules]]`.
    pub identity: crate::auth::Identity,
    pub max_queued: usize,
}

impl Settings {
    /// `config` must have passed validation. Reads the token and secret files `[auth]` names;
    /// the problems are theirs.
    pub fn from_config(config: &Config) -> Result<Settings, Vec<String>> {
        let live = &config.live;
        let auth = Arc::new(Auth::from_config(&config.auth)?);
        let exec = exec_specs(&config.streams.exec)?;
        let ha = ha_settings(config).map_err(|e| vec![e])?;
        let mqtt: Vec<Arc<crate::mqtt::MqttSpec>> = crate::mqtt::specs(&config.mqtt)?
            .into_iter()
            .map(Arc::new)
            .collect();
        let forward = config
            .forward
            .iter()
            .map(|f| crate::forward::spec::TargetSpec::from_config(f).map(Arc::new))
            .collect::<Result<Vec<_>, String>>()
            .map_err(|e| vec![e])?;
        let written_back = mqtt
            .iter()
            .filter(|m| m.publish)
            .map(|m| m.stream.clone())
            .collect();
        Ok(Settings {
            listen: config
                .server
                .listen
                .parse()
                .expect("listen address was validated"),
            header_read_timeout: config.server.header_read_timeout,
            shutdown_timeout: config.server.shutdown_timeout,
            org_id: live.org_id,
            max_connections: usize::try_from(live.max_connections).ok(),
            websocket_enabled: live.max_connections != 0,
            allowed_origins: live.allowed_origins.0.clone(),
            message_size_limit: match live.message_size_limit {
                // Centrifuge treats 0 as its 64 KiB default.
                0 => 65536,
                n if n < 0 => HARD_MESSAGE_CAP,
                n => (n as usize).min(HARD_MESSAGE_CAP),
            },
            client_queue_max_size: live.client_queue_max_size,
            client_channel_limit: live.client_channel_limit,
            ping_interval: (!live.ping_interval.is_zero()).then_some(live.ping_interval),
            pong_timeout: live.pong_timeout,
            connect_timeout: live.connect_timeout,
            write_timeout: live.write_timeout,
            kinds: ChannelKinds::new(
                config.history_rules(),
                crate::streams::exec::config::namespaces(&exec),
            )
            .with_written_back(written_back),
            durability: config.storage.durability,
            max_read: config.storage.max_read,
            max_channels: config.storage.max_channels,
            channel_idle_ttl: config.storage.channel_idle_ttl,
            push_max_body: config.push.max_body_size,
            push_body_timeout: config.push.body_timeout,
            push_limits: push_limits(&config.push),
            frame_idle_ttl: config.push.frame_idle_ttl,
            push_sticky: config.push.sticky_fields,
            backfill: config.push.backfill.clone(),
            udp: udp(&config.push),
            auth,
            command_rate: live.client_command_rate,
            command_burst: live.client_command_burst,
            max_pending_connections: config.server.max_pending_connections,
            max_header_bytes: config.server.max_header_bytes,
            expired_close_delay: config.auth.expired_close_delay,
            stream_timings: crate::streams::lifecycle::Timings {
                grace_checks: config.streams.grace_checks,
                check_every: config.streams.check_every,
                backoff_min: config.streams.backoff_min,
                backoff_max: config.streams.backoff_max,
            },
            exec,
            mqtt,
            forward,
            ha,
        })
    }
}

/// The Redis engine's settings; reads the password and CA files.
fn ha_settings(config: &Config) -> Result<Option<crate::ha::settings::HaSettings>, String> {
    use crate::auth::config::read_secret_any;
    let live = &config.live;
    if live.ha_engine != "redis" {
        return Ok(None);
    }
    let address = crate::ha::settings::Address::parse(&live.ha_engine_address)
        .map_err(|e| format!("[live] ha_engine_address: {e}"))?;
    let password = match live.ha_engine_password_file.as_str() {
        "" => Some(live.ha_engine_password.clone()),
        f => Some(
            read_secret_any(std::path::Path::new(f))
                .map_err(|e| format!("[live] ha_engine_password_file: {e}"))?,
        ),
    };
    let ca = match live.ha_engine_ca_file.as_str() {
        "" => None,
        f => Some(
            read_secret_any(std::path::Path::new(f))
                .map_err(|e| format!("[live] ha_engine_ca_file: {e}"))?
                .into_bytes(),
        ),
    };
    let client = crate::ha::settings::client(&address, password, ca)
        .map_err(|e| format!("[live] ha_engine_address: {e}"))?;
    Ok(Some(crate::ha::settings::HaSettings {
        client,
        address: address.shown,
        keys: crate::ha::keys::Keys::new(&live.ha_prefix, live.org_id),
        presence_ttl: live.ha_presence_ttl,
        presence_refresh: (live.ha_presence_ttl * 25 / 60).max(Duration::from_secs(1)),
        meta_ttl: Duration::from_secs(7 * 24 * 3600),
        frame_ttl: Duration::from_secs(7 * 24 * 3600),
        max_queued: 16384,
        max_reads: 1024,
        timeout: Duration::from_secs(3),
    }))
}

/// The exec handlers, each program found (a typo shows at start, not as restarts).
fn exec_specs(
    configs: &[crate::streams::exec::config::ExecConfig],
) -> Result<Vec<crate::streams::exec::config::Spec>, Vec<String>> {
    let mut problems = Vec::new();
    let mut specs = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        match c.spec(i + 1, true) {
            Ok(s) => specs.push(s),
            Err(problem) => problems.push(problem),
        }
    }
    if problems.is_empty() {
        Ok(specs)
    } else {
        Err(problems)
    }
}

fn udp(push: &crate::config::PushConfig) -> Option<UdpSettings> {
    let c = &push.udp;
    if c.listen.is_empty() {
        return None;
    }
    Some(UdpSettings {
        listen: c.listen.parse().expect("validated"),
        target: crate::ingest::Target {
            stream_id: c.stream.clone(),
            layout: crate::ingest::Layout::parse(&c.frame_format).expect("validated"),
            precision: crate::ingest::Precision::parse(&c.precision).expect("validated"),
            limits: push_limits(push),
        },
        allowed_sources: c.allowed_sources.clone(),
        identity: crate::auth::Identity {
            user: "udp".into(),
            role: c.role,
            source: crate::auth::Source::Datagram,
            info: None,
            expires: None,
            channels: Vec::new(),
            credential: 0,
        },
        max_queued: c.max_queued,
    })
}

fn push_limits(push: &crate::config::PushConfig) -> crate::ingest::convert::Limits {
    crate::ingest::convert::Limits {
        line: crate::ingest::lineproto::LineLimits {
            max_tags: push.max_tags_per_line,
            max_fields: push.max_fields_per_line,
        },
        max_values: push.max_values_per_request,
    }
}
