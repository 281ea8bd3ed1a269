//! The three servers' wire protocols, as a subscriber and as a publisher:
//! - edgelive: Centrifuge JSON over WebSocket (`/api/live/ws`), publish command or HTTP push;
//! - nchan: WebSocket subscribe (`/sub/<channel>`), HTTP POST publish (`/pub/<channel>`);
//! - Mosquitto: MQTT 3.1.1 over WebSocket (subprotocol `mqtt`), QoS 0.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::http1::Http;
use crate::measure::{sent_ns, Deliveries};
use crate::mqtt;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Edgelive,
    Nchan,
    Mosquitto,
}

#[derive(Clone, Copy, Debug)]
pub struct Adapter {
    pub kind: Kind,
    pub addr: SocketAddr,
    /// Odd-numbered subscribers connect here when set (`--spread-to`).
    pub spread_to: Option<SocketAddr>,
}

/// A channel name as each server spells it.
pub fn channel(kind: Kind, name: &str) -> String {
    match kind {
        // Client publishes are allowed on broadcast channels.
        Kind::Edgelive => format!("grafana/broadcast/{name}"),
        Kind::Nchan | Kind::Mosquitto => name.to_owned(),
    }
}

async fn ws(url: &str, subprotocol: Option<&str>) -> Result<Ws, Error> {
    let mut req = url.into_client_request()?;
    if let Some(p) = subprotocol {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", p.parse().expect("header value"));
    }
    let (ws, _) = tokio_tungstenite::connect_async(req).await?;
    Ok(ws)
}

/// Waits for the Centrifuge reply with `id`.
async fn reply(ws: &mut Ws, id: u64) -> Result<(), Error> {
    let want = format!("\"id\":{id}");
    while let Some(m) = ws.next().await {
        if let Message::Text(t) = m? {
            if t.lines().any(|l| l.contains(&want)) {
                if t.contains("\"error\"") {
                    return Err(format!("reply {id}: {t}").into());
                }
                return Ok(());
            }
        }
    }
    Err("closed before the reply".into())
}

/// Reads MQTT packets until one of `kind` arrives.
async fn mqtt_expect(ws: &mut Ws, reader: &mut mqtt::Reader, kind: u8) -> Result<(), Error> {
    loop {
        let mut found = false;
        reader.drain(|k, _| found |= k >> 4 == kind >> 4);
        if found {
            return Ok(());
        }
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => reader.push(&b),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => return Err("closed".into()),
        }
    }
}

impl Adapter {
    /// A connection subscribed to `channel` (as spelled by `channel()`).
    pub async fn subscriber(&self, channel: &str, n: usize) -> Result<Subscriber, Error> {
        let a = match self.spread_to {
            Some(other) if n % 2 == 1 => other,
            _ => self.addr,
        };
        let mut reader = mqtt::Reader::default();
        let ws = match self.kind {
            Kind::Edgelive => {
                let mut ws = ws(&format!("ws://{a}/api/live/ws"), None).await?;
                ws.send(Message::text(r#"{"id":1,"connect":{}}"#)).await?;
                reply(&mut ws, 1).await?;
                let sub = format!(r#"{{"id":2,"subscribe":{{"channel":"{channel}"}}}}"#);
                ws.send(Message::text(sub)).await?;
                reply(&mut ws, 2).await?;
                ws
            }
            Kind::Nchan => ws(&format!("ws://{a}/sub/{channel}"), None).await?,
            Kind::Mosquitto => {
                let mut ws = ws(&format!("ws://{a}/"), Some("mqtt")).await?;
                ws.send(Message::binary(mqtt::connect(&format!("sub-{n}"))))
                    .await?;
                mqtt_expect(&mut ws, &mut reader, 0x20).await?;
                ws.send(Message::binary(mqtt::subscribe(1, channel)))
                    .await?;
                mqtt_expect(&mut ws, &mut reader, 0x90).await?;
                ws
            }
        };
        Ok(Subscriber {
            kind: self.kind,
            ws,
            mqtt: reader,
        })
    }

    /// A publisher connection: a WebSocket for edgelive and Mosquitto, HTTP for nchan.
    pub async fn publisher(&self) -> Result<Publisher, Error> {
        let a = self.addr;
        Ok(match self.kind {
            Kind::Edgelive => {
                let mut ws = ws(&format!("ws://{a}/api/live/ws"), None).await?;
                ws.send(Message::text(r#"{"id":1,"connect":{}}"#)).await?;
                reply(&mut ws, 1).await?;
                let (sink, mut stream) = ws.split();
                // Replies are read (errors counted, each timed from its command's send)
                // apart from sending.
                let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
                let acks = Arc::new(Acks::default());
                let (e, a) = (errors.clone(), acks.clone());
                tokio::spawn(async move {
                    while let Some(Ok(m)) = stream.next().await {
                        if let Message::Text(t) = m {
                            for line in t.lines() {
                                a.replied(line);
                            }
                            let n = t.matches("\"error\"").count() as u64;
                            e.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
                Publisher::Centrifuge {
                    sink,
                    next_id: 10,
                    errors,
                    acks,
                }
            }
            Kind::Nchan => Publisher::Http(Http::connect(a).await?),
            Kind::Mosquitto => {
                let mut ws = ws(&format!("ws://{a}/"), Some("mqtt")).await?;
                let mut reader = mqtt::Reader::default();
                ws.send(Message::binary(mqtt::connect("publisher"))).await?;
                mqtt_expect(&mut ws, &mut reader, 0x20).await?;
                let (sink, mut stream) = ws.split();
                tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
                Publisher::Mqtt { sink }
            }
        })
    }
}

pub struct Subscriber {
    kind: Kind,
    ws: Ws,
    mqtt: mqtt::Reader,
}

impl Subscriber {
    /// Reads until the connection ends, recording each message's latency.
    pub async fn run(mut self, seen: Arc<Deliveries>) {
        while let Some(Ok(m)) = self.ws.next().await {
            match (self.kind, m) {
                (Kind::Edgelive, Message::Text(t)) => {
                    for line in t.lines() {
                        if line == "{}" {
                            // Server ping; answer, or it closes us.
                            let _ = self.ws.send(Message::text("{}")).await;
                        } else if line.contains("\"pub\"") {
                            seen.arrived(sent_ns(line.as_bytes()));
                        }
                    }
                }
                (Kind::Nchan, Message::Text(t)) => seen.arrived(sent_ns(t.as_bytes())),
                (Kind::Nchan, Message::Binary(b)) => seen.arrived(sent_ns(&b)),
                (Kind::Mosquitto, Message::Binary(b)) => {
                    self.mqtt.push(&b);
                    self.mqtt.drain(|kind, body| {
                        if kind >> 4 == 3 {
                            seen.arrived(mqtt::publish_payload(body).and_then(sent_ns));
                        }
                    });
                }
                _ => {}
            }
        }
    }

    /// Keeps an idle MQTT connection alive past its keep-alive (others answer server pings).
    pub async fn idle(mut self) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
        // After a stall, one ping rather than a burst of the missed ones.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                m = self.ws.next() => match m {
                    Some(Ok(Message::Text(t))) if t.as_str() == "{}" => {
                        let _ = self.ws.send(Message::text("{}")).await;
                    }
                    Some(Ok(_)) => {}
                    _ => return,
                },
                _ = tick.tick() => if self.kind == Kind::Mosquitto {
                    let _ = self.ws.send(Message::binary(mqtt::pingreq())).await;
                },
            }
        }
    }
}

type Sink = futures_util::stream::SplitSink<Ws, Message>;

/// Publish commands in flight by id, and how long each reply took (edgelive).
#[derive(Default)]
pub struct Acks {
    sent: std::sync::Mutex<std::collections::HashMap<u64, std::time::Instant>>,
    /// Reply latencies, µs.
    pub latencies: Deliveries,
}

impl Acks {
    fn sent(&self, id: u64) {
        let now = std::time::Instant::now();
        self.sent.lock().unwrap().insert(id, now);
    }

    /// A reply line (`{"id":N,...}`) arrived now.
    fn replied(&self, line: &str) {
        let Some(rest) = line.strip_prefix("{\"id\":") else {
            return;
        };
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let Ok(id) = rest[..digits].parse::<u64>() else {
            return;
        };
        if let Some(at) = self.sent.lock().unwrap().remove(&id) {
            self.latencies.took(at.elapsed());
        }
    }
}

pub enum Publisher {
    Centrifuge {
        sink: Sink,
        next_id: u64,
        errors: Arc<std::sync::atomic::AtomicU64>,
        acks: Arc<Acks>,
    },
    Http(Http),
    Mqtt {
        sink: Sink,
    },
}

impl Publisher {
    /// Sends these messages (`(channel, payload)`), in one write where the protocol allows.
    pub async fn send(&mut self, batch: &[(String, String)]) -> Result<(), Error> {
        match self {
            Publisher::Centrifuge {
                sink,
                next_id,
                acks,
                ..
            } => {
                for (channel, data) in batch {
                    *next_id += 1;
                    acks.sent(*next_id);
                    let cmd = format!(
                        r#"{{"id":{},"publish":{{"channel":"{channel}","data":{data}}}}}"#,
                        next_id
                    );
                    sink.feed(Message::text(cmd)).await?;
                }
                sink.flush().await?;
            }
            Publisher::Http(http) => {
                for (channel, data) in batch {
                    let status = http
                        .request("POST", &format!("/pub/{channel}"), data.as_bytes())
                        .await?;
                    if !(200..300).contains(&status) {
                        return Err(format!("nchan publish: HTTP {status}").into());
                    }
                }
            }
            Publisher::Mqtt { sink } => {
                for (channel, data) in batch {
                    let p = mqtt::publish(channel, data.as_bytes(), false);
                    sink.feed(Message::binary(p)).await?;
                }
                sink.flush().await?;
            }
        }
        Ok(())
    }

    /// Reply latencies of the publish commands (edgelive).
    pub fn acks(&self) -> Option<&Deliveries> {
        match self {
            Publisher::Centrifuge { acks, .. } => Some(&acks.latencies),
            _ => None,
        }
    }

    /// Publish commands the server refused (edgelive).
    pub fn errors(&self) -> u64 {
        match self {
            Publisher::Centrifuge { errors, .. } => {
                errors.load(std::sync::atomic::Ordering::Relaxed)
            }
            _ => 0,
        }
    }
}
