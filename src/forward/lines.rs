//! What is forwarded, as Influx line protocol: a push body's points written again with their
//! timestamps in nanoseconds (the receive time where a line had none, the time the edge's own
//! frames carry), names, tags and field types as parsed; an MQTT message's frame as the fields
//! edgelive made of it. Pure: no I/O.

use crate::frame::{Frame, Values};
use crate::ingest::lineproto::{write_point, FieldValue, Line, LineLimits, ParseError, Parser};
use crate::ingest::Precision;

/// Line protocol to forward, and how many points (lines) it holds.
pub use crate::ingest::lineproto::Lines;

/// Most bytes and points of one queued entry: a larger push is queued as several entries, so
/// that batching and the far side's body limit always have something to work with.
pub const ENTRY_MAX_BYTES: usize = 1 << 20;
pub const ENTRY_MAX_POINTS: u32 = 10_000;

impl Lines {
    /// Cut at line ends into parts of at most `ENTRY_MAX_BYTES` (a longer line alone) and
    /// `ENTRY_MAX_POINTS`.
    pub fn into_parts(self) -> Vec<Lines> {
        if self.text.len() <= ENTRY_MAX_BYTES && self.points <= ENTRY_MAX_POINTS {
            return vec![self];
        }
        let mut out = Vec::new();
        let mut cur = Lines::default();
        for line in self.text.split_inclusive('\n') {
            if cur.points > 0
                && (cur.text.len() + line.len() > ENTRY_MAX_BYTES || cur.points == ENTRY_MAX_POINTS)
            {
                out.push(std::mem::take(&mut cur));
            }
            cur.text.push_str(line);
            cur.points += 1;
        }
        if cur.points > 0 {
            out.push(cur);
        }
        out
    }
}

/// Room for a body's points written back: timestamps in nanoseconds make lines longer.
pub fn echo_capacity(body_len: usize) -> usize {
    body_len + body_len / 4
}

/// A push body's points (already accepted by the converter, so it parses), each line ending
/// in `\n`, timestamps in nanoseconds.
pub fn body_lines(
    body: &str,
    precision: Precision,
    now_ns: i64,
    limits: LineLimits,
) -> Result<Lines, ParseError> {
    lines_of(body, precision, now_ns, limits, None)
}

/// `body_lines` with every point's measurement replaced by `measurement` (an MQTT message's
/// lines go to its topic's channel).
pub fn body_lines_as(
    body: &str,
    now_ns: i64,
    limits: LineLimits,
    measurement: &str,
) -> Result<Lines, ParseError> {
    lines_of(
        body,
        Precision::Nanoseconds,
        now_ns,
        limits,
        Some(measurement),
    )
}

fn lines_of(
    body: &str,
    precision: Precision,
    now_ns: i64,
    limits: LineLimits,
    measurement: Option<&str>,
) -> Result<Lines, ParseError> {
    let mut parser = Parser::with_limits(body, precision, limits);
    let mut line = Line::default();
    let mut out = Lines::with_capacity(echo_capacity(body.len()));
    while let Some(r) = parser.next(&mut line) {
        r?;
        out.push(&line, measurement, now_ns);
    }
    Ok(out)
}

/// A frame's rows as points of `measurement`: its time column as the timestamp, each other
/// column's value as a field (numbers as floats, strings, booleans; nulls and NaN left out),
/// field labels as tags. A row with no value is skipped.
pub fn frame_lines(measurement: &str, frame: &Frame, now_ns: i64) -> Lines {
    let mut out = Lines::default();
    let times = frame.fields.iter().find_map(|f| match &f.values {
        Values::Time(t) => Some(t),
        _ => None,
    });
    let mut fields: Vec<(&str, FieldValue<'_>)> = Vec::new();
    let mut tags: Vec<(&str, &str)> = Vec::new();
    for row in 0..frame.rows() {
        fields.clear();
        tags.clear();
        for f in &frame.fields {
            let value = match &f.values {
                Values::Time(_) => None,
                Values::Float64(v) => v.get(row).copied().map(FieldValue::Float),
                Values::NullableFloat64(v) => v.get(row).copied().flatten().map(FieldValue::Float),
                Values::String(v) => v.get(row).map(|s| FieldValue::Str(s.as_str().into())),
                Values::NullableString(v) => v
                    .get(row)
                    .and_then(Option::as_deref)
                    .map(|s| FieldValue::Str(s.into())),
                Values::NullableBool(v) => v.get(row).copied().flatten().map(FieldValue::Bool),
            };
            let Some(value) =
                value.filter(|v| !matches!(v, FieldValue::Float(x) if !x.is_finite()))
            else {
                continue;
            };
            for (k, v) in f.labels.iter().flatten() {
                if !tags.iter().any(|(tk, _)| *tk == k.as_str()) {
                    tags.push((k, v));
                }
            }
            fields.push((&f.name, value));
        }
        if fields.is_empty() {
            continue;
        }
        tags.sort_unstable();
        let time = times.and_then(|t| t.get(row).copied()).unwrap_or(now_ns);
        write_point(
            &mut out.text,
            measurement,
            tags.iter().copied(),
            fields.iter().map(|(k, v)| (*k, v)),
            Some(time),
        );
        out.points += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Field;

    fn parse_all(text: &str) -> Vec<String> {
        let mut p = Parser::new(text, Precision::Nanoseconds);
        let mut l = Line::default();
        let mut out = Vec::new();
        while let Some(r) = p.next(&mut l) {
            r.unwrap();
            out.push(format!(
                "{}|{:?}|{:?}|{:?}",
                l.measurement, l.tags, l.fields, l.timestamp
            ));
        }
        out
    }

    #[test]
    fn a_body_is_written_again_with_its_types_escapes_and_nanosecond_times() {
        let body =
            "cpu\\ load,host=a\\,b,dc=x\\=y f=1.5,i=-3i,u=7u,b=t,s=\"q\\\"uote\\\\\" 1616403090\n\
                    # comment\n\nmem free=1e21\n";
        let got = body_lines(body, Precision::Seconds, 42, LineLimits::default()).unwrap();
        assert_eq!(got.points, 2);
        assert_eq!(
            got.text,
            "cpu\\ load,host=a\\,b,dc=x\\=y f=1.5,i=-3i,u=7u,b=true,s=\"q\\\"uote\\\\\" 1616403090000000000\n\
             mem free=1e21 42\n"
        );
        // Read back, the points are the original's, timestamps scaled to nanoseconds.
        let again = parse_all(&got.text);
        let original: Vec<String> = {
            let mut p = Parser::new(body, Precision::Seconds);
            let mut l = Line::default();
            let mut v = Vec::new();
            while let Some(r) = p.next(&mut l) {
                r.unwrap();
                v.push(format!(
                    "{}|{:?}|{:?}|{:?}",
                    l.measurement,
                    l.tags,
                    l.fields,
                    Some(l.timestamp.unwrap_or(42))
                ));
            }
            v
        };
        assert_eq!(again, original);
    }

    #[test]
    fn the_converters_echo_is_what_body_lines_writes() {
        let body = "cpu,host=a\\,b,host=c f=1.5,f=2i 5\nmem free=2\n";
        let mut echo = Lines::default();
        crate::ingest::convert::convert_echo(
            body,
            crate::ingest::Layout::Wide,
            Precision::Milliseconds,
            42,
            Default::default(),
            Some(&mut echo),
        )
        .unwrap();
        let written = body_lines(body, Precision::Milliseconds, 42, LineLimits::default());
        assert_eq!(written.unwrap(), echo);
        // As pushed: duplicate keys and their order kept, for the far side to normalize.
        assert_eq!(
            echo.text,
            "cpu,host=a\\,b,host=c f=1.5,f=2i 5000000\nmem free=2.0 42\n"
        );
    }

    #[test]
    fn large_pushes_are_cut_at_line_ends() {
        let line = "m v=1 1\n";
        let n = ENTRY_MAX_POINTS * 2 + 5;
        let all = Lines {
            text: line.repeat(n as usize),
            points: n,
        };
        let parts = all.clone().into_parts();
        assert_eq!(
            parts.iter().map(|p| p.points).collect::<Vec<_>>(),
            [ENTRY_MAX_POINTS, ENTRY_MAX_POINTS, 5]
        );
        assert_eq!(
            parts.iter().map(|p| p.text.as_str()).collect::<String>(),
            all.text
        );
        let long = format!("m s=\"{}\" 1\n", "x".repeat(ENTRY_MAX_BYTES / 2));
        let big = Lines {
            text: long.repeat(3),
            points: 3,
        };
        let parts = big.into_parts();
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.text == long && p.points == 1));
    }

    #[test]
    fn a_frame_becomes_one_point_per_row() {
        let frame = Frame {
            name: "sensors/t".into(),
            fields: vec![
                Field {
                    name: "time".into(),
                    labels: None,
                    values: Values::Time(vec![5, 6]),
                },
                Field {
                    name: "temp".into(),
                    labels: Some(vec![("room".into(), "a b".into())]),
                    values: Values::NullableFloat64(vec![Some(21.5), None]),
                },
                Field {
                    name: "ok".into(),
                    labels: None,
                    values: Values::NullableBool(vec![Some(true), None]),
                },
                Field {
                    name: "note".into(),
                    labels: None,
                    values: Values::NullableString(vec![None, Some("x y".into())]),
                },
            ],
        };
        let got = frame_lines("sensors/room=201/t", &frame, 9);
        assert_eq!(
            got.text,
            "sensors/room=201/t,room=a\\ b temp=21.5,ok=true 5\nsensors/room=201/t note=\"x y\" 6\n"
        );
        assert_eq!(got.points, 2);
        let empty = Frame {
            name: "e".into(),
            fields: vec![Field {
                name: "v".into(),
                labels: None,
                values: Values::NullableFloat64(vec![None]),
            }],
        };
        assert_eq!(frame_lines("e", &empty, 1), Lines::default());
    }
}
