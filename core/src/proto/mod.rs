//! The packet set: typed client and server packets, encoded with postcard, decoded as borrowed
//! views that copy nothing out of the frame.
//!
//! [`encode_client`] / [`encode_server`] write one whole frame (see [`crate::frame`]);
//! [`decode_client`] / [`decode_server`] parse a frame body. Decoding rejects truncated bodies,
//! unknown packet kinds, invalid UTF-8 and trailing bytes with a [`CodecError`]; it never panics.
//! The exact byte layout of every packet is written down in `docs/PROTOCOL.md`.

mod client;
mod code;
mod server;

pub use client::*;
pub use code::Code;
pub use server::*;

use core::fmt;

use crate::frame::{self, EncodeError, FrameError};

/// The protocol version this core speaks, sent in `hi`.
pub const PROTOCOL_VERSION: u16 = 1;

/// Longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 64;

/// Why a packet could not be encoded or decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum CodecError {
    /// The output buffer is too small for the frame.
    BufferTooSmall,
    /// The body ended in the middle of a packet.
    Truncated,
    /// The body is not a valid packet: unknown kind, bad varint, invalid UTF-8 or enum tag.
    Malformed,
    /// A whole packet was read but bytes were left over.
    TrailingBytes,
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CodecError::BufferTooSmall => "output buffer too small for the frame",
            CodecError::Truncated => "packet truncated",
            CodecError::Malformed => "malformed packet",
            CodecError::TrailingBytes => "trailing bytes after the packet",
        })
    }
}

impl core::error::Error for CodecError {}

impl CodecError {
    /// The `ctrl` code a gateway answers this decoding error with.
    pub const fn code(self) -> Code {
        Code::MALFORMED
    }
}

impl From<postcard::Error> for CodecError {
    fn from(e: postcard::Error) -> Self {
        match e {
            postcard::Error::DeserializeUnexpectedEnd => CodecError::Truncated,
            postcard::Error::SerializeBufferFull => CodecError::BufferTooSmall,
            _ => CodecError::Malformed,
        }
    }
}

/// Writes a byte field with `serialize_bytes`: the same bytes on the wire as serde's default for
/// `&[u8]` (a sequence: postcard's varint length, then the bytes; a JSON array of numbers), but
/// postcard copies it in one go instead of one `u8` at a time. Decoding already reads it as
/// borrowed bytes. (Not in the `small` build, where flash is dearer than cycles.)
#[cfg(not(feature = "small"))]
fn bytes<S: serde::Serializer>(b: &&[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(b)
}

/// Reads a text field: the same bytes as serde's `&str` (postcard's varint length, then UTF-8;
/// a JSON string), and the same strictness (invalid UTF-8 is refused), but an empty field is
/// `""` at once instead of a trip through `from_utf8` (most `mime` and `text` fields are empty).
/// On compact formats it asks for borrowed bytes and validates them itself. (Not in the `small`
/// build, where flash is dearer than cycles.)
#[cfg(not(feature = "small"))]
#[inline(always)]
fn text<'de: 'a, 'a, D: serde::Deserializer<'de>>(d: D) -> Result<&'a str, D::Error> {
    struct Text;
    impl<'de> serde::de::Visitor<'de> for Text {
        type Value = &'de str;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a borrowed UTF-8 string")
        }
        fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<&'de str, E> {
            Ok(v)
        }
        fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<&'de str, E> {
            if v.is_empty() {
                return Ok("");
            }
            core::str::from_utf8(v)
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Bytes(v), &self))
        }
    }
    if d.is_human_readable() {
        d.deserialize_str(Text)
    } else {
        d.deserialize_bytes(Text)
    }
}

/// postcard's slice output, except that a one-byte slice (most varints: postcard writes each
/// as a slice of 1 to 10 bytes) is stored as one byte, not through a `memcpy` call. Callgrind
/// on `examples/engine_instructions`: 7,217 -> 7,138 instructions per message, and the
/// simulated branch mispredictions (most in `memcpy`'s dispatch on the length) 43 -> 28.
/// (Not in `small` builds: 120 bytes of flash.)
struct Out<'a>(postcard::ser_flavors::Slice<'a>);

impl<'a> postcard::ser_flavors::Flavor for Out<'a> {
    type Output = &'a mut [u8];

    #[inline(always)]
    fn try_push(&mut self, b: u8) -> postcard::Result<()> {
        self.0.try_push(b)
    }

    #[inline(always)]
    fn try_extend(&mut self, b: &[u8]) -> postcard::Result<()> {
        match b {
            [x] if cfg!(not(feature = "small")) => self.0.try_push(*x),
            _ => self.0.try_extend(b),
        }
    }

    fn finalize(self) -> postcard::Result<Self::Output> {
        self.0.finalize()
    }
}

/// Writes `packet`'s postcard body into `out`; its length.
fn encode_body<T: serde::Serialize>(packet: &T, out: &mut [u8]) -> postcard::Result<usize> {
    postcard::serialize_with_flavor(packet, Out(postcard::ser_flavors::Slice::new(out)))
        .map(|written: &mut [u8]| written.len())
}

fn encode_frame<T: serde::Serialize>(packet: &T, out: &mut [u8]) -> Result<usize, CodecError> {
    frame::encode_frame_with(out, |body| encode_body(packet, body)).map_err(|e| match e {
        EncodeError::Frame(FrameError::BufferTooSmall { .. }) => CodecError::BufferTooSmall,
        EncodeError::Frame(_) => CodecError::Malformed,
        EncodeError::Body(e) => CodecError::from(e),
    })
}

fn decode_body<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, CodecError> {
    let (packet, rest) = postcard::take_from_bytes(body)?;
    if rest.is_empty() {
        Ok(packet)
    } else {
        Err(CodecError::TrailingBytes)
    }
}

/// Writes `packet` as one frame into `out`; returns the frame length.
pub fn encode_client(packet: &ClientPacket<'_>, out: &mut [u8]) -> Result<usize, CodecError> {
    encode_frame(packet, out)
}

/// Writes `packet` as one frame into `out`; returns the frame length.
pub fn encode_server(packet: &ServerPacket<'_>, out: &mut [u8]) -> Result<usize, CodecError> {
    encode_frame(packet, out)
}

/// Writes only the postcard body of `packet` (no frame) into `out`; returns its length.
pub fn encode_client_body(packet: &ClientPacket<'_>, out: &mut [u8]) -> Result<usize, CodecError> {
    Ok(encode_body(packet, out)?)
}

/// Writes only the postcard body of `packet` (no frame) into `out`; returns its length.
pub fn encode_server_body(packet: &ServerPacket<'_>, out: &mut [u8]) -> Result<usize, CodecError> {
    Ok(encode_body(packet, out)?)
}

/// Parses a frame body as a client packet, borrowing from `body`.
pub fn decode_client(body: &[u8]) -> Result<ClientPacket<'_>, CodecError> {
    decode_body(body)
}

/// Parses a frame body as a server packet, borrowing from `body`.
pub fn decode_server(body: &[u8]) -> Result<ServerPacket<'_>, CodecError> {
    decode_body(body)
}

/// Checks the version a client sent in `hi`: [`Code::VERSION_NOT_SUPPORTED`] for any other than
/// [`PROTOCOL_VERSION`].
pub const fn check_version(ver: u16) -> Result<(), Code> {
    if ver == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(Code::VERSION_NOT_SUPPORTED)
    }
}

/// Checks a topic name: 1 to [`MAX_TOPIC_LEN`] bytes of ASCII letters, digits, `_` and `-`.
pub fn check_topic(topic: &str) -> Result<(), Code> {
    let ok = !topic.is_empty()
        && topic.len() <= MAX_TOPIC_LEN
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok { Ok(()) } else { Err(Code::MALFORMED) }
}

#[cfg(test)]
mod vectors;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_pub_round_trips_through_a_frame_without_copying_its_content() {
        let content = b"hello, customer";
        let p = ClientPacket::Pub(Pub {
            id: 7,
            topic: "cnsabc",
            msg_id: crate::id::MsgId::from_bytes([9; 16]),
            head: Head::default(),
            content,
        });
        let mut buf = [0u8; 128];
        let n = encode_client(&p, &mut buf).unwrap();
        let (body, used) = frame::decode_frame(&buf[..n], 1024).unwrap();
        assert_eq!(used, n);
        let back = decode_client(body).unwrap();
        assert_eq!(back, p);
        let ClientPacket::Pub(view) = back else {
            panic!("not a pub")
        };
        // The content is a view into the frame buffer, not a copy.
        let start = body.as_ptr() as usize;
        let at = view.content.as_ptr() as usize;
        assert!(at >= start && at + view.content.len() <= start + body.len());
    }

    #[test]
    fn decoding_refuses_truncated_unknown_and_trailing_input() {
        let mut body = [0u8; 64];
        let n = encode_client_body(
            &ClientPacket::Ack(Ack {
                topic: "grp1",
                seq: 300,
            }),
            &mut body,
        )
        .unwrap();
        for cut in 0..n {
            assert_eq!(
                decode_client(&body[..cut]),
                Err(CodecError::Truncated),
                "cut at {cut}"
            );
        }
        let mut long = body;
        long[n] = 0;
        assert_eq!(
            decode_client(&long[..n + 1]),
            Err(CodecError::TrailingBytes)
        );
        assert_eq!(
            decode_client(&[99]),
            Err(CodecError::Malformed),
            "unknown packet kind"
        );
        assert_eq!(
            decode_server(&[5]),
            Err(CodecError::Malformed),
            "unknown packet kind"
        );
        // A string with invalid UTF-8: ack { topic: [0xff], seq: 1 }
        assert_eq!(decode_client(&[11, 1, 0xff, 1]), Err(CodecError::Malformed));
    }

    #[test]
    fn every_text_field_refuses_invalid_utf8_and_reads_empty_text() {
        // Each packet carries "é" (c3 a9) in exactly one text field, the others empty.
        let id = crate::id::MsgId::from_bytes([0; 16]);
        let data = |topic, from, mime| {
            ServerPacket::Data(Data {
                topic,
                seq: 1,
                msg_id: id,
                from,
                ts: 2,
                head: Head {
                    mime,
                    reply_to: None,
                },
                content: b"",
            })
        };
        let ctrl = |text, topic| {
            ServerPacket::Ctrl(Ctrl {
                id: 1,
                code: Code::OK,
                text,
                topic,
                params: CtrlParams::None,
            })
        };
        let publ = |topic, mime| {
            ClientPacket::Pub(Pub {
                id: 1,
                topic,
                msg_id: id,
                head: Head {
                    mime,
                    reply_to: None,
                },
                content: b"",
            })
        };
        let servers = [
            data("é", "", ""),
            data("", "é", ""),
            data("", "", "é"),
            ctrl("é", ""),
            ctrl("", "é"),
        ];
        let clients = [publ("é", ""), publ("", "é")];
        fn check(body: &mut [u8], decode: &dyn Fn(&[u8]) -> Result<(), CodecError>) {
            assert_eq!(decode(body), Ok(()), "the packet itself reads back");
            let at = body.windows(2).position(|w| w == "é".as_bytes()).unwrap();
            for cut in 0..body.len() {
                assert_eq!(
                    decode(&body[..cut]),
                    Err(CodecError::Truncated),
                    "cut at {cut}"
                );
            }
            for bad in [[0xff, 0xff], [0xc3, 0x28], [0xa9, 0xc3]] {
                body[at..at + 2].copy_from_slice(&bad);
                assert_eq!(decode(body), Err(CodecError::Malformed), "{bad:x?} at {at}");
            }
        }
        let mut buf = [0u8; 64];
        for p in servers {
            let n = encode_server_body(&p, &mut buf).unwrap();
            assert_eq!(decode_server(&buf[..n]), Ok(p));
            check(&mut buf[..n], &|b| decode_server(b).map(drop));
        }
        for p in clients {
            let n = encode_client_body(&p, &mut buf).unwrap();
            assert_eq!(decode_client(&buf[..n]), Ok(p));
            check(&mut buf[..n], &|b| decode_client(b).map(drop));
        }
    }

    #[test]
    fn a_too_small_buffer_is_an_error_not_a_panic() {
        // note{topic "grp1", kp, 0}: an 8-byte body plus 11 bytes of framing.
        let p = ClientPacket::Note(Note {
            topic: "grp1",
            what: NoteWhat::Kp,
            seq: 0,
        });
        let mut buf = [0u8; 32];
        for size in 0..19 {
            assert_eq!(
                encode_client(&p, &mut buf[..size]),
                Err(CodecError::BufferTooSmall),
                "size {size}"
            );
        }
        assert_eq!(encode_client(&p, &mut buf[..19]), Ok(19));
    }

    #[test]
    fn versions_and_topic_names_are_checked() {
        assert_eq!(check_version(PROTOCOL_VERSION), Ok(()));
        assert_eq!(check_version(0), Err(Code::VERSION_NOT_SUPPORTED));
        assert_eq!(check_version(2), Err(Code::VERSION_NOT_SUPPORTED));
        assert_eq!(check_topic("usrAlice_2-x"), Ok(()));
        assert_eq!(check_topic(""), Err(Code::MALFORMED));
        assert_eq!(check_topic("a b"), Err(Code::MALFORMED));
        assert_eq!(check_topic(&"t".repeat(65)), Err(Code::MALFORMED));
    }

    #[test]
    fn request_ids_names_and_topics_are_exposed() {
        let p = ClientPacket::Get(Get {
            id: 4,
            topic: "me",
            what: GetWhat::Subs,
        });
        assert_eq!(
            (p.req_id(), p.name(), p.topic()),
            (Some(4), "get", Some("me"))
        );
        let n = ClientPacket::Note(Note {
            topic: "t",
            what: NoteWhat::Read,
            seq: 3,
        });
        assert_eq!(n.req_id(), None);
        let s = ServerPacket::ctrl(9, Code::POLICY, "t");
        assert_eq!(s.name(), "ctrl");
    }

    fn arb_str() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 _\\-\u{4e00}-\u{4e10}]{0,24}"
    }

    proptest! {
        #[test]
        fn any_pub_round_trips(id in any::<u32>(), topic in arb_str(), bytes in any::<[u8; 16]>(),
                               mime in arb_str(), reply in any::<Option<u64>>(),
                               content in proptest::collection::vec(any::<u8>(), 0..300)) {
            let p = ClientPacket::Pub(Pub {
                id, topic: &topic, msg_id: crate::id::MsgId::from_bytes(bytes),
                head: Head { mime: &mime, reply_to: reply }, content: &content,
            });
            let mut buf = [0u8; 512];
            let n = encode_client(&p, &mut buf).unwrap();
            let (body, _) = frame::decode_frame(&buf[..n], 512).unwrap();
            // The output flavor writes exactly postcard's own bytes.
            let mut plain = [0u8; 512];
            prop_assert_eq!(body, &*postcard::to_slice(&p, &mut plain).unwrap());
            prop_assert_eq!(decode_client(body).unwrap(), p);
        }

        #[test]
        fn any_data_round_trips(seq in any::<u64>(), ts in any::<u64>(), topic in arb_str(),
                                from in arb_str(), content in proptest::collection::vec(any::<u8>(), 0..300)) {
            let p = ServerPacket::Data(Data {
                topic: &topic, seq, msg_id: crate::id::MsgId::from_bytes([1; 16]), from: &from, ts,
                head: Head::default(), content: &content,
            });
            let mut buf = [0u8; 512];
            let n = encode_server_body(&p, &mut buf).unwrap();
            let mut plain = [0u8; 512];
            prop_assert_eq!(&buf[..n], &*postcard::to_slice(&p, &mut plain).unwrap());
            prop_assert_eq!(decode_server(&buf[..n]).unwrap(), p);
            // Too little room, whether it runs out on a single byte or a longer write.
            for cut in 0..n {
                prop_assert_eq!(encode_server_body(&p, &mut buf[..cut]), Err(CodecError::BufferTooSmall));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_client(&bytes);
            let _ = decode_server(&bytes);
        }
    }
}
