//! The topics the terminal follows with their marks ([`MarkTable`]), when that table is written
//! to storage ([`SaveBatch`]), and a compact byte form of it for boards that store bytes.
//!
//! The table is the app's own record (it lives in [`crate::Resources`] and survives sessions);
//! [`crate::Storage`] keeps a copy across power cycles. Writing flash after every message would
//! wear it out, so the copy is refreshed in batches: when [`crate::Config::save_batch`] messages
//! went unsaved, [`crate::Config::save_delay`] after the first unsaved one, and at once when the
//! set of topics changes (a consultation assigned or ended) or the terminal shuts down. A power
//! cut loses at most the unsaved tail: the gateway pushes it again after the restart, and the
//! terminal shows it once, flagged [`crate::Shown::replayed`].

use embassy_time::{Duration, Instant};
use heapless::Vec;
use kefu_core::engine::TopicName;

use crate::capacity::TABLE;
use crate::ui::Marks;

/// One followed topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// The topic.
    pub topic: TopicName,
    /// Its marks.
    pub marks: Marks,
}

/// Why a stored table could not be read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum TableError {
    /// The table already holds [`TABLE`] topics.
    Full,
    /// The bytes end before the table does.
    Truncated,
    /// Not a valid topic name, or bytes that are not a table of this version.
    Malformed,
}

impl core::fmt::Display for TableError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            TableError::Full => "table full",
            TableError::Truncated => "table bytes cut short",
            TableError::Malformed => "not a table of this version",
        })
    }
}

/// The topics the terminal follows (desk topics and consultations), at most [`TABLE`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MarkTable {
    rows: Vec<Row, TABLE>,
}

/// Version byte of [`MarkTable::encode`]'s layout.
const VERSION: u8 = 1;
/// Bytes [`MarkTable::encode`] needs at most.
pub const ENCODED_MAX: usize = 2 + TABLE * (1 + kefu_core::proto::MAX_TOPIC_LEN + 16);

impl MarkTable {
    /// An empty table.
    pub const fn new() -> Self {
        MarkTable { rows: Vec::new() }
    }

    /// The rows, in the order topics were added.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// The rows, to update their marks.
    pub(crate) fn rows_mut(&mut self) -> &mut [Row] {
        &mut self.rows
    }

    /// A topic's marks, if it is followed.
    pub fn get(&self, topic: &str) -> Option<Marks> {
        self.rows
            .iter()
            .find(|r| r.topic.as_str() == topic)
            .map(|r| r.marks)
    }

    /// Whether `topic` is followed.
    pub fn contains(&self, topic: &str) -> bool {
        self.get(topic).is_some()
    }

    /// Whether no further topic fits.
    pub fn is_full(&self) -> bool {
        self.rows.is_full()
    }

    /// Follows `topic` from `marks` (or updates its marks if it is followed already).
    pub fn set(&mut self, topic: &str, marks: Marks) -> Result<(), TableError> {
        if let Some(r) = self.rows.iter_mut().find(|r| r.topic.as_str() == topic) {
            r.marks = marks;
            return Ok(());
        }
        kefu_core::proto::check_topic(topic).map_err(|_| TableError::Malformed)?;
        let topic = TopicName::try_from(topic).map_err(|_| TableError::Malformed)?;
        self.rows
            .push(Row { topic, marks })
            .map_err(|_| TableError::Full)
    }

    /// Stops following `topic`; whether it was followed.
    pub fn remove(&mut self, topic: &str) -> bool {
        match self.rows.iter().position(|r| r.topic.as_str() == topic) {
            Some(i) => {
                self.rows.remove(i);
                true
            }
            None => false,
        }
    }

    /// Empties the table.
    pub fn clear(&mut self) {
        self.rows.clear();
    }

    /// Writes the table into `buf` (version, count, then per row: name length, name, `shown`
    /// and `read` as little-endian u64); the number of bytes, or `None` if `buf` is shorter
    /// than needed ([`ENCODED_MAX`] always fits). Integrity (a CRC, wear levelling) is the
    /// storage's job.
    pub fn encode(&self, buf: &mut [u8]) -> Option<usize> {
        let mut out = Writer { buf, at: 0 };
        out.put(&[VERSION, self.rows.len() as u8])?;
        for r in &self.rows {
            out.put(&[r.topic.len() as u8])?;
            out.put(r.topic.as_bytes())?;
            out.put(&r.marks.shown.to_le_bytes())?;
            out.put(&r.marks.read.to_le_bytes())?;
        }
        Some(out.at)
    }

    /// Reads a table written by [`MarkTable::encode`]. Never panics on any input.
    pub fn decode(bytes: &[u8]) -> Result<MarkTable, TableError> {
        let mut input = Reader { bytes };
        let [version, count] = input.take::<2>()?;
        if version != VERSION {
            return Err(TableError::Malformed);
        }
        let mut table = MarkTable::new();
        for _ in 0..count {
            let [len] = input.take::<1>()?;
            let name = input.slice(usize::from(len))?;
            let name = core::str::from_utf8(name).map_err(|_| TableError::Malformed)?;
            let shown = u64::from_le_bytes(input.take::<8>()?);
            let read = u64::from_le_bytes(input.take::<8>()?);
            table.set(name, Marks { shown, read })?;
        }
        Ok(table)
    }
}

struct Writer<'b> {
    buf: &'b mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.at.checked_add(bytes.len())?;
        self.buf.get_mut(self.at..end)?.copy_from_slice(bytes);
        self.at = end;
        Some(())
    }
}

struct Reader<'b> {
    bytes: &'b [u8],
}

impl<'b> Reader<'b> {
    fn slice(&mut self, n: usize) -> Result<&'b [u8], TableError> {
        if self.bytes.len() < n {
            return Err(TableError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn take<const K: usize>(&mut self) -> Result<[u8; K], TableError> {
        let mut out = [0u8; K];
        out.copy_from_slice(self.slice(K)?);
        Ok(out)
    }
}

/// When the table is next written: counts what went unsaved since the last write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SaveBatch {
    /// Messages (seqs) the stored copy is behind by.
    unsaved: u64,
    /// When the stored copy first fell behind; `None` while it is up to date.
    since: Option<Instant>,
    /// The set of topics changed: write at once.
    urgent: bool,
}

impl SaveBatch {
    /// Up to date.
    pub const fn new() -> Self {
        SaveBatch {
            unsaved: 0,
            since: None,
            urgent: false,
        }
    }

    /// `seqs` more messages went unsaved at `now`.
    pub fn note(&mut self, now: Instant, seqs: u64) {
        self.unsaved = self.unsaved.saturating_add(seqs.max(1));
        self.since.get_or_insert(now);
    }

    /// The set of topics changed: the next [`SaveBatch::due`] is true.
    pub fn note_urgent(&mut self, now: Instant) {
        self.urgent = true;
        self.since.get_or_insert(now);
    }

    /// Whether anything is unsaved.
    pub fn is_dirty(&self) -> bool {
        self.since.is_some()
    }

    /// Whether to write now: after `batch` unsaved messages, `delay` after the first one, or
    /// at once after a change of topics.
    pub fn due(&self, now: Instant, batch: u32, delay: Duration) -> bool {
        match self.since {
            None => false,
            Some(since) => self.urgent || self.unsaved >= u64::from(batch) || now >= since + delay,
        }
    }

    /// When [`SaveBatch::due`] turns true by itself (`None` while up to date).
    pub fn deadline(&self, delay: Duration) -> Option<Instant> {
        self.since.map(|s| s + delay)
    }

    /// The table was written.
    pub fn saved(&mut self) {
        *self = SaveBatch::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(shown: u64, read: u64) -> Marks {
        Marks { shown, read }
    }

    #[test]
    fn the_table_follows_topics_up_to_its_capacity() {
        let mut t = MarkTable::new();
        for i in 0..TABLE {
            let name = ["cnsa", "cnsb", "cnsc", "cnsd", "cnse", "cnsf"][i];
            t.set(name, m(i as u64, 0)).unwrap();
        }
        assert!(t.is_full());
        assert_eq!(t.set("cnsz", m(1, 1)), Err(TableError::Full));
        t.set("cnsa", m(7, 6)).unwrap();
        assert_eq!(t.get("cnsa"), Some(m(7, 6)), "updating a row needs no room");
        assert!(t.remove("cnsa"));
        assert!(!t.remove("cnsa"));
        assert!(!t.is_full());
        assert_eq!(t.set("bad name", m(0, 0)), Err(TableError::Malformed));
    }

    #[test]
    fn the_byte_form_round_trips_and_refuses_what_it_did_not_write() {
        let mut t = MarkTable::new();
        t.set("grpdesk", m(u64::MAX, 3)).unwrap();
        t.set("cnsq", m(12, 12)).unwrap();
        let mut buf = [0u8; ENCODED_MAX];
        let n = t.encode(&mut buf).unwrap();
        assert_eq!(MarkTable::decode(&buf[..n]), Ok(t.clone()));
        for cut in 0..n {
            assert!(MarkTable::decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
        let mut other = buf;
        other[0] = 9;
        assert_eq!(MarkTable::decode(&other[..n]), Err(TableError::Malformed));
        assert!(t.encode(&mut buf[..n - 1]).is_none(), "too short a buffer");
        assert_eq!(MarkTable::decode(&[]), Err(TableError::Truncated));
    }

    #[test]
    fn garbage_never_panics_the_decoder() {
        let mut x = 0x1234_5678_9abc_def0u64;
        for len in 0..200 {
            let bytes: std::vec::Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = MarkTable::decode(&bytes);
            let mut framed = std::vec![VERSION, 2];
            framed.extend_from_slice(&bytes);
            let _ = MarkTable::decode(&framed);
        }
    }

    #[test]
    fn saves_are_batched_by_count_and_by_time_and_topic_changes_go_at_once() {
        let t0 = Instant::from_secs(100);
        let delay = Duration::from_secs(30);
        let mut b = SaveBatch::new();
        assert!(!b.due(t0, 4, delay) && b.deadline(delay).is_none());
        for _ in 0..3 {
            b.note(t0, 1);
        }
        assert!(!b.due(t0, 4, delay), "three of four");
        assert_eq!(b.deadline(delay), Some(t0 + delay));
        b.note(t0 + Duration::from_secs(1), 1);
        assert!(b.due(t0, 4, delay), "the fourth message");
        b.saved();
        assert!(!b.is_dirty());

        b.note(t0, 1);
        assert!(!b.due(t0 + Duration::from_secs(29), 4, delay));
        assert!(
            b.due(t0 + delay, 4, delay),
            "a lone message waits at most the delay"
        );
        b.saved();

        b.note_urgent(t0);
        assert!(b.due(t0, 4, delay), "a consultation assigned or ended");
    }
}
