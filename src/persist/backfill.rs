//! Backfill (`[push.backfill]`): a new subscriber of a managed stream with history gets, as
//! its subscribe data, the stream's current schema with its recent rows from history merged
//! into one frame, so Grafana's panels and ours open with the recent past drawn instead of one
//! point (grafana/grafana#84036: streamed data is lost when switching dashboards).
//!
//! History holds each push as it was published: a full frame where the schema changed, data
//! alone otherwise, so a data-only record has the schema of the nearest full record before
//! it. Records are taken newest first while their schema is the current one; a full record
//! of another schema ends the backfill (rows of an older schema are left out), and so do the
//! row, age and byte bounds.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// The bounds of one backfill.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Most rows.
    pub rows: usize,
    /// Records stored before this (ms since the epoch) are left out.
    pub since_ms: u64,
    /// Most bytes of record data.
    pub max_bytes: usize,
}

/// One stored push: `{"schema":…,"data":…}` or `{"data":…}`.
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    schema: Option<&'a RawValue>,
    data: Data,
}

/// A frame's data, column major (see `frame.rs`).
#[derive(Deserialize, Serialize, Default)]
struct Data {
    values: Vec<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    entities: Option<Vec<Option<Entities>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nanos: Option<Vec<Option<Vec<u32>>>>,
}

/// Rows of one column whose float value JSON cannot carry.
#[derive(Deserialize, Serialize, Default, Clone)]
struct Entities {
    #[serde(rename = "NaN", default, skip_serializing_if = "Vec::is_empty")]
    nan: Vec<usize>,
    #[serde(rename = "Inf", default, skip_serializing_if = "Vec::is_empty")]
    inf: Vec<usize>,
    #[serde(rename = "NegInf", default, skip_serializing_if = "Vec::is_empty")]
    neg_inf: Vec<usize>,
}

impl Data {
    fn rows(&self) -> usize {
        self.values.first().map_or(0, Vec::len)
    }

    /// Appends `next`'s rows (same columns), moving its entity rows and padding nanos.
    fn append(&mut self, next: Data) {
        let (before, added, columns) = (self.rows(), next.rows(), self.values.len());
        if next.entities.is_some() {
            let mine = self.entities.get_or_insert_with(|| vec![None; columns]);
            for (c, e) in next.entities.into_iter().flatten().enumerate() {
                let Some(e) = e else { continue };
                let into = mine[c].get_or_insert_with(Entities::default);
                into.nan.extend(e.nan.iter().map(|r| r + before));
                into.inf.extend(e.inf.iter().map(|r| r + before));
                into.neg_inf.extend(e.neg_inf.iter().map(|r| r + before));
            }
        }
        if next.nanos.is_some() || self.nanos.is_some() {
            let mine = self.nanos.get_or_insert_with(|| vec![None; columns]);
            let theirs = next.nanos.unwrap_or_else(|| vec![None; columns]);
            for (c, n) in theirs.into_iter().enumerate() {
                match (&mut mine[c], n) {
                    (Some(m), Some(n)) => m.extend(n),
                    (Some(m), None) => m.resize(before + added, 0),
                    (slot @ None, Some(n)) => {
                        let mut padded = vec![0; before];
                        padded.extend(n);
                        *slot = Some(padded);
                    }
                    (None, None) => {}
                }
            }
        }
        for (mine, theirs) in self.values.iter_mut().zip(next.values) {
            mine.extend(theirs);
        }
    }
}

/// The subscribe data of a stream whose current schema is `schema` (a JSON object): that
/// schema and the rows of `newest_first` (stored time in ms, payload) within `bounds`, oldest
/// first. `None` when no record fits; the caller then sends the last frame alone.
pub fn merge(schema: &str, newest_first: &[(u64, String)], bounds: Bounds) -> Option<String> {
    let columns = serde_json::from_str::<SchemaFields>(schema)
        .ok()?
        .fields
        .len();
    // Records known to have the current schema, newest first, and those whose schema is only
    // known once the full record before them is reached.
    let mut taken: Vec<Data> = Vec::new();
    let mut pending: Vec<Data> = Vec::new();
    // The newest records share the current schema: the last push is the newest record.
    let mut chain_is_current = true;
    let (mut rows, mut bytes) = (0usize, 0usize);
    for (time_ms, payload) in newest_first {
        if *time_ms < bounds.since_ms || bytes + payload.len() > bounds.max_bytes {
            break;
        }
        let Ok(record) = serde_json::from_str::<Record<'_>>(payload) else {
            break;
        };
        let fits = record.data.values.len() == columns
            && record
                .data
                .values
                .iter()
                .all(|c| c.len() == record.data.rows());
        if !fits || rows + record.data.rows() > bounds.rows {
            break;
        }
        rows += record.data.rows();
        bytes += payload.len();
        match record.schema {
            None => pending.push(record.data),
            Some(s) if s.get() == schema => {
                taken.append(&mut pending);
                taken.push(record.data);
                chain_is_current = false;
            }
            Some(_) => {
                pending.clear();
                chain_is_current = false;
                break;
            }
        }
    }
    if chain_is_current {
        taken.append(&mut pending);
    }
    let mut chronological = taken.into_iter().rev();
    let mut data = chronological.next()?;
    for next in chronological {
        data.append(next);
    }
    let data = serde_json::to_string(&data).ok()?;
    Some(format!("{{\"schema\":{schema},\"data\":{data}}}"))
}

#[derive(Deserialize)]
struct SchemaFields {
    fields: Vec<serde::de::IgnoredAny>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Field, Frame, Values};

    fn frame(times: &[i64], temps: &[f64]) -> Frame {
        Frame {
            name: "env".into(),
            fields: vec![
                Field {
                    name: "time".into(),
                    labels: None,
                    values: Values::Time(times.to_vec()),
                },
                Field {
                    name: "temp".into(),
                    labels: None,
                    values: Values::NullableFloat64(temps.iter().map(|t| Some(*t)).collect()),
                },
            ],
        }
    }

    const ALL: Bounds = Bounds {
        rows: 1000,
        since_ms: 0,
        max_bytes: 1 << 20,
    };

    fn merged(records: &[(u64, String)], bounds: Bounds) -> Value {
        let schema = frame(&[0], &[0.0]).to_json().schema;
        serde_json::from_str(&merge(&schema, records, bounds).unwrap()).unwrap()
    }

    #[test]
    fn rows_of_the_current_schema_are_merged_oldest_first() {
        let first = frame(&[1_000_000, 2_000_001], &[1.0, 2.0]).to_json().full();
        let second = frame(&[3_000_000], &[f64::NAN]).to_json().data_only();
        let third = frame(&[4_000_000], &[4.0]).to_json().data_only();
        let newest_first = vec![(30, third), (20, second), (10, first)];
        let v = merged(&newest_first, ALL);
        assert_eq!(
            v["data"]["values"],
            serde_json::json!([[1, 2, 3, 4], [1, 2, null, 4]])
        );
        assert_eq!(
            v["data"]["entities"],
            serde_json::json!([null, {"NaN": [2]}])
        );
        assert_eq!(v["data"]["nanos"], serde_json::json!([[0, 1, 0, 0], null]));
        assert_eq!(v["schema"]["fields"][1]["name"], "temp");
        // Bounded by rows, and by age.
        let v = merged(&newest_first, Bounds { rows: 2, ..ALL });
        assert_eq!(v["data"]["values"][1], serde_json::json!([null, 4]));
        let v = merged(
            &newest_first,
            Bounds {
                since_ms: 25,
                ..ALL
            },
        );
        assert_eq!(v["data"]["values"][1], serde_json::json!([4]));
    }

    #[test]
    fn rows_of_another_schema_are_left_out() {
        let mut older = frame(&[1_000_000], &[1.0]);
        older.fields[1].name = "humidity".into();
        let older_full = older.to_json().full();
        let older_data = older.to_json().data_only();
        let current = frame(&[3_000_000], &[3.0]).to_json().full();
        let newer = frame(&[4_000_000], &[4.0]).to_json().data_only();
        let newest_first = vec![
            (40, newer),
            (30, current),
            (20, older_data),
            (10, older_full),
        ];
        let v = merged(&newest_first, ALL);
        assert_eq!(v["data"]["values"][1], serde_json::json!([3, 4]));
        // Data-only records whose full record is beyond the bound are not guessed at, unless
        // they are the newest (the current schema's).
        let v = merged(&newest_first[..3], ALL);
        assert_eq!(v["data"]["values"][1], serde_json::json!([3, 4]));
        let v = merged(&newest_first[..1], ALL);
        assert_eq!(v["data"]["values"][1], serde_json::json!([4]));
    }
}
