//! Influx line protocol: `measurement[,tag=v...] field=v[,field=v...] [timestamp]`, one point a
//! line, `#` comments and blank lines skipped.
//!
//! The parser borrows from the body: names and values without escapes are slices of it, and a
//! `Line` is filled in place and reused for every line, so a batch allocates nothing per point
//! except where an escape must be undone. Errors name the line and column (both from 1).

use std::borrow::Cow;

/// A field value with its line-protocol type.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue<'a> {
    Float(f64),
    Int(i64),
    UInt(u64),
    Bool(bool),
    Str(Cow<'a, str>),
}

/// One parsed point; reused from line to line by `Parser::next`.
#[derive(Debug, Default)]
pub struct Line<'a> {
    pub measurement: Cow<'a, str>,
    pub tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    pub fields: Vec<(Cow<'a, str>, FieldValue<'a>)>,
    /// In nanoseconds (already scaled by the precision); `None` = take the receive time.
    pub timestamp: Option<i64>,
    /// 1-based line number in the body.
    pub number: usize,
}

/// Unit of the timestamps in a body (`?precision=`); nanoseconds unless told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
}

impl Precision {
    pub fn parse(s: &str) -> Option<Precision> {
        Some(match s {
            "ns" | "n" => Precision::Nanoseconds,
            "us" | "u" => Precision::Microseconds,
            "ms" => Precision::Milliseconds,
            "s" => Precision::Seconds,
            _ => return None,
        })
    }

    fn factor(self) -> i64 {
        match self {
            Precision::Nanoseconds => 1,
            Precision::Microseconds => 1_000,
            Precision::Milliseconds => 1_000_000,
            Precision::Seconds => 1_000_000_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("body is not valid UTF-8")]
    NotUtf8,
    #[error("missing measurement")]
    MissingMeasurement,
    #[error("tag {0:?} has no value (expected key=value)")]
    TagWithoutValue(String),
    #[error("empty tag key")]
    EmptyTagKey,
    #[error("missing fields (expected a space, then field=value)")]
    MissingFields,
    #[error("empty field key")]
    EmptyFieldKey,
    #[error("field {0:?} has no value (expected key=value)")]
    FieldWithoutValue(String),
    #[error("field {field:?}: {value:?} is not a valid {what}")]
    InvalidValue {
        field: String,
        value: String,
        what: &'static str,
    },
    #[error("field {0:?}: unterminated string (a closing \" is missing)")]
    UnterminatedString(String),
    #[error("field {0:?}: unexpected character after the string")]
    AfterString(String),
    #[error("invalid timestamp {0:?} (expected an integer)")]
    InvalidTimestamp(String),
    #[error("timestamp {0} out of range for this precision")]
    TimestampOutOfRange(i64),
    #[error("unexpected text after the timestamp")]
    TrailingText,
    #[error("more than {0} tags in one line ([push] max_tags_per_line)")]
    TooManyTags(usize),
    #[error("more than {0} fields in one line ([push] max_fields_per_line)")]
    TooManyFields(usize),
    #[error("the frames of this request would hold more than {0} values (sparse fields, or many tags × fields in the wide layout; [push] max_values_per_request)")]
    TooManyValues(usize),
}

/// What one line may carry: conversion is linear in the body, but a line's tags are copied
/// into every field's labels in the wide layout, so their numbers are bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineLimits {
    pub max_tags: usize,
    pub max_fields: usize,
}

impl Default for LineLimits {
    fn default() -> Self {
        LineLimits {
            max_tags: 256,
            max_fields: 1024,
        }
    }
}

/// Where and what: `line 3, column 17: field "x": "1.2.3" is not a valid float`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {kind}")]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub kind: ErrorKind,
}

/// Checks a body is UTF-8, reporting where it is not.
pub fn utf8(body: &[u8]) -> Result<&str, ParseError> {
    std::str::from_utf8(body).map_err(|e| {
        let good = &body[..e.valid_up_to()];
        let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
        let start = good.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        ParseError {
            line,
            column: good.len() - start + 1,
            kind: ErrorKind::NotUtf8,
        }
    })
}

/// Walks a body line by line.
pub struct Parser<'a> {
    lines: std::str::Split<'a, char>,
    number: usize,
    precision: Precision,
    limits: LineLimits,
}

impl<'a> Parser<'a> {
    /// A parser with the default [`LineLimits`].
    pub fn new(body: &'a str, precision: Precision) -> Parser<'a> {
        Parser::with_limits(body, precision, LineLimits::default())
    }

    pub fn with_limits(body: &'a str, precision: Precision, limits: LineLimits) -> Parser<'a> {
        Parser {
            lines: body.split('\n'),
            number: 0,
            precision,
            limits,
        }
    }

    /// Parses the next point into `line`; `None` at the end of the body.
    pub fn next(&mut self, line: &mut Line<'a>) -> Option<Result<(), ParseError>> {
        loop {
            let text = self.lines.next()?;
            self.number += 1;
            let text = text.strip_suffix('\r').unwrap_or(text);
            let trimmed = text.trim_start_matches([' ', '\t']);
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = text.len() - trimmed.len();
            line.tags.clear();
            line.fields.clear();
            line.timestamp = None;
            line.number = self.number;
            let mut cur = Cursor { s: trimmed, pos: 0 };
            let r =
                parse_line(&mut cur, line, self.precision, self.limits).map_err(|(at, kind)| {
                    ParseError {
                        line: self.number,
                        column: indent + at + 1,
                        kind,
                    }
                });
            return Some(r);
        }
    }
}

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

type Failure = (usize, ErrorKind);

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    /// Reads up to (not including) an unescaped delimiter; `escapable` are the characters a
    /// backslash escapes here (a backslash before anything else stays a backslash).
    fn token(&mut self, delims: &[u8], escapable: &[u8]) -> Cow<'a, str> {
        let b = self.s.as_bytes();
        let start = self.pos;
        let mut escaped = false;
        while let Some(&c) = b.get(self.pos) {
            if c == b'\\' {
                if let Some(n) = b.get(self.pos + 1) {
                    if escapable.contains(n) || *n == b'\\' {
                        escaped = true;
                        self.pos += 2;
                        continue;
                    }
                }
            } else if delims.contains(&c) {
                break;
            }
            self.pos += 1;
        }
        let raw = &self.s[start..self.pos];
        if escaped {
            Cow::Owned(unescape(raw, escapable))
        } else {
            Cow::Borrowed(raw)
        }
    }

    fn skip_spaces(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
        self.pos - start
    }
}

fn unescape(raw: &str, escapable: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(&n) = chars.peek() {
                if n.is_ascii() && (escapable.contains(&(n as u8)) || n == '\\') {
                    out.push(n);
                    chars.next();
                    continue;
                }
            }
        }
        out.push(c);
    }
    out
}

const MEASUREMENT_ESC: &[u8] = b", ";
const KEY_ESC: &[u8] = b",= ";

fn parse_line<'a>(
    c: &mut Cursor<'a>,
    line: &mut Line<'a>,
    p: Precision,
    limits: LineLimits,
) -> Result<(), Failure> {
    line.measurement = c.token(b", \t", MEASUREMENT_ESC);
    if line.measurement.is_empty() {
        return Err((c.pos, ErrorKind::MissingMeasurement));
    }
    while c.peek() == Some(b',') {
        c.pos += 1;
        let at = c.pos;
        if line.tags.len() == limits.max_tags {
            return Err((at, ErrorKind::TooManyTags(limits.max_tags)));
        }
        let key = c.token(b",= \t", KEY_ESC);
        if key.is_empty() {
            return Err((at, ErrorKind::EmptyTagKey));
        }
        if c.peek() != Some(b'=') {
            return Err((c.pos, ErrorKind::TagWithoutValue(key.into_owned())));
        }
        c.pos += 1;
        let value = c.token(b", \t", KEY_ESC);
        if value.is_empty() {
            return Err((c.pos, ErrorKind::TagWithoutValue(key.into_owned())));
        }
        line.tags.push((key, value));
    }
    if c.skip_spaces() == 0 || c.peek().is_none() {
        return Err((c.pos, ErrorKind::MissingFields));
    }
    loop {
        let at = c.pos;
        if line.fields.len() == limits.max_fields {
            return Err((at, ErrorKind::TooManyFields(limits.max_fields)));
        }
        let key = c.token(b",= \t", KEY_ESC);
        if key.is_empty() {
            return Err((at, ErrorKind::EmptyFieldKey));
        }
        if c.peek() != Some(b'=') {
            return Err((c.pos, ErrorKind::FieldWithoutValue(key.into_owned())));
        }
        c.pos += 1;
        let value = field_value(c, &key)?;
        line.fields.push((key, value));
        match c.peek() {
            Some(b',') => c.pos += 1,
            _ => break,
        }
    }
    c.skip_spaces();
    if c.peek().is_none() {
        return Ok(());
    }
    let at = c.pos;
    let ts = c.token(b" \t", b"");
    let ts_value: i64 = ts
        .parse()
        .ok()
        .filter(|_| ts.bytes().all(|b| b.is_ascii_digit() || b == b'-'))
        .ok_or_else(|| (at, ErrorKind::InvalidTimestamp(ts.clone().into_owned())))?;
    line.timestamp = Some(
        ts_value
            .checked_mul(p.factor())
            .ok_or((at, ErrorKind::TimestampOutOfRange(ts_value)))?,
    );
    c.skip_spaces();
    if c.peek().is_some() {
        return Err((c.pos, ErrorKind::TrailingText));
    }
    Ok(())
}

fn field_value<'a>(c: &mut Cursor<'a>, key: &str) -> Result<FieldValue<'a>, Failure> {
    let at = c.pos;
    if c.peek() == Some(b'"') {
        c.pos += 1;
        let b = c.s.as_bytes();
        let start = c.pos;
        let mut escaped = false;
        loop {
            match b.get(c.pos) {
                None => return Err((at, ErrorKind::UnterminatedString(key.to_owned()))),
                Some(b'\\') if matches!(b.get(c.pos + 1), Some(b'"' | b'\\')) => {
                    escaped = true;
                    c.pos += 2;
                }
                Some(b'"') => break,
                Some(_) => c.pos += 1,
            }
        }
        let raw = &c.s[start..c.pos];
        c.pos += 1;
        if !matches!(c.peek(), None | Some(b',' | b' ' | b'\t')) {
            return Err((c.pos, ErrorKind::AfterString(key.to_owned())));
        }
        return Ok(FieldValue::Str(if escaped {
            Cow::Owned(unescape(raw, b"\""))
        } else {
            Cow::Borrowed(raw)
        }));
    }
    let raw = c.token(b", \t", b"");
    let raw = raw.as_ref();
    if raw.is_empty() {
        return Err((at, ErrorKind::FieldWithoutValue(key.to_owned())));
    }
    let invalid = |what| {
        (
            at,
            ErrorKind::InvalidValue {
                field: key.to_owned(),
                value: raw.to_owned(),
                what,
            },
        )
    };
    let numeric = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
    };
    match raw {
        "t" | "T" | "true" | "True" | "TRUE" => return Ok(FieldValue::Bool(true)),
        "f" | "F" | "false" | "False" | "FALSE" => return Ok(FieldValue::Bool(false)),
        _ => {}
    }
    if let Some(i) = raw.strip_suffix('i') {
        return i
            .parse()
            .ok()
            .filter(|_| numeric(i) && !i.contains(['.', 'e', 'E', '+']))
            .map(FieldValue::Int)
            .ok_or_else(|| invalid("integer"));
    }
    if let Some(u) = raw.strip_suffix('u') {
        return u
            .parse()
            .ok()
            .filter(|_| u.bytes().all(|b| b.is_ascii_digit()))
            .map(FieldValue::UInt)
            .ok_or_else(|| invalid("unsigned integer"));
    }
    if !numeric(raw) {
        return Err(invalid("float (strings need double quotes)"));
    }
    raw.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(FieldValue::Float)
        .ok_or_else(|| invalid("float"))
}

/// Writes points back as line protocol (tests and benchmarks build bodies with it).
#[derive(Debug, Default)]
pub struct Builder {
    out: String,
}

impl Builder {
    pub fn new() -> Builder {
        Builder::default()
    }

    pub fn point(
        &mut self,
        measurement: &str,
        tags: &[(&str, &str)],
        fields: &[(&str, FieldValue<'_>)],
        timestamp: Option<i64>,
    ) -> &mut Self {
        write_point(
            &mut self.out,
            measurement,
            tags.iter().copied(),
            fields.iter().map(|(k, v)| (*k, v)),
            timestamp,
        );
        self
    }

    pub fn build(self) -> String {
        self.out
    }
}

/// Points written back as line protocol, one per line, and how many.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lines {
    pub text: String,
    pub points: u32,
}

impl Lines {
    pub fn with_capacity(bytes: usize) -> Lines {
        Lines {
            text: String::with_capacity(bytes),
            points: 0,
        }
    }

    /// Appends `line` (under `measurement` when given), its timestamp in nanoseconds or
    /// `now_ns` where it had none.
    pub fn push(&mut self, line: &Line<'_>, measurement: Option<&str>, now_ns: i64) {
        write_point(
            &mut self.text,
            measurement.unwrap_or(&line.measurement),
            line.tags.iter().map(|(k, v)| (k.as_ref(), v.as_ref())),
            line.fields.iter().map(|(k, v)| (k.as_ref(), v)),
            Some(line.timestamp.unwrap_or(now_ns)),
        );
        self.points += 1;
    }
}

/// Writes one point as a line (ending in `\n`), escaped so that `Parser` reads back the same
/// names and values; floats in their shortest exact form, integers with `i`, unsigned ones
/// with `u`.
pub fn write_point<'v>(
    out: &mut String,
    measurement: &str,
    tags: impl IntoIterator<Item = (&'v str, &'v str)>,
    fields: impl IntoIterator<Item = (&'v str, &'v FieldValue<'v>)>,
    timestamp: Option<i64>,
) {
    escape_into(out, measurement, MEASUREMENT_ESC);
    for (k, v) in tags {
        out.push(',');
        escape_into(out, k, KEY_ESC);
        out.push('=');
        escape_into(out, v, KEY_ESC);
    }
    out.push(' ');
    for (i, (k, v)) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        escape_into(out, k, KEY_ESC);
        out.push('=');
        // ryu and itoa rather than `fmt`: measured in benches/push.rs, a 1,040-point batch's
        // lines took 3.54 ms with parsing and converting, 3.40 ms so; ryu writes floats in
        // their shortest exact form, as `{:?}` does.
        match v {
            FieldValue::Float(f) => out.push_str(ryu::Buffer::new().format(*f)),
            FieldValue::Int(i) => {
                out.push_str(itoa::Buffer::new().format(*i));
                out.push('i');
            }
            FieldValue::UInt(u) => {
                out.push_str(itoa::Buffer::new().format(*u));
                out.push('u');
            }
            FieldValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            FieldValue::Str(s) => {
                out.push('"');
                escape_into(out, s, b"\"");
                out.push('"');
            }
        }
    }
    if let Some(t) = timestamp {
        out.push(' ');
        out.push_str(itoa::Buffer::new().format(t));
    }
    out.push('\n');
}

fn escape_into(out: &mut String, s: &str, special: &[u8]) {
    // Names and values rarely hold anything to escape: copied whole, not char by char
    // (benches/push.rs: 3.40 → 3.20 ms for a 1,040-point batch converted and written).
    let needs = |b: u8| b == b'\\' || special.contains(&b);
    let mut rest = s;
    while let Some(i) = rest.bytes().position(needs) {
        out.push_str(&rest[..i]);
        out.push('\\');
        out.push(rest.as_bytes()[i] as char);
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(body: &str) -> Result<Vec<String>, ParseError> {
        let mut p = Parser::new(body, Precision::Nanoseconds);
        let mut line = Line::default();
        let mut out = Vec::new();
        while let Some(r) = p.next(&mut line) {
            r?;
            out.push(format!(
                "{}|{:?}|{:?}|{:?}",
                line.measurement, line.tags, line.fields, line.timestamp
            ));
        }
        Ok(out)
    }

    fn err(body: &str) -> ParseError {
        all(body).unwrap_err()
    }

    #[test]
    fn every_field_type_tags_and_timestamps() {
        let got = all(
            "cpu,host=a,region=eu f=1.5,i=-3i,u=7u,b=t,B=FALSE,s=\"hi\" 1616403090000000000\n\
             # comment\n\n  mem free=2 \r\n",
        )
        .unwrap();
        assert_eq!(got.len(), 2);
        assert!(got[0].starts_with("cpu|"));
        let mut p = Parser::new("m,a=1 x=1e3,y=-.5,z=+2 -5", Precision::Nanoseconds);
        let mut l = Line::default();
        p.next(&mut l).unwrap().unwrap();
        assert_eq!(l.fields[0].1, FieldValue::Float(1000.0));
        assert_eq!(l.fields[1].1, FieldValue::Float(-0.5));
        assert_eq!(l.fields[2].1, FieldValue::Float(2.0));
        assert_eq!(l.timestamp, Some(-5));
        assert_eq!(l.number, 1);
    }

    #[test]
    fn escapes_in_every_position() {
        let mut p = Parser::new(
            r#"my\ meas\,ure,t\ k\=y=v\,a\ l\=ue f\ k=1,s="q\"uo\\te\n" 5"#,
            Precision::Nanoseconds,
        );
        let mut l = Line::default();
        p.next(&mut l).unwrap().unwrap();
        assert_eq!(l.measurement, "my meas,ure");
        assert_eq!(l.tags[0].0, "t k=y");
        assert_eq!(l.tags[0].1, "v,a l=ue");
        assert_eq!(l.fields[0].0, "f k");
        assert_eq!(l.fields[1].1, FieldValue::Str(r#"q"uo\te\n"#.into()));
        // A backslash before an ordinary character stays.
        let mut p = Parser::new(r"m\x f=1", Precision::Nanoseconds);
        p.next(&mut l).unwrap().unwrap();
        assert_eq!(l.measurement, r"m\x");
    }

    #[test]
    fn precision_scales_timestamps_and_overflow_is_an_error() {
        let mut l = Line::default();
        let mut p = Parser::new("m f=1 1616403090", Precision::Seconds);
        p.next(&mut l).unwrap().unwrap();
        assert_eq!(l.timestamp, Some(1_616_403_090_000_000_000));
        let mut p = Parser::new("m f=1 9223372036854775", Precision::Milliseconds);
        let e = p.next(&mut l).unwrap().unwrap_err();
        assert!(matches!(e.kind, ErrorKind::TimestampOutOfRange(_)), "{e}");
        assert_eq!(Precision::parse("us"), Some(Precision::Microseconds));
        assert_eq!(Precision::parse("h"), None);
    }

    #[test]
    fn every_error_class_names_line_and_column() {
        let e = err("ok f=1\n,t=1 f=1");
        assert_eq!((e.line, e.column), (2, 1));
        assert_eq!(e.kind, ErrorKind::MissingMeasurement);
        assert_eq!(err("m,t f=1").kind, ErrorKind::TagWithoutValue("t".into()));
        assert_eq!(err("m,t= f=1").kind, ErrorKind::TagWithoutValue("t".into()));
        assert_eq!(err("m,=v f=1").kind, ErrorKind::EmptyTagKey);
        assert_eq!(err("m").kind, ErrorKind::MissingFields);
        assert_eq!(err("m,t=1 ").kind, ErrorKind::MissingFields);
        assert_eq!(err("m =1").kind, ErrorKind::EmptyFieldKey);
        assert_eq!(err("m f").kind, ErrorKind::FieldWithoutValue("f".into()));
        assert_eq!(err("m f=").kind, ErrorKind::FieldWithoutValue("f".into()));
        let e = err("m f=1,g=1.2.3");
        assert_eq!(e.column, 9);
        assert!(matches!(
            e.kind,
            ErrorKind::InvalidValue { what: "float", .. }
        ));
        assert!(matches!(
            err("m f=abc").kind,
            ErrorKind::InvalidValue {
                what: "float (strings need double quotes)",
                ..
            }
        ));
        assert!(matches!(
            err("m f=NaN").kind,
            ErrorKind::InvalidValue { .. }
        ));
        assert!(matches!(
            err("m f=1.5i").kind,
            ErrorKind::InvalidValue {
                what: "integer",
                ..
            }
        ));
        assert!(matches!(
            err("m f=99999999999999999999i").kind,
            ErrorKind::InvalidValue {
                what: "integer",
                ..
            }
        ));
        assert!(matches!(
            err("m f=-1u").kind,
            ErrorKind::InvalidValue {
                what: "unsigned integer",
                ..
            }
        ));
        assert_eq!(
            err("m s=\"abc").kind,
            ErrorKind::UnterminatedString("s".into())
        );
        assert_eq!(err("m s=\"abc\"x").kind, ErrorKind::AfterString("s".into()));
        assert_eq!(
            err("m f=1 12a").kind,
            ErrorKind::InvalidTimestamp("12a".into())
        );
        assert_eq!(err("m f=1 12 13").kind, ErrorKind::TrailingText);
        let e = utf8(b"ok f=1\nm f=\"\xff\"").unwrap_err();
        assert_eq!((e.line, e.column, e.kind), (2, 6, ErrorKind::NotUtf8));
        assert_eq!(
            err("  m f=x").to_string(),
            "line 1, column 7: field \"f\": \"x\" is not a valid float (strings need double quotes)"
        );
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn name() -> impl Strategy<Value = String> {
            // Printable text including every character that needs escaping.
            "[a-zA-Z0-9 ,=\"\\\\_.é-]{1,12}".prop_filter("no leading #", |s| {
                !s.starts_with('#') && !s.starts_with(' ')
            })
        }

        fn value() -> impl Strategy<Value = FieldValue<'static>> {
            prop_oneof![
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(FieldValue::Float),
                any::<i64>().prop_map(FieldValue::Int),
                any::<u64>().prop_map(FieldValue::UInt),
                any::<bool>().prop_map(FieldValue::Bool),
                "[a-z \"\\\\,=]{0,10}".prop_map(|s| FieldValue::Str(s.into())),
            ]
        }

        type Point = (
            String,
            Vec<(String, String)>,
            Vec<(String, FieldValue<'static>)>,
            Option<i64>,
        );

        fn point() -> impl Strategy<Value = Point> {
            (
                name(),
                proptest::collection::vec((name(), name()), 0..4),
                proptest::collection::vec((name(), value()), 1..5),
                proptest::option::of(any::<i64>()),
            )
        }

        proptest! {
            #[test]
            fn what_the_builder_writes_parses_back(points in proptest::collection::vec(point(), 1..6)) {
                let mut b = Builder::new();
                for (m, tags, fields, ts) in &points {
                    let tags: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    let fields: Vec<(&str, FieldValue<'_>)> = fields.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
                    b.point(m, &tags, &fields, *ts);
                }
                let body = b.build();
                let mut p = Parser::new(&body, Precision::Nanoseconds);
                let mut line = Line::default();
                for (m, tags, fields, ts) in &points {
                    p.next(&mut line).expect("a line").map_err(|e| TestCaseError::fail(format!("{e} in {body:?}")))?;
                    prop_assert_eq!(line.measurement.as_ref(), m.as_str());
                    let got: Vec<(String, String)> = line.tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
                    prop_assert_eq!(&got, tags);
                    prop_assert_eq!(line.fields.len(), fields.len());
                    for ((gk, gv), (k, v)) in line.fields.iter().zip(fields) {
                        prop_assert_eq!(gk.as_ref(), k.as_str());
                        prop_assert_eq!(gv, v);
                    }
                    prop_assert_eq!(line.timestamp, *ts);
                }
                prop_assert!(p.next(&mut line).is_none());
            }

            #[test]
            fn any_input_parses_or_fails_cleanly(body in "\\PC{0,80}") {
                let mut p = Parser::new(&body, Precision::Seconds);
                let mut line = Line::default();
                while let Some(r) = p.next(&mut line) {
                    if let Err(e) = r {
                        prop_assert!(e.line >= 1 && e.column >= 1);
                        break;
                    }
                }
            }
        }
    }
}
