//! A push body through the parser and converter, in both layouts and every precision. An error
//! must point inside the body; a success must name only valid channels.
#![no_main]

use edgelive::channel::Channel;
use edgelive::push::{frames, target};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for query in ["", "gf_live_frame_format=wide&precision=s"] {
        let t = target("fuzz", Some(query)).expect("valid target");
        match frames(data, &t, 1_700_000_000_000_000_000) {
            Ok(out) => {
                for (channel, _) in out {
                    Channel::parse_bare(&channel).expect("converted frames name valid channels");
                }
            }
            Err(edgelive::push::PushError::Parse(e)) => {
                assert!(e.line >= 1, "{e}");
            }
            Err(_) => {}
        }
    }
});
