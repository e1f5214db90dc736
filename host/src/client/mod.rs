//! The kefu client SDK: an async handle that chats through a kefu gateway by driving the core
//! engine (`kefu_core::engine`), which decides everything (ids, virtual seqs, retries, acks,
//! reconnect backoff, keepalive).
//!
//! - [`Client`] is a cheap cloneable handle. One driver task per client owns the connection
//!   (`tcp://` framed binary, `ws://` or `wss://` binary WebSocket with rustls).
//! - The engine sits behind a mutex shared by handles and driver, held only for engine calls:
//!   [`Client::publish`] puts the message in the conversation and returns it at once (id,
//!   virtual position, state `Queued`), then wakes the driver to send it. Handles take the lock
//!   ahead of the driver, which holds it for one frame or one event at a time, so a `publish`
//!   never waits behind a burst of received data.
//! - [`Client::conversations`] lists the user's conversations (title, latest seq, read mark,
//!   unread count) as the gateway knows them, also those this client never subscribed to.
//! - Per-topic [`Subscription`]s are streams of [`TopicEvent`]s; dropping one leaves the topic.
//!   [`Client::events`] streams [`ClientEvent`]s (connection state, unread counts, presence).
//! - The engine acknowledges a received message only once the driver delivered it into the
//!   subscription's bounded channel ("handed to the app"); a slow reader back-pressures.
//! - Reconnection is automatic; subscriptions resume from their marks and unacknowledged
//!   messages are sent again with the same ids.
//!
//! # Example
//! ```no_run
//! use futures_util::StreamExt;
//! use kefu_host::client::{Client, ClientConfig, TopicEvent};
//!
//! # async fn run() -> Result<(), kefu_host::client::ClientError> {
//! let client = Client::connect(ClientConfig::password("tcp://127.0.0.1:6061", "alice", "pw")).await?;
//! let mut chat = client.subscribe("grpSupport")?;
//! let local = client.publish("grpSupport", "hello")?; // in the view already, state Queued
//! while let Some(ev) = chat.next().await {
//!     if let TopicEvent::Changed { id, seq: Some(seq), .. } = ev && id == local.id {
//!         println!("stored as seq {seq}");
//!         break;
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Runnable examples against `kefu gateway` (see `host/examples/`):
//! ```text
//! kefu gateway --data ./kefu-data &
//! kefu user add agent1 --password agent-pass --agent --data ./kefu-data
//! cargo run -p kefu-host --example agent -- tcp://127.0.0.1:6061 agent1 agent-pass
//! cargo run -p kefu-host --example customer -- tcp://127.0.0.1:6061 carol carol-pass "I need help"
//! ```

mod config;
mod cut;
mod directory;
mod driver;
mod error;
mod shared;
mod subscription;
mod transport;
mod types;

pub use config::{ClientConfig, Login};
pub use directory::Conversation;
pub use error::ClientError;
pub use kefu_core::engine::{EngineError, Filter, SessionState};
pub use kefu_core::id::MsgId;
pub use kefu_core::pool::{FailReason, MessageState, OrderKey};
pub use kefu_core::proto::{AgentStatus, Code, PresWhat};
pub use shared::{CONTENT_BYTES, FRAME_BYTES, HostEngine, OUTBOX, POOL_MESSAGES, TOPICS};
pub use subscription::{ClientEvents, Subscription};
pub use types::{
    ClientEvent, ClientMetrics, LocalMessage, MessageHead, MessageSnapshot, TopicEvent,
};

use std::sync::Arc;

use kefu_core::engine::{ActionCmd, label};
use kefu_core::pool::TopicKey;
use kefu_core::proto::{Head, ReqId};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::BroadcastStream;

use config::Endpoint;
use directory::Directory;
use driver::Driver;
use shared::{Inner, Route, Shared, SharedRef, build_engine};

/// Closes the engine when the last [`Client`] handle is dropped.
struct Guard(SharedRef);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.lock().engine.close();
        self.0.kick();
    }
}

/// A handle on one client session. Cheap to clone; all clones drive the same session. The
/// session ends when the last handle is dropped or [`Client::close`] is called.
#[derive(Clone)]
pub struct Client {
    shared: SharedRef,
    _guard: Arc<Guard>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts a client and waits until it is logged in the first time. Fails on refused
    /// credentials, or with [`ClientError::Timeout`] if no login succeeded within
    /// [`ClientConfig::request_timeout`] (the client is closed then).
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let timeout = config.request_timeout;
        let client = Client::start(config).await?;
        let mut state = client.shared.state.subscribe();
        let waited = tokio::time::timeout(
            timeout,
            state.wait_for(|s| s.is_online() || *s == SessionState::Failed),
        )
        .await;
        match waited {
            Ok(Ok(s)) if s.is_online() => Ok(client),
            Ok(_) => Err(client
                .shared
                .lock()
                .engine
                .error()
                .map_or(ClientError::Closed, ClientError::Engine)),
            Err(_) => {
                let why = client.shared.lock().connect_error.take();
                client.close();
                Err(why.map_or(ClientError::Timeout, ClientError::Connect))
            }
        }
    }

    /// Starts a client without waiting: it connects (and reconnects) in the background;
    /// publishing works at once (messages wait in the outbox).
    pub async fn start(config: ClientConfig) -> Result<Client, ClientError> {
        let endpoint = Endpoint::parse(&config.url)?;
        let tls = match endpoint {
            Endpoint::Wss(_) => Some(config::tls_config(config.extra_ca.as_ref())?),
            _ => None,
        };
        let engine_cfg = config.engine_config()?;
        let seed: u64 = rand::random();
        let engine = tokio::task::spawn_blocking(move || build_engine(engine_cfg, seed))
            .await
            .map_err(|_| ClientError::Spawn(std::io::Error::other("engine build task failed")))??;
        let directory = Directory::new(
            endpoint.clone(),
            tls.clone(),
            config.login.clone(),
            config.device.clone(),
            config.lang.clone(),
            config.connect_timeout,
            config.request_timeout,
        );
        let shared = Arc::new(Shared::new(
            engine,
            config.subscription_buffer,
            config.request_timeout,
            directory,
        ));
        if config.subscribe_me {
            shared.lock().engine.subscribe("me")?;
        }
        let driver = Driver::new(shared.clone(), endpoint, tls, config.connect_timeout);
        tokio::spawn(driver.run());
        Ok(Client {
            _guard: Arc::new(Guard(shared.clone())),
            shared,
        })
    }

    /// Client-wide events from now on.
    pub fn events(&self) -> ClientEvents {
        ClientEvents {
            inner: BroadcastStream::new(self.shared.events.subscribe()),
        }
    }

    /// Subscribes to a topic (resuming after its mark on every reconnect) and returns its event
    /// stream. Messages already in the view are not replayed: read them with
    /// [`Client::messages`].
    pub fn subscribe(&self, topic: &str) -> Result<Subscription, ClientError> {
        self.add_route(topic, |g| Ok(g.engine.subscribe(topic)?))
    }

    /// Subscribes to a topic this client has not seen yet, resuming from marks the application
    /// persisted: everything up to `mark` was already shown (and is not delivered again), the
    /// user read up to `read`. Older messages can be paged in with [`Client::load_history`].
    pub fn subscribe_from(
        &self,
        topic: &str,
        mark: u64,
        read: u64,
    ) -> Result<Subscription, ClientError> {
        self.add_route(topic, |g| Ok(g.engine.resume_topic(topic, mark, read)?))
    }

    fn add_route(
        &self,
        topic: &str,
        add: impl FnOnce(&mut Inner) -> Result<TopicKey, ClientError>,
    ) -> Result<Subscription, ClientError> {
        let (tx, rx) = mpsc::channel(self.shared.buffer);
        let mut g = self.shared.lock();
        let key = add(&mut g)?;
        g.next_route += 1;
        let id = g.next_route;
        g.routes.entry(key).or_default().push(Route { id, tx });
        drop(g);
        self.shared.kick();
        Ok(Subscription {
            shared: self.shared.clone(),
            topic: key,
            name: topic.to_owned(),
            id,
            rx,
        })
    }

    /// Sends a text (or any bytes) to a topic. Returns at once with the local message (in the
    /// view at its virtual position, state `Queued`); its state later moves to `Sent` with a
    /// seq, or `Failed` with the reason, in place ([`TopicEvent::Changed`]).
    pub fn publish(
        &self,
        topic: &str,
        content: impl AsRef<[u8]>,
    ) -> Result<LocalMessage, ClientError> {
        self.publish_head(
            topic,
            Head {
                mime: "",
                reply_to: None,
            },
            content.as_ref(),
        )
    }

    /// [`Client::publish`] with a business / MIME type and a reply reference.
    pub fn publish_with(
        &self,
        topic: &str,
        head: &MessageHead,
        content: impl AsRef<[u8]>,
    ) -> Result<LocalMessage, ClientError> {
        let head = Head {
            mime: &head.mime,
            reply_to: head.reply_to,
        };
        self.publish_head(topic, head, content.as_ref())
    }

    fn publish_head(
        &self,
        topic: &str,
        head: Head<'_>,
        content: &[u8],
    ) -> Result<LocalMessage, ClientError> {
        let now = self.shared.now();
        let mut g = self.shared.lock();
        let id = g.engine.publish(now, topic, head, content)?;
        let local = match g.engine.message(&id) {
            Some(v) => LocalMessage {
                id,
                position: v.key,
                state: v.state,
            },
            None => LocalMessage {
                id,
                position: OrderKey::default(),
                state: MessageState::Queued,
            },
        };
        g.published_at.insert(id, std::time::Instant::now());
        drop(g);
        self.shared.kick();
        Ok(local)
    }

    /// Sends a failed message again with the same id; it moves to the end of the conversation.
    pub fn resend(&self, id: &MsgId) -> Result<(), ClientError> {
        let now = self.shared.now();
        let mut g = self.shared.lock();
        g.engine.resend(now, id)?;
        g.published_at.insert(*id, std::time::Instant::now());
        drop(g);
        self.shared.kick();
        Ok(())
    }

    /// Removes a failed or not yet sent message from the conversation.
    pub fn discard(&self, id: &MsgId) -> Result<(), ClientError> {
        let mut g = self.shared.lock();
        g.engine.discard(id)?;
        g.published_at.remove(id);
        Ok(())
    }

    /// One message of the view by id.
    pub fn message(&self, id: &MsgId) -> Option<MessageSnapshot> {
        let g = self.shared.lock();
        let v = g.engine.message(id)?;
        Some(MessageSnapshot::of(&g.topic_name(v.topic), &v))
    }

    /// A topic's conversation as held locally: stored messages in seq order, pending and failed
    /// own messages at their virtual positions. Empty for an unknown topic.
    pub fn messages(&self, topic: &str) -> Vec<MessageSnapshot> {
        let g = self.shared.lock();
        match g.engine.topic_key(topic) {
            Some(key) => g
                .engine
                .messages(key)
                .map(|v| MessageSnapshot::of(topic, &v))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Pages in up to `limit` messages older than the oldest one held; they arrive as
    /// [`TopicEvent::Added`] with `history: true` (and are in [`Client::messages`]). Returns
    /// false when the topic's beginning is already held (nothing was asked).
    pub async fn load_history(&self, topic: &str, limit: u32) -> Result<bool, ClientError> {
        let asked = self.request(|g| {
            let key = key_of(g, topic)?;
            Ok(g.engine.load_history(key, limit)?)
        });
        match asked {
            Err(ClientError::Engine(EngineError::NoSuchMessage)) => Ok(false),
            Err(e) => Err(e),
            Ok(rx) => self.answer(rx).await.map(|_| true),
        }
    }

    /// Marks a topic read up to `seq`: the unread count drops and the other subscribers get a
    /// read receipt.
    pub fn mark_read(&self, topic: &str, seq: u64) -> Result<(), ClientError> {
        let mut g = self.shared.lock();
        let key = key_of(&g, topic)?;
        g.engine.mark_read(key, seq)?;
        drop(g);
        self.shared.kick();
        Ok(())
    }

    /// Tells the other subscribers the user is typing (at most once per few seconds).
    pub fn typing(&self, topic: &str) -> Result<(), ClientError> {
        let now = self.shared.now();
        let mut g = self.shared.lock();
        let key = key_of(&g, topic)?;
        g.engine.typing(now, key)?;
        drop(g);
        self.shared.kick();
        Ok(())
    }

    /// A topic's unread count (0 for an unknown topic).
    pub fn unread(&self, topic: &str) -> u64 {
        let g = self.shared.lock();
        g.engine.topic_key(topic).map_or(0, |k| g.engine.unread(k))
    }

    /// Unread messages across all topics.
    pub fn total_unread(&self) -> u64 {
        self.shared.lock().engine.total_unread()
    }

    /// Where the session stands.
    pub fn state(&self) -> SessionState {
        self.shared.lock().engine.state()
    }

    /// The user id this client is logged in as (empty before the first login).
    pub fn user(&self) -> String {
        self.shared.lock().engine.user().to_owned()
    }

    /// The user's conversations as the gateway lists them (every topic the user is subscribed
    /// to, with title, latest seq, read mark and unread count), including topics this client
    /// has not subscribed to. Asked over a short side connection; the session is not touched.
    pub async fn conversations(&self) -> Result<Vec<Conversation>, ClientError> {
        self.shared.directory.list().await
    }

    /// The names of the topics this client knows.
    pub fn topics(&self) -> Vec<String> {
        let g = self.shared.lock();
        g.engine
            .topics()
            .map(|(_, t)| t.name.as_str().to_owned())
            .collect()
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> ClientMetrics {
        let g = self.shared.lock();
        let s = g.engine.stats();
        let (sent, failed) = (g.sent, g.failed);
        let mut rtts: Vec<_> = g.rtts.iter().copied().collect();
        rtts.sort_unstable();
        let pick = |q: f64| {
            let i = ((rtts.len() as f64 - 1.0) * q).round() as usize;
            rtts.get(i).copied()
        };
        let elapsed = self.shared.epoch.elapsed().as_secs_f64().max(1e-3);
        ClientMetrics {
            sent,
            failed,
            send_success_rate: if sent + failed == 0 {
                1.0
            } else {
                sent as f64 / (sent + failed) as f64
            },
            retries: s.retransmits,
            received: s.received,
            arrival_rate: s.received as f64 / elapsed,
            reconnects: s.logins.saturating_sub(1),
            disconnects: s.disconnects,
            duplicates: s.duplicates,
            filtered: s.filtered,
            rtt_samples: rtts.len(),
            rtt_p50: pick(0.5),
            rtt_p99: pick(0.99),
        }
    }

    /// Customer: opens a consultation at a desk (empty = the default desk); the consultation's
    /// topic, already subscribed by the engine.
    pub async fn open_consultation(&self, desk: &str) -> Result<String, ClientError> {
        let cmd = ActionCmd::Open { desk: label(desk) };
        let (_, topic) = self.action(cmd).await?;
        topic.ok_or(ClientError::Refused(Code::INTERNAL))
    }

    /// Agent: sets the status (Online takes new consultations).
    pub async fn set_status(&self, status: AgentStatus) -> Result<(), ClientError> {
        self.action(ActionCmd::Status(status)).await.map(|_| ())
    }

    /// Agent: takes the longest-waiting customer; the consultation's topic.
    pub async fn take_next(&self) -> Result<String, ClientError> {
        let (_, topic) = self.action(ActionCmd::TakeNext).await?;
        topic.ok_or(ClientError::Refused(Code::INTERNAL))
    }

    /// Agent: hands a consultation to another agent (by user id).
    pub async fn transfer(&self, topic: &str, to: &str) -> Result<(), ClientError> {
        let key = key_of(&self.shared.lock(), topic)?;
        let cmd = ActionCmd::Transfer {
            topic: key,
            to: label(to),
        };
        self.action(cmd).await.map(|_| ())
    }

    /// Agent or customer: closes a consultation.
    pub async fn close_consultation(&self, topic: &str) -> Result<(), ClientError> {
        let key = key_of(&self.shared.lock(), topic)?;
        self.action(ActionCmd::Close { topic: key })
            .await
            .map(|_| ())
    }

    /// Stops the session now: the connection is closed, subscriptions end, every later call
    /// fails with [`EngineError::Closed`]. Messages not yet acknowledged are not sent.
    pub fn close(&self) {
        self.shared.lock().engine.close();
        self.shared.kick();
    }

    /// Waits until the session is logged in (or fails for good).
    pub async fn wait_online(&self) -> Result<(), ClientError> {
        let mut state = self.shared.state.subscribe();
        match state
            .wait_for(|s| s.is_online() || *s == SessionState::Failed)
            .await
        {
            Ok(s) if s.is_online() => Ok(()),
            _ => Err(self
                .shared
                .lock()
                .engine
                .error()
                .map_or(ClientError::Closed, ClientError::Engine)),
        }
    }

    async fn action(&self, cmd: ActionCmd) -> Result<(Code, Option<String>), ClientError> {
        let rx = self.request(|g| Ok(g.engine.action(cmd)?))?;
        self.answer(rx).await
    }

    /// Makes a request and registers for its answer under the same lock.
    fn request(
        &self,
        make: impl FnOnce(&mut Inner) -> Result<ReqId, ClientError>,
    ) -> Result<oneshot::Receiver<shared::Reply>, ClientError> {
        let (tx, rx) = oneshot::channel();
        let mut g = self.shared.lock();
        let req = make(&mut g)?;
        g.replies.insert(req, tx);
        drop(g);
        self.shared.kick();
        Ok(rx)
    }

    async fn answer(
        &self,
        rx: oneshot::Receiver<shared::Reply>,
    ) -> Result<(Code, Option<String>), ClientError> {
        match tokio::time::timeout(self.shared.request_timeout, rx).await {
            Err(_) => Err(ClientError::Timeout),
            Ok(Err(_)) => Err(ClientError::Closed),
            Ok(Ok((code, topic))) if code.is_success() => Ok((code, topic)),
            Ok(Ok((code, _))) => Err(ClientError::Refused(code)),
        }
    }
}

fn key_of(g: &Inner, topic: &str) -> Result<TopicKey, ClientError> {
    g.engine
        .topic_key(topic)
        .ok_or_else(|| ClientError::UnknownTopic(topic.to_owned()))
}
