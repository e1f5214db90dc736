//! Reconciliation checksums: a [`Digest`] summarises a run of (seq, id) pairs of a topic, so a
//! client and the gateway can tell whether their views of the last N messages agree.
//!
//! Both sides feed the same pairs in ascending seq order to a [`DigestBuilder`]. Each pair is
//! fed to a CRC-64/XZ as 24 bytes: the seq as 8 bytes little-endian, then the 16 id bytes. The
//! digest also carries the count and the first and last seq, so a mismatch can be narrowed down.
//! An empty run gives [`Digest::default()`].

use core::fmt;

use crate::id::MsgId;

/// How the digest's CRC is computed: with a 2 KiB table, or bit by bit in `small` builds (on a
/// microcontroller the table is 2% of the flash, and a digest covers a few hundred bytes when
/// the gateway asks, not every frame).
#[cfg(not(feature = "small"))]
type Table = crc::Table<1>;
#[cfg(feature = "small")]
type Table = crc::NoTable;

/// The CRC every digest uses (CRC-64/XZ).
static CRC64: crc::Crc<u64, Table> = crc::Crc::<u64, Table>::new(&crc::CRC_64_XZ);

/// Summary of a run of (seq, id) pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Digest {
    /// How many pairs were fed.
    pub count: u32,
    /// The seq of the first pair (0 if none).
    pub first_seq: u64,
    /// The seq of the last pair (0 if none).
    pub last_seq: u64,
    /// CRC-64/XZ over every pair: seq as 8 bytes little-endian, then the 16 id bytes.
    pub crc: u64,
}

/// Why a digest could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DigestError {
    /// A seq was not greater than the one before it; both sides must feed ascending seqs, or
    /// their digests would differ for the same messages.
    OutOfOrder {
        /// The seq fed before.
        prev: u64,
        /// The offending seq.
        seq: u64,
    },
    /// More than `u32::MAX` pairs were fed, so the count cannot be represented.
    TooMany,
}

impl fmt::Display for DigestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DigestError::OutOfOrder { prev, seq } => {
                write!(f, "digest seqs must ascend: {seq} after {prev}")
            }
            DigestError::TooMany => f.write_str("digest over more than u32::MAX pairs"),
        }
    }
}

impl core::error::Error for DigestError {}

/// Builds a Digest incrementally, pairs pushed in ascending seq order.
#[derive(Clone)]
pub struct DigestBuilder {
    crc: crc::Digest<'static, u64, Table>,
    count: u32,
    first_seq: u64,
    last_seq: u64,
}

impl DigestBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        DigestBuilder {
            crc: CRC64.digest(),
            count: 0,
            first_seq: 0,
            last_seq: 0,
        }
    }

    /// Adds one pair (seq as 8 bytes LE, then the 16 id bytes). Returns Err(DigestError::OutOfOrder)
    /// if seq is not greater than the previous one (both sides must feed ascending seqs).
    /// A refused pair leaves the builder unchanged.
    pub fn push(&mut self, seq: u64, id: &MsgId) -> Result<(), DigestError> {
        if self.count > 0 && seq <= self.last_seq {
            return Err(DigestError::OutOfOrder {
                prev: self.last_seq,
                seq,
            });
        }
        let count = self.count.checked_add(1).ok_or(DigestError::TooMany)?;
        if self.count == 0 {
            self.first_seq = seq;
        }
        self.crc.update(&seq.to_le_bytes());
        self.crc.update(id.as_bytes());
        self.count = count;
        self.last_seq = seq;
        Ok(())
    }

    /// How many pairs have been pushed so far.
    pub const fn count(&self) -> u32 {
        self.count
    }

    /// The digest of every pair pushed.
    pub fn finish(self) -> Digest {
        if self.count == 0 {
            return Digest::default();
        }
        Digest {
            count: self.count,
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            crc: self.crc.finalize(),
        }
    }
}

impl Default for DigestBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for DigestBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestBuilder")
            .field("count", &self.count)
            .field("first_seq", &self.first_seq)
            .field("last_seq", &self.last_seq)
            .finish_non_exhaustive()
    }
}

/// Digest of pairs from an iterator (convenience).
pub fn digest_of(pairs: impl IntoIterator<Item = (u64, MsgId)>) -> Result<Digest, DigestError> {
    let mut b = DigestBuilder::new();
    for (seq, id) in pairs {
        b.push(seq, &id)?;
    }
    Ok(b.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn id(n: u8) -> MsgId {
        let mut b = [0u8; 16];
        for (i, x) in b.iter_mut().enumerate() {
            *x = n.wrapping_mul(31).wrapping_add(i as u8);
        }
        MsgId::from_bytes(b)
    }

    fn run(seqs: &[u64]) -> Vec<(u64, MsgId)> {
        seqs.iter().map(|&s| (s, id(s as u8))).collect()
    }

    #[test]
    fn identical_inputs_give_identical_digests() {
        let a = digest_of(run(&[1, 2, 3, 7])).unwrap();
        let b = digest_of(run(&[1, 2, 3, 7])).unwrap();
        assert_eq!(a, b);
        assert_eq!((a.count, a.first_seq, a.last_seq), (4, 1, 7));
    }

    #[test]
    fn a_missing_or_extra_pair_changes_the_digest() {
        let base = digest_of(run(&[1, 2, 3, 4])).unwrap();
        let missing = digest_of(run(&[1, 2, 4])).unwrap();
        let extra = digest_of(run(&[1, 2, 3, 4, 5])).unwrap();
        assert_ne!(base.crc, missing.crc);
        assert_ne!(base, missing);
        assert_ne!(base, extra);
    }

    #[test]
    fn an_altered_id_or_seq_changes_the_crc() {
        let base = digest_of(run(&[1, 2, 3])).unwrap();
        let mut altered = run(&[1, 2, 3]);
        let mut bytes = *altered[1].1.as_bytes();
        bytes[15] ^= 1;
        altered[1].1 = MsgId::from_bytes(bytes);
        assert_ne!(base.crc, digest_of(altered).unwrap().crc);
        let shifted = [(1, id(1)), (5, id(2)), (9, id(3))];
        let same_ids = [(1, id(1)), (6, id(2)), (9, id(3))];
        assert_ne!(
            digest_of(shifted).unwrap().crc,
            digest_of(same_ids).unwrap().crc
        );
    }

    #[test]
    fn swapped_ids_change_the_crc() {
        let a = [(1, id(1)), (2, id(2))];
        let b = [(1, id(2)), (2, id(1))];
        assert_ne!(digest_of(a).unwrap().crc, digest_of(b).unwrap().crc);
    }

    #[test]
    fn reordered_or_repeated_seqs_are_refused_and_leave_the_builder_intact() {
        assert_eq!(
            digest_of(run(&[1, 3, 2])),
            Err(DigestError::OutOfOrder { prev: 3, seq: 2 })
        );
        let mut b = DigestBuilder::new();
        b.push(4, &id(4)).unwrap();
        assert_eq!(
            b.push(4, &id(9)),
            Err(DigestError::OutOfOrder { prev: 4, seq: 4 })
        );
        assert_eq!(b.count(), 1);
        assert_eq!(b.finish(), digest_of(run(&[4])).unwrap());
        let err = DigestError::OutOfOrder { prev: 3, seq: 2 };
        assert_eq!(format!("{err}"), "digest seqs must ascend: 2 after 3");
    }

    #[test]
    fn an_empty_digest_is_the_default() {
        assert_eq!(DigestBuilder::new().finish(), Digest::default());
        assert_eq!(digest_of([]).unwrap(), Digest::default());
        assert_eq!(CRC64.checksum(&[]), 0, "CRC-64/XZ of nothing is zero too");
    }

    #[test]
    fn a_two_pair_digest_matches_the_documented_byte_layout() {
        let id_a = MsgId::from_bytes([0x11; 16]);
        let id_b = MsgId::from_bytes(core::array::from_fn(|i| i as u8));
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&[7, 0, 0, 0, 0, 0, 0, 0]);
        bytes.extend_from_slice(&[0x11; 16]);
        bytes.extend_from_slice(&[0x02, 0x01, 0, 0, 0, 0, 0, 0]);
        bytes.extend_from_slice(&(0u8..16).collect::<Vec<_>>());
        let expected = crc::Crc::<u64>::new(&crc::CRC_64_XZ).checksum(&bytes);
        let d = digest_of([(7, id_a), (0x0102, id_b)]).unwrap();
        assert_eq!(
            d,
            Digest {
                count: 2,
                first_seq: 7,
                last_seq: 0x0102,
                crc: expected
            }
        );
    }

    #[test]
    fn a_digest_round_trips_through_postcard() {
        let d = digest_of(run(&[3, 4, 5])).unwrap();
        let mut buf = [0u8; 64];
        let used = postcard::to_slice(&d, &mut buf).unwrap();
        assert_eq!(postcard::from_bytes::<Digest>(used).unwrap(), d);
    }

    proptest! {
        #[test]
        fn incremental_and_one_shot_digests_agree(
            seqs in proptest::collection::btree_set(1u64..10_000, 0..50),
            split in 0usize..50,
        ) {
            let pairs: Vec<(u64, MsgId)> = seqs.iter().map(|&s| (s, id(s as u8))).collect();
            let whole = digest_of(pairs.clone()).unwrap();
            let mut b = DigestBuilder::new();
            let cut = split.min(pairs.len());
            for (s, i) in &pairs[..cut] {
                b.push(*s, i).unwrap();
            }
            let mut b = b.clone();
            for (s, i) in &pairs[cut..] {
                b.push(*s, i).unwrap();
            }
            prop_assert_eq!(b.finish(), whole);
            prop_assert_eq!(whole.count as usize, pairs.len());
        }
    }
}
