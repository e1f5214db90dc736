//! The driver task: one per client, it owns the connection and feeds the engine in the drain
//! order of `docs/ARCHITECTURE.md` ("Driving the engine"): commands (connect / close), then
//! frames to write, then events to hand out, then sleep until the engine's timeout, bytes from
//! the gateway, a wake-up from a handle, or room in a full subscription.
//!
//! "Handed to the app" means delivered into the subscription's bounded channel: when one is
//! full, the driver keeps the event it holds, takes no more events from the engine and feeds it
//! no more bytes (so the engine acknowledges nothing more, and TCP pushes back on the gateway)
//! until the application reads.

use std::collections::VecDeque;
use std::future::pending;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use kefu_core::engine::{Command, Event};
use kefu_core::pool::{MessageState, TopicKey};
use kefu_core::proto::NoteWhat;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::config::Endpoint;
use super::cut::FrameCut;
use super::shared::{FRAME_BYTES, Inner, Shared, SharedRef};
use super::transport::Conn;
use super::types::{ClientEvent, MessageSnapshot, TopicEvent};

/// Bytes offered to the engine per lock hold at most (a frame is offered whole up to this).
const FEED_MAX: usize = 4096;

/// A topic event on its way into one subscription's channel.
type Delivery = (mpsc::Sender<TopicEvent>, TopicEvent);

/// The driver's own state (the engine is in [`Shared`]).
pub(crate) struct Driver {
    shared: SharedRef,
    endpoint: Endpoint,
    tls: Option<Arc<rustls::ClientConfig>>,
    connect_timeout: Duration,
    conn: Option<Conn>,
    /// Bytes read and not yet taken by the engine: `input[pending]`.
    input: Vec<u8>,
    pending: Range<usize>,
    /// Where the frames in `input` end: the engine is fed one frame per lock hold.
    cut: FrameCut,
    /// Frame buffer for `poll_transmit`.
    frame: Vec<u8>,
    /// Deliveries taken from the engine, waiting for room in their channel.
    held: VecDeque<Delivery>,
}

/// What ended a wait.
enum Woke {
    Timer,
    Kick,
    Room,
    Read(std::io::Result<usize>),
}

impl Driver {
    pub(crate) fn new(
        shared: SharedRef,
        endpoint: Endpoint,
        tls: Option<Arc<rustls::ClientConfig>>,
        connect_timeout: Duration,
    ) -> Self {
        Driver {
            shared,
            endpoint,
            tls,
            connect_timeout,
            conn: None,
            input: Vec::new(),
            pending: 0..0,
            cut: FrameCut::default(),
            frame: vec![0; FRAME_BYTES],
            held: VecDeque::new(),
        }
    }

    /// Runs until the engine stops for good (closed, or a sticky error).
    pub(crate) async fn run(mut self) {
        loop {
            self.commands().await;
            if !self.transmit().await {
                continue;
            }
            let flowing = self.dispatch();
            if flowing && !self.pending.is_empty() && self.feed() > 0 {
                continue;
            }
            if self.finished() {
                break;
            }
            self.wait().await;
        }
        if let Some(c) = self.conn.take() {
            c.close().await;
        }
        let mut g = self.shared.lock_driver();
        g.routes.clear();
        g.replies.clear();
        let state = g.engine.state();
        drop(g);
        self.shared.state.send_replace(state);
    }

    /// 1. `poll_command` until `None`.
    async fn commands(&mut self) {
        loop {
            let cmd = self.shared.lock_driver().engine.poll_command();
            match cmd {
                None => return,
                Some(Command::Connect) => {
                    if let Some(c) = self.conn.take() {
                        c.close().await;
                    }
                    self.pending = 0..0;
                    self.cut.reset();
                    let opened = tokio::time::timeout(
                        self.connect_timeout,
                        Conn::open(&self.endpoint, self.tls.as_ref()),
                    )
                    .await;
                    let now = self.shared.now();
                    let mut g = self.shared.lock_driver();
                    match opened {
                        Ok(Ok(c)) => {
                            self.conn = Some(c);
                            g.connect_error = None;
                            g.engine.handle_connected(now);
                        }
                        Ok(Err(e)) => {
                            tracing::debug!("kefu client: connect failed: {e}");
                            g.connect_error = Some(e.to_string());
                            g.engine.handle_connect_failed(now);
                        }
                        Err(_) => {
                            g.connect_error =
                                Some(format!("no connection within {:?}", self.connect_timeout));
                            g.engine.handle_connect_failed(now);
                        }
                    }
                }
                Some(Command::Close) => {
                    if let Some(c) = self.conn.take() {
                        c.close().await;
                    }
                    self.lost();
                }
            }
        }
    }

    /// The connection is gone: tell the engine.
    fn lost(&mut self) {
        self.conn = None;
        self.pending = 0..0;
        self.cut.reset();
        let now = self.shared.now();
        self.shared.lock_driver().engine.handle_disconnected(now);
    }

    /// 2. `poll_transmit` until `None`, then write. False if the connection broke.
    async fn transmit(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return true;
        };
        let mut frames = Vec::new();
        // One frame per lock hold, so a publishing handle never waits behind a long batch.
        loop {
            let now = self.shared.now();
            let n = self
                .shared
                .lock_driver()
                .engine
                .poll_transmit(now, &mut self.frame);
            let Some(n) = n else { break };
            frames.push(self.frame.get(..n).unwrap_or_default().to_vec());
        }
        if frames.is_empty() {
            return true;
        }
        if let Err(e) = conn.send(&frames).await {
            tracing::debug!("kefu client: write failed: {e}");
            self.lost();
            return false;
        }
        true
    }

    /// 3. `poll_event` until `None`, handing each event out. False if a subscription is full.
    fn dispatch(&mut self) -> bool {
        let shared = self.shared.clone();
        loop {
            while let Some((tx, ev)) = self.held.pop_front() {
                match tx.try_send(ev) {
                    Ok(()) | Err(TrySendError::Closed(_)) => {}
                    Err(TrySendError::Full(ev)) => {
                        self.held.push_front((tx, ev));
                        return false;
                    }
                }
            }
            let mut g = shared.lock_driver();
            let Some(ev) = g.engine.poll_event() else {
                return true;
            };
            route(&mut g, &shared, ev, &mut self.held);
        }
    }

    /// Offers the next frame read (at most [`FEED_MAX`] bytes of it) to the engine in one lock
    /// hold; the main loop drains events in between. How many bytes it took.
    fn feed(&mut self) -> usize {
        let now = self.shared.now();
        let rest = self.input.get(self.pending.clone()).unwrap_or_default();
        let bytes = rest
            .get(..self.cut.next_len(rest, FEED_MAX))
            .unwrap_or_default();
        let mut g = self.shared.lock_driver();
        let taken = g.engine.handle_bytes(now, bytes).min(bytes.len());
        drop(g);
        self.cut.consumed(bytes.get(..taken).unwrap_or_default());
        self.pending.start += taken;
        taken
    }

    fn finished(&self) -> bool {
        self.conn.is_none() && self.shared.lock_driver().engine.error().is_some()
    }

    /// 4. Sleep until the engine's timeout, bytes, a wake-up or room in a full subscription.
    async fn wait(&mut self) {
        let deadline = self.shared.lock_driver().engine.poll_timeout();
        let at = deadline.and_then(|at| {
            self.shared
                .epoch
                .checked_add(Duration::from_micros(at.as_micros()))
        });
        let shared = self.shared.clone();
        let reading = self.pending.is_empty();
        let Driver {
            conn, input, held, ..
        } = self;
        let woke = {
            let sleep = async {
                match at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => pending().await,
                }
            };
            let read = async {
                match conn.as_mut() {
                    Some(c) if reading => c.recv(input).await,
                    _ => pending().await,
                }
            };
            let room = async {
                match held.front() {
                    Some((tx, _)) => drop(tx.reserve().await),
                    None => pending().await,
                }
            };
            tokio::select! {
                biased;
                r = read => Woke::Read(r),
                _ = shared.wake.notified() => Woke::Kick,
                _ = room => Woke::Room,
                _ = sleep => Woke::Timer,
            }
        };
        match woke {
            Woke::Read(Ok(n)) if n > 0 => {
                self.pending = 0..n;
                self.feed();
            }
            Woke::Read(_) => self.lost(),
            Woke::Timer => {
                let now = self.shared.now();
                self.shared.lock_driver().engine.handle_timeout(now);
            }
            Woke::Kick | Woke::Room => {}
        }
    }
}

/// Turns one engine event into deliveries to subscriptions and client-wide events.
fn route(g: &mut Inner, shared: &Shared, ev: Event, out: &mut VecDeque<Delivery>) {
    let to_topic = |g: &Inner, topic: TopicKey, ev: TopicEvent, out: &mut VecDeque<Delivery>| {
        if let Some(routes) = g.routes.get(&topic) {
            for r in routes {
                out.push_back((r.tx.clone(), ev.clone()));
            }
        }
    };
    match ev {
        Event::State(s) => {
            shared.state.send_replace(s);
            let _ = shared.events.send(ClientEvent::State(s));
        }
        Event::Connected => {
            let _ = shared.events.send(ClientEvent::Connected);
        }
        Event::Disconnected => {
            let _ = shared.events.send(ClientEvent::Disconnected);
        }
        Event::Subscribed { topic, latest } => {
            to_topic(g, topic, TopicEvent::Subscribed { latest }, out);
        }
        Event::MessageAdded {
            topic, id, history, ..
        } => {
            if !g.routes.contains_key(&topic) {
                return;
            }
            let name = g.topic_name(topic);
            if let Some(v) = g.engine.message(&id) {
                let message = MessageSnapshot::of(&name, &v);
                to_topic(g, topic, TopicEvent::Added { message, history }, out);
            }
        }
        Event::MessageChanged {
            topic,
            id,
            state,
            seq,
        } => {
            match state {
                MessageState::Sent => {
                    g.sent += 1;
                    g.record_rtt(&id);
                }
                MessageState::Failed(_) => {
                    g.failed += 1;
                    g.published_at.remove(&id);
                }
                _ => {}
            }
            to_topic(g, topic, TopicEvent::Changed { id, state, seq }, out);
        }
        Event::Unread { topic, count } => {
            to_topic(g, topic, TopicEvent::Unread { count }, out);
            let _ = shared.events.send(ClientEvent::Unread {
                topic: g.topic_name(topic),
                count,
                total: g.engine.total_unread(),
            });
        }
        Event::Receipt {
            topic,
            from,
            what,
            seq,
        } => {
            let from = from.as_str().to_owned();
            let ev = match what {
                NoteWhat::Kp => TopicEvent::Typing { from },
                NoteWhat::Recv => TopicEvent::Receipt {
                    from,
                    read: false,
                    seq,
                },
                NoteWhat::Read => TopicEvent::Receipt {
                    from,
                    read: true,
                    seq,
                },
            };
            to_topic(g, topic, ev, out);
        }
        Event::Presence { topic, src, what } => {
            let src = src.as_str().to_owned();
            let ev = TopicEvent::Presence {
                src: src.clone(),
                what,
            };
            to_topic(g, topic, ev, out);
            let _ = shared.events.send(ClientEvent::Presence {
                topic: g.topic_name(topic),
                src,
                what,
            });
        }
        Event::Reply { req, code, topic } => {
            let name = topic.map(|t| g.topic_name(t));
            if let Some(tx) = g.replies.remove(&req) {
                let _ = tx.send((code, name));
            } else if !code.is_success()
                && let Some(t) = topic
            {
                to_topic(g, t, TopicEvent::Refused { code }, out);
            }
        }
        Event::Reconciled { .. } => {}
    }
}
