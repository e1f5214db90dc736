//! Test support: a gateway on 127.0.0.1 in a temporary data folder, and a raw binary-protocol
//! client over real TCP that speaks the core's frames directly.
#![allow(dead_code)]

pub mod client;
pub mod inspect;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kefu_core::frame::Deframer;
use kefu_core::id::MsgId;
use kefu_core::proto::{
    self, Acc, Ack, Action, ActionWhat, AuthScheme, ClientPacket, Code, CtrlParams, Get, GetWhat,
    Head, Hi, Leave, Login, MetaItem as CoreMeta, Note, NoteWhat, Pub, ServerPacket, Sub,
};
use kefu_host::gateway::listening::Listening;
use kefu_host::gateway::wire::{Head as OwnedHead, MetaItem, Out, Params, SubInfo, TopicDesc};
use kefu_host::gateway::{GatewayConfig, Running, start};
use kefu_host::model::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for any one packet.
pub const WAIT: Duration = Duration::from_secs(10);

/// A gateway on ephemeral loopback ports with its own data folder.
pub struct Gw {
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
    pub http: SocketAddr,
    pub tcp: SocketAddr,
}

/// A config on ephemeral loopback ports in `dir`, not syncing to disk (tests that need
/// durability use the `kefu` binary with its defaults).
pub fn test_config(dir: &std::path::Path) -> GatewayConfig {
    GatewayConfig {
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        tcp_addr: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.to_path_buf(),
        durable: false,
        ..GatewayConfig::default()
    }
}

impl Gw {
    pub async fn start() -> Gw {
        Gw::start_with(|_| {}).await
    }

    pub async fn start_with(change: impl FnOnce(&mut GatewayConfig)) -> Gw {
        Gw::start_in(tempfile::tempdir().expect("tempdir"), change).await
    }

    /// A gateway on a data folder prepared beforehand (accounts made with `kefu user add`).
    pub async fn start_in(dir: tempfile::TempDir, change: impl FnOnce(&mut GatewayConfig)) -> Gw {
        let mut cfg = test_config(dir.path());
        change(&mut cfg);
        let running = start(cfg).await.expect("gateway starts");
        Gw {
            http: running.http_addr,
            tcp: running.tcp_addr,
            running: Some(running),
            dir,
        }
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// Stops the gateway and starts a new one on the same data folder (new ports).
    pub async fn restart(&mut self) {
        self.restart_with(|_| {}).await;
    }

    /// Like [`Gw::restart`], with a changed config.
    pub async fn restart_with(&mut self, change: impl FnOnce(&mut GatewayConfig)) {
        self.stop().await;
        let mut cfg = test_config(self.dir.path());
        change(&mut cfg);
        let running = start(cfg).await.expect("gateway restarts");
        self.http = running.http_addr;
        self.tcp = running.tcp_addr;
        self.running = Some(running);
    }

    /// A client connected over TCP, greeted, logged in with a password.
    pub async fn login(&self, login: &str, password: &str) -> (Raw, String) {
        let mut c = Raw::connect(self.tcp).await;
        c.hi().await;
        match c.login(login, password).await {
            (Code::OK, Params::Login { user, .. }) => (c, user),
            other => panic!("login {login} failed: {other:?}"),
        }
    }

    /// A client connected over TCP, greeted, with a fresh account logged in.
    pub async fn user(&self, login: &str) -> (Raw, String) {
        let mut c = Raw::connect(self.tcp).await;
        c.hi().await;
        let id = c.acc(login, "secret-pass").await;
        (c, id)
    }
}

/// A raw binary-protocol client.
pub struct Raw {
    stream: TcpStream,
    deframer: Box<Deframer<{ 128 * 1024 }>>,
    next_id: u32,
    /// Packets received while waiting for something else.
    pub backlog: VecDeque<Out>,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.expect("connect"),
            deframer: Box::new(Deframer::new()),
            next_id: 0,
            backlog: VecDeque::new(),
        }
    }

    /// Connects; None if nothing listens there.
    pub async fn try_connect(addr: SocketAddr) -> Option<Raw> {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .ok()?
            .ok()?;
        Some(Raw {
            stream,
            deframer: Box::new(Deframer::new()),
            next_id: 0,
            backlog: VecDeque::new(),
        })
    }

    pub fn next_id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    pub async fn send(&mut self, p: ClientPacket<'_>) {
        let mut buf = vec![0u8; 128 * 1024];
        let n = proto::encode_client(&p, &mut buf).expect("encode");
        self.send_bytes(&buf[..n]).await;
    }

    pub async fn send_bytes(&mut self, b: &[u8]) {
        self.stream.write_all(b).await.expect("write");
    }

    /// Sends a packet; false if the connection is gone (for tests that cut gateways down).
    pub async fn try_send(&mut self, p: ClientPacket<'_>) -> bool {
        let mut buf = vec![0u8; 128 * 1024];
        let n = proto::encode_client(&p, &mut buf).expect("encode");
        self.stream.write_all(&buf[..n]).await.is_ok()
    }

    /// Runs a customer-service action; the code, text and params of its answer.
    pub async fn action(&mut self, what: ActionWhat<'_>) -> (Code, String, Params) {
        let id = self.next_id();
        self.send(ClientPacket::Action(Action { id, what })).await;
        self.ctrl(id).await
    }

    /// Detaches from a topic (staying subscribed unless `unsub`).
    pub async fn leave(&mut self, topic: &str, unsub: bool) -> Code {
        let id = self.next_id();
        self.send(ClientPacket::Leave(Leave { id, topic, unsub }))
            .await;
        self.ctrl(id).await.0
    }

    /// Logs in with a token; the code and params.
    pub async fn login_token(&mut self, token: &[u8]) -> (Code, Params) {
        let id = self.next_id();
        self.send(ClientPacket::Login(Login {
            id,
            scheme: AuthScheme::Token,
            secret: token,
        }))
        .await;
        let (code, _, params) = self.ctrl(id).await;
        (code, params)
    }

    /// Every stored message of `topic`, fetched in pages, in seq order.
    pub async fn full_history(&mut self, topic: &str, latest: u64) -> Vec<Arc<Message>> {
        const PAGE: u64 = 500;
        let mut all = Vec::new();
        let mut since = 1;
        while since <= latest {
            let before = (since + PAGE).min(latest + 1);
            let (code, page) = self
                .history(topic, since, before, (before - since) as u32)
                .await;
            assert_eq!(code, Code::OK, "get data {since}..{before} on {topic}");
            all.extend(page);
            since = before;
        }
        all
    }

    /// The next packet, or None if the gateway closed the connection.
    pub async fn recv(&mut self) -> Option<Out> {
        if let Some(o) = self.backlog.pop_front() {
            return Some(o);
        }
        self.recv_wire().await
    }

    async fn recv_wire(&mut self) -> Option<Out> {
        loop {
            match self.deframer.next_frame() {
                Some(Ok([])) => continue,
                Some(Ok(body)) => {
                    let p = proto::decode_server(body).expect("the gateway sends valid packets");
                    return Some(to_out(p));
                }
                Some(Err(e)) => panic!("the gateway sent a bad frame: {e:?}"),
                None => {}
            }
            let spare = self.deframer.spare_capacity();
            let n = tokio::time::timeout(WAIT, self.stream.read(spare))
                .await
                .expect("a packet in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.deframer.commit(n);
        }
    }

    /// Waits for the ctrl answering `id`, keeping everything else in the backlog.
    pub async fn ctrl(&mut self, id: u32) -> (Code, String, Params) {
        if let Some(pos) = self
            .backlog
            .iter()
            .position(|o| matches!(o, Out::Ctrl { id: i, .. } if *i == id))
            && let Some(Out::Ctrl {
                code, text, params, ..
            }) = self.backlog.remove(pos)
        {
            return (code, text, params);
        }
        loop {
            match self.recv_wire().await {
                Some(Out::Ctrl {
                    id: i,
                    code,
                    text,
                    params,
                    ..
                }) if i == id => return (code, text, params),
                Some(other) => self.backlog.push_back(other),
                None => panic!("connection closed while waiting for ctrl {id}"),
            }
        }
    }

    /// Waits for the next packet matching `pred`, keeping others in the backlog.
    pub async fn wait_for(&mut self, pred: impl Fn(&Out) -> bool) -> Out {
        if let Some(pos) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(pos).expect("present");
        }
        loop {
            match self.recv_wire().await {
                Some(o) if pred(&o) => return o,
                Some(o) => self.backlog.push_back(o),
                None => panic!("connection closed while waiting"),
            }
        }
    }

    /// The next `data` on `topic`.
    pub async fn data(&mut self, topic: &str) -> Arc<Message> {
        match self
            .wait_for(|o| matches!(o, Out::Data { topic: t, .. } if t == topic))
            .await
        {
            Out::Data { msg, .. } => msg,
            _ => unreachable!(),
        }
    }

    pub async fn hi(&mut self) {
        let id = self.next_id();
        self.send(ClientPacket::Hi(Hi {
            id,
            ver: proto::PROTOCOL_VERSION,
            device: "test",
            platform: "linux",
            lang: "en",
            ua: "kefu-tests",
        }))
        .await;
        let (code, ..) = self.ctrl(id).await;
        assert_eq!(code, Code::OK, "hi accepted");
    }

    /// Creates an account and logs in; the user id.
    pub async fn acc(&mut self, login: &str, password: &str) -> String {
        let id = self.next_id();
        let secret = format!("{login}:{password}");
        self.send(ClientPacket::Acc(Acc {
            id,
            scheme: AuthScheme::Basic,
            secret: secret.as_bytes(),
            name: login,
            login: true,
        }))
        .await;
        match self.ctrl(id).await {
            (Code::CREATED, _, Params::Login { user, .. }) => user,
            other => panic!("acc failed: {other:?}"),
        }
    }

    /// Logs in with a password; the code and params.
    pub async fn login(&mut self, login: &str, password: &str) -> (Code, Params) {
        let id = self.next_id();
        let secret = format!("{login}:{password}");
        self.send(ClientPacket::Login(Login {
            id,
            scheme: AuthScheme::Basic,
            secret: secret.as_bytes(),
        }))
        .await;
        let (code, _, params) = self.ctrl(id).await;
        (code, params)
    }

    /// Subscribes; the code and params.
    pub async fn sub(&mut self, topic: &str, since: Option<u64>) -> (Code, Params) {
        let id = self.next_id();
        self.send(ClientPacket::Sub(Sub { id, topic, since })).await;
        let (code, _, params) = self.ctrl(id).await;
        (code, params)
    }

    /// Creates a group topic (`sub new`); its name.
    pub async fn new_group(&mut self) -> String {
        let id = self.next_id();
        self.send(ClientPacket::Sub(Sub {
            id,
            topic: "new",
            since: None,
        }))
        .await;
        match self
            .wait_for(|o| matches!(o, Out::Ctrl { id: i, .. } if *i == id))
            .await
        {
            Out::Ctrl {
                code: Code::CREATED,
                topic,
                ..
            } => topic,
            other => panic!("sub new failed: {other:?}"),
        }
    }

    /// Sends a pub without waiting; its request id.
    pub async fn send_pub(&mut self, topic: &str, msg_id: MsgId, content: &[u8]) -> u32 {
        let id = self.next_id();
        self.send_pub_as(id, topic, msg_id, content).await;
        id
    }

    pub async fn send_pub_as(&mut self, id: u32, topic: &str, msg_id: MsgId, content: &[u8]) {
        self.send(ClientPacket::Pub(Pub {
            id,
            topic,
            msg_id,
            head: Head::default(),
            content,
        }))
        .await;
    }

    /// Publishes and waits for the answer.
    pub async fn publish(&mut self, topic: &str, msg_id: MsgId, content: &[u8]) -> (Code, Params) {
        let id = self.send_pub(topic, msg_id, content).await;
        let (code, _, params) = self.ctrl(id).await;
        (code, params)
    }

    pub async fn ack(&mut self, topic: &str, seq: u64) {
        self.send(ClientPacket::Ack(Ack { topic, seq })).await;
    }

    pub async fn note(&mut self, topic: &str, what: NoteWhat, seq: u64) {
        self.send(ClientPacket::Note(Note { topic, what, seq }))
            .await;
    }

    /// A history page: the messages and the ctrl code.
    pub async fn history(
        &mut self,
        topic: &str,
        since: u64,
        before: u64,
        limit: u32,
    ) -> (Code, Vec<Arc<Message>>) {
        let id = self.next_id();
        self.send(ClientPacket::Get(Get {
            id,
            topic,
            what: GetWhat::Data {
                since,
                before,
                limit,
            },
        }))
        .await;
        let mut msgs = Vec::new();
        loop {
            match self.recv_wire().await {
                Some(Out::Ctrl { id: i, code, .. }) if i == id => return (code, msgs),
                Some(Out::Data { topic: t, msg }) if t == topic && msgs.len() < limit as usize => {
                    // Pushes on the same topic can interleave; a pull answer is contiguous and
                    // ascending, pushes are kept aside when they break that.
                    if msgs.last().is_none_or(|m: &Arc<Message>| m.seq < msg.seq) {
                        msgs.push(msg)
                    } else {
                        self.backlog.push_back(Out::Data { topic: t, msg })
                    }
                }
                Some(o) => self.backlog.push_back(o),
                None => panic!("closed during get"),
            }
        }
    }
}

/// A fresh message id.
pub fn new_id() -> MsgId {
    let mut rng = kefu_core::rng::SplitMix64::new(rand::random());
    MsgId::generate(kefu_host::gateway::context::now_ms(), &mut rng)
}

fn to_out(p: ServerPacket<'_>) -> Out {
    match p {
        ServerPacket::Ctrl(c) => Out::Ctrl {
            id: c.id,
            code: c.code,
            text: c.text.to_owned(),
            topic: c.topic.to_owned(),
            params: match c.params {
                CtrlParams::None => Params::None,
                CtrlParams::Hi {
                    ver,
                    server_ms,
                    max_content,
                } => Params::Hi {
                    ver,
                    server_ms,
                    max_content,
                    session: String::new(),
                },
                CtrlParams::Login {
                    user,
                    token,
                    expires_ms,
                } => Params::Login {
                    user: user.to_owned(),
                    token: token.to_vec(),
                    expires_ms,
                },
                CtrlParams::Pub { seq, ts, dup } => Params::Pub { seq, ts, dup },
                CtrlParams::Sub {
                    latest,
                    read,
                    recv,
                    acked,
                } => Params::Sub {
                    latest,
                    read,
                    recv,
                    acked,
                },
                CtrlParams::Count { count } => Params::Count { count, what: "" },
                CtrlParams::Digest(d) => Params::Digest(d),
                CtrlParams::Topic { name, peer } => Params::Topic {
                    name: name.to_owned(),
                    peer: peer.to_owned(),
                },
                CtrlParams::RetryAfter { ms } => Params::RetryAfter { ms },
            },
        },
        ServerPacket::Data(d) => Out::Data {
            topic: d.topic.to_owned(),
            msg: Arc::new(Message {
                seq: d.seq,
                msg_id: d.msg_id,
                from: d.from.to_owned(),
                ts: d.ts,
                head: OwnedHead {
                    mime: d.head.mime.to_owned(),
                    reply_to: d.head.reply_to,
                },
                content: d.content.to_vec(),
            }),
        },
        ServerPacket::Meta(m) => Out::Meta {
            id: m.id,
            topic: m.topic.to_owned(),
            item: match m.item {
                CoreMeta::Desc(d) => MetaItem::Desc(TopicDesc {
                    title: d.title.to_owned(),
                    seq: d.seq,
                    read: d.read,
                    recv: d.recv,
                    unread: d.unread,
                }),
                CoreMeta::Sub(s) => MetaItem::Sub(SubInfo {
                    name: s.name.to_owned(),
                    title: s.title.to_owned(),
                    seq: s.seq,
                    read: s.read,
                    recv: s.recv,
                    unread: s.unread,
                    online: s.online,
                }),
            },
        },
        ServerPacket::Pres(p) => Out::Pres {
            topic: p.topic.to_owned(),
            src: p.src.to_owned(),
            what: p.what,
        },
        ServerPacket::Info(i) => Out::Info {
            topic: i.topic.to_owned(),
            from: i.from.to_owned(),
            what: i.what,
            seq: i.seq,
        },
    }
}

/// Runs the `kefu` binary with `args`; (success, stdout, stderr).
pub fn kefu(args: &[&str]) -> (bool, String, String) {
    outcome(kefu_command(args).output().expect("kefu runs"))
}

/// The `kefu` command with `args`, not reading the data folder or password from the
/// environment.
pub fn kefu_command(args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kefu"));
    cmd.args(args)
        .env_remove("KEFU_DATA")
        .env_remove("KEFU_PASSWORD");
    cmd
}

/// A finished command's success, stdout and stderr (trimmed).
pub fn outcome(out: std::process::Output) -> (bool, String, String) {
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

/// `kefu user add NAME --password PW [flags] --data DIR`; the new user id.
pub fn add_user(dir: &std::path::Path, name: &str, password: &str, flags: &[&str]) -> String {
    let data = dir.to_str().expect("utf-8 temp path");
    let mut args = vec!["user", "add", name, "--password", password, "--data", data];
    args.extend_from_slice(flags);
    let (ok, out, err) = kefu(&args);
    assert!(ok, "kefu user add {name} failed: {err}");
    out
}

/// The real `kefu gateway` process on ephemeral loopback ports, killed when dropped.
pub struct Bin {
    pub child: tokio::process::Child,
    pub http: SocketAddr,
    pub tcp: SocketAddr,
    /// Kept open so the gateway never writes into a closed pipe.
    _stdout: tokio::io::BufReader<tokio::process::ChildStdout>,
}

impl Bin {
    /// Starts `kefu gateway --data DIR` plus `extra` flags and waits for its listening line.
    pub async fn start(dir: &std::path::Path, extra: &[&str]) -> Bin {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kefu"))
            .args(["gateway", "--data"])
            .arg(dir)
            .args([
                "--http",
                "127.0.0.1:0",
                "--tcp",
                "127.0.0.1:0",
                "--log",
                "error",
            ])
            .args(extra)
            .env_remove("KEFU_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("kefu gateway spawns");
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        tokio::time::timeout(WAIT, stdout.read_line(&mut line))
            .await
            .expect("the gateway says where it listens in time")
            .expect("stdout readable");
        let Listening { http, tcp, .. } = Listening::parse(&line)
            .unwrap_or_else(|| panic!("unexpected first line from kefu gateway: {line:?}"));
        Bin {
            child,
            http,
            tcp,
            _stdout: stdout,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }

    /// SIGKILL, then reaps the process.
    pub async fn kill9(&mut self) {
        self.child.start_kill().expect("SIGKILL sent");
        let status = self.child.wait().await.expect("reaped");
        assert!(!status.success(), "a killed gateway does not exit 0");
    }

    /// Sends SIGTERM.
    pub fn term(&self) {
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -TERM delivered");
    }
}
