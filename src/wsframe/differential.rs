//! The decoder against fastwebsockets' frame reader: for any client byte stream, read in pieces
//! of any size, they return the same frames (fin, opcode, unmasked payload) and end the same way,
//! except where the decoder is stricter on purpose:
//! - an unmasked frame, or a close or pong frame over 125 bytes (fastwebsockets checks neither):
//!   the decoder refuses it after the same frames, where fastwebsockets returns it or ends there
//!   in its own way;
//! - a final text frame that is not UTF-8: fastwebsockets refuses it, the decoder returns it
//!   (whole messages are checked one layer up, after reassembly), so the comparison ends there.
//!
//! Errors pair up as: reserved bits, reserved opcode (`InvalidValue`), fragmented control
//! frame, ping over 125 bytes, frame over the limit, and the end of the stream
//! (`UnexpectedEOF`, the decoder waiting for more).
//!
//! Shared by wsframe's tests and the `ws_frames` fuzz target (which includes this file), so it
//! names only `super::{Decoder, OpCode, WireError}` and other crates.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use fastwebsockets::{Role, WebSocket, WebSocketError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Decoder, OpCode, WireError};

/// Frames of this size or larger are refused by fastwebsockets (so huge declared lengths cost
/// nothing); the decoder's limit is one less.
pub const MAX_MESSAGE: usize = 1 << 16;

/// A frame to write: its first byte as is (fin, rsv bits, opcode), its mask key if masked, the
/// length encoding, and the payload before masking.
#[derive(Debug, Clone)]
pub struct FrameSpec {
    pub first: u8,
    pub mask: Option<[u8; 4]>,
    /// 0: shortest form; 1: 16-bit extended even when shorter would do; 2: 64-bit extended.
    pub form: u8,
    /// Declares this length instead of the payload's (the stream then desynchronises).
    pub declared: Option<u64>,
    pub payload: Vec<u8>,
}

/// Writes frames as a client would (or should not).
pub fn encode(frames: &[FrameSpec]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        out.push(f.first);
        let mask_bit = if f.mask.is_some() { 0x80 } else { 0 };
        let len = f.declared.unwrap_or(f.payload.len() as u64);
        match f.form {
            0 if len < 126 => out.push(mask_bit | len as u8),
            0 | 1 if len < 65536 => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        match f.mask {
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(f.payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            }
            None => out.extend_from_slice(&f.payload),
        }
    }
    out
}

/// An in-memory client: hands out `stream` in reads of the given sizes (cycled), then EOF.
struct Chunked<'a> {
    stream: &'a [u8],
    cuts: &'a [usize],
    next: usize,
}

impl Chunked<'_> {
    fn piece(&mut self, room: usize) -> &[u8] {
        let cut = match self.cuts {
            [] => usize::MAX,
            c => c[self.next % c.len()].max(1),
        };
        self.next += 1;
        let (now, rest) = self.stream.split_at(cut.min(self.stream.len()).min(room));
        self.stream = rest;
        now
    }
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let room = buf.remaining();
        buf.put_slice(self.piece(room));
        Poll::Ready(Ok(()))
    }
}

/// Nothing is written: auto close and auto pong are off.
impl AsyncWrite for Chunked<'_> {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Runs a future that never waits (every read above is ready at once).
fn now<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an in-memory read waited"),
    }
}

type Frames = Vec<(bool, u8, Vec<u8>)>;

/// How a reader ended, in the pairs the module comment lists.
#[derive(Debug, PartialEq, Clone)]
enum End {
    Eof,
    Reserved,
    Opcode,
    FragmentedControl,
    LongPing,
    TooLarge,
    Utf8,
    /// Only the decoder: its stricter checks.
    Stricter(WireError),
    Other(String),
}

fn reference(stream: &[u8], cuts: &[usize]) -> (Frames, End) {
    let mut ws = WebSocket::after_handshake(
        Chunked {
            stream,
            cuts,
            next: 0,
        },
        Role::Server,
    );
    ws.set_auto_close(false);
    ws.set_auto_pong(false);
    ws.set_max_message_size(MAX_MESSAGE);
    let mut frames = Vec::new();
    loop {
        let end = match now(ws.read_frame()) {
            Ok(f) => {
                frames.push((f.fin, f.opcode as u8, f.payload.to_vec()));
                continue;
            }
            Err(WebSocketError::UnexpectedEOF) => End::Eof,
            Err(WebSocketError::ReservedBitsNotZero) => End::Reserved,
            Err(WebSocketError::InvalidValue) => End::Opcode,
            Err(WebSocketError::ControlFrameFragmented) => End::FragmentedControl,
            Err(WebSocketError::PingFrameTooLarge) => End::LongPing,
            Err(WebSocketError::FrameTooLarge) => End::TooLarge,
            Err(WebSocketError::InvalidUTF8) => End::Utf8,
            Err(e) => End::Other(e.to_string()),
        };
        return (frames, end);
    }
}

fn decoded(stream: &[u8], cuts: &[usize]) -> (Frames, End) {
    let mut chunks = Chunked {
        stream,
        cuts,
        next: 0,
    };
    let mut d = Decoder::new(&[]);
    let mut frames = Vec::new();
    loop {
        match d.next_frame(MAX_MESSAGE - 1) {
            Ok(Some(f)) => {
                let payload = d.payload(&f).to_vec();
                if f.fin && f.opcode == OpCode::Text && std::str::from_utf8(&payload).is_err() {
                    return (frames, End::Utf8);
                }
                frames.push((f.fin, f.opcode as u8, payload));
            }
            Ok(None) => {
                let piece = chunks.piece(usize::MAX);
                if piece.is_empty() {
                    return (frames, End::Eof);
                }
                d.space().extend_from_slice(piece);
            }
            Err(e) => {
                let end = match e {
                    WireError::Reserved => End::Reserved,
                    WireError::Opcode(_) => End::Opcode,
                    WireError::FragmentedControl => End::FragmentedControl,
                    WireError::LongControl {
                        opcode: OpCode::Ping,
                        ..
                    } => End::LongPing,
                    WireError::TooLarge(_) => End::TooLarge,
                    stricter => End::Stricter(stricter),
                };
                return (frames, end);
            }
        }
    }
}

/// Where frame `n` starts, by RFC 6455 §5.2's header layout (`None` past the stream).
fn frame_start(stream: &[u8], n: usize) -> Option<usize> {
    let mut at = 0usize;
    for _ in 0..n {
        let second = *stream.get(at + 1)?;
        let ext = match second & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let len = declared(stream, at)?;
        let head = 2 + ext + if second & 0x80 != 0 { 4 } else { 0 };
        at = at
            .checked_add(head)?
            .checked_add(usize::try_from(len).ok()?)?;
    }
    Some(at)
}

/// The payload length frame header at `at` declares.
fn declared(stream: &[u8], at: usize) -> Option<u64> {
    let second = *stream.get(at + 1)?;
    Some(match second & 0x7f {
        126 => u64::from(u16::from_be_bytes(
            stream.get(at + 2..at + 4)?.try_into().ok()?,
        )),
        127 => u64::from_be_bytes(stream.get(at + 2..at + 10)?.try_into().ok()?),
        n => u64::from(n),
    })
}

/// A stricter refusal names what frame `n`'s header really says.
fn justified(stream: &[u8], n: usize, e: &WireError) -> Result<(), String> {
    let at = frame_start(stream, n).ok_or_else(|| format!("refused ({e}) past the stream"))?;
    let (first, second) = match stream.get(at..at + 2) {
        Some(&[a, b]) => (a, b),
        _ => {
            return Err(format!(
                "refused ({e}) frame {n} without its first two bytes"
            ))
        }
    };
    let ok = match e {
        WireError::Unmasked => second & 0x80 == 0,
        WireError::LongControl { opcode, len } => {
            first & 0x0f == *opcode as u8
                && matches!(opcode, OpCode::Close | OpCode::Pong)
                && *len > 125
                && declared(stream, at) == Some(*len)
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "refused frame {n} ({e}), but its header is {first:#04x} {second:#04x}"
        ))
    }
}

/// Checks the agreement above for one stream read in pieces of `cuts` (cycled; empty: at once).
pub fn check(stream: &[u8], cuts: &[usize]) -> Result<(), String> {
    let (want, want_end) = reference(stream, cuts);
    let (got, got_end) = decoded(stream, cuts);
    let n = got.len();
    if let End::Stricter(e) = &got_end {
        // fastwebsockets returned the same frames before it, and that frame or ended there.
        if n > want.len() || got[..n] != want[..n] {
            return Err(format!(
                "decoder refused ({e}) after {n} frames, not a prefix of fastwebsockets' {}",
                want.len()
            ));
        }
        return justified(stream, n, e);
    }
    if got != want || got_end != want_end {
        return Err(format!(
            "decoder: {n} frames then {got_end:?}; fastwebsockets: {} then {want_end:?}",
            want.len()
        ));
    }
    Ok(())
}
