//! Raw connections for the suites: the binary protocol over framed TCP or over binary
//! WebSocket messages ([`Raw`]), and the JSON (Tinode) dialect over WebSocket text messages
//! ([`Json`]). They send whatever bytes a test wants — valid packets, garbage, truncated or
//! oversized frames — and hand back what the gateway answered, or that it closed.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kefu_core::frame::{self, Deframer};
use kefu_core::id::MsgId;
use kefu_core::proto::{
    self, Acc, AuthScheme, ClientPacket, Code, CtrlParams, Get, GetWhat, Head, Hi, Leave, Login,
    Pub, ServerPacket, Sub,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A gateway packet, owned, with what the suites look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Got {
    /// A `ctrl`.
    Ctrl {
        /// The request id answered (0: none).
        id: u32,
        /// The code.
        code: Code,
        /// The text.
        text: String,
        /// The topic.
        topic: String,
        /// `seq` of a `pub` answer, `latest` of a `sub` answer.
        seq: Option<u64>,
        /// The token of a login answer.
        token: Vec<u8>,
        /// The user id of a login answer.
        user: String,
        /// The topic named in the params (`action` open / take / transfer).
        name: String,
    },
    /// A `data` push or history item.
    Data {
        /// Topic.
        topic: String,
        /// Seq.
        seq: u64,
        /// Message id.
        id: MsgId,
        /// Content.
        content: Vec<u8>,
    },
    /// `meta`, `pres` or `info`.
    Other,
}

fn own(p: ServerPacket<'_>) -> Got {
    match p {
        ServerPacket::Ctrl(c) => {
            let (mut seq, mut token, mut user, mut name) =
                (None, Vec::new(), String::new(), String::new());
            match c.params {
                CtrlParams::Pub { seq: s, .. } => seq = Some(s),
                CtrlParams::Sub { latest, .. } => seq = Some(latest),
                CtrlParams::Login {
                    user: u, token: t, ..
                } => {
                    token = t.to_vec();
                    user = u.to_owned();
                }
                CtrlParams::Topic { name: n, .. } => name = n.to_owned(),
                _ => {}
            }
            Got::Ctrl {
                id: c.id,
                code: c.code,
                text: c.text.to_owned(),
                topic: c.topic.to_owned(),
                seq,
                token,
                user,
                name,
            }
        }
        ServerPacket::Data(d) => Got::Data {
            topic: d.topic.to_owned(),
            seq: d.seq,
            id: d.msg_id,
            content: d.content.to_vec(),
        },
        _ => Got::Other,
    }
}

/// A plain `pub` (no mime, no reply) of `content` with `msg_id`, request `id`.
pub fn pub_packet<'a>(
    id: u32,
    topic: &'a str,
    msg_id: MsgId,
    content: &'a [u8],
) -> ClientPacket<'a> {
    ClientPacket::Pub(Pub {
        id,
        topic,
        msg_id,
        head: Head::default(),
        content,
    })
}

/// Encodes a client packet as one whole frame.
pub fn frame_of(p: &ClientPacket<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; 256 * 1024];
    let n = proto::encode_client(p, &mut buf).expect("encode");
    buf.truncate(n);
    buf
}

/// Wraps raw body bytes (not necessarily a valid packet) in a valid frame.
pub fn frame_body(body: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; body.len() + frame::OVERHEAD];
    let n = frame::encode_frame(body, &mut buf).expect("frame");
    buf.truncate(n);
    buf
}

/// The body of a client packet (no frame).
pub fn body_of(p: &ClientPacket<'_>) -> Vec<u8> {
    let f = frame_of(p);
    f[frame::HEADER_LEN..f.len() - frame::TRAILER_LEN].to_vec()
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

enum Link {
    Tcp(TcpStream, Box<Deframer<{ 256 * 1024 }>>),
    Ws(Box<Ws>),
}

/// A binary-protocol connection over framed TCP or binary WebSocket messages.
pub struct Raw {
    link: Link,
    next_id: u32,
    /// Packets received while waiting for something else.
    pub backlog: VecDeque<Got>,
}

/// What came back while waiting.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    /// A packet.
    Packet(Got),
    /// The gateway closed the connection.
    Closed,
    /// Nothing within the wait.
    Silent,
}

impl Raw {
    /// Connects to the framed-TCP listener.
    pub async fn tcp(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).await.expect("tcp connect");
        s.set_nodelay(true).expect("nodelay");
        Raw {
            link: Link::Tcp(s, Box::new(Deframer::new())),
            next_id: 0,
            backlog: VecDeque::new(),
        }
    }

    /// Connects a binary WebSocket to `ws://HTTP/v0/channels`.
    pub async fn ws(http: SocketAddr) -> Raw {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/v0/channels"))
            .await
            .expect("ws connect");
        Raw {
            link: Link::Ws(Box::new(ws)),
            next_id: 0,
            backlog: VecDeque::new(),
        }
    }

    /// A fresh request id.
    pub fn next_id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    /// Sends raw bytes: on TCP as they are, on WebSocket as one binary message. False if the
    /// connection is gone.
    pub async fn send_bytes(&mut self, b: &[u8]) -> bool {
        match &mut self.link {
            Link::Tcp(s, _) => s.write_all(b).await.is_ok(),
            Link::Ws(ws) => ws.send(WsMessage::Binary(b.to_vec().into())).await.is_ok(),
        }
    }

    /// Sends a text WebSocket message (on TCP: its bytes).
    pub async fn send_text(&mut self, t: &str) -> bool {
        match &mut self.link {
            Link::Tcp(s, _) => s.write_all(t.as_bytes()).await.is_ok(),
            Link::Ws(ws) => ws.send(WsMessage::Text(t.to_owned().into())).await.is_ok(),
        }
    }

    /// Sends a packet as one frame.
    pub async fn send(&mut self, p: &ClientPacket<'_>) -> bool {
        let f = frame_of(p);
        self.send_bytes(&f).await
    }

    /// The next packet within `d`.
    pub async fn hear(&mut self, d: Duration) -> Heard {
        if let Some(g) = self.backlog.pop_front() {
            return Heard::Packet(g);
        }
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match &mut self.link {
                Link::Tcp(s, deframer) => {
                    match deframer.next_frame() {
                        Some(Ok([])) => continue,
                        Some(Ok(body)) => {
                            let p = proto::decode_server(body).expect("valid server packet");
                            return Heard::Packet(own(p));
                        }
                        Some(Err(e)) => panic!("the gateway sent a bad frame: {e:?}"),
                        None => {}
                    }
                    match tokio::time::timeout_at(deadline, s.read(deframer.spare_capacity())).await
                    {
                        Err(_) => return Heard::Silent,
                        Ok(Ok(0)) | Ok(Err(_)) => return Heard::Closed,
                        Ok(Ok(n)) => deframer.commit(n),
                    }
                }
                Link::Ws(ws) => match tokio::time::timeout_at(deadline, ws.next()).await {
                    Err(_) => return Heard::Silent,
                    Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(WsMessage::Close(_)))) => {
                        return Heard::Closed;
                    }
                    Ok(Some(Ok(WsMessage::Binary(b)))) => {
                        let (body, _) =
                            frame::decode_frame(&b, b.len()).expect("one frame per message");
                        if body.is_empty() {
                            continue;
                        }
                        let p = proto::decode_server(body).expect("valid server packet");
                        return Heard::Packet(own(p));
                    }
                    Ok(Some(Ok(_))) => continue,
                },
            }
        }
    }

    /// Waits (up to `WAIT`) for the `ctrl` answering `id`, keeping other packets in the
    /// backlog; `None` if the connection closed first.
    pub async fn ctrl(&mut self, id: u32) -> Option<Got> {
        let is = |g: &Got| matches!(g, Got::Ctrl { id: i, .. } if *i == id);
        if let Some(pos) = self.backlog.iter().position(is) {
            return self.backlog.remove(pos);
        }
        let mut kept = VecDeque::new();
        let out = loop {
            match self.hear(crate::WAIT).await {
                Heard::Packet(g) if is(&g) => break Some(g),
                Heard::Packet(g) => kept.push_back(g),
                Heard::Closed => break None,
                Heard::Silent => panic!("no answer to request {id} in time"),
            }
        };
        self.backlog.extend(kept);
        out
    }

    /// Sends `p` (with request id `id`) and returns the code of its answer (`None`: closed).
    pub async fn call(&mut self, p: &ClientPacket<'_>, id: u32) -> Option<Got> {
        if !self.send(p).await {
            return None;
        }
        self.ctrl(id).await
    }

    /// `hi`; panics unless answered 200.
    pub async fn hi(&mut self) {
        let id = self.next_id();
        let p = ClientPacket::Hi(Hi {
            id,
            ver: proto::PROTOCOL_VERSION,
            device: "e2e-raw",
            platform: "linux",
            lang: "en",
            ua: "kefu-tests",
        });
        assert_eq!(code(&self.call(&p, id).await), Some(Code::OK), "hi");
    }

    /// `login` with a password; the answer.
    pub async fn login(&mut self, login: &str, password: &str) -> Option<Got> {
        let id = self.next_id();
        let secret = format!("{login}:{password}");
        let p = ClientPacket::Login(Login {
            id,
            scheme: AuthScheme::Basic,
            secret: secret.as_bytes(),
        });
        self.call(&p, id).await
    }

    /// `login` with a token; the answer.
    pub async fn login_token(&mut self, token: &[u8]) -> Option<Got> {
        let id = self.next_id();
        let p = ClientPacket::Login(Login {
            id,
            scheme: AuthScheme::Token,
            secret: token,
        });
        self.call(&p, id).await
    }

    /// `acc` with login; the answer.
    pub async fn acc(&mut self, login: &str, password: &str) -> Option<Got> {
        let id = self.next_id();
        let secret = format!("{login}:{password}");
        let p = ClientPacket::Acc(Acc {
            id,
            scheme: AuthScheme::Basic,
            secret: secret.as_bytes(),
            name: login,
            login: true,
        });
        self.call(&p, id).await
    }

    /// Greets and logs in with a password; panics unless both succeed. The login answer.
    pub async fn session(&mut self, login: &str, password: &str) -> Got {
        self.hi().await;
        let g = self.login(login, password).await;
        assert_eq!(code(&g), Some(Code::OK), "login {login}");
        g.expect("answered")
    }

    /// `sub`; the answer.
    pub async fn sub(&mut self, topic: &str, since: Option<u64>) -> Option<Got> {
        let id = self.next_id();
        self.call(&ClientPacket::Sub(Sub { id, topic, since }), id)
            .await
    }

    /// `leave` (detach, or unsubscribe); the answer.
    pub async fn leave(&mut self, topic: &str, unsub: bool) -> Option<Got> {
        let id = self.next_id();
        self.call(&ClientPacket::Leave(Leave { id, topic, unsub }), id)
            .await
    }

    /// Creates a group topic; its name.
    pub async fn new_group(&mut self) -> String {
        match self.sub("new", None).await {
            Some(Got::Ctrl {
                code: Code::CREATED,
                topic,
                ..
            }) => topic,
            other => panic!("sub new: {other:?}"),
        }
    }

    /// `pub` of `content` with `msg_id`; the answer.
    pub async fn publish(&mut self, topic: &str, msg_id: MsgId, content: &[u8]) -> Option<Got> {
        let id = self.next_id();
        self.call(&pub_packet(id, topic, msg_id, content), id).await
    }

    /// Every stored message of `topic` up to `latest` as (id, seq), pulled in pages.
    pub async fn history(&mut self, topic: &str, latest: u64) -> Vec<(MsgId, u64)> {
        const PAGE: u64 = 200;
        let mut all = Vec::new();
        let mut since = 1;
        while since <= latest {
            let before = (since + PAGE).min(latest + 1);
            let id = self.next_id();
            let p = ClientPacket::Get(Get {
                id,
                topic,
                what: GetWhat::Data {
                    since,
                    before,
                    limit: (before - since) as u32,
                },
            });
            assert!(self.send(&p).await, "get sent");
            let mut page = Vec::new();
            loop {
                match self.hear(crate::WAIT).await {
                    Heard::Packet(Got::Ctrl { id: i, code, .. }) if i == id => {
                        assert_eq!(code, Code::OK, "get data {since}..{before} on {topic}");
                        break;
                    }
                    Heard::Packet(Got::Data {
                        topic: t,
                        seq,
                        id: m,
                        ..
                    }) if t == topic
                        && (since..before).contains(&seq)
                        && page.last().is_none_or(|(_, s)| *s < seq) =>
                    {
                        page.push((m, seq))
                    }
                    Heard::Packet(_) => {}
                    other => panic!("history of {topic}: {other:?}"),
                }
            }
            all.extend(page);
            since = before;
        }
        all
    }

    /// The latest seq of `topic` (subscribing to ask, then detaching).
    pub async fn latest(&mut self, topic: &str) -> u64 {
        let latest = match self.sub(topic, None).await {
            Some(Got::Ctrl {
                code: Code::OK | Code::CREATED | Code::NOT_MODIFIED,
                seq: Some(latest),
                ..
            }) => latest,
            other => panic!("sub {topic}: {other:?}"),
        };
        let _ = self.leave(topic, false).await;
        latest
    }
}

/// The code of an answer, if there was one.
pub fn code(g: &Option<Got>) -> Option<Code> {
    match g {
        Some(Got::Ctrl { code, .. }) => Some(*code),
        _ => None,
    }
}

/// A JSON (Tinode dialect) WebSocket connection.
pub struct Json {
    ws: Box<Ws>,
}

impl Json {
    /// Connects to `ws://HTTP/v0/channels`.
    pub async fn connect(http: SocketAddr) -> Json {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/v0/channels"))
            .await
            .expect("ws connect");
        Json { ws: Box::new(ws) }
    }

    /// Sends one text message; false if the connection is gone.
    pub async fn send(&mut self, text: &str) -> bool {
        self.ws
            .send(WsMessage::Text(text.to_owned().into()))
            .await
            .is_ok()
    }

    /// The next JSON packet within `d`: `Ok(Some)`, `Ok(None)` = closed, `Err(())` = silent.
    /// Raw non-JSON texts (the probe answer `0`) come as JSON strings.
    pub async fn hear(&mut self, d: Duration) -> Result<Option<serde_json::Value>, ()> {
        loop {
            match tokio::time::timeout(d, self.ws.next()).await {
                Err(_) => return Err(()),
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(WsMessage::Close(_)))) => return Ok(None),
                Ok(Some(Ok(WsMessage::Text(t)))) => {
                    return Ok(Some(
                        serde_json::from_str(&t)
                            .unwrap_or_else(|_| serde_json::Value::String(t.to_string())),
                    ));
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Waits for the `ctrl` whose id is `id` (or, with `None`, the next `ctrl`); its code, or
    /// `None` if the connection closed first.
    pub async fn ctrl(&mut self, id: Option<&str>) -> Option<u16> {
        loop {
            match self.hear(crate::WAIT).await {
                Err(()) => panic!("no ctrl {id:?} in time"),
                Ok(None) => return None,
                Ok(Some(v)) => {
                    let Some(c) = v.get("ctrl") else { continue };
                    let got = c.get("id").and_then(|i| i.as_str());
                    if id.is_none() || got == id {
                        return c.get("code").and_then(|c| c.as_u64()).map(|c| c as u16);
                    }
                }
            }
        }
    }

    /// Sends `text` and waits for the `ctrl` with `id`.
    pub async fn call(&mut self, text: &str, id: Option<&str>) -> Option<u16> {
        if !self.send(text).await {
            return None;
        }
        self.ctrl(id).await
    }
}
