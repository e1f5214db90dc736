//! The write commands, as run by the writer thread inside a batch's transaction (each inside
//! its own SAVEPOINT, so an error here undoes only this command).

use rusqlite::{Connection, OptionalExtension, params};

use super::rows;
use super::schema::{
    int, is_foreign_key_violation, is_unique_violation, kind_text, map, now_ms, role_text,
    state_text, uint,
};
use crate::store::{
    Appended, NewMessage, NewUser, StoreError, StoreResult, Subscription, TopicRecord, TopicUpdate,
    User,
};

/// The mode members of a new topic get.
const MEMBER_MODE: &str = "JRWPS";

/// Creates an account.
pub(super) fn add_user(conn: &Connection, u: NewUser) -> StoreResult<User> {
    let created = now_ms();
    let mut st = conn
        .prepare_cached(
            "INSERT INTO users (id, login, name, pass_hash, role, token_gen, created) \
             VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6)",
        )
        .map_err(map)?;
    st.execute(params![
        u.id,
        u.login,
        u.name,
        u.pass_hash,
        role_text(u.role),
        int(created)
    ])
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Conflict(format!("user id {:?} or login {:?}", u.id, u.login))
        } else {
            map(e)
        }
    })?;
    Ok(User {
        id: u.id,
        login: u.login,
        name: u.name,
        pass_hash: u.pass_hash,
        role: u.role,
        token_gen: 0,
        created_ms: created,
    })
}

/// Sets a user's token generation.
pub(super) fn set_token_gen(conn: &Connection, id: &str, token_gen: u32) -> StoreResult<()> {
    let mut st = conn
        .prepare_cached("UPDATE users SET token_gen = ?2 WHERE id = ?1")
        .map_err(map)?;
    match st.execute(params![id, token_gen]).map_err(map)? {
        0 => Err(StoreError::NotFound(format!("user {id:?}"))),
        _ => Ok(()),
    }
}

/// Creates a topic and subscribes its members.
pub(super) fn create_topic(
    conn: &Connection,
    t: TopicRecord,
    members: Vec<String>,
) -> StoreResult<()> {
    let c = t.consult.as_ref();
    let mut st = conn
        .prepare_cached(
            "INSERT INTO topics (name, kind, title, owner, created, deleted, \
             consult_customer, consult_agent, consult_desk, consult_state, consult_opened) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .map_err(map)?;
    st.execute(params![
        t.name,
        kind_text(t.kind),
        t.title,
        t.owner,
        int(t.created_ms),
        t.deleted,
        c.map(|c| &c.customer),
        c.and_then(|c| c.agent.as_ref()),
        c.map(|c| &c.desk),
        c.map(|c| state_text(c.state)),
        c.map(|c| int(c.opened_ms)),
    ])
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Conflict(format!("topic {:?}", t.name))
        } else {
            map(e)
        }
    })?;
    for m in members {
        insert_sub(conn, &t.name, &m, MEMBER_MODE)?;
    }
    Ok(())
}

/// Subscribes `user` unless subscribed already; a missing user is [`StoreError::NotFound`].
fn insert_sub(conn: &Connection, topic: &str, user: &str, mode: &str) -> StoreResult<()> {
    let mut st = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO subs (topic, user, mode, read, recv, created) \
             VALUES (?1, ?2, ?3, 0, 0, ?4)",
        )
        .map_err(map)?;
    st.execute(params![topic, user, mode, int(now_ms())])
        .map_err(|e| {
            if is_foreign_key_violation(&e) {
                StoreError::NotFound(format!("user {user:?} or topic {topic:?}"))
            } else {
                map(e)
            }
        })?;
    Ok(())
}

/// Changes a topic.
pub(super) fn update_topic(conn: &Connection, name: &str, u: TopicUpdate) -> StoreResult<()> {
    let exists = conn
        .prepare_cached("SELECT 1 FROM topics WHERE name = ?1")
        .map_err(map)?
        .exists([name])
        .map_err(map)?;
    if !exists {
        return Err(StoreError::NotFound(format!("topic {name:?}")));
    }
    if let Some(title) = u.title {
        conn.prepare_cached("UPDATE topics SET title = ?2 WHERE name = ?1")
            .map_err(map)?
            .execute(params![name, title])
            .map_err(map)?;
    }
    if let Some(c) = u.consult {
        conn.prepare_cached(
            "UPDATE topics SET consult_customer = ?2, consult_agent = ?3, consult_desk = ?4, \
             consult_state = ?5, consult_opened = ?6 WHERE name = ?1",
        )
        .map_err(map)?
        .execute(params![
            name,
            c.customer,
            c.agent,
            c.desk,
            state_text(c.state),
            int(c.opened_ms)
        ])
        .map_err(map)?;
    }
    if let Some(deleted) = u.deleted {
        conn.prepare_cached("UPDATE topics SET deleted = ?2 WHERE name = ?1")
            .map_err(map)?
            .execute(params![name, deleted])
            .map_err(map)?;
    }
    Ok(())
}

/// A topic's latest seq (0 before its first message) and whether it is deleted; no row for a
/// topic that never existed. With a bare `?1` in the subquery, SQLite (built with STAT4) makes a
/// plan that depends on the bound value and compiles the statement again on every run, which
/// was a third of the writer's time; the CAST keeps one plan.
const LATEST: &str = "SELECT (SELECT ifnull(max(seq), 0) FROM messages \
    WHERE topic = CAST(?1 AS TEXT)), deleted FROM topics WHERE name = ?1";

/// Stores a message unless (msg_id, topic) is stored already.
const INSERT_MESSAGE: &str = "INSERT INTO messages \
    (topic, seq, msg_id, \"from\", ts, mime, reply_to, content) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (msg_id, topic) DO NOTHING";

/// Raises a subscriber's marks (every session stores its receive marks once a second).
const SET_MARKS: &str = "UPDATE subs SET read = max(read, coalesce(?3, read)), \
    recv = max(recv, coalesce(?4, recv)) WHERE topic = ?1 AND user = ?2";

/// The statements that run for every message or receipt (a test checks they stay prepared).
#[cfg(test)]
pub(super) const HOT_STATEMENTS: [&str; 3] = [LATEST, INSERT_MESSAGE, SET_MARKS];

/// The topic's latest seq, or [`StoreError::NotFound`] if it does not exist or is deleted.
fn live_latest(conn: &Connection, topic: &str) -> StoreResult<u64> {
    let row: Option<(i64, bool)> = conn
        .prepare_cached(LATEST)
        .map_err(map)?
        .query_row([topic], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(map)?;
    match row {
        Some((latest, false)) => uint(latest),
        _ => Err(StoreError::NotFound(format!("topic {topic:?}"))),
    }
}

/// Subscribes `user`, or returns the existing subscription unchanged.
pub(super) fn subscribe(
    conn: &Connection,
    topic: &str,
    user: &str,
    mode: &str,
) -> StoreResult<Subscription> {
    live_latest(conn, topic)?;
    insert_sub(conn, topic, user, mode)?;
    rows::subscription(conn, topic, user)?
        .ok_or_else(|| StoreError::Failed("subscription vanished after insert".into()))
}

/// Removes a subscription; whether there was one.
pub(super) fn unsubscribe(conn: &Connection, topic: &str, user: &str) -> StoreResult<bool> {
    let n = conn
        .prepare_cached("DELETE FROM subs WHERE topic = ?1 AND user = ?2")
        .map_err(map)?
        .execute([topic, user])
        .map_err(map)?;
    Ok(n > 0)
}

/// Raises the marks of a subscription; [`StoreError::NotFound`] if there is none.
pub(super) fn set_marks(
    conn: &Connection,
    topic: &str,
    user: &str,
    read: Option<u64>,
    recv: Option<u64>,
) -> StoreResult<()> {
    let n = conn
        .prepare_cached(SET_MARKS)
        .map_err(map)?
        .execute(params![topic, user, read.map(int), recv.map(int)])
        .map_err(map)?;
    match n {
        0 => Err(StoreError::NotFound(format!(
            "subscription of {user:?} to {topic:?}"
        ))),
        _ => Ok(()),
    }
}

/// Stores a message at the next seq, or finds it by (topic, msg_id). The insert itself is the
/// duplicate check (it does nothing on a conflict with the unique (msg_id, topic) index), so a
/// new message costs one statement besides the topic lookup; only a repeat reads its row.
pub(super) fn append(conn: &Connection, m: NewMessage) -> StoreResult<Appended> {
    let latest = live_latest(conn, &m.topic)?;
    let id = m.msg_id.as_bytes().as_slice();
    let seq = latest
        .checked_add(1)
        .filter(|s| i64::try_from(*s).is_ok())
        .ok_or_else(|| StoreError::Failed(format!("topic {:?} ran out of seqs", m.topic)))?;
    let inserted = conn
        .prepare_cached(INSERT_MESSAGE)
        .map_err(map)?
        .execute(params![
            m.topic,
            int(seq),
            id,
            m.from,
            int(m.ts),
            m.head.mime,
            m.head.reply_to.map(int),
            m.content
        ])
        .map_err(map)?;
    if inserted == 1 {
        return Ok(Appended {
            seq,
            ts: m.ts,
            dup: false,
        });
    }
    let (seq, ts): (i64, i64) = conn
        .prepare_cached("SELECT seq, ts FROM messages WHERE topic = ?1 AND msg_id = ?2")
        .map_err(map)?
        .query_row(params![m.topic, id], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(map)?;
    Ok(Appended {
        seq: uint(seq)?,
        ts: uint(ts)?,
        dup: true,
    })
}

/// Deletes `first..=last` of `topic`: for everyone (`hard`) or hidden for `user`.
pub(super) fn delete_messages(
    conn: &Connection,
    topic: &str,
    first: u64,
    last: u64,
    hard: bool,
    user: &str,
) -> StoreResult<()> {
    let latest = live_latest(conn, topic)?;
    // Nothing past the latest seq exists: hiding "everything up to u64::MAX" must not hide
    // messages that come later.
    let (first, last) = (first.max(1), last.min(latest));
    if first > last {
        return Ok(());
    }
    if hard {
        conn.prepare_cached(
            "UPDATE messages SET content = X'', mime = '', reply_to = NULL, deleted = 1 \
             WHERE topic = ?1 AND seq BETWEEN ?2 AND ?3 AND deleted = 0",
        )
        .map_err(map)?
        .execute(params![topic, int(first), int(last)])
        .map_err(map)?;
        return Ok(());
    }
    // Merge with the ranges it overlaps or touches, so a user's ranges stay few and disjoint.
    let (lo, hi): (Option<i64>, Option<i64>) = conn
        .prepare_cached(
            "SELECT min(first), max(last) FROM hidden WHERE topic = ?1 AND user = ?2 \
             AND last >= ?3 - 1 AND first <= ?4 + 1",
        )
        .map_err(map)?
        .query_row(params![topic, user, int(first), int(last)], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(map)?;
    let first = lo.map_or(Ok(first), uint)?.min(first);
    let last = hi.map_or(Ok(last), uint)?.max(last);
    conn.prepare_cached(
        "DELETE FROM hidden WHERE topic = ?1 AND user = ?2 AND first >= ?3 AND last <= ?4",
    )
    .map_err(map)?
    .execute(params![topic, user, int(first), int(last)])
    .map_err(map)?;
    conn.prepare_cached("INSERT INTO hidden (topic, user, first, last) VALUES (?1, ?2, ?3, ?4)")
        .map_err(map)?
        .execute(params![topic, user, int(first), int(last)])
        .map_err(map)?;
    Ok(())
}
