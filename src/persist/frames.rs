//! Managed streams (`stream/<id>/<measurement>`), owned by the storage thread: the last full
//! frame of each channel (persisted in sled), schema-once publishing, the one-minute push rate
//! for `/api/live/list`, and eviction of streams nobody pushed to for `frame_idle_ttl`. The
//! broker holds a copy of each known stream's last frame in the hub and publishes from it
//! (`keep` records what it published); a stream's first push, and any after an eviction, is
//! decided here (`push`).
//!
//! A push is written once. Where the channel keeps history, a data-only push is stored only
//! as its history record, and the frames tree keeps the frame of the last schema change
//! (`dirty` says the newer data is in history): a clean stop writes the newest frames, after a
//! crash `restore` takes them back from each channel's newest record, and retention writes a
//! frame before it would expire the record that holds its data.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use edgelive_storage::{Store, StoreError};

use crate::frame::FrameJson;
use crate::ingest::sticky::Sticky;

/// Pushes per second over the last minute.
#[derive(Debug, Clone)]
struct Rate {
    buckets: [u32; 60],
    /// Second (since the Unix epoch) of the newest bucket.
    last_sec: u64,
}

impl Default for Rate {
    fn default() -> Self {
        Rate {
            buckets: [0; 60],
            last_sec: 0,
        }
    }
}

impl Rate {
    fn advance(&mut self, now_sec: u64) {
        if now_sec <= self.last_sec {
            return;
        }
        let gap = (now_sec - self.last_sec).min(60);
        for s in 1..=gap {
            self.buckets[((self.last_sec + s) % 60) as usize] = 0;
        }
        self.last_sec = now_sec;
    }

    fn hit(&mut self, now_sec: u64) {
        self.advance(now_sec);
        let b = &mut self.buckets[(now_sec % 60) as usize];
        *b = b.saturating_add(1);
    }

    fn per_minute(&mut self, now_sec: u64) -> u64 {
        self.advance(now_sec);
        self.buckets.iter().map(|&b| u64::from(b)).sum()
    }
}

struct Stream {
    /// Shared with the hub's copy and the write that carried it (no copy per push).
    frame: Arc<FrameJson>,
    last_ms: u64,
    rate: Rate,
    /// The frames tree holds an older data than `frame`'s (the newer is in history).
    dirty: bool,
}

/// The index of a schema's time field.
pub fn time_column(schema: &str) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_str(schema).ok()?;
    v.get("fields")?
        .as_array()?
        .iter()
        .position(|f| f.get("type").and_then(|t| t.as_str()) == Some("time"))
}

/// One row of `/api/live/list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub channel: String,
    pub minute_rate: u64,
    /// The last push, ms since the epoch.
    pub last_ms: u64,
    /// `{"schema":...}`
    pub schema_only: String,
}

/// Every managed stream's last frame and push rate (not to be confused with `crate::streams`,
/// the stream handlers).
#[derive(Default)]
pub struct LastFrames {
    streams: HashMap<Arc<str>, Stream>,
    /// The push side's field sets, forgotten with their streams.
    sticky: Option<Arc<Sticky>>,
}

impl LastFrames {
    /// Frames whose evictions also reset the streams' sticky field sets.
    pub fn new(sticky: Arc<Sticky>) -> LastFrames {
        LastFrames {
            streams: HashMap::new(),
            sticky: Some(sticky),
        }
    }

    /// Loads the persisted frames (at startup, on the storage thread).
    pub fn load(&mut self, store: &Store) -> Result<usize, StoreError> {
        for r in store.frames() {
            let (name, f) = r?;
            self.streams.insert(
                Arc::from(name),
                Stream {
                    frame: Arc::new(FrameJson {
                        schema: f.schema,
                        data: f.data,
                    }),
                    last_ms: f.time_ms,
                    rate: Rate::default(),
                    dirty: false,
                },
            );
        }
        Ok(self.streams.len())
    }

    /// The newest frame's time, 0 without frames (the retention timeline's floor).
    pub fn newest_ms(&self) -> u64 {
        self.streams.values().map(|s| s.last_ms).max().unwrap_or(0)
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// What to publish for `frame`: schema + data when the schema bytes differ from the last
    /// frame's (or there was none), data only otherwise; `None` when the stream is new and
    /// there are `max` streams already.
    pub fn payload_for(&self, key: &str, frame: &FrameJson, max: usize) -> Option<String> {
        match self.streams.get(key) {
            None if self.streams.len() >= max => None,
            Some(s) if s.frame.schema == frame.schema => Some(frame.data_only()),
            _ => Some(frame.full()),
        }
    }

    /// Records `frame` as the channel's last frame (the broker may have published it
    /// already). It is written to the store unless it is data only and `in_history` (the
    /// publication, stored in the channel's history, holds it).
    pub fn keep(
        &mut self,
        store: &Store,
        key: &Arc<str>,
        frame: Arc<FrameJson>,
        now_ms: u64,
        in_history: bool,
    ) -> Result<(), StoreError> {
        let same = self
            .streams
            .get(key)
            .is_some_and(|s| s.frame.schema == frame.schema);
        let dirty = same && in_history;
        if !dirty {
            store.set_frame(key, &frame.schema, &frame.data, now_ms)?;
        }
        let s = match self.streams.entry(key.clone()) {
            Entry::Occupied(e) => {
                let s = e.into_mut();
                s.frame = frame;
                s.last_ms = now_ms;
                s
            }
            Entry::Vacant(e) => e.insert(Stream {
                frame,
                last_ms: now_ms,
                rate: Rate::default(),
                dirty: false,
            }),
        };
        s.rate.hit(now_ms / 1000);
        s.dirty = dirty;
        Ok(())
    }

    /// A stream's last frame.
    pub fn frame_of(&self, key: &str) -> Option<&Arc<FrameJson>> {
        self.streams.get(key).map(|s| &s.frame)
    }

    /// Writes the frame of `key` if the store's is older.
    pub fn write_back(&mut self, store: &Store, key: &str) -> Result<(), StoreError> {
        if let Some(s) = self.streams.get_mut(key).filter(|s| s.dirty) {
            store.set_frame(key, &s.frame.schema, &s.frame.data, s.last_ms)?;
            s.dirty = false;
        }
        Ok(())
    }

    /// Writes every frame whose stored copy is older (a clean stop).
    pub fn write_back_all(&mut self, store: &Store) -> Result<usize, StoreError> {
        let dirty: Vec<Arc<str>> = self
            .streams
            .iter()
            .filter(|(_, s)| s.dirty)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &dirty {
            self.write_back(store, k)?;
        }
        Ok(dirty.len())
    }

    /// After a start: a stream whose history holds a newer publication than its stored frame
    /// (the store's frame is written on schema changes only) takes that publication's schema
    /// (when it has one) and data: `payload` and `time_ms` are the newest record's.
    pub fn restore(&mut self, key: &str, payload: &str, time_ms: u64) {
        #[derive(serde::Deserialize)]
        struct Payload<'a> {
            #[serde(borrow)]
            schema: Option<&'a serde_json::value::RawValue>,
            #[serde(borrow)]
            data: &'a serde_json::value::RawValue,
        }
        let Some(s) = self.streams.get_mut(key) else {
            return;
        };
        if time_ms < s.last_ms {
            return;
        }
        let Ok(p) = serde_json::from_str::<Payload>(payload) else {
            tracing::warn!(channel = %key, "a managed stream's newest record is not a frame; its stored frame stays");
            return;
        };
        let frame = Arc::make_mut(&mut s.frame);
        if let Some(schema) = p.schema {
            frame.schema = schema.get().to_owned();
        }
        frame.data = p.data.get().to_owned();
        s.last_ms = time_ms;
        s.dirty = true;
    }

    /// The managed streams, by channel (to look up their history at a start).
    pub fn keys(&self) -> Vec<Arc<str>> {
        self.streams.keys().cloned().collect()
    }

    /// Whether `frame` repeats the stream's last frame but for its time column (a retained MQTT
    /// value given again when the bridge subscribes again).
    pub fn repeats(&self, key: &str, frame: &FrameJson) -> bool {
        let Some(last) = self.streams.get(key) else {
            return false;
        };
        if last.frame.schema != frame.schema {
            return false;
        }
        let Some(time) = time_column(&frame.schema) else {
            return last.frame.data == frame.data;
        };
        let values = |data: &str| -> Option<Vec<serde_json::Value>> {
            let v: serde_json::Value = serde_json::from_str(data).ok()?;
            let mut columns = v.get("values")?.as_array()?.clone();
            (time < columns.len()).then(|| columns.remove(time));
            Some(columns)
        };
        values(&last.frame.data).is_some_and(|a| values(&frame.data) == Some(a))
    }

    /// The schema of the stream's last frame.
    pub fn schema_of(&self, key: &str) -> Option<&str> {
        self.streams.get(key).map(|s| s.frame.schema.as_str())
    }

    /// The last full frame, which a new subscriber gets as its subscribe data.
    pub fn initial_data(&self, key: &str) -> Option<String> {
        self.streams.get(key).map(|s| s.frame.full())
    }

    /// Forgets streams with no push for `idle_ms`; returns those that went.
    pub fn evict_idle(
        &mut self,
        store: &Store,
        now_ms: u64,
        idle_ms: u64,
    ) -> Result<Vec<Arc<str>>, StoreError> {
        let idle: Vec<Arc<str>> = self
            .streams
            .iter()
            .filter(|(_, s)| now_ms.saturating_sub(s.last_ms) > idle_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &idle {
            store.remove_frame(k)?;
            self.streams.remove(k);
            if let Some(sticky) = &self.sticky {
                sticky.forget(k);
            }
        }
        Ok(idle)
    }

    /// Every stream, sorted by channel.
    pub fn list(&mut self, now_ms: u64) -> Vec<Listed> {
        let mut out: Vec<Listed> = self
            .streams
            .iter_mut()
            .map(|(k, s)| Listed {
                channel: k.to_string(),
                minute_rate: s.rate.per_minute(now_ms / 1000),
                last_ms: s.last_ms,
                schema_only: s.frame.schema_only(),
            })
            .collect();
        out.sort_by(|a, b| a.channel.cmp(&b.channel));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fj(schema: &str, data: &str) -> FrameJson {
        FrameJson {
            schema: schema.into(),
            data: data.into(),
        }
    }

    /// What the storage thread does with a push: the payload, then the frame kept (`None`:
    /// refused, over `max` streams).
    fn push(
        s: &mut LastFrames,
        store: &Store,
        key: &Arc<str>,
        frame: FrameJson,
        (now_ms, max, in_history): (u64, usize, bool),
    ) -> Option<String> {
        let payload = s.payload_for(key, &frame, max)?;
        s.keep(store, key, Arc::new(frame), now_ms, in_history)
            .unwrap();
        Some(payload)
    }

    #[test]
    fn schema_once_then_data_only_and_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&edgelive_storage::test_config(dir.path())).unwrap();
        let mut s = LastFrames::default();
        let k: Arc<str> = Arc::from("stream/a/m");
        let p = |r: Option<String>| r.expect("not full");
        let first = p(push(
            &mut s,
            &store,
            &k,
            fj("{\"a\":1}", "{\"v\":1}"),
            (1000, 10, false),
        ));
        assert_eq!(first, "{\"schema\":{\"a\":1},\"data\":{\"v\":1}}");
        let second = p(push(
            &mut s,
            &store,
            &k,
            fj("{\"a\":1}", "{\"v\":2}"),
            (2000, 10, false),
        ));
        assert_eq!(second, "{\"data\":{\"v\":2}}");
        let third = p(push(
            &mut s,
            &store,
            &k,
            fj("{\"a\":2}", "{\"v\":3}"),
            (2500, 10, false),
        ));
        assert!(third.starts_with("{\"schema\""));
        assert_eq!(
            s.initial_data(&k).unwrap(),
            "{\"schema\":{\"a\":2},\"data\":{\"v\":3}}"
        );
        let mut again = LastFrames::default();
        assert_eq!(again.load(&store).unwrap(), 1);
        assert_eq!(again.initial_data(&k), s.initial_data(&k));
        // A limit of one stream refuses a second.
        let k2: Arc<str> = Arc::from("stream/a/n");
        assert_eq!(
            push(&mut s, &store, &k2, fj("{}", "{}"), (3000, 1, false)),
            None
        );
        let l = s.list(3000);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].minute_rate, 3);
        assert_eq!(l[0].schema_only, "{\"schema\":{\"a\":2}}");
        // Idle eviction removes it from memory and store.
        assert_eq!(s.evict_idle(&store, 100_000, 10_000).unwrap().len(), 1);
        assert!(s.is_empty());
        assert_eq!(store.frame(&k).unwrap(), None);
    }

    /// With history, a data-only push is not written to the frames tree (its history record
    /// holds it); a restart without a clean stop takes the newest record back, a clean stop
    /// writes the frame.
    #[test]
    fn with_history_a_data_only_push_is_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&edgelive_storage::test_config(dir.path())).unwrap();
        let mut s = LastFrames::default();
        let k: Arc<str> = Arc::from("stream/a/m");
        push(
            &mut s,
            &store,
            &k,
            fj("{\"a\":1}", "{\"v\":1}"),
            (1000, 10, true),
        );
        push(
            &mut s,
            &store,
            &k,
            fj("{\"a\":1}", "{\"v\":2}"),
            (2000, 10, true),
        );
        assert_eq!(
            store.frame(&k).unwrap().unwrap().data,
            "{\"v\":1}",
            "not written"
        );
        let full_v2 = "{\"schema\":{\"a\":1},\"data\":{\"v\":2}}";
        assert_eq!(s.initial_data(&k).unwrap(), full_v2);

        // A crash: the store's frame is the older one; the newest record gives the newer.
        let mut again = LastFrames::default();
        again.load(&store).unwrap();
        again.restore(&k, "{\"data\":{\"v\":0}}", 500);
        assert_ne!(again.initial_data(&k).unwrap(), full_v2, "an older record");
        again.restore(&k, "{\"data\":{\"v\":2}}", 2000);
        assert_eq!(again.initial_data(&k).unwrap(), full_v2);
        again.restore(&k, "{\"schema\":{\"a\":9},\"data\":{\"v\":3}}", 3000);
        let full_a9 = "{\"schema\":{\"a\":9},\"data\":{\"v\":3}}";
        assert_eq!(again.initial_data(&k).unwrap(), full_a9);
        again.restore(&k, "not a frame", 4000);
        assert_eq!(again.initial_data(&k).unwrap(), full_a9);

        // A clean stop writes what is newer than the store's.
        assert_eq!(s.write_back_all(&store).unwrap(), 1);
        assert_eq!(store.frame(&k).unwrap().unwrap().data, "{\"v\":2}");
        assert_eq!(s.write_back_all(&store).unwrap(), 0);
        // A schema change is written at once.
        push(
            &mut s,
            &store,
            &k,
            fj("{\"a\":2}", "{\"v\":4}"),
            (5000, 10, true),
        );
        assert_eq!(store.frame(&k).unwrap().unwrap().data, "{\"v\":4}");
    }

    #[test]
    fn the_rate_counts_the_last_sixty_seconds() {
        let mut r = Rate::default();
        for sec in 1000..1090 {
            r.hit(sec);
        }
        assert_eq!(r.per_minute(1089), 60);
        assert_eq!(r.per_minute(1119), 30);
        assert_eq!(r.per_minute(5000), 0);
    }
}
