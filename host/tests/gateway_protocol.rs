//! Bad input and timeouts over real TCP on 127.0.0.1: every mistake gets its answer (or closes
//! only the offending connection), and two bystanders keep chatting through all of it.

mod support;

use std::time::Duration;

use kefu_core::frame;
use kefu_core::proto::{
    self, Action, ActionWhat, ClientPacket, Code, DelWhat, Get, GetWhat, Hi, NoteWhat, Sub,
};
use kefu_host::gateway::wire::{Out, Params};
use support::inspect::Bystanders;
use support::{Gw, Raw, new_id};

/// A whole frame around `body`.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; body.len() + frame::OVERHEAD];
    let n = frame::encode_frame(body, &mut buf).expect("frame");
    buf.truncate(n);
    buf
}

/// The body of a client packet.
fn body_of(p: &ClientPacket<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let n = proto::encode_client_body(p, &mut buf).expect("encode");
    buf.truncate(n);
    buf
}

fn hi_packet(id: u32, ver: u16) -> ClientPacket<'static> {
    ClientPacket::Hi(Hi {
        id,
        ver,
        device: "d",
        platform: "linux",
        lang: "en",
        ua: "kefu-tests",
    })
}

fn get_desc(id: u32, topic: &str) -> ClientPacket<'_> {
    ClientPacket::Get(Get {
        id,
        topic,
        what: GetWhat::Desc,
    })
}

#[tokio::test]
async fn framing_garbage_closes_that_connection_and_no_other() {
    let mut gw = Gw::start().await;
    let mut others = Bystanders::new(&gw).await;

    // Bytes that are not a frame at all, then a real frame so the deframer has a `KF` to find.
    let (mut bad, _) = gw.user("garbler").await;
    let mut junk = b"GET / HTTP/1.1\r\n\r\n".to_vec();
    junk.extend(framed(&body_of(&hi_packet(9, 1))));
    bad.send_bytes(&junk).await;
    let seen = bad.until_closed().await;
    assert!(
        !seen.iter().any(|o| matches!(o, Out::Ctrl { id: 9, .. })),
        "the frame after the garbage is not served: {seen:?}"
    );
    others.check().await;

    // A frame whose body check fails.
    let (mut bad, _) = gw.user("corrupter").await;
    let mut f = framed(&body_of(&get_desc(5, "me")));
    let last = f.len() - 1;
    f[last] ^= 0xff;
    bad.send_bytes(&f).await;
    bad.until_closed().await;
    others.check().await;

    // A header announcing a body far over the limit.
    let (mut bad, _) = gw.user("boaster").await;
    let mut header = b"KF".to_vec();
    header.extend(u32::MAX.to_le_bytes());
    let crc = crc8_smbus(&header);
    header.push(crc);
    header.extend([0u8; 64]);
    bad.send_bytes(&header).await;
    bad.until_closed().await;
    others.check().await;
    gw.stop().await;
}

/// CRC-8/SMBUS (poly 0x07, init 0): the frame header check.
fn crc8_smbus(bytes: &[u8]) -> u8 {
    let mut crc = 0u8;
    for &b in bytes {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x07
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[tokio::test]
async fn a_body_that_is_not_a_packet_is_400_with_its_id_when_readable() {
    let mut gw = Gw::start().await;
    let mut others = Bystanders::new(&gw).await;
    let (mut c, _) = gw.user("sloppy").await;

    // A `get` (tag 6) with id 77, then bytes that are no topic.
    c.send_bytes(&framed(&[6, 77, 0xff, 0xff, 0xff])).await;
    let (code, ..) = c.ctrl(77).await;
    assert_eq!(code, Code::MALFORMED);

    // An unknown packet tag: no id can be read.
    c.send_bytes(&framed(&[0x7f, 1, 2, 3])).await;
    let (code, ..) = c.ctrl(0).await;
    assert_eq!(code, Code::MALFORMED);

    // A valid `get` followed by a trailing byte.
    let mut body = body_of(&get_desc(78, "me"));
    body.push(0);
    c.send_bytes(&framed(&body)).await;
    let (code, ..) = c.ctrl(78).await;
    assert_eq!(code, Code::MALFORMED);

    // An `ack` (no id) with invalid UTF-8 in its topic.
    c.send_bytes(&framed(&[11, 2, 0xc3, 0x28, 1])).await;
    let (code, ..) = c.ctrl(0).await;
    assert_eq!(code, Code::MALFORMED);

    // The session itself is still fine.
    let (code, desc) = c.desc("me").await;
    assert_eq!(code, Code::OK);
    assert!(desc.is_some());
    others.check().await;
    gw.stop().await;
}

#[tokio::test]
async fn the_handshake_order_is_enforced() {
    let mut gw = Gw::start().await;
    let mut others = Bystanders::new(&gw).await;
    let mut c = Raw::connect(gw.tcp).await;

    // Anything before `hi` is a 4xx.
    let (code, ..) = c
        .call(
            1,
            ClientPacket::Sub(Sub {
                id: 1,
                topic: "me",
                since: None,
            }),
        )
        .await;
    assert!(code.0 >= 400 && code.0 < 500, "sub before hi: {code:?}");

    // A version the gateway does not speak is 505, and the session waits for a good `hi`.
    let (code, ..) = c.call(2, hi_packet(2, 2)).await;
    assert_eq!(code, Code::VERSION_NOT_SUPPORTED);
    let (code, ..) = c.call(3, hi_packet(3, 0)).await;
    assert_eq!(code, Code::VERSION_NOT_SUPPORTED);
    let (code, _, params) = c.call(4, hi_packet(4, 1)).await;
    assert_eq!(code, Code::OK);
    assert!(matches!(params, Params::Hi { ver: 1, .. }));

    // `hi` twice is a conflict.
    let (code, ..) = c.call(5, hi_packet(5, 1)).await;
    assert_eq!(code, Code::CONFLICT);
    others.check().await;

    // Greeted but not logged in: 401 for everything that needs a user.
    let (code, ..) = c
        .call(
            6,
            ClientPacket::Sub(Sub {
                id: 6,
                topic: &others.a_id,
                since: Some(0),
            }),
        )
        .await;
    assert_eq!(code, Code::UNAUTHORIZED);
    let id = c.send_pub(&others.a_id, new_id(), b"anonymous").await;
    assert_eq!(c.ctrl(id).await.0, Code::UNAUTHORIZED);
    let (code, ..) = c.call(8, get_desc(8, "me")).await;
    assert_eq!(code, Code::UNAUTHORIZED);
    let (code, ..) = c
        .call(
            9,
            ClientPacket::Action(Action {
                id: 9,
                what: ActionWhat::Open { desk: "" },
            }),
        )
        .await;
    assert_eq!(code, Code::UNAUTHORIZED);

    // Once logged in, the same requests work.
    let _ = c.acc("late", "secret-pass").await;
    let (code, _) = c.desc("me").await;
    assert_eq!(code, Code::OK);
    others.check().await;
    gw.stop().await;
}

#[tokio::test]
async fn a_wrong_password_is_401_and_the_session_can_still_log_in() {
    let mut gw = Gw::start().await;
    let (first, _) = gw.user("zoe").await;
    drop(first);
    let mut c = Raw::connect(gw.tcp).await;
    c.hi().await;
    let (code, _) = c.login("zoe", "wrong-pass").await;
    assert_eq!(code, Code::UNAUTHORIZED);
    let (code, _) = c.login("nobody", "secret-pass").await;
    assert_eq!(code, Code::UNAUTHORIZED);
    let (code, params) = c.login("zoe", "secret-pass").await;
    assert_eq!(code, Code::OK);
    assert!(matches!(params, Params::Login { ref user, .. } if user.starts_with("usr")));
    let (code, _) = c.login("zoe", "secret-pass").await;
    assert_eq!(code, Code::CONFLICT, "a second login on one session");
    gw.stop().await;
}

#[tokio::test]
async fn oversized_content_is_413_and_not_stored() {
    let mut gw = Gw::start_with(|c| c.max_content = 64).await;
    let mut others = Bystanders::new(&gw).await;
    let (mut alice, _) = gw.user("alice").await;
    let (mut bob, bob_id) = gw.user("bob").await;
    assert_eq!(bob.sub("me", None).await.0, Code::OK);

    let (code, _) = alice.publish(&bob_id, new_id(), &[b'x'; 65]).await;
    assert_eq!(code, Code::TOO_LARGE);
    let (code, params) = alice.publish(&bob_id, new_id(), &[b'x'; 64]).await;
    assert_eq!(code, Code::ACCEPTED, "exactly the limit is fine");
    assert!(matches!(params, Params::Pub { seq: 1, .. }));
    let (code, page) = alice.history(&bob_id, 1, 0, 10).await;
    assert_eq!(code, Code::OK);
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].content.len(), 64);
    others.check().await;
    gw.stop().await;
}

#[tokio::test]
async fn a_sensitive_word_is_422_and_nothing_is_stored_or_pushed() {
    let mut gw = Gw::start_with(|c| c.words = vec!["contraband".into()]).await;
    let mut others = Bystanders::new(&gw).await;
    let (mut alice, alice_id) = gw.user("alice").await;
    let (mut bob, bob_id) = gw.user("bob").await;
    assert_eq!(alice.sub(&bob_id, Some(0)).await.0, Code::OK);
    assert_eq!(bob.sub(&alice_id, Some(0)).await.0, Code::OK);

    let (code, _) = alice
        .publish(&bob_id, new_id(), b"want some CONTRABAND?")
        .await;
    assert_eq!(code, Code::POLICY);
    let (code, page) = alice.history(&bob_id, 1, 0, 10).await;
    assert_eq!(code, Code::NO_CONTENT, "nothing stored: {page:?}");
    assert!(page.is_empty());

    // The next clean message gets seq 1: the refused one took no seq.
    let (code, params) = alice.publish(&bob_id, new_id(), b"hello").await;
    assert_eq!(code, Code::ACCEPTED);
    assert!(matches!(params, Params::Pub { seq: 1, .. }));
    let m = bob.data(&alice_id).await;
    assert_eq!((m.seq, m.content.as_slice()), (1, &b"hello"[..]));
    others.check().await;
    gw.stop().await;
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_with_retry_after_and_others_do_not() {
    let mut gw = Gw::start_with(|c| {
        c.rate_per_sec = 5;
        c.rate_burst = 5;
    })
    .await;
    let mut others = Bystanders::new(&gw).await;
    let (mut fast, _) = gw.user("fast").await;

    for id in 100..120 {
        fast.send(get_desc(id, "me")).await;
    }
    let mut limited = Vec::new();
    for id in 100..120 {
        let (code, _, params) = fast.ctrl(id).await;
        if code == Code::RATE_LIMITED {
            let Params::RetryAfter { ms } = params else {
                panic!("429 without RetryAfter: {params:?}");
            };
            assert!(ms > 0 && ms <= 1000, "retry after {ms} ms");
            limited.push(ms);
        } else {
            assert_eq!(code, Code::OK);
        }
    }
    assert!(
        limited.len() >= 10,
        "most of a burst of 20 is refused: {limited:?}"
    );
    others.check().await;

    // After waiting as told, it works again.
    tokio::time::sleep(Duration::from_millis(u64::from(limited[0]) + 50)).await;
    let (code, _) = fast.desc("me").await;
    assert_eq!(code, Code::OK);
    gw.stop().await;
}

#[tokio::test]
async fn topics_one_has_no_part_in_are_403() {
    let mut gw = Gw::start().await;
    let mut others = Bystanders::new(&gw).await;
    let (mut owner, _) = gw.user("owner").await;
    let (mut bob, bob_id) = gw.user("bob").await;

    // Bob joins Alice's group, then she removes him.
    let grp = owner.new_group().await;
    assert_eq!(bob.sub(&grp, Some(0)).await.0, Code::OK);
    let (code, _) = bob.publish(&grp, new_id(), b"hi all").await;
    assert_eq!(code, Code::ACCEPTED);
    let id = owner.next_id();
    let (code, ..) = owner
        .call(
            id,
            ClientPacket::Del(proto::Del {
                id,
                topic: &grp,
                what: DelWhat::Sub { user: &bob_id },
            }),
        )
        .await;
    assert_eq!(code, Code::OK);
    let gone = bob
        .wait_for(|o| matches!(o, Out::Pres { src, .. } if *src == grp))
        .await;
    assert!(matches!(
        gone,
        Out::Pres {
            what: kefu_host::gateway::wire::PresWhat::Gone,
            ..
        }
    ));
    let (code, _) = bob.publish(&grp, new_id(), b"still here?").await;
    assert_eq!(code, Code::FORBIDDEN);
    let (code, page) = bob.history(&grp, 1, 0, 10).await;
    assert_eq!(code, Code::FORBIDDEN);
    assert!(page.is_empty());
    let (code, _) = bob.desc(&grp).await;
    assert_eq!(code, Code::FORBIDDEN);

    // A consultation between a customer and the desk is closed to other customers.
    let (mut customer, _) = gw.user("customer").await;
    let id = customer.next_id();
    let (code, _, params) = customer
        .call(
            id,
            ClientPacket::Action(Action {
                id,
                what: ActionWhat::Open { desk: "" },
            }),
        )
        .await;
    assert_eq!(code, Code::CREATED);
    let Params::Topic { name: cns, .. } = params else {
        panic!("open answers with the topic: {params:?}");
    };
    assert!(cns.starts_with("cns"));
    assert_eq!(bob.sub(&cns, Some(0)).await.0, Code::FORBIDDEN);
    let (code, _) = bob.publish(&cns, new_id(), b"let me in").await;
    assert_eq!(code, Code::FORBIDDEN);
    let (code, _) = bob.history(&cns, 1, 0, 10).await;
    assert_eq!(code, Code::FORBIDDEN);
    others.check().await;
    gw.stop().await;
}

#[tokio::test]
async fn unknown_topics_and_users_are_404() {
    let mut gw = Gw::start().await;
    let mut others = Bystanders::new(&gw).await;
    let (mut c, _) = gw.user("curious").await;

    let nobody = "usrabcdefghijk"; // well-formed, never created
    assert_eq!(c.sub(nobody, Some(0)).await.0, Code::NOT_FOUND);
    assert_eq!(
        c.publish(nobody, new_id(), b"anyone?").await.0,
        Code::NOT_FOUND
    );
    assert_eq!(c.sub("grpabcdefghijk", None).await.0, Code::NOT_FOUND);
    assert_eq!(c.sub("cnsabcdefghijk", None).await.0, Code::NOT_FOUND);
    assert_eq!(c.desc("grpabcdefghijk").await.0, Code::NOT_FOUND);
    assert_eq!(c.sub("whatever", None).await.0, Code::NOT_FOUND);
    others.check().await;
    gw.stop().await;
}

#[tokio::test]
async fn an_ack_beyond_the_latest_seq_is_400_with_id_0() {
    let mut gw = Gw::start().await;
    let mut others = Bystanders::new(&gw).await;
    // The bystanders' own topic has 2 messages after one check.
    others.check().await;
    others.b.ack(&others.a_id, 99).await;
    let (code, _, _) = others.b.ctrl(0).await;
    assert_eq!(code, Code::MALFORMED);
    others.check().await;
    gw.stop().await;
}

#[tokio::test]
async fn a_note_on_a_topic_one_is_not_subscribed_to_is_403_with_id_0() {
    let mut gw = Gw::start().await;
    let mut others = Bystanders::new(&gw).await;
    let (mut owner, _) = gw.user("owner").await;
    let (mut stranger, _) = gw.user("stranger").await;
    let grp = owner.new_group().await;
    assert_eq!(
        owner.publish(&grp, new_id(), b"one").await.0,
        Code::ACCEPTED
    );

    stranger.note(&grp, NoteWhat::Read, 1).await;
    let (code, _, _) = stranger.ctrl(0).await;
    assert_eq!(code, Code::FORBIDDEN);
    stranger.note(&grp, NoteWhat::Kp, 0).await;
    let (code, _, _) = stranger.ctrl(0).await;
    assert_eq!(code, Code::FORBIDDEN);
    // The owner hears nothing of it.
    let heard = owner.drain_for(Duration::from_millis(200)).await;
    assert!(
        !heard.iter().any(|o| matches!(o, Out::Info { .. })),
        "{heard:?}"
    );
    others.check().await;
    gw.stop().await;
}

#[tokio::test]
async fn a_connection_that_does_not_log_in_in_time_is_closed() {
    let mut gw = Gw::start_with(|c| c.handshake_timeout = Duration::from_millis(300)).await;
    let mut others = Bystanders::new(&gw).await;
    let mut silent = Raw::connect(gw.tcp).await;
    let mut greeted = Raw::connect(gw.tcp).await;
    greeted.hi().await;

    let started = std::time::Instant::now();
    let seen = silent.until_closed().await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(
        seen.iter()
            .any(|o| matches!(o, Out::Ctrl { id: 0, code, .. } if *code == Code::TIMEOUT)),
        "a 408 notice before the close: {seen:?}"
    );
    greeted.until_closed().await;
    // Logged-in sessions are past the handshake: they stay.
    tokio::time::sleep(Duration::from_millis(200)).await;
    others.check().await;
    gw.stop().await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_and_keepalives_keep_one_open() {
    // Generous enough that the (slow, debug-built) password hashing of `acc` fits in it: the
    // idle clock runs from the last packet heard, even while the gateway works on it.
    let mut gw = Gw::start_with(|c| c.idle_timeout = Duration::from_millis(1500)).await;
    let (mut idle, _) = gw.user("idle").await;
    let (mut lively, _) = gw.user("lively").await;
    let keepalive = framed(&[]);

    let pinger = tokio::spawn(async move {
        for _ in 0..40 {
            lively.send_bytes(&keepalive).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        lively
    });
    let seen = idle.until_closed().await;
    assert!(
        seen.iter()
            .any(|o| matches!(o, Out::Ctrl { id: 0, code, text, .. }
            if *code == Code::TIMEOUT && text.contains("idle"))),
        "{seen:?}"
    );
    let mut lively = pinger.await.expect("pinger");
    // 4 s after start, past two idle timeouts: the pinging session still answers.
    let (code, _) = lively.desc("me").await;
    assert_eq!(code, Code::OK);
    gw.stop().await;
}

#[tokio::test]
async fn a_refused_unsubscribe_from_a_one_to_one_topic_changes_nothing() {
    let mut gw = Gw::start().await;
    let (mut alice, alice_id) = gw.user("alice").await;
    let (mut bob, bob_id) = gw.user("bob").await;
    assert_eq!(bob.sub(&alice_id, Some(0)).await.0, Code::OK);

    let id = bob.next_id();
    let (code, ..) = bob
        .call(
            id,
            ClientPacket::Leave(proto::Leave {
                id,
                topic: &alice_id,
                unsub: true,
            }),
        )
        .await;
    assert_eq!(code, Code::FORBIDDEN);

    // Bob is still attached: Alice's next message is pushed to him.
    let (code, _) = alice.publish(&bob_id, new_id(), b"still there?").await;
    assert_eq!(code, Code::ACCEPTED);
    let m = bob.data(&alice_id).await;
    assert_eq!(m.content, b"still there?");
    // And subscribing again is "not modified": he never left.
    assert_eq!(bob.sub(&alice_id, Some(0)).await.0, Code::NOT_MODIFIED);
    gw.stop().await;
}
