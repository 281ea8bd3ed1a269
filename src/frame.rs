//! Grafana data frames and their JSON form, as Grafana's plugin SDK writes it (design §7):
//! `{"schema":{...},"data":{"values":[...],"entities":[...],"nanos":[...]}}`, column major,
//! time as epoch milliseconds with the sub-millisecond remainder in `nanos`, NaN and ±Inf as
//! `null` listed in `entities`.
//!
//! The schema and the data are encoded separately because managed streams compare schema bytes
//! to decide between a full frame and a data-only one.

use std::fmt::Write as _;

/// One column of values.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// Nanoseconds since the Unix epoch.
    Time(Vec<i64>),
    String(Vec<String>),
    Float64(Vec<f64>),
    NullableFloat64(Vec<Option<f64>>),
    NullableString(Vec<Option<String>>),
    NullableBool(Vec<Option<bool>>),
}

impl Values {
    pub fn len(&self) -> usize {
        match self {
            Values::Time(v) => v.len(),
            Values::String(v) => v.len(),
            Values::Float64(v) => v.len(),
            Values::NullableFloat64(v) => v.len(),
            Values::NullableString(v) => v.len(),
            Values::NullableBool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Grafana's simple type and the SDK's Go item type of this column.
    fn types(&self) -> (&'static str, &'static str, bool) {
        match self {
            Values::Time(_) => ("time", "time.Time", false),
            Values::String(_) => ("string", "string", false),
            Values::Float64(_) => ("number", "float64", false),
            Values::NullableFloat64(_) => ("number", "float64", true),
            Values::NullableString(_) => ("string", "string", true),
            Values::NullableBool(_) => ("boolean", "bool", true),
        }
    }

    /// Appends nulls up to `len` (only nullable columns can be padded).
    pub fn pad_to(&mut self, len: usize) {
        match self {
            Values::NullableFloat64(v) => v.resize(len, None),
            Values::NullableString(v) => v.resize(len, None),
            Values::NullableBool(v) => v.resize(len, None),
            _ => {}
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    /// Sorted by key; `Some(empty)` is written as `{}`, `None` not at all.
    pub labels: Option<Vec<(String, String)>>,
    pub values: Values,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Frame {
    pub name: String,
    pub fields: Vec<Field>,
}

/// A frame encoded once: its schema and data JSON objects (without the outer keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameJson {
    pub schema: String,
    pub data: String,
}

impl FrameJson {
    /// `{"schema":...,"data":...}`
    pub fn full(&self) -> String {
        let mut s = String::with_capacity(self.schema.len() + self.data.len() + 22);
        s.push_str("{\"schema\":");
        s.push_str(&self.schema);
        s.push_str(",\"data\":");
        s.push_str(&self.data);
        s.push('}');
        s
    }

    /// `{"data":...}`
    pub fn data_only(&self) -> String {
        format!("{{\"data\":{}}}", self.data)
    }

    /// `{"schema":...}`
    pub fn schema_only(&self) -> String {
        format!("{{\"schema\":{}}}", self.schema)
    }
}

impl Frame {
    pub fn rows(&self) -> usize {
        self.fields.first().map_or(0, |f| f.values.len())
    }

    pub fn to_json(&self) -> FrameJson {
        FrameJson {
            schema: self.schema_json(),
            data: self.data_json(),
        }
    }

    fn schema_json(&self) -> String {
        let mut s = String::with_capacity(64 + 80 * self.fields.len());
        s.push('{');
        if !self.name.is_empty() {
            s.push_str("\"name\":");
            json_str(&mut s, &self.name);
            s.push(',');
        }
        s.push_str("\"fields\":[");
        for (i, f) in self.fields.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push('{');
            if !f.name.is_empty() {
                s.push_str("\"name\":");
                json_str(&mut s, &f.name);
                s.push(',');
            }
            let (ty, frame_ty, nullable) = f.values.types();
            let _ = write!(
                s,
                "\"type\":\"{ty}\",\"typeInfo\":{{\"frame\":\"{frame_ty}\""
            );
            if nullable {
                s.push_str(",\"nullable\":true");
            }
            s.push('}');
            if let Some(labels) = &f.labels {
                s.push_str(",\"labels\":{");
                for (j, (k, v)) in labels.iter().enumerate() {
                    if j > 0 {
                        s.push(',');
                    }
                    json_str(&mut s, k);
                    s.push(':');
                    json_str(&mut s, v);
                }
                s.push('}');
            }
            s.push('}');
        }
        s.push_str("]}");
        s
    }

    fn data_json(&self) -> String {
        let rows = self.rows();
        let mut s = String::with_capacity(16 + rows * self.fields.len() * 12);
        s.push_str("{\"values\":[");
        // Per field: NaN/Inf rows, sub-millisecond remainders.
        let mut entities: Vec<Option<Entities>> = vec![None; self.fields.len()];
        let mut nanos: Vec<Option<Vec<u32>>> = vec![None; self.fields.len()];
        for (i, f) in self.fields.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push('[');
            match &f.values {
                Values::Time(v) => {
                    for (r, ns) in v.iter().enumerate() {
                        sep(&mut s, r);
                        let ms = ns.div_euclid(1_000_000);
                        let rem = ns.rem_euclid(1_000_000) as u32;
                        write_int(&mut s, ms);
                        if rem != 0 {
                            nanos[i].get_or_insert_with(|| vec![0; v.len()])[r] = rem;
                        }
                    }
                }
                Values::String(v) => {
                    for (r, x) in v.iter().enumerate() {
                        sep(&mut s, r);
                        json_str(&mut s, x);
                    }
                }
                Values::Float64(v) => {
                    for (r, x) in v.iter().enumerate() {
                        sep(&mut s, r);
                        float(&mut s, *x, r, &mut entities[i]);
                    }
                }
                Values::NullableFloat64(v) => {
                    for (r, x) in v.iter().enumerate() {
                        sep(&mut s, r);
                        match x {
                            Some(x) => float(&mut s, *x, r, &mut entities[i]),
                            None => s.push_str("null"),
                        }
                    }
                }
                Values::NullableString(v) => {
                    for (r, x) in v.iter().enumerate() {
                        sep(&mut s, r);
                        match x {
                            Some(x) => json_str(&mut s, x),
                            None => s.push_str("null"),
                        }
                    }
                }
                Values::NullableBool(v) => {
                    for (r, x) in v.iter().enumerate() {
                        sep(&mut s, r);
                        s.push_str(match x {
                            Some(true) => "true",
                            Some(false) => "false",
                            None => "null",
                        });
                    }
                }
            }
            s.push(']');
        }
        s.push(']');
        if entities.iter().any(Option::is_some) {
            s.push_str(",\"entities\":[");
            for (i, e) in entities.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                match e {
                    None => s.push_str("null"),
                    Some(e) => e.write(&mut s),
                }
            }
            s.push(']');
        }
        if nanos.iter().any(Option::is_some) {
            s.push_str(",\"nanos\":[");
            for (i, n) in nanos.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                match n {
                    None => s.push_str("null"),
                    Some(n) => {
                        s.push('[');
                        for (r, x) in n.iter().enumerate() {
                            sep(&mut s, r);
                            write_int(&mut s, i64::from(*x));
                        }
                        s.push(']');
                    }
                }
            }
            s.push(']');
        }
        s.push('}');
        s
    }
}

/// Rows of one field whose float values JSON cannot carry.
#[derive(Debug, Clone, Default)]
struct Entities {
    nan: Vec<usize>,
    inf: Vec<usize>,
    neg_inf: Vec<usize>,
}

impl Entities {
    fn write(&self, s: &mut String) {
        s.push('{');
        let mut first = true;
        for (name, rows) in [
            ("NaN", &self.nan),
            ("Inf", &self.inf),
            ("NegInf", &self.neg_inf),
        ] {
            if rows.is_empty() {
                continue;
            }
            if !first {
                s.push(',');
            }
            first = false;
            let _ = write!(s, "\"{name}\":[");
            for (i, r) in rows.iter().enumerate() {
                sep(s, i);
                let _ = write!(s, "{r}");
            }
            s.push(']');
        }
        s.push('}');
    }
}

fn sep(s: &mut String, i: usize) {
    if i > 0 {
        s.push(',');
    }
}

/// A float as Go's JSON encoder writes it (shortest round trip; `100`, not `100.0`); NaN and
/// ±Inf become `null` and are recorded in `entities`.
fn float(s: &mut String, x: f64, row: usize, entities: &mut Option<Entities>) {
    if x.is_finite() {
        write_float(s, x);
        return;
    }
    let e = entities.get_or_insert_with(Entities::default);
    if x.is_nan() {
        e.nan.push(row);
    } else if x > 0.0 {
        e.inf.push(row);
    } else {
        e.neg_inf.push(row);
    }
    s.push_str("null");
}

/// Finite floats with the shortest digits that round-trip, as Go's encoder picks them:
/// integral values below 2^53 as integers (`100`, not `100.0`), other values in plain notation
/// between 1e-6 and 1e21 where ryu gives it (the same digits either way), exponent form outside.
pub fn write_float(s: &mut String, x: f64) {
    let a = x.abs();
    if a == 0.0 {
        s.push('0');
    } else if x.fract() == 0.0 && a < 9_007_199_254_740_992.0 {
        s.push_str(itoa::Buffer::new().format(x as i64));
    } else if x.fract() == 0.0 && a < 1e21 {
        let _ = write!(s, "{x}");
    } else if (1e-6..1e21).contains(&a) {
        s.push_str(ryu::Buffer::new().format_finite(x));
    } else {
        let _ = write!(s, "{x:e}");
    }
}

fn write_int(s: &mut String, i: i64) {
    s.push_str(itoa::Buffer::new().format(i));
}

/// Appends `v` as a JSON string.
pub fn json_str(s: &mut String, v: &str) {
    s.push('"');
    let bytes = v.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        s.push_str(&v[start..i]);
        if esc.is_empty() {
            let _ = write!(s, "\\u{b:04x}");
        } else {
            s.push_str(esc);
        }
        start = i + 1;
    }
    s.push_str(&v[start..]);
    s.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn time_is_milliseconds_with_nanos_and_fields_follow_the_sdk_shape() {
        let f = Frame {
            name: "temperature".into(),
            fields: vec![
                Field {
                    name: "labels".into(),
                    labels: None,
                    values: Values::String(vec!["location=room1, sensor=A".into()]),
                },
                Field {
                    name: "time".into(),
                    labels: None,
                    values: Values::Time(vec![1651498849000000123]),
                },
                Field {
                    name: "humidity".into(),
                    labels: None,
                    values: Values::NullableFloat64(vec![Some(45.0)]),
                },
                Field {
                    name: "temp_celsius".into(),
                    labels: None,
                    values: Values::NullableFloat64(vec![Some(23.5)]),
                },
            ],
        };
        let j = f.to_json();
        assert_eq!(
            parse(&j.full()),
            json!({"schema":{"name":"temperature","fields":[
              {"name":"labels","type":"string","typeInfo":{"frame":"string"}},
              {"name":"time","type":"time","typeInfo":{"frame":"time.Time"}},
              {"name":"humidity","type":"number","typeInfo":{"frame":"float64","nullable":true}},
              {"name":"temp_celsius","type":"number","typeInfo":{"frame":"float64","nullable":true}}]},
             "data":{"values":[["location=room1, sensor=A"],[1651498849000i64],[45],[23.5]],
                     "nanos":[null,[123],null,null]}})
        );
        assert_eq!(parse(&j.data_only())["data"], parse(&j.full())["data"]);
    }

    #[test]
    fn non_finite_floats_are_null_with_entities_and_labels_are_an_object() {
        let f = Frame {
            name: String::new(),
            fields: vec![Field {
                name: "v".into(),
                labels: Some(vec![]),
                values: Values::NullableFloat64(vec![
                    Some(f64::NAN),
                    None,
                    Some(f64::INFINITY),
                    Some(f64::NEG_INFINITY),
                    Some(1e21),
                    Some(1.5e-7),
                ]),
            }],
        };
        let j = f.to_json();
        assert_eq!(
            parse(&j.schema),
            json!({"fields":[{"name":"v","type":"number","typeInfo":{"frame":"float64","nullable":true},"labels":{}}]})
        );
        let d = parse(&j.data);
        assert_eq!(d["values"], json!([[null, null, null, null, 1e21, 1.5e-7]]));
        assert_eq!(d["entities"], json!([{"NaN":[0],"Inf":[2],"NegInf":[3]}]));
        assert!(d.get("nanos").is_none());
    }

    #[test]
    fn strings_are_escaped_and_integral_floats_have_no_fraction() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(parse(&s), json!("a\"b\\c\nd\u{1}é"));
        let mut s = String::new();
        write_float(&mut s, 100.0);
        s.push(' ');
        write_float(&mut s, 82.00000000012005);
        s.push(' ');
        write_float(&mut s, -0.0);
        s.push(' ');
        write_float(&mut s, 1e20);
        s.push(' ');
        write_float(&mut s, 1e300);
        s.push(' ');
        write_float(&mut s, -2.5e-7);
        assert_eq!(
            s,
            "100 82.00000000012005 0 100000000000000000000 1e300 -2.5e-7"
        );
        // Every value reads back as itself.
        for x in [
            0.1,
            1.0 / 3.0,
            123456.789,
            5.5e-6,
            9.007199254740993e15,
            -7.25,
        ] {
            let mut s = String::new();
            write_float(&mut s, x);
            assert_eq!(s.parse::<f64>().unwrap(), x, "{s}");
        }
    }

    #[test]
    fn negative_times_split_into_floor_milliseconds_and_positive_nanos() {
        let f = Frame {
            name: "t".into(),
            fields: vec![Field {
                name: "time".into(),
                labels: None,
                values: Values::Time(vec![-1]),
            }],
        };
        let d = parse(&f.to_json().data);
        assert_eq!(d, json!({"values":[[-1]],"nanos":[[999999]]}));
    }
}
