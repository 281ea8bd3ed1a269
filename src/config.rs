//! Configuration: the TOML file as written by an operator (serde structs with
//! `deny_unknown_fields`), environment overrides `EDGELIVE_<SECTION>_<KEY>`,
//! and validation that reports every problem at once.
//!
//! These structs describe what the operator wrote; `server::Settings` and the
//! other runtime objects are built from them, so the wire code never sees
//! `Option`s or Grafana's special values like `-1`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::channel_kind::{default_history, HistoryRule};

/// The config the daemon runs on when no file is given: every default.
pub const EMBEDDED_DEFAULTS: &str = "";

/// Prefix of environment overrides: `EDGELIVE_LIVE_MAX_CONNECTIONS=-1`.
pub const ENV_PREFIX: &str = "EDGELIVE_";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub runtime: RuntimeConfig,
    pub storage: StorageConfig,
    pub live: LiveConfig,
    pub log: LogConfig,
    pub push: PushConfig,
    /// `[auth]`: API tokens, the JWT secret, per-channel rules.
    pub auth: crate::auth::AuthConfig,
    /// `[streams]`: stream handlers' producer lifecycle.
    pub streams: StreamsConfig,
    /// History per channel pattern, first match wins. When absent, `default_history()`.
    pub history: Option<Vec<HistoryRule>>,
    /// `[[mqtt]]`: bridges from MQTT brokers into managed streams.
    pub mqtt: Vec<crate::mqtt::config::MqttConfig>,
    /// `[[forward]]`: targets that receive this device's pushed streams.
    pub forward: Vec<crate::forward::config::ForwardConfig>,
}

/// When a publisher's acknowledgement is sent, named for what an acknowledged publication
/// survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// After the group commit holding the publication is written and synced to the device
    /// (`fdatasync`): survives a crash and a power cut.
    #[serde(alias = "power_loss")]
    Batched,
    /// After the group commit is written to the kernel (sled's flush, `sync_file_range`):
    /// survives the process being killed, not a power cut.
    Crash,
    /// At once; the write follows.
    None,
}

impl Durability {
    /// Whether a commit must reach the device, not only the kernel.
    pub fn syncs(self) -> bool {
        self != Durability::Crash
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the HTTP/WebSocket listener.
    pub listen: String,
    /// Time a client gets to send its request headers (slowloris guard).
    #[serde(with = "crate::duration")]
    pub header_read_timeout: Duration,
    /// How long shutdown waits for connections to close before exiting anyway.
    #[serde(with = "crate::duration")]
    pub shutdown_timeout: Duration,
    /// Most HTTP connections open at once that are not (yet) WebSockets: a flood of half-open
    /// sockets beyond it is closed at accept instead of growing memory.
    pub max_pending_connections: usize,
    /// Largest request line plus headers, bytes (431 beyond).
    pub max_header_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:3030".into(),
            header_read_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(4),
            max_pending_connections: 256,
            max_header_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// 0 = one current-thread runtime (one epoll loop); N = multi-thread runtime with N workers.
    pub workers: usize,
    /// Tasks polled between two checks of the I/O driver (tokio `event_interval`).
    pub event_interval: u32,
    /// Most I/O events handled per driver tick (tokio `max_io_events_per_tick`).
    pub max_io_events_per_tick: usize,
    /// Stack size of runtime threads, bytes.
    pub thread_stack_size: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            workers: 0,
            event_interval: 61,
            max_io_events_per_tick: 1024,
            thread_stack_size: 256 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Directory of the sled database.
    pub path: PathBuf,
    /// sled page cache, MiB. Set explicitly: sled's own default is 1 GiB.
    pub cache_capacity_mib: u64,
    /// When publishers are acknowledged (see `Durability`).
    pub durability: Durability,
    /// sled's background fsync interval, ms.
    pub flush_every_ms: u64,
    /// Most channels with history or presence state; more are refused with 106.
    pub max_channels: usize,
    /// A channel with no publication and no subscriber for this long is forgotten, history and
    /// epoch included.
    #[serde(with = "crate::duration")]
    pub channel_idle_ttl: Duration,
    /// Most publications one history read or recovery returns.
    pub max_read: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("./data"),
            cache_capacity_mib: 8,
            durability: Durability::Batched,
            flush_every_ms: 1000,
            max_channels: 10_000,
            channel_idle_ttl: Duration::from_secs(7 * 24 * 3600),
            max_read: 1000,
        }
    }
}

/// `[push]`: the push API (line protocol in, data frames out).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// Largest push body (HTTP, after gzip decoding) or push WebSocket message, bytes (413 beyond).
    pub max_body_size: usize,
    /// Time a client has to send a whole push body (408 beyond).
    #[serde(with = "crate::duration")]
    pub body_timeout: Duration,
    /// A managed stream nobody pushed to for this long loses its kept last frame.
    #[serde(with = "crate::duration")]
    pub frame_idle_ttl: Duration,
    /// Most tags in one line (400 naming the line beyond).
    pub max_tags_per_line: usize,
    /// Most fields in one line (400 naming the line beyond).
    pub max_fields_per_line: usize,
    /// Most values the frames of one body may hold, padding nulls and wide-layout labels
    /// included (400 naming the line that crosses it).
    pub max_values_per_request: usize,
    /// A managed stream keeps the union of the fields it has seen (missing ones padded with
    /// null), so alternating field sets keep one schema.
    pub sticky_fields: bool,
    /// What a new subscriber of a managed stream with history gets before live data.
    pub backfill: BackfillConfig,
    pub udp: UdpConfig,
}

/// `[push.backfill]`: a managed stream's subscribe reply carries its last frame extended with
/// its recent rows from history, so a chart opens drawn.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackfillConfig {
    /// Most rows (0 = off: the last frame alone, as Grafana sends it).
    pub rows: usize,
    /// Rows older than this are left out.
    #[serde(with = "crate::duration")]
    pub window: Duration,
    /// Most bytes of row data in one reply.
    pub max_bytes: usize,
}

impl Default for BackfillConfig {
    fn default() -> Self {
        Self {
            rows: 1000,
            window: Duration::from_secs(600),
            max_bytes: 256 * 1024,
        }
    }
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            max_body_size: 16 << 20,
            body_timeout: Duration::from_secs(30),
            frame_idle_ttl: Duration::from_secs(7 * 24 * 3600),
            max_tags_per_line: 256,
            max_fields_per_line: 1024,
            max_values_per_request: 1_000_000,
            sticky_fields: true,
            backfill: BackfillConfig::default(),
            udp: UdpConfig::default(),
        }
    }
}

/// `[push.udp]`: line protocol datagrams into one stream; off while `listen` is empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UdpConfig {
    /// IP:port to receive datagrams on; "" = off.
    pub listen: String,
    /// Stream id: points go to `stream/<stream>/<measurement>`.
    pub stream: String,
    /// `labels_column` or `wide`, as `gf_live_frame_format`.
    pub frame_format: String,
    /// Timestamp unit: ns, us, ms or s.
    pub precision: String,
    /// Source networks whose datagrams are taken (UDP carries no credentials; a source
    /// address is all there is). In protected mode only loopback sources are taken whatever
    /// this says.
    pub allowed_sources: Vec<ipnet::IpNet>,
    /// The role datagrams publish with, against `[[auth.rules]]`.
    pub role: crate::auth::Role,
    /// Most frames from UDP waiting for the storage thread; datagrams beyond are dropped, so a
    /// flood cannot take the queue every client shares.
    pub max_queued: usize,
}

impl Default for UdpConfig {
    fn default() -> Self {
        Self {
            listen: String::new(),
            stream: "udp".into(),
            frame_format: "labels_column".into(),
            precision: "ns".into(),
            allowed_sources: vec![
                "127.0.0.0/8".parse().expect("valid"),
                "::1/128".parse().expect("valid"),
            ],
            role: crate::auth::Role::Publisher,
            max_queued: 256,
        }
    }
}

/// `[streams]`: when a stream handler's producer stops and how a failing one is restarted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamsConfig {
    /// Idle checks in a row (nobody subscribed) before a producer is stopped.
    pub grace_checks: u32,
    /// Time between two idle checks.
    #[serde(with = "crate::duration")]
    pub check_every: Duration,
    /// First restart delay of a failed producer; doubles up to `backoff_max`.
    #[serde(with = "crate::duration")]
    pub backoff_min: Duration,
    #[serde(with = "crate::duration")]
    pub backoff_max: Duration,
    /// `[[streams.exec]]`: programs that produce channels.
    pub exec: Vec<crate::streams::exec::config::ExecConfig>,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            grace_checks: 3,
            check_every: Duration::from_secs(5),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
            exec: Vec::new(),
        }
    }
}

/// Grafana's `[live]` section, same names and meanings where Grafana has them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// Most concurrent WebSocket connections; -1 unlimited; 0 disables the WebSocket endpoints.
    pub max_connections: i64,
    /// Origins allowed besides the request's own host: globs, a list or Grafana's comma-separated string.
    pub allowed_origins: Origins,
    /// Largest incoming WebSocket message in bytes; -1 = the hard cap of 64 MiB.
    pub message_size_limit: i64,
    /// Grafana's HA engine: "" (this node alone, sled) or "redis" (channels, history and
    /// presence shared with every node on one Redis).
    pub ha_engine: String,
    /// `host:port`, `redis://[user:pass@]host:port/db` or `rediss://…`.
    pub ha_engine_address: String,
    pub ha_engine_password: String,
    /// A file holding the password (relative: `$CREDENTIALS_DIRECTORY`), instead of the key.
    pub ha_engine_password_file: String,
    /// PEM CA certificate(s) trusted for `rediss://` (else the system's roots).
    pub ha_engine_ca_file: String,
    /// Keys are under `<ha_prefix>.gf_live` (`gf_live` when empty), as Grafana's.
    pub ha_prefix: String,
    /// A presence entry in Redis outlives its node's last refresh by this (Centrifuge's
    /// `PresenceTTL`); nodes refresh theirs at 25/60 of it.
    #[serde(with = "crate::duration")]
    pub ha_presence_ttl: Duration,
    /// The org id a Grafana front end prefixes to channel names (`1/stream/...`).
    pub org_id: i64,
    /// Bytes queued for one client before it is disconnected as slow (3008).
    pub client_queue_max_size: usize,
    /// Channels one connection may subscribe to (error 106 beyond).
    pub client_channel_limit: usize,
    /// Server ping interval; "0s" disables pings.
    #[serde(with = "crate::duration")]
    pub ping_interval: Duration,
    /// Time a client has to answer a ping (close 3012 "no pong").
    #[serde(with = "crate::duration")]
    pub pong_timeout: Duration,
    /// Time a client has to send `connect` after the upgrade (close 3502 "stale").
    #[serde(with = "crate::duration")]
    pub connect_timeout: Duration,
    /// A write to a client that takes longer than this drops the connection.
    #[serde(with = "crate::duration")]
    pub write_timeout: Duration,
    /// Commands one connection may send per second on average (error 111 beyond, then close
    /// 3013 when it keeps on); 0 = unlimited.
    pub client_command_rate: u32,
    /// Commands one connection may send in a burst above the rate.
    pub client_command_burst: u32,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            max_connections: 100,
            allowed_origins: Origins::default(),
            message_size_limit: 65536,
            ha_engine: String::new(),
            ha_engine_address: "127.0.0.1:6379".into(),
            ha_engine_password: String::new(),
            ha_engine_password_file: String::new(),
            ha_engine_ca_file: String::new(),
            ha_prefix: String::new(),
            ha_presence_ttl: Duration::from_secs(60),
            org_id: 1,
            client_queue_max_size: 1 << 20,
            client_channel_limit: 128,
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(15),
            write_timeout: Duration::from_secs(5),
            client_command_rate: 1000,
            client_command_burst: 2000,
        }
    }
}

/// `allowed_origins`: a TOML list, or Grafana's comma-separated string.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "OriginsRepr")]
pub struct Origins(pub Vec<String>);

#[derive(Deserialize)]
#[serde(untagged)]
enum OriginsRepr {
    List(Vec<String>),
    Csv(String),
}

impl From<OriginsRepr> for Origins {
    fn from(r: OriginsRepr) -> Self {
        let items = match r {
            OriginsRepr::List(v) => v,
            OriginsRepr::Csv(s) => s.split(',').map(str::to_owned).collect(),
        };
        Origins(
            items
                .into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// tracing filter, e.g. "info" or "edgelive=debug,info"; RUST_LOG wins when set.
    pub level: String,
    /// Lines for people (and the journal) or one JSON object per line for log shippers.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// `[log] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line per event; under journald without colours or timestamps, with priorities.
    Text,
    /// One JSON object per event (timestamp, level, target, fields).
    Json,
}

/// Everything wrong with a config, one line per problem.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl ConfigError {
    fn one(p: String) -> Self {
        Self { problems: vec![p] }
    }
}

impl Config {
    /// Loads `path` (or the embedded defaults), applies `env` overrides, validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (origin, text) = match path {
            Some(p) => (
                p.display().to_string(),
                std::fs::read_to_string(p)
                    .map_err(|e| ConfigError::one(format!("{}: cannot read: {e}", p.display())))?,
            ),
            None => ("embedded defaults".to_owned(), EMBEDDED_DEFAULTS.to_owned()),
        };
        Self::from_toml(&origin, &text, env)
    }

    /// Parses TOML text, applies environment overrides, then checks every section and rule.
    pub fn from_toml(
        origin: &str,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::one(format!("{origin}: {e}")))?;
        let mut problems = Vec::new();
        apply_env(&mut table, env, &mut problems);

        // Deserialize section by section so one bad section does not hide problems in the others.
        let mut config = Config::default();
        for (section, value) in &table {
            let res = match section.as_str() {
                "server" => section_into(value, &mut config.server),
                "runtime" => section_into(value, &mut config.runtime),
                "storage" => section_into(value, &mut config.storage),
                "live" => section_into(value, &mut config.live),
                "log" => section_into(value, &mut config.log),
                "push" => section_into(value, &mut config.push),
                "auth" => section_into(value, &mut config.auth),
                "streams" => section_into(value, &mut config.streams),
                "history" => {
                    let mut rules = Vec::new();
                    let r = section_into(value, &mut rules);
                    config.history = Some(rules);
                    r
                }
                "mqtt" => section_into(value, &mut config.mqtt),
                "forward" => section_into(value, &mut config.forward),
                other => Err(format!(
                    "unknown section [{other}] (expected server, runtime, storage, live, log, push, auth, streams, [[history]], [[mqtt]] or [[forward]])"
                )),
            };
            if let Err(e) = res {
                problems.push(format!("{origin}: [{section}] {e}"));
            }
        }
        config.validate(&mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }

    fn validate(&self, problems: &mut Vec<String>) {
        for (i, m) in self.mqtt.iter().enumerate() {
            m.validate(i + 1, problems);
        }
        crate::forward::config::validate_all(&self.forward, problems);
        if self.server.listen.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "[server] listen = {:?} is not an IP:port address",
                self.server.listen
            ));
        }
        if self.live.max_connections < -1 {
            problems.push(format!(
                "[live] max_connections = {} must be -1 (unlimited), 0 (WebSocket off) or positive",
                self.live.max_connections
            ));
        }
        if self.live.message_size_limit < -1 {
            problems.push(format!(
                "[live] message_size_limit = {} must be -1 (64 MiB cap) or >= 0",
                self.live.message_size_limit
            ));
        }
        match self.live.ha_engine.as_str() {
            "" => {}
            "redis" => {
                let live = &self.live;
                match crate::ha::settings::Address::parse(&live.ha_engine_address) {
                    Ok(a) if !a.tls && !live.ha_engine_ca_file.is_empty() => problems.push(
                        "[live] ha_engine_ca_file is for a rediss:// ha_engine_address".into(),
                    ),
                    Ok(_) => {}
                    Err(e) => problems.push(format!("[live] ha_engine_address: {e}")),
                }
                if live.ha_presence_ttl < Duration::from_secs(2) {
                    problems.push("[live] ha_presence_ttl must be at least 2s".into());
                }
                if !live.ha_engine_password.is_empty() && !live.ha_engine_password_file.is_empty() {
                    problems.push(
                        "[live] set ha_engine_password or ha_engine_password_file, not both".into(),
                    );
                }
                if !live.ha_prefix.is_empty()
                    && !live.ha_prefix.bytes().all(|b| b.is_ascii_graphic())
                {
                    problems.push("[live] ha_prefix must be printable ASCII without spaces".into());
                }
            }
            other => problems.push(format!(
                "[live] ha_engine = {other:?}: only \"\" (this node alone) and \"redis\" are known"
            )),
        }
        if self.live.org_id < 1 {
            problems.push(format!("[live] org_id = {} must be >= 1", self.live.org_id));
        }
        if self.live.client_queue_max_size < 1024 {
            problems.push("[live] client_queue_max_size must be at least 1024 bytes".into());
        }
        if self.live.client_channel_limit == 0 {
            problems.push("[live] client_channel_limit must be at least 1".into());
        }
        let ping = self.live.ping_interval;
        if !ping.is_zero() && (ping.subsec_nanos() != 0 || ping.as_secs() > 3600) {
            problems.push(
                "[live] ping_interval must be whole seconds between 1s and 1h, or 0s to disable"
                    .into(),
            );
        }
        if self.live.pong_timeout.is_zero() && !ping.is_zero() {
            problems.push("[live] pong_timeout must be positive".into());
        }
        if self.live.connect_timeout.is_zero() || self.live.write_timeout.is_zero() {
            problems.push("[live] connect_timeout and write_timeout must be positive".into());
        }
        if self.live.client_command_rate > 0 && self.live.client_command_burst == 0 {
            problems.push("[live] client_command_burst must be at least 1".into());
        }
        if self.server.max_pending_connections == 0 {
            problems.push("[server] max_pending_connections must be at least 1".into());
        }
        if !(8192..=1 << 20).contains(&self.server.max_header_bytes) {
            problems.push("[server] max_header_bytes must be between 8192 and 1048576".into());
        }
        if self.runtime.thread_stack_size < 64 * 1024 {
            problems.push("[runtime] thread_stack_size must be at least 65536".into());
        }
        if self.runtime.event_interval == 0 || self.runtime.max_io_events_per_tick == 0 {
            problems.push(
                "[runtime] event_interval and max_io_events_per_tick must be positive".into(),
            );
        }
        if self.storage.cache_capacity_mib == 0 {
            problems.push("[storage] cache_capacity_mib must be at least 1".into());
        }
        if self.storage.max_read == 0 || self.storage.max_channels == 0 {
            problems.push("[storage] max_read and max_channels must be at least 1".into());
        }
        for (i, rule) in self.history_rules().iter().enumerate() {
            if !crate::glob::can_match_a_channel(&rule.pattern) {
                problems.push(format!(
                    "[[history]] #{}: pattern {:?} cannot match a channel name",
                    i + 1,
                    rule.pattern
                ));
            }
            if rule.size > 0 && rule.ttl.is_zero() {
                problems.push(format!("[[history]] #{}: ttl must be positive", i + 1));
            }
        }
        let push = &self.push;
        if push.max_body_size < 1024 {
            problems.push("[push] max_body_size must be at least 1024 bytes".into());
        }
        if push.body_timeout.is_zero() || push.frame_idle_ttl.is_zero() {
            problems.push("[push] body_timeout and frame_idle_ttl must be positive".into());
        }
        if push.max_tags_per_line == 0
            || push.max_fields_per_line == 0
            || push.max_values_per_request == 0
        {
            problems.push(
                "[push] max_tags_per_line, max_fields_per_line and max_values_per_request must be at least 1"
                    .into(),
            );
        }
        if push.backfill.max_bytes > 16 << 20 {
            problems.push(format!(
                "[push.backfill] max_bytes = {} is above 16 MiB",
                push.backfill.max_bytes
            ));
        }
        let udp = &push.udp;
        if !udp.listen.is_empty() && udp.listen.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "[push.udp] listen = {:?} is not an IP:port address (\"\" turns UDP off)",
                udp.listen
            ));
        }
        if crate::ingest::check_stream_id(&udp.stream).is_err() {
            problems.push(format!(
                "[push.udp] stream = {:?} cannot name a stream (letters, digits, _ - .)",
                udp.stream
            ));
        }
        if crate::ingest::Layout::parse(&udp.frame_format).is_none() {
            problems.push(format!(
                "[push.udp] frame_format = {:?} must be labels_column or wide",
                udp.frame_format
            ));
        }
        if udp.max_queued == 0 {
            problems.push("[push.udp] max_queued must be at least 1".into());
        }
        if crate::ingest::Precision::parse(&udp.precision).is_none() {
            problems.push(format!(
                "[push.udp] precision = {:?} must be ns, us, ms or s",
                udp.precision
            ));
        }
        self.auth.validate(problems);
        let st = &self.streams;
        if st.grace_checks == 0 || st.check_every.is_zero() || st.backoff_min.is_zero() {
            problems.push(
                "[streams] grace_checks, check_every and backoff_min must be positive".into(),
            );
        }
        if st.backoff_max < st.backoff_min {
            problems.push("[streams] backoff_max must be at least backoff_min".into());
        }
        for (i, exec) in st.exec.iter().enumerate() {
            exec.validate(i + 1, problems);
        }
        if let Err(e) = self.log.level.parse::<tracing_subscriber::EnvFilter>() {
            problems.push(format!("[log] level = {:?}: {e}", self.log.level));
        }
    }
}

impl Config {
    /// Channel patterns that are valid but likely not what was meant: a lone `*` that no
    /// longer crosses `/`, or an auth rule that leaves the channels below it open (see
    /// `glob::lone_star_warning`). `check-config` prints them and start-up logs them; they do
    /// not refuse the config.
    pub fn warnings(&self) -> Vec<String> {
        use crate::glob::{lone_star_warning, PatternKind};
        let history = self.history_rules().into_iter().map(|r| r.pattern);
        let history = history.enumerate().map(|(i, p)| {
            let w = format!("[[history]] #{}", i + 1);
            (w, p, PatternKind::CrossedBefore)
        });
        let exec = self.streams.exec.iter().enumerate().map(|(i, e)| {
            let w = format!("[[streams.exec]] #{}", i + 1);
            (w, e.channel.clone(), PatternKind::CrossedBefore)
        });
        let auth = self.auth.rules.iter().enumerate().map(|(i, r)| {
            let w = format!("[[auth.rules]] #{}", i + 1);
            (w, r.pattern.clone(), PatternKind::AuthRule)
        });
        history
            .chain(exec)
            .chain(auth)
            .filter_map(|(what, pattern, kind)| lone_star_warning(&what, &pattern, kind))
            .collect()
    }

    /// The history rules in force: the configured ones, or the defaults.
    pub fn history_rules(&self) -> Vec<HistoryRule> {
        self.history.clone().unwrap_or_else(default_history)
    }
}

fn section_into<T: serde::de::DeserializeOwned>(
    value: &toml::Value,
    out: &mut T,
) -> Result<(), String> {
    *out = value.clone().try_into().map_err(|e: toml::de::Error| {
        // toml's messages span several lines with a source excerpt; keep the first.
        e.message()
            .lines()
            .next()
            .unwrap_or("invalid value")
            .to_owned()
    })?;
    Ok(())
}

/// The sections an environment override can name, as `EDGELIVE_<SECTION>_<KEY>` spells them
/// (one word each, so the first `_` after the section ends it). `[[history]]` is a list of
/// tables and cannot be set this way, but its name is still ours: naming it is an error.
const ENV_SECTIONS: &[&str] = &[
    "server", "runtime", "storage", "live", "log", "push", "auth", "streams", "history", "mqtt",
    "forward",
];

/// Applies `EDGELIVE_<SECTION>_<KEY>=value`. The value is read as a TOML value when it parses as
/// one (`-1`, `true`, `["a"]`), else as a string. `KEY` is the rest of the name, lower-cased,
/// underscores kept: `EDGELIVE_PUSH_MAX_BODY_SIZE` is `[push] max_body_size`, and
/// `EDGELIVE_PUSH_UDP` sets the whole `[push.udp]` table from an inline table.
///
/// Only names whose first word after the prefix is a section are overrides; any other
/// `EDGELIVE_*` variable (`EDGELIVE_HOME` in someone's shell, `EDGELIVE_CHANNEL` that the daemon
/// itself gives exec handler programs, a test's setting) is not ours and is ignored, so it
/// cannot stop the daemon. Within a known section every problem stays an error: a missing or
/// unknown key is reported by the section's `deny_unknown_fields`.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    problems: &mut Vec<String>,
) {
    let overrides: BTreeMap<String, (&str, String)> = env
        .into_iter()
        .filter_map(|(name, raw)| {
            let rest = name.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase();
            let section = env_section(&rest)?;
            Some((name, (section, raw)))
        })
        .collect();
    for (name, (section, raw)) in overrides {
        let key = name[ENV_PREFIX.len() + section.len()..]
            .strip_prefix('_')
            .unwrap_or("")
            .to_ascii_lowercase();
        if key.is_empty() {
            problems.push(format!(
                "{name}: expected {ENV_PREFIX}{}_<KEY>",
                section.to_ascii_uppercase()
            ));
            continue;
        }
        if section == "history" {
            problems.push(format!(
                "{name}: [[history]] rules cannot be set from the environment (write them in the config file)"
            ));
            continue;
        }
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let entry = table
            .entry(section.to_owned())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        match entry {
            toml::Value::Table(t) => {
                t.insert(key, value);
            }
            _ => problems.push(format!("{name}: [{section}] is not a section")),
        }
    }
}

/// The section a lower-cased override name (without the prefix) belongs to: `live` for
/// `live_max_connections` and for a bare `live`; `None` for `home` or `livex_y`.
fn env_section(rest: &str) -> Option<&'static str> {
    ENV_SECTIONS.iter().copied().find(|s| {
        rest.strip_prefix(s)
            .is_some_and(|tail| tail.is_empty() || tail.starts_with('_'))
    })
}

/// serde helper for human durations: "25s", "500ms", "10m".
#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn embedded_defaults_match_the_documented_ones() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:3030");
        assert_eq!(c.storage.path, PathBuf::from("./data"));
        assert_eq!(c.live.max_connections, 100);
        assert_eq!(c.live.message_size_limit, 65536);
        assert_eq!(c.live.ping_interval, Duration::from_secs(25));
        assert_eq!(c.runtime.workers, 0);
    }

    #[test]
    fn packaged_config_file_parses_and_equals_defaults_where_it_should() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/edgelive.toml");
        let c = Config::load(Some(&path), env(&[])).unwrap();
        let d = Config::default();
        assert_eq!(c.live.max_connections, d.live.max_connections);
        assert_eq!(c.live.message_size_limit, d.live.message_size_limit);
        assert_eq!(c.live.client_queue_max_size, d.live.client_queue_max_size);
        assert_eq!(c.history_rules(), default_history());
        assert_eq!(c.storage.durability, d.storage.durability);
        assert_eq!(c.storage.channel_idle_ttl, d.storage.channel_idle_ttl);
        assert_eq!(c.storage.max_read, d.storage.max_read);
        assert_eq!(c.push.max_body_size, d.push.max_body_size);
        assert_eq!(c.push.body_timeout, d.push.body_timeout);
        assert_eq!(c.push.frame_idle_ttl, d.push.frame_idle_ttl);
        assert_eq!(c.push.udp.listen, d.push.udp.listen);
        assert_eq!(c.push.udp.stream, d.push.udp.stream);
        assert_eq!(c.push.udp.frame_format, d.push.udp.frame_format);
        assert_eq!(c.push.udp.precision, d.push.udp.precision);
    }

    #[test]
    fn push_udp_problems_are_listed_and_a_table_can_come_from_the_environment() {
        let err = Config::from_toml(
            "t",
            "[push]\nmax_body_size = 10\n[push.udp]\nlisten = \"x\"\nstream = \"a/b\"\nframe_format = \"long\"\nprecision = \"h\"\n",
            env(&[]),
        )
        .unwrap_err();
        let all = err.to_string();
        for needle in [
            "max_body_size",
            "[push.udp] listen",
            "stream = \"a/b\"",
            "frame_format",
            "precision",
        ] {
            assert!(all.contains(needle), "{needle}: {all}");
        }
        let c = Config::from_toml(
            "t",
            "",
            env(&[(
                "EDGELIVE_PUSH_UDP",
                "{listen = \"127.0.0.1:0\", stream = \"s\"}",
            )]),
        )
        .unwrap();
        assert_eq!(
            (c.push.udp.listen.as_str(), c.push.udp.stream.as_str()),
            ("127.0.0.1:0", "s")
        );
        assert_eq!(c.push.udp.precision, "ns");
    }

    #[test]
    fn env_overrides_types_and_strings() {
        let c = Config::from_toml(
            "t",
            "[live]\nmax_connections = 5\n",
            env(&[
                ("EDGELIVE_LIVE_MAX_CONNECTIONS", "-1"),
                ("EDGELIVE_LIVE_PING_INTERVAL", "2s"),
                (
                    "EDGELIVE_LIVE_ALLOWED_ORIGINS",
                    "https://a.example, https://*.b.example",
                ),
                ("EDGELIVE_SERVER_LISTEN", "127.0.0.1:0"),
                ("OTHER_VAR", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.live.max_connections, -1);
        assert_eq!(c.live.ping_interval, Duration::from_secs(2));
        assert_eq!(
            c.live.allowed_origins.0,
            vec!["https://a.example", "https://*.b.example"]
        );
        assert_eq!(c.server.listen, "127.0.0.1:0");
    }

    #[test]
    fn every_problem_is_listed() {
        let err = Config::from_toml(
            "t",
            "[server]\nlisten = \"nowhere\"\n[live]\nmax_connections = -5\nbogus = 1\n[runtime]\nworkers = \"two\"\n[nope]\n",
            env(&[("EDGELIVE_LOG_LEVEL", "info,=[")]),
        )
        .unwrap_err();
        let all = err.to_string();
        assert!(all.contains("unknown field `bogus`"), "{all}");
        assert!(all.contains("[runtime]"), "{all}");
        assert!(all.contains("unknown section [nope]"), "{all}");
        assert!(all.contains("listen = \"nowhere\""), "{all}");
        assert!(all.contains("[log] level"), "{all}");
        assert!(err.problems.len() >= 5, "{all}");
    }

    #[test]
    fn grafana_special_values() {
        let e = Config::from_toml("t", "[live]\nmessage_size_limit = -2\n", env(&[])).unwrap_err();
        assert!(e.to_string().contains("message_size_limit"));
        let e = Config::from_toml("t", "[live]\nha_engine = \"etcd\"\n", env(&[])).unwrap_err();
        assert!(e.to_string().contains("ha_engine"));
        let e = Config::from_toml(
            "t",
            "[live]\nha_engine = \"redis\"\nha_engine_address = \"redis.lan\"\n",
            env(&[]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("ha_engine_address"), "{e}");
        Config::from_toml("t", "[live]\nha_engine = \"redis\"\n", env(&[])).unwrap();
        let c = Config::from_toml("t", "[live]\nallowed_origins = \"*\"\n", env(&[])).unwrap();
        assert_eq!(c.live.allowed_origins.0, vec!["*"]);
    }

    #[test]
    fn history_rules_replace_the_defaults() {
        let c = Config::from_toml("t", "", env(&[])).unwrap();
        assert_eq!(c.history_rules(), default_history());
        let c = Config::from_toml(
            "t",
            "[storage]\ndurability = \"none\"\n[[history]]\npattern = \"stream/factory-*\"\nsize = 5\nttl = \"1m\"\n",
            env(&[]),
        )
        .unwrap();
        assert_eq!(c.storage.durability, Durability::None);
        for (text, level, syncs) in [
            ("batched", Durability::Batched, true),
            ("power_loss", Durability::Batched, true),
            ("crash", Durability::Crash, false),
            ("none", Durability::None, true),
        ] {
            let c = Config::from_toml(
                "t",
                &format!("[storage]\ndurability = \"{text}\"\n"),
                env(&[]),
            )
            .unwrap();
            assert_eq!(
                (c.storage.durability, c.storage.durability.syncs()),
                (level, syncs)
            );
        }
        let rules = c.history_rules();
        assert_eq!(rules.len(), 1);
        assert_eq!((rules[0].size, rules[0].ttl), (5, Duration::from_secs(60)));
        let e = Config::from_toml(
            "t",
            "[[history]]\npattern = \"bad pattern\"\nsize = 1\nttl = \"1s\"\n",
            env(&[]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("cannot match"), "{e}");
        let e = Config::from_toml("t", "[storage]\ndurability = \"sometimes\"\n", env(&[]))
            .unwrap_err();
        assert!(
            e.to_string().contains("durability") || e.to_string().contains("sometimes"),
            "{e}"
        );
    }

    #[test]
    fn other_edgelive_variables_are_not_overrides() {
        // Someone's shell, a test harness and the daemon's own exec handler environment all
        // use the prefix for things that are not config; none may stop the daemon.
        let c = Config::from_toml(
            "t",
            "",
            env(&[
                ("EDGELIVE_HOME", "/x"),
                ("EDGELIVE_CONFORMANCE_DIR", "/y"),
                ("EDGELIVE_CHANNEL", "plugin/x/y"),
                ("EDGELIVE_PATH", "y"),
                ("EDGELIVE_URL", "ws://127.0.0.1:1/api/live/ws"),
                // A section name followed by more letters is another word, not the section.
                ("EDGELIVE_LIVELY_MODE", "1"),
                ("EDGELIVE_LOGFILE", "/tmp/l"),
                ("EDGELIVE_", "1"),
                // The prefix is case-sensitive.
                ("edgelive_live_max_connections", "x"),
                ("EDGELIVE_PUSH_BODY_TIMEOUT", "3s"),
            ]),
        )
        .unwrap();
        assert_eq!(c.push.body_timeout, Duration::from_secs(3));
    }

    #[test]
    fn a_known_section_with_a_bad_key_is_still_an_error() {
        for (name, needle) in [
            ("EDGELIVE_LIVE_NO_SUCH_KEY", "unknown field `no_such_key`"),
            ("EDGELIVE_LIVE", "expected EDGELIVE_LIVE_<KEY>"),
            ("EDGELIVE_STREAMS_", "expected EDGELIVE_STREAMS_<KEY>"),
            ("EDGELIVE_HISTORY_LIMIT", "[[history]] rules cannot be set"),
            // Keys keep their underscores: this is `[push] udp_listen`, not `[push.udp] listen`.
            ("EDGELIVE_PUSH_UDP_LISTEN", "unknown field `udp_listen`"),
        ] {
            let r = Config::from_toml("t", "", env(&[(name, "1"), ("EDGELIVE_HOME", "/x")]));
            let e = r.err().unwrap_or_else(|| panic!("{name} was accepted"));
            assert!(e.to_string().contains(needle), "{name}: {e}");
        }
    }

    #[test]
    fn bad_durations_are_named() {
        let e = Config::from_toml("t", "[live]\nping_interval = \"soon\"\n", env(&[])).unwrap_err();
        assert!(e.to_string().contains("\"soon\""), "{e}");
        let e =
            Config::from_toml("t", "[live]\nping_interval = \"1500ms\"\n", env(&[])).unwrap_err();
        assert!(e.to_string().contains("whole seconds"), "{e}");
    }
}
