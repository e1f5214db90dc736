//! The fixed-capacity message pool: the messages a client currently knows, across topics, kept in
//! per-topic order (server seq, with virtual seqs for outgoing messages not yet stored), with O(1)
//! lookups and dedup by message id and by (topic, seq), and eviction that never drops a message
//! still owed an ack.
//!
//! # Layout
//! Everything lives in fixed arrays sized by `N` (at most 65535):
//! - the entries, one `Option<Entry<T>>` per slot, with a generation counter per slot so that a
//!   stale [`Slot`] handle never reaches a newer entry;
//! - two open-addressing hash tables of `2N` cells (linear probing, backward-shift deletion, no
//!   tombstones): message id → slot and (topic, seq) → slot, the latter for stored keys only;
//! - a sorted index of slot numbers ordered by (topic, [`OrderKey`]), searched by bisection over
//!   a dense array of packed sort keys; inserting or removing shifts at most `2N` bytes;
//! - an intrusive doubly linked list of the evictable slots, oldest-evictable first, so that
//!   choosing a victim is O(1);
//! - a free list of empty slots (threaded through the same link array).
//!
//! Every operation is O(1) apart from the index shift (a `memmove` of at most `2N` bytes) and
//! the O(log N) bisection; nothing here panics or allocates.

use core::fmt;

use crate::id::MsgId;

/// Index of a topic in the engine's topic table; the pool never sees topic names.
pub type TopicKey = u16;

/// Where a message sorts within its topic: stored messages at `(seq, 0)`, pending outgoing ones at
/// `(last seq known when sent, n)` with n = 1, 2, ... (virtual seq). Ord is lexicographic (seq, local).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct OrderKey {
    /// The server seq (stored), or the last seq the client knew when it sent (pending).
    pub seq: u64,
    /// 0 for a stored message; 1, 2, ... for pending messages sent after the same `seq`.
    pub local: u32,
}

impl OrderKey {
    /// The key of a message the gateway stored at `seq`.
    pub const fn stored(seq: u64) -> Self {
        OrderKey { seq, local: 0 }
    }

    /// The virtual key of the `n`-th outgoing message sent while `after_seq` was the last seq known.
    pub const fn pending(after_seq: u64, n: u32) -> Self {
        OrderKey {
            seq: after_seq,
            local: n,
        }
    }

    /// Is this a real server seq (`local == 0`)?
    pub const fn is_stored(&self) -> bool {
        self.local == 0
    }
}

/// Why an outgoing message failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum FailReason {
    /// Retries ran out (count or deadline) without the gateway acknowledging.
    TimedOut,
    /// The gateway refused it with this ctrl code (e.g. 413 too large, 422 policy).
    Refused {
        /// The gateway's ctrl code.
        code: u16,
    },
    /// The application cancelled it before it was acknowledged.
    Cancelled,
}

/// Life of a message in the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum MessageState {
    /// Outgoing, waiting for a send slot / connection.
    Queued,
    /// Outgoing, on the wire, no ack yet.
    Sending,
    /// Outgoing, stored by the gateway (has a real seq).
    Sent,
    /// Outgoing, the recipient's client received it.
    Delivered,
    /// Outgoing, the recipient read it.
    Read,
    /// Outgoing, gave up or refused; keeps its virtual position.
    Failed(FailReason),
    /// Incoming, pushed or pulled from the gateway and handed to the application.
    Received,
    /// Incoming, held until every earlier seq has arrived: not shown yet, and not yet
    /// acknowledged to the gateway, so never evicted.
    Arriving,
}

impl MessageState {
    /// Queued or Sending: the gateway still owes an ack; never evicted.
    pub const fn awaits_ack(&self) -> bool {
        matches!(self, MessageState::Queued | MessageState::Sending)
    }

    /// May the pool evict it to make room? Sent/Delivered/Read/Received: yes.
    /// Queued/Sending (owed an ack), Arriving (not yet shown) and Failed (the user's unsent
    /// text): no.
    pub const fn evictable(&self) -> bool {
        matches!(
            self,
            MessageState::Sent
                | MessageState::Delivered
                | MessageState::Read
                | MessageState::Received
        )
    }
}

/// One message in the pool. `data` is the engine's payload (sender, timestamp, content...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<T> {
    /// The message id (unique in the pool).
    pub id: MsgId,
    /// The topic it belongs to.
    pub topic: TopicKey,
    /// Where it sorts within the topic.
    pub key: OrderKey,
    /// Where it is in its life.
    pub state: MessageState,
    /// The engine's payload.
    pub data: T,
}

/// Opaque handle to an occupied slot; invalid after the entry is removed or evicted
/// (functions given a stale slot return NotFound / None, never the wrong entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Slot {
    index: u16,
    generation: u16,
}

/// Why a pool operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PoolError {
    /// Every slot holds a message that may not be evicted (owed an ack, or failed).
    Full,
    /// A message with this id is already in the pool.
    DuplicateId,
    /// A stored message with this (topic, seq) is already in the pool.
    DuplicateSeq,
    /// The slot is stale or empty.
    NotFound,
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PoolError::Full => "message pool is full of messages that may not be evicted",
            PoolError::DuplicateId => "a message with this id is already in the pool",
            PoolError::DuplicateSeq => "a message with this topic and seq is already in the pool",
            PoolError::NotFound => "no message in this pool slot (removed or evicted)",
        })
    }
}

#[cfg(feature = "std")]
impl core::error::Error for PoolError {}

/// What insert did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Inserted {
    /// Where the new message lives.
    pub slot: Slot,
    /// The message evicted to make room, if the pool was full.
    pub evicted: Option<(MsgId, TopicKey)>,
}

/// "No slot": empty hash cell, end of a list.
const NIL: u16 = u16::MAX;

/// The murmur3 64-bit finaliser: spreads every input bit over the high bits the tables use.
const fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

fn id_hash(id: &MsgId) -> u64 {
    mix(id.hash64())
}

fn seq_hash(topic: TopicKey, seq: u64) -> u64 {
    mix(seq ^ (u64::from(topic) << 48) ^ u64::from(topic))
}

/// The packed sort key of an entry: topic, then seq, then local, compared as one integer.
const fn sort_key(topic: TopicKey, key: OrderKey) -> u128 {
    ((topic as u128) << 96) | ((key.seq as u128) << 32) | key.local as u128
}

/// An open-addressing table of `2N` cells holding slot numbers, found by a caller-supplied test.
struct Table<const N: usize>([[u16; 2]; N]);

impl<const N: usize> Table<N> {
    const LEN: usize = 2 * N;

    const fn new() -> Self {
        Table([[NIL; 2]; N])
    }

    fn cell(&self, i: usize) -> u16 {
        self.0.get(i / 2).map_or(NIL, |c| c[i % 2])
    }

    fn set(&mut self, i: usize, v: u16) {
        if let Some(c) = self.0.get_mut(i / 2) {
            c[i % 2] = v;
        }
    }

    /// The home cell of a hash (multiply-shift onto `0..LEN`).
    fn home(h: u64) -> usize {
        ((u128::from(h) * Self::LEN as u128) >> 64) as usize
    }

    fn next(i: usize) -> usize {
        if i + 1 >= Self::LEN { 0 } else { i + 1 }
    }

    /// The cell and slot of the first entry with hash `h` that `is` accepts.
    fn find(&self, h: u64, mut is: impl FnMut(u16) -> bool) -> Option<(usize, u16)> {
        let mut i = Self::home(h);
        // The table is at most half full, so an empty cell always ends the probe; the bound
        // is only a guard.
        for _ in 0..Self::LEN {
            let v = self.cell(i);
            if v == NIL {
                return None;
            }
            if is(v) {
                return Some((i, v));
            }
            i = Self::next(i);
        }
        None
    }

    /// Adds slot `v` under hash `h` (the caller checked it is absent; there is always room).
    fn insert(&mut self, h: u64, v: u16) {
        let mut i = Self::home(h);
        for _ in 0..Self::LEN {
            if self.cell(i) == NIL {
                self.set(i, v);
                return;
            }
            i = Self::next(i);
        }
    }

    /// Empties cell `pos`, shifting later members of its probe run back (no tombstones).
    fn remove_at(&mut self, pos: usize, home_of: impl Fn(u16) -> usize) {
        let len = Self::LEN;
        let mut hole = pos;
        let mut j = pos;
        for _ in 0..len {
            j = Self::next(j);
            let v = self.cell(j);
            if v == NIL {
                break;
            }
            // `v` may fill the hole if the hole lies cyclically within [home, j].
            let home = home_of(v);
            if (j + len - home) % len >= (j + len - hole) % len {
                self.set(hole, v);
                hole = j;
            }
        }
        self.set(hole, NIL);
    }
}

/// The fixed-capacity message pool; see the [module docs](self).
pub struct Pool<T, const N: usize> {
    entries: [Option<Entry<T>>; N],
    /// Bumped each time a slot is emptied, so stale handles miss.
    generation: [u16; N],
    /// Packed (topic, key) of each occupied slot, for dense bisection.
    sort: [u128; N],
    /// Occupied slots in (topic, key) order; `order[..len]` is live.
    order: [u16; N],
    len: usize,
    by_id: Table<N>,
    by_seq: Table<N>,
    /// Evictable list links (occupied slots) and free list links (empty slots).
    next: [u16; N],
    prev: [u16; N],
    lru_head: u16,
    lru_tail: u16,
    free_head: u16,
    /// Slots `fresh..N` have never been used.
    fresh: u16,
}

impl<T, const N: usize> Default for Pool<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> Pool<T, N> {
    /// An empty pool. `const`, so it can live in a `static`; N above 65535 fails to compile.
    pub const fn new() -> Self {
        const {
            assert!(
                N <= u16::MAX as usize,
                "Pool capacity must be at most 65535"
            )
        };
        Pool {
            entries: [const { None }; N],
            generation: [0; N],
            sort: [0; N],
            order: [0; N],
            len: 0,
            by_id: Table::new(),
            by_seq: Table::new(),
            next: [NIL; N],
            prev: [NIL; N],
            lru_head: NIL,
            lru_tail: NIL,
            free_head: NIL,
            fresh: 0,
        }
    }

    /// How many messages the pool can hold.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// How many messages it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Does it hold no message?
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Inserts; rejects DuplicateId, and DuplicateSeq when key.is_stored() and (topic, seq) exists.
    /// When full, evicts the evictable entry that became evictable longest ago; Full if none.
    /// A rejected insert changes nothing (in particular, evicts nothing).
    pub fn insert(
        &mut self,
        id: MsgId,
        topic: TopicKey,
        key: OrderKey,
        state: MessageState,
        data: T,
    ) -> Result<Inserted, PoolError> {
        if self.find_id(&id).is_some() {
            return Err(PoolError::DuplicateId);
        }
        if key.is_stored() && self.find_seq(topic, key.seq).is_some() {
            return Err(PoolError::DuplicateSeq);
        }
        let mut evicted = None;
        let index = match self.alloc() {
            Some(i) => i,
            None => {
                let victim = self.lru_head;
                let old = self.remove_index(victim).ok_or(PoolError::Full)?;
                evicted = Some((old.id, old.topic));
                self.alloc().ok_or(PoolError::Full)?
            }
        };
        let i = usize::from(index);
        self.by_id.insert(id_hash(&id), index);
        if key.is_stored() {
            self.by_seq.insert(seq_hash(topic, key.seq), index);
        }
        self.sort[i] = sort_key(topic, key);
        self.order_insert(index);
        if state.evictable() {
            self.lru_push(index);
        }
        self.entries[i] = Some(Entry {
            id,
            topic,
            key,
            state,
            data,
        });
        let slot = Slot {
            index,
            generation: self.generation[i],
        };
        Ok(Inserted { slot, evicted })
    }

    /// The entry behind a slot, or None if the slot is stale.
    pub fn get(&self, slot: Slot) -> Option<&Entry<T>> {
        let i = usize::from(slot.index);
        if *self.generation.get(i)? != slot.generation {
            return None;
        }
        self.entries.get(i)?.as_ref()
    }

    /// Mutable access to the payload only (key/state/id changes go through the methods below so the indexes stay right).
    pub fn data_mut(&mut self, slot: Slot) -> Option<&mut T> {
        let i = usize::from(slot.index);
        if *self.generation.get(i)? != slot.generation {
            return None;
        }
        self.entries.get_mut(i)?.as_mut().map(|e| &mut e.data)
    }

    /// The slot of the message with this id.
    pub fn find_id(&self, id: &MsgId) -> Option<Slot> {
        let (_, index) = self
            .by_id
            .find(id_hash(id), |s| self.entry(s).is_some_and(|e| e.id == *id))?;
        Some(self.slot_of(index))
    }

    /// The slot of the stored message at (topic, seq).
    pub fn find_seq(&self, topic: TopicKey, seq: u64) -> Option<Slot> {
        let want = sort_key(topic, OrderKey::stored(seq));
        let (_, index) = self
            .by_seq
            .find(seq_hash(topic, seq), |s| self.sort_of(s) == want)?;
        Some(self.slot_of(index))
    }

    /// Changes a message's state (and with it whether it may be evicted). A message that stays
    /// evictable keeps its place in the eviction order; one that becomes evictable goes last.
    pub fn set_state(&mut self, slot: Slot, state: MessageState) -> Result<(), PoolError> {
        let index = self.check(slot)?;
        let was = self
            .entry(index)
            .ok_or(PoolError::NotFound)?
            .state
            .evictable();
        match (was, state.evictable()) {
            (false, true) => self.lru_push(index),
            (true, false) => self.lru_unlink(index),
            _ => {}
        }
        if let Some(e) = self.entry_mut(index) {
            e.state = state;
        }
        Ok(())
    }

    /// The gateway stored this outgoing message at `seq`: moves it to OrderKey::stored(seq), state Sent
    /// (a message already Delivered or Read keeps that state). DuplicateSeq if another entry
    /// already holds (topic, seq); NotFound for a stale slot.
    pub fn confirm(&mut self, slot: Slot, seq: u64) -> Result<(), PoolError> {
        let index = self.check(slot)?;
        let (topic, old_key, old_state) = match self.entry(index) {
            Some(e) => (e.topic, e.key, e.state),
            None => return Err(PoolError::NotFound),
        };
        let key = OrderKey::stored(seq);
        if self.find_seq(topic, seq).is_some_and(|s| s.index != index) {
            return Err(PoolError::DuplicateSeq);
        }
        if old_key != key {
            if old_key.is_stored() {
                self.seq_unlink(index, topic, old_key.seq);
            }
            self.by_seq.insert(seq_hash(topic, seq), index);
            self.order_remove(index);
            self.sort[usize::from(index)] = sort_key(topic, key);
            self.order_insert(index);
        }
        let state = match old_state {
            MessageState::Delivered | MessageState::Read => old_state,
            _ => MessageState::Sent,
        };
        if !old_state.evictable() {
            self.lru_push(index);
        }
        if let Some(e) = self.entry_mut(index) {
            e.key = key;
            e.state = state;
        }
        Ok(())
    }

    /// Takes a message out of the pool; its slot handle goes stale.
    pub fn remove(&mut self, slot: Slot) -> Option<Entry<T>> {
        let index = self.check(slot).ok()?;
        self.remove_index(index)
    }

    /// The topic's messages in OrderKey order.
    pub fn iter_topic(
        &self,
        topic: TopicKey,
    ) -> impl DoubleEndedIterator<Item = (Slot, &Entry<T>)> + '_ {
        let (lo, hi) = self.topic_range(topic);
        self.iter_range(lo, hi)
    }

    /// The topic's messages with key >= from, in order (for paging / "what came after").
    pub fn iter_topic_from(
        &self,
        topic: TopicKey,
        from: OrderKey,
    ) -> impl Iterator<Item = (Slot, &Entry<T>)> + '_ {
        let (_, hi) = self.topic_range(topic);
        let lo = self.lower_bound(sort_key(topic, from)).min(hi);
        self.iter_range(lo, hi)
    }

    /// Highest stored seq held for the topic (0 if none).
    pub fn last_seq(&self, topic: TopicKey) -> u64 {
        self.iter_topic(topic)
            .rev()
            .find(|(_, e)| e.key.is_stored())
            .map_or(0, |(_, e)| e.key.seq)
    }

    /// Removes every message of a topic (e.g. the user left it); returns how many.
    pub fn clear_topic(&mut self, topic: TopicKey) -> usize {
        let (lo, hi) = self.topic_range(topic);
        for p in lo..hi {
            let index = self.order[p];
            self.unindex(index, false);
            self.release(index);
        }
        self.order.copy_within(hi..self.len, lo);
        self.len -= hi - lo;
        hi - lo
    }

    // ---- internals ----

    fn entry(&self, index: u16) -> Option<&Entry<T>> {
        self.entries.get(usize::from(index))?.as_ref()
    }

    fn entry_mut(&mut self, index: u16) -> Option<&mut Entry<T>> {
        self.entries.get_mut(usize::from(index))?.as_mut()
    }

    fn sort_of(&self, index: u16) -> u128 {
        self.sort.get(usize::from(index)).copied().unwrap_or(0)
    }

    fn slot_of(&self, index: u16) -> Slot {
        let generation = self
            .generation
            .get(usize::from(index))
            .copied()
            .unwrap_or(0);
        Slot { index, generation }
    }

    /// The index behind a live slot handle.
    fn check(&self, slot: Slot) -> Result<u16, PoolError> {
        self.get(slot)
            .map(|_| slot.index)
            .ok_or(PoolError::NotFound)
    }

    fn alloc(&mut self) -> Option<u16> {
        if self.free_head != NIL {
            let index = self.free_head;
            self.free_head = self.next[usize::from(index)];
            Some(index)
        } else if usize::from(self.fresh) < N {
            self.fresh += 1;
            Some(self.fresh - 1)
        } else {
            None
        }
    }

    /// Empties an occupied slot after it left every index: bumps the generation, frees it.
    fn release(&mut self, index: u16) -> Option<Entry<T>> {
        let i = usize::from(index);
        let entry = self.entries.get_mut(i)?.take();
        self.generation[i] = self.generation[i].wrapping_add(1);
        self.next[i] = self.free_head;
        self.free_head = index;
        entry
    }

    fn remove_index(&mut self, index: u16) -> Option<Entry<T>> {
        self.entry(index)?;
        self.unindex(index, true);
        self.release(index)
    }

    /// Takes an occupied slot out of the hash tables, the eviction list and (if `order`) the
    /// sorted index.
    fn unindex(&mut self, index: u16, order: bool) {
        let Some(e) = self.entry(index) else { return };
        let (id, topic, key, evictable) = (e.id, e.topic, e.key, e.state.evictable());
        if let Some((pos, _)) = self.by_id.find(id_hash(&id), |s| s == index) {
            let entries = &self.entries;
            self.by_id.remove_at(pos, |s| {
                let h = entries
                    .get(usize::from(s))
                    .and_then(Option::as_ref)
                    .map_or(0, |e| id_hash(&e.id));
                Table::<N>::home(h)
            });
        }
        if key.is_stored() {
            self.seq_unlink(index, topic, key.seq);
        }
        if evictable {
            self.lru_unlink(index);
        }
        if order {
            self.order_remove(index);
        }
    }

    fn seq_unlink(&mut self, index: u16, topic: TopicKey, seq: u64) {
        if let Some((pos, _)) = self.by_seq.find(seq_hash(topic, seq), |s| s == index) {
            let entries = &self.entries;
            self.by_seq.remove_at(pos, |s| {
                let h = entries
                    .get(usize::from(s))
                    .and_then(Option::as_ref)
                    .map_or(0, |e| seq_hash(e.topic, e.key.seq));
                Table::<N>::home(h)
            });
        }
    }

    /// First position in the sorted index whose key is >= `k`.
    fn lower_bound(&self, k: u128) -> usize {
        self.order[..self.len].partition_point(|&s| self.sort_of(s) < k)
    }

    /// First position whose key is > `k`.
    fn upper_bound(&self, k: u128) -> usize {
        self.order[..self.len].partition_point(|&s| self.sort_of(s) <= k)
    }

    fn topic_range(&self, topic: TopicKey) -> (usize, usize) {
        let lo = self.lower_bound(sort_key(topic, OrderKey::default()));
        let hi = self.upper_bound(sort_key(
            topic,
            OrderKey {
                seq: u64::MAX,
                local: u32::MAX,
            },
        ));
        (lo, hi)
    }

    fn iter_range(
        &self,
        lo: usize,
        hi: usize,
    ) -> impl DoubleEndedIterator<Item = (Slot, &Entry<T>)> + '_ {
        self.order
            .get(lo..hi)
            .unwrap_or(&[])
            .iter()
            .filter_map(move |&s| Some((self.slot_of(s), self.entry(s)?)))
    }

    /// Puts `index` into the sorted index after every equal key (ties keep arrival order).
    fn order_insert(&mut self, index: u16) {
        if self.len >= N {
            return;
        }
        let p = self.upper_bound(self.sort_of(index));
        self.order.copy_within(p..self.len, p + 1);
        self.order[p] = index;
        self.len += 1;
    }

    fn order_remove(&mut self, index: u16) {
        let k = self.sort_of(index);
        let mut p = self.lower_bound(k);
        while p < self.len && self.order[p] != index {
            if self.sort_of(self.order[p]) != k {
                return;
            }
            p += 1;
        }
        if p < self.len {
            self.order.copy_within(p + 1..self.len, p);
            self.len -= 1;
        }
    }

    /// Appends to the eviction list (it became evictable now).
    fn lru_push(&mut self, index: u16) {
        let i = usize::from(index);
        self.prev[i] = self.lru_tail;
        self.next[i] = NIL;
        match self.next.get_mut(usize::from(self.lru_tail)) {
            Some(n) => *n = index,
            None => self.lru_head = index,
        }
        self.lru_tail = index;
    }

    fn lru_unlink(&mut self, index: u16) {
        let i = usize::from(index);
        let (p, n) = (self.prev[i], self.next[i]);
        match self.next.get_mut(usize::from(p)) {
            Some(x) => *x = n,
            None => self.lru_head = n,
        }
        match self.prev.get_mut(usize::from(n)) {
            Some(x) => *x = p,
            None => self.lru_tail = p,
        }
        self.prev[i] = NIL;
        self.next[i] = NIL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u32) -> MsgId {
        let mut b = [0u8; 16];
        b[12..].copy_from_slice(&n.to_be_bytes());
        MsgId::from_bytes(b)
    }

    const RECV: MessageState = MessageState::Received;

    /// (topic, seq, local) of a topic's messages in iteration order.
    fn keys<T, const N: usize>(pool: &Pool<T, N>, topic: TopicKey) -> Vec<(u64, u32)> {
        pool.iter_topic(topic)
            .map(|(_, e)| (e.key.seq, e.key.local))
            .collect()
    }

    fn ids<T, const N: usize>(pool: &Pool<T, N>, topic: TopicKey) -> Vec<MsgId> {
        pool.iter_topic(topic).map(|(_, e)| e.id).collect()
    }

    #[test]
    fn two_topics_interleave_but_iterate_per_topic_in_seq_order() {
        let mut pool: Pool<u32, 16> = Pool::new();
        let arrivals = [(1, 3), (2, 1), (1, 1), (2, 3), (1, 2), (2, 2)];
        for (n, &(topic, seq)) in arrivals.iter().enumerate() {
            let n = n as u32;
            pool.insert(id(n), topic, OrderKey::stored(seq), RECV, n)
                .unwrap();
        }
        assert_eq!(pool.len(), 6);
        assert_eq!(keys(&pool, 1), vec![(1, 0), (2, 0), (3, 0)]);
        assert_eq!(keys(&pool, 2), vec![(1, 0), (2, 0), (3, 0)]);
        assert_eq!(ids(&pool, 1), vec![id(2), id(4), id(0)]);
        let back: Vec<u64> = pool.iter_topic(2).rev().map(|(_, e)| e.key.seq).collect();
        assert_eq!(back, vec![3, 2, 1]);
        assert_eq!(pool.iter_topic(0).count(), 0);
        assert_eq!(pool.iter_topic(3).count(), 0);
    }

    #[test]
    fn a_pending_message_sorts_after_the_seq_it_was_sent_after_and_before_later_seqs() {
        let mut pool: Pool<(), 16> = Pool::new();
        for seq in [1, 2, 4] {
            pool.insert(id(seq as u32), 7, OrderKey::stored(seq), RECV, ())
                .unwrap();
        }
        pool.insert(
            id(100),
            7,
            OrderKey::pending(2, 1),
            MessageState::Queued,
            (),
        )
        .unwrap();
        pool.insert(
            id(101),
            7,
            OrderKey::pending(2, 2),
            MessageState::Sending,
            (),
        )
        .unwrap();
        assert_eq!(keys(&pool, 7), vec![(1, 0), (2, 0), (2, 1), (2, 2), (4, 0)]);
        assert!(
            pool.find_seq(7, 3).is_none(),
            "pending keys are not in the seq index"
        );
    }

    #[test]
    fn confirm_moves_a_pending_message_to_its_real_seq() {
        let mut pool: Pool<(), 16> = Pool::new();
        pool.insert(id(1), 0, OrderKey::stored(1), RECV, ())
            .unwrap();
        let mine = pool.insert(id(2), 0, OrderKey::pending(1, 1), MessageState::Sending, ());
        let mine = mine.unwrap().slot;
        pool.insert(id(3), 0, OrderKey::stored(2), RECV, ())
            .unwrap();
        pool.insert(id(4), 0, OrderKey::stored(3), RECV, ())
            .unwrap();
        assert_eq!(ids(&pool, 0), vec![id(1), id(2), id(3), id(4)]);

        pool.confirm(mine, 4).unwrap();
        assert_eq!(ids(&pool, 0), vec![id(1), id(3), id(4), id(2)]);
        let e = pool.get(mine).unwrap();
        assert_eq!((e.key, e.state), (OrderKey::stored(4), MessageState::Sent));
        assert_eq!(pool.find_seq(0, 4), Some(mine));
        assert_eq!(pool.last_seq(0), 4);
        // A repeated confirm with the same seq is harmless.
        pool.confirm(mine, 4).unwrap();
        assert_eq!(pool.len(), 4);
    }

    #[test]
    fn a_failed_message_keeps_its_place_when_later_seqs_arrive() {
        let mut pool: Pool<(), 16> = Pool::new();
        pool.insert(id(1), 0, OrderKey::stored(5), RECV, ())
            .unwrap();
        let mine = pool.insert(id(2), 0, OrderKey::pending(5, 1), MessageState::Sending, ());
        let mine = mine.unwrap().slot;
        let refused = MessageState::Failed(FailReason::Refused { code: 422 });
        pool.set_state(mine, refused).unwrap();
        for seq in 6..9 {
            pool.insert(id(seq as u32 + 10), 0, OrderKey::stored(seq), RECV, ())
                .unwrap();
        }
        assert_eq!(keys(&pool, 0), vec![(5, 0), (5, 1), (6, 0), (7, 0), (8, 0)]);
        assert_eq!(pool.get(mine).unwrap().state, refused);
        assert_eq!(pool.last_seq(0), 8);
    }

    #[test]
    fn a_late_confirm_rescues_a_failed_message() {
        let mut pool: Pool<(), 4> = Pool::new();
        let s = pool.insert(id(1), 0, OrderKey::pending(0, 1), MessageState::Sending, ());
        let s = s.unwrap().slot;
        pool.set_state(s, MessageState::Failed(FailReason::TimedOut))
            .unwrap();
        pool.confirm(s, 1).unwrap();
        assert_eq!(pool.get(s).unwrap().state, MessageState::Sent);
        // Now evictable: filling the pool evicts it first.
        for n in 2..5 {
            pool.insert(id(n), 0, OrderKey::stored(u64::from(n)), RECV, ())
                .unwrap();
        }
        let ins = pool
            .insert(id(9), 0, OrderKey::stored(9), RECV, ())
            .unwrap();
        assert_eq!(ins.evicted, Some((id(1), 0)));
    }

    #[test]
    fn confirm_keeps_delivered_and_read() {
        let mut pool: Pool<(), 4> = Pool::new();
        let s = pool
            .insert(id(1), 0, OrderKey::pending(0, 1), MessageState::Read, ())
            .unwrap();
        pool.confirm(s.slot, 1).unwrap();
        assert_eq!(pool.get(s.slot).unwrap().state, MessageState::Read);
    }

    #[test]
    fn duplicate_id_and_duplicate_seq_are_refused() {
        let mut pool: Pool<(), 8> = Pool::new();
        pool.insert(id(1), 0, OrderKey::stored(1), RECV, ())
            .unwrap();
        let again = pool.insert(id(1), 3, OrderKey::stored(9), RECV, ());
        assert_eq!(again, Err(PoolError::DuplicateId));
        let same_seq = pool.insert(id(2), 0, OrderKey::stored(1), RECV, ());
        assert_eq!(same_seq, Err(PoolError::DuplicateSeq));
        // The same seq in another topic, and a pending key after that seq, are fine.
        pool.insert(id(3), 1, OrderKey::stored(1), RECV, ())
            .unwrap();
        pool.insert(id(4), 0, OrderKey::pending(1, 1), MessageState::Queued, ())
            .unwrap();
        assert_eq!(pool.len(), 3);
    }

    #[test]
    fn confirm_to_a_seq_another_message_holds_is_refused_and_changes_nothing() {
        let mut pool: Pool<(), 8> = Pool::new();
        pool.insert(id(1), 0, OrderKey::stored(1), RECV, ())
            .unwrap();
        let s = pool.insert(id(2), 0, OrderKey::pending(1, 1), MessageState::Sending, ());
        let s = s.unwrap().slot;
        assert_eq!(pool.confirm(s, 1), Err(PoolError::DuplicateSeq));
        let e = pool.get(s).unwrap();
        assert_eq!(
            (e.key, e.state),
            (OrderKey::pending(1, 1), MessageState::Sending)
        );
        assert_eq!(keys(&pool, 0), vec![(1, 0), (1, 1)]);
    }

    #[test]
    fn a_full_pool_evicts_the_oldest_evictable_and_never_one_owed_an_ack_or_failed() {
        let mut pool: Pool<(), 6> = Pool::new();
        let failed = MessageState::Failed(FailReason::Cancelled);
        pool.insert(id(1), 0, OrderKey::pending(0, 1), MessageState::Queued, ())
            .unwrap();
        pool.insert(id(2), 0, OrderKey::pending(0, 2), MessageState::Sending, ())
            .unwrap();
        pool.insert(id(3), 0, OrderKey::pending(0, 3), failed, ())
            .unwrap();
        pool.insert(id(4), 1, OrderKey::stored(1), RECV, ())
            .unwrap();
        pool.insert(id(5), 0, OrderKey::stored(1), MessageState::Delivered, ())
            .unwrap();
        pool.insert(id(6), 1, OrderKey::stored(2), RECV, ())
            .unwrap();
        assert_eq!(pool.len(), 6);

        let ins = pool
            .insert(id(7), 2, OrderKey::stored(1), RECV, ())
            .unwrap();
        assert_eq!(ins.evicted, Some((id(4), 1)));
        assert!(pool.find_id(&id(4)).is_none());
        assert!(pool.find_seq(1, 1).is_none());
        let ins = pool
            .insert(id(8), 2, OrderKey::stored(2), MessageState::Sending, ())
            .unwrap();
        assert_eq!(ins.evicted, Some((id(5), 0)));
        let ins = pool
            .insert(id(9), 2, OrderKey::stored(3), MessageState::Queued, ())
            .unwrap();
        assert_eq!(ins.evicted, Some((id(6), 1)));
        let ins = pool
            .insert(id(10), 2, OrderKey::stored(4), MessageState::Queued, ())
            .unwrap();
        assert_eq!(ins.evicted, Some((id(7), 2)));
        // Only Queued / Sending / Failed remain.
        let full = pool.insert(id(11), 2, OrderKey::stored(5), RECV, ());
        assert_eq!(full, Err(PoolError::Full));
        assert_eq!(pool.len(), 6);
        for n in [1, 2, 3, 8, 9, 10] {
            assert!(pool.find_id(&id(n)).is_some(), "message {n} was kept");
        }
    }

    #[test]
    fn a_message_waiting_for_an_earlier_seq_is_never_evicted() {
        let mut pool: Pool<(), 2> = Pool::new();
        pool.insert(id(1), 0, OrderKey::stored(5), MessageState::Arriving, ())
            .unwrap();
        pool.insert(id(2), 0, OrderKey::stored(1), RECV, ())
            .unwrap();
        let ins = pool
            .insert(id(3), 0, OrderKey::stored(2), RECV, ())
            .unwrap();
        assert_eq!(ins.evicted, Some((id(2), 0)));
        let full = pool.insert(id(4), 0, OrderKey::stored(3), MessageState::Arriving, ());
        assert_eq!(full.map(|i| i.evicted), Ok(Some((id(3), 0))));
        let full = pool.insert(id(5), 0, OrderKey::stored(4), RECV, ());
        assert_eq!(
            full,
            Err(PoolError::Full),
            "two arriving messages fill the pool"
        );
        pool.set_state(pool.find_id(&id(1)).unwrap(), RECV).unwrap();
        assert!(pool.insert(id(5), 0, OrderKey::stored(4), RECV, ()).is_ok());
    }

    #[test]
    fn a_refused_insert_evicts_nothing() {
        let mut pool: Pool<(), 2> = Pool::new();
        pool.insert(id(1), 0, OrderKey::stored(1), RECV, ())
            .unwrap();
        pool.insert(id(2), 0, OrderKey::stored(2), RECV, ())
            .unwrap();
        assert_eq!(
            pool.insert(id(2), 0, OrderKey::stored(3), RECV, ()),
            Err(PoolError::DuplicateId)
        );
        assert_eq!(
            pool.insert(id(3), 0, OrderKey::stored(2), RECV, ()),
            Err(PoolError::DuplicateSeq)
        );
        assert_eq!(ids(&pool, 0), vec![id(1), id(2)]);
    }

    #[test]
    fn a_message_that_becomes_evictable_joins_the_back_of_the_eviction_queue() {
        let mut pool: Pool<(), 3> = Pool::new();
        let a = pool.insert(id(1), 0, OrderKey::pending(0, 1), MessageState::Sending, ());
        let a = a.unwrap().slot;
        pool.insert(id(2), 0, OrderKey::stored(1), RECV, ())
            .unwrap();
        pool.insert(id(3), 0, OrderKey::stored(2), RECV, ())
            .unwrap();
        pool.confirm(a, 3).unwrap();
        // Staying evictable (Sent -> Delivered) keeps the place in the queue.
        pool.set_state(a, MessageState::Delivered).unwrap();
        let order: Vec<_> = (4..7)
            .map(|n| pool.insert(id(n), 0, OrderKey::stored(u64::from(n)), RECV, ()))
            .map(|r| r.unwrap().evicted.unwrap().0)
            .collect();
        assert_eq!(order, vec![id(2), id(3), id(1)]);
    }

    #[test]
    fn a_message_that_stops_being_evictable_leaves_the_eviction_queue() {
        let mut pool: Pool<(), 2> = Pool::new();
        let a = pool
            .insert(id(1), 0, OrderKey::stored(1), MessageState::Sent, ())
            .unwrap();
        pool.insert(id(2), 0, OrderKey::stored(2), RECV, ())
            .unwrap();
        pool.set_state(a.slot, MessageState::Sending).unwrap();
        let ins = pool
            .insert(id(3), 0, OrderKey::stored(3), RECV, ())
            .unwrap();
        assert_eq!(ins.evicted, Some((id(2), 0)));
        assert_eq!(
            pool.insert(id(4), 0, OrderKey::stored(4), RECV, ())
                .unwrap()
                .evicted,
            Some((id(3), 0))
        );
        assert!(pool.get(a.slot).is_some());
    }

    #[test]
    fn stale_slots_give_not_found_after_remove() {
        let mut pool: Pool<u8, 4> = Pool::new();
        let s = pool
            .insert(id(1), 0, OrderKey::stored(1), RECV, 9)
            .unwrap()
            .slot;
        let e = pool.remove(s).unwrap();
        assert_eq!((e.id, e.data), (id(1), 9));
        assert!(pool.get(s).is_none());
        assert!(pool.data_mut(s).is_none());
        assert!(pool.remove(s).is_none());
        assert_eq!(pool.set_state(s, RECV), Err(PoolError::NotFound));
        assert_eq!(pool.confirm(s, 2), Err(PoolError::NotFound));
        assert!(pool.find_id(&id(1)).is_none());
        assert!(pool.find_seq(0, 1).is_none());
        assert!(pool.is_empty());
        // The slot is reused for a new message; the old handle still misses.
        let t = pool
            .insert(id(2), 0, OrderKey::stored(1), RECV, 3)
            .unwrap()
            .slot;
        assert_ne!(s, t);
        assert!(pool.get(s).is_none());
        assert_eq!(pool.get(t).unwrap().data, 3);
    }

    #[test]
    fn stale_slots_give_not_found_after_eviction_and_reuse() {
        let mut pool: Pool<(), 1> = Pool::new();
        let s = pool
            .insert(id(1), 0, OrderKey::stored(1), RECV, ())
            .unwrap()
            .slot;
        let t = pool
            .insert(id(2), 0, OrderKey::stored(2), RECV, ())
            .unwrap();
        assert_eq!(t.evicted, Some((id(1), 0)));
        assert!(pool.get(s).is_none());
        assert_eq!(
            pool.set_state(s, MessageState::Read),
            Err(PoolError::NotFound)
        );
        assert_eq!(pool.get(t.slot).unwrap().id, id(2));
    }

    #[test]
    fn a_slot_from_a_bigger_pool_is_not_found() {
        let mut big: Pool<(), 8> = Pool::new();
        let mut small: Pool<(), 2> = Pool::new();
        let mut last = None;
        for n in 0..8 {
            last = Some(
                big.insert(id(n), 0, OrderKey::stored(u64::from(n)), RECV, ())
                    .unwrap()
                    .slot,
            );
        }
        let last = last.unwrap();
        assert!(small.get(last).is_none());
        assert!(small.remove(last).is_none());
        assert_eq!(small.confirm(last, 1), Err(PoolError::NotFound));
    }

    #[test]
    fn data_mut_changes_the_payload_only() {
        let mut pool: Pool<[u8; 4], 4> = Pool::new();
        let s = pool
            .insert(id(1), 0, OrderKey::stored(1), RECV, [0; 4])
            .unwrap()
            .slot;
        pool.data_mut(s).unwrap()[2] = 7;
        assert_eq!(pool.get(s).unwrap().data, [0, 0, 7, 0]);
    }

    #[test]
    fn clear_topic_removes_that_topic_only() {
        let mut pool: Pool<(), 16> = Pool::new();
        let mut kept = Vec::new();
        let mut gone = Vec::new();
        for n in 0..12u32 {
            let topic = (n % 3) as TopicKey;
            let s = pool
                .insert(id(n), topic, OrderKey::stored(u64::from(n)), RECV, ())
                .unwrap()
                .slot;
            if topic == 1 {
                gone.push(s)
            } else {
                kept.push(s)
            }
        }
        pool.insert(id(99), 1, OrderKey::pending(4, 1), MessageState::Queued, ())
            .unwrap();
        assert_eq!(pool.clear_topic(1), 5);
        assert_eq!(pool.clear_topic(1), 0);
        assert_eq!(pool.len(), 8);
        assert!(gone.iter().all(|&s| pool.get(s).is_none()));
        assert!(kept.iter().all(|&s| pool.get(s).is_some()));
        assert!(pool.find_id(&id(99)).is_none());
        assert!(pool.find_seq(1, 1).is_none());
        assert_eq!(pool.last_seq(1), 0);
        assert_eq!(keys(&pool, 2).len(), 4);
        // Freed slots are usable again.
        for n in 100..108 {
            pool.insert(
                id(n),
                5,
                OrderKey::stored(u64::from(n)),
                MessageState::Queued,
                (),
            )
            .unwrap();
        }
        assert_eq!(pool.len(), 16);
    }

    #[test]
    fn last_seq_is_the_highest_stored_seq_and_ignores_pending() {
        let mut pool: Pool<(), 8> = Pool::new();
        assert_eq!(pool.last_seq(0), 0);
        pool.insert(id(1), 0, OrderKey::pending(9, 1), MessageState::Queued, ())
            .unwrap();
        assert_eq!(pool.last_seq(0), 0);
        pool.insert(id(2), 0, OrderKey::stored(3), RECV, ())
            .unwrap();
        pool.insert(id(3), 0, OrderKey::stored(u64::MAX), RECV, ())
            .unwrap();
        pool.insert(id(4), 1, OrderKey::stored(u64::MAX), RECV, ())
            .unwrap();
        pool.insert(
            id(5),
            u16::MAX,
            OrderKey::pending(u64::MAX, u32::MAX),
            MessageState::Queued,
            (),
        )
        .unwrap();
        assert_eq!(pool.last_seq(0), u64::MAX);
        assert_eq!(pool.last_seq(u16::MAX), 0);
        assert_eq!(keys(&pool, u16::MAX), vec![(u64::MAX, u32::MAX)]);
    }

    #[test]
    fn iter_topic_from_starts_at_the_first_key_not_below_from() {
        let mut pool: Pool<(), 16> = Pool::new();
        for seq in [2, 4, 6] {
            pool.insert(id(seq as u32), 1, OrderKey::stored(seq), RECV, ())
                .unwrap();
            pool.insert(id(seq as u32 + 50), 0, OrderKey::stored(seq), RECV, ())
                .unwrap();
            pool.insert(id(seq as u32 + 90), 2, OrderKey::stored(seq), RECV, ())
                .unwrap();
        }
        pool.insert(
            id(100),
            1,
            OrderKey::pending(4, 1),
            MessageState::Queued,
            (),
        )
        .unwrap();
        let from = |k: OrderKey| -> Vec<(u64, u32)> {
            pool.iter_topic_from(1, k)
                .map(|(_, e)| (e.key.seq, e.key.local))
                .collect()
        };
        assert_eq!(
            from(OrderKey::stored(0)),
            vec![(2, 0), (4, 0), (4, 1), (6, 0)]
        );
        assert_eq!(from(OrderKey::stored(4)), vec![(4, 0), (4, 1), (6, 0)]);
        assert_eq!(from(OrderKey::pending(4, 1)), vec![(4, 1), (6, 0)]);
        assert_eq!(from(OrderKey::stored(5)), vec![(6, 0)]);
        assert_eq!(from(OrderKey::stored(7)), vec![]);
        assert_eq!(pool.iter_topic_from(3, OrderKey::stored(0)).count(), 0);
    }

    #[test]
    fn a_zero_capacity_pool_is_always_full() {
        let mut pool: Pool<(), 0> = Pool::new();
        assert_eq!(pool.capacity(), 0);
        assert_eq!(
            pool.insert(id(1), 0, OrderKey::stored(1), RECV, ()),
            Err(PoolError::Full)
        );
        assert!(pool.find_id(&id(1)).is_none());
        assert!(pool.find_seq(0, 1).is_none());
        assert_eq!(pool.iter_topic(0).count(), 0);
        assert_eq!(pool.clear_topic(0), 0);
    }

    static STATIC_POOL: Pool<u64, 32> = Pool::new();

    #[test]
    fn a_pool_can_be_a_static_and_starts_empty() {
        assert!(STATIC_POOL.is_empty());
        assert_eq!(STATIC_POOL.capacity(), 32);
        let p: Pool<(), 3> = Pool::default();
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn ids_that_differ_only_in_the_timestamp_are_found() {
        let mut pool: Pool<(), 256> = Pool::new();
        let mk = |n: u16| {
            let mut b = [0u8; 16];
            b[..2].copy_from_slice(&n.to_be_bytes());
            MsgId::from_bytes(b)
        };
        for n in 0..256 {
            pool.insert(mk(n), 0, OrderKey::stored(u64::from(n) + 1), RECV, ())
                .unwrap();
        }
        for n in (0..256).step_by(3) {
            let s = pool.find_id(&mk(n)).unwrap();
            assert_eq!(pool.remove(s).unwrap().id, mk(n));
        }
        for n in 0..256 {
            assert_eq!(pool.find_id(&mk(n)).is_some(), n % 3 != 0, "id {n}");
            assert_eq!(
                pool.find_seq(0, u64::from(n) + 1).is_some(),
                n % 3 != 0,
                "seq {n}"
            );
        }
    }

    #[test]
    fn states_say_what_they_owe() {
        use MessageState::*;
        let failed = Failed(FailReason::TimedOut);
        for (s, owed, evictable) in [
            (Queued, true, false),
            (Sending, true, false),
            (Sent, false, true),
            (Delivered, false, true),
            (Read, false, true),
            (failed, false, false),
            (Received, false, true),
        ] {
            assert_eq!((s.awaits_ack(), s.evictable()), (owed, evictable), "{s:?}");
        }
        assert!(OrderKey::stored(3).is_stored() && !OrderKey::pending(3, 1).is_stored());
        assert!(OrderKey::stored(3) < OrderKey::pending(3, 1));
        assert!(OrderKey::pending(3, 9) < OrderKey::stored(4));
    }

    #[test]
    fn errors_explain_themselves() {
        let all = [
            PoolError::Full,
            PoolError::DuplicateId,
            PoolError::DuplicateSeq,
            PoolError::NotFound,
        ];
        let texts: std::collections::HashSet<String> = all.iter().map(|e| e.to_string()).collect();
        assert_eq!(texts.len(), all.len());
        assert!(texts.iter().all(|t| !t.is_empty()));
    }

    // ---- model test ----

    #[derive(Clone, Debug)]
    enum Op {
        Insert {
            id: u8,
            topic: u16,
            seq: u64,
            local: u32,
            state: u8,
        },
        SetState {
            pick: usize,
            state: u8,
        },
        Confirm {
            pick: usize,
            seq: u64,
        },
        Remove {
            pick: usize,
        },
        Clear {
            topic: u16,
        },
    }

    fn state_of(n: u8) -> MessageState {
        use MessageState::*;
        match n % 8 {
            0 => Queued,
            1 => Sending,
            2 => Sent,
            3 => Delivered,
            4 => Read,
            5 => Failed(FailReason::TimedOut),
            6 => Failed(FailReason::Refused { code: 413 }),
            _ => Received,
        }
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..40, 0u16..3, 0u64..12, prop_oneof![Just(0u32), 1u32..3], any::<u8>())
                .prop_map(|(id, topic, seq, local, state)| Op::Insert { id, topic, seq, local, state }),
            2 => (any::<usize>(), any::<u8>()).prop_map(|(pick, state)| Op::SetState { pick, state }),
            2 => (any::<usize>(), 0u64..12).prop_map(|(pick, seq)| Op::Confirm { pick, seq }),
            1 => any::<usize>().prop_map(|pick| Op::Remove { pick }),
            1 => (0u16..4).prop_map(|topic| Op::Clear { topic }),
        ]
    }

    #[derive(Clone, Debug)]
    struct M {
        slot: Slot,
        entry: Entry<u32>,
        /// Arrival order in the sorted index (ties between equal keys).
        tie: u64,
        /// When it last became evictable.
        lru: Option<u64>,
    }

    #[derive(Default)]
    struct Model {
        live: Vec<M>,
        clock: u64,
    }

    impl Model {
        fn tick(&mut self) -> u64 {
            self.clock += 1;
            self.clock
        }
        fn at(&self, slot: Slot) -> Option<usize> {
            self.live.iter().position(|m| m.slot == slot)
        }
        fn holder(&self, topic: TopicKey, seq: u64) -> Option<Slot> {
            self.live
                .iter()
                .find(|m| m.entry.topic == topic && m.entry.key == OrderKey::stored(seq))
                .map(|m| m.slot)
        }
    }

    fn run<const N: usize>(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let mut pool: Pool<u32, N> = Pool::new();
        let mut model = Model::default();
        let mut issued: Vec<Slot> = Vec::new();
        for op in ops {
            let pick = |p: usize| issued.get(p % issued.len().max(1)).copied();
            match op {
                Op::Insert {
                    id: n,
                    topic,
                    seq,
                    local,
                    state,
                } => {
                    let (id, key, state) =
                        (id(u32::from(n)), OrderKey { seq, local }, state_of(state));
                    let data = model.tick() as u32;
                    let got = pool.insert(id, topic, key, state, data);
                    let expect_err = if model.live.iter().any(|m| m.entry.id == id) {
                        Some(PoolError::DuplicateId)
                    } else if key.is_stored() && model.holder(topic, seq).is_some() {
                        Some(PoolError::DuplicateSeq)
                    } else {
                        None
                    };
                    let mut evicted = None;
                    let expect_err = expect_err.or_else(|| {
                        if model.live.len() < N {
                            return None;
                        }
                        let victim = model
                            .live
                            .iter()
                            .enumerate()
                            .filter_map(|(i, m)| m.lru.map(|t| (t, i)))
                            .min()
                            .map(|(_, i)| i);
                        match victim {
                            Some(i) => {
                                let m = model.live.remove(i);
                                evicted = Some((m.entry.id, m.entry.topic));
                                None
                            }
                            None => Some(PoolError::Full),
                        }
                    });
                    match (got, expect_err) {
                        (Err(e), Some(x)) => prop_assert_eq!(e, x),
                        (Ok(ins), None) => {
                            prop_assert_eq!(ins.evicted, evicted);
                            prop_assert!(!issued.contains(&ins.slot), "slot handle reused");
                            issued.push(ins.slot);
                            let tie = model.tick();
                            let lru = state.evictable().then(|| model.tick());
                            let entry = Entry {
                                id,
                                topic,
                                key,
                                state,
                                data,
                            };
                            model.live.push(M {
                                slot: ins.slot,
                                entry,
                                tie,
                                lru,
                            });
                        }
                        (got, x) => prop_assert!(false, "insert gave {:?}, model {:?}", got, x),
                    }
                }
                Op::SetState { pick: p, state } => {
                    let Some(slot) = pick(p) else { continue };
                    let state = state_of(state);
                    let got = pool.set_state(slot, state);
                    match model.at(slot) {
                        None => prop_assert_eq!(got, Err(PoolError::NotFound)),
                        Some(i) => {
                            prop_assert_eq!(got, Ok(()));
                            let was = model.live[i].entry.state.evictable();
                            if !state.evictable() {
                                model.live[i].lru = None;
                            } else if !was {
                                model.live[i].lru = Some(model.tick());
                            }
                            model.live[i].entry.state = state;
                        }
                    }
                }
                Op::Confirm { pick: p, seq } => {
                    let Some(slot) = pick(p) else { continue };
                    let got = pool.confirm(slot, seq);
                    match model.at(slot) {
                        None => prop_assert_eq!(got, Err(PoolError::NotFound)),
                        Some(i) => {
                            let topic = model.live[i].entry.topic;
                            if model.holder(topic, seq).is_some_and(|s| s != slot) {
                                prop_assert_eq!(got, Err(PoolError::DuplicateSeq));
                                continue;
                            }
                            prop_assert_eq!(got, Ok(()));
                            let tie = model.tick();
                            let now = model.tick();
                            let m = &mut model.live[i];
                            if m.entry.key != OrderKey::stored(seq) {
                                m.tie = tie;
                            }
                            m.entry.key = OrderKey::stored(seq);
                            if !m.entry.state.evictable() {
                                m.lru = Some(now);
                            }
                            if !matches!(
                                m.entry.state,
                                MessageState::Delivered | MessageState::Read
                            ) {
                                m.entry.state = MessageState::Sent;
                            }
                        }
                    }
                }
                Op::Remove { pick: p } => {
                    let Some(slot) = pick(p) else { continue };
                    let got = pool.remove(slot);
                    match model.at(slot) {
                        None => prop_assert_eq!(got, None),
                        Some(i) => prop_assert_eq!(got, Some(model.live.remove(i).entry)),
                    }
                }
                Op::Clear { topic } => {
                    let before = model.live.len();
                    model.live.retain(|m| m.entry.topic != topic);
                    prop_assert_eq!(pool.clear_topic(topic), before - model.live.len());
                }
            }
            check(&pool, &model, &issued)?;
        }
        Ok(())
    }

    fn check<const N: usize>(
        pool: &Pool<u32, N>,
        model: &Model,
        issued: &[Slot],
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(pool.len(), model.live.len());
        for m in &model.live {
            prop_assert_eq!(pool.get(m.slot), Some(&m.entry));
            prop_assert_eq!(pool.find_id(&m.entry.id), Some(m.slot));
        }
        for s in issued {
            if model.at(*s).is_none() {
                prop_assert!(pool.get(*s).is_none());
            }
        }
        for n in 0..40 {
            let want = model
                .live
                .iter()
                .find(|m| m.entry.id == id(n))
                .map(|m| m.slot);
            prop_assert_eq!(pool.find_id(&id(n)), want);
        }
        for topic in 0..4 {
            let mut want: Vec<&M> = model
                .live
                .iter()
                .filter(|m| m.entry.topic == topic)
                .collect();
            want.sort_by_key(|m| (m.entry.key, m.tie));
            let want: Vec<Slot> = want.iter().map(|m| m.slot).collect();
            let got: Vec<Slot> = pool.iter_topic(topic).map(|(s, _)| s).collect();
            prop_assert_eq!(&got, &want);
            let mut back: Vec<Slot> = pool.iter_topic(topic).rev().map(|(s, _)| s).collect();
            back.reverse();
            prop_assert_eq!(&back, &want);
            for from in [
                OrderKey::stored(0),
                OrderKey::stored(5),
                OrderKey::pending(5, 1),
                OrderKey::stored(11),
            ] {
                let got: Vec<Slot> = pool.iter_topic_from(topic, from).map(|(s, _)| s).collect();
                let want: Vec<Slot> = want
                    .iter()
                    .copied()
                    .filter(|s| {
                        model
                            .live
                            .iter()
                            .any(|m| m.slot == *s && m.entry.key >= from)
                    })
                    .collect();
                prop_assert_eq!(got, want);
            }
            let last = model
                .live
                .iter()
                .filter(|m| m.entry.topic == topic && m.entry.key.is_stored())
                .map(|m| m.entry.key.seq)
                .max()
                .unwrap_or(0);
            prop_assert_eq!(pool.last_seq(topic), last);
            for seq in 0..12 {
                prop_assert_eq!(pool.find_seq(topic, seq), model.holder(topic, seq));
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn a_small_pool_agrees_with_a_model(ops in proptest::collection::vec(op(), 1..120)) {
            run::<6>(ops)?;
        }

        #[test]
        fn a_roomier_pool_agrees_with_a_model(ops in proptest::collection::vec(op(), 1..200)) {
            run::<24>(ops)?;
        }
    }
}
