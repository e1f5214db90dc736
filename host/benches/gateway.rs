//! Gateway throughput: messages stored durably (SQLite, synchronous=FULL) and acknowledged
//! (`202`) per second, with one publisher and with 100, each over its own TCP connection on
//! 127.0.0.1, keeping 1 or 32 `pub`s in flight.
//!
//! `cargo bench -p kefu-host --bench gateway`; criterion reports elements/s = messages/s.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kefu_core::proto::Code;
use support::{Raw, new_id, test_config};

/// Publishes `n` messages on `topic` keeping `in_flight` unanswered; panics on any non-202.
async fn publish_n(c: &mut Raw, topic: &str, n: usize, in_flight: usize) {
    let mut sent = 0;
    let mut answered = 0;
    let mut waiting = std::collections::VecDeque::new();
    while answered < n {
        while sent < n && waiting.len() < in_flight {
            waiting.push_back(c.send_pub(topic, new_id(), &[b'x'; 100]).await);
            sent += 1;
        }
        let id = waiting.pop_front().expect("in flight");
        let (code, ..) = c.ctrl(id).await;
        assert_eq!(code, Code::ACCEPTED);
        answered += 1;
    }
}

fn bench_publishers(c: &mut Criterion, publishers: usize, in_flight: usize, per_iter: usize) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, mut clients, topics) = rt.block_on(async {
        let mut cfg = test_config(dir.path());
        cfg.durable = true;
        cfg.rate_per_sec = 0;
        let gw = kefu_host::gateway::start(cfg).await.expect("gateway");
        // Everyone publishes into their own group topic (nobody else subscribed: this
        // measures storing and acknowledging).
        let mut clients = Vec::new();
        let mut topics = Vec::new();
        for i in 0..publishers {
            let mut raw = Raw::connect(gw.tcp_addr).await;
            raw.hi().await;
            raw.acc(&format!("pub{i}"), "bench-pass").await;
            topics.push(raw.new_group().await);
            clients.push(raw);
        }
        (gw, clients, topics)
    });
    let mut group = c.benchmark_group("gateway");
    group.throughput(Throughput::Elements((publishers * per_iter) as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    let name = format!("pub_202_{publishers}_publishers_{in_flight}_in_flight");
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let mut tasks = Vec::new();
                    for (mut client, topic) in clients.drain(..).zip(topics.iter().cloned()) {
                        tasks.push(tokio::spawn(async move {
                            publish_n(&mut client, &topic, per_iter, in_flight).await;
                            client
                        }));
                    }
                    for t in tasks {
                        clients.push(t.await.expect("publisher"));
                    }
                }
                start.elapsed()
            })
        })
    });
    group.finish();
    rt.block_on(gw.shutdown());
}

fn gateway(c: &mut Criterion) {
    bench_publishers(c, 1, 1, 200);
    bench_publishers(c, 1, 32, 2000);
    bench_publishers(c, 100, 1, 20);
    bench_publishers(c, 100, 32, 200);
}

criterion_group!(benches, gateway);
criterion_main!(benches);
