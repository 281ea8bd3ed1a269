//! Grafana's test streams, `plugin/testdata/<path>`, with its shapes and rates: the schema as
//! the subscribe reply's data, then one-row (two for the labeled one) data-only frames.
//!
//! | path | tick | ticks sent |
//! |---|---|---|
//! | `random-2s-stream` | 2 s | all |
//! | `random-flakey-stream` | 100 ms | 10 % |
//! | `random-labeled-stream` | 200 ms | 80 %, two labelled rows each |
//! | `random-20Hz-stream`, `random-20Hz-stream-<n>` | 50 ms | all |
//!
//! Values are a random walk, `Min`/`Max` a random spread around it. Client publishes are refused.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use super::lifecycle::Run;
use super::{Sender, StreamHandler};
use crate::protocol::ErrorCode;

pub struct TestData;

/// The four channels Grafana lists, with the minute rates it advertises for them.
pub const LISTED: [(&str, u32); 4] = [
    ("plugin/testdata/random-2s-stream", 30),
    ("plugin/testdata/random-flakey-stream", 150),
    ("plugin/testdata/random-labeled-stream", 250),
    ("plugin/testdata/random-20Hz-stream", 1200),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    TwoSeconds,
    Flakey,
    Labeled,
    TwentyHz,
}

impl Kind {
    fn of(path: &str) -> Option<Kind> {
        match path {
            "random-2s-stream" => Some(Kind::TwoSeconds),
            "random-flakey-stream" => Some(Kind::Flakey),
            "random-labeled-stream" => Some(Kind::Labeled),
            "random-20Hz-stream" => Some(Kind::TwentyHz),
            p => p
                .strip_prefix("random-20Hz-stream-")
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .map(|_| Kind::TwentyHz),
        }
    }

    /// Tick interval and the share of ticks that are sent.
    fn rate(self) -> (Duration, f64) {
        match self {
            Kind::TwoSeconds => (Duration::from_secs(2), 1.0),
            Kind::Flakey => (Duration::from_millis(100), 0.1),
            Kind::Labeled => (Duration::from_millis(200), 0.8),
            Kind::TwentyHz => (Duration::from_millis(50), 1.0),
        }
    }
}

fn field(name: &str, kind: &str, go_type: &str) -> String {
    format!(r#"{{"name":"{name}","type":"{kind}","typeInfo":{{"frame":"{go_type}"}}}}"#)
}

fn schema(kind: Kind) -> String {
    let (name, fields) = if kind == Kind::Labeled {
        (
            "labeled",
            vec![
                field("labels", "string", "string"),
                field("Time", "time", "time.Time"),
                field("Value", "number", "float64"),
            ],
        )
    } else {
        (
            "testdata",
            vec![
                field("Time", "time", "time.Time"),
                field("Value", "number", "float64"),
                field("Min", "number", "float64"),
                field("Max", "number", "float64"),
            ],
        )
    };
    format!(
        r#"{{"schema":{{"name":"{name}","fields":[{}]}}}}"#,
        fields.join(",")
    )
}

/// The random walk behind every value.
struct Walk {
    rng: StdRng,
    value: f64,
}

impl Walk {
    fn new() -> Walk {
        let mut rng = StdRng::from_os_rng();
        let value = rng.random::<f64>() * 100.0;
        Walk { rng, value }
    }

    /// One tick's data-only frame.
    fn frame(&mut self, kind: Kind, now: SystemTime) -> String {
        self.value += self.rng.random::<f64>() - 0.5;
        let ms = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let v = self.value;
        if kind == Kind::Labeled {
            let sec = ms / 1000 % 60;
            return format!(
                r#"{{"data":{{"values":[["s=A,s=p{},x=X","s=B,s=p{},x=X"],[{ms},{ms}],[{},{}]]}}}}"#,
                sec / 3,
                sec / 7,
                num(v),
                num(v + 10.0)
            );
        }
        let min = v - (self.rng.random::<f64>() * 50.0 + 0.01);
        let max = v + (self.rng.random::<f64>() * 50.0 + 0.01);
        format!(
            r#"{{"data":{{"values":[[{ms}],[{}],[{}],[{}]]}}}}"#,
            num(v),
            num(min),
            num(max)
        )
    }

    fn sends(&mut self, share: f64) -> bool {
        share >= 1.0 || self.rng.random::<f64>() < share
    }
}

fn num(v: f64) -> String {
    ryu::Buffer::new().format_finite(v).to_owned()
}

impl StreamHandler for TestData {
    fn subscribe(&self, path: &str) -> Result<Option<String>, ErrorCode> {
        let kind = Kind::of(path).ok_or(ErrorCode::UnknownChannel)?;
        Ok(Some(schema(kind)))
    }

    fn run(&self, path: &str, out: Sender, cancel: CancellationToken) -> Run {
        let kind = Kind::of(path);
        Box::pin(async move {
            let kind = kind.ok_or_else(|| "unknown testdata stream".to_owned())?;
            let (every, share) = kind.rate();
            let mut walk = Walk::new();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tick.tick() => {}
                }
                if walk.sends(share) {
                    out.send(walk.frame(kind, SystemTime::now()))?;
                }
            }
        })
    }

    fn publish(&self, _path: &str, _data: &RawValue) -> Result<Option<String>, ErrorCode> {
        Err(ErrorCode::PermissionDenied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_schemas_and_frames_have_grafanas_shapes() {
        assert_eq!(Kind::of("random-20Hz-stream-7"), Some(Kind::TwentyHz));
        assert_eq!(Kind::of("random-20Hz-stream-"), None);
        assert_eq!(Kind::of("random-3s-stream"), None);
        assert_eq!(
            TestData.subscribe("nope").unwrap_err(),
            ErrorCode::UnknownChannel
        );
        let s: serde_json::Value =
            serde_json::from_str(&TestData.subscribe("random-2s-stream").unwrap().unwrap())
                .unwrap();
        let names: Vec<&str> = s["schema"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Time", "Value", "Min", "Max"]);
        assert_eq!(s["schema"]["fields"][0]["type"], "time");
        let mut w = Walk::new();
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let f: serde_json::Value = serde_json::from_str(&w.frame(Kind::TwentyHz, t)).unwrap();
        let v = f["data"]["values"].as_array().unwrap();
        assert_eq!(v[0], serde_json::json!([1_700_000_000_123u64]));
        let (val, min, max) = (
            v[1][0].as_f64().unwrap(),
            v[2][0].as_f64().unwrap(),
            v[3][0].as_f64().unwrap(),
        );
        assert!(min < val && val < max, "{f}");
        let f: serde_json::Value = serde_json::from_str(&w.frame(Kind::Labeled, t)).unwrap();
        assert_eq!(f["data"]["values"][0].as_array().unwrap().len(), 2);
        let l = f["data"]["values"][2].as_array().unwrap();
        assert!((l[1].as_f64().unwrap() - l[0].as_f64().unwrap() - 10.0).abs() < 1e-9);
        assert!(TestData
            .publish(
                "random-2s-stream",
                &RawValue::from_string("{}".into()).unwrap()
            )
            .is_err());
    }
}
