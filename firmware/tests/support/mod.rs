//! Test support for the kiosk app against the real gateway: accounts made offline (as
//! `kefu device add` / `kefu user add` do), the gateway itself, customers on the real client
//! SDK, and the board side of a terminal — a display that records, a keypad fed by the test,
//! storage that survives a power cycle.
#![allow(dead_code)] // each test binary uses its own part of this

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use embassy_net::Stack;
use futures_util::StreamExt;
use kefu_firmware::marks::ENCODED_MAX;
use kefu_firmware::{Config, Display, Entry, Input, MarkTable, Resources, Shown, Status, Storage};
use kefu_host::client::{Client, ClientConfig, Subscription, TopicEvent};
use kefu_host::gateway::{GatewayConfig, Running, auth, names, server};
use kefu_host::store::{NewUser, Role, Store, TopicKind, TopicRecord};

/// Longest wait for anything a test expects.
pub const WAIT: Duration = Duration::from_secs(30);
/// Every customer's password.
pub const PASSWORD: &str = "secret-pass";

// ----- accounts and the gateway -----------------------------------------------------------------

/// Makes a device account offline, as `kefu device add` does; its token bytes.
pub async fn add_device(dir: &std::path::Path, name: &str) -> Vec<u8> {
    let key = server::open_key(dir).expect("key");
    let user = add_account(dir, name, None, Role::Agent).await;
    key.issue(&user, 0, 0)
}

/// Makes a customer account with [`PASSWORD`] offline; its user id.
pub async fn add_customer(dir: &std::path::Path, login: &str) -> String {
    let hash = auth::hash_password(PASSWORD).expect("hash");
    add_account(dir, login, Some(hash), Role::Customer).await
}

async fn add_account(
    dir: &std::path::Path,
    login: &str,
    pass_hash: Option<String>,
    role: Role,
) -> String {
    let store = server::open_store(dir, true).expect("store");
    let user = store
        .add_user(NewUser {
            id: names::new_user_id(),
            login: login.to_owned(),
            name: login.to_owned(),
            pass_hash,
            role,
        })
        .await
        .expect("account");
    store.close().await;
    user.id
}

/// Makes a group topic owned by `owner` offline (a desk's team topic); its name.
pub async fn add_group(dir: &std::path::Path, owner: &str) -> String {
    let store = server::open_store(dir, true).expect("store");
    let name = names::new_group_name();
    store
        .create_topic(
            TopicRecord {
                name: name.clone(),
                kind: TopicKind::Group,
                title: "desk".into(),
                owner: owner.to_owned(),
                created_ms: 0,
                latest: 0,
                deleted: false,
                consult: None,
            },
            vec![owner.to_owned()],
        )
        .await
        .expect("group");
    store.close().await;
    name
}

/// Starts the gateway on `tcp` (port 0: a free one) with the data in `dir`; terminals get at
/// most 256 content bytes, as the firmware's capacities ask.
pub async fn start_gateway(dir: &std::path::Path, tcp: SocketAddr) -> Running {
    if let Ok(f) = std::env::var("KEFU_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(f))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let cfg = GatewayConfig {
        http_addr: SocketAddr::new(tcp.ip(), 0),
        tcp_addr: tcp,
        data_dir: dir.to_path_buf(),
        max_content: 256,
        ..GatewayConfig::default()
    };
    server::start(cfg).await.expect("gateway starts")
}

// ----- customers on the real SDK ----------------------------------------------------------------

/// A customer logged in with the SDK over the framed TCP protocol, reconnecting quickly.
pub async fn customer(gateway: SocketAddr, login: &str) -> Client {
    let mut c = ClientConfig::password(format!("tcp://{gateway}"), login, PASSWORD);
    c.backoff.base = kefu_core::time::Duration::from_millis(50);
    c.backoff.cap = kefu_core::time::Duration::from_millis(500);
    c.connect_timeout = Duration::from_secs(2);
    c.request_timeout = WAIT;
    Client::connect(c).await.expect("customer logs in")
}

/// The next event on `sub` matching `pred`, skipping others; panics after [`WAIT`].
pub async fn next(sub: &mut Subscription, what: &str, pred: impl Fn(&TopicEvent) -> bool) {
    let found = tokio::time::timeout(WAIT, async {
        while let Some(ev) = sub.next().await {
            if pred(&ev) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "timed out waiting for: {what}");
}

/// The customer's view of a message from the agent with this text.
pub fn from_agent(ev: &TopicEvent, text: &str) -> bool {
    matches!(ev, TopicEvent::Added { message, history: false }
        if !message.outgoing && message.text() == text)
}

/// A read receipt from the agent up to at least `seq`.
pub fn read_up_to(ev: &TopicEvent, seq: u64) -> bool {
    matches!(ev, TopicEvent::Receipt { read: true, seq: s, .. } if *s >= seq)
}

/// Texts of a customer's stored messages in `topic`, in seq order.
pub fn stored_texts(client: &Client, topic: &str) -> Vec<String> {
    client
        .messages(topic)
        .iter()
        .filter(|m| m.seq().is_some())
        .map(|m| m.text().into_owned())
        .collect()
}

// ----- the board side: display, keypad, storage -------------------------------------------------

/// A line the terminal showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// A message.
    Msg {
        topic: String,
        seq: Option<u64>,
        outgoing: bool,
        replayed: bool,
        text: String,
    },
    /// A status line, as the app's `Display` impl of `Status` prints it.
    Status(String),
    /// A log line.
    Log(String),
}

/// A received message as shown: (topic, seq, text, replayed).
pub type Received = (String, u64, String, bool);

/// A [`Display`] that records every line (and prints it, for a failing test's output).
#[derive(Clone, Default)]
pub struct Recorder(Rc<RefCell<Vec<Line>>>);

impl Display for Recorder {
    fn message(&mut self, m: &Shown<'_>) {
        eprintln!("display: {m}");
        self.0.borrow_mut().push(Line::Msg {
            topic: m.topic.to_owned(),
            seq: m.seq,
            outgoing: m.outgoing,
            replayed: m.replayed,
            text: String::from_utf8_lossy(m.content).into_owned(),
        });
    }
    fn status(&mut self, s: &Status<'_>) {
        eprintln!("status: {s}");
        self.0.borrow_mut().push(Line::Status(s.to_string()));
    }
    fn log(&mut self, line: std::fmt::Arguments<'_>) {
        eprintln!("log: {line}");
        self.0.borrow_mut().push(Line::Log(line.to_string()));
    }
}

impl Recorder {
    /// Received (not outgoing) messages shown.
    pub fn received(&self) -> Vec<Received> {
        self.0
            .borrow()
            .iter()
            .filter_map(|l| match l {
                Line::Msg {
                    topic,
                    seq: Some(s),
                    outgoing: false,
                    replayed,
                    text,
                } => Some((topic.clone(), *s, text.clone(), *replayed)),
                _ => None,
            })
            .collect()
    }

    /// Received texts shown.
    pub fn texts(&self) -> Vec<String> {
        self.received().into_iter().map(|r| r.2).collect()
    }

    /// How many status lines start with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.0
            .borrow()
            .iter()
            .filter(|l| matches!(l, Line::Status(s) if s.starts_with(prefix)))
            .count()
    }

    /// How many log lines contain `text`.
    pub fn logs(&self, text: &str) -> usize {
        self.0
            .borrow()
            .iter()
            .filter(|l| matches!(l, Line::Log(s) if s.contains(text)))
            .count()
    }
}

/// The terminal's keyboard: lines sent by the test, read as the board would
/// ([`Entry::from_line`]).
pub struct Keypad {
    rx: tokio::sync::mpsc::UnboundedReceiver<String>,
    line: String,
}

impl Input for Keypad {
    async fn next(&mut self) -> Entry<'_> {
        // mpsc::recv is cancel-safe: a line is taken only when returned.
        match self.rx.recv().await {
            Some(l) => self.line = l,
            None => std::future::pending().await,
        }
        Entry::from_line(&self.line)
    }
}

/// Storage in memory that survives a terminal's power cycle (its task being dropped); keeps
/// the table as bytes, as a flash store would, and counts the writes.
#[derive(Clone, Default)]
pub struct MemStorage(Rc<RefCell<(Option<Vec<u8>>, usize)>>);

impl MemStorage {
    /// The table as last saved.
    pub fn saved(&self) -> Option<MarkTable> {
        let bytes = self.0.borrow().0.clone()?;
        Some(MarkTable::decode(&bytes).expect("a table we wrote"))
    }
    /// How many times the table was written.
    pub fn writes(&self) -> usize {
        self.0.borrow().1
    }
}

impl Storage for MemStorage {
    fn load_token(&mut self, _buf: &mut [u8]) -> Option<usize> {
        None
    }
    fn load_marks(&mut self, table: &mut MarkTable) {
        if let Some(t) = self.saved() {
            *table = t;
        }
    }
    fn save_marks(&mut self, table: &MarkTable) {
        let mut buf = [0u8; ENCODED_MAX];
        let n = table.encode(&mut buf).expect("fits");
        let mut s = self.0.borrow_mut();
        s.0 = Some(buf[..n].to_vec());
        s.1 += 1;
    }
}

/// A terminal running on a LocalSet: its keypad, display and task (abort = power off).
pub struct Terminal {
    pub keys: tokio::sync::mpsc::UnboundedSender<String>,
    pub display: Recorder,
    pub task: tokio::task::JoinHandle<()>,
}

impl Terminal {
    /// Types a line on the terminal's keyboard.
    pub fn type_line(&self, line: &str) {
        self.keys.send(line.to_owned()).expect("terminal running");
    }
}

/// Boots a terminal running [`kefu_firmware::run`] on `stack`.
pub fn boot<S: Storage + 'static>(
    stack: Stack<'static>,
    cfg: Config<'static>,
    storage: S,
) -> Terminal {
    let (keys, rx) = tokio::sync::mpsc::unbounded_channel();
    let display = Recorder::default();
    let mut shown = display.clone();
    let mut storage = storage;
    let task = tokio::task::spawn_local(async move {
        let res = Box::leak(Box::new(Resources::new()));
        let mut input = Keypad {
            rx,
            line: String::new(),
        };
        kefu_firmware::run(stack, &cfg, res, &mut shown, &mut input, &mut storage).await
    });
    Terminal {
        keys,
        display,
        task,
    }
}

/// A terminal configuration for a device with `token`, following `topics`.
pub fn terminal_config(
    gateway: embassy_net::IpEndpoint,
    token: Vec<u8>,
    topics: &[&str],
    seed: u64,
) -> Config<'static> {
    let topics: Vec<&'static str> = topics
        .iter()
        .map(|t| &*Box::leak(t.to_string().into_boxed_str()))
        .collect();
    let mut cfg = Config::new(gateway, "counter7");
    cfg.token = Some(Box::leak(token.into_boxed_slice()));
    cfg.topics = Box::leak(topics.into_boxed_slice());
    cfg.seed = seed;
    cfg.tune = |e| {
        e.backoff.base = kefu_core::time::Duration::from_millis(100);
        e.backoff.cap = kefu_core::time::Duration::from_secs(1);
    };
    cfg
}

/// Waits until `f` holds; panics naming `what` after [`WAIT`].
pub async fn until(what: &str, f: impl Fn() -> bool) {
    let start = tokio::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
