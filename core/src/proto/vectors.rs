//! Byte-exact encodings of every packet, worked out by hand from postcard's rules (varint
//! integers, length-prefixed strings and bytes, a varint tag before each enum variant, 0/1 for
//! `Option` and `bool`, raw bytes for the 16-byte id). They pin the wire format: a change that
//! breaks one of them breaks every deployed client.

use super::*;
use crate::digest::Digest;
use crate::id::MsgId;

fn check_client(packet: ClientPacket<'_>, bytes: &[u8]) {
    let mut buf = [0u8; 256];
    let n = encode_client_body(&packet, &mut buf).unwrap();
    assert_eq!(&buf[..n], bytes, "encoding of {}", packet.name());
    assert_eq!(
        decode_client(bytes).unwrap(),
        packet,
        "decoding of {}",
        packet.name()
    );
}

fn check_server(packet: ServerPacket<'_>, bytes: &[u8]) {
    let mut buf = [0u8; 256];
    let n = encode_server_body(&packet, &mut buf).unwrap();
    assert_eq!(&buf[..n], bytes, "encoding of {}", packet.name());
    assert_eq!(
        decode_server(bytes).unwrap(),
        packet,
        "decoding of {}",
        packet.name()
    );
}

fn with_id(prefix: &[u8], id_byte: u8, suffix: &[u8]) -> Vec<u8> {
    let mut v = prefix.to_vec();
    v.extend_from_slice(&[id_byte; 16]);
    v.extend_from_slice(suffix);
    v
}

#[test]
fn hi() {
    let p = Hi {
        id: 1,
        ver: 1,
        device: "d",
        platform: "p",
        lang: "zh",
        ua: "k",
    };
    check_client(
        ClientPacket::Hi(p),
        &[0, 1, 1, 1, b'd', 1, b'p', 2, b'z', b'h', 1, b'k'],
    );
}

#[test]
fn acc() {
    let p = Acc {
        id: 2,
        scheme: AuthScheme::Basic,
        secret: b"a:b",
        name: "A",
        login: true,
    };
    check_client(
        ClientPacket::Acc(p),
        &[1, 2, 0, 3, b'a', b':', b'b', 1, b'A', 1],
    );
}

#[test]
fn login() {
    let p = Login {
        id: 3,
        scheme: AuthScheme::Token,
        secret: &[0xAA, 0xBB],
    };
    check_client(ClientPacket::Login(p), &[2, 3, 1, 2, 0xAA, 0xBB]);
}

#[test]
fn sub() {
    // 300 as a varint is 0xAC 0x02.
    let p = Sub {
        id: 4,
        topic: "g",
        since: Some(300),
    };
    check_client(ClientPacket::Sub(p), &[3, 4, 1, b'g', 1, 0xAC, 0x02]);
    let p = Sub {
        id: 4,
        topic: "g",
        since: None,
    };
    check_client(ClientPacket::Sub(p), &[3, 4, 1, b'g', 0]);
}

#[test]
fn leave() {
    let p = Leave {
        id: 5,
        topic: "g",
        unsub: false,
    };
    check_client(ClientPacket::Leave(p), &[4, 5, 1, b'g', 0]);
}

#[test]
fn publish() {
    let p = Pub {
        id: 6,
        topic: "g",
        msg_id: MsgId::from_bytes([0x11; 16]),
        head: Head {
            mime: "",
            reply_to: None,
        },
        content: b"hi",
    };
    check_client(
        ClientPacket::Pub(p),
        &with_id(&[5, 6, 1, b'g'], 0x11, &[0, 0, 2, b'h', b'i']),
    );
}

#[test]
fn get() {
    // 128 as a varint is 0x80 0x01; Data is GetWhat's third variant.
    let what = GetWhat::Data {
        since: 1,
        before: 0,
        limit: 128,
    };
    let p = Get {
        id: 7,
        topic: "g",
        what,
    };
    check_client(ClientPacket::Get(p), &[6, 7, 1, b'g', 2, 1, 0, 0x80, 0x01]);
    let p = Get {
        id: 7,
        topic: "g",
        what: GetWhat::Digest { last: 3 },
    };
    check_client(ClientPacket::Get(p), &[6, 7, 1, b'g', 3, 3]);
}

#[test]
fn set() {
    let p = Set {
        id: 8,
        topic: "g",
        what: SetWhat::Title("T"),
    };
    check_client(ClientPacket::Set(p), &[7, 8, 1, b'g', 0, 1, b'T']);
}

#[test]
fn del() {
    let p = Del {
        id: 9,
        topic: "g",
        what: DelWhat::Msg {
            first: 1,
            last: 2,
            hard: true,
        },
    };
    check_client(ClientPacket::Del(p), &[8, 9, 1, b'g', 0, 1, 2, 1]);
}

#[test]
fn note() {
    let p = Note {
        topic: "g",
        what: NoteWhat::Read,
        seq: 5,
    };
    check_client(ClientPacket::Note(p), &[9, 1, b'g', 1, 5]);
}

#[test]
fn action() {
    let p = Action {
        id: 10,
        what: ActionWhat::Status(AgentStatus::Busy),
    };
    check_client(ClientPacket::Action(p), &[10, 10, 1, 1]);
    let p = Action {
        id: 10,
        what: ActionWhat::Transfer {
            topic: "c",
            to: "b",
        },
    };
    check_client(ClientPacket::Action(p), &[10, 10, 3, 1, b'c', 1, b'b']);
}

#[test]
fn ack() {
    let p = Ack {
        topic: "g",
        seq: 127,
    };
    check_client(ClientPacket::Ack(p), &[11, 1, b'g', 127]);
}

#[test]
fn ctrl() {
    // 202 as a varint is 0xCA 0x01; Pub is CtrlParams' fourth variant.
    let p = Ctrl {
        id: 6,
        code: Code::ACCEPTED,
        text: "",
        topic: "g",
        params: CtrlParams::Pub {
            seq: 1,
            ts: 2,
            dup: false,
        },
    };
    check_server(
        ServerPacket::Ctrl(p),
        &[0, 6, 0xCA, 0x01, 0, 1, b'g', 3, 1, 2, 0],
    );
    // 200 is 0xC8 0x01, 4096 is 0x80 0x20.
    let p = Ctrl {
        id: 1,
        code: Code::OK,
        text: "ok",
        topic: "",
        params: CtrlParams::Hi {
            ver: 1,
            server_ms: 5,
            max_content: 4096,
        },
    };
    check_server(
        ServerPacket::Ctrl(p),
        &[0, 1, 0xC8, 0x01, 2, b'o', b'k', 0, 1, 1, 5, 0x80, 0x20],
    );
    let digest = Digest {
        count: 2,
        first_seq: 1,
        last_seq: 2,
        crc: 3,
    };
    let p = Ctrl {
        id: 2,
        code: Code::OK,
        text: "",
        topic: "g",
        params: CtrlParams::Digest(digest),
    };
    check_server(
        ServerPacket::Ctrl(p),
        &[0, 2, 0xC8, 0x01, 0, 1, b'g', 6, 2, 1, 2, 3],
    );
}

#[test]
fn data() {
    // 1000 as a varint is 0xE8 0x07.
    let p = Data {
        topic: "g",
        seq: 1,
        msg_id: MsgId::from_bytes([0x22; 16]),
        from: "u",
        ts: 1000,
        head: Head {
            mime: "m",
            reply_to: Some(1),
        },
        content: b"x",
    };
    let bytes = with_id(
        &[1, 1, b'g', 1],
        0x22,
        &[1, b'u', 0xE8, 0x07, 1, b'm', 1, 1, 1, b'x'],
    );
    check_server(ServerPacket::Data(p), &bytes);
}

#[test]
fn meta() {
    let info = SubInfo {
        name: "g",
        title: "G",
        seq: 9,
        read: 8,
        recv: 9,
        unread: 1,
        online: true,
    };
    let p = Meta {
        id: 3,
        topic: "me",
        item: MetaItem::Sub(info),
    };
    check_server(
        ServerPacket::Meta(p),
        &[2, 3, 2, b'm', b'e', 1, 1, b'g', 1, b'G', 9, 8, 9, 1, 1],
    );
}

#[test]
fn pres() {
    let p = Pres {
        topic: "me",
        src: "g",
        what: PresWhat::Msg { seq: 9 },
    };
    check_server(ServerPacket::Pres(p), &[3, 2, b'm', b'e', 1, b'g', 2, 9]);
}

#[test]
fn info() {
    let p = Info {
        topic: "g",
        from: "u",
        what: NoteWhat::Kp,
        seq: 0,
    };
    check_server(ServerPacket::Info(p), &[4, 1, b'g', 1, b'u', 2, 0]);
}
