//! Tests of the SQLite store against real database files in a temporary folder.

use std::collections::HashSet;
use std::time::Duration;

use kefu_core::id::MsgId;
use tempfile::TempDir;
use tokio::sync::oneshot;

use super::{SqliteConfig, SqliteStore, SyncMode};
use crate::model::{Head, TOMBSTONE_MIME};
use crate::store::{
    Consult, ConsultState, NewMessage, NewUser, Role, Store, StoreError, TopicKind, TopicRecord,
    TopicUpdate,
};

fn fast() -> SqliteConfig {
    SqliteConfig {
        sync: SyncMode::Normal,
        ..SqliteConfig::default()
    }
}

fn open(dir: &TempDir, cfg: SqliteConfig) -> SqliteStore {
    SqliteStore::open(&dir.path().join("kefu.db"), cfg).expect("open store")
}

fn new_user(id: &str) -> NewUser {
    NewUser {
        id: id.to_owned(),
        login: format!("login-{id}"),
        name: format!("Name {id}"),
        pass_hash: Some("$argon2id$v=19$x".into()),
        role: Role::Customer,
    }
}

fn topic(name: &str) -> TopicRecord {
    TopicRecord {
        name: name.to_owned(),
        kind: TopicKind::Group,
        title: format!("title {name}"),
        owner: "alice".into(),
        created_ms: 1_000,
        latest: 0,
        deleted: false,
        consult: None,
    }
}

fn id(n: u64) -> MsgId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&n.to_be_bytes());
    b[15] = 0xaa;
    MsgId::from_bytes(b)
}

fn msg(topic: &str, n: u64, from: &str) -> NewMessage {
    NewMessage {
        topic: topic.to_owned(),
        msg_id: id(n),
        from: from.to_owned(),
        ts: 10_000 + n,
        head: Head {
            mime: "text/plain".into(),
            reply_to: None,
        },
        content: format!("message {n}").into_bytes(),
    }
}

/// A store with users alice and bob and topics t1, t2 (both subscribed to both).
async fn fixture(dir: &TempDir, cfg: SqliteConfig) -> SqliteStore {
    let s = open(dir, cfg);
    s.add_user(new_user("alice")).await.unwrap();
    s.add_user(new_user("bob")).await.unwrap();
    for t in ["t1", "t2"] {
        s.create_topic(topic(t), vec!["alice".into(), "bob".into()])
            .await
            .unwrap();
    }
    s
}

/// Holds the writer busy for a moment: whatever is queued meanwhile shares the next batch.
async fn stall(s: &SqliteStore) -> tokio::task::JoinHandle<()> {
    let (started_tx, started_rx) = oneshot::channel();
    let s = s.clone();
    let h = tokio::spawn(async move {
        s.write(false, move |_| {
            let _ = started_tx.send(());
            std::thread::sleep(Duration::from_millis(200));
            Ok(())
        })
        .await
        .unwrap();
    });
    started_rx.await.unwrap();
    h
}

/// Runs raw SQL on the write connection (inside a batch).
async fn on_writer(s: &SqliteStore, sql: &'static str) {
    s.write(false, move |c| {
        c.execute_batch(sql).map_err(super::schema::map)
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_get_gapless_seqs_and_share_commits() {
    let dir = TempDir::new().unwrap();
    let s = fixture(&dir, fast()).await;
    for t in 3..=5 {
        s.create_topic(topic(&format!("t{t}")), vec![])
            .await
            .unwrap();
    }
    let before = s.stats();
    let mut tasks = Vec::new();
    for task in 0..50u64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let t = format!("t{}", task % 5 + 1);
            for i in 0..200u64 {
                let a = s.append(msg(&t, task * 1000 + i, "alice")).await.unwrap();
                assert!(!a.dup);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for t in 1..=5u64 {
        let name = format!("t{t}");
        let all = s.messages(&name, 0, 0, u32::MAX, None).await.unwrap();
        let seqs: Vec<u64> = all.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (1..=2000).collect::<Vec<_>>(), "topic {name}");
        let ids: HashSet<MsgId> = all.iter().map(|m| m.msg_id).collect();
        let want: HashSet<MsgId> = (0..50u64)
            .filter(|task| task % 5 + 1 == t)
            .flat_map(|task| (0..200).map(move |i| id(task * 1000 + i)))
            .collect();
        assert_eq!(ids, want);
        assert_eq!(s.topic(&name).await.unwrap().unwrap().latest, 2000);
    }
    let st = s.stats();
    let appends = st.appends - before.appends;
    let commits = st.commits - before.commits;
    assert_eq!(appends, 10_000);
    assert!(
        commits < appends / 2,
        "{commits} commits for {appends} appends"
    );
    assert!(st.largest_batch > 1);
}

#[tokio::test]
async fn a_repeated_append_gets_its_old_seq_and_stores_nothing() {
    let dir = TempDir::new().unwrap();
    let s = fixture(&dir, fast()).await;
    let first = s.append(msg("t1", 1, "alice")).await.unwrap();
    s.append(msg("t1", 2, "alice")).await.unwrap();
    let mut again = msg("t1", 1, "alice");
    again.ts = 99_999;
    again.content = b"different".to_vec();
    let dup = s.append(again).await.unwrap();
    assert_eq!((first.seq, first.dup), (1, false));
    assert_eq!((dup.seq, dup.ts, dup.dup), (1, first.ts, true));
    assert_eq!(s.topic("t1").await.unwrap().unwrap().latest, 2);
    let all = s.messages("t1", 0, 0, 100, None).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].content, b"message 1");
    // The same id in another topic is another message.
    let other = s.append(msg("t2", 1, "alice")).await.unwrap();
    assert_eq!((other.seq, other.dup), (1, false));
}

#[tokio::test]
async fn a_duplicate_in_the_same_batch_is_stored_once() {
    let dir = TempDir::new().unwrap();
    let s = fixture(&dir, fast()).await;
    let stalled = stall(&s).await;
    let commits = s.stats().commits;
    let (a, b, c) = tokio::join!(
        s.append(msg("t1", 7, "alice")),
        s.append(msg("t1", 7, "alice")),
        s.append(msg("t1", 8, "bob")),
    );
    stalled.await.unwrap();
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!((a.seq, a.dup), (1, false));
    assert_eq!((b.seq, b.dup), (1, true));
    assert_eq!((c.seq, c.dup), (2, false));
    // The stall's own batch, then one batch for all three.
    assert_eq!(s.stats().commits - commits, 2);
    assert_eq!(s.messages("t1", 0, 0, 100, None).await.unwrap().len(), 2);
}

#[tokio::test]
async fn appends_survive_close_and_reopen_and_the_sequence_continues() {
    let dir = TempDir::new().unwrap();
    let s = fixture(&dir, SqliteConfig::default()).await;
    for n in 1..=20 {
        s.append(msg("t1", n, "alice")).await.unwrap();
    }
    s.close().await;
    assert!(matches!(s.topic("t1").await, Err(StoreError::Closed)));
    assert!(matches!(
        s.append(msg("t1", 21, "alice")).await,
        Err(StoreError::Closed)
    ));
    drop(s);
    let s = open(&dir, SqliteConfig::default());
    assert_eq!(s.topic("t1").await.unwrap().unwrap().latest, 20);
    let all = s.messages("t1", 0, 0, 100, None).await.unwrap();
    assert_eq!(
        all.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=20).collect::<Vec<_>>()
    );
    assert_eq!(all[19].msg_id, id(20));
    assert!(s.append(msg("t1", 5, "alice")).await.unwrap().dup);
    assert_eq!(s.append(msg("t1", 21, "alice")).await.unwrap().seq, 21);
}

#[tokio::test]
async fn dropping_the_last_handle_commits_what_was_queued() {
    let dir = TempDir::new().unwrap();
    let s = fixture(&dir, fast()).await;
    s.append(msg("t1", 1, "alice")).await.unwrap();
    let clone = s.clone();
    drop(s);
    // A clone keeps the store open.
    assert_eq!(clone.append(msg("t1", 2, "alice")).await.unwrap().seq, 2);
    drop(clone);
    let s = open(&dir, fast());
    assert_eq!(s.topic("t1").await.unwrap().unwrap().latest, 2);
}

#[tokio::test]
async fn a_failing_command_fails_alone_and_its_batch_commits() {
    let dir = TempDir::new().unwrap();
    let s = fixture(&dir, fast()).await;
    let stalled = stall(&s).await;
    let commits = s.stats().commits;
    let mut clash = new_user("carol");
    clash.login = "login-alice".into();
    let (carol, ok_user, m1, missing, m2) = tokio::join!(
        s.add_user(clash),
        s.add_user(new_user("dave")),
        s.append(msg("t1", 1, "alice")),
        s.append(msg("nope", 1, "alice")),
        s.append(msg("t1", 2, "alice")),
    );
    stalled.await.unwrap();
    assert!(matches!(carol, Err(StoreError::Conflict(_))), "{carol:?}");
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );
    assert_eq!(ok_user.unwrap().login, "login-dave");
    assert_eq!(m1.unwrap().seq, 1);
    assert_eq!(m2.unwrap().seq, 2);
    assert_eq!(s.stats().commits - commits, 2);
    assert!(s.user("carol").await.unwrap().is_none());
    assert!(s.user_by_login("login-dave").await.unwrap().is_some());
}

#[tokio::test]
async fn messages_returns_the_newest_of_the_range_in_ascending_order() {
    let dir = TempDir::new().unwrap();
    let s = fixture(&dir, fast()).await;
    for n in 1..=10 {
        s.append(msg("t1", n, "alice")).await.unwrap();
    }
    let seqs = |v: Vec<crate::model::Message>| v.iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(s.messages("t1", 0, 0, 3, None).await.unwrap()),
        [8, 9, 10]
    );
    assert_eq!(
        seqs(s.messages("t1", 2, 6, 100, None).await.unwrap()),
        [2, 3, 4, 5]
    );
    assert_eq!(seqs(s.messages("t1", 2, 6, 2, None).await.unwrap()), [4, 5]);
    assert_eq!(seqs(s.messages("t1", 10, 0, 5, None).await.unwrap()), [10]);
    assert!(s.messages("t1", 11, 0, 5, None).await.unwrap().is_empty());
    assert!(s.messages("t1", 5, 5, 5, None).await.unwrap().is_empty());
    assert!(s.messages("t1", 6, 3, 5, None).await.unwrap().is_empty());
    assert!(s.messages("t1", 0, 0, 0, None).await.unwrap().is_empty());
    assert!(s.messages("nope", 0, 0, 5, None).await.unwrap().is_empty());
    assert_eq!(
        seqs(s.messages("t1", 0, u64::MAX, 2, None).await.unwrap()),
        [9, 10]
    );
    assert_eq!(
        seqs(s.messages("t1", u64::MAX, 0, 2, None).await.unwrap()),
        [0u64; 0]
    );
    let m = &s.messages("t1", 3, 4, 1, None).await.unwrap()[0];
    assert_eq!((m.msg_id, m.ts, m.from.as_str()), (id(3), 10_003, "alice"));
    assert_eq!(m.head.mime, "text/plain");
    assert_eq!(m.content, b"message 3");
}

#[tokio::test]
async fn hard_deletes_leave_tombstones_for_everyone() {
    let dir = TempDir::new().unwrap();
    let s = fixture(&dir, fast()).await;
    for n in 1..=5 {
        let mut m = msg("t1", n, "alice");
        m.head.reply_to = Some(1);
        s.append(m).await.unwrap();
    }
    s.delete_messages("t1", 2, 3, true, "alice").await.unwrap();
    let all = s.messages("t1", 0, 0, 100, Some("bob")).await.unwrap();
    assert_eq!(all.len(), 5);
    for m in &all {
        let dead = (2..=3).contains(&m.seq);
        assert_eq!(m.is_tombstone(), dead, "seq {}", m.seq);
        if dead {
            assert!(m.content.is_empty());
            assert_eq!(m.head.reply_to, None);
            assert_eq!(m.msg_id, id(m.seq));
            assert_eq!(m.from, "alice");
        } else {
            assert_eq!(m.head.reply_to, Some(1));
        }
    }
    // The seq is never reused, and a deleted message still deduplicates.
    assert_eq!(s.append(msg("t1", 2, "alice")).await.unwrap().seq, 2);
    assert_eq!(s.append(msg("t1", 6, "alice")).await.unwrap().seq, 6);
    assert!(matches!(
        s.delete_messages("nope", 1, 1, true, "alice").await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn hidden_ranges_are_tombstones_only_for_their_viewer() {
    let dir = TempDir::new().unwrap();
    let s = fixture(&dir, fast()).await;
    for n in 1..=8 {
        s.append(msg("t1", n, "alice")).await.unwrap();
    }
    s.delete_messages("t1", 2, 3, false, "bob").await.unwrap();
    s.delete_messages("t1", 4, 4, false, "bob").await.unwrap();
    s.delete_messages("t1", 7, u64::MAX, false, "bob")
        .await
        .unwrap();
    s.delete_messages("t1", 5, 2, false, "bob").await.unwrap();
    let dead = |v: Vec<crate::model::Message>| {
        v.iter()
            .filter(|m| m.head.mime == TOMBSTONE_MIME)
            .map(|m| m.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        dead(s.messages("t1", 0, 0, 100, Some("bob")).await.unwrap()),
        [2, 3, 4, 7, 8]
    );
    assert!(dead(s.messages("t1", 0, 0, 100, Some("alice")).await.unwrap()).is_empty());
    assert!(dead(s.messages("t1", 0, 0, 100, None).await.unwrap()).is_empty());
    // Hiding up to "infinity" does not hide what comes later; adjacent ranges merged.
    s.append(msg("t1", 9, "alice")).await.unwrap();
    assert_eq!(
        dead(s.messages("t1", 8, 0, 100, Some("bob")).await.unwrap()),
        [8]
    );
    let ranges = s
        .read(|c| {
            c.query_row("SELECT count(*) FROM hidden", [], |r| r.get::<_, i64>(0))
                .map_err(super::schema::map)
        })
        .await
        .unwrap();
    assert_eq!(ranges, 2);
}

#[tokio::test]
async fn marks_only_go_up() {
    let dir = TempDir::new().unwrap();
    let s = fixture(&dir, fast()).await;
    s.set_marks("t1", "bob", Some(5), Some(7)).await.unwrap();
    s.set_marks("t1", "bob", Some(3), None).await.unwrap();
    s.set_marks("t1", "bob", None, Some(9)).await.unwrap();
    let sub = s.subscription("t1", "bob").await.unwrap().unwrap();
    assert_eq!((sub.read, sub.recv), (5, 9));
    let other = s.subscription("t2", "bob").await.unwrap().unwrap();
    assert_eq!((other.read, other.recv), (0, 0));
    assert!(matches!(
        s.set_marks("t1", "nobody", Some(1), None).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn count_from_counts_only_that_users_undeleted_messages_above_after() {
    let dir = TempDir::new().unwrap();
    let s = fixture(&dir, fast()).await;
    for n in 1..=10 {
        let from = if n % 2 == 0 { "bob" } else { "alice" };
        s.append(msg("t1", n, from)).await.unwrap();
    }
    s.append(msg("t2", 100, "bob")).await.unwrap();
    assert_eq!(s.count_from("t1", "bob", 0).await.unwrap(), 5);
    assert_eq!(s.count_from("t1", "bob", 4).await.unwrap(), 3);
    assert_eq!(s.count_from("t1", "alice", 9).await.unwrap(), 0);
    s.delete_messages("t1", 6, 6, true, "bob").await.unwrap();
    s.delete_messages("t1", 8, 8, false, "bob").await.unwrap();
    assert_eq!(s.count_from("t1", "bob", 4).await.unwrap(), 2);
    assert_eq!(s.count_from("t1", "nobody", 0).await.unwrap(), 0);
    assert_eq!(s.count_from("t1", "bob", u64::MAX).await.unwrap(), 0);
}

#[tokio::test]
async fn subscribe_is_idempotent_and_checks_topic_and_user() {
    let dir = TempDir::new().unwrap();
    let s = fixture(&dir, fast()).await;
    s.add_user(new_user("carol")).await.unwrap();
    let a = s.subscribe("t1", "carol", "JRW").await.unwrap();
    s.set_marks("t1", "carol", Some(2), None).await.unwrap();
    let b = s.subscribe("t1", "carol", "JRWPS").await.unwrap();
    assert_eq!(b.mode, "JRW");
    assert_eq!((b.read, b.created_ms), (2, a.created_ms));
    assert_eq!(s.subscribers("t1").await.unwrap().len(), 3);
    assert_eq!(s.subscriptions_of("carol").await.unwrap().len(), 1);
    assert!(matches!(
        s.subscribe("nope", "carol", "JRW").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.subscribe("t1", "ghost", "JRW").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(s.unsubscribe("t1", "carol").await.unwrap());
    assert!(!s.unsubscribe("t1", "carol").await.unwrap());
    assert!(s.subscription("t1", "carol").await.unwrap().is_none());
}

fn consult(name: &str, opened: u64, state: ConsultState) -> TopicRecord {
    TopicRecord {
        kind: TopicKind::Consult,
        consult: Some(Consult {
            customer: "alice".into(),
            agent: None,
            desk: "front".into(),
            state,
            opened_ms: opened,
        }),
        ..topic(name)
    }
}

#[tokio::test]
async fn open_consults_are_waiting_or_active_oldest_first() {
    let dir = TempDir::new().unwrap();
    let s = fixture(&dir, fast()).await;
    s.create_topic(consult("c3", 300, ConsultState::Waiting), vec![])
        .await
        .unwrap();
    s.create_topic(consult("c1", 100, ConsultState::Waiting), vec![])
        .await
        .unwrap();
    s.create_topic(consult("c2", 200, ConsultState::Waiting), vec![])
        .await
        .unwrap();
    s.create_topic(consult("c0", 50, ConsultState::Closed), vec![])
        .await
        .unwrap();
    let mut active = consult("c2", 200, ConsultState::Active).consult.unwrap();
    active.agent = Some("bob".into());
    s.update_topic(
        "c2",
        TopicUpdate {
            consult: Some(active.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut closed = active.clone();
    closed.state = ConsultState::Closed;
    s.update_topic(
        "c3",
        TopicUpdate {
            consult: Some(closed),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let open = s.open_consults().await.unwrap();
    assert_eq!(
        open.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["c1", "c2"]
    );
    assert_eq!(open[1].consult.as_ref(), Some(&active));
    assert_eq!(open[0].kind, TopicKind::Consult);
}

#[tokio::test]
async fn topics_round_trip_and_updates_apply() {
    let dir = TempDir::new().unwrap();
    let s = fixture(&dir, fast()).await;
    let mut t = topic("t1");
    t.latest = 0;
    assert_eq!(s.topic("t1").await.unwrap(), Some(t));
    assert!(matches!(
        s.create_topic(topic("t1"), vec![]).await,
        Err(StoreError::Conflict(_))
    ));
    // A failed create subscribes nobody and leaves no topic.
    assert!(matches!(
        s.create_topic(topic("t9"), vec!["alice".into(), "ghost".into()])
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(s.topic("t9").await.unwrap().is_none());
    assert!(
        s.subscriptions_of("alice")
            .await
            .unwrap()
            .iter()
            .all(|x| x.topic != "t9")
    );
    s.update_topic(
        "t1",
        TopicUpdate {
            title: Some("new".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(s.topic("t1").await.unwrap().unwrap().title, "new");
    assert!(matches!(
        s.update_topic("nope", TopicUpdate::default()).await,
        Err(StoreError::NotFound(_))
    ));
    s.update_topic(
        "t1",
        TopicUpdate {
            deleted: Some(true),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(s.topic("t1").await.unwrap().unwrap().deleted);
    assert!(matches!(
        s.append(msg("t1", 1, "alice")).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.append(msg("nope", 1, "alice")).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn users_round_trip_and_conflict_on_login_or_id() {
    let dir = TempDir::new().unwrap();
    let s = fixture(&dir, fast()).await;
    let mut agent = new_user("ag1");
    agent.role = Role::Supervisor;
    agent.pass_hash = None;
    let made = s.add_user(agent).await.unwrap();
    assert_eq!(s.user("ag1").await.unwrap(), Some(made.clone()));
    assert_eq!(
        s.user_by_login("login-ag1").await.unwrap(),
        Some(made.clone())
    );
    assert!(s.user("nobody").await.unwrap().is_none());
    let mut same_id = new_user("ag1");
    same_id.login = "other".into();
    assert!(matches!(
        s.add_user(same_id).await,
        Err(StoreError::Conflict(_))
    ));
    s.set_token_gen("ag1", 3).await.unwrap();
    assert_eq!(s.user("ag1").await.unwrap().unwrap().token_gen, 3);
    assert!(matches!(
        s.set_token_gen("nobody", 1).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_full_disk_fails_the_append_and_keeps_earlier_data() {
    let dir = TempDir::new().unwrap();
    let s = fixture(&dir, fast()).await;
    for n in 1..=5 {
        s.append(msg("t1", n, "alice")).await.unwrap();
    }
    let pages = s
        .write(false, |c| {
            c.query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))
                .map_err(super::schema::map)
        })
        .await
        .unwrap();
    s.write(false, move |c| {
        c.execute_batch(&format!("PRAGMA max_page_count = {pages}"))
            .map_err(super::schema::map)
    })
    .await
    .unwrap();
    let mut big = msg("t1", 6, "alice");
    big.content = vec![7u8; 256 * 1024];
    let r = s.append(big.clone()).await;
    assert!(matches!(r, Err(StoreError::Full(_))), "{r:?}");
    let all = s.messages("t1", 0, 0, 100, None).await.unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(s.topic("t1").await.unwrap().unwrap().latest, 5);
    // Space is back: the next append takes the next seq.
    on_writer(&s, "PRAGMA max_page_count = 1073741823").await;
    assert_eq!(s.append(big).await.unwrap().seq, 6);
    assert_eq!(s.append(msg("t1", 7, "alice")).await.unwrap().seq, 7);
}

#[tokio::test]
async fn a_read_only_database_refuses_writes_and_keeps_earlier_data() {
    let dir = TempDir::new().unwrap();
    let s = fixture(&dir, fast()).await;
    s.append(msg("t1", 1, "alice")).await.unwrap();
    on_writer(&s, "PRAGMA query_only = ON").await;
    let r = s.append(msg("t1", 2, "alice")).await;
    assert!(matches!(r, Err(StoreError::ReadOnly(_))), "{r:?}");
    assert!(matches!(
        s.add_user(new_user("carol")).await,
        Err(StoreError::ReadOnly(_))
    ));
    assert_eq!(s.messages("t1", 0, 0, 10, None).await.unwrap().len(), 1);
    assert_eq!(s.topic("t1").await.unwrap().unwrap().latest, 1);
    // Writable again (a new write connection): the sequence continues without a gap.
    s.close().await;
    let s = open(&dir, fast());
    assert_eq!(s.append(msg("t1", 2, "alice")).await.unwrap().seq, 2);
    assert!(s.user("carol").await.unwrap().is_none());
}

#[tokio::test]
async fn a_read_only_fault_is_cleared_by_the_next_committed_write() {
    // The kernel making the folder read-only and then writable again cannot be staged here
    // without a restart (ext4 stays read-only until unmounted): the writer thread's finding is
    // set as it would set it, and the next batch that commits must clear it.
    let dir = TempDir::new().unwrap();
    let s = fixture(&dir, fast()).await;
    s.append(msg("t1", 1, "alice")).await.unwrap();
    assert_eq!(s.fault(), None);
    s.inner
        .read_only
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(s.fault().as_deref(), Some(super::readonly::READ_ONLY));
    // A read commits nothing and leaves the fault standing.
    assert_eq!(s.messages("t1", 0, 0, 10, None).await.unwrap().len(), 1);
    assert_eq!(s.fault().as_deref(), Some(super::readonly::READ_ONLY));
    assert_eq!(s.append(msg("t1", 2, "alice")).await.unwrap().seq, 2);
    assert_eq!(s.fault(), None, "a committed write clears it");
}

#[tokio::test]
async fn opening_a_newer_schema_or_a_missing_folder_fails() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("kefu.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
    }
    let r = SqliteStore::open(&path, fast());
    assert!(
        matches!(r, Err(StoreError::Failed(ref m)) if m.contains("99")),
        "{r:?}"
    );
    let r = SqliteStore::open(&dir.path().join("no/such/kefu.db"), fast());
    assert!(r.is_err());
    let r = SqliteStore::open(dir.path(), fast());
    assert!(r.is_err(), "a folder is not a database");
}

#[tokio::test]
async fn a_garbage_file_is_a_failure_not_a_panic() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("kefu.db");
    std::fs::write(&path, vec![0x5au8; 8192]).unwrap();
    let r = SqliteStore::open(&path, fast());
    assert!(matches!(r, Err(StoreError::Failed(_))), "{r:?}");
}

#[tokio::test]
async fn a_version_1_database_keeps_its_messages_seqs_and_duplicates_when_migrated() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("kefu.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(super::schema::V1).unwrap();
        c.execute_batch(
            "INSERT INTO users (id, login, name, role, created) \
             VALUES ('alice', 'alice', 'Alice', 'customer', 0); \
             INSERT INTO topics (name, kind, title, owner, created, latest) \
             VALUES ('t1', 'group', '', 'alice', 0, 2);",
        )
        .unwrap();
        for n in 1..=2u64 {
            c.execute(
                "INSERT INTO messages (topic, seq, msg_id, \"from\", ts, mime, content) \
                 VALUES ('t1', ?1, ?2, 'alice', 1, '', x'61')",
                rusqlite::params![n as i64, id(n).as_bytes().as_slice()],
            )
            .unwrap();
        }
        c.pragma_update(None, "user_version", 1).unwrap();
    }
    let s = open(&dir, fast());
    assert_eq!(s.topic("t1").await.unwrap().unwrap().latest, 2);
    let kept = s.messages("t1", 0, 0, 10, None).await.unwrap();
    assert_eq!(kept.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);
    let again = s.append(msg("t1", 2, "alice")).await.unwrap();
    assert!(again.dup && again.seq == 2, "{again:?}");
    assert_eq!(s.append(msg("t1", 3, "alice")).await.unwrap().seq, 3);
    assert_eq!(s.topic("t1").await.unwrap().unwrap().latest, 3);
}

#[tokio::test]
async fn appends_and_marks_reuse_their_prepared_statements_instead_of_compiling_them_again() {
    let dir = TempDir::new().unwrap();
    let s = fixture(&dir, fast()).await;
    for n in 1..=5 {
        s.append(msg("t1", n, "alice")).await.unwrap();
        s.set_marks("t1", "bob", None, Some(n)).await.unwrap();
    }
    let reprepared = s
        .write(false, |c| {
            Ok(super::ops::HOT_STATEMENTS.map(|sql| {
                let st = c.prepare_cached(sql).unwrap();
                (sql, st.get_status(rusqlite::StatementStatus::RePrepare))
            }))
        })
        .await
        .unwrap();
    for (sql, times) in reprepared {
        assert_eq!(times, 0, "re-prepared {times} times: {sql}");
    }
}

#[tokio::test]
async fn concurrent_durable_appends_are_answered_after_the_sync_and_all_kept() {
    let dir = TempDir::new().unwrap();
    let s = fixture(&dir, SqliteConfig::default()).await;
    let mut tasks = Vec::new();
    for task in 0..20u64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let t = if task % 2 == 0 { "t1" } else { "t2" };
            for i in 0..20u64 {
                s.append(msg(t, task * 100 + i, "alice")).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    drop(s);
    let s = open(&dir, SqliteConfig::default());
    for t in ["t1", "t2"] {
        let seqs: Vec<u64> = s
            .messages(t, 0, 0, u32::MAX, None)
            .await
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(seqs, (1..=200).collect::<Vec<_>>(), "topic {t}");
    }
}

#[tokio::test]
async fn a_store_that_cannot_sync_refuses_writes_instead_of_acknowledging_them() {
    let dir = TempDir::new().unwrap();
    let s = fixture(&dir, SqliteConfig::default()).await;
    assert_eq!(s.append(msg("t1", 1, "alice")).await.unwrap().seq, 1);
    // Another store on the same file: its syncer has not opened the WAL yet, and now cannot.
    let other = open(&dir, SqliteConfig::default());
    std::fs::remove_file(dir.path().join("kefu.db-wal")).unwrap();
    let first = other.append(msg("t1", 2, "alice")).await;
    assert!(
        matches!(&first, Err(StoreError::Failed(why)) if why.contains("sync")),
        "{first:?}"
    );
    let later = other.set_marks("t1", "alice", Some(1), None).await;
    assert!(
        matches!(&later, Err(StoreError::Failed(why)) if why.contains("restart")),
        "{later:?}"
    );
    assert!(other.fault().is_some_and(|why| why.contains("restart")));
    assert_eq!(s.fault(), None, "the store that synced is healthy");
}

/// Another process is writing to a new database file (holding SQLite's RESERVED lock, as one
/// does while it switches the file to WAL mode) just when this one opens it and switches it
/// too. SQLite answers that switch with "database is locked" at once, without the busy
/// timeout, so the open used to fail (seen with several `kefu user add` at once on a fresh
/// data folder); now it tries again until the writer is done.
#[test]
fn opening_a_new_database_that_another_connection_is_writing_waits_instead_of_failing() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("kefu.db");
    let (holding_tx, holding_rx) = std::sync::mpsc::channel();
    let writer = {
        let path = path.clone();
        std::thread::spawn(move || {
            let c = rusqlite::Connection::open(&path).unwrap();
            c.execute_batch("BEGIN IMMEDIATE").unwrap();
            let mode: String = c
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            holding_tx.send(mode).unwrap();
            // The lock is held until the transaction ends.
            std::thread::sleep(Duration::from_millis(300));
            c.execute_batch("COMMIT").unwrap();
        })
    };
    assert_eq!(
        holding_rx.recv().unwrap(),
        "delete",
        "a new file, still with a rollback journal"
    );
    let opened = SqliteStore::open(&path, fast());
    assert!(opened.is_ok(), "the open waits for the writer: {opened:?}");
    writer.join().unwrap();
    drop(opened);
    let c = rusqlite::Connection::open(&path).unwrap();
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}
