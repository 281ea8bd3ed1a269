//! Sticky field sets for managed streams (`[push] sticky_fields`).
//!
//! Telegraf inputs often alternate field sets from one batch to the next (a sensor that
//! reports humidity every other minute, `inputs.cpu` with and without `usage_guest`). Each
//! batch converts to a frame with its own schema, so every push is a schema change: Grafana's
//! `StreamingDataFrame` starts over at each one (the panel goes blank), and a data-only message
//! built against another schema is the "push message mismatch" its users report
//! (grafana/grafana#108807, #72461). Here a stream keeps the union of the fields it has seen:
//! a frame missing some is padded with nulls, a frame with new ones widens the schema once,
//! and a field whose type changes starts a new schema. A frame alone (the first push of a
//! stream, or one after it was forgotten) is converted exactly as Grafana converts it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::frame::{Field, Frame, Values};

/// What identifies a column across pushes, and what padding it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    name: String,
    labels: Option<Vec<(String, String)>>,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Time,
    String,
    Float64,
    NullableFloat64,
    NullableString,
    NullableBool,
}

impl Kind {
    fn of(v: &Values) -> Kind {
        match v {
            Values::Time(_) => Kind::Time,
            Values::String(_) => Kind::String,
            Values::Float64(_) => Kind::Float64,
            Values::NullableFloat64(_) => Kind::NullableFloat64,
            Values::NullableString(_) => Kind::NullableString,
            Values::NullableBool(_) => Kind::NullableBool,
        }
    }

    /// A column of `rows` nulls, for the kinds that can hold null.
    fn nulls(self, rows: usize) -> Option<Values> {
        match self {
            Kind::NullableFloat64 => Some(Values::NullableFloat64(vec![None; rows])),
            Kind::NullableString => Some(Values::NullableString(vec![None; rows])),
            Kind::NullableBool => Some(Values::NullableBool(vec![None; rows])),
            Kind::Time | Kind::String | Kind::Float64 => None,
        }
    }

    /// The same column type, ignoring whether it may hold null (labels_column frames make a
    /// field nullable only when some row lacks it).
    fn family(self) -> Kind {
        match self {
            Kind::Float64 => Kind::NullableFloat64,
            Kind::String => Kind::NullableString,
            k => k,
        }
    }
}

fn column(f: &Field) -> Column {
    Column {
        name: f.name.clone(),
        labels: f.labels.clone(),
        kind: Kind::of(&f.values),
    }
}

/// Each managed stream's field set, shared by every push transport. Bounded: streams beyond
/// `max` are converted without it (their frames keep their own schemas).
pub struct Sticky {
    max: usize,
    streams: Mutex<HashMap<Arc<str>, Vec<Column>>>,
}

impl Sticky {
    pub fn new(max: usize) -> Arc<Sticky> {
        Arc::new(Sticky {
            max,
            streams: Mutex::new(HashMap::new()),
        })
    }

    /// Fits `frame`, pushed on `key`, to the stream's field set (and widens the set by the
    /// frame's new fields). The lock is held for a comparison of field names, no I/O.
    pub fn fit(&self, key: &Arc<str>, frame: &mut Frame) {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        // The usual push has the stream's fields, in its order: nothing to copy or pad.
        if streams.get(key).is_some_and(|set| same_columns(set, frame)) {
            return;
        }
        if !streams.contains_key(key) && streams.len() >= self.max {
            return;
        }
        let own: Vec<Column> = frame.fields.iter().map(column).collect();
        let set = streams.entry(key.clone()).or_insert_with(|| own.clone());
        if let Some(merged) = merge(set, &own) {
            pad(frame, &merged);
            *set = merged;
        } else {
            *set = own;
        }
    }

    /// Forgets a stream's field set (its frame was evicted): the next push starts anew.
    pub fn forget(&self, key: &str) {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        streams.remove(key);
    }

    pub fn len(&self) -> usize {
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether `frame`'s fields are exactly `set`, in order.
fn same_columns(set: &[Column], frame: &Frame) -> bool {
    set.len() == frame.fields.len()
        && set
            .iter()
            .zip(&frame.fields)
            .all(|(c, f)| c.name == f.name && c.labels == f.labels && c.kind == Kind::of(&f.values))
}

/// The union of `set` and `own`, in `set`'s order with new columns after; `None` when a
/// column changed type or one `own` lacks cannot be padded (a new schema starts).
fn merge(set: &[Column], own: &[Column]) -> Option<Vec<Column>> {
    let same = |a: &Column, b: &Column| a.name == b.name && a.labels == b.labels;
    let mut merged = Vec::with_capacity(set.len().max(own.len()));
    for s in set {
        match own.iter().find(|o| same(o, s)) {
            Some(o) if o.kind.family() != s.kind.family() => return None,
            // Nullable wins: once a row of the stream lacked the field, it may again.
            Some(o) if o.kind != s.kind => merged.push(Column {
                kind: o.kind.family(),
                ..o.clone()
            }),
            Some(o) => merged.push(o.clone()),
            None if s.kind.nulls(0).is_none() => return None,
            None => merged.push(s.clone()),
        }
    }
    for o in own {
        if !set.iter().any(|s| same(s, o)) {
            merged.push(o.clone());
        }
    }
    Some(merged)
}

/// Rewrites `frame`'s fields in `columns`' order, null columns for the missing ones, and
/// nullable columns where the set has made a field nullable.
fn pad(frame: &mut Frame, columns: &[Column]) {
    let rows = frame.rows();
    let mut own: Vec<Option<Field>> = std::mem::take(&mut frame.fields)
        .into_iter()
        .map(Some)
        .collect();
    for c in columns {
        let found = own
            .iter_mut()
            .find(|f| {
                f.as_ref()
                    .is_some_and(|f| f.name == c.name && f.labels == c.labels)
            })
            .and_then(Option::take);
        let field = match found {
            Some(mut f) => {
                f.values = nullable(f.values, c.kind);
                f
            }
            None => Field {
                name: c.name.clone(),
                labels: c.labels.clone(),
                values: c.kind.nulls(rows).expect("merge pads nullable kinds only"),
            },
        };
        frame.fields.push(field);
    }
}

/// `values` as the column kind `kind` (only ever a widening to nullable).
fn nullable(values: Values, kind: Kind) -> Values {
    match (values, kind) {
        (Values::Float64(v), Kind::NullableFloat64) => {
            Values::NullableFloat64(v.into_iter().map(Some).collect())
        }
        (Values::String(v), Kind::NullableString) => {
            Values::NullableString(v.into_iter().map(Some).collect())
        }
        (v, _) => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::convert::{convert, Layout};
    use crate::ingest::Precision;

    fn frame(body: &str) -> Frame {
        let mut frames = convert(body, Layout::LabelsColumn, Precision::Nanoseconds, 0).unwrap();
        assert_eq!(frames.len(), 1);
        frames.remove(0)
    }

    fn names(f: &Frame) -> Vec<&str> {
        f.fields.iter().map(|f| f.name.as_str()).collect()
    }

    #[test]
    fn alternating_field_sets_keep_one_schema() {
        let sticky = Sticky::new(10);
        let key: Arc<str> = Arc::from("stream/t/env");
        let mut a = frame("env,room=a temp=21,hum=40 1");
        sticky.fit(&key, &mut a);
        let mut b = frame("env,room=a temp=22 2");
        sticky.fit(&key, &mut b);
        let mut c = frame("env,room=a temp=23,hum=41,co2=400 3");
        sticky.fit(&key, &mut c);
        let mut d = frame("env,room=a hum=42 4");
        sticky.fit(&key, &mut d);
        assert_eq!(names(&a), ["labels", "time", "hum", "temp"]);
        // Missing fields padded, the order kept.
        assert_eq!(names(&b), ["labels", "time", "hum", "temp"]);
        assert_eq!(b.fields[2].values, Values::NullableFloat64(vec![None]));
        // A new field widens the set once, at the end.
        assert_eq!(names(&c), ["labels", "time", "hum", "temp", "co2"]);
        assert_eq!(names(&d), ["labels", "time", "hum", "temp", "co2"]);
        assert_eq!(
            b.to_json().schema,
            frame("env,room=a temp=22,hum=1 2").to_json().schema
        );
        assert_eq!(c.to_json().schema, d.to_json().schema);
    }

    #[test]
    fn a_type_change_starts_a_new_schema_and_forget_starts_over() {
        let sticky = Sticky::new(10);
        let key: Arc<str> = Arc::from("stream/t/env");
        let mut a = frame("env temp=21,state=\"ok\" 1");
        sticky.fit(&key, &mut a);
        let mut b = frame("env temp=true 2");
        sticky.fit(&key, &mut b);
        assert_eq!(names(&b), ["labels", "time", "temp"], "its own schema");
        let mut c = frame("env temp=false,other=1 3");
        sticky.fit(&key, &mut c);
        assert_eq!(names(&c), ["labels", "time", "temp", "other"]);
        sticky.forget(&key);
        let mut d = frame("env x=1 4");
        sticky.fit(&key, &mut d);
        assert_eq!(names(&d), ["labels", "time", "x"]);
    }

    #[test]
    fn streams_beyond_the_bound_keep_their_own_schemas() {
        let sticky = Sticky::new(1);
        let one: Arc<str> = Arc::from("stream/t/one");
        let two: Arc<str> = Arc::from("stream/t/two");
        sticky.fit(&one, &mut frame("one a=1,b=2 1"));
        sticky.fit(&two, &mut frame("two a=1,b=2 1"));
        let mut f = frame("two a=1 2");
        sticky.fit(&two, &mut f);
        assert_eq!(names(&f), ["labels", "time", "a"]);
        assert_eq!(sticky.len(), 1);
    }
}
