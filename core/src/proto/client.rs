//! Client packets: what a client (agent app, customer app, kiosk) sends to the gateway.
//!
//! Every request that expects an answer carries a request id (`id`); the gateway answers it with
//! a `ctrl` packet carrying the same id. `note` and `ack` are fire-and-forget. Text and byte
//! fields borrow from the decoded frame: decoding copies nothing.

use serde::{Deserialize, Serialize};

use crate::id::MsgId;

/// Correlates a request with the `ctrl` that answers it. Chosen by the client, unique among its
/// requests in flight on one connection.
pub type ReqId = u32;

/// Opens a session: protocol version and who the client is. Must be the first packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hi<'a> {
    /// Request id.
    pub id: ReqId,
    /// Protocol version the client speaks ([`super::PROTOCOL_VERSION`]).
    pub ver: u16,
    /// Stable device identifier (for per-device push marks).
    pub device: &'a str,
    /// Platform, e.g. `"linux"`, `"kiosk"`, `"web"`.
    pub platform: &'a str,
    /// Preferred language tag, e.g. `"zh-CN"`.
    pub lang: &'a str,
    /// Client software name and version.
    pub ua: &'a str,
}

/// How a client proves who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum AuthScheme {
    /// `secret` is `user:password` in UTF-8.
    Basic,
    /// `secret` is a token issued by the gateway (login reply or `kefu device add`).
    Token,
}

/// Creates an account (where the gateway allows online sign-up).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acc<'a> {
    /// Request id.
    pub id: ReqId,
    /// Authentication scheme of `secret` (only [`AuthScheme::Basic`] creates accounts).
    pub scheme: AuthScheme,
    /// The new credentials.
    #[cfg_attr(not(feature = "small"), serde(serialize_with = "super::bytes"))]
    pub secret: &'a [u8],
    /// Display name.
    pub name: &'a str,
    /// Log the session in as the new account at once.
    pub login: bool,
}

/// Authenticates the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login<'a> {
    /// Request id.
    pub id: ReqId,
    /// Authentication scheme of `secret`.
    pub scheme: AuthScheme,
    /// Credentials, as the scheme says.
    #[cfg_attr(not(feature = "small"), serde(serialize_with = "super::bytes"))]
    pub secret: &'a [u8],
}

/// Subscribes to a topic and starts push delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sub<'a> {
    /// Request id.
    pub id: ReqId,
    /// Topic name (`me`, `usrXXXX` for one-to-one, `grpXXXX`, `cnsXXXX` consultations).
    pub topic: &'a str,
    /// `Some(mark)`: the client holds every message up to `mark`; push everything after it
    /// (resume). `None`: push only what arrives from now on (page history with `get`).
    pub since: Option<u64>,
}

/// Stops push delivery of a topic, and optionally unsubscribes for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leave<'a> {
    /// Request id.
    pub id: ReqId,
    /// Topic name.
    pub topic: &'a str,
    /// Also delete the subscription (not only detach this session).
    pub unsub: bool,
}

/// Message headers: how to show the content.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head<'a> {
    /// Business type / MIME type of the content; empty means plain UTF-8 text.
    #[cfg_attr(
        not(feature = "small"),
        serde(borrow, deserialize_with = "super::text")
    )]
    pub mime: &'a str,
    /// Seq of the message this one replies to, if any.
    pub reply_to: Option<u64>,
}

/// Publishes a message to a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pub<'a> {
    /// Request id; the same on every retry of this message within a session.
    pub id: ReqId,
    /// Topic name.
    #[cfg_attr(
        not(feature = "small"),
        serde(borrow, deserialize_with = "super::text")
    )]
    pub topic: &'a str,
    /// Message id made by the sender; the same on every retry, reconnect and resend.
    pub msg_id: MsgId,
    /// Headers.
    pub head: Head<'a>,
    /// Content bytes (UTF-8 text unless `head.mime` says otherwise).
    #[cfg_attr(not(feature = "small"), serde(serialize_with = "super::bytes"))]
    pub content: &'a [u8],
}

/// What a `get` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum GetWhat {
    /// Topic description and the caller's marks (`meta` with a desc item).
    Desc,
    /// Subscriptions (`meta` sub items); on `me`, the user's topics with unread counts.
    Subs,
    /// Stored messages with `since <= seq < before` (`before` 0 = no upper bound), newest
    /// first when `limit` cuts the range, sent as `data` packets, then a `ctrl` with the count.
    Data {
        /// Lowest seq wanted (inclusive).
        since: u64,
        /// Seq bound (exclusive); 0 = none.
        before: u64,
        /// Most messages to return.
        limit: u32,
    },
    /// The reconciliation digest of the last `last` messages of the topic.
    Digest {
        /// How many of the newest messages the digest covers.
        last: u32,
    },
}

/// Queries a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Get<'a> {
    /// Request id.
    pub id: ReqId,
    /// Topic name.
    pub topic: &'a str,
    /// What to fetch.
    pub what: GetWhat,
}

/// What a `set` changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetWhat<'a> {
    /// The topic's title.
    Title(&'a str),
    /// A subscriber's access mode (Tinode-style letters, e.g. `"JRWPS"`).
    Mode {
        /// The subscriber's user id.
        user: &'a str,
        /// The new mode.
        mode: &'a str,
    },
}

/// Updates a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Set<'a> {
    /// Request id.
    pub id: ReqId,
    /// Topic name.
    pub topic: &'a str,
    /// What to change.
    #[serde(borrow)]
    pub what: SetWhat<'a>,
}

/// What a `del` removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DelWhat<'a> {
    /// Messages with `first <= seq <= last`. Seqs are never reused.
    Msg {
        /// First seq.
        first: u64,
        /// Last seq (inclusive).
        last: u64,
        /// Delete for everyone (true) or hide for the caller only (false).
        hard: bool,
    },
    /// A subscriber (owner or supervisor only).
    Sub {
        /// The subscriber's user id.
        user: &'a str,
    },
    /// The whole topic.
    Topic {
        /// Delete for everyone (true) or only the caller's subscription (false).
        hard: bool,
    },
}

/// Deletes messages, subscriptions or topics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Del<'a> {
    /// Request id.
    pub id: ReqId,
    /// Topic name.
    pub topic: &'a str,
    /// What to delete.
    #[serde(borrow)]
    pub what: DelWhat<'a>,
}

/// What a `note` (or the `info` that relays it) says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum NoteWhat {
    /// The client received messages up to `seq` (delivery receipt).
    Recv,
    /// The user read messages up to `seq` (read receipt; moves the read mark).
    Read,
    /// The user is typing ("key press"); `seq` is 0.
    Kp,
}

/// Tells the other subscribers of a topic about receipts and typing. No reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Kind of note.
    pub what: NoteWhat,
    /// The seq it refers to (0 for typing).
    pub seq: u64,
}

/// An agent's availability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum AgentStatus {
    /// Takes new consultations.
    Online,
    /// Keeps current consultations, takes no new ones.
    Busy,
    /// Away from the desk: takes nothing new.
    Away,
    /// Logged out of the service queue.
    Offline,
}

/// A customer-service command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionWhat<'a> {
    /// A customer opens a consultation at a service desk (queue); the gateway assigns an agent
    /// and answers with the consultation topic.
    Open {
        /// Desk / queue name (empty = the default desk).
        desk: &'a str,
    },
    /// An agent sets their status.
    Status(AgentStatus),
    /// An agent takes the longest-waiting customer of their desk.
    TakeNext,
    /// An agent hands a consultation to another agent.
    Transfer {
        /// The consultation topic.
        topic: &'a str,
        /// The receiving agent's user id.
        to: &'a str,
    },
    /// An agent or the customer closes a consultation.
    Close {
        /// The consultation topic.
        topic: &'a str,
    },
    /// A supervisor joins a consultation.
    Join {
        /// The consultation topic.
        topic: &'a str,
    },
}

/// Runs a customer-service command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action<'a> {
    /// Request id.
    pub id: ReqId,
    /// The command.
    #[serde(borrow)]
    pub what: ActionWhat<'a>,
}

/// Hop-by-hop, cumulative receipt of pushed `data`: the client holds every message of `topic`
/// up to `seq`. No reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Highest contiguous seq held.
    pub seq: u64,
}

/// Every packet a client may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientPacket<'a> {
    /// See [`Hi`].
    #[serde(borrow)]
    Hi(Hi<'a>),
    /// See [`Acc`].
    #[serde(borrow)]
    Acc(Acc<'a>),
    /// See [`Login`].
    #[serde(borrow)]
    Login(Login<'a>),
    /// See [`Sub`].
    #[serde(borrow)]
    Sub(Sub<'a>),
    /// See [`Leave`].
    #[serde(borrow)]
    Leave(Leave<'a>),
    /// See [`Pub`].
    #[serde(borrow)]
    Pub(Pub<'a>),
    /// See [`Get`].
    #[serde(borrow)]
    Get(Get<'a>),
    /// See [`Set`].
    #[serde(borrow)]
    Set(Set<'a>),
    /// See [`Del`].
    #[serde(borrow)]
    Del(Del<'a>),
    /// See [`Note`].
    #[serde(borrow)]
    Note(Note<'a>),
    /// See [`Action`].
    #[serde(borrow)]
    Action(Action<'a>),
    /// See [`Ack`].
    #[serde(borrow)]
    Ack(Ack<'a>),
}

impl ClientPacket<'_> {
    /// The request id, for packets that get a `ctrl` answer (`note` and `ack` get none).
    pub fn req_id(&self) -> Option<ReqId> {
        match self {
            ClientPacket::Hi(p) => Some(p.id),
            ClientPacket::Acc(p) => Some(p.id),
            ClientPacket::Login(p) => Some(p.id),
            ClientPacket::Sub(p) => Some(p.id),
            ClientPacket::Leave(p) => Some(p.id),
            ClientPacket::Pub(p) => Some(p.id),
            ClientPacket::Get(p) => Some(p.id),
            ClientPacket::Set(p) => Some(p.id),
            ClientPacket::Del(p) => Some(p.id),
            ClientPacket::Action(p) => Some(p.id),
            ClientPacket::Note(_) | ClientPacket::Ack(_) => None,
        }
    }

    /// The packet's name on the wire (`"hi"`, `"pub"`, ...), for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            ClientPacket::Hi(_) => "hi",
            ClientPacket::Acc(_) => "acc",
            ClientPacket::Login(_) => "login",
            ClientPacket::Sub(_) => "sub",
            ClientPacket::Leave(_) => "leave",
            ClientPacket::Pub(_) => "pub",
            ClientPacket::Get(_) => "get",
            ClientPacket::Set(_) => "set",
            ClientPacket::Del(_) => "del",
            ClientPacket::Note(_) => "note",
            ClientPacket::Action(_) => "action",
            ClientPacket::Ack(_) => "ack",
        }
    }

    /// The topic the packet addresses, if any.
    pub fn topic(&self) -> Option<&str> {
        match self {
            ClientPacket::Sub(p) => Some(p.topic),
            ClientPacket::Leave(p) => Some(p.topic),
            ClientPacket::Pub(p) => Some(p.topic),
            ClientPacket::Get(p) => Some(p.topic),
            ClientPacket::Set(p) => Some(p.topic),
            ClientPacket::Del(p) => Some(p.topic),
            ClientPacket::Note(p) => Some(p.topic),
            ClientPacket::Ack(p) => Some(p.topic),
            ClientPacket::Action(p) => match p.what {
                ActionWhat::Transfer { topic, .. }
                | ActionWhat::Close { topic }
                | ActionWhat::Join { topic } => Some(topic),
                _ => None,
            },
            ClientPacket::Hi(_) | ClientPacket::Acc(_) | ClientPacket::Login(_) => None,
        }
    }
}
