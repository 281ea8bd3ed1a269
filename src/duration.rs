//! Durations in the config as people write them (`"25s"`, `"7d"`, `"1h 30m"`), for serde's
//! `with = "crate::duration"`.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("{s:?} is not a duration like \"25s\": {e}")))
}
