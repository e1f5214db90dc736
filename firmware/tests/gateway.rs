//! The kiosk app against the real gateway, in-process and without root.
//!
//! Two embassy-net stacks are joined by `embassy-net-driver-channel` (a virtual Ethernet
//! cable): the device stack (10.0.0.2) runs [`kefu_firmware::run`]; the peer stack (10.0.0.1)
//! runs a TCP relay that forwards each connection to the real kefu gateway
//! (`kefu_host::gateway::start`) listening on 127.0.0.1. A host client agent speaks the binary
//! protocol to the gateway directly. Everything runs on one tokio thread (the channel driver is
//! single-threaded); embassy-time uses its std driver with the generic timer queue.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use embassy_net::tcp::TcpSocket;
use embassy_net::{Ipv4Address, Ipv4Cidr, Stack, StackResources, StaticConfigV4};
use embassy_net_driver_channel as ch;
use kefu_core::frame::Deframer;
use kefu_core::id::MsgId;
use kefu_core::proto::{
    self, Acc, AuthScheme, ClientPacket, Get, GetWhat, Head, Hi, Login, Pub, ServerPacket, Sub,
};
use kefu_firmware::{
    Config, Display, Input, Marks, NoStorage, Reply, Resources, Shown, Status, Storage,
};
use kefu_host::gateway::{GatewayConfig, Running, server};
use kefu_host::store::{NewUser, Role, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MTU: usize = 1514;
const RELAY_PORT: u16 = 7000;
const WAIT: Duration = Duration::from_secs(30);

// ----- the gateway ------------------------------------------------------------------------------

fn gw_config(dir: &std::path::Path) -> GatewayConfig {
    GatewayConfig {
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        tcp_addr: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.to_path_buf(),
        max_content: 256,
        ..GatewayConfig::default()
    }
}

/// Makes a device account offline, as `kefu device add` does; its token bytes.
async fn add_device(dir: &std::path::Path, name: &str) -> Vec<u8> {
    let key = server::open_key(dir).expect("key");
    let store = server::open_store(dir, true).expect("store");
    let user = store
        .add_user(NewUser {
            id: kefu_host::gateway::names::new_user_id(),
            login: name.to_owned(),
            name: name.to_owned(),
            pass_hash: None,
            role: Role::Agent,
        })
        .await
        .expect("device account");
    store.close().await;
    key.issue(&user.id, user.token_gen, 0)
}

// ----- a host client agent over the binary protocol ---------------------------------------------

/// What the client keeps of a server packet.
#[derive(Clone, Debug)]
enum Pkt {
    Ctrl {
        id: u32,
        code: u16,
        topic: String,
    },
    Data {
        topic: String,
        seq: u64,
        content: Vec<u8>,
    },
    Other,
}

struct Client {
    stream: TcpStream,
    deframer: Box<Deframer<65536>>,
    next: u32,
    backlog: Vec<Pkt>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let mut c = Client {
            stream: TcpStream::connect(addr).await.expect("connect"),
            deframer: Box::new(Deframer::new()),
            next: 0,
            backlog: Vec::new(),
        };
        let id = c.id();
        c.send(ClientPacket::Hi(Hi {
            id,
            ver: proto::PROTOCOL_VERSION,
            device: "test",
            platform: "linux",
            lang: "en",
            ua: "kefu-firmware-tests",
        }))
        .await;
        assert_eq!(c.ctrl(id).await.0, 200, "hi");
        c
    }

    fn id(&mut self) -> u32 {
        self.next += 1;
        self.next
    }

    async fn send(&mut self, p: ClientPacket<'_>) {
        let mut buf = vec![0u8; 4096];
        let n = proto::encode_client(&p, &mut buf).expect("encode");
        self.stream.write_all(&buf[..n]).await.expect("write");
    }

    async fn recv(&mut self) -> Pkt {
        loop {
            if let Some(f) = self.deframer.next_frame() {
                let body = f.expect("good frame");
                if body.is_empty() {
                    continue;
                }
                return match proto::decode_server(body).expect("good packet") {
                    ServerPacket::Ctrl(c) => Pkt::Ctrl {
                        id: c.id,
                        code: c.code.0,
                        topic: c.topic.to_owned(),
                    },
                    ServerPacket::Data(d) => Pkt::Data {
                        topic: d.topic.to_owned(),
                        seq: d.seq,
                        content: d.content.to_vec(),
                    },
                    _ => Pkt::Other,
                };
            }
            let n = tokio::time::timeout(WAIT, self.stream.read(self.deframer.spare_capacity()))
                .await
                .expect("a packet in time")
                .expect("read");
            assert!(n > 0, "the gateway closed the connection");
            self.deframer.commit(n);
        }
    }

    async fn wait(&mut self, pred: impl Fn(&Pkt) -> bool) -> Pkt {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(i);
        }
        loop {
            let p = self.recv().await;
            if pred(&p) {
                return p;
            }
            self.backlog.push(p);
        }
    }

    async fn ctrl(&mut self, id: u32) -> (u16, String) {
        match self
            .wait(|p| matches!(p, Pkt::Ctrl { id: i, .. } if *i == id))
            .await
        {
            Pkt::Ctrl { code, topic, .. } => (code, topic),
            _ => unreachable!(),
        }
    }

    async fn acc(&mut self, login: &str) {
        let id = self.id();
        let secret = format!("{login}:secret-pass");
        self.send(ClientPacket::Acc(Acc {
            id,
            scheme: AuthScheme::Basic,
            secret: secret.as_bytes(),
            name: login,
            login: true,
        }))
        .await;
        assert_eq!(self.ctrl(id).await.0, 201, "acc");
    }

    async fn login(&mut self, login: &str) {
        let id = self.id();
        let secret = format!("{login}:secret-pass");
        self.send(ClientPacket::Login(Login {
            id,
            scheme: AuthScheme::Basic,
            secret: secret.as_bytes(),
        }))
        .await;
        assert_eq!(self.ctrl(id).await.0, 200, "login");
    }

    async fn sub(&mut self, topic: &str) -> String {
        let id = self.id();
        self.send(ClientPacket::Sub(Sub {
            id,
            topic,
            since: None,
        }))
        .await;
        let (code, name) = self.ctrl(id).await;
        assert!(code == 200 || code == 201, "sub {topic}: {code}");
        name
    }

    async fn publish(&mut self, topic: &str, text: &str) {
        let id = self.id();
        // Unique across clients: a repeated id would be deduplicated by the gateway.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut rng = kefu_core::rng::SplitMix64::new(n * 7919 + 17);
        let msg_id = MsgId::generate(1_800_000_000_000 + n, &mut rng);
        self.send(ClientPacket::Pub(Pub {
            id,
            topic,
            msg_id,
            head: Head {
                mime: "",
                reply_to: None,
            },
            content: text.as_bytes(),
        }))
        .await;
        assert_eq!(self.ctrl(id).await.0, 202, "pub {text}");
    }

    /// The next pushed message on `topic` whose content is `text`.
    async fn data_with(&mut self, topic: &str, text: &str) -> u64 {
        match self
            .wait(|p| matches!(p, Pkt::Data { topic: t, content, .. } if t == topic && content == text.as_bytes()))
            .await
        {
            Pkt::Data { seq, .. } => seq,
            _ => unreachable!(),
        }
    }

    /// Every stored message of `topic` (contents in seq order).
    async fn history(&mut self, topic: &str) -> Vec<String> {
        let id = self.id();
        self.send(ClientPacket::Get(Get {
            id,
            topic,
            what: GetWhat::Data {
                since: 1,
                before: 1000,
                limit: 1000,
            },
        }))
        .await;
        let mut out = Vec::new();
        loop {
            match self.recv().await {
                Pkt::Ctrl { id: i, .. } if i == id => break,
                Pkt::Data { seq, content, .. } => {
                    out.push((seq, String::from_utf8(content).expect("utf8")))
                }
                _ => {}
            }
        }
        out.sort();
        out.dedup();
        out.into_iter().map(|(_, c)| c).collect()
    }
}

// ----- the network: two stacks on a virtual cable, and a relay to 127.0.0.1 --------------------

fn stack(
    mac: u8,
    ip: Ipv4Address,
) -> (
    Stack<'static>,
    embassy_net::Runner<'static, ch::Device<'static, MTU>>,
    ch::Runner<'static, MTU>,
) {
    let state = Box::leak(Box::new(ch::State::<MTU, 4, 4>::new()));
    let (runner, device) = ch::new(
        state,
        embassy_net_driver::HardwareAddress::Ethernet([2, 0, 0, 0, 0, mac]),
    );
    let cfg = embassy_net::Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(ip, 24),
        gateway: None,
        dns_servers: Default::default(),
    });
    let res = Box::leak(Box::new(StackResources::<4>::new()));
    let (stack, net) = embassy_net::new(device, cfg, res, u64::from(mac) * 31 + 7);
    (stack, net, runner)
}

/// Carries frames from one channel driver's transmit side to the other's receive side.
async fn cable(mut from: ch::TxRunner<'static, MTU>, mut to: ch::RxRunner<'static, MTU>) {
    loop {
        let pkt = from.tx_buf().await;
        let len = pkt.len();
        let mut tmp = [0u8; MTU];
        tmp[..len].copy_from_slice(pkt);
        from.tx_done();
        let buf = to.rx_buf().await;
        buf[..len].copy_from_slice(&tmp[..len]);
        to.rx_done(len);
    }
}

/// Accepts connections on the peer stack and relays each to the gateway's current TCP port.
async fn relay(peer: Stack<'static>, gw_port: Rc<Cell<u16>>) {
    loop {
        let rx = Box::leak(vec![0u8; 4096].into_boxed_slice());
        let tx = Box::leak(vec![0u8; 4096].into_boxed_slice());
        let mut sock = TcpSocket::new(peer, rx, tx);
        if sock.accept(RELAY_PORT).await.is_err() {
            continue;
        }
        let port = gw_port.get();
        tokio::task::spawn_local(async move {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let Ok(mut up) = TcpStream::connect(addr).await else {
                sock.abort();
                let _ = sock.flush().await;
                return;
            };
            let (mut ur, mut uw) = up.split();
            let (mut dr, mut dw) = sock.split();
            let down = async {
                let mut b = [0u8; 2048];
                loop {
                    let n = match dr.read(&mut b).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if uw.write_all(&b[..n]).await.is_err() {
                        break;
                    }
                }
            };
            let upward = async {
                let mut b = [0u8; 2048];
                loop {
                    let n = match ur.read(&mut b).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if embedded_io_async::Write::write_all(&mut dw, &b[..n])
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            };
            tokio::select! {
                _ = down => {}
                _ = upward => {}
            }
            sock.abort();
            let _ = sock.flush().await;
        });
    }
}

// ----- the board side: a display that records, an input fed by the test ------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum Line {
    Msg {
        topic: String,
        seq: Option<u64>,
        outgoing: bool,
        text: String,
    },
    Status(String),
}

#[derive(Clone, Default)]
struct Recorder(Rc<RefCell<Vec<Line>>>);

impl Display for Recorder {
    fn message(&mut self, m: &Shown<'_>) {
        let line = Line::Msg {
            topic: m.topic.to_owned(),
            seq: m.seq,
            outgoing: m.outgoing,
            text: String::from_utf8_lossy(m.content).into_owned(),
        };
        eprintln!("display: {line:?}");
        self.0.borrow_mut().push(line);
    }
    fn status(&mut self, s: &Status<'_>) {
        eprintln!("status: {s:?}");
        self.0.borrow_mut().push(Line::Status(format!("{s:?}")));
    }
    fn log(&mut self, line: std::fmt::Arguments<'_>) {
        eprintln!("log: {line}");
    }
}

impl Recorder {
    /// Received (not outgoing) messages shown, as (seq, text).
    fn received(&self) -> Vec<(u64, String)> {
        self.0
            .borrow()
            .iter()
            .filter_map(|l| match l {
                Line::Msg {
                    seq: Some(s),
                    outgoing: false,
                    text,
                    ..
                } => Some((*s, text.clone())),
                _ => None,
            })
            .collect()
    }
    fn has_status(&self, prefix: &str) -> usize {
        self.0
            .borrow()
            .iter()
            .filter(|l| matches!(l, Line::Status(s) if s.starts_with(prefix)))
            .count()
    }
}

struct Keypad {
    rx: tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
    current: (String, String),
}

impl Input for Keypad {
    async fn next(&mut self) -> Reply<'_> {
        match self.rx.recv().await {
            Some(r) => self.current = r,
            None => std::future::pending().await,
        }
        Reply {
            topic: &self.current.0,
            content: self.current.1.as_bytes(),
        }
    }
}

async fn until(what: &str, f: impl Fn() -> bool) {
    let start = tokio::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start_gw(dir: &std::path::Path, port: &Cell<u16>) -> Running {
    let running = server::start(gw_config(dir)).await.expect("gateway starts");
    port.set(running.tcp_addr.port());
    running
}

// ----- the rig: gateway, customer, cable, relay, terminal ---------------------------------------

/// A [`Storage`] in memory that survives the terminal's "power cycle" (its task being dropped).
#[derive(Clone, Default)]
struct MemStorage(Rc<RefCell<HashMap<String, Marks>>>);

impl Storage for MemStorage {
    fn load_token(&mut self, _buf: &mut [u8]) -> Option<usize> {
        None
    }
    fn load_marks(&mut self, topic: &str) -> Option<Marks> {
        self.0.borrow().get(topic).copied()
    }
    fn save_marks(&mut self, topic: &str, marks: Marks) {
        self.0.borrow_mut().insert(topic.to_owned(), marks);
    }
}

struct Rig {
    dir: tempfile::TempDir,
    gw_port: Rc<Cell<u16>>,
    gw: Option<Running>,
    alice: Client,
    desk: String,
    dev: Stack<'static>,
    dev_link: ch::StateRunner<'static>,
    token: &'static [u8],
}

impl Rig {
    async fn new() -> Rig {
        if let Ok(f) = std::env::var("KEFU_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(f))
                .with_writer(std::io::stderr)
                .try_init();
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let token = add_device(dir.path(), "counter7").await;
        let gw_port = Rc::new(Cell::new(0));
        let gw = Some(start_gw(dir.path(), &gw_port).await);

        // A customer-side agent makes the desk's group topic.
        let mut alice = Client::connect(SocketAddr::from(([127, 0, 0, 1], gw_port.get()))).await;
        alice.acc("alice").await;
        let desk = alice.sub("new").await;
        assert!(desk.starts_with("grp"), "a group: {desk}");

        // The cable and the two stacks.
        let (dev, mut dev_net, dev_ch) = stack(2, Ipv4Address::new(10, 0, 0, 2));
        let (peer, mut peer_net, peer_ch) = stack(1, Ipv4Address::new(10, 0, 0, 1));
        let (dev_link, dev_rx, dev_tx) = dev_ch.split();
        let (peer_link, peer_rx, peer_tx) = peer_ch.split();
        dev_link.set_link_state(embassy_net_driver::LinkState::Up);
        peer_link.set_link_state(embassy_net_driver::LinkState::Up);
        tokio::task::spawn_local(async move { dev_net.run().await });
        tokio::task::spawn_local(async move { peer_net.run().await });
        tokio::task::spawn_local(cable(dev_tx, peer_rx));
        tokio::task::spawn_local(cable(peer_tx, dev_rx));
        tokio::task::spawn_local(relay(peer, gw_port.clone()));
        Rig {
            dir,
            gw_port,
            gw,
            alice,
            desk,
            dev,
            dev_link,
            token: Box::leak(token.into_boxed_slice()),
        }
    }

    fn gw_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.gw_port.get()))
    }

    /// Boots a terminal on the device stack; its keypad and its task (abort = power off).
    fn boot<S: Storage + 'static>(
        &self,
        display: &Recorder,
        mut storage: S,
        seed: u64,
    ) -> (
        tokio::sync::mpsc::UnboundedSender<(String, String)>,
        tokio::task::JoinHandle<()>,
    ) {
        let (keys, rx) = tokio::sync::mpsc::unbounded_channel();
        let topics: &'static [&'static str] =
            Box::leak(vec![&*Box::leak(self.desk.clone().into_boxed_str())].into_boxed_slice());
        let mut cfg = Config::new(
            embassy_net::IpEndpoint::new(Ipv4Address::new(10, 0, 0, 1).into(), RELAY_PORT),
            "counter7",
            topics,
        );
        cfg.token = Some(self.token);
        cfg.seed = seed;
        let mut display = display.clone();
        let dev = self.dev;
        let task = tokio::task::spawn_local(async move {
            let res = Box::leak(Box::new(Resources::new()));
            let mut input = Keypad {
                rx,
                current: Default::default(),
            };
            kefu_firmware::run(dev, &cfg, res, &mut display, &mut input, &mut storage).await
        });
        (keys, task)
    }
}

// ----- the tests --------------------------------------------------------------------------------

#[tokio::test(flavor = "current_thread")]
async fn shows_acks_replies_and_resumes_across_a_gateway_restart_and_a_link_outage() {
    let local = tokio::task::LocalSet::new();
    local.run_until(conversation()).await;
}

async fn conversation() {
    let mut rig = Rig::new().await;
    let desk = rig.desk.clone();
    let display = Recorder::default();
    let (keys, _task) = rig.boot(&display, NoStorage, 42);
    until("the terminal subscribes the desk", || {
        display.has_status("Subscribed") >= 1
    })
    .await;
    assert!(display.has_status("Online") >= 1);

    // A message is shown (and so acknowledged), and the agent's reply arrives.
    rig.alice.publish(&desk, "hello 1").await;
    until("hello 1 shown", || display.received().len() == 1).await;
    assert_eq!(display.received(), vec![(1, "hello 1".to_owned())]);
    keys.send((desk.clone(), "reply 1".to_owned())).unwrap();
    let seq = rig.alice.data_with(&desk, "reply 1").await;
    assert_eq!(seq, 2);
    until("reply 1 stored", || display.has_status("Sent") == 1).await;

    // The link goes down: the terminal drops its connection and waits; a message sent
    // meanwhile is shown once the link is back.
    rig.dev_link
        .set_link_state(embassy_net_driver::LinkState::Down);
    until("link down seen", || display.has_status("LinkDown") >= 1).await;
    rig.alice.publish(&desk, "hello 3").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        display.received().len(),
        1,
        "nothing arrives while the link is down"
    );
    rig.dev_link
        .set_link_state(embassy_net_driver::LinkState::Up);
    until("hello 3 shown", || display.received().len() == 2).await;

    // The gateway goes away mid-conversation; the agent replies meanwhile.
    rig.gw.take().unwrap().shutdown().await;
    until("the terminal notices", || {
        display.has_status("Offline") >= 1
    })
    .await;
    keys.send((desk.clone(), "reply 2".to_owned())).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    rig.gw = Some(start_gw(rig.dir.path(), &rig.gw_port).await);

    // The terminal reconnects by itself, resumes, and its queued reply goes out once.
    until("online again", || display.has_status("Online") >= 2).await;
    until("reply 2 stored", || display.has_status("Sent") == 2).await;
    rig.alice = Client::connect(rig.gw_addr()).await;
    rig.alice.login("alice").await;
    rig.alice.sub(&desk).await;
    rig.alice.publish(&desk, "hello 2").await;
    until("hello 2 shown", || display.received().len() == 3).await;

    // Nothing lost, nothing doubled, in order, on both sides.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        display.received(),
        vec![
            (1, "hello 1".to_owned()),
            (3, "hello 3".to_owned()),
            (5, "hello 2".to_owned()),
        ]
    );
    assert_eq!(
        rig.alice.history(&desk).await,
        vec!["hello 1", "reply 1", "hello 3", "reply 2", "hello 2"]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_power_cycled_terminal_resumes_from_its_stored_marks() {
    let local = tokio::task::LocalSet::new();
    local.run_until(power_cycle()).await;
}

async fn power_cycle() {
    let mut rig = Rig::new().await;
    let desk = rig.desk.clone();
    let storage = MemStorage::default();

    let first = Recorder::default();
    let (_keys, task) = rig.boot(&first, storage.clone(), 7);
    until("subscribed", || first.has_status("Subscribed") >= 1).await;
    rig.alice.publish(&desk, "m1").await;
    rig.alice.publish(&desk, "m2").await;
    until("m1 and m2 shown", || first.received().len() == 2).await;
    assert_eq!(
        storage.0.borrow().get(&desk).copied(),
        Some(Marks { shown: 2, read: 2 }),
        "the marks are stored as messages are shown"
    );

    // Power off; a message arrives meanwhile; power on with the same storage.
    task.abort();
    let _ = task.await;
    rig.alice.publish(&desk, "m3").await;
    let second = Recorder::default();
    let (_keys, _task) = rig.boot(&second, storage.clone(), 8);
    until("m3 shown after the power cycle", || {
        second.received().len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        second.received(),
        vec![(3, "m3".to_owned())],
        "resumed after the stored mark: nothing shown twice, nothing lost"
    );
}
