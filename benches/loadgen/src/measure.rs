//! What is measured: the server's CPU time and memory (from /proc, summed over its processes),
//! the generator's own CPU time (getrusage), latency percentiles, and medians over runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// The server's processes (nginx: master and worker).
#[derive(Clone, Debug)]
pub struct Server {
    pub pids: Vec<i32>,
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

impl Server {
    /// User + system CPU seconds used so far.
    pub fn cpu_seconds(&self) -> f64 {
        let ticks: u64 = self
            .pids
            .iter()
            .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
            .map(|stat| {
                // Fields after the command name (which may hold spaces) in parentheses.
                let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
                let f: Vec<&str> = rest.split_whitespace().collect();
                // utime and stime are fields 14 and 15; `rest` starts at field 3.
                f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                    + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            })
            .sum();
        ticks as f64 / ticks_per_second()
    }

    fn status_kib(&self, file: &str, key: &str) -> u64 {
        self.pids
            .iter()
            .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok())
            .filter_map(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .sum()
    }

    /// Resident memory, KiB, summed over the processes.
    /// Anonymous resident memory, KiB: the heap, stacks and buffers, without the pages of the
    /// binary and shared libraries that RSS also counts.
    pub fn anon_kib(&self) -> u64 {
        self.status_kib("status", "RssAnon:")
    }

    pub fn rss_kib(&self) -> u64 {
        self.status_kib("status", "VmRSS:")
    }

    /// Proportional set size, KiB: shared memory (nchan's message store) counted once.
    pub fn pss_kib(&self) -> u64 {
        self.status_kib("smaps_rollup", "Pss:")
    }
}

/// The generator's own user + system CPU seconds.
pub fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// The generator's clock: payloads carry nanoseconds since this instant.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// Deliveries and latencies seen by the subscribers.
#[derive(Default)]
pub struct Deliveries {
    pub count: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
}

impl Deliveries {
    /// A message arrived now; `sent_ns` when it carries its send time.
    pub fn arrived(&self, sent_ns: Option<u64>) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let Some(sent_ns) = sent_ns else {
            return;
        };
        let us = now_ns().saturating_sub(sent_ns) / 1000;
        self.latencies_us
            .lock()
            .unwrap()
            .push(u32::try_from(us).unwrap_or(u32::MAX));
    }

    /// A latency measured directly (a reply's).
    pub fn took(&self, d: std::time::Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let us = u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        self.latencies_us.lock().unwrap().push(us);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn reset(&self) {
        self.count.store(0, Ordering::Relaxed);
        self.latencies_us.lock().unwrap().clear();
    }

    /// (p50, p99, max) latency in µs over every subscriber's deliveries.
    pub fn percentiles(all: &[std::sync::Arc<Deliveries>]) -> (f64, f64, f64) {
        Self::percentiles_of(all.iter().map(|d| &**d))
    }

    /// (p50, p99, max) over these records.
    pub fn percentiles_of<'a>(all: impl IntoIterator<Item = &'a Deliveries>) -> (f64, f64, f64) {
        let mut v: Vec<u32> = Vec::new();
        for d in all {
            v.extend_from_slice(&d.latencies_us.lock().unwrap());
        }
        if v.is_empty() {
            return (f64::NAN, f64::NAN, f64::NAN);
        }
        v.sort_unstable();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] as f64;
        (at(0.5), at(0.99), *v.last().unwrap() as f64)
    }
}

/// `{"t":<ns>,"s":<seq>,"p":"xxx"}` padded to `size` bytes.
pub fn payload(seq: u64, size: usize) -> String {
    let mut s = format!("{{\"t\":{},\"s\":{seq},\"p\":\"", now_ns());
    let pad = size.saturating_sub(s.len() + 2);
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    s
}

/// The send time a payload carries (found by its `"t":` key, wherever the payload sits).
pub fn sent_ns(text: &[u8]) -> Option<u64> {
    let key = b"\"t\":";
    let at = text.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = text[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&text[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_their_size_and_carry_their_time() {
        let p = payload(7, 200);
        assert_eq!(p.len(), 200);
        let wrapped = format!("{{\"push\":{{\"pub\":{{\"data\":{p}}}}}}}");
        assert!(sent_ns(wrapped.as_bytes()).is_some());
    }
}
