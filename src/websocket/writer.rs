//! Server frames onto the socket: one `writev` per frame (header on the stack, payload as is),
//! and queued messages coalesced into one text frame joined by `\n`.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::wsframe::{close_payload, server_header, OpCode};

/// Most bytes coalesced into one outgoing frame (a single larger message still goes alone).
pub const COALESCE_BYTES: usize = 64 * 1024;

/// Writes one final, unmasked frame (not flushed: the socket halves it is used with have no
/// buffer).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    opcode: OpCode,
    payload: &[u8],
) -> io::Result<()> {
    let mut head = [0u8; 10];
    let n = server_header(opcode, payload.len(), &mut head);
    let mut slices = [IoSlice::new(&head[..n]), IoSlice::new(payload)];
    let mut left: &mut [IoSlice<'_>] = &mut slices;
    while !left.is_empty() {
        let written = w.write_vectored(left).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut left, written);
    }
    Ok(())
}

/// A close frame with a code and a reason (cut to fit).
pub async fn write_close<W: AsyncWrite + Unpin>(
    w: &mut W,
    code: u16,
    reason: &str,
) -> io::Result<()> {
    write_frame(w, OpCode::Close, &close_payload(code, reason)).await?;
    w.flush().await
}

/// Writes every queued message, several per frame joined by `\n`; returns the bytes written.
pub async fn write_coalesced<W: AsyncWrite + Unpin>(
    w: &mut W,
    queue: &mut VecDeque<Bytes>,
    buf: &mut Vec<u8>,
) -> io::Result<usize> {
    let written = queue.iter().map(Bytes::len).sum();
    while let Some(first) = queue.pop_front() {
        let fits = |q: &VecDeque<Bytes>, len: usize| {
            q.front()
                .is_some_and(|m| len + 1 + m.len() <= COALESCE_BYTES)
        };
        if !fits(queue, first.len()) {
            write_frame(w, OpCode::Text, &first).await?;
            continue;
        }
        buf.clear();
        buf.extend_from_slice(&first);
        while fits(queue, buf.len()) {
            let m = queue.pop_front().expect("checked by fits");
            buf.push(b'\n');
            buf.extend_from_slice(&m);
        }
        write_frame(w, OpCode::Text, buf).await?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastwebsockets::{Role, WebSocket};

    /// 200 queued messages go out as one text frame, joined by `\n`; a message too large to
    /// share a frame goes alone; a close carries its code and reason. Read back by
    /// fastwebsockets as a client.
    #[tokio::test]
    async fn queued_messages_are_coalesced_into_one_frame() {
        let (mut server, client) = tokio::io::duplex(1 << 20);
        let mut queue: VecDeque<Bytes> = (0..200)
            .map(|i| Bytes::from(format!("{{\"i\":{i}}}")))
            .collect();
        queue.push_back(Bytes::from(vec![b'x'; COALESCE_BYTES]));
        queue.push_back(Bytes::from_static(b"{}"));
        let mut buf = Vec::new();
        write_coalesced(&mut server, &mut queue, &mut buf)
            .await
            .unwrap();
        write_close(&mut server, 3008, "slow").await.unwrap();
        assert!(queue.is_empty());

        let mut peer = WebSocket::after_handshake(client, Role::Client);
        peer.set_auto_close(false);
        let first = peer.read_frame().await.unwrap();
        let text = std::str::from_utf8(&first.payload).unwrap();
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines.len(), 200);
        assert_eq!(lines[199], "{\"i\":199}");
        assert_eq!(
            peer.read_frame().await.unwrap().payload.len(),
            COALESCE_BYTES
        );
        assert_eq!(&peer.read_frame().await.unwrap().payload[..], b"{}");
        let close = peer.read_frame().await.unwrap();
        assert_eq!(close.opcode, fastwebsockets::OpCode::Close);
        assert_eq!(&close.payload[..], b"\x0b\xc0slow");
    }
}
