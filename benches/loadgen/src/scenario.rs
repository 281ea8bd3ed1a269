//! The scenarios. Each prints one JSON object per run; `compare.sh` takes medians over runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::adapter::{channel, Adapter, Error, Kind, Publisher};
use crate::http1::Http;
use crate::measure::{own_cpu_seconds, payload, Deliveries, Server};

pub struct Ctx {
    pub adapter: Adapter,
    pub server: Server,
}

/// Connects one subscriber per channel name (spelled for the server), 50 at a time, and
/// starts reading; returns their delivery records.
async fn subscribe_all(ctx: &Ctx, channels: &[String]) -> Result<Vec<Arc<Deliveries>>, Error> {
    let mut all = Vec::with_capacity(channels.len());
    for (chunk_no, chunk) in channels.chunks(50).enumerate() {
        let subs = futures_util::future::join_all(
            chunk
                .iter()
                .enumerate()
                .map(|(i, c)| ctx.adapter.subscriber(c, chunk_no * 50 + i)),
        )
        .await;
        for s in subs {
            let d = Arc::new(Deliveries::default());
            tokio::spawn(s?.run(d.clone()));
            all.push(d);
        }
    }
    Ok(all)
}

async fn publishers(ctx: &Ctx) -> Result<Vec<Publisher>, Error> {
    // nchan's publish is one HTTP request at a time per connection: use a few.
    let n = if ctx.adapter.kind == Kind::Nchan {
        4
    } else {
        1
    };
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(ctx.adapter.publisher().await?);
    }
    Ok(v)
}

/// Publishes at `rate` messages/s for `secs`, round-robin over `channels`; returns how many
/// were sent and how long it took.
async fn publish_at(
    pubs: &mut [Publisher],
    rate: f64,
    secs: f64,
    channels: &[String],
    size: usize,
) -> Result<(u64, f64), Error> {
    let start = Instant::now();
    let mut sent = 0u64;
    loop {
        let elapsed = start.elapsed().as_secs_f64();
        if elapsed >= secs {
            break;
        }
        let due = (rate * elapsed) as u64 + 1;
        let n = due.saturating_sub(sent).min(5000);
        if n == 0 {
            tokio::time::sleep(Duration::from_micros(500)).await;
            continue;
        }
        let batch: Vec<(String, String)> = (sent..sent + n)
            .map(|i| {
                (
                    channels[i as usize % channels.len()].clone(),
                    payload(i, size),
                )
            })
            .collect();
        let per = batch.len().div_ceil(pubs.len());
        let sends = pubs
            .iter_mut()
            .zip(batch.chunks(per))
            .map(|(p, part)| p.send(part));
        for r in futures_util::future::join_all(sends).await {
            r?;
        }
        sent += n;
    }
    Ok((sent, start.elapsed().as_secs_f64()))
}

/// Subscribers and publishers of the delivery scenarios, connected and warmed up.
struct Setup<'a> {
    ctx: &'a Ctx,
    subs: Vec<Arc<Deliveries>>,
    pubs: Vec<Publisher>,
    /// Published to round-robin.
    channels: Vec<String>,
    /// Subscribers per channel: deliveries expected per message.
    fanout: u64,
    size: usize,
}

impl<'a> Setup<'a> {
    /// One subscriber per entry of `subscribe_to`; then 0.3 s of publishing at `warm_rate` so
    /// that connections, buffers and caches are in place before anything is measured.
    async fn new(
        ctx: &'a Ctx,
        subscribe_to: &[String],
        publish_to: Vec<String>,
        size: usize,
        warm_rate: f64,
    ) -> Result<Setup<'a>, Error> {
        let mut setup = Setup {
            ctx,
            subs: subscribe_all(ctx, subscribe_to).await?,
            pubs: publishers(ctx).await?,
            fanout: (subscribe_to.len() / publish_to.len()) as u64,
            channels: publish_to,
            size,
        };
        setup.measure(warm_rate, 0.3).await?;
        Ok(setup)
    }

    /// One measured period: publish at `rate`, wait (bounded) for every delivery, report.
    async fn measure(&mut self, rate: f64, secs: f64) -> Result<Value, Error> {
        let (ctx, subs, pubs) = (self.ctx, &self.subs, &mut self.pubs);
        for d in subs
            .iter()
            .map(|d| &**d)
            .chain(pubs.iter().filter_map(|p| p.acks()))
        {
            d.reset();
        }
        let (cpu0, gen0, t0) = (ctx.server.cpu_seconds(), own_cpu_seconds(), Instant::now());
        let (sent, send_secs) = publish_at(pubs, rate, secs, &self.channels, self.size).await?;
        let expected = sent * self.fanout;
        let deadline = Instant::now() + Duration::from_secs(3);
        let delivered = loop {
            let got: u64 = subs.iter().map(|d| d.count()).sum();
            if got >= expected || Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let wall = t0.elapsed().as_secs_f64();
        let server_cpu = ctx.server.cpu_seconds() - cpu0;
        let gen_cpu = own_cpu_seconds() - gen0;
        // How long the last deliveries took after the publisher stopped: a server that only
        // queues would deliver "everything" eventually.
        let drain = wall - send_secs;
        let (p50, p99, max) = Deliveries::percentiles(subs);
        let errors: u64 = pubs.iter().map(|p| p.errors()).sum();
        // Publish replies (edgelive): how long the publisher waits while the fan-out runs.
        let (ack_p50, ack_p99, _) =
            Deliveries::percentiles_of(pubs.iter().filter_map(|p| p.acks()));
        Ok(json!({
            "rate": rate,
            "sent_rate": sent as f64 / send_secs,
            "sent": sent,
            "expected": expected,
            "delivered": delivered,
            "delivered_share": delivered as f64 / expected.max(1) as f64,
            "deliveries_per_s": delivered as f64 / wall,
            "p50_us": p50,
            "p99_us": p99,
            "max_us": max,
            "ack_p50_us": ack_p50,
            "ack_p99_us": ack_p99,
            "server_cpu_s": server_cpu,
            "server_us_per_delivery": server_cpu * 1e6 / delivered.max(1) as f64,
            "generator_cpu_s": gen_cpu,
            "generator_cores": gen_cpu / wall,
            "server_cores": server_cpu / wall,
            "publish_errors": errors,
            "wall_s": wall,
            "drain_s": drain,
        }))
    }
}

/// Idle footprint: RSS with 0, then with each count of idle subscribers on their own channels,
/// and 10 s after they all closed.
pub async fn idle(ctx: &Ctx, counts: &[usize]) -> Result<Value, Error> {
    let mut points = Vec::new();
    let mut held = 0;
    let mut tasks = Vec::new();
    let base = ctx.server.rss_kib();
    let base_anon = ctx.server.anon_kib();
    points.push(json!({"connections": 0, "rss_kib": base}));
    for &n in counts.iter().filter(|&&n| n > 0) {
        for start in (held..n).step_by(50) {
            let subs = futures_util::future::join_all((start..n.min(start + 50)).map(|i| {
                let c = channel(ctx.adapter.kind, &format!("idle{i}"));
                async move { ctx.adapter.subscriber(&c, i).await }
            }))
            .await;
            for s in subs {
                tasks.push(tokio::spawn(s?.idle()));
            }
        }
        held = n;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (rss, anon) = (ctx.server.rss_kib(), ctx.server.anon_kib());
        points.push(json!({
            "connections": n,
            "rss_kib": rss,
            "kib_per_connection": (rss as f64 - base as f64) / n as f64,
            "anon_kib_per_connection": (anon as f64 - base_anon as f64) / n as f64,
        }));
    }
    for t in tasks {
        t.abort();
    }
    // What the burst leaves behind: RSS 10 s after every connection closed.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = ctx.server.rss_kib();
    Ok(json!({
        "idle_rss_kib": base,
        "idle_anon_kib": base_anon,
        "points": points,
        "rss_after_close_kib": after,
        "above_idle_after_close_kib": after as f64 - base as f64,
    }))
}

/// 1 publisher → `subs` subscribers on one channel at `rate` messages/s.
pub async fn fanout(
    ctx: &Ctx,
    subs: usize,
    rate: f64,
    secs: f64,
    size: usize,
) -> Result<Value, Error> {
    let ch = channel(ctx.adapter.kind, "fanout");
    let mut setup = Setup::new(ctx, &vec![ch.clone(); subs], vec![ch], size, rate).await?;
    setup.measure(rate, secs).await
}

/// The highest rate (×√2 steps from `from`) at which every message reaches every subscriber
/// within 0.5 s of the publisher's last, and the publisher keeps the pace; the figures at
/// that rate.
pub async fn capacity(
    ctx: &Ctx,
    subs: usize,
    from: f64,
    max: f64,
    secs: f64,
    size: usize,
) -> Result<Value, Error> {
    let ch = channel(ctx.adapter.kind, "capacity");
    let mut setup = Setup::new(ctx, &vec![ch.clone(); subs], vec![ch], size, from).await?;
    let mut best = Value::Null;
    let mut steps = Vec::new();
    let mut rate = from;
    while rate <= max {
        let r = setup.measure(rate, secs).await?;
        let ok = r["delivered_share"].as_f64() == Some(1.0)
            && r["sent_rate"].as_f64().unwrap_or(0.0) >= 0.97 * rate
            && r["publish_errors"].as_u64() == Some(0)
            && r["drain_s"].as_f64().unwrap_or(9.0) <= 0.5;
        steps.push(json!({"rate": rate, "ok": ok, "delivered_share": r["delivered_share"], "sent_rate": r["sent_rate"]}));
        if !ok {
            break;
        }
        best = r;
        rate *= std::f64::consts::SQRT_2;
    }
    Ok(json!({"best": best, "steps": steps}))
}

/// `subs` subscribers on their own channels; the publisher goes round-robin at `rate`.
pub async fn channels(
    ctx: &Ctx,
    subs: usize,
    rate: f64,
    secs: f64,
    size: usize,
) -> Result<Value, Error> {
    let chans: Vec<String> = (0..subs)
        .map(|i| channel(ctx.adapter.kind, &format!("own{i}")))
        .collect();
    let mut setup = Setup::new(ctx, &chans, chans.clone(), size, rate).await?;
    setup.measure(rate, secs).await
}

/// Line-protocol points per second, one subscriber per measurement: edgelive's push API with
/// `batch` lines per request; nchan one point per POST; Mosquitto one point per PUBLISH.
pub async fn ingest(
    ctx: &Ctx,
    secs: f64,
    measurements: usize,
    batch: usize,
    conns: usize,
) -> Result<Value, Error> {
    let names: Vec<String> = (0..measurements).map(|i| format!("m{i}")).collect();
    let sub_channels: Vec<String> = match ctx.adapter.kind {
        Kind::Edgelive => names.iter().map(|m| format!("stream/bench/{m}")).collect(),
        _ => names.clone(),
    };
    let subs = subscribe_all(ctx, &sub_channels).await?;
    let (cpu0, gen0, t0) = (ctx.server.cpu_seconds(), own_cpu_seconds(), Instant::now());
    let deadline = t0 + Duration::from_secs_f64(secs);
    let accepted = match ctx.adapter.kind {
        Kind::Edgelive | Kind::Nchan => {
            let mut workers = Vec::new();
            for w in 0..conns {
                let addr = ctx.adapter.addr;
                let kind = ctx.adapter.kind;
                let names = names.clone();
                workers.push(tokio::spawn(async move {
                    let mut http = Http::connect(addr).await?;
                    let mut points = 0u64;
                    let mut i = w as u64 * 1_000_000_000;
                    while Instant::now() < deadline {
                        if kind == Kind::Edgelive {
                            let body: String = (i..i + batch as u64)
                                .map(|j| line_of(&names, j) + "\n")
                                .collect();
                            i += batch as u64;
                            let status = http
                                .request("POST", "/api/live/push/bench", body.as_bytes())
                                .await?;
                            if !(200..300).contains(&status) {
                                return Err::<u64, Error>(format!("push: HTTP {status}").into());
                            }
                            points += batch as u64;
                        } else {
                            let m = &names[i as usize % names.len()];
                            let status = http
                                .request(
                                    "POST",
                                    &format!("/pub/{m}"),
                                    line_of(&names, i).as_bytes(),
                                )
                                .await?;
                            if !(200..300).contains(&status) {
                                return Err(format!("nchan publish: HTTP {status}").into());
                            }
                            i += 1;
                            points += 1;
                        }
                    }
                    Ok(points)
                }));
            }
            let mut total = 0;
            for w in workers {
                total += w.await??;
            }
            total
        }
        Kind::Mosquitto => {
            let mut p = ctx.adapter.publisher().await?;
            let mut i = 0u64;
            while Instant::now() < deadline {
                let b: Vec<(String, String)> = (i..i + 100)
                    .map(|j| (names[j as usize % names.len()].clone(), line_of(&names, j)))
                    .collect();
                p.send(&b).await?;
                i += 100;
            }
            // Points count when they reached the subscribers (QoS 0 has no acknowledgement).
            let drain_until = Instant::now() + Duration::from_secs(3);
            while subs.iter().map(|d| d.count()).sum::<u64>() < i && Instant::now() < drain_until {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            subs.iter().map(|d| d.count()).sum()
        }
    };
    let wall = t0.elapsed().as_secs_f64();
    let server_cpu = ctx.server.cpu_seconds() - cpu0;
    Ok(json!({
        "points": accepted,
        "points_per_s": accepted as f64 / wall,
        "server_cpu_s": server_cpu,
        "server_cores": server_cpu / wall,
        "server_us_per_point": server_cpu * 1e6 / accepted.max(1) as f64,
        "generator_cpu_s": own_cpu_seconds() - gen0,
        "wall_s": wall,
    }))
}

fn line_of(names: &[String], i: u64) -> String {
    format!(
        "{},host=edge-{} value={}.5,status=1i {}",
        names[i as usize % names.len()],
        i % 4,
        i % 1000,
        1_700_000_000_000_000_000u64 + i
    )
}

/// History memory: `channels` × `per_channel` messages of `size` bytes kept by the server;
/// growth of its proportional memory (PSS) over the payload bytes.
pub async fn history(
    ctx: &Ctx,
    chans: usize,
    per_channel: usize,
    size: usize,
) -> Result<Value, Error> {
    let names: Vec<String> = (0..chans)
        .map(|i| channel(ctx.adapter.kind, &format!("hist{i}")))
        .collect();
    let mut pubs = publishers(ctx).await?;
    let before = ctx.server.pss_kib();
    let total = (chans * per_channel) as f64;
    // As fast as the server takes them, in steps the publisher's queue absorbs.
    let t0 = Instant::now();
    let (sent, _) = publish_at(&mut pubs, 20_000.0, total / 20_000.0, &names, size).await?;
    // Let the server finish storing what it has received.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = ctx.server.pss_kib();
    let payload_kib = sent as f64 * size as f64 / 1024.0;
    let errors: u64 = pubs.iter().map(|p| p.errors()).sum();
    Ok(json!({
        "messages": sent,
        "payload_kib": payload_kib,
        "pss_before_kib": before,
        "pss_after_kib": after,
        "growth_over_payload": (after as f64 - before as f64) / payload_kib,
        "publish_errors": errors,
        "wall_s": t0.elapsed().as_secs_f64(),
    }))
}
