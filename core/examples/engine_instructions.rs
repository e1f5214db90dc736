//! A fixed amount of work through the engine bench's pair, for counting instructions: 2,000
//! warm-up messages (pools at capacity, evicting), then exactly 40,000 in [`measured`]. Wall
//! time on a shared machine moves by ±20% from run to run; this count does not move at all.
//!
//! ```text
//! cargo build --profile bench -p kefu-core --example engine_instructions
//! valgrind --tool=callgrind --toggle-collect='engine_instructions::measured' \
//!     target/release/examples/engine_instructions
//! ```
//!
//! Instructions per message = callgrind's total / 40,000.

#[path = "../benches/pair/mod.rs"]
mod pair;

use pair::Pair;

/// Messages in the measured part.
const MEASURED: u64 = 40_000;

/// The part callgrind counts (`--toggle-collect`); out of line so that it has a symbol.
#[inline(never)]
fn measured(pair: &mut Pair) {
    pair.send(MEASURED);
}

fn main() {
    let mut pair = Pair::new();
    pair.send(2_000);
    let before = pair.received;
    measured(&mut pair);
    println!(
        "{} messages measured; divide callgrind's total by that",
        pair.received - before
    );
}
