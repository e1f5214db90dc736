//! Delivery, receipts, digests and groups over real TCP on 127.0.0.1: retransmission after the
//! RTO, the push window, resuming from a mark, read receipts and unread counts, `me`, the digest,
//! and group topics (creation, fan-out, titles, hard deletes).

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use kefu_core::delivery::DeliveryConfig;
use kefu_core::proto::{ClientPacket, Code, Del, DelWhat, Get, GetWhat, NoteWhat, Set, SetWhat};
use kefu_host::gateway::wire::{Out, Params, PresWhat};
use support::{Gw, Raw, new_id};

/// The seqs of the `data` packets on `topic` in `outs`, in arrival order.
fn seqs(outs: &[Out], topic: &str) -> Vec<u64> {
    outs.iter()
        .filter_map(|o| match o {
            Out::Data { topic: t, msg } if t == topic => Some(msg.seq),
            _ => None,
        })
        .collect()
}

fn delivery(window: u64, rto_ms: u64) -> DeliveryConfig {
    DeliveryConfig {
        window,
        rto: kefu_core::time::Duration::from_millis(rto_ms),
        max_rto: kefu_core::time::Duration::from_millis(rto_ms * 4),
    }
}

async fn relogin(gw: &Gw, login: &str) -> Raw {
    let mut c = Raw::connect(gw.tcp).await;
    c.hi().await;
    let (code, _) = c.login(login, "secret-pass").await;
    assert_eq!(code, Code::OK);
    c
}

#[tokio::test]
async fn unacked_pushes_come_again_after_the_rto_and_an_ack_stops_them() {
    let mut gw = Gw::start_with(|c| c.delivery = delivery(64, 100)).await;
    let (mut alice, alice_id) = gw.user("alice").await;
    let (mut bob, bob_id) = gw.user("bob").await;
    assert_eq!(bob.sub(&alice_id, Some(0)).await.0, Code::OK);
    for i in 1..=3 {
        let (code, _) = alice
            .publish(&bob_id, new_id(), format!("m{i}").as_bytes())
            .await;
        assert_eq!(code, Code::ACCEPTED);
    }

    let got = seqs(&bob.drain_for(Duration::from_millis(700)).await, &alice_id);
    let first_three = &got[..3.min(got.len())];
    assert_eq!(first_three, [1, 2, 3]);
    assert!(
        got.len() >= 6 && got[3..].iter().all(|s| (1..=3).contains(s)),
        "the same seqs again, nothing else: {got:?}"
    );

    bob.ack(&alice_id, 3).await;
    // Anything already on its way may still arrive; then silence.
    let _ = bob.drain_for(Duration::from_millis(150)).await;
    let after = seqs(&bob.drain_for(Duration::from_millis(600)).await, &alice_id);
    assert!(after.is_empty(), "no pushes after the ack: {after:?}");
    gw.stop().await;
}

#[tokio::test]
async fn at_most_window_seqs_are_in_flight_until_acked() {
    let mut gw = Gw::start_with(|c| c.delivery = delivery(4, 10_000)).await;
    let (mut alice, alice_id) = gw.user("alice").await;
    let (mut bob, bob_id) = gw.user("bob").await;
    assert_eq!(bob.sub(&alice_id, Some(0)).await.0, Code::OK);
    for i in 1..=10 {
        let (code, _) = alice
            .publish(&bob_id, new_id(), format!("m{i}").as_bytes())
            .await;
        assert_eq!(code, Code::ACCEPTED);
    }

    let got = seqs(&bob.drain_for(Duration::from_millis(400)).await, &alice_id);
    assert_eq!(got, [1, 2, 3, 4], "exactly the window");
    bob.ack(&alice_id, 2).await;
    let got = seqs(&bob.drain_for(Duration::from_millis(400)).await, &alice_id);
    assert_eq!(got, [5, 6], "two acked, two more");
    bob.ack(&alice_id, 6).await;
    let got = seqs(&bob.drain_for(Duration::from_millis(400)).await, &alice_id);
    assert_eq!(got, [7, 8, 9, 10]);
    bob.ack(&alice_id, 10).await;
    let got = seqs(&bob.drain_for(Duration::from_millis(300)).await, &alice_id);
    assert!(got.is_empty(), "{got:?}");
    gw.stop().await;
}

#[tokio::test]
async fn a_reconnecting_client_gets_exactly_what_follows_its_mark() {
    let mut gw = Gw::start().await;
    let (mut alice, alice_id) = gw.user("alice").await;
    let (mut bob, bob_id) = gw.user("bob").await;
    assert_eq!(bob.sub(&alice_id, Some(0)).await.0, Code::OK);
    for i in 1..=3 {
        alice
            .publish(&bob_id, new_id(), format!("m{i}").as_bytes())
            .await;
    }
    for i in 1..=3 {
        assert_eq!(bob.data(&alice_id).await.seq, i);
    }
    bob.ack(&alice_id, 3).await;
    drop(bob);

    for i in 4..=7 {
        let (code, _) = alice
            .publish(&bob_id, new_id(), format!("m{i}").as_bytes())
            .await;
        assert_eq!(code, Code::ACCEPTED);
    }

    // It holds up to 5 (say it pulled 4 and 5 elsewhere): 6 and 7, nothing else.
    let mut bob = relogin(&gw, "bob").await;
    let (code, params) = bob.sub(&alice_id, Some(5)).await;
    assert_eq!(code, Code::OK);
    assert!(
        matches!(
            params,
            Params::Sub {
                latest: 7,
                acked: 5,
                ..
            }
        ),
        "{params:?}"
    );
    let got = bob.drain_for(Duration::from_millis(500)).await;
    assert_eq!(seqs(&got, &alice_id), [6, 7]);
    let contents: Vec<_> = got
        .iter()
        .filter_map(|o| match o {
            Out::Data { msg, .. } => Some(msg.content.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(contents, [b"m6".to_vec(), b"m7".to_vec()]);
    bob.ack(&alice_id, 7).await;
    drop(bob);

    // `since = None`: only what arrives from now on.
    let mut bob = relogin(&gw, "bob").await;
    let (code, params) = bob.sub(&alice_id, None).await;
    assert_eq!(code, Code::OK);
    assert!(
        matches!(
            params,
            Params::Sub {
                latest: 7,
                acked: 7,
                ..
            }
        ),
        "{params:?}"
    );
    let got = bob.drain_for(Duration::from_millis(300)).await;
    assert!(seqs(&got, &alice_id).is_empty(), "{got:?}");
    alice.publish(&bob_id, new_id(), b"m8").await;
    let m = bob.data(&alice_id).await;
    assert_eq!((m.seq, m.content.as_slice()), (8, &b"m8"[..]));
    let got = bob.drain_for(Duration::from_millis(200)).await;
    assert!(seqs(&got, &alice_id).is_empty(), "{got:?}");

    // A mark beyond the latest is clamped to it.
    drop(bob);
    let mut bob = relogin(&gw, "bob").await;
    let (code, params) = bob.sub(&alice_id, Some(1000)).await;
    assert_eq!(code, Code::OK);
    assert!(
        matches!(
            params,
            Params::Sub {
                latest: 8,
                acked: 8,
                ..
            }
        ),
        "{params:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_read_note_reaches_the_other_side_and_unread_never_counts_ones_own() {
    let mut gw = Gw::start().await;
    let (mut alice, alice_id) = gw.user("alice").await;
    let (mut bob, bob_id) = gw.user("bob").await;
    assert_eq!(alice.sub(&bob_id, Some(0)).await.0, Code::OK);
    assert_eq!(bob.sub(&alice_id, Some(0)).await.0, Code::OK);
    for i in 1..=3 {
        alice
            .publish(&bob_id, new_id(), format!("a{i}").as_bytes())
            .await;
    }
    for i in 1..=3 {
        assert_eq!(bob.data(&alice_id).await.seq, i);
    }

    bob.note(&alice_id, NoteWhat::Read, 2).await;
    let info = alice.wait_for(|o| matches!(o, Out::Info { .. })).await;
    assert_eq!(
        info,
        Out::Info {
            topic: bob_id.clone(),
            from: bob_id.clone(),
            what: NoteWhat::Read,
            seq: 2
        }
    );
    let (code, desc) = bob.desc(&alice_id).await;
    assert_eq!(code, Code::OK);
    let desc = desc.expect("a desc");
    assert_eq!((desc.seq, desc.read, desc.unread), (3, 2, 1));

    // Bob writes twice: his own messages do not count as unread for him.
    for i in 1..=2 {
        bob.publish(&alice_id, new_id(), format!("b{i}").as_bytes())
            .await;
    }
    let desc = bob.desc(&alice_id).await.1.expect("a desc");
    assert_eq!((desc.seq, desc.read, desc.unread), (5, 2, 1));
    // Alice read nothing, but three of five are hers.
    let desc = alice.desc(&bob_id).await.1.expect("a desc");
    assert_eq!((desc.seq, desc.read, desc.unread), (5, 0, 2));

    // A receipt beyond the latest is refused (id 0) and moves nothing.
    bob.note(&alice_id, NoteWhat::Read, 6).await;
    assert_eq!(bob.ctrl(0).await.0, Code::MALFORMED);
    let desc = bob.desc(&alice_id).await.1.expect("a desc");
    assert_eq!(desc.read, 2);
    gw.stop().await;
}

#[tokio::test]
async fn me_lists_the_one_to_one_topic_and_tells_of_messages_on_unattached_topics() {
    let mut gw = Gw::start().await;
    let (mut alice, alice_id) = gw.user("alice").await;
    let (mut bob, bob_id) = gw.user("bob").await;
    assert_eq!(bob.sub("me", None).await.0, Code::OK);

    // Bob is on `me` only: each new message is a `pres msg` there.
    alice.publish(&bob_id, new_id(), b"one").await;
    let p = bob.wait_for(|o| matches!(o, Out::Pres { .. })).await;
    assert_eq!(
        p,
        Out::Pres {
            topic: "me".into(),
            src: alice_id.clone(),
            what: PresWhat::Msg { seq: 1 }
        }
    );
    alice.publish(&bob_id, new_id(), b"two").await;
    let p = bob.wait_for(|o| matches!(o, Out::Pres { .. })).await;
    assert!(matches!(
        p,
        Out::Pres {
            what: PresWhat::Msg { seq: 2 },
            ..
        }
    ));

    let (code, subs) = bob.subs("me").await;
    assert_eq!(code, Code::OK);
    assert_eq!(subs.len(), 1, "{subs:?}");
    assert_eq!(subs[0].name, alice_id, "named after the peer");
    assert_eq!(
        subs[0].title, "alice",
        "titled with the peer's display name"
    );
    assert_eq!((subs[0].seq, subs[0].read, subs[0].unread), (2, 0, 2));
    assert!(subs[0].online, "alice is connected");

    // Attached to the topic, Bob gets data there and no more `pres msg`.
    assert_eq!(bob.sub(&alice_id, None).await.0, Code::OK);
    alice.publish(&bob_id, new_id(), b"three").await;
    assert_eq!(bob.data(&alice_id).await.seq, 3);
    let rest = bob.drain_for(Duration::from_millis(200)).await;
    assert!(
        !rest.iter().any(|o| matches!(
            o,
            Out::Pres {
                what: PresWhat::Msg { .. },
                ..
            }
        )),
        "{rest:?}"
    );
    bob.note(&alice_id, NoteWhat::Read, 3).await;
    // Alice's unread on `me`: bob's topic, nothing of his; her own three do not count.
    let (_, subs) = alice.subs("me").await;
    assert_eq!(subs.len(), 1);
    assert_eq!(
        (subs[0].name.as_str(), subs[0].unread),
        (bob_id.as_str(), 0)
    );
    let (_, subs) = bob.subs("me").await;
    assert_eq!(subs[0].unread, 0, "read up to 3");
    gw.stop().await;
}

#[tokio::test]
async fn the_digest_equals_the_digest_of_the_fetched_history() {
    let mut gw = Gw::start().await;
    let (mut alice, _) = gw.user("alice").await;
    let (_bob, bob_id) = gw.user("bob").await;
    for i in 1..=12 {
        alice
            .publish(&bob_id, new_id(), format!("m{i}").as_bytes())
            .await;
    }
    for last in [1u32, 5, 12, 50] {
        let id = alice.next_id();
        let (_, (code, _, params)) = alice
            .request(ClientPacket::Get(Get {
                id,
                topic: &bob_id,
                what: GetWhat::Digest { last },
            }))
            .await;
        assert_eq!(code, Code::OK);
        let Params::Digest(d) = params else {
            panic!("a digest: {params:?}");
        };
        let n = u64::from(last.min(12));
        let (code, page) = alice.history(&bob_id, 13 - n, 0, 100).await;
        assert_eq!(code, Code::OK);
        let want =
            kefu_core::digest::digest_of(page.iter().map(|m| (m.seq, m.msg_id))).expect("digest");
        assert_eq!(d, want, "last {last}");
        assert_eq!((d.count, d.first_seq, d.last_seq), (n as u32, 13 - n, 12));
    }
    // An empty topic has the all-zero digest.
    let (mut carol, _) = gw.user("carol").await;
    let (_dave, dave_id) = gw.user("dave").await;
    assert_eq!(carol.sub(&dave_id, Some(0)).await.0, Code::OK);
    let id = carol.next_id();
    let (_, (code, _, params)) = carol
        .request(ClientPacket::Get(Get {
            id,
            topic: &dave_id,
            what: GetWhat::Digest { last: 10 },
        }))
        .await;
    assert_eq!(code, Code::OK);
    let Params::Digest(d) = params else {
        panic!("{params:?}")
    };
    assert_eq!((d.count, d.first_seq, d.last_seq, d.crc), (0, 0, 0, 0));
    gw.stop().await;
}

#[tokio::test]
async fn a_group_is_created_joined_and_fans_out_to_everyone() {
    let mut gw = Gw::start().await;
    let (mut alice, alice_id) = gw.user("alice").await;
    let (mut bob, bob_id) = gw.user("bob").await;
    let (mut carol, _) = gw.user("carol").await;

    let grp = alice.new_group().await;
    assert!(grp.starts_with("grp"), "{grp}");
    let (code, params) = bob.sub(&grp, Some(0)).await;
    assert_eq!(code, Code::OK);
    assert!(matches!(params, Params::Sub { latest: 0, .. }));
    assert_eq!(carol.sub(&grp, Some(0)).await.0, Code::OK);
    // Subscribing again is "not modified".
    assert_eq!(carol.sub(&grp, Some(0)).await.0, Code::NOT_MODIFIED);

    alice.publish(&grp, new_id(), b"from alice").await;
    bob.publish(&grp, new_id(), b"from bob").await;
    for c in [&mut alice, &mut bob, &mut carol] {
        let a = c.data(&grp).await;
        let b = c.data(&grp).await;
        assert_eq!((a.seq, a.from.as_str()), (1, alice_id.as_str()));
        assert_eq!((b.seq, b.from.as_str()), (2, bob_id.as_str()));
        c.ack(&grp, 2).await;
    }
    let (code, subs) = alice.subs(&grp).await;
    assert_eq!(code, Code::OK);
    assert_eq!(subs.len(), 3);

    // Carol leaves for good: she gets nothing more, the others still do.
    let id = carol.next_id();
    let (code, ..) = carol
        .call(
            id,
            ClientPacket::Leave(kefu_core::proto::Leave {
                id,
                topic: &grp,
                unsub: true,
            }),
        )
        .await;
    assert_eq!(code, Code::OK);
    alice.publish(&grp, new_id(), b"after carol").await;
    assert_eq!(bob.data(&grp).await.seq, 3);
    let rest = carol.drain_for(Duration::from_millis(300)).await;
    assert!(seqs(&rest, &grp).is_empty(), "{rest:?}");
    assert_eq!(alice.subs(&grp).await.1.len(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn only_the_owner_renames_a_group() {
    let mut gw = Gw::start().await;
    let (mut alice, _) = gw.user("alice").await;
    let (mut bob, _) = gw.user("bob").await;
    let grp = alice.new_group().await;
    assert_eq!(bob.sub(&grp, None).await.0, Code::OK);

    let id = alice.next_id();
    let (code, ..) = alice
        .call(
            id,
            ClientPacket::Set(Set {
                id,
                topic: &grp,
                what: SetWhat::Title("Tea club"),
            }),
        )
        .await;
    assert_eq!(code, Code::OK);
    let upd = bob.wait_for(|o| matches!(o, Out::Pres { .. })).await;
    assert!(
        matches!(
            upd,
            Out::Pres {
                what: PresWhat::Upd,
                ..
            }
        ),
        "{upd:?}"
    );

    let id = bob.next_id();
    let (code, ..) = bob
        .call(
            id,
            ClientPacket::Set(Set {
                id,
                topic: &grp,
                what: SetWhat::Title("Coffee club"),
            }),
        )
        .await;
    assert_eq!(code, Code::FORBIDDEN);
    let desc = bob.desc(&grp).await.1.expect("a desc");
    assert_eq!(desc.title, "Tea club");
    gw.stop().await;
}

#[tokio::test]
async fn a_hard_delete_by_the_owner_leaves_tombstones_at_the_same_seqs() {
    let mut gw = Gw::start().await;
    let (mut alice, _) = gw.user("alice").await;
    let (mut bob, _) = gw.user("bob").await;
    let grp = alice.new_group().await;
    assert_eq!(bob.sub(&grp, None).await.0, Code::OK);
    for i in 1..=5 {
        alice
            .publish(&grp, new_id(), format!("m{i}").as_bytes())
            .await;
    }

    // Only the owner deletes for everyone.
    let del = |id, hard| {
        ClientPacket::Del(Del {
            id,
            topic: &grp,
            what: DelWhat::Msg {
                first: 2,
                last: 3,
                hard,
            },
        })
    };
    let id = bob.next_id();
    assert_eq!(bob.call(id, del(id, true)).await.0, Code::FORBIDDEN);
    let id = alice.next_id();
    assert_eq!(alice.call(id, del(id, true)).await.0, Code::OK);

    for c in [&mut alice, &mut bob] {
        let (code, page) = c.history(&grp, 1, 0, 10).await;
        assert_eq!(code, Code::OK);
        let got: Vec<_> = page
            .iter()
            .map(|m| (m.seq, m.head.mime.as_str(), m.content.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (1, "", b"m1".to_vec()),
                (2, "kefu/deleted", Vec::new()),
                (3, "kefu/deleted", Vec::new()),
                (4, "", b"m4".to_vec()),
                (5, "", b"m5".to_vec()),
            ]
        );
    }
    // The next message still gets the next seq.
    let (_, params) = alice.publish(&grp, new_id(), b"m6").await;
    assert!(matches!(params, Params::Pub { seq: 6, .. }));

    // A reconnecting subscriber resuming from 0 is pushed the tombstones too, gapless.
    let mut bob2 = Raw::connect(gw.tcp).await;
    bob2.hi().await;
    assert_eq!(bob2.login("bob", "secret-pass").await.0, Code::OK);
    assert_eq!(bob2.sub(&grp, Some(0)).await.0, Code::OK);
    let got = seqs(&bob2.drain_for(Duration::from_millis(500)).await, &grp);
    let set: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(set, (1..=6).collect::<BTreeSet<_>>(), "{got:?}");
    gw.stop().await;
}

#[tokio::test]
async fn a_groups_subscriber_list_does_not_count_ones_own_messages_as_unread() {
    let mut gw = Gw::start().await;
    let (mut alice, alice_id) = gw.user("alice").await;
    let (mut bob, bob_id) = gw.user("bob").await;
    let grp = alice.new_group().await;
    assert_eq!(bob.sub(&grp, None).await.0, Code::OK);
    for i in 1..=3 {
        alice
            .publish(&grp, new_id(), format!("a{i}").as_bytes())
            .await;
    }
    bob.publish(&grp, new_id(), b"b1").await;
    for c in [&mut alice, &mut bob] {
        let (code, subs) = c.subs(&grp).await;
        assert_eq!(code, Code::OK);
        let unread = |u: &str| subs.iter().find(|s| s.name == u).map(|s| s.unread);
        assert_eq!(unread(&alice_id), Some(1), "only bob's message: {subs:?}");
        assert_eq!(unread(&bob_id), Some(3), "only alice's messages: {subs:?}");
    }
    gw.stop().await;
}
