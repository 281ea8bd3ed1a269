//! RFC 6455 rules a server must get right, checked with a raw peer that writes frames byte by
//! byte (no WebSocket library on the client side, so it can break every rule on purpose):
//! fragmentation with interleaved control frames, UTF-8 validation (1007), reserved bits and
//! opcodes (1002), masking, control-frame limits, the close handshake's codes, and the size
//! limit (1009). Autobahn's suite cannot run here (Python 2 only); these are its server cases
//! that matter for our endpoint.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::Daemon;

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONT: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;

/// A raw client: the HTTP upgrade by hand, then frames as bytes.
struct Raw {
    s: TcpStream,
}

#[derive(Debug, PartialEq, Eq)]
enum Got {
    Text(String),
    Pong(Vec<u8>),
    Close(Option<u16>),
    Eof,
}

impl Raw {
    fn open(d: &Daemon) -> Raw {
        let mut s = TcpStream::connect(d.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET /api/live/ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            d.addr
        )
        .unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
        Raw { s }
    }

    /// Writes one frame: `first` holds FIN, RSV and opcode bits; masked unless `unmasked`.
    fn frame_bits(&mut self, first: u8, payload: &[u8], unmasked: bool) {
        let mut f = vec![first];
        let mask_bit = if unmasked { 0 } else { 0x80 };
        match payload.len() {
            n if n < 126 => f.push(mask_bit | n as u8),
            n if n < 65536 => {
                f.push(mask_bit | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(mask_bit | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if unmasked {
            f.extend_from_slice(payload);
        } else {
            let key = [0x37, 0xfa, 0x21, 0x3d];
            f.extend_from_slice(&key);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        // The peer may have closed already; what it sent back is what the test reads.
        let _ = self.s.write_all(&f);
    }

    fn frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.frame_bits(if fin { 0x80 } else { 0 } | opcode, payload, false);
    }

    fn text(&mut self, t: &str) {
        self.frame(true, TEXT, t.as_bytes());
    }

    fn connect(&mut self) {
        self.text(r#"{"id":1,"connect":{}}"#);
        match self.next() {
            Got::Text(t) => assert!(t.contains(r#""connect":{"client""#), "{t}"),
            other => panic!("expected the connect reply, got {other:?}"),
        }
    }

    fn close(&mut self, payload: &[u8]) {
        self.frame(true, CLOSE, payload);
    }

    /// The next frame from the server (server frames are never masked).
    fn next(&mut self) -> Got {
        let mut h = [0u8; 2];
        if self.s.read_exact(&mut h).is_err() {
            return Got::Eof;
        }
        assert_eq!(h[1] & 0x80, 0, "a server frame must not be masked");
        assert_eq!(h[0] & 0x70, 0, "no reserved bits from the server");
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                self.s.read_exact(&mut l).unwrap();
                u16::from_be_bytes(l) as usize
            }
            127 => {
                let mut l = [0u8; 8];
                self.s.read_exact(&mut l).unwrap();
                u64::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        self.s.read_exact(&mut payload).unwrap();
        match h[0] & 0x0f {
            TEXT => Got::Text(String::from_utf8(payload).expect("server text is UTF-8")),
            0xA => Got::Pong(payload),
            CLOSE => Got::Close((len >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))),
            op => panic!("unexpected opcode {op:#x} from the server"),
        }
    }

    /// Skips text (pings, replies) until a close frame or EOF; returns the close code.
    fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.next() {
                Got::Close(c) => return c,
                Got::Eof => return None,
                Got::Text(_) | Got::Pong(_) => {}
            }
        }
    }
}

#[test]
fn a_fragmented_message_with_an_interleaved_ping_is_reassembled_and_the_ping_answered() {
    let d = Daemon::start(&[]);
    let mut r = Raw::open(&d);
    r.frame(false, TEXT, br#"{"id":1,"#);
    r.frame(true, PING, b"are you there");
    r.frame(false, CONT, br#""connect":"#);
    r.frame(true, CONT, b"{}}");
    assert_eq!(r.next(), Got::Pong(b"are you there".to_vec()));
    match r.next() {
        Got::Text(t) => assert!(t.starts_with(r#"{"id":1,"connect":{"client""#), "{t}"),
        other => panic!("{other:?}"),
    }
    // A UTF-8 character split across two fragments is fine: only the whole must be valid.
    let cmd = r#"{"id":2,"subscribe":{"channel":"grafana/broadcast/é"}}"#.as_bytes();
    let split = cmd.iter().position(|&b| b == 0xC3).unwrap() + 1;
    r.frame(false, TEXT, &cmd[..split]);
    r.frame(true, CONT, &cmd[split..]);
    match r.next() {
        // The channel has a character channels may not hold: a 107 reply, not a close.
        Got::Text(t) => assert!(t.contains(r#""code":107"#), "{t}"),
        other => panic!("{other:?}"),
    }
    r.close(&1000u16.to_be_bytes());
    assert_eq!(r.close_code(), Some(1000));
}

#[test]
fn invalid_utf8_in_text_closes_1007_whole_or_fragmented() {
    let d = Daemon::start(&[]);
    let mut r = Raw::open(&d);
    r.frame(
        true,
        TEXT,
        b"{\"id\":1,\"connect\":{\"name\":\"\xff\xfe\"}}",
    );
    assert_eq!(r.close_code(), Some(1007));
    let mut r = Raw::open(&d);
    r.connect();
    r.frame(false, TEXT, b"{\"id\":2,\"ping\":");
    r.frame(true, CONT, b"{\"x\":\"\xc3\x28\"}}");
    assert_eq!(r.close_code(), Some(1007));
}

#[test]
fn reserved_bits_and_reserved_opcodes_close_1002() {
    let d = Daemon::start(&[]);
    for first in [0x80 | 0x40 | TEXT, 0x80 | 0x20 | TEXT, 0x80 | 0x10 | PING] {
        let mut r = Raw::open(&d);
        r.frame_bits(first, br#"{"id":1,"connect":{}}"#, false);
        assert_eq!(r.close_code(), Some(1002), "first byte {first:#x}");
    }
    for opcode in [0x3, 0x7, 0xB, 0xF] {
        let mut r = Raw::open(&d);
        r.connect();
        r.frame(true, opcode, b"x");
        assert_eq!(r.close_code(), Some(1002), "opcode {opcode:#x}");
    }
}

#[test]
fn an_unmasked_client_frame_closes_1002() {
    let d = Daemon::start(&[]);
    let mut r = Raw::open(&d);
    r.frame_bits(0x80 | TEXT, br#"{"id":1,"connect":{}}"#, true);
    assert_eq!(r.close_code(), Some(1002));
}

#[test]
fn oversized_or_fragmented_control_frames_close_1002() {
    let d = Daemon::start(&[]);
    let mut r = Raw::open(&d);
    r.connect();
    r.frame(true, PING, &[b'p'; 126]);
    assert_eq!(r.close_code(), Some(1002));
    let mut r = Raw::open(&d);
    r.connect();
    r.frame(false, PING, b"half a ping");
    assert_eq!(r.close_code(), Some(1002));
}

#[test]
fn broken_fragment_sequences_close_1002() {
    let d = Daemon::start(&[]);
    let mut r = Raw::open(&d);
    r.connect();
    r.frame(true, CONT, b"{}");
    assert_eq!(r.close_code(), Some(1002), "continuation without a start");
    let mut r = Raw::open(&d);
    r.connect();
    r.frame(false, TEXT, b"{\"id\":2,");
    r.frame(true, TEXT, b"{\"id\":3,\"ping\":{}}");
    assert_eq!(
        r.close_code(),
        Some(1002),
        "a new message inside a fragmented one"
    );
    let mut r = Raw::open(&d);
    r.connect();
    r.frame(false, BINARY, b"{\"id\":2,");
    r.frame(true, TEXT, b"\"ping\":{}}");
    assert_eq!(
        r.close_code(),
        Some(1002),
        "a text frame inside a fragmented binary one"
    );
}

#[test]
fn the_close_handshake_echoes_valid_codes_and_refuses_invalid_ones() {
    let d = Daemon::start(&[]);
    for code in [1000u16, 1001, 1003, 1007, 1011, 3000, 3999, 4000, 4999] {
        let mut r = Raw::open(&d);
        r.connect();
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice("bye ✓".as_bytes());
        r.close(&payload);
        assert_eq!(r.close_code(), Some(code), "code {code}");
        // After the close handshake the server ends the TCP connection.
        assert_eq!(r.next(), Got::Eof);
    }
    let mut r = Raw::open(&d);
    r.close(&[]);
    assert_eq!(
        r.close_code(),
        Some(1000),
        "an empty close is answered with 1000"
    );
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
        let mut r = Raw::open(&d);
        r.connect();
        r.close(&code.to_be_bytes());
        assert_eq!(r.close_code(), Some(1002), "code {code}");
    }
    let mut r = Raw::open(&d);
    r.close(&[0x03]);
    assert_eq!(r.close_code(), Some(1002), "a one-byte close payload");
    let mut r = Raw::open(&d);
    r.close(b"\x03\xe8\xff");
    assert_eq!(
        r.close_code(),
        Some(1007),
        "a close reason that is not UTF-8"
    );
}

#[test]
fn a_message_over_the_size_limit_closes_1009() {
    let d = Daemon::start(&[("EDGELIVE_LIVE_MESSAGE_SIZE_LIMIT", "1024")]);
    let mut r = Raw::open(&d);
    r.connect();
    let big = format!(r#"{{"id":2,"ping":{{"pad":"{}"}}}}"#, "x".repeat(2000));
    r.text(&big);
    assert_eq!(r.close_code(), Some(1009));
    // Exactly at the limit is fine.
    let mut r = Raw::open(&d);
    r.connect();
    let pad = 1024 - r#"{"id":2,"ping":{"pad":""}}"#.len();
    r.text(&format!(
        r#"{{"id":2,"ping":{{"pad":"{}"}}}}"#,
        "x".repeat(pad)
    ));
    match r.next() {
        Got::Text(t) => assert_eq!(t, r#"{"id":2,"ping":{}}"#),
        other => panic!("{other:?}"),
    }
}
