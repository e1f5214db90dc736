//! What the engine tells the application ([`Event`]) and its driver ([`Command`]).

use crate::id::MsgId;
use crate::pool::{MessageState, TopicKey};
use crate::proto::{Code, NoteWhat, PresWhat, ReqId};

use super::config::Label;

/// Where the session stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SessionState {
    /// No connection; waiting for the next attempt (or for the link).
    Offline,
    /// The driver is opening a connection.
    Connecting,
    /// Connected; `hi` sent, waiting for its answer.
    Handshake,
    /// `login` sent, waiting for its answer.
    LoggingIn,
    /// Logged in; subscriptions being (re)established. Sending already works.
    Subscribing,
    /// Logged in and every wanted topic subscribed.
    Ready,
    /// Stopped for good by a sticky error (see [`super::EngineError`]).
    Failed,
}

impl SessionState {
    /// Logged in: requests and publishes flow.
    pub const fn is_online(self) -> bool {
        matches!(self, SessionState::Subscribing | SessionState::Ready)
    }
}

/// Something the application should know. Drained with [`super::Engine::poll_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The session state changed.
    State(SessionState),
    /// Logged in: the application may show "connected".
    Connected,
    /// The connection is gone; the engine reconnects by itself unless the session failed.
    Disconnected,
    /// A topic's subscription is established (`latest` = the topic's latest seq).
    Subscribed {
        /// The topic.
        topic: TopicKey,
        /// Its latest seq.
        latest: u64,
    },
    /// A message entered the conversation view: the application's own (at once, before any
    /// network traffic), a pushed one (in seq order, exactly once), or an older one paged in
    /// (`history`).
    MessageAdded {
        /// The topic.
        topic: TopicKey,
        /// The message id.
        id: MsgId,
        /// Its seq, if stored.
        seq: Option<u64>,
        /// Paged in by a history request rather than delivered live.
        history: bool,
    },
    /// An outgoing message changed state: stored (with its seq), failed (with the reason; it
    /// keeps its place), or queued again for a resend. Delivered and read are not sent per
    /// message: one [`Event::Receipt`] covers every own message up to its seq (their states in
    /// the pool have moved with it).
    MessageChanged {
        /// The topic.
        topic: TopicKey,
        /// The message id.
        id: MsgId,
        /// The new state.
        state: MessageState,
        /// Its seq, once stored.
        seq: Option<u64>,
    },
    /// The number of unread messages in a topic changed.
    Unread {
        /// The topic.
        topic: TopicKey,
        /// Unread count (seq − read mark, own messages not counted).
        count: u64,
    },
    /// Another subscriber received or read messages, or is typing.
    Receipt {
        /// The topic.
        topic: TopicKey,
        /// Who.
        from: Label,
        /// Received, read or typing.
        what: NoteWhat,
        /// Up to which seq (0 for typing).
        seq: u64,
    },
    /// Presence: something changed about a user or topic.
    Presence {
        /// The topic the notice came on.
        topic: TopicKey,
        /// The user or topic it is about.
        src: Label,
        /// What happened.
        what: PresWhat,
    },
    /// A request made by the application was answered (or timed out: code 408, or was cut by a
    /// disconnect: code 503).
    Reply {
        /// The request id returned when the request was made.
        req: ReqId,
        /// The result.
        code: Code,
        /// The topic the answer names, if any (an opened or taken consultation is added to the
        /// engine's topics and subscribed).
        topic: Option<TopicKey>,
    },
    /// The gateway's reconciliation digest was compared with the local view.
    Reconciled {
        /// The topic.
        topic: TopicKey,
        /// Whether the last messages match exactly.
        matches: bool,
    },
}

/// Something the engine needs its driver to do. Drained with
/// [`super::Engine::poll_command`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Command {
    /// Open a connection to the gateway, then call `handle_connected` or `handle_connect_failed`.
    Connect,
    /// Close the current connection (dead peer, handshake timeout, fatal error), then call
    /// `handle_disconnected`.
    Close,
}
