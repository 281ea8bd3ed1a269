//! The data-frame encoder: whatever line protocol converts, the schema and data it writes are
//! valid JSON, and a data-only message is valid JSON too; so are frames fitted to the field
//! sets earlier inputs left (sticky fields), whose columns all have the frame's row count.
#![no_main]

use std::sync::{Arc, OnceLock};

use edgelive::ingest::sticky::Sticky;
use edgelive::ingest::{frames, target};
use libfuzzer_sys::fuzz_target;

/// Shared by every run, so one input is fitted to the field sets of those before it.
static STICKY: OnceLock<Arc<Sticky>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    for query in ["", "gf_live_frame_format=wide&precision=ns"] {
        let t = target("fuzz", Some(query), Default::default()).expect("valid target");
        let sticky = STICKY.get_or_init(|| Sticky::new(64));
        let Ok(out) = frames(data, &t, 0, Some(sticky)) else {
            continue;
        };
        for (_, frame) in out {
            let full: serde_json::Value =
                serde_json::from_str(&frame.full()).expect("full frame is JSON");
            let fields = full["schema"]["fields"].as_array().expect("fields");
            let values = full["data"]["values"].as_array().expect("values");
            assert_eq!(fields.len(), values.len(), "{full}");
            let rows = values.first().and_then(|v| v.as_array()).map_or(0, Vec::len);
            assert!(
                values.iter().all(|v| v.as_array().map(Vec::len) == Some(rows)),
                "{full}"
            );
            serde_json::from_str::<serde_json::Value>(&frame.data_only())
                .expect("data-only frame is JSON");
        }
    }
});
