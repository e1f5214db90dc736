//! The reader pool: a few threads, each with its own connection, that answer read queries.
//! WAL lets them read while the writer commits, so reads never wait behind a disk sync; each
//! query starts a fresh read transaction, so it sees every commit that finished before it.

use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::store::StoreResult;

/// A read query queued for the pool.
pub(super) type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// Wraps a query and the channel for its answer into a [`ReadJob`].
pub(super) fn job<T, F>(f: F, tx: oneshot::Sender<StoreResult<T>>) -> ReadJob
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
{
    Box::new(move |conn| {
        // The caller may have gone away; a read has no effect to keep.
        let _ = tx.send(f(conn));
    })
}

/// Runs one reader until every sender is gone, then closes `conn`.
pub(super) fn run(conn: Connection, rx: Arc<Mutex<Receiver<ReadJob>>>) {
    loop {
        // One reader at a time waits on the queue; the others wait for the lock. A poisoned
        // lock only means another reader panicked while waiting: the queue itself is intact.
        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        match next {
            Ok(job) => job(&conn),
            Err(_) => break,
        }
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "closing a store read connection failed");
    }
}
