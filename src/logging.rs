//! The log subscriber: `[log] format` text or JSON on stderr, journald-friendly when stderr is
//! the journal, and a filter a reload can change.
//!
//! Under systemd, `JOURNAL_STREAM` names the journal's stream (`dev:inode`); when stderr is it,
//! lines carry no colours and no timestamps (the journal adds its own) and start with the
//! syslog priority (`<3>` error … `<7>` debug), which journald reads as the entry's priority,
//! so `journalctl -p warning -u edgelive` works.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::LogFormat;
use crate::reload::LogControl;

/// Installs the global subscriber. `RUST_LOG` wins over `level`. Returns what a reload uses
/// to change the level.
pub fn init(level: &str, format: LogFormat) -> LogControl {
    let filter = env_filter()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(level));
    let (filter, handle) = reload::Layer::new(filter);
    let journal = stderr_is_journal();
    let output: Box<dyn Layer<_> + Send + Sync> = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text if journal => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .event_format(Prioritized(
                tracing_subscriber::fmt::format().without_time(),
            ))
            .boxed(),
        LogFormat::Text => {
            use std::io::IsTerminal;
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .boxed()
        }
    };
    Registry::default().with(filter).with(output).init();
    Box::new(move |level: &str| {
        if env_filter().is_some() {
            return Err("RUST_LOG is set and wins over [log] level".into());
        }
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}

/// `RUST_LOG`, unless unset or empty.
fn env_filter() -> Option<String> {
    std::env::var("RUST_LOG")
        .ok()
        .filter(|f| !f.trim().is_empty())
}

/// Whether stderr is the stream `JOURNAL_STREAM` names (not merely inherited from a parent
/// whose stderr was the journal).
fn stderr_is_journal() -> bool {
    let Some(named) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = named.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat on fd 2 writes only into `st`, which is zeroed and ours.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    st.st_dev as u64 == dev && st.st_ino as u64 == ino
}

/// Prefixes each line with its syslog priority for journald.
struct Prioritized<F>(F);

impl<S, N, F> FormatEvent<S, N> for Prioritized<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// syslog priorities (sd-daemon.h): err 3, warning 4, info 6, debug 7.
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}
