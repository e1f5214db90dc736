//! The embedded default store: SQLite in WAL mode with group commit.
//!
//! One writer thread owns the only write connection: every modifying call becomes a command on
//! its queue, answered through a oneshot once the batch it rode in is committed (see
//! `writer`) and synced to the disk (see `syncer`). Reads go to a small pool of reader threads
//! with their own connections (see `reader`), so they never wait behind a disk sync. No SQLite
//! call ever runs on a tokio worker.
//!
//! | module | job |
//! |---|---|
//! | `schema` | pragmas, versioned schema, error mapping |
//! | `writer` | the writer thread: batches, savepoints, group commit |
//! | `syncer` | the syncer thread: syncs the WAL, then answers the batches it covers |
//! | `checkpoint` | the checkpointer thread: WAL back into the database, off the commit path |
//! | `readonly` | tells write failures on a read-only data folder apart from other errors |
//! | `reader` | the reader pool |
//! | `ops` | the write commands' SQL |
//! | `rows` | the read queries and row decoding |

mod checkpoint;
mod ops;
mod reader;
mod readonly;
mod rows;
mod schema;
mod syncer;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::oneshot;

use self::reader::ReadJob;
use self::writer::{Op, Outlets, WriteJob};
use crate::model::Message;
use crate::store::{
    Appended, NewMessage, NewUser, Store, StoreError, StoreResult, Subscription, TopicRecord,
    TopicUpdate, User,
};

/// How hard a commit insists on reaching the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// Every commit is synced to the disk before it is answered (the WAL file, by the syncer
    /// thread, while the writer goes on with the next batch); survives power loss. The default.
    #[default]
    Full,
    /// Commits are answered without a disk sync: they survive a crash of the process but not a
    /// power loss. For tests and benches that do not need power-loss safety.
    Normal,
}

/// How a [`SqliteStore`] is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteConfig {
    /// Reader threads (each with its own connection); at least 1 is used. Default 2.
    pub readers: usize,
    /// Most commands committed together in one transaction; at least 1 is used. Default 1024.
    pub max_batch: usize,
    /// Durability of a commit. Default [`SyncMode::Full`].
    pub sync: SyncMode,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            readers: 2,
            max_batch: 1024,
            sync: SyncMode::Full,
        }
    }
}

/// What the writer has done since the store was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Transactions committed (one per batch).
    pub commits: u64,
    /// Batches that failed as a whole (their commands all got the error).
    pub failed_batches: u64,
    /// Commands that ran in committed batches (including those that failed alone).
    pub writes: u64,
    /// Appends that succeeded in committed batches (duplicates included).
    pub appends: u64,
    /// The most commands one batch held.
    pub largest_batch: u64,
}

/// Counters the writer thread updates and [`SqliteStore::stats`] reads.
#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    failed_batches: AtomicU64,
    writes: AtomicU64,
    appends: AtomicU64,
    largest_batch: AtomicU64,
}

/// The SQLite store: a cheap, cloneable handle. The writer and reader threads stop once
/// [`SqliteStore::close`] is called or the last handle is dropped (dropping waits for the
/// queued writes to commit).
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

/// What the handles share.
struct Inner {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<Box<dyn WriteJob>>>>,
    readers: Mutex<Option<mpsc::Sender<ReadJob>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    counters: Arc<Counters>,
    /// Set by the syncer when a sync failed (see `syncer`).
    broken: Arc<AtomicBool>,
    /// Set by the writer while writes fail on a read-only data folder (see `readonly`).
    read_only: Arc<AtomicBool>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("stats", &self.stats())
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file `path`; migrates the schema.
    pub fn open(path: &Path, cfg: SqliteConfig) -> StoreResult<SqliteStore> {
        let mut conn = schema::connect(path)?;
        schema::migrate(&mut conn)?;
        conn.pragma_update(
            None,
            "wal_autocheckpoint",
            checkpoint::WRITER_FALLBACK_PAGES,
        )
        .map_err(schema::map)?;
        let checkpoint_conn = schema::connect(path)?;
        let mut reader_conns = Vec::new();
        for _ in 0..cfg.readers.max(1) {
            let c = schema::connect(path)?;
            c.pragma_update(None, "query_only", true)
                .map_err(schema::map)?;
            reader_conns.push(c);
        }
        let counters = Arc::new(Counters::default());
        let (wtx, wrx) = mpsc::channel::<Box<dyn WriteJob>>();
        let (nudge_tx, nudge_rx) = mpsc::sync_channel::<()>(1);
        let (rtx, rrx) = mpsc::channel::<ReadJob>();
        let rrx = Arc::new(Mutex::new(rrx));
        let broken = Arc::new(AtomicBool::new(false));
        let read_only = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let spawned = (|| {
            let syncer = match cfg.sync {
                SyncMode::Full => {
                    let (stx, srx) = mpsc::channel();
                    let (wal, broken) = (wal_path(path), Arc::clone(&broken));
                    threads.push(spawn("kefu-store-syncer".into(), move || {
                        syncer::run(wal, srx, broken)
                    })?);
                    Some(stx)
                }
                SyncMode::Normal => None,
            };
            let outlets = Outlets {
                syncer,
                checkpointer: nudge_tx,
                broken: Arc::clone(&broken),
                read_only: readonly::ReadOnlyWatch::new(path, Arc::clone(&read_only)),
            };
            let c = Arc::clone(&counters);
            threads.push(spawn("kefu-store-writer".into(), move || {
                writer::run(conn, wrx, cfg.max_batch, c, outlets)
            })?);
            threads.push(spawn("kefu-store-checkpoint".into(), move || {
                checkpoint::run(checkpoint_conn, nudge_rx)
            })?);
            for (i, rc) in reader_conns.into_iter().enumerate() {
                let rx = Arc::clone(&rrx);
                threads.push(spawn(format!("kefu-store-reader-{i}"), move || {
                    reader::run(rc, rx)
                })?);
            }
            Ok(())
        })();
        let inner = Inner {
            path: path.to_owned(),
            writer: Mutex::new(Some(wtx)),
            readers: Mutex::new(Some(rtx)),
            threads: Mutex::new(threads),
            counters,
            broken,
            read_only,
        };
        // On failure, dropping `inner` stops the threads already started.
        spawned.map(|()| SqliteStore {
            inner: Arc::new(inner),
        })
    }

    /// Stops the writer after committing everything queued; later calls get
    /// [`StoreError::Closed`]. Closes every handle of this store.
    pub async fn close(&self) {
        self.inner.stop_queues();
        let threads = std::mem::take(&mut *lock(&self.inner.threads));
        let joined = tokio::task::spawn_blocking(move || join(threads)).await;
        if let Err(e) = joined {
            tracing::error!(error = %e, "joining the store's threads failed");
        }
    }

    /// What the writer has done so far.
    pub fn stats(&self) -> StoreStats {
        let c = &self.inner.counters;
        StoreStats {
            commits: c.commits.load(Ordering::Relaxed),
            failed_batches: c.failed_batches.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            appends: c.appends.load(Ordering::Relaxed),
            largest_batch: c.largest_batch.load(Ordering::Relaxed),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Queues `f` for the writer; resolves with its result once its batch is committed.
    async fn write<T, F>(&self, append: bool, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Box<dyn WriteJob> = Box::new(Op { f, tx, append });
        {
            let writer = lock(&self.inner.writer);
            let writer = writer.as_ref().ok_or(StoreError::Closed)?;
            writer.send(job).map_err(|_| StoreError::Closed)?;
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on a reader thread.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        {
            let readers = lock(&self.inner.readers);
            let readers = readers.as_ref().ok_or(StoreError::Closed)?;
            readers
                .send(reader::job(f, tx))
                .map_err(|_| StoreError::Closed)?;
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

impl Inner {
    /// Drops the queues' senders: the threads finish what is queued, then stop.
    fn stop_queues(&self) {
        drop(lock(&self.writer).take());
        drop(lock(&self.readers).take());
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_queues();
        join(std::mem::take(&mut *lock(&self.threads)));
    }
}

/// Locks `m`; a poisoned lock still guards consistent data here (a sender or handles).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The WAL file SQLite keeps beside the database `path`.
fn wal_path(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// Starts a named store thread.
fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> StoreResult<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .map_err(|e| StoreError::Failed(format!("cannot start a store thread: {e}")))
}

/// Waits for the store's threads to finish.
fn join(threads: Vec<JoinHandle<()>>) {
    for t in threads {
        if t.join().is_err() {
            tracing::error!("a store thread panicked");
        }
    }
}

impl Store for SqliteStore {
    async fn add_user(&self, user: NewUser) -> StoreResult<User> {
        self.write(false, move |c| ops::add_user(c, user)).await
    }

    async fn user(&self, id: &str) -> StoreResult<Option<User>> {
        let id = id.to_owned();
        self.read(move |c| rows::user(c, &id)).await
    }

    async fn user_by_login(&self, login: &str) -> StoreResult<Option<User>> {
        let login = login.to_owned();
        self.read(move |c| rows::user_by_login(c, &login)).await
    }

    async fn set_token_gen(&self, id: &str, token_gen: u32) -> StoreResult<()> {
        let id = id.to_owned();
        self.write(false, move |c| ops::set_token_gen(c, &id, token_gen))
            .await
    }

    async fn create_topic(&self, topic: TopicRecord, members: Vec<String>) -> StoreResult<()> {
        self.write(false, move |c| ops::create_topic(c, topic, members))
            .await
    }

    async fn topic(&self, name: &str) -> StoreResult<Option<TopicRecord>> {
        let name = name.to_owned();
        self.read(move |c| rows::topic(c, &name)).await
    }

    async fn update_topic(&self, name: &str, update: TopicUpdate) -> StoreResult<()> {
        let name = name.to_owned();
        self.write(false, move |c| ops::update_topic(c, &name, update))
            .await
    }

    async fn open_consults(&self) -> StoreResult<Vec<TopicRecord>> {
        self.read(rows::open_consults).await
    }

    async fn subscribe(&self, topic: &str, user: &str, mode: &str) -> StoreResult<Subscription> {
        let (topic, user, mode) = (topic.to_owned(), user.to_owned(), mode.to_owned());
        self.write(false, move |c| ops::subscribe(c, &topic, &user, &mode))
            .await
    }

    async fn unsubscribe(&self, topic: &str, user: &str) -> StoreResult<bool> {
        let (topic, user) = (topic.to_owned(), user.to_owned());
        self.write(false, move |c| ops::unsubscribe(c, &topic, &user))
            .await
    }

    async fn subscription(&self, topic: &str, user: &str) -> StoreResult<Option<Subscription>> {
        let (topic, user) = (topic.to_owned(), user.to_owned());
        self.read(move |c| rows::subscription(c, &topic, &user))
            .await
    }

    async fn subscribers(&self, topic: &str) -> StoreResult<Vec<Subscription>> {
        let topic = topic.to_owned();
        self.read(move |c| rows::subscribers(c, &topic)).await
    }

    async fn subscriptions_of(&self, user: &str) -> StoreResult<Vec<Subscription>> {
        let user = user.to_owned();
        self.read(move |c| rows::subscriptions_of(c, &user)).await
    }

    async fn set_marks(
        &self,
        topic: &str,
        user: &str,
        read: Option<u64>,
        recv: Option<u64>,
    ) -> StoreResult<()> {
        let (topic, user) = (topic.to_owned(), user.to_owned());
        self.write(false, move |c| ops::set_marks(c, &topic, &user, read, recv))
            .await
    }

    async fn append(&self, msg: NewMessage) -> StoreResult<Appended> {
        self.write(true, move |c| ops::append(c, msg)).await
    }

    async fn messages(
        &self,
        topic: &str,
        since: u64,
        before: u64,
        limit: u32,
        viewer: Option<&str>,
    ) -> StoreResult<Vec<Message>> {
        let (topic, viewer) = (topic.to_owned(), viewer.map(str::to_owned));
        self.read(move |c| rows::messages(c, &topic, since, before, limit, viewer.as_deref()))
            .await
    }

    async fn count_from(&self, topic: &str, user: &str, after: u64) -> StoreResult<u64> {
        let (topic, user) = (topic.to_owned(), user.to_owned());
        self.read(move |c| rows::count_from(c, &topic, &user, after))
            .await
    }

    async fn delete_messages(
        &self,
        topic: &str,
        first: u64,
        last: u64,
        hard: bool,
        user: &str,
    ) -> StoreResult<()> {
        let (topic, user) = (topic.to_owned(), user.to_owned());
        self.write(false, move |c| {
            ops::delete_messages(c, &topic, first, last, hard, &user)
        })
        .await
    }

    fn fault(&self) -> Option<String> {
        if self.inner.broken.load(Ordering::SeqCst) {
            Some(writer::BROKEN.to_owned())
        } else if self.inner.read_only.load(Ordering::SeqCst) {
            Some(readonly::READ_ONLY.to_owned())
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests;
