//! The data-frame encoder: whatever line protocol converts, the schema and data it writes are
//! valid JSON, and a data-only message is valid JSON too.
#![no_main]

use edgelive::ingest::{frames, target};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for query in ["", "gf_live_frame_format=wide&precision=ns"] {
        let t = target("fuzz", Some(query), Default::default()).expect("valid target");
        let Ok(out) = frames(data, &t, 0) else {
            continue;
        };
        for (_, frame) in out {
            let full: serde_json::Value =
                serde_json::from_str(&frame.full()).expect("full frame is JSON");
            assert!(full["schema"]["fields"].is_array(), "{full}");
            assert!(full["data"]["values"].is_array(), "{full}");
            serde_json::from_str::<serde_json::Value>(&frame.data_only())
                .expect("data-only frame is JSON");
        }
    }
});
