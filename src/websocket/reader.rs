//! Whole client messages off the TCP socket: the wire decoder (`wsframe`) plus reassembly of
//! fragmented messages, reading only when the socket is readable.
//!
//! The read buffer exists only while bytes wait to be decoded: it is allocated after the socket
//! becomes readable and freed once everything in it is decoded, so an idle connection holds no
//! read buffer at all (see `wsframe` for why this is not fastwebsockets' reader).

use std::io::ErrorKind;

use tokio::net::tcp::ReadHalf;

use crate::protocol::Disconnect;
use crate::wsframe::{Decoder, OpCode};

/// What the client sent.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// A whole text or binary message (text already checked to be UTF-8).
    Message(&'a [u8]),
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
    /// The last reassembled message, lent out by `next` until its next call.
    assembled: Vec<u8>,
    /// Largest message, whole or reassembled.
    limit: usize,
}

impl MessageReader {
    /// `pre_read`: bytes that arrived with the upgrade request.
    pub fn new(limit: usize, pre_read: &[u8]) -> MessageReader {
        MessageReader {
            decoder: Decoder::new(limit, pre_read),
            partial: None,
            assembled: Vec::new(),
            limit,
        }
    }

    /// The next message or control frame. Cancel-safe: it waits only for readiness, with
    /// nothing half done.
    pub async fn next(&mut self, rd: &ReadHalf<'_>) -> Result<Incoming<'_>, ReadEnd> {
        self.assembled = Vec::new();
        loop {
            let frame = match self.decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => {
                    self.fill(rd).await?;
                    continue;
                }
                Err(e) => {
                    return Err(ReadEnd::Broken(match e.close_code() {
                        1009 => Disconnect::MESSAGE_TOO_BIG,
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
                    let more = self.decoder.payload(&frame);
                    if so_far.len() + more.len() > self.limit {
                        return broken(Disconnect::MESSAGE_TOO_BIG);
                    }
                    so_far.extend_from_slice(more);
                    if frame.fin {
                        let (text, whole) = self.partial.take().expect("checked above");
                        if text && std::str::from_utf8(&whole).is_err() {
                            return broken(Disconnect::INVALID_PAYLOAD);
                        }
                        self.assembled = whole;
                        return Ok(Incoming::Message(&self.assembled));
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

    /// Reads and drops messages until the peer's close frame or the end of the stream.
    pub async fn drain(&mut self, rd: &ReadHalf<'_>) {
        while let Ok(incoming) = self.next(rd).await {
            if matches!(incoming, Incoming::Close(_)) {
                return;
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
