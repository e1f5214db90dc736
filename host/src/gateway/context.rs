//! What every session shares: the store, the hub, policy, keys, the desk, metrics, settings.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{Semaphore, watch};
use tokio_util::task::TaskTracker;

use super::auth::TokenKey;
use super::config::GatewayConfig;
use super::desk::Desk;
use super::hub::Hub;
use super::metrics::Metrics;
use super::policy::Policy;
use crate::store::Store;

/// The gateway's shared state, one per process, behind an `Arc`.
pub struct Ctx<S> {
    /// Durable storage.
    pub store: Arc<S>,
    /// Topics in memory and sessions online.
    pub hub: Hub,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    /// Content policy.
    pub policy: Policy,
    /// Token signing key.
    pub key: TokenKey,
    /// Customer-service assignment.
    desk: Mutex<Desk>,
    /// Settings.
    pub cfg: GatewayConfig,
    /// Flips to true when the gateway starts shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// Every session task, so shutdown can wait for them.
    pub sessions: TaskTracker,
    /// Password hashes running at once: one per core (see [`Ctx::hash_work`]).
    hashing: Semaphore,
}

impl<S: Store> Ctx<S> {
    /// Puts the parts together.
    pub fn new(
        store: Arc<S>,
        policy: Policy,
        key: TokenKey,
        desk: Desk,
        cfg: GatewayConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Ctx<S> {
        Ctx {
            store,
            hub: Hub::new(),
            metrics: Metrics::new(),
            policy,
            key,
            desk: Mutex::new(desk),
            cfg,
            shutdown,
            sessions: TaskTracker::new(),
            hashing: Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get())),
        }
    }

    /// Runs password hashing or checking on the blocking pool, at most one per core at a time.
    /// argon2 takes about 19 MiB and tens of milliseconds of CPU per hash: a storm of logins
    /// waits its turn instead of taking every core and leaving its memory with the allocator.
    /// `None` if the work panicked.
    pub async fn hash_work<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        // The semaphore is never closed.
        let _permit = self.hashing.acquire().await.ok()?;
        tokio::task::spawn_blocking(work).await.ok()
    }

    /// Locks the desk (held for a decision, never across an `.await`).
    pub fn desk(&self) -> MutexGuard<'_, Desk> {
        self.desk.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// Wall clock, ms since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
