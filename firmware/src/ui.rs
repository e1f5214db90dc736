//! The board-facing traits: what a terminal shows ([`Display`]), where the agent's replies come
//! from ([`Input`]) and what survives a power cycle ([`Storage`]).

use core::fmt;

use kefu_core::engine::EngineError;
use kefu_core::id::MsgId;

use crate::terminal::RunError;

/// A message as the terminal shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shown<'a> {
    /// The topic it belongs to.
    pub topic: &'a str,
    /// Its seq in the topic once the gateway stored it; `None` for a reply not yet acknowledged.
    pub seq: Option<u64>,
    /// The message id (stable across retries: a display may replace a line by it).
    pub id: MsgId,
    /// The sender's user id.
    pub from: &'a str,
    /// Sent by this terminal's account (a reply of the agent).
    pub outgoing: bool,
    /// The content bytes (UTF-8 text for plain messages).
    pub content: &'a [u8],
}

/// A status line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status<'a> {
    /// The network link is down: nothing is attempted until it is back.
    LinkDown,
    /// The network link is up (and configured).
    LinkUp,
    /// Opening a connection to the gateway.
    Connecting,
    /// Logged in as `user`.
    Online {
        /// The user id of the terminal's account.
        user: &'a str,
    },
    /// The connection is gone; the app reconnects after the core's backoff delay.
    Offline,
    /// A topic is subscribed; `latest` is its latest seq.
    Subscribed {
        /// The topic.
        topic: &'a str,
        /// Its latest seq.
        latest: u64,
    },
    /// A reply was stored by the gateway with `seq`.
    Sent {
        /// The topic.
        topic: &'a str,
        /// The reply's id.
        id: MsgId,
        /// Its seq.
        seq: u64,
    },
    /// A reply was given up on by the core; it is sent again after the next login.
    SendFailed {
        /// The topic.
        topic: &'a str,
        /// The reply's id.
        id: MsgId,
    },
    /// A reply could not be queued at all (too long, outbox full, unknown topic).
    Refused(EngineError),
    /// Unread messages in a topic.
    Unread {
        /// The topic.
        topic: &'a str,
        /// How many.
        count: u64,
    },
    /// The session stopped (bad token, protocol version refused, bad configuration): the app
    /// starts a fresh session after [`crate::terminal::RETRY_FAILED`]; the terminal likely needs
    /// service.
    Failed(RunError),
}

/// Where the terminal shows things: a screen, a serial console, a test recorder.
pub trait Display {
    /// A message entered the conversation: received (once, in seq order) or the agent's own
    /// reply (first with `seq: None`, again with its seq when stored).
    fn message(&mut self, m: &Shown<'_>);
    /// A status line.
    fn status(&mut self, s: &Status<'_>);
    /// A plain-text log line (not used with the `defmt` feature). Ignored by default.
    fn log(&mut self, _line: fmt::Arguments<'_>) {}
}

/// A reply typed by the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply<'a> {
    /// The topic to send to (one of the configured topics, or another topic name).
    pub topic: &'a str,
    /// The content bytes (at most [`crate::capacity::CONTENT`]).
    pub content: &'a [u8],
}

/// Where the agent's replies come from: a keypad, a touch screen, a test script.
pub trait Input {
    /// Waits for the next reply. Must be cancel-safe: the app polls it together with the
    /// socket and its timers, and drops the future when one of those is ready first; a reply
    /// must not be lost when that happens (e.g. wait on a channel and take the item only when
    /// returning it).
    #[allow(async_fn_in_trait)]
    async fn next(&mut self) -> Reply<'_>;
}

/// The marks of a topic worth keeping across a power cycle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Marks {
    /// Highest seq shown (and so acknowledged); delivery resumes after it.
    pub shown: u64,
    /// The read mark.
    pub read: u64,
}

/// What survives a power cycle: the device token and the marks of each topic.
pub trait Storage {
    /// Copies the stored device token into `buf`; its length, or `None` if none is stored (the
    /// app then uses [`crate::Config::token`]).
    fn load_token(&mut self, buf: &mut [u8]) -> Option<usize>;
    /// The stored marks of a topic, if any.
    fn load_marks(&mut self, topic: &str) -> Option<Marks>;
    /// Keeps the marks of a topic (called after each message shown; an implementation on flash
    /// should batch writes).
    fn save_marks(&mut self, topic: &str, marks: Marks);
}

/// A [`Storage`] that keeps nothing: the token comes from the configuration, and after a power
/// cycle the gateway re-pushes what the terminal did not acknowledge.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoStorage;

impl Storage for NoStorage {
    fn load_token(&mut self, _buf: &mut [u8]) -> Option<usize> {
        None
    }
    fn load_marks(&mut self, _topic: &str) -> Option<Marks> {
        None
    }
    fn save_marks(&mut self, _topic: &str, _marks: Marks) {}
}
