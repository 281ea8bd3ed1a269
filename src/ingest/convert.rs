//! Line protocol → Grafana data frames, as Grafana's push converter does it (design §7):
//!
//! - `labels_column` (default): one frame per measurement, in order of first appearance:
//!   `labels` ("k1=v1, k2=v2", keys sorted), `time`, then one nullable column per field key in
//!   order of first appearance, each line's keys taken sorted; missing values padded with null.
//! - `wide`: one frame per (measurement, timestamp): `time`, then each line's fields (sorted)
//!   as one-row columns carrying that line's tags as labels.
//!
//! Grafana's quirks kept on purpose: every number (integer, unsigned, float) becomes a
//! nullable float64; a string field `"NaN"` is a null float64; a value whose type differs from
//! its column's becomes null, unless the column holds strings, where it is written as Go's
//! `%v` would. Unlike Grafana, a field key given twice in one line keeps the last value
//! (Influx's rule) instead of growing its column past the frame's length.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;

use super::lineproto::{
    ErrorKind, FieldValue, Line, LineLimits, Lines, ParseError, Parser, Precision,
};
use crate::frame::{Field, Frame, Values};

/// `?gf_live_frame_format=`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    #[default]
    LabelsColumn,
    Wide,
}

impl Layout {
    /// Case-insensitive, as Grafana.
    pub fn parse(s: &str) -> Option<Layout> {
        if s.eq_ignore_ascii_case("labels_column") {
            Some(Layout::LabelsColumn)
        } else if s.eq_ignore_ascii_case("wide") {
            Some(Layout::Wide)
        } else {
            None
        }
    }
}

/// Bounds on one body's conversion: per line (tags, fields) and for the whole output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub line: LineLimits,
    /// Most values (cells, padding nulls and per-field labels included) the frames of one body
    /// may hold: sparse fields pad every row of a `labels_column` frame, and `wide` repeats a
    /// line's tags for each of its fields, so the output can outgrow the body by far.
    pub max_values: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            line: LineLimits::default(),
            max_values: 1_000_000,
        }
    }
}

/// Parses a whole body and converts it with the default [`Limits`]; nothing is returned
/// unless every line parses. `now_ns` is the time of points without a timestamp.
pub fn convert(
    body: &str,
    layout: Layout,
    precision: Precision,
    now_ns: i64,
) -> Result<Vec<Frame>, ParseError> {
    convert_with(body, layout, precision, now_ns, Limits::default())
}

/// [`convert`] within `limits`; work and memory are linear in the body.
pub fn convert_with(
    body: &str,
    layout: Layout,
    precision: Precision,
    now_ns: i64,
    limits: Limits,
) -> Result<Vec<Frame>, ParseError> {
    convert_echo(body, layout, precision, now_ns, limits, None)
}

/// [`convert_with`], and with `echo` each point written back as line protocol as it was
/// parsed (its timestamp in nanoseconds, `now_ns` where it had none), in the same pass: what
/// `[[forward]]` sends. On an error `echo` holds a part of the body; drop it.
pub fn convert_echo(
    body: &str,
    layout: Layout,
    precision: Precision,
    now_ns: i64,
    limits: Limits,
    mut echo: Option<&mut Lines>,
) -> Result<Vec<Frame>, ParseError> {
    let mut parser = Parser::with_limits(body, precision, limits.line);
    let mut line = Line::default();
    let mut labels = LabelsColumn::default();
    let mut wide = Wide::default();
    while let Some(r) = parser.next(&mut line) {
        r?;
        // Before `normalize`: tags and fields go on in the order and with the duplicates
        // they came with (the far side normalizes as we do).
        if let Some(echo) = echo.as_deref_mut() {
            echo.push(&line, None, now_ns);
        }
        normalize(&mut line);
        let ts = line.timestamp.unwrap_or(now_ns);
        let fits = match layout {
            Layout::LabelsColumn => labels.append(&line, ts, limits.max_values),
            Layout::Wide => wide.append(&line, ts, limits.max_values),
        };
        if fits.is_err() {
            return Err(ParseError {
                line: line.number,
                column: 1,
                kind: ErrorKind::TooManyValues(limits.max_values),
            });
        }
    }
    Ok(match layout {
        Layout::LabelsColumn => labels.finish(),
        Layout::Wide => wide.frames,
    })
}

/// Sorts tags and fields by key; of duplicate keys the last one stays.
fn normalize(line: &mut Line<'_>) {
    line.tags.sort_by(|a, b| a.0.cmp(&b.0));
    dedup_keep_last(&mut line.tags, |t| &t.0);
    line.fields.sort_by(|a, b| a.0.cmp(&b.0));
    dedup_keep_last(&mut line.fields, |f| &f.0);
}

/// After a stable sort, equal keys are adjacent in input order; keeps the last of each run.
/// Linear: reversed, `dedup_by` keeps the first of each run, then back in order.
fn dedup_keep_last<T>(v: &mut Vec<T>, key: impl Fn(&T) -> &Cow<'_, str>) {
    v.reverse();
    v.dedup_by(|a, b| key(a) == key(b));
    v.reverse();
}

/// A value as Grafana types it with float64 numbers on.
enum Typed<'v> {
    Float(Option<f64>),
    Bool(bool),
    Str(&'v str),
}

fn typed<'v>(v: &'v FieldValue<'_>) -> Typed<'v> {
    match v {
        FieldValue::Float(f) => Typed::Float(Some(*f)),
        FieldValue::Int(i) => Typed::Float(Some(*i as f64)),
        FieldValue::UInt(u) => Typed::Float(Some(*u as f64)),
        FieldValue::Bool(b) => Typed::Bool(*b),
        FieldValue::Str(s) if s == "NaN" => Typed::Float(None),
        FieldValue::Str(s) => Typed::Str(s),
    }
}

fn new_column(t: &Typed<'_>) -> Values {
    match t {
        Typed::Float(_) => Values::NullableFloat64(Vec::new()),
        Typed::Bool(_) => Values::NullableBool(Vec::new()),
        Typed::Str(_) => Values::NullableString(Vec::new()),
    }
}

/// Appends `t` to `col`; a value of another type becomes null, or text in a string column.
fn push(col: &mut Values, t: Typed<'_>, raw: &FieldValue<'_>) {
    match (col, t) {
        (Values::NullableFloat64(c), Typed::Float(f)) => c.push(f),
        (Values::NullableBool(c), Typed::Bool(b)) => c.push(Some(b)),
        (Values::NullableString(c), Typed::Str(s)) => c.push(Some(s.to_owned())),
        (Values::NullableString(c), Typed::Float(None)) => c.push(None),
        (Values::NullableString(c), _) => c.push(Some(go_value(raw))),
        (col, _) => {
            let n = col.len() + 1;
            col.pad_to(n);
        }
    }
}

/// The raw value as Go's `%v` prints it.
fn go_value(v: &FieldValue<'_>) -> String {
    match v {
        FieldValue::Float(f) => go_float(*f),
        FieldValue::Int(i) => i.to_string(),
        FieldValue::UInt(u) => u.to_string(),
        FieldValue::Bool(b) => b.to_string(),
        FieldValue::Str(s) => s.to_string(),
    }
}

/// `%v` of a float64 (`%g`, shortest): exponent form when the exponent is < -4 or >= 6
/// (Go prints 1e6 as `1e+06`).
fn go_float(f: f64) -> String {
    if f == 0.0 {
        return "0".into();
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("integer exponent");
    if (-4..6).contains(&exp) {
        return format!("{f}");
    }
    let mut s = String::from(mantissa);
    let _ = write!(
        s,
        "e{}{:02}",
        if exp < 0 { '-' } else { '+' },
        exp.unsigned_abs()
    );
    s
}

/// "k1=v1, k2=v2" over sorted tags.
fn labels_string(tags: &[(Cow<'_, str>, Cow<'_, str>)]) -> String {
    let mut s = String::with_capacity(tags.iter().map(|(k, v)| k.len() + v.len() + 3).sum());
    for (i, (k, v)) in tags.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(k);
        s.push('=');
        s.push_str(v);
    }
    s
}

#[derive(Default)]
struct LabelsColumn {
    frames: Vec<Frame>,
    /// Measurement → index in `frames`.
    by_name: HashMap<String, usize>,
    /// Per frame: field key → index in its fields.
    columns: Vec<HashMap<String, usize>>,
    /// Per frame: the column of the n-th field of the previous line. Lines of one measurement
    /// usually repeat the same sorted keys, so this skips the hash lookup.
    hints: Vec<Vec<usize>>,
    /// The frame of the previous line.
    last: Option<usize>,
    /// Values the frames hold once padded: rows × columns, summed.
    values: usize,
}

impl LabelsColumn {
    /// Appends a line, unless the frames would then hold more than `max` values (checked
    /// before anything is allocated for them). A refused line may leave its frame part-built:
    /// the whole body is refused then.
    fn append(&mut self, line: &Line<'_>, ts: i64, max: usize) -> Result<(), TooMany> {
        let same = |i: usize| self.frames[i].name == line.measurement.as_ref();
        let known = match self.last.filter(|&i| same(i)) {
            Some(i) => Some(i),
            None => self.by_name.get(line.measurement.as_ref()).copied(),
        };
        let fi = match known {
            Some(i) => i,
            None => {
                let name = line.measurement.to_string();
                self.frames.push(Frame {
                    name: name.clone(),
                    fields: vec![
                        field("labels", None, Values::String(Vec::new())),
                        field("time", None, Values::Time(Vec::new())),
                    ],
                });
                self.columns.push(HashMap::new());
                self.hints.push(Vec::new());
                self.by_name.insert(name, self.frames.len() - 1);
                self.frames.len() - 1
            }
        };
        self.last = Some(fi);
        let frame = &mut self.frames[fi];
        let columns = &mut self.columns[fi];
        let hints = &mut self.hints[fi];
        let row = frame.rows();
        // The new row has a value in every column, and each new column pads earlier rows.
        self.values += frame.fields.len();
        if self.values > max {
            return Err(TooMany);
        }
        if let Values::String(l) = &mut frame.fields[0].values {
            l.push(labels_string(&line.tags));
        }
        if let Values::Time(t) = &mut frame.fields[1].values {
            t.push(ts);
        }
        for (pos, (key, raw)) in line.fields.iter().enumerate() {
            let t = typed(raw);
            let hinted = hints
                .get(pos)
                .copied()
                .filter(|&ci| frame.fields[ci].name == key.as_ref());
            let ci = match hinted.or_else(|| columns.get(key.as_ref()).copied()) {
                Some(ci) => ci,
                None => {
                    self.values += row + 1;
                    if self.values > max {
                        return Err(TooMany);
                    }
                    frame.fields.push(field(key, None, new_column(&t)));
                    columns.insert(key.to_string(), frame.fields.len() - 1);
                    frame.fields.len() - 1
                }
            };
            match hints.get_mut(pos) {
                Some(h) => *h = ci,
                None => hints.push(ci),
            }
            let col = &mut frame.fields[ci].values;
            col.pad_to(row);
            push(col, t, raw);
        }
        Ok(())
    }

    fn finish(mut self) -> Vec<Frame> {
        for f in &mut self.frames {
            let rows = f.rows();
            for field in &mut f.fields[2..] {
                field.values.pad_to(rows);
            }
        }
        self.frames
    }
}

#[derive(Default)]
struct Wide {
    frames: Vec<Frame>,
    /// (measurement, time) → index in `frames`.
    by_key: HashMap<(String, i64), usize>,
    /// Values the frames hold, each field's labels counted.
    values: usize,
}

impl Wide {
    /// Appends a line, unless the frames would then hold more than `max` values (counted
    /// first: the line's labels are copied for each of its fields).
    fn append(&mut self, line: &Line<'_>, ts: i64, max: usize) -> Result<(), TooMany> {
        self.values += line.fields.len() * (1 + line.tags.len());
        if self.values > max {
            return Err(TooMany);
        }
        let key = (line.measurement.to_string(), ts);
        let fi = match self.by_key.get(&key) {
            Some(&i) => i,
            None => {
                self.frames.push(Frame {
                    name: key.0.clone(),
                    fields: vec![field("time", None, Values::Time(vec![ts]))],
                });
                self.by_key.insert(key, self.frames.len() - 1);
                self.frames.len() - 1
            }
        };
        let labels: Vec<(String, String)> = line
            .tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let frame = &mut self.frames[fi];
        for (key, raw) in &line.fields {
            let t = typed(raw);
            let mut col = new_column(&t);
            push(&mut col, t, raw);
            frame.fields.push(field(key, Some(labels.clone()), col));
        }
        Ok(())
    }
}

/// The frames would hold more values than allowed.
struct TooMany;

fn field(name: &str, labels: Option<Vec<(String, String)>>, values: Values) -> Field {
    Field {
        name: name.to_owned(),
        labels,
        values,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn frames(body: &str, layout: Layout) -> Vec<Value> {
        convert(body, layout, Precision::Nanoseconds, 7_000_000)
            .unwrap()
            .iter()
            .map(|f| serde_json::from_str(&f.to_json().full()).unwrap())
            .collect()
    }

    #[test]
    fn late_and_missing_fields_are_padded_with_null() {
        let f = frames(
            "m,h=a x=1 1000000\nm,h=b y=2i 2000000\nm x=3u\n",
            Layout::LabelsColumn,
        );
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0]["data"]["values"],
            json!([["h=a", "h=b", ""], [1, 2, 7], [1, null, 3], [null, 2, null]])
        );
    }

    #[test]
    fn type_changes_follow_grafana() {
        let f = frames(
            "m s=\"a\",n=1,b=t\nm s=2.5,n=\"x\",b=1i\nm s=true,n=\"NaN\",b=\"NaN\"\nm s=1e22,n=t,b=f",
            Layout::LabelsColumn,
        );
        let v = &f[0]["data"]["values"];
        assert_eq!(v[2], json!([true, null, null, false]), "bool column");
        assert_eq!(v[3], json!([1, null, null, null]), "number column");
        assert_eq!(v[4], json!(["a", "2.5", "true", "1e+22"]), "string column");
    }

    #[test]
    fn duplicate_keys_keep_the_last_and_fields_are_sorted() {
        let a = frames("m,b=2,a=1,b=3 z=1,a=2,z=3 5", Layout::LabelsColumn);
        let b = frames("m,a=1,b=3 a=2,z=3 5", Layout::LabelsColumn);
        assert_eq!(a, b);
        assert_eq!(a[0]["data"]["values"][0], json!(["a=1, b=3"]));
    }

    #[test]
    fn wide_frames_group_by_measurement_and_time() {
        let f = frames("m,h=a x=1 5\nm,h=b x=2 5\nm x=3 6\nn x=4 5", Layout::Wide);
        assert_eq!(f.len(), 3);
        assert_eq!(f[0]["schema"]["fields"].as_array().unwrap().len(), 3);
        assert_eq!(f[0]["schema"]["fields"][2]["labels"], json!({"h": "b"}));
        assert_eq!(f[1]["schema"]["fields"][1]["labels"], json!({}));
        assert_eq!(f[2]["schema"]["name"], "n");
    }

    /// A line repeating one key n times: linear, not quadratic (40,000 repeats took 1.1 s).
    #[test]
    fn repeated_keys_cost_linear_time_and_keep_the_last() {
        let n = 100_000;
        let mut body = String::from("m ");
        for i in 0..n {
            body.push_str(&format!("x={i},"));
        }
        body.push_str("x=-1");
        let limits = Limits {
            line: LineLimits {
                max_tags: 10,
                max_fields: n + 1,
            },
            ..Limits::default()
        };
        let f = convert_with(
            &body,
            Layout::LabelsColumn,
            Precision::Nanoseconds,
            0,
            limits,
        )
        .unwrap();
        assert_eq!(f[0].fields.len(), 3);
        let json: Value = serde_json::from_str(&f[0].to_json().full()).unwrap();
        assert_eq!(json["data"]["values"][2], json!([-1]));
    }

    #[test]
    fn lines_and_bodies_beyond_the_limits_are_refused_naming_the_line() {
        let limits = Limits {
            line: LineLimits {
                max_tags: 2,
                max_fields: 3,
            },
            max_values: 40,
        };
        let conv = |b: &str, l| convert_with(b, l, Precision::Nanoseconds, 0, limits);
        let e = conv("m a=1\nm,a=1,b=2,c=3 x=1", Layout::LabelsColumn).unwrap_err();
        assert_eq!(
            (e.line, e.column, e.kind),
            (2, 11, ErrorKind::TooManyTags(2))
        );
        let e = conv("m a=1,b=2,c=3,d=4", Layout::Wide).unwrap_err();
        assert_eq!(
            (e.line, e.column, e.kind.clone()),
            (1, 15, ErrorKind::TooManyFields(3))
        );
        assert!(e.to_string().contains("max_fields_per_line"), "{e}");
        // Sparse fields: every new column pads every earlier row.
        let sparse: String = (0..20).map(|i| format!("m f{i}=1\n")).collect();
        let e = conv(&sparse, Layout::LabelsColumn).unwrap_err();
        assert_eq!(e.kind, ErrorKind::TooManyValues(40));
        assert!(e.line > 3 && e.line < 20, "{e}");
        // Wide repeats the tags for every field.
        let e = conv("m,a=1,b=2 x=1,y=2,z=3 1\n".repeat(5).as_str(), Layout::Wide).unwrap_err();
        assert_eq!((e.line, e.kind), (5, ErrorKind::TooManyValues(40)));
        assert!(conv("m,a=1,b=2 x=1,y=2,z=3 1\n".repeat(4).as_str(), Layout::Wide).is_ok());
    }

    #[test]
    fn go_float_formatting() {
        assert_eq!(go_float(1.0), "1");
        assert_eq!(go_float(2.5), "2.5");
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(123456.0), "123456");
        assert_eq!(go_float(1234567.0), "1.234567e+06");
        assert_eq!(go_float(1e-5), "1e-05");
        assert_eq!(go_float(0.0001), "0.0001");
        assert_eq!(go_float(-1.5e300), "-1.5e+300");
    }

    #[test]
    fn layout_names_are_case_insensitive() {
        assert_eq!(Layout::parse("WIDE"), Some(Layout::Wide));
        assert_eq!(Layout::parse("Labels_Column"), Some(Layout::LabelsColumn));
        assert_eq!(Layout::parse("prometheus"), None);
    }
}
