//! The state shared by the [`super::Client`] handles and the driver task: the engine behind a
//! mutex (held only for engine calls, never across an `.await`), the routes of events to
//! subscriptions, the requests waiting for answers, round-trip samples.
//!
//! Handles go first: the driver holds the lock for one small step at a time (one frame fed, one
//! frame polled, one event routed) and, before each step, lets a handle that is waiting for the
//! lock have it. A handle waits by spinning, not by sleeping in the kernel, so a `publish`
//! waits behind one driver step at most and never for a thread wake-up.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use kefu_core::engine::{Engine, EngineConfig, SessionState};
use kefu_core::id::MsgId;
use kefu_core::pool::TopicKey;
use kefu_core::proto::{Code, ReqId};
use kefu_core::time::Instant;
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};

use super::directory::Directory;
use super::error::ClientError;
use super::types::{ClientEvent, TopicEvent};

/// Messages the host engine's pool holds (the conversation views of all topics together).
pub const POOL_MESSAGES: usize = 1024;
/// Content bytes per message: the gateway's default `max_content` (16 KiB).
pub const CONTENT_BYTES: usize = 16 * 1024;
/// Topics one client follows at most (topics are never forgotten during a client's life).
pub const TOPICS: usize = 256;
/// Own messages waiting for the gateway's acknowledgement at most.
pub const OUTBOX: usize = 256;
/// Largest frame read or written: a `data` packet with [`CONTENT_BYTES`] of content plus
/// topic, ids, sender and head.
pub const FRAME_BYTES: usize = CONTENT_BYTES + 1024;

/// The core engine with the host's capacities (about 17 MB; always boxed).
pub type HostEngine = Engine<POOL_MESSAGES, CONTENT_BYTES, TOPICS, OUTBOX, FRAME_BYTES>;

/// Round-trip samples kept for [`super::ClientMetrics`].
const RTT_SAMPLES: usize = 1024;
/// How long a handle spins for the lock before it sleeps in the kernel: far longer than one
/// driver step, far shorter than a scheduler time slice.
const HANDLE_SPIN: Duration = Duration::from_micros(200);
/// How long the driver gives way to waiting handles at most before it takes the lock anyway.
const DRIVER_YIELD: Duration = Duration::from_micros(100);

/// Builds the engine on a thread with a stack large enough for `Engine::new`'s by-value return,
/// so no tokio worker's stack overflows.
pub(crate) fn build_engine(cfg: EngineConfig, seed: u64) -> Result<Box<HostEngine>, ClientError> {
    let stack = 4 * std::mem::size_of::<HostEngine>() + (1 << 20);
    std::thread::Builder::new()
        .name("kefu-engine-init".into())
        .stack_size(stack)
        .spawn(move || Box::new(HostEngine::new(Instant::ZERO, cfg, seed)))
        .map_err(ClientError::Spawn)?
        .join()
        .map_err(|_| ClientError::Spawn(std::io::Error::other("engine construction panicked")))
}

/// One subscription's channel.
pub(crate) struct Route {
    pub id: u64,
    pub tx: mpsc::Sender<TopicEvent>,
}

/// The answer to an application request.
pub(crate) type Reply = (Code, Option<String>);

/// Everything behind the one lock.
pub(crate) struct Inner {
    pub engine: Box<HostEngine>,
    pub routes: HashMap<TopicKey, Vec<Route>>,
    pub replies: HashMap<ReqId, oneshot::Sender<Reply>>,
    pub next_route: u64,
    /// When each own message in flight was published (for round-trip samples).
    pub published_at: HashMap<MsgId, std::time::Instant>,
    pub rtts: VecDeque<Duration>,
    /// Own messages stored / failed, counted from the engine's events.
    pub sent: u64,
    pub failed: u64,
    /// Why the last connection attempt failed (cleared when one succeeds).
    pub connect_error: Option<String>,
}

impl Inner {
    pub(crate) fn record_rtt(&mut self, id: &MsgId) {
        if let Some(at) = self.published_at.remove(id) {
            if self.rtts.len() == RTT_SAMPLES {
                self.rtts.pop_front();
            }
            self.rtts.push_back(at.elapsed());
        }
    }

    /// A topic's name.
    pub(crate) fn topic_name(&self, key: TopicKey) -> String {
        self.engine
            .topic(key)
            .map(|t| t.name.as_str().to_owned())
            .unwrap_or_default()
    }
}

/// State shared by handles, subscriptions and the driver.
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    /// Handles waiting for the lock: the driver lets them go first.
    waiting: AtomicUsize,
    /// `std::time::Instant` at the engine's `Instant::ZERO`.
    pub epoch: std::time::Instant,
    /// Wakes the driver: something to transmit, or a subscription went away.
    pub wake: Notify,
    /// Client-wide events.
    pub events: broadcast::Sender<ClientEvent>,
    /// The session state, for waiters.
    pub state: watch::Sender<SessionState>,
    /// Capacity of each subscription's channel.
    pub buffer: usize,
    /// Longest wait for an answer.
    pub request_timeout: Duration,
    /// Where the conversation list is asked.
    pub directory: Directory,
}

impl Shared {
    pub(crate) fn new(
        engine: Box<HostEngine>,
        buffer: usize,
        request_timeout: Duration,
        directory: Directory,
    ) -> Self {
        Shared {
            inner: Mutex::new(Inner {
                engine,
                routes: HashMap::new(),
                replies: HashMap::new(),
                next_route: 0,
                published_at: HashMap::new(),
                rtts: VecDeque::new(),
                sent: 0,
                failed: 0,
                connect_error: None,
            }),
            waiting: AtomicUsize::new(0),
            epoch: std::time::Instant::now(),
            wake: Notify::new(),
            events: broadcast::channel(1024).0,
            state: watch::channel(SessionState::Offline).0,
            buffer: buffer.max(1),
            request_timeout,
            directory,
        }
    }

    /// The lock, for handles: ahead of the driver, spinning while the driver finishes its
    /// step. A panic elsewhere while it was held does not make it unusable.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        if let Some(g) = self.try_lock() {
            return g;
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let started = std::time::Instant::now();
        let g = loop {
            if let Some(g) = self.try_lock() {
                break g;
            }
            if started.elapsed() > HANDLE_SPIN {
                break self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            }
            std::hint::spin_loop();
        };
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        g
    }

    /// The lock, for the driver: one step at a time, after any handle waiting for it.
    pub(crate) fn lock_driver(&self) -> MutexGuard<'_, Inner> {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let started = std::time::Instant::now();
            while self.waiting.load(Ordering::SeqCst) > 0 && started.elapsed() < DRIVER_YIELD {
                std::hint::spin_loop();
            }
        }
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn try_lock(&self) -> Option<MutexGuard<'_, Inner>> {
        match self.inner.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// The engine's clock now.
    pub(crate) fn now(&self) -> Instant {
        Instant::from_micros(u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    /// Wakes the driver.
    pub(crate) fn kick(&self) {
        self.wake.notify_one();
    }
}

/// Shared handle type.
pub(crate) type SharedRef = Arc<Shared>;
