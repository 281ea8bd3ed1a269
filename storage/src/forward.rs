//! Forwarding queues: one tree per `[[forward]]` target, `fwd/<target>`, keyed by a big-endian
//! sequence number (so sled's order is the order points were accepted), each value one push's
//! points for one stream as Influx line protocol.
//!
//! The value layout is written by hand, not with `record`'s named msgpack: a queue holds
//! hundreds of thousands of small entries after an outage, and field names (and serde's
//! byte-per-element arrays) would cost about 40 bytes each. Counted: one point of 45 bytes of
//! line protocol on stream `plant1` is stored in 74 bytes here (key included), in 111 with
//! `record`'s encoding. Layout: version byte, layout byte, points (u32 LE), time of acceptance
//! in ms (u64 LE), stream id length (u8), stream id, then the lines.

use sled::IVec;

use crate::{Store, StoreError};

const TREE_PREFIX: &str = "fwd/";
const ENTRY_VERSION: u8 = 1;
const HEADER: usize = 1 + 1 + 4 + 8 + 1;

/// One queued push: the points of one stream, as line protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardEntry {
    /// The push's stream id (the part of `stream/<id>/…` the far side's URL takes).
    pub stream: String,
    /// How the far side is asked to shape frames (`gf_live_frame_format`), as a byte the
    /// daemon defines.
    pub layout: u8,
    /// Points (lines) in `lines`.
    pub points: u32,
    /// When the push was accepted, ms since the Unix epoch.
    pub time_ms: u64,
    /// Line protocol, one point per line, nanosecond timestamps, each line ending in `\n`.
    pub lines: Vec<u8>,
}

impl ForwardEntry {
    pub fn encode(&self) -> Vec<u8> {
        let stream = self.stream.as_bytes();
        let len = u8::try_from(stream.len()).expect("stream ids are at most 255 bytes");
        let mut out = Vec::with_capacity(HEADER + stream.len() + self.lines.len());
        out.push(ENTRY_VERSION);
        out.push(self.layout);
        out.extend_from_slice(&self.points.to_le_bytes());
        out.extend_from_slice(&self.time_ms.to_le_bytes());
        out.push(len);
        out.extend_from_slice(stream);
        out.extend_from_slice(&self.lines);
        out
    }

    pub fn decode(v: &[u8]) -> Result<ForwardEntry, StoreError> {
        let corrupt = |reason: &str| StoreError::Corrupt {
            what: "forward queue",
            reason: reason.into(),
        };
        if v.len() < HEADER {
            return Err(corrupt("shorter than its header"));
        }
        if v[0] != ENTRY_VERSION {
            return Err(corrupt(&format!("unknown entry version {}", v[0])));
        }
        let points = u32::from_le_bytes(v[2..6].try_into().expect("4 bytes"));
        let time_ms = u64::from_le_bytes(v[6..14].try_into().expect("8 bytes"));
        let len = v[14] as usize;
        let stream = v
            .get(HEADER..HEADER + len)
            .ok_or_else(|| corrupt("stream id cut short"))?;
        let stream = std::str::from_utf8(stream).map_err(|_| corrupt("stream id not UTF-8"))?;
        Ok(ForwardEntry {
            stream: stream.to_owned(),
            layout: v[1],
            points,
            time_ms,
            lines: v[HEADER + len..].to_vec(),
        })
    }
}

/// What one queue holds, counted once at open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueTotals {
    pub entries: u64,
    pub points: u64,
    /// Keys and values.
    pub bytes: u64,
    /// The next sequence number to use.
    pub next: u64,
    /// The oldest entry's acceptance time, ms (0 when empty).
    pub oldest_ms: u64,
}

/// The head of a queue, as `ForwardQueue::read` found it.
#[derive(Debug, Default)]
pub struct Window {
    pub entries: Vec<(u64, ForwardEntry)>,
    /// Entries that could not be decoded.
    pub damaged: Vec<u64>,
}

/// What a removal took out: only entries that were still there count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    pub entries: u64,
    pub points: u64,
    pub bytes: u64,
}

/// One target's queue; a cheap clone of the tree handle, usable from any thread.
#[derive(Clone)]
pub struct ForwardQueue {
    tree: sled::Tree,
}

/// The stored size of an entry: key and value.
fn stored_bytes(value: &[u8]) -> u64 {
    8 + value.len() as u64
}

/// An entry's acceptance time, read from its header alone (a damaged body does not matter).
fn time_of(value: &[u8]) -> u64 {
    value
        .get(6..14)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

fn points_of(value: &[u8]) -> u64 {
    value.get(2..6).map_or(0, |b| {
        u32::from_le_bytes(b.try_into().expect("4 bytes")) as u64
    })
}

impl Store {
    /// The queue of target `name` (created empty if new).
    pub fn forward_queue(&self, name: &str) -> Result<ForwardQueue, StoreError> {
        let tree = self.db.open_tree(format!("{TREE_PREFIX}{name}"))?;
        Ok(ForwardQueue { tree })
    }

    /// Targets that have a queue on disk, configured or not.
    pub fn forward_queue_names(&self) -> Vec<String> {
        self.db
            .tree_names()
            .into_iter()
            .filter_map(|n| {
                std::str::from_utf8(&n)
                    .ok()
                    .and_then(|s| s.strip_prefix(TREE_PREFIX))
                    .map(str::to_owned)
            })
            .collect()
    }
}

impl ForwardQueue {
    /// Counts what is queued (reads every entry: at start, before anything is appended).
    pub fn totals(&self) -> Result<QueueTotals, StoreError> {
        let mut t = QueueTotals::default();
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            t.entries += 1;
            t.points += points_of(&v);
            t.bytes += stored_bytes(&v);
            if t.oldest_ms == 0 {
                t.oldest_ms = time_of(&v);
            }
            t.next = seq_of(&k) + 1;
        }
        Ok(t)
    }

    /// Queues an entry at `seq`; returns its stored size. Durable with the next commit.
    pub fn append(&self, seq: u64, entry: &ForwardEntry) -> Result<u64, StoreError> {
        let value = entry.encode();
        let bytes = stored_bytes(&value);
        self.tree.insert(seq.to_be_bytes(), value)?;
        Ok(bytes)
    }

    /// The oldest entries, from the head, until `max_points` or `max_bytes` is reached (at
    /// least one entry when any is queued). Entries that cannot be decoded are listed apart
    /// (by sequence number), so that one damaged entry cannot stop the queue.
    pub fn read(&self, max_points: u64, max_bytes: u64) -> Result<Window, StoreError> {
        let mut w = Window::default();
        let (mut points, mut bytes) = (0u64, 0u64);
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            let (p, b) = (points_of(&v), stored_bytes(&v));
            if !w.entries.is_empty() && (points + p > max_points || bytes + b > max_bytes) {
                break;
            }
            match ForwardEntry::decode(&v) {
                Ok(e) => {
                    points += p;
                    bytes += b;
                    w.entries.push((seq_of(&k), e));
                }
                Err(_) => w.damaged.push(seq_of(&k)),
            }
        }
        Ok(w)
    }

    /// Removes these entries (those still queued; another remover may have taken some).
    pub fn remove(&self, seqs: impl IntoIterator<Item = u64>) -> Result<Removed, StoreError> {
        let mut r = Removed::default();
        for seq in seqs {
            if let Some(v) = self.tree.remove(seq.to_be_bytes())? {
                count(&mut r, &v);
            }
        }
        Ok(r)
    }

    /// Removes the oldest entries until at least `bytes` are freed.
    pub fn remove_oldest(&self, bytes: u64) -> Result<Removed, StoreError> {
        let mut r = Removed::default();
        while r.bytes < bytes {
            let Some((_, v)) = self.tree.pop_min()? else {
                break;
            };
            count(&mut r, &v);
        }
        Ok(r)
    }

    /// The oldest entry's acceptance time, ms; `None` when the queue is empty.
    pub fn oldest_ms(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.tree.first()?.map(|(_, v)| time_of(&v)))
    }
}

fn count(r: &mut Removed, v: &IVec) {
    r.entries += 1;
    r.points += points_of(v);
    r.bytes += stored_bytes(v);
}

fn seq_of(k: &[u8]) -> u64 {
    k.try_into().map_or(0, u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_config;

    fn entry(stream: &str, n: u32) -> ForwardEntry {
        ForwardEntry {
            stream: stream.into(),
            layout: 0,
            points: n,
            time_ms: 1000 + n as u64,
            lines: (0..n)
                .flat_map(|i| format!("m v={i} {i}\n").into_bytes())
                .collect(),
        }
    }

    #[test]
    fn entries_round_trip_and_refuse_damage() {
        let e = entry("plant", 3);
        assert_eq!(ForwardEntry::decode(&e.encode()).unwrap(), e);
        let mut bad = e.encode();
        bad[0] = 9;
        assert!(ForwardEntry::decode(&bad).is_err());
        assert!(ForwardEntry::decode(&bad[..5]).is_err());
        let mut short = e.encode();
        short[14] = 200;
        short.truncate(HEADER + 3);
        assert!(ForwardEntry::decode(&short).is_err());
    }

    #[test]
    fn a_queue_keeps_its_order_and_counts_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(&test_config(dir.path())).unwrap();
            let q = s.forward_queue("central").unwrap();
            assert_eq!(q.totals().unwrap(), QueueTotals::default());
            for seq in 0..5 {
                q.append(seq, &entry(&format!("s{seq}"), 2)).unwrap();
            }
            s.flush().unwrap();
        }
        let s = Store::open(&test_config(dir.path())).unwrap();
        assert_eq!(s.forward_queue_names(), vec!["central".to_owned()]);
        let q = s.forward_queue("central").unwrap();
        let t = q.totals().unwrap();
        assert_eq!((t.entries, t.points, t.next, t.oldest_ms), (5, 10, 5, 1002));
        // A read stops at the bounds, but always takes one entry.
        let first: Vec<u64> = q
            .read(4, u64::MAX)
            .unwrap()
            .entries
            .iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(first, [0, 1]);
        assert_eq!(q.read(1, 1).unwrap().entries.len(), 1);
        // Removing what another remover took counts nothing twice.
        let r = q.remove([0, 1]).unwrap();
        assert_eq!((r.entries, r.points), (2, 4));
        assert_eq!(q.remove([1]).unwrap(), Removed::default());
        let dropped = q.remove_oldest(1).unwrap();
        assert_eq!(dropped.entries, 1);
        assert_eq!(q.read(100, u64::MAX).unwrap().entries[0].1.stream, "s3");

        let left = q.totals().unwrap();
        assert_eq!(left.bytes, t.bytes - r.bytes - dropped.bytes);
        // A damaged entry is listed apart, not returned, and does not stop the read.
        q.tree.insert(3u64.to_be_bytes(), &[9u8, 0, 0][..]).unwrap();
        let w = q.read(100, u64::MAX).unwrap();
        assert_eq!(w.damaged, [3]);
        assert_eq!(w.entries.len(), 1);
    }
}
