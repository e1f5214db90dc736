//! A fixed amount of the `pool/insert_evict_1024` bench's work, for counting instructions and
//! simulated cache misses: a full pool of 1024 over 8 topics in its steady state, then exactly
//! 100,000 inserts, each evicting, in [`measured`].
//!
//! ```text
//! cargo build --profile bench -p kefu-core --example pool_instructions
//! valgrind --tool=callgrind --toggle-collect='pool_instructions::measured' \
//!     target/release/examples/pool_instructions
//! ```
//!
//! Instructions per insert = callgrind's total / 100,000 (add `--branch-sim=yes` for branch
//! mispredictions, `--cache-sim=yes` for cache misses). Run directly with a count
//! (`pool_instructions 10000000`), it prints the wall time per insert instead: on a busy
//! machine, the least of several runs is the steady figure.

#[path = "../benches/steady/mod.rs"]
mod steady;

use std::hint::black_box;
use std::time::Instant;

use kefu_core::pool::MessageState;
use steady::{Feed, TOPICS, full_pool};

/// Inserts in the measured part, unless a count is given.
const MEASURED: u64 = 100_000;

/// The part callgrind counts (`--toggle-collect`); out of line so that it has a symbol.
#[inline(never)]
fn measured(pool: &mut steady::SteadyPool<()>, feed: &mut Feed, inserts: u64) {
    for _ in 0..inserts {
        let (id, topic, key) = feed.next();
        let r = pool.insert(id, topic, key, MessageState::Received, ());
        black_box(r.map(|r| r.evicted).ok());
    }
}

fn main() {
    let inserts = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(MEASURED);
    let (mut pool, mut feed) = full_pool(TOPICS, ());
    let start = Instant::now();
    measured(&mut pool, &mut feed, inserts);
    let ns = start.elapsed().as_nanos() as f64 / inserts as f64;
    println!("{inserts} inserts measured (divide callgrind's total by that); {ns:.1} ns each");
}
