//! Redis pub/sub messages (`ha::message`): any bytes another node (or anything with access to
//! the Redis) publishes either parse or give an error, never a panic; a parsed publication's
//! payloads are checked JSON before they could reach a client.
#![no_main]

use edgelive::ha::message::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Message::Publication { publication, .. }) = Message::parse(data) {
        if let Ok(json) = publication.data_json() {
            assert!(edgelive::json::is_compact(json.get()));
        }
        if let Some(info) = publication.info {
            let _ = info.into_reply();
        }
    }
});
