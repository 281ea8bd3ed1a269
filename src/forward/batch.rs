//! Requests made of a window of a queue: consecutive entries of one stream and layout, in
//! queue order, and their bodies.

use std::io::Write as _;

use bytes::Bytes;
use edgelive_storage::ForwardEntry;

/// One request's entries.
pub struct Batch {
    pub stream: String,
    pub layout: u8,
    pub seqs: Vec<u64>,
    pub entries: Vec<ForwardEntry>,
    pub points: u64,
}

/// Groups a window of the queue into batches, one per stream where it can: an entry joins
/// its stream's latest batch when the layout is the same, else starts the next one, so a
/// stream's batches are in queue order (sending them in list order keeps each stream's order).
pub fn batches(window: Vec<(u64, ForwardEntry)>) -> Vec<Batch> {
    let mut out: Vec<Batch> = Vec::new();
    for (seq, e) in window {
        let latest = out.iter_mut().rev().find(|b| b.stream == e.stream);
        match latest {
            Some(b) if b.layout == e.layout => {
                b.points += e.points as u64;
                b.seqs.push(seq);
                b.entries.push(e);
            }
            _ => out.push(Batch {
                stream: e.stream.clone(),
                layout: e.layout,
                seqs: vec![seq],
                points: e.points as u64,
                entries: vec![e],
            }),
        }
    }
    out
}

impl Batch {
    /// The body, gzipped if asked (call off the event loop); `None` when compression could
    /// not run.
    pub fn body(&self, gzip: bool) -> Option<Bytes> {
        let len: usize = self.entries.iter().map(|e| e.lines.len()).sum();
        let mut raw = Vec::with_capacity(len);
        for e in &self.entries {
            raw.extend_from_slice(&e.lines);
        }
        match gzip {
            false => Some(Bytes::from(raw)),
            true => gzipped(&raw).map(Bytes::from),
        }
    }

    /// The first half and the rest (a batch of at least two entries).
    pub fn split(self) -> (Batch, Batch) {
        let half = self.entries.len() / 2;
        let mut first = Batch {
            stream: self.stream.clone(),
            layout: self.layout,
            seqs: self.seqs,
            entries: self.entries,
            points: 0,
        };
        let seqs = first.seqs.split_off(half);
        let entries = first.entries.split_off(half);
        first.points = first.entries.iter().map(|e| e.points as u64).sum();
        let second = Batch {
            stream: self.stream,
            layout: self.layout,
            points: entries.iter().map(|e| e.points as u64).sum(),
            seqs,
            entries,
        };
        (first, second)
    }
}

/// Stack of the thread a body is compressed on. miniz_oxide's compressor state holds a 64 KiB
/// buffer inline and is built on the stack before it is boxed: on the runtime's 256 KiB
/// threads (`[runtime] thread_stack_size`) a debug build overflowed (seen in tests/forward.rs),
/// so compression gets a thread of its own (a batch costs one spawn, about 20 µs).
const GZIP_STACK: usize = 2 << 20;

/// `raw` as one gzip member (fast level: bodies are mostly repeated names and digits).
fn gzipped(raw: &[u8]) -> Option<Vec<u8>> {
    let encode = || {
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(raw.len() / 4),
            flate2::Compression::fast(),
        );
        enc.write_all(raw).ok()?;
        enc.finish().ok()
    };
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("edgelive-gzip".into())
            .stack_size(GZIP_STACK)
            .spawn_scoped(s, encode)
            .ok()
            .and_then(|t| t.join().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(stream: &str, points: u32, layout: u8) -> ForwardEntry {
        ForwardEntry {
            stream: stream.into(),
            layout,
            points,
            time_ms: 1,
            lines: format!("{stream} v={points}\n").into_bytes(),
        }
    }

    #[test]
    fn a_window_is_grouped_by_stream_in_queue_order() {
        let w = vec![(1, e("a", 1, 0)), (2, e("b", 2, 0)), (3, e("a", 3, 0))];
        let b = batches(w);
        assert_eq!(b.len(), 2);
        assert_eq!(
            (b[0].stream.as_str(), &b[0].seqs[..], b[0].points),
            ("a", &[1, 3][..], 4)
        );
        assert_eq!(&b[0].body(false).unwrap()[..], b"a v=1\na v=3\n");
        let zipped = b[1].body(true).unwrap();
        let mut gz = flate2::read::GzDecoder::new(&zipped[..]);
        let mut s = String::new();
        std::io::Read::read_to_string(&mut gz, &mut s).unwrap();
        assert_eq!(s, "b v=2\n");
        let (x, y) = batches(vec![
            (1, e("a", 1, 0)),
            (2, e("a", 2, 0)),
            (3, e("a", 3, 0)),
        ])
        .remove(0)
        .split();
        assert_eq!(
            (x.seqs, x.points, y.seqs, y.points),
            (vec![1], 1, vec![2, 3], 5)
        );
    }

    #[test]
    fn a_layout_change_starts_a_batch_after_the_streams_latest() {
        let w = vec![
            (1, e("a", 1, 0)),
            (2, e("a", 1, 1)),
            (3, e("b", 1, 0)),
            (4, e("a", 1, 0)),
        ];
        let got: Vec<(String, u8, Vec<u64>)> = batches(w)
            .into_iter()
            .map(|b| (b.stream, b.layout, b.seqs))
            .collect();
        assert_eq!(
            got,
            [
                ("a".into(), 0, vec![1]),
                ("a".into(), 1, vec![2]),
                ("b".into(), 0, vec![3]),
                ("a".into(), 0, vec![4]),
            ]
        );
    }
}
