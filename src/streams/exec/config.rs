//! `[[streams.exec]]`: programs on the device that produce a channel while someone watches.
//! The operator's table (`ExecConfig`) is checked here and built into a `Spec`, the runtime
//! object the handler uses.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::channel::{Channel, Scope};
use crate::ingest::{Layout, Precision};

/// The namespaces of the built-in stream handlers (`streams::builtin` has their handlers; a
/// test keeps the two the same).
pub const BUILTIN_NAMESPACES: &[&str] = &["plugin/testdata"];

/// The namespaces with a handler, as `scope/namespace` (for the channel kinds): the built-in ones and the
/// configured exec handlers'.
pub fn namespaces(specs: &[Spec]) -> Vec<String> {
    let mut all: Vec<String> = BUILTIN_NAMESPACES.iter().map(|s| s.to_string()).collect();
    for spec in specs {
        if !all.contains(&spec.namespace) {
            all.push(spec.namespace.clone());
        }
    }
    all
}

/// One `[[streams.exec]]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// `plugin/<namespace>/<path pattern>` or `ds/<uid>/<path pattern>`: which channels the
    /// program produces. The pattern is a path glob over the path (`crate::glob`): `*`
    /// within one `/`-separated segment, `**` across segments.
    pub channel: String,
    /// The program and its arguments; no shell is involved. The channel is in the program's
    /// environment as `EDGELIVE_CHANNEL` (and its path as `EDGELIVE_PATH`).
    pub command: Vec<String>,
    /// Client publishes on the channel are written to the program's stdin as JSON lines;
    /// when false they are refused with 103.
    #[serde(default)]
    pub publish: bool,
    /// After SIGTERM, how long the program has to exit before SIGKILL.
    #[serde(default = "default_stop_timeout", with = "crate::duration")]
    pub stop_timeout: Duration,
    /// Most copies of this program running at once (one per channel).
    #[serde(default = "default_max_running")]
    pub max_running: usize,
    /// Longest line of output kept; longer ones are dropped (and logged).
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// How line-protocol output becomes frames: `labels_column` or `wide`.
    #[serde(default = "default_frame_format")]
    pub frame_format: String,
    /// Timestamp unit of line-protocol output: ns, us, ms or s.
    #[serde(default = "default_precision")]
    pub precision: String,
}

fn default_stop_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_max_running() -> usize {
    16
}
fn default_max_line_bytes() -> usize {
    64 * 1024
}
fn default_frame_format() -> String {
    "labels_column".into()
}
fn default_precision() -> String {
    "ns".into()
}

/// A checked `[[streams.exec]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// `scope/namespace`, the handler it belongs to.
    pub namespace: String,
    /// Path glob over the channel's path.
    pub path_pattern: String,
    pub command: Vec<String>,
    pub publish: bool,
    pub stop_timeout: Duration,
    pub max_running: usize,
    pub max_line_bytes: usize,
    pub layout: Layout,
    pub precision: Precision,
}

impl ExecConfig {
    /// The problems of table number `n` (1-based), each naming it.
    pub fn validate(&self, n: usize, problems: &mut Vec<String>) {
        if let Err(problem) = self.spec(n, false) {
            problems.push(problem);
        }
    }

    /// The spec of table number `n`, its program looked up too when `find` (at start, not
    /// while only parsing); `Err` names the table.
    pub fn spec(&self, n: usize, find: bool) -> Result<Spec, String> {
        self.build()
            .and_then(|s| match find {
                true => find_program(&s.command[0]).map(|()| s),
                false => Ok(s),
            })
            .map_err(|e| format!("[[streams.exec]] #{n} ({:?}): {e}", self.channel))
    }

    /// The runtime spec; `Err` says what is wrong.
    pub fn build(&self) -> Result<Spec, String> {
        // A pattern is a channel name whose path may hold wildcards; `x` stands for them here.
        let probe = self.channel.replace(['*', '?'], "x");
        let channel = Channel::parse_bare(&probe).map_err(|e| format!("not a channel: {e}"))?;
        if !matches!(channel.scope(), Scope::Plugin | Scope::Ds) {
            return Err("the scope must be plugin or ds".into());
        }
        let namespace = channel.scope_namespace().to_owned();
        if self.channel.len() <= namespace.len() || self.channel[..namespace.len()] != namespace {
            return Err("the namespace cannot hold wildcards".into());
        }
        if BUILTIN_NAMESPACES.contains(&namespace.as_str()) {
            return Err(format!("{namespace} is a built-in handler"));
        }
        let Some(program) = self.command.first() else {
            return Err("command is empty: give the program and its arguments".into());
        };
        if program.is_empty() {
            return Err("command's program is empty".into());
        }
        if self.stop_timeout.is_zero() || self.max_running == 0 {
            return Err("stop_timeout and max_running must be positive".into());
        }
        if !(256..=16 << 20).contains(&self.max_line_bytes) {
            return Err("max_line_bytes must be between 256 and 16777216".into());
        }
        let layout = Layout::parse(&self.frame_format).ok_or_else(|| {
            format!(
                "frame_format = {:?} must be labels_column or wide",
                self.frame_format
            )
        })?;
        let precision = Precision::parse(&self.precision)
            .ok_or_else(|| format!("precision = {:?} must be ns, us, ms or s", self.precision))?;
        Ok(Spec {
            path_pattern: self.channel[namespace.len() + 1..].to_owned(),
            namespace,
            command: self.command.clone(),
            publish: self.publish,
            stop_timeout: self.stop_timeout,
            max_running: self.max_running,
            max_line_bytes: self.max_line_bytes,
            layout,
            precision,
        })
    }
}

/// Whether `program` can be run: a path to an executable file, or a name found on `$PATH`.
/// Checked when the daemon starts (and by `check-config`), so a typo is reported at once
/// rather than as a producer failing over and over.
pub fn find_program(program: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return if runnable(Path::new(program)) {
            Ok(())
        } else {
            Err(format!("{program}: not an executable file"))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|dir| runnable(&dir.join(program))) {
        Ok(())
    } else {
        Err(format!("{program}: not found on PATH"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(toml: &str) -> Result<Spec, String> {
        toml::from_str::<ExecConfig>(toml).unwrap().build()
    }

    #[test]
    fn a_pattern_names_its_handler_and_a_path_glob() {
        let s =
            exec("channel = \"plugin/sensors/temp-*\"\ncommand = [\"sensors\", \"-v\"]").unwrap();
        assert_eq!(s.namespace, "plugin/sensors");
        assert_eq!(s.path_pattern, "temp-*");
        assert_eq!(s.stop_timeout, Duration::from_secs(3));
        assert!(!s.publish);
        let ds = exec("channel = \"ds/abc/*\"\ncommand = [\"x\"]\npublish = true").unwrap();
        assert_eq!((ds.namespace.as_str(), ds.publish), ("ds/abc", true));
    }

    #[test]
    fn mistakes_are_named() {
        let err = |t: &str| exec(t).unwrap_err();
        assert!(err("channel = \"stream/a/b\"\ncommand = [\"x\"]").contains("plugin or ds"));
        assert!(err("channel = \"plugin/s*/b\"\ncommand = [\"x\"]").contains("namespace"));
        assert!(err("channel = \"plugin/testdata/*\"\ncommand = [\"x\"]").contains("built-in"));
        assert!(err("channel = \"plugin/a\"\ncommand = [\"x\"]").contains("not a channel"));
        assert!(err("channel = \"plugin/a/b\"\ncommand = []").contains("command is empty"));
        assert!(
            err("channel = \"plugin/a/b\"\ncommand = [\"x\"]\nprecision = \"h\"")
                .contains("precision")
        );
        assert!(toml::from_str::<ExecConfig>("channel = \"plugin/a/b\"\ncmd = [\"x\"]").is_err());
    }

    #[test]
    fn the_packaged_configs_example_is_valid_and_shows_the_defaults() {
        let text = include_str!("../../../config/edgelive.toml");
        let start = text.find("# [[streams.exec]]").expect("the example");
        let example: String = text[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| l.strip_prefix("# ").unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let table: toml::Table = example.parse().unwrap();
        let tables: Vec<ExecConfig> = table["streams"]["exec"].clone().try_into().unwrap();
        let shown = tables[0].build().unwrap();
        let minimal = exec("channel = \"plugin/sensors/*\"\ncommand = [\"x\"]").unwrap();
        assert_eq!(
            (shown.stop_timeout, shown.max_running, shown.max_line_bytes),
            (
                minimal.stop_timeout,
                minimal.max_running,
                minimal.max_line_bytes
            )
        );
        assert_eq!(
            (shown.publish, shown.layout, shown.precision),
            (minimal.publish, minimal.layout, minimal.precision)
        );
    }

    #[test]
    fn a_missing_program_stops_the_daemon_from_starting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.toml");
        std::fs::write(
            &path,
            "[[streams.exec]]\nchannel = \"plugin/s/*\"\ncommand = [\"/no/such/sensor\"]\n",
        )
        .unwrap();
        let config = crate::config::Config::load(Some(&path), Vec::new()).unwrap();
        let problems = crate::settings::Settings::from_config(&config).unwrap_err();
        assert!(
            problems[0].contains("[[streams.exec]] #1") && problems[0].contains("/no/such/sensor"),
            "{problems:?}"
        );
    }

    #[test]
    fn programs_are_looked_up_like_a_shell_would() {
        assert!(find_program("sh").is_ok());
        assert!(find_program("/bin/sh").is_ok());
        assert!(find_program("no-such-program-here").is_err());
        let plain = tempfile::NamedTempFile::new().unwrap();
        let err = find_program(plain.path().to_str().unwrap()).unwrap_err();
        assert!(err.contains("not an executable"), "{err}");
    }
}
