//! Messages per second through a sender engine → relay → receiver engine pair on one core
//! (`pair`): publish, frame, pub, ctrl 202, data, receive ordering, pool, events and acks, all
//! real. The relay between the engines is the thinnest possible gateway (it decodes each pub,
//! numbers it and encodes the ctrl and the data, storing nothing); its codec work counts in the
//! figure too, about a quarter of it.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

mod pair;

use pair::Pair;

fn engine_pair(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    let batch = 10_000;
    g.throughput(Throughput::Elements(batch));
    let mut pair = Pair::new();
    pair.send(2_000); // warm: pools at capacity, evicting
    g.bench_function("pair_10k_messages_100b", |b| b.iter(|| pair.send(batch)));
    g.finish();
}

criterion_group!(benches, engine_pair);
criterion_main!(benches);
