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
