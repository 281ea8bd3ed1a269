//! The few MQTT 3.1.1 packets the generator needs (CONNECT, SUBSCRIBE, PUBLISH at QoS 0,
//! PINGREQ) and a reader that splits a byte stream (WebSocket messages may hold several
//! packets, or part of one) into packets.

/// Appends MQTT's variable-length "remaining length".
fn remaining_length(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return;
        }
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn packet(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(kind);
    remaining_length(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// CONNECT with a clean session and a keep-alive of 60 s.
pub fn connect(client_id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, "MQTT");
    body.push(4); // protocol level 3.1.1
    body.push(0x02); // clean session
    body.extend_from_slice(&60u16.to_be_bytes());
    string(&mut body, client_id);
    packet(0x10, &body)
}

/// SUBSCRIBE to one topic at QoS 0.
pub fn subscribe(packet_id: u16, topic: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&packet_id.to_be_bytes());
    string(&mut body, topic);
    body.push(0);
    packet(0x82, &body)
}

/// PUBLISH at QoS 0 (no packet id); `retain` keeps it as the topic's last message.
pub fn publish(topic: &str, payload: &[u8], retain: bool) -> Vec<u8> {
    let mut body = Vec::with_capacity(topic.len() + 2 + payload.len());
    string(&mut body, topic);
    body.extend_from_slice(payload);
    packet(0x30 | u8::from(retain), &body)
}

pub fn pingreq() -> Vec<u8> {
    vec![0xC0, 0]
}

/// Splits a byte stream into packets: `(first byte, body)`.
#[derive(Default)]
pub struct Reader {
    buf: Vec<u8>,
}

impl Reader {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Calls `each` for every whole packet buffered.
    pub fn drain(&mut self, mut each: impl FnMut(u8, &[u8])) {
        let mut at = 0;
        while let Some((len, header)) = self.header(at) {
            if self.buf.len() < at + header + len {
                break;
            }
            each(self.buf[at], &self.buf[at + header..at + header + len]);
            at += header + len;
        }
        self.buf.drain(..at);
    }

    /// Body length and header length of the packet at `at`, when its header is complete.
    fn header(&self, at: usize) -> Option<(usize, usize)> {
        let mut len = 0usize;
        for i in 0..4 {
            let b = *self.buf.get(at + 1 + i)?;
            len |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some((len, 2 + i));
            }
        }
        None
    }
}

/// The payload of a PUBLISH body at QoS 0.
pub fn publish_payload(body: &[u8]) -> Option<&[u8]> {
    let topic_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    body.get(2 + topic_len..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_round_trip_through_the_reader_in_any_split() {
        let big = vec![b'x'; 300];
        let mut stream = publish("a/b", b"hi", false);
        stream.extend(publish("t", &big, true));
        for split in 1..stream.len() {
            let mut r = Reader::default();
            let mut got = Vec::new();
            for chunk in stream.chunks(split) {
                r.push(chunk);
                r.drain(|kind, body| got.push((kind, publish_payload(body).unwrap().to_vec())));
            }
            assert_eq!(got, vec![(0x30, b"hi".to_vec()), (0x31, big.clone())]);
        }
    }
}
