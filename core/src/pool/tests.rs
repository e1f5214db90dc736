//! The pool's tests: stories of conversations through it, and a model it must agree with.

use super::*;
use proptest::prelude::*;

fn id(n: u32) -> MsgId {
    let mut b = [0u8; 16];
    b[12..].copy_from_slice(&n.to_be_bytes());
    MsgId::from_bytes(b)
}

const RECV: MessageState = MessageState::Received;

std::thread_local! {
    /// How many shifts of the sorted index (memmove calls) this test's thread made.
    pub(super) static SHIFTS: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
    /// How many topic boundaries this test's thread searched for beyond the window around
    /// their hint.
    pub(super) static SEARCHES: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
}

/// The shifts of the sorted index that `f` makes.
fn shifts_in(f: impl FnOnce()) -> usize {
    let before = SHIFTS.with(|n| n.get());
    f();
    SHIFTS.with(|n| n.get()) - before
}

/// (topic, seq, local) of a topic's messages in iteration order.
fn keys<T, const N: usize>(pool: &Pool<T, N>, topic: TopicKey) -> Vec<(u64, u32)> {
    pool.iter_topic(topic)
        .map(|(_, e)| (e.key.seq, e.key.local))
        .collect()
}

fn ids<T, const N: usize>(pool: &Pool<T, N>, topic: TopicKey) -> Vec<MsgId> {
    pool.iter_topic(topic).map(|(_, e)| e.id).collect()
}

#[test]
fn two_topics_interleave_but_iterate_per_topic_in_seq_order() {
    let mut pool: Pool<u32, 16> = Pool::new();
    let arrivals = [(1, 3), (2, 1), (1, 1), (2, 3), (1, 2), (2, 2)];
    for (n, &(topic, seq)) in arrivals.iter().enumerate() {
        let n = n as u32;
        pool.insert(id(n), topic, OrderKey::stored(seq), RECV, n)
            .unwrap();
    }
    assert_eq!(pool.len(), 6);
    assert_eq!(keys(&pool, 1), vec![(1, 0), (2, 0), (3, 0)]);
    assert_eq!(keys(&pool, 2), vec![(1, 0), (2, 0), (3, 0)]);
    assert_eq!(ids(&pool, 1), vec![id(2), id(4), id(0)]);
    let back: Vec<u64> = pool.iter_topic(2).rev().map(|(_, e)| e.key.seq).collect();
    assert_eq!(back, vec![3, 2, 1]);
    assert_eq!(pool.iter_topic(0).count(), 0);
    assert_eq!(pool.iter_topic(3).count(), 0);
}

#[test]
fn a_pending_message_sorts_after_the_seq_it_was_sent_after_and_before_later_seqs() {
    let mut pool: Pool<(), 16> = Pool::new();
    for seq in [1, 2, 4] {
        pool.insert(id(seq as u32), 7, OrderKey::stored(seq), RECV, ())
            .unwrap();
    }
    pool.insert(
        id(100),
        7,
        OrderKey::pending(2, 1),
        MessageState::Queued,
        (),
    )
    .unwrap();
    pool.insert(
        id(101),
        7,
        OrderKey::pending(2, 2),
        MessageState::Sending,
        (),
    )
    .unwrap();
    assert_eq!(keys(&pool, 7), vec![(1, 0), (2, 0), (2, 1), (2, 2), (4, 0)]);
    assert!(
        pool.find_seq(7, 3).is_none(),
        "pending keys are not in the seq index"
    );
}

/// A pool holding id 1 stored at seq 1 and then our own id 2, sending, pending after seq 1.
fn stored_then_mine() -> (Pool<(), 16>, Slot) {
    let mut pool: Pool<(), 16> = Pool::new();
    pool.insert(id(1), 0, OrderKey::stored(1), RECV, ())
        .unwrap();
    let mine = pool.insert(id(2), 0, OrderKey::pending(1, 1), MessageState::Sending, ());
    (pool, mine.unwrap().slot)
}

#[test]
fn confirm_moves_a_pending_message_to_its_real_seq() {
    let (mut pool, mine) = stored_then_mine();
    pool.insert(id(3), 0, OrderKey::stored(2), RECV, ())
        .unwrap();
    pool.insert(id(4), 0, OrderKey::stored(3), RECV, ())
        .unwrap();
    assert_eq!(ids(&pool, 0), vec![id(1), id(2), id(3), id(4)]);

    pool.confirm(mine, 4).unwrap();
    assert_eq!(ids(&pool, 0), vec![id(1), id(3), id(4), id(2)]);
    let e = pool.get(mine).unwrap();
    assert_eq!((e.key, e.state), (OrderKey::stored(4), MessageState::Sent));
    assert_eq!(pool.find_seq(0, 4), Some(mine));
    assert_eq!(pool.last_seq(0), 4);
    // A repeated confirm with the same seq is harmless.
    pool.confirm(mine, 4).unwrap();
    assert_eq!(pool.len(), 4);
}

#[test]
fn a_confirm_that_keeps_the_message_between_its_neighbours_moves_no_index_cell() {
    let (mut pool, mine) = stored_then_mine();
    pool.insert(id(3), 0, OrderKey::stored(3), RECV, ())
        .unwrap();
    for seq in 1..=2 {
        pool.insert(id(10 + seq as u32), 1, OrderKey::stored(seq), RECV, ())
            .unwrap();
    }
    assert_eq!(shifts_in(|| pool.confirm(mine, 2).unwrap()), 0);
    assert_eq!(keys(&pool, 0), vec![(1, 0), (2, 0), (3, 0)]);
    assert_eq!(ids(&pool, 0), vec![id(1), id(2), id(3)]);
    assert_eq!(pool.find_seq(0, 2), Some(mine));
    assert_eq!(keys(&pool, 1), vec![(1, 0), (2, 0)]);
}

#[test]
fn a_confirm_past_later_pending_messages_moves_them_in_one_shift() {
    let (mut pool, mine) = stored_then_mine();
    let sending = MessageState::Sending;
    for n in 2..=3 {
        pool.insert(id(n + 1), 0, OrderKey::pending(1, n), sending, ())
            .unwrap();
    }
    for seq in 1..=3 {
        pool.insert(id(10 + seq as u32), 1, OrderKey::stored(seq), RECV, ())
            .unwrap();
    }
    assert_eq!(shifts_in(|| pool.confirm(mine, 2).unwrap()), 1);
    assert_eq!(keys(&pool, 0), vec![(1, 0), (1, 2), (1, 3), (2, 0)]);
    assert_eq!(ids(&pool, 0), vec![id(1), id(3), id(4), id(2)]);
    assert_eq!(keys(&pool, 1), vec![(1, 0), (2, 0), (3, 0)]);
    // The next one in line is found where the last one was, and goes last too.
    let next = pool.find_id(&id(3)).unwrap();
    pool.confirm(next, 3).unwrap();
    assert_eq!(ids(&pool, 0), vec![id(1), id(4), id(2), id(3)]);
}

#[test]
fn a_requeue_to_an_earlier_key_goes_after_the_equal_keys_before_it() {
    let mut pool: Pool<(), 16> = Pool::new();
    for seq in 1..=4 {
        pool.insert(id(seq as u32), 0, OrderKey::stored(seq), RECV, ())
            .unwrap();
    }
    let sending = MessageState::Sending;
    pool.insert(id(5), 0, OrderKey::pending(2, 1), sending, ())
        .unwrap();
    let last = pool.find_id(&id(4)).unwrap();
    pool.requeue(last, OrderKey::pending(2, 1), MessageState::Queued)
        .unwrap();
    assert_eq!(ids(&pool, 0), vec![id(1), id(2), id(5), id(4), id(3)]);
    assert!(pool.find_seq(0, 4).is_none());
    // And back to a later key: after the equal one that now follows it.
    pool.requeue(last, OrderKey::stored(3), MessageState::Sent)
        .unwrap_err();
    pool.requeue(last, OrderKey::stored(5), MessageState::Sent)
        .unwrap();
    assert_eq!(ids(&pool, 0), vec![id(1), id(2), id(5), id(3), id(4)]);
}

#[test]
fn evicting_the_oldest_for_a_newest_in_front_of_another_topic_keeps_both_in_order() {
    // 300 slots: a failed message and 290 seqs in topic 0, then 9 in topic 1. Each new
    // seq of topic 0 evicts the oldest evictable message: first topic 0's own oldest (the
    // entries before it and topic 1's move, not the 290 between), later topic 1's.
    let mut pool: Box<Pool<u32, 300>> = Box::default();
    let failed = MessageState::Failed(FailReason::TimedOut);
    pool.insert(id(0), 0, OrderKey::pending(0, 1), failed, 0)
        .unwrap();
    for seq in 1..=290u64 {
        pool.insert(id(seq as u32), 0, OrderKey::stored(seq), RECV, 0)
            .unwrap();
    }
    for seq in 1..=9u64 {
        pool.insert(id(1000 + seq as u32), 1, OrderKey::stored(seq), RECV, 0)
            .unwrap();
    }
    let mut t1: Vec<u64> = (1..=9).collect();
    // Enough inserts to run off the index window's end more than once.
    for seq in 291..=1200u64 {
        let got = pool.insert(id(seq as u32), 0, OrderKey::stored(seq), RECV, 0);
        let evicted = got.unwrap().evicted.unwrap();
        if evicted.1 == 1 {
            t1.remove(0);
        }
        let kept = 299 - t1.len() as u64;
        let mut want = vec![(0, 1)];
        want.extend((seq + 1 - kept..=seq).map(|s| (s, 0)));
        assert_eq!(keys(&pool, 0), want, "after seq {seq}");
        let t1_keys: Vec<(u64, u32)> = t1.iter().map(|&s| (s, 0)).collect();
        assert_eq!(keys(&pool, 1), t1_keys, "after seq {seq}");
        assert!(pool.find_seq(0, seq).is_some());
        assert!(pool.find_seq(0, seq - kept).is_none());
    }
    assert!(t1.is_empty(), "topic 1 was evicted in its turn");
}

/// The first `n` seqs of topic 0 whose (topic, seq) tags share seq 1's home cell in a
/// 4-slot pool's table.
fn seqs_sharing_a_home(n: usize) -> Vec<u64> {
    let home = |s: u64| Table::<4>::home(seq_tag(0, s));
    (1..).filter(|&s| home(s) == home(1)).take(n).collect()
}

#[test]
fn a_message_filed_in_the_probe_run_its_victim_leaves_is_still_found() {
    // Five ids and five seqs whose tags share one home cell in a 4-slot pool: the fifth
    // message is filed at the end of the run of the first four, in the empty cell its
    // dedup probe ended at, and the first (evicted) leaves from the run's start, shifting
    // the others back; all must still be found.
    let home_of = |n: u32| Table::<4>::home(id_tag(&id(n)));
    let ids: Vec<u32> = (0..)
        .filter(|&n| home_of(n) == home_of(0))
        .take(5)
        .collect();
    let seqs = seqs_sharing_a_home(5);
    let mut pool: Pool<(), 4> = Pool::new();
    for (&n, &seq) in ids.iter().zip(&seqs) {
        pool.insert(id(n), 0, OrderKey::stored(seq), RECV, ())
            .unwrap();
    }
    for (&n, &seq) in ids.iter().zip(&seqs).skip(1) {
        let slot = pool.find_id(&id(n)).expect("id found");
        assert_eq!(pool.find_seq(0, seq), Some(slot), "seq {seq} found");
    }
    assert!(pool.find_id(&id(ids[0])).is_none());
    assert!(pool.find_seq(0, seqs[0]).is_none());
}

#[test]
fn a_stored_message_confirmed_again_at_a_seq_in_the_same_probe_run_is_found_there() {
    // Its old (topic, seq) cell leaves the run's start before the new one is filed, so
    // the new one goes where a fresh probe ends, not where the duplicate check's ended.
    let seqs = seqs_sharing_a_home(4);
    let mut pool: Pool<(), 4> = Pool::new();
    for (n, &seq) in seqs.iter().take(3).enumerate() {
        pool.insert(id(n as u32), 0, OrderKey::stored(seq), RECV, ())
            .unwrap();
    }
    let first = pool.find_seq(0, seqs[0]).unwrap();
    pool.confirm(first, seqs[3]).unwrap();
    assert_eq!(pool.find_seq(0, seqs[3]), Some(first));
    assert!(pool.find_seq(0, seqs[0]).is_none());
    for &seq in &seqs[1..3] {
        assert!(pool.find_seq(0, seq).is_some(), "seq {seq} found");
    }
}

#[test]
fn a_failed_message_keeps_its_place_when_later_seqs_arrive() {
    let mut pool: Pool<(), 16> = Pool::new();
    pool.insert(id(1), 0, OrderKey::stored(5), RECV, ())
        .unwrap();
    let mine = pool.insert(id(2), 0, OrderKey::pending(5, 1), MessageState::Sending, ());
    let mine = mine.unwrap().slot;
    let refused = MessageState::Failed(FailReason::Refused { code: 422 });
    pool.set_state(mine, refused).unwrap();
    for seq in 6..9 {
        pool.insert(id(seq as u32 + 10), 0, OrderKey::stored(seq), RECV, ())
            .unwrap();
    }
    assert_eq!(keys(&pool, 0), vec![(5, 0), (5, 1), (6, 0), (7, 0), (8, 0)]);
    assert_eq!(pool.get(mine).unwrap().state, refused);
    assert_eq!(pool.last_seq(0), 8);
}

#[test]
fn a_late_confirm_rescues_a_failed_message() {
    let mut pool: Pool<(), 4> = Pool::new();
    let s = pool.insert(id(1), 0, OrderKey::pending(0, 1), MessageState::Sending, ());
    let s = s.unwrap().slot;
    pool.set_state(s, MessageState::Failed(FailReason::TimedOut))
        .unwrap();
    pool.confirm(s, 1).unwrap();
    assert_eq!(pool.get(s).unwrap().state, MessageState::Sent);
    // Now evictable: filling the pool evicts it first.
    for n in 2..5 {
        pool.insert(id(n), 0, OrderKey::stored(u64::from(n)), RECV, ())
            .unwrap();
    }
    let ins = pool
        .insert(id(9), 0, OrderKey::stored(9), RECV, ())
        .unwrap();
    assert_eq!(ins.evicted, Some((id(1), 0)));
}

#[test]
fn confirm_keeps_delivered_and_read() {
    let mut pool: Pool<(), 4> = Pool::new();
    let s = pool
        .insert(id(1), 0, OrderKey::pending(0, 1), MessageState::Read, ())
        .unwrap();
    pool.confirm(s.slot, 1).unwrap();
    assert_eq!(pool.get(s.slot).unwrap().state, MessageState::Read);
}

#[test]
fn duplicate_id_and_duplicate_seq_are_refused() {
    let mut pool: Pool<(), 8> = Pool::new();
    pool.insert(id(1), 0, OrderKey::stored(1), RECV, ())
        .unwrap();
    let again = pool.insert(id(1), 3, OrderKey::stored(9), RECV, ());
    assert_eq!(again, Err(PoolError::DuplicateId));
    let same_seq = pool.insert(id(2), 0, OrderKey::stored(1), RECV, ());
    assert_eq!(same_seq, Err(PoolError::DuplicateSeq));
    // The same seq in another topic, and a pending key after that seq, are fine.
    pool.insert(id(3), 1, OrderKey::stored(1), RECV, ())
        .unwrap();
    pool.insert(id(4), 0, OrderKey::pending(1, 1), MessageState::Queued, ())
        .unwrap();
    assert_eq!(pool.len(), 3);
}

#[test]
fn confirm_to_a_seq_another_message_holds_is_refused_and_changes_nothing() {
    let mut pool: Pool<(), 8> = Pool::new();
    pool.insert(id(1), 0, OrderKey::stored(1), RECV, ())
        .unwrap();
    let s = pool.insert(id(2), 0, OrderKey::pending(1, 1), MessageState::Sending, ());
    let s = s.unwrap().slot;
    assert_eq!(pool.confirm(s, 1), Err(PoolError::DuplicateSeq));
    let e = pool.get(s).unwrap();
    assert_eq!(
        (e.key, e.state),
        (OrderKey::pending(1, 1), MessageState::Sending)
    );
    assert_eq!(keys(&pool, 0), vec![(1, 0), (1, 1)]);
}

#[test]
fn a_conversation_running_through_a_full_pool_many_times_stays_in_order() {
    // Each insert evicts the topic's oldest message and appends the newest: the sorted
    // index slides through its window and moves back to the start again and again.
    let mut pool: Pool<u32, 8> = Pool::new();
    let failed = MessageState::Failed(FailReason::TimedOut);
    pool.insert(id(999), 2, OrderKey::pending(0, 1), failed, 0)
        .unwrap();
    for n in 1..=100u32 {
        let topic = if n % 10 == 0 { 1 } else { 2 };
        let got = pool
            .insert(
                id(n),
                topic,
                OrderKey::stored(u64::from(n)),
                MessageState::Received,
                n,
            )
            .unwrap();
        if n > 7 {
            assert!(got.evicted.is_some(), "insert {n} evicted nothing");
        }
        // The failed message and the seven newest stay.
        let newest = n.saturating_sub(6).max(1)..=n;
        let two: Vec<u32> = pool.iter_topic(2).map(|(_, e)| e.data).collect();
        let want = [0]
            .into_iter()
            .chain(newest.clone().filter(|m| m % 10 != 0));
        assert_eq!(two, want.collect::<Vec<_>>(), "topic 2 after insert {n}");
        let one: Vec<u32> = pool.iter_topic(1).map(|(_, e)| e.data).collect();
        let want: Vec<u32> = newest.filter(|m| m % 10 == 0).collect();
        assert_eq!(one, want, "topic 1 after insert {n}");
        assert_eq!(pool.len(), (n as usize + 1).min(8));
    }
}

#[test]
fn topic_boundaries_near_where_they_were_last_seen_are_counted_not_searched_for() {
    // Eight conversations at once through a full pool: every insert evicts the oldest
    // message (of any topic) and appends the newest of another, so each boundary between
    // them drifts a cell at a time.
    let mut pool: Pool<u32, 64> = Pool::new();
    let topic_of = |n: u32| (n.wrapping_mul(0x9E37_79B9) >> 29) as TopicKey;
    let mut seq = [0u64; 8];
    let mut feed = |pool: &mut Pool<u32, 64>, n: u32| {
        let t = topic_of(n);
        seq[usize::from(t)] += 1;
        pool.insert(id(n), t, OrderKey::stored(seq[usize::from(t)]), RECV, n)
            .unwrap();
    };
    for n in 0..200 {
        feed(&mut pool, n);
    }
    let before = SEARCHES.with(|n| n.get());
    for n in 200..1200 {
        feed(&mut pool, n);
    }
    assert_eq!(
        SEARCHES.with(|n| n.get()),
        before,
        "a boundary was searched for"
    );
    // And each topic still iterates exactly its own messages, oldest first.
    for t in 0..8 {
        let got: Vec<u32> = pool.iter_topic(t).map(|(_, e)| e.data).collect();
        let want: Vec<u32> = (0..1200).filter(|&n| topic_of(n) == t).collect();
        assert_eq!(got, want[want.len() - got.len()..], "topic {t}");
    }
    assert_eq!(pool.len(), 64);
}

#[test]
fn a_topic_boundary_far_from_where_it_was_last_seen_is_searched_for_and_found() {
    // Topic 1 sits between topics 0 and 2; then topic 0 grows by far more than the window
    // while topic 1's start is never looked at, and then a message for topic 1 arrives.
    let mut pool: Pool<u32, 64> = Pool::new();
    for (t, n) in [(0, 0), (1, 1), (2, 2)] {
        pool.insert(id(n), t, OrderKey::stored(1), RECV, n).unwrap();
    }
    for n in 3..40 {
        pool.insert(id(n), 0, OrderKey::stored(u64::from(n)), RECV, n)
            .unwrap();
    }
    let before = SEARCHES.with(|n| n.get());
    pool.insert(id(99), 1, OrderKey::stored(2), RECV, 99)
        .unwrap();
    assert!(SEARCHES.with(|n| n.get()) > before, "the window was enough");
    let one: Vec<u32> = pool.iter_topic(1).map(|(_, e)| e.data).collect();
    assert_eq!(one, [1, 99]);
    assert_eq!(pool.iter_topic(0).count(), 38);
    assert_eq!(
        pool.iter_topic(2).map(|(_, e)| e.data).collect::<Vec<_>>(),
        [2]
    );
}

#[test]
fn a_full_pool_evicts_the_oldest_evictable_and_never_one_owed_an_ack_or_failed() {
    let mut pool: Pool<(), 6> = Pool::new();
    let failed = MessageState::Failed(FailReason::Cancelled);
    pool.insert(id(1), 0, OrderKey::pending(0, 1), MessageState::Queued, ())
        .unwrap();
    pool.insert(id(2), 0, OrderKey::pending(0, 2), MessageState::Sending, ())
        .unwrap();
    pool.insert(id(3), 0, OrderKey::pending(0, 3), failed, ())
        .unwrap();
    pool.insert(id(4), 1, OrderKey::stored(1), RECV, ())
        .unwrap();
    pool.insert(id(5), 0, OrderKey::stored(1), MessageState::Delivered, ())
        .unwrap();
    pool.insert(id(6), 1, OrderKey::stored(2), RECV, ())
        .unwrap();
    assert_eq!(pool.len(), 6);

    let ins = pool
        .insert(id(7), 2, OrderKey::stored(1), RECV, ())
        .unwrap();
    assert_eq!(ins.evicted, Some((id(4), 1)));
    assert!(pool.find_id(&id(4)).is_none());
    assert!(pool.find_seq(1, 1).is_none());
    let ins = pool
        .insert(id(8), 2, OrderKey::stored(2), MessageState::Sending, ())
        .unwrap();
    assert_eq!(ins.evicted, Some((id(5), 0)));
    let ins = pool
        .insert(id(9), 2, OrderKey::stored(3), MessageState::Queued, ())
        .unwrap();
    assert_eq!(ins.evicted, Some((id(6), 1)));
    let ins = pool
        .insert(id(10), 2, OrderKey::stored(4), MessageState::Queued, ())
        .unwrap();
    assert_eq!(ins.evicted, Some((id(7), 2)));
    // Only Queued / Sending / Failed remain.
    let full = pool.insert(id(11), 2, OrderKey::stored(5), RECV, ());
    assert_eq!(full, Err(PoolError::Full));
    assert_eq!(pool.len(), 6);
    for n in [1, 2, 3, 8, 9, 10] {
        assert!(pool.find_id(&id(n)).is_some(), "message {n} was kept");
    }
}

#[test]
fn a_message_waiting_for_an_earlier_seq_is_never_evicted() {
    let mut pool: Pool<(), 2> = Pool::new();
    pool.insert(id(1), 0, OrderKey::stored(5), MessageState::Arriving, ())
        .unwrap();
    pool.insert(id(2), 0, OrderKey::stored(1), RECV, ())
        .unwrap();
    let ins = pool
        .insert(id(3), 0, OrderKey::stored(2), RECV, ())
        .unwrap();
    assert_eq!(ins.evicted, Some((id(2), 0)));
    let full = pool.insert(id(4), 0, OrderKey::stored(3), MessageState::Arriving, ());
    assert_eq!(full.map(|i| i.evicted), Ok(Some((id(3), 0))));
    let full = pool.insert(id(5), 0, OrderKey::stored(4), RECV, ());
    assert_eq!(
        full,
        Err(PoolError::Full),
        "two arriving messages fill the pool"
    );
    pool.set_state(pool.find_id(&id(1)).unwrap(), RECV).unwrap();
    assert!(pool.insert(id(5), 0, OrderKey::stored(4), RECV, ()).is_ok());
}

#[test]
fn eviction_finds_its_victim_behind_many_messages_that_stay_and_in_any_topic() {
    let mut pool: Pool<(), 12> = Pool::new();
    let failed = MessageState::Failed(FailReason::TimedOut);
    // Topic 5 starts with more failed messages than the victim fast path looks at.
    for n in 1..=6 {
        pool.insert(id(n), 5, OrderKey::pending(0, n), failed, ())
            .unwrap();
    }
    for (n, topic, seq) in [
        (7, 5, 1),
        (8, 9, 1),
        (9, 2, 1),
        (10, 5, 2),
        (11, 9, 2),
        (12, 2, 2),
    ] {
        pool.insert(id(n), topic, OrderKey::stored(seq), RECV, ())
            .unwrap();
    }
    let mut put = |n: u32, topic: TopicKey, key: OrderKey, state: MessageState| {
        pool.insert(id(n), topic, key, state, ()).unwrap().evicted
    };
    // The new message's topic sorts before the victim's, then after it.
    assert_eq!(put(13, 2, OrderKey::stored(3), RECV), Some((id(7), 5)));
    assert_eq!(put(14, 9, OrderKey::stored(3), RECV), Some((id(8), 9)));
    // Not the newest of its topic: it goes before the topic's last message.
    assert_eq!(put(15, 5, OrderKey::stored(1), RECV), Some((id(9), 2)));
    // A key equal to an existing one goes after it.
    let queued = MessageState::Queued;
    assert_eq!(
        put(16, 5, OrderKey::pending(0, 6), queued),
        Some((id(10), 5))
    );

    assert_eq!(ids(&pool, 2), vec![id(12), id(13)]);
    assert_eq!(ids(&pool, 9), vec![id(11), id(14)]);
    let five = [1, 2, 3, 4, 5, 6, 16, 15].map(id);
    assert_eq!(ids(&pool, 5), five.to_vec());
    for n in 1..=16 {
        let gone = [7, 8, 9, 10].contains(&n);
        assert_eq!(pool.find_id(&id(n)).is_none(), gone, "message {n}");
    }
    assert_eq!(pool.find_seq(5, 1), pool.find_id(&id(15)));
    assert!(pool.find_seq(5, 2).is_none());
}

#[test]
fn a_refused_insert_evicts_nothing() {
    let mut pool: Pool<(), 2> = Pool::new();
    pool.insert(id(1), 0, OrderKey::stored(1), RECV, ())
        .unwrap();
    pool.insert(id(2), 0, OrderKey::stored(2), RECV, ())
        .unwrap();
    assert_eq!(
        pool.insert(id(2), 0, OrderKey::stored(3), RECV, ()),
        Err(PoolError::DuplicateId)
    );
    assert_eq!(
        pool.insert(id(3), 0, OrderKey::stored(2), RECV, ()),
        Err(PoolError::DuplicateSeq)
    );
    assert_eq!(ids(&pool, 0), vec![id(1), id(2)]);
}

#[test]
fn a_message_that_becomes_evictable_joins_the_back_of_the_eviction_queue() {
    let mut pool: Pool<(), 3> = Pool::new();
    let a = pool.insert(id(1), 0, OrderKey::pending(0, 1), MessageState::Sending, ());
    let a = a.unwrap().slot;
    pool.insert(id(2), 0, OrderKey::stored(1), RECV, ())
        .unwrap();
    pool.insert(id(3), 0, OrderKey::stored(2), RECV, ())
        .unwrap();
    pool.confirm(a, 3).unwrap();
    // Staying evictable (Sent -> Delivered) keeps the place in the queue.
    pool.set_state(a, MessageState::Delivered).unwrap();
    let order: Vec<_> = (4..7)
        .map(|n| pool.insert(id(n), 0, OrderKey::stored(u64::from(n)), RECV, ()))
        .map(|r| r.unwrap().evicted.unwrap().0)
        .collect();
    assert_eq!(order, vec![id(2), id(3), id(1)]);
}

#[test]
fn a_message_that_stops_being_evictable_leaves_the_eviction_queue() {
    let mut pool: Pool<(), 2> = Pool::new();
    let a = pool
        .insert(id(1), 0, OrderKey::stored(1), MessageState::Sent, ())
        .unwrap();
    pool.insert(id(2), 0, OrderKey::stored(2), RECV, ())
        .unwrap();
    pool.set_state(a.slot, MessageState::Sending).unwrap();
    let ins = pool
        .insert(id(3), 0, OrderKey::stored(3), RECV, ())
        .unwrap();
    assert_eq!(ins.evicted, Some((id(2), 0)));
    assert_eq!(
        pool.insert(id(4), 0, OrderKey::stored(4), RECV, ())
            .unwrap()
            .evicted,
        Some((id(3), 0))
    );
    assert!(pool.get(a.slot).is_some());
}

#[test]
fn stale_slots_give_not_found_after_remove() {
    let mut pool: Pool<u8, 4> = Pool::new();
    let s = pool
        .insert(id(1), 0, OrderKey::stored(1), RECV, 9)
        .unwrap()
        .slot;
    assert_eq!(pool.remove(s), Some((id(1), 0)));
    assert!(pool.get(s).is_none());
    assert!(pool.data_mut(s).is_none());
    assert!(pool.remove(s).is_none());
    assert_eq!(pool.set_state(s, RECV), Err(PoolError::NotFound));
    assert_eq!(pool.confirm(s, 2), Err(PoolError::NotFound));
    assert_eq!(
        pool.requeue(s, OrderKey::stored(2), RECV),
        Err(PoolError::NotFound)
    );
    assert!(pool.find_id(&id(1)).is_none());
    assert!(pool.find_seq(0, 1).is_none());
    assert!(pool.is_empty());
    // The slot is reused for a new message; the old handle still misses.
    let t = pool
        .insert(id(2), 0, OrderKey::stored(1), RECV, 3)
        .unwrap()
        .slot;
    assert_ne!(s, t);
    assert!(pool.get(s).is_none());
    assert_eq!(pool.get(t).unwrap().data, 3);
}

#[test]
fn stale_slots_give_not_found_after_eviction_and_reuse() {
    let mut pool: Pool<(), 1> = Pool::new();
    let s = pool
        .insert(id(1), 0, OrderKey::stored(1), RECV, ())
        .unwrap()
        .slot;
    let t = pool
        .insert(id(2), 0, OrderKey::stored(2), RECV, ())
        .unwrap();
    assert_eq!(t.evicted, Some((id(1), 0)));
    assert!(pool.get(s).is_none());
    assert_eq!(
        pool.set_state(s, MessageState::Read),
        Err(PoolError::NotFound)
    );
    assert_eq!(pool.get(t.slot).unwrap().id, id(2));
}

#[test]
fn a_slot_from_a_bigger_pool_is_not_found() {
    let mut big: Pool<(), 8> = Pool::new();
    let mut small: Pool<(), 2> = Pool::new();
    let mut last = None;
    for n in 0..8 {
        last = Some(
            big.insert(id(n), 0, OrderKey::stored(u64::from(n)), RECV, ())
                .unwrap()
                .slot,
        );
    }
    let last = last.unwrap();
    assert!(small.get(last).is_none());
    assert!(small.remove(last).is_none());
    assert_eq!(small.confirm(last, 1), Err(PoolError::NotFound));
}

#[test]
fn data_mut_changes_the_payload_only() {
    let mut pool: Pool<[u8; 4], 4> = Pool::new();
    let s = pool
        .insert(id(1), 0, OrderKey::stored(1), RECV, [0; 4])
        .unwrap()
        .slot;
    pool.data_mut(s).unwrap()[2] = 7;
    assert_eq!(pool.get(s).unwrap().data, [0, 0, 7, 0]);
}

/// A payload that records what `insert_with` handed to `fill`.
#[derive(Debug, Default, PartialEq)]
struct Text {
    bytes: heapless::Vec<u8, 8>,
    fills: u32,
}

fn fill_with(text: &[u8]) -> impl FnOnce(&mut Text) + '_ {
    move |t| {
        t.bytes.clear();
        t.bytes.extend_from_slice(text).unwrap();
        t.fills += 1;
    }
}

#[test]
fn insert_with_fills_a_new_slot_from_default_and_a_reused_one_in_place() {
    let mut pool: Pool<Text, 2> = Pool::new();
    let a = pool.insert_with(id(1), 0, OrderKey::stored(1), RECV, fill_with(b"first"));
    let a = a.unwrap().slot;
    let e = pool.get(a).unwrap();
    assert_eq!(
        (e.id, e.topic, e.key, e.state),
        (id(1), 0, OrderKey::stored(1), RECV)
    );
    assert_eq!((&e.data.bytes[..], e.data.fills), (&b"first"[..], 1));
    pool.insert_with(id(2), 0, OrderKey::stored(2), RECV, fill_with(b"second"))
        .unwrap();

    // Full: the new message evicts the first and is written over its payload, which
    // `fill` sees (fills == 1 before this one) and must overwrite.
    let c = pool.insert_with(
        id(3),
        1,
        OrderKey::stored(1),
        MessageState::Queued,
        fill_with(b"3"),
    );
    let c = c.unwrap();
    assert_eq!(c.evicted, Some((id(1), 0)));
    assert_eq!(c.slot.index, a.index, "the victim's slot is reused");
    assert!(pool.get(a).is_none(), "the victim's handle is stale");
    let e = pool.get(c.slot).unwrap();
    assert_eq!((e.id, e.topic, e.state), (id(3), 1, MessageState::Queued));
    assert_eq!((&e.data.bytes[..], e.data.fills), (&b"3"[..], 2));
    assert_eq!(pool.find_id(&id(3)), Some(c.slot));
    assert_eq!(pool.find_seq(1, 1), Some(c.slot));
    assert!(pool.find_id(&id(1)).is_none());

    // A removed message's slot is reused the same way.
    pool.remove(c.slot).unwrap();
    let d = pool.insert_with(id(4), 1, OrderKey::stored(2), RECV, fill_with(b"four"));
    let d = d.unwrap();
    assert_eq!((d.slot.index, d.evicted), (c.slot.index, None));
    assert_eq!(pool.get(d.slot).unwrap().data.fills, 3);
    assert_eq!(pool.get(d.slot).unwrap().data.bytes, b"four");
}

#[test]
fn a_refused_insert_with_never_calls_fill() {
    let mut pool: Pool<Text, 1> = Pool::new();
    pool.insert_with(
        id(1),
        0,
        OrderKey::pending(0, 1),
        MessageState::Sending,
        fill_with(b"x"),
    )
    .unwrap();
    let called = core::cell::Cell::new(false);
    for (n, key) in [(1, OrderKey::stored(5)), (2, OrderKey::stored(5))] {
        let got = pool.insert_with(id(n), 0, key, RECV, |_| called.set(true));
        let want = if n == 1 {
            PoolError::DuplicateId
        } else {
            PoolError::Full
        };
        assert_eq!(got, Err(want));
    }
    assert!(!called.get());
    assert_eq!(pool.len(), 1);
}

#[test]
fn requeue_moves_a_failed_message_to_the_end_queued_with_its_payload_and_handle() {
    let mut pool: Pool<u32, 8> = Pool::new();
    pool.insert(id(1), 0, OrderKey::stored(1), RECV, 10)
        .unwrap();
    let mine = pool.insert(id(2), 0, OrderKey::pending(1, 1), MessageState::Sending, 20);
    let mine = mine.unwrap().slot;
    pool.set_state(mine, MessageState::Failed(FailReason::TimedOut))
        .unwrap();
    pool.insert(id(3), 0, OrderKey::stored(2), RECV, 30)
        .unwrap();
    assert_eq!(ids(&pool, 0), vec![id(1), id(2), id(3)]);

    pool.requeue(mine, OrderKey::pending(2, 1), MessageState::Queued)
        .unwrap();
    assert_eq!(ids(&pool, 0), vec![id(1), id(3), id(2)]);
    let e = pool.get(mine).unwrap();
    assert_eq!(
        (e.key, e.state, e.data),
        (OrderKey::pending(2, 1), MessageState::Queued, 20)
    );
    assert_eq!(pool.find_id(&id(2)), Some(mine));
    assert_eq!(pool.last_seq(0), 2);
}

#[test]
fn requeue_to_a_held_seq_is_refused_and_a_stored_key_is_indexed() {
    let mut pool: Pool<(), 4> = Pool::new();
    let first = pool
        .insert(id(1), 0, OrderKey::stored(1), RECV, ())
        .unwrap()
        .slot;
    let s = pool
        .insert(id(2), 0, OrderKey::stored(2), RECV, ())
        .unwrap()
        .slot;
    pool.insert(id(3), 0, OrderKey::stored(3), RECV, ())
        .unwrap();
    assert_eq!(
        pool.requeue(s, OrderKey::stored(1), RECV),
        Err(PoolError::DuplicateSeq)
    );
    assert_eq!(pool.get(s).unwrap().key, OrderKey::stored(2));

    pool.requeue(first, OrderKey::stored(7), RECV).unwrap();
    assert_eq!(pool.find_seq(0, 7), Some(first));
    assert!(pool.find_seq(0, 1).is_none());
    assert_eq!(ids(&pool, 0), vec![id(2), id(3), id(1)]);
    // Requeued while evictable: it went to the back of the eviction order.
    pool.insert(id(4), 0, OrderKey::stored(4), RECV, ())
        .unwrap();
    let evicted: Vec<_> = (5..8)
        .map(|n| {
            let key = OrderKey::stored(u64::from(n) + 10);
            pool.insert(id(n), 0, key, RECV, ()).unwrap().evicted
        })
        .collect();
    assert_eq!(
        evicted,
        vec![Some((id(2), 0)), Some((id(3), 0)), Some((id(1), 0))]
    );
}

#[test]
fn marks_are_the_owners_bits_cleared_on_insert_and_listed_in_order() {
    let mut pool: Pool<(), 3> = Pool::new();
    let a = pool
        .insert(id(1), 0, OrderKey::stored(1), RECV, ())
        .unwrap()
        .slot;
    let b = pool.insert(id(2), 0, OrderKey::pending(1, 1), MessageState::Sending, ());
    let b = b.unwrap().slot;
    pool.insert(id(3), 0, OrderKey::stored(2), RECV, ())
        .unwrap();
    pool.set_mark(a, true).unwrap();
    pool.set_mark(b, true).unwrap();
    let all: Vec<_> = pool.marks_from(0, OrderKey::stored(0)).collect();
    let want = vec![
        (OrderKey::stored(1), true),
        (OrderKey::pending(1, 1), true),
        (OrderKey::stored(2), false),
    ];
    assert_eq!(all, want);
    let later: Vec<_> = pool.marks_from(0, OrderKey::pending(1, 1)).collect();
    assert_eq!(later, want[1..]);
    assert_eq!(pool.marks_from(1, OrderKey::stored(0)).count(), 0);

    // The marked slot is evicted and reused: the new entry starts unmarked; the stale
    // handle sets nothing.
    let c = pool
        .insert(id(4), 0, OrderKey::stored(3), RECV, ())
        .unwrap();
    assert_eq!((c.slot.index, c.evicted), (a.index, Some((id(1), 0))));
    assert_eq!(pool.set_mark(a, true), Err(PoolError::NotFound));
    let marks: Vec<bool> = pool
        .marks_from(0, OrderKey::stored(0))
        .map(|(_, m)| m)
        .collect();
    assert_eq!(marks, vec![true, false, false]);
}

#[test]
fn last_seq_looks_past_many_pending_messages() {
    let mut pool: Pool<(), 64> = Pool::new();
    pool.insert(id(1), 2, OrderKey::stored(41), RECV, ())
        .unwrap();
    for n in 1..50 {
        let key = OrderKey::pending(41, n);
        pool.insert(id(100 + n), 2, key, MessageState::Queued, ())
            .unwrap();
    }
    pool.insert(id(2), 3, OrderKey::stored(99), RECV, ())
        .unwrap();
    assert_eq!(pool.last_seq(2), 41);
    assert_eq!(pool.last_seq(3), 99);
    assert_eq!(pool.last_seq(1), 0);
}

#[test]
fn clear_topic_removes_that_topic_only() {
    let mut pool: Pool<(), 16> = Pool::new();
    let mut kept = Vec::new();
    let mut gone = Vec::new();
    for n in 0..12u32 {
        let topic = (n % 3) as TopicKey;
        let s = pool
            .insert(id(n), topic, OrderKey::stored(u64::from(n)), RECV, ())
            .unwrap()
            .slot;
        if topic == 1 {
            gone.push(s)
        } else {
            kept.push(s)
        }
    }
    pool.insert(id(99), 1, OrderKey::pending(4, 1), MessageState::Queued, ())
        .unwrap();
    assert_eq!(pool.clear_topic(1), 5);
    assert_eq!(pool.clear_topic(1), 0);
    assert_eq!(pool.len(), 8);
    assert!(gone.iter().all(|&s| pool.get(s).is_none()));
    assert!(kept.iter().all(|&s| pool.get(s).is_some()));
    assert!(pool.find_id(&id(99)).is_none());
    assert!(pool.find_seq(1, 1).is_none());
    assert_eq!(pool.last_seq(1), 0);
    assert_eq!(keys(&pool, 2).len(), 4);
    // Freed slots are usable again.
    for n in 100..108 {
        pool.insert(
            id(n),
            5,
            OrderKey::stored(u64::from(n)),
            MessageState::Queued,
            (),
        )
        .unwrap();
    }
    assert_eq!(pool.len(), 16);
}

#[test]
fn last_seq_is_the_highest_stored_seq_and_ignores_pending() {
    let mut pool: Pool<(), 8> = Pool::new();
    assert_eq!(pool.last_seq(0), 0);
    pool.insert(id(1), 0, OrderKey::pending(9, 1), MessageState::Queued, ())
        .unwrap();
    assert_eq!(pool.last_seq(0), 0);
    pool.insert(id(2), 0, OrderKey::stored(3), RECV, ())
        .unwrap();
    pool.insert(id(3), 0, OrderKey::stored(u64::MAX), RECV, ())
        .unwrap();
    pool.insert(id(4), 1, OrderKey::stored(u64::MAX), RECV, ())
        .unwrap();
    pool.insert(
        id(5),
        u16::MAX,
        OrderKey::pending(u64::MAX, u32::MAX),
        MessageState::Queued,
        (),
    )
    .unwrap();
    assert_eq!(pool.last_seq(0), u64::MAX);
    assert_eq!(pool.last_seq(u16::MAX), 0);
    assert_eq!(keys(&pool, u16::MAX), vec![(u64::MAX, u32::MAX)]);
}

#[test]
fn iter_topic_from_starts_at_the_first_key_not_below_from() {
    let mut pool: Pool<(), 16> = Pool::new();
    for seq in [2, 4, 6] {
        pool.insert(id(seq as u32), 1, OrderKey::stored(seq), RECV, ())
            .unwrap();
        pool.insert(id(seq as u32 + 50), 0, OrderKey::stored(seq), RECV, ())
            .unwrap();
        pool.insert(id(seq as u32 + 90), 2, OrderKey::stored(seq), RECV, ())
            .unwrap();
    }
    pool.insert(
        id(100),
        1,
        OrderKey::pending(4, 1),
        MessageState::Queued,
        (),
    )
    .unwrap();
    let from = |k: OrderKey| -> Vec<(u64, u32)> {
        pool.iter_topic_from(1, k)
            .map(|(_, e)| (e.key.seq, e.key.local))
            .collect()
    };
    assert_eq!(
        from(OrderKey::stored(0)),
        vec![(2, 0), (4, 0), (4, 1), (6, 0)]
    );
    assert_eq!(from(OrderKey::stored(4)), vec![(4, 0), (4, 1), (6, 0)]);
    assert_eq!(from(OrderKey::pending(4, 1)), vec![(4, 1), (6, 0)]);
    assert_eq!(from(OrderKey::stored(5)), vec![(6, 0)]);
    assert_eq!(from(OrderKey::stored(7)), vec![]);
    assert_eq!(pool.iter_topic_from(3, OrderKey::stored(0)).count(), 0);
}

#[test]
fn a_zero_capacity_pool_is_always_full() {
    let mut pool: Pool<(), 0> = Pool::new();
    assert_eq!(pool.capacity(), 0);
    assert_eq!(
        pool.insert(id(1), 0, OrderKey::stored(1), RECV, ()),
        Err(PoolError::Full)
    );
    assert!(pool.find_id(&id(1)).is_none());
    assert!(pool.find_seq(0, 1).is_none());
    assert_eq!(pool.iter_topic(0).count(), 0);
    assert_eq!(pool.clear_topic(0), 0);
}

static STATIC_POOL: Pool<u64, 32> = Pool::new();

#[test]
fn a_pool_can_be_a_static_and_starts_empty() {
    assert!(STATIC_POOL.is_empty());
    assert_eq!(STATIC_POOL.capacity(), 32);
    let p: Pool<(), 3> = Pool::default();
    assert_eq!(p.len(), 0);
}

#[test]
fn ids_that_differ_only_in_the_timestamp_are_found() {
    let mut pool: Pool<(), 256> = Pool::new();
    let mk = |n: u16| {
        let mut b = [0u8; 16];
        b[..2].copy_from_slice(&n.to_be_bytes());
        MsgId::from_bytes(b)
    };
    for n in 0..256 {
        pool.insert(mk(n), 0, OrderKey::stored(u64::from(n) + 1), RECV, ())
            .unwrap();
    }
    for n in (0..256).step_by(3) {
        let s = pool.find_id(&mk(n)).unwrap();
        assert_eq!(pool.remove(s).unwrap().0, mk(n));
    }
    for n in 0..256 {
        assert_eq!(pool.find_id(&mk(n)).is_some(), n % 3 != 0, "id {n}");
        assert_eq!(
            pool.find_seq(0, u64::from(n) + 1).is_some(),
            n % 3 != 0,
            "seq {n}"
        );
    }
}

#[test]
fn states_say_what_they_owe() {
    use MessageState::*;
    let failed = Failed(FailReason::TimedOut);
    for (s, owed, evictable) in [
        (Queued, true, false),
        (Sending, true, false),
        (Sent, false, true),
        (Delivered, false, true),
        (Read, false, true),
        (failed, false, false),
        (Received, false, true),
    ] {
        assert_eq!((s.awaits_ack(), s.evictable()), (owed, evictable), "{s:?}");
    }
    assert!(OrderKey::stored(3).is_stored() && !OrderKey::pending(3, 1).is_stored());
    assert!(OrderKey::stored(3) < OrderKey::pending(3, 1));
    assert!(OrderKey::pending(3, 9) < OrderKey::stored(4));
}

#[test]
fn errors_explain_themselves() {
    let all = [
        PoolError::Full,
        PoolError::DuplicateId,
        PoolError::DuplicateSeq,
        PoolError::NotFound,
    ];
    let texts: std::collections::HashSet<String> = all.iter().map(|e| e.to_string()).collect();
    assert_eq!(texts.len(), all.len());
    assert!(texts.iter().all(|t| !t.is_empty()));
}

// ---- model test ----

#[derive(Clone, Debug)]
enum Op {
    Insert {
        id: u8,
        topic: u16,
        seq: u64,
        local: u32,
        state: u8,
    },
    SetState {
        pick: usize,
        state: u8,
    },
    Confirm {
        pick: usize,
        seq: u64,
    },
    Remove {
        pick: usize,
    },
    Requeue {
        pick: usize,
        seq: u64,
        local: u32,
        state: u8,
    },
    Clear {
        topic: u16,
    },
    Mark {
        pick: usize,
        mark: bool,
    },
    /// An insert at the topic's next seq, the common case (and the index's fast path).
    Append {
        id: u8,
        topic: u16,
        state: u8,
    },
}

fn state_of(n: u8) -> MessageState {
    use MessageState::*;
    match n % 9 {
        0 => Queued,
        1 => Sending,
        2 => Sent,
        3 => Delivered,
        4 => Read,
        5 => Failed(FailReason::TimedOut),
        6 => Failed(FailReason::Refused { code: 413 }),
        7 => Arriving,
        _ => Received,
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..40, 0u16..3, 0u64..12, prop_oneof![Just(0u32), 1u32..3], any::<u8>())
            .prop_map(|(id, topic, seq, local, state)| Op::Insert { id, topic, seq, local, state }),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(pick, state)| Op::SetState { pick, state }),
        2 => (any::<usize>(), 0u64..12).prop_map(|(pick, seq)| Op::Confirm { pick, seq }),
        1 => any::<usize>().prop_map(|pick| Op::Remove { pick }),
        1 => (any::<usize>(), 0u64..12, prop_oneof![Just(0u32), 1u32..3], any::<u8>())
            .prop_map(|(pick, seq, local, state)| Op::Requeue { pick, seq, local, state }),
        1 => (0u16..4).prop_map(|topic| Op::Clear { topic }),
        4 => (0u8..40, 0u16..3, any::<u8>())
            .prop_map(|(id, topic, state)| Op::Append { id, topic, state }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, mark)| Op::Mark { pick, mark }),
    ]
}

#[derive(Clone, Debug)]
struct M {
    slot: Slot,
    entry: Entry<u32>,
    /// Arrival order in the sorted index (ties between equal keys).
    tie: u64,
    /// When it last became evictable.
    lru: Option<u64>,
    /// The owner's bit.
    mark: bool,
}

#[derive(Default)]
struct Model {
    live: Vec<M>,
    clock: u64,
}

impl Model {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
    fn at(&self, slot: Slot) -> Option<usize> {
        self.live.iter().position(|m| m.slot == slot)
    }
    fn holder(&self, topic: TopicKey, seq: u64) -> Option<Slot> {
        self.live
            .iter()
            .find(|m| m.entry.topic == topic && m.entry.key == OrderKey::stored(seq))
            .map(|m| m.slot)
    }
    /// The highest stored seq of `topic`, 0 if none.
    fn last_seq(&self, topic: TopicKey) -> u64 {
        self.live
            .iter()
            .filter(|m| m.entry.topic == topic && m.entry.key.is_stored())
            .map(|m| m.entry.key.seq)
            .max()
            .unwrap_or(0)
    }
}

fn run<const N: usize>(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut pool: Pool<u32, N> = Pool::new();
    let mut model = Model::default();
    let mut issued: Vec<Slot> = Vec::new();
    for op in ops {
        let pick = |p: usize| issued.get(p % issued.len().max(1)).copied();
        let op = match op {
            Op::Append { id, topic, state } => {
                let seq = model.last_seq(topic) + 1;
                Op::Insert {
                    id,
                    topic,
                    seq,
                    local: 0,
                    state,
                }
            }
            op => op,
        };
        match op {
            Op::Insert {
                id: n,
                topic,
                seq,
                local,
                state,
            } => {
                let (id, key, state) = (id(u32::from(n)), OrderKey { seq, local }, state_of(state));
                let data = model.tick() as u32;
                // Half the inserts move the payload in, half fill it in place.
                let got = if n % 2 == 0 {
                    pool.insert(id, topic, key, state, data)
                } else {
                    pool.insert_with(id, topic, key, state, |d| *d = data)
                };
                let expect_err = if model.live.iter().any(|m| m.entry.id == id) {
                    Some(PoolError::DuplicateId)
                } else if key.is_stored() && model.holder(topic, seq).is_some() {
                    Some(PoolError::DuplicateSeq)
                } else {
                    None
                };
                let mut evicted = None;
                let expect_err = expect_err.or_else(|| {
                    if model.live.len() < N {
                        return None;
                    }
                    let victim = model
                        .live
                        .iter()
                        .enumerate()
                        .filter_map(|(i, m)| m.lru.map(|t| (t, i)))
                        .min()
                        .map(|(_, i)| i);
                    match victim {
                        Some(i) => {
                            let m = model.live.remove(i);
                            evicted = Some((m.entry.id, m.entry.topic));
                            None
                        }
                        None => Some(PoolError::Full),
                    }
                });
                match (got, expect_err) {
                    (Err(e), Some(x)) => prop_assert_eq!(e, x),
                    (Ok(ins), None) => {
                        prop_assert_eq!(ins.evicted, evicted);
                        prop_assert!(!issued.contains(&ins.slot), "slot handle reused");
                        issued.push(ins.slot);
                        let tie = model.tick();
                        let lru = state.evictable().then(|| model.tick());
                        let entry = Entry {
                            id,
                            topic,
                            key,
                            state,
                            data,
                        };
                        model.live.push(M {
                            slot: ins.slot,
                            entry,
                            tie,
                            lru,
                            mark: false,
                        });
                    }
                    (got, x) => prop_assert!(false, "insert gave {:?}, model {:?}", got, x),
                }
            }
            Op::SetState { pick: p, state } => {
                let Some(slot) = pick(p) else { continue };
                let state = state_of(state);
                let got = pool.set_state(slot, state);
                match model.at(slot) {
                    None => prop_assert_eq!(got, Err(PoolError::NotFound)),
                    Some(i) => {
                        prop_assert_eq!(got, Ok(()));
                        let was = model.live[i].entry.state.evictable();
                        if !state.evictable() {
                            model.live[i].lru = None;
                        } else if !was {
                            model.live[i].lru = Some(model.tick());
                        }
                        model.live[i].entry.state = state;
                    }
                }
            }
            Op::Confirm { pick: p, seq } => {
                let Some(slot) = pick(p) else { continue };
                let got = pool.confirm(slot, seq);
                match model.at(slot) {
                    None => prop_assert_eq!(got, Err(PoolError::NotFound)),
                    Some(i) => {
                        let topic = model.live[i].entry.topic;
                        if model.holder(topic, seq).is_some_and(|s| s != slot) {
                            prop_assert_eq!(got, Err(PoolError::DuplicateSeq));
                            continue;
                        }
                        prop_assert_eq!(got, Ok(()));
                        let tie = model.tick();
                        let now = model.tick();
                        let m = &mut model.live[i];
                        if m.entry.key != OrderKey::stored(seq) {
                            m.tie = tie;
                        }
                        m.entry.key = OrderKey::stored(seq);
                        if !m.entry.state.evictable() {
                            m.lru = Some(now);
                        }
                        if !matches!(m.entry.state, MessageState::Delivered | MessageState::Read) {
                            m.entry.state = MessageState::Sent;
                        }
                    }
                }
            }
            Op::Remove { pick: p } => {
                let Some(slot) = pick(p) else { continue };
                let got = pool.remove(slot);
                match model.at(slot) {
                    None => prop_assert_eq!(got, None),
                    Some(i) => {
                        let e = model.live.remove(i).entry;
                        prop_assert_eq!(got, Some((e.id, e.topic)));
                    }
                }
            }
            Op::Requeue {
                pick: p,
                seq,
                local,
                state,
            } => {
                let Some(slot) = pick(p) else { continue };
                let (key, state) = (OrderKey { seq, local }, state_of(state));
                let got = pool.requeue(slot, key, state);
                match model.at(slot) {
                    None => prop_assert_eq!(got, Err(PoolError::NotFound)),
                    Some(i) => {
                        let topic = model.live[i].entry.topic;
                        if key.is_stored() && model.holder(topic, seq).is_some_and(|s| s != slot) {
                            prop_assert_eq!(got, Err(PoolError::DuplicateSeq));
                            continue;
                        }
                        prop_assert_eq!(got, Ok(()));
                        let tie = model.tick();
                        let lru = state.evictable().then(|| model.tick());
                        let m = &mut model.live[i];
                        (m.entry.key, m.entry.state, m.tie, m.lru) = (key, state, tie, lru);
                    }
                }
            }
            Op::Append { .. } => unreachable!("made an insert above"),
            Op::Mark { pick: p, mark } => {
                let Some(slot) = pick(p) else { continue };
                let got = pool.set_mark(slot, mark);
                match model.at(slot) {
                    None => prop_assert_eq!(got, Err(PoolError::NotFound)),
                    Some(i) => {
                        prop_assert_eq!(got, Ok(()));
                        model.live[i].mark = mark;
                    }
                }
            }
            Op::Clear { topic } => {
                let before = model.live.len();
                model.live.retain(|m| m.entry.topic != topic);
                prop_assert_eq!(pool.clear_topic(topic), before - model.live.len());
            }
        }
        check(&pool, &model, &issued)?;
    }
    Ok(())
}

fn check<const N: usize>(
    pool: &Pool<u32, N>,
    model: &Model,
    issued: &[Slot],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(pool.len(), model.live.len());
    for m in &model.live {
        prop_assert_eq!(pool.get(m.slot), Some(&m.entry));
        prop_assert_eq!(pool.find_id(&m.entry.id), Some(m.slot));
    }
    for s in issued {
        if model.at(*s).is_none() {
            prop_assert!(pool.get(*s).is_none());
        }
    }
    for n in 0..40 {
        let want = model
            .live
            .iter()
            .find(|m| m.entry.id == id(n))
            .map(|m| m.slot);
        prop_assert_eq!(pool.find_id(&id(n)), want);
    }
    for topic in 0..4 {
        let mut want: Vec<&M> = model
            .live
            .iter()
            .filter(|m| m.entry.topic == topic)
            .collect();
        want.sort_by_key(|m| (m.entry.key, m.tie));
        let want: Vec<Slot> = want.iter().map(|m| m.slot).collect();
        let got: Vec<Slot> = pool.iter_topic(topic).map(|(s, _)| s).collect();
        prop_assert_eq!(&got, &want);
        let mut back: Vec<Slot> = pool.iter_topic(topic).rev().map(|(s, _)| s).collect();
        back.reverse();
        prop_assert_eq!(&back, &want);
        for from in [
            OrderKey::stored(0),
            OrderKey::stored(5),
            OrderKey::pending(5, 1),
            OrderKey::stored(11),
        ] {
            let marked = model
                .live
                .iter()
                .filter(|m| m.entry.topic == topic && m.entry.key >= from)
                .filter(|m| m.mark && m.entry.key.is_stored())
                .count();
            prop_assert_eq!(pool.count_stored_marks_from(topic, from), marked);
            let marks = pool
                .marks_from(topic, from)
                .filter(|&(k, m)| m && k.is_stored());
            prop_assert_eq!(marks.count(), marked);
            let got: Vec<Slot> = pool.iter_topic_from(topic, from).map(|(s, _)| s).collect();
            let want: Vec<Slot> = want
                .iter()
                .copied()
                .filter(|s| {
                    model
                        .live
                        .iter()
                        .any(|m| m.slot == *s && m.entry.key >= from)
                })
                .collect();
            prop_assert_eq!(got, want);
        }
        prop_assert_eq!(pool.last_seq(topic), model.last_seq(topic));
        for seq in 0..64 {
            prop_assert_eq!(pool.find_seq(topic, seq), model.holder(topic, seq));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn a_small_pool_agrees_with_a_model(ops in proptest::collection::vec(op(), 1..120)) {
        run::<6>(ops)?;
    }

    #[test]
    fn a_roomier_pool_agrees_with_a_model(ops in proptest::collection::vec(op(), 1..200)) {
        run::<24>(ops)?;
    }
}
