//! The pattern over MQTT 3.1.1 at QoS 1 (rumqttc): each pair's subscriber subscribes to its own
//! topic at QoS 1 and acknowledges every publish (the library sends the PUBACK); the publisher
//! keeps `window` QoS 1 publishes without their PUBACK.

use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::oneshot;

use crate::common::{Clock, DRAIN, Measured, Pattern, Published, Sink, measure};

/// Runs `pattern` against the broker at `addr` (process `pid`).
pub async fn run(
    addr: SocketAddr,
    pid: Option<u32>,
    pattern: &Pattern,
) -> Result<Measured, String> {
    let load = kefu_host::bench::procstat::load_average();
    let tag = format!("{:08x}", rand_tag());
    let mut pairs = Vec::new();
    for i in 0..pattern.pairs {
        let topic = format!("kefu-bench/{tag}/{i}");
        let (sub_client, sub_loop) = connect(addr, &format!("s{tag}-{i}"), 1).await?;
        sub_client
            .subscribe(&topic, QoS::AtLeastOnce)
            .await
            .map_err(|e| e.to_string())?;
        let mut sub_loop = sub_loop;
        wait_for(&mut sub_loop, |p| matches!(p, Packet::SubAck(_))).await?;
        let (pub_client, pub_loop) = connect(addr, &format!("p{tag}-{i}"), pattern.window).await?;
        pairs.push((topic, sub_client, sub_loop, pub_client, pub_loop));
    }
    let clock = Clock::new(pattern);
    let mut publishers = Vec::new();
    let mut subscribers = Vec::new();
    for (topic, sub_client, mut sub_loop, pub_client, pub_loop) in pairs {
        let (last_tx, last_rx) = oneshot::channel();
        let sink = Sink::new(clock);
        let feed = sink.clone();
        let poller = tokio::spawn(async move {
            let _keep = sub_client;
            loop {
                match sub_loop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if !feed.deliver(&p.payload) {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return feed.fail(format!("mqtt subscriber: {e}")),
                }
            }
        });
        subscribers.push(tokio::spawn(sink.finish(last_rx, poller)));
        publishers.push(tokio::spawn(publish(
            pub_client, pub_loop, topic, *pattern, clock, last_tx,
        )));
    }
    measure(pattern, clock, pid, load, publishers, subscribers).await
}

/// Connects a clean session whose outgoing QoS 1 window is `inflight`; waits for CONNACK.
async fn connect(
    addr: SocketAddr,
    id: &str,
    inflight: usize,
) -> Result<(AsyncClient, EventLoop), String> {
    let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_inflight(u16::try_from(inflight.max(1)).unwrap_or(u16::MAX));
    let (client, mut el) = AsyncClient::new(opts, inflight.max(1) * 2 + 16);
    wait_for(&mut el, |p| matches!(p, Packet::ConnAck(_))).await?;
    Ok((client, el))
}

/// Polls until a packet matching `want` arrives.
async fn wait_for(el: &mut EventLoop, want: impl Fn(&Packet) -> bool) -> Result<(), String> {
    let wait = async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(p)) if want(&p) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(format!("mqtt: {e}")),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .map_err(|_| "mqtt: no answer in 10 s".to_owned())?
}

/// Publishes until the interval ends, then waits for the PUBACKs still owed.
async fn publish(
    client: AsyncClient,
    mut el: EventLoop,
    topic: String,
    pattern: Pattern,
    clock: Clock,
    last: oneshot::Sender<u64>,
) -> Result<Published, String> {
    let mut payload = vec![b'x'; pattern.size];
    let mut done = Published::default();
    let mut in_flight = 0;
    let mut count = 0;
    let deadline = clock.end + DRAIN;
    loop {
        if std::time::Instant::now() < clock.end {
            while in_flight < pattern.window {
                count += 1;
                clock.stamp(&mut payload, count);
                client
                    .try_publish(&topic, QoS::AtLeastOnce, false, payload.clone())
                    .map_err(|e| format!("mqtt publish: {e}"))?;
                in_flight += 1;
            }
        } else if in_flight == 0 {
            break;
        }
        let event = tokio::time::timeout_at(deadline.into(), el.poll())
            .await
            .map_err(|_| format!("{in_flight} publishes never acknowledged"))?;
        match event {
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                in_flight -= 1;
                done.acked += 1;
            }
            Ok(_) => {}
            Err(e) => return Err(format!("mqtt publisher: {e}")),
        }
    }
    let _ = last.send(done.acked);
    Ok(done)
}

/// A random tag that keeps runs apart on a broker that outlives them.
pub fn rand_tag() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.subsec_nanos() ^ std::process::id().rotate_left(16)
}
