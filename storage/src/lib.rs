//! edgelive's on-disk store, on sled 0.34 (synchronous; no async runtime here).
//!
//! The daemon owns one `Store` and calls it from its storage threads, and for saved dashboards
//! from a blocking-pool thread, never from an async worker. Trees:
//! - `meta`: the on-disk format version, checked on every open (an incompatible data dir is
//!   refused, never misread or wiped);
//! - `channels`: channel name → `ChannelMeta` (id, epoch, top offset, offset reservation);
//! - `history`: channel id ‖ offset (both big-endian u64) → `Publication`;
//! - `presence`: channel ‖ 0 ‖ client id → ClientInfo JSON; cleared on open, since no
//!   connection survives a restart;
//! - `frames`: managed-stream name → last full frame (used by the push API);
//! - `dashboards`: uid → a dashboard saved through the dashboard HTTP API;
//! - `fwd/<target>`: a `[[forward]]` target's queue (see `forward`).
//!
//! Values are a version byte + `rmp_serde::to_vec_named` (see `record`). sled's page cache is
//! set explicitly (its default of 1 GiB must never apply on a small board).
//!
//! Durability, as sled 0.34 provides it: `flush()` writes the dirty buffers with `pwrite` and
//! `sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER)`. After it returns the data is in the kernel
//! and survives the process being killed; it is *not* guaranteed to survive power loss, because
//! sync_file_range neither flushes the drive's write cache nor the file's metadata. sled's
//! background flusher (every `flush_every_ms`) calls `fsync`, which does, but acknowledging
//! after it would cost up to that interval. [`Store::sync`] closes the gap: sled's flush, then
//! `fdatasync` of the files sled writes. Read in sled 0.34.7: every log write goes to the one
//! file `db` (`pagecache/iobuf.rs`, `pwrite` + `sync_file_range`); values over a segment's
//! quarter go to `blobs/<lsn>` files that sled never syncs (`pagecache/blob_io.rs`); `conf` is
//! written once at open and never synced (`config.rs`); snapshots sync themselves.

use std::path::{Path, PathBuf};

mod dashboards;
mod forward;
mod frames;
mod history;
mod presence;
mod record;

pub use dashboards::StoredDashboard;
pub use forward::{ForwardEntry, ForwardQueue, QueueTotals, Removed, Window};
pub use frames::StoredFrame;
pub use history::HistorySize;
pub use record::{ChannelMeta, Publication, Publisher};

/// sled's segment (and I/O buffer) size. Fixed per database: sled refuses to open one with
/// another size. sled 0.34.7 can deadlock under write load (upstream spacejam/sled#1412): a
/// writer holding its segment accountant waits for a file truncation queued on sled's I/O
/// pool, whose seven threads are all blocked on that accountant writing sealed buffers, and the
/// pool never grows because its idle-thread counter underflows while threads are busy. Larger
/// segments mean far fewer sealed buffers in flight: with sled's 512 KiB default, 6 of 15 runs
/// of 20,000 pipelined publications stalled here; with 8 MiB, none of 32 runs (1.6 million
/// publications). The cost is disk: the file grows in 8 MiB steps.
pub const SEGMENT_SIZE: usize = 8 << 20;

/// On-disk format written by this version. Bump it when stored values change incompatibly.
pub const FORMAT_VERSION: u8 = 1;

const META_TREE: &str = "meta";
const CHANNELS_TREE: &str = "channels";
const HISTORY_TREE: &str = "history";
const PRESENCE_TREE: &str = "presence";
const FRAMES_TREE: &str = "frames";
const DASHBOARDS_TREE: &str = "dashboards";
const FORMAT_KEY: &[u8] = b"format_version";
/// A file beside sled's, written once the store's format key is durable: a store with it
/// but without the key is damaged.
const MARKER_FILE: &str = "edgelive.store";
/// Present while the last run stopped cleanly; removed (durably) at every open.
const CLEAN_STOP_KEY: &[u8] = b"clean_stop";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "data directory {path} holds format version {found}, this edgelive writes version {expected}; \
         move it aside or migrate it (nothing was changed)"
    )]
    IncompatibleFormat {
        path: PathBuf,
        found: u8,
        expected: u8,
    },
    #[error("data directory {path} cannot be opened with this edgelive's storage settings: {reason}; move it aside or migrate it (nothing was changed)")]
    Unsupported { path: PathBuf, reason: String },
    #[error("data directory {path} is in use by another process (sled holds a lock on it)")]
    Locked { path: PathBuf },
    #[error("storage error in {path}: {source}")]
    Sled { path: PathBuf, source: sled::Error },
    #[error("storage error: {0}")]
    Io(#[from] sled::Error),
    #[error("corrupt {what} record: {reason}")]
    Corrupt { what: &'static str, reason: String },
    #[error("cannot sync {path} to the device: {source}")]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {path} is damaged beyond sled's own recovery ({reason}); move it aside to start with an empty store, or keep it for inspection (nothing was changed)")]
    Damaged { path: PathBuf, reason: String },
}

/// Storage settings, from the daemon's `[storage]` section.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
    /// sled page-cache budget in bytes.
    pub cache_capacity: u64,
    /// sled's background fsync interval, ms.
    pub flush_every_ms: u64,
}

/// How far a commit takes what was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The kernel (sled's flush): survives the process being killed.
    Kernel,
    /// The device (sled's flush, then `fdatasync`): survives a power cut too.
    Device,
}

pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    /// The run before this open ended with [`Store::mark_clean_stop`].
    clean_stop: bool,
    path: PathBuf,
    /// sled's log file, kept open to `fdatasync` it after each flush (an fsync syncs the
    /// file, whichever descriptor it comes through).
    log: std::fs::File,
    channels: sled::Tree,
    history: sled::Tree,
    presence: sled::Tree,
    frames: sled::Tree,
    dashboards: sled::Tree,
}

impl Store {
    /// Opens (or creates) the database and checks its format version.
    pub fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        let path = config.path.clone();
        std::fs::create_dir_all(&path).map_err(|source| StoreError::CreateDir {
            path: path.clone(),
            source,
        })?;
        let sled_err = |source| StoreError::Sled {
            path: path.clone(),
            source,
        };
        let marker = path.join(MARKER_FILE);
        let existed = marker.exists();
        let db = open_db(config)?;
        let meta = db.open_tree(META_TREE).map_err(sled_err)?;
        match meta.get(FORMAT_KEY).map_err(sled_err)? {
            Some(v) if v.as_ref() == [FORMAT_VERSION] => {}
            Some(v) => {
                return Err(StoreError::IncompatibleFormat {
                    path,
                    found: v.first().copied().unwrap_or(0),
                    expected: FORMAT_VERSION,
                })
            }
            // sled 0.34 opens a log whose head is damaged as an empty database: an existing
            // store without its format key is damaged, never started over.
            None if existed => {
                return Err(StoreError::Damaged {
                    path,
                    reason: "sled opened it as an empty database".into(),
                })
            }
            // Made durable by the sync below, before the marker is written.
            None => {
                meta.insert(FORMAT_KEY, &[FORMAT_VERSION])
                    .map_err(sled_err)?;
            }
        }
        let tree = |name: &str| db.open_tree(name).map_err(sled_err);
        let io_err = |e: std::io::Error| StoreError::Sync {
            path: path.clone(),
            source: e,
        };
        let log = std::fs::File::open(path.join("db")).map_err(io_err)?;
        let channels = tree(CHANNELS_TREE)?;
        // A fresh store has nothing to have lost.
        let clean_stop =
            channels.is_empty() || meta.remove(CLEAN_STOP_KEY).map_err(sled_err)?.is_some();
        let store = Store {
            meta,
            clean_stop,
            channels,
            history: tree(HISTORY_TREE)?,
            presence: tree(PRESENCE_TREE)?,
            frames: tree(FRAMES_TREE)?,
            dashboards: tree(DASHBOARDS_TREE)?,
            db,
            path: path.clone(),
            log,
        };
        // No connection survives a restart.
        store.presence.clear().map_err(sled_err)?;
        store.sync()?;
        sync_created(&path, (!existed).then_some(&marker)).map_err(io_err)?;
        Ok(store)
    }

    /// A channel's meta. After an unclean stop (offsets reserved beyond the last known top) the
    /// channel resumes above the reservation: offsets that may have been handed out before the
    /// crash are never reused for different content.
    pub fn channel(&self, name: &str) -> Result<Option<ChannelMeta>, StoreError> {
        let Some(v) = self.channels.get(name.as_bytes())? else {
            return Ok(None);
        };
        let meta: ChannelMeta = record::decode(&v, "channel meta")?;
        self.resume(name, meta).map(Some)
    }

    /// A channel's meta as read (from [`Store::channels`]) made ready for use: after an
    /// unclean stop it resumes above its reservation, as [`Store::channel`] says.
    pub fn resume(&self, name: &str, mut meta: ChannelMeta) -> Result<ChannelMeta, StoreError> {
        if meta.reserved > meta.top {
            meta.top = meta.reserved;
            self.save_channel(name, &meta)?;
        }
        Ok(meta)
    }

    /// Creates a channel's history with a fresh epoch.
    pub fn create_channel(&self, name: &str, now_ms: u64) -> Result<ChannelMeta, StoreError> {
        self.create_channel_with_epoch(name, new_epoch(), now_ms)
    }

    /// Creates a channel's history with an epoch already handed to readers (see
    /// [`new_epoch`]).
    pub fn create_channel_with_epoch(
        &self,
        name: &str,
        epoch: String,
        now_ms: u64,
    ) -> Result<ChannelMeta, StoreError> {
        let meta = ChannelMeta {
            id: self.db.generate_id()?,
            epoch,
            top: 0,
            reserved: 0,
            last_ms: now_ms,
        };
        self.save_channel(name, &meta)?;
        Ok(meta)
    }

    pub fn save_channel(&self, name: &str, meta: &ChannelMeta) -> Result<(), StoreError> {
        self.channels
            .insert(name.as_bytes(), record::encode(meta))?;
        Ok(())
    }

    /// Every channel with history, for retention sweeps and size reports.
    pub fn channels(&self) -> impl Iterator<Item = Result<(String, ChannelMeta), StoreError>> + '_ {
        self.channels.iter().map(|r| {
            let (k, v) = r?;
            Ok((
                String::from_utf8_lossy(&k).into_owned(),
                record::decode(&v, "channel meta")?,
            ))
        })
    }

    /// Forgets a channel: its meta and its whole history (its epoch is gone with it).
    pub fn drop_channel(&self, name: &str, id: u64) -> Result<(), StoreError> {
        self.remove_history(id, 0, u64::MAX, usize::MAX)?;
        self.channels.remove(name.as_bytes())?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db.size_on_disk().map_err(|source| StoreError::Sled {
            path: self.path.clone(),
            source,
        })
    }

    /// Whether the run before this open stopped cleanly (else it crashed or lost power).
    pub fn was_clean_stop(&self) -> bool {
        self.clean_stop
    }

    /// Records a clean stop (made durable by the [`Store::sync`] that follows).
    pub fn mark_clean_stop(&self) -> Result<(), StoreError> {
        self.meta
            .insert(CLEAN_STOP_KEY, &[1])
            .map(drop)
            .map_err(|source| StoreError::Sled {
                path: self.path.clone(),
                source,
            })
    }

    /// Writes everything as far as `reach` (blocking).
    pub fn commit(&self, reach: Reach) -> Result<(), StoreError> {
        match reach {
            Reach::Kernel => self.flush(),
            Reach::Device => self.sync(),
        }
    }

    /// Writes everything to the kernel (blocking): survives the process being killed.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db
            .flush()
            .map(drop)
            .map_err(|source| StoreError::Sled {
                path: self.path.clone(),
                source,
            })
    }

    /// Writes everything to the device (blocking): survives a power cut. sled's flush, then
    /// `fdatasync` of its log and of any blob file (see the module docs).
    pub fn sync(&self) -> Result<(), StoreError> {
        self.flush()?;
        let io_err = |source| StoreError::Sync {
            path: self.path.clone(),
            source,
        };
        self.log.sync_data().map_err(io_err)?;
        let blobs = self.path.join("blobs");
        let mut any = false;
        if let Ok(entries) = std::fs::read_dir(&blobs) {
            for e in entries.flatten() {
                any = true;
                // sled may collect a blob meanwhile: one that is gone needs no sync.
                match std::fs::File::open(e.path()) {
                    Ok(f) => f.sync_data().map_err(io_err)?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(e)),
                }
            }
        }
        if any {
            sync_path(&blobs).map_err(io_err)?;
        }
        Ok(())
    }
}

/// Opens the sled database. sled releases its file lock only when its background threads have
/// let go of the last reference, a moment after a `Db` is dropped; an in-process reopen waits
/// for that, up to a second, before reporting the directory as in use.
fn open_db(config: &StoreConfig) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let res = sled::Config::new()
            .path(&config.path)
            .cache_capacity(config.cache_capacity)
            .flush_every_ms(Some(config.flush_every_ms.max(1)))
            .segment_size(SEGMENT_SIZE)
            .open();
        match res {
            Ok(db) => return Ok(db),
            Err(sled::Error::Corruption { at, .. }) => {
                return Err(StoreError::Damaged {
                    path: config.path.clone(),
                    reason: format!("sled found corruption at {at:?}"),
                })
            }
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(StoreError::Locked {
                        path: config.path.clone(),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(sled::Error::Unsupported(reason)) => {
                return Err(StoreError::Unsupported {
                    path: config.path.clone(),
                    reason,
                })
            }
            Err(source) => {
                return Err(StoreError::Sled {
                    path: config.path.clone(),
                    source,
                })
            }
        }
    }
}

/// Makes durable what sled created at open and never syncs (`conf`, the blobs directory, the
/// directory entries), then writes the store's marker when it is new: only once the format
/// key is on the device, so a store cut before that has nothing to lose.
fn sync_created(path: &Path, new_marker: Option<&PathBuf>) -> std::io::Result<()> {
    sync_path(&path.join("conf"))?;
    sync_path(&path.join("blobs"))?;
    sync_path(path)?;
    if let Some(p) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_path(p)?;
    }
    if let Some(marker) = new_marker {
        std::fs::write(marker, b"edgelive store\n")?;
        sync_path(marker)?;
        sync_path(path)?;
    }
    Ok(())
}

/// `fsync` of a file or directory, if it exists.
fn sync_path(p: &Path) -> std::io::Result<()> {
    match std::fs::File::open(p) {
        Ok(f) => f.sync_all(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// 8 random letters, like centrifuge's epochs.
pub fn new_epoch() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..8)
        .map(|_| {
            let i = rng.random_range(0..52u8);
            (if i < 26 { b'a' + i } else { b'A' + i - 26 }) as char
        })
        .collect()
}

/// A store in a temporary directory, for tests of this crate and of the daemon.
#[doc(hidden)]
pub fn test_config(dir: &Path) -> StoreConfig {
    StoreConfig {
        path: dir.join("db"),
        cache_capacity: 1 << 20,
        flush_every_ms: 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path) -> StoreConfig {
        test_config(dir)
    }

    #[test]
    fn creates_then_reopens_with_the_same_format() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&cfg(dir.path())).unwrap();
        s.flush().unwrap();
        drop(s);
        let s = Store::open(&cfg(dir.path())).unwrap();
        assert!(s.size_on_disk().unwrap() > 0);
    }

    #[test]
    fn refuses_an_incompatible_format_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::Config::new()
                .path(dir.path().join("db"))
                .segment_size(SEGMENT_SIZE)
                .open()
                .unwrap();
            db.open_tree(META_TREE)
                .unwrap()
                .insert(FORMAT_KEY, &[99u8])
                .unwrap();
            db.flush().unwrap();
        }
        match Store::open(&cfg(dir.path())) {
            Err(StoreError::IncompatibleFormat {
                found: 99,
                expected: FORMAT_VERSION,
                ..
            }) => {}
            other => panic!("{:?}", other.map(|_| ())),
        }
        let db = sled::Config::new()
            .path(dir.path().join("db"))
            .segment_size(SEGMENT_SIZE)
            .open()
            .unwrap();
        let v = db
            .open_tree(META_TREE)
            .unwrap()
            .get(FORMAT_KEY)
            .unwrap()
            .unwrap();
        assert_eq!(v.as_ref(), [99u8]);
    }

    #[test]
    fn a_database_with_other_sled_settings_is_refused_as_incompatible() {
        let dir = tempfile::tempdir().unwrap();
        drop(
            sled::Config::new()
                .path(dir.path().join("db"))
                .segment_size(512 * 1024)
                .open()
                .unwrap(),
        );
        match Store::open(&cfg(dir.path())) {
            Err(StoreError::Unsupported { reason, .. }) => {
                assert!(reason.contains("io buffer size"), "{reason}")
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn a_clean_stop_is_told_from_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&cfg(dir.path())).unwrap();
        assert!(s.was_clean_stop(), "a fresh store lost nothing");
        s.create_channel("a/b/c", 1).unwrap();
        s.sync().unwrap();
        drop(s);
        // No mark: the run "crashed".
        let s = reopen(dir.path());
        assert!(!s.was_clean_stop());
        s.mark_clean_stop().unwrap();
        s.sync().unwrap();
        drop(s);
        let s = reopen(dir.path());
        assert!(s.was_clean_stop());
        drop(s);
        // The mark is removed at open: a crash after this open is seen as one.
        assert!(!reopen(dir.path()).was_clean_stop());
    }

    /// Waits (bounded) until sled's threads have let go of a dropped store: its lock on `db`.
    fn wait_released(store: &Path) {
        use fs2::FileExt;
        let f = std::fs::File::open(store.join("db")).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while f.try_lock_exclusive().is_err() {
            assert!(std::time::Instant::now() < deadline, "sled kept its lock");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        f.unlock().unwrap();
    }

    fn reopen(dir: &Path) -> Store {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match Store::open(&cfg(dir)) {
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {}
                r => return r.unwrap(),
            }
        }
    }

    #[test]
    fn a_damaged_store_is_refused_never_reset() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&cfg(dir.path())).unwrap();
        let m = s.create_channel("a/b/c", 1).unwrap();
        s.sync().unwrap();
        drop(s);
        let db = cfg(dir.path()).path;
        wait_released(&db);
        // Garbage over sled's files (its config and the head of its log).
        std::fs::write(db.join("conf"), b"\xff\xfe not sled's config").unwrap();
        match Store::open(&cfg(dir.path())) {
            Err(StoreError::Unsupported { .. } | StoreError::Damaged { .. }) => {}
            other => panic!("a damaged config must be refused: {:?}", other.map(|_| ())),
        }
        // Garbage over the head of the log: refused, or (sled's own recovery) the channel is
        // still there; never an empty store in its place.
        let dir2 = tempfile::tempdir().unwrap();
        let s = Store::open(&cfg(dir2.path())).unwrap();
        let m2 = s.create_channel("a/b/c", 1).unwrap();
        s.sync().unwrap();
        drop(s);
        wait_released(&cfg(dir2.path()).path);
        let log = cfg(dir2.path()).path.join("db");
        let mut bytes = std::fs::read(&log).unwrap();
        for b in bytes.iter_mut().take(4096) {
            *b = 0xA5;
        }
        std::fs::write(&log, &bytes).unwrap();
        match Store::open(&cfg(dir2.path())) {
            // sled's own recovery kept it.
            Ok(s) => assert_eq!(s.channel("a/b/c").unwrap().map(|c| c.epoch), Some(m2.epoch)),
            Err(StoreError::Damaged { reason, .. }) => {
                assert!(reason.contains("empty"), "{reason}")
            }
            Err(e) => panic!("{e}"),
        }
        let _ = m;
    }

    #[test]
    fn a_second_open_of_a_live_store_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(&cfg(dir.path())).unwrap();
        match Store::open(&cfg(dir.path())) {
            Err(StoreError::Locked { .. }) => {}
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn unwritable_location_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = Store::open(&test_config(&file)).err().expect("must fail");
        assert!(matches!(err, StoreError::CreateDir { .. }), "{err}");
    }
}

#[cfg(test)]
mod channel_tests {
    use super::*;

    #[test]
    fn epoch_persists_across_reopen_and_a_crash_resumes_above_the_reservation() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&test_config(dir.path())).unwrap();
        let mut m = s.create_channel("grafana/broadcast/x", 1).unwrap();
        assert_eq!(m.epoch.len(), 8);
        m.top = 7;
        m.reserved = 7;
        s.save_channel("grafana/broadcast/x", &m).unwrap();
        s.flush().unwrap();
        drop(s);
        let s = Store::open(&test_config(dir.path())).unwrap();
        let again = s.channel("grafana/broadcast/x").unwrap().unwrap();
        assert_eq!((again.epoch.as_str(), again.top), (m.epoch.as_str(), 7));

        // Offsets up to 64 were reserved, the process died at 9: resume at 64.
        let mut m = again;
        m.top = 9;
        m.reserved = 64;
        s.save_channel("grafana/broadcast/x", &m).unwrap();
        s.flush().unwrap();
        drop(s);
        let s = Store::open(&test_config(dir.path())).unwrap();
        let after = s.channel("grafana/broadcast/x").unwrap().unwrap();
        assert_eq!((after.top, after.reserved), (64, 64));
        assert_eq!(after.epoch, m.epoch);
        assert!(s.channel("nope/x/y").unwrap().is_none());
    }

    #[test]
    fn dropping_a_channel_loses_its_epoch_and_history() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&test_config(dir.path())).unwrap();
        let m = s.create_channel("a/b/c", 1).unwrap();
        s.append(
            m.id,
            1,
            &Publication {
                data: "1".into(),
                info: None,
                time_ms: 1,
            },
        )
        .unwrap();
        s.drop_channel("a/b/c", m.id).unwrap();
        assert!(s.channel("a/b/c").unwrap().is_none());
        assert!(s.read(m.id, 1, u64::MAX, 10, false).unwrap().is_empty());
        let m2 = s.create_channel("a/b/c", 2).unwrap();
        assert_ne!(m2.epoch, m.epoch);
        assert_ne!(m2.id, m.id);
    }
}
