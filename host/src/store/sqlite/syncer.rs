//! The syncer thread: makes committed batches durable and only then answers them.
//!
//! The write connection commits with `synchronous=NORMAL`: SQLite writes a batch's WAL frames
//! into the page cache and returns without a disk sync. The writer hands the batch's held
//! answers here and goes on with the next batch while this thread syncs the WAL file
//! (`fdatasync`) and answers every batch committed before the sync began. So the disk flush of
//! one batch overlaps the SQL of the next, and one sync covers every batch that queued while
//! the previous one ran (group commit across transactions).
//!
//! Why syncing the WAL file is enough: a WAL commit is durable once its frames, commit frame
//! included, are on the disk; that is all `synchronous=FULL` adds to `NORMAL` in WAL mode.
//! Frames written after a sync began are covered by the next one; a crash before that loses
//! only unanswered batches, and the WAL's checksum chain makes SQLite's recovery stop at the
//! last whole commit.
//!
//! A failed sync leaves the page cache in an unknown state (Linux may drop the dirty pages it
//! could not write), so the store is marked broken: the batches waiting get the error, and
//! every later write is refused until the gateway restarts and SQLite recovers from what the
//! disk really holds.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;

use super::writer::Ran;
use crate::store::StoreError;

/// Runs until the writer is gone (its sender dropped) and every queued batch is answered.
///
/// `wal` is the database's WAL file; `broken` is set for good when a sync fails.
pub(super) fn run(wal: PathBuf, batches: Receiver<Vec<Ran>>, broken: Arc<AtomicBool>) {
    let mut file: Option<File> = None;
    let mut waiting: Vec<Ran> = Vec::new();
    while let Ok(first) = batches.recv() {
        waiting.extend(first);
        while let Ok(more) = batches.try_recv() {
            waiting.extend(more);
        }
        let synced = sync(&wal, &mut file);
        if let Err(e) = &synced {
            tracing::error!(error = %e, "syncing the WAL failed; the store refuses writes until restarted");
            broken.store(true, Ordering::SeqCst);
        }
        for ran in waiting.drain(..) {
            ran.answer(synced.as_ref().map(drop));
        }
    }
}

/// Syncs the WAL file's data to the disk, opening it on first use.
fn sync(wal: &Path, file: &mut Option<File>) -> Result<(), StoreError> {
    let f = match file {
        Some(f) => f,
        None => file.insert(File::open(wal).map_err(|e| {
            StoreError::Failed(format!("cannot open {} to sync it: {e}", wal.display()))
        })?),
    };
    f.sync_data().map_err(|e| {
        let why = format!("syncing {} failed: {e}", wal.display());
        // Still a failed sync (the store stays broken), but its answers say why.
        if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem {
            StoreError::ReadOnly(why)
        } else {
            StoreError::Failed(why)
        }
    })
}
