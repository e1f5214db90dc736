//! The gateway's owned message set: what a session asks ([`Req`]) and what it is sent ([`Out`]),
//! independent of the encoding it travels in (binary frames or the Tinode JSON dialect).
//!
//! The binary codec maps `kefu_core::proto` packets one to one onto these types; the JSON codec
//! maps Tinode's packets onto them. Session logic only ever sees these.

use std::sync::Arc;

use kefu_core::digest::Digest;
use kefu_core::id::MsgId;

pub use crate::model::{Head, Message, TOMBSTONE_MIME};
pub use kefu_core::proto::{AgentStatus, AuthScheme, Code, GetWhat, NoteWhat, PresWhat, ReqId};

/// What `set` changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetWhat {
    /// The topic's title.
    Title(String),
    /// A user's access mode (Tinode-style letters, e.g. `JRWPS`).
    Mode {
        /// The user whose mode changes.
        user: String,
        /// The new mode.
        mode: String,
    },
}

/// What `del` deletes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DelWhat {
    /// Messages `first..=last`; `hard` for everyone (tombstones), else hidden for the caller.
    Msg {
        /// First seq.
        first: u64,
        /// Last seq, inclusive.
        last: u64,
        /// For everyone.
        hard: bool,
    },
    /// A user's subscription (owner or supervisor only).
    Sub {
        /// The user removed.
        user: String,
    },
    /// The topic: `hard` for everyone, else only the caller's subscription.
    Topic {
        /// For everyone.
        hard: bool,
    },
}

/// A customer-service command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActionWhat {
    /// A customer opens a consultation at a desk (empty = the default desk).
    Open {
        /// Desk name.
        desk: String,
    },
    /// An agent sets their status.
    Status(AgentStatus),
    /// An agent takes the longest-waiting customer.
    TakeNext,
    /// Hand consultation `topic` to agent `to`.
    Transfer {
        /// The consultation topic.
        topic: String,
        /// The user id of the agent taking over.
        to: String,
    },
    /// Close consultation `topic`.
    Close {
        /// The consultation topic.
        topic: String,
    },
    /// A supervisor joins consultation `topic`.
    Join {
        /// The consultation topic.
        topic: String,
    },
}

/// A request from a client, owned, whatever encoding it came in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Req {
    /// Handshake: version and client description.
    Hi {
        /// Request id.
        id: ReqId,
        /// Protocol version (the binary protocol's; the JSON codec maps Tinode's "0.22" to 1).
        ver: u16,
        /// Stable device identifier.
        device: String,
        /// Platform, e.g. `linux`, `kiosk`, `web`.
        platform: String,
        /// Preferred language tag.
        lang: String,
        /// Client software name and version.
        ua: String,
    },
    /// Create an account.
    Acc {
        /// Request id.
        id: ReqId,
        /// Only `Basic` creates accounts.
        scheme: AuthScheme,
        /// `login:password` for `Basic`.
        secret: Vec<u8>,
        /// Display name.
        name: String,
        /// Log this session in as the new account.
        login: bool,
    },
    /// Log in.
    Login {
        /// Request id.
        id: ReqId,
        /// Password or token.
        scheme: AuthScheme,
        /// `login:password` for `Basic`, the token bytes for `Token`.
        secret: Vec<u8>,
    },
    /// Attach to a topic (subscribing first if needed).
    Sub {
        /// Request id.
        id: ReqId,
        /// Topic name as the client sees it.
        topic: String,
        /// `Some(mark)`: the client holds everything up to `mark`; push what follows.
        /// `None`: push only what arrives from now on.
        since: Option<u64>,
        /// Queries to answer right after the `sub` (Tinode's `sub.get`), each answered like a
        /// `get` with the same request id. Always empty from binary clients.
        get: Vec<GetWhat>,
    },
    /// Detach from a topic, optionally unsubscribing.
    Leave {
        /// Request id.
        id: ReqId,
        /// Topic name.
        topic: String,
        /// Also delete the subscription.
        unsub: bool,
    },
    /// Publish a message.
    Pub {
        /// Request id.
        id: ReqId,
        /// Topic name.
        topic: String,
        /// The sender's message id (the JSON codec takes it from `head`, or makes one).
        msg_id: MsgId,
        /// Metadata.
        head: Head,
        /// Content bytes.
        content: Vec<u8>,
        /// Do not push the message back to the publishing session (Tinode's `noecho`).
        noecho: bool,
    },
    /// Query metadata, history or a digest.
    Get {
        /// Request id.
        id: ReqId,
        /// Topic name.
        topic: String,
        /// What to get.
        what: GetWhat,
    },
    /// Change metadata.
    Set {
        /// Request id.
        id: ReqId,
        /// Topic name.
        topic: String,
        /// What to change.
        what: SetWhat,
    },
    /// Delete messages, a subscription or a topic.
    Del {
        /// Request id.
        id: ReqId,
        /// Topic name.
        topic: String,
        /// What to delete.
        what: DelWhat,
    },
    /// A receipt or typing notice for the other subscribers; no answer.
    Note {
        /// Topic name.
        topic: String,
        /// Kind of note.
        what: NoteWhat,
        /// The seq it refers to (0 for typing).
        seq: u64,
    },
    /// A customer-service command.
    Action {
        /// Request id.
        id: ReqId,
        /// The command.
        what: ActionWhat,
    },
    /// Cumulative receipt of pushed data: the client holds every seq up to `seq`.
    Ack {
        /// Topic name.
        topic: String,
        /// Highest contiguous seq held.
        seq: u64,
    },
}

/// Matches the request kinds that carry a request id, binding it to `$id` for `$then`.
macro_rules! with_id {
    ($req:expr, $id:ident => $then:expr) => {
        match $req {
            Req::Hi { id: $id, .. }
            | Req::Acc { id: $id, .. }
            | Req::Login { id: $id, .. }
            | Req::Sub { id: $id, .. }
            | Req::Leave { id: $id, .. }
            | Req::Pub { id: $id, .. }
            | Req::Get { id: $id, .. }
            | Req::Set { id: $id, .. }
            | Req::Del { id: $id, .. }
            | Req::Action { id: $id, .. } => Some($then),
            Req::Note { .. } | Req::Ack { .. } => None,
        }
    };
}

impl Req {
    /// The request id, for packets that have one.
    pub fn id(&self) -> Option<ReqId> {
        with_id!(self, id => *id)
    }

    /// The request id, to change, for packets that have one.
    pub fn id_mut(&mut self) -> Option<&mut ReqId> {
        with_id!(self, id => id)
    }

    /// The topic the request names; empty for requests that name none.
    pub fn topic(&self) -> &str {
        match self {
            Req::Sub { topic, .. }
            | Req::Leave { topic, .. }
            | Req::Pub { topic, .. }
            | Req::Get { topic, .. }
            | Req::Set { topic, .. }
            | Req::Del { topic, .. }
            | Req::Note { topic, .. }
            | Req::Ack { topic, .. } => topic,
            Req::Hi { .. } | Req::Acc { .. } | Req::Login { .. } | Req::Action { .. } => "",
        }
    }

    /// The packet's name on the wire, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Req::Hi { .. } => "hi",
            Req::Acc { .. } => "acc",
            Req::Login { .. } => "login",
            Req::Sub { .. } => "sub",
            Req::Leave { .. } => "leave",
            Req::Pub { .. } => "pub",
            Req::Get { .. } => "get",
            Req::Set { .. } => "set",
            Req::Del { .. } => "del",
            Req::Note { .. } => "note",
            Req::Action { .. } => "action",
            Req::Ack { .. } => "ack",
        }
    }
}

/// Extra results carried by a `ctrl`, depending on the request it answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Params {
    /// Nothing more to say.
    None,
    /// Answer to `hi`.
    Hi {
        /// Protocol version the gateway speaks.
        ver: u16,
        /// The gateway's wall clock, ms since the Unix epoch.
        server_ms: u64,
        /// Largest `pub` content accepted, bytes.
        max_content: u32,
        /// This session's id (Tinode's `sid`).
        session: String,
    },
    /// Answer to `login` / `acc`.
    Login {
        /// The session's user id.
        user: String,
        /// A token for later logins (empty if none).
        token: Vec<u8>,
        /// Token expiry, ms since the Unix epoch (0 = never).
        expires_ms: u64,
    },
    /// Answer to `pub`: stored durably at `seq`.
    Pub {
        /// The message's seq.
        seq: u64,
        /// The gateway's timestamp of the message, ms since the Unix epoch.
        ts: u64,
        /// Stored before: original seq, no new fan-out.
        dup: bool,
    },
    /// Answer to `sub`.
    Sub {
        /// The topic's latest seq.
        latest: u64,
        /// The subscriber's read mark.
        read: u64,
        /// The subscriber's recv mark.
        recv: u64,
        /// Pushes resume at `acked + 1`.
        acked: u64,
    },
    /// Answer to `get` data / subs: items sent before this `ctrl`. `what` names the query
    /// (`"data"`, `"sub"`, `"desc"`) for dialects that say it.
    Count {
        /// Number of items.
        count: u32,
        /// Which query: `"data"`, `"sub"` or `"desc"`.
        what: &'static str,
    },
    /// Answer to `get` digest.
    Digest(Digest),
    /// Answer to an `action` naming a consultation.
    Topic {
        /// The consultation topic.
        name: String,
        /// The other party (assigned agent, or the customer taken).
        peer: String,
    },
    /// With 429 / 503: when to try again.
    RetryAfter {
        /// Milliseconds to wait.
        ms: u32,
    },
}

/// A topic description (answer to `get` desc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicDesc {
    /// Title.
    pub title: String,
    /// Latest seq.
    pub seq: u64,
    /// The caller's read mark.
    pub read: u64,
    /// The caller's recv mark.
    pub recv: u64,
    /// The caller's unread count.
    pub unread: u64,
}

/// One subscription (answer to `get` subs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubInfo {
    /// On `me`: the topic name as the caller sees it; elsewhere: the subscriber's user id.
    pub name: String,
    /// Title of the topic (on `me`) or display name of the user.
    pub title: String,
    /// Latest seq of the topic.
    pub seq: u64,
    /// Read mark.
    pub read: u64,
    /// Recv mark.
    pub recv: u64,
    /// Unread count.
    pub unread: u64,
    /// Whether the peer / topic is online.
    pub online: bool,
}

/// One item of a `meta` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaItem {
    /// Topic description.
    Desc(TopicDesc),
    /// One subscription.
    Sub(SubInfo),
}

/// Something sent to a session, owned, before it is encoded for the session's dialect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Out {
    /// A coded answer to request `id` (0 = unsolicited).
    Ctrl {
        /// The request answered, 0 for none.
        id: ReqId,
        /// Result code.
        code: Code,
        /// Human-readable text (the code's standard text when there is nothing better).
        text: String,
        /// The topic the request addressed, as the client named it; empty if none.
        topic: String,
        /// Extra results.
        params: Params,
    },
    /// A stored message, pushed or pulled. `topic` is the name the receiver knows the topic by
    /// (one-to-one topics are named after the peer).
    Data {
        /// Topic name as the receiver sees it.
        topic: String,
        /// The message, shared.
        msg: Arc<Message>,
    },
    /// A metadata item answering `get` (or `sub` with queries) `id`.
    Meta {
        /// The request answered.
        id: ReqId,
        /// Topic name.
        topic: String,
        /// The item.
        item: MetaItem,
    },
    /// Presence: something changed somewhere the receiver cares about.
    Pres {
        /// Where the notice is delivered (`me` or the affected topic).
        topic: String,
        /// What it is about (a user id or topic name).
        src: String,
        /// What happened.
        what: PresWhat,
    },
    /// Another subscriber's receipt or typing notice.
    Info {
        /// Topic name as the receiver sees it.
        topic: String,
        /// The user who sent the note.
        from: String,
        /// Kind.
        what: NoteWhat,
        /// Seq referred to (0 for typing).
        seq: u64,
    },
}

impl Out {
    /// A `ctrl` with the code's standard text and no parameters.
    pub fn ctrl(id: ReqId, code: Code, topic: impl Into<String>) -> Out {
        Out::Ctrl {
            id,
            code,
            text: code.text().to_owned(),
            topic: topic.into(),
            params: Params::None,
        }
    }

    /// A `ctrl` with the code's standard text and the given parameters.
    pub fn ctrl_with(id: ReqId, code: Code, topic: impl Into<String>, params: Params) -> Out {
        Out::Ctrl {
            id,
            code,
            text: code.text().to_owned(),
            topic: topic.into(),
            params,
        }
    }

    /// The packet's name on the wire, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Out::Ctrl { .. } => "ctrl",
            Out::Data { .. } => "data",
            Out::Meta { .. } => "meta",
            Out::Pres { .. } => "pres",
            Out::Info { .. } => "info",
        }
    }
}
