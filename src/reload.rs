//! Reloading the config on SIGHUP (`systemctl reload`): the file is read again, credential
//! files too, and what can change while clients stay connected is put in force. What needs a
//! restart is logged as such and keeps its old value; a file with any problem changes nothing.
//!
//! Live: tokens and JWT secrets, `[[auth.rules]]`, `allowed_origins`, `max_connections`, rates
//! and size limits (each new connection or request takes them), the log level, `[[history]]`
//! rules and `[[streams.exec]]` tables for channels created from then on. Sessions re-check
//! their credentials and subscriptions at once (`session::reconfigure`).

use std::path::PathBuf;
use std::sync::Arc;

use sd_notify::NotifyState;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::settings::Settings;
use crate::state::Shared;

/// Sets the log filter; `Err` says why it could not.
pub type LogControl = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Where the config comes from: the file, the environment, the command line's overrides.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// `--config`; `None`: the embedded defaults (and the environment).
    pub path: Option<PathBuf>,
    /// `--listen`, which wins over the file.
    pub listen: Option<String>,
    /// `--data-dir`, which wins over the file.
    pub data_dir: Option<PathBuf>,
}

impl ConfigSource {
    /// Reads and validates the config, overrides applied. Reads the file: call it off the
    /// event loop.
    pub fn load(&self) -> Result<Config, Vec<String>> {
        let mut config =
            Config::load(self.path.as_deref(), std::env::vars()).map_err(|e| e.problems)?;
        if let Some(listen) = &self.listen {
            config.server.listen = listen.clone();
        }
        if let Some(dir) = &self.data_dir {
            config.storage.path = dir.clone();
        }
        Ok(config)
    }
}

/// How one reload went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// In force; these keys changed but keep their old values until a restart.
    Applied { needs_restart: Vec<&'static str> },
    /// Nothing changed: the new file's problems.
    Refused { problems: Vec<String> },
}

/// Holds the config in force and puts new ones in force.
pub struct Reloader {
    source: ConfigSource,
    current: Config,
    log: LogControl,
}

impl Reloader {
    pub fn new(source: ConfigSource, current: Config, log: LogControl) -> Reloader {
        Reloader {
            source,
            current,
            log,
        }
    }

    /// One reload, told to systemd (`RELOADING=1`, then `STATUS=` and `READY=1`).
    pub async fn reload(&mut self, shared: &Shared) -> Outcome {
        let mut reloading = vec![NotifyState::Reloading];
        // systemd 253+ requires the timestamp with RELOADING=1; 252 ignores it.
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            reloading.push(now);
        }
        let _ = sd_notify::notify(&reloading);
        let outcome = self.reload_quietly(shared).await;
        let status = match &outcome {
            Outcome::Applied { needs_restart } if needs_restart.is_empty() => {
                "config reloaded".to_owned()
            }
            Outcome::Applied { needs_restart } => format!(
                "config reloaded; needs a restart for {}",
                needs_restart.join(", ")
            ),
            Outcome::Refused { problems } => format!(
                "config reload refused ({} problem(s)); the previous config stays in force",
                problems.len()
            ),
        };
        let _ = sd_notify::notify(&[NotifyState::Status(&status), NotifyState::Ready]);
        outcome
    }

    /// The reload without telling systemd.
    async fn reload_quietly(&mut self, shared: &Shared) -> Outcome {
        let source = self.source.clone();
        let current = self.current.clone();
        // Reading the files (config, credentials, exec programs) is disk work.
        let built = tokio::task::spawn_blocking(move || build(&source, &current)).await;
        let (config, settings, needs_restart) = match built {
            Ok(Ok(b)) => b,
            Ok(Err(problems)) => {
                for p in &problems {
                    error!(problem = %p, "config reload refused");
                }
                return Outcome::Refused { problems };
            }
            Err(e) => {
                let problems = vec![format!("reading the config failed: {e}")];
                error!(problem = %problems[0], "config reload refused");
                return Outcome::Refused { problems };
            }
        };
        for w in config.warnings() {
            warn!(warning = %w, "config");
        }
        if config.log.level != self.current.log.level {
            if let Err(e) = (self.log)(&config.log.level) {
                warn!(error = %e, "[log] level not applied");
            }
        }
        shared.apply(Arc::new(settings));
        for key in &needs_restart {
            warn!(
                key,
                "changed in the config; takes effect at the next restart"
            );
        }
        info!(restart_needed = needs_restart.len(), "config reloaded");
        self.current = config;
        Outcome::Applied { needs_restart }
    }
}

/// Loads the new config, keeps the old values of what needs a restart, and builds its
/// settings (reading the credential files). Blocking.
fn build(
    source: &ConfigSource,
    current: &Config,
) -> Result<(Config, Settings, Vec<&'static str>), Vec<String>> {
    let mut config = source.load()?;
    let needs_restart = keep_restart_only(current, &mut config);
    let settings = Settings::from_config(&config)?;
    Ok((config, settings, needs_restart))
}

/// Puts back into `new` what only a restart can change, naming each that differed.
fn keep_restart_only(old: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! keep {
        ($name:literal, $($field:tt).+) => {
            if format!("{:?}", new.$($field).+) != format!("{:?}", old.$($field).+) {
                changed.push($name);
                new.$($field).+ = old.$($field).+.clone();
            }
        };
    }
    // The listener and what it was built with.
    keep!("[server] listen", server.listen);
    keep!(
        "[server] max_pending_connections",
        server.max_pending_connections
    );
    // The runtime, the storage threads and the database.
    keep!("[runtime]", runtime);
    keep!("[storage]", storage);
    keep!("[push] frame_idle_ttl", push.frame_idle_ttl);
    keep!("[push.backfill]", push.backfill);
    // The UDP socket and the task that reads it.
    keep!("[push.udp]", push.udp);
    // The hub's channel names.
    keep!("[live] org_id", live.org_id);
    // The producers' lifecycle.
    keep!("[streams] grace_checks", streams.grace_checks);
    keep!("[streams] check_every", streams.check_every);
    keep!("[streams] backoff_min", streams.backoff_min);
    keep!("[streams] backoff_max", streams.backoff_max);
    // The bridges' connections.
    keep!("[[mqtt]]", mqtt);
    // The forwarding queues and their senders.
    keep!("[[forward]]", forward);
    // The log subscriber is built once.
    keep!("[log] format", log.format);
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_keys_keep_their_values_and_are_named() {
        let old = Config::default();
        let mut new = Config::default();
        new.server.listen = "0.0.0.0:9999".into();
        new.storage.max_read = 7;
        new.live.max_connections = 5;
        new.live.allowed_origins.0 = vec!["https://a.example".into()];
        let named = keep_restart_only(&old, &mut new);
        assert_eq!(named, vec!["[server] listen", "[storage]"]);
        assert_eq!(new.server.listen, old.server.listen);
        assert_eq!(new.storage.max_read, old.storage.max_read);
        // Live keys keep the new values.
        assert_eq!(new.live.max_connections, 5);
        assert_eq!(new.live.allowed_origins.0, vec!["https://a.example"]);
    }
}
