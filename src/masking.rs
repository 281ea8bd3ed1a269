//! RFC 6455 §5.1: a server must close the connection when a client sends an unmasked frame.
//! fastwebsockets 0.10 unmasks what is masked and silently accepts what is not, and keeps the
//! mask bit private, so this wrapper watches the frame headers as bytes stream past (payloads
//! are skipped by length, never copied) and turns an unmasked client frame into a read error
//! that `websocket::close_for_error` maps to 1002.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The error (inside an `io::Error`) an unmasked frame raises.
#[derive(Debug, thiserror::Error)]
#[error("unmasked client frame")]
pub struct Unmasked;

impl Unmasked {
    /// Whether a read error is this one.
    pub fn caused(e: &io::Error) -> bool {
        e.get_ref().is_some_and(|inner| inner.is::<Unmasked>())
    }
}

/// Where the byte stream is: inside a frame header (bytes so far), or inside a payload.
#[derive(Debug)]
enum At {
    Head { buf: [u8; 14], have: usize },
    Payload(u64),
}

#[derive(Debug)]
pub struct MaskCheck<S> {
    inner: S,
    at: At,
}

impl<S> MaskCheck<S> {
    pub fn new(inner: S) -> MaskCheck<S> {
        MaskCheck {
            inner,
            at: At::Head {
                buf: [0; 14],
                have: 0,
            },
        }
    }

    /// Follows the frame structure through `bytes`; false at the first unmasked frame.
    fn scan(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            match &mut self.at {
                At::Payload(left) => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    bytes = &bytes[n as usize..];
                    if *left == 0 {
                        self.at = At::Head {
                            buf: [0; 14],
                            have: 0,
                        };
                    }
                }
                At::Head { buf, have } => {
                    buf[*have] = bytes[0];
                    *have += 1;
                    bytes = &bytes[1..];
                    if *have < 2 {
                        continue;
                    }
                    if buf[1] & 0x80 == 0 {
                        return false;
                    }
                    let ext = match buf[1] & 0x7f {
                        126 => 2,
                        127 => 8,
                        _ => 0,
                    };
                    if *have < 2 + ext + 4 {
                        continue;
                    }
                    let len = match ext {
                        0 => u64::from(buf[1] & 0x7f),
                        2 => u64::from(u16::from_be_bytes([buf[2], buf[3]])),
                        _ => u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")),
                    };
                    self.at = if len == 0 {
                        At::Head {
                            buf: [0; 14],
                            have: 0,
                        }
                    } else {
                        At::Payload(len)
                    };
                }
            }
        }
        true
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for MaskCheck<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.scan(&buf.filled()[before..]) {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, Unmasked)))
                }
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for MaskCheck<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod differential;

#[cfg(test)]
mod tests {
    use super::differential::{check, encode, FrameSpec};
    use super::*;
    use proptest::prelude::*;

    fn masked(len: usize) -> Vec<u8> {
        let mut f = vec![0x81];
        match len {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n < 65536 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend(std::iter::repeat_n(0x55, len));
        f
    }

    #[test]
    fn masked_frames_pass_in_any_split() {
        let mut stream = Vec::new();
        for len in [0, 5, 125, 126, 300, 70_000] {
            stream.extend(masked(len));
        }
        for chunk in [1, 3, 7, 4096, stream.len()] {
            let mut m = MaskCheck::new(());
            assert!(stream.chunks(chunk).all(|c| m.scan(c)), "chunk {chunk}");
            assert!(matches!(m.at, At::Head { have: 0, .. }));
        }
    }

    #[test]
    fn an_unmasked_frame_is_caught_after_masked_ones() {
        let mut stream = masked(200);
        stream.extend_from_slice(&[0x81, 0x02, b'{', b'}']);
        let mut m = MaskCheck::new(());
        assert!(!stream.chunks(3).all(|c| m.scan(c)));
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

        /// MaskCheck and fastwebsockets agree on frame boundaries (see `differential`) for
        /// generated frame streams, truncated anywhere, read in pieces of any size.
        #[test]
        fn agrees_with_fastwebsockets_on_frame_boundaries(
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
