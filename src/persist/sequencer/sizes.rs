//! History size per `[[history]]` pattern: logged at startup, served by `/metrics`.

use tracing::info;

use super::Sequencer;

/// History held per `[[history]]` pattern, for the startup log and `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct HistorySizes {
    /// (pattern, channels, publications, bytes)
    pub by_pattern: Vec<(String, u64, u64, u64)>,
}

impl Sequencer {
    /// Totals per history pattern; logged at startup, served by `/metrics`.
    pub(super) fn publish_sizes(&self, log: bool) {
        let mut by: Vec<(String, u64, u64, u64)> = self
            .settings
            .kinds
            .patterns()
            .map(|p| (p.to_owned(), 0, 0, 0))
            .collect();
        for (key, ch) in &self.channels {
            let pattern = self.settings.kinds.pattern_of(key).unwrap_or("(no rule)");
            let i = match by.iter().position(|(p, ..)| p == pattern) {
                Some(i) => i,
                None => {
                    by.push((pattern.to_owned(), 0, 0, 0));
                    by.len() - 1
                }
            };
            by[i].1 += 1;
            by[i].2 += ch.size.entries;
            by[i].3 += ch.size.bytes;
        }
        if log {
            for (pattern, channels, entries, bytes) in &by {
                info!(
                    pattern,
                    channels,
                    publications = entries,
                    bytes,
                    "history size"
                );
            }
        }
        self.sizes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_pattern = by;
    }
}
