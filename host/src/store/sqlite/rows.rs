//! Reading stored rows back into the store's types, and the read queries the reader pool runs.

use std::ops::RangeInclusive;

use kefu_core::id::MsgId;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::schema::{int, kind_of, map, role_of, state_of, uint};
use crate::model::{Head, Message, TOMBSTONE_MIME};
use crate::store::{Consult, StoreError, StoreResult, Subscription, TopicRecord, User};

/// Columns of a user row, in the order [`user_row`] reads them.
const USER_COLS: &str = "id, login, name, pass_hash, role, token_gen, created";
/// Columns of a topic row, in the order [`topic_row`] reads them. The latest seq is the
/// topic's highest stored seq (one index seek; tombstones keep their rows).
const TOPIC_COLS: &str = "name, kind, title, owner, created, \
                          (SELECT ifnull(max(seq), 0) FROM messages WHERE topic = topics.name), \
                          deleted, consult_customer, consult_agent, consult_desk, consult_state, \
                          consult_opened";
/// Columns of a subscription row, in the order [`sub_row`] reads them.
const SUB_COLS: &str = "topic, user, mode, read, recv, created";

/// A row read with its fallible conversions still to do: SQLite's own errors stay apart from
/// ours so that `query_map` can carry them.
type Parsed<T> = Result<StoreResult<T>, rusqlite::Error>;

fn user_row(r: &Row<'_>) -> Parsed<User> {
    let role: String = r.get(4)?;
    let token_gen: i64 = r.get(5)?;
    let created: i64 = r.get(6)?;
    let (id, login, name, pass_hash) = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
    Ok((|| {
        Ok(User {
            id,
            login,
            name,
            pass_hash,
            role: role_of(&role)?,
            token_gen: u32::try_from(token_gen)
                .map_err(|_| StoreError::Failed(format!("stored token_gen {token_gen}")))?,
            created_ms: uint(created)?,
        })
    })())
}

fn topic_row(r: &Row<'_>) -> Parsed<TopicRecord> {
    let kind: String = r.get(1)?;
    let created: i64 = r.get(4)?;
    let latest: i64 = r.get(5)?;
    let deleted: bool = r.get(6)?;
    let customer: Option<String> = r.get(7)?;
    let agent: Option<String> = r.get(8)?;
    let desk: Option<String> = r.get(9)?;
    let state: Option<String> = r.get(10)?;
    let opened: Option<i64> = r.get(11)?;
    let (name, title, owner) = (r.get(0)?, r.get(2)?, r.get(3)?);
    Ok((|| {
        let consult = match customer {
            None => None,
            Some(customer) => Some(Consult {
                customer,
                agent,
                desk: desk.unwrap_or_default(),
                state: state_of(state.as_deref().unwrap_or_default())?,
                opened_ms: uint(opened.unwrap_or_default())?,
            }),
        };
        Ok(TopicRecord {
            name,
            kind: kind_of(&kind)?,
            title,
            owner,
            created_ms: uint(created)?,
            latest: uint(latest)?,
            deleted,
            consult,
        })
    })())
}

fn sub_row(r: &Row<'_>) -> Parsed<Subscription> {
    let read: i64 = r.get(3)?;
    let recv: i64 = r.get(4)?;
    let created: i64 = r.get(5)?;
    let (topic, user, mode) = (r.get(0)?, r.get(1)?, r.get(2)?);
    Ok((|| {
        Ok(Subscription {
            topic,
            user,
            mode,
            read: uint(read)?,
            recv: uint(recv)?,
            created_ms: uint(created)?,
        })
    })())
}

/// Runs `sql` expecting at most one row.
fn one<T>(
    conn: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
    f: fn(&Row<'_>) -> Parsed<T>,
) -> StoreResult<Option<T>> {
    let mut st = conn.prepare_cached(sql).map_err(map)?;
    st.query_row(p, f).optional().map_err(map)?.transpose()
}

/// Runs `sql` collecting every row.
fn all<T>(
    conn: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
    f: fn(&Row<'_>) -> Parsed<T>,
) -> StoreResult<Vec<T>> {
    let mut st = conn.prepare_cached(sql).map_err(map)?;
    let rows = st.query_map(p, f).map_err(map)?;
    rows.map(|r| r.map_err(map)?).collect()
}

/// The account with this id.
pub(super) fn user(conn: &Connection, id: &str) -> StoreResult<Option<User>> {
    let sql = format!("SELECT {USER_COLS} FROM users WHERE id = ?1");
    one(conn, &sql, [id], user_row)
}

/// The account with this login name.
pub(super) fn user_by_login(conn: &Connection, login: &str) -> StoreResult<Option<User>> {
    let sql = format!("SELECT {USER_COLS} FROM users WHERE login = ?1");
    one(conn, &sql, [login], user_row)
}

/// The topic with this name.
pub(super) fn topic(conn: &Connection, name: &str) -> StoreResult<Option<TopicRecord>> {
    let sql = format!("SELECT {TOPIC_COLS} FROM topics WHERE name = ?1");
    one(conn, &sql, [name], topic_row)
}

/// Waiting and active consultations, oldest first.
pub(super) fn open_consults(conn: &Connection) -> StoreResult<Vec<TopicRecord>> {
    let sql = format!(
        "SELECT {TOPIC_COLS} FROM topics WHERE consult_state IN ('waiting', 'active') \
         AND kind = 'consult' AND deleted = 0 ORDER BY consult_opened, created, name"
    );
    all(conn, &sql, [], topic_row)
}

/// One subscription.
pub(super) fn subscription(
    conn: &Connection,
    topic: &str,
    user: &str,
) -> StoreResult<Option<Subscription>> {
    let sql = format!("SELECT {SUB_COLS} FROM subs WHERE topic = ?1 AND user = ?2");
    one(conn, &sql, [topic, user], sub_row)
}

/// Every subscription of a topic, oldest first.
pub(super) fn subscribers(conn: &Connection, topic: &str) -> StoreResult<Vec<Subscription>> {
    let sql = format!("SELECT {SUB_COLS} FROM subs WHERE topic = ?1 ORDER BY created, user");
    all(conn, &sql, [topic], sub_row)
}

/// Every subscription of a user, oldest first.
pub(super) fn subscriptions_of(conn: &Connection, user: &str) -> StoreResult<Vec<Subscription>> {
    let sql = format!("SELECT {SUB_COLS} FROM subs WHERE user = ?1 ORDER BY created, topic");
    all(conn, &sql, [user], sub_row)
}

/// One stored message row, before tombstoning.
struct Stored {
    seq: u64,
    msg_id: Vec<u8>,
    from: String,
    ts: i64,
    mime: String,
    reply_to: Option<i64>,
    content: Vec<u8>,
    deleted: bool,
}

fn stored_row(r: &Row<'_>) -> Parsed<Stored> {
    let seq: i64 = r.get(0)?;
    let (msg_id, from, ts, mime) = (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
    let (reply_to, content, deleted) = (r.get(5)?, r.get(6)?, r.get(7)?);
    Ok(uint(seq).map(|seq| Stored {
        seq,
        msg_id,
        from,
        ts,
        mime,
        reply_to,
        content,
        deleted,
    }))
}

/// Messages with `since <= seq < before` (`before == 0`: no upper bound), the newest `limit`,
/// ascending; deleted ones and those `viewer` hid come as tombstones. An unknown topic has
/// no messages.
pub(super) fn messages(
    conn: &Connection,
    topic: &str,
    since: u64,
    before: u64,
    limit: u32,
    viewer: Option<&str>,
) -> StoreResult<Vec<Message>> {
    let upper = if before == 0 { i64::MAX } else { int(before) };
    let since = int(since);
    if limit == 0 || since >= upper {
        return Ok(Vec::new());
    }
    let mut rows = all(
        conn,
        "SELECT seq, msg_id, \"from\", ts, mime, reply_to, content, deleted FROM messages \
         WHERE topic = ?1 AND seq >= ?2 AND seq < ?3 ORDER BY seq DESC LIMIT ?4",
        params![topic, since, upper, i64::from(limit)],
        stored_row,
    )?;
    rows.reverse();
    let hidden = match (viewer, rows.first(), rows.last()) {
        (Some(viewer), Some(lo), Some(hi)) => hidden(conn, topic, viewer, lo.seq..=hi.seq)?,
        _ => Vec::new(),
    };
    rows.into_iter()
        .map(|s| {
            let msg_id = <[u8; 16]>::try_from(s.msg_id.as_slice())
                .map(MsgId::from_bytes)
                .map_err(|_| StoreError::Failed(format!("stored msg_id of seq {}", s.seq)))?;
            let tomb = s.deleted || hidden.iter().any(|r| r.contains(&s.seq));
            let (head, content) = if tomb {
                let head = Head {
                    mime: TOMBSTONE_MIME.to_owned(),
                    reply_to: None,
                };
                (head, Vec::new())
            } else {
                let reply_to = s.reply_to.map(uint).transpose()?;
                let head = Head {
                    mime: s.mime,
                    reply_to,
                };
                (head, s.content)
            };
            Ok(Message {
                seq: s.seq,
                msg_id,
                from: s.from,
                ts: uint(s.ts)?,
                head,
                content,
            })
        })
        .collect()
}

/// The ranges `user` hid in `topic` that touch `span`.
fn hidden(
    conn: &Connection,
    topic: &str,
    user: &str,
    span: RangeInclusive<u64>,
) -> StoreResult<Vec<RangeInclusive<u64>>> {
    let mut st = conn
        .prepare_cached(
            "SELECT first, last FROM hidden WHERE topic = ?1 AND user = ?2 \
             AND last >= ?3 AND first <= ?4",
        )
        .map_err(map)?;
    let rows = st
        .query_map(
            params![topic, user, int(*span.start()), int(*span.end())],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
        )
        .map_err(map)?;
    rows.map(|r| {
        let (first, last) = r.map_err(map)?;
        Ok(uint(first)?..=uint(last)?)
    })
    .collect()
}

/// How many messages of `topic` above `after` `user` sent that are not deleted. It scans the
/// seq range above `after` (the unread part, usually short) rather than keep a sender index
/// that every append would pay for.
pub(super) fn count_from(
    conn: &Connection,
    topic: &str,
    user: &str,
    after: u64,
) -> StoreResult<u64> {
    let mut st = conn
        .prepare_cached(
            "SELECT count(*) FROM messages WHERE topic = ?1 AND \"from\" = ?2 AND seq > ?3 \
             AND deleted = 0",
        )
        .map_err(map)?;
    let n: i64 = st
        .query_row(params![topic, user, int(after)], |r| r.get(0))
        .map_err(map)?;
    uint(n)
}
