//! Scenario 1: many agent/customer pairs chat through a fault-injecting proxy (delays, stalls,
//! dropped, duplicated and reordered frames, split writes, cut connections) in front of the real
//! gateway. Every acknowledged message must reach the other side exactly once, in seq order,
//! every give-up must be reported to its sender, and the stored history must hold every
//! acknowledged message at its seq.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kefu_tests::gateway::{Gateway, Options};
use kefu_tests::ledger::Ledger;
use kefu_tests::proxy::{Faults, Proxy};
use kefu_tests::sdk::{self, Plan};
use kefu_tests::{WAIT, seed, size};
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_through_a_faulty_network_get_every_acknowledged_message_once_and_in_order() {
    let seed = seed("faults");
    let pairs = size(8, 24);
    let sends = size(50, 300);
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let pairs = sdk::pair_accounts(&data, pairs);
    let mut gw = Gateway::start(&data, tmp.path(), Options::default()).await;
    let proxy = Proxy::start(gw.tcp, seed, Faults::standard()).await;
    let url = format!("tcp://{}", proxy.addr);

    let ledger = Arc::new(Ledger::new());
    let (stop_tx, stop) = watch::channel(false);
    let plan = Plan {
        sends,
        window: 8,
        pace: Duration::from_millis(15),
    };
    let started = std::time::Instant::now();
    let mut peers = Vec::new();
    for (agent, cust) in &pairs {
        for side in [agent, cust] {
            peers.push(tokio::spawn(sdk::run_peer(
                url.clone(),
                side.clone(),
                0,
                plan,
                ledger.clone(),
                stop.clone(),
            )));
        }
    }
    let total = (pairs.len() * 2 * sends) as u64;
    assert!(
        sdk::answered(&ledger, total, WAIT * 6).await,
        "every message answered under faults"
    );
    // Let the network heal so the last pushes and acks get through, then check.
    proxy.calm(true);
    assert!(sdk::settle(&ledger, WAIT * 2).await, "delivery settles");
    stop_tx.send(true).expect("peers listen");
    for p in peers {
        tokio::time::timeout(WAIT, p)
            .await
            .expect("peer ends")
            .expect("peer ran");
    }
    sdk::check_histories(gw.tcp, &pairs, &ledger).await;
    println!("[faults] proxy: {}", proxy.stats);
    let s = &proxy.stats;
    let injected = [
        &s.dropped,
        &s.duplicated,
        &s.reordered,
        &s.split,
        &s.cuts,
        &s.delayed,
    ]
    .iter()
    .map(|a| a.load(Ordering::Relaxed))
    .sum::<u64>();
    assert!(injected > 0, "the proxy injected faults");
    let t = ledger.assert_clean("faults");
    assert_eq!(t.sent, total);
    assert!(t.acked > 0, "messages got through");
    println!(
        "[faults] {} pairs x {sends} messages each way in {:.1} s",
        pairs.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(gw.stop().await, "the gateway stops cleanly");
}
