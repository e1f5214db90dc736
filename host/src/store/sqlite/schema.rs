//! The SQLite side of the store: connection set-up (pragmas), the versioned schema, the
//! mapping of SQLite errors to [`StoreError`], and the text forms of stored enums.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::store::{ConsultState, Role, StoreError, StoreResult, TopicKind};

/// The schema version this code writes (`PRAGMA user_version`).
pub(super) const VERSION: i64 = 2;

/// Page size of a new database. An append dirties one leaf of its topic in `messages`, and with
/// many topics each committing one message per transaction that page is the disk traffic per
/// message: 1 KiB pages write less (about 3.8 KB of WAL per message against 8.4 KB with 4 KiB
/// pages, 100 topics) but a topic's leaf holds four messages, so pages split every few appends
/// and each WAL frame is two `pwrite`s. Since commits no longer wait for their own sync (the
/// syncer overlaps it with the next batch), the writer's CPU is what bounds throughput, and 4 KiB
/// pages cost it less (measured: 26-33 µs of writer CPU per message against 34-36 with 1 KiB,
/// `kefu bench --pairs 100`). Existing databases keep theirs.
const NEW_PAGE_SIZE: u32 = 4096;

/// How long a connection waits for a lock held by another process before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Version 1: accounts, topics (with their latest seq and consultation columns), subscriptions
/// with marks, messages (tombstoned in place) and per-user hidden ranges.
pub(super) const V1: &str = r#"
CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    login      TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    pass_hash  TEXT,
    role       TEXT NOT NULL,
    token_gen  INTEGER NOT NULL DEFAULT 0,
    created    INTEGER NOT NULL
);
CREATE TABLE topics (
    name             TEXT PRIMARY KEY,
    kind             TEXT NOT NULL,
    title            TEXT NOT NULL,
    owner            TEXT NOT NULL,
    created          INTEGER NOT NULL,
    latest           INTEGER NOT NULL DEFAULT 0,
    deleted          INTEGER NOT NULL DEFAULT 0,
    consult_customer TEXT,
    consult_agent    TEXT,
    consult_desk     TEXT,
    consult_state    TEXT,
    consult_opened   INTEGER
);
CREATE INDEX topics_open_consults ON topics (consult_state, consult_opened)
    WHERE consult_state IN ('waiting', 'active');
CREATE TABLE subs (
    topic   TEXT NOT NULL REFERENCES topics (name) ON DELETE CASCADE,
    user    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    mode    TEXT NOT NULL,
    read    INTEGER NOT NULL DEFAULT 0,
    recv    INTEGER NOT NULL DEFAULT 0,
    created INTEGER NOT NULL,
    PRIMARY KEY (topic, user)
) WITHOUT ROWID;
CREATE INDEX subs_by_user ON subs (user);
CREATE TABLE messages (
    topic    TEXT NOT NULL REFERENCES topics (name) ON DELETE CASCADE,
    seq      INTEGER NOT NULL,
    msg_id   BLOB NOT NULL CHECK (length(msg_id) = 16),
    "from"   TEXT NOT NULL,
    ts       INTEGER NOT NULL,
    mime     TEXT NOT NULL,
    reply_to INTEGER,
    content  BLOB NOT NULL,
    deleted  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (topic, seq),
    UNIQUE (topic, msg_id)
) WITHOUT ROWID;
CREATE TABLE hidden (
    topic TEXT NOT NULL REFERENCES topics (name) ON DELETE CASCADE,
    user  TEXT NOT NULL,
    first INTEGER NOT NULL,
    last  INTEGER NOT NULL,
    PRIMARY KEY (topic, user, first)
) WITHOUT ROWID;
"#;

/// Version 2: the duplicate check's index leads with the message id instead of the topic. Ids
/// start with their millisecond timestamp, so new entries of every topic land together at the
/// end of the index: a commit dirties a page or two of it instead of one per topic. And a
/// topic's latest seq is no longer a column to update with every append (a page per topic per
/// commit, and a second write that made appends need a savepoint): it is the highest seq in
/// `messages`, one index seek away.
const V2: &str = r#"
CREATE TABLE messages_v2 (
    topic    TEXT NOT NULL REFERENCES topics (name) ON DELETE CASCADE,
    seq      INTEGER NOT NULL,
    msg_id   BLOB NOT NULL CHECK (length(msg_id) = 16),
    "from"   TEXT NOT NULL,
    ts       INTEGER NOT NULL,
    mime     TEXT NOT NULL,
    reply_to INTEGER,
    content  BLOB NOT NULL,
    deleted  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (topic, seq),
    UNIQUE (msg_id, topic)
) WITHOUT ROWID;
INSERT INTO messages_v2 (topic, seq, msg_id, "from", ts, mime, reply_to, content, deleted)
    SELECT topic, seq, msg_id, "from", ts, mime, reply_to, content, deleted FROM messages;
DROP TABLE messages;
ALTER TABLE messages_v2 RENAME TO messages;
ALTER TABLE topics DROP COLUMN latest;
"#;

/// Opens one connection to `path` and applies the per-connection pragmas.
pub(super) fn connect(path: &Path) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(path, e))?;
    if conn.is_readonly(rusqlite::MAIN_DB).map_err(map)? {
        return Err(StoreError::ReadOnly(format!(
            "{} opens read-only",
            path.display()
        )));
    }
    conn.busy_timeout(BUSY_TIMEOUT).map_err(map)?;
    // Takes effect only while the file is still empty (before WAL mode is written into it).
    conn.pragma_update(None, "page_size", NEW_PAGE_SIZE)
        .map_err(map)?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(map)?;
    set_wal(&conn)?;
    // Commits never sync by themselves: the syncer thread syncs the WAL for a durable store
    // (see `syncer`). Checkpoints still sync the WAL before and the database after copying.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(map)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Puts the database of `conn` in WAL mode (a no-op once it is).
///
/// While a new database file still has its rollback journal, another connection may hold its
/// write (RESERVED) lock: another process in the middle of its own switch to WAL (several
/// `kefu user add` at once on a fresh data folder, or one beside a starting gateway). SQLite
/// then answers the switch with SQLITE_BUSY ("database is locked") at once, without calling the
/// busy handler, although `busy_timeout` is set. So a busy answer is tried again, pausing a
/// little longer each time, until [`BUSY_TIMEOUT`] has passed; then the error stands.
fn set_wal(conn: &Connection) -> StoreResult<()> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(1);
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)) {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(mode) => {
                return Err(StoreError::Failed(format!(
                    "journal_mode is {mode}, WAL refused"
                )));
            }
            Err(e)
                if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(64));
            }
            Err(e) => return Err(map(e)),
        }
    }
}

/// Brings the schema of `conn` to [`VERSION`]; refuses a database from a newer version.
pub(super) fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(map)?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(map)?;
    if version > VERSION {
        return Err(StoreError::Failed(format!(
            "database schema version {version} is newer than this program's {VERSION}"
        )));
    }
    if version < 1 {
        tx.execute_batch(V1).map_err(map)?;
    }
    if version < 2 {
        tx.execute_batch(V2).map_err(map)?;
    }
    tx.pragma_update(None, "user_version", VERSION)
        .map_err(map)?;
    tx.commit().map_err(map)
}

/// The error for a failed open: a file or folder that cannot be written is [`StoreError::ReadOnly`].
fn open_error(path: &Path, e: rusqlite::Error) -> StoreError {
    let folder_read_only = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .and_then(|p| std::fs::metadata(p).ok())
        .is_some_and(|m| m.permissions().readonly());
    match e.sqlite_error_code() {
        Some(ErrorCode::CannotOpen) if folder_read_only => {
            StoreError::ReadOnly(format!("{}: {e}", path.display()))
        }
        _ => match map(e) {
            StoreError::Failed(m) => StoreError::Failed(format!("{}: {m}", path.display())),
            other => other,
        },
    }
}

/// Maps a SQLite error: full disk, read-only database, and everything else as `Failed`.
/// Constraint violations are mapped by the operation that knows what they mean.
pub(super) fn map(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => StoreError::Full(e.to_string()),
        Some(ErrorCode::ReadOnly) => StoreError::ReadOnly(e.to_string()),
        _ => StoreError::Failed(e.to_string()),
    }
}

/// Whether `e` is a UNIQUE or PRIMARY KEY violation (the thing to create exists).
pub(super) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

/// Whether `e` is a FOREIGN KEY violation (a referenced topic or user is missing).
pub(super) fn is_foreign_key_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
}

/// A copy of `e` for every command of a failed batch.
pub(super) fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Conflict(m) => StoreError::Conflict(m.clone()),
        StoreError::NotFound(m) => StoreError::NotFound(m.clone()),
        StoreError::Full(m) => StoreError::Full(m.clone()),
        StoreError::ReadOnly(m) => StoreError::ReadOnly(m.clone()),
        StoreError::Failed(m) => StoreError::Failed(m.clone()),
        StoreError::Closed => StoreError::Closed,
    }
}

/// A `u64` seq or time as SQLite's signed integer (values past `i64::MAX` saturate).
pub(super) fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A stored integer as `u64` (SQLite integers are signed; a negative one is damage).
pub(super) fn uint(v: i64) -> StoreResult<u64> {
    u64::try_from(v).map_err(|_| StoreError::Failed(format!("negative stored value {v}")))
}

/// The current time, ms since the Unix epoch (0 if the clock is before 1970).
pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Stored text of a role.
pub(super) fn role_text(r: Role) -> &'static str {
    match r {
        Role::Customer => "customer",
        Role::Agent => "agent",
        Role::Supervisor => "supervisor",
    }
}

/// A role from its stored text.
pub(super) fn role_of(s: &str) -> StoreResult<Role> {
    match s {
        "customer" => Ok(Role::Customer),
        "agent" => Ok(Role::Agent),
        "supervisor" => Ok(Role::Supervisor),
        _ => Err(StoreError::Failed(format!("unknown stored role {s:?}"))),
    }
}

/// Stored text of a topic kind.
pub(super) fn kind_text(k: TopicKind) -> &'static str {
    match k {
        TopicKind::P2p => "p2p",
        TopicKind::Group => "group",
        TopicKind::Consult => "consult",
    }
}

/// A topic kind from its stored text.
pub(super) fn kind_of(s: &str) -> StoreResult<TopicKind> {
    match s {
        "p2p" => Ok(TopicKind::P2p),
        "group" => Ok(TopicKind::Group),
        "consult" => Ok(TopicKind::Consult),
        _ => Err(StoreError::Failed(format!(
            "unknown stored topic kind {s:?}"
        ))),
    }
}

/// Stored text of a consultation state.
pub(super) fn state_text(s: ConsultState) -> &'static str {
    match s {
        ConsultState::Waiting => "waiting",
        ConsultState::Active => "active",
        ConsultState::Closed => "closed",
    }
}

/// A consultation state from its stored text.
pub(super) fn state_of(s: &str) -> StoreResult<ConsultState> {
    match s {
        "waiting" => Ok(ConsultState::Waiting),
        "active" => Ok(ConsultState::Active),
        "closed" => Ok(ConsultState::Closed),
        _ => Err(StoreError::Failed(format!(
            "unknown stored consult state {s:?}"
        ))),
    }
}
