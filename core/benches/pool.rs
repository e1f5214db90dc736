//! Pool micro-benchmarks at capacity 1024, pool full (steady state evicting): insert with
//! eviction, lookup by id, lookup by (topic, seq), and ordered per-topic iteration.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kefu_core::id::MsgId;
use kefu_core::pool::{MessageState, OrderKey, Pool, TopicKey};

const N: usize = 1024;
const TOPICS: u64 = 8;

fn id(n: u64) -> MsgId {
    // Like a real id: a timestamp up front, random-looking bits behind.
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(1_790_000_000_000 + n).to_be_bytes());
    b[8..].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    MsgId::from_bytes(b)
}

/// Message `n` goes to topic `n % TOPICS` at seq `n / TOPICS + 1`.
fn place(n: u64) -> (TopicKey, OrderKey) {
    ((n % TOPICS) as TopicKey, OrderKey::stored(n / TOPICS + 1))
}

fn full_pool<T: Clone>(payload: T) -> Box<Pool<T, N>> {
    let mut pool: Box<Pool<T, N>> = Box::default();
    for n in 0..N as u64 {
        let (topic, key) = place(n);
        pool.insert(id(n), topic, key, MessageState::Received, payload.clone())
            .unwrap();
    }
    pool
}

fn insert_evict<T: Clone>(c: &mut Criterion, name: &str, payload: T) {
    let mut pool = full_pool(payload.clone());
    let mut n = N as u64;
    c.bench_function(name, |b| {
        b.iter(|| {
            let (topic, key) = place(n);
            let r = pool.insert(id(n), topic, key, MessageState::Received, payload.clone());
            n += 1;
            black_box(r.unwrap().evicted)
        })
    });
}

fn benches(c: &mut Criterion) {
    insert_evict(c, "pool/insert_evict_1024", ());
    insert_evict(c, "pool/insert_evict_1024_payload64", [7u8; 64]);

    let pool = full_pool(());
    let ids: Vec<MsgId> = (0..N as u64).map(id).collect();
    let mut i = 0;
    c.bench_function("pool/find_id_1024", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            black_box(pool.find_id(black_box(&ids[i])))
        })
    });
    let mut n = 0;
    c.bench_function("pool/find_seq_1024", |b| {
        b.iter(|| {
            n = (n + 1) % N as u64;
            let (topic, key) = place(n);
            black_box(pool.find_seq(black_box(topic), black_box(key.seq)))
        })
    });
    let mut miss = 0;
    c.bench_function("pool/find_id_miss_1024", |b| {
        b.iter(|| {
            miss += 1;
            black_box(pool.find_id(black_box(&id(1 << 40 | miss))))
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
    group.throughput(Throughput::Elements((N as u64) / TOPICS));
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
