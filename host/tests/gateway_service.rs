//! Customer service over real TCP: consultations are handed to the least-loaded Online agent,
//! wait while nobody is Online, move on transfer (the old agent loses write access), end on
//! close; supervisors join; customers cannot act as agents; a restart restores the desk.

mod support;

use kefu_core::proto::{ActionWhat, AgentStatus, Code, PresWhat};
use kefu_host::gateway::wire::{Out, Params};
use support::{Gw, Raw, add_user, new_id};

const PW: &str = "agent-pass";

/// A data folder with agents `a1`, `a2` and supervisor `boss`; their ids.
fn staffed() -> (tempfile::TempDir, String, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let a1 = add_user(dir.path(), "a1", PW, &["--agent"]);
    let a2 = add_user(dir.path(), "a2", PW, &["--agent"]);
    let boss = add_user(dir.path(), "boss", PW, &["--supervisor"]);
    (dir, a1, a2, boss)
}

/// An agent logged in, attached to `me`, with `status` set.
async fn agent(gw: &Gw, login: &str, status: AgentStatus) -> Raw {
    let (mut c, _) = gw.login(login, PW).await;
    assert_eq!(c.sub("me", None).await.0, Code::OK);
    set_status(&mut c, status).await;
    c
}

async fn set_status(c: &mut Raw, status: AgentStatus) {
    let (code, text, _) = c.action(ActionWhat::Status(status)).await;
    assert_eq!(code, Code::OK, "status {status:?}: {text}");
}

/// A new customer (online signup) attached to `me`.
async fn customer(gw: &Gw, login: &str) -> (Raw, String) {
    let (mut c, id) = gw.user(login).await;
    assert_eq!(c.sub("me", None).await.0, Code::OK);
    (c, id)
}

/// Opens a consultation; (topic, assigned agent or "").
async fn open(c: &mut Raw) -> (String, String) {
    match c.action(ActionWhat::Open { desk: "" }).await {
        (Code::CREATED, _, Params::Topic { name, peer }) => {
            assert!(name.starts_with("cns"), "a consultation topic: {name}");
            (name, peer)
        }
        other => panic!("open failed: {other:?}"),
    }
}

/// Waits for `pres Assigned` of `topic` on `me`.
async fn assigned(c: &mut Raw, topic: &str) {
    c.wait_for(|o| {
        matches!(o, Out::Pres { topic: t, src, what: PresWhat::Assigned }
            if t == "me" && src == topic)
    })
    .await;
}

/// Publishes text and returns the code.
async fn say(c: &mut Raw, topic: &str, text: &str) -> Code {
    c.publish(topic, new_id(), text.as_bytes()).await.0
}

/// The contents of the topic's history as the client sees it.
async fn history(c: &mut Raw, topic: &str) -> Vec<String> {
    let (code, page) = c.history(topic, 1, 0, 100).await;
    assert_eq!(code, Code::OK, "history of {topic}");
    page.iter()
        .map(|m| String::from_utf8_lossy(&m.content).into_owned())
        .collect()
}

#[tokio::test]
async fn consultations_balance_by_load_and_flow_through_chat_transfer_join_and_close() {
    let (dir, a1_id, a2_id, _) = staffed();
    let mut gw = Gw::start_in(dir, |_| {}).await;
    let mut a1 = agent(&gw, "a1", AgentStatus::Online).await;
    let mut a2 = agent(&gw, "a2", AgentStatus::Online).await;

    // Three customers: the first two go to different agents, the third to either; loads 2 + 1.
    let (mut c1, c1_id) = customer(&gw, "c1").await;
    let (mut c2, _) = customer(&gw, "c2").await;
    let (mut c3, _) = customer(&gw, "c3").await;
    let (t1, p1) = open(&mut c1).await;
    let (t2, p2) = open(&mut c2).await;
    let (t3, p3) = open(&mut c3).await;
    for p in [&p1, &p2, &p3] {
        assert!(*p == a1_id || *p == a2_id, "assigned to an agent: {p:?}");
    }
    assert_ne!(p1, p2, "the second customer goes to the idle agent");
    let a1_load = [&p1, &p2, &p3].iter().filter(|p| ***p == a1_id).count();
    assert!(
        a1_load == 1 || a1_load == 2,
        "loads 2 + 1, a1 has {a1_load}"
    );
    // Each agent is told on `me`.
    for (t, p) in [(&t1, &p1), (&t2, &p2), (&t3, &p3)] {
        let who = if *p == a1_id { &mut a1 } else { &mut a2 };
        assigned(who, t).await;
    }

    // Customer and agent chat in the consultation.
    let (x, x_id, y, y_id) = if p1 == a1_id {
        (&mut a1, a1_id.clone(), &mut a2, a2_id.clone())
    } else {
        (&mut a2, a2_id.clone(), &mut a1, a1_id.clone())
    };
    assert_eq!(c1.sub(&t1, Some(0)).await.0, Code::OK);
    assert_eq!(x.sub(&t1, Some(0)).await.0, Code::OK);
    assert_eq!(
        say(&mut c1, &t1, "hello, my order is late").await,
        Code::ACCEPTED
    );
    let m = x.data(&t1).await;
    assert_eq!((m.seq, m.from.as_str()), (1, c1_id.as_str()));
    assert_eq!(say(x, &t1, "let me check").await, Code::ACCEPTED);
    assert_eq!(
        c1.data(&t1).await.seq,
        1,
        "the customer's own message comes back too"
    );
    let m = c1.data(&t1).await;
    assert_eq!((m.seq, &m.content[..]), (2, &b"let me check"[..]));
    // Another customer cannot read or write in it.
    assert_eq!(c2.sub(&t1, Some(0)).await.0, Code::FORBIDDEN);
    assert_eq!(say(&mut c2, &t1, "intruder").await, Code::FORBIDDEN);

    // Transfer to the other agent: the old one may no longer write, the new one sees history.
    match x
        .action(ActionWhat::Transfer {
            topic: &t1,
            to: &y_id,
        })
        .await
    {
        (Code::OK, _, Params::Topic { name, peer }) => {
            assert_eq!((name, peer), (t1.clone(), y_id.clone()))
        }
        other => panic!("transfer failed: {other:?}"),
    }
    assigned(y, &t1).await;
    assert_eq!(say(x, &t1, "still here?").await, Code::FORBIDDEN);
    assert_eq!(y.sub(&t1, Some(0)).await.0, Code::OK);
    assert_eq!(
        history(y, &t1).await,
        ["hello, my order is late", "let me check"]
    );
    assert_eq!(say(y, &t1, "I take over").await, Code::ACCEPTED);
    assert_eq!(c1.data(&t1).await.content, b"I take over");
    // Only the current agent (or a supervisor) transfers.
    let (code, ..) = x
        .action(ActionWhat::Transfer {
            topic: &t1,
            to: &x_id,
        })
        .await;
    assert_eq!(code, Code::FORBIDDEN);

    // A supervisor joins and reads; a customer cannot join, set a status or take customers.
    let (mut boss, _) = gw.login("boss", PW).await;
    assert_eq!(
        boss.action(ActionWhat::Join { topic: &t1 }).await.0,
        Code::OK
    );
    assert_eq!(history(&mut boss, &t1).await.len(), 3);
    assert_eq!(
        c2.action(ActionWhat::Join { topic: &t1 }).await.0,
        Code::FORBIDDEN
    );
    assert_eq!(
        c2.action(ActionWhat::Status(AgentStatus::Online)).await.0,
        Code::FORBIDDEN
    );
    assert_eq!(c2.action(ActionWhat::TakeNext).await.0, Code::FORBIDDEN);
    assert_eq!(
        boss.action(ActionWhat::Join { topic: "grpnosuch" }).await.0,
        Code::NOT_FOUND
    );

    // The customer closes: nobody writes there any more.
    assert_eq!(
        c1.action(ActionWhat::Close { topic: &t1 }).await.0,
        Code::OK
    );
    assert_eq!(say(&mut c1, &t1, "thanks").await, Code::CONFLICT);
    assert_eq!(say(y, &t1, "bye").await, Code::CONFLICT);
    assert_eq!(say(&mut boss, &t1, "closing note").await, Code::CONFLICT);
    assert_eq!(
        history(&mut c1, &t1).await.len(),
        3,
        "history stays readable"
    );
    let (code, ..) = c1.action(ActionWhat::Close { topic: &t1 }).await;
    assert_ne!(code, Code::OK, "closing twice is refused");
    gw.stop().await;
}

#[tokio::test]
async fn busy_agents_get_nothing_new_and_waiting_customers_go_to_whoever_comes_online() {
    let (dir, a1_id, a2_id, _) = staffed();
    let mut gw = Gw::start_in(dir, |_| {}).await;
    let mut a1 = agent(&gw, "a1", AgentStatus::Online).await;
    let mut a2 = agent(&gw, "a2", AgentStatus::Busy).await;

    // a2 is Busy: everything goes to a1.
    for i in 0..2 {
        let (mut c, _) = customer(&gw, &format!("early{i}")).await;
        let (t, peer) = open(&mut c).await;
        assert_eq!(peer, a1_id, "the busy agent gets none");
        assigned(&mut a1, &t).await;
    }

    // Nobody Online: the consultation waits, and the customer can already write in it.
    set_status(&mut a1, AgentStatus::Away).await;
    let (mut w, _) = customer(&gw, "waiter").await;
    let (tw, peer) = open(&mut w).await;
    assert_eq!(peer, "", "nobody online: it waits");
    assert_eq!(say(&mut w, &tw, "anyone there?").await, Code::ACCEPTED);
    // Agents cannot take it over on their own.
    assert_eq!(a2.sub(&tw, Some(0)).await.0, Code::FORBIDDEN);

    // a2 comes Online and gets it, with what the customer wrote; the customer hears of it.
    set_status(&mut a2, AgentStatus::Online).await;
    assigned(&mut a2, &tw).await;
    w.wait_for(|o| matches!(o, Out::Pres { src, what: PresWhat::Upd, .. } if *src == tw))
        .await;
    assert_eq!(a2.sub(&tw, Some(0)).await.0, Code::OK);
    assert_eq!(a2.data(&tw).await.content, b"anyone there?");

    // TakeNext: a waiting customer taken by a Busy agent explicitly; then nothing waits.
    set_status(&mut a2, AgentStatus::Busy).await;
    let (mut n, n_id) = customer(&gw, "next").await;
    let (tn, peer) = open(&mut n).await;
    assert_eq!(peer, "");
    match a1.action(ActionWhat::TakeNext).await {
        (Code::OK, _, Params::Topic { name, peer }) => assert_eq!((name, peer), (tn.clone(), n_id)),
        other => panic!("take next failed: {other:?}"),
    }
    assigned(&mut a1, &tn).await;
    assert_eq!(a1.sub(&tn, Some(0)).await.0, Code::OK);
    assert_eq!(say(&mut a1, &tn, "hi, I am here").await, Code::ACCEPTED);
    assert_eq!(a1.action(ActionWhat::TakeNext).await.0, Code::NOT_FOUND);
    // Offline agents take nothing.
    set_status(&mut a2, AgentStatus::Offline).await;
    let (mut late, _) = customer(&gw, "late").await;
    let (_, peer) = open(&mut late).await;
    assert_eq!(peer, "");
    assert_ne!(a2.action(ActionWhat::TakeNext).await.0, Code::OK);
    // Transfer to an agent who is not available is refused.
    let (code, ..) = a1
        .action(ActionWhat::Transfer {
            topic: &tn,
            to: &a2_id,
        })
        .await;
    assert_eq!(code, Code::CONFLICT);
    gw.stop().await;
}

#[tokio::test]
async fn open_consultations_survive_a_restart_and_a_waiting_one_goes_to_the_first_agent_online() {
    let (dir, a1_id, _, _) = staffed();
    let mut gw = Gw::start_in(dir, |_| {}).await;
    let (mut active, _) = customer(&gw, "active").await;
    let (mut waiting, _) = customer(&gw, "waiting").await;
    let (mut closed, _) = customer(&gw, "closed").await;

    let mut a1 = agent(&gw, "a1", AgentStatus::Online).await;
    let (ta, peer) = open(&mut active).await;
    assert_eq!(peer, a1_id);
    assert_eq!(
        say(&mut active, &ta, "before the restart").await,
        Code::ACCEPTED
    );
    let (tc, _) = open(&mut closed).await;
    assert_eq!(
        closed.action(ActionWhat::Close { topic: &tc }).await.0,
        Code::OK
    );
    set_status(&mut a1, AgentStatus::Away).await;
    let (tw, peer) = open(&mut waiting).await;
    assert_eq!(peer, "");
    drop((a1, active, waiting, closed));

    gw.restart().await;

    // The active consultation is still a1's: both sides write, history is there.
    let (mut active, _) = gw.login("active", "secret-pass").await;
    let mut a1 = agent(&gw, "a1", AgentStatus::Busy).await;
    assert_eq!(
        say(&mut active, &ta, "after the restart").await,
        Code::ACCEPTED
    );
    assert_eq!(say(&mut a1, &ta, "welcome back").await, Code::ACCEPTED);
    assert_eq!(
        history(&mut a1, &ta).await,
        ["before the restart", "after the restart", "welcome back"]
    );
    // The closed one stays closed.
    let (mut closed, _) = gw.login("closed", "secret-pass").await;
    assert_eq!(say(&mut closed, &tc, "hello?").await, Code::CONFLICT);

    // The waiting one goes to the first agent coming Online: a2.
    let mut a2 = agent(&gw, "a2", AgentStatus::Online).await;
    assigned(&mut a2, &tw).await;
    assert_eq!(a2.sub(&tw, Some(0)).await.0, Code::OK);
    assert_eq!(
        say(&mut a2, &tw, "sorry for the wait").await,
        Code::ACCEPTED
    );
    let (mut waiting, _) = gw.login("waiting", "secret-pass").await;
    assert_eq!(history(&mut waiting, &tw).await, ["sorry for the wait"]);
    // a1 (Busy) had nothing new; a2 was handed exactly one.
    assert_eq!(a1.action(ActionWhat::TakeNext).await.0, Code::NOT_FOUND);
    gw.stop().await;
}

#[tokio::test]
async fn a_disconnected_agent_gets_nothing_and_a_supervisor_moves_and_closes_any_consultation() {
    let (dir, a1_id, a2_id, _) = staffed();
    let mut gw = Gw::start_in(dir, |_| {}).await;
    let mut a1 = agent(&gw, "a1", AgentStatus::Online).await;
    let (mut c, _) = customer(&gw, "c").await;
    let (t, peer) = open(&mut c).await;
    assert_eq!(peer, a1_id);
    assigned(&mut a1, &t).await;

    // a2 was Online, then its connection went away: new customers wait rather than go to it.
    let a2 = agent(&gw, "a2", AgentStatus::Online).await;
    drop(a2);
    set_status(&mut a1, AgentStatus::Busy).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (mut d, _) = customer(&gw, "d").await;
    let (td, peer) = open(&mut d).await;
    assert_eq!(peer, "", "an agent without a connection takes nothing");

    // a2 reconnects: its status was kept (Online), so the waiting customer is its at once.
    let (mut a2, _) = gw.login("a2", PW).await;
    assigned(&mut a2, &td).await;
    set_status(&mut a2, AgentStatus::Busy).await;

    // The supervisor moves a1's consultation to a2 (Busy: an explicit choice), then closes it.
    let (mut boss, _) = gw.login("boss", PW).await;
    match boss
        .action(ActionWhat::Transfer {
            topic: &t,
            to: &a2_id,
        })
        .await
    {
        (Code::OK, _, Params::Topic { peer, .. }) => assert_eq!(peer, a2_id),
        other => panic!("supervisor transfer failed: {other:?}"),
    }
    assigned(&mut a2, &t).await;
    // The old agent is out: it cannot come back in by itself.
    a1.wait_for(|o| matches!(o, Out::Pres { src, what: PresWhat::Gone, .. } if *src == t))
        .await;
    assert_eq!(a1.sub(&t, Some(0)).await.0, Code::FORBIDDEN);
    assert_eq!(say(&mut a2, &t, "a2 here").await, Code::ACCEPTED);
    assert_eq!(
        a1.action(ActionWhat::TakeNext).await.0,
        Code::NOT_FOUND,
        "nothing waits"
    );
    assert_eq!(
        boss.action(ActionWhat::Close { topic: &t }).await.0,
        Code::OK
    );
    assert_eq!(say(&mut c, &t, "hello?").await, Code::CONFLICT);
    // A closed consultation cannot be transferred or joined into again.
    let (code, ..) = boss
        .action(ActionWhat::Transfer {
            topic: &t,
            to: &a1_id,
        })
        .await;
    assert_ne!(code, Code::OK);
    gw.stop().await;
}

#[tokio::test]
async fn a_full_agent_takes_no_more_and_its_restored_load_still_counts_after_a_restart() {
    let (dir, a1_id, _, _) = staffed();
    let mut gw = Gw::start_in(dir, |cfg| cfg.max_agent_load = 1).await;
    let mut a1 = agent(&gw, "a1", AgentStatus::Online).await;
    let (mut first, _) = customer(&gw, "first").await;
    let (mut second, _) = customer(&gw, "second").await;
    let (t1, peer) = open(&mut first).await;
    assert_eq!(peer, a1_id);
    assigned(&mut a1, &t1).await;
    let (t2, peer) = open(&mut second).await;
    assert_eq!(peer, "", "a1 is full");
    drop((a1, first, second));

    gw.restart_with(|cfg| cfg.max_agent_load = 1).await;

    // Back Online after the restart, a1 is still full: the second customer keeps waiting.
    let mut a1 = agent(&gw, "a1", AgentStatus::Online).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !a1.backlog.iter().any(|o| matches!(
            o,
            Out::Pres {
                what: PresWhat::Assigned,
                ..
            }
        )),
        "no assignment beyond the load limit: {:?}",
        a1.backlog
    );
    // The first closes: the freed slot goes to the second at once.
    let (mut first, _) = gw.login("first", "secret-pass").await;
    assert_eq!(
        first.action(ActionWhat::Close { topic: &t1 }).await.0,
        Code::OK
    );
    assigned(&mut a1, &t2).await;
    assert_eq!(say(&mut a1, &t2, "your turn").await, Code::ACCEPTED);
    gw.stop().await;
}
