//! Send-side reliability: outgoing `pub`s wait here until the gateway acknowledges them,
//! with a bounded window in flight, retransmission with exponential backoff, give-up after a
//! number of tries or a deadline, and resend in the original order after a reconnect.
//!
//! A message keeps the same message id *and* the same request id on every transmission, so the
//! gateway's idempotent publish answers a repeat with the seq it already assigned. Late and
//! duplicate acks are ignored.
//!
//! # Methods
//! - getters: [`Outbox::len`], [`Outbox::in_flight`], [`Outbox::find`], [`Outbox::iter`],
//!   [`Outbox::is_connected`];
//! - commands: [`Outbox::push`], [`Outbox::cancel`];
//! - inputs: [`Outbox::on_ack`], [`Outbox::on_refused`], [`Outbox::on_disconnect`],
//!   [`Outbox::on_connect`];
//! - outputs: [`Outbox::poll_gave_up`], [`Outbox::poll_send`], [`Outbox::poll_timeout`].
//!
//! After every input (and when the instant from `poll_timeout` is reached) drain
//! `poll_gave_up` until `None`, then `poll_send` until `None`, then re-arm the timer with
//! `poll_timeout`. Time only moves forward: never pass an earlier `now` after a later one.
//!
//! Entries are kept in queue order, so sent entries always form a prefix of the queue; a
//! removal keeps that order (it shifts whichever side of the removed entry is shorter, so the
//! common ack of the oldest entry is O(1)).
//!
//! Polling does not scan the queue while nothing can be due: the outbox keeps a lower bound of
//! its retransmit deadlines and of its queueing instants, and where its first waiting entry is.
//! While `now` is below both bounds (and no entry waits to be resent after a reconnect), no
//! entry is due for retransmission or give-up, so `poll_send` takes the first waiting entry
//! at once and `poll_gave_up` answers `None` at once. Otherwise they scan as the rules above
//! say, and a scan that sees every entry makes the bounds exact again.

use core::fmt;

use heapless::Deque;

use crate::id::MsgId;
use crate::time::{Duration, Instant};

/// Buckets of message ids per entry of an outbox's capacity (see `Outbox::ids_seen`).
const ID_BUCKETS: usize = 16;

/// Tuning of an [`Outbox`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct OutboxConfig {
    /// Most pubs on the wire without an ack (default 32).
    pub window: usize,
    /// First retransmit timeout (default 2 s).
    pub rto: Duration,
    /// Cap of the doubling retransmit timeout (default 30 s).
    pub max_rto: Duration,
    /// Give up after this many transmissions (default 8). 0 = no limit.
    pub max_tries: u32,
    /// Give up when this much time passed since the message was queued (default 120 s), whether
    /// connected or not. Duration::MAX = no deadline.
    pub give_up_after: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            window: 32,
            rto: Duration::from_secs(2),
            max_rto: Duration::from_secs(30),
            max_tries: 8,
            give_up_after: Duration::from_secs(120),
        }
    }
}

impl OutboxConfig {
    /// The timeout of a first transmission: `rto`, capped by `max_rto`, at least 1 µs (so a
    /// zero setting cannot make the same entry due again at the same instant).
    fn base_rto(&self) -> Duration {
        self.rto.min(self.max_rto).max(Duration::from_micros(1))
    }

    /// The timeout after `prev`: doubled, capped by `max_rto`, at least 1 µs.
    fn next_rto(&self, prev: Duration) -> Duration {
        prev.saturating_mul(2)
            .min(self.max_rto)
            .max(Duration::from_micros(1))
    }

    /// True once `tries` transmissions used up the allowance.
    fn exhausted(&self, tries: u32) -> bool {
        self.max_tries != 0 && tries >= self.max_tries
    }
}

/// A transmission the engine must make now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SendOrder {
    /// The request id, the same on every transmission of this message.
    pub req: u32,
    /// The message id, the same on every transmission of this message.
    pub id: MsgId,
    /// 1 for the first try
    pub attempt: u32,
}

/// A message given up on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GaveUp {
    /// Its request id.
    pub req: u32,
    /// Its message id.
    pub id: MsgId,
    /// How many times it was transmitted (0 if it never left the queue).
    pub tries: u32,
}

/// Why a message could not be queued.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum OutboxError {
    /// N messages are already waiting for acks.
    Full,
    /// This message id (or request id) is already in the outbox.
    Duplicate,
}

impl fmt::Display for OutboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutboxError::Full => f.write_str("the outbox is full of messages awaiting acks"),
            OutboxError::Duplicate => {
                f.write_str("this message id or request id is already in the outbox")
            }
        }
    }
}

impl core::error::Error for OutboxError {}

/// Where one entry is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// Queued, never transmitted.
    Waiting,
    /// On the wire; retransmit (or give up, if tries are exhausted) at `deadline`. `rto` is the
    /// timeout this transmission used; `last` is set if it was the last try allowed. `sent_at`
    /// keeps an entry from being due twice at one instant (when `deadline` saturated).
    InFlight {
        sent_at: Instant,
        deadline: Instant,
        rto: Duration,
        last: bool,
    },
    /// Was in flight when the connection dropped: resend after `on_connect`, rto from base.
    ResendPending,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    req: u32,
    id: MsgId,
    tries: u32,
    queued_at: Instant,
    slot: Slot,
    /// The id's bucket in `ids_seen` (`u32::MAX`: none), kept so that a removal need not
    /// hash the id again.
    id_bucket: u32,
}

impl Entry {
    /// When this entry is given up regardless of tries, if ever.
    fn give_up_at(&self, cfg: &OutboxConfig) -> Option<Instant> {
        (cfg.give_up_after != Duration::MAX).then(|| self.queued_at + cfg.give_up_after)
    }

    /// True if the entry must be reported as given up at `now`.
    fn is_dead(&self, now: Instant, cfg: &OutboxConfig) -> bool {
        if self.give_up_at(cfg).is_some_and(|at| now >= at) {
            return true;
        }
        match self.slot {
            Slot::Waiting => false,
            Slot::InFlight { deadline, .. } => now >= deadline && cfg.exhausted(self.tries),
            // Only reachable if `max_tries` was lowered after the disconnect.
            Slot::ResendPending => cfg.exhausted(self.tries),
        }
    }
}

/// The send window: messages awaiting the gateway's ack, in queue order, at most `N` of them.
///
/// `N` must be at least 1. A new outbox starts disconnected.
#[derive(Debug)]
pub struct Outbox<const N: usize> {
    queue: Deque<Entry, N>,
    /// Number of entries in `Slot::InFlight`.
    in_flight: usize,
    connected: bool,
    /// No entry before this position is `Slot::Waiting` (entries never become waiting again),
    /// so the first waiting entry is found from here.
    started: usize,
    /// Number of entries in `Slot::ResendPending`.
    resend_pending: usize,
    /// No in-flight entry has a deadline earlier than this.
    deadline_floor: Instant,
    /// No entry was queued earlier than this.
    queued_floor: Instant,
    /// Queued entries per bucket of request ids and of message-id hashes (4 and
    /// [`ID_BUCKETS`] buckets per entry of capacity): a push whose two buckets are empty cannot
    /// be a duplicate and skips the duplicate scan. Request ids are mostly consecutive and
    /// rarely share a bucket; ids are random, and get more buckets so that they rarely do.
    reqs_seen: [[u16; 4]; N],
    ids_seen: [[u16; ID_BUCKETS]; N],
    /// Tests compare the fast path against the scan by turning it off.
    #[cfg(test)]
    scan_only: bool,
}

impl<const N: usize> Default for Outbox<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Outbox<N> {
    /// An empty, disconnected outbox.
    pub const fn new() -> Self {
        Outbox {
            queue: Deque::new(),
            in_flight: 0,
            connected: false,
            started: 0,
            resend_pending: 0,
            deadline_floor: Instant::NEVER,
            queued_floor: Instant::NEVER,
            reqs_seen: [[0; 4]; N],
            ids_seen: [[0; ID_BUCKETS]; N],
            #[cfg(test)]
            scan_only: false,
        }
    }

    /// Number of messages in the outbox, whatever their state.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True if no message awaits an ack.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Entries currently on the wire awaiting an ack.
    ///
    /// While disconnected this counts only entries whose last allowed try is still timing out
    /// (see [`Outbox::on_disconnect`]).
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// True between [`Outbox::on_connect`] and [`Outbox::on_disconnect`].
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Queue a message (state: waiting to be sent). `now` starts its give-up deadline.
    pub fn push(&mut self, now: Instant, req: u32, id: MsgId) -> Result<(), OutboxError> {
        let (r, i) = Self::buckets(req, &id);
        let maybe =
            |seen: &[u16], b: Option<usize>| b.is_none_or(|b| seen.get(b).is_some_and(|&n| n > 0));
        if maybe(self.reqs_seen.as_flattened(), r) || maybe(self.ids_seen.as_flattened(), i) {
            // Over the deque's two slices: plain slice loops, no ring-index arithmetic.
            let same = |e: &Entry| e.req == req || e.id == id;
            let (front, back) = self.queue.as_slices();
            if front.iter().any(same) || back.iter().any(same) {
                return Err(OutboxError::Duplicate);
            }
        }
        let entry = Entry {
            req,
            id,
            tries: 0,
            queued_at: now,
            slot: Slot::Waiting,
            id_bucket: i.and_then(|i| u32::try_from(i).ok()).unwrap_or(u32::MAX),
        };
        self.queue.push_back(entry).map_err(|_| OutboxError::Full)?;
        self.queued_floor = self.queued_floor.min(now);
        self.count_seen(r, i, true);
        Ok(())
    }

    /// The buckets of a request id and a message id (None only for a zero capacity).
    fn buckets(req: u32, id: &MsgId) -> (Option<usize>, Option<usize>) {
        let r = usize::try_from(req).ok().and_then(|r| r.checked_rem(4 * N));
        // The id's random bits sit low in hash64; a multiply carries them to the high half.
        let h = id.hash64().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        let i = h.checked_rem((ID_BUCKETS * N) as u64).map(|i| i as usize);
        (r, i)
    }

    /// Counts a queued entry in (or out of) its buckets.
    fn count_seen(&mut self, r: Option<usize>, i: Option<usize>, queued: bool) {
        for (seen, b) in [
            (self.reqs_seen.as_flattened_mut(), r),
            (self.ids_seen.as_flattened_mut(), i),
        ] {
            if let Some(n) = b.and_then(|b| seen.get_mut(b)) {
                // A bucket that ever reached the top stays there: it always says "scan".
                if *n != u16::MAX {
                    *n = if queued { *n + 1 } else { n.saturating_sub(1) };
                }
            }
        }
    }

    /// True if no entry can be due at `now`: none is due for retransmission or give-up, and
    /// none waits to be resent. Then the first waiting entry is the next to send, and nothing
    /// is given up.
    fn quiet(&self, now: Instant, cfg: &OutboxConfig) -> bool {
        #[cfg(test)]
        if self.scan_only {
            return false;
        }
        self.resend_pending == 0
            && now < self.deadline_floor
            && (cfg.give_up_after == Duration::MAX || now < self.queued_floor + cfg.give_up_after)
    }

    /// The position of the first waiting entry, moving the hint there.
    fn first_waiting(&mut self) -> Option<usize> {
        while self.queue.get(self.started)?.slot != Slot::Waiting {
            self.started += 1;
        }
        Some(self.started)
    }

    /// Next transmission to make, if connected and a window slot is free: first every entry due for
    /// retransmission (timer expired), then never-sent/resend-pending entries, in queue order.
    /// Marks it in flight with deadline now + current rto (rto doubles per try, capped).
    /// Returns None while disconnected (see on_disconnect / on_connect).
    ///
    /// A retransmission reuses the window slot its entry already holds. Entries that are due to
    /// be given up (see [`Outbox::poll_gave_up`]) are never sent.
    pub fn poll_send(&mut self, now: Instant, cfg: &OutboxConfig) -> Option<SendOrder> {
        if !self.connected {
            return None;
        }
        if self.quiet(now, cfg) {
            if self.in_flight >= cfg.window {
                return None;
            }
            let i = self.first_waiting()?;
            let order = self.transmit(i, now, cfg.base_rto(), cfg)?;
            self.in_flight = self.in_flight.saturating_add(1);
            return Some(order);
        }
        let mut pending = None;
        let mut waiting = None;
        let mut deadline_floor = Instant::NEVER;
        let mut queued_floor = Instant::NEVER;
        for (i, e) in self.queue.iter().enumerate() {
            queued_floor = queued_floor.min(e.queued_at);
            if let Slot::InFlight { deadline, .. } = e.slot {
                deadline_floor = deadline_floor.min(deadline);
            }
            if e.is_dead(now, cfg) {
                continue;
            }
            match e.slot {
                Slot::InFlight {
                    deadline,
                    rto,
                    sent_at,
                    ..
                } if now >= deadline && now > sent_at => {
                    return self.transmit(i, now, cfg.next_rto(rto), cfg);
                }
                Slot::InFlight { .. } => {}
                Slot::ResendPending => {
                    pending = pending.or(Some(i));
                }
                Slot::Waiting => waiting = waiting.or(Some(i)),
            }
        }
        // Every entry was seen: the floors are exact now.
        self.deadline_floor = deadline_floor;
        self.queued_floor = queued_floor;
        if self.in_flight >= cfg.window {
            return None;
        }
        let i = pending.or(waiting)?;
        let order = self.transmit(i, now, cfg.base_rto(), cfg)?;
        self.in_flight = self.in_flight.saturating_add(1);
        Some(order)
    }

    /// Puts entry `i` on the wire with timeout `rto` and returns the order for it.
    fn transmit(
        &mut self,
        i: usize,
        now: Instant,
        rto: Duration,
        cfg: &OutboxConfig,
    ) -> Option<SendOrder> {
        let e = self.queue.get_mut(i)?;
        match e.slot {
            Slot::ResendPending => self.resend_pending = self.resend_pending.saturating_sub(1),
            Slot::Waiting if i == self.started => self.started += 1,
            _ => {}
        }
        e.tries = e.tries.saturating_add(1);
        let deadline = now + rto;
        e.slot = Slot::InFlight {
            sent_at: now,
            deadline,
            rto,
            last: cfg.exhausted(e.tries),
        };
        self.deadline_floor = self.deadline_floor.min(deadline);
        Some(SendOrder {
            req: e.req,
            id: e.id,
            attempt: e.tries,
        })
    }

    /// The gateway acknowledged request `req` (stored it). Removes and returns the id; None for an
    /// unknown, late or duplicate ack.
    ///
    /// An ack for a request that was never transmitted is unknown too.
    pub fn on_ack(&mut self, req: u32) -> Option<MsgId> {
        // Sent entries form a prefix of the queue and acks mostly arrive for the oldest, so
        // scanning from the front usually stops at once.
        let i = self
            .queue
            .iter()
            .position(|e| e.req == req && e.tries > 0)?;
        self.remove_at(i).map(|e| e.id)
    }

    /// The gateway refused request `req` with an error: removed as on_ack (the engine marks Failed).
    pub fn on_refused(&mut self, req: u32) -> Option<MsgId> {
        self.on_ack(req)
    }

    /// The app cancels a message (e.g. deletes a queued one): removed; None if not present.
    pub fn cancel(&mut self, id: &MsgId) -> Option<u32> {
        let i = self.queue.iter().position(|e| e.id == *id)?;
        self.remove_at(i).map(|e| e.req)
    }

    /// Give-ups due at `now` (tries exhausted after its last timeout expired, or deadline passed),
    /// one per call, removed from the outbox. Works while disconnected too.
    pub fn poll_gave_up(&mut self, now: Instant, cfg: &OutboxConfig) -> Option<GaveUp> {
        if self.quiet(now, cfg) {
            return None;
        }
        let i = self.queue.iter().position(|e| e.is_dead(now, cfg))?;
        self.remove_at(i).map(|e| GaveUp {
            req: e.req,
            id: e.id,
            tries: e.tries,
        })
    }

    /// Next instant something changes: a retransmit deadline or give-up deadline.
    ///
    /// An instant in the past means "now" (only after `cfg` changed under a waiting entry).
    pub fn poll_timeout(&self, cfg: &OutboxConfig) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for e in self.queue.iter() {
            let timer = match e.slot {
                Slot::InFlight { deadline, .. } => Some(deadline),
                Slot::ResendPending if cfg.exhausted(e.tries) => Some(Instant::ZERO),
                Slot::ResendPending | Slot::Waiting => None,
            };
            next = crate::time::earliest(next, timer);
            next = crate::time::earliest(next, e.give_up_at(cfg));
        }
        next
    }

    /// The connection went down: in-flight entries become resend-pending (tries kept, timers
    /// stopped); poll_send returns None until on_connect.
    ///
    /// Exception: an entry whose last allowed try (per `max_tries` when it was sent) is on the
    /// wire keeps its timer and is given up when that expires, exactly as if the connection had
    /// stayed up: it is never sent more than `max_tries` times.
    pub fn on_disconnect(&mut self) {
        self.connected = false;
        let mut still = 0usize;
        let mut pending = 0usize;
        for e in self.queue.iter_mut() {
            if let Slot::InFlight { last, .. } = e.slot {
                if last {
                    still = still.saturating_add(1);
                } else {
                    e.slot = Slot::ResendPending;
                }
            }
            if e.slot == Slot::ResendPending {
                pending = pending.saturating_add(1);
            }
        }
        self.in_flight = still;
        self.resend_pending = pending;
    }

    /// Connected and logged in again: sending resumes (resend-pending first, in queue order).
    /// `now` is when; an entry's rto restarts from the base value.
    pub fn on_connect(&mut self, _now: Instant) {
        self.connected = true;
    }

    /// Look up an entry by message id: (req, tries so far).
    pub fn find(&self, id: &MsgId) -> Option<(u32, u32)> {
        self.queue
            .iter()
            .find(|e| e.id == *id)
            .map(|e| (e.req, e.tries))
    }

    /// Iterate (req, id) in queue order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, MsgId)> + '_ {
        self.queue.iter().map(|e| (e.req, e.id))
    }

    /// Removes entry `i` keeping the order of the others, shifting the shorter side.
    fn remove_at(&mut self, i: usize) -> Option<Entry> {
        let len = self.queue.len();
        if i >= len {
            return None;
        }
        let e = if i < len / 2 {
            for j in (1..=i).rev() {
                self.queue.swap(j, j - 1);
            }
            self.queue.pop_front()
        } else {
            for j in i..len - 1 {
                self.queue.swap(j, j + 1);
            }
            self.queue.pop_back()
        }?;
        match e.slot {
            Slot::InFlight { .. } => self.in_flight = self.in_flight.saturating_sub(1),
            Slot::ResendPending => self.resend_pending = self.resend_pending.saturating_sub(1),
            Slot::Waiting => {}
        }
        let req_bucket = usize::try_from(e.req)
            .ok()
            .and_then(|r| r.checked_rem(4 * N));
        let id_bucket = usize::try_from(e.id_bucket)
            .ok()
            .filter(|_| e.id_bucket != u32::MAX);
        self.count_seen(req_bucket, id_bucket, false);
        if i < self.started {
            self.started -= 1;
        }
        if self.queue.is_empty() {
            self.deadline_floor = Instant::NEVER;
            self.queued_floor = Instant::NEVER;
        }
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::vec::Vec;

    fn id(n: u32) -> MsgId {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&n.to_le_bytes());
        b[15] = 0xee;
        MsgId::from_bytes(b)
    }

    fn ms(t: u64) -> Instant {
        Instant::from_millis(t)
    }

    fn drain<const N: usize>(
        o: &mut Outbox<N>,
        now: Instant,
        cfg: &OutboxConfig,
    ) -> Vec<SendOrder> {
        core::iter::from_fn(|| o.poll_send(now, cfg)).collect()
    }

    fn reqs(orders: &[SendOrder]) -> Vec<u32> {
        orders.iter().map(|o| o.req).collect()
    }

    fn connected_with<const N: usize>(n: u32) -> Outbox<N> {
        let mut o = Outbox::new();
        for r in 1..=n {
            o.push(ms(0), r, id(r)).unwrap();
        }
        o.on_connect(ms(0));
        o
    }

    #[test]
    fn a_new_outbox_is_empty_disconnected_and_sends_nothing() {
        let cfg = OutboxConfig::default();
        let mut o: Outbox<4> = Outbox::new();
        assert!(o.is_empty() && !o.is_connected());
        o.push(ms(0), 1, id(1)).unwrap();
        assert_eq!(o.poll_send(ms(0), &cfg), None);
        assert_eq!(o.len(), 1);
        assert_eq!(o.in_flight(), 0);
        o.on_connect(ms(1));
        assert_eq!(
            o.poll_send(ms(1), &cfg),
            Some(SendOrder {
                req: 1,
                id: id(1),
                attempt: 1
            })
        );
    }

    #[test]
    fn the_window_bounds_what_is_in_flight() {
        let cfg = OutboxConfig {
            window: 3,
            ..Default::default()
        };
        let mut o: Outbox<8> = connected_with(5);
        assert_eq!(reqs(&drain(&mut o, ms(0), &cfg)), [1, 2, 3]);
        assert_eq!(o.in_flight(), 3);
        assert_eq!(o.on_ack(1), Some(id(1)));
        assert_eq!(reqs(&drain(&mut o, ms(10), &cfg)), [4]);
        assert_eq!(o.in_flight(), 3);
    }

    #[test]
    fn an_unacked_message_is_retransmitted_with_doubling_capped_timeout_and_the_same_ids() {
        let cfg = OutboxConfig {
            max_rto: Duration::from_secs(10),
            ..Default::default()
        };
        let mut o: Outbox<4> = connected_with(1);
        assert_eq!(o.poll_send(ms(0), &cfg).map(|s| s.attempt), Some(1));
        let mut now = ms(0);
        for (attempt, wait) in [(2, 2_000), (3, 4_000), (4, 8_000), (5, 10_000), (6, 10_000)] {
            assert_eq!(
                o.poll_timeout(&cfg),
                Some(now + Duration::from_millis(wait))
            );
            let early = now + Duration::from_millis(wait - 1);
            assert_eq!(o.poll_send(early, &cfg), None, "not before the timeout");
            now += Duration::from_millis(wait);
            assert_eq!(
                o.poll_send(now, &cfg),
                Some(SendOrder {
                    req: 1,
                    id: id(1),
                    attempt
                })
            );
            assert_eq!(o.poll_send(now, &cfg), None, "once per timeout");
            assert_eq!(o.in_flight(), 1);
        }
        assert_eq!(o.find(&id(1)), Some((1, 6)));
    }

    #[test]
    fn retransmissions_come_before_new_messages() {
        let cfg = OutboxConfig {
            window: 2,
            ..Default::default()
        };
        let mut o: Outbox<4> = connected_with(3);
        assert_eq!(reqs(&drain(&mut o, ms(0), &cfg)), [1, 2]);
        assert_eq!(o.on_ack(2), Some(id(2)));
        let sent = drain(&mut o, ms(2_000), &cfg);
        assert_eq!(reqs(&sent), [1, 3]);
        assert_eq!(sent[0].attempt, 2);
        assert_eq!(sent[1].attempt, 1);
    }

    #[test]
    fn a_message_is_given_up_after_its_last_try_times_out() {
        let cfg = OutboxConfig {
            max_tries: 3,
            ..Default::default()
        };
        let mut o: Outbox<4> = connected_with(1);
        assert!(o.poll_send(ms(0), &cfg).is_some());
        assert!(o.poll_send(ms(2_000), &cfg).is_some());
        assert!(o.poll_send(ms(6_000), &cfg).is_some());
        assert_eq!(o.poll_gave_up(ms(13_999), &cfg), None);
        assert_eq!(o.poll_timeout(&cfg), Some(ms(14_000)));
        assert_eq!(o.poll_send(ms(14_000), &cfg), None, "no fourth try");
        assert_eq!(
            o.poll_gave_up(ms(14_000), &cfg),
            Some(GaveUp {
                req: 1,
                id: id(1),
                tries: 3
            })
        );
        assert!(o.is_empty());
        assert_eq!(o.in_flight(), 0);
        assert_eq!(o.poll_gave_up(ms(14_000), &cfg), None);
        assert_eq!(o.on_ack(1), None, "a late ack after giving up is ignored");
    }

    #[test]
    fn a_message_is_given_up_at_its_deadline_even_while_disconnected() {
        let cfg = OutboxConfig::default();
        let mut o: Outbox<4> = Outbox::new();
        o.push(ms(5), 7, id(7)).unwrap();
        assert_eq!(o.poll_timeout(&cfg), Some(ms(120_005)));
        assert_eq!(o.poll_gave_up(ms(120_004), &cfg), None);
        assert_eq!(
            o.poll_gave_up(ms(120_005), &cfg),
            Some(GaveUp {
                req: 7,
                id: id(7),
                tries: 0
            })
        );
        assert_eq!(o.poll_timeout(&cfg), None);
    }

    #[test]
    fn a_message_past_its_deadline_is_not_sent() {
        let cfg = OutboxConfig {
            give_up_after: Duration::from_secs(5),
            ..Default::default()
        };
        let mut o: Outbox<4> = Outbox::new();
        o.push(ms(0), 1, id(1)).unwrap();
        o.on_connect(ms(6_000));
        assert_eq!(o.poll_send(ms(6_000), &cfg), None);
        assert_eq!(o.poll_gave_up(ms(6_000), &cfg).map(|g| g.tries), Some(0));
    }

    #[test]
    fn without_limits_a_message_is_retried_forever() {
        let cfg = OutboxConfig {
            max_tries: 0,
            give_up_after: Duration::MAX,
            ..Default::default()
        };
        let mut o: Outbox<4> = connected_with(1);
        let mut now = ms(0);
        for attempt in 1..=200 {
            assert_eq!(o.poll_send(now, &cfg).map(|s| s.attempt), Some(attempt));
            assert_eq!(o.poll_gave_up(now, &cfg), None);
            now = o.poll_timeout(&cfg).unwrap();
        }
        assert_eq!(o.len(), 1);
    }

    #[test]
    fn an_ack_of_a_retransmitted_message_is_accepted_once() {
        let cfg = OutboxConfig::default();
        let mut o: Outbox<4> = connected_with(2);
        assert_eq!(drain(&mut o, ms(0), &cfg).len(), 2);
        assert_eq!(reqs(&drain(&mut o, ms(2_000), &cfg)), [1, 2]);
        assert_eq!(o.on_ack(1), Some(id(1)));
        assert_eq!(o.on_ack(1), None, "duplicate ack");
        assert_eq!(o.on_refused(1), None, "late refusal");
        assert_eq!(o.in_flight(), 1);
        assert_eq!(o.iter().collect::<Vec<_>>(), [(2, id(2))]);
    }

    #[test]
    fn acks_for_unknown_or_never_sent_requests_are_ignored() {
        let cfg = OutboxConfig {
            window: 1,
            ..Default::default()
        };
        let mut o: Outbox<4> = connected_with(2);
        assert_eq!(reqs(&drain(&mut o, ms(0), &cfg)), [1]);
        assert_eq!(o.on_ack(2), None, "req 2 was never transmitted");
        assert_eq!(o.on_ack(99), None);
        assert_eq!(o.on_ack(u32::MAX), None);
        assert_eq!(o.len(), 2);
        assert_eq!(o.in_flight(), 1);
    }

    #[test]
    fn disconnect_then_reconnect_resends_everything_in_the_original_order() {
        let cfg = OutboxConfig {
            window: 3,
            ..Default::default()
        };
        let mut o: Outbox<8> = connected_with(5);
        assert_eq!(reqs(&drain(&mut o, ms(0), &cfg)), [1, 2, 3]);
        assert_eq!(reqs(&drain(&mut o, ms(2_000), &cfg)), [1, 2, 3]);
        assert_eq!(o.on_ack(2), Some(id(2)));
        o.on_disconnect();
        assert!(!o.is_connected());
        assert_eq!(o.in_flight(), 0);
        assert_eq!(
            o.poll_send(ms(10_000), &cfg),
            None,
            "nothing while disconnected"
        );
        assert_eq!(
            o.poll_timeout(&cfg),
            Some(ms(120_000)),
            "retransmit timers stopped"
        );
        o.on_connect(ms(20_000));
        let sent = drain(&mut o, ms(20_000), &cfg);
        assert_eq!(
            sent,
            [
                SendOrder {
                    req: 1,
                    id: id(1),
                    attempt: 3
                },
                SendOrder {
                    req: 3,
                    id: id(3),
                    attempt: 3
                },
                SendOrder {
                    req: 4,
                    id: id(4),
                    attempt: 1
                },
            ]
        );
        assert_eq!(
            o.poll_timeout(&cfg),
            Some(ms(22_000)),
            "rto restarts from the base"
        );
        assert_eq!(o.on_ack(1), Some(id(1)));
        assert_eq!(reqs(&drain(&mut o, ms(20_001), &cfg)), [5]);
    }

    #[test]
    fn repeated_connect_or_disconnect_changes_nothing() {
        let cfg = OutboxConfig::default();
        let mut o: Outbox<4> = connected_with(2);
        o.on_connect(ms(0));
        assert_eq!(drain(&mut o, ms(0), &cfg).len(), 2);
        o.on_connect(ms(1));
        assert_eq!(
            drain(&mut o, ms(1), &cfg).len(),
            0,
            "still in flight, not resent"
        );
        o.on_disconnect();
        o.on_disconnect();
        o.on_connect(ms(2));
        assert_eq!(reqs(&drain(&mut o, ms(2), &cfg)), [1, 2]);
    }

    #[test]
    fn the_last_try_keeps_its_timer_across_a_disconnect_and_is_not_resent() {
        let cfg = OutboxConfig {
            max_tries: 1,
            ..Default::default()
        };
        let mut o: Outbox<4> = connected_with(2);
        assert_eq!(drain(&mut o, ms(0), &cfg).len(), 2);
        assert_eq!(o.on_ack(2), Some(id(2)));
        o.on_disconnect();
        assert_eq!(o.poll_timeout(&cfg), Some(ms(2_000)));
        o.on_connect(ms(1_000));
        assert_eq!(o.poll_send(ms(1_000), &cfg), None);
        assert_eq!(o.poll_gave_up(ms(1_999), &cfg), None);
        assert_eq!(
            o.poll_gave_up(ms(2_000), &cfg),
            Some(GaveUp {
                req: 1,
                id: id(1),
                tries: 1
            })
        );
        assert_eq!(o.in_flight(), 0);
    }

    #[test]
    fn a_refused_message_is_removed_and_frees_its_slot() {
        let cfg = OutboxConfig {
            window: 1,
            ..Default::default()
        };
        let mut o: Outbox<4> = connected_with(2);
        assert_eq!(reqs(&drain(&mut o, ms(0), &cfg)), [1]);
        assert_eq!(o.on_refused(1), Some(id(1)));
        assert_eq!(o.find(&id(1)), None);
        assert_eq!(reqs(&drain(&mut o, ms(0), &cfg)), [2]);
    }

    #[test]
    fn cancel_removes_a_queued_or_in_flight_message() {
        let cfg = OutboxConfig {
            window: 1,
            ..Default::default()
        };
        let mut o: Outbox<4> = connected_with(3);
        assert_eq!(reqs(&drain(&mut o, ms(0), &cfg)), [1]);
        assert_eq!(o.cancel(&id(2)), Some(2));
        assert_eq!(o.cancel(&id(2)), None);
        assert_eq!(o.cancel(&id(1)), Some(1));
        assert_eq!(o.in_flight(), 0);
        assert_eq!(reqs(&drain(&mut o, ms(0), &cfg)), [3]);
        assert_eq!(
            o.on_ack(1),
            None,
            "an ack for a cancelled message is ignored"
        );
    }

    #[test]
    fn duplicates_and_overflow_are_refused() {
        let mut o: Outbox<2> = Outbox::new();
        o.push(ms(0), 1, id(1)).unwrap();
        assert_eq!(o.push(ms(0), 1, id(9)), Err(OutboxError::Duplicate));
        assert_eq!(o.push(ms(0), 9, id(1)), Err(OutboxError::Duplicate));
        o.push(ms(0), 2, id(2)).unwrap();
        assert_eq!(o.push(ms(0), 3, id(3)), Err(OutboxError::Full));
        assert_eq!(o.len(), 2);
        assert!(!format!("{}", OutboxError::Full).is_empty());
        assert_ne!(
            format!("{}", OutboxError::Full),
            format!("{}", OutboxError::Duplicate)
        );
    }

    #[test]
    fn removals_anywhere_keep_the_queue_order() {
        let mut o: Outbox<8> = connected_with(7);
        for gone in [2, 6, 4, 1, 7] {
            assert_eq!(o.cancel(&id(gone)), Some(gone));
        }
        assert_eq!(o.iter().collect::<Vec<_>>(), [(3, id(3)), (5, id(5))]);
        assert_eq!(o.find(&id(5)), Some((5, 0)));
    }

    #[test]
    fn odd_configurations_do_not_panic_or_spin() {
        let cfg = OutboxConfig {
            window: 0,
            rto: Duration::ZERO,
            max_rto: Duration::ZERO,
            max_tries: u32::MAX,
            give_up_after: Duration::ZERO,
        };
        let mut o: Outbox<2> = connected_with(2);
        assert_eq!(o.poll_send(Instant::NEVER, &cfg), None);
        assert_eq!(o.poll_gave_up(ms(0), &cfg).map(|g| g.req), Some(1));
        let cfg = OutboxConfig {
            window: usize::MAX,
            rto: Duration::ZERO,
            max_rto: Duration::ZERO,
            ..cfg
        };
        o.push(ms(0), 3, id(3)).unwrap();
        let cfg = OutboxConfig {
            give_up_after: Duration::MAX,
            ..cfg
        };
        assert_eq!(
            drain(&mut o, ms(0), &cfg).len(),
            2,
            "a zero rto is not due at the same instant"
        );
        assert_eq!(drain(&mut o, Instant::NEVER, &cfg).len(), 2);
        assert_eq!(o.poll_timeout(&cfg), Some(Instant::NEVER));
    }

    #[test]
    fn lowering_max_tries_under_a_resend_pending_entry_gives_it_up() {
        let cfg = OutboxConfig::default();
        let mut o: Outbox<2> = connected_with(1);
        assert!(o.poll_send(ms(0), &cfg).is_some());
        assert!(o.poll_send(ms(2_000), &cfg).is_some());
        o.on_disconnect();
        let strict = OutboxConfig {
            max_tries: 2,
            ..cfg
        };
        assert_eq!(o.poll_timeout(&strict), Some(Instant::ZERO));
        o.on_connect(ms(3_000));
        assert_eq!(o.poll_send(ms(3_000), &strict), None);
        assert_eq!(o.poll_gave_up(ms(3_000), &strict).map(|g| g.tries), Some(2));
    }

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Op {
        Push,
        Ack(usize),
        AckUnknown(u32),
        Refuse(usize),
        Cancel(usize),
        Advance(u64),
        Disconnect,
        Connect,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Push),
            3 => any::<usize>().prop_map(Op::Ack),
            1 => any::<u32>().prop_map(Op::AckUnknown),
            1 => any::<usize>().prop_map(Op::Refuse),
            1 => any::<usize>().prop_map(Op::Cancel),
            4 => (0u64..6_000).prop_map(Op::Advance),
            1 => Just(Op::Disconnect),
            1 => Just(Op::Connect),
        ]
    }

    /// What the test knows about one pushed message.
    #[derive(Default)]
    struct Seen {
        tries: u32,
        resolved: u32,
    }

    struct Harness {
        o: Outbox<6>,
        cfg: OutboxConfig,
        now: Instant,
        next_req: u32,
        seen: BTreeMap<u32, Seen>,
        /// Requests transmitted on the current connection and not yet resolved.
        on_wire: BTreeSet<u32>,
    }

    impl Harness {
        fn resolve(&mut self, req: u32) {
            self.seen.get_mut(&req).unwrap().resolved += 1;
            self.on_wire.remove(&req);
        }

        fn step(&mut self) {
            while let Some(g) = self.o.poll_gave_up(self.now, &self.cfg) {
                assert_eq!(g.id, id(g.req));
                assert_eq!(g.tries, self.seen[&g.req].tries);
                if self.cfg.max_tries != 0 {
                    assert!(g.tries <= self.cfg.max_tries);
                }
                self.resolve(g.req);
            }
            while let Some(s) = self.o.poll_send(self.now, &self.cfg) {
                assert!(self.o.is_connected(), "no order while disconnected");
                assert_eq!(s.id, id(s.req), "ids never change per req");
                let seen = self.seen.get_mut(&s.req).unwrap();
                assert_eq!(seen.resolved, 0);
                seen.tries += 1;
                assert_eq!(s.attempt, seen.tries);
                self.on_wire.insert(s.req);
                assert!(self.o.in_flight() <= self.cfg.window);
            }
            assert!(self.o.in_flight() <= self.cfg.window);
            if let Some(t) = self.o.poll_timeout(&self.cfg) {
                assert!(t > self.now, "a timeout in the past after draining");
            }
        }

        fn pick(&self, k: usize) -> Option<u32> {
            let n = self.on_wire.len();
            (n > 0).then(|| *self.on_wire.iter().nth(k % n).unwrap())
        }

        fn apply(&mut self, op: Op) {
            match op {
                Op::Push => {
                    let r = self.next_req;
                    match self.o.push(self.now, r, id(r)) {
                        Ok(()) => {
                            self.seen.insert(r, Seen::default());
                            self.next_req += 1;
                        }
                        Err(e) => {
                            assert_eq!(e, OutboxError::Full);
                            assert_eq!(self.o.len(), 6);
                        }
                    }
                }
                Op::Ack(k) | Op::Refuse(k) => {
                    if let Some(r) = self.pick(k) {
                        let got = if matches!(op, Op::Ack(_)) {
                            self.o.on_ack(r)
                        } else {
                            self.o.on_refused(r)
                        };
                        assert_eq!(got, Some(id(r)));
                        self.resolve(r);
                        assert_eq!(self.o.on_ack(r), None, "duplicate ack");
                    }
                }
                Op::AckUnknown(r) => {
                    let live = self
                        .seen
                        .get(&r)
                        .is_some_and(|s| s.resolved == 0 && s.tries > 0);
                    if !live {
                        assert_eq!(self.o.on_ack(r), None);
                    }
                }
                Op::Cancel(k) => {
                    let live: Vec<u32> = self.o.iter().map(|(r, _)| r).collect();
                    if !live.is_empty() {
                        let r = live[k % live.len()];
                        assert_eq!(self.o.cancel(&id(r)), Some(r));
                        self.resolve(r);
                    }
                }
                Op::Advance(d) => self.now += Duration::from_millis(d),
                Op::Disconnect => {
                    self.o.on_disconnect();
                    self.on_wire.clear();
                }
                Op::Connect => self.o.on_connect(self.now),
            }
            self.step();
        }
    }

    proptest! {
        #[test]
        fn random_events_keep_the_outbox_honest(
            window in 1usize..5,
            rto in 1u64..3_000,
            max_tries in 0u32..5,
            give_up_s in 1u64..60,
            ops in proptest::collection::vec(op(), 0..120),
        ) {
            let cfg = OutboxConfig {
                window,
                rto: Duration::from_millis(rto),
                max_rto: Duration::from_millis(rto * 4),
                max_tries,
                give_up_after: Duration::from_secs(give_up_s),
            };
            let mut h = Harness {
                o: Outbox::new(),
                cfg,
                now: ms(0),
                next_req: 1,
                seen: BTreeMap::new(),
                on_wire: BTreeSet::new(),
            };
            for op in ops {
                h.apply(op);
            }
            // Run to completion: connected, nobody acks, time goes to each deadline.
            h.apply(Op::Connect);
            let mut rounds = 0;
            while let Some(t) = h.o.poll_timeout(&h.cfg) {
                h.now = t;
                h.step();
                rounds += 1;
                prop_assert!(rounds < 10_000);
            }
            prop_assert!(h.o.is_empty());
            prop_assert_eq!(h.o.in_flight(), 0);
            for (req, seen) in &h.seen {
                prop_assert_eq!(seen.resolved, 1, "req {} resolved once", req);
            }
        }

        /// Pushes are refused as duplicates exactly when a queued entry has the same request id
        /// or message id, whatever was pushed, acknowledged or cancelled before.
        #[test]
        fn duplicates_are_found_whatever_came_and_went(
            ops in proptest::collection::vec((0u8..4, 0u32..24, 0u32..24), 0..200),
        ) {
            let cfg = OutboxConfig::default();
            let mut o: Outbox<5> = Outbox::new();
            o.on_connect(ms(0));
            let mut model: Vec<(u32, MsgId)> = Vec::new();
            for (what, req, n) in ops {
                match what {
                    0 | 1 => {
                        let want = if model.iter().any(|&(r, i)| r == req || i == id(n)) {
                            Err(OutboxError::Duplicate)
                        } else if model.len() == 5 {
                            Err(OutboxError::Full)
                        } else {
                            model.push((req, id(n)));
                            Ok(())
                        };
                        prop_assert_eq!(o.push(ms(0), req, id(n)), want);
                    }
                    2 => {
                        let got = o.cancel(&id(n));
                        let at = model.iter().position(|&(_, i)| i == id(n));
                        prop_assert_eq!(got, at.map(|a| model.remove(a).0));
                    }
                    _ => {
                        while o.poll_send(ms(0), &cfg).is_some() {}
                        let got = o.on_ack(req);
                        let at = model.iter().position(|&(r, _)| r == req);
                        prop_assert_eq!(got, at.map(|a| model.remove(a).1));
                    }
                }
            }
        }

        /// The fast path answers exactly what the full scan answers, whatever happens, even
        /// when the configuration changes under waiting entries and time does not always move
        /// forward.
        #[test]
        fn polling_without_a_scan_answers_what_the_scan_answers(
            window in 1usize..5,
            rto in 1u64..3_000,
            max_tries in 0u32..5,
            give_up_s in prop_oneof![(1u64..60).prop_map(Some), Just(None)],
            ops in proptest::collection::vec((op(), 0u8..8), 0..160),
        ) {
            let mut cfg = OutboxConfig {
                window,
                rto: Duration::from_millis(rto),
                max_rto: Duration::from_millis(rto * 4),
                max_tries,
                give_up_after: give_up_s.map_or(Duration::MAX, Duration::from_secs),
            };
            let mut fast: Outbox<6> = Outbox::new();
            let mut scan: Outbox<6> = Outbox::new();
            scan.scan_only = true;
            let (mut now, mut next_req) = (ms(0), 1u32);
            for (op, tweak) in ops {
                match tweak {
                    0 => cfg.max_tries = cfg.max_tries.saturating_sub(1),
                    1 => now = Instant::from_micros(now.as_micros().saturating_sub(500_000)),
                    2 => cfg.window = cfg.window % 4 + 1,
                    _ => {}
                }
                let live: Vec<u32> = scan.iter().map(|(r, _)| r).collect();
                let pick = |k: usize| live.get(k % live.len().max(1)).copied();
                for o in [&mut fast, &mut scan] {
                    match op {
                        Op::Push => {
                            let _ = o.push(now, next_req, id(next_req));
                        }
                        Op::Ack(k) | Op::Refuse(k) => {
                            if let Some(r) = pick(k) {
                                o.on_ack(r);
                            }
                        }
                        Op::AckUnknown(r) => {
                            o.on_ack(r);
                        }
                        Op::Cancel(k) => {
                            if let Some(r) = pick(k) {
                                o.cancel(&id(r));
                            }
                        }
                        Op::Advance(_) | Op::Connect => o.on_connect(now),
                        Op::Disconnect => o.on_disconnect(),
                    }
                }
                if op == Op::Push {
                    next_req += 1;
                }
                if let Op::Advance(d) = op {
                    now += Duration::from_millis(d);
                }
                loop {
                    let (a, b) = (fast.poll_gave_up(now, &cfg), scan.poll_gave_up(now, &cfg));
                    prop_assert_eq!(a, b);
                    if a.is_none() {
                        break;
                    }
                }
                loop {
                    let (a, b) = (fast.poll_send(now, &cfg), scan.poll_send(now, &cfg));
                    prop_assert_eq!(a, b);
                    if a.is_none() {
                        break;
                    }
                }
                prop_assert_eq!(fast.poll_timeout(&cfg), scan.poll_timeout(&cfg));
                prop_assert_eq!(fast.in_flight(), scan.in_flight());
                prop_assert!(fast.iter().eq(scan.iter()));
            }
        }
    }
}
