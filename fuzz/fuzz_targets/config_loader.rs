//! The config loader: any text is either a config or a list of problems, never a panic.
#![no_main]

use edgelive::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Config::from_toml("fuzz", text, Vec::new()) {
        assert!(!e.problems.is_empty());
    }
});
