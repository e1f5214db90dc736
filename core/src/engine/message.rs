//! The engine's message payload in the pool, and the borrowed view the application reads.

use heapless::Vec;

use crate::id::MsgId;
use crate::pool::{MessageState, OrderKey, TopicKey};

use super::config::{Label, set_label};

/// What the pool stores for each message besides its id, position and state.
///
/// With the content inline it is large (`C` bytes and more), so the engine never builds one on
/// the stack: it fills the pool slot's body in place ([`crate::pool::Pool::insert_with`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Body<const C: usize> {
    /// The sender's user id (the session's own for outgoing messages).
    pub from: Label,
    /// Sent by this user (from this or another of the user's devices).
    pub outgoing: bool,
    /// Gateway timestamp, or the local one until stored; ms since the Unix epoch.
    pub ts: u64,
    /// Business / MIME type.
    pub mime: Label,
    /// Seq this message replies to.
    pub reply_to: Option<u64>,
    /// The content bytes.
    pub content: Vec<u8, C>,
}

impl<const C: usize> Body<C> {
    /// Overwrites every field in place (an earlier message's body is reused). `from` and `mime`
    /// are cut as [`super::config::label`] cuts them; content beyond `C` bytes is cut, callers
    /// check the length first.
    pub(super) fn refill(
        &mut self,
        from: &str,
        outgoing: bool,
        ts: u64,
        mime: &str,
        reply_to: Option<u64>,
        content: &[u8],
    ) {
        set_label(&mut self.from, from);
        self.outgoing = outgoing;
        self.ts = ts;
        set_label(&mut self.mime, mime);
        self.reply_to = reply_to;
        self.content.clear();
        let fits = content.get(..C).unwrap_or(content);
        let _ = self.content.extend_from_slice(fits);
    }
}

/// A message as the application sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageView<'a> {
    /// The message id.
    pub id: MsgId,
    /// The topic.
    pub topic: TopicKey,
    /// Position in the conversation (seq once stored, virtual before).
    pub key: OrderKey,
    /// Its state.
    pub state: MessageState,
    /// Sent by this user.
    pub outgoing: bool,
    /// The sender's user id.
    pub from: &'a str,
    /// Timestamp, ms since the Unix epoch.
    pub ts: u64,
    /// Business / MIME type (empty = plain text).
    pub mime: &'a str,
    /// Seq this message replies to.
    pub reply_to: Option<u64>,
    /// The content bytes.
    pub content: &'a [u8],
}

impl MessageView<'_> {
    /// The seq, once the gateway stored the message.
    pub fn seq(&self) -> Option<u64> {
        self.key.is_stored().then_some(self.key.seq)
    }
}
