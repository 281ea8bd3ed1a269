//! `MaskCheck` against fastwebsockets' own frame parser: for any byte stream, split at any read
//! boundaries, the two must agree on where frames begin and end.
//!
//! The reference is a plain reading of RFC 6455 §5.2's header layout (`layout`), itself checked
//! against fastwebsockets: every frame fastwebsockets returns must be the layout's next frame
//! (same fin, opcode and unmasked payload). "Agree" then means, with `k` the first frame whose
//! mask bit is clear (its first two bytes are in the stream):
//! - no such frame: fastwebsockets over `MaskCheck` returns exactly what it returns alone, frames
//!   and final error alike (`MaskCheck` never fires and never stalls);
//! - else, over `MaskCheck` it returns a prefix of those frames, never frame `k` or a later one;
//!   it ends with the `Unmasked` error whenever fastwebsockets alone got as far as frame `k`
//!   (returned it, or failed inside it); when fastwebsockets alone failed earlier, it ends with
//!   that same error after the same frames, or with `Unmasked` (the masking check sees bytes
//!   as they are read, so read-ahead may reach frame `k` first: the connection fails either way);
//! - read directly, `MaskCheck` fails on exactly the read that brings frame `k`'s second byte.
//!
//! Shared by masking's tests and the `ws_masking` fuzz target (which includes this file), so it
//! names only `super::{MaskCheck, Unmasked}` and other crates.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use fastwebsockets::{Role, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{MaskCheck, Unmasked};

/// Frames larger than this are refused by fastwebsockets (so huge declared lengths cost nothing).
pub const MAX_MESSAGE: usize = 1 << 16;

/// A frame to write: its first byte as is (fin, rsv bits, opcode), its mask key if masked, the
/// length encoding, and the payload before masking.
#[derive(Debug, Clone)]
pub struct FrameSpec {
    pub first: u8,
    pub mask: Option<[u8; 4]>,
    /// 0: shortest form; 1: 16-bit extended even when shorter would do; 2: 64-bit extended.
    pub form: u8,
    /// Declares this length instead of the payload's (the stream then desynchronises: the
    /// reference follows the bytes, not the specs).
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

/// One frame as the header layout places it.
#[derive(Debug)]
struct Head {
    start: usize,
    first: u8,
    masked: bool,
    /// Where the payload starts and ends (`None`: the header is cut short by the stream's end).
    payload: Option<(usize, u64)>,
    key: [u8; 4],
}

/// The frames of `stream` by RFC 6455 §5.2, up to its end (the last may be cut short).
fn layout(stream: &[u8]) -> Vec<Head> {
    let mut heads = Vec::new();
    let mut at = 0usize;
    while stream.len() - at >= 2 {
        let (first, second) = (stream[at], stream[at + 1]);
        let masked = second & 0x80 != 0;
        let ext = match second & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let head_len = 2 + ext + if masked { 4 } else { 0 };
        let mut h = Head {
            start: at,
            first,
            masked,
            payload: None,
            key: [0; 4],
        };
        if stream.len() - at < head_len {
            heads.push(h);
            break;
        }
        let len = match ext {
            0 => u64::from(second & 0x7f),
            2 => u64::from(u16::from_be_bytes([stream[at + 2], stream[at + 3]])),
            _ => u64::from_be_bytes(stream[at + 2..at + 10].try_into().expect("8 bytes")),
        };
        if masked {
            h.key.copy_from_slice(&stream[at + 2 + ext..at + head_len]);
        }
        let body = at + head_len;
        h.payload = Some((body, len));
        heads.push(h);
        match u64::try_from(stream.len() - body) {
            Ok(left) if left >= len => at = body + len as usize,
            _ => break,
        }
    }
    heads
}

/// An in-memory client: hands out `stream` in reads of the given sizes (cycled), then EOF.
struct Chunked<'a> {
    stream: &'a [u8],
    cuts: &'a [usize],
    next: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let cut = match self.cuts {
            [] => usize::MAX,
            c => c[self.next % c.len()].max(1),
        };
        self.next += 1;
        let n = cut.min(self.stream.len()).min(buf.remaining());
        let (now, rest) = self.stream.split_at(n);
        buf.put_slice(now);
        self.stream = rest;
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

/// What a reader returned: its frames (fin, opcode, unmasked payload), then how it ended.
#[derive(Debug, PartialEq)]
struct Read {
    frames: Vec<(bool, u8, Vec<u8>)>,
    end: String,
}

const UNMASKED: &str = "unmasked";

fn read_all<S: AsyncRead + AsyncWrite + Unpin>(io: S) -> Read {
    let mut ws = WebSocket::after_handshake(io, Role::Server);
    ws.set_auto_close(false);
    ws.set_auto_pong(false);
    ws.set_max_message_size(MAX_MESSAGE);
    let mut frames = Vec::new();
    loop {
        match now(ws.read_frame()) {
            Ok(f) => frames.push((f.fin, f.opcode as u8, f.payload.to_vec())),
            Err(fastwebsockets::WebSocketError::IoError(e)) if Unmasked::caused(&e) => {
                return Read {
                    frames,
                    end: UNMASKED.into(),
                }
            }
            Err(e) => {
                return Read {
                    frames,
                    end: e.to_string(),
                }
            }
        }
    }
}

/// Checks the agreement above for one stream read in pieces of `cuts` (cycled; empty: at once).
pub fn check(stream: &[u8], cuts: &[usize]) -> Result<(), String> {
    let heads = layout(stream);
    let plain = read_all(Chunked {
        stream,
        cuts,
        next: 0,
    });
    for (i, (fin, opcode, payload)) in plain.frames.iter().enumerate() {
        let h = heads
            .get(i)
            .ok_or_else(|| format!("fastwebsockets returned frame {i} beyond the layout"))?;
        let (body, len) = h
            .payload
            .ok_or_else(|| format!("frame {i}: fastwebsockets returned a cut-short header"))?;
        let want: Vec<u8> = stream
            .get(body..body + len as usize)
            .ok_or_else(|| format!("frame {i}: fastwebsockets returned a cut-short payload"))?
            .iter()
            .enumerate()
            .map(|(j, b)| if h.masked { b ^ h.key[j % 4] } else { *b })
            .collect();
        if (*fin, *opcode, payload) != (h.first & 0x80 != 0, h.first & 0x0f, &want) {
            return Err(format!(
                "frame {i}: fastwebsockets and the layout disagree: {h:?}"
            ));
        }
    }
    let checked = read_all(MaskCheck::new(Chunked {
        stream,
        cuts,
        next: 0,
    }));
    let n = checked.frames.len();
    if n > plain.frames.len() || checked.frames[..] != plain.frames[..n] {
        return Err(format!(
            "over MaskCheck: {n} frames, not a prefix of the {} read alone",
            plain.frames.len()
        ));
    }
    let k = heads.iter().position(|h| !h.masked);
    match k {
        None if checked != plain => {
            return Err(format!(
                "all masked, yet over MaskCheck {n} frames and {:?}, alone {} and {:?}",
                checked.end,
                plain.frames.len(),
                plain.end
            ))
        }
        None => {}
        Some(k) if n > k => return Err(format!("over MaskCheck: unmasked frame {k} returned")),
        Some(k) if k <= plain.frames.len() && checked.end != UNMASKED => {
            return Err(format!(
                "unmasked frame {k} reached, yet over MaskCheck the end is {:?}",
                checked.end
            ))
        }
        Some(_) if checked.end != UNMASKED && checked != plain => {
            return Err(format!(
                "over MaskCheck: {n} frames and {:?}, alone {} and {:?}",
                checked.end,
                plain.frames.len(),
                plain.end
            ))
        }
        Some(_) => {}
    }
    direct(stream, cuts, k.map(|k| heads[k].start + 1))
}

/// Reads `MaskCheck` itself: it fails on the read holding byte `fails_at`, and only there.
fn direct(stream: &[u8], cuts: &[usize], fails_at: Option<usize>) -> Result<(), String> {
    let mut m = MaskCheck::new(Chunked {
        stream,
        cuts,
        next: 0,
    });
    let mut space = vec![0u8; stream.len().max(1)];
    let mut got = 0;
    loop {
        let mut buf = ReadBuf::new(&mut space);
        let r = Pin::new(&mut m).poll_read(&mut Context::from_waker(Waker::noop()), &mut buf);
        let n = buf.filled().len();
        match (r, fails_at) {
            (Poll::Ready(Ok(())), _) if n == 0 => {
                return match fails_at {
                    None => Ok(()),
                    Some(at) => Err(format!("MaskCheck read to the end past byte {at}")),
                }
            }
            (Poll::Ready(Ok(())), Some(at)) if got + n > at => {
                return Err(format!("MaskCheck passed the read holding byte {at}"))
            }
            (Poll::Ready(Ok(())), _) => got += n,
            (Poll::Ready(Err(e)), Some(at)) if Unmasked::caused(&e) && got + n > at => {
                return Ok(())
            }
            (r, _) => return Err(format!("MaskCheck read {got} bytes, then {r:?}")),
        }
    }
}
