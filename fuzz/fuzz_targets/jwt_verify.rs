//! Connection tokens: verification of any string returns an error or claims, never a panic;
//! nothing verifies without the key.
#![no_main]

use edgelive::auth::jwt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let _ = jwt::verify(token, b"fuzzing-secret-0123456789", 1.0e9);
});
