//! The gateway's basic promises over real TCP on 127.0.0.1: a message published by one user
//! reaches the other exactly once, in order, and a repeated `pub` is stored once.

mod support;

use kefu_core::proto::Code;
use kefu_host::gateway::wire::Params;
use support::{Gw, new_id};

#[tokio::test]
async fn a_message_from_one_user_reaches_the_other_in_order() {
    let mut gw = Gw::start().await;
    let (mut alice, alice_id) = gw.user("alice").await;
    let (mut bob, bob_id) = gw.user("bob").await;

    // Alice writes to Bob's one-to-one topic (named after Bob on her side).
    let (code, _) = alice.sub(&bob_id, Some(0)).await;
    assert_eq!(code, Code::OK);
    let (code, _) = bob.sub(&alice_id, Some(0)).await;
    assert_eq!(code, Code::OK);

    for i in 1..=20u64 {
        let (code, params) = alice
            .publish(&bob_id, new_id(), format!("m{i}").as_bytes())
            .await;
        assert_eq!(code, Code::ACCEPTED);
        assert!(matches!(params, Params::Pub { seq, dup: false, .. } if seq == i));
    }
    for i in 1..=20u64 {
        let m = bob.data(&alice_id).await;
        assert_eq!(m.seq, i);
        assert_eq!(m.content, format!("m{i}").as_bytes());
        assert_eq!(m.from, alice_id);
    }
    bob.ack(&alice_id, 20).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_pub_repeated_after_a_cut_connection_is_stored_once() {
    let mut gw = Gw::start().await;
    let (mut alice, _) = gw.user("alice").await;
    let (mut bob, bob_id) = gw.user("bob").await;
    let (code, _) = bob.sub("me", None).await;
    assert_eq!(code, Code::OK);

    let id = new_id();
    let (code, first) = alice.publish(&bob_id, id, b"once").await;
    assert_eq!(code, Code::ACCEPTED);
    drop(alice);

    // The sender never saw the answer (say); it reconnects and sends the same message again.
    let mut again = support::Raw::connect(gw.tcp).await;
    again.hi().await;
    let (code, _) = again.login("alice", "secret-pass").await;
    assert_eq!(code, Code::OK);
    let (code, second) = again.publish(&bob_id, id, b"once").await;
    assert_eq!(code, Code::ACCEPTED);
    let (
        Params::Pub {
            seq: s1, dup: d1, ..
        },
        Params::Pub {
            seq: s2, dup: d2, ..
        },
    ) = (first, second)
    else {
        panic!("pub answers carry seqs");
    };
    assert_eq!((s1, d1), (1, false));
    assert_eq!(
        (s2, d2),
        (1, true),
        "the repeat gets the seq it already has"
    );

    let (code, page) = again.history(&bob_id, 1, 0, 10).await;
    assert_eq!(code, Code::OK);
    assert_eq!(page.len(), 1, "stored once");
    gw.stop().await;
}

#[tokio::test]
async fn a_peer_sees_the_other_come_online_and_go_offline() {
    use kefu_core::proto::PresWhat;
    use kefu_host::gateway::wire::Out;

    let mut gw = Gw::start().await;
    let (mut alice, alice_id) = gw.user("alice").await;
    let (mut bob, bob_id) = gw.user("bob").await;
    let (code, _) = alice.sub(&bob_id, None).await;
    assert_eq!(code, Code::OK, "their one-to-one topic exists now");
    let (code, _) = bob.sub("me", None).await;
    assert_eq!(code, Code::OK);

    drop(alice);
    let off = bob
        .wait_for(|o| {
            matches!(
                o,
                Out::Pres {
                    what: PresWhat::Off,
                    ..
                }
            )
        })
        .await;
    assert!(
        matches!(off, Out::Pres { ref topic, ref src, .. } if topic == "me" && *src == alice_id)
    );

    let mut alice = support::Raw::connect(gw.tcp).await;
    alice.hi().await;
    let (code, _) = alice.login("alice", "secret-pass").await;
    assert_eq!(code, Code::OK);
    let on = bob
        .wait_for(|o| {
            matches!(
                o,
                Out::Pres {
                    what: PresWhat::On,
                    ..
                }
            )
        })
        .await;
    assert!(matches!(on, Out::Pres { ref src, .. } if *src == alice_id));
    gw.stop().await;
}
