//! The gateway-side push window for one (subscriber, topic): what to push next, how much may be
//! in flight, cumulative acks, and go-back retransmission on timeout.
//!
//! The gateway asks [`DeliveryWindow::poll_push`] which seqs to send, feeds the subscriber's
//! cumulative acks to [`DeliveryWindow::on_ack`], and calls [`DeliveryWindow::handle_timeout`]
//! at [`DeliveryWindow::poll_timeout`]. On timeout the window goes back to the acked mark and
//! pushes everything after it again (the receiver drops duplicates), with a doubling timeout.
//!
//! Nothing here overflows, even with seqs near `u64::MAX` or a huge window.

use core::fmt;

use crate::order::SeqRange;
use crate::time::{Duration, Instant};

/// Tuning of a push window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DeliveryConfig {
    /// Most seqs pushed and not yet acked (default 64). 0 pushes nothing.
    pub window: u64,
    /// First retransmit timeout (default 1 s); doubles on each expiry without progress.
    pub rto: Duration,
    /// Upper bound of the retransmit timeout (default 30 s).
    pub max_rto: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            window: 64,
            rto: Duration::from_secs(1),
            max_rto: Duration::from_secs(30),
        }
    }
}

/// What a cumulative ack did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum AckOutcome {
    /// The mark moved forward by this many seqs.
    Advanced(u64),
    /// At or below the current mark: a late or duplicate ack, ignored.
    Stale,
    /// Above the topic's latest seq: a confused or hostile client; ignored (caller may answer
    /// 400). An ack above what this window pushed but within the topic is valid: the subscriber
    /// may have pulled the messages with `get`.
    BeyondLatest,
}

impl fmt::Display for AckOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AckOutcome::Advanced(n) => write!(f, "ack advanced the mark by {n}"),
            AckOutcome::Stale => f.write_str("ack at or below the mark, ignored"),
            AckOutcome::BeyondLatest => f.write_str("ack above the topic's latest seq, ignored"),
        }
    }
}

/// Push state of one subscriber on one topic.
///
/// Invariants: `acked <= sent <= pushed_max`, `sent - acked <= window`, and the timer is armed
/// only while something is in flight (or was, until the next poll).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DeliveryWindow {
    /// Highest seq the subscriber acked (cumulatively).
    acked: u64,
    /// Highest seq pushed on the current pass (goes back to `acked` on timeout / reconnect).
    sent: u64,
    /// Highest seq ever pushed or acked.
    pushed_max: u64,
    /// Window size, taken from the config given to `new` / `on_reconnect`.
    window: u64,
    /// Current retransmit timeout.
    rto: Duration,
    /// When in-flight data is declared lost; None when the timer is disarmed.
    deadline: Option<Instant>,
    /// Go-back retransmissions so far.
    retransmits: u64,
}

impl DeliveryWindow {
    /// Resume from the subscriber's acked mark (0 = from the start).
    pub const fn new(acked: u64, cfg: &DeliveryConfig) -> Self {
        DeliveryWindow {
            acked,
            sent: acked,
            pushed_max: acked,
            window: cfg.window,
            rto: cfg.rto,
            deadline: None,
            retransmits: 0,
        }
    }

    /// The subscriber's cumulative acked mark.
    pub const fn acked(&self) -> u64 {
        self.acked
    }

    /// Highest seq pushed so far (>= acked).
    ///
    /// This is the push cursor: a timeout or reconnect brings it back to [`Self::acked`].
    pub const fn sent(&self) -> u64 {
        self.sent
    }

    /// Seqs pushed and not yet acked.
    pub const fn in_flight(&self) -> u64 {
        self.sent.saturating_sub(self.acked)
    }

    /// Total go-back retransmissions so far (for metrics).
    pub const fn retransmits(&self) -> u64 {
        self.retransmits
    }

    /// The current retransmit timeout (grows on expiry, reset by progress).
    pub const fn rto(&self) -> Duration {
        self.rto
    }

    /// The next seqs to push now, given the topic's latest seq: sent+1 ..= min(latest, acked+window),
    /// or None if nothing to push (caught up or window full). Marks them sent and arms the
    /// retransmit timer (now + rto) if not armed.
    pub fn poll_push(&mut self, now: Instant, latest: u64) -> Option<SeqRange> {
        let limit = latest.min(self.acked.saturating_add(self.window));
        if limit <= self.sent {
            return None;
        }
        let range = SeqRange {
            first: self.sent + 1,
            last: limit,
        };
        self.sent = limit;
        self.pushed_max = self.pushed_max.max(limit);
        if self.deadline.is_none() {
            self.deadline = Some(now + self.rto);
        }
        Some(range)
    }

    /// A cumulative ack from the subscriber. Advancing rearms the timer (now + base rto, rto reset)
    /// if anything is still in flight, disarms it otherwise.
    ///
    /// `latest` is the topic's latest seq. An ack above the current cursor (seqs pushed before
    /// a go-back, or pulled by the subscriber with `get`) is accepted: the subscriber holds
    /// them, so they need not be pushed again.
    pub fn on_ack(
        &mut self,
        now: Instant,
        cfg: &DeliveryConfig,
        seq: u64,
        latest: u64,
    ) -> AckOutcome {
        if seq <= self.acked {
            return AckOutcome::Stale;
        }
        if seq > latest {
            return AckOutcome::BeyondLatest;
        }
        self.pushed_max = self.pushed_max.max(seq);
        let advanced = seq - self.acked;
        self.acked = seq;
        self.sent = self.sent.max(seq);
        self.rto = cfg.rto;
        self.deadline = if self.in_flight() > 0 {
            Some(now + cfg.rto)
        } else {
            None
        };
        AckOutcome::Advanced(advanced)
    }

    /// Timer expiry: if the deadline passed with data in flight, go back to the mark (sent = acked,
    /// so the next poll_push resends), double rto (capped), count a retransmit; returns whether it did.
    ///
    /// The timer is disarmed either way once the deadline has passed; the next `poll_push` arms
    /// it again with the doubled rto.
    pub fn handle_timeout(&mut self, now: Instant, cfg: &DeliveryConfig) -> bool {
        match self.deadline {
            Some(deadline) if deadline <= now => {
                self.deadline = None;
                if self.in_flight() == 0 {
                    return false;
                }
                self.sent = self.acked;
                self.rto = self.rto.saturating_mul(2).min(cfg.max_rto);
                self.retransmits = self.retransmits.saturating_add(1);
                true
            }
            _ => false,
        }
    }

    /// When the retransmit timer fires, if armed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// The subscriber reconnected (new connection): in-flight pushes are presumed lost,
    /// continue from the acked mark, timer disarmed, rto reset. The window is taken from `cfg`.
    pub fn on_reconnect(&mut self, cfg: &DeliveryConfig) {
        self.sent = self.acked;
        self.deadline = None;
        self.rto = cfg.rto;
        self.window = cfg.window;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A topic latest seq above anything the tests push.
    const LATEST: u64 = 1_000;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    fn range(first: u64, last: u64) -> Option<SeqRange> {
        Some(SeqRange { first, last })
    }

    fn cfg(window: u64) -> DeliveryConfig {
        DeliveryConfig {
            window,
            ..DeliveryConfig::default()
        }
    }

    #[test]
    fn pushes_are_bounded_by_the_window_and_the_latest_seq() {
        let cfg = cfg(4);
        let mut d = DeliveryWindow::new(0, &cfg);
        assert_eq!(d.poll_push(ms(0), 0), None, "nothing in the topic");
        assert_eq!(d.poll_push(ms(0), 2), range(1, 2));
        assert_eq!(d.poll_timeout(), Some(ms(1_000)));
        assert_eq!(d.poll_push(ms(5), 10), range(3, 4));
        assert_eq!(d.poll_timeout(), Some(ms(1_000)), "already armed");
        assert_eq!(d.in_flight(), 4);
        assert_eq!(d.poll_push(ms(6), 10), None, "window full");
    }

    #[test]
    fn cumulative_acks_open_the_window_and_rearm_the_timer() {
        let cfg = cfg(4);
        let mut d = DeliveryWindow::new(0, &cfg);
        d.poll_push(ms(0), 10);
        assert_eq!(d.on_ack(ms(100), &cfg, 3, LATEST), AckOutcome::Advanced(3));
        assert_eq!(d.acked(), 3);
        assert_eq!(d.poll_timeout(), Some(ms(1_100)));
        assert_eq!(d.poll_push(ms(100), 10), range(5, 7));
        assert_eq!(d.on_ack(ms(200), &cfg, 7, LATEST), AckOutcome::Advanced(4));
        assert_eq!(d.in_flight(), 0);
        assert_eq!(d.poll_timeout(), None, "nothing in flight");
    }

    #[test]
    fn stale_acks_and_acks_beyond_the_topic_are_ignored() {
        let cfg = cfg(4);
        let mut d = DeliveryWindow::new(5, &cfg);
        d.poll_push(ms(0), 20);
        assert_eq!(d.on_ack(ms(1), &cfg, 5, LATEST), AckOutcome::Stale);
        assert_eq!(d.on_ack(ms(1), &cfg, 0, LATEST), AckOutcome::Stale);
        assert_eq!(d.on_ack(ms(1), &cfg, 21, 20), AckOutcome::BeyondLatest);
        assert_eq!(
            d.on_ack(ms(1), &cfg, u64::MAX, 20),
            AckOutcome::BeyondLatest
        );
        assert_eq!(d.acked(), 5);
        assert_eq!(d.sent(), 9);
        assert_eq!(d.on_ack(ms(1), &cfg, 9, LATEST), AckOutcome::Advanced(4));
        assert_eq!(d.on_ack(ms(2), &cfg, 8, LATEST), AckOutcome::Stale);
    }

    #[test]
    fn a_timeout_goes_back_to_the_mark_and_doubles_the_rto_up_to_the_cap() {
        let cfg = DeliveryConfig {
            window: 8,
            rto: Duration::from_secs(1),
            max_rto: Duration::from_secs(3),
        };
        let mut d = DeliveryWindow::new(0, &cfg);
        d.poll_push(ms(0), 5);
        assert!(!d.handle_timeout(ms(999), &cfg), "too early");
        assert!(d.handle_timeout(ms(1_000), &cfg));
        assert_eq!(
            (d.sent(), d.retransmits(), d.rto()),
            (0, 1, Duration::from_secs(2))
        );
        assert_eq!(d.poll_timeout(), None);
        assert_eq!(d.poll_push(ms(1_000), 5), range(1, 5));
        assert_eq!(d.poll_timeout(), Some(ms(3_000)));
        assert!(d.handle_timeout(ms(3_000), &cfg));
        assert_eq!(d.rto(), Duration::from_secs(3), "capped");
        d.poll_push(ms(3_000), 5);
        assert!(d.handle_timeout(ms(6_000), &cfg));
        assert_eq!((d.rto(), d.retransmits()), (Duration::from_secs(3), 3));
        d.poll_push(ms(6_000), 5);
        assert_eq!(
            d.on_ack(ms(6_100), &cfg, 2, LATEST),
            AckOutcome::Advanced(2)
        );
        assert_eq!(d.rto(), Duration::from_secs(1), "progress resets the rto");
        assert_eq!(d.poll_timeout(), Some(ms(7_100)));
    }

    #[test]
    fn an_ack_for_seqs_pushed_before_a_go_back_is_accepted() {
        let cfg = cfg(8);
        let mut d = DeliveryWindow::new(0, &cfg);
        d.poll_push(ms(0), 6);
        assert!(d.handle_timeout(ms(1_000), &cfg));
        assert_eq!(
            d.on_ack(ms(1_001), &cfg, 6, LATEST),
            AckOutcome::Advanced(6)
        );
        assert_eq!((d.acked(), d.sent(), d.in_flight()), (6, 6, 0));
        assert_eq!(d.poll_push(ms(1_001), 6), None);
    }

    #[test]
    fn a_timeout_with_nothing_in_flight_does_nothing() {
        let cfg = cfg(8);
        let mut d = DeliveryWindow::new(3, &cfg);
        assert!(!d.handle_timeout(ms(100_000), &cfg));
        assert_eq!(d.retransmits(), 0);
    }

    #[test]
    fn an_ack_for_messages_the_subscriber_pulled_moves_the_window_on() {
        let cfg = cfg(4);
        let mut d = DeliveryWindow::new(0, &cfg);
        assert_eq!(d.poll_push(ms(0), 100), range(1, 4));
        // The subscriber filled seqs 5..=60 with a pull and acks all of it.
        assert_eq!(d.on_ack(ms(10), &cfg, 60, 100), AckOutcome::Advanced(60));
        assert_eq!(d.in_flight(), 0);
        assert_eq!(d.poll_push(ms(10), 100), range(61, 64));
    }

    #[test]
    fn reconnect_resumes_from_the_mark() {
        let cfg = cfg(8);
        let mut d = DeliveryWindow::new(10, &cfg);
        d.poll_push(ms(0), 30);
        d.on_ack(ms(1), &cfg, 12, LATEST);
        d.handle_timeout(ms(2_000), &cfg);
        d.poll_push(ms(2_000), 30);
        d.on_reconnect(&cfg);
        assert_eq!((d.acked(), d.sent(), d.poll_timeout()), (12, 12, None));
        assert_eq!(d.rto(), cfg.rto);
        assert_eq!(d.poll_push(ms(3_000), 30), range(13, 20));
    }

    #[test]
    fn nothing_overflows_near_the_top_of_u64_or_with_a_huge_window() {
        let cfg = DeliveryConfig {
            window: u64::MAX,
            rto: Duration::MAX,
            max_rto: Duration::MAX,
        };
        let mut d = DeliveryWindow::new(u64::MAX - 2, &cfg);
        assert_eq!(
            d.poll_push(Instant::NEVER, u64::MAX),
            range(u64::MAX - 1, u64::MAX)
        );
        assert_eq!(d.poll_timeout(), Some(Instant::NEVER));
        assert_eq!(d.poll_push(Instant::NEVER, u64::MAX), None);
        assert!(d.handle_timeout(Instant::NEVER, &cfg));
        assert_eq!(d.rto(), Duration::MAX);
        assert_eq!(
            d.on_ack(Instant::NEVER, &cfg, u64::MAX, u64::MAX),
            AckOutcome::Advanced(2)
        );
        assert_eq!(d.poll_push(Instant::NEVER, u64::MAX), None);
    }

    #[test]
    fn a_zero_window_pushes_nothing() {
        let cfg = cfg(0);
        let mut d = DeliveryWindow::new(0, &cfg);
        assert_eq!(d.poll_push(ms(0), 100), None);
        assert_eq!(d.poll_timeout(), None);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Latest(u64),
        Push,
        Ack(u64),
        Advance(u64),
        Timeout,
        Reconnect,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..20).prop_map(Op::Latest),
            Just(Op::Push),
            Just(Op::Push),
            (0u64..300).prop_map(Op::Ack),
            (0u64..3_000).prop_map(Op::Advance),
            Just(Op::Timeout),
            Just(Op::Reconnect),
        ]
    }

    proptest! {
        #[test]
        fn random_acks_and_timeouts_keep_every_bound(
            window in 0u64..20,
            start in 0u64..50,
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            let cfg = DeliveryConfig {
                window,
                rto: Duration::from_millis(100),
                max_rto: Duration::from_millis(800),
            };
            let mut d = DeliveryWindow::new(start, &cfg);
            let mut latest = start;
            let mut now = Instant::ZERO;
            let mut pushed: Vec<u64> = Vec::new();
            for op in ops {
                let acked_before = d.acked();
                match op {
                    Op::Latest(n) => latest += n,
                    Op::Push => {
                        let before = d.sent();
                        if let Some(r) = d.poll_push(now, latest) {
                            prop_assert_eq!(r.first, before + 1);
                            prop_assert!(r.first <= r.last);
                            prop_assert!(r.last <= latest);
                            pushed.push(r.last);
                            prop_assert!(d.poll_timeout().is_some());
                        }
                    }
                    Op::Ack(n) => {
                        let seq = start + n % 40;
                        let outcome = d.on_ack(now, &cfg, seq, latest);
                        let expected = if seq <= acked_before {
                            AckOutcome::Stale
                        } else if seq > latest {
                            AckOutcome::BeyondLatest
                        } else {
                            AckOutcome::Advanced(seq - acked_before)
                        };
                        prop_assert_eq!(outcome, expected);
                    }
                    Op::Advance(us) => now += Duration::from_millis(us),
                    Op::Timeout => {
                        if d.handle_timeout(now, &cfg) {
                            prop_assert_eq!(d.sent(), d.acked());
                        }
                    }
                    Op::Reconnect => d.on_reconnect(&cfg),
                }
                prop_assert!(d.acked() >= acked_before);
                prop_assert!(d.sent() >= d.acked());
                prop_assert!(d.in_flight() <= window);
                prop_assert!(d.sent() <= latest.max(start));
                prop_assert!(d.rto() <= cfg.max_rto);
                if d.in_flight() == 0 && matches!(op, Op::Ack(_)) {
                    prop_assert_eq!(d.poll_timeout(), None);
                }
            }
        }
    }
}
