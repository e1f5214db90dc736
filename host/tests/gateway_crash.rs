//! The real `kefu` process under crashes and shutdowns: every `pub` answered 202 survives a
//! SIGKILL at its acknowledged seq, resent pubs are recognised as duplicates, seqs stay gapless;
//! SIGTERM tells connected clients 503 and exits 0 with every acknowledged pub stored.

mod support;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kefu_core::id::MsgId;
use kefu_core::proto::{AuthScheme, ClientPacket, Code, Head, Hi, Login, Pub};
use kefu_host::gateway::wire::{Out, Params};
use support::{Bin, Raw, new_id};
use tokio::sync::watch;

const CLIENTS: usize = 8;
const TOPICS: usize = 3;
const IN_FLIGHT: usize = 8;
const PASSWORD: &str = "crash-pass";

/// Every acknowledged (topic, msg id) and the seq it was acknowledged with.
type Ledger = Arc<Mutex<HashMap<(String, MsgId), u64>>>;

/// A message id as text.
fn hex(id: MsgId) -> String {
    String::from_utf8_lossy(&id.to_hex()).into_owned()
}

/// What one publishing client did.
#[derive(Debug, Default)]
struct Tally {
    sent: usize,
    acked: usize,
    dups: usize,
    resent: usize,
}

/// Creates the publishing accounts and the group topics they all belong to (plus a checker
/// account that reads history); the topic names.
async fn setup(tcp: SocketAddr) -> Vec<String> {
    let mut owner = Raw::connect(tcp).await;
    owner.hi().await;
    owner.acc("checker", PASSWORD).await;
    let mut topics = Vec::new();
    for _ in 0..TOPICS {
        let t = owner.new_group().await;
        assert_eq!(owner.leave(&t, false).await, Code::OK);
        topics.push(t);
    }
    for i in 0..CLIENTS {
        let mut c = Raw::connect(tcp).await;
        c.hi().await;
        c.acc(&format!("pub{i}"), PASSWORD).await;
        for t in &topics {
            let (code, _) = c.sub(t, None).await;
            assert_eq!(code, Code::OK, "pub{i} joins {t}");
            assert_eq!(c.leave(t, false).await, Code::OK);
        }
    }
    topics
}

/// Connects, greets and logs in (with the token of an earlier login if there is one: password
/// hashing is slow in debug builds); None if the gateway is not (yet) there.
async fn connect(addr: SocketAddr, login: &str, token: &mut Vec<u8>) -> Option<Raw> {
    let mut c = Raw::try_connect(addr).await?;
    let (scheme, secret) = if token.is_empty() {
        (
            AuthScheme::Basic,
            format!("{login}:{PASSWORD}").into_bytes(),
        )
    } else {
        (AuthScheme::Token, token.clone())
    };
    let hi = ClientPacket::Hi(Hi {
        id: 1,
        ver: kefu_core::proto::PROTOCOL_VERSION,
        device: "crash",
        platform: "linux",
        lang: "en",
        ua: "kefu-tests",
    });
    if !c.try_send(hi).await {
        return None;
    }
    let packet = ClientPacket::Login(Login {
        id: 2,
        scheme,
        secret: &secret,
    });
    if !c.try_send(packet).await {
        return None;
    }
    let mut ok = 0;
    while ok < 2 {
        match c.recv().await? {
            Out::Ctrl {
                id, code, params, ..
            } if id <= 2 => {
                assert!(
                    code == Code::OK,
                    "{login}: handshake {id} answered {code:?}"
                );
                if let Params::Login { token: t, .. } = params
                    && !t.is_empty()
                {
                    *token = t;
                }
                ok += 1;
            }
            _ => {}
        }
    }
    // Request ids 1 and 2 are used.
    c.next_id();
    c.next_id();
    Some(c)
}

/// Publishes continuously, `IN_FLIGHT` pubs pipelined, reconnecting to whatever address the
/// gateway has now and resending every unanswered pub with its id; after `finish` it stops
/// making new messages and returns once every one it made is acknowledged.
async fn publisher(
    me: usize,
    topics: Vec<String>,
    mut addr: watch::Receiver<SocketAddr>,
    finish: watch::Receiver<bool>,
    ledger: Ledger,
    logins: Arc<AtomicUsize>,
) -> Tally {
    let mut token = Vec::new();
    let login = format!("pub{me}");
    let mut tally = Tally::default();
    let mut pending: VecDeque<(String, MsgId)> = VecDeque::new();
    let mut inflight: HashMap<u32, (String, MsgId)> = HashMap::new();
    let mut ever_sent: HashSet<MsgId> = HashSet::new();
    let mut made = 0usize;
    loop {
        if *finish.borrow() && pending.is_empty() && inflight.is_empty() {
            return tally;
        }
        // Unanswered pubs of a lost connection go first on the next one, same ids.
        let mut lost: Vec<_> = inflight.drain().collect();
        lost.sort_by_key(|(id, _)| *id);
        for (_, item) in lost.into_iter().rev() {
            pending.push_front(item);
        }
        let target = *addr.borrow_and_update();
        let Some(mut c) = connect(target, &login, &mut token).await else {
            tokio::select! {
                _ = addr.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            continue;
        };
        logins.fetch_add(1, Ordering::SeqCst);
        'conn: loop {
            while inflight.len() < IN_FLIGHT {
                let item = match pending.pop_front() {
                    Some(item) => item,
                    None if !*finish.borrow() => {
                        made += 1;
                        (topics[(me + made) % topics.len()].clone(), new_id())
                    }
                    None => break,
                };
                if ever_sent.insert(item.1) {
                    tally.sent += 1;
                } else {
                    tally.resent += 1;
                }
                let id = c.next_id();
                let content = format!("{login} {}", hex(item.1));
                let sent = c
                    .try_send(ClientPacket::Pub(Pub {
                        id,
                        topic: &item.0,
                        msg_id: item.1,
                        head: Head {
                            mime: "",
                            reply_to: None,
                        },
                        content: content.as_bytes(),
                    }))
                    .await;
                inflight.insert(id, item);
                if !sent {
                    break 'conn;
                }
            }
            if inflight.is_empty() {
                break 'conn;
            }
            let Some(out) = c.recv().await else {
                break 'conn;
            };
            let Out::Ctrl {
                id, code, params, ..
            } = out
            else {
                continue;
            };
            let Some(item) = inflight.remove(&id) else {
                continue;
            };
            match (code, params) {
                (Code::ACCEPTED, Params::Pub { seq, dup, .. }) => {
                    tally.acked += 1;
                    if dup {
                        tally.dups += 1;
                    }
                    let mut book = ledger.lock().expect("ledger");
                    let before = book.insert(item.clone(), seq);
                    assert!(
                        before.is_none(),
                        "{login}: {} acknowledged twice ({before:?} then {seq})",
                        hex(item.1)
                    );
                }
                (Code::RATE_LIMITED | Code::UNAVAILABLE, _) => pending.push_back(item),
                (code, params) => panic!("{login}: pub refused: {code:?} {params:?}"),
            }
        }
    }
}

/// Checks the store behind `tcp` against `acked`: every acknowledged message is there once at
/// its seq, each topic's seqs are 1..=latest, no message id appears twice. Messages found.
async fn check(tcp: SocketAddr, topics: &[String], acked: &HashMap<(String, MsgId), u64>) -> usize {
    let mut c = Raw::connect(tcp).await;
    c.hi().await;
    let (code, _) = c.login("checker", PASSWORD).await;
    assert_eq!(code, Code::OK);
    let mut found = 0;
    for t in topics {
        let (code, params) = c.sub(t, None).await;
        assert_eq!(code, Code::OK);
        let Params::Sub { latest, .. } = params else {
            panic!("sub answers with marks: {params:?}");
        };
        assert_eq!(c.leave(t, false).await, Code::OK);
        let all = c.full_history(t, latest).await;
        let first_wrong = all.iter().zip(1..).find(|(m, want)| m.seq != *want);
        assert_eq!(
            first_wrong.map(|(m, want)| (m.seq, want)),
            None,
            "{t}: a seq out of place"
        );
        assert_eq!(
            all.len() as u64,
            latest,
            "{t}: seqs are 1..={latest} without gaps"
        );
        let mut by_id = HashMap::new();
        for m in &all {
            let again = by_id.insert(m.msg_id, m.seq);
            assert!(
                again.is_none(),
                "{t}: message id {} stored twice",
                hex(m.msg_id)
            );
        }
        for ((topic, id), seq) in acked.iter().filter(|((topic, _), _)| topic == t) {
            assert_eq!(
                by_id.get(id),
                Some(seq),
                "{topic}: acknowledged {} at seq {seq} must be stored there",
                hex(*id)
            );
        }
        found += all.len();
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_pub_survives_three_sigkills_at_its_seq() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Bin::start(dir.path(), &["--rate", "0"]).await;
    let topics = setup(gw.tcp).await;

    let (addr_tx, addr_rx) = watch::channel(gw.tcp);
    let (finish_tx, finish_rx) = watch::channel(false);
    let ledger: Ledger = Arc::default();
    let logins = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|me| {
            tokio::spawn(publisher(
                me,
                topics.clone(),
                addr_rx.clone(),
                finish_rx.clone(),
                Arc::clone(&ledger),
                Arc::clone(&logins),
            ))
        })
        .collect();

    for cycle in 1..=3 {
        // Publish for a second once every client is (back) in.
        while logins.load(Ordering::SeqCst) < CLIENTS * cycle {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        gw.kill9().await;
        let before_kill = ledger.lock().expect("ledger").clone();
        assert!(
            before_kill.len() > 50 * cycle,
            "cycle {cycle}: clients got pubs through ({} acknowledged)",
            before_kill.len()
        );
        gw = Bin::start(dir.path(), &["--rate", "0"]).await;
        let _ = addr_tx.send(gw.tcp);
        let found = check(gw.tcp, &topics, &before_kill).await;
        println!(
            "kill -9 #{cycle}: {} acknowledged before the kill, all found; {found} stored",
            before_kill.len()
        );
    }

    // Let the clients finish: every message they made gets its answer.
    finish_tx.send(true).expect("clients listen");
    let mut total = Tally::default();
    for c in clients {
        let t = tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .expect("clients finish")
            .expect("client task");
        total.sent += t.sent;
        total.acked += t.acked;
        total.dups += t.dups;
        total.resent += t.resent;
    }
    let ledger = ledger.lock().expect("ledger").clone();
    assert_eq!(
        ledger.len(),
        total.sent,
        "every message made was acknowledged once"
    );
    assert_eq!(total.acked, total.sent, "one 202 per message");
    assert!(total.resent > 0, "the kills cut pubs in flight");

    // One last cycle: the complete ledger against a freshly restarted gateway.
    gw.kill9().await;
    let gw = Bin::start(dir.path(), &[]).await;
    let found = check(gw.tcp, &topics, &ledger).await;
    assert_eq!(
        found, total.sent,
        "nothing stored that was not acknowledged"
    );
    println!(
        "kill -9 totals: sent {} (resent {}), acknowledged {}, dups {}, found {}",
        total.sent, total.resent, total.acked, total.dups, found
    );
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_tells_clients_503_exits_0_and_keeps_every_acknowledged_pub() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Bin::start(dir.path(), &["--rate", "0"]).await;
    let topics = setup(gw.tcp).await;

    // Publishers that stop at the first sign of shutdown and report what they saw.
    let mut tasks = Vec::new();
    let started = Arc::new(tokio::sync::Barrier::new(CLIENTS + 1));
    for me in 0..CLIENTS {
        let (tcp, topics, started) = (gw.tcp, topics.clone(), Arc::clone(&started));
        tasks.push(tokio::spawn(async move {
            let login = format!("pub{me}");
            let mut c = connect(tcp, &login, &mut Vec::new())
                .await
                .expect("connects");
            started.wait().await;
            let mut inflight = HashMap::new();
            let mut acked = HashMap::new();
            let mut goodbye = None;
            let mut n = 0;
            loop {
                while goodbye.is_none() && inflight.len() < IN_FLIGHT {
                    n += 1;
                    let item = (topics[n % topics.len()].clone(), new_id());
                    let id = c.next_id();
                    if !c
                        .try_send(ClientPacket::Pub(Pub {
                            id,
                            topic: &item.0,
                            msg_id: item.1,
                            head: Head {
                                mime: "",
                                reply_to: None,
                            },
                            content: b"before the end",
                        }))
                        .await
                    {
                        break;
                    }
                    inflight.insert(id, item);
                }
                match c.recv().await {
                    None => return (acked, goodbye),
                    Some(Out::Ctrl {
                        id: 0,
                        code,
                        params,
                        ..
                    }) => goodbye = Some((code, params)),
                    Some(Out::Ctrl {
                        id,
                        code: Code::ACCEPTED,
                        params: Params::Pub { seq, .. },
                        ..
                    }) => {
                        if let Some(item) = inflight.remove(&id) {
                            acked.insert(item, seq);
                        }
                    }
                    Some(Out::Ctrl { id, code, .. }) => {
                        assert!(
                            code == Code::UNAVAILABLE,
                            "{login}: pub {id} refused with {code:?}"
                        );
                        inflight.remove(&id);
                    }
                    Some(_) => {}
                }
            }
        }));
    }
    // One more client only greeted, not logged in: it is told too.
    let mut greeted = Raw::connect(gw.tcp).await;
    greeted.hi().await;
    started.wait().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = std::time::Instant::now();
    gw.term();
    let status = tokio::time::timeout(Duration::from_secs(12), gw.child.wait())
        .await
        .expect("the gateway exits within the drain time")
        .expect("reaped");
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");
    println!("SIGTERM: exited 0 after {:?}", asked.elapsed());

    let mut acked = HashMap::new();
    for t in tasks {
        let (mine, goodbye) = tokio::time::timeout(Duration::from_secs(15), t)
            .await
            .expect("clients see the close")
            .expect("client task");
        match goodbye {
            Some((Code::UNAVAILABLE, Params::RetryAfter { .. })) => {}
            other => panic!("a connected client gets ctrl 503 id 0 before the close: {other:?}"),
        }
        acked.extend(mine);
    }
    assert!(acked.len() > 50, "pubs went through ({})", acked.len());
    match greeted.recv().await {
        Some(Out::Ctrl { id: 0, code, .. }) => assert_eq!(code, Code::UNAVAILABLE),
        other => panic!("a greeted client gets ctrl 503 id 0: {other:?}"),
    }
    assert!(greeted.recv().await.is_none(), "then the connection closes");

    let gw = Bin::start(dir.path(), &[]).await;
    let found = check(gw.tcp, &topics, &acked).await;
    assert!(found >= acked.len());
    println!("SIGTERM: {} acknowledged, {found} stored", acked.len());
}
