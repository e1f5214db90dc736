//! The pool's two hash tables (message id -> slot, (topic, seq) -> slot): open addressing with
//! linear probing and backward-shift deletion, each cell a slot number beside 16 bits of its
//! key's hash, so that neither probing nor deletion reads an entry or re-hashes a key.

/// A free hash-table cell. Occupied cells hold `tag << 16 | slot`, and a slot is never `NIL`.
pub(super) const EMPTY: u32 = u32::MAX;

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
pub(super) struct Table<const N: usize>([[u32; CELLS_PER_SLOT]; N]);

impl<const N: usize> Table<N> {
    const LEN: usize = CELLS_PER_SLOT * N;

    pub(super) const fn new() -> Self {
        Table([[EMPTY; CELLS_PER_SLOT]; N])
    }

    fn cells(&self) -> &[u32] {
        self.0.as_flattened()
    }

    /// The home cell of a tag (multiply-shift onto `0..LEN`).
    pub(super) fn home(tag: u16) -> usize {
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
    pub(super) fn find(&self, tag: u16, is: impl FnMut(u16) -> bool) -> Option<u16> {
        self.find_or_vacancy(tag, is).ok()
    }

    /// [`Table::find`], or on a miss the empty cell that ended the probe: where `tag` goes
    /// ([`Table::put`]) while the table does not change.
    #[cfg_attr(not(feature = "small"), inline(always))]
    pub(super) fn find_or_vacancy(
        &self,
        tag: u16,
        mut is: impl FnMut(u16) -> bool,
    ) -> Result<u16, usize> {
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
    pub(super) fn put(&mut self, cell: usize, tag: u16, slot: u16) {
        match self.0.as_flattened_mut().get_mut(cell) {
            Some(c) if *c == EMPTY => *c = u32::from(tag) << 16 | u32::from(slot),
            _ => self.insert(tag, slot),
        }
    }

    /// Adds `slot` under `tag` (the caller checked it is absent; there is always room).
    pub(super) fn insert(&mut self, tag: u16, slot: u16) {
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
    pub(super) fn remove(&mut self, tag: u16, slot: u16) {
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
