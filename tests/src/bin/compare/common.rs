//! What every driver shares: the run's clock, the payload stamp, the per-task results and the
//! measured run.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use kefu_host::bench::latency::{Latency, Percentiles};
use kefu_host::bench::procstat::{self, Usage};

/// Bytes of a payload taken by the send time (ns since the epoch) and the publisher's count.
pub const HEADER: usize = 16;
/// How long subscribers may take to receive the rest after the publishers stopped.
pub const DRAIN: Duration = Duration::from_secs(30);

/// One pattern: pairs, window, payload size, timing.
#[derive(Clone, Copy, Debug)]
pub struct Pattern {
    /// Publisher/subscriber pairs.
    pub pairs: usize,
    /// Publishes each publisher keeps unacknowledged.
    pub window: usize,
    /// Payload bytes.
    pub size: usize,
    /// Load before the measurement.
    pub warmup: Duration,
    /// The measured interval.
    pub duration: Duration,
}

/// When the measured interval runs, on one clock shared by all tasks.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub epoch: Instant,
    pub start: Instant,
    pub end: Instant,
}

impl Clock {
    /// A clock whose measurement starts after the pattern's warm-up.
    pub fn new(p: &Pattern) -> Clock {
        let epoch = Instant::now();
        Clock {
            epoch,
            start: epoch + p.warmup,
            end: epoch + p.warmup + p.duration,
        }
    }

    /// Whether `t` is inside the measured interval.
    pub fn measuring(&self, t: Instant) -> bool {
        t >= self.start && t < self.end
    }

    /// Writes the send time and the message's count into the payload's first bytes.
    pub fn stamp(&self, payload: &mut [u8], count: u64) {
        let ns = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        payload[..8].copy_from_slice(&ns.to_le_bytes());
        payload[8..HEADER].copy_from_slice(&count.to_le_bytes());
    }

    /// The send time and count a payload carries.
    pub fn read(&self, payload: &[u8]) -> Option<(Instant, u64)> {
        let ns = u64::from_le_bytes(*payload.first_chunk::<8>()?);
        let count = u64::from_le_bytes(payload.get(8..HEADER)?.try_into().ok()?);
        Some((self.epoch + Duration::from_nanos(ns), count))
    }
}

/// What one publisher did.
#[derive(Debug, Default)]
pub struct Published {
    /// Messages acknowledged over the whole run (counts 1..=this).
    pub acked: u64,
}

/// What one subscriber did.
#[derive(Debug, Default)]
pub struct Received {
    /// Messages received inside the interval.
    pub in_window: u64,
    /// Messages received again.
    pub duplicates: u64,
    /// Latency of those received inside the interval.
    pub latency: Latency,
}

impl Received {
    /// Takes one delivery whose payload says count `count`, sent at `sent`, that arrived at
    /// `now`, after the subscriber held everything up to `held`; the new `held`. Counts from
    /// one publisher arrive in order on every system measured; a jump is a loss.
    pub fn take(
        &mut self,
        clock: &Clock,
        held: u64,
        count: u64,
        sent: Instant,
        now: Instant,
    ) -> Result<u64, String> {
        if count <= held {
            self.duplicates += 1;
            return Ok(held);
        }
        if count != held + 1 {
            return Err(format!("message {count} arrived after {held}: lost"));
        }
        if clock.measuring(now) {
            self.in_window += 1;
            self.latency.record(now.saturating_duration_since(sent));
        }
        Ok(count)
    }
}

/// A subscriber's state, fed by the task that polls its client library: what it received,
/// the highest count it holds, the first error. Clients' poll loops are not all cancel-safe,
/// so the poll runs in its own task and [`Sink::finish`] waits on the count it publishes.
#[derive(Clone)]
pub struct Sink {
    state: Arc<Mutex<SinkState>>,
    held: watch::Sender<u64>,
    clock: Clock,
}

#[derive(Default)]
struct SinkState {
    got: Received,
    held: u64,
    error: Option<String>,
}

impl Sink {
    /// An empty sink.
    pub fn new(clock: Clock) -> Sink {
        Sink {
            state: Arc::default(),
            held: watch::channel(0).0,
            clock,
        }
    }

    /// Takes one delivered payload; false once the subscriber failed (stop polling).
    pub fn deliver(&self, payload: &[u8]) -> bool {
        let now = Instant::now();
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let st = &mut *guard;
        let taken = match self.clock.read(payload) {
            Some((sent, count)) => st.got.take(&self.clock, st.held, count, sent, now),
            None => Err(format!(
                "a payload of {} bytes without its stamp",
                payload.len()
            )),
        };
        match taken {
            Ok(held) => {
                st.held = held;
                self.held.send_replace(held);
                true
            }
            Err(e) => {
                st.error.get_or_insert(e);
                self.held.send_replace(u64::MAX);
                false
            }
        }
    }

    /// Records why the subscriber cannot go on.
    pub fn fail(&self, why: String) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.error.get_or_insert(why);
        self.held.send_replace(u64::MAX);
    }

    /// Waits until the subscriber holds everything its publisher had acknowledged (sent on
    /// `last` when the publisher stopped), then stops the polling task.
    pub async fn finish(
        self,
        last: oneshot::Receiver<u64>,
        poller: tokio::task::JoinHandle<()>,
    ) -> Result<Received, String> {
        let deadline = self.clock.end + DRAIN;
        let mut held = self.held.subscribe();
        let waited = tokio::time::timeout_at(deadline.into(), async {
            // A publisher that failed sends nothing; its own error is reported.
            let last = last.await.unwrap_or(0);
            let _ = held.wait_for(|h| *h >= last).await;
            last
        })
        .await;
        poller.abort();
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = st.error.take() {
            return Err(e);
        }
        if waited.is_err() {
            return Err(format!(
                "only {} messages arrived before the deadline",
                st.held
            ));
        }
        Ok(std::mem::take(&mut st.got))
    }
}

/// A measured run of one system.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Delivered messages per second end to end.
    pub rate: f64,
    /// Publish-to-arrival latency.
    pub latency: Percentiles,
    /// The server's CPU and memory.
    pub server: Option<Usage>,
    /// The load average when the run started.
    pub load: [f64; 3],
}

/// Samples the server at the interval's start and end, then waits for the drivers' tasks and
/// sums them up.
pub async fn measure(
    pattern: &Pattern,
    clock: Clock,
    pid: Option<u32>,
    load: [f64; 3],
    publishers: Vec<tokio::task::JoinHandle<Result<Published, String>>>,
    subscribers: Vec<tokio::task::JoinHandle<Result<Received, String>>>,
) -> Result<Measured, String> {
    let pid = pid.map(|p| p.to_string());
    tokio::time::sleep_until(clock.start.into()).await;
    let before = pid.as_deref().and_then(procstat::sample);
    tokio::time::sleep_until(clock.end.into()).await;
    let after = pid.as_deref().and_then(procstat::sample);
    let mut first_error = None;
    for p in publishers {
        match p.await.map_err(|e| e.to_string())? {
            Ok(_) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let mut delivered = 0;
    let mut latency = Latency::new();
    for s in subscribers {
        match s.await.map_err(|e| e.to_string())? {
            Ok(r) => {
                delivered += r.in_window;
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
    let secs = pattern.duration.as_secs_f64();
    Ok(Measured {
        rate: delivered as f64 / secs,
        latency: latency.summary(),
        server: before.zip(after).map(|(a, b)| procstat::usage(&a, &b)),
        load,
    })
}
