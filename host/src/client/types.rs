//! The values the SDK hands to the application: message snapshots, events, metrics.

use std::borrow::Cow;
use std::time::Duration;

use kefu_core::engine::{MessageView, SessionState};
use kefu_core::id::MsgId;
use kefu_core::pool::{MessageState, OrderKey};
use kefu_core::proto::{Code, PresWhat};

/// What [`super::Client::publish`] returns at once, before any network traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalMessage {
    /// The message id; it never changes across retries, reconnects and resends.
    pub id: MsgId,
    /// Its virtual position in the conversation (after the last message the user saw).
    pub position: OrderKey,
    /// Its state: `Queued`.
    pub state: MessageState,
}

/// Business / MIME type and reply reference of a message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageHead {
    /// Business / MIME type (empty = plain UTF-8 text).
    pub mime: String,
    /// The seq this message replies to.
    pub reply_to: Option<u64>,
}

/// An owned copy of one message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageSnapshot {
    /// The message id.
    pub id: MsgId,
    /// Its topic.
    pub topic: String,
    /// Its position: the seq once stored, virtual before.
    pub position: OrderKey,
    /// Its state.
    pub state: MessageState,
    /// Sent by this user.
    pub outgoing: bool,
    /// The sender's user id.
    pub from: String,
    /// Timestamp, ms since the Unix epoch (the gateway's once stored).
    pub ts: u64,
    /// Business / MIME type (empty = plain text).
    pub mime: String,
    /// The seq this message replies to.
    pub reply_to: Option<u64>,
    /// The content bytes.
    pub content: Vec<u8>,
}

impl MessageSnapshot {
    pub(crate) fn of(topic: &str, v: &MessageView<'_>) -> Self {
        MessageSnapshot {
            id: v.id,
            topic: topic.to_owned(),
            position: v.key,
            state: v.state,
            outgoing: v.outgoing,
            from: v.from.to_owned(),
            ts: v.ts,
            mime: v.mime.to_owned(),
            reply_to: v.reply_to,
            content: v.content.to_vec(),
        }
    }

    /// The seq, once the gateway stored the message.
    pub fn seq(&self) -> Option<u64> {
        self.position.is_stored().then_some(self.position.seq)
    }

    /// The content as text (invalid UTF-8 replaced).
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.content)
    }
}

/// An event of one topic, delivered to its [`super::Subscription`]s.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicEvent {
    /// The subscription is established on the current connection (again after a reconnect).
    Subscribed {
        /// The topic's latest seq.
        latest: u64,
    },
    /// The gateway refused the subscription (no such topic, forbidden).
    Refused {
        /// The gateway's code.
        code: Code,
    },
    /// A message entered the conversation: one's own (at once), a received one (in seq order,
    /// exactly once), or an older one paged in (`history`).
    Added {
        /// The message.
        message: MessageSnapshot,
        /// Paged in by [`super::Client::load_history`].
        history: bool,
    },
    /// One's own message changed state: stored (with its seq), failed (with the reason, in
    /// place), or queued again by a resend.
    Changed {
        /// The message id.
        id: MsgId,
        /// The new state.
        state: MessageState,
        /// Its seq, once stored.
        seq: Option<u64>,
    },
    /// Another subscriber received or read the topic up to `seq` (one's own messages up to it
    /// are now `Delivered` / `Read`).
    Receipt {
        /// Who.
        from: String,
        /// Read (true) or only received.
        read: bool,
        /// Up to which seq.
        seq: u64,
    },
    /// Another subscriber is typing.
    Typing {
        /// Who.
        from: String,
    },
    /// The topic's unread count changed.
    Unread {
        /// Unread messages (seq − read mark, own messages not counted).
        count: u64,
    },
    /// Presence notice delivered on this topic.
    Presence {
        /// The user or topic it is about.
        src: String,
        /// What happened.
        what: PresWhat,
    },
}

/// A client-wide event: connection state, unread totals, presence.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The session state changed (transient faults show here, not as errors).
    State(SessionState),
    /// Logged in (again).
    Connected,
    /// The connection is gone; the client reconnects by itself unless it failed.
    Disconnected,
    /// A topic's unread count changed.
    Unread {
        /// The topic.
        topic: String,
        /// Its unread count.
        count: u64,
        /// Unread messages across all topics.
        total: u64,
    },
    /// Presence: something changed about a user or topic (on `me`: a consultation assigned,
    /// a topic with new messages, an agent status...).
    Presence {
        /// The topic the notice came on.
        topic: String,
        /// The user or topic it is about.
        src: String,
        /// What happened.
        what: PresWhat,
    },
}

/// A snapshot of the client's counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientMetrics {
    /// Own messages the gateway stored.
    pub sent: u64,
    /// Own messages that failed (retries ran out, or refused by the gateway); a resend that
    /// fails again counts again.
    pub failed: u64,
    /// `sent / (sent + failed)`; 1.0 before anything was sent.
    pub send_success_rate: f64,
    /// `pub` transmissions that were retries.
    pub retries: u64,
    /// Messages received (handed to the application).
    pub received: u64,
    /// Received messages per second since the client started.
    pub arrival_rate: f64,
    /// Successful logins after the first one.
    pub reconnects: u64,
    /// Connections lost.
    pub disconnects: u64,
    /// Duplicate pushes dropped.
    pub duplicates: u64,
    /// Messages hidden by the filter.
    pub filtered: u64,
    /// Publish-to-stored round trips measured (the last 1024 are kept).
    pub rtt_samples: usize,
    /// Median publish-to-stored time.
    pub rtt_p50: Option<Duration>,
    /// 99th percentile publish-to-stored time.
    pub rtt_p99: Option<Duration>,
}
