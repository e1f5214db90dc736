//! The fixed-capacity message pool: the messages a client currently knows, across topics, kept in
//! per-topic order (server seq, with virtual seqs for outgoing messages not yet stored), with O(1)
//! lookups and dedup by message id and by (topic, seq), and eviction that never drops a message
//! still owed an ack.
//!
//! # Layout
//! Everything lives in fixed arrays sized by `N` (at most 65535):
//! - the entries, one `Option<Entry<T>>` per slot, with a generation counter per slot so that a
//!   stale [`Slot`] handle never reaches a newer entry. The generation is odd while the slot is
//!   occupied and even while it is empty; an emptied slot keeps its entry (`Some`) so that the
//!   next message in it reuses the payload in place: [`Pool::insert_with`] fills it through a
//!   `&mut T` and nothing of the payload's size is moved, whatever its size (the engine's hold
//!   up to 16 KiB of content);
//! - two open-addressing hash tables (linear probing, backward-shift deletion, no tombstones):
//!   message id → slot and (topic, seq) → slot, the latter for stored keys only. They have `16N`
//!   cells (`8N` in `small` builds): the low load keeps probe runs short and their ends
//!   predictable, which measured clearly faster than `2N`, `4N` or `8N`.
//!   Each cell keeps 16 bits of its key's hash beside the slot number, which give its home cell
//!   and filter probes, so neither probing nor deletion reads entries or re-hashes keys (each
//!   slot also remembers its two tags for removal);
//! - a sorted index of (topic, slot) pairs ordered by (topic, [`OrderKey`]): topic ranges are
//!   found by bisecting it directly, keys within a topic through a per-slot array of packed sort
//!   keys. The common cases need no key bisection: a new message that is the newest of its topic
//!   goes at the end of the topic's range, and the usual eviction victim is among the first few
//!   of its topic. An eviction and the insert that caused it share one shift of the entries between
//!   the two positions (at most `4N` bytes);
//! - an intrusive doubly linked list of the evictable slots, oldest-evictable first, so that
//!   choosing a victim is O(1);
//! - a free list of empty slots (threaded through the same link array).
//!
//! Every operation is O(1) apart from the index shift (a `memmove` of at most `4N` bytes) and
//! the O(log N) bisections; nothing here panics or allocates.

use core::fmt;

use crate::id::MsgId;

mod table;

use table::Table;

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

/// "No slot": end of a list.
const NIL: u16 = u16::MAX;

/// How many of a topic's first entries are scanned for an eviction victim before bisecting.
const FRONT: usize = 4;

/// How many index cells fewer a removal and an insert must shift than one shift between their
/// positions before they are done as two (each shift is a memmove call of its own).
const SPLIT_GAIN: usize = 256;

/// A slot flag: the owner's bit.
const MARK: u8 = 1;
/// A slot flag: the slot's key is stored.
const STORED: u8 = 2;

/// How many topic boundaries the index remembers as search starts.
const HINTS: usize = 16;

/// How many index cells around a remembered topic boundary are counted before searching.
const NEAR: usize = 8;

/// `cells.copy_within(src, dest)`, skipping the `memmove` call when there is nothing to move
/// (the common eviction of a topic's oldest message and insert of its newest moves nothing).
#[cfg_attr(not(feature = "small"), inline(always))]
fn shift(cells: &mut [u32], src: core::ops::Range<usize>, dest: usize) {
    if src.start < src.end {
        #[cfg(test)]
        tests::SHIFTS.with(|n| n.set(n.get() + 1));
        cells.copy_within(src, dest);
    }
}

/// The murmur3 64-bit finaliser: spreads every input bit over the high bits the tables use.
const fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The 16 hash bits kept in the id table: they pick the home cell and filter probes.
#[inline]
fn id_tag(id: &MsgId) -> u16 {
    (mix(id.hash64()) >> 48) as u16
}

/// The 16 hash bits kept in the (topic, seq) table.
fn seq_tag(topic: TopicKey, seq: u64) -> u16 {
    (mix(seq ^ (u64::from(topic) << 48) ^ u64::from(topic)) >> 48) as u16
}

/// The packed sort key of an entry: topic, then seq, then local, compared as one integer.
const fn sort_key(topic: TopicKey, key: OrderKey) -> u128 {
    ((topic as u128) << 96) | ((key.seq as u128) << 32) | key.local as u128
}

/// An entry of the sorted index: its topic above its slot, so topic ranges bisect densely.
const fn order_entry(topic: TopicKey, index: u16) -> u32 {
    (topic as u32) << 16 | index as u32
}

const fn order_topic(o: u32) -> TopicKey {
    (o >> 16) as u16
}

const fn order_slot(o: u32) -> u16 {
    o as u16
}

/// The fixed-capacity message pool; see the [module docs](self).
pub struct Pool<T, const N: usize> {
    entries: [Option<Entry<T>>; N],
    /// Bumped each time a slot is filled or emptied (odd: occupied), so stale handles miss.
    generation: [u16; N],
    /// Packed (topic, key) of each occupied slot, by slot.
    sort: [u128; N],
    /// The id tag and (for a stored key) the (topic, seq) tag of each occupied slot, so removal
    /// needs no hashing.
    tags: [(u16, u16); N],
    /// Per slot: the owner's bit ([`Pool::set_mark`], `MARK`) and whether its key is stored
    /// (`STORED`), beside the sort keys so that [`Pool::marks_from`] and
    /// [`Pool::count_stored_marks_from`] read no entry.
    flags: [u8; N],
    /// How many occupied slots carry the owner's bit.
    marked: usize,
    /// How many occupied slots carry the owner's bit and a stored key.
    marked_stored: usize,
    /// Occupied slots as [`order_entry`]s in (topic, key) order, in a window of `2N` cells:
    /// `base..base + len` is live. A change shifts whichever side of it is shorter, so the
    /// common eviction of a topic's oldest message and insert of its newest move nothing.
    order: [[u32; 2]; N],
    base: usize,
    len: usize,
    /// Where (in the live index) the entry rekeyed last was: the next one to be confirmed
    /// is usually there. Only a hint; checked before use.
    rekey_hint: usize,
    /// Where in the index window some topic boundaries were last seen (the start of topic `t`
    /// at `t % HINTS`): the searches for topic ranges begin there.
    hints: [u32; HINTS],
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
            tags: [(0, 0); N],
            flags: [0; N],
            marked: 0,
            marked_stored: 0,
            order: [[0; 2]; N],
            base: 0,
            len: 0,
            hints: [0; HINTS],
            rekey_hint: 0,
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
    ///
    /// `data` is moved into the slot; for a large payload use [`Pool::insert_with`], which
    /// fills it in place.
    pub fn insert(
        &mut self,
        id: MsgId,
        topic: TopicKey,
        key: OrderKey,
        state: MessageState,
        data: T,
    ) -> Result<Inserted, PoolError> {
        let (index, evicted) = self.place(id, topic, key, state)?;
        let entry = Entry {
            id,
            topic,
            key,
            state,
            data,
        };
        if let Some(cell) = self.entries.get_mut(usize::from(index)) {
            *cell = Some(entry);
        }
        Ok(Inserted {
            slot: self.slot_of(index),
            evicted,
        })
    }

    /// [`Pool::insert`], with the payload filled in place: `fill` gets the slot's payload and
    /// must set all of it. That payload is whatever an earlier message left in the slot (one
    /// evicted or removed), or `T::default()` in a slot never used before; no payload is moved
    /// or returned by value, so the cost does not grow with `size_of::<T>()`. `fill` runs only
    /// when the insert succeeds.
    pub fn insert_with(
        &mut self,
        id: MsgId,
        topic: TopicKey,
        key: OrderKey,
        state: MessageState,
        fill: impl FnOnce(&mut T),
    ) -> Result<Inserted, PoolError>
    where
        T: Default,
    {
        let (index, evicted) = self.place(id, topic, key, state)?;
        if let Some(cell) = self.entries.get_mut(usize::from(index)) {
            let data = match cell {
                Some(e) => {
                    e.id = id;
                    e.topic = topic;
                    e.key = key;
                    e.state = state;
                    &mut e.data
                }
                None => {
                    let e = cell.insert(Entry {
                        id,
                        topic,
                        key,
                        state,
                        data: T::default(),
                    });
                    &mut e.data
                }
            };
            fill(data);
        }
        Ok(Inserted {
            slot: self.slot_of(index),
            evicted,
        })
    }

    /// Finds a slot for a new entry (evicting if full) and files it in every index, the
    /// slot marked occupied; the caller writes the entry itself. The checks and the eviction
    /// rule of [`Pool::insert`].
    #[cfg_attr(not(feature = "small"), inline(always))]
    fn place(
        &mut self,
        id: MsgId,
        topic: TopicKey,
        key: OrderKey,
        state: MessageState,
    ) -> Result<(u16, Option<(MsgId, TopicKey)>), PoolError> {
        let id_tag = id_tag(&id);
        // The dedup probes end at the empty cells where the new entry is filed.
        let Err(id_cell) = self.by_id.find_or_vacancy(id_tag, self.holds_id(&id)) else {
            return Err(PoolError::DuplicateId);
        };
        let k = sort_key(topic, key);
        // Pending keys are not in the (topic, seq) table: their tag is never read.
        let (seq_tag, seq_cell) = if key.is_stored() {
            let tag = seq_tag(topic, key.seq);
            match self.by_seq.find_or_vacancy(tag, self.holds_key(k)) {
                Ok(_) => return Err(PoolError::DuplicateSeq),
                Err(cell) => (tag, cell),
            }
        } else {
            (0, 0)
        };
        let mut evicted = None;
        let index = match self.alloc() {
            Some(index) => {
                let bounds = self.topic_bounds(topic, topic);
                self.remember(topic, topic, bounds);
                let to = self.insert_pos(topic, k, bounds.1);
                self.order_insert(to, order_entry(topic, index));
                self.file(index, key, (id_tag, id_cell), (seq_tag, seq_cell));
                index
            }
            None => {
                // Full: the oldest evictable message leaves the sorted index in the same
                // shift that makes room for the new one, and its slot is reused at once.
                let victim = self.lru_head;
                if victim == NIL || !self.occupied(victim) {
                    return Err(PoolError::Full);
                }
                let gone = self.topic_of(victim);
                let (lo, hi) = self.topic_bounds(gone, topic);
                self.remember(gone, topic, (lo, hi));
                let from = self.position(victim, lo).ok_or(PoolError::Full)?;
                let to = self.insert_pos(topic, k, hi);
                // Filed before the victim leaves the tables: its removal may shift the cells
                // of the same probe runs, after which the probes' empty cells could be wrong.
                // (Should the two share tag and slot, they are one cell value; either goes.)
                self.file(victim, key, (id_tag, id_cell), (seq_tag, seq_cell));
                evicted = self.vacate(victim);
                self.order_replace(from, to, order_entry(topic, victim));
                victim
            }
        };
        let i = usize::from(index);
        self.sort[i] = k;
        self.tags[i] = (id_tag, seq_tag);
        self.set_flags(i, if key.is_stored() { STORED } else { 0 });
        if state.evictable() {
            self.lru_push(index);
        }
        // Odd: occupied.
        self.generation[i] = self.generation[i].wrapping_add(1);
        Ok((index, evicted))
    }

    /// Files a new entry at `index` in the id table and, for a stored key, the (topic, seq)
    /// table, in the cells where their probes ended.
    #[cfg_attr(not(feature = "small"), inline(always))]
    fn file(&mut self, index: u16, key: OrderKey, id: (u16, usize), seq: (u16, usize)) {
        self.by_id.put(id.1, id.0, index);
        if key.is_stored() {
            self.by_seq.put(seq.1, seq.0, index);
        }
    }

    /// The entry behind a slot, or None if the slot is stale.
    pub fn get(&self, slot: Slot) -> Option<&Entry<T>> {
        let i = usize::from(slot.index);
        if *self.generation.get(i)? != slot.generation || slot.generation & 1 == 0 {
            return None;
        }
        self.entries.get(i)?.as_ref()
    }

    /// Mutable access to the payload only (key/state/id changes go through the methods below so the indexes stay right).
    pub fn data_mut(&mut self, slot: Slot) -> Option<&mut T> {
        let i = usize::from(slot.index);
        if *self.generation.get(i)? != slot.generation || slot.generation & 1 == 0 {
            return None;
        }
        self.entries.get_mut(i)?.as_mut().map(|e| &mut e.data)
    }

    /// The slot of the message with this id.
    pub fn find_id(&self, id: &MsgId) -> Option<Slot> {
        self.find_id_tagged(id, id_tag(id))
    }

    /// The slot of the stored message at (topic, seq).
    #[cfg_attr(not(feature = "small"), inline)]
    pub fn find_seq(&self, topic: TopicKey, seq: u64) -> Option<Slot> {
        let want = sort_key(topic, OrderKey::stored(seq));
        let index = self
            .by_seq
            .find(seq_tag(topic, seq), self.holds_key(want))?;
        Some(self.slot_of(index))
    }

    /// Changes a message's state (and with it whether it may be evicted). A message that stays
    /// evictable keeps its place in the eviction order; one that becomes evictable goes last.
    pub fn set_state(&mut self, slot: Slot, state: MessageState) -> Result<(), PoolError> {
        let index = self.check(slot)?;
        let e = self.entry_mut(index).ok_or(PoolError::NotFound)?;
        let was = e.state.evictable();
        e.state = state;
        match (was, state.evictable()) {
            (false, true) => self.lru_push(index),
            (true, false) => self.lru_unlink(index),
            _ => {}
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
        let want = sort_key(topic, key);
        let held = self
            .by_seq
            .find_or_vacancy(seq_tag(topic, seq), self.holds_key(want));
        let vacancy = match held {
            Ok(s) if s != index => return Err(PoolError::DuplicateSeq),
            Ok(_) => None,
            Err(cell) => Some(cell),
        };
        if old_key != key {
            self.rekey(index, topic, old_key, key, vacancy);
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

    /// Moves a message to a new place in its topic and a new state, as if it were removed and
    /// inserted again with the same id and payload: it sorts after any equal keys, and if
    /// evictable it joins the back of the eviction order. The payload stays where it is and the
    /// slot handle stays valid. DuplicateSeq if `key` is stored and another entry holds
    /// (topic, seq); NotFound for a stale slot. (The engine's resend: a failed message goes to
    /// the end of its conversation, queued again.)
    pub fn requeue(
        &mut self,
        slot: Slot,
        key: OrderKey,
        state: MessageState,
    ) -> Result<(), PoolError> {
        let index = self.check(slot)?;
        let (topic, old_key, old_state) = match self.entry(index) {
            Some(e) => (e.topic, e.key, e.state),
            None => return Err(PoolError::NotFound),
        };
        if key.is_stored()
            && self
                .find_seq(topic, key.seq)
                .is_some_and(|s| s.index != index)
        {
            return Err(PoolError::DuplicateSeq);
        }
        self.rekey(index, topic, old_key, key, None);
        if old_state.evictable() {
            self.lru_unlink(index);
        }
        if state.evictable() {
            self.lru_push(index);
        }
        if let Some(e) = self.entry_mut(index) {
            e.key = key;
            e.state = state;
        }
        Ok(())
    }

    /// Takes a message out of the pool; its slot handle goes stale. Returns its id and topic
    /// (None for a stale slot); the payload stays in the slot, to be reused by a later
    /// [`Pool::insert_with`] (or dropped by a later [`Pool::insert`] or with the pool).
    pub fn remove(&mut self, slot: Slot) -> Option<(MsgId, TopicKey)> {
        let index = self.check(slot).ok()?;
        let (lo, _) = self.topic_bounds(self.topic_of(index), 0);
        let from = self.position(index, lo)?;
        self.order_remove(from);
        let gone = self.vacate(index);
        self.free(index);
        gone
    }

    /// The topic's messages in OrderKey order.
    pub fn iter_topic(
        &self,
        topic: TopicKey,
    ) -> impl DoubleEndedIterator<Item = (Slot, &Entry<T>)> + '_ {
        let (lo, hi) = self.topic_bounds(topic, topic);
        self.iter_range(lo, hi)
    }

    /// The topic's messages with key >= from, in order (for paging / "what came after").
    pub fn iter_topic_from(
        &self,
        topic: TopicKey,
        from: OrderKey,
    ) -> impl Iterator<Item = (Slot, &Entry<T>)> + '_ {
        let (_, hi) = self.topic_bounds(topic, topic);
        let k = sort_key(topic, from);
        let lo = self.live()[..hi].partition_point(|&o| self.sort_of(order_slot(o)) < k);
        self.iter_range(lo, hi)
    }

    /// Sets the owner's bit of an entry (false after insert). The pool gives it no meaning;
    /// it is kept beside the indexes, so that [`Pool::marks_from`] can count by it without
    /// reading entries (which, with large payloads, lie pages apart). The engine marks the
    /// messages its user sent.
    pub fn set_mark(&mut self, slot: Slot, mark: bool) -> Result<(), PoolError> {
        let index = self.check(slot)?;
        let i = usize::from(index);
        if let Some(&f) = self.flags.get(i) {
            self.set_flags(i, if mark { f | MARK } else { f & !MARK });
        }
        Ok(())
    }

    /// The topic's keys with key >= from, in order, each with its entry's mark
    /// ([`Pool::set_mark`]); reads the compact indexes only, never the entries.
    pub fn marks_from(
        &self,
        topic: TopicKey,
        from: OrderKey,
    ) -> impl DoubleEndedIterator<Item = (OrderKey, bool)> + '_ {
        let (_, hi) = self.topic_bounds(topic, topic);
        let k = sort_key(topic, from);
        let lo = self.live()[..hi].partition_point(|&o| self.sort_of(order_slot(o)) < k);
        self.live().get(lo..hi).unwrap_or(&[]).iter().map(|&o| {
            let s = order_slot(o);
            let k = self.sort_of(s);
            let key = OrderKey {
                seq: (k >> 32) as u64,
                local: k as u32,
            };
            let flags = self.flags.get(usize::from(s)).copied().unwrap_or(0);
            (key, flags & MARK != 0)
        })
    }

    /// How many of the topic's entries with key >= from are stored and carry the owner's bit
    /// ([`Pool::set_mark`]): `marks_from(topic, from)` filtered to stored keys and counted,
    /// from the compact flags alone (and at once while no entry is marked).
    pub fn count_stored_marks_from(&self, topic: TopicKey, from: OrderKey) -> usize {
        if self.marked == 0 {
            return 0;
        }
        let (lo, hi) = self.topic_bounds(topic, topic);
        let k = sort_key(topic, from);
        // The topic holds every entry, all at or above `from`: the pool's own count.
        let first = self.live().first().map(|&o| self.sort_of(order_slot(o)));
        if lo == 0 && hi == self.len && first.is_some_and(|f| f >= k) {
            return self.marked_stored;
        }
        let lo = self.live()[..hi].partition_point(|&o| self.sort_of(order_slot(o)) < k);
        let flag = |o: u32| self.flags.get(usize::from(order_slot(o))).copied();
        self.live()
            .get(lo..hi)
            .unwrap_or(&[])
            .iter()
            .filter(|&&o| flag(o).unwrap_or(0) & (MARK | STORED) == MARK | STORED)
            .count()
    }

    /// Highest stored seq held for the topic (0 if none).
    pub fn last_seq(&self, topic: TopicKey) -> u64 {
        // Read from the packed sort keys, not the entries: the topic may end in many pending
        // messages (local != 0), and the keys sit together in one small array.
        let (lo, hi) = self.topic_bounds(topic, topic);
        let range = self.live().get(lo..hi).unwrap_or(&[]);
        let Some(&newest) = range.last() else {
            return 0;
        };
        // A topic that ends in pending messages `(seq, n)` holds no stored key above `seq`
        // (it would sort after them), so if it holds `seq` itself, that is the highest: one
        // hash lookup instead of a walk back over the pending messages.
        let k = self.sort_of(order_slot(newest));
        let seq = (k >> 32) as u64;
        if k as u32 == 0 || self.find_seq(topic, seq).is_some() {
            return seq;
        }
        range
            .iter()
            .rev()
            .map(|&o| self.sort_of(order_slot(o)))
            .find(|&k| k as u32 == 0)
            .map_or(0, |k| (k >> 32) as u64)
    }

    /// Removes every message of a topic (e.g. the user left it); returns how many.
    pub fn clear_topic(&mut self, topic: TopicKey) -> usize {
        let (lo, hi) = self.topic_bounds(topic, topic);
        for p in lo..hi {
            let Some(&o) = self.live().get(p) else {
                break;
            };
            let index = order_slot(o);
            self.vacate(index);
            self.free(index);
        }
        let (base, len) = (self.base, self.len);
        self.order
            .as_flattened_mut()
            .copy_within(base + hi..base + len, base + lo);
        self.len -= hi - lo;
        hi - lo
    }

    // ---- internals ----

    /// Is the slot occupied (odd generation)?
    fn occupied(&self, index: u16) -> bool {
        self.generation
            .get(usize::from(index))
            .is_some_and(|g| g & 1 == 1)
    }

    fn entry(&self, index: u16) -> Option<&Entry<T>> {
        if !self.occupied(index) {
            return None;
        }
        self.entries.get(usize::from(index))?.as_ref()
    }

    fn entry_mut(&mut self, index: u16) -> Option<&mut Entry<T>> {
        if !self.occupied(index) {
            return None;
        }
        self.entries.get_mut(usize::from(index))?.as_mut()
    }

    fn find_id_tagged(&self, id: &MsgId, tag: u16) -> Option<Slot> {
        let index = self.by_id.find(tag, self.holds_id(id))?;
        Some(self.slot_of(index))
    }

    /// Does an id table cell's slot hold this id? (One closure type for every id probe, so
    /// the probe is compiled once.)
    #[cfg_attr(not(feature = "small"), inline(always))]
    fn holds_id<'a>(&'a self, id: &'a MsgId) -> impl Fn(u16) -> bool + 'a {
        move |s| self.entry(s).is_some_and(|e| e.id == *id)
    }

    /// Does a (topic, seq) table cell's slot have this sort key? (As [`Pool::holds_id`].)
    #[cfg_attr(not(feature = "small"), inline(always))]
    fn holds_key(&self, k: u128) -> impl Fn(u16) -> bool + '_ {
        move |s| self.sort_of(s) == k
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

    /// Empties an occupied slot, taking it out of the hash tables and the eviction list (not
    /// the sorted index, nor onto the free list); its handles go stale. The entry stays in
    /// place (only the generation says the slot is empty). Its id and topic.
    #[cfg_attr(not(feature = "small"), inline(always))]
    fn vacate(&mut self, index: u16) -> Option<(MsgId, TopicKey)> {
        let i = usize::from(index);
        let e = self.entry(index)?;
        let (id, topic, stored, evictable) =
            (e.id, e.topic, e.key.is_stored(), e.state.evictable());
        let (id_tag, seq_tag) = self.tags[i];
        self.by_id.remove(id_tag, index);
        if stored {
            self.by_seq.remove(seq_tag, index);
        }
        if evictable {
            self.lru_unlink(index);
        }
        self.set_flags(i, 0);
        // Even: empty.
        self.generation[i] = self.generation[i].wrapping_add(1);
        Some((id, topic))
    }

    /// Takes an occupied slot out of the sorted index and the (topic, seq) table and files it
    /// again under `key` (after any equal keys); the caller updates the entry and the eviction
    /// list.
    ///
    /// `vacancy`: where a (topic, seq) probe for `key` ended ([`Table::find_or_vacancy`]),
    /// used when the old key is pending (so no cell moves before the new one is filed).
    fn rekey(
        &mut self,
        index: u16,
        topic: TopicKey,
        old_key: OrderKey,
        key: OrderKey,
        vacancy: Option<usize>,
    ) {
        let i = usize::from(index);
        if old_key.is_stored() {
            self.by_seq.remove(self.tags[i].1, index);
        }
        let tag = seq_tag(topic, key.seq);
        self.tags[i].1 = tag;
        if key.is_stored() {
            match vacancy {
                Some(cell) if !old_key.is_stored() => self.by_seq.put(cell, tag, index),
                _ => self.by_seq.insert(tag, index),
            }
        }
        let (lo, hi) = self.topic_bounds(topic, topic);
        self.remember(topic, topic, (lo, hi));
        let k = sort_key(topic, key);
        let flags = (self.flags[i] & MARK) | if key.is_stored() { STORED } else { 0 };
        self.set_flags(i, flags);
        // Where it goes, counted with it still in place under its old key (so the index is
        // sorted): after every key <= `k`. Usually the end of its topic (a confirmed message
        // becomes the newest), found without a bisection.
        let to = self.insert_pos(topic, k, hi);
        let from = self.position(index, lo);
        self.sort[i] = k;
        let Some(from) = from else {
            self.order_insert(to, order_entry(topic, index));
            return;
        };
        self.rekey_hint = from;
        // Between its neighbours already (the usual confirm of the oldest pending message
        // when nothing was sent after it): nothing moves.
        if to != from && to != from + 1 {
            #[cfg(not(feature = "small"))]
            self.order_move(from, to);
            #[cfg(feature = "small")]
            self.order_replace(from, to, order_entry(topic, index));
        }
    }

    /// Sets a slot's flags, keeping the counts of marked and of marked stored slots.
    fn set_flags(&mut self, i: usize, new: u8) {
        let Some(f) = self.flags.get_mut(i) else {
            return;
        };
        let old = core::mem::replace(f, new);
        let both = MARK | STORED;
        match (old & MARK != 0, new & MARK != 0) {
            (false, true) => self.marked += 1,
            (true, false) => self.marked = self.marked.saturating_sub(1),
            _ => {}
        }
        match (old & both == both, new & both == both) {
            (false, true) => self.marked_stored += 1,
            (true, false) => self.marked_stored = self.marked_stored.saturating_sub(1),
            _ => {}
        }
    }

    /// Puts an empty slot on the free list.
    fn free(&mut self, index: u16) {
        self.next[usize::from(index)] = self.free_head;
        self.free_head = index;
    }

    fn live(&self) -> &[u32] {
        self.order
            .as_flattened()
            .get(self.base..self.base + self.len)
            .unwrap_or(&[])
    }

    /// The start of topic `a`'s range and the end of topic `b`'s, each searched for outwards
    /// from where it was last remembered ([`Pool::remember`]): a change to the index moves a
    /// boundary by at most one cell, so the search usually ends within a few cells of its
    /// start, and at worst it costs two bisections.
    #[cfg_attr(not(feature = "small"), inline(always))]
    fn topic_bounds(&self, a: TopicKey, b: TopicKey) -> (usize, usize) {
        let (a, b) = (u32::from(a), u32::from(b) + 1);
        (self.topic_start(a), self.topic_start(b))
    }

    /// The first position whose topic is not below `t` (`t` may be one past the last topic).
    #[cfg_attr(not(feature = "small"), inline(always))]
    fn topic_start(&self, t: u32) -> usize {
        let live = self.live();
        let n = live.len();
        let below = |p: usize| live.get(p).is_some_and(|&o| u32::from(order_topic(o)) < t);
        // The first and the last topic (with one topic, every search) end at an end.
        if !below(0) {
            return 0;
        }
        if n == 0 || below(n - 1) {
            return n;
        }
        self.topic_search(t)
    }

    /// [`Pool::topic_start`] for a topic that is neither the first nor past the last.
    fn topic_search(&self, t: u32) -> usize {
        let live = self.live();
        let n = live.len();
        let below = |p: usize| live.get(p).is_some_and(|&o| u32::from(order_topic(o)) < t);
        let hint = self.hints[t as usize % HINTS] as usize;
        let h = hint.saturating_sub(self.base).min(n);
        // Usually the start moved only a few cells since it was remembered: inside a window
        // around the hint, it is where the cells below `t` end, counted without a branch.
        if let Some(window) = h
            .checked_sub(NEAR / 2)
            .and_then(|from| live.get(from..from + NEAR))
        {
            let below_in = window
                .iter()
                .map(|&o| usize::from(u32::from(order_topic(o)) < t))
                .sum::<usize>();
            if below_in > 0 && below_in < NEAR {
                return h - NEAR / 2 + below_in;
            }
        }
        #[cfg(test)]
        tests::SEARCHES.with(|n| n.set(n.get() + 1));
        // Bracket the answer in [lo, hi] by steps doubling away from the hint.
        let mut lo;
        let mut hi = h;
        if below(h) {
            let mut step = 1;
            lo = h + 1;
            hi = n;
            while h + step < n {
                if !below(h + step) {
                    hi = h + step;
                    break;
                }
                lo = h + step + 1;
                step *= 2;
            }
        } else {
            let mut step = 1;
            lo = 0;
            while step <= h {
                if below(h - step) {
                    lo = h - step + 1;
                    break;
                }
                hi = h - step;
                step *= 2;
            }
        }
        lo + live
            .get(lo..hi)
            .unwrap_or(&[])
            .partition_point(|&o| u32::from(order_topic(o)) < t)
    }

    /// Remembers where topic `a` starts and topic `b` ends, as the next search's start.
    fn remember(&mut self, a: TopicKey, b: TopicKey, (lo, hi): (usize, usize)) {
        // Topics `a..=b` hold every entry (with one topic, always): no search needs a start.
        // (A hint is only where a search begins; a stale one costs time, never a wrong answer.)
        if lo == 0 && hi == self.len {
            return;
        }
        let (a, b) = (usize::from(a), usize::from(b) + 1);
        self.hints[a % HINTS] = (self.base + lo) as u32;
        self.hints[b % HINTS] = (self.base + hi) as u32;
    }

    fn iter_range(
        &self,
        lo: usize,
        hi: usize,
    ) -> impl DoubleEndedIterator<Item = (Slot, &Entry<T>)> + '_ {
        self.live()
            .get(lo..hi)
            .unwrap_or(&[])
            .iter()
            .map(|&o| order_slot(o))
            .filter_map(move |s| Some((self.slot_of(s), self.entry(s)?)))
    }

    /// The topic of an occupied slot.
    fn topic_of(&self, index: u16) -> TopicKey {
        (self.sort_of(index) >> 96) as TopicKey
    }

    /// Where an occupied slot sits in the sorted index, given where its topic's range starts.
    #[cfg_attr(not(feature = "small"), inline(always))]
    fn position(&self, index: u16, lo: usize) -> Option<usize> {
        let live = self.live();
        // Fast path: among the oldest few of its topic (the usual eviction victim, behind any
        // failed or unacknowledged messages that stay in front).
        let front = live.get(lo..).unwrap_or(&[]);
        let front = front.get(..FRONT).unwrap_or(front);
        if let Some(d) = front.iter().position(|&o| order_slot(o) == index) {
            return Some(lo + d);
        }
        // Where the last rekeyed entry was: outgoing messages are confirmed oldest first, and
        // the next one sits where the last one left.
        let h = self.rekey_hint;
        if live.get(h).is_some_and(|&o| order_slot(o) == index) {
            return Some(h);
        }
        self.position_search(index)
    }

    /// [`Pool::position`] by bisection on the slot's key.
    fn position_search(&self, index: u16) -> Option<usize> {
        let k = self.sort_of(index);
        let p = self
            .live()
            .partition_point(|&o| self.sort_of(order_slot(o)) < k);
        // Among equal keys (pending messages may share one), find this slot.
        let ties = self.live().get(p..)?.iter();
        let d = ties
            .take_while(|&&o| self.sort_of(order_slot(o)) == k)
            .position(|&o| order_slot(o) == index)?;
        Some(p + d)
    }

    /// Where a new entry with sort key `k` goes in the sorted index: after every key <= `k`
    /// (ties keep arrival order), given where its topic's range ends.
    #[cfg_attr(not(feature = "small"), inline(always))]
    fn insert_pos(&self, topic: TopicKey, k: u128, hi: usize) -> usize {
        // Fast path: the topic is empty, or this is its newest message: the end of its range.
        match hi.checked_sub(1).and_then(|p| self.live().get(p)) {
            Some(&o) if order_topic(o) == topic && self.sort_of(order_slot(o)) > k => {
                self.live()[..hi].partition_point(|&o| self.sort_of(order_slot(o)) <= k)
            }
            _ => hi,
        }
    }

    /// Puts `o` at position `to`, shifting the shorter side of it outwards: the head left
    /// (if the window has room before it) or the tail right. When the window's end is reached,
    /// an insert in the back half first moves the live cells to the window's start (at most
    /// once per `N` such inserts).
    fn order_insert(&mut self, to: usize, o: u32) {
        let (base, len) = (self.base, self.len);
        if len >= N || to > len {
            return;
        }
        let cells = self.order.as_flattened_mut();
        let room_back = base + len < cells.len();
        if base > 0 && to < len - to {
            shift(cells, base..base + to, base - 1);
            cells[base - 1 + to] = o;
            self.base = base - 1;
        } else {
            let base = if room_back {
                base
            } else {
                shift(cells, base..base + len, 0);
                0
            };
            shift(cells, base + to..base + len, base + to + 1);
            cells[base + to] = o;
            self.base = base;
        }
        self.len = len + 1;
    }

    /// Drops position `from`, shifting the shorter side of it inwards.
    fn order_remove(&mut self, from: usize) {
        let (base, len) = (self.base, self.len);
        if from >= len {
            return;
        }
        let cells = self.order.as_flattened_mut();
        if from < len - 1 - from {
            shift(cells, base..base + from, base + 1);
            self.base = base + 1;
        } else {
            shift(cells, base + from + 1..base + len, base + from);
        }
        self.len = len - 1;
    }

    /// Drops position `from` and puts `o` at position `to` (counted with `from` still present).
    /// When `from` comes first and the entries outside the two are far fewer than those between,
    /// those before `from` move up one and those from `to` on move up one (the window's start
    /// moves up): the usual eviction of a topic's oldest message and append of its newest moves
    /// nothing at all. Otherwise [`Pool::order_replace_between`].
    #[cfg_attr(not(feature = "small"), inline(always))]
    fn order_replace(&mut self, from: usize, to: usize, o: u32) {
        let (base, len) = (self.base, self.len);
        if cfg!(not(feature = "small"))
            && from < to
            && to <= len
            && from + (len - to) + SPLIT_GAIN < to - from
        {
            let cells = self.order.as_flattened_mut();
            // At the window's end, the live cells first move to its start (at most once per
            // `N` such replacements).
            let base = if base + len < cells.len() {
                base
            } else {
                shift(cells, base..base + len, 0);
                0
            };
            shift(cells, base..base + from, base + 1);
            shift(cells, base + to..base + len, base + to + 1);
            cells[base + to] = o;
            self.base = base + 1;
            return;
        }
        self.order_replace_between(from, to, o);
    }

    /// [`Pool::order_replace`]'s general case: drops position `from` and puts `o` at position `to`:
    /// by shifting only the entries between the two, or, where that is longer, as a removal
    /// and an insert that each shift their shorter side.
    fn order_replace_between(&mut self, from: usize, to: usize, o: u32) {
        let len = self.len;
        if from >= len || to > len {
            return;
        }
        let between = from.abs_diff(to);
        let after = if from < to { to - 1 } else { to };
        let apart = from.min(len - 1 - from) + after.min(len - 1 - after);
        // Two shifts cost two memmove calls: worth it only when they move far fewer cells.
        if apart + SPLIT_GAIN < between {
            self.order_remove(from);
            self.order_insert(after, o);
            return;
        }
        self.slide(from, to, o);
    }

    /// Moves the entry at position `from` to position `to` (counted with it still at `from`)
    /// in one shift of the entries between the two.
    #[cfg(not(feature = "small"))]
    #[inline(always)]
    fn order_move(&mut self, from: usize, to: usize) {
        if let Some(&o) = self.live().get(from)
            && to <= self.len
        {
            self.slide(from, to, o);
        }
    }

    /// Drops position `from` and puts `o` at position `to` (both in range, `to` counted with
    /// `from` still there) by shifting the entries between the two by one.
    #[cfg_attr(not(feature = "small"), inline(always))]
    fn slide(&mut self, from: usize, to: usize, o: u32) {
        let base = self.base;
        let cells = self.order.as_flattened_mut();
        if from < to {
            shift(cells, base + from + 1..base + to, base + from);
            cells[base + to - 1] = o;
        } else {
            shift(cells, base + to..base + from, base + to + 1);
            cells[base + to] = o;
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
mod tests;
