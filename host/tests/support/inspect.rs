//! More test support: timed reads, whole-request helpers, a pair of bystanders that prove the
//! gateway still works for others, a hand-rolled HTTP GET, OpenMetrics samples, and a JSON
//! (Tinode dialect) WebSocket client.

use std::net::SocketAddr;
use std::time::Duration;

use kefu_core::proto::{self, ClientPacket, Code, Get, GetWhat};
use kefu_host::gateway::wire::{MetaItem, Out, Params, SubInfo, TopicDesc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Gw, Raw, WAIT, new_id, to_out};

impl Raw {
    /// The next packet within `d`: `Ok(Some)` a packet, `Ok(None)` the gateway closed the
    /// connection, `Err(())` nothing arrived in time.
    pub async fn recv_within(&mut self, d: Duration) -> Result<Option<Out>, ()> {
        if let Some(o) = self.backlog.pop_front() {
            return Ok(Some(o));
        }
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match self.deframer.next_frame() {
                Some(Ok([])) => continue,
                Some(Ok(body)) => {
                    let p = proto::decode_server(body).expect("the gateway sends valid packets");
                    return Ok(Some(to_out(p)));
                }
                Some(Err(e)) => panic!("the gateway sent a bad frame: {e:?}"),
                None => {}
            }
            let spare = self.deframer.spare_capacity();
            match tokio::time::timeout_at(deadline, self.stream.read(spare)).await {
                Err(_) => return Err(()),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
                Ok(Ok(n)) => self.deframer.commit(n),
            }
        }
    }

    /// Reads until the gateway closes the connection (within `WAIT`); everything received
    /// before the close.
    pub async fn until_closed(&mut self) -> Vec<Out> {
        let mut got: Vec<Out> = self.backlog.drain(..).collect();
        loop {
            match self.recv_within(WAIT).await {
                Ok(Some(o)) => got.push(o),
                Ok(None) => return got,
                Err(()) => panic!("the gateway did not close the connection; got {got:?}"),
            }
        }
    }

    /// Everything that arrives within `d` (the connection staying open), backlog first.
    pub async fn drain_for(&mut self, d: Duration) -> Vec<Out> {
        let mut got: Vec<Out> = self.backlog.drain(..).collect();
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_within(left).await {
                Ok(Some(o)) => got.push(o),
                Ok(None) => panic!("connection closed; got {got:?}"),
                Err(()) => return got,
            }
        }
    }

    /// Sends a request carrying id `id` and collects everything up to its `ctrl`: the items
    /// (meta and data for this id/topic) and the ctrl. Unrelated packets go to the backlog.
    pub async fn request(&mut self, p: ClientPacket<'_>) -> (Vec<Out>, (Code, String, Params)) {
        let id = p.req_id().expect("a request with an id");
        self.send(p).await;
        let mut items = Vec::new();
        loop {
            match self.recv_wire().await {
                Some(Out::Ctrl {
                    id: i,
                    code,
                    text,
                    params,
                    ..
                }) if i == id => return (items, (code, text, params)),
                Some(o @ Out::Meta { id: i, .. }) if i == id => items.push(o),
                Some(o) => self.backlog.push_back(o),
                None => panic!("connection closed while waiting for ctrl {id}"),
            }
        }
    }

    /// `get desc`: the description and the code.
    pub async fn desc(&mut self, topic: &str) -> (Code, Option<TopicDesc>) {
        let id = self.next_id();
        let (items, (code, ..)) = self
            .request(ClientPacket::Get(Get {
                id,
                topic,
                what: GetWhat::Desc,
            }))
            .await;
        let desc = items.into_iter().find_map(|o| match o {
            Out::Meta {
                item: MetaItem::Desc(d),
                ..
            } => Some(d),
            _ => None,
        });
        (code, desc)
    }

    /// `get subs`: the subscription items and the code.
    pub async fn subs(&mut self, topic: &str) -> (Code, Vec<SubInfo>) {
        let id = self.next_id();
        let (items, (code, ..)) = self
            .request(ClientPacket::Get(Get {
                id,
                topic,
                what: GetWhat::Subs,
            }))
            .await;
        let subs = items
            .into_iter()
            .filter_map(|o| match o {
                Out::Meta {
                    item: MetaItem::Sub(s),
                    ..
                } => Some(s),
                _ => None,
            })
            .collect();
        (code, subs)
    }

    /// Sends `p` (a request with id `id`) and waits for its ctrl.
    pub async fn call(&mut self, id: u32, p: ClientPacket<'_>) -> (Code, String, Params) {
        self.send(p).await;
        self.ctrl(id).await
    }
}

/// Two users chatting one-to-one next to whatever a test does: `check` proves the gateway
/// still stores and delivers their messages.
pub struct Bystanders {
    pub a: Raw,
    pub b: Raw,
    pub a_id: String,
    pub b_id: String,
    sent: u64,
}

impl Bystanders {
    pub async fn new(gw: &Gw) -> Bystanders {
        let (mut a, a_id) = gw.user("bystander-a").await;
        let (mut b, b_id) = gw.user("bystander-b").await;
        assert_eq!(a.sub(&b_id, Some(0)).await.0, Code::OK);
        assert_eq!(b.sub(&a_id, Some(0)).await.0, Code::OK);
        Bystanders {
            a,
            b,
            a_id,
            b_id,
            sent: 0,
        }
    }

    /// One message each way, stored and pushed with the next seq.
    pub async fn check(&mut self) {
        for from_a in [true, false] {
            self.sent += 1;
            let seq = self.sent;
            let text = format!("still here {seq}");
            let (sender, receiver, to, from) = if from_a {
                (&mut self.a, &mut self.b, &self.b_id, &self.a_id)
            } else {
                (&mut self.b, &mut self.a, &self.a_id, &self.b_id)
            };
            let (code, params) = sender.publish(to, new_id(), text.as_bytes()).await;
            assert_eq!(code, Code::ACCEPTED, "a bystander can still publish");
            assert!(matches!(params, Params::Pub { seq: s, .. } if s == seq));
            // Both are attached to the topic, so each also gets its own messages pushed.
            let m = loop {
                let m = receiver.data(from).await;
                assert!(m.seq <= seq, "no seq from the future: {m:?}");
                if m.seq == seq {
                    break m;
                }
            };
            assert_eq!(m.content.as_slice(), text.as_bytes());
            receiver.ack(from, seq).await;
        }
    }
}

/// A plain HTTP/1.1 GET over a TcpStream: the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut raw))
        .await
        .expect("an answer in time")
        .expect("read");
    let text = String::from_utf8(raw).expect("utf-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The value of the OpenMetrics sample `series` (name with its labels, exactly as rendered),
/// or 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// A JSON-dialect (Tinode) client over a real WebSocket at `/v0/channels`.
pub struct Ws {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    next_id: u32,
    /// Packets received while waiting for something else.
    pub backlog: std::collections::VecDeque<serde_json::Value>,
}

impl Ws {
    pub async fn connect(http: SocketAddr) -> Ws {
        let url = format!("ws://{http}/v0/channels");
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("websocket connects");
        Ws {
            ws,
            next_id: 0,
            backlog: Default::default(),
        }
    }

    /// A fresh request id, as the Tinode SDK makes them (decimal strings).
    pub fn next_id(&mut self) -> String {
        self.next_id += 1;
        format!("{}", 1000 + self.next_id)
    }

    pub async fn send_text(&mut self, text: &str) {
        use futures_util::SinkExt;
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .expect("ws send");
    }

    pub async fn send(&mut self, v: serde_json::Value) {
        self.send_text(&v.to_string()).await;
    }

    /// The next JSON packet; panics if none comes within `WAIT` or the socket closes.
    async fn recv_wire(&mut self) -> serde_json::Value {
        use futures_util::StreamExt;
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no packet in time; backlog {:?}", self.backlog))
                .expect("the socket stays open")
                .expect("a websocket message");
            if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
                return serde_json::from_str(t.as_str()).expect("the gateway sends JSON");
            }
        }
    }

    /// Waits for the next packet matching `pred`, keeping others in the backlog.
    pub async fn wait_for(
        &mut self,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        if let Some(pos) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(pos).expect("present");
        }
        loop {
            let v = self.recv_wire().await;
            if pred(&v) {
                return v;
            }
            self.backlog.push_back(v);
        }
    }

    /// The `ctrl` answering `id` (`None`: a ctrl without id).
    pub async fn ctrl(&mut self, id: Option<&str>) -> serde_json::Value {
        let v = self
            .wait_for(|v| {
                v.get("ctrl")
                    .is_some_and(|c| c.get("id").and_then(|i| i.as_str()) == id)
            })
            .await;
        v["ctrl"].clone()
    }

    /// The next `data` on `topic`.
    pub async fn data(&mut self, topic: &str) -> serde_json::Value {
        let v = self
            .wait_for(|v| v.get("data").is_some_and(|d| d["topic"] == topic))
            .await;
        v["data"].clone()
    }

    /// Sends a packet `{kind: body + id}` and waits for its ctrl.
    pub async fn call(&mut self, kind: &str, mut body: serde_json::Value) -> serde_json::Value {
        let id = self.next_id();
        body["id"] = serde_json::Value::from(id.clone());
        self.send(serde_json::json!({ kind: body })).await;
        self.ctrl(Some(&id)).await
    }

    pub async fn hi(&mut self) -> serde_json::Value {
        self.call(
            "hi",
            serde_json::json!({"ver": "0.25.3", "ua": "kefu-tests", "lang": "en", "platf": "web"}),
        )
        .await
    }

    /// Creates an account and logs in; the user id.
    pub async fn acc(&mut self, login: &str, name: &str) -> String {
        use base64::Engine;
        let secret =
            base64::engine::general_purpose::STANDARD.encode(format!("{login}:secret-pass"));
        let c = self
            .call(
                "acc",
                serde_json::json!({"user": "new", "scheme": "basic", "secret": secret,
                    "login": true, "desc": {"public": {"fn": name}}}),
            )
            .await;
        assert_eq!(c["code"], 201, "acc: {c}");
        c["params"]["user"].as_str().expect("a user id").to_owned()
    }

    pub async fn publish(&mut self, topic: &str, content: &str) -> serde_json::Value {
        self.call(
            "pub",
            serde_json::json!({"topic": topic, "content": content}),
        )
        .await
    }
}
