//! The app's loop: one TCP connection, the engine, the board's display, input and storage.
//!
//! Each turn drains the engine in the documented order (commands, then frames to write, then
//! events, handled by [`crate::app`]), then sleeps until the first of: bytes from the gateway,
//! the engine's next timeout, the marks' save deadline, an entry from the agent, or
//! [`LINK_POLL`] (to notice the link going down or up).

use core::fmt;
use core::future::pending;
use core::mem::MaybeUninit;

use embassy_futures::select::{Either3, select3};
use embassy_net::tcp::{State as TcpState, TcpSocket};
use embassy_net::{IpEndpoint, Stack};
use embassy_time::{Duration as EDuration, Instant as EInstant, Timer, with_timeout};
use embedded_io_async::{Read, Write};
use kefu_core::engine::{Command, Credentials, EngineConfig, EngineError, MAX_SECRET, label};
use kefu_core::time::Instant;

use crate::app::App;
use crate::capacity::{FRAME, KioskEngine, READ_CHUNK, SOCKET_RX, SOCKET_TX};
use crate::marks::{MarkTable, TableError};
use crate::ui::{Display, Entry, Input, Marks, Status, Storage};

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
    /// More desk topics are configured than the table holds
    /// ([`TABLE`](crate::capacity::TABLE), with the consultations kept from before).
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
    /// Desk topics to follow besides consultations (group topics of the desk's team; at most
    /// [`TABLE`](crate::capacity::TABLE), and each one leaves a consultation slot fewer).
    pub topics: &'a [&'a str],
    /// Serve customers: after every login set the agent's status (Online while there is room
    /// for another consultation, Busy when full) and take the consultations the desk assigns
    /// (see [`crate::app`]). On by default.
    pub serve: bool,
    /// Save the marks after this many messages went unsaved (default 16; see
    /// [`crate::marks`]).
    pub save_batch: u32,
    /// ... or this long after the first unsaved one (default 30 s).
    pub save_delay: EDuration,
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
    /// A configuration with the core's default tuning: serving customers, no desk topics.
    pub fn new(gateway: IpEndpoint, device: &'a str) -> Self {
        Config {
            gateway,
            device,
            platform: "kefu-firmware",
            token: None,
            topics: &[],
            serve: true,
            save_batch: 16,
            save_delay: EDuration::from_secs(30),
            seed: 0x6b65_6675,
            wall_ms_at_zero: 0,
            tune: |_| {},
        }
    }
}

/// Every buffer of the app, sized at compile time (about 19 KB on Cortex-M). Put it in a
/// `StaticCell` with `init_with(Resources::new)`, which builds it in place: `init(Resources::new())`
/// may build it on the stack first.
pub struct Resources {
    /// The session's engine, built in place by [`new_engine`] (written over, never dropped:
    /// it owns no resources).
    engine: MaybeUninit<KioskEngine>,
    rx: [u8; SOCKET_RX],
    tx: [u8; SOCKET_TX],
    frame: [u8; FRAME],
    chunk: [u8; READ_CHUNK],
    /// The followed topics and their marks, kept across sessions (and loaded from storage
    /// when the first one starts).
    table: MarkTable,
    loaded: bool,
}

impl Resources {
    /// Empty buffers.
    pub const fn new() -> Self {
        Resources {
            engine: MaybeUninit::uninit(),
            rx: [0; SOCKET_RX],
            tx: [0; SOCKET_TX],
            frame: [0; FRAME],
            chunk: [0; READ_CHUNK],
            table: MarkTable::new(),
            loaded: false,
        }
    }
}

impl Default for Resources {
    fn default() -> Self {
        Self::new()
    }
}

pub(crate) fn now() -> Instant {
    Instant::from_micros(EInstant::now().as_micros())
}

/// How a session ended.
enum End {
    /// For good: a fresh session starts after [`RETRY_FAILED`].
    Failed(RunError),
    /// A consultation needed an engine topic slot: a fresh engine starts at once.
    Recycle,
    /// The agent switched the terminal off ([`Entry::Shutdown`]).
    Shutdown,
}

/// Runs the terminal until the agent switches it off ([`Entry::Shutdown`]): sessions one
/// after the other (a new one after a session failed for good, [`RETRY_FAILED`] later), each
/// reconnecting by itself.
pub async fn run<D: Display, I: Input, S: Storage>(
    stack: Stack<'_>,
    cfg: &Config<'_>,
    res: &mut Resources,
    display: &mut D,
    input: &mut I,
    storage: &mut S,
) {
    let mut attempt: u64 = 0;
    loop {
        match session(stack, cfg, attempt, res, display, input, storage).await {
            End::Failed(err) => {
                display.status(&Status::Failed(err));
                log!(*display, "session failed: {}", err);
                Timer::after(RETRY_FAILED).await;
            }
            End::Recycle => log!(*display, "fresh engine for the followed topics"),
            End::Shutdown => return,
        }
        attempt = attempt.wrapping_add(1);
    }
}

/// One session: runs until the engine fails for good, needs renewing, or the terminal is
/// switched off.
async fn session<D: Display, I: Input, S: Storage>(
    stack: Stack<'_>,
    cfg: &Config<'_>,
    attempt: u64,
    res: &mut Resources,
    display: &mut D,
    input: &mut I,
    storage: &mut S,
) -> End {
    let Resources {
        engine,
        rx,
        tx,
        frame,
        chunk,
        table,
        loaded,
    } = res;
    let mut token = [0u8; MAX_SECRET];
    let creds = match storage.load_token(&mut token) {
        Some(n) => token.get(..n).and_then(Credentials::token),
        None => match cfg.token {
            Some(t) => Credentials::token(t),
            None => return End::Failed(RunError::NoToken),
        },
    };
    let Some(creds) = creds else {
        return End::Failed(RunError::TokenTooLong);
    };
    if !*loaded {
        storage.load_marks(table);
        *loaded = true;
    }
    for name in cfg.topics {
        if table.contains(name) {
            continue;
        }
        match table.set(name, Marks::default()) {
            Ok(()) => {}
            Err(TableError::Full) => return End::Failed(RunError::TooManyTopics),
            Err(_) => return End::Failed(RunError::BadTopic),
        }
    }
    let mut ecfg = EngineConfig::new(cfg.device, creds);
    ecfg.platform = label(cfg.platform);
    ecfg.ua = label(concat!("kefu-firmware/", env!("CARGO_PKG_VERSION")));
    ecfg.wall_ms_at_zero = cfg.wall_ms_at_zero;
    (cfg.tune)(&mut ecfg);
    let seed = cfg.seed ^ attempt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let engine = new_engine(engine, ecfg, seed);
    if cfg.serve && engine.subscribe("me").is_err() {
        return End::Failed(RunError::BadTopic);
    }
    for row in table.rows() {
        let m = row.marks;
        // The app marks read what it shows: nothing up to `shown` is unread.
        if engine
            .resume_topic(&row.topic, m.shown, m.read.max(m.shown))
            .is_err()
        {
            return End::Failed(RunError::BadTopic);
        }
    }

    let mut app = App::new(display, storage, table, cfg);
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
                        close_connection(&mut socket).await;
                    }
                    engine.handle_disconnected(now());
                }
            }
        }

        // 2. Frames to write.
        transmit(engine, &mut socket, frame, &mut connected).await;

        // 3. Events.
        app.drain(engine);
        if let Some(e) = engine.error() {
            drop_connection(&mut socket).await;
            return End::Failed(RunError::Session(e));
        }
        if app.recycle && app.is_idle() {
            app.flush();
            if connected {
                close_connection(&mut socket).await;
            }
            return End::Recycle;
        }

        // 4. Sleep until something happens.
        let cap = EInstant::now() + LINK_POLL;
        let mut at = match engine.poll_timeout() {
            Some(t) => EInstant::from_micros(t.as_micros()).min(cap),
            None => cap,
        };
        if let Some(save) = app.save_deadline() {
            at = at.min(save);
        }
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
            Either3::Third(Entry::Shutdown) => {
                app.shutdown(engine);
                transmit(engine, &mut socket, frame, &mut connected).await;
                if connected {
                    close_connection(&mut socket).await;
                }
                engine.close();
                return End::Shutdown;
            }
            Either3::Third(entry) => app.entry(engine, entry),
        }
    }
}

/// Writes every frame the engine has for the connection (dropped while there is none).
async fn transmit(
    engine: &mut KioskEngine,
    socket: &mut TcpSocket<'_>,
    frame: &mut [u8; FRAME],
    connected: &mut bool,
) {
    while let Some(n) = engine.poll_transmit(now(), frame) {
        if !*connected {
            continue;
        }
        let bytes = frame.get(..n).unwrap_or_default();
        if !matches!(
            with_timeout(WRITE_TIMEOUT, socket.write_all(bytes)).await,
            Ok(Ok(()))
        ) {
            *connected = false;
            drop_connection(socket).await;
            engine.handle_disconnected(now());
        }
    }
}

/// Builds the engine into its static slot. Kept out of line so that the temporary engine
/// (`Engine::new` returns it by value: about 16 KB on Cortex-M, plus 6.5 KB inside `new`) lives
/// only in this short frame, not in the session future's poll frame for its whole life. It is
/// the app's stack peak; an in-place constructor in kefu-core would remove it.
#[inline(never)]
fn new_engine(
    slot: &mut MaybeUninit<KioskEngine>,
    cfg: EngineConfig,
    seed: u64,
) -> &mut KioskEngine {
    slot.write(KioskEngine::new(now(), cfg, seed))
}

/// Closes the connection in order (FIN after what was written), then drops it.
async fn close_connection(socket: &mut TcpSocket<'_>) {
    socket.close();
    let _ = with_timeout(EDuration::from_secs(1), socket.flush()).await;
    drop_connection(socket).await;
}

/// Aborts the connection (RST) and waits briefly for the stack to send it.
async fn drop_connection(socket: &mut TcpSocket<'_>) {
    socket.abort();
    let _ = with_timeout(EDuration::from_millis(500), socket.flush()).await;
}
