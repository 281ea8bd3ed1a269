//! A channel's history: keys are channel id ‖ offset, both big-endian, so one channel's
//! publications are contiguous and ordered by offset.

use crate::record::{self, Publication};
use crate::{Store, StoreError};

fn key(id: u64, offset: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&id.to_be_bytes());
    k[8..].copy_from_slice(&offset.to_be_bytes());
    k
}

fn offset_of(k: &[u8]) -> u64 {
    u64::from_be_bytes(k[8..16].try_into().expect("history keys are 16 bytes"))
}

/// Bytes one channel's history occupies (keys and values), and its number of entries.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HistorySize {
    pub entries: u64,
    pub bytes: u64,
}

impl HistorySize {
    fn add(&mut self, k: &[u8], v: &[u8]) {
        self.entries += 1;
        self.bytes += (k.len() + v.len()) as u64;
    }
}

impl Store {
    /// Stores one publication (not yet flushed); returns the bytes it takes (key and value).
    pub fn append(&self, id: u64, offset: u64, p: &Publication) -> Result<u64, StoreError> {
        let v = record::encode(p);
        let n = (16 + v.len()) as u64;
        self.history.insert(key(id, offset), v)?;
        Ok(n)
    }

    /// Stores several publications of possibly several channels in one sled batch.
    pub fn append_batch<'a>(
        &self,
        items: impl IntoIterator<Item = (u64, u64, &'a Publication)>,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (id, offset, p) in items {
            batch.insert(&key(id, offset), record::encode(p));
        }
        self.history.apply_batch(batch)?;
        Ok(())
    }

    /// Publications with `from <= offset <= to`, at most `limit`, oldest first or (reverse)
    /// newest first.
    pub fn read(
        &self,
        id: u64,
        from: u64,
        to: u64,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(u64, Publication)>, StoreError> {
        if from > to || limit == 0 {
            return Ok(Vec::new());
        }
        let range = self.history.range(key(id, from)..=key(id, to));
        let mut out = Vec::new();
        let mut take =
            |r: Result<(sled::IVec, sled::IVec), sled::Error>| -> Result<bool, StoreError> {
                let (k, v) = r?;
                out.push((offset_of(&k), record::decode(&v, "publication")?));
                Ok(out.len() < limit)
            };
        if reverse {
            for r in range.rev() {
                if !take(r)? {
                    break;
                }
            }
        } else {
            for r in range {
                if !take(r)? {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Lowest offset still stored for a channel.
    pub fn first_offset(&self, id: u64) -> Result<Option<u64>, StoreError> {
        self.end_offset(id, false)
    }

    /// The newest stored offset of a channel.
    pub fn last_offset(&self, id: u64) -> Result<Option<u64>, StoreError> {
        self.end_offset(id, true)
    }

    /// The oldest or (`newest`) the newest stored offset of a channel.
    fn end_offset(&self, id: u64, newest: bool) -> Result<Option<u64>, StoreError> {
        let mut range = self.history.range(key(id, 0)..=key(id, u64::MAX));
        let end = if newest {
            range.next_back()
        } else {
            range.next()
        };
        Ok(end.transpose()?.map(|(k, _)| offset_of(&k)))
    }

    /// Removes up to `max` publications with `from <= offset < to`.
    pub fn remove_history(
        &self,
        id: u64,
        from: u64,
        to: u64,
        max: usize,
    ) -> Result<HistorySize, StoreError> {
        let mut removed = HistorySize::default();
        if from >= to {
            return Ok(removed);
        }
        let mut gone = Vec::new();
        for r in self.history.range(key(id, from)..key(id, to)).take(max) {
            let (k, v) = r?;
            removed.add(&k, &v);
            gone.push(k);
        }
        self.remove_oldest_first(gone)?;
        Ok(removed)
    }

    /// Removes up to `max` of the oldest publications stored before `cutoff_ms`.
    pub fn remove_expired(
        &self,
        id: u64,
        cutoff_ms: u64,
        max: usize,
    ) -> Result<HistorySize, StoreError> {
        let mut gone = Vec::new();
        let mut removed = HistorySize::default();
        for r in self.history.range(key(id, 0)..=key(id, u64::MAX)).take(max) {
            let (k, v) = r?;
            let p: Publication = record::decode(&v, "publication")?;
            if p.time_ms >= cutoff_ms {
                break;
            }
            removed.add(&k, &v);
            gone.push(k);
        }
        self.remove_oldest_first(gone)?;
        Ok(removed)
    }

    /// Removes history keys one by one, oldest first, so that a stop part-way leaves the
    /// history contiguous. Not a `sled::Batch`: applying one writes sled's log buffer out
    /// (`pin_log` rolls it) even when empty, which measured two log writes per publication
    /// once a channel's history was full (trimming by size removes one entry per publication)
    /// and one per channel per retention run.
    fn remove_oldest_first(&self, keys: Vec<sled::IVec>) -> Result<(), StoreError> {
        for k in keys {
            self.history.remove(k)?;
        }
        Ok(())
    }

    /// Size of one channel's stored history.
    pub fn history_size(&self, id: u64) -> Result<HistorySize, StoreError> {
        let mut s = HistorySize::default();
        for r in self.history.range(key(id, 0)..=key(id, u64::MAX)) {
            let (k, v) = r?;
            s.add(&k, &v);
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use crate::{test_config, Publication, Store};

    fn p(n: u64, t: u64) -> Publication {
        Publication {
            data: format!("{{\"n\":{n}}}"),
            info: None,
            time_ms: t,
        }
    }

    #[test]
    fn append_read_forward_reverse_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&test_config(dir.path())).unwrap();
        let a = s.create_channel("a/b/c", 0).unwrap().id;
        let b = s.create_channel("a/b/d", 0).unwrap().id;
        for o in 1..=10 {
            s.append(a, o, &p(o, o)).unwrap();
        }
        s.append_batch([(b, 1, &p(100, 0))]).unwrap();
        let offs = |v: Vec<(u64, Publication)>| v.into_iter().map(|(o, _)| o).collect::<Vec<_>>();
        assert_eq!(
            offs(s.read(a, 1, u64::MAX, 100, false).unwrap()),
            (1..=10).collect::<Vec<_>>()
        );
        assert_eq!(
            offs(s.read(a, 4, u64::MAX, 3, false).unwrap()),
            vec![4, 5, 6]
        );
        assert_eq!(offs(s.read(a, 1, 10, 3, true).unwrap()), vec![10, 9, 8]);
        assert_eq!(offs(s.read(a, 1, 4, 100, true).unwrap()), vec![4, 3, 2, 1]);
        assert!(s.read(a, 11, u64::MAX, 10, false).unwrap().is_empty());
        assert_eq!(
            s.read(b, 1, u64::MAX, 10, false).unwrap()[0].1.data,
            "{\"n\":100}"
        );
        assert_eq!(s.history_size(a).unwrap().entries, 10);
    }

    #[test]
    fn size_and_ttl_trimming_is_incremental() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&test_config(dir.path())).unwrap();
        let a = s.create_channel("a/b/c", 0).unwrap().id;
        for o in 1..=10 {
            s.append(a, o, &p(o, o * 100)).unwrap();
        }
        let before = s.history_size(a).unwrap();
        let r = s.remove_history(a, 0, 4, 2).unwrap();
        assert_eq!(r.entries, 2);
        assert_eq!(s.history_size(a).unwrap().bytes, before.bytes - r.bytes);
        assert_eq!(s.first_offset(a).unwrap(), Some(3));
        assert_eq!(s.remove_history(a, 0, 4, 100).unwrap().entries, 1);
        assert_eq!(s.first_offset(a).unwrap(), Some(4));
        // Stored before 650 ms: offsets 4, 5, 6; at most 2 per call.
        assert_eq!(s.remove_expired(a, 650, 2).unwrap().entries, 2);
        assert_eq!(s.remove_expired(a, 650, 2).unwrap().entries, 1);
        assert_eq!(s.remove_expired(a, 650, 2).unwrap().entries, 0);
        assert_eq!(s.first_offset(a).unwrap(), Some(7));
    }
}
