//! `wsframe::Decoder` against fastwebsockets' frame reader: for any client byte stream read in
//! any pieces, they return the same frames and end the same way, except where the decoder is
//! stricter on purpose (the agreement is defined in `src/wsframe/differential.rs`).
//!
//! Frame streams are structured (any first byte, mask or not, every length form, mismatched
//! declared lengths, then an arbitrary tail), or raw bytes.
#![no_main]

use arbitrary::Arbitrary;
use edgelive::wsframe::{Decoder, OpCode, WireError};
use libfuzzer_sys::fuzz_target;

#[path = "../../src/wsframe/differential.rs"]
mod differential;

use differential::{check, encode, FrameSpec};

#[derive(Arbitrary, Debug)]
struct Frame {
    first: u8,
    mask: Option<[u8; 4]>,
    form: u8,
    declared: Option<u64>,
    payload: Vec<u8>,
    /// A payload this long of one repeated byte (reaches the 16- and 64-bit length forms).
    long: Option<(u16, u8)>,
}

#[derive(Arbitrary, Debug)]
enum Input {
    Frames {
        frames: Vec<Frame>,
        tail: Vec<u8>,
        cuts: Vec<u16>,
    },
    Raw {
        bytes: Vec<u8>,
        cuts: Vec<u8>,
    },
}

fuzz_target!(|input: Input| {
    let (stream, cuts): (Vec<u8>, Vec<usize>) = match input {
        Input::Frames { frames, tail, cuts } => {
            let specs: Vec<FrameSpec> = frames
                .into_iter()
                .map(|f| FrameSpec {
                    first: f.first,
                    mask: f.mask,
                    form: f.form % 3,
                    declared: f.declared,
                    payload: match f.long {
                        Some((n, b)) => vec![b; usize::from(n) + 100],
                        None => f.payload,
                    },
                })
                .collect();
            let mut s = encode(&specs);
            s.extend_from_slice(&tail);
            (s, cuts.into_iter().map(usize::from).collect())
        }
        Input::Raw { bytes, cuts } => (bytes, cuts.into_iter().map(usize::from).collect()),
    };
    if let Err(e) = check(&stream, &cuts) {
        panic!("{e}");
    }
});
