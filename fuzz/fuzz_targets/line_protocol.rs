//! A push body through the parser and converter, in both layouts and every precision. An error
//! must point inside the body; a success must name only valid channels.
#![no_main]

use edgelive::channel::Channel;
use edgelive::ingest::convert::Limits;
use edgelive::ingest::lineproto::LineLimits;
use edgelive::ingest::{frames, target};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The defaults, and limits small enough for fuzz inputs to reach.
    let small = Limits {
        line: LineLimits {
            max_tags: 4,
            max_fields: 8,
        },
        max_values: 256,
    };
    for (query, limits) in [
        ("", Limits::default()),
        ("gf_live_frame_format=wide&precision=s", Limits::default()),
        ("", small),
        ("gf_live_frame_format=wide", small),
    ] {
        let t = target("fuzz", Some(query), limits).expect("valid target");
        match frames(data, &t, 1_700_000_000_000_000_000, None) {
            Ok(out) => {
                for (channel, _) in out {
                    Channel::parse_bare(&channel).expect("converted frames name valid channels");
                }
            }
            Err(edgelive::ingest::PushError::Parse(e)) => {
                assert!(e.line >= 1, "{e}");
            }
            Err(_) => {}
        }
    }
});
