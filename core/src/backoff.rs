//! Reconnect scheduling: exponential backoff with jitter, reset after a stable connection,
//! paused while the network link is down and spread out randomly when it comes back.
//!
//! Jitter is applied *after* the cap, so that clients which all reached the cap still spread
//! out instead of reconnecting in lockstep; a link coming back schedules the first attempt at a
//! random point in `0..=link_up_spread`, so that a whole site regaining its network does not
//! storm the gateway.
//!
//! # Methods
//! - getters: [`Reconnect::state`], [`Reconnect::attempt`], [`Reconnect::should_connect`];
//! - inputs: [`Reconnect::on_connect_started`], [`Reconnect::on_connected`],
//!   [`Reconnect::on_disconnected`], [`Reconnect::on_link_down`], [`Reconnect::on_link_up`];
//! - output: [`Reconnect::poll_timeout`], the instant at which `should_connect` turns true.
//!
//! Time only moves forward: never pass an earlier `now` after a later one.

use crate::rng::Rng;
use crate::time::{Duration, Instant};

/// Tuning of [`Reconnect`] and [`backoff_delay`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BackoffConfig {
    /// Delay before the 1st retry (attempt 0), before jitter (default 500 ms).
    pub base: Duration,
    /// Longest delay, before jitter (default 30 s).
    pub cap: Duration,
    /// Percentage of the capped delay that is randomised away: delay = d - rand(0..=d*jitter/100).
    /// Values above 100 count as 100 (default 50).
    pub jitter_percent: u8,
    /// A connection that stayed up this long resets the attempt counter (default 30 s).
    pub stable_after: Duration,
    /// When the link comes back, the first attempt is made after rand(0..=link_up_spread)
    /// (default 3 s).
    pub link_up_spread: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            jitter_percent: 50,
            stable_after: Duration::from_secs(30),
            link_up_spread: Duration::from_secs(3),
        }
    }
}

/// Where the connection is, from the scheduler's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ReconnectState {
    /// Not connected; the next attempt is allowed at `at`.
    Waiting {
        /// When the next attempt may start.
        at: Instant,
    },
    /// An attempt is under way since `since`.
    Connecting {
        /// When the attempt started.
        since: Instant,
    },
    /// Up since `since`.
    Connected {
        /// When the connection came up.
        since: Instant,
    },
    /// The link (network interface) is down: no attempts until on_link_up.
    LinkDown,
}

/// The reconnect scheduler of one client connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Reconnect {
    state: ReconnectState,
    attempt: u32,
}

impl Reconnect {
    /// Starts Waiting { at: now } (connect at once), attempt 0.
    pub fn new(now: Instant) -> Self {
        Reconnect {
            state: ReconnectState::Waiting { at: now },
            attempt: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> ReconnectState {
        self.state
    }

    /// Consecutive failed attempts so far.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Waiting and now >= at.
    pub fn should_connect(&self, now: Instant) -> bool {
        matches!(self.state, ReconnectState::Waiting { at } if now >= at)
    }

    /// The engine started a connection attempt.
    pub fn on_connect_started(&mut self, now: Instant) {
        self.state = ReconnectState::Connecting { since: now };
    }

    /// The connection is up (and logged in). The attempt counter is kept until the connection
    /// proves stable (see [`Reconnect::on_disconnected`]).
    pub fn on_connected(&mut self, now: Instant) {
        self.state = ReconnectState::Connected { since: now };
    }

    /// An attempt failed or a connection dropped: if it had been Connected for >= stable_after,
    /// the attempt counter resets first. Schedules Waiting { at: now + delay } and returns `at`.
    /// (If LinkDown, stays LinkDown and returns None.)
    pub fn on_disconnected(
        &mut self,
        now: Instant,
        cfg: &BackoffConfig,
        rng: &mut impl Rng,
    ) -> Option<Instant> {
        match self.state {
            ReconnectState::LinkDown => return None,
            ReconnectState::Connected { since } if now - since >= cfg.stable_after => {
                self.attempt = 0;
            }
            _ => {}
        }
        let at = now + backoff_delay(self.attempt, cfg, rng);
        self.attempt = self.attempt.saturating_add(1);
        self.state = ReconnectState::Waiting { at };
        Some(at)
    }

    /// The network link went down: no attempts until [`Reconnect::on_link_up`]. The engine
    /// drops any connection or attempt under way.
    pub fn on_link_down(&mut self) {
        self.state = ReconnectState::LinkDown;
    }

    /// Link back: Waiting { at: now + rand(0..=link_up_spread) }, attempt counter reset.
    ///
    /// Ignored unless the state is LinkDown (a link-up report while connected or already
    /// scheduled changes nothing).
    pub fn on_link_up(&mut self, now: Instant, cfg: &BackoffConfig, rng: &mut impl Rng) {
        if self.state != ReconnectState::LinkDown {
            return;
        }
        let spread = cfg.link_up_spread.as_micros();
        let delay = Duration::from_micros(rng.below(spread.saturating_add(1)));
        self.attempt = 0;
        self.state = ReconnectState::Waiting { at: now + delay };
    }

    /// The Waiting deadline: when [`Reconnect::should_connect`] turns true.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            ReconnectState::Waiting { at } => Some(at),
            _ => None,
        }
    }
}

/// The delay before retry number `attempt` (0-based): min(cap, base * 2^attempt), then jitter.
pub fn backoff_delay(attempt: u32, cfg: &BackoffConfig, rng: &mut impl Rng) -> Duration {
    let factor = 1u64.checked_shl(attempt).unwrap_or(u64::MAX);
    let d = cfg.base.saturating_mul(factor).min(cfg.cap).as_micros();
    let percent = u128::from(cfg.jitter_percent.min(100));
    // d * percent / 100 <= d, so it fits back into a u64.
    let span = u64::try_from(u128::from(d) * percent / 100).unwrap_or(d);
    let cut = rng.below(span.saturating_add(1));
    Duration::from_micros(d.saturating_sub(cut))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use std::vec::Vec;

    fn ms(t: u64) -> Instant {
        Instant::from_millis(t)
    }

    fn no_jitter() -> BackoffConfig {
        BackoffConfig {
            jitter_percent: 0,
            ..Default::default()
        }
    }

    /// Fraction of `values` in the fullest of ten equal buckets over `lo..=hi`.
    fn fullest_bucket(values: &[u64], lo: u64, hi: u64) -> f64 {
        let mut buckets = [0usize; 10];
        let width = (hi - lo) / 10 + 1;
        for v in values {
            assert!((lo..=hi).contains(v), "{v} outside {lo}..={hi}");
            buckets[((v - lo) / width) as usize] += 1;
        }
        *buckets.iter().max().unwrap() as f64 / values.len() as f64
    }

    #[test]
    fn delays_double_and_are_capped() {
        let cfg = no_jitter();
        let mut rng = SplitMix64::new(1);
        let got: Vec<u64> = (0..10)
            .map(|a| backoff_delay(a, &cfg, &mut rng).as_millis())
            .collect();
        assert_eq!(
            got,
            [
                500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000, 30_000
            ]
        );
        for attempt in [31, 32, 63, 64, 1_000, u32::MAX] {
            assert_eq!(
                backoff_delay(attempt, &cfg, &mut rng),
                Duration::from_secs(30)
            );
        }
    }

    #[test]
    fn jitter_stays_within_bounds_after_the_cap() {
        let cfg = BackoffConfig::default();
        let mut rng = SplitMix64::new(2);
        for attempt in 0..12 {
            let d = (500_000u64 << attempt).min(30_000_000);
            for _ in 0..200 {
                let got = backoff_delay(attempt, &cfg, &mut rng).as_micros();
                assert!(d / 2 <= got && got <= d, "attempt {attempt}: {got} vs {d}");
            }
        }
        let capped: Vec<u64> = (0..200)
            .map(|_| backoff_delay(20, &cfg, &mut rng).as_micros())
            .collect();
        assert!(
            capped.iter().any(|d| *d < 25_000_000),
            "capped delays spread out"
        );
    }

    #[test]
    fn jitter_differs_between_seeds_and_repeats_with_the_same_seed() {
        let cfg = BackoffConfig::default();
        let run = |seed| {
            let mut rng = SplitMix64::new(seed);
            (0..8)
                .map(|a| backoff_delay(a, &cfg, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn extreme_settings_do_not_overflow() {
        let mut rng = SplitMix64::new(3);
        let cfg = BackoffConfig {
            base: Duration::MAX,
            cap: Duration::MAX,
            jitter_percent: 255,
            ..Default::default()
        };
        for attempt in [0, 1, 64, u32::MAX] {
            let _ = backoff_delay(attempt, &cfg, &mut rng);
        }
        let zero = BackoffConfig {
            base: Duration::ZERO,
            ..Default::default()
        };
        assert_eq!(backoff_delay(5, &zero, &mut rng), Duration::ZERO);
        let mut r = Reconnect::new(Instant::NEVER);
        let far = BackoffConfig {
            link_up_spread: Duration::MAX,
            ..cfg
        };
        assert_eq!(
            r.on_disconnected(Instant::NEVER, &far, &mut rng),
            Some(Instant::NEVER)
        );
        r.on_link_down();
        r.on_link_up(Instant::NEVER, &far, &mut rng);
        assert_eq!(r.poll_timeout(), Some(Instant::NEVER));
    }

    #[test]
    fn a_new_scheduler_connects_at_once() {
        let r = Reconnect::new(ms(5));
        assert_eq!(r.state(), ReconnectState::Waiting { at: ms(5) });
        assert!(r.should_connect(ms(5)));
        assert!(!r.should_connect(ms(4)));
        assert_eq!(r.poll_timeout(), Some(ms(5)));
        assert_eq!(r.attempt(), 0);
    }

    #[test]
    fn failed_attempts_back_off_further_each_time() {
        let cfg = no_jitter();
        let mut rng = SplitMix64::new(4);
        let mut r = Reconnect::new(ms(0));
        let mut now = ms(0);
        for (n, wait) in [500, 1_000, 2_000, 4_000].into_iter().enumerate() {
            r.on_connect_started(now);
            assert!(!r.should_connect(now));
            assert_eq!(r.poll_timeout(), None);
            now += Duration::from_millis(100);
            let at = r.on_disconnected(now, &cfg, &mut rng).unwrap();
            assert_eq!(at, now + Duration::from_millis(wait));
            assert_eq!(r.attempt(), n as u32 + 1);
            assert!(!r.should_connect(now));
            now = at;
            assert!(r.should_connect(now));
        }
    }

    #[test]
    fn a_stable_connection_resets_the_counter_but_a_short_one_does_not() {
        let cfg = no_jitter();
        let mut rng = SplitMix64::new(5);
        let mut r = Reconnect::new(ms(0));
        for _ in 0..3 {
            r.on_connect_started(ms(0));
            r.on_disconnected(ms(0), &cfg, &mut rng);
        }
        assert_eq!(r.attempt(), 3);
        r.on_connected(ms(10_000));
        let at = r.on_disconnected(ms(39_999), &cfg, &mut rng).unwrap();
        assert_eq!(
            at,
            ms(39_999 + 4_000),
            "short connection: keeps backing off"
        );
        assert_eq!(r.attempt(), 4);
        r.on_connected(ms(50_000));
        let at = r.on_disconnected(ms(80_000), &cfg, &mut rng).unwrap();
        assert_eq!(at, ms(80_500), "stable connection: back to the base delay");
        assert_eq!(r.attempt(), 1);
    }

    #[test]
    fn a_down_link_pauses_attempts() {
        let cfg = BackoffConfig::default();
        let mut rng = SplitMix64::new(6);
        let mut r = Reconnect::new(ms(0));
        r.on_connect_started(ms(0));
        r.on_disconnected(ms(0), &cfg, &mut rng);
        r.on_link_down();
        assert_eq!(r.state(), ReconnectState::LinkDown);
        assert!(!r.should_connect(Instant::NEVER));
        assert_eq!(r.poll_timeout(), None);
        assert_eq!(r.on_disconnected(ms(10), &cfg, &mut rng), None);
        assert_eq!(r.state(), ReconnectState::LinkDown);
    }

    #[test]
    fn link_up_schedules_within_the_spread_and_resets_the_counter() {
        let cfg = BackoffConfig::default();
        for seed in 0..100 {
            let mut rng = SplitMix64::new(seed);
            let mut r = Reconnect::new(ms(0));
            for _ in 0..5 {
                r.on_disconnected(ms(0), &cfg, &mut rng);
            }
            r.on_link_down();
            r.on_link_up(ms(1_000), &cfg, &mut rng);
            assert_eq!(r.attempt(), 0);
            let at = r.poll_timeout().unwrap();
            assert!(ms(1_000) <= at && at <= ms(4_000), "{at:?}");
        }
    }

    #[test]
    fn link_up_while_not_down_changes_nothing() {
        let cfg = BackoffConfig::default();
        let mut rng = SplitMix64::new(7);
        let mut r = Reconnect::new(ms(0));
        r.on_connected(ms(1));
        r.on_link_up(ms(2), &cfg, &mut rng);
        assert_eq!(r.state(), ReconnectState::Connected { since: ms(1) });
    }

    #[test]
    fn a_storm_of_clients_spreads_its_first_retries() {
        let cfg = BackoffConfig::default();
        let firsts: Vec<u64> = (0..1_000u64)
            .map(|seed| {
                let mut rng = SplitMix64::new(seed.wrapping_mul(0x9E37_79B9));
                let mut r = Reconnect::new(ms(0));
                r.on_connect_started(ms(0));
                r.on_disconnected(ms(0), &cfg, &mut rng)
                    .unwrap()
                    .as_micros()
            })
            .collect();
        assert!(fullest_bucket(&firsts, 250_000, 500_000) <= 0.25);
    }

    #[test]
    fn a_storm_of_clients_spreads_its_link_up_attempts() {
        let cfg = BackoffConfig::default();
        let firsts: Vec<u64> = (0..1_000u64)
            .map(|seed| {
                let mut rng = SplitMix64::new(seed);
                let mut r = Reconnect::new(ms(0));
                r.on_link_down();
                r.on_link_up(ms(0), &cfg, &mut rng);
                r.poll_timeout().unwrap().as_micros()
            })
            .collect();
        assert!(fullest_bucket(&firsts, 0, 3_000_000) <= 0.25);
    }
}
