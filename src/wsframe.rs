//! WebSocket frames on the wire (RFC 6455 §5), without I/O: a decoder for what clients send and
//! the header of what the server sends.
//!
//! Written by hand instead of reading with fastwebsockets, for memory: fastwebsockets' reader
//! keeps an 8 KiB buffer per connection for the connection's whole life (private to its
//! `ReadHalf`, never shrunk), which was 45% of the heap an idle connection took (massif, 200
//! idle subscribers; issue 14). This decoder's buffer holds only bytes not yet decoded and is
//! freed whenever it is empty, so a connection waiting for input holds none. It also enforces
//! what fastwebsockets 0.10 lets through: client frames must be masked (§5.1), and no control
//! frame may carry more than 125 bytes (§5.5). fastwebsockets is still used for the upgrade
//! handshake, and as the reference the decoder is checked against (`differential`, the
//! `ws_frames` fuzz target).

use std::ops::Range;

/// A frame's opcode (§5.2); the reserved ones are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation = 0,
    Text = 1,
    Binary = 2,
    Close = 8,
    Ping = 9,
    Pong = 10,
}

impl OpCode {
    fn of(bits: u8) -> Result<OpCode, WireError> {
        Ok(match bits {
            0 => OpCode::Continuation,
            1 => OpCode::Text,
            2 => OpCode::Binary,
            8 => OpCode::Close,
            9 => OpCode::Ping,
            10 => OpCode::Pong,
            other => return Err(WireError::Opcode(other)),
        })
    }

    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// Why a client's byte stream cannot be read on; each is a protocol error (1002) except a frame
/// over the size limit (1009).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("reserved bits set")]
    Reserved,
    #[error("reserved opcode {0}")]
    Opcode(u8),
    #[error("unmasked client frame")]
    Unmasked,
    #[error("fragmented control frame")]
    FragmentedControl,
    #[error("{opcode:?} frame of {len} bytes (at most 125)")]
    LongControl { opcode: OpCode, len: u64 },
    #[error("frame of {0} bytes over the limit")]
    TooLarge(u64),
}

/// A frame decoded in the buffer: its payload stays readable through `Decoder::payload` until
/// the buffer is next prepared for a read.
#[derive(Debug, Clone)]
pub struct FrameAt {
    pub fin: bool,
    pub opcode: OpCode,
    payload: Range<usize>,
}

/// Client frames out of the bytes read so far.
#[derive(Debug)]
pub struct Decoder {
    /// Bytes read and not yet decoded start at `start`; everything before was decoded.
    buf: Vec<u8>,
    start: usize,
    /// Bytes the frame at `start` still lacks (so a read can make room for all of it at once).
    missing: usize,
}

/// What one read asks for at least: as much as fastwebsockets read at a time.
pub const READ_CHUNK: usize = 8192;
/// Most room made ahead of bytes that have not arrived: a header alone may declare up to the
/// limit, and must not make the daemon reserve it (the buffer grows as the bytes come).
const MAX_AHEAD: usize = 64 * 1024;

impl Decoder {
    /// `pre_read`: bytes that arrived with the upgrade request.
    pub fn new(pre_read: &[u8]) -> Decoder {
        Decoder {
            buf: pre_read.to_vec(),
            start: 0,
            missing: 0,
        }
    }

    /// The next whole frame in the buffer, unmasked in place; `None` until more bytes arrive.
    /// A data frame may carry at most `limit` bytes (the caller passes what is left of its
    /// message budget for a continuation). An error is final: the stream cannot be
    /// resynchronised.
    pub fn next_frame(&mut self, limit: usize) -> Result<Option<FrameAt>, WireError> {
        let bytes = &self.buf[self.start..];
        if bytes.len() < 2 {
            self.missing = 2 - bytes.len();
            return Ok(None);
        }
        let (first, second) = (bytes[0], bytes[1]);
        if first & 0x70 != 0 {
            return Err(WireError::Reserved);
        }
        let opcode = OpCode::of(first & 0x0f)?;
        let fin = first & 0x80 != 0;
        if second & 0x80 == 0 {
            return Err(WireError::Unmasked);
        }
        let ext = match second & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let head = 2 + ext + 4;
        if bytes.len() < head {
            self.missing = head - bytes.len();
            return Ok(None);
        }
        let len = match ext {
            0 => u64::from(second & 0x7f),
            2 => u64::from(u16::from_be_bytes([bytes[2], bytes[3]])),
            _ => u64::from_be_bytes(bytes[2..10].try_into().expect("8 bytes")),
        };
        if opcode.is_control() {
            if !fin {
                return Err(WireError::FragmentedControl);
            }
            if len > 125 {
                return Err(WireError::LongControl { opcode, len });
            }
        } else if len > limit as u64 {
            return Err(WireError::TooLarge(len));
        }
        // At most the limit, so it fits a usize (and `head + len` is never formed: it could
        // wrap on 32 bits with a limit near `usize::MAX`).
        let len = len as usize;
        let have = bytes.len() - head;
        if have < len {
            self.missing = len - have;
            return Ok(None);
        }
        let key: [u8; 4] = bytes[head - 4..head].try_into().expect("4 bytes");
        let payload = self.start + head..self.start + head + len;
        unmask(&mut self.buf[payload.clone()], key);
        self.start = payload.end;
        self.missing = 0;
        Ok(Some(FrameAt {
            fin,
            opcode,
            payload,
        }))
    }

    /// A decoded frame's payload.
    pub fn payload(&self, frame: &FrameAt) -> &[u8] {
        &self.buf[frame.payload.clone()]
    }

    /// Drops what was decoded (invalidating earlier `FrameAt`s). Frees the buffer when nothing
    /// undecoded is left, so an idle connection holds no read buffer, and shrinks one that a
    /// large frame grew when only a little is left.
    pub fn settle(&mut self) {
        if self.start == self.buf.len() {
            self.buf = Vec::new();
        } else if self.start > 0 {
            self.buf.drain(..self.start);
        }
        self.start = 0;
        let room = self.buf.len() + self.ahead();
        if self.buf.capacity() > 2 * room {
            self.buf.shrink_to(room);
        }
    }

    /// Room to make past what is buffered: a read chunk, or the rest of the frame being
    /// received up to `MAX_AHEAD`.
    fn ahead(&self) -> usize {
        self.missing.clamp(READ_CHUNK, MAX_AHEAD)
    }

    /// After `settle`: the buffer to read into, with `ahead` bytes of room.
    pub fn space(&mut self) -> &mut Vec<u8> {
        self.settle();
        self.buf.reserve(self.ahead());
        &mut self.buf
    }

    /// Bytes read and not decoded yet.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// XORs a payload with its client's mask key (§5.3), eight bytes at a time.
pub fn unmask(payload: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes((&*c).try_into().expect("8 bytes")) ^ wide;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// The header of an unmasked, final server frame of `len` bytes; returns how many of `out`'s
/// bytes it took.
pub fn server_header(opcode: OpCode, len: usize, out: &mut [u8; 10]) -> usize {
    out[0] = 0x80 | opcode as u8;
    match len {
        n if n < 126 => {
            out[1] = n as u8;
            2
        }
        n if n < 65536 => {
            out[1] = 126;
            out[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            4
        }
        n => {
            out[1] = 127;
            out[2..10].copy_from_slice(&(n as u64).to_be_bytes());
            10
        }
    }
}

/// A close frame's payload (§5.5.1): the code, then the reason cut to fit 125 bytes on a
/// character boundary.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut p = Vec::with_capacity(2 + end);
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(&reason.as_bytes()[..end]);
    p
}

#[cfg(test)]
pub mod differential;

#[cfg(test)]
mod tests {
    use super::differential::{check, encode, FrameSpec};
    use super::*;
    use proptest::prelude::*;

    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        encode(&[FrameSpec {
            first,
            mask: Some([1, 2, 3, 4]),
            form: 0,
            declared: None,
            payload: payload.to_vec(),
        }])
    }

    fn decode_all(d: &mut Decoder) -> Result<Vec<(bool, OpCode, Vec<u8>)>, WireError> {
        let mut out = Vec::new();
        while let Some(f) = d.next_frame(100_000)? {
            out.push((f.fin, f.opcode, d.payload(&f).to_vec()));
        }
        Ok(out)
    }

    #[test]
    fn frames_of_every_length_form_come_out_unmasked() {
        let mut stream = Vec::new();
        for len in [0usize, 5, 125, 126, 300, 70_000] {
            stream.extend(masked(0x81, &vec![b'a'; len]));
        }
        let mut d = Decoder::new(&stream);
        let frames = decode_all(&mut d).unwrap();
        let lens: Vec<usize> = frames.iter().map(|f| f.2.len()).collect();
        assert_eq!(lens, [0, 5, 125, 126, 300, 70_000]);
        assert!(frames.iter().all(|f| f.2.iter().all(|&b| b == b'a')));
        assert_eq!(d.pending(), 0);
        d.settle();
        assert_eq!(d.buf.capacity(), 0, "an idle decoder holds no buffer");
    }

    #[test]
    fn a_frame_split_anywhere_is_decoded_once_whole() {
        let stream = masked(0x82, b"hello, world");
        let mut d = Decoder::new(&[]);
        for (i, b) in stream.iter().enumerate() {
            assert!(d.next_frame(1024).unwrap().is_none(), "byte {i}");
            d.space().push(*b);
        }
        let f = d.next_frame(1024).unwrap().unwrap();
        assert_eq!((f.fin, f.opcode), (true, OpCode::Binary));
        assert_eq!(d.payload(&f), b"hello, world");
    }

    #[test]
    fn what_a_server_must_refuse_is_refused() {
        let cases: [(Vec<u8>, WireError); 6] = [
            (vec![0x81, 0x02, b'{', b'}'], WireError::Unmasked),
            (masked(0xc1, b"x"), WireError::Reserved),
            (masked(0x83, b"x"), WireError::Opcode(3)),
            (masked(0x09, b""), WireError::FragmentedControl),
            (
                masked(0x8a, &[0; 126]),
                WireError::LongControl {
                    opcode: OpCode::Pong,
                    len: 126,
                },
            ),
            (masked(0x81, &[b'a'; 11]), WireError::TooLarge(11)),
        ];
        for (bytes, want) in cases {
            let mut d = Decoder::new(&bytes);
            assert_eq!(d.next_frame(10).unwrap_err(), want);
        }
        // Exactly the limit is fine; a close or pong of exactly 125 bytes too.
        let mut d = Decoder::new(&masked(0x81, &[b'a'; 10]));
        assert!(d.next_frame(10).unwrap().is_some());
        let mut d = Decoder::new(&masked(0x8a, &[0; 125]));
        assert!(d.next_frame(10).unwrap().is_some());
    }

    #[test]
    fn a_declared_length_over_the_limit_is_refused_before_its_payload_arrives() {
        let mut head = vec![0x82, 0x80 | 127];
        head.extend_from_slice(&u64::MAX.to_be_bytes());
        head.extend_from_slice(&[0; 4]);
        let mut d = Decoder::new(&head);
        assert_eq!(
            d.next_frame(1 << 20).unwrap_err(),
            WireError::TooLarge(u64::MAX)
        );
    }

    /// A header declaring a large frame makes room for at most `MAX_AHEAD`; the buffer grows
    /// as the bytes arrive, and shrinks once the frame is decoded and little is left.
    #[test]
    fn room_follows_the_bytes_not_the_declared_length() {
        let stream = masked(0x82, &vec![7; 1 << 20]);
        let mut d = Decoder::new(&stream[..14]);
        assert!(d.next_frame(1 << 21).unwrap().is_none());
        assert!(d.space().capacity() <= 14 + MAX_AHEAD);
        d.space().extend_from_slice(&stream[14..]);
        // Plus the next frame's first bytes.
        d.space().extend_from_slice(&masked(0x81, b"ab")[..3]);
        assert_eq!(
            d.next_frame(1 << 21).unwrap().unwrap().opcode,
            OpCode::Binary
        );
        assert!(d.next_frame(1 << 21).unwrap().is_none());
        d.settle();
        assert_eq!(d.pending(), 3);
        assert!(d.buf.capacity() <= 2 * READ_CHUNK, "{}", d.buf.capacity());
    }

    #[test]
    fn server_headers_and_close_payloads() {
        let mut h = [0; 10];
        let n = server_header(OpCode::Text, 5, &mut h);
        assert_eq!(&h[..n], &[0x81, 5]);
        let n = server_header(OpCode::Text, 300, &mut h);
        assert_eq!(&h[..n], &[0x81, 126, 1, 44]);
        assert_eq!(server_header(OpCode::Binary, 70_000, &mut h), 10);
        assert_eq!(&h[..2], &[0x82, 127]);
        let p = close_payload(1000, &"é".repeat(100));
        assert_eq!(p.len(), 2 + 122, "cut on a character boundary");
        assert!(std::str::from_utf8(&p[2..]).is_ok());
    }

    #[test]
    fn unmask_matches_the_bytewise_definition() {
        for len in 0..40 {
            let orig: Vec<u8> = (0..len as u8).collect();
            let key = [0x12, 0x34, 0x56, 0x78];
            let mut v = orig.clone();
            unmask(&mut v, key);
            let want: Vec<u8> = orig
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            assert_eq!(v, want);
        }
    }

    /// Any first byte (valid or not), masked or not, every length form, payloads around the
    /// 125/126 and 65535/65536 edges, sometimes a declared length that does not match.
    fn frame() -> impl Strategy<Value = FrameSpec> {
        let len = prop_oneof![0usize..130, 65530usize..65540, 120_000usize..120_010];
        (
            prop_oneof![
                Just(0x81u8),
                Just(0x82),
                Just(0x01),
                Just(0x80),
                Just(0x88),
                Just(0x89),
                Just(0x8a),
                Just(0x09),
                any::<u8>()
            ],
            prop::option::weighted(0.9, any::<[u8; 4]>()),
            0u8..3,
            prop::option::weighted(0.05, prop_oneof![0u64..200, Just(u64::MAX), any::<u64>()]),
            len,
            any::<u8>(),
        )
            .prop_map(|(first, mask, form, declared, len, fill)| FrameSpec {
                first,
                mask,
                form,
                declared,
                payload: (0..len)
                    .map(|i| fill.wrapping_add(i as u8) & 0x7f)
                    .collect(),
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The decoder and fastwebsockets agree (see `differential`) on generated frame
        /// streams, truncated anywhere, read in pieces of any size.
        #[test]
        fn agrees_with_fastwebsockets_on_frame_streams(
            frames in prop::collection::vec(frame(), 0..6),
            cut_at in any::<prop::sample::Index>(),
            cuts in prop::collection::vec(prop_oneof![1usize..16, 1usize..70_000], 0..5),
        ) {
            let mut stream = encode(&frames);
            if cut_at.index(8) == 0 {
                stream.truncate(cut_at.index(stream.len() + 1));
            }
            if let Err(e) = check(&stream, &cuts) {
                prop_assert!(false, "{e}; frames {:?}, cuts {cuts:?}", frames.iter().map(|f| (f.first, f.mask.is_some(), f.form, f.declared, f.payload.len())).collect::<Vec<_>>());
            }
        }

        /// Arbitrary bytes, not only well-formed frames.
        #[test]
        fn agrees_with_fastwebsockets_on_any_bytes(
            stream in prop::collection::vec(any::<u8>(), 0..300),
            cuts in prop::collection::vec(1usize..40, 0..5),
        ) {
            prop_assert_eq!(check(&stream, &cuts), Ok(()));
        }
    }
}
