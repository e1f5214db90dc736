//! SDK peers: a `kefu_host::client::Client` that publishes into a one-to-one conversation and
//! receives from it, writing everything into a [`Ledger`]: each message it makes (`sent`), the
//! gateway's answer (`acked` with the seq, or `failed` when the SDK reports a give-up) and each
//! message handed to it (`delivered`, in the order handed).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use kefu_host::client::{Client, ClientConfig, ClientError, MessageState, MsgId, TopicEvent};
use tokio::sync::watch;

use crate::ledger::Ledger;

/// A password config with quick reconnects, a per-login device and a large subscription buffer.
pub fn config(url: &str, login: &str, password: &str) -> ClientConfig {
    let mut c = ClientConfig::password(url, login, password);
    c.device = format!("e2e-{login}");
    c.subscribe_me = false;
    c.backoff.base = kefu_core::time::Duration::from_millis(50);
    c.backoff.cap = kefu_core::time::Duration::from_millis(1000);
    c.backoff.jitter_percent = 50;
    c.connect_timeout = Duration::from_secs(5);
    c.request_timeout = Duration::from_secs(20);
    c.subscription_buffer = 1024;
    c
}

/// Connects, trying again until `within` (a faulty network may eat the handshake).
pub async fn connect(cfg: ClientConfig, within: Duration) -> Client {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match Client::connect(cfg.clone()).await {
            Ok(c) => return c,
            Err(e @ (ClientError::BadCredentials | ClientError::BadUrl(_))) => {
                panic!("{}: {e}", cfg.url)
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("connect {} failed ({e}); again", cfg.url);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("could not connect to {} in time: {e}", cfg.url),
        }
    }
}

/// One side of a conversation.
#[derive(Clone, Debug)]
pub struct Side {
    /// Login name (also its receiver stream in the ledger).
    pub login: String,
    /// Password.
    pub password: String,
    /// Its user id.
    pub user: String,
    /// The peer's user id: the one-to-one topic as this side names it.
    pub topic: String,
    /// The peer's login (the peer's receiver stream).
    pub peer: String,
    /// The conversation's label, the same on both sides.
    pub conv: String,
}

/// What a peer does.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Messages to publish.
    pub sends: usize,
    /// At most this many unanswered at a time.
    pub window: usize,
    /// Pause between publishes (spreads the traffic over the scenario).
    pub pace: Duration,
}

/// What a peer did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    /// Published.
    pub made: usize,
    /// Acknowledged.
    pub acked: usize,
    /// Reported failed.
    pub failed: usize,
    /// Handed over by the SDK.
    pub received: usize,
}

/// Runs one side: connects at `url`, follows its topic (resuming after `mark` if not 0),
/// publishes `plan.sends` messages, and keeps receiving until every message it made is
/// answered and `stop` turns true. The client is closed at the end.
pub async fn run_peer(
    url: String,
    side: Side,
    mark: u64,
    plan: Plan,
    ledger: Arc<Ledger>,
    stop: watch::Receiver<bool>,
) -> Outcome {
    let client = connect(config(&url, &side.login, &side.password), crate::WAIT * 2).await;
    let out = drive(&client, &side, mark, plan, &ledger, stop).await;
    client.close();
    out
}

/// [`run_peer`]'s loop on a client that is already there.
pub async fn drive(
    client: &Client,
    side: &Side,
    mark: u64,
    plan: Plan,
    ledger: &Ledger,
    stop: watch::Receiver<bool>,
) -> Outcome {
    let mut sub = if mark > 0 {
        client.subscribe_from(&side.topic, mark, mark)
    } else {
        client.subscribe(&side.topic)
    }
    .expect("subscribe");
    let mut out = Outcome::default();
    let mut open: HashSet<MsgId> = HashSet::new();
    let mut next_send = tokio::time::Instant::now();
    loop {
        let quota = if ledger.books_closed() {
            out.made
        } else {
            plan.sends
        };
        if out.made >= quota && open.is_empty() && *stop.borrow() {
            return out;
        }
        let now = tokio::time::Instant::now();
        if out.made < quota && open.len() < plan.window && now >= next_send {
            let text = format!("{}#{}", side.login, out.made);
            match client.publish(&side.topic, text) {
                Ok(local) => {
                    ledger.sent(local.id, &side.conv, &side.peer);
                    open.insert(local.id);
                    out.made += 1;
                    next_send = now + plan.pace;
                    continue;
                }
                Err(ClientError::Engine(e)) => {
                    eprintln!("{}: publish refused locally ({e:?}); later", side.login);
                    next_send = now + Duration::from_millis(100);
                }
                Err(e) => panic!("{}: publish: {e}", side.login),
            }
        }
        let wake = if out.made < quota && open.len() < plan.window {
            next_send
        } else {
            now + Duration::from_millis(100)
        };
        let ev = tokio::select! {
            ev = sub.recv() => ev,
            _ = tokio::time::sleep_until(wake) => continue,
        };
        let Some(ev) = ev else {
            panic!("{}: subscription ended", side.login)
        };
        match ev {
            TopicEvent::Added {
                message,
                history: false,
            } if !message.outgoing && message.from != side.user => {
                if let Some(seq) = message.seq() {
                    ledger.delivered(&side.login, message.id, seq);
                    out.received += 1;
                }
            }
            TopicEvent::Changed {
                id,
                state: MessageState::Sent | MessageState::Delivered | MessageState::Read,
                seq: Some(seq),
            } => {
                if open.remove(&id) {
                    out.acked += 1;
                }
                ledger.acked(id, seq);
            }
            TopicEvent::Changed {
                id,
                state: MessageState::Failed(why),
                ..
            } => {
                eprintln!(
                    "{}: {} failed: {why:?}",
                    side.login,
                    crate::ledger::hex(&id)
                );
                if open.remove(&id) {
                    out.failed += 1;
                }
                ledger.failed(id);
            }
            _ => {}
        }
    }
}

/// Waits until the ledger is settled (every acknowledged message delivered, nothing pending)
/// or `within` passed; whether it settled.
pub async fn settle(ledger: &Ledger, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if ledger.settled() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ledger.settled()
}

/// The password every suite account has.
pub const PASSWORD: &str = "e2e-secret-pass";

/// Creates `n` agent/customer pairs (`agent{i}` with `--agent`, `cust{i}`) in `data` before the
/// gateway starts; both sides of each pair, each following the one-to-one topic with the other.
pub fn pair_accounts(data: &std::path::Path, n: usize) -> Vec<(Side, Side)> {
    let accounts: Vec<_> = (0..n)
        .flat_map(|i| {
            [
                crate::gateway::NewAccount {
                    login: format!("agent{i}"),
                    password: PASSWORD.into(),
                    agent: true,
                },
                crate::gateway::NewAccount {
                    login: format!("cust{i}"),
                    password: PASSWORD.into(),
                    agent: false,
                },
            ]
        })
        .collect();
    let ids = crate::gateway::add_users(data, &accounts);
    (0..n)
        .map(|i| {
            let (a, c) = (ids[2 * i].clone(), ids[2 * i + 1].clone());
            let conv = format!("pair{i}");
            let agent = Side {
                login: format!("agent{i}"),
                password: PASSWORD.into(),
                user: a.clone(),
                topic: c.clone(),
                peer: format!("cust{i}"),
                conv: conv.clone(),
            };
            let cust = Side {
                login: format!("cust{i}"),
                password: PASSWORD.into(),
                user: c,
                topic: a,
                peer: format!("agent{i}"),
                conv,
            };
            (agent, cust)
        })
        .collect()
}

/// Waits until `total` messages were made and every one of them is answered (acknowledged or
/// failed), or `within` passed; whether that happened.
pub async fn answered(ledger: &Ledger, total: u64, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let t = ledger.check();
        if t.sent >= total && t.pending == 0 {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!("not answered in time: {t}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads every pair's stored history from the gateway at `tcp` (as the agent) and checks it
/// against the ledger.
pub async fn check_histories(tcp: std::net::SocketAddr, pairs: &[(Side, Side)], ledger: &Ledger) {
    for (agent, _) in pairs {
        let mut raw = crate::raw::Raw::tcp(tcp).await;
        raw.session(&agent.login, &agent.password).await;
        let latest = raw.latest(&agent.topic).await;
        let history = raw.history(&agent.topic, latest).await;
        ledger.check_history(&agent.conv, &history, latest);
    }
}
