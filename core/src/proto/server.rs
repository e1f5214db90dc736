//! Server packets: what the gateway sends to a client.
//!
//! `ctrl` answers a request; `data` carries a stored message (pushed, or pulled by `get`);
//! `meta` describes topics and subscriptions; `pres` tells about changes elsewhere; `info`
//! relays another subscriber's `note`. Text and byte fields borrow from the decoded frame.

use serde::{Deserialize, Serialize};

use super::client::{AgentStatus, Head, NoteWhat, ReqId};
use super::code::Code;
use crate::digest::Digest;
use crate::id::MsgId;

/// Typed parameters of a `ctrl`, depending on the request it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CtrlParams<'a> {
    /// Nothing more to say.
    None,
    /// Answer to `hi`.
    Hi {
        /// Protocol version the gateway speaks.
        ver: u16,
        /// The gateway's wall clock, milliseconds since the Unix epoch.
        server_ms: u64,
        /// Largest `pub` content the gateway accepts, in bytes.
        max_content: u32,
    },
    /// Answer to `login` / `acc`.
    Login {
        /// The user id of the session.
        user: &'a str,
        /// A token for later logins (empty if none was issued).
        #[cfg_attr(not(feature = "small"), serde(serialize_with = "super::bytes"))]
        token: &'a [u8],
        /// Token expiry, milliseconds since the Unix epoch (0 = none).
        expires_ms: u64,
    },
    /// Answer to `pub`: the message is durably stored at `seq`.
    Pub {
        /// The seq the gateway gave the message.
        seq: u64,
        /// The gateway's timestamp of the message, ms since the Unix epoch.
        ts: u64,
        /// The (topic, message id) was stored before: this is its original seq, and nothing was
        /// fanned out again.
        dup: bool,
    },
    /// Answer to `sub`: where the topic and the subscriber's marks stand.
    Sub {
        /// The topic's latest seq.
        latest: u64,
        /// The subscriber's read mark.
        read: u64,
        /// The subscriber's delivered ("recv") mark.
        recv: u64,
        /// The mark push delivery resumes from (pushes start at `acked + 1`).
        acked: u64,
    },
    /// Answer to `get` data / subs: how many items were sent before this `ctrl`.
    Count {
        /// Number of items.
        count: u32,
    },
    /// Answer to `get` digest.
    Digest(Digest),
    /// Answer to an `action` that names a topic (a consultation opened, taken or transferred).
    Topic {
        /// The topic name.
        name: &'a str,
        /// The other party (the assigned agent, or the customer taken).
        peer: &'a str,
    },
    /// Answer with 429 / 503: when to try again.
    RetryAfter {
        /// Milliseconds to wait.
        ms: u32,
    },
}

/// A coded answer to the request with the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ctrl<'a> {
    /// The request id answered (0 for unsolicited notices, e.g. shutdown).
    pub id: ReqId,
    /// Result code.
    pub code: Code,
    /// Human-readable explanation.
    #[cfg_attr(
        not(feature = "small"),
        serde(borrow, deserialize_with = "super::text")
    )]
    pub text: &'a str,
    /// The topic the request addressed (empty if none).
    #[cfg_attr(
        not(feature = "small"),
        serde(borrow, deserialize_with = "super::text")
    )]
    pub topic: &'a str,
    /// Typed parameters.
    #[serde(borrow)]
    pub params: CtrlParams<'a>,
}

/// A stored message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Data<'a> {
    /// Topic name.
    #[cfg_attr(
        not(feature = "small"),
        serde(borrow, deserialize_with = "super::text")
    )]
    pub topic: &'a str,
    /// Seq in the topic (from 1, no gaps).
    pub seq: u64,
    /// The sender's message id.
    pub msg_id: MsgId,
    /// The sender's user id.
    #[cfg_attr(
        not(feature = "small"),
        serde(borrow, deserialize_with = "super::text")
    )]
    pub from: &'a str,
    /// When the gateway stored it, ms since the Unix epoch.
    pub ts: u64,
    /// Headers.
    #[serde(borrow)]
    pub head: Head<'a>,
    /// Content bytes.
    #[cfg_attr(not(feature = "small"), serde(serialize_with = "super::bytes"))]
    pub content: &'a [u8],
}

/// A topic's description and the receiver's marks in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicDesc<'a> {
    /// Title shown to users.
    pub title: &'a str,
    /// Latest seq.
    pub seq: u64,
    /// The receiver's read mark.
    pub read: u64,
    /// The receiver's delivered mark.
    pub recv: u64,
    /// Unread messages: seq − read, not counting the receiver's own.
    pub unread: u64,
}

/// One subscription: on `me`, one of the user's topics; elsewhere, one subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubInfo<'a> {
    /// The topic (on `me`) or the subscriber's user id (elsewhere).
    pub name: &'a str,
    /// Display title (topic title or user name).
    pub title: &'a str,
    /// Latest seq of the topic.
    pub seq: u64,
    /// Read mark.
    pub read: u64,
    /// Delivered mark.
    pub recv: u64,
    /// Unread count.
    pub unread: u64,
    /// Whether the peer / subscriber is online.
    pub online: bool,
}

/// One item of a `meta` answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaItem<'a> {
    /// The topic's description.
    #[serde(borrow)]
    Desc(TopicDesc<'a>),
    /// A subscription.
    #[serde(borrow)]
    Sub(SubInfo<'a>),
}

/// Topic metadata, one item per packet; the `ctrl` with the same id ends the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta<'a> {
    /// The `get` this answers.
    pub id: ReqId,
    /// Topic name.
    pub topic: &'a str,
    /// The item.
    #[serde(borrow)]
    pub item: MetaItem<'a>,
}

/// What changed, in a `pres`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PresWhat {
    /// The source came online.
    On,
    /// The source went offline.
    Off,
    /// A new message at `seq` in the source topic (sent on `me` for topics not attached).
    Msg {
        /// The new latest seq.
        seq: u64,
    },
    /// The source's description changed.
    Upd,
    /// The source topic was deleted or the subscription ended.
    Gone,
    /// An agent's status changed.
    Status(AgentStatus),
    /// A consultation was assigned to the receiver (source = the consultation topic).
    Assigned,
}

/// Presence: something changed somewhere the receiver cares about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pres<'a> {
    /// Topic the notice is delivered on (`me` or the affected topic).
    pub topic: &'a str,
    /// What the notice is about (a user id or topic name).
    pub src: &'a str,
    /// What happened.
    pub what: PresWhat,
}

/// Another subscriber's receipt or typing notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// The subscriber who sent the note.
    pub from: &'a str,
    /// Kind of note.
    pub what: NoteWhat,
    /// The seq it refers to (0 for typing).
    pub seq: u64,
}

/// Every packet the gateway may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerPacket<'a> {
    /// See [`Ctrl`].
    #[serde(borrow)]
    Ctrl(Ctrl<'a>),
    /// See [`Data`].
    #[serde(borrow)]
    Data(Data<'a>),
    /// See [`Meta`].
    #[serde(borrow)]
    Meta(Meta<'a>),
    /// See [`Pres`].
    #[serde(borrow)]
    Pres(Pres<'a>),
    /// See [`Info`].
    #[serde(borrow)]
    Info(Info<'a>),
}

impl<'a> ServerPacket<'a> {
    /// The packet's name on the wire (`"ctrl"`, `"data"`, ...), for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            ServerPacket::Ctrl(_) => "ctrl",
            ServerPacket::Data(_) => "data",
            ServerPacket::Meta(_) => "meta",
            ServerPacket::Pres(_) => "pres",
            ServerPacket::Info(_) => "info",
        }
    }

    /// A `ctrl` with the code's standard text and no parameters.
    pub fn ctrl(id: ReqId, code: Code, topic: &'a str) -> Self {
        ServerPacket::Ctrl(Ctrl {
            id,
            code,
            text: code.text(),
            topic,
            params: CtrlParams::None,
        })
    }
}
