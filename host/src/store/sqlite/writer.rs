//! The writer thread: the only connection that writes. It takes the first queued command,
//! drains what else is queued (up to `max_batch`), runs them all in one transaction, each inside
//! its own SAVEPOINT (appends excepted: their one write statement is atomic by itself) so that
//! a failing command fails alone, and commits once. The commit does not wait for the disk: the
//! batch's answers go to the syncer (see `syncer`), which answers them once the WAL is synced,
//! while this thread already runs the next batch. After a commit it nudges the checkpointer
//! (see `checkpoint`), so copying the WAL back into the database never holds up a commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::Counters;
use super::readonly::ReadOnlyWatch;
use super::schema::{copy_error, map};
use crate::store::{StoreError, StoreResult};

/// A write command queued for the writer thread.
pub(super) trait WriteJob: Send {
    /// Runs the command inside the open transaction; the answer waits for the commit. A
    /// failure is told apart from a read-only folder by `watch`.
    fn run(self: Box<Self>, conn: &Connection, watch: &ReadOnlyWatch) -> Ran;
    /// Answers without running: the batch failed before this command's turn.
    fn fail(self: Box<Self>, err: StoreError);
    /// Whether this is an append (see [`Op::append`]).
    fn is_append(&self) -> bool;
}

/// A command that ran: whether it succeeded and how to answer once its commit is decided (and,
/// for a durable store, synced).
pub(super) struct Ran {
    /// A copy of the command's own error, if it failed.
    err: Option<StoreError>,
    append: bool,
    reply: Box<dyn Reply>,
}

/// The held answer of a command that ran.
trait Reply: Send {
    /// Sends the answer: the command's own result if the commit succeeded (or the command
    /// failed by itself), the commit's error otherwise.
    fn send(self: Box<Self>, commit: Result<(), &StoreError>);
}

/// A write command: a closure over the write connection and the channel for its answer.
pub(super) struct Op<T, F> {
    /// The work, run inside the batch's transaction.
    pub(super) f: F,
    /// Where the answer goes.
    pub(super) tx: oneshot::Sender<StoreResult<T>>,
    /// Whether this is an append. An append writes with one statement, after its checks, and
    /// SQLite undoes a failed statement by itself: it runs without a savepoint of its own.
    pub(super) append: bool,
}

impl<T, F> WriteJob for Op<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection, watch: &ReadOnlyWatch) -> Ran {
        let Op { f, tx, append } = *self;
        let result = f(conn).map_err(|e| watch.classify(e));
        Ran {
            err: result.as_ref().err().map(copy_error),
            append,
            reply: Box::new(Held { result, tx }),
        }
    }

    fn fail(self: Box<Self>, err: StoreError) {
        // The caller may have gone away; nobody is left to tell.
        let _ = self.tx.send(Err(err));
    }

    fn is_append(&self) -> bool {
        self.append
    }
}

impl Ran {
    /// Answers the command: its own result if `commit` succeeded (or the command failed by
    /// itself), the commit's error otherwise.
    pub(super) fn answer(self, commit: Result<(), &StoreError>) {
        self.reply.send(commit);
    }
}

/// The result of a command held until the commit.
struct Held<T> {
    result: StoreResult<T>,
    tx: oneshot::Sender<StoreResult<T>>,
}

impl<T: Send> Reply for Held<T> {
    fn send(self: Box<Self>, commit: Result<(), &StoreError>) {
        let answer = match (self.result, commit) {
            (Err(own), _) => Err(own),
            (Ok(v), Ok(())) => Ok(v),
            (Ok(_), Err(e)) => Err(copy_error(e)),
        };
        // The caller may have gone away; the write stands either way.
        let _ = self.tx.send(answer);
    }
}

/// Why a broken store refuses writes.
pub(super) const BROKEN: &str = "an earlier disk sync failed; restart to recover";

/// Where the writer's committed batches go.
pub(super) struct Outlets {
    /// The syncer, which answers a batch once the WAL is synced; `None` answers right after the
    /// commit (`SyncMode::Normal`: durable against a process crash, not a power loss).
    pub(super) syncer: Option<Sender<Vec<Ran>>>,
    /// The checkpointer's nudge after every commit.
    pub(super) checkpointer: SyncSender<()>,
    /// Set by the syncer when a sync failed: every later batch is refused.
    pub(super) broken: Arc<AtomicBool>,
    /// Tells failures on a read-only folder apart (and reports them).
    pub(super) read_only: ReadOnlyWatch,
}

/// Runs the writer until every sender is gone and the queue is drained, then closes `conn`.
pub(super) fn run(
    conn: Connection,
    rx: Receiver<Box<dyn WriteJob>>,
    max_batch: usize,
    counters: Arc<Counters>,
    outlets: Outlets,
) {
    let max_batch = max_batch.max(1);
    let mut batch = Vec::with_capacity(max_batch.min(4096));
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        if outlets.broken.load(Ordering::SeqCst) {
            for job in batch.drain(..) {
                job.fail(StoreError::Failed(BROKEN.into()));
            }
            continue;
        }
        let Some(ran) = run_batch(&conn, &mut batch, &counters, &outlets.read_only) else {
            continue;
        };
        match &outlets.syncer {
            Some(syncer) => {
                if let Err(unsent) = syncer.send(ran) {
                    for r in unsent.0 {
                        r.answer(Err(&StoreError::Closed));
                    }
                }
            }
            None => {
                for r in ran {
                    r.answer(Ok(()));
                }
            }
        }
        // A full channel means a nudge is pending already.
        let _ = outlets.checkpointer.try_send(());
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "closing the store's write connection failed");
    }
}

/// Runs one batch in one transaction. Committed: its commands' held answers, to send once the
/// commit is durable. Failed as a whole: `None`, every command answered with the error (a
/// [`StoreError::ReadOnly`] if `watch` finds the folder read-only).
fn run_batch(
    conn: &Connection,
    batch: &mut Vec<Box<dyn WriteJob>>,
    counters: &Counters,
    watch: &ReadOnlyWatch,
) -> Option<Vec<Ran>> {
    watch.new_batch();
    // A failed statement's error, told apart from a read-only folder.
    let failed = |e| watch.classify(map(e));
    let mut jobs = batch.drain(..);
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        let e = failed(e);
        for job in jobs {
            job.fail(copy_error(&e));
        }
        counters.failed_batches.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    let mut ran: Vec<Ran> = Vec::with_capacity(jobs.len());
    let mut abort: Option<StoreError> = None;
    for job in jobs.by_ref() {
        let own_savepoint = !job.is_append();
        if own_savepoint && let Err(e) = exec(conn, "SAVEPOINT cmd") {
            let e = failed(e);
            job.fail(copy_error(&e));
            abort = Some(e);
            break;
        }
        let done = job.run(conn, watch);
        let ok = done.err.is_none();
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (it may do so on SQLITE_FULL or an
            // I/O error): every command of the batch is lost, for the command's reason.
            abort = Some(done.err.as_ref().map_or_else(
                || StoreError::Failed("the transaction was rolled back by SQLite".into()),
                copy_error,
            ));
            ran.push(done);
            break;
        }
        ran.push(done);
        let end = if !own_savepoint {
            Ok(())
        } else if ok {
            exec(conn, "RELEASE cmd")
        } else {
            exec(conn, "ROLLBACK TO cmd").and_then(|()| exec(conn, "RELEASE cmd"))
        };
        if let Err(e) = end {
            abort = Some(failed(e));
            break;
        }
    }
    let outcome = match abort {
        Some(e) => Err(e),
        None => exec(conn, "COMMIT").map_err(failed),
    };
    match outcome {
        Ok(()) => {
            watch.committed();
            counters.commits.fetch_add(1, Ordering::Relaxed);
            let appends = ran.iter().filter(|r| r.append && r.err.is_none()).count();
            counters
                .appends
                .fetch_add(appends as u64, Ordering::Relaxed);
            counters
                .writes
                .fetch_add(ran.len() as u64, Ordering::Relaxed);
            counters
                .largest_batch
                .fetch_max(ran.len() as u64, Ordering::Relaxed);
            Some(ran)
        }
        Err(e) => {
            if !conn.is_autocommit()
                && let Err(re) = conn.execute_batch("ROLLBACK")
            {
                tracing::error!(error = %re, "rolling back a failed batch failed");
            }
            counters.failed_batches.fetch_add(1, Ordering::Relaxed);
            for r in ran {
                r.answer(Err(&e));
            }
            for job in jobs {
                job.fail(copy_error(&e));
            }
            None
        }
    }
}

/// Runs one transaction-control statement, prepared once per connection (these run for every
/// command; parsing them each time showed in profiles).
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}
