//! Live state shared by every session: the topics in memory (latest seq, the newest messages,
//! subscribers and their marks, attached sessions) and who is online.
//!
//! Sessions own their connections and delivery windows; the hub only tells them that something
//! changed (a wake-up, or an event on their queue). Locks here are `std` mutexes held for a few
//! map operations and never across an `.await`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::names;
use super::wire::{Out, PresWhat};
use crate::model::{Message, TOMBSTONE_MIME};
use crate::store::{Consult, Store, StoreResult, TopicKind, TopicRecord};

/// How many of a topic's newest messages are served from memory.
pub const CACHED_MESSAGES: usize = 256;

/// Identifies one session (one connection) for the gateway's lifetime.
pub type SessionId = u64;

/// What reaches a session from outside its task.
#[derive(Clone, Debug)]
pub enum Event {
    /// A packet to send as is.
    Out(Out),
    /// The session must end (shutdown, account removed): send this notice, then close.
    Close(Out),
    /// The user no longer belongs to a topic: drop the attachment, send the notice.
    Detach {
        /// Internal topic name.
        topic: String,
        /// What to tell the client.
        notice: Out,
    },
}

/// A session's queue of events from outside its task: bounded, and holding no memory while
/// empty (an idle connection should cost as little as possible). The session drains it when
/// woken.
#[derive(Debug)]
pub struct EventQueue {
    queue: Mutex<VecDeque<Event>>,
    capacity: usize,
}

impl EventQueue {
    /// A queue that takes at most `capacity` events before refusing more.
    pub fn new(capacity: usize) -> EventQueue {
        EventQueue {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
        }
    }

    /// Queues `event`; false if the queue is full.
    fn push(&self, event: Event) -> bool {
        let mut q = lock(&self.queue);
        if q.len() >= self.capacity {
            return false;
        }
        q.push_back(event);
        true
    }

    /// Everything queued, oldest first; the queue's memory goes with it.
    pub fn take(&self) -> VecDeque<Event> {
        std::mem::take(&mut *lock(&self.queue))
    }
}

/// A handle on a session: wake it, or queue an event for it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SessionLink {
    /// The session.
    pub id: SessionId,
    /// Its user.
    pub user: Arc<str>,
    /// Whether the session is attached to its user's `me` channel.
    pub me: Arc<AtomicBool>,
    wake: Arc<Notify>,
    events: Arc<EventQueue>,
}

impl SessionLink {
    /// A link to a session woken through `wake` and fed through `events`.
    pub fn new(id: SessionId, user: Arc<str>, wake: Arc<Notify>, events: Arc<EventQueue>) -> Self {
        SessionLink {
            id,
            user,
            me: Arc::new(AtomicBool::new(false)),
            wake,
            events,
        }
    }

    /// Tells the session a topic it is attached to has news.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Queues an event; false if the session's queue is full or closed (a slow or gone
    /// session loses best-effort notices, never stored messages).
    pub fn send(&self, event: Event) -> bool {
        let queued = self.events.push(event);
        if queued {
            self.wake.notify_one();
        }
        queued
    }
}

/// A subscriber's marks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Marks {
    /// Read up to.
    pub read: u64,
    /// Received up to.
    pub recv: u64,
}

/// Mutable state of a topic.
#[derive(Debug)]
pub struct TopicState {
    /// Title.
    pub title: String,
    /// Owner's user id.
    pub owner: String,
    /// Consultation state, for consultations.
    pub consult: Option<Consult>,
    /// Deleted for everyone.
    pub deleted: bool,
    /// Subscribers by user id.
    pub subs: HashMap<String, Marks>,
    /// Sessions attached, by id.
    pub attached: HashMap<SessionId, SessionLink>,
    /// The newest messages, ascending, contiguous, ending at the latest seq.
    cache: VecDeque<Arc<Message>>,
    /// Commits that resolved before an earlier seq's did, applied when the gap closes.
    pending: BTreeMap<u64, Arc<Message>>,
}

/// A topic in memory.
#[derive(Debug)]
pub struct Topic {
    /// Internal name.
    pub name: String,
    /// Kind of conversation.
    pub kind: TopicKind,
    latest: AtomicU64,
    state: Mutex<TopicState>,
}

impl Topic {
    fn new(rec: TopicRecord, subs: HashMap<String, Marks>) -> Topic {
        Topic {
            name: rec.name,
            kind: rec.kind,
            latest: AtomicU64::new(rec.latest),
            state: Mutex::new(TopicState {
                title: rec.title,
                owner: rec.owner,
                consult: rec.consult,
                deleted: rec.deleted,
                subs,
                attached: HashMap::new(),
                cache: VecDeque::new(),
                pending: BTreeMap::new(),
            }),
        }
    }

    /// The latest seq applied (every seq up to it is committed and visible).
    pub fn latest(&self) -> u64 {
        self.latest.load(Ordering::Acquire)
    }

    /// Locks the topic's state.
    pub fn state(&self) -> MutexGuard<'_, TopicState> {
        // A poisoned lock means a panic while holding it; the state is plain data and stays
        // usable, so keep serving rather than cascade the panic into every session.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `user` is subscribed.
    pub fn is_subscriber(&self, user: &str) -> bool {
        self.state().subs.contains_key(user)
    }

    /// Messages `first..=last` if all are in memory.
    pub fn cached(&self, first: u64, last: u64) -> Option<Vec<Arc<Message>>> {
        let st = self.state();
        let oldest = st.cache.front()?.seq;
        if first < oldest || last > self.latest() || first > last {
            return None;
        }
        let from = usize::try_from(first - oldest).ok()?;
        let to = usize::try_from(last - oldest).ok()?;
        Some(st.cache.range(from..=to).cloned().collect())
    }

    /// Applies a committed message in seq order: returns the messages that became visible
    /// (possibly several, when this one closed a gap; none if it is early or already applied).
    fn apply(&self, msg: Arc<Message>) -> Vec<Arc<Message>> {
        let mut st = self.state();
        let mut latest = self.latest();
        let mut visible = Vec::new();
        if msg.seq <= latest {
            return visible;
        }
        st.pending.insert(msg.seq, msg);
        while let Some(next) = st.pending.remove(&(latest + 1)) {
            latest = next.seq;
            st.cache.push_back(Arc::clone(&next));
            if st.cache.len() > CACHED_MESSAGES {
                st.cache.pop_front();
            }
            visible.push(next);
        }
        self.latest.store(latest, Ordering::Release);
        visible
    }

    /// Turns cached messages `first..=last` into tombstones (after a hard delete).
    pub fn tombstone(&self, first: u64, last: u64) {
        let mut st = self.state();
        for m in st.cache.iter_mut() {
            if m.seq >= first && m.seq <= last && !m.is_tombstone() {
                let mut t = Message::clone(m);
                t.head.mime = TOMBSTONE_MIME.to_owned();
                t.head.reply_to = None;
                t.content.clear();
                *m = Arc::new(t);
            }
        }
    }
}

/// Topics in memory and sessions online.
#[derive(Debug, Default)]
pub struct Hub {
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    online: Mutex<HashMap<Arc<str>, Vec<SessionLink>>>,
    next_session: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Hub {
        Hub::default()
    }

    /// A fresh session id.
    pub fn session_id(&self) -> SessionId {
        self.next_session.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The topic with this internal name, loaded from the store on first use; None if it does
    /// not exist.
    pub async fn topic<S: Store>(&self, store: &S, name: &str) -> StoreResult<Option<Arc<Topic>>> {
        if let Some(t) = lock(&self.topics).get(name) {
            return Ok(Some(Arc::clone(t)));
        }
        let Some(rec) = store.topic(name).await? else {
            return Ok(None);
        };
        let subs = store
            .subscribers(name)
            .await?
            .into_iter()
            .map(|s| {
                (
                    s.user,
                    Marks {
                        read: s.read,
                        recv: s.recv,
                    },
                )
            })
            .collect();
        Ok(Some(self.insert(rec, subs)))
    }

    /// Puts a topic just created (or loaded) in memory; if another session loaded it first,
    /// that one wins and is returned.
    pub fn insert(&self, rec: TopicRecord, subs: HashMap<String, Marks>) -> Arc<Topic> {
        let mut topics = lock(&self.topics);
        Arc::clone(
            topics
                .entry(rec.name.clone())
                .or_insert_with(|| Arc::new(Topic::new(rec, subs))),
        )
    }

    /// Forgets a topic (deleted for everyone).
    pub fn remove(&self, name: &str) {
        lock(&self.topics).remove(name);
    }

    /// Applies a committed message: updates the topic and wakes its attached sessions; tells
    /// subscribers who are online but not attached with a `pres` on `me`.
    pub fn committed(&self, topic: &Topic, msg: Arc<Message>) {
        let visible = topic.apply(msg);
        let Some(last) = visible.last() else {
            return;
        };
        let (attached, subscribers): (Vec<SessionLink>, Vec<String>) = {
            let st = topic.state();
            (
                st.attached.values().cloned().collect(),
                st.subs.keys().cloned().collect(),
            )
        };
        for link in &attached {
            link.wake();
        }
        let online = lock(&self.online);
        for user in subscribers {
            let Some(sessions) = online.get(user.as_str()) else {
                continue;
            };
            for s in sessions {
                if s.me.load(Ordering::Relaxed) && !attached.iter().any(|a| a.id == s.id) {
                    s.send(Event::Out(Out::Pres {
                        topic: "me".into(),
                        src: names::view_name(&topic.name, &user),
                        what: PresWhat::Msg { seq: last.seq },
                    }));
                }
            }
        }
    }

    /// A logged-in session came up; whether it is the user's first.
    pub fn session_up(&self, link: SessionLink) -> bool {
        let mut online = lock(&self.online);
        let sessions = online.entry(Arc::clone(&link.user)).or_default();
        sessions.push(link);
        sessions.len() == 1
    }

    /// Queues `out` for the sessions of `user` that are attached to `me`.
    pub fn tell_me(&self, user: &str, out: &Out) {
        for s in self.sessions_of(user) {
            if s.me.load(Ordering::Relaxed) {
                s.send(Event::Out(out.clone()));
            }
        }
    }

    /// Tells the one-to-one peers of `user` (on their `me`) that `user` came online or went
    /// offline.
    pub async fn announce<S: Store>(&self, store: &S, user: &str, what: PresWhat) {
        let Ok(subs) = store.subscriptions_of(user).await else {
            return;
        };
        for s in subs {
            if names::p2p_members(&s.topic).is_none() {
                continue;
            }
            let peer = names::view_name(&s.topic, user);
            self.tell_me(
                &peer,
                &Out::Pres {
                    topic: "me".into(),
                    src: user.to_owned(),
                    what,
                },
            );
        }
    }

    /// A logged-in session ended; whether it was the user's last.
    pub fn session_down(&self, user: &str, id: SessionId) -> bool {
        let mut online = lock(&self.online);
        let Some(sessions) = online.get_mut(user) else {
            return true;
        };
        sessions.retain(|s| s.id != id);
        if sessions.is_empty() {
            online.remove(user);
            true
        } else {
            false
        }
    }

    /// The user's sessions.
    pub fn sessions_of(&self, user: &str) -> Vec<SessionLink> {
        lock(&self.online).get(user).cloned().unwrap_or_default()
    }

    /// Whether the user has a session.
    pub fn is_online(&self, user: &str) -> bool {
        lock(&self.online).contains_key(user)
    }

    /// Queues an event for every session of `user`.
    pub fn tell_user(&self, user: &str, event: &Event) {
        for s in self.sessions_of(user) {
            s.send(event.clone());
        }
    }

    /// Every session online (for shutdown notices).
    pub fn all_sessions(&self) -> Vec<SessionLink> {
        lock(&self.online).values().flatten().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use kefu_core::id::MsgId;

    use super::*;
    use crate::model::Head;

    fn topic() -> Topic {
        Topic::new(
            TopicRecord {
                name: "grpabc".into(),
                kind: TopicKind::Group,
                title: String::new(),
                owner: "usra".into(),
                created_ms: 0,
                latest: 0,
                deleted: false,
                consult: None,
            },
            HashMap::new(),
        )
    }

    fn msg(seq: u64) -> Arc<Message> {
        Arc::new(Message {
            seq,
            msg_id: MsgId::from_bytes([seq as u8; 16]),
            from: "usra".into(),
            ts: seq,
            head: Head::default(),
            content: vec![1],
        })
    }

    #[test]
    fn commits_that_resolve_out_of_order_become_visible_in_seq_order() {
        let t = topic();
        assert!(t.apply(msg(2)).is_empty(), "seq 2 waits for seq 1");
        assert_eq!(t.latest(), 0);
        let seqs: Vec<u64> = t.apply(msg(1)).iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [1, 2]);
        assert_eq!(t.latest(), 2);
        assert!(t.apply(msg(2)).is_empty(), "applied twice is ignored");
    }

    #[test]
    fn the_cache_keeps_the_newest_messages_only() {
        let t = topic();
        for s in 1..=300 {
            t.apply(msg(s));
        }
        assert!(t.cached(1, 10).is_none(), "evicted");
        let newest = t.cached(290, 300).expect("in memory");
        assert_eq!(newest.len(), 11);
        assert_eq!(newest[0].seq, 290);
        assert!(t.cached(300, 301).is_none(), "beyond latest");
    }

    #[test]
    fn a_hard_delete_leaves_tombstones_in_the_cache() {
        let t = topic();
        for s in 1..=3 {
            t.apply(msg(s));
        }
        t.tombstone(2, 2);
        let m = t.cached(1, 3).expect("cached");
        assert!(!m[0].is_tombstone());
        assert!(m[1].is_tombstone() && m[1].content.is_empty());
        assert_eq!(m[1].seq, 2);
    }
}
