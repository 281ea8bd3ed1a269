//! Whole client messages off the TCP socket: the wire decoder (`wsframe`) plus reassembly of
//! fragmented messages, reading only when the socket is readable.
//!
//! The read buffer exists only while bytes wait to be decoded: it is allocated after the socket
//! becomes readable and freed once everything in it is decoded, so an idle connection holds no
//! read buffer at all (see `wsframe` for why this is not fastwebsockets' reader).

use std::io::ErrorKind;

use tokio::net::tcp::ReadHalf;

use crate::protocol::Disconnect;
use crate::wsframe::{Decoder, OpCode, WireError};

/// What the client sent.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// A whole text or binary message in one frame (text already checked to be UTF-8).
    Message(&'a [u8]),
    /// One put together from its fragments, handed over (a push body is not copied again).
    Reassembled(Vec<u8>),
    Ping(&'a [u8]),
    Pong,
    Close(&'a [u8]),
}

/// Why no more can be read.
#[derive(Debug)]
pub enum ReadEnd {
    /// The stream ended or failed: nothing to tell the peer.
    Gone,
    /// The peer broke the protocol: close with this.
    Broken(Disconnect),
}

pub struct MessageReader {
    decoder: Decoder,
    /// A fragmented message being assembled: (is text, bytes so far).
    partial: Option<(bool, Vec<u8>)>,
    /// Largest message, whole or reassembled.
    limit: usize,
}

impl MessageReader {
    /// `pre_read`: bytes that arrived with the upgrade request.
    pub fn new(limit: usize, pre_read: &[u8]) -> MessageReader {
        MessageReader {
            decoder: Decoder::new(pre_read),
            partial: None,
            limit,
        }
    }

    /// The next message or control frame. Cancel-safe: it waits only for readiness, with
    /// nothing half done.
    pub async fn next(&mut self, rd: &ReadHalf<'_>) -> Result<Incoming<'_>, ReadEnd> {
        self.next_with(rd, || {}).await
    }

    /// `next`, calling `on_read` whenever bytes arrive (a fragment or part of a frame counts as
    /// life for the push endpoint's liveness check).
    pub async fn next_with(
        &mut self,
        rd: &ReadHalf<'_>,
        mut on_read: impl FnMut(),
    ) -> Result<Incoming<'_>, ReadEnd> {
        loop {
            // A fragment may carry only what is left of the message's budget.
            let budget = self.limit - self.partial.as_ref().map_or(0, |(_, p)| p.len());
            let frame = match self.decoder.next_frame(budget) {
                Ok(Some(f)) => f,
                Ok(None) => {
                    self.fill(rd).await?;
                    on_read();
                    continue;
                }
                Err(e) => {
                    return Err(ReadEnd::Broken(match e {
                        WireError::TooLarge(_) => Disconnect::MESSAGE_TOO_BIG,
                        _ => Disconnect::PROTOCOL_ERROR,
                    }))
                }
            };
            let broken = |d: Disconnect| Err(ReadEnd::Broken(d));
            let text = frame.opcode == OpCode::Text;
            match frame.opcode {
                OpCode::Ping => return Ok(Incoming::Ping(self.decoder.payload(&frame))),
                OpCode::Pong => return Ok(Incoming::Pong),
                OpCode::Close => return Ok(Incoming::Close(self.decoder.payload(&frame))),
                OpCode::Text | OpCode::Binary if self.partial.is_some() => {
                    return broken(Disconnect::PROTOCOL_ERROR)
                }
                OpCode::Text | OpCode::Binary if frame.fin => {
                    let message = self.decoder.payload(&frame);
                    if text && std::str::from_utf8(message).is_err() {
                        return broken(Disconnect::INVALID_PAYLOAD);
                    }
                    return Ok(Incoming::Message(message));
                }
                OpCode::Text | OpCode::Binary => {
                    self.partial = Some((text, self.decoder.payload(&frame).to_vec()));
                }
                OpCode::Continuation => {
                    let Some((_, so_far)) = self.partial.as_mut() else {
                        return broken(Disconnect::PROTOCOL_ERROR);
                    };
                    // Within the budget: the decoder refused anything larger.
                    so_far.extend_from_slice(self.decoder.payload(&frame));
                    if frame.fin {
                        let (text, whole) = self.partial.take().expect("checked above");
                        if text && std::str::from_utf8(&whole).is_err() {
                            return broken(Disconnect::INVALID_PAYLOAD);
                        }
                        return Ok(Incoming::Reassembled(whole));
                    }
                }
            }
        }
    }

    /// Reads what the socket has once it is readable (the buffer is only allocated then).
    async fn fill(&mut self, rd: &ReadHalf<'_>) -> Result<(), ReadEnd> {
        loop {
            self.decoder.settle();
            rd.readable().await.map_err(|_| ReadEnd::Gone)?;
            match rd.try_read_buf(self.decoder.space()) {
                Ok(0) => return Err(ReadEnd::Gone),
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(_) => return Err(ReadEnd::Gone),
            }
        }
    }

    /// After our close: reads and drops frames until the peer's close frame or the end of the
    /// stream, without reassembly (what broke the protocol may go on arriving), and once the
    /// stream cannot be decoded (or a frame is over the limit), bytes until the end. Unread input would turn our FIN
    /// into a reset that can eat the close frame before the peer reads it.
    pub async fn drain(&mut self, rd: &ReadHalf<'_>) {
        self.partial = None;
        loop {
            match self.decoder.next_frame(self.limit) {
                Ok(Some(f)) if f.opcode == OpCode::Close => return,
                Ok(Some(_)) => {}
                Ok(None) => {
                    if self.fill(rd).await.is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        self.decoder = Decoder::new(&[]);
        loop {
            if rd.readable().await.is_err() {
                return;
            }
            // Not kept across the await: it would make every connection's task 1 KB larger.
            let mut sink = [0u8; 1024];
            match rd.try_read(&mut sink) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    }
}

/// What to answer a client's close frame with (RFC 6455 §5.5.1, §7.4).
pub fn close_reply(payload: &[u8]) -> Disconnect {
    match payload.len() {
        0 => Disconnect::echo(1000),
        1 => Disconnect::PROTOCOL_ERROR,
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let allowed = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !allowed {
                Disconnect::PROTOCOL_ERROR
            } else if std::str::from_utf8(&payload[2..]).is_err() {
                Disconnect::INVALID_PAYLOAD
            } else {
                Disconnect::echo(code)
            }
        }
    }
}
