//! A seeded, sans-IO network emulator in the spirit of str0m's netem: every frame gets a fate
//! (lost, duplicated, delayed, reordered) from one seeded generator, and frames are delivered in
//! time order. Frames of a connection that was cut are discarded on arrival.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use kefu_core::rng::{Rng, SplitMix64};
use kefu_core::time::{Duration, Instant};

/// Where a frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dest {
    Gateway,
    Client(usize),
}

/// Link behaviour.
#[derive(Clone, Copy, Debug)]
pub struct NetConfig {
    /// Per-frame loss, in parts per million.
    pub loss: u32,
    /// Per-frame duplication, ppm.
    pub dup: u32,
    /// Per-frame chance of an extra delay that reorders it, ppm.
    pub reorder: u32,
    /// Base one-way delay.
    pub delay: Duration,
    /// Random extra delay up to this (jitter), and the reordering delay.
    pub jitter: Duration,
}

impl NetConfig {
    pub const CLEAN: NetConfig = NetConfig {
        loss: 0,
        dup: 0,
        reorder: 0,
        delay: Duration::from_millis(5),
        jitter: Duration::ZERO,
    };
}

/// A frame in flight: (arrival, send order, destination, connection, bytes).
type InFlight = Reverse<(Instant, u64, Dest, u64, Vec<u8>)>;

/// Frames in flight.
pub struct Net {
    pub cfg: NetConfig,
    rng: SplitMix64,
    queue: BinaryHeap<InFlight>,
    order: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub sent: u64,
}

impl Net {
    pub fn new(seed: u64, cfg: NetConfig) -> Self {
        Net {
            cfg,
            rng: SplitMix64::new(seed),
            queue: BinaryHeap::new(),
            order: 0,
            lost: 0,
            duplicated: 0,
            sent: 0,
        }
    }

    /// Sends a frame on connection `conn` towards `dest`.
    pub fn send(&mut self, now: Instant, dest: Dest, conn: u64, frame: Vec<u8>) {
        self.sent += 1;
        if self.rng.chance(self.cfg.loss) {
            self.lost += 1;
            return;
        }
        let copies = if self.rng.chance(self.cfg.dup) { 2 } else { 1 };
        self.duplicated += copies - 1;
        for _ in 0..copies {
            let mut at = now + self.cfg.delay;
            let jitter = self.cfg.jitter.as_micros();
            if jitter > 0 {
                at += Duration::from_micros(self.rng.below(jitter / 4 + 1));
                if self.rng.chance(self.cfg.reorder) {
                    at += Duration::from_micros(self.rng.below(jitter + 1));
                }
            }
            self.order += 1;
            self.queue
                .push(Reverse((at, self.order, dest, conn, frame.clone())));
        }
    }

    /// When the next frame arrives.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((at, ..))| *at)
    }

    /// The next frame due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Dest, u64, Vec<u8>)> {
        if self.next_arrival()? > now {
            return None;
        }
        self.queue
            .pop()
            .map(|Reverse((_, _, dest, conn, frame))| (dest, conn, frame))
    }
}
