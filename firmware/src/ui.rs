//! The board-facing traits: what a terminal shows ([`Display`]), what the agent enters
//! ([`Input`]) and what survives a power cycle ([`Storage`]).

use core::fmt;

use kefu_core::engine::EngineError;
use kefu_core::id::MsgId;
use kefu_core::proto::AgentStatus;

use crate::marks::MarkTable;
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
    /// Shown by this terminal before a power cycle (its seq is at or below the read mark the
    /// gateway kept, or it is one of the agent's own earlier replies): the screen was blank
    /// after the restart, so it is shown again as context, not as a new message.
    pub replayed: bool,
    /// The content bytes (UTF-8 text for plain messages).
    pub content: &'a [u8],
}

/// One line per message: `cnsX #3 usrY: text`, `cnsX (sending) me: text`, with
/// ` (replayed)` after the sender of a message shown again after a power cycle.
impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.topic)?;
        match self.seq {
            Some(seq) => write!(f, " #{seq} ")?,
            None => f.write_str(" (sending) ")?,
        }
        f.write_str(if self.outgoing { "me" } else { self.from })?;
        if self.replayed {
            f.write_str(" (replayed)")?;
        }
        f.write_str(": ")?;
        match core::str::from_utf8(self.content) {
            Ok(text) => f.write_str(text),
            Err(_) => write!(f, "<{} bytes>", self.content.len()),
        }
    }
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
    /// The desk handed this terminal a consultation; the agent's replies go to it.
    Assigned {
        /// The consultation topic.
        topic: &'a str,
    },
    /// A consultation is over for this terminal (closed, or transferred to another agent).
    Ended {
        /// The consultation topic.
        topic: &'a str,
    },
    /// The terminal told the desk its availability: Online while it has room for another
    /// consultation, Busy when full, Offline when shutting down.
    Agent(AgentStatus),
    /// A reply was stored by the gateway with `seq`.
    Sent {
        /// The topic.
        topic: &'a str,
        /// The reply's id.
        id: MsgId,
        /// Its seq.
        seq: u64,
    },
    /// A reply was given up on by the core (sent again after the next login), or refused by
    /// the gateway (not retried).
    SendFailed {
        /// The topic.
        topic: &'a str,
        /// The reply's id.
        id: MsgId,
    },
    /// What the agent entered could not be done (no conversation to reply to, too long,
    /// outbox full, ...).
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

impl fmt::Display for Status<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::LinkDown => f.write_str("link down"),
            Status::LinkUp => f.write_str("link up"),
            Status::Connecting => f.write_str("connecting"),
            Status::Online { user } => write!(f, "online as {user}"),
            Status::Offline => f.write_str("offline"),
            Status::Subscribed { topic, latest } => {
                write!(f, "subscribed {topic} (latest {latest})")
            }
            Status::Assigned { topic } => write!(f, "assigned {topic}"),
            Status::Ended { topic } => write!(f, "ended {topic}"),
            Status::Agent(s) => write!(f, "agent {}", agent_status(*s)),
            Status::Sent { topic, id, seq } => write!(f, "sent {topic} #{seq} ({id})"),
            Status::SendFailed { topic, id } => write!(f, "send failed {topic} ({id})"),
            Status::Refused(e) => write!(f, "refused: {e}"),
            Status::Unread { topic, count } => write!(f, "unread {topic} {count}"),
            Status::Failed(e) => write!(f, "failed: {e}"),
        }
    }
}

fn agent_status(s: AgentStatus) -> &'static str {
    match s {
        AgentStatus::Online => "online",
        AgentStatus::Busy => "busy",
        AgentStatus::Away => "away",
        AgentStatus::Offline => "offline",
    }
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

/// What the agent entered at the terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry<'a> {
    /// A reply: to `topic`, or (`None`) to the conversation in focus — the consultation last
    /// assigned or last heard from.
    Reply {
        /// The topic (one the terminal follows), or `None` for the conversation in focus.
        topic: Option<&'a str>,
        /// The content bytes (at most [`crate::capacity::CONTENT`]).
        content: &'a [u8],
    },
    /// Close a consultation (`None`: the one in focus): the desk frees the agent for the next
    /// customer.
    Close {
        /// The consultation, or `None` for the one in focus.
        topic: Option<&'a str>,
    },
    /// The terminal is being switched off: save the marks, tell the desk the agent is
    /// offline, close the connection, and return from [`crate::run`].
    Shutdown,
}

impl<'a> Entry<'a> {
    /// Reads a line typed on a keyboard: `/close [TOPIC]`, `/to TOPIC TEXT`, `/halt`
    /// (shutdown); anything else is a reply to the conversation in focus.
    pub fn from_line(line: &'a str) -> Entry<'a> {
        let line = line.trim_end_matches(['\r', '\n']);
        let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim_start();
        match cmd {
            "/close" => Entry::Close {
                topic: (!rest.is_empty()).then_some(rest.trim_end()),
            },
            "/to" => {
                let (topic, text) = rest.split_once(' ').unwrap_or((rest, ""));
                Entry::Reply {
                    topic: Some(topic),
                    content: text.as_bytes(),
                }
            }
            "/halt" if rest.is_empty() => Entry::Shutdown,
            _ => Entry::Reply {
                topic: None,
                content: line.as_bytes(),
            },
        }
    }
}

/// Where the agent's entries come from: a keypad, a touch screen, a serial line, a test.
pub trait Input {
    /// Waits for the next entry. Must be cancel-safe: the app polls it together with the
    /// socket and its timers, and drops the future when one of those is ready first; an entry
    /// must not be lost when that happens (e.g. wait on a channel and take the item only when
    /// returning it).
    #[allow(async_fn_in_trait)]
    async fn next(&mut self) -> Entry<'_>;
}

/// The marks of a topic worth keeping across a power cycle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Marks {
    /// Every seq up to this one was handed to the display (and so acknowledged): delivery
    /// resumes after it.
    pub shown: u64,
    /// The read mark.
    pub read: u64,
}

/// What survives a power cycle: the device token, and the topics the terminal follows (its
/// desk topics and the consultations it serves) with their marks.
///
/// The app saves the whole [`MarkTable`] at once and in batches (see
/// [`crate::Config::save_batch`]): an implementation on flash writes one record per call.
pub trait Storage {
    /// Copies the stored device token into `buf`; its length, or `None` if none is stored (the
    /// app then uses [`crate::Config::token`]).
    fn load_token(&mut self, buf: &mut [u8]) -> Option<usize>;
    /// Fills `table` with what was saved last (left empty if nothing was). Called once per
    /// boot, when the first session starts.
    fn load_marks(&mut self, table: &mut MarkTable);
    /// Keeps `table`, replacing what was saved before.
    fn save_marks(&mut self, table: &MarkTable);
}

/// A [`Storage`] that keeps nothing: the token comes from the configuration, and after a power
/// cycle the terminal subscribes its desk topics afresh (the gateway pushes them again from
/// the start, shown as replayed) and no longer knows the consultations it was serving.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoStorage;

impl Storage for NoStorage {
    fn load_token(&mut self, _buf: &mut [u8]) -> Option<usize> {
        None
    }
    fn load_marks(&mut self, _table: &mut MarkTable) {}
    fn save_marks(&mut self, _table: &MarkTable) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typed_line_is_a_reply_to_the_conversation_in_focus() {
        assert_eq!(
            Entry::from_line("hello there\r\n"),
            Entry::Reply {
                topic: None,
                content: b"hello there"
            }
        );
    }

    #[test]
    fn slash_commands_close_address_a_topic_and_halt() {
        assert_eq!(Entry::from_line("/close"), Entry::Close { topic: None });
        assert_eq!(
            Entry::from_line("/close cnsabc"),
            Entry::Close {
                topic: Some("cnsabc")
            }
        );
        assert_eq!(
            Entry::from_line("/to grpdesk good morning"),
            Entry::Reply {
                topic: Some("grpdesk"),
                content: b"good morning"
            }
        );
        assert_eq!(Entry::from_line("/halt"), Entry::Shutdown);
        // Not a command: sent as typed.
        assert_eq!(
            Entry::from_line("/halting problem"),
            Entry::Reply {
                topic: None,
                content: b"/halting problem"
            }
        );
    }

    #[test]
    fn messages_print_as_one_line() {
        let mut rng = kefu_core::rng::SplitMix64::new(1);
        let m = Shown {
            topic: "cnsa",
            seq: Some(3),
            id: MsgId::generate(1, &mut rng),
            from: "usrb",
            outgoing: false,
            replayed: true,
            content: "你好".as_bytes(),
        };
        assert_eq!(m.to_string(), "cnsa #3 usrb (replayed): 你好");
        let mine = Shown {
            seq: None,
            outgoing: true,
            replayed: false,
            content: b"on my way",
            ..m
        };
        assert_eq!(mine.to_string(), "cnsa (sending) me: on my way");
    }
}
