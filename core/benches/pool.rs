//! Pool micro-benchmarks at capacity 1024, pool full (steady state evicting): insert with
//! eviction, lookup by id, lookup by (topic, seq), and ordered per-topic iteration.
//!
//! The steady state is the realistic one: each new message lands at the next seq of one of a
//! few topics (picked pseudo-randomly, so the victim is usually in another topic than the new
//! message), and the oldest evictable message is evicted, passing over a few that may not be
//! (a failed outgoing message in every topic).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kefu_core::id::MsgId;
use kefu_core::pool::{MessageState, OrderKey, Pool, TopicKey};

mod steady;

use steady::{N, TOPICS, full_pool, id};

fn insert_evict<T: Clone>(c: &mut Criterion, name: &str, topics: usize, payload: T) {
    let (mut pool, mut feed) = full_pool(topics, payload.clone());
    c.bench_function(name, |b| {
        b.iter(|| {
            let (id, topic, key) = feed.next();
            let r = pool.insert(id, topic, key, MessageState::Received, payload.clone());
            black_box(r.unwrap().evicted)
        })
    });
}

fn benches(c: &mut Criterion) {
    insert_evict(c, "pool/insert_evict_1024", TOPICS, ());
    insert_evict(c, "pool/insert_evict_1024_payload64", TOPICS, [7u8; 64]);
    insert_evict(c, "pool/insert_evict_1024_one_topic", 1, ());

    let (pool, _) = full_pool(TOPICS, ());
    let live: Vec<(MsgId, TopicKey, u64)> = (0..TOPICS as TopicKey)
        .flat_map(|t| pool.iter_topic(t).map(|(_, e)| (e.id, e.topic, e.key.seq)))
        .filter(|&(_, _, seq)| seq > 0)
        .collect();
    let mut i = 0;
    c.bench_function("pool/find_id_1024", |b| {
        b.iter(|| {
            i = (i + 1) % live.len();
            black_box(pool.find_id(black_box(&live[i].0)))
        })
    });
    let mut i = 0;
    c.bench_function("pool/find_seq_1024", |b| {
        b.iter(|| {
            i = (i + 1) % live.len();
            let (_, topic, seq) = live[i];
            black_box(pool.find_seq(black_box(topic), black_box(seq)))
        })
    });
    let mut miss = 0;
    c.bench_function("pool/find_id_miss_1024", |b| {
        b.iter(|| {
            miss += 1;
            black_box(pool.find_id(black_box(&id(1 << 41 | miss))))
        })
    });

    // One topic holding the whole pool, iterated in order.
    let mut one: Box<Pool<u64, N>> = Box::default();
    for n in 0..N as u64 {
        one.insert(id(n), 3, OrderKey::stored(n + 1), MessageState::Received, n)
            .unwrap();
    }
    let mut group = c.benchmark_group("pool");
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("iter_topic_1024", |b| {
        b.iter(|| {
            one.iter_topic(black_box(3))
                .map(|(_, e)| e.data ^ e.key.seq)
                .fold(0, u64::wrapping_add)
        })
    });
    group.throughput(Throughput::Elements(pool.iter_topic(5).count() as u64));
    group.bench_function("iter_topic_of_8_1024", |b| {
        b.iter(|| {
            pool.iter_topic(black_box(5))
                .map(|(_, e)| e.key.seq)
                .fold(0, u64::wrapping_add)
        })
    });
    group.finish();
}

criterion_group!(pool_benches, benches);
criterion_main!(pool_benches);
