//! The checkpointer thread: copies committed WAL pages back into the database file on its own
//! connection, so the writer never pays for it inside a commit. The writer turns SQLite's
//! automatic checkpoint down to a safety net and nudges this thread after every commit; the
//! thread checkpoints at most once per [`INTERVAL`], and only after commits.

use std::sync::mpsc::Receiver;
use std::time::Duration;

use rusqlite::Connection;

/// The most often a checkpoint runs. Each one syncs the WAL and the database, so fewer, larger
/// ones cost the disk less; the WAL holds at most about this long of commits.
pub(super) const INTERVAL: Duration = Duration::from_millis(100);

/// WAL pages after which the writer checkpoints by itself (SQLite's automatic checkpoint),
/// should this thread fall behind: a bound on the WAL, not the normal path.
pub(super) const WRITER_FALLBACK_PAGES: i64 = 16 * 1024;

/// Runs until the writer is gone (its nudges' sender dropped), then closes `conn`.
pub(super) fn run(conn: Connection, nudges: Receiver<()>) {
    while nudges.recv().is_ok() {
        std::thread::sleep(INTERVAL);
        while nudges.try_recv().is_ok() {}
        // PASSIVE never waits for readers or the writer: what it cannot copy now, the next
        // round copies.
        let done: rusqlite::Result<(i64, i64, i64)> =
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            });
        if let Err(e) = done {
            tracing::warn!(error = %e, "checkpoint failed");
        }
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "closing the store's checkpoint connection failed");
    }
}
