//! Per-topic client state: subscription, receive tracking, acks, gap pulls, marks and unread.

use heapless::String;

use crate::order::{AckCoalescer, RecvTracker, SeqRange};
use crate::proto::{MAX_TOPIC_LEN, ReqId};
use crate::time::Instant;

/// Words of out-of-order receive window per topic: 64 × 4 = 256 seqs above the mark.
pub const RECV_WINDOW_WORDS: usize = 4;

/// A topic name as the engine keeps it.
pub type TopicName = String<MAX_TOPIC_LEN>;

/// Where a topic's subscription stands on the current connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// Not subscribed on this connection (yet).
    Detached,
    /// `sub` sent, waiting for its answer.
    Subscribing {
        /// The request id of the `sub`.
        req: ReqId,
    },
    /// Subscribed: pushes flow, acks are sent.
    Attached,
}

/// Gap pulling: pushes above a hole wait in the pool (not shown) until the hole is filled, by a
/// late push or by this pull; the synced mark never jumps over a hole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pull {
    /// No hole, or not handled yet.
    Idle,
    /// A hole was seen; give reordered pushes until `until` to fill it before pulling.
    Holding {
        /// When to pull if the hole is still there.
        until: Instant,
    },
    /// A `get` for `range` is in flight.
    Pulling {
        /// The request id of the `get`.
        req: ReqId,
        /// The seqs asked for.
        range: SeqRange,
    },
}

/// Everything the engine knows about one topic.
#[derive(Clone, Debug)]
pub struct Topic {
    /// The topic's name.
    pub name: TopicName,
    /// The application wants it subscribed (re-subscribed after every reconnect).
    pub wanted: bool,
    /// Subscription on the current connection.
    pub attach: Attach,
    /// Which seqs are held; the contiguous mark.
    pub recv: RecvTracker<RECV_WINDOW_WORDS>,
    /// Cumulative acks owed to the gateway.
    pub acks: AckCoalescer,
    /// Highest seq whose message (or absence) has been queued for the application.
    pub emitted: u64,
    /// Highest seq the application has taken out of the event queue: acks never go beyond it.
    pub handed: u64,
    /// `MessageAdded` events of this topic still waiting in the event queue.
    pub queued_events: u16,
    /// Latest seq of the topic as far as the engine knows.
    pub latest: u64,
    /// The user's read mark.
    pub read: u64,
    /// Unread count last reported to the application.
    pub unread: u64,
    /// The unread count must be recounted.
    pub unread_dirty: bool,
    /// Counter for virtual seqs of outgoing messages.
    pub local: u32,
    /// Gap pulling state.
    pub pull: Pull,
    /// When the last typing note went out.
    pub last_typing: Option<Instant>,
    /// Seqs of a history page the application asked for: only these may enter as history
    /// (anything else at or below the mark is a re-push of a message already shown).
    pub history: Option<SeqRange>,
    /// No stored message of this topic was ever put into the pool above this seq (inserted
    /// or confirmed there): while it is at most `emitted`, the pool holds nothing stored
    /// above `emitted` and a new virtual position needs no look into the pool.
    pub(super) stored_max: u64,
}

impl Topic {
    /// A topic the engine has not synced anything of.
    pub fn new(name: TopicName) -> Self {
        Topic {
            name,
            wanted: true,
            attach: Attach::Detached,
            recv: RecvTracker::new(0),
            acks: AckCoalescer::new(0),
            emitted: 0,
            handed: 0,
            queued_events: 0,
            latest: 0,
            read: 0,
            unread: 0,
            unread_dirty: false,
            local: 0,
            pull: Pull::Idle,
            last_typing: None,
            history: None,
            stored_max: 0,
        }
    }

    /// A topic resumed from marks the application persisted: everything up to `mark` was
    /// already handed to the application and acknowledged.
    pub fn resumed(name: TopicName, mark: u64, read: u64) -> Self {
        let mut t = Topic::new(name);
        t.recv = RecvTracker::new(mark);
        t.acks = AckCoalescer::new(mark);
        t.emitted = mark;
        t.handed = mark;
        t.latest = mark;
        t.read = read.min(mark);
        t
    }

    /// Next virtual-seq counter for an outgoing message.
    pub fn next_local(&mut self) -> u32 {
        self.local = self.local.wrapping_add(1).max(1);
        self.local
    }

    /// Forgets everything tied to the connection that just ended.
    pub fn on_disconnect(&mut self, now: Instant) {
        self.attach = Attach::Detached;
        self.pull = Pull::Idle;
        self.acks.on_reconnect(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_topic_starts_from_its_marks() {
        let t = Topic::resumed(TopicName::try_from("grp1").unwrap(), 40, 50);
        assert_eq!(
            (t.recv.mark(), t.emitted, t.handed, t.latest),
            (40, 40, 40, 40)
        );
        assert_eq!(t.read, 40, "read never above what is held");
        assert_eq!(t.acks.sent(), 40);
    }

    #[test]
    fn virtual_seq_counters_never_hand_out_zero() {
        let mut t = Topic::new(TopicName::new());
        t.local = u32::MAX;
        assert_eq!(t.next_local(), 1);
        assert_eq!(t.next_local(), 2);
    }
}
