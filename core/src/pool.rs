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

/// A free hash-table cell. Occupied cells hold `tag << 16 | slot`, and a slot is never `NIL`.
const EMPTY: u32 = u32::MAX;

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

/// Hash-table cells per pool slot. At 16 a probe's first cell is empty or the one sought about
/// 15 times in 16, so the loop's exit is predicted well. In alternating runs of the pool's
/// 8-topic insert bench, 8 cells were about 8% slower and 4 cells 25% slower, with instruction
/// counts within 5% of each other: the difference is mispredicted branches (callgrind's
/// simulation, which moves with code layout: 1.5-2.3, 2.2-3.1 and 4.9 per insert at 16, 8 and
/// 4). `small` builds keep 8, for RAM.
const CELLS_PER_SLOT: usize = if cfg!(feature = "small") { 8 } else { 16 };

/// An open-addressing table of [`CELLS_PER_SLOT`]` * N` cells, each holding a slot number and 16
/// bits of its hash (the tag). The tag alone gives a cell's home, so probing and backward-shift
/// deletion never read entries or re-hash keys; callers confirm a tag match against the entry
/// itself. (With more than 65536 cells only some cells are homes; runs get longer but stay
/// correct.)
struct Table<const N: usize>([[u32; CELLS_PER_SLOT]; N]);

impl<const N: usize> Table<N> {
    const LEN: usize = CELLS_PER_SLOT * N;

    const fn new() -> Self {
        Table([[EMPTY; CELLS_PER_SLOT]; N])
    }

    fn cells(&self) -> &[u32] {
        self.0.as_flattened()
    }

    /// The home cell of a tag (multiply-shift onto `0..LEN`).
    fn home(tag: u16) -> usize {
        ((u64::from(tag) * Self::LEN as u64) >> 16) as usize
    }

    fn next(i: usize) -> usize {
        if i + 1 >= Self::LEN { 0 } else { i + 1 }
    }

    /// The position of the first cell in `tag`'s probe run that `is` accepts.
    fn probe(&self, tag: u16, mut is: impl FnMut(u32) -> bool) -> Option<usize> {
        let cells = self.cells();
        let mut i = Self::home(tag);
        // The table is at most half full, so an empty cell always ends the probe; the bound
        // is only a guard.
        for _ in 0..Self::LEN {
            let c = *cells.get(i)?;
            if c == EMPTY {
                return None;
            }
            if is(c) {
                return Some(i);
            }
            i = Self::next(i);
        }
        None
    }

    /// The slot of the first cell with this tag whose slot `is` accepts.
    fn find(&self, tag: u16, is: impl FnMut(u16) -> bool) -> Option<u16> {
        self.find_or_vacancy(tag, is).ok()
    }

    /// [`Table::find`], or on a miss the empty cell that ended the probe: where `tag` goes
    /// ([`Table::put`]) while the table does not change.
    #[cfg_attr(not(feature = "small"), inline(always))]
    fn find_or_vacancy(&self, tag: u16, mut is: impl FnMut(u16) -> bool) -> Result<u16, usize> {
        let cells = self.cells();
        let mut i = Self::home(tag);
        for _ in 0..Self::LEN {
            let Some(&c) = cells.get(i) else { break };
            if c == EMPTY {
                return Err(i);
            }
            if (c >> 16) as u16 == tag && is(c as u16) {
                return Ok(c as u16);
            }
            i = Self::next(i);
        }
        // Not reached (the table is at most half full); `put` then files it by probing.
        Err(Self::LEN)
    }

    /// Adds `slot` under `tag` at `cell`, which [`Table::find_or_vacancy`] gave for `tag` with
    /// no change to the table since (other cells may have been added); without the probe
    /// [`Table::insert`] makes.
    #[cfg_attr(not(feature = "small"), inline(always))]
    fn put(&mut self, cell: usize, tag: u16, slot: u16) {
        match self.0.as_flattened_mut().get_mut(cell) {
            Some(c) if *c == EMPTY => *c = u32::from(tag) << 16 | u32::from(slot),
            _ => self.insert(tag, slot),
        }
    }

    /// Adds `slot` under `tag` (the caller checked it is absent; there is always room).
    fn insert(&mut self, tag: u16, slot: u16) {
        let cells = self.0.as_flattened_mut();
        let mut i = Self::home(tag);
        for _ in 0..Self::LEN {
            match cells.get_mut(i) {
                Some(c) if *c == EMPTY => {
                    *c = u32::from(tag) << 16 | u32::from(slot);
                    return;
                }
                _ => i = Self::next(i),
            }
        }
    }

    /// Removes `slot` filed under `tag`, shifting later members of its probe run back (no
    /// tombstones).
    #[cfg_attr(not(feature = "small"), inline(always))]
    fn remove(&mut self, tag: u16, slot: u16) {
        let want = u32::from(tag) << 16 | u32::from(slot);
        let Some(mut hole) = self.probe(tag, |c| c == want) else {
            return;
        };
        let cells = self.0.as_flattened_mut();
        // Cyclic distance from `a` forward to `b`.
        let dist = |a: usize, b: usize| if b >= a { b - a } else { b + Self::LEN - a };
        let mut j = hole;
        for _ in 0..Self::LEN {
            j = Self::next(j);
            let c = cells.get(j).copied().unwrap_or(EMPTY);
            if c == EMPTY {
                break;
            }
            // `c` may fill the hole if the hole lies cyclically within [home, j].
            if dist(Self::home((c >> 16) as u16), j) >= dist(hole, j) {
                if let Some(h) = cells.get_mut(hole) {
                    *h = c;
                }
                hole = j;
            }
        }
        if let Some(h) = cells.get_mut(hole) {
            *h = EMPTY;
        }
    }
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
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u32) -> MsgId {
        let mut b = [0u8; 16];
        b[12..].copy_from_slice(&n.to_be_bytes());
        MsgId::from_bytes(b)
    }

    const RECV: MessageState = MessageState::Received;

    std::thread_local! {
        /// How many shifts of the sorted index (memmove calls) this test's thread made.
        pub(super) static SHIFTS: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
        /// How many topic boundaries this test's thread searched for beyond the window around
        /// their hint.
        pub(super) static SEARCHES: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
    }

    /// The shifts of the sorted index that `f` makes.
    fn shifts_in(f: impl FnOnce()) -> usize {
        let before = SHIFTS.with(|n| n.get());
        f();
        SHIFTS.with(|n| n.get()) - before
    }

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

    /// A pool holding id 1 stored at seq 1 and then our own id 2, sending, pending after seq 1.
    fn stored_then_mine() -> (Pool<(), 16>, Slot) {
        let mut pool: Pool<(), 16> = Pool::new();
        pool.insert(id(1), 0, OrderKey::stored(1), RECV, ())
            .unwrap();
        let mine = pool.insert(id(2), 0, OrderKey::pending(1, 1), MessageState::Sending, ());
        (pool, mine.unwrap().slot)
    }

    #[test]
    fn confirm_moves_a_pending_message_to_its_real_seq() {
        let (mut pool, mine) = stored_then_mine();
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
    fn a_confirm_that_keeps_the_message_between_its_neighbours_moves_no_index_cell() {
        let (mut pool, mine) = stored_then_mine();
        pool.insert(id(3), 0, OrderKey::stored(3), RECV, ())
            .unwrap();
        for seq in 1..=2 {
            pool.insert(id(10 + seq as u32), 1, OrderKey::stored(seq), RECV, ())
                .unwrap();
        }
        assert_eq!(shifts_in(|| pool.confirm(mine, 2).unwrap()), 0);
        assert_eq!(keys(&pool, 0), vec![(1, 0), (2, 0), (3, 0)]);
        assert_eq!(ids(&pool, 0), vec![id(1), id(2), id(3)]);
        assert_eq!(pool.find_seq(0, 2), Some(mine));
        assert_eq!(keys(&pool, 1), vec![(1, 0), (2, 0)]);
    }

    #[test]
    fn a_confirm_past_later_pending_messages_moves_them_in_one_shift() {
        let (mut pool, mine) = stored_then_mine();
        let sending = MessageState::Sending;
        for n in 2..=3 {
            pool.insert(id(n + 1), 0, OrderKey::pending(1, n), sending, ())
                .unwrap();
        }
        for seq in 1..=3 {
            pool.insert(id(10 + seq as u32), 1, OrderKey::stored(seq), RECV, ())
                .unwrap();
        }
        assert_eq!(shifts_in(|| pool.confirm(mine, 2).unwrap()), 1);
        assert_eq!(keys(&pool, 0), vec![(1, 0), (1, 2), (1, 3), (2, 0)]);
        assert_eq!(ids(&pool, 0), vec![id(1), id(3), id(4), id(2)]);
        assert_eq!(keys(&pool, 1), vec![(1, 0), (2, 0), (3, 0)]);
        // The next one in line is found where the last one was, and goes last too.
        let next = pool.find_id(&id(3)).unwrap();
        pool.confirm(next, 3).unwrap();
        assert_eq!(ids(&pool, 0), vec![id(1), id(4), id(2), id(3)]);
    }

    #[test]
    fn a_requeue_to_an_earlier_key_goes_after_the_equal_keys_before_it() {
        let mut pool: Pool<(), 16> = Pool::new();
        for seq in 1..=4 {
            pool.insert(id(seq as u32), 0, OrderKey::stored(seq), RECV, ())
                .unwrap();
        }
        let sending = MessageState::Sending;
        pool.insert(id(5), 0, OrderKey::pending(2, 1), sending, ())
            .unwrap();
        let last = pool.find_id(&id(4)).unwrap();
        pool.requeue(last, OrderKey::pending(2, 1), MessageState::Queued)
            .unwrap();
        assert_eq!(ids(&pool, 0), vec![id(1), id(2), id(5), id(4), id(3)]);
        assert!(pool.find_seq(0, 4).is_none());
        // And back to a later key: after the equal one that now follows it.
        pool.requeue(last, OrderKey::stored(3), MessageState::Sent)
            .unwrap_err();
        pool.requeue(last, OrderKey::stored(5), MessageState::Sent)
            .unwrap();
        assert_eq!(ids(&pool, 0), vec![id(1), id(2), id(5), id(3), id(4)]);
    }

    #[test]
    fn evicting_the_oldest_for_a_newest_in_front_of_another_topic_keeps_both_in_order() {
        // 300 slots: a failed message and 290 seqs in topic 0, then 9 in topic 1. Each new
        // seq of topic 0 evicts the oldest evictable message: first topic 0's own oldest (the
        // entries before it and topic 1's move, not the 290 between), later topic 1's.
        let mut pool: Box<Pool<u32, 300>> = Box::default();
        let failed = MessageState::Failed(FailReason::TimedOut);
        pool.insert(id(0), 0, OrderKey::pending(0, 1), failed, 0)
            .unwrap();
        for seq in 1..=290u64 {
            pool.insert(id(seq as u32), 0, OrderKey::stored(seq), RECV, 0)
                .unwrap();
        }
        for seq in 1..=9u64 {
            pool.insert(id(1000 + seq as u32), 1, OrderKey::stored(seq), RECV, 0)
                .unwrap();
        }
        let mut t1: Vec<u64> = (1..=9).collect();
        // Enough inserts to run off the index window's end more than once.
        for seq in 291..=1200u64 {
            let got = pool.insert(id(seq as u32), 0, OrderKey::stored(seq), RECV, 0);
            let evicted = got.unwrap().evicted.unwrap();
            if evicted.1 == 1 {
                t1.remove(0);
            }
            let kept = 299 - t1.len() as u64;
            let mut want = vec![(0, 1)];
            want.extend((seq + 1 - kept..=seq).map(|s| (s, 0)));
            assert_eq!(keys(&pool, 0), want, "after seq {seq}");
            let t1_keys: Vec<(u64, u32)> = t1.iter().map(|&s| (s, 0)).collect();
            assert_eq!(keys(&pool, 1), t1_keys, "after seq {seq}");
            assert!(pool.find_seq(0, seq).is_some());
            assert!(pool.find_seq(0, seq - kept).is_none());
        }
        assert!(t1.is_empty(), "topic 1 was evicted in its turn");
    }

    /// The first `n` seqs of topic 0 whose (topic, seq) tags share seq 1's home cell in a
    /// 4-slot pool's table.
    fn seqs_sharing_a_home(n: usize) -> Vec<u64> {
        let home = |s: u64| Table::<4>::home(seq_tag(0, s));
        (1..).filter(|&s| home(s) == home(1)).take(n).collect()
    }

    #[test]
    fn a_message_filed_in_the_probe_run_its_victim_leaves_is_still_found() {
        // Five ids and five seqs whose tags share one home cell in a 4-slot pool: the fifth
        // message is filed at the end of the run of the first four, in the empty cell its
        // dedup probe ended at, and the first (evicted) leaves from the run's start, shifting
        // the others back; all must still be found.
        let home_of = |n: u32| Table::<4>::home(id_tag(&id(n)));
        let ids: Vec<u32> = (0..)
            .filter(|&n| home_of(n) == home_of(0))
            .take(5)
            .collect();
        let seqs = seqs_sharing_a_home(5);
        let mut pool: Pool<(), 4> = Pool::new();
        for (&n, &seq) in ids.iter().zip(&seqs) {
            pool.insert(id(n), 0, OrderKey::stored(seq), RECV, ())
                .unwrap();
        }
        for (&n, &seq) in ids.iter().zip(&seqs).skip(1) {
            let slot = pool.find_id(&id(n)).expect("id found");
            assert_eq!(pool.find_seq(0, seq), Some(slot), "seq {seq} found");
        }
        assert!(pool.find_id(&id(ids[0])).is_none());
        assert!(pool.find_seq(0, seqs[0]).is_none());
    }

    #[test]
    fn a_stored_message_confirmed_again_at_a_seq_in_the_same_probe_run_is_found_there() {
        // Its old (topic, seq) cell leaves the run's start before the new one is filed, so
        // the new one goes where a fresh probe ends, not where the duplicate check's ended.
        let seqs = seqs_sharing_a_home(4);
        let mut pool: Pool<(), 4> = Pool::new();
        for (n, &seq) in seqs.iter().take(3).enumerate() {
            pool.insert(id(n as u32), 0, OrderKey::stored(seq), RECV, ())
                .unwrap();
        }
        let first = pool.find_seq(0, seqs[0]).unwrap();
        pool.confirm(first, seqs[3]).unwrap();
        assert_eq!(pool.find_seq(0, seqs[3]), Some(first));
        assert!(pool.find_seq(0, seqs[0]).is_none());
        for &seq in &seqs[1..3] {
            assert!(pool.find_seq(0, seq).is_some(), "seq {seq} found");
        }
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
    fn a_conversation_running_through_a_full_pool_many_times_stays_in_order() {
        // Each insert evicts the topic's oldest message and appends the newest: the sorted
        // index slides through its window and moves back to the start again and again.
        let mut pool: Pool<u32, 8> = Pool::new();
        let failed = MessageState::Failed(FailReason::TimedOut);
        pool.insert(id(999), 2, OrderKey::pending(0, 1), failed, 0)
            .unwrap();
        for n in 1..=100u32 {
            let topic = if n % 10 == 0 { 1 } else { 2 };
            let got = pool
                .insert(
                    id(n),
                    topic,
                    OrderKey::stored(u64::from(n)),
                    MessageState::Received,
                    n,
                )
                .unwrap();
            if n > 7 {
                assert!(got.evicted.is_some(), "insert {n} evicted nothing");
            }
            // The failed message and the seven newest stay.
            let newest = n.saturating_sub(6).max(1)..=n;
            let two: Vec<u32> = pool.iter_topic(2).map(|(_, e)| e.data).collect();
            let want = [0]
                .into_iter()
                .chain(newest.clone().filter(|m| m % 10 != 0));
            assert_eq!(two, want.collect::<Vec<_>>(), "topic 2 after insert {n}");
            let one: Vec<u32> = pool.iter_topic(1).map(|(_, e)| e.data).collect();
            let want: Vec<u32> = newest.filter(|m| m % 10 == 0).collect();
            assert_eq!(one, want, "topic 1 after insert {n}");
            assert_eq!(pool.len(), (n as usize + 1).min(8));
        }
    }

    #[test]
    fn topic_boundaries_near_where_they_were_last_seen_are_counted_not_searched_for() {
        // Eight conversations at once through a full pool: every insert evicts the oldest
        // message (of any topic) and appends the newest of another, so each boundary between
        // them drifts a cell at a time.
        let mut pool: Pool<u32, 64> = Pool::new();
        let topic_of = |n: u32| (n.wrapping_mul(0x9E37_79B9) >> 29) as TopicKey;
        let mut seq = [0u64; 8];
        let mut feed = |pool: &mut Pool<u32, 64>, n: u32| {
            let t = topic_of(n);
            seq[usize::from(t)] += 1;
            pool.insert(id(n), t, OrderKey::stored(seq[usize::from(t)]), RECV, n)
                .unwrap();
        };
        for n in 0..200 {
            feed(&mut pool, n);
        }
        let before = SEARCHES.with(|n| n.get());
        for n in 200..1200 {
            feed(&mut pool, n);
        }
        assert_eq!(
            SEARCHES.with(|n| n.get()),
            before,
            "a boundary was searched for"
        );
        // And each topic still iterates exactly its own messages, oldest first.
        for t in 0..8 {
            let got: Vec<u32> = pool.iter_topic(t).map(|(_, e)| e.data).collect();
            let want: Vec<u32> = (0..1200).filter(|&n| topic_of(n) == t).collect();
            assert_eq!(got, want[want.len() - got.len()..], "topic {t}");
        }
        assert_eq!(pool.len(), 64);
    }

    #[test]
    fn a_topic_boundary_far_from_where_it_was_last_seen_is_searched_for_and_found() {
        // Topic 1 sits between topics 0 and 2; then topic 0 grows by far more than the window
        // while topic 1's start is never looked at, and then a message for topic 1 arrives.
        let mut pool: Pool<u32, 64> = Pool::new();
        for (t, n) in [(0, 0), (1, 1), (2, 2)] {
            pool.insert(id(n), t, OrderKey::stored(1), RECV, n).unwrap();
        }
        for n in 3..40 {
            pool.insert(id(n), 0, OrderKey::stored(u64::from(n)), RECV, n)
                .unwrap();
        }
        let before = SEARCHES.with(|n| n.get());
        pool.insert(id(99), 1, OrderKey::stored(2), RECV, 99)
            .unwrap();
        assert!(SEARCHES.with(|n| n.get()) > before, "the window was enough");
        let one: Vec<u32> = pool.iter_topic(1).map(|(_, e)| e.data).collect();
        assert_eq!(one, [1, 99]);
        assert_eq!(pool.iter_topic(0).count(), 38);
        assert_eq!(
            pool.iter_topic(2).map(|(_, e)| e.data).collect::<Vec<_>>(),
            [2]
        );
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
    fn eviction_finds_its_victim_behind_many_messages_that_stay_and_in_any_topic() {
        let mut pool: Pool<(), 12> = Pool::new();
        let failed = MessageState::Failed(FailReason::TimedOut);
        // Topic 5 starts with more failed messages than the victim fast path looks at.
        for n in 1..=6 {
            pool.insert(id(n), 5, OrderKey::pending(0, n), failed, ())
                .unwrap();
        }
        for (n, topic, seq) in [
            (7, 5, 1),
            (8, 9, 1),
            (9, 2, 1),
            (10, 5, 2),
            (11, 9, 2),
            (12, 2, 2),
        ] {
            pool.insert(id(n), topic, OrderKey::stored(seq), RECV, ())
                .unwrap();
        }
        let mut put = |n: u32, topic: TopicKey, key: OrderKey, state: MessageState| {
            pool.insert(id(n), topic, key, state, ()).unwrap().evicted
        };
        // The new message's topic sorts before the victim's, then after it.
        assert_eq!(put(13, 2, OrderKey::stored(3), RECV), Some((id(7), 5)));
        assert_eq!(put(14, 9, OrderKey::stored(3), RECV), Some((id(8), 9)));
        // Not the newest of its topic: it goes before the topic's last message.
        assert_eq!(put(15, 5, OrderKey::stored(1), RECV), Some((id(9), 2)));
        // A key equal to an existing one goes after it.
        let queued = MessageState::Queued;
        assert_eq!(
            put(16, 5, OrderKey::pending(0, 6), queued),
            Some((id(10), 5))
        );

        assert_eq!(ids(&pool, 2), vec![id(12), id(13)]);
        assert_eq!(ids(&pool, 9), vec![id(11), id(14)]);
        let five = [1, 2, 3, 4, 5, 6, 16, 15].map(id);
        assert_eq!(ids(&pool, 5), five.to_vec());
        for n in 1..=16 {
            let gone = [7, 8, 9, 10].contains(&n);
            assert_eq!(pool.find_id(&id(n)).is_none(), gone, "message {n}");
        }
        assert_eq!(pool.find_seq(5, 1), pool.find_id(&id(15)));
        assert!(pool.find_seq(5, 2).is_none());
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
        assert_eq!(pool.remove(s), Some((id(1), 0)));
        assert!(pool.get(s).is_none());
        assert!(pool.data_mut(s).is_none());
        assert!(pool.remove(s).is_none());
        assert_eq!(pool.set_state(s, RECV), Err(PoolError::NotFound));
        assert_eq!(pool.confirm(s, 2), Err(PoolError::NotFound));
        assert_eq!(
            pool.requeue(s, OrderKey::stored(2), RECV),
            Err(PoolError::NotFound)
        );
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

    /// A payload that records what `insert_with` handed to `fill`.
    #[derive(Debug, Default, PartialEq)]
    struct Text {
        bytes: heapless::Vec<u8, 8>,
        fills: u32,
    }

    fn fill_with(text: &[u8]) -> impl FnOnce(&mut Text) + '_ {
        move |t| {
            t.bytes.clear();
            t.bytes.extend_from_slice(text).unwrap();
            t.fills += 1;
        }
    }

    #[test]
    fn insert_with_fills_a_new_slot_from_default_and_a_reused_one_in_place() {
        let mut pool: Pool<Text, 2> = Pool::new();
        let a = pool.insert_with(id(1), 0, OrderKey::stored(1), RECV, fill_with(b"first"));
        let a = a.unwrap().slot;
        let e = pool.get(a).unwrap();
        assert_eq!(
            (e.id, e.topic, e.key, e.state),
            (id(1), 0, OrderKey::stored(1), RECV)
        );
        assert_eq!((&e.data.bytes[..], e.data.fills), (&b"first"[..], 1));
        pool.insert_with(id(2), 0, OrderKey::stored(2), RECV, fill_with(b"second"))
            .unwrap();

        // Full: the new message evicts the first and is written over its payload, which
        // `fill` sees (fills == 1 before this one) and must overwrite.
        let c = pool.insert_with(
            id(3),
            1,
            OrderKey::stored(1),
            MessageState::Queued,
            fill_with(b"3"),
        );
        let c = c.unwrap();
        assert_eq!(c.evicted, Some((id(1), 0)));
        assert_eq!(c.slot.index, a.index, "the victim's slot is reused");
        assert!(pool.get(a).is_none(), "the victim's handle is stale");
        let e = pool.get(c.slot).unwrap();
        assert_eq!((e.id, e.topic, e.state), (id(3), 1, MessageState::Queued));
        assert_eq!((&e.data.bytes[..], e.data.fills), (&b"3"[..], 2));
        assert_eq!(pool.find_id(&id(3)), Some(c.slot));
        assert_eq!(pool.find_seq(1, 1), Some(c.slot));
        assert!(pool.find_id(&id(1)).is_none());

        // A removed message's slot is reused the same way.
        pool.remove(c.slot).unwrap();
        let d = pool.insert_with(id(4), 1, OrderKey::stored(2), RECV, fill_with(b"four"));
        let d = d.unwrap();
        assert_eq!((d.slot.index, d.evicted), (c.slot.index, None));
        assert_eq!(pool.get(d.slot).unwrap().data.fills, 3);
        assert_eq!(pool.get(d.slot).unwrap().data.bytes, b"four");
    }

    #[test]
    fn a_refused_insert_with_never_calls_fill() {
        let mut pool: Pool<Text, 1> = Pool::new();
        pool.insert_with(
            id(1),
            0,
            OrderKey::pending(0, 1),
            MessageState::Sending,
            fill_with(b"x"),
        )
        .unwrap();
        let called = core::cell::Cell::new(false);
        for (n, key) in [(1, OrderKey::stored(5)), (2, OrderKey::stored(5))] {
            let got = pool.insert_with(id(n), 0, key, RECV, |_| called.set(true));
            let want = if n == 1 {
                PoolError::DuplicateId
            } else {
                PoolError::Full
            };
            assert_eq!(got, Err(want));
        }
        assert!(!called.get());
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn requeue_moves_a_failed_message_to_the_end_queued_with_its_payload_and_handle() {
        let mut pool: Pool<u32, 8> = Pool::new();
        pool.insert(id(1), 0, OrderKey::stored(1), RECV, 10)
            .unwrap();
        let mine = pool.insert(id(2), 0, OrderKey::pending(1, 1), MessageState::Sending, 20);
        let mine = mine.unwrap().slot;
        pool.set_state(mine, MessageState::Failed(FailReason::TimedOut))
            .unwrap();
        pool.insert(id(3), 0, OrderKey::stored(2), RECV, 30)
            .unwrap();
        assert_eq!(ids(&pool, 0), vec![id(1), id(2), id(3)]);

        pool.requeue(mine, OrderKey::pending(2, 1), MessageState::Queued)
            .unwrap();
        assert_eq!(ids(&pool, 0), vec![id(1), id(3), id(2)]);
        let e = pool.get(mine).unwrap();
        assert_eq!(
            (e.key, e.state, e.data),
            (OrderKey::pending(2, 1), MessageState::Queued, 20)
        );
        assert_eq!(pool.find_id(&id(2)), Some(mine));
        assert_eq!(pool.last_seq(0), 2);
    }

    #[test]
    fn requeue_to_a_held_seq_is_refused_and_a_stored_key_is_indexed() {
        let mut pool: Pool<(), 4> = Pool::new();
        let first = pool
            .insert(id(1), 0, OrderKey::stored(1), RECV, ())
            .unwrap()
            .slot;
        let s = pool
            .insert(id(2), 0, OrderKey::stored(2), RECV, ())
            .unwrap()
            .slot;
        pool.insert(id(3), 0, OrderKey::stored(3), RECV, ())
            .unwrap();
        assert_eq!(
            pool.requeue(s, OrderKey::stored(1), RECV),
            Err(PoolError::DuplicateSeq)
        );
        assert_eq!(pool.get(s).unwrap().key, OrderKey::stored(2));

        pool.requeue(first, OrderKey::stored(7), RECV).unwrap();
        assert_eq!(pool.find_seq(0, 7), Some(first));
        assert!(pool.find_seq(0, 1).is_none());
        assert_eq!(ids(&pool, 0), vec![id(2), id(3), id(1)]);
        // Requeued while evictable: it went to the back of the eviction order.
        pool.insert(id(4), 0, OrderKey::stored(4), RECV, ())
            .unwrap();
        let evicted: Vec<_> = (5..8)
            .map(|n| {
                let key = OrderKey::stored(u64::from(n) + 10);
                pool.insert(id(n), 0, key, RECV, ()).unwrap().evicted
            })
            .collect();
        assert_eq!(
            evicted,
            vec![Some((id(2), 0)), Some((id(3), 0)), Some((id(1), 0))]
        );
    }

    #[test]
    fn marks_are_the_owners_bits_cleared_on_insert_and_listed_in_order() {
        let mut pool: Pool<(), 3> = Pool::new();
        let a = pool
            .insert(id(1), 0, OrderKey::stored(1), RECV, ())
            .unwrap()
            .slot;
        let b = pool.insert(id(2), 0, OrderKey::pending(1, 1), MessageState::Sending, ());
        let b = b.unwrap().slot;
        pool.insert(id(3), 0, OrderKey::stored(2), RECV, ())
            .unwrap();
        pool.set_mark(a, true).unwrap();
        pool.set_mark(b, true).unwrap();
        let all: Vec<_> = pool.marks_from(0, OrderKey::stored(0)).collect();
        let want = vec![
            (OrderKey::stored(1), true),
            (OrderKey::pending(1, 1), true),
            (OrderKey::stored(2), false),
        ];
        assert_eq!(all, want);
        let later: Vec<_> = pool.marks_from(0, OrderKey::pending(1, 1)).collect();
        assert_eq!(later, want[1..]);
        assert_eq!(pool.marks_from(1, OrderKey::stored(0)).count(), 0);

        // The marked slot is evicted and reused: the new entry starts unmarked; the stale
        // handle sets nothing.
        let c = pool
            .insert(id(4), 0, OrderKey::stored(3), RECV, ())
            .unwrap();
        assert_eq!((c.slot.index, c.evicted), (a.index, Some((id(1), 0))));
        assert_eq!(pool.set_mark(a, true), Err(PoolError::NotFound));
        let marks: Vec<bool> = pool
            .marks_from(0, OrderKey::stored(0))
            .map(|(_, m)| m)
            .collect();
        assert_eq!(marks, vec![true, false, false]);
    }

    #[test]
    fn last_seq_looks_past_many_pending_messages() {
        let mut pool: Pool<(), 64> = Pool::new();
        pool.insert(id(1), 2, OrderKey::stored(41), RECV, ())
            .unwrap();
        for n in 1..50 {
            let key = OrderKey::pending(41, n);
            pool.insert(id(100 + n), 2, key, MessageState::Queued, ())
                .unwrap();
        }
        pool.insert(id(2), 3, OrderKey::stored(99), RECV, ())
            .unwrap();
        assert_eq!(pool.last_seq(2), 41);
        assert_eq!(pool.last_seq(3), 99);
        assert_eq!(pool.last_seq(1), 0);
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
            assert_eq!(pool.remove(s).unwrap().0, mk(n));
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
        Requeue {
            pick: usize,
            seq: u64,
            local: u32,
            state: u8,
        },
        Clear {
            topic: u16,
        },
        Mark {
            pick: usize,
            mark: bool,
        },
        /// An insert at the topic's next seq, the common case (and the index's fast path).
        Append {
            id: u8,
            topic: u16,
            state: u8,
        },
    }

    fn state_of(n: u8) -> MessageState {
        use MessageState::*;
        match n % 9 {
            0 => Queued,
            1 => Sending,
            2 => Sent,
            3 => Delivered,
            4 => Read,
            5 => Failed(FailReason::TimedOut),
            6 => Failed(FailReason::Refused { code: 413 }),
            7 => Arriving,
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
            1 => (any::<usize>(), 0u64..12, prop_oneof![Just(0u32), 1u32..3], any::<u8>())
                .prop_map(|(pick, seq, local, state)| Op::Requeue { pick, seq, local, state }),
            1 => (0u16..4).prop_map(|topic| Op::Clear { topic }),
            4 => (0u8..40, 0u16..3, any::<u8>())
                .prop_map(|(id, topic, state)| Op::Append { id, topic, state }),
            2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, mark)| Op::Mark { pick, mark }),
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
        /// The owner's bit.
        mark: bool,
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
        /// The highest stored seq of `topic`, 0 if none.
        fn last_seq(&self, topic: TopicKey) -> u64 {
            self.live
                .iter()
                .filter(|m| m.entry.topic == topic && m.entry.key.is_stored())
                .map(|m| m.entry.key.seq)
                .max()
                .unwrap_or(0)
        }
    }

    fn run<const N: usize>(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let mut pool: Pool<u32, N> = Pool::new();
        let mut model = Model::default();
        let mut issued: Vec<Slot> = Vec::new();
        for op in ops {
            let pick = |p: usize| issued.get(p % issued.len().max(1)).copied();
            let op = match op {
                Op::Append { id, topic, state } => {
                    let seq = model.last_seq(topic) + 1;
                    Op::Insert {
                        id,
                        topic,
                        seq,
                        local: 0,
                        state,
                    }
                }
                op => op,
            };
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
                    // Half the inserts move the payload in, half fill it in place.
                    let got = if n % 2 == 0 {
                        pool.insert(id, topic, key, state, data)
                    } else {
                        pool.insert_with(id, topic, key, state, |d| *d = data)
                    };
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
                                mark: false,
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
                        Some(i) => {
                            let e = model.live.remove(i).entry;
                            prop_assert_eq!(got, Some((e.id, e.topic)));
                        }
                    }
                }
                Op::Requeue {
                    pick: p,
                    seq,
                    local,
                    state,
                } => {
                    let Some(slot) = pick(p) else { continue };
                    let (key, state) = (OrderKey { seq, local }, state_of(state));
                    let got = pool.requeue(slot, key, state);
                    match model.at(slot) {
                        None => prop_assert_eq!(got, Err(PoolError::NotFound)),
                        Some(i) => {
                            let topic = model.live[i].entry.topic;
                            if key.is_stored()
                                && model.holder(topic, seq).is_some_and(|s| s != slot)
                            {
                                prop_assert_eq!(got, Err(PoolError::DuplicateSeq));
                                continue;
                            }
                            prop_assert_eq!(got, Ok(()));
                            let tie = model.tick();
                            let lru = state.evictable().then(|| model.tick());
                            let m = &mut model.live[i];
                            (m.entry.key, m.entry.state, m.tie, m.lru) = (key, state, tie, lru);
                        }
                    }
                }
                Op::Append { .. } => unreachable!("made an insert above"),
                Op::Mark { pick: p, mark } => {
                    let Some(slot) = pick(p) else { continue };
                    let got = pool.set_mark(slot, mark);
                    match model.at(slot) {
                        None => prop_assert_eq!(got, Err(PoolError::NotFound)),
                        Some(i) => {
                            prop_assert_eq!(got, Ok(()));
                            model.live[i].mark = mark;
                        }
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
                let marked = model
                    .live
                    .iter()
                    .filter(|m| m.entry.topic == topic && m.entry.key >= from)
                    .filter(|m| m.mark && m.entry.key.is_stored())
                    .count();
                prop_assert_eq!(pool.count_stored_marks_from(topic, from), marked);
                let marks = pool
                    .marks_from(topic, from)
                    .filter(|&(k, m)| m && k.is_stored());
                prop_assert_eq!(marks.count(), marked);
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
            prop_assert_eq!(pool.last_seq(topic), model.last_seq(topic));
            for seq in 0..64 {
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
