//! MQTT payloads → Grafana data frames (one row each), converted on our side, unlike
//! Grafana's MQTT data source (which keeps top-level JSON keys only and times by arrival):
//! - a JSON object: numbers → float64 fields, strings, booleans; nested objects flattened with
//!   `.` (`{"env":{"t":21}}` → `env.t`); arrays by index (`a.0`) up to `max_array`; `null`
//!   leaves the field out of this row (sticky fields pad it with null where it was seen);
//! - a bare JSON number, boolean or string, or any other one-line text → one field `value`;
//! - Influx line protocol, if the payload parses as it (its own timestamps and layout);
//! - the time from the first of `time_keys` present at the top level (RFC 3339, or epoch
//!   seconds/ms/µs/ns by magnitude), else the receive time.
//!
//! What cannot be read is refused with the reason the bridge counts it under: invalid UTF-8,
//! over the size limit, nested deeper than `max_depth`, more than `max_fields` fields.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

use crate::frame::{Field, Frame, Values};
use crate::ingest::convert::{convert_with, Layout, Limits as ConvertLimits};
use crate::ingest::Precision;

/// Bounds on one payload.
#[derive(Debug, Clone)]
pub struct PayloadLimits {
    pub max_bytes: usize,
    pub max_depth: usize,
    pub max_array: usize,
    pub max_fields: usize,
}

impl Default for PayloadLimits {
    fn default() -> Self {
        PayloadLimits {
            max_bytes: 64 * 1024,
            max_depth: 8,
            max_array: 64,
            max_fields: 256,
        }
    }
}

/// Why a payload was dropped (the label of `edgelive_mqtt_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    #[error("not UTF-8")]
    NotUtf8,
    #[error("over the size limit")]
    TooLarge,
    #[error("nested too deeply")]
    TooDeep,
    #[error("too many fields")]
    TooManyFields,
    #[error("empty")]
    Empty,
    #[error("neither JSON, line protocol nor one line of text")]
    Unreadable,
    #[error("the topic cannot form a channel")]
    Topic,
    #[error("storage refused it (more streams than [storage] max_channels)")]
    Refused,
}

impl Dropped {
    pub const ALL: [Dropped; 8] = [
        Dropped::NotUtf8,
        Dropped::TooLarge,
        Dropped::TooDeep,
        Dropped::TooManyFields,
        Dropped::Empty,
        Dropped::Unreadable,
        Dropped::Topic,
        Dropped::Refused,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Dropped::NotUtf8 => "not_utf8",
            Dropped::TooLarge => "too_large",
            Dropped::TooDeep => "too_deep",
            Dropped::TooManyFields => "too_many_fields",
            Dropped::Empty => "empty",
            Dropped::Unreadable => "unreadable",
            Dropped::Topic => "topic",
            Dropped::Refused => "refused",
        }
    }
}

/// The frames of one payload (one, or one per measurement of line protocol), named `name`.
pub fn frames(
    payload: &[u8],
    name: &str,
    now_ns: i64,
    time_keys: &[String],
    limits: &PayloadLimits,
) -> Result<Vec<Frame>, Dropped> {
    if payload.len() > limits.max_bytes {
        return Err(Dropped::TooLarge);
    }
    let text = std::str::from_utf8(payload).map_err(|_| Dropped::NotUtf8)?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(Dropped::Empty);
    }
    if let Ok(v) = serde_json::from_str::<Value>(trimmed) {
        return from_json(v, name, now_ns, time_keys, limits).map(|f| vec![f]);
    }
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        // JSON that did not parse may be nested beyond serde_json's own limit.
        if nesting(trimmed) > limits.max_depth {
            return Err(Dropped::TooDeep);
        }
    }
    let line_limits = ConvertLimits {
        max_values: limits.max_fields * 16,
        ..Default::default()
    };
    if let Ok(frames) = convert_with(
        trimmed,
        Layout::LabelsColumn,
        Precision::Nanoseconds,
        now_ns,
        line_limits,
    ) {
        if !frames.is_empty() {
            return Ok(frames);
        }
    }
    if trimmed.contains('\n') || trimmed.chars().any(char::is_control) {
        return Err(Dropped::Unreadable);
    }
    Ok(vec![row(
        name,
        now_ns,
        vec![("value".into(), Cell::Str(trimmed.to_owned()))],
    )])
}

/// Whether `frames` (of one payload) were read from Influx line protocol: only that reading
/// gives frames in Grafana's `labels_column` layout, whose first column is `labels`.
pub fn is_line_protocol(frames: &[Frame]) -> bool {
    frames
        .first()
        .and_then(|f| f.fields.first())
        .is_some_and(|f| f.name == "labels" && matches!(f.values, Values::String(_)))
}

/// A depth estimate for text serde_json refused: brackets opened and not closed.
fn nesting(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for b in text.bytes() {
        match b {
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// One value of a row.
enum Cell {
    Num(f64),
    Str(String),
    Bool(bool),
}

fn from_json(
    v: Value,
    name: &str,
    now_ns: i64,
    time_keys: &[String],
    limits: &PayloadLimits,
) -> Result<Frame, Dropped> {
    let mut cells = Vec::new();
    let mut time = None;
    match v {
        Value::Object(mut map) => {
            for key in time_keys {
                if let Some(t) = map.get(key).and_then(timestamp_ns) {
                    time = Some(t);
                    map.remove(key);
                    break;
                }
            }
            for (k, v) in map {
                flatten(k, v, 1, limits, &mut cells)?;
            }
        }
        Value::Array(_) => flatten("value".into(), v, 0, limits, &mut cells)?,
        Value::Null => return Err(Dropped::Empty),
        other => flatten("value".into(), other, 0, limits, &mut cells)?,
    }
    if cells.is_empty() {
        return Err(Dropped::Empty);
    }
    cells.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(row(name, time.unwrap_or(now_ns), cells))
}

fn flatten(
    key: String,
    v: Value,
    depth: usize,
    limits: &PayloadLimits,
    out: &mut Vec<(String, Cell)>,
) -> Result<(), Dropped> {
    if depth > limits.max_depth {
        return Err(Dropped::TooDeep);
    }
    let mut push = |cell| {
        if out.len() >= limits.max_fields {
            return Err(Dropped::TooManyFields);
        }
        out.push((key.clone(), cell));
        Ok(())
    };
    match v {
        Value::Null => Ok(()),
        Value::Bool(b) => push(Cell::Bool(b)),
        Value::Number(n) => push(Cell::Num(n.as_f64().unwrap_or(f64::NAN))),
        Value::String(s) => push(Cell::Str(s)),
        Value::Array(items) => {
            for (i, item) in items.into_iter().take(limits.max_array).enumerate() {
                flatten(format!("{key}.{i}"), item, depth + 1, limits, out)?;
            }
            Ok(())
        }
        Value::Object(map) => {
            for (k, item) in map {
                flatten(format!("{key}.{k}"), item, depth + 1, limits, out)?;
            }
            Ok(())
        }
    }
}

fn row(name: &str, time_ns: i64, cells: Vec<(String, Cell)>) -> Frame {
    let mut fields = vec![Field {
        name: "time".into(),
        labels: None,
        values: Values::Time(vec![time_ns]),
    }];
    for (k, c) in cells {
        let values = match c {
            Cell::Num(x) => Values::NullableFloat64(vec![Some(x)]),
            Cell::Str(s) => Values::NullableString(vec![Some(s)]),
            Cell::Bool(b) => Values::NullableBool(vec![Some(b)]),
        };
        fields.push(Field {
            name: k,
            labels: None,
            values,
        });
    }
    Frame {
        name: name.to_owned(),
        fields,
    }
}

/// A timestamp value: RFC 3339 text, or an epoch number in s, ms, µs or ns by magnitude.
fn timestamp_ns(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => {
            let x = n.as_f64()?;
            if !x.is_finite() || x <= 0.0 {
                return None;
            }
            let ns = if x < 1e11 {
                x * 1e9
            } else if x < 1e14 {
                x * 1e6
            } else if x < 1e17 {
                x * 1e3
            } else {
                x
            };
            (ns < i64::MAX as f64).then_some(ns as i64)
        }
        Value::String(s) => rfc3339_ns(s),
        _ => None,
    }
}

/// RFC 3339 with `Z` or a `±HH:MM` offset.
fn rfc3339_ns(s: &str) -> Option<i64> {
    let s = s.trim();
    let (local, offset_s) = if let Some(rest) = s.strip_suffix('Z').or_else(|| s.strip_suffix('z'))
    {
        (rest, 0i64)
    } else if s.len() > 6 && matches!(&s[s.len() - 6..s.len() - 5], "+" | "-") {
        let (rest, off) = s.split_at(s.len() - 6);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let h: i64 = off.get(1..3)?.parse().ok()?;
        let m: i64 = off.get(4..6)?.parse().ok()?;
        (rest, sign * (h * 3600 + m * 60))
    } else {
        return None;
    };
    let t = humantime::parse_rfc3339(&format!("{local}Z")).ok()?;
    let ns = t.duration_since(UNIX_EPOCH).ok()?.as_nanos() as i64;
    Some(ns - Duration::from_secs(offset_s.unsigned_abs()).as_nanos() as i64 * offset_s.signum())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<String> {
        ["time", "timestamp", "ts"].map(String::from).to_vec()
    }

    fn one(payload: &str) -> Result<Frame, Dropped> {
        let mut f = frames(
            payload.as_bytes(),
            "t",
            5,
            &keys(),
            &PayloadLimits::default(),
        )?;
        assert_eq!(f.len(), 1);
        Ok(f.remove(0))
    }

    fn names(f: &Frame) -> Vec<&str> {
        f.fields.iter().map(|f| f.name.as_str()).collect()
    }

    #[test]
    fn json_objects_are_flattened_and_typed() {
        let f = one(r#"{"env":{"t":21.5,"ok":true},"a":[1,"x"],"n":null,"s":"on"}"#).unwrap();
        assert_eq!(names(&f), ["time", "a.0", "a.1", "env.ok", "env.t", "s"]);
        assert_eq!(f.fields[0].values, Values::Time(vec![5]));
        assert_eq!(
            f.fields[4].values,
            Values::NullableFloat64(vec![Some(21.5)])
        );
        assert_eq!(f.fields[3].values, Values::NullableBool(vec![Some(true)]));
        assert_eq!(
            f.fields[2].values,
            Values::NullableString(vec![Some("x".into())])
        );
    }

    #[test]
    fn bare_values_and_text_become_value() {
        assert_eq!(
            one("21.5").unwrap().fields[1].values,
            Values::NullableFloat64(vec![Some(21.5)])
        );
        assert_eq!(
            one("true").unwrap().fields[1].values,
            Values::NullableBool(vec![Some(true)])
        );
        assert_eq!(
            one("ON").unwrap().fields[1].values,
            Values::NullableString(vec![Some("ON".into())])
        );
        assert_eq!(names(&one("\"x\"").unwrap()), ["time", "value"]);
    }

    #[test]
    fn timestamps_come_from_the_configured_keys() {
        let at = 1_700_000_000_000_000_000i64;
        for payload in [
            r#"{"v":1,"time":1700000000}"#,
            r#"{"v":1,"ts":1700000000000}"#,
            r#"{"v":1,"timestamp":1700000000000000}"#,
            r#"{"v":1,"time":1700000000000000000}"#,
            r#"{"v":1,"time":"2023-11-14T22:13:20Z"}"#,
            r#"{"v":1,"time":"2023-11-15T00:13:20+02:00"}"#,
        ] {
            let f = one(payload).unwrap();
            assert_eq!(f.fields[0].values, Values::Time(vec![at]), "{payload}");
            assert_eq!(names(&f), ["time", "v"], "{payload}");
        }
        // Not a timestamp: kept as a field, the receive time used.
        let f = one(r#"{"v":1,"time":"soon"}"#).unwrap();
        assert_eq!(f.fields[0].values, Values::Time(vec![5]));
    }

    #[test]
    fn line_protocol_is_converted_as_the_push_api_does() {
        let f = frames(
            b"env,room=a temp=21 1700000000000000000",
            "t",
            5,
            &keys(),
            &PayloadLimits::default(),
        )
        .unwrap();
        assert_eq!(f[0].name, "env");
        assert_eq!(names(&f[0]), ["labels", "time", "temp"]);
    }

    #[test]
    fn unreadable_payloads_are_refused_with_their_reason() {
        let limits = PayloadLimits {
            max_bytes: 100,
            max_depth: 3,
            max_array: 2,
            max_fields: 3,
        };
        let f = |p: &[u8]| frames(p, "t", 5, &keys(), &limits).map(|_| ());
        assert_eq!(f(&[0xff, 0xfe]), Err(Dropped::NotUtf8));
        assert_eq!(f(&[b'1'; 101]), Err(Dropped::TooLarge));
        assert_eq!(f(br#"{"a":{"b":{"c":{"d":1}}}}"#), Err(Dropped::TooDeep));
        assert_eq!(
            f(br#"{"a":1,"b":2,"c":3,"d":4}"#),
            Err(Dropped::TooManyFields)
        );
        assert_eq!(f(b"  "), Err(Dropped::Empty));
        assert_eq!(f(b"null"), Err(Dropped::Empty));
        assert_eq!(f(b"two\nlines of text"), Err(Dropped::Unreadable));
        // Arrays beyond max_array are cut, not refused.
        assert!(f(br#"{"a":[1,2,3,4]}"#).is_ok());
    }
}
