//! The `edgelive` binary: CLI, config, logging, runtime, signals, systemd notification.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use edgelive::auth::{jwt, Role};
use edgelive::config::Config;
use edgelive::hub::Hub;
use edgelive::persist::Persist;
use edgelive::reload::{ConfigSource, Reloader};
use edgelive::server;
use edgelive::settings::Settings;
use edgelive::state::Shared;
use edgelive_storage::{Store, StoreConfig, StoreError};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// sysexits.h codes, so systemd's RestartPreventExitStatus can tell a bad config from a crash.
mod exit {
    pub const USAGE: u8 = 64;
    pub const DATAERR: u8 = 65;
    pub const CANTCREAT: u8 = 73;
    pub const IOERR: u8 = 74;
    pub const TEMPFAIL: u8 = 75;
    pub const CONFIG: u8 = 78;
}

#[derive(Parser)]
#[command(
    name = "edgelive",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("EDGELIVE_BUILD_TARGET"), ")"),
    about = "Grafana Live for edge and IoT devices"
)]
struct Cli {
    /// TOML config file; without one the embedded defaults apply.
    #[arg(long, value_name = "PATH", global = true)]
    config: Option<PathBuf>,
    /// Listen address (overrides [server] listen), e.g. 127.0.0.1:0.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Data directory (overrides [storage] path).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file (and the token files it names): exit 0, or 78 listing every problem.
    CheckConfig { path: PathBuf },
    /// Mint a connection JWT signed with the config's [auth] JWT secret, for a user of the device.
    Token {
        /// The user (`sub`): shown in presence and publications.
        #[arg(long)]
        sub: String,
        /// Lifetime, e.g. 1h, 30m, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// viewer, publisher or admin.
        #[arg(long, default_value = "viewer", value_parser = parse_role)]
        role: Role,
        /// JSON for `info` (the connection's conn_info).
        #[arg(long)]
        info: Option<String>,
        /// A channel to subscribe the connection to at connect (repeatable).
        #[arg(long = "channel")]
        channels: Vec<String>,
    },
    /// Print the SHA-256 of a token read from stdin, for `token_sha256` in [[auth.tokens]].
    HashToken,
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("{s:?} is not a role (viewer, publisher, admin)"))
}

fn main() -> ExitCode {
    // Before any thread exists (sled's, the runtime's, the storage threads).
    edgelive::allocator::tune();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(exit::USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Some(Command::HashToken) = &cli.command {
        let mut token = String::new();
        if std::io::stdin().read_line(&mut token).is_err() || token.trim().is_empty() {
            eprintln!("expected a token on stdin");
            return ExitCode::from(exit::USAGE);
        }
        println!(
            "{}",
            edgelive::auth::sha256_hex(token.trim_end_matches(['\n', '\r']))
        );
        return ExitCode::SUCCESS;
    }
    if let Some(Command::CheckConfig { path }) = &cli.command {
        let checked = Config::load(Some(path), std::env::vars())
            .map_err(|e| e.problems)
            .and_then(|c| Settings::from_config(&c).map(|_| c.warnings()));
        return match checked {
            Ok(warnings) => {
                for w in &warnings {
                    eprintln!("warning: {w}");
                }
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(problems) => {
                eprintln!("{}: {} problem(s):", path.display(), problems.len());
                for p in &problems {
                    eprintln!("  - {p}");
                }
                ExitCode::from(exit::CONFIG)
            }
        };
    }
    if let Some(listen) = &cli.listen {
        if listen.parse::<std::net::SocketAddr>().is_err() {
            eprintln!("--listen {listen:?} is not an IP:port address");
            return ExitCode::from(exit::USAGE);
        }
    }
    let source = ConfigSource {
        path: cli.config.clone(),
        listen: cli.listen.clone(),
        data_dir: cli.data_dir.clone(),
    };
    let config = match source.load() {
        Ok(c) => c,
        Err(problems) => {
            for p in &problems {
                eprintln!("config: {p}");
            }
            return ExitCode::from(exit::CONFIG);
        }
    };
    let settings = match Settings::from_config(&config) {
        Ok(s) => Arc::new(s),
        Err(problems) => {
            for p in &problems {
                eprintln!("config: {p}");
            }
            return ExitCode::from(exit::CONFIG);
        }
    };
    if let Some(Command::Token {
        sub,
        ttl,
        role,
        info,
        channels,
    }) = cli.command
    {
        return mint(&settings, sub, ttl, role, info, channels);
    }
    let log = edgelive::logging::init(&config.log.level, config.log.format);
    for w in config.warnings() {
        warn!(warning = %w, "config");
    }
    let reloader = Reloader::new(source, config.clone(), log);
    match run(config, settings, reloader) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, e)) => {
            error!("{e:#}");
            ExitCode::from(code)
        }
    }
}

struct Failure(u8, anyhow::Error);

/// `edgelive token`: prints a signed connection JWT.
fn mint(
    settings: &Settings,
    sub: String,
    ttl: std::time::Duration,
    role: Role,
    info: Option<String>,
    channels: Vec<String>,
) -> ExitCode {
    let Some(secret) = settings.auth.jwt_secret() else {
        eprintln!("no JWT secret: set [auth] jwt_hmac_secret or jwt_hmac_secret_file (or EDGELIVE_AUTH_JWT_HMAC_SECRET_FILE)");
        return ExitCode::from(exit::CONFIG);
    };
    let info = match info
        .map(edgelive::json::CompactJson::from_string)
        .transpose()
    {
        Ok(i) => i,
        Err(e) => {
            eprintln!("--info is not JSON: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let now = edgelive::auth::now().floor();
    let claims = jwt::Claims {
        sub,
        iat: Some(now),
        exp: Some(now + ttl.as_secs().max(1) as f64),
        info,
        channels,
        role: Some(role),
        ..Default::default()
    };
    println!("{}", jwt::sign(&claims, secret));
    ExitCode::SUCCESS
}

fn run(config: Config, settings: Arc<Settings>, reloader: Reloader) -> Result<(), Failure> {
    // Opened before the runtime exists: no async worker ever blocks on sled.
    let store = Store::open(&StoreConfig {
        path: config.storage.path.clone(),
        cache_capacity: config.storage.cache_capacity_mib << 20,
        flush_every_ms: config.storage.flush_every_ms,
    })
    .map_err(|e| {
        let code = match e {
            StoreError::CreateDir { .. } => exit::CANTCREAT,
            StoreError::IncompatibleFormat { .. } | StoreError::Unsupported { .. } => exit::CONFIG,
            StoreError::Locked { .. } => exit::TEMPFAIL,
            StoreError::Damaged { .. } => exit::DATAERR,
            _ => exit::IOERR,
        };
        Failure(code, e.into())
    })?;
    info!(path = %store.path().display(), "storage open");

    let hub = Arc::new(Hub::new(settings.org_id));
    let (persist, threads) = Persist::start(store, hub.clone(), (&*settings).into())
        .context("cannot start the storage threads")
        .map_err(|e| Failure(exit::IOERR, e))?;
    // Each target's queue is counted before the runtime starts (a blocking read).
    let forward = match edgelive::forward::Forwarding::open(&settings.forward, &persist.store) {
        Ok(f) => f,
        Err(e) => {
            // A clean stop, so the next start is not taken for a crash.
            persist.stop(threads);
            return Err(Failure(
                exit::IOERR,
                anyhow::Error::new(e).context("cannot open the forwarding queues"),
            ));
        }
    };
    let rt = build_runtime(&config).map_err(|e| Failure(exit::TEMPFAIL, e))?;
    let served = persist.clone();
    let result = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))
            .map_err(|e| Failure(exit::TEMPFAIL, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Failure(exit::TEMPFAIL, e.into()))?;
        let udp = match &settings.udp {
            Some(u) => Some((
                tokio::net::UdpSocket::bind(u.listen)
                    .await
                    .with_context(|| format!("cannot listen on udp {}", u.listen))
                    .map_err(|e| Failure(exit::TEMPFAIL, e))?,
                u.clone(),
            )),
            None => None,
        };
        let shutdown = CancellationToken::new();
        let shared = Shared::new(settings, hub, served, forward, shutdown.clone());
        shared.forward.start(&shared.tracker, shutdown.clone());
        if let Some((socket, u)) = udp {
            if let Ok(a) = socket.local_addr() {
                info!(addr = %a, stream = %u.target.stream_id, "udp push receiving");
            }
            shared
                .tracker
                .spawn(edgelive::push::udp::serve(socket, u, shared.clone()));
        }
        // Installed before READY=1 and the "listening" line: a signal sent as soon as either
        // is seen must find its handler, not the default action (which ends the process).
        for (spec, stats) in shared.settings().mqtt.iter().zip(&shared.mqtt) {
            let parts = edgelive::mqtt::bridge::Parts {
                shared: shared.clone(),
                stats: stats.clone(),
            };
            shared
                .tracker
                .spawn(edgelive::mqtt::bridge::run(spec.clone(), parts));
        }
        let signals = Signals::install().map_err(|e| Failure(exit::TEMPFAIL, e))?;
        tokio::spawn(wait_for_signal(signals.term, signals.int, shutdown));
        tokio::spawn(reload_on_sighup(signals.hup, reloader, shared.clone()));
        info!(%addr, "listening");
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        server::serve(listener, shared).await;
        Ok::<(), Failure>(())
    });
    // Connections are gone (or abandoned with the runtime): record a clean stop and flush.
    drop(rt);
    persist.stop(threads);
    result
}

fn build_runtime(config: &Config) -> anyhow::Result<tokio::runtime::Runtime> {
    let rc = &config.runtime;
    let mut b = if rc.workers == 0 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(rc.workers);
        b
    };
    b.enable_all()
        .event_interval(rc.event_interval)
        .max_io_events_per_tick(rc.max_io_events_per_tick)
        .thread_stack_size(rc.thread_stack_size)
        .max_blocking_threads(4)
        .build()
        .context("cannot start the async runtime")
}

/// The signals the daemon handles.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            hup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
        })
    }
}

async fn wait_for_signal(mut term: Signal, mut int: Signal, shutdown: CancellationToken) {
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    info!(signal = name, "shutting down");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    shutdown.cancel();
}

/// SIGHUP (`systemctl reload`): re-reads the config and puts what can change live in force.
/// Reloads run one at a time; signals that arrive during one make one more.
async fn reload_on_sighup(mut hup: Signal, mut reloader: Reloader, shared: Arc<Shared>) {
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            got = hup.recv() => if got.is_none() { return },
        }
        info!(signal = "SIGHUP", "reloading the config");
        reloader.reload(&shared).await;
    }
}
