//! The client engine: one sans-IO state machine that runs a kefu session on top of the pool,
//! the receive trackers, the outbox, backoff and keepalive.
//!
//! # Using it
//! Methods fall into four groups, as in quinn-proto's `Connection`:
//! - **getters**: [`Engine::state`], [`Engine::message`], [`Engine::messages`], [`Engine::unread`], ...
//! - **inputs** `handle_*(now, ..)`: connection opened / failed / closed, bytes received, link up
//!   or down, timer expiry.
//! - **commands** from the application: [`Engine::publish`], [`Engine::subscribe`],
//!   [`Engine::mark_read`], [`Engine::load_history`], [`Engine::action`], ...
//! - **outputs** `poll_*`: after any input or command, drain in this order:
//!   [`Engine::poll_command`] until `None` (open / close the connection),
//!   [`Engine::poll_transmit`] until `None` (frames to write), [`Engine::poll_event`] until `None`
//!   (what the application shows), then sleep until [`Engine::poll_timeout`] and call
//!   [`Engine::handle_timeout`].
//!
//! `now` must never go backwards. Randomness (message ids, reconnect jitter) comes from the seed
//! given to [`Engine::new`], so a run can be replayed exactly.
//!
//! # What it guarantees
//! - A published message is in the view at once (`MessageAdded` before any network traffic) at
//!   a virtual position after the last message the user saw; it keeps its id on every retry,
//!   moves to its real seq when stored, and stays in place if it fails.
//! - Received messages reach the application exactly once and in seq order: pushes above a hole
//!   wait until it is filled (by a re-push or a pull), duplicates are dropped, and acks only cover
//!   what the application has taken out of the event queue.
//! - Every give-up is reported as `MessageChanged { state: Failed(..) }`.

mod config;
mod event;
mod inbound;
mod message;
mod outbound;
mod topic;

pub use config::{Credentials, EngineConfig, Filter, Label, MAX_SECRET, label};
pub use event::{Command, Event, SessionState};
pub use message::{Body, MessageView};
pub use topic::{Attach, Pull, RECV_WINDOW_WORDS, Topic, TopicName};

use core::fmt;

use heapless::{Deque, Vec};

use crate::backoff::Reconnect;
use crate::digest::Digest;
use crate::frame::Deframer;
use crate::id::MsgId;
use crate::keepalive::{Keepalive, KeepaliveAction};
use crate::order::SeqRange;
use crate::outbox::{Outbox, OutboxError};
use crate::pool::{FailReason, MessageState, OrderKey, Pool, Slot, TopicKey};
use crate::proto::{AgentStatus, Code, GetWhat, Head, NoteWhat, ReqId, check_topic};
use crate::rng::{Rng, SplitMix64};
use crate::time::{Instant, earliest};

/// How many events the engine queues before it stops reading input.
pub const EVENT_QUEUE: usize = 64;
/// How many requests may await their `ctrl` at once.
pub const MAX_REQUESTS: usize = 16;
/// How many application requests (notes, gets, actions) may wait for the connection.
pub const MAX_OUTGOING: usize = 16;
/// Room the engine keeps in the event queue before handling another frame.
const EVENT_SLACK: usize = 8;

/// Why a command was refused, or why the session stopped for good (sticky errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum EngineError {
    /// The gateway does not speak this protocol version (sticky).
    VersionRefused,
    /// The gateway refused the credentials (sticky).
    LoginRefused(Code),
    /// The application closed the engine (sticky).
    Closed,
    /// The message pool is full of messages that may not be evicted (owed an ack, or failed).
    PoolFull,
    /// The outbox holds as many unacknowledged messages as it can.
    OutboxFull,
    /// All topic slots are in use.
    TooManyTopics,
    /// The topic name is empty, too long or has characters other than letters, digits, `_`, `-`.
    BadTopic,
    /// The content (or a text field) is larger than the engine's message capacity.
    TooLarge,
    /// Too many requests are queued or in flight.
    Busy,
    /// No message with that id, or it is not in a state that allows this.
    NoSuchMessage,
    /// No such topic.
    NoSuchTopic,
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::VersionRefused => f.write_str("the gateway refused the protocol version"),
            EngineError::LoginRefused(c) => write!(f, "the gateway refused the login: {c}"),
            EngineError::Closed => f.write_str("the engine was closed"),
            EngineError::PoolFull => f.write_str("message pool full of unacknowledged messages"),
            EngineError::OutboxFull => f.write_str("too many messages waiting for acknowledgement"),
            EngineError::TooManyTopics => f.write_str("no free topic slot"),
            EngineError::BadTopic => f.write_str("invalid topic name"),
            EngineError::TooLarge => f.write_str("content larger than the message capacity"),
            EngineError::Busy => f.write_str("too many requests queued"),
            EngineError::NoSuchMessage => f.write_str("no such message in a state that allows it"),
            EngineError::NoSuchTopic => f.write_str("no such topic"),
        }
    }
}

impl core::error::Error for EngineError {}

/// Where the handshake of the current connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handshake {
    SendHi,
    WaitHi,
    SendLogin,
    WaitLogin,
    Done,
}

/// What a request awaiting its `ctrl` was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReqKind {
    Hi,
    Login,
    Sub(TopicKey),
    Pull(TopicKey, SeqRange),
    Digest(TopicKey),
    History(TopicKey),
    /// Made by the application: answered with [`Event::Reply`].
    App,
}

#[derive(Clone, Copy, Debug)]
struct Request {
    req: ReqId,
    kind: ReqKind,
    deadline: Instant,
}

/// A customer-service command, as the application gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActionCmd {
    /// Open a consultation at a desk (customer).
    Open {
        /// Desk name (empty = default).
        desk: Label,
    },
    /// Set the agent's status.
    Status(AgentStatus),
    /// Take the longest-waiting customer.
    TakeNext,
    /// Hand a consultation to another agent.
    Transfer {
        /// The consultation.
        topic: TopicKey,
        /// The receiving agent.
        to: Label,
    },
    /// Close a consultation.
    Close {
        /// The consultation.
        topic: TopicKey,
    },
    /// Join a consultation (supervisor).
    Join {
        /// The consultation.
        topic: TopicKey,
    },
}

/// An application request waiting for the connection.
#[derive(Clone, Debug)]
enum Outgoing {
    Note {
        topic: TopicKey,
        what: NoteWhat,
        seq: u64,
    },
    Get {
        req: ReqId,
        topic: TopicKey,
        what: GetWhat,
        kind: ReqKind,
    },
    Leave {
        req: ReqId,
        topic: TopicKey,
        unsub: bool,
    },
    Action {
        req: ReqId,
        cmd: ActionCmd,
    },
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EngineStats {
    /// Frames written.
    pub frames_out: u64,
    /// Frames read.
    pub frames_in: u64,
    /// `pub` transmissions that were retries.
    pub retransmits: u64,
    /// Messages given up on.
    pub give_ups: u64,
    /// Messages acknowledged by the gateway.
    pub acked: u64,
    /// Messages handed to the application as received.
    pub received: u64,
    /// Duplicate `data` dropped.
    pub duplicates: u64,
    /// Messages dropped by the filter hook.
    pub filtered: u64,
    /// Connections that reached login.
    pub logins: u64,
    /// Connections lost.
    pub disconnects: u64,
    /// Gap pulls sent.
    pub pulls: u64,
    /// Frames or packets from the gateway that could not be read.
    pub bad_input: u64,
    /// Received messages turned away for lack of pool room (they come again).
    pub no_room: u64,
}

/// The client session state machine.
///
/// Capacities: `N` messages in the pool, `C` content bytes per message, `T` topics, `O`
/// unacknowledged outgoing messages, `F` bytes of frame reassembly buffer (largest frame).
pub struct Engine<const N: usize, const C: usize, const T: usize, const O: usize, const F: usize> {
    cfg: EngineConfig,
    rng: SplitMix64,
    state: SessionState,
    error: Option<EngineError>,
    handshake: Handshake,
    reconnect: Reconnect,
    keepalive: Keepalive,
    ping_due: bool,
    outbox: Outbox<O>,
    pool: Pool<Body<C>, N>,
    topics: Vec<Topic, T>,
    deframer: Deframer<F>,
    /// Frames wait in the deframer because the event queue was full.
    input_stalled: bool,
    /// Set when emission stopped for lack of event room: some topic may hold messages that
    /// became contiguous but were not handed out yet. Only then does draining an event pump
    /// every topic again.
    pump_stalled: bool,
    /// Received messages held in the pool while an earlier seq is missing.
    arriving: usize,
    /// Tag in the ids this engine makes (see [`MsgId::generate_tagged`]).
    id_tag: u32,
    events: Deque<Event, EVENT_QUEUE>,
    commands: Deque<Command, 4>,
    requests: Vec<Request, MAX_REQUESTS>,
    outgoing: Deque<Outgoing, MAX_OUTGOING>,
    next_req: ReqId,
    wall_ms_at_zero: u64,
    last_now: Instant,
    user: Label,
    stats: EngineStats,
    /// Where the pool holds the message of a recent `pub`, by request id modulo `O`: a hint,
    /// checked against the pool before use (a stale or overwritten one costs a lookup by id).
    #[cfg(not(feature = "small"))]
    pub_slots: [Option<(ReqId, Slot)>; O],
    /// Tests compare decoding frames in place against the deframer alone by turning it off.
    #[cfg(test)]
    copy_frames: bool,
}

impl<const N: usize, const C: usize, const T: usize, const O: usize, const F: usize>
    Engine<N, C, T, O, F>
{
    /// A new engine, offline, that will ask to connect at once. `seed` drives every random
    /// choice (message ids, jitter): give it real entropy in production, a fixed value in tests.
    pub fn new(now: Instant, cfg: EngineConfig, seed: u64) -> Self {
        let wall = cfg.wall_ms_at_zero;
        let mut rng = SplitMix64::new(seed);
        let id_tag = rng.next_u64() as u32;
        Engine {
            id_tag,
            reconnect: Reconnect::new(now),
            keepalive: Keepalive::new(now),
            cfg,
            rng,
            state: SessionState::Offline,
            error: None,
            handshake: Handshake::Done,
            ping_due: false,
            outbox: Outbox::new(),
            pool: Pool::new(),
            topics: Vec::new(),
            deframer: Deframer::new(),
            input_stalled: false,
            pump_stalled: false,
            arriving: 0,
            events: Deque::new(),
            commands: Deque::new(),
            requests: Vec::new(),
            outgoing: Deque::new(),
            next_req: 0,
            wall_ms_at_zero: wall,
            last_now: now,
            user: Label::new(),
            stats: EngineStats::default(),
            #[cfg(not(feature = "small"))]
            pub_slots: [None; O],
            #[cfg(test)]
            copy_frames: false,
        }
    }

    // ----- getters -------------------------------------------------------------------------

    /// Where the session stands.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// The sticky error that stopped the session, if any.
    pub fn error(&self) -> Option<EngineError> {
        self.error
    }

    /// The user id the gateway logged this session in as (empty before the first login).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Counters for metrics.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// The key of a topic by name.
    pub fn topic_key(&self, name: &str) -> Option<TopicKey> {
        self.topics
            .iter()
            .position(|t| t.name.as_str() == name)
            .and_then(|i| TopicKey::try_from(i).ok())
    }

    /// A topic's state.
    pub fn topic(&self, key: TopicKey) -> Option<&Topic> {
        self.topics.get(usize::from(key))
    }

    /// All topics with their keys.
    pub fn topics(&self) -> impl Iterator<Item = (TopicKey, &Topic)> + '_ {
        self.topics
            .iter()
            .enumerate()
            .map(|(i, t)| (i as TopicKey, t))
    }

    /// A topic's unread count.
    pub fn unread(&self, key: TopicKey) -> u64 {
        self.topic(key).map_or(0, |t| t.unread)
    }

    /// Unread messages across all topics.
    pub fn total_unread(&self) -> u64 {
        self.topics
            .iter()
            .map(|t| t.unread)
            .fold(0, u64::saturating_add)
    }

    /// A message by id (messages still waiting for an earlier one to arrive are not shown).
    pub fn message(&self, id: &MsgId) -> Option<MessageView<'_>> {
        let slot = self.pool.find_id(id)?;
        self.pool.get(slot).and_then(view)
    }

    /// A topic's conversation in order: stored messages by seq, pending and failed outgoing ones
    /// at their virtual positions.
    pub fn messages(&self, topic: TopicKey) -> impl DoubleEndedIterator<Item = MessageView<'_>> {
        self.pool.iter_topic(topic).filter_map(|(_, e)| view(e))
    }

    /// The reconciliation digest of the stored messages held locally with seqs in
    /// `first..=last` of a topic.
    pub fn local_digest(&self, topic: TopicKey, first: u64, last: u64) -> Digest {
        let mut b = crate::digest::DigestBuilder::new();
        for (_, e) in self.pool.iter_topic_from(topic, OrderKey::stored(first)) {
            if !e.key.is_stored() || e.key.seq > last {
                continue;
            }
            if b.push(e.key.seq, &e.id).is_err() {
                break;
            }
        }
        b.finish()
    }

    /// Wall-clock milliseconds at `now`, as well as the engine knows it.
    pub fn wall_ms(&self, now: Instant) -> u64 {
        self.wall_ms_at_zero.saturating_add(now.as_millis())
    }

    // ----- inputs --------------------------------------------------------------------------

    /// The driver's connection attempt succeeded: the handshake starts.
    pub fn handle_connected(&mut self, now: Instant) {
        self.advance(now);
        if self.error.is_some() {
            self.push_command(Command::Close);
            return;
        }
        self.reconnect.on_connected(now);
        self.keepalive = Keepalive::new(now);
        self.ping_due = false;
        self.deframer.reset();
        self.input_stalled = false;
        self.handshake = Handshake::SendHi;
        self.set_state(SessionState::Handshake);
    }

    /// The driver's connection attempt failed.
    pub fn handle_connect_failed(&mut self, now: Instant) {
        self.advance(now);
        self.went_offline(now, false);
    }

    /// The connection closed (by either side, or after a [`Command::Close`]).
    pub fn handle_disconnected(&mut self, now: Instant) {
        self.advance(now);
        self.went_offline(now, true);
    }

    /// The network link went down: no reconnect attempts until [`Engine::handle_link_up`].
    pub fn handle_link_down(&mut self, now: Instant) {
        self.advance(now);
        self.reconnect.on_link_down();
    }

    /// The network link is back: reconnect after a short random delay (avoids storms).
    pub fn handle_link_up(&mut self, now: Instant) {
        self.advance(now);
        self.reconnect
            .on_link_up(now, &self.cfg.backoff, &mut self.rng);
    }

    /// Bytes from the connection. Returns how many were taken: when the event queue is full the
    /// engine stops reading, and the caller offers the rest again after draining events.
    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) -> usize {
        self.advance(now);
        if !self.is_connected() {
            return bytes.len();
        }
        if !bytes.is_empty() {
            self.keepalive.on_recv(now);
        }
        let mut taken = 0;
        loop {
            let held = self.deframer.buffered();
            let ran_dry = if held <= taken && !self.copy_frames() {
                // All the deframer holds came from `bytes`: go on from there in place.
                self.deframer.reset();
                let (took, ran_dry) = self.frames_in_place(now, bytes, taken - held);
                taken = took;
                ran_dry
            } else {
                taken += self.deframer.write(&bytes[taken..]);
                self.process_frames(now)
            };
            if !ran_dry || taken == bytes.len() {
                break;
            }
        }
        self.flush_unread();
        taken
    }

    /// Timers: call when [`Engine::poll_timeout`] has passed (calling early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        if self.error.is_some() {
            return;
        }
        if self.state == SessionState::Offline && self.reconnect.should_connect(now) {
            self.reconnect.on_connect_started(now);
            self.set_state(SessionState::Connecting);
            self.push_command(Command::Connect);
        }
        if self.is_connected() {
            match self.keepalive.poll(now, &self.cfg.keepalive) {
                KeepaliveAction::Dead => self.push_command(Command::Close),
                KeepaliveAction::SendPing => self.ping_due = true,
                KeepaliveAction::Idle => {}
            }
            self.expire_requests(now);
            self.process_frames(now);
        }
        self.report_give_ups(now);
        self.flush_unread();
    }

    // ----- commands ------------------------------------------------------------------------

    /// Adds a topic (or marks a known one wanted) and subscribes to it when online.
    pub fn subscribe(&mut self, name: &str) -> Result<TopicKey, EngineError> {
        self.check_alive()?;
        let key = self.ensure_topic(name)?;
        if let Some(t) = self.topics.get_mut(usize::from(key)) {
            t.wanted = true;
        }
        Ok(key)
    }

    /// Adds a topic with marks the application persisted (e.g. a kiosk restarting): delivery
    /// resumes after `mark`, nothing at or below it is delivered again.
    pub fn resume_topic(
        &mut self,
        name: &str,
        mark: u64,
        read: u64,
    ) -> Result<TopicKey, EngineError> {
        self.check_alive()?;
        check_topic(name).map_err(|_| EngineError::BadTopic)?;
        if self.topic_key(name).is_some() {
            return Err(EngineError::BadTopic);
        }
        let topic_name = TopicName::try_from(name).map_err(|_| EngineError::BadTopic)?;
        let key = TopicKey::try_from(self.topics.len()).map_err(|_| EngineError::TooManyTopics)?;
        self.topics
            .push(Topic::resumed(topic_name, mark, read))
            .map_err(|_| EngineError::TooManyTopics)?;
        Ok(key)
    }

    /// Stops pushes of a topic; `unsub` also ends the subscription on the gateway.
    pub fn leave(&mut self, topic: TopicKey, unsub: bool) -> Result<ReqId, EngineError> {
        self.check_alive()?;
        let t = self
            .topics
            .get_mut(usize::from(topic))
            .ok_or(EngineError::NoSuchTopic)?;
        t.wanted = false;
        let req = self.alloc_req();
        self.queue_outgoing(Outgoing::Leave { req, topic, unsub })?;
        Ok(req)
    }

    /// Sends a message. It is in the conversation at once (`MessageAdded`, state `Queued`) and
    /// this returns its id before any network traffic.
    pub fn publish(
        &mut self,
        now: Instant,
        topic_name: &str,
        head: Head<'_>,
        content: &[u8],
    ) -> Result<MsgId, EngineError> {
        self.advance(now);
        self.check_alive()?;
        let topic = self.subscribe(topic_name)?;
        if content.len() > C {
            return Err(EngineError::TooLarge);
        }
        // A type the pool could not hold whole is refused, not cut.
        if head.mime.len() > Label::new().capacity() {
            return Err(EngineError::TooLarge);
        }
        let id = MsgId::generate_tagged(self.wall_ms(now), self.id_tag, &mut self.rng);
        let ts = self.wall_ms(now);
        let key = self.pending_key(topic);
        let from = &self.user;
        // The body is written straight into the pool's slot: with up to C bytes of content
        // inline, building it here and moving it in would copy all of it, however short the
        // message.
        let inserted = self
            .pool
            .insert_with(id, topic, key, MessageState::Queued, |body| {
                body.refill(from, true, ts, head.mime, head.reply_to, content)
            })
            .map_err(|_| EngineError::PoolFull)?;
        let _ = self.pool.set_mark(inserted.slot, true); // own: not unread
        if let Err(e) = self.enqueue_send(now, id, inserted.slot) {
            if let Some(slot) = self.pool.find_id(&id) {
                self.pool.remove(slot);
            }
            return Err(e);
        }
        self.push_event(Event::MessageAdded {
            topic,
            id,
            seq: None,
            history: false,
        });
        Ok(id)
    }

    /// Sends a failed message again, with the same id. It moves to the end of the conversation
    /// (a fresh virtual position) and is `Queued` again.
    pub fn resend(&mut self, now: Instant, id: &MsgId) -> Result<(), EngineError> {
        self.advance(now);
        self.check_alive()?;
        let slot = self.pool.find_id(id).ok_or(EngineError::NoSuchMessage)?;
        let entry = self.pool.get(slot).ok_or(EngineError::NoSuchMessage)?;
        if !matches!(entry.state, MessageState::Failed(_)) {
            return Err(EngineError::NoSuchMessage);
        }
        let topic = entry.topic;
        let key = self.pending_key(topic);
        // In place: a fresh virtual position, the body where it is.
        self.pool
            .requeue(slot, key, MessageState::Queued)
            .map_err(|_| EngineError::PoolFull)?;
        if let Err(e) = self.enqueue_send(now, *id, slot) {
            if let Some(slot) = self.pool.find_id(id) {
                let _ = self
                    .pool
                    .set_state(slot, MessageState::Failed(FailReason::Cancelled));
            }
            return Err(e);
        }
        self.push_event(Event::MessageChanged {
            topic,
            id: *id,
            state: MessageState::Queued,
            seq: None,
        });
        Ok(())
    }

    /// Removes an outgoing message that is failed or not yet sent from the conversation.
    pub fn discard(&mut self, id: &MsgId) -> Result<(), EngineError> {
        let slot = self.pool.find_id(id).ok_or(EngineError::NoSuchMessage)?;
        let state = self
            .pool
            .get(slot)
            .map(|e| e.state)
            .ok_or(EngineError::NoSuchMessage)?;
        match state {
            MessageState::Failed(_) | MessageState::Queued => {
                self.outbox.cancel(id);
                self.pool.remove(slot);
                Ok(())
            }
            _ => Err(EngineError::NoSuchMessage),
        }
    }

    /// The user read a topic up to `seq`: moves the read mark, updates unread, tells the others.
    pub fn mark_read(&mut self, topic: TopicKey, seq: u64) -> Result<(), EngineError> {
        self.check_alive()?;
        let t = self
            .topics
            .get_mut(usize::from(topic))
            .ok_or(EngineError::NoSuchTopic)?;
        let seq = seq.min(t.latest.max(t.emitted));
        if seq <= t.read {
            return Ok(());
        }
        t.read = seq;
        self.queue_outgoing(Outgoing::Note {
            topic,
            what: NoteWhat::Read,
            seq,
        })?;
        self.recount_unread(topic);
        Ok(())
    }

    /// The user is typing in a topic (sent at most once per `typing_interval`).
    pub fn typing(&mut self, now: Instant, topic: TopicKey) -> Result<(), EngineError> {
        self.advance(now);
        self.check_alive()?;
        let interval = self.cfg.typing_interval;
        let t = self
            .topics
            .get_mut(usize::from(topic))
            .ok_or(EngineError::NoSuchTopic)?;
        if t.last_typing.is_some_and(|at| now - at < interval) || !self.state.is_online() {
            return Ok(());
        }
        t.last_typing = Some(now);
        self.queue_outgoing(Outgoing::Note {
            topic,
            what: NoteWhat::Kp,
            seq: 0,
        })
    }

    /// Asks for up to `limit` messages older than the oldest one held (history paging). The
    /// messages arrive as `MessageAdded { history: true }`, then a [`Event::Reply`].
    pub fn load_history(&mut self, topic: TopicKey, limit: u32) -> Result<ReqId, EngineError> {
        self.check_alive()?;
        let t = self
            .topics
            .get(usize::from(topic))
            .ok_or(EngineError::NoSuchTopic)?;
        let oldest = self
            .pool
            .iter_topic(topic)
            .find(|(_, e)| e.key.is_stored())
            .map(|(_, e)| e.key.seq)
            .unwrap_or(t.latest.max(t.emitted).saturating_add(1));
        let since = oldest.saturating_sub(u64::from(limit)).max(1);
        if since >= oldest {
            return Err(EngineError::NoSuchMessage);
        }
        let req = self.alloc_req();
        let what = GetWhat::Data {
            since,
            before: oldest,
            limit,
        };
        let kind = ReqKind::History(topic);
        self.queue_outgoing(Outgoing::Get {
            req,
            topic,
            what,
            kind,
        })?;
        if let Some(t) = self.topics.get_mut(usize::from(topic)) {
            t.history = Some(SeqRange {
                first: since,
                last: oldest - 1,
            });
        }
        Ok(req)
    }

    /// Asks the gateway for the digest of the last `last` messages and compares it with the
    /// local view ([`Event::Reconciled`]).
    pub fn check_digest(&mut self, topic: TopicKey, last: u32) -> Result<ReqId, EngineError> {
        self.check_alive()?;
        self.topics
            .get(usize::from(topic))
            .ok_or(EngineError::NoSuchTopic)?;
        let req = self.alloc_req();
        let what = GetWhat::Digest { last };
        self.queue_outgoing(Outgoing::Get {
            req,
            topic,
            what,
            kind: ReqKind::Digest(topic),
        })?;
        Ok(req)
    }

    /// Runs a customer-service command; answered with [`Event::Reply`].
    pub fn action(&mut self, cmd: ActionCmd) -> Result<ReqId, EngineError> {
        self.check_alive()?;
        let req = self.alloc_req();
        self.queue_outgoing(Outgoing::Action { req, cmd })?;
        Ok(req)
    }

    /// Stops the session for good: a connection is closed, every later call fails with
    /// [`EngineError::Closed`].
    pub fn close(&mut self) {
        if self.is_connected() {
            self.push_command(Command::Close);
        }
        self.fail(EngineError::Closed);
    }

    // ----- outputs -------------------------------------------------------------------------

    /// The next thing the driver must do about the connection.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        let ev = self.events.pop_front()?;
        if let Event::MessageAdded {
            topic,
            seq: Some(seq),
            history: false,
            ..
        } = ev
            && let Some(t) = self.topics.get_mut(usize::from(topic))
        {
            t.queued_events = t.queued_events.saturating_sub(1);
            t.handed = t.handed.max(seq);
            if t.queued_events == 0 {
                t.handed = t.handed.max(t.emitted);
            }
            // The application has it now: an ack is owed, due within the ack delay.
            t.acks.on_advance(self.last_now, &self.cfg.ack, t.handed);
        }
        if self.pump_stalled {
            self.pump_all();
        }
        Some(ev)
    }

    /// When [`Engine::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.error.is_some() {
            return None;
        }
        let mut at = earliest(self.outbox.poll_timeout(&self.cfg.outbox), None);
        if self.state == SessionState::Offline {
            at = earliest(at, self.reconnect.poll_timeout());
        }
        if self.is_connected() {
            at = earliest(at, Some(self.keepalive.poll_timeout(&self.cfg.keepalive)));
            for r in &self.requests {
                at = earliest(at, Some(r.deadline));
            }
            for t in self.topics.iter().filter(|t| t.attach == Attach::Attached) {
                at = earliest(at, t.acks.poll_timeout());
                if let Pull::Holding { until } = t.pull {
                    at = earliest(at, Some(until));
                }
            }
            if self.input_stalled && self.room_for_frames() {
                at = earliest(at, Some(self.last_now));
            }
        }
        at
    }

    // ----- internals -----------------------------------------------------------------------

    /// Every frame goes through the deframer (tests only: the reference for frames decoded
    /// in place).
    fn copy_frames(&self) -> bool {
        #[cfg(test)]
        return self.copy_frames;
        #[cfg(not(test))]
        false
    }

    /// The event queue has room to show one more message: its `MessageAdded` and the
    /// `UnreadChanged` that may follow.
    fn room_to_show(&self) -> bool {
        self.events.len() + 2 < self.events.capacity()
    }

    /// The event queue has room for what one more frame can cause ([`EVENT_SLACK`]).
    fn room_for_frames(&self) -> bool {
        self.events.capacity() - self.events.len() > EVENT_SLACK
    }

    /// Where [`Self::pub_slots`] keeps the hint for request `req`.
    #[cfg(not(feature = "small"))]
    fn pub_slot_index(req: ReqId) -> Option<usize> {
        (req as usize).checked_rem(O)
    }

    fn advance(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
    }

    fn is_connected(&self) -> bool {
        matches!(
            self.state,
            SessionState::Handshake
                | SessionState::LoggingIn
                | SessionState::Subscribing
                | SessionState::Ready
        )
    }

    fn check_alive(&self) -> Result<(), EngineError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn fail(&mut self, e: EngineError) {
        if self.error.is_none() {
            self.error = Some(e);
            self.set_state(SessionState::Failed);
        }
    }

    fn set_state(&mut self, s: SessionState) {
        if self.state != s && self.state != SessionState::Failed {
            self.state = s;
            self.push_event(Event::State(s));
        }
    }

    fn push_event(&mut self, e: Event) {
        // Input handling keeps EVENT_SLACK free and emission stops when the queue is full, so
        // this only fails if a single call produced more than the slack.
        let _ = self.events.push_back(e);
    }

    fn push_command(&mut self, c: Command) {
        if !self.commands.iter().any(|x| *x == c) {
            let _ = self.commands.push_back(c);
        }
    }

    fn alloc_req(&mut self) -> ReqId {
        self.next_req = self.next_req.wrapping_add(1).max(1);
        self.next_req
    }

    fn queue_outgoing(&mut self, o: Outgoing) -> Result<(), EngineError> {
        self.outgoing.push_back(o).map_err(|_| EngineError::Busy)
    }

    fn ensure_topic(&mut self, name: &str) -> Result<TopicKey, EngineError> {
        if let Some(k) = self.topic_key(name) {
            return Ok(k);
        }
        check_topic(name).map_err(|_| EngineError::BadTopic)?;
        let topic_name = TopicName::try_from(name).map_err(|_| EngineError::BadTopic)?;
        let key = TopicKey::try_from(self.topics.len()).map_err(|_| EngineError::TooManyTopics)?;
        self.topics
            .push(Topic::new(topic_name))
            .map_err(|_| EngineError::TooManyTopics)?;
        Ok(key)
    }

    /// A virtual position after the last message the user has seen in the topic.
    fn pending_key(&mut self, topic: TopicKey) -> OrderKey {
        match self.topics.get_mut(usize::from(topic)) {
            // Nothing stored above what was emitted: the pool's last seq is at most `emitted`.
            Some(t) if t.stored_max <= t.emitted => OrderKey::pending(t.emitted, t.next_local()),
            Some(t) => {
                let last = self.pool.last_seq(topic);
                OrderKey::pending(last.max(t.emitted), t.next_local())
            }
            None => OrderKey::pending(self.pool.last_seq(topic), 1),
        }
    }

    /// Queues the message `id`, held in the pool at `slot`, for sending.
    fn enqueue_send(&mut self, now: Instant, id: MsgId, slot: Slot) -> Result<(), EngineError> {
        let req = self.alloc_req();
        self.outbox.push(now, req, id).map_err(|e| match e {
            OutboxError::Full => EngineError::OutboxFull,
            _ => EngineError::Busy,
        })?;
        #[cfg(not(feature = "small"))]
        if let Some(hint) = Self::pub_slot_index(req).and_then(|i| self.pub_slots.get_mut(i)) {
            *hint = Some((req, slot));
        }
        #[cfg(feature = "small")]
        let _ = slot;
        Ok(())
    }

    /// The pool slot of the message `id` sent with request `req`: from the hint kept when it
    /// was queued if that still holds it, else by id.
    fn find_pub(&self, req: ReqId, id: &MsgId) -> Option<Slot> {
        #[cfg(not(feature = "small"))]
        if let Some(Some((r, slot))) = Self::pub_slot_index(req).and_then(|i| self.pub_slots.get(i))
            && *r == req
            && self.pool.get(*slot).is_some_and(|e| e.id == *id)
        {
            return Some(*slot);
        }
        #[cfg(feature = "small")]
        let _ = req;
        self.pool.find_id(id)
    }

    fn went_offline(&mut self, now: Instant, was_connected: bool) {
        if was_connected && self.is_connected() {
            self.stats.disconnects += 1;
        }
        let online = self.is_connected();
        self.outbox.on_disconnect();
        self.deframer.reset();
        self.input_stalled = false;
        self.handshake = Handshake::Done;
        self.ping_due = false;
        for t in self.topics.iter_mut() {
            t.on_disconnect(now);
        }
        for r in core::mem::take(&mut self.requests) {
            if let ReqKind::History(topic) = r.kind
                && let Some(t) = self.topics.get_mut(usize::from(topic))
            {
                t.history = None;
            }
            if matches!(
                r.kind,
                ReqKind::App | ReqKind::Digest(_) | ReqKind::History(_)
            ) {
                self.push_event(Event::Reply {
                    req: r.req,
                    code: Code::UNAVAILABLE,
                    topic: None,
                });
            }
        }
        if self.error.is_some() {
            return;
        }
        self.reconnect
            .on_disconnected(now, &self.cfg.backoff, &mut self.rng);
        self.set_state(SessionState::Offline);
        if online {
            self.push_event(Event::Disconnected);
        }
    }

    fn expire_requests(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.requests.len() {
            let r = self.requests[i];
            if r.deadline > now {
                i += 1;
                continue;
            }
            self.requests.swap_remove(i);
            match r.kind {
                ReqKind::Hi | ReqKind::Login | ReqKind::Sub(_) => {
                    self.push_command(Command::Close);
                }
                ReqKind::Pull(topic, _) => {
                    if let Some(t) = self.topics.get_mut(usize::from(topic)) {
                        t.pull = Pull::Idle;
                    }
                    self.schedule_pull(now, topic);
                }
                ReqKind::App | ReqKind::Digest(_) | ReqKind::History(_) => {
                    if let ReqKind::History(topic) = r.kind
                        && let Some(t) = self.topics.get_mut(usize::from(topic))
                    {
                        t.history = None;
                    }
                    self.push_event(Event::Reply {
                        req: r.req,
                        code: Code::TIMEOUT,
                        topic: None,
                    });
                }
            }
        }
    }

    fn report_give_ups(&mut self, now: Instant) {
        while self.room_to_show() {
            let Some(g) = self.outbox.poll_gave_up(now, &self.cfg.outbox) else {
                break;
            };
            self.stats.give_ups += 1;
            self.fail_message(&g.id, FailReason::TimedOut);
        }
    }

    fn fail_message(&mut self, id: &MsgId, reason: FailReason) {
        let Some(slot) = self.pool.find_id(id) else {
            return;
        };
        let Some(topic) = self.pool.get(slot).map(|e| e.topic) else {
            return;
        };
        let state = MessageState::Failed(reason);
        if self.pool.set_state(slot, state).is_ok() {
            self.push_event(Event::MessageChanged {
                topic,
                id: *id,
                state,
                seq: None,
            });
        }
    }

    /// Recomputes a topic's unread count and reports a change.
    /// Marks a topic's unread count for recounting at the end of the current input (one walk
    /// over the topic per batch of frames, not one per message).
    fn update_unread(&mut self, topic: TopicKey) {
        if let Some(t) = self.topics.get_mut(usize::from(topic)) {
            t.unread_dirty = true;
        }
    }

    /// Recounts the unread messages of every topic marked dirty, reporting changes.
    fn flush_unread(&mut self) {
        for i in 0..self.topics.len() {
            if self.topics[i].unread_dirty {
                self.topics[i].unread_dirty = false;
                self.recount_unread(i as TopicKey);
            }
        }
    }

    fn recount_unread(&mut self, topic: TopicKey) {
        let Some(t) = self.topics.get(usize::from(topic)) else {
            return;
        };
        let (read, latest) = (t.read, t.latest.max(t.emitted));
        // By the pool's marks (set on own messages), not by reading each entry: with large
        // bodies those lie pages apart, and a topic may hold hundreds of unread messages.
        let own = self
            .pool
            .count_stored_marks_from(topic, OrderKey::stored(read.saturating_add(1)))
            as u64;
        let count = latest.saturating_sub(read).saturating_sub(own);
        if let Some(t) = self.topics.get_mut(usize::from(topic))
            && t.unread != count
        {
            t.unread = count;
            self.push_event(Event::Unread { topic, count });
        }
    }

    fn schedule_pull(&mut self, now: Instant, topic: TopicKey) {
        let hold = self.cfg.gap_hold;
        if let Some(t) = self.topics.get_mut(usize::from(topic))
            && t.pull == Pull::Idle
            && t.recv.first_gap().is_some()
        {
            t.pull = Pull::Holding { until: now + hold };
        }
    }
}

fn view<const C: usize>(e: &crate::pool::Entry<Body<C>>) -> Option<MessageView<'_>> {
    if e.state == MessageState::Arriving {
        return None;
    }
    Some(MessageView {
        id: e.id,
        topic: e.topic,
        key: e.key,
        state: e.state,
        outgoing: e.data.outgoing,
        from: &e.data.from,
        ts: e.data.ts,
        mime: &e.data.mime,
        reply_to: e.data.reply_to,
        content: &e.data.content,
    })
}

#[cfg(test)]
mod tests;
