//! edgelive's on-disk store, on sled 0.34 (synchronous; no async runtime here).
//!
//! The daemon owns one `Store` and calls it only from outside its async workers. This crate
//! holds the database lifecycle today: opening with an explicit page cache (sled's default of
//! 1 GiB must never apply on a small board) and a format version that is checked on every
//! open, so a data dir written by an incompatible version is refused instead of misread.
//! Channel meta, history and presence trees join it with the history issue.

use std::path::{Path, PathBuf};

/// On-disk format written by this version. Bump it when stored values change incompatibly.
pub const FORMAT_VERSION: u8 = 1;

const META_TREE: &str = "meta";
const FORMAT_KEY: &[u8] = b"format_version";

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
    #[error("storage error in {path}: {source}")]
    Sled { path: PathBuf, source: sled::Error },
}

/// Storage settings, from the daemon's `[storage]` section.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
    /// sled page-cache budget in bytes.
    pub cache_capacity: u64,
}

pub struct Store {
    db: sled::Db,
    path: PathBuf,
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
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(config.cache_capacity)
            .open()
            .map_err(sled_err)?;
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
            None => {
                meta.insert(FORMAT_KEY, &[FORMAT_VERSION])
                    .map_err(sled_err)?;
                db.flush().map_err(sled_err)?;
            }
        }
        Ok(Store { db, path })
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

    /// Writes everything to disk (blocking).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db
            .flush()
            .map(drop)
            .map_err(|source| StoreError::Sled {
                path: self.path.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path) -> StoreConfig {
        StoreConfig {
            path: dir.join("db"),
            cache_capacity: 1 << 20,
        }
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
            let db = sled::open(dir.path().join("db")).unwrap();
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
        let db = sled::open(dir.path().join("db")).unwrap();
        let v = db
            .open_tree(META_TREE)
            .unwrap()
            .get(FORMAT_KEY)
            .unwrap()
            .unwrap();
        assert_eq!(v.as_ref(), [99u8]);
    }

    #[test]
    fn unwritable_location_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = Store::open(&StoreConfig {
            path: file.join("db"),
            cache_capacity: 1 << 20,
        })
        .err()
        .expect("must fail");
        assert!(matches!(err, StoreError::CreateDir { .. }), "{err}");
    }
}
