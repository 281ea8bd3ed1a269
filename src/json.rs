//! Compact JSON: the only form in which JSON that we did not write ourselves (a client's
//! publication data, a JWT's `info`, a stream handler's output, a stored record) may enter an
//! outgoing message.
//!
//! Outgoing messages are joined with `\n` into one WebSocket frame, and every client splits
//! frames on `\n` (centrifuge-js, centrifuge-python, Grafana's front end), so one raw newline
//! inside an embedded payload turns every message after it into broken JSON for every
//! subscriber, and history would replay the breakage. The encoders in `protocol::reply` accept
//! only [`CompactJson`], and its constructors are the only way to make one: each validates and
//! removes insignificant whitespace, so the rule is kept in one place instead of in each caller.
//!
//! Written by hand (a string-aware scan, about 30 lines): serde_json has no minifier, and a
//! round trip through `serde_json::Value` would reorder keys and round big numbers.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// Valid JSON text with no whitespace outside strings (JSON strings cannot hold a raw
/// newline or tab, so none is anywhere in it). Borrowed when the input was already compact.
#[derive(Clone)]
pub struct CompactJson<'a>(Cow<'a, RawValue>);

/// Compared by text (`RawValue` has no `PartialEq`); compact text is canonical up to key
/// order and number spelling.
impl PartialEq for CompactJson<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}
impl Eq for CompactJson<'_> {}

impl<'a> CompactJson<'a> {
    /// `raw` as is when it is compact (no copy), else minified.
    pub fn new(raw: &'a RawValue) -> CompactJson<'a> {
        match minify(raw.get()) {
            Cow::Borrowed(_) => CompactJson(Cow::Borrowed(raw)),
            Cow::Owned(m) => CompactJson(Cow::Owned(
                RawValue::from_string(m).expect("minified valid JSON is valid"),
            )),
        }
    }

    /// The JSON text, compact.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The text as a `RawValue` (for serde), compact.
    pub fn as_raw(&self) -> &RawValue {
        &self.0
    }

    pub fn into_owned(self) -> CompactJson<'static> {
        CompactJson(Cow::Owned(self.0.into_owned()))
    }
}

impl CompactJson<'static> {
    /// Validates `json` and makes it compact (no copy when it already is).
    pub fn from_string(json: String) -> Result<CompactJson<'static>, serde_json::Error> {
        RawValue::from_string(json).map(CompactJson::from_raw)
    }

    /// A value serialized by serde_json, whose output is compact (checked like any other).
    pub fn of<T: Serialize + ?Sized>(value: &T) -> CompactJson<'static> {
        let raw = serde_json::value::to_raw_value(value).expect("serializes to JSON");
        CompactJson::from_raw(raw)
    }

    /// JSON that our own encoder wrote (`frame::FrameJson`, whose output the `frame_encoder`
    /// fuzz target checks is valid JSON): wrapped without being parsed again, still checked
    /// compact. serde_json has no unchecked `RawValue` constructor; serializing `Verbatim`
    /// through `to_raw_value` is one copy instead of a parse (the parse was about 5% of
    /// ingest's samples on the storage thread; issue 14).
    pub fn from_encoder(json: &str) -> CompactJson<'static> {
        let raw = serde_json::value::to_raw_value(&Verbatim(json)).expect("text serializes");
        debug_assert_eq!(raw.get(), json);
        CompactJson::from_raw(raw)
    }

    /// Takes an owned `RawValue`, made compact.
    pub fn from_raw(raw: Box<RawValue>) -> CompactJson<'static> {
        match minify(raw.get()) {
            Cow::Borrowed(_) => CompactJson(Cow::Owned(raw)),
            Cow::Owned(m) => CompactJson(Cow::Owned(
                RawValue::from_string(m).expect("minified valid JSON is valid"),
            )),
        }
    }
}

/// Text serde_json writes as it is: the token its own `RawValue` serializes with (private to
/// serde_json, unchanged since raw values came in 1.0.29; the test
/// `encoder_output_is_wrapped_verbatim` fails if it ever changes). Another serializer would see
/// a one-field struct; only serde_json's `to_raw_value` is given one.
struct Verbatim<'a>(&'a str);

const RAW_TOKEN: &str = "$serde_json::private::RawValue";

impl Serialize for Verbatim<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct(RAW_TOKEN, 1)?;
        st.serialize_field(RAW_TOKEN, self.0)?;
        st.end()
    }
}

impl fmt::Debug for CompactJson<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl fmt::Display for CompactJson<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl Serialize for CompactJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for CompactJson<'static> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(CompactJson::from_raw)
    }
}

/// True when `json` has no JSON whitespace outside strings.
pub fn is_compact(json: &str) -> bool {
    matches!(minify(json), Cow::Borrowed(_))
}

/// Valid JSON with the whitespace outside strings removed (the same value, compact); borrowed
/// when there was none. Most payloads have no whitespace byte at all, which is checked first;
/// the copy starts at the first whitespace found outside a string.
pub fn minify(json: &str) -> Cow<'_, str> {
    let ws = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r');
    let b = json.as_bytes();
    if !b.iter().any(|&c| ws(c)) {
        return Cow::Borrowed(json);
    }
    let mut out: Option<Vec<u8>> = None;
    let (mut in_string, mut escaped) = (false, false);
    for (i, &c) in b.iter().enumerate() {
        let skip = if in_string {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
            false
        } else {
            in_string = c == b'"';
            ws(c)
        };
        match (&mut out, skip) {
            (None, true) => out = Some(b[..i].to_vec()),
            (Some(o), false) => o.push(c),
            _ => {}
        }
    }
    match out {
        // Only ASCII whitespace was dropped, between whole UTF-8 sequences.
        Some(o) => Cow::Owned(String::from_utf8(o).expect("still UTF-8")),
        None => Cow::Borrowed(json),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn encoder_output_is_wrapped_verbatim() {
        let text = r#"{"schema":{"fields":[{"name":"a\n"}]},"data":{"values":[[1,2.5]]}}"#;
        let c = super::CompactJson::from_encoder(text);
        assert_eq!(c.get(), text);
        let outer = serde_json::to_string(&serde_json::json!({ "x": 1 })).unwrap();
        assert_eq!(outer, r#"{"x":1}"#);
        #[derive(serde::Serialize)]
        struct Reply<'a> {
            data: &'a super::CompactJson<'a>,
        }
        let reply = serde_json::to_string(&Reply { data: &c }).unwrap();
        assert_eq!(reply, format!("{{\"data\":{text}}}"));
    }

    use super::*;
    use proptest::prelude::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.into()).unwrap()
    }

    #[test]
    fn pretty_json_becomes_compact_and_strings_keep_their_spaces() {
        let pretty = "{\n  \"a\": 1,\r\n\t\"b\": [ \"x y\", \"q\\\" z\" ]\n}";
        let r = raw(pretty);
        let c = CompactJson::new(&r);
        assert_eq!(c.get(), r#"{"a":1,"b":["x y","q\" z"]}"#);
        assert_eq!(
            CompactJson::from_string(pretty.into()).unwrap().get(),
            c.get()
        );
    }

    #[test]
    fn compact_input_is_borrowed_not_copied() {
        let r = raw(r#"{"a":"b c"}"#);
        let c = CompactJson::new(&r);
        assert!(matches!(c.0, Cow::Borrowed(_)));
        assert!(std::ptr::eq(c.get(), r.get()));
    }

    #[test]
    fn invalid_json_is_refused() {
        assert!(CompactJson::from_string("{\"a\": }".into()).is_err());
        assert!(CompactJson::from_string("".into()).is_err());
        // A raw control character inside a string is not JSON.
        assert!(CompactJson::from_string("\"a\nb\"".into()).is_err());
    }

    #[test]
    fn deserializing_compacts() {
        #[derive(Deserialize)]
        struct C {
            info: CompactJson<'static>,
        }
        let c: C = serde_json::from_str("{\"info\": { \"room\" :\n \"lab 1\" }}").unwrap();
        assert_eq!(c.info.get(), r#"{"room":"lab 1"}"#);
    }

    proptest! {
        /// Any JSON value, pretty-printed or compact, comes out as serde_json's own compact
        /// form of the same value, with no whitespace outside strings.
        #[test]
        fn minify_equals_serde_jsons_compact_form(v in json_value()) {
            let compact = serde_json::to_string(&v).unwrap();
            let pretty = serde_json::to_string_pretty(&v).unwrap();
            let got = CompactJson::from_string(pretty).unwrap();
            prop_assert_eq!(got.get(), compact.as_str());
            prop_assert!(is_compact(got.get()));
            prop_assert!(!got.get().contains('\n'));
        }
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[ -~\u{e9}\u{1F600}\\\\\"\t\n]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-z \"]{0,4}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
