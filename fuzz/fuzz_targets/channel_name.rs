//! Channel names: parsing never panics, and a parsed channel's key parses to itself.
#![no_main]

use edgelive::channel::Channel;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = Channel::parse(name, 1) {
        let again = Channel::parse_bare(c.key()).expect("a key is a valid bare name");
        assert_eq!(again.key(), c.key());
    }
});
