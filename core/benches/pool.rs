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
use kefu_core::pool::{FailReason, MessageState, OrderKey, Pool, TopicKey};

const N: usize = 1024;
const TOPICS: usize = 8;

fn id(n: u64) -> MsgId {
    // Like a real id: a timestamp up front, random-looking bits behind.
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(1_790_000_000_000 + n).to_be_bytes());
    b[8..].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    MsgId::from_bytes(b)
}

/// Incoming messages: message `n` goes to a pseudo-random one of `topics` topics, at that
/// topic's next seq.
struct Feed {
    n: u64,
    topics: usize,
    last_seq: [u64; TOPICS],
}

impl Feed {
    fn new(topics: usize) -> Self {
        Feed {
            n: 0,
            topics: topics.clamp(1, TOPICS),
            last_seq: [0; TOPICS],
        }
    }

    fn next(&mut self) -> (MsgId, TopicKey, OrderKey) {
        let n = self.n;
        self.n += 1;
        let t = ((n.wrapping_mul(0xD1B5_4A32_D192_ED03) >> 32) % self.topics as u64) as usize;
        self.last_seq[t] += 1;
        (id(n), t as TopicKey, OrderKey::stored(self.last_seq[t]))
    }
}

/// A full pool in steady state (it has already evicted a pool's worth), and the feed to go on.
fn full_pool<T: Clone>(topics: usize, payload: T) -> (Box<Pool<T, N>>, Feed) {
    let mut pool: Box<Pool<T, N>> = Box::default();
    let failed = MessageState::Failed(FailReason::TimedOut);
    for t in 0..topics {
        let key = OrderKey::pending(0, 1);
        pool.insert(
            id(1 << 40 | t as u64),
            t as TopicKey,
            key,
            failed,
            payload.clone(),
        )
        .unwrap();
    }
    let mut feed = Feed::new(topics);
    for _ in 0..2 * N {
        let (id, topic, key) = feed.next();
        pool.insert(id, topic, key, MessageState::Received, payload.clone())
            .unwrap();
    }
    assert_eq!(pool.len(), N);
    (pool, feed)
}

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
