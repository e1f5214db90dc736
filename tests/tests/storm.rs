//! Scenario 5: a reconnect storm. Thousands of light clients (the core engine driven directly
//! over framed TCP) follow group topics; the gateway is killed with SIGKILL and started again
//! on the same folder and port. Every client must come back and resume from its mark (each
//! seq exactly once, in order, before and after the restart), and the engines' jitter must
//! spread the reconnect attempts out instead of hitting the gateway all at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kefu_core::id::MsgId;
use kefu_core::proto::Code;
use kefu_tests::gateway::{self, Gateway, NewAccount, Options};
use kefu_tests::light::{self, LightConfig, Probe, SharedProbe};
use kefu_tests::raw::{Got, Raw, code};
use kefu_tests::sdk::PASSWORD;
use kefu_tests::{Dice, WAIT, raise_open_files, seed, size};
use tokio::sync::watch;
use tokio::time::Instant;

const USERS: usize = 8;
const TOPICS: usize = 10;
/// Messages per topic before and after the restart.
const BEFORE: u64 = 5;
const AFTER: u64 = 5;
/// Reconnect backoff of the light clients: base, cap (ms), jitter (%).
const BACKOFF: (u64, u64, u8) = (1000, 4000, 50);

/// Publishes `n` messages to every topic; the acknowledged count.
async fn publish_round(
    tcp: std::net::SocketAddr,
    topics: &[String],
    n: u64,
    dice: &mut Dice,
) -> u64 {
    let mut raw = Raw::tcp(tcp).await;
    raw.session("owner", PASSWORD).await;
    let mut acked = 0;
    for t in topics {
        for _ in 0..n {
            let id = MsgId::from_bytes(dice.word().to_le_bytes().repeat(2).try_into().expect("16"));
            let answer = raw.publish(t, id, b"storm").await;
            assert_eq!(code(&answer), Some(Code::ACCEPTED), "publish to {t}");
            acked += 1;
        }
    }
    acked
}

/// Waits until `done` holds for every probe, or `within`; how many do not.
async fn wait_all(
    probes: &[SharedProbe],
    within: Duration,
    done: impl Fn(&Probe) -> bool,
) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let missing = probes
            .iter()
            .filter(|p| !done(&p.lock().expect("probe")))
            .count();
        if missing == 0 || Instant::now() >= deadline {
            return missing;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() - 1) * p / 100]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_clients_come_back_spread_out_after_a_gateway_restart_and_resume() {
    let seed = seed("storm");
    let mut dice = Dice::new(seed, 0);
    let limit = raise_open_files();
    let clients = size(2000, 8000).min((limit as usize).saturating_sub(1000));
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let mut accounts = vec![NewAccount {
        login: "owner".into(),
        password: PASSWORD.into(),
        agent: false,
    }];
    accounts.extend((0..USERS).map(|i| NewAccount {
        login: format!("fan{i}"),
        password: PASSWORD.into(),
        agent: false,
    }));
    gateway::add_users(&data, &accounts);
    let mut gw = Gateway::start(&data, tmp.path(), Options::default()).await;

    // Group topics everyone belongs to, and a token per user.
    let mut owner = Raw::tcp(gw.tcp).await;
    owner.session("owner", PASSWORD).await;
    let mut topics = Vec::new();
    for _ in 0..TOPICS {
        let t = owner.new_group().await;
        owner.leave(&t, false).await;
        topics.push(t);
    }
    let mut tokens = Vec::new();
    for i in 0..USERS {
        let mut r = Raw::tcp(gw.tcp).await;
        let Got::Ctrl { token, .. } = r.session(&format!("fan{i}"), PASSWORD).await else {
            unreachable!()
        };
        assert!(!token.is_empty(), "a login returns a token");
        for t in &topics {
            assert_eq!(
                code(&r.sub(t, None).await),
                Some(Code::OK),
                "fan{i} joins {t}"
            );
            r.leave(t, false).await;
        }
        tokens.push(token);
    }

    // The crowd.
    let (stop_tx, stop) = watch::channel(false);
    let mut probes = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..clients {
        let probe: SharedProbe = Arc::new(Mutex::new(Probe::default()));
        let cfg = LightConfig {
            addr: gw.tcp,
            token: tokens[i % USERS].clone(),
            device: format!("storm-{i}"),
            topic: topics[i % TOPICS].clone(),
            seed: dice.word(),
            backoff_ms: BACKOFF,
        };
        tasks.push(tokio::spawn(light::run(cfg, probe.clone(), stop.clone())));
        probes.push(probe);
    }
    let missing = wait_all(&probes, WAIT * 2, |p| p.subscribed >= 1).await;
    assert_eq!(missing, 0, "every client logs in and subscribes");
    let mut acked = publish_round(gw.tcp, &topics, BEFORE, &mut dice).await;
    let missing = wait_all(&probes, WAIT * 2, |p| p.seqs.len() as u64 >= BEFORE).await;
    assert_eq!(missing, 0, "every client gets the first round");

    // The storm.
    let killed = Instant::now();
    gw.kill9().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gw.restart().await;
    let restarted = Instant::now();
    acked += publish_round(gw.tcp, &topics, AFTER, &mut dice).await;
    let missing = wait_all(&probes, WAIT * 4, |p| {
        p.subscribed >= 2 && p.seqs.len() as u64 >= BEFORE + AFTER
    })
    .await;
    let all_back = restarted.elapsed();
    stop_tx.send(true).expect("clients listen");
    for t in tasks {
        tokio::time::timeout(WAIT, t)
            .await
            .expect("client stops")
            .expect("client ran");
    }

    // Exactly once, in order, and who came back.
    let want: Vec<u64> = (1..=BEFORE + AFTER).collect();
    let (mut delivered, mut duplicates, mut lost, mut wrong) = (0u64, 0u64, 0u64, 0usize);
    let mut first = Vec::new();
    let mut planned = Vec::new();
    let mut attempts = 0usize;
    let mut resumed = 0usize;
    for p in &probes {
        let p = p.lock().expect("probe");
        let mut uniq = p.seqs.clone();
        uniq.sort_unstable();
        uniq.dedup();
        delivered += uniq.len() as u64;
        duplicates += (p.seqs.len() - uniq.len()) as u64;
        lost += want
            .iter()
            .filter(|s| uniq.binary_search(s).is_err())
            .count() as u64;
        if p.seqs != want {
            wrong += 1;
        }
        if p.logins >= 2 {
            resumed += 1;
        }
        attempts += p.attempts.iter().filter(|t| **t > killed).count();
        if let Some(t) = p.attempts.iter().find(|t| **t > killed) {
            first.push(t.duration_since(killed));
        }
        if let Some(i) = p.disconnects.iter().position(|t| *t >= killed) {
            planned.push(p.planned[i]);
        }
    }
    first.sort_unstable();
    planned.sort_unstable();
    println!(
        "[storm] clients {clients} sent {} acknowledged {acked} delivered {delivered} duplicates {duplicates} lost {lost}",
        acked
    );
    assert_eq!(missing, 0, "every client came back and caught up");
    assert_eq!(resumed, clients, "every client logged in again");
    assert_eq!(
        (duplicates, lost, wrong),
        (0, 0, 0),
        "each seq exactly once, in order"
    );
    assert_eq!(first.len(), clients, "every client tried to reconnect");
    let window = Duration::from_millis(BACKOFF.0 * u64::from(BACKOFF.2) / 100);
    let spread = *first.last().expect("some") - first[0];
    let planned_spread = *planned.last().expect("some") - planned[0];
    // The busiest 50 ms of first attempts.
    let mut busiest = 0;
    let mut lo = 0;
    for hi in 0..first.len() {
        while first[hi] - first[lo] > Duration::from_millis(50) {
            lo += 1;
        }
        busiest = busiest.max(hi - lo + 1);
    }
    println!(
        "[storm] first attempts after the kill: min {:?} p10 {:?} p50 {:?} p90 {:?} max {:?} (spread {:?}, planned spread {:?}, busiest 50 ms {busiest}); {attempts} attempts in all; all back {:?} after the restart",
        first[0],
        percentile(&first, 10),
        percentile(&first, 50),
        percentile(&first, 90),
        first.last().expect("some"),
        spread,
        planned_spread,
        all_back
    );
    assert!(
        planned_spread >= window * 4 / 10,
        "the engines planned their reconnects {planned_spread:?} apart (jitter window {window:?})"
    );
    assert!(
        spread >= window / 5,
        "first attempts spread over {spread:?} (jitter window {window:?})"
    );
    assert!(
        busiest < clients / 2,
        "{busiest} of {clients} clients tried within the same 50 ms"
    );
    assert!(gw.stop().await, "the gateway stops cleanly");
}
