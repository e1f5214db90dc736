//! Telling a read-only data folder apart from other write failures.
//!
//! When the file system under a running gateway turns read-only (the kernel does this after an
//! I/O error with `errors=remount-ro`; `mount -o remount,ro` itself is refused while SQLite holds
//! the files open for writing), SQLite does not say "read-only": its writes through the files it
//! already has open fail with a plain `SQLITE_IOERR` ("disk I/O error"), which the gateway used
//! to answer as a 500. The writer thread asks this module about every failure it reports: a
//! probe file next to the database that cannot be created because the file system is read-only
//! (`EROFS`) turns the error into [`StoreError::ReadOnly`], which the gateway answers with a
//! 503 saying so. The first such failure is logged once and makes [`SqliteStore::fault`]
//! (so `/healthz`) report it; the next committed batch clears it and says the folder is
//! writable again.
//!
//! [`SqliteStore::fault`]: super::SqliteStore

use std::cell::Cell;
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::store::StoreError;

/// What [`super::SqliteStore::fault`] says while the data folder is read-only.
pub(super) const READ_ONLY: &str = "the data folder is read-only: writes are refused";

/// The writer thread's read-only detector; see the module documentation.
pub(super) struct ReadOnlyWatch {
    /// The probe file: `<database>-probe`, created and removed again by [`probe`].
    probe: PathBuf,
    /// Set while the last failure found the folder read-only; shared with the store's handles.
    flag: Arc<AtomicBool>,
    /// The probe's answer for the batch being run (one probe per batch, however many fail).
    memo: Cell<Option<Option<String>>>,
}

impl ReadOnlyWatch {
    /// A detector for the database file `db`, reporting through `flag`.
    pub(super) fn new(db: &Path, flag: Arc<AtomicBool>) -> ReadOnlyWatch {
        let mut probe = db.as_os_str().to_owned();
        probe.push("-probe");
        ReadOnlyWatch {
            probe: PathBuf::from(probe),
            flag,
            memo: Cell::new(None),
        }
    }

    /// Forgets the last probe's answer: a new batch begins.
    pub(super) fn new_batch(&self) {
        self.memo.set(None);
    }

    /// `e`, or [`StoreError::ReadOnly`] if `e` is a failure (not a conflict, a missing thing or
    /// a full disk) and the data folder's file system refuses writes.
    pub(super) fn classify(&self, e: StoreError) -> StoreError {
        let (StoreError::Failed(why) | StoreError::ReadOnly(why)) = &e else {
            return e;
        };
        let found = self.memo.take().unwrap_or_else(|| probe(&self.probe));
        self.memo.set(Some(found.clone()));
        let Some(found) = found else {
            return e;
        };
        if !self.flag.swap(true, Ordering::SeqCst) {
            tracing::error!(
                folder = %self.probe.parent().unwrap_or(Path::new(".")).display(),
                "storage is read-only: writes (pub, acc, ...) are refused with 503 until the \
                 folder is writable again"
            );
        }
        StoreError::ReadOnly(format!("{found} ({why})"))
    }

    /// A batch committed: the folder takes writes (again).
    pub(super) fn committed(&self) {
        if self.flag.load(Ordering::Relaxed) && self.flag.swap(false, Ordering::SeqCst) {
            tracing::warn!("storage is writable again");
        }
    }
}

/// Whether `probe` cannot be created because its file system is read-only: the reason, or
/// `None` if it could be created (it is removed again) or failed for another reason. The probe
/// is a file of its own: opening and closing the database file itself would drop SQLite's
/// POSIX locks on it.
pub(super) fn probe(probe: &Path) -> Option<String> {
    match OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(probe)
    {
        Ok(f) => {
            drop(f);
            if let Err(e) = std::fs::remove_file(probe) {
                tracing::warn!(error = %e, file = %probe.display(), "removing the write probe failed");
            }
            None
        }
        Err(e) if e.kind() == ErrorKind::ReadOnlyFilesystem => Some(format!(
            "{}: the file system is read-only",
            probe.parent().unwrap_or(Path::new(".")).display()
        )),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writable_folder_is_not_read_only_and_keeps_no_probe_file() {
        let dir = tempfile::TempDir::new().unwrap();
        let db = dir.path().join("kefu.db");
        let flag = Arc::new(AtomicBool::new(false));
        let watch = ReadOnlyWatch::new(&db, Arc::clone(&flag));
        let e = watch.classify(StoreError::Failed("disk I/O error".into()));
        assert!(
            matches!(&e, StoreError::Failed(m) if m == "disk I/O error"),
            "{e:?}"
        );
        assert!(!flag.load(Ordering::SeqCst));
        assert!(
            !dir.path().join("kefu.db-probe").exists(),
            "the probe is removed"
        );
    }

    #[test]
    fn conflicts_and_a_full_disk_are_never_probed() {
        let dir = tempfile::TempDir::new().unwrap();
        let flag = Arc::new(AtomicBool::new(false));
        let watch = ReadOnlyWatch::new(&dir.path().join("kefu.db"), flag);
        for e in [
            StoreError::Conflict("login".into()),
            StoreError::Full("database or disk is full".into()),
            StoreError::Closed,
        ] {
            let want = e.to_string();
            assert_eq!(watch.classify(e).to_string(), want);
        }
    }
}
