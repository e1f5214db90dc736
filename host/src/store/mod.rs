//! Durable storage for the gateway: accounts, topics, subscriptions with their marks, and
//! messages with gapless per-topic seqs. [`Store`] is the contract; [`sqlite::SqliteStore`] is
//! the embedded default (PostgreSQL comes next, so nothing here assumes one process or one disk).
//!
//! Rules every implementation keeps:
//! - Per topic, seq starts at 1 and has no gaps; a seq is never reused, even after deletion.
//! - (topic, message id) is unique: appending it again returns the seq it already has with
//!   `dup = true` and stores nothing.
//! - [`Store::append`] resolves only after the message is durably committed (disk sync). Appends
//!   that arrive together share one commit (group commit).
//! - A deleted message stays at its seq as a tombstone (see [`crate::model::TOMBSTONE_MIME`]).

pub mod sqlite;

use std::future::Future;

use kefu_core::id::MsgId;

use crate::model::{Head, Message};

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A customer: opens consultations, chats.
    Customer,
    /// An agent: takes consultations (counter-terminal devices are agents too).
    Agent,
    /// A supervisor: an agent who may also join and transfer any consultation.
    Supervisor,
}

/// An account to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewUser {
    /// The user id, made by the caller (`usr` + random, see the gateway).
    pub id: String,
    /// The unique login name.
    pub login: String,
    /// Display name.
    pub name: String,
    /// Password hash (PHC string); `None` for token-only accounts such as devices.
    pub pass_hash: Option<String>,
    /// What the user may do.
    pub role: Role,
}

/// A stored account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The user id.
    pub id: String,
    /// The unique login name.
    pub login: String,
    /// Display name.
    pub name: String,
    /// Password hash (PHC string); `None` for token-only accounts.
    pub pass_hash: Option<String>,
    /// What the user may do.
    pub role: Role,
    /// Token generation: tokens issued with an older generation are revoked.
    pub token_gen: u32,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: u64,
}

/// What kind of conversation a topic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TopicKind {
    /// One-to-one between two users.
    P2p,
    /// A group with an owner.
    Group,
    /// A customer-service consultation.
    Consult,
}

/// Where a consultation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConsultState {
    /// Opened, no agent yet.
    Waiting,
    /// An agent is assigned.
    Active,
    /// Closed by the agent or the customer.
    Closed,
}

/// The customer-service side of a consultation topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consult {
    /// The customer's user id.
    pub customer: String,
    /// The assigned agent's user id, if any.
    pub agent: Option<String>,
    /// The desk it was opened at.
    pub desk: String,
    /// Where it stands.
    pub state: ConsultState,
    /// When it was opened, ms since the Unix epoch.
    pub opened_ms: u64,
}

/// A stored topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicRecord {
    /// Internal topic name (unique).
    pub name: String,
    /// Kind of conversation.
    pub kind: TopicKind,
    /// Title.
    pub title: String,
    /// Owner's user id (the creator; the customer for a consultation).
    pub owner: String,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: u64,
    /// Latest seq (0 = no messages). Ignored by [`Store::create_topic`].
    pub latest: u64,
    /// Deleted for everyone.
    pub deleted: bool,
    /// Consultation state, for [`TopicKind::Consult`].
    pub consult: Option<Consult>,
}

/// A change to a topic; `None` fields stay as they are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicUpdate {
    /// New title.
    pub title: Option<String>,
    /// New consultation state.
    pub consult: Option<Consult>,
    /// Deleted for everyone.
    pub deleted: Option<bool>,
}

/// A user's subscription to a topic, with its marks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// Internal topic name.
    pub topic: String,
    /// Subscriber's user id.
    pub user: String,
    /// Access mode, Tinode-style letters (e.g. `JRWPS`).
    pub mode: String,
    /// Read mark: the user has read up to this seq.
    pub read: u64,
    /// Recv mark: the user's devices received up to this seq.
    pub recv: u64,
    /// When the subscription was created, ms since the Unix epoch.
    pub created_ms: u64,
}

/// A message to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessage {
    /// Internal topic name; the topic must exist.
    pub topic: String,
    /// The sender's message id; (topic, msg_id) is unique.
    pub msg_id: MsgId,
    /// The sender's user id.
    pub from: String,
    /// The gateway's timestamp, ms since the Unix epoch.
    pub ts: u64,
    /// Metadata.
    pub head: Head,
    /// Content bytes.
    pub content: Vec<u8>,
}

/// The result of an append: where the message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The message's seq.
    pub seq: u64,
    /// Its stored timestamp (the original one for a duplicate).
    pub ts: u64,
    /// (topic, msg_id) was stored before; nothing new was stored.
    pub dup: bool,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The thing to create exists already (login name, topic).
    #[error("already exists: {0}")]
    Conflict(String),
    /// The thing addressed does not exist (topic, user).
    #[error("not found: {0}")]
    NotFound(String),
    /// The disk is full; nothing of the failed operation was stored.
    #[error("storage full: {0}")]
    Full(String),
    /// The database cannot be written (read-only folder or file).
    #[error("storage is read-only: {0}")]
    ReadOnly(String),
    /// The database failed otherwise (I/O error, corruption); nothing of the failed operation
    /// was stored.
    #[error("storage failed: {0}")]
    Failed(String),
    /// The store was shut down.
    #[error("storage closed")]
    Closed,
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// Durable storage behind the gateway. Every method may be called concurrently from many tasks;
/// futures are `Send` so sessions can await them on any worker thread.
pub trait Store: Send + Sync + 'static {
    /// Creates an account; [`StoreError::Conflict`] if the login or id is taken.
    fn add_user(&self, user: NewUser) -> impl Future<Output = StoreResult<User>> + Send;
    /// The account with this user id.
    fn user(&self, id: &str) -> impl Future<Output = StoreResult<Option<User>>> + Send;
    /// The account with this login name.
    fn user_by_login(&self, login: &str) -> impl Future<Output = StoreResult<Option<User>>> + Send;
    /// Sets the token generation (revokes tokens of older generations).
    fn set_token_gen(
        &self,
        id: &str,
        token_gen: u32,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Creates a topic and subscribes `members` (mode `JRWPS`) in one transaction;
    /// [`StoreError::Conflict`] if the name is taken.
    fn create_topic(
        &self,
        topic: TopicRecord,
        members: Vec<String>,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// The topic with this internal name (with its latest seq).
    fn topic(&self, name: &str) -> impl Future<Output = StoreResult<Option<TopicRecord>>> + Send;
    /// Changes a topic; [`StoreError::NotFound`] if it does not exist.
    fn update_topic(
        &self,
        name: &str,
        update: TopicUpdate,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Consultations not closed (waiting or active), oldest first: the desk's state on start.
    fn open_consults(&self) -> impl Future<Output = StoreResult<Vec<TopicRecord>>> + Send;

    /// Subscribes `user` to `topic` with `mode`, or returns the existing subscription unchanged.
    fn subscribe(
        &self,
        topic: &str,
        user: &str,
        mode: &str,
    ) -> impl Future<Output = StoreResult<Subscription>> + Send;
    /// Removes a subscription; whether there was one.
    fn unsubscribe(
        &self,
        topic: &str,
        user: &str,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// One subscription.
    fn subscription(
        &self,
        topic: &str,
        user: &str,
    ) -> impl Future<Output = StoreResult<Option<Subscription>>> + Send;
    /// Every subscription of a topic.
    fn subscribers(
        &self,
        topic: &str,
    ) -> impl Future<Output = StoreResult<Vec<Subscription>>> + Send;
    /// Every subscription of a user.
    fn subscriptions_of(
        &self,
        user: &str,
    ) -> impl Future<Output = StoreResult<Vec<Subscription>>> + Send;
    /// Raises the read and/or recv mark (a mark never goes down; lower values are ignored).
    fn set_marks(
        &self,
        topic: &str,
        user: &str,
        read: Option<u64>,
        recv: Option<u64>,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Stores a message at the topic's next seq, or finds it if (topic, msg_id) exists. Resolves
    /// after the commit is durable. [`StoreError::NotFound`] if the topic does not exist.
    fn append(&self, msg: NewMessage) -> impl Future<Output = StoreResult<Appended>> + Send;
    /// Messages with `since <= seq < before` (`before == 0`: no upper bound), the newest `limit`
    /// of them, in ascending seq order. Messages deleted for everyone, and those `viewer` hid for
    /// themselves, come as tombstones at their seq.
    fn messages(
        &self,
        topic: &str,
        since: u64,
        before: u64,
        limit: u32,
        viewer: Option<&str>,
    ) -> impl Future<Output = StoreResult<Vec<Message>>> + Send;
    /// How many messages of `topic` with seq above `after` were sent by `user` and not deleted
    /// (unread counts never count one's own messages).
    fn count_from(
        &self,
        topic: &str,
        user: &str,
        after: u64,
    ) -> impl Future<Output = StoreResult<u64>> + Send;
    /// Deletes messages `first..=last`: `hard` wipes their content for everyone (they stay as
    /// tombstones), otherwise they are hidden for `user` only.
    fn delete_messages(
        &self,
        topic: &str,
        first: u64,
        last: u64,
        hard: bool,
        user: &str,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Why the store cannot take writes (a failed disk sync, until restarted; a read-only data
    /// folder, while it lasts), if it cannot: the gateway reports itself unhealthy. `None`
    /// while healthy.
    fn fault(&self) -> Option<String> {
        None
    }
}
