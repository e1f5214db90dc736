//! The binary dialect: core frames carrying postcard packets, mapped onto the owned wire set.

use kefu_core::proto::{
    self, ActionWhat as CoreAction, ClientPacket, CodecError, Ctrl, CtrlParams, Data,
    DelWhat as CoreDel, Head as CoreHead, Info, Meta, MetaItem as CoreMeta, Pres, ServerPacket,
    SetWhat as CoreSet, SubInfo as CoreSubInfo, TopicDesc as CoreDesc,
};

use super::wire::{ActionWhat, DelWhat, Head, MetaItem, Out, Params, Req, SetWhat};

/// A body that could not be turned into a request: the request id if one could be read, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadBody {
    /// The request id, when the body got far enough to carry one (0 otherwise).
    pub id: proto::ReqId,
    /// Why decoding failed.
    pub error: CodecError,
}

/// Decodes one frame body into an owned request. A packet naming a topic that fails
/// `proto::check_topic` is malformed (400), as in the JSON dialect.
pub fn decode(body: &[u8]) -> Result<Req, BadBody> {
    let packet = proto::decode_client(body).map_err(|error| BadBody {
        id: readable_id(body),
        error,
    })?;
    if let Some((id, topic)) = named_topic(&packet)
        && proto::check_topic(topic).is_err()
    {
        return Err(BadBody {
            id,
            error: CodecError::Malformed,
        });
    }
    Ok(to_req(packet))
}

/// The request id and the topic a packet names, if it names one.
fn named_topic<'a>(packet: &ClientPacket<'a>) -> Option<(proto::ReqId, &'a str)> {
    match packet {
        ClientPacket::Sub(p) => Some((p.id, p.topic)),
        ClientPacket::Leave(p) => Some((p.id, p.topic)),
        ClientPacket::Pub(p) => Some((p.id, p.topic)),
        ClientPacket::Get(p) => Some((p.id, p.topic)),
        ClientPacket::Set(p) => Some((p.id, p.topic)),
        ClientPacket::Del(p) => Some((p.id, p.topic)),
        ClientPacket::Note(p) => Some((0, p.topic)),
        ClientPacket::Ack(p) => Some((0, p.topic)),
        ClientPacket::Action(p) => match p.what {
            CoreAction::Transfer { topic, .. }
            | CoreAction::Close { topic }
            | CoreAction::Join { topic } => Some((p.id, topic)),
            _ => None,
        },
        _ => None,
    }
}

/// The request id of a body that failed to decode, if its first two fields (kind tag, id varint)
/// are readable and the kind carries one.
fn readable_id(body: &[u8]) -> proto::ReqId {
    // Tags 9 (note) and 11 (ack) carry no id; every other kind starts with it.
    match body.split_first() {
        Some((&tag, rest)) if tag < 12 && tag != 9 && tag != 11 => {
            postcard::from_bytes::<u32>(rest).unwrap_or(0)
        }
        _ => 0,
    }
}

fn head(h: CoreHead<'_>) -> Head {
    Head {
        mime: h.mime.to_owned(),
        reply_to: h.reply_to,
    }
}

fn to_req(packet: ClientPacket<'_>) -> Req {
    match packet {
        ClientPacket::Hi(p) => Req::Hi {
            id: p.id,
            ver: p.ver,
            device: p.device.to_owned(),
            platform: p.platform.to_owned(),
            lang: p.lang.to_owned(),
            ua: p.ua.to_owned(),
        },
        ClientPacket::Acc(p) => Req::Acc {
            id: p.id,
            scheme: p.scheme,
            secret: p.secret.to_vec(),
            name: p.name.to_owned(),
            login: p.login,
        },
        ClientPacket::Login(p) => Req::Login {
            id: p.id,
            scheme: p.scheme,
            secret: p.secret.to_vec(),
        },
        ClientPacket::Sub(p) => Req::Sub {
            id: p.id,
            topic: p.topic.to_owned(),
            since: p.since,
            get: Vec::new(),
        },
        ClientPacket::Leave(p) => Req::Leave {
            id: p.id,
            topic: p.topic.to_owned(),
            unsub: p.unsub,
        },
        ClientPacket::Pub(p) => Req::Pub {
            id: p.id,
            topic: p.topic.to_owned(),
            msg_id: p.msg_id,
            head: head(p.head),
            content: p.content.to_vec(),
            noecho: false,
        },
        ClientPacket::Get(p) => Req::Get {
            id: p.id,
            topic: p.topic.to_owned(),
            what: p.what,
        },
        ClientPacket::Set(p) => Req::Set {
            id: p.id,
            topic: p.topic.to_owned(),
            what: match p.what {
                CoreSet::Title(t) => SetWhat::Title(t.to_owned()),
                CoreSet::Mode { user, mode } => SetWhat::Mode {
                    user: user.to_owned(),
                    mode: mode.to_owned(),
                },
            },
        },
        ClientPacket::Del(p) => Req::Del {
            id: p.id,
            topic: p.topic.to_owned(),
            what: match p.what {
                CoreDel::Msg { first, last, hard } => DelWhat::Msg { first, last, hard },
                CoreDel::Sub { user } => DelWhat::Sub {
                    user: user.to_owned(),
                },
                CoreDel::Topic { hard } => DelWhat::Topic { hard },
            },
        },
        ClientPacket::Note(p) => Req::Note {
            topic: p.topic.to_owned(),
            what: p.what,
            seq: p.seq,
        },
        ClientPacket::Action(p) => Req::Action {
            id: p.id,
            what: match p.what {
                CoreAction::Open { desk } => ActionWhat::Open {
                    desk: desk.to_owned(),
                },
                CoreAction::Status(s) => ActionWhat::Status(s),
                CoreAction::TakeNext => ActionWhat::TakeNext,
                CoreAction::Transfer { topic, to } => ActionWhat::Transfer {
                    topic: topic.to_owned(),
                    to: to.to_owned(),
                },
                CoreAction::Close { topic } => ActionWhat::Close {
                    topic: topic.to_owned(),
                },
                CoreAction::Join { topic } => ActionWhat::Join {
                    topic: topic.to_owned(),
                },
            },
        },
        ClientPacket::Ack(p) => Req::Ack {
            topic: p.topic.to_owned(),
            seq: p.seq,
        },
    }
}

fn params(p: &Params) -> CtrlParams<'_> {
    match p {
        Params::None => CtrlParams::None,
        Params::Hi {
            ver,
            server_ms,
            max_content,
            ..
        } => CtrlParams::Hi {
            ver: *ver,
            server_ms: *server_ms,
            max_content: *max_content,
        },
        Params::Login {
            user,
            token,
            expires_ms,
        } => CtrlParams::Login {
            user,
            token,
            expires_ms: *expires_ms,
        },
        Params::Pub { seq, ts, dup } => CtrlParams::Pub {
            seq: *seq,
            ts: *ts,
            dup: *dup,
        },
        Params::Sub {
            latest,
            read,
            recv,
            acked,
        } => CtrlParams::Sub {
            latest: *latest,
            read: *read,
            recv: *recv,
            acked: *acked,
        },
        Params::Count { count, .. } => CtrlParams::Count { count: *count },
        Params::Digest(d) => CtrlParams::Digest(*d),
        Params::Topic { name, peer } => CtrlParams::Topic { name, peer },
        Params::RetryAfter { ms } => CtrlParams::RetryAfter { ms: *ms },
    }
}

/// Appends `out` as one whole frame to `buf`.
pub fn encode(out: &Out, buf: &mut Vec<u8>) {
    let packet = match out {
        Out::Ctrl {
            id,
            code,
            text,
            topic,
            params: p,
        } => ServerPacket::Ctrl(Ctrl {
            id: *id,
            code: *code,
            text,
            topic,
            params: params(p),
        }),
        Out::Data { topic, msg } => ServerPacket::Data(Data {
            topic,
            seq: msg.seq,
            msg_id: msg.msg_id,
            from: &msg.from,
            ts: msg.ts,
            head: CoreHead {
                mime: &msg.head.mime,
                reply_to: msg.head.reply_to,
            },
            content: &msg.content,
        }),
        Out::Meta { id, topic, item } => ServerPacket::Meta(Meta {
            id: *id,
            topic,
            item: match item {
                MetaItem::Desc(d) => CoreMeta::Desc(CoreDesc {
                    title: &d.title,
                    seq: d.seq,
                    read: d.read,
                    recv: d.recv,
                    unread: d.unread,
                }),
                MetaItem::Sub(s) => CoreMeta::Sub(CoreSubInfo {
                    name: &s.name,
                    title: &s.title,
                    seq: s.seq,
                    read: s.read,
                    recv: s.recv,
                    unread: s.unread,
                    online: s.online,
                }),
            },
        }),
        Out::Pres { topic, src, what } => ServerPacket::Pres(Pres {
            topic,
            src,
            what: *what,
        }),
        Out::Info {
            topic,
            from,
            what,
            seq,
        } => ServerPacket::Info(Info {
            topic,
            from,
            what: *what,
            seq: *seq,
        }),
    };
    let start = buf.len();
    // Worst case: every byte of every field plus varint overhead; grow and retry if short.
    let mut room = 64 + out_size_hint(out);
    loop {
        buf.resize(start + room, 0);
        match proto::encode_server(&packet, &mut buf[start..]) {
            Ok(n) => {
                buf.truncate(start + n);
                return;
            }
            Err(_) if room < (1 << 26) => room *= 2,
            Err(e) => {
                // Unreachable for packets the gateway builds (bounded by max_content); never
                // send a half-written frame.
                tracing::error!(error = %e, packet = out.name(), "could not encode a packet");
                buf.truncate(start);
                return;
            }
        }
    }
}

fn out_size_hint(out: &Out) -> usize {
    match out {
        Out::Ctrl { text, topic, .. } => text.len() + topic.len() + 96,
        Out::Data { topic, msg } => {
            topic.len() + msg.from.len() + msg.head.mime.len() + msg.content.len() + 64
        }
        Out::Meta { topic, .. } => topic.len() + 256,
        Out::Pres { topic, src, .. } => topic.len() + src.len() + 32,
        Out::Info { topic, from, .. } => topic.len() + from.len() + 32,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kefu_core::frame;
    use kefu_core::id::MsgId;
    use kefu_core::proto::{Code, NoteWhat, PresWhat};

    use super::*;
    use crate::model::Message;

    fn body_of(frame_bytes: &[u8]) -> &[u8] {
        frame::decode_frame(frame_bytes, 1 << 20)
            .expect("a whole frame")
            .0
    }

    #[test]
    fn a_pub_body_becomes_an_owned_pub_request() {
        // The pub of docs/PROTOCOL.md §8.2.
        let body = [
            0x05, 0x06, 0x01, 0x67, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
            0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x00, 0x00, 0x02, 0x68, 0x69,
        ];
        let req = decode(&body).expect("valid pub");
        assert_eq!(
            req,
            Req::Pub {
                id: 6,
                topic: "g".into(),
                msg_id: MsgId::from_bytes([0x11; 16]),
                head: Head::default(),
                content: b"hi".to_vec(),
                noecho: false,
            }
        );
    }

    #[test]
    fn a_pub_answer_encodes_to_the_documented_frame() {
        let mut buf = Vec::new();
        encode(
            &Out::Ctrl {
                id: 6,
                code: Code::ACCEPTED,
                text: String::new(),
                topic: "g".into(),
                params: Params::Pub {
                    seq: 1,
                    ts: 2,
                    dup: false,
                },
            },
            &mut buf,
        );
        assert_eq!(
            buf,
            [
                0x4B, 0x46, 0x0B, 0x00, 0x00, 0x00, 0x4B, 0x00, 0x06, 0xCA, 0x01, 0x00, 0x01, 0x67,
                0x03, 0x01, 0x02, 0x00, 0x7E, 0xBA, 0x11, 0xFA
            ]
        );
    }

    #[test]
    fn every_server_packet_round_trips_through_the_core_decoder() {
        let msg = Arc::new(Message {
            seq: 9,
            msg_id: MsgId::from_bytes([7; 16]),
            from: "usrA".into(),
            ts: 1000,
            head: Head {
                mime: "text/plain".into(),
                reply_to: Some(3),
            },
            content: vec![b'x'; 5000],
        });
        let outs = [
            Out::Data {
                topic: "usrB".into(),
                msg,
            },
            Out::Pres {
                topic: "me".into(),
                src: "grp1".into(),
                what: PresWhat::Msg { seq: 4 },
            },
            Out::Info {
                topic: "grp1".into(),
                from: "usrA".into(),
                what: NoteWhat::Read,
                seq: 4,
            },
        ];
        for out in &outs {
            let mut buf = Vec::new();
            encode(out, &mut buf);
            let packet = proto::decode_server(body_of(&buf)).expect("decodes");
            assert_eq!(packet.name(), out.name());
        }
    }

    #[test]
    fn a_broken_body_reports_the_request_id_it_carried() {
        // A `get` (tag 6) with id 300 and nothing after it.
        let err = decode(&[0x06, 0xAC, 0x02]).expect_err("truncated");
        assert_eq!(err.id, 300);
        assert_eq!(err.error, CodecError::Truncated);
        // An `ack` (tag 11) has no id; an unknown tag neither.
        assert_eq!(decode(&[0x0B]).expect_err("truncated").id, 0);
        assert_eq!(decode(&[0x63, 0x01]).expect_err("unknown").id, 0);
        assert_eq!(decode(&[]).expect_err("empty").id, 0);
    }

    #[test]
    fn a_packet_naming_an_invalid_topic_is_malformed_with_its_id() {
        let bad = |p: &ClientPacket<'_>| {
            let mut buf = [0u8; 256];
            let n = proto::encode_client_body(p, &mut buf).expect("encode");
            decode(&buf[..n]).expect_err("invalid topic")
        };
        let err = bad(&ClientPacket::Pub(proto::Pub {
            id: 9,
            topic: "bad topic!",
            msg_id: kefu_core::id::MsgId::from_bytes([1; 16]),
            head: CoreHead {
                mime: "",
                reply_to: None,
            },
            content: b"x",
        }));
        assert_eq!((err.id, err.error), (9, CodecError::Malformed));
        let err = bad(&ClientPacket::Sub(proto::Sub {
            id: 4,
            topic: "",
            since: None,
        }));
        assert_eq!((err.id, err.error), (4, CodecError::Malformed));
        let err = bad(&ClientPacket::Ack(proto::Ack {
            topic: "a/b",
            seq: 1,
        }));
        assert_eq!((err.id, err.error), (0, CodecError::Malformed));
        let ok = decode(&[0x03, 0x01, 0x02, b'm', b'e', 0x00]).expect("sub me");
        assert!(matches!(ok, Req::Sub { .. }), "{ok:?}");
    }
}
