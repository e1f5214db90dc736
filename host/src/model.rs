//! The stored message model shared by the store and the gateway: a message and its head.

use kefu_core::id::MsgId;

/// Message metadata: business/MIME type and the seq replied to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// Business/MIME type; empty means plain UTF-8 text.
    pub mime: String,
    /// The seq this message replies to, if any.
    pub reply_to: Option<u64>,
}

/// The MIME type of a tombstone: a message deleted for everyone still occupies its seq.
pub const TOMBSTONE_MIME: &str = "kefu/deleted";

/// A stored message, shared (behind an `Arc`) between every session it is pushed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Seq in its topic, from 1, no gaps.
    pub seq: u64,
    /// The sender's message id.
    pub msg_id: MsgId,
    /// The sender's user id.
    pub from: String,
    /// When the gateway stored it, ms since the Unix epoch.
    pub ts: u64,
    /// Metadata; `mime` is [`TOMBSTONE_MIME`] for a deleted message.
    pub head: Head,
    /// Content bytes (empty for a tombstone).
    pub content: Vec<u8>,
}

impl Message {
    /// Whether this is the tombstone of a deleted message.
    pub fn is_tombstone(&self) -> bool {
        self.head.mime == TOMBSTONE_MIME
    }
}
