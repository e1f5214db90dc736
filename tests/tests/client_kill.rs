//! Scenario 3: clients are killed and started again. Every side of every agent/customer pair
//! runs in its own `e2e-peer` process; at random moments one is killed with SIGKILL and a new
//! one starts for the same account, resuming after the last seq the dead one handed to its
//! application, and sending the rest of its messages. Messages a dead sender never heard about
//! may arrive (at most once); everything acknowledged arrives exactly once, in seq order,
//! across incarnations.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use kefu_tests::gateway::{Gateway, Options};
use kefu_tests::ledger::Ledger;
use kefu_tests::sdk::{self, Side};
use kefu_tests::{Dice, WAIT, seed, size};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::task::JoinHandle;

/// One side and the process that plays it now.
struct Slot {
    side: Side,
    child: Child,
    stdin: Option<ChildStdin>,
    reader: JoinHandle<()>,
}

/// Starts an `e2e-peer` for `side` resuming after `mark`, sending `sends` messages; its ledger
/// lines go into `ledger`.
fn spawn(url: &str, side: &Side, mark: u64, sends: usize, ledger: &Arc<Ledger>) -> Slot {
    let mut child = Command::new(env!("CARGO_BIN_EXE_e2e-peer"))
        .args([
            "--url",
            url,
            "--login",
            &side.login,
            "--password",
            &side.password,
        ])
        .args([
            "--user",
            &side.user,
            "--topic",
            &side.topic,
            "--peer",
            &side.peer,
        ])
        .args(["--conv", &side.conv, "--mark", &mark.to_string()])
        .args(["--sends", &sends.to_string(), "--pace-ms", "20"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("e2e-peer starts");
    let stdout = child.stdout.take().expect("piped");
    let stdin = child.stdin.take();
    let ledger = ledger.clone();
    let reader = tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            ledger.apply_line(&line);
        }
    });
    Slot {
        side: side.clone(),
        child,
        stdin,
        reader,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_clients_resume_from_their_mark_and_nothing_acknowledged_is_lost_or_doubled() {
    let seed = seed("client-kill");
    let mut dice = Dice::new(seed, 0);
    let pairs = size(6, 12);
    let quota = size(200, 600);
    let kills = size(12, 40);
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let pairs = sdk::pair_accounts(&data, pairs);
    let mut gw = Gateway::start(&data, tmp.path(), Options::default()).await;
    let url = gw.tcp_url();
    let ledger = Arc::new(Ledger::new());
    let started = std::time::Instant::now();

    let mut slots: Vec<Slot> = pairs
        .iter()
        .flat_map(|(a, c)| [a, c])
        .map(|side| spawn(&url, side, 0, quota, &ledger))
        .collect();
    // Kill only once messages flow.
    let flowing = tokio::time::Instant::now() + WAIT;
    while ledger.acked_count() == 0 && tokio::time::Instant::now() < flowing {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut abandoned = 0;
    for k in 0..kills {
        tokio::time::sleep(Duration::from_millis(dice.range(100, 500))).await;
        let i = dice.range(0, slots.len() as u64 - 1) as usize;
        let slot = &mut slots[i];
        slot.child.start_kill().expect("SIGKILL sent");
        slot.child.wait().await.expect("reaped");
        (&mut slot.reader)
            .await
            .expect("reader ends with the process");
        let side = slot.side.clone();
        let pending = ledger.pending_in(&side.conv, &side.peer);
        abandoned += pending.len();
        ledger.abandon_pending(pending);
        let made = ledger.sent_to(&side.peer);
        let mark = ledger.mark(&side.login);
        println!(
            "[client-kill] kill {}: {} after {made} sent, resumes after seq {mark}",
            k + 1,
            side.login
        );
        *slot = spawn(&url, &side, mark, quota.saturating_sub(made), &ledger);
    }
    let total = (slots.len() * quota) as u64;
    assert!(
        sdk::answered(&ledger, total, WAIT * 6).await,
        "every message answered"
    );
    assert!(sdk::settle(&ledger, WAIT * 2).await, "delivery settles");
    for slot in &mut slots {
        slot.stdin.take(); // EOF: the peer stops
    }
    for slot in slots {
        let Slot {
            mut child, reader, ..
        } = slot;
        let status = tokio::time::timeout(WAIT, child.wait())
            .await
            .expect("peer exits")
            .expect("reaped");
        assert!(status.success(), "a peer that was not killed exits 0");
        reader.await.expect("reader");
    }
    sdk::check_histories(gw.tcp, &pairs, &ledger).await;
    let t = ledger.assert_clean("client-kill");
    assert_eq!(t.sent, total);
    println!(
        "[client-kill] {kills} clients killed ({abandoned} messages in flight abandoned) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(gw.stop().await, "the gateway stops cleanly");
}
