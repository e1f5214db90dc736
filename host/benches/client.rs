//! Client SDK latency against a gateway on 127.0.0.1:
//! - `publish` call → local message returned, with the driver busy receiving: the customer
//!   keeps sending to the agent the whole time, and the agent's own messages come back as
//!   acks and echoes (criterion, plus p50 / p99 / p99.9 over 200 000 calls measured one by one,
//!   printed);
//! - the same call with the driver idle (offline, each message discarded after the call);
//! - for comparison, the core engine's own `publish` with the SDK's capacities and no SDK
//!   around it (no lock, no driver): the floor the SDK's figure stands on;
//! - end to end: agent `publish` → the message in the customer's subscription (p50 / p99 over
//!   2 000 messages sent one at a time, once the customer has caught up; printed with the
//!   slowest five and where they fell).
//!
//! `cargo bench -p kefu-host --bench client`

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::StreamExt;
use kefu_core::engine::{Credentials, EngineConfig};
use kefu_core::proto::Head;
use kefu_core::time::Instant as EngineInstant;
use kefu_host::client::{
    Client, ClientConfig, ClientError, EngineError, HostEngine, MessageState, MsgId, Subscription,
    TopicEvent,
};
use support::{Raw, test_config};

const PW: &str = "bench-pass";
/// Publishes between two waits for the acks (keeps the outbox and the pool from filling).
const BATCH: usize = 128;

/// Waits until the own message `last` is stored, draining the subscription.
async fn settle(sub: &mut Subscription, last: MsgId) {
    while let Some(ev) = sub.next().await {
        if let TopicEvent::Changed {
            id,
            state: MessageState::Sent,
            ..
        } = ev
            && id == last
        {
            return;
        }
    }
}

/// Publishes `n` messages, timing each `publish` call; the durations.
async fn timed_publishes(
    client: &Client,
    sub: &mut Subscription,
    topic: &str,
    n: usize,
) -> Vec<Duration> {
    let mut times = Vec::with_capacity(n);
    let payload = [b'x'; 100];
    let mut done = 0;
    while done < n {
        let mut last = None;
        for _ in 0..BATCH.min(n - done) {
            let t0 = Instant::now();
            let local = client.publish(topic, payload).expect("publish");
            times.push(t0.elapsed());
            last = Some(local.id);
            done += 1;
        }
        if let Some(last) = last {
            settle(sub, last).await;
        }
    }
    times
}

/// The customer's side of the "driver busy" part: sends to the agent as fast as its outbox
/// allows and reads everything the agent sends, until `stop`; how many it sent.
async fn keep_sending(
    customer: Client,
    mut cs: Subscription,
    to: String,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> Subscription {
    let payload = [b'c'; 100];
    while !stop.load(Ordering::Relaxed) {
        while cs.try_recv().is_some() {}
        match customer.publish(&to, payload) {
            Ok(_) => {
                sent.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
            Err(ClientError::Engine(EngineError::OutboxFull | EngineError::PoolFull)) => {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            Err(e) => panic!("customer publish: {e}"),
        }
    }
    cs
}

fn pct(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i]
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort_unstable();
    println!(
        "{what}: n={} p50={:?} p99={:?} p99.9={:?} max={:?}",
        times.len(),
        pct(&times, 0.5),
        pct(&times, 0.99),
        pct(&times, 0.999),
        times[times.len() - 1]
    );
}

fn bench_client(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (_gw, agent, customer, mut a, cs, topic, back) = rt.block_on(async {
        let mut cfg = test_config(dir.path());
        cfg.rate_per_sec = 0;
        let gw = kefu_host::gateway::start(cfg).await.expect("gateway");
        let mut ids = Vec::new();
        for login in ["agent", "customer"] {
            let mut raw = Raw::connect(gw.tcp_addr).await;
            raw.hi().await;
            ids.push(raw.acc(login, PW).await);
        }
        let url = format!("tcp://{}", gw.tcp_addr);
        let agent = Client::connect(ClientConfig::password(&url, "agent", PW))
            .await
            .expect("agent logs in");
        let customer = Client::connect(ClientConfig::password(&url, "customer", PW))
            .await
            .expect("customer logs in");
        let (agent_id, customer_id) = (ids[0].clone(), ids[1].clone());
        let a = agent.subscribe(&customer_id).expect("subscribe");
        let mut cs = customer.subscribe(&agent_id).expect("subscribe");
        while !matches!(cs.next().await, Some(TopicEvent::Subscribed { .. })) {}
        (gw, agent, customer, a, cs, customer_id, agent_id)
    });
    let _ = &customer;

    // p99 of the publish call itself, one call at a time, while the customer keeps sending to
    // the agent (the agent's driver is busy receiving the whole time).
    let stop = Arc::new(AtomicBool::new(false));
    let from_customer = Arc::new(AtomicU64::new(0));
    let sender = rt.spawn(keep_sending(
        customer.clone(),
        cs,
        back.clone(),
        stop.clone(),
        from_customer.clone(),
    ));
    let times = rt.block_on(timed_publishes(&agent, &mut a, &topic, 200_000));
    stop.store(true, Ordering::Relaxed);
    let mut cs = rt.block_on(sender).expect("sender task");
    report(
        "publish call -> local message (driver busy receiving)",
        times,
    );
    println!(
        "  meanwhile the customer sent {} messages to the agent",
        from_customer.load(Ordering::Relaxed)
    );

    // End to end: agent publish -> Added in the customer's subscription, one at a time, once
    // the customer has caught up with everything from the first part.
    let e2e = rt.block_on(async {
        let marker = agent.publish(&topic, b"catch up").expect("publish").id;
        loop {
            match cs.next().await {
                Some(TopicEvent::Added { message, .. }) if message.id == marker => break,
                Some(_) => {}
                None => panic!("subscription ended"),
            }
        }
        let mut times = Vec::with_capacity(2000);
        for i in 0..2000u32 {
            let t0 = Instant::now();
            let local = agent.publish(&topic, i.to_le_bytes()).expect("publish");
            loop {
                match cs.next().await {
                    Some(TopicEvent::Added { message, .. }) if message.id == local.id => break,
                    Some(_) => {}
                    None => panic!("subscription ended"),
                }
            }
            times.push(t0.elapsed());
            while a.try_recv().is_some() {}
        }
        times
    });
    let mut slowest: Vec<_> = e2e.iter().copied().enumerate().collect();
    slowest.sort_by_key(|&(_, t)| std::cmp::Reverse(t));
    slowest.truncate(5);
    report("end to end agent publish -> customer event", e2e);
    println!("  slowest (index, time): {slowest:?}");

    // The same call with the driver idle (no gateway reachable; each message is discarded
    // after the timed call): the SDK's own cost without contention for the engine lock.
    let offline = rt.block_on(async {
        let mut cfg = ClientConfig::password("tcp://127.0.0.1:1", "nobody", PW);
        cfg.subscribe_me = false;
        let client = Client::start(cfg).await.expect("client starts");
        let mut times = Vec::with_capacity(100_000);
        for _ in 0..100_000 {
            let t0 = Instant::now();
            let local = client.publish("grpBench", [b'x'; 100]).expect("publish");
            times.push(t0.elapsed());
            client.discard(&local.id).expect("discard");
        }
        times
    });
    report("publish call, driver idle (offline)", offline);

    // The engine alone, on a thread with room for its by-value constructor.
    let engine_only = std::thread::Builder::new()
        .stack_size(4 * std::mem::size_of::<HostEngine>() + (1 << 20))
        .spawn(|| {
            let creds = Credentials::basic("nobody", PW).expect("credentials");
            let cfg = EngineConfig::new("bench", creds);
            let mut engine = Box::new(HostEngine::new(EngineInstant::ZERO, cfg, 7));
            let epoch = Instant::now();
            let head = Head {
                mime: "",
                reply_to: None,
            };
            let mut times = Vec::with_capacity(100_000);
            for _ in 0..100_000 {
                let now = EngineInstant::from_micros(epoch.elapsed().as_micros() as u64);
                let t0 = Instant::now();
                let id = engine
                    .publish(now, "grpBench", head, &[b'x'; 100])
                    .expect("publish");
                times.push(t0.elapsed());
                engine.discard(&id).expect("discard");
                while engine.poll_event().is_some() {}
            }
            times
        })
        .expect("thread")
        .join()
        .expect("engine bench");
    report("core engine publish alone (no SDK)", engine_only);

    let mut group = c.benchmark_group("client");
    group.bench_function("publish_call", |b| {
        b.iter_custom(|iters| {
            let times = rt.block_on(timed_publishes(&agent, &mut a, &topic, iters as usize));
            rt.block_on(async { while cs.try_recv().is_some() {} });
            times.iter().sum()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_client);
criterion_main!(benches);
