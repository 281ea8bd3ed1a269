//! Dashboards saved on the device (the on-device dashboard's, through Grafana's dashboard HTTP
//! API shape): uid → the dashboard's JSON with its version and times. The HTTP layer bounds
//! their count and size; a write is flushed before it is acknowledged.

use serde::{Deserialize, Serialize};

use crate::{record, Store, StoreError};

/// One saved dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDashboard {
    /// The dashboard object as saved (compact JSON text), `uid` and `version` included.
    pub json: String,
    pub title: String,
    pub version: u64,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Who saved it last.
    pub updated_by: String,
}

impl Store {
    pub fn dashboard(&self, uid: &str) -> Result<Option<StoredDashboard>, StoreError> {
        self.dashboards
            .get(uid.as_bytes())?
            .map(|v| record::decode(&v, "dashboard"))
            .transpose()
    }

    /// Saves `d` under `uid`, durable when this returns.
    pub fn set_dashboard(&self, uid: &str, d: &StoredDashboard) -> Result<(), StoreError> {
        self.dashboards.insert(uid.as_bytes(), record::encode(d))?;
        self.sync()
    }

    /// Removes a dashboard, durable when this returns; false when there was none.
    pub fn remove_dashboard(&self, uid: &str) -> Result<bool, StoreError> {
        let removed = self.dashboards.remove(uid.as_bytes())?.is_some();
        if removed {
            self.sync()?;
        }
        Ok(removed)
    }

    /// Every dashboard, by uid.
    pub fn dashboards(&self) -> Result<Vec<(String, StoredDashboard)>, StoreError> {
        self.dashboards
            .iter()
            .map(|r| {
                let (k, v) = r?;
                Ok((
                    String::from_utf8_lossy(&k).into_owned(),
                    record::decode(&v, "dashboard")?,
                ))
            })
            .collect()
    }

    pub fn num_dashboards(&self) -> usize {
        self.dashboards.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboards_are_saved_listed_removed_and_kept_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::StoreConfig {
            path: dir.path().join("db"),
            cache_capacity: 1 << 20,
            flush_every_ms: 1000,
        };
        let d = StoredDashboard {
            json: r#"{"uid":"a","title":"A","version":1}"#.into(),
            title: "A".into(),
            version: 1,
            created_ms: 5,
            updated_ms: 5,
            updated_by: "ann".into(),
        };
        {
            let s = Store::open(&config).unwrap();
            assert_eq!(s.dashboard("a").unwrap(), None);
            s.set_dashboard("a", &d).unwrap();
            s.set_dashboard("b", &d).unwrap();
            assert!(s.remove_dashboard("b").unwrap());
            assert!(!s.remove_dashboard("b").unwrap());
        }
        let s = Store::open(&config).unwrap();
        assert_eq!(s.dashboards().unwrap(), vec![("a".to_owned(), d)]);
        assert_eq!(s.num_dashboards(), 1);
    }
}
