//! The publisher/subscriber load: N pairs, each a publisher and a subscriber on their own
//! one-to-one topic, over framed TCP. The publisher keeps up to `window` `pub`s unanswered (and,
//! with a rate, paces itself); the subscriber takes the pushes and acks the highest seq it holds
//! after every read. A message counts once it is published, stored, pushed and acknowledged end
//! to end; its latency runs from the moment its `pub` is written to the moment its push is read.
//!
//! After the measured interval the publishers stop, and every subscriber must receive every seq
//! its publisher got a `202` for, exactly in order: a gap or a missing message fails the run.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use kefu_core::id::MsgId;
use kefu_core::proto::{Ack, ClientPacket, Code, CtrlParams, Head, Pub, ServerPacket};
use kefu_core::rng::SplitMix64;
use tokio::sync::oneshot;
use tokio::time::sleep_until;

use super::BenchError;
use super::latency::{Latency, Percentiles};
use super::link::{Frame, Link, Reader, Writer};
use super::procstat::{self, Usage};

/// Bytes of the payload taken by the send time stamp.
const STAMP: usize = 8;
/// How long subscribers may take to receive the rest after the publishers stopped.
const DRAIN: Duration = Duration::from_secs(30);
/// Connections set up at the same time.
const SETUP_CONCURRENCY: usize = 8;

/// What to run.
#[derive(Clone, Debug)]
pub struct PairsConfig {
    /// The gateway's framed-TCP address.
    pub tcp: SocketAddr,
    /// Publisher/subscriber pairs.
    pub pairs: usize,
    /// `pub`s each publisher keeps unanswered.
    pub window: usize,
    /// Content bytes per message (at least 8: the send time travels in it).
    pub size: usize,
    /// Load before the measured interval starts.
    pub warmup: Duration,
    /// The measured interval.
    pub duration: Duration,
    /// Messages per second, all publishers together; None sends as fast as the window allows.
    pub rate: Option<f64>,
    /// The gateway's process, for its CPU and memory.
    pub gateway_pid: Option<u32>,
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct PairsReport {
    /// Messages delivered end to end during the measured interval.
    pub delivered: u64,
    /// `202`s the publishers got during the measured interval.
    pub acknowledged: u64,
    /// The measured interval.
    pub elapsed: Duration,
    /// Publish-to-arrival latency of the messages delivered in the interval.
    pub latency: Percentiles,
    /// Messages every publisher got a `202` for, over the whole run (all were delivered).
    pub total: u64,
    /// Pushes received again (retransmitted after a timeout), over the whole run.
    pub redelivered: u64,
    /// The gateway's CPU and memory over the interval, if its process is known.
    pub gateway: Option<Usage>,
    /// The load generator's own CPU and memory over the interval.
    pub generator: Option<Usage>,
    /// The machine's load average when the run started.
    pub load: [f64; 3],
}

impl PairsReport {
    /// Delivered messages per second.
    pub fn rate(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// When the measured interval runs, on one clock shared by all tasks.
#[derive(Clone, Copy, Debug)]
struct Clock {
    epoch: Instant,
    start: Instant,
    end: Instant,
}

impl Clock {
    fn measuring(&self, t: Instant) -> bool {
        t >= self.start && t < self.end
    }

    /// `t` as nanoseconds since the epoch (what travels in a payload).
    fn stamp(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn unstamp(&self, ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(ns)
    }
}

/// One pair after set-up.
struct Pair {
    publisher: Link,
    subscriber: Link,
    /// The topic as the publisher names it.
    pub_topic: String,
    /// The topic as the subscriber names it.
    sub_topic: String,
}

/// A publisher's result.
#[derive(Default)]
struct Published {
    acked_in_window: u64,
    /// Every seq up to this one was acknowledged.
    last_seq: u64,
}

/// A subscriber's result.
#[derive(Default)]
struct Received {
    in_window: u64,
    redelivered: u64,
    latency: Latency,
}

/// Sets up the pairs, runs the load, checks every acknowledged message arrived, reports.
pub async fn run(cfg: &PairsConfig) -> Result<PairsReport, BenchError> {
    if cfg.pairs == 0 || cfg.window == 0 {
        return Err(BenchError::Config(
            "pairs and window must be at least 1".into(),
        ));
    }
    if cfg.size < STAMP {
        return Err(BenchError::Config(format!(
            "size must be at least {STAMP} bytes"
        )));
    }
    let load = procstat::load_average();
    let users = accounts(cfg.tcp, cfg.pairs).await?;
    let mut pairs = Vec::with_capacity(cfg.pairs);
    let mut setups = futures_util::stream::iter(peers(users.len()).take(cfg.pairs))
        .map(|(a, b)| set_up(cfg.tcp, &users[a], &users[b]))
        .buffer_unordered(SETUP_CONCURRENCY);
    while let Some(pair) = setups.next().await {
        pairs.push(pair?);
    }
    drop(setups);

    let epoch = Instant::now();
    let clock = Clock {
        epoch,
        start: epoch + cfg.warmup,
        end: epoch + cfg.warmup + cfg.duration,
    };
    let per_pair_rate = cfg.rate.map(|r| r / cfg.pairs as f64);
    let mut publishers = FuturesUnordered::new();
    let mut subscribers = FuturesUnordered::new();
    for (i, pair) in pairs.into_iter().enumerate() {
        let (final_tx, final_rx) = oneshot::channel();
        let (pr, pw) = pair.publisher.split();
        let (sr, sw) = pair.subscriber.split();
        let seed = rand::random::<u64>() ^ i as u64;
        // Paced publishers start their schedules spread over one period, so the offered load
        // is steady (as many users typing) instead of all pairs publishing in the same instant.
        let phase = per_pair_rate.map_or(Duration::ZERO, |r| {
            Duration::from_secs_f64(i as f64 / cfg.pairs as f64 / r)
        });
        let job = PubJob {
            topic: pair.pub_topic,
            window: cfg.window,
            size: cfg.size,
            rate: per_pair_rate,
            paced_from: epoch + phase,
            seed,
        };
        publishers.push(tokio::spawn(publish(pr, pw, job, clock, final_tx)));
        subscribers.push(tokio::spawn(subscribe(
            sr,
            sw,
            pair.sub_topic,
            clock,
            final_rx,
        )));
    }

    let pid = cfg.gateway_pid.map(|p| p.to_string());
    sleep_until(clock.start.into()).await;
    let gw_before = pid.as_deref().and_then(procstat::sample);
    let me_before = procstat::sample("self");
    sleep_until(clock.end.into()).await;
    let gw_after = pid.as_deref().and_then(procstat::sample);
    let me_after = procstat::sample("self");

    let mut report = PairsReport {
        delivered: 0,
        acknowledged: 0,
        elapsed: cfg.duration,
        latency: Percentiles::default(),
        total: 0,
        redelivered: 0,
        gateway: gw_before
            .zip(gw_after)
            .map(|(a, b)| procstat::usage(&a, &b)),
        generator: me_before
            .zip(me_after)
            .map(|(a, b)| procstat::usage(&a, &b)),
        load,
    };
    let mut first_error = None;
    while let Some(done) = publishers.next().await {
        match done.map_err(|e| BenchError::Protocol(format!("publisher task: {e}")))? {
            Ok(p) => {
                report.acknowledged += p.acked_in_window;
                report.total += p.last_seq;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let mut latency = Latency::new();
    while let Some(done) = subscribers.next().await {
        match done.map_err(|e| BenchError::Protocol(format!("subscriber task: {e}")))? {
            Ok(r) => {
                report.delivered += r.in_window;
                report.redelivered += r.redelivered;
                latency.merge(&r.latency);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    report.latency = latency.summary();
    Ok(report)
}

/// An account made for the run: its user id and login token.
struct Account {
    user: String,
    token: Vec<u8>,
}

/// Makes the fewest accounts whose pairs give every publisher/subscriber pair its own
/// one-to-one topic (creating an account hashes a password on the gateway: it is slow).
async fn accounts(tcp: SocketAddr, pairs: usize) -> Result<Vec<Account>, BenchError> {
    let mut n = 2;
    while n * (n - 1) / 2 < pairs {
        n += 1;
    }
    let tag = format!("{:08x}", rand::random::<u32>());
    let made = futures_util::stream::iter(0..n)
        .map(|i| {
            let login = format!("b{tag}u{i}");
            async move {
                let mut link = Link::connect(tcp).await?;
                link.hi().await?;
                let a = link.acc(&login, "kefu-bench-pass").await?;
                Ok::<_, BenchError>(Account {
                    user: a.user,
                    token: a.token,
                })
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    made.into_iter().collect()
}

/// Every pair of distinct accounts out of `n`, each once.
fn peers(n: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n).flat_map(move |a| (a + 1..n).map(move |b| (a, b)))
}

/// Connects both sides of a pair and logs them in; the publisher subscribes to their
/// one-to-one topic and detaches (it gets no pushes), the subscriber attaches.
async fn set_up(
    tcp: SocketAddr,
    publisher: &Account,
    subscriber: &Account,
) -> Result<Pair, BenchError> {
    let mut p = Link::connect(tcp).await?;
    p.hi().await?;
    p.login_token(&publisher.token).await?;
    let mut s = Link::connect(tcp).await?;
    s.hi().await?;
    s.login_token(&subscriber.token).await?;
    // One-to-one topics are named after the peer on each side.
    p.sub(&subscriber.user).await?;
    p.leave(&subscriber.user).await?;
    s.sub(&publisher.user).await?;
    Ok(Pair {
        publisher: p,
        subscriber: s,
        pub_topic: subscriber.user.clone(),
        sub_topic: publisher.user.clone(),
    })
}

/// What one publisher sends.
struct PubJob {
    topic: String,
    window: usize,
    size: usize,
    /// Messages per second for this publisher.
    rate: Option<f64>,
    /// Where this publisher's paced schedule starts (its message n is due at `n / rate` after).
    paced_from: Instant,
    seed: u64,
}

/// Publishes until the interval ends, then waits for the answers still owed and tells the
/// subscriber the last acknowledged seq.
async fn publish(
    mut r: Reader,
    mut w: Writer,
    job: PubJob,
    clock: Clock,
    final_seq: oneshot::Sender<u64>,
) -> Result<Published, BenchError> {
    let mut rng = SplitMix64::new(job.seed);
    let mut payload = vec![b'x'; job.size];
    let mut result = Published::default();
    let mut in_flight = 0usize;
    let mut sent = 0u64;
    let mut early = BTreeSet::new();
    let drain_until = clock.end + DRAIN;
    loop {
        let now = Instant::now();
        let stopping = now >= clock.end;
        if !stopping {
            let mut room = job.window - in_flight;
            if let Some(rate) = job.rate {
                let due =
                    (now.saturating_duration_since(job.paced_from).as_secs_f64() * rate) as u64;
                room = room.min(usize::try_from(due.saturating_sub(sent)).unwrap_or(usize::MAX));
            }
            let wall_ms = super::wall_ms();
            for _ in 0..room {
                payload[..STAMP].copy_from_slice(&clock.stamp(Instant::now()).to_le_bytes());
                let id = w.next_id();
                w.queue(&ClientPacket::Pub(Pub {
                    id,
                    topic: &job.topic,
                    msg_id: MsgId::generate(wall_ms, &mut rng),
                    head: Head::default(),
                    content: &payload,
                }))?;
            }
            w.flush().await?;
            in_flight += room;
            sent += room as u64;
        } else if in_flight == 0 {
            if let Some(first) = early.first() {
                return Err(BenchError::Lost(format!(
                    "{}: seq {first} acknowledged, seq {} never",
                    job.topic,
                    result.last_seq + 1
                )));
            }
            break;
        }
        let wake = match job.rate {
            _ if stopping => drain_until,
            // A full window waits for answers: the next message may be due already, and
            // waking for it would spin until an answer frees a place.
            Some(_) if in_flight >= job.window => clock.end,
            Some(rate) => {
                let next = job.paced_from + Duration::from_secs_f64((sent + 1) as f64 / rate);
                next.min(clock.end)
            }
            None => clock.end,
        };
        tokio::select! {
            more = r.fill() => {
                if !more? {
                    return Err(BenchError::Closed);
                }
            }
            () = sleep_until(wake.into()) => {
                if Instant::now() >= drain_until {
                    return Err(BenchError::Lost(format!(
                        "{in_flight} pubs on {} never answered", job.topic
                    )));
                }
                continue;
            }
        }
        let now = Instant::now();
        while let Some(frame) = r.next_frame()? {
            let Frame::Packet(ServerPacket::Ctrl(c)) = frame else {
                continue;
            };
            match (c.code, c.params) {
                (
                    Code::ACCEPTED,
                    CtrlParams::Pub {
                        seq, dup: false, ..
                    },
                ) => {
                    in_flight = in_flight.saturating_sub(1);
                    // Answers to pubs in flight together may come in any order; the seqs
                    // they carry must fill 1, 2, 3, ... with nothing twice.
                    if seq <= result.last_seq || !early.insert(seq) {
                        return Err(BenchError::Lost(format!(
                            "{}: seq {seq} acknowledged twice",
                            job.topic
                        )));
                    }
                    while early.remove(&(result.last_seq + 1)) {
                        result.last_seq += 1;
                    }
                    if clock.measuring(now) {
                        result.acked_in_window += 1;
                    }
                }
                (Code::RATE_LIMITED, _) => {
                    return Err(BenchError::Refused {
                        what: "pub",
                        code: c.code.0,
                        text: "the gateway rate-limits sessions: start it with --rate 0".into(),
                    });
                }
                (code, _) => {
                    return Err(BenchError::Refused {
                        what: "pub",
                        code: code.0,
                        text: format!("{} (request {}, topic {:?})", c.text, c.id, c.topic),
                    });
                }
            }
        }
    }
    // The subscriber may have failed already; its error is reported instead.
    let _ = final_seq.send(result.last_seq);
    Ok(result)
}

/// Receives pushes in order, acks after every read, until it holds the publisher's last seq.
async fn subscribe(
    mut r: Reader,
    mut w: Writer,
    topic: String,
    clock: Clock,
    mut final_seq: oneshot::Receiver<u64>,
) -> Result<Received, BenchError> {
    let mut got = Received::default();
    let mut held = 0u64;
    let mut last = None;
    let drain_until = clock.end + DRAIN;
    loop {
        if last.is_some_and(|l| held >= l) {
            return Ok(got);
        }
        tokio::select! {
            more = r.fill() => {
                if !more? {
                    return Err(BenchError::Closed);
                }
            }
            f = &mut final_seq, if last.is_none() => {
                // A publisher that failed sends nothing; its own error is the one reported.
                last = Some(f.unwrap_or(0));
                continue;
            }
            () = sleep_until(drain_until.into()) => {
                return Err(BenchError::Lost(format!(
                    "{topic}: holds seq {held}, the publisher had {} acknowledged",
                    last.unwrap_or(0)
                )));
            }
        }
        let now = Instant::now();
        let before = held;
        while let Some(frame) = r.next_frame()? {
            let Frame::Packet(ServerPacket::Data(d)) = frame else {
                continue;
            };
            if d.seq <= held {
                got.redelivered += 1;
                continue;
            }
            if d.seq != held + 1 {
                return Err(BenchError::Lost(format!(
                    "{topic}: push of seq {} after {held}",
                    d.seq
                )));
            }
            held = d.seq;
            if clock.measuring(now) {
                got.in_window += 1;
                let stamp = d
                    .content
                    .first_chunk::<STAMP>()
                    .map(|b| u64::from_le_bytes(*b))
                    .ok_or_else(|| BenchError::Protocol("a push without its stamp".into()))?;
                got.latency
                    .record(now.saturating_duration_since(clock.unstamp(stamp)));
            }
        }
        if held > before {
            w.queue(&ClientPacket::Ack(Ack {
                topic: &topic,
                seq: held,
            }))?;
            w.flush().await?;
        }
    }
}
