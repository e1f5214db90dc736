//! Message ids: 16 bytes made by the sender, laid out like a UUIDv7 (a 48-bit millisecond
//! timestamp, then random bits), written as 32 lowercase hex characters.
//!
//! An id is made once, when the user sends, and never changes across retries, reconnects or
//! resends: it is what the gateway deduplicates on. The textual form is strict (exactly 32
//! lowercase hex digits) so that one id has exactly one spelling and case variants cannot slip
//! past deduplication.

use core::fmt;

use crate::rng::Rng;

/// A 16-byte message id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MsgId([u8; 16]);

/// Why a textual message id was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum IdError {
    /// The text is not exactly 32 characters long.
    Length,
    /// A character is not one of `0-9a-f` (upper case is refused: one id, one spelling).
    Digit,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::Length => f.write_str("message id must be exactly 32 hex characters"),
            IdError::Digit => f.write_str("message id may hold only the characters 0-9 and a-f"),
        }
    }
}

impl core::error::Error for IdError {}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl MsgId {
    /// The id with the given bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        MsgId(bytes)
    }

    /// A new id for wall-clock time `unix_ms` with random bits from `rng`: 48 bits of
    /// timestamp, the UUID version nibble 7, the RFC 9562 variant bits, and 74 random bits.
    pub fn generate(unix_ms: u64, rng: &mut impl Rng) -> Self {
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&unix_ms.to_be_bytes()[2..]);
        rng.fill(&mut b[6..]);
        b[6] = 0x70 | (b[6] & 0x0f);
        b[8] = 0x80 | (b[8] & 0x3f);
        MsgId(b)
    }

    /// Like [`MsgId::generate`], but the last 4 bytes carry `tag`: a random value an engine
    /// picks once, so it can recognise ids it made itself (e.g. the echo of its own message
    /// after its pool forgot it) without remembering them. 42 random bits remain per
    /// millisecond.
    pub fn generate_tagged(unix_ms: u64, tag: u32, rng: &mut impl Rng) -> Self {
        let mut id = MsgId::generate(unix_ms, rng);
        id.0[12..].copy_from_slice(&tag.to_be_bytes());
        id
    }

    /// The last 4 bytes, read as a tag (see [`MsgId::generate_tagged`]).
    pub fn tag(&self) -> u32 {
        u32::from_be_bytes([self.0[12], self.0[13], self.0[14], self.0[15]])
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The millisecond timestamp in the first 48 bits.
    pub fn timestamp_ms(&self) -> u64 {
        let mut t = [0u8; 8];
        t[2..].copy_from_slice(&self.0[..6]);
        u64::from_be_bytes(t)
    }

    /// A well-mixed 64-bit hash of the id, for hash tables (the random half of the id).
    pub fn hash64(&self) -> u64 {
        let mut t = [0u8; 8];
        t.copy_from_slice(&self.0[8..]);
        u64::from_le_bytes(t) ^ self.timestamp_ms().wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    /// The 32 lowercase hex characters of the id, as ASCII bytes.
    pub fn to_hex(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, byte) in self.0.iter().enumerate() {
            out[2 * i] = HEX[usize::from(byte >> 4)];
            out[2 * i + 1] = HEX[usize::from(byte & 0x0f)];
        }
        out
    }

    /// Parses exactly 32 lowercase hex characters.
    pub fn parse_hex(text: &str) -> Result<Self, IdError> {
        let text = text.as_bytes();
        if text.len() != 32 {
            return Err(IdError::Length);
        }
        let mut b = [0u8; 16];
        for (i, pair) in text.chunks_exact(2).enumerate() {
            b[i] = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
        }
        Ok(MsgId(b))
    }
}

fn hex_digit(c: u8) -> Result<u8, IdError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(IdError::Digit),
    }
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.to_hex();
        // The buffer holds only ASCII hex digits, so this never fails.
        f.write_str(core::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MsgId({self})")
    }
}

impl core::str::FromStr for MsgId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        MsgId::parse_hex(s)
    }
}

/// Floats may lose signalling-NaN bits on this target (see the `Serialize` impl of [`MsgId`]).
const X87: bool = cfg!(target_arch = "x86");

/// On compact formats (postcard) an id is its 16 raw bytes; on human-readable ones (JSON) it is
/// the 32-character hex string.
///
/// The raw bytes travel as a tuple of two `f64` whose bit patterns are the two 8-byte halves:
/// postcard writes and reads an `f64` as its 8 little-endian bytes, in one piece, so the wire
/// bytes are exactly those of `[u8; 16]` (a tuple of 16 `u8`), while serde's array impls would
/// go through the serializer and the deserializer one byte at a time (16 calls each way). No
/// arithmetic touches the floats, and `from_bits`/`to_bits` round-trip every pattern, NaNs
/// included. (Other compact formats that write floats as 8 little-endian bytes, like bincode,
/// also give the raw 16 bytes; self-describing ones would write two floats.) Except on 32-bit
/// x86, where a float may pass through the x87 stack, which quiets a signalling NaN: there the
/// id goes byte by byte, as `[u8; 16]`.
impl serde::Serialize for MsgId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        if s.is_human_readable() {
            let hex = self.to_hex();
            let text = core::str::from_utf8(&hex).map_err(serde::ser::Error::custom)?;
            s.serialize_str(text)
        } else if X87 {
            serde::Serialize::serialize(&self.0, s)
        } else {
            let [low, high] = self.halves();
            let mut t = s.serialize_tuple(2)?;
            t.serialize_element(&low)?;
            t.serialize_element(&high)?;
            t.end()
        }
    }
}

impl MsgId {
    /// The two 8-byte halves as `f64` bit patterns (see the `Serialize` impl).
    fn halves(&self) -> [f64; 2] {
        let [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p] = self.0;
        [
            f64::from_bits(u64::from_le_bytes([a, b, c, d, e, f, g, h])),
            f64::from_bits(u64::from_le_bytes([i, j, k, l, m, n, o, p])),
        ]
    }

    /// The id whose halves are these `f64` bit patterns.
    fn from_halves(low: f64, high: f64) -> Self {
        let [a, b, c, d, e, f, g, h] = low.to_bits().to_le_bytes();
        let [i, j, k, l, m, n, o, p] = high.to_bits().to_le_bytes();
        MsgId([a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p])
    }
}

impl<'de> serde::Deserialize<'de> for MsgId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct HexVisitor;
        impl serde::de::Visitor<'_> for HexVisitor {
            type Value = MsgId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("32 lowercase hex characters")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<MsgId, E> {
                MsgId::parse_hex(v).map_err(E::custom)
            }
        }
        struct RawVisitor;
        impl<'de> serde::de::Visitor<'de> for RawVisitor {
            type Value = MsgId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("16 raw bytes")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<MsgId, A::Error> {
                let mut half = |i| {
                    seq.next_element::<f64>()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &self))
                };
                let low = half(0)?;
                let high = half(1)?;
                Ok(MsgId::from_halves(low, high))
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(HexVisitor)
        } else if X87 {
            <[u8; 16] as serde::Deserialize>::deserialize(d).map(MsgId)
        } else {
            d.deserialize_tuple(2, RawVisitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_id_is_its_sixteen_bytes_in_postcard(bytes in any::<[u8; 16]>()) {
            let id = MsgId::from_bytes(bytes);
            // The same bytes as serde's own `[u8; 16]`.
            let mut ours = [0u8; 16];
            let mut theirs = [0u8; 16];
            prop_assert_eq!(
                postcard::to_slice(&id, &mut ours).unwrap(),
                postcard::to_slice(&bytes, &mut theirs).unwrap()
            );
            prop_assert_eq!(postcard::from_bytes::<MsgId>(&ours), Ok(id));
        }
    }

    #[test]
    fn generated_ids_carry_their_timestamp_version_and_variant() {
        let mut rng = SplitMix64::new(1);
        let ms = 1_790_000_000_123;
        let id = MsgId::generate(ms, &mut rng);
        assert_eq!(id.timestamp_ms(), ms);
        assert_eq!(id.as_bytes()[6] >> 4, 7, "version nibble");
        assert_eq!(id.as_bytes()[8] >> 6, 0b10, "variant bits");
    }

    #[test]
    fn ids_made_in_the_same_millisecond_differ() {
        let mut rng = SplitMix64::new(2);
        let a = MsgId::generate(5, &mut rng);
        let b = MsgId::generate(5, &mut rng);
        assert_ne!(a, b);
    }

    #[test]
    fn a_tagged_id_carries_its_tag_and_stays_unique() {
        let mut rng = SplitMix64::new(3);
        let a = MsgId::generate_tagged(9, 0xDEAD_BEEF, &mut rng);
        let b = MsgId::generate_tagged(9, 0xDEAD_BEEF, &mut rng);
        assert_eq!((a.tag(), b.tag()), (0xDEAD_BEEF, 0xDEAD_BEEF));
        assert_ne!(a, b);
        assert_eq!(a.timestamp_ms(), 9);
        assert_eq!(a.as_bytes()[6] >> 4, 7);
    }

    #[test]
    fn hex_round_trips() {
        let id = MsgId::from_bytes([
            0x01, 0x9a, 0xbc, 0xde, 0xf0, 0x12, 0x73, 0x45, 0x86, 0x78, 0x9a, 0xbc, 0xde, 0xf0,
            0x00, 0xff,
        ]);
        let hex = id.to_hex();
        assert_eq!(&hex, b"019abcdef012734586789abcdef000ff");
        let text = core::str::from_utf8(&hex).unwrap();
        assert_eq!(MsgId::parse_hex(text), Ok(id));
    }

    #[test]
    fn parsing_is_strict() {
        assert_eq!(MsgId::parse_hex(""), Err(IdError::Length));
        assert_eq!(MsgId::parse_hex(&"0".repeat(31)), Err(IdError::Length));
        assert_eq!(MsgId::parse_hex(&"0".repeat(33)), Err(IdError::Length));
        assert_eq!(MsgId::parse_hex(&"A".repeat(32)), Err(IdError::Digit));
        assert_eq!(MsgId::parse_hex(&"g".repeat(32)), Err(IdError::Digit));
        assert_eq!(
            MsgId::parse_hex(&format!("{}é", "0".repeat(30))),
            Err(IdError::Digit)
        );
        assert!(MsgId::parse_hex(&"f".repeat(32)).is_ok());
    }

    #[test]
    fn postcard_carries_the_sixteen_raw_bytes() {
        let id = MsgId::from_bytes([7; 16]);
        let mut buf = [0u8; 32];
        let used = postcard::to_slice(&id, &mut buf).unwrap();
        assert_eq!(used, &[7u8; 16]);
        let back: MsgId = postcard::from_bytes(used).unwrap();
        assert_eq!(back, id);
    }

    #[test]
    fn every_bit_pattern_crosses_postcard_unchanged_even_float_nans() {
        // The halves travel as f64 bit patterns: signalling and quiet NaNs, infinities and
        // negative zero must come back bit for bit.
        let halves: [[u8; 8]; 6] = [
            0x7ff0_0000_0000_0001u64.to_le_bytes(), // signalling NaN
            0x7ff8_0000_0000_0000u64.to_le_bytes(), // quiet NaN
            0xfff7_ffff_ffff_ffffu64.to_le_bytes(), // negative signalling NaN, full payload
            0x7ff0_0000_0000_0000u64.to_le_bytes(), // infinity
            0x8000_0000_0000_0000u64.to_le_bytes(), // negative zero
            0x0000_0000_0000_0001u64.to_le_bytes(), // subnormal
        ];
        for low in halves {
            for high in halves {
                let mut bytes = [0u8; 16];
                bytes[..8].copy_from_slice(&low);
                bytes[8..].copy_from_slice(&high);
                let id = MsgId::from_bytes(bytes);
                let mut buf = [0u8; 16];
                let used = postcard::to_slice(&id, &mut buf).unwrap();
                assert_eq!(used, &bytes);
                assert_eq!(postcard::from_bytes::<MsgId>(used), Ok(id));
            }
        }
    }

    #[test]
    fn a_short_id_is_truncated_and_nothing_else_is_read() {
        let bytes: [u8; 17] = core::array::from_fn(|i| i as u8);
        for cut in 0..16 {
            assert_eq!(
                postcard::from_bytes::<MsgId>(&bytes[..cut]),
                Err(postcard::Error::DeserializeUnexpectedEnd),
                "cut at {cut}"
            );
        }
        let (id, rest) = postcard::take_from_bytes::<MsgId>(&bytes).unwrap();
        assert_eq!(id.as_bytes()[..], bytes[..16]);
        assert_eq!(rest, &[16]);
    }

    #[test]
    fn human_readable_formats_still_read_the_hex_form() {
        use serde::de::{Deserialize, IntoDeserializer, value::Error};
        let hex = "ab".repeat(16);
        let d: serde::de::value::StrDeserializer<'_, Error> = hex.as_str().into_deserializer();
        assert_eq!(MsgId::deserialize(d), Ok(MsgId::from_bytes([0xab; 16])));
    }

    #[test]
    fn display_is_the_hex_form() {
        let id = MsgId::from_bytes([0xab; 16]);
        assert_eq!(format!("{id}"), "ab".repeat(16));
        assert_eq!(format!("{id:?}"), format!("MsgId({})", "ab".repeat(16)));
    }
}
