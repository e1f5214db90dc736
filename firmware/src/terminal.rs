//! The app's loop: one TCP connection, the engine, the board's display, input and storage.
//!
//! Each turn drains the engine in the documented order (commands, then frames to write, then
//! events), then sleeps until the first of: bytes from the gateway, the engine's next timeout,
//! a reply from the agent, or [`LINK_POLL`] (to notice the link going down or up).

use core::fmt;
use core::future::pending;

use embassy_futures::select::{Either3, select3};
use embassy_net::tcp::{State as TcpState, TcpSocket};
use embassy_net::{IpEndpoint, Stack};
use embassy_time::{Duration as EDuration, Instant as EInstant, Timer, with_timeout};
use embedded_io_async::{Read, Write};
use heapless::Vec;
use kefu_core::engine::{
    Command, Credentials, EngineConfig, EngineError, Event, MAX_SECRET, SessionState, label,
};
use kefu_core::id::MsgId;
use kefu_core::pool::{FailReason, MessageState, TopicKey};
use kefu_core::proto::Head;
use kefu_core::time::Instant;

use crate::capacity::{FRAME, KioskEngine, OUTBOX, READ_CHUNK, SOCKET_RX, SOCKET_TX, TOPICS};
use crate::ui::{Display, Input, Marks, Shown, Status, Storage};

/// Longest sleep between two looks at the link state.
pub const LINK_POLL: EDuration = EDuration::from_millis(250);
/// How long a TCP connect may take before it counts as failed.
pub const CONNECT_TIMEOUT: EDuration = EDuration::from_secs(10);
/// How long writing one frame may take (the send buffer full of unacknowledged data means a
/// dead connection).
pub const WRITE_TIMEOUT: EDuration = EDuration::from_secs(10);
/// How long the app waits before starting a fresh session after one failed for good.
pub const RETRY_FAILED: EDuration = EDuration::from_secs(60);
/// A connection with no traffic at all for this long is aborted by the TCP stack (the core's
/// keepalive pings every 25 s and declares the peer dead after 60 s, so this is a backstop).
pub const TCP_IDLE: EDuration = EDuration::from_secs(120);

/// Why a session stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum RunError {
    /// Neither the storage nor the configuration holds a device token.
    NoToken,
    /// The device token is longer than the engine keeps ([`MAX_SECRET`] bytes).
    TokenTooLong,
    /// More topics are configured than [`TOPICS`].
    TooManyTopics,
    /// A configured topic name is not valid.
    BadTopic,
    /// The engine stopped for good (login or version refused).
    Session(EngineError),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::NoToken => f.write_str("no device token"),
            RunError::TokenTooLong => f.write_str("device token too long"),
            RunError::TooManyTopics => f.write_str("too many topics configured"),
            RunError::BadTopic => f.write_str("invalid topic name configured"),
            RunError::Session(e) => write!(f, "session stopped: {e}"),
        }
    }
}

impl core::error::Error for RunError {}

/// What the terminal is and where its gateway is.
#[derive(Clone, Copy, Debug)]
pub struct Config<'a> {
    /// The gateway's framed-TCP endpoint.
    pub gateway: IpEndpoint,
    /// Device name, sent in `hi`.
    pub device: &'a str,
    /// Platform name, sent in `hi`.
    pub platform: &'a str,
    /// The device token (decoded bytes), used when [`Storage::load_token`] has none.
    pub token: Option<&'a [u8]>,
    /// The desk's topics to follow (at most [`TOPICS`]).
    pub topics: &'a [&'a str],
    /// Entropy for message ids and reconnect jitter: give each terminal and each boot a
    /// different value (a hardware RNG, or a serial number mixed with a boot counter).
    pub seed: u64,
    /// Wall-clock ms since the Unix epoch at the time driver's zero, if known (0 = unknown; the
    /// gateway's `hi` answer corrects it).
    pub wall_ms_at_zero: u64,
    /// Adjusts the engine's tuning (backoff, keepalive, retries) before the session starts.
    pub tune: fn(&mut EngineConfig),
}

impl<'a> Config<'a> {
    /// A configuration with the core's default tuning.
    pub fn new(gateway: IpEndpoint, device: &'a str, topics: &'a [&'a str]) -> Self {
        Config {
            gateway,
            device,
            platform: "kefu-firmware",
            token: None,
            topics,
            seed: 0x6b65_6675,
            wall_ms_at_zero: 0,
            tune: |_| {},
        }
    }
}

/// Every buffer of the app, sized at compile time (about 18.7 KB on Cortex-M). Put it in a
/// `StaticCell` with `init_with(Resources::new)`, which builds it in place: `init(Resources::new())`
/// may build it on the stack first.
pub struct Resources {
    engine: Option<KioskEngine>,
    rx: [u8; SOCKET_RX],
    tx: [u8; SOCKET_TX],
    frame: [u8; FRAME],
    chunk: [u8; READ_CHUNK],
}

impl Resources {
    /// Empty buffers.
    pub const fn new() -> Self {
        Resources {
            engine: None,
            rx: [0; SOCKET_RX],
            tx: [0; SOCKET_TX],
            frame: [0; FRAME],
            chunk: [0; READ_CHUNK],
        }
    }
}

impl Default for Resources {
    fn default() -> Self {
        Self::new()
    }
}

fn now() -> Instant {
    Instant::from_micros(EInstant::now().as_micros())
}

/// Runs the terminal for ever: sessions one after the other (a new one only after a session
/// failed for good, [`RETRY_FAILED`] later), each reconnecting by itself.
pub async fn run<D: Display, I: Input, S: Storage>(
    stack: Stack<'_>,
    cfg: &Config<'_>,
    res: &mut Resources,
    display: &mut D,
    input: &mut I,
    storage: &mut S,
) -> ! {
    let mut attempt: u64 = 0;
    loop {
        let err = session(stack, cfg, attempt, res, display, input, storage).await;
        display.status(&Status::Failed(err));
        log!(*display, "session failed: {}", err);
        attempt = attempt.wrapping_add(1);
        Timer::after(RETRY_FAILED).await;
    }
}

/// Per-session state of the app besides the engine.
struct App<'c, D, S> {
    display: &'c mut D,
    storage: &'c mut S,
    /// Replies the core gave up on, sent again after the next login.
    failed: Vec<MsgId, OUTBOX>,
    /// Highest seq shown per topic in the current batch of events (read marks to send).
    shown: [u64; TOPICS],
}

/// One session: runs until the engine fails for good.
async fn session<D: Display, I: Input, S: Storage>(
    stack: Stack<'_>,
    cfg: &Config<'_>,
    attempt: u64,
    res: &mut Resources,
    display: &mut D,
    input: &mut I,
    storage: &mut S,
) -> RunError {
    let Resources {
        engine,
        rx,
        tx,
        frame,
        chunk,
    } = res;
    let mut token = [0u8; MAX_SECRET];
    let creds = match storage.load_token(&mut token) {
        Some(n) => token.get(..n).and_then(Credentials::token),
        None => match cfg.token {
            Some(t) => Credentials::token(t),
            None => return RunError::NoToken,
        },
    };
    let Some(creds) = creds else {
        return RunError::TokenTooLong;
    };
    if cfg.topics.len() > TOPICS {
        return RunError::TooManyTopics;
    }
    let mut ecfg = EngineConfig::new(cfg.device, creds);
    ecfg.platform = label(cfg.platform);
    ecfg.ua = label(concat!("kefu-firmware/", env!("CARGO_PKG_VERSION")));
    ecfg.wall_ms_at_zero = cfg.wall_ms_at_zero;
    (cfg.tune)(&mut ecfg);
    let seed = cfg.seed ^ attempt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let engine = new_engine(engine, ecfg, seed);
    for name in cfg.topics {
        let added = match storage.load_marks(name) {
            Some(m) => engine.resume_topic(name, m.shown, m.read),
            None => engine.subscribe(name),
        };
        if added.is_err() {
            return RunError::BadTopic;
        }
    }

    let mut app = App {
        display,
        storage,
        failed: Vec::new(),
        shown: [0; TOPICS],
    };
    let mut socket = TcpSocket::new(stack, rx, tx);
    socket.set_timeout(Some(TCP_IDLE));
    let mut connected = false;
    let mut link: Option<bool> = None;

    loop {
        // The link: no connection attempts while it is down.
        let up = stack.is_link_up() && stack.is_config_up();
        if link != Some(up) {
            link = Some(up);
            if up {
                engine.handle_link_up(now());
                app.display.status(&Status::LinkUp);
            } else {
                engine.handle_link_down(now());
                app.display.status(&Status::LinkDown);
                if connected {
                    connected = false;
                    drop_connection(&mut socket).await;
                    engine.handle_disconnected(now());
                }
            }
        }

        // 1. Commands.
        while let Some(cmd) = engine.poll_command() {
            match cmd {
                Command::Connect => {
                    if socket.state() != TcpState::Closed {
                        drop_connection(&mut socket).await;
                    }
                    log!(*app.display, "connecting");
                    match with_timeout(CONNECT_TIMEOUT, socket.connect(cfg.gateway)).await {
                        Ok(Ok(())) => {
                            connected = true;
                            engine.handle_connected(now());
                        }
                        _ => {
                            drop_connection(&mut socket).await;
                            engine.handle_connect_failed(now());
                        }
                    }
                }
                Command::Close => {
                    if connected {
                        connected = false;
                        socket.close();
                        let _ = with_timeout(EDuration::from_secs(1), socket.flush()).await;
                        drop_connection(&mut socket).await;
                    }
                    engine.handle_disconnected(now());
                }
            }
        }

        // 2. Frames to write.
        while let Some(n) = engine.poll_transmit(now(), frame) {
            if !connected {
                continue;
            }
            let bytes = frame.get(..n).unwrap_or_default();
            if !matches!(
                with_timeout(WRITE_TIMEOUT, socket.write_all(bytes)).await,
                Ok(Ok(()))
            ) {
                connected = false;
                drop_connection(&mut socket).await;
                engine.handle_disconnected(now());
            }
        }

        // 3. Events.
        app.drain(engine);
        if let Some(e) = engine.error() {
            drop_connection(&mut socket).await;
            return RunError::Session(e);
        }

        // 4. Sleep until something happens.
        let cap = EInstant::now() + LINK_POLL;
        let at = match engine.poll_timeout() {
            Some(t) => EInstant::from_micros(t.as_micros()).min(cap),
            None => cap,
        };
        let read = async {
            if connected {
                Read::read(&mut socket, chunk).await
            } else {
                pending().await
            }
        };
        match select3(read, Timer::at(at), input.next()).await {
            Either3::First(Ok(n)) if n > 0 => {
                let t = now();
                let mut bytes = chunk.get(..n).unwrap_or_default();
                // handle_bytes stops when its event queue is full: drain and offer the rest.
                while !bytes.is_empty() {
                    let taken = engine.handle_bytes(t, bytes);
                    bytes = bytes.get(taken..).unwrap_or_default();
                    if app.drain(engine) == 0 && taken == 0 {
                        break;
                    }
                }
            }
            Either3::First(_) => {
                log!(*app.display, "connection closed by the gateway");
                connected = false;
                drop_connection(&mut socket).await;
                engine.handle_disconnected(now());
            }
            Either3::Second(()) => engine.handle_timeout(now()),
            Either3::Third(reply) => {
                let head = Head {
                    mime: "",
                    reply_to: None,
                };
                if let Err(e) = engine.publish(now(), reply.topic, head, reply.content) {
                    app.display.status(&Status::Refused(e));
                }
            }
        }
    }
}

/// Builds the engine into its static slot. Kept out of line so that the temporary engine
/// lives only in this short frame, not in the session future's poll frame for its whole life.
#[inline(never)]
fn new_engine(slot: &mut Option<KioskEngine>, cfg: EngineConfig, seed: u64) -> &mut KioskEngine {
    *slot = None;
    slot.insert(KioskEngine::new(now(), cfg, seed))
}

/// Aborts the connection (RST) and waits briefly for the stack to send it.
async fn drop_connection(socket: &mut TcpSocket<'_>) {
    socket.abort();
    let _ = with_timeout(EDuration::from_millis(500), socket.flush()).await;
}

impl<D: Display, S: Storage> App<'_, D, S> {
    /// Hands every queued event to the display; returns how many there were. Read marks go
    /// out once per batch.
    fn drain(&mut self, engine: &mut KioskEngine) -> usize {
        let mut count = 0;
        while let Some(ev) = engine.poll_event() {
            count += 1;
            self.on_event(engine, ev);
        }
        for (i, seq) in self.shown.iter_mut().enumerate() {
            if *seq > 0 {
                let _ = engine.mark_read(i as TopicKey, *seq);
                *seq = 0;
            }
        }
        count
    }

    fn on_event(&mut self, engine: &mut KioskEngine, ev: Event) {
        let name = |engine: &KioskEngine, t: TopicKey| {
            engine.topic(t).map(|t| t.name.clone()).unwrap_or_default()
        };
        match ev {
            Event::State(SessionState::Connecting) => self.display.status(&Status::Connecting),
            Event::State(SessionState::Offline) => self.display.status(&Status::Offline),
            Event::State(_) => {}
            Event::Connected => {
                self.display.status(&Status::Online {
                    user: engine.user(),
                });
                for id in core::mem::take(&mut self.failed) {
                    let _ = engine.resend(now(), &id);
                }
            }
            Event::Disconnected => log!(*self.display, "disconnected"),
            Event::Subscribed { topic, latest } => {
                let topic = name(engine, topic);
                self.display.status(&Status::Subscribed {
                    topic: &topic,
                    latest,
                });
            }
            Event::MessageAdded {
                topic, id, history, ..
            } => {
                let tname = name(engine, topic);
                let Some(m) = engine.message(&id) else {
                    return;
                };
                let seq = m.seq();
                self.display.message(&Shown {
                    topic: &tname,
                    seq,
                    id,
                    from: m.from,
                    outgoing: m.outgoing,
                    content: m.content,
                });
                if let (Some(seq), false) = (seq, history) {
                    let read = engine.topic(topic).map_or(0, |t| t.read).max(seq);
                    self.storage.save_marks(&tname, Marks { shown: seq, read });
                    if let Some(s) = self.shown.get_mut(usize::from(topic)) {
                        *s = (*s).max(seq);
                    }
                }
            }
            Event::MessageChanged {
                topic,
                id,
                state,
                seq,
            } => {
                let tname = name(engine, topic);
                match (state, seq) {
                    (MessageState::Sent, Some(seq)) => {
                        self.display.status(&Status::Sent {
                            topic: &tname,
                            id,
                            seq,
                        });
                        if let Some(m) = engine.message(&id) {
                            self.display.message(&Shown {
                                topic: &tname,
                                seq: Some(seq),
                                id,
                                from: m.from,
                                outgoing: true,
                                content: m.content,
                            });
                        }
                    }
                    (MessageState::Failed(reason), _) => {
                        self.display
                            .status(&Status::SendFailed { topic: &tname, id });
                        // Timed out: sent again (same id, so never doubled) after the next
                        // login. Refused by the gateway: shown as failed, not retried.
                        if reason == FailReason::TimedOut && !self.failed.contains(&id) {
                            let _ = self.failed.push(id);
                        }
                    }
                    _ => {}
                }
            }
            Event::Unread { topic, count } => {
                let tname = name(engine, topic);
                self.display.status(&Status::Unread {
                    topic: &tname,
                    count,
                });
            }
            Event::Reply { req, code, .. } => log!(*self.display, "reply {}: {}", req, code.0),
            Event::Receipt { .. } | Event::Presence { .. } | Event::Reconciled { .. } => {}
        }
    }
}
