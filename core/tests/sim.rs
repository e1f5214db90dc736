//! Deterministic simulation of the whole message path: client engines publish to each other
//! through a model gateway over a seeded lossy network (loss up to 30%, duplication, reordering,
//! delay, forced disconnects, failed connection attempts). Every seed replays exactly.
//!
//! Checked for every seed: every message the gateway stored is shown exactly once, in seq
//! order, to every client, with the stored content; no message id is shown twice; every
//! give-up is reported to the sender, whose simulated user resends it with the same id, so
//! in the end every published message is stored exactly once.

mod support;

use kefu_core::time::{Duration, Instant};
use support::net::NetConfig;
use support::{Scenario, Totals, World};

const SEEDS: u64 = 100;

fn scenario(seed: u64) -> Scenario {
    let loss = (seed % 7) as u32 * 50_000; // 0% .. 30%
    Scenario {
        seed,
        clients: 2,
        messages_per_client: 500,
        net: NetConfig {
            loss,
            dup: 20_000,
            reorder: 100_000,
            delay: Duration::from_millis(5),
            jitter: Duration::from_millis(40),
        },
        cut_every: Some(Duration::from_secs(2)),
        connect_fail: 100_000,
        publish_every: Duration::from_millis(10),
        // A quarter of the seeds give up early, so give-ups happen and must be reported.
        give_up_after: if seed.is_multiple_of(4) {
            Duration::from_millis(1500)
        } else {
            Duration::from_secs(60)
        },
    }
}

/// Runs one seed to completion; returns its totals or the violations.
fn run(sc: Scenario) -> Result<Totals, Vec<String>> {
    let mut w = World::new(sc);
    // Traffic and faults until every client has published its quota.
    let limit = Instant::from_millis(600_000);
    while w.clients.iter().any(|c| c.quota > 0) {
        let next = w.now + Duration::from_millis(100);
        w.run_until(next);
        if w.now > limit {
            return Err(vec![format!(
                "seed {}: publishing did not finish: {}",
                sc.seed,
                w.stuck_report()
            )]);
        }
    }
    // Calm: a clean network, no cuts; everything must settle.
    w.calm_down();
    let deadline = w.now + Duration::from_secs(300);
    while !w.settled() && w.now < deadline {
        let next = w.now + Duration::from_millis(100);
        w.run_until(next);
    }
    let mut errors = w.check();
    if !errors.is_empty() {
        errors.push(w.stuck_report());
    }
    if errors.is_empty() {
        Ok(w.totals())
    } else {
        Err(errors)
    }
}

#[test]
fn every_acknowledged_message_arrives_exactly_once_in_order_across_100_seeds() {
    let mut totals = Totals::default();
    let mut failures = Vec::new();
    for seed in 0..SEEDS {
        match run(scenario(seed)) {
            Ok(t) => totals.add(&t),
            Err(e) => failures.push((seed, e)),
        }
    }
    println!("simulation totals over 100 seeds: {totals:#?}");
    for (seed, e) in &failures {
        eprintln!(
            "seed {seed}: {} violations, first: {:?}",
            e.len(),
            &e[..e.len().min(5)]
        );
    }
    assert!(
        failures.is_empty(),
        "{} of 100 seeds broke a promise",
        failures.len()
    );
    assert!(
        totals.published >= 100_000,
        "at least 100,000 messages in total"
    );
    assert_eq!(
        totals.stored, totals.published,
        "every message stored exactly once, after resends"
    );
    assert!(totals.gave_up > 0, "give-ups were exercised");
    assert!(totals.frames_lost > 0 && totals.disconnects > 0 && totals.dup_pubs > 0);
}

#[test]
fn a_seed_replays_exactly() {
    let a = run(scenario(5)).unwrap();
    let b = run(scenario(5)).unwrap();
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}
