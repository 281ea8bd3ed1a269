//! A client's WebSocket message: split into commands, each decoded. Must return an error, never
//! panic, whatever the bytes.
#![no_main]

use edgelive::protocol::{split_frame, Command};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(lines) = split_frame(data) {
        for (n, line) in lines {
            let _ = Command::decode(line, n);
        }
    }
});
