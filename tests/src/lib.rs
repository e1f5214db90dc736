//! kefu-tests: end-to-end suites that run the real gateway and real clients over real sockets on
//! 127.0.0.1, under faults, crashes, bad input and load. The suites live in `tests/tests/`; this
//! library holds what they share:
//!
//! - [`gateway`]: the real `kefu gateway` process (start, SIGKILL, restart on the same folder
//!   and ports), accounts made with `kefu user add`.
//! - [`proxy`]: a seeded, frame-aware fault-injecting TCP proxy.
//! - [`ledger`]: who sent, who was acknowledged, who failed, who received what: the
//!   exactly-once, in-order, nothing-acknowledged-lost checks and the printed totals.
//! - [`sdk`]: SDK (`kefu_host::client`) peers that publish and receive into a ledger.
//! - [`light`]: a light client that drives `kefu_core`'s engine directly over framed TCP
//!   (thousands of them fit in one test).
//! - [`raw`]: raw framed-TCP and WebSocket (binary and JSON) connections for bad input.

pub mod gateway;
pub mod ledger;
pub mod light;
pub mod proxy;
pub mod raw;
pub mod sdk;

use std::time::Duration;

/// Generous wait for one expected thing (an answer, a login, a delivery to settle).
pub const WAIT: Duration = Duration::from_secs(30);

/// Whether `KEFU_LONG=1` asks for the long versions of the suites.
pub fn long() -> bool {
    std::env::var("KEFU_LONG").is_ok_and(|v| v == "1")
}

/// `ci` normally, `long` under `KEFU_LONG=1`.
pub fn size(ci: usize, long_size: usize) -> usize {
    if long() { long_size } else { ci }
}

/// The seed of a scenario: `KEFU_SEED` if set (to replay a run), else a fresh one. Printed
/// either way, so a failing run says how to replay it.
pub fn seed(scenario: &str) -> u64 {
    let seed = match std::env::var("KEFU_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("KEFU_SEED={s:?} is not a u64")),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let mut rng = kefu_core::rng::SplitMix64::new(t ^ u64::from(std::process::id()));
            kefu_core::rng::Rng::next_u64(&mut rng)
        }
    };
    println!("[{scenario}] seed {seed} (replay with KEFU_SEED={seed})");
    seed
}

/// A small seeded random source for test decisions.
#[derive(Clone, Debug)]
pub struct Dice(kefu_core::rng::SplitMix64);

impl Dice {
    /// A generator for `seed` mixed with `stream` (one stream per connection, client, ...).
    pub fn new(seed: u64, stream: u64) -> Dice {
        let mut mix =
            kefu_core::rng::SplitMix64::new(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let s = kefu_core::rng::Rng::next_u64(&mut mix);
        Dice(kefu_core::rng::SplitMix64::new(s))
    }

    /// A uniform u64.
    pub fn word(&mut self) -> u64 {
        kefu_core::rng::Rng::next_u64(&mut self.0)
    }

    /// A uniform value in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.word() % (hi - lo + 1)
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.word() % 1000 < u64::from(per_mille)
    }
}

/// Raises this process's open-file soft limit to its hard limit; the limit now in force.
pub fn raise_open_files() -> u64 {
    kefu_host::bench::raise_open_files()
}
