//! The client SDK against a real gateway on 127.0.0.1, one story per test: chat both ways,
//! publish states, policy refusal and resend, filter, history paging, read receipts and unread
//! counts, dropping a subscription, customer-service actions.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use kefu_host::client::{
    AgentStatus, Client, ClientConfig, ClientError, ClientEvent, EngineError, FailReason,
    MessageHead, MessageSnapshot, MessageState, PresWhat, Subscription, TopicEvent,
};
use support::{Gw, add_user};

const PW: &str = "secret-pass";
const WAIT: Duration = Duration::from_secs(10);

/// A fresh account (online signup); its user id.
async fn account(gw: &Gw, login: &str) -> String {
    gw.user(login).await.1
}

fn config(gw: &Gw, login: &str, password: &str) -> ClientConfig {
    support::client::config(format!("tcp://{}", gw.tcp), login, password, WAIT)
}

async fn client(gw: &Gw, login: &str) -> Client {
    Client::connect(config(gw, login, PW))
        .await
        .expect("logs in")
}

/// The next event matching `pred`, skipping others.
async fn next(sub: &mut Subscription, pred: impl Fn(&TopicEvent) -> bool) -> TopicEvent {
    support::client::next(sub, WAIT, pred).await
}

/// The next `n` live messages from others.
async fn incoming(sub: &mut Subscription, n: usize) -> Vec<MessageSnapshot> {
    let mut got = Vec::new();
    while got.len() < n {
        if let TopicEvent::Added { message, history } = next(
            sub,
            |e| matches!(e, TopicEvent::Added { message, .. } if !message.outgoing),
        )
        .await
        {
            assert!(!history, "a live message is not history");
            got.push(message);
        }
    }
    got
}

/// Waits until the own message `id` reaches a state accepted by `pred`; its seq.
async fn changed(
    sub: &mut Subscription,
    id: kefu_host::client::MsgId,
) -> (MessageState, Option<u64>) {
    match next(
        sub,
        |e| matches!(e, TopicEvent::Changed { id: i, .. } if *i == id),
    )
    .await
    {
        TopicEvent::Changed { state, seq, .. } => (state, seq),
        _ => unreachable!(),
    }
}

async fn stored(sub: &mut Subscription, id: kefu_host::client::MsgId) -> u64 {
    loop {
        if let (MessageState::Sent, Some(seq)) = changed(sub, id).await {
            return seq;
        }
    }
}

fn texts(msgs: &[MessageSnapshot]) -> Vec<String> {
    msgs.iter().map(|m| m.text().into_owned()).collect()
}

#[tokio::test]
async fn agent_and_customer_chat_both_ways_in_order_exactly_once() {
    let gw = Gw::start().await;
    let alice_id = account(&gw, "alice").await;
    let bob_id = account(&gw, "bob").await;
    let alice = client(&gw, "alice").await;
    let bob = client(&gw, "bob").await;
    assert_eq!(alice.user(), alice_id);
    let mut a = alice.subscribe(&bob_id).unwrap();
    let mut b = bob.subscribe(&alice_id).unwrap();
    next(&mut a, |e| matches!(e, TopicEvent::Subscribed { .. })).await;
    next(&mut b, |e| matches!(e, TopicEvent::Subscribed { .. })).await;

    for i in 0..20 {
        alice.publish(&bob_id, format!("a{i}")).unwrap();
        bob.publish(&alice_id, format!("b{i}")).unwrap();
    }
    let at_bob = incoming(&mut b, 20).await;
    let at_alice = incoming(&mut a, 20).await;
    let want_a: Vec<String> = (0..20).map(|i| format!("a{i}")).collect();
    let want_b: Vec<String> = (0..20).map(|i| format!("b{i}")).collect();
    assert_eq!(texts(&at_bob), want_a);
    assert_eq!(texts(&at_alice), want_b);
    assert!(
        at_bob
            .iter()
            .all(|m| m.from == alice_id && m.seq().is_some())
    );

    // Both views hold all 40 once, in seq order (own messages included), and agree.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let va = alice.messages(&bob_id);
    let vb = bob.messages(&alice_id);
    assert_eq!(va.len(), 40, "alice's view: {:?}", texts(&va));
    let seqs: Vec<u64> = va.iter().map(|m| m.seq().expect("all stored")).collect();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
    let ids_a: Vec<_> = va.iter().map(|m| m.id).collect();
    let ids_b: Vec<_> = vb.iter().map(|m| m.id).collect();
    assert_eq!(ids_a, ids_b, "both sides see the same conversation");
    assert!(
        b.try_recv()
            .is_none_or(|e| !matches!(e, TopicEvent::Added { .. })),
        "nothing doubled"
    );
    let m = alice.metrics();
    assert_eq!(m.sent, 20);
    assert_eq!(m.received, 20);
    assert_eq!(m.send_success_rate, 1.0);
    assert!(m.rtt_samples > 0 && m.rtt_p99.is_some());
}

#[tokio::test]
async fn publish_returns_the_local_message_at_once_and_it_becomes_sent_with_a_seq() {
    let gw = Gw::start().await;
    account(&gw, "alice").await;
    let bob_id = account(&gw, "bob").await;
    let alice = client(&gw, "alice").await;
    let mut a = alice.subscribe(&bob_id).unwrap();

    let local = alice.publish(&bob_id, "hello").unwrap();
    assert_eq!(local.state, MessageState::Queued, "nothing on the wire yet");
    assert!(!local.position.is_stored(), "a virtual position");
    let snap = alice.message(&local.id).expect("in the view at once");
    assert_eq!((snap.seq(), snap.text().as_ref()), (None, "hello"));
    match next(&mut a, |e| matches!(e, TopicEvent::Added { .. })).await {
        TopicEvent::Added { message, history } => {
            assert_eq!(message.id, local.id);
            assert!(!history && message.outgoing);
        }
        _ => unreachable!(),
    }
    let seq = stored(&mut a, local.id).await;
    assert_eq!(seq, 1);
    let snap = alice.message(&local.id).unwrap();
    assert_eq!(snap.seq(), Some(1));
    assert_eq!(snap.id, local.id, "the id never changes");

    // A message with a business type and a reply reference keeps them.
    let head = MessageHead {
        mime: "order".into(),
        reply_to: Some(1),
    };
    let l2 = alice.publish_with(&bob_id, &head, b"{\"sku\":1}").unwrap();
    stored(&mut a, l2.id).await;
    let s2 = alice.message(&l2.id).unwrap();
    assert_eq!((s2.mime.as_str(), s2.reply_to), ("order", Some(1)));

    // Bad input is a typed error, not a panic.
    assert!(matches!(
        alice.publish("bad topic!", "x"),
        Err(ClientError::Engine(EngineError::BadTopic))
    ));
    assert!(matches!(
        alice.publish(&bob_id, vec![0u8; 20 * 1024]),
        Err(ClientError::Engine(EngineError::TooLarge))
    ));
}

#[tokio::test]
async fn a_policy_refusal_leaves_the_message_failed_in_place_and_resend_keeps_the_id() {
    let gw = Gw::start_with(|c| c.words = vec!["forbidden".into()]).await;
    account(&gw, "alice").await;
    let bob_id = account(&gw, "bob").await;
    let alice = client(&gw, "alice").await;
    let mut a = alice.subscribe(&bob_id).unwrap();

    let ok1 = alice.publish(&bob_id, "fine").unwrap();
    let bad = alice.publish(&bob_id, "a forbidden word").unwrap();
    let ok2 = alice.publish(&bob_id, "fine again").unwrap();
    assert!(ok1.position < bad.position && bad.position < ok2.position);
    // The refusal may come before the acks of the others (those wait for the commit).
    let mut outcome = std::collections::HashMap::new();
    while outcome.len() < 3 {
        if let TopicEvent::Changed { id, state, seq } = next(
            &mut a,
            |e| matches!(e, TopicEvent::Changed { state, .. } if *state != MessageState::Sending),
        )
        .await
        {
            outcome.insert(id, (state, seq));
        }
    }
    assert_eq!(
        outcome[&bad.id],
        (
            MessageState::Failed(FailReason::Refused { code: 422 }),
            None
        )
    );
    assert_eq!(outcome[&ok1.id], (MessageState::Sent, Some(1)));
    assert_eq!(outcome[&ok2.id], (MessageState::Sent, Some(2)));

    // It keeps its virtual position (after seq 0, the last seq known when it was sent): the
    // core orders it by that position, before seq 1 which was stored after it was sent.
    let view = alice.messages(&bob_id);
    assert_eq!(view.len(), 3);
    let failed = view
        .iter()
        .find(|m| m.id == bad.id)
        .expect("still in the view");
    assert_eq!(failed.position, bad.position, "failed in place");
    assert_eq!(
        failed.state,
        MessageState::Failed(FailReason::Refused { code: 422 })
    );
    assert_eq!(
        view.iter().filter_map(|m| m.seq()).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(alice.metrics().failed, 1);

    // Resend: same id, queued again, refused again by the same policy.
    alice.resend(&bad.id).unwrap();
    let (state, _) = changed(&mut a, bad.id).await;
    assert_eq!(state, MessageState::Queued);
    let (state, _) = changed(&mut a, bad.id).await;
    assert!(matches!(state, MessageState::Failed(_)));
    assert_eq!(alice.message(&bad.id).unwrap().id, bad.id);
    // A stored message cannot be resent or discarded; a failed one can be discarded.
    assert!(alice.resend(&ok1.id).is_err());
    alice.discard(&bad.id).unwrap();
    assert!(alice.message(&bad.id).is_none());
    assert!(alice.discard(&bad.id).is_err());
}

fn no_bots(d: &kefu_core::proto::Data<'_>) -> bool {
    d.head.mime != "bot"
}

#[tokio::test]
async fn the_filter_hides_a_class_of_messages() {
    let gw = Gw::start().await;
    let alice_id = account(&gw, "alice").await;
    let bob_id = account(&gw, "bob").await;
    let alice = client(&gw, "alice").await;
    let mut cfg = config(&gw, "bob", PW);
    cfg.filter = Some(no_bots);
    let bob = Client::connect(cfg).await.unwrap();
    let mut b = bob.subscribe(&alice_id).unwrap();
    next(&mut b, |e| matches!(e, TopicEvent::Subscribed { .. })).await;

    let bot = MessageHead {
        mime: "bot".into(),
        reply_to: None,
    };
    alice.publish(&bob_id, "one").unwrap();
    alice.publish_with(&bob_id, &bot, "beep").unwrap();
    alice.publish(&bob_id, "two").unwrap();
    alice.publish_with(&bob_id, &bot, "boop").unwrap();
    alice.publish(&bob_id, "three").unwrap();
    let got = incoming(&mut b, 3).await;
    assert_eq!(texts(&got), ["one", "two", "three"]);
    assert_eq!(
        got.iter().map(|m| m.seq().unwrap()).collect::<Vec<_>>(),
        [1, 3, 5]
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(texts(&bob.messages(&alice_id)), ["one", "two", "three"]);
    assert_eq!(bob.metrics().filtered, 2);
}

#[tokio::test]
async fn history_pages_in_older_messages_in_order() {
    let gw = Gw::start().await;
    let alice_id = account(&gw, "alice").await;
    let bob_id = account(&gw, "bob").await;
    let alice = client(&gw, "alice").await;
    let mut a = alice.subscribe(&bob_id).unwrap();
    let mut last = None;
    for i in 1..=30 {
        last = Some(alice.publish(&bob_id, format!("m{i}")).unwrap().id);
    }
    stored(&mut a, last.unwrap()).await;

    // Bob resumes from a mark he persisted: 26..=30 come live, older ones by paging.
    let bob = client(&gw, "bob").await;
    let mut b = bob.subscribe_from(&alice_id, 25, 25).unwrap();
    let live = incoming(&mut b, 5).await;
    assert_eq!(texts(&live), ["m26", "m27", "m28", "m29", "m30"]);
    assert!(bob.load_history(&alice_id, 10).await.unwrap());
    let view = bob.messages(&alice_id);
    let seqs: Vec<u64> = view.iter().filter_map(|m| m.seq()).collect();
    assert_eq!(seqs, (16..=30).collect::<Vec<_>>());
    let mut paged = 0;
    while let Some(ev) = b.try_recv() {
        if let TopicEvent::Added { history: true, .. } = ev {
            paged += 1;
        }
    }
    assert_eq!(paged, 10, "each paged message is announced as history");
    assert!(bob.load_history(&alice_id, 10).await.unwrap());
    assert!(bob.load_history(&alice_id, 10).await.unwrap());
    let view = bob.messages(&alice_id);
    assert_eq!(
        view.iter().map(|m| m.seq().unwrap()).collect::<Vec<_>>(),
        (1..=30).collect::<Vec<_>>()
    );
    assert_eq!(view[0].text(), "m1");
    assert!(
        !bob.load_history(&alice_id, 10).await.unwrap(),
        "nothing older than seq 1"
    );
    assert!(matches!(
        bob.load_history("usrUnknown", 10).await,
        Err(ClientError::UnknownTopic(_))
    ));
}

#[tokio::test]
async fn marking_read_updates_unread_counts_and_the_peer_sees_the_receipt() {
    let gw = Gw::start().await;
    let alice_id = account(&gw, "alice").await;
    let bob_id = account(&gw, "bob").await;
    let alice = client(&gw, "alice").await;
    let bob = client(&gw, "bob").await;
    let mut a = alice.subscribe(&bob_id).unwrap();
    let mut b = bob.subscribe(&alice_id).unwrap();
    next(&mut b, |e| matches!(e, TopicEvent::Subscribed { .. })).await;
    let mut bob_events = bob.events();

    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(alice.publish(&bob_id, format!("q{i}")).unwrap().id);
    }
    incoming(&mut b, 3).await;
    next(&mut b, |e| matches!(e, TopicEvent::Unread { count: 3 })).await;
    assert_eq!(bob.unread(&alice_id), 3);
    assert_eq!(bob.total_unread(), 3);
    assert_eq!(alice.unread(&bob_id), 0, "own messages are never unread");
    let total = tokio::time::timeout(WAIT, async {
        while let Some(ev) = bob_events.next().await {
            if let ClientEvent::Unread { total, .. } = ev
                && total == 3
            {
                return total;
            }
        }
        0
    })
    .await
    .unwrap();
    assert_eq!(total, 3);

    bob.typing(&alice_id).unwrap();
    match next(&mut a, |e| matches!(e, TopicEvent::Typing { .. })).await {
        TopicEvent::Typing { from } => assert_eq!(from, bob_id),
        _ => unreachable!(),
    }
    bob.mark_read(&alice_id, 2).unwrap();
    assert_eq!(bob.unread(&alice_id), 1);
    match next(&mut a, |e| {
        matches!(e, TopicEvent::Receipt { read: true, .. })
    })
    .await
    {
        TopicEvent::Receipt { from, seq, .. } => {
            assert_eq!((from.as_str(), seq), (bob_id.as_str(), 2))
        }
        _ => unreachable!(),
    }
    let states: Vec<MessageState> = alice.messages(&bob_id).iter().map(|m| m.state).collect();
    assert_eq!(states[..2], [MessageState::Read, MessageState::Read]);
    assert_ne!(states[2], MessageState::Read, "seq 3 is not read yet");
    assert!(matches!(
        bob.mark_read("usrNobody", 1),
        Err(ClientError::UnknownTopic(_))
    ));
}

#[tokio::test]
async fn dropping_a_subscription_leaves_the_topic() {
    let gw = Gw::start().await;
    let alice_id = account(&gw, "alice").await;
    let bob_id = account(&gw, "bob").await;
    let alice = client(&gw, "alice").await;
    let bob = client(&gw, "bob").await;
    let mut b = bob.subscribe(&alice_id).unwrap();
    next(&mut b, |e| matches!(e, TopicEvent::Subscribed { .. })).await;
    alice.publish(&bob_id, "while subscribed").unwrap();
    incoming(&mut b, 1).await;
    drop(b);
    tokio::time::sleep(Duration::from_millis(300)).await;

    alice.publish(&bob_id, "after leaving").unwrap();
    // Bob hears of it only as a count on `me`, the message is not pushed to him.
    tokio::time::timeout(WAIT, async {
        while bob.unread(&alice_id) < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("unread grows through me");
    assert_eq!(texts(&bob.messages(&alice_id)), ["while subscribed"]);

    // Subscribing again resumes after the mark: the missed message arrives, once.
    let mut b = bob.subscribe(&alice_id).unwrap();
    let got = incoming(&mut b, 1).await;
    assert_eq!(texts(&got), ["after leaving"]);
}

#[tokio::test]
async fn customer_service_actions_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let a1_id = add_user(dir.path(), "a1", PW, &["--agent"]);
    let a2_id = add_user(dir.path(), "a2", PW, &["--agent"]);
    let gw = Gw::start_in(dir, |_| {}).await;
    let cust_id = account(&gw, "carol").await;
    account(&gw, "dave").await;
    let a1 = client(&gw, "a1").await;
    let a2 = client(&gw, "a2").await;
    let carol = client(&gw, "carol").await;
    let mut a1_events = a1.events();
    a1.set_status(AgentStatus::Online).await.unwrap();
    a2.set_status(AgentStatus::Away).await.unwrap();
    assert!(matches!(
        carol.set_status(AgentStatus::Online).await,
        Err(ClientError::Refused(c)) if c.0 == 403
    ));

    // Carol opens a consultation; a1 (the only Online agent) is told on `me`.
    let topic = carol.open_consultation("").await.unwrap();
    assert!(topic.starts_with("cns"), "{topic}");
    tokio::time::timeout(WAIT, async {
        while let Some(ev) = a1_events.next().await {
            if matches!(&ev, ClientEvent::Presence { src, what: PresWhat::Assigned, .. } if *src == topic) {
                return;
            }
        }
    })
    .await
    .expect("a1 is assigned");
    let mut c = carol.subscribe(&topic).unwrap();
    let mut s1 = a1.subscribe(&topic).unwrap();
    next(&mut s1, |e| matches!(e, TopicEvent::Subscribed { .. })).await;
    carol.publish(&topic, "my order is late").unwrap();
    let got = incoming(&mut s1, 1).await;
    assert_eq!(
        (got[0].text().as_ref(), got[0].from.as_str()),
        ("my order is late", cust_id.as_str())
    );
    a1.publish(&topic, "let me check").unwrap();
    assert_eq!(texts(&incoming(&mut c, 1).await), ["let me check"]);

    // Transfer to a2, who closes it.
    a2.set_status(AgentStatus::Online).await.unwrap();
    a1.transfer(&topic, &a2_id).await.unwrap();
    let mut s2 = a2.subscribe(&topic).unwrap();
    next(&mut s2, |e| matches!(e, TopicEvent::Subscribed { .. })).await;
    a2.close_consultation(&topic).await.unwrap();
    assert!(matches!(
        a2.transfer("cnsUnknown", &a1_id).await,
        Err(ClientError::UnknownTopic(_))
    ));

    // With nobody Online, dave waits in the queue until a1 takes him.
    a1.set_status(AgentStatus::Away).await.unwrap();
    a2.set_status(AgentStatus::Away).await.unwrap();
    let dave = client(&gw, "dave").await;
    let waiting = dave.open_consultation("").await.unwrap();
    let taken = a1.take_next().await.unwrap();
    assert_eq!(taken, waiting);
    assert!(
        matches!(a1.take_next().await, Err(ClientError::Refused(_))),
        "queue empty"
    );
}

#[tokio::test]
async fn wrong_credentials_fail_connect_with_a_typed_error() {
    let gw = Gw::start().await;
    account(&gw, "alice").await;
    let err = Client::connect(config(&gw, "alice", "wrong-password"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Engine(EngineError::LoginRefused(_))),
        "{err:?}"
    );
    let err = Client::start(ClientConfig::password("http://x", "a", "b"))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::BadUrl(_)));
}

#[tokio::test]
async fn the_conversation_list_names_every_topic_with_its_unread_count() {
    let gw = Gw::start().await;
    let alice_id = account(&gw, "alice").await;
    account(&gw, "bob").await;
    account(&gw, "carol").await;
    for (who, n) in [("bob", 2), ("carol", 1)] {
        let c = client(&gw, who).await;
        let mut s = c.subscribe(&alice_id).unwrap();
        let mut last = None;
        for i in 0..n {
            last = Some(c.publish(&alice_id, format!("{who} {i}")).unwrap().id);
        }
        stored(&mut s, last.unwrap()).await;
    }

    // Alice's client has followed nothing yet; the gateway still lists both conversations.
    let alice = client(&gw, "alice").await;
    assert!(!alice.topics().iter().any(|t| t.starts_with("usr")));
    let mut list = alice.conversations().await.expect("listed");
    list.sort_by(|a, b| a.title.cmp(&b.title));
    let summary: Vec<_> = list
        .iter()
        .map(|c| (c.title.as_str(), c.latest, c.read, c.unread))
        .collect();
    assert_eq!(summary, [("bob", 2, 0, 2), ("carol", 1, 0, 1)]);

    // Read on this client, listed again (the second time with the token of the first).
    let bob_topic = list[0].topic.clone();
    let mut b = alice.subscribe_from(&bob_topic, 0, 0).unwrap();
    incoming(&mut b, 2).await;
    alice.mark_read(&bob_topic, 2).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let list = alice.conversations().await.expect("listed again");
        let bob = list.iter().find(|c| c.topic == bob_topic).unwrap();
        if bob.unread == 0 {
            assert_eq!(bob.read, 2);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "read mark never listed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        alice.messages(&bob_topic).len() == 2,
        "listing does not disturb the session"
    );
}
