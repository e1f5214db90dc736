//! The client SDK under faults, against a real gateway on 127.0.0.1: the gateway restarts on
//! its data folder, the connection is cut mid-publish (a tiny proxy in the test drops the
//! answer, then the connection), a reader that does not keep up, and the WebSocket transport.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use kefu_host::client::{
    Client, ClientConfig, ClientEvent, MessageSnapshot, MessageState, MsgId, Subscription,
    TopicEvent,
};
use support::Gw;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const PW: &str = "secret-pass";
const WAIT: Duration = Duration::from_secs(15);

async fn account(gw: &Gw, login: &str) -> String {
    gw.user(login).await.1
}

fn config(url: String, login: &str) -> ClientConfig {
    support::client::config(url, login, PW, WAIT)
}

async fn tcp_client(addr: SocketAddr, login: &str) -> Client {
    Client::connect(config(format!("tcp://{addr}"), login))
        .await
        .expect("logs in")
}

async fn next(sub: &mut Subscription, pred: impl Fn(&TopicEvent) -> bool) -> TopicEvent {
    support::client::next(sub, WAIT, pred).await
}

async fn incoming(sub: &mut Subscription, n: usize) -> Vec<MessageSnapshot> {
    let mut got = Vec::new();
    while got.len() < n {
        if let TopicEvent::Added { message, .. } = next(
            sub,
            |e| matches!(e, TopicEvent::Added { message, .. } if !message.outgoing),
        )
        .await
        {
            got.push(message);
        }
    }
    got
}

async fn stored(sub: &mut Subscription, id: MsgId) -> u64 {
    match next(
        sub,
        |e| matches!(e, TopicEvent::Changed { id: i, state: MessageState::Sent, .. } if *i == id),
    )
    .await
    {
        TopicEvent::Changed { seq, .. } => seq.expect("a stored message has a seq"),
        _ => unreachable!(),
    }
}

/// No further message from others arrives within a short while.
async fn nothing_more(sub: &mut Subscription) {
    let more = tokio::time::timeout(Duration::from_millis(400), async {
        loop {
            match sub.next().await {
                Some(TopicEvent::Added { message, .. }) if !message.outgoing => return message,
                Some(_) => {}
                None => std::future::pending().await,
            }
        }
    })
    .await;
    assert!(more.is_err(), "a message arrived twice: {more:?}");
}

fn texts(msgs: &[MessageSnapshot]) -> Vec<String> {
    msgs.iter().map(|m| m.text().into_owned()).collect()
}

/// Asserts a conversation view holds seqs 1..=n once each, all distinct ids.
fn whole(view: &[MessageSnapshot], n: u64) {
    let seqs: Vec<u64> = view.iter().filter_map(|m| m.seq()).collect();
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "{:?}", texts(view));
    let ids: HashSet<MsgId> = view.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), view.len(), "no id twice");
}

#[tokio::test]
async fn after_a_gateway_restart_nothing_is_lost_nothing_doubled_and_subscriptions_resume() {
    let mut gw = Gw::start().await;
    let alice_id = account(&gw, "alice").await;
    let bob_id = account(&gw, "bob").await;
    let (tcp, http) = (gw.tcp, gw.http);
    let alice = tcp_client(tcp, "alice").await;
    let bob = tcp_client(tcp, "bob").await;
    let mut alice_events = alice.events();
    let mut a = alice.subscribe(&bob_id).unwrap();
    let mut b = bob.subscribe(&alice_id).unwrap();
    next(&mut b, |e| matches!(e, TopicEvent::Subscribed { .. })).await;
    next(&mut a, |e| matches!(e, TopicEvent::Subscribed { .. })).await;
    for i in 0..5 {
        alice.publish(&bob_id, format!("before a{i}")).unwrap();
        bob.publish(&alice_id, format!("before b{i}")).unwrap();
    }
    incoming(&mut b, 5).await;
    incoming(&mut a, 5).await;

    gw.stop().await;
    tokio::time::timeout(WAIT, async {
        while let Some(ev) = alice_events.next().await {
            if ev == ClientEvent::Disconnected {
                return;
            }
        }
    })
    .await
    .expect("alice sees the connection go");
    let mut while_down = Vec::new();
    for i in 0..3 {
        let m = alice.publish(&bob_id, format!("down a{i}")).unwrap();
        assert_eq!(m.state, MessageState::Queued);
        while_down.push(m.id);
    }
    bob.publish(&alice_id, "down b0").unwrap();

    gw.restart_with(|c| {
        c.tcp_addr = tcp;
        c.http_addr = http;
    })
    .await;
    next(&mut b, |e| matches!(e, TopicEvent::Subscribed { .. })).await;
    let at_bob = incoming(&mut b, 3).await;
    assert_eq!(texts(&at_bob), ["down a0", "down a1", "down a2"]);
    assert_eq!(
        at_bob.iter().map(|m| m.id).collect::<Vec<_>>(),
        while_down,
        "same ids as published"
    );
    assert_eq!(texts(&incoming(&mut a, 1).await), ["down b0"]);
    nothing_more(&mut b).await;
    nothing_more(&mut a).await;
    whole(&alice.messages(&bob_id), 14);
    whole(&bob.messages(&alice_id), 14);
    assert!(alice.metrics().reconnects >= 1);
    assert!(alice.state().is_online());
}

/// A TCP proxy that can swallow the gateway's answers and cut every connection.
struct Proxy {
    addr: SocketAddr,
    drop_replies: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let drop_replies = Arc::new(AtomicBool::new(false));
        let (cut, _) = watch::channel(0u64);
        let (drop2, cut2) = (drop_replies.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = TcpStream::connect(target).await else {
                    continue;
                };
                tokio::spawn(pipe(client, upstream, drop2.clone(), cut2.subscribe()));
            }
        });
        Proxy {
            addr,
            drop_replies,
            cut,
        }
    }

    fn cut(&self) {
        self.cut.send_modify(|g| *g += 1);
    }
}

async fn pipe(
    client: TcpStream,
    upstream: TcpStream,
    drop_replies: Arc<AtomicBool>,
    mut cut: watch::Receiver<u64>,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = cr.read(&mut buf).await {
            if n == 0 || uw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = ur.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if !drop_replies.load(Ordering::SeqCst) && cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = cut.changed() => {}
    }
}

#[tokio::test]
async fn a_message_cut_off_mid_publish_is_sent_again_with_its_id_and_stored_once() {
    let gw = Gw::start().await;
    let alice_id = account(&gw, "alice").await;
    let bob_id = account(&gw, "bob").await;
    let proxy = Proxy::start(gw.tcp).await;
    let alice = tcp_client(proxy.addr, "alice").await;
    let bob = tcp_client(gw.tcp, "bob").await;
    let mut a = alice.subscribe(&bob_id).unwrap();
    let mut b = bob.subscribe(&alice_id).unwrap();
    next(&mut a, |e| matches!(e, TopicEvent::Subscribed { .. })).await;
    next(&mut b, |e| matches!(e, TopicEvent::Subscribed { .. })).await;

    // The pub reaches the gateway and is stored, but its answer never comes back.
    proxy.drop_replies.store(true, Ordering::SeqCst);
    let local = alice.publish(&bob_id, "through the storm").unwrap();
    let at_bob = incoming(&mut b, 1).await;
    assert_eq!(at_bob[0].id, local.id);
    let bob_seq = at_bob[0].seq().unwrap();
    let mine = alice.message(&local.id).unwrap();
    assert!(mine.state.awaits_ack(), "no answer yet: {:?}", mine.state);

    // The connection is cut; the client reconnects and sends it again with the same id.
    proxy.drop_replies.store(false, Ordering::SeqCst);
    proxy.cut();
    let seq = stored(&mut a, local.id).await;
    assert_eq!(
        seq, bob_seq,
        "the gateway answered with the seq it already had"
    );
    nothing_more(&mut b).await;
    let view = alice.messages(&bob_id);
    assert_eq!(view.iter().filter(|m| m.id == local.id).count(), 1);
    whole(&view, 1);
    let m = alice.metrics();
    assert!(m.reconnects >= 1 && m.sent == 1 && m.failed == 0, "{m:?}");
}

#[tokio::test]
async fn a_reader_that_falls_behind_holds_the_flow_back_and_loses_nothing() {
    let gw = Gw::start().await;
    let alice_id = account(&gw, "alice").await;
    let bob_id = account(&gw, "bob").await;
    let alice = tcp_client(gw.tcp, "alice").await;
    let mut cfg = config(format!("tcp://{}", gw.tcp), "bob");
    cfg.subscription_buffer = 4;
    let bob = Client::connect(cfg).await.unwrap();
    let mut b = bob.subscribe(&alice_id).unwrap();
    const N: usize = 200;
    let mut a = alice.subscribe(&bob_id).unwrap();
    let mut last = None;
    for i in 0..N {
        last = Some(alice.publish(&bob_id, format!("m{i}")).unwrap().id);
    }
    stored(&mut a, last.unwrap()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let taken = bob.metrics().received;
    assert!(
        (taken as usize) < N,
        "the driver stopped taking events while bob did not read ({taken} taken)"
    );
    let got = incoming(&mut b, N).await;
    let want: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(texts(&got), want, "all of them, in order, once");
    nothing_more(&mut b).await;
}

#[tokio::test]
async fn chat_works_over_websocket_and_mixed_transports() {
    let gw = Gw::start().await;
    let alice_id = account(&gw, "alice").await;
    let bob_id = account(&gw, "bob").await;
    let alice = Client::connect(config(format!("ws://{}", gw.http), "alice"))
        .await
        .expect("logs in over ws");
    let bob = tcp_client(gw.tcp, "bob").await;
    let mut a = alice.subscribe(&bob_id).unwrap();
    let mut b = bob.subscribe(&alice_id).unwrap();
    next(&mut a, |e| matches!(e, TopicEvent::Subscribed { .. })).await;
    next(&mut b, |e| matches!(e, TopicEvent::Subscribed { .. })).await;
    for i in 0..10 {
        alice.publish(&bob_id, format!("ws{i}")).unwrap();
        bob.publish(&alice_id, format!("tcp{i}")).unwrap();
    }
    let want_ws: Vec<String> = (0..10).map(|i| format!("ws{i}")).collect();
    let want_tcp: Vec<String> = (0..10).map(|i| format!("tcp{i}")).collect();
    assert_eq!(texts(&incoming(&mut b, 10).await), want_ws);
    assert_eq!(texts(&incoming(&mut a, 10).await), want_tcp);
    nothing_more(&mut a).await;
    whole(&alice.messages(&bob_id), 20);

    // A WebSocket URL with a wrong path never logs in: connect gives up, saying why.
    let mut cfg = config(format!("ws://{}/nowhere", gw.http), "alice");
    cfg.request_timeout = Duration::from_millis(500);
    let err = Client::connect(cfg).await.unwrap_err();
    assert!(
        matches!(&err, kefu_host::client::ClientError::Connect(why) if why.contains("404")),
        "{err:?}"
    );
}
