//! Hub fan-out cost: one ~200-byte publication encoded once and queued to 1, 100 and 1,000
//! subscribers, plus each subscriber's writer taking its queue (as the writer task does).

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use edgelive::hub::{Hub, Subscriber};
use edgelive::json::CompactJson;
use edgelive::outbox::Outbox;
use edgelive::protocol::reply::{self, ClientInfo, Publication};

fn fanout(c: &mut Criterion) {
    let data = CompactJson::from_string(format!(
        r#"{{"sensor":"t1","value":21.5,"pad":"{}"}}"#,
        "x".repeat(150)
    ))
    .unwrap();
    let publisher = ClientInfo {
        user: String::new(),
        client: "8f14e45f-ceea-4e7a-8b5d-2c1d8e3c9a10".into(),
        conn_info: None,
        chan_info: None,
    };
    let mut group = c.benchmark_group("hub_broadcast");
    for n in [1usize, 100, 1000] {
        let hub = Hub::new(1);
        let key: Arc<str> = Arc::from("grafana/broadcast/bench");
        let outboxes: Vec<Arc<Outbox>> = (0..n).map(|_| Arc::new(Outbox::new(1 << 20))).collect();
        for (i, o) in outboxes.iter().enumerate() {
            let info = Arc::new(ClientInfo {
                user: String::new(),
                client: format!("c{i}"),
                conn_info: None,
                chan_info: None,
            });
            let sub = Subscriber {
                client: i as u64,
                outbox: o.clone(),
                prefixed: false,
                server_side: false,
                info,
            };
            hub.subscribe(&key, sub, || ());
        }
        let mut scratch: VecDeque<Bytes> = VecDeque::new();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let f = hub.broadcast(&key, |name| {
                    reply::publication(
                        name,
                        Publication {
                            data: &data,
                            info: Some(&publisher),
                            offset: 0,
                        },
                    )
                });
                black_box(f);
                for o in &outboxes {
                    o.drain(&mut scratch);
                    scratch.clear();
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
