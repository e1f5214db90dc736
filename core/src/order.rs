//! Per-topic receive tracking on the client: the contiguous high-water mark, a bitmap of seqs
//! held out of order above it, gap detection, duplicate suppression, and coalesced cumulative
//! acks.
//!
//! A [`RecvTracker`] answers "what does this arriving seq mean?" ([`Arrival`]) and "what is
//! missing?" ([`RecvTracker::gaps`]). An [`AckCoalescer`] turns mark advances into cumulative
//! acks: not one per message when many arrive together, never later than
//! [`AckConfig::max_delay`].
//!
//! Seqs start at 1; seq 0 is never valid. Nothing here panics or overflows on any input,
//! including seqs near `u64::MAX`.

use core::fmt;

use crate::time::{Duration, Instant};

/// An inclusive range of seqs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SeqRange {
    /// The first seq in the range.
    pub first: u64,
    /// The last seq in the range (inclusive).
    pub last: u64,
}

impl SeqRange {
    /// How many seqs the range holds (0 if `last < first`; saturates at `u64::MAX`).
    pub const fn len(&self) -> u64 {
        if self.last < self.first {
            0
        } else {
            (self.last - self.first).saturating_add(1)
        }
    }

    /// Whether the range holds no seq at all (`last < first`).
    pub const fn is_empty(&self) -> bool {
        self.last < self.first
    }

    /// Whether `seq` lies in the range.
    pub const fn contains(&self, seq: u64) -> bool {
        self.first <= seq && seq <= self.last
    }
}

impl fmt::Display for SeqRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..={}", self.first, self.last)
    }
}

/// What an arriving seq means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Arrival {
    /// Not held before; now recorded. `advanced_to` is the new contiguous mark if this arrival
    /// advanced it (possibly over several seqs held out of order), else None.
    New {
        /// The new contiguous mark, if this arrival moved it.
        advanced_to: Option<u64>,
    },
    /// Already held (<= mark or already in the window): drop it.
    Duplicate,
    /// Beyond the window (more than 64*W above the mark): not recorded; it will come again
    /// (re-push or pull).
    TooFar,
    /// seq 0 is never valid.
    Invalid,
}

/// Receive state of one topic; W u64-words of out-of-order window (64*W seqs above the mark).
///
/// Bit `i` of the window stands for seq `mark + 1 + i`. Bit 0 is never set (that seq would
/// have advanced the mark), so `mark + 1` is always missing while anything above it is known.
/// Seq `mark + 1` is always accepted, even with `W = 0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecvTracker<const W: usize> {
    mark: u64,
    bits: [u64; W],
    highest: u64,
}

impl<const W: usize> RecvTracker<W> {
    /// Number of seqs above the mark that the window can hold.
    const SPAN: u64 = (W as u64).saturating_mul(64);

    /// Everything up to and including `mark` is already held (0 = nothing yet).
    pub const fn new(mark: u64) -> Self {
        RecvTracker {
            mark,
            bits: [0; W],
            highest: mark,
        }
    }

    /// The contiguous mark: every seq in `1..=mark` is held.
    pub const fn mark(&self) -> u64 {
        self.mark
    }

    /// Highest seq seen (held) so far, >= mark.
    ///
    /// [`RecvTracker::note_latest`] may raise it above every held seq.
    pub const fn highest(&self) -> u64 {
        self.highest
    }

    /// Whether `seq` is held (seq 0 never is).
    pub fn is_held(&self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        if seq <= self.mark {
            return true;
        }
        self.bit(seq - self.mark - 1)
    }

    /// Records an arriving seq and says what it means.
    pub fn on_seq(&mut self, seq: u64) -> Arrival {
        if seq == 0 {
            return Arrival::Invalid;
        }
        if seq <= self.mark {
            return Arrival::Duplicate;
        }
        let off = seq - self.mark - 1;
        if off == 0 {
            self.highest = self.highest.max(seq);
            self.mark = seq;
            self.shift(1);
            self.absorb();
            return Arrival::New {
                advanced_to: Some(self.mark),
            };
        }
        if off >= Self::SPAN {
            return Arrival::TooFar;
        }
        if self.bit(off) {
            return Arrival::Duplicate;
        }
        self.set_bit(off);
        self.highest = self.highest.max(seq);
        Arrival::New { advanced_to: None }
    }

    /// The gateway says the topic's latest seq is `seq` (from a sub reply / meta / pres):
    /// raises `highest` so the missing tail shows up as a gap. Never lowers anything.
    pub fn note_latest(&mut self, seq: u64) {
        self.highest = self.highest.max(seq);
    }

    /// The first missing range above the mark (mark+1 ..= the seq before the next held one,
    /// or ..= highest if nothing above is held), or None if nothing is missing.
    pub fn first_gap(&self) -> Option<SeqRange> {
        self.gaps().next()
    }

    /// All missing ranges between mark and highest, in order.
    pub fn gaps(&self) -> impl Iterator<Item = SeqRange> + '_ {
        Gaps {
            tracker: self,
            next_off: Some(0),
        }
    }

    /// Forget holes and jump: the app decided everything up to `mark` is settled (e.g. messages
    /// deleted on the server). Never moves backwards. Seqs held just above the new mark are
    /// absorbed into it.
    pub fn skip_to(&mut self, mark: u64) {
        if mark <= self.mark {
            return;
        }
        self.shift(mark - self.mark);
        self.mark = mark;
        self.absorb();
        self.highest = self.highest.max(self.mark);
    }

    /// Offset (from `mark + 1`) of the highest seq that counts, if any lies above the mark.
    fn highest_off(&self) -> Option<u64> {
        self.highest.checked_sub(self.mark)?.checked_sub(1)
    }

    fn bit(&self, off: u64) -> bool {
        if off >= Self::SPAN {
            return false;
        }
        let word = self.bits.get((off / 64) as usize).copied().unwrap_or(0);
        word & (1u64 << (off % 64)) != 0
    }

    fn set_bit(&mut self, off: u64) {
        if off >= Self::SPAN {
            return;
        }
        if let Some(word) = self.bits.get_mut((off / 64) as usize) {
            *word |= 1u64 << (off % 64);
        }
    }

    /// Drops the lowest `n` bits of the window (the mark moved up by `n`).
    fn shift(&mut self, n: u64) {
        if n >= Self::SPAN {
            self.bits = [0; W];
            return;
        }
        let words = (n / 64) as usize;
        let bits = (n % 64) as u32;
        for i in 0..W {
            let src = i.saturating_add(words);
            let lo = self.bits.get(src).copied().unwrap_or(0);
            let hi = self.bits.get(src.saturating_add(1)).copied().unwrap_or(0);
            let word = if bits == 0 {
                lo
            } else {
                (lo >> bits) | (hi << (64 - bits))
            };
            if let Some(dst) = self.bits.get_mut(i) {
                *dst = word;
            }
        }
    }

    /// Moves the mark over seqs held contiguously right above it.
    fn absorb(&mut self) {
        let mut run = 0u64;
        for word in &self.bits {
            let ones = u64::from(word.trailing_ones());
            run += ones;
            if ones < 64 {
                break;
            }
        }
        if run > 0 {
            self.shift(run);
            self.mark = self.mark.saturating_add(run);
            self.highest = self.highest.max(self.mark);
        }
    }

    /// The first offset `>= from` whose bit equals `set`, within the window.
    fn find(&self, from: u64, set: bool) -> Option<u64> {
        let mut w = from / 64;
        let mut mask = u64::MAX << (from % 64);
        while w < W as u64 {
            let word = self.bits.get(w as usize).copied().unwrap_or(0);
            let word = (if set { word } else { !word }) & mask;
            if word != 0 {
                return Some(w * 64 + u64::from(word.trailing_zeros()));
            }
            w += 1;
            mask = u64::MAX;
        }
        None
    }
}

impl<const W: usize> Default for RecvTracker<W> {
    fn default() -> Self {
        Self::new(0)
    }
}

/// Iterator over the missing ranges of a [`RecvTracker`], in ascending order.
struct Gaps<'a, const W: usize> {
    tracker: &'a RecvTracker<W>,
    /// Offset (from `mark + 1`) where the search resumes; None when done.
    next_off: Option<u64>,
}

impl<const W: usize> Iterator for Gaps<'_, W> {
    type Item = SeqRange;

    fn next(&mut self) -> Option<SeqRange> {
        let t = self.tracker;
        let from = self.next_off?;
        let top = t.highest_off();
        let Some(top) = top.filter(|&top| from <= top) else {
            self.next_off = None;
            return None;
        };
        // Past the window nothing is held, so the first clear offset is at least SPAN.
        let start = t
            .find(from, false)
            .unwrap_or(from.max(RecvTracker::<W>::SPAN));
        if start > top {
            self.next_off = None;
            return None;
        }
        let end = match t.find(start, true) {
            Some(held) => held.saturating_sub(1).min(top),
            None => top,
        };
        self.next_off = end.checked_add(1);
        // `mark + 1 + end <= highest`, so none of this overflows.
        let base = t.mark.saturating_add(1);
        Some(SeqRange {
            first: base.saturating_add(start),
            last: base.saturating_add(end),
        })
    }
}

/// When to send cumulative acks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AckConfig {
    /// Longest an owed ack may wait (default 20 ms).
    pub max_delay: Duration,
    /// Send at once when this many seqs are owed (default 32).
    pub max_pending: u64,
}

impl Default for AckConfig {
    fn default() -> Self {
        AckConfig {
            max_delay: Duration::from_millis(20),
            max_pending: 32,
        }
    }
}

/// Coalesces cumulative acks for one topic.
///
/// Feed it every mark advance with [`AckCoalescer::on_advance`]; drain acks with
/// [`AckCoalescer::poll_ack`] and wake up at [`AckCoalescer::poll_timeout`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AckCoalescer {
    /// The last mark handed out by `poll_ack`.
    sent: u64,
    /// The highest mark the app holds (>= sent).
    owed: u64,
    /// When the owed ack must go out; None when nothing is owed.
    due: Option<Instant>,
}

impl AckCoalescer {
    /// `acked` = the mark the peer already has from us (0 = none).
    pub const fn new(acked: u64) -> Self {
        AckCoalescer {
            sent: acked,
            owed: acked,
            due: None,
        }
    }

    /// The app now holds everything up to `mark`: an ack for it is owed. Schedules it at
    /// now + max_delay if not already scheduled, or makes it due now if mark - sent >= max_pending.
    /// A mark <= what is already owed/sent changes nothing.
    pub fn on_advance(&mut self, now: Instant, cfg: &AckConfig, mark: u64) {
        if mark <= self.owed || mark <= self.sent {
            return;
        }
        self.owed = mark;
        let at = if mark - self.sent >= cfg.max_pending {
            now
        } else {
            now + cfg.max_delay
        };
        self.due = Some(self.due.map_or(at, |d| d.min(at)));
    }

    /// Some(mark) when an ack is due at `now` (it is then considered sent).
    pub fn poll_ack(&mut self, now: Instant) -> Option<u64> {
        match self.due {
            Some(due) if due <= now => {
                self.due = None;
                self.sent = self.owed;
                Some(self.owed)
            }
            _ => None,
        }
    }

    /// When the next ack falls due, if one is owed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.due
    }

    /// The connection dropped: whatever we sent may be lost, and the peer resumes from what it
    /// last recorded; after a reconnect the current mark is owed again (due at once when
    /// `on_reconnect` is called). With nothing held (mark 0) nothing is owed.
    pub fn on_reconnect(&mut self, now: Instant) {
        if self.owed > 0 {
            self.due = Some(now);
        }
    }

    /// The last mark handed out by [`AckCoalescer::poll_ack`] (or given to `new`).
    pub const fn sent(&self) -> u64 {
        self.sent
    }

    /// The highest mark reported through [`AckCoalescer::on_advance`] (>= `sent`).
    pub const fn owed(&self) -> u64 {
        self.owed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::vec::Vec;

    fn gaps<const W: usize>(t: &RecvTracker<W>) -> Vec<(u64, u64)> {
        t.gaps().map(|r| (r.first, r.last)).collect()
    }

    #[test]
    fn in_order_arrivals_advance_the_mark_one_by_one() {
        let mut t = RecvTracker::<2>::new(0);
        for seq in 1..=200 {
            assert_eq!(
                t.on_seq(seq),
                Arrival::New {
                    advanced_to: Some(seq)
                }
            );
            assert_eq!(t.mark(), seq);
            assert_eq!(t.highest(), seq);
            assert_eq!(t.first_gap(), None);
        }
    }

    #[test]
    fn an_out_of_order_burst_advances_once_on_the_missing_first_seq() {
        let mut t = RecvTracker::<1>::new(0);
        for seq in [5, 3, 4, 2] {
            assert_eq!(t.on_seq(seq), Arrival::New { advanced_to: None });
            assert_eq!(t.mark(), 0);
        }
        assert_eq!(t.first_gap(), Some(SeqRange { first: 1, last: 1 }));
        assert_eq!(
            t.on_seq(1),
            Arrival::New {
                advanced_to: Some(5)
            }
        );
        assert_eq!(t.mark(), 5);
        assert_eq!(t.first_gap(), None);
    }

    #[test]
    fn duplicates_below_the_mark_and_in_the_window_are_dropped() {
        let mut t = RecvTracker::<1>::new(10);
        assert_eq!(t.on_seq(10), Arrival::Duplicate);
        assert_eq!(t.on_seq(1), Arrival::Duplicate);
        assert_eq!(t.on_seq(13), Arrival::New { advanced_to: None });
        assert_eq!(t.on_seq(13), Arrival::Duplicate);
        assert!(t.is_held(13));
        assert!(!t.is_held(12));
        assert!(t.is_held(3));
    }

    #[test]
    fn seq_zero_is_invalid_and_never_held() {
        let mut t = RecvTracker::<1>::new(5);
        assert_eq!(t.on_seq(0), Arrival::Invalid);
        assert!(!t.is_held(0));
        assert_eq!(t.mark(), 5);
    }

    #[test]
    fn gaps_list_every_hole_in_order() {
        let mut t = RecvTracker::<1>::new(0);
        for seq in [1, 2, 5, 9] {
            t.on_seq(seq);
        }
        assert_eq!(gaps(&t), [(3, 4), (6, 8)]);
        assert_eq!(t.first_gap(), Some(SeqRange { first: 3, last: 4 }));
    }

    #[test]
    fn seqs_beyond_the_window_are_too_far_and_not_recorded() {
        let mut t = RecvTracker::<1>::new(100);
        assert_eq!(t.on_seq(100 + 64), Arrival::New { advanced_to: None });
        assert_eq!(t.on_seq(100 + 65), Arrival::TooFar);
        assert!(!t.is_held(165));
        assert_eq!(t.highest(), 164);
        assert_eq!(t.on_seq(u64::MAX), Arrival::TooFar);
    }

    #[test]
    fn a_window_of_zero_words_still_accepts_the_next_seq() {
        let mut t = RecvTracker::<0>::new(0);
        assert_eq!(t.on_seq(2), Arrival::TooFar);
        assert_eq!(
            t.on_seq(1),
            Arrival::New {
                advanced_to: Some(1)
            }
        );
        t.note_latest(4);
        assert_eq!(gaps(&t), [(2, 4)]);
    }

    #[test]
    fn note_latest_makes_a_tail_gap_and_never_lowers() {
        let mut t = RecvTracker::<1>::new(0);
        t.on_seq(1);
        t.on_seq(3);
        t.note_latest(1000);
        assert_eq!(t.highest(), 1000);
        assert_eq!(gaps(&t), [(2, 2), (4, 1000)]);
        t.note_latest(7);
        assert_eq!(t.highest(), 1000);
        assert_eq!(t.mark(), 1);
    }

    #[test]
    fn a_gap_reaching_past_the_window_runs_to_highest() {
        let mut t = RecvTracker::<1>::new(0);
        for seq in 2..=64 {
            assert_eq!(t.on_seq(seq), Arrival::New { advanced_to: None });
        }
        assert_eq!(t.on_seq(65), Arrival::TooFar);
        t.note_latest(200);
        assert_eq!(gaps(&t), [(1, 1), (65, 200)]);
        assert_eq!(
            t.on_seq(1),
            Arrival::New {
                advanced_to: Some(64)
            }
        );
        assert_eq!(gaps(&t), [(65, 200)]);
        assert_eq!(
            t.on_seq(65),
            Arrival::New {
                advanced_to: Some(65)
            }
        );
    }

    #[test]
    fn skip_to_jumps_forward_absorbs_held_seqs_and_never_goes_back() {
        let mut t = RecvTracker::<2>::new(0);
        for seq in [3, 11, 12, 20] {
            t.on_seq(seq);
        }
        t.skip_to(10);
        assert_eq!(t.mark(), 12);
        assert_eq!(gaps(&t), [(13, 19)]);
        t.skip_to(5);
        assert_eq!(t.mark(), 12);
        t.skip_to(1_000);
        assert_eq!(t.mark(), 1_000);
        assert_eq!(t.highest(), 1_000);
        assert_eq!(t.first_gap(), None);
    }

    #[test]
    fn seqs_near_the_top_of_u64_do_not_overflow() {
        let mut t = RecvTracker::<1>::new(u64::MAX - 3);
        assert_eq!(t.on_seq(u64::MAX), Arrival::New { advanced_to: None });
        assert_eq!(gaps(&t), [(u64::MAX - 2, u64::MAX - 1)]);
        t.on_seq(u64::MAX - 1);
        assert_eq!(
            t.on_seq(u64::MAX - 2),
            Arrival::New {
                advanced_to: Some(u64::MAX)
            }
        );
        assert_eq!(t.on_seq(u64::MAX), Arrival::Duplicate);
        assert_eq!(t.first_gap(), None);
        t.skip_to(u64::MAX);
        t.note_latest(u64::MAX);
        assert_eq!(t.first_gap(), None);
    }

    #[test]
    fn seq_ranges_measure_themselves() {
        let r = SeqRange { first: 3, last: 5 };
        assert_eq!(r.len(), 3);
        assert!(r.contains(3) && r.contains(5) && !r.contains(6) && !r.contains(2));
        assert!(SeqRange { first: 5, last: 3 }.is_empty());
        assert_eq!(SeqRange { first: 5, last: 3 }.len(), 0);
        assert_eq!(
            SeqRange {
                first: 0,
                last: u64::MAX
            }
            .len(),
            u64::MAX
        );
        assert_eq!(format!("{r}"), "3..=5");
    }

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    #[test]
    fn ten_advances_in_one_millisecond_give_one_ack_after_max_delay() {
        let cfg = AckConfig::default();
        let mut a = AckCoalescer::new(0);
        for i in 1..=10 {
            a.on_advance(Instant::from_micros(100 * i), &cfg, i);
            assert_eq!(a.poll_ack(Instant::from_micros(100 * i)), None);
        }
        let due = Instant::from_micros(100) + cfg.max_delay;
        assert_eq!(a.poll_timeout(), Some(due));
        assert_eq!(a.poll_ack(ms(20)), None, "not due until 20.1 ms");
        assert_eq!(a.poll_ack(due), Some(10));
        assert_eq!(a.poll_ack(due), None);
        assert_eq!(a.poll_timeout(), None);
        assert_eq!(a.sent(), 10);
    }

    #[test]
    fn max_pending_forces_an_immediate_ack() {
        let cfg = AckConfig {
            max_delay: Duration::from_millis(20),
            max_pending: 4,
        };
        let mut a = AckCoalescer::new(10);
        a.on_advance(ms(1), &cfg, 12);
        assert_eq!(a.poll_timeout(), Some(ms(21)));
        a.on_advance(ms(2), &cfg, 14);
        assert_eq!(a.poll_timeout(), Some(ms(2)));
        assert_eq!(a.poll_ack(ms(2)), Some(14));
    }

    #[test]
    fn a_mark_already_owed_or_sent_changes_nothing() {
        let cfg = AckConfig::default();
        let mut a = AckCoalescer::new(5);
        a.on_advance(ms(0), &cfg, 5);
        a.on_advance(ms(0), &cfg, 3);
        assert_eq!(a.poll_timeout(), None);
        a.on_advance(ms(0), &cfg, 8);
        a.on_advance(ms(10), &cfg, 8);
        assert_eq!(a.poll_timeout(), Some(ms(20)));
    }

    #[test]
    fn on_reconnect_re_owes_the_mark_at_once() {
        let cfg = AckConfig::default();
        let mut a = AckCoalescer::new(0);
        a.on_reconnect(ms(1));
        assert_eq!(a.poll_timeout(), None, "nothing held, nothing owed");
        a.on_advance(ms(0), &cfg, 7);
        assert_eq!(a.poll_ack(ms(20)), Some(7));
        a.on_reconnect(ms(50));
        assert_eq!(a.poll_timeout(), Some(ms(50)));
        assert_eq!(a.poll_ack(ms(50)), Some(7));
        assert_eq!(a.poll_ack(ms(60)), None);
    }

    /// Shuffles `1..=n` by a seed-driven Fisher-Yates, with duplicates sprinkled in.
    fn arrivals() -> impl Strategy<Value = Vec<u64>> {
        (1u64..200).prop_flat_map(|n| {
            let seqs: Vec<u64> = (1..=n).collect();
            (
                Just(seqs).prop_shuffle(),
                proptest::collection::vec(0u64..250, 0..40),
            )
                .prop_map(|(mut seqs, extra)| {
                    for (i, e) in extra.into_iter().enumerate() {
                        let at = (i * 7) % (seqs.len() + 1);
                        seqs.insert(at, e);
                    }
                    seqs
                })
        })
    }

    fn model_gaps(held: &BTreeSet<u64>, mark: u64, highest: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut start = None;
        for s in mark + 1..=highest {
            match (held.contains(&s), start) {
                (false, None) => start = Some(s),
                (true, Some(f)) => {
                    out.push((f, s - 1));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(f) = start {
            out.push((f, highest));
        }
        out
    }

    proptest! {
        #[test]
        fn the_tracker_agrees_with_a_set_model(order in arrivals(), latest in 0u64..300) {
            let mut t = RecvTracker::<2>::new(0);
            let mut held = BTreeSet::new();
            let mut mark = 0u64;
            let mut highest = 0u64;
            for (i, &seq) in order.iter().enumerate() {
                let got = t.on_seq(seq);
                let expected = if seq == 0 {
                    Arrival::Invalid
                } else if held.contains(&seq) {
                    Arrival::Duplicate
                } else if seq > mark + 128 {
                    Arrival::TooFar
                } else {
                    held.insert(seq);
                    highest = highest.max(seq);
                    let before = mark;
                    while held.contains(&(mark + 1)) {
                        mark += 1;
                    }
                    Arrival::New { advanced_to: (mark > before).then_some(mark) }
                };
                prop_assert_eq!(got, expected);
                prop_assert_eq!(t.mark(), mark);
                prop_assert_eq!(t.highest(), highest);
                if i == order.len() / 2 {
                    t.note_latest(latest);
                    highest = highest.max(latest);
                }
                prop_assert_eq!(gaps(&t), model_gaps(&held, mark, highest));
                prop_assert_eq!(
                    t.first_gap().map(|r| (r.first, r.last)),
                    model_gaps(&held, mark, highest).first().copied()
                );
            }
            for s in 0..=260 {
                prop_assert_eq!(t.is_held(s), held.contains(&s), "seq {}", s);
            }
        }

        #[test]
        fn skips_and_arrivals_agree_with_a_set_model(
            ops in proptest::collection::vec((0u8..4, 0u64..150), 0..120),
        ) {
            let mut t = RecvTracker::<1>::new(0);
            let mut held = BTreeSet::new();
            let (mut mark, mut highest) = (0u64, 0u64);
            for (kind, v) in ops {
                if kind == 0 && v > mark {
                    t.skip_to(v);
                    held.extend(mark + 1..=v);
                    mark = v;
                } else if kind == 1 {
                    t.note_latest(v);
                } else {
                    t.on_seq(v);
                    if v > mark && v <= mark + 64 {
                        held.insert(v);
                    }
                }
                while held.contains(&(mark + 1)) {
                    mark += 1;
                }
                highest = highest.max(mark).max(if kind == 1 { v } else { 0 });
                if kind >= 2 && held.contains(&v) {
                    highest = highest.max(v);
                }
                prop_assert_eq!(t.mark(), mark);
                prop_assert_eq!(t.highest(), highest);
                prop_assert_eq!(gaps(&t), model_gaps(&held, mark, highest));
            }
        }
    }
}
