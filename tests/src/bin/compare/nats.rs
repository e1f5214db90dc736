//! The pattern over NATS JetStream (async-nats): one stream with file storage holds every
//! subject; each publisher publishes to its own subject and awaits JetStream's ack (the message
//! is in the stream), keeping `window` acks outstanding; each subscriber drains its own pull
//! consumer (explicit acks, the library's default batching) and acks every message.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use tokio::sync::oneshot;

use crate::common::{Clock, DRAIN, Measured, Pattern, Published, Sink, measure};

/// The stream every run publishes into.
const STREAM: &str = "KEFU_BENCH";

/// Runs `pattern` against the server at `addr` (process `pid`).
pub async fn run(
    addr: SocketAddr,
    pid: Option<u32>,
    pattern: &Pattern,
) -> Result<Measured, String> {
    let load = kefu_host::bench::procstat::load_average();
    let tag = format!("{:08x}", crate::mqtt::rand_tag());
    let setup = async_nats::connect(addr.to_string())
        .await
        .map_err(|e| format!("nats connect: {e}"))?;
    let js = jetstream::new(setup);
    let stream = js
        .get_or_create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec!["kefubench.>".into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("nats stream: {e}"))?;
    let mut pairs = Vec::new();
    for i in 0..pattern.pairs {
        let subject = format!("kefubench.{tag}.{i}");
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                filter_subject: subject.clone(),
                ack_policy: consumer::AckPolicy::Explicit,
                deliver_policy: consumer::DeliverPolicy::New,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("nats consumer: {e}"))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| format!("nats consume: {e}"))?;
        // Every publisher has its own connection, as every kefu and MQTT publisher has.
        let client = async_nats::connect(addr.to_string())
            .await
            .map_err(|e| format!("nats connect: {e}"))?;
        pairs.push((subject, messages, jetstream::new(client)));
    }
    let clock = Clock::new(pattern);
    let mut publishers = Vec::new();
    let mut subscribers = Vec::new();
    for (subject, mut messages, js) in pairs {
        let (last_tx, last_rx) = oneshot::channel();
        let sink = Sink::new(clock);
        let feed = sink.clone();
        let poller = tokio::spawn(async move {
            while let Some(m) = messages.next().await {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => return feed.fail(format!("nats subscriber: {e}")),
                };
                if !feed.deliver(&m.payload) {
                    return;
                }
                if let Err(e) = m.ack().await {
                    return feed.fail(format!("nats ack: {e}"));
                }
            }
            feed.fail("the nats consumer ended".into());
        });
        subscribers.push(tokio::spawn(sink.finish(last_rx, poller)));
        publishers.push(tokio::spawn(publish(js, subject, *pattern, clock, last_tx)));
    }
    measure(pattern, clock, pid, load, publishers, subscribers).await
}

/// Publishes until the interval ends, keeping `window` acks outstanding; then waits for the rest.
async fn publish(
    js: jetstream::Context,
    subject: String,
    pattern: Pattern,
    clock: Clock,
    last: oneshot::Sender<u64>,
) -> Result<Published, String> {
    let mut payload = vec![b'x'; pattern.size];
    let mut done = Published::default();
    let mut waiting = VecDeque::new();
    let mut count = 0;
    let deadline = clock.end + DRAIN;
    loop {
        if Instant::now() < clock.end {
            while waiting.len() < pattern.window {
                count += 1;
                clock.stamp(&mut payload, count);
                let ack = js
                    .publish(subject.clone(), payload.clone().into())
                    .await
                    .map_err(|e| format!("nats publish: {e}"))?;
                waiting.push_back(ack);
            }
        }
        let Some(ack) = waiting.pop_front() else {
            break;
        };
        tokio::time::timeout_at(deadline.into(), ack)
            .await
            .map_err(|_| "a publish was never acknowledged".to_owned())?
            .map_err(|e| format!("nats publish ack: {e}"))?;
        done.acked += 1;
    }
    let _ = last.send(done.acked);
    Ok(done)
}
