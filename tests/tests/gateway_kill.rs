//! Scenario 2: the gateway process is killed with SIGKILL and started again on the same data
//! folder (and ports) several times while agent/customer pairs keep chatting, half over framed
//! TCP and half over WebSocket. Every message the gateway acknowledged before a kill must still
//! be there after it, at its seq; resent messages must not be stored twice; every receiver gets
//! each acknowledged message exactly once, in seq order.

use std::sync::Arc;
use std::time::Duration;

use kefu_tests::gateway::{Gateway, Options};
use kefu_tests::ledger::Ledger;
use kefu_tests::sdk::{self, Plan};
use kefu_tests::{Dice, WAIT, seed, size};
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_repeated_sigkills_of_the_gateway() {
    let seed = seed("gateway-kill");
    let mut dice = Dice::new(seed, 0);
    let pairs = size(6, 16);
    let sends = size(150, 800);
    let kills = size(5, 12);
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let pairs = sdk::pair_accounts(&data, pairs);
    let mut gw = Gateway::start(&data, tmp.path(), Options::default()).await;

    let ledger = Arc::new(Ledger::new());
    let (stop_tx, stop) = watch::channel(false);
    let plan = Plan {
        sends,
        window: 8,
        pace: Duration::from_millis(30),
    };
    let started = std::time::Instant::now();
    let mut peers = Vec::new();
    for (i, (agent, cust)) in pairs.iter().enumerate() {
        let url = if i % 2 == 0 {
            gw.tcp_url()
        } else {
            gw.ws_url()
        };
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
    // Kill only once messages flow.
    let flowing = tokio::time::Instant::now() + WAIT;
    while ledger.acked_count() == 0 && tokio::time::Instant::now() < flowing {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut acked_before_kill = Vec::new();
    for k in 0..kills {
        tokio::time::sleep(Duration::from_millis(dice.range(300, 900))).await;
        acked_before_kill.push(ledger.acked_count());
        gw.kill9().await;
        let down = dice.range(50, 600);
        tokio::time::sleep(Duration::from_millis(down)).await;
        gw.restart().await;
        println!(
            "[gateway-kill] kill {} after {} acknowledged, down {down} ms",
            k + 1,
            acked_before_kill[k]
        );
    }
    assert!(
        sdk::answered(&ledger, total, WAIT * 6).await,
        "every message answered"
    );
    assert!(sdk::settle(&ledger, WAIT * 2).await, "delivery settles");
    stop_tx.send(true).expect("peers listen");
    for p in peers {
        tokio::time::timeout(WAIT, p)
            .await
            .expect("peer ends")
            .expect("peer ran");
    }
    // One more kill with nothing in flight, then read everything back from disk.
    gw.kill9().await;
    gw.restart().await;
    sdk::check_histories(gw.tcp, &pairs, &ledger).await;
    let t = ledger.assert_clean("gateway-kill");
    assert_eq!(t.sent, total);
    let mid_traffic = acked_before_kill
        .iter()
        .filter(|n| (**n as u64) < total)
        .count();
    assert!(
        mid_traffic * 2 >= kills,
        "most kills hit while traffic flowed: {acked_before_kill:?} of {total}"
    );
    println!(
        "[gateway-kill] {kills} SIGKILLs, {} pairs x {sends} each way in {:.1} s",
        pairs.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(gw.stop().await, "the gateway stops cleanly");
}
