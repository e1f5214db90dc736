//! A model gateway for simulations: stores messages per topic with gapless seqs, deduplicates
//! by (topic, message id), and pushes to subscribers through the core's `DeliveryWindow`.
//! It answers the subset of the protocol the client engine uses (hi, login, sub, pub, get data,
//! ack, keepalive) and keeps each user's acked mark across connections.

use std::collections::BTreeMap;

use kefu_core::delivery::{DeliveryConfig, DeliveryWindow};
use kefu_core::id::MsgId;
use kefu_core::proto::{
    ClientPacket, Code, Ctrl, CtrlParams, Data, GetWhat, Head, ServerPacket, decode_client,
    encode_server,
};
use kefu_core::time::Instant;

/// One stored message.
#[derive(Clone, Debug)]
pub struct Stored {
    pub id: MsgId,
    pub from: String,
    pub content: Vec<u8>,
}

/// A topic: messages in seq order (seq = index + 1) and the id index.
#[derive(Default)]
pub struct TopicStore {
    pub messages: Vec<Stored>,
    pub by_id: BTreeMap<MsgId, u64>,
}

struct Session {
    user: Option<String>,
    subs: BTreeMap<String, DeliveryWindow>,
}

/// The model gateway.
pub struct Gateway {
    pub cfg: DeliveryConfig,
    pub topics: BTreeMap<String, TopicStore>,
    sessions: BTreeMap<u64, Session>,
    /// Frames to send: (connection, frame bytes).
    pub out: Vec<(u64, Vec<u8>)>,
    pub stored: u64,
    pub dup_pubs: u64,
    pub pushes: u64,
    buf: Vec<u8>,
}

impl Gateway {
    pub fn new(cfg: DeliveryConfig) -> Self {
        Gateway {
            cfg,
            topics: BTreeMap::new(),
            sessions: BTreeMap::new(),
            out: Vec::new(),
            stored: 0,
            dup_pubs: 0,
            pushes: 0,
            buf: vec![0; 4096],
        }
    }

    pub fn open(&mut self, conn: u64) {
        self.sessions.insert(
            conn,
            Session {
                user: None,
                subs: BTreeMap::new(),
            },
        );
    }

    pub fn close(&mut self, conn: u64) {
        self.sessions.remove(&conn);
    }

    fn send(&mut self, conn: u64, p: &ServerPacket<'_>) {
        let n = encode_server(p, &mut self.buf).expect("model gateway frame fits");
        self.out.push((conn, self.buf[..n].to_vec()));
    }

    fn ctrl(&mut self, conn: u64, id: u32, code: Code, topic: &str, params: CtrlParams<'_>) {
        let p = ServerPacket::Ctrl(Ctrl {
            id,
            code,
            text: "",
            topic,
            params,
        });
        self.send(conn, &p);
    }

    /// Handles one frame body from `conn`.
    pub fn handle(&mut self, now: Instant, conn: u64, body: &[u8]) {
        if !self.sessions.contains_key(&conn) {
            return;
        }
        if body.is_empty() {
            let mut pong = [0u8; kefu_core::frame::OVERHEAD];
            let n = kefu_core::frame::encode_frame(&[], &mut pong).expect("empty frame fits");
            self.out.push((conn, pong[..n].to_vec()));
            return;
        }
        let Ok(packet) = decode_client(body) else {
            self.ctrl(conn, 0, Code::MALFORMED, "", CtrlParams::None);
            return;
        };
        match packet {
            ClientPacket::Hi(h) => {
                let params = CtrlParams::Hi {
                    ver: h.ver,
                    server_ms: 1_800_000_000_000,
                    max_content: 4096,
                };
                self.ctrl(conn, h.id, Code::OK, "", params);
            }
            ClientPacket::Login(l) => {
                let user = std::str::from_utf8(l.secret)
                    .unwrap_or("")
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .to_string();
                self.sessions.get_mut(&conn).unwrap().user = Some(user.clone());
                let params = CtrlParams::Login {
                    user: &user,
                    token: &[],
                    expires_ms: 0,
                };
                self.ctrl(conn, l.id, Code::OK, "", params);
            }
            ClientPacket::Sub(s) => {
                let latest = self
                    .topics
                    .get(s.topic)
                    .map_or(0, |t| t.messages.len() as u64);
                let since = s.since.unwrap_or(latest).min(latest);
                let window = DeliveryWindow::new(since, &self.cfg);
                let topic = s.topic.to_string();
                self.sessions
                    .get_mut(&conn)
                    .unwrap()
                    .subs
                    .insert(topic.clone(), window);
                let params = CtrlParams::Sub {
                    latest,
                    read: 0,
                    recv: 0,
                    acked: since,
                };
                self.ctrl(conn, s.id, Code::OK, &topic, params);
                self.push(now, conn);
            }
            ClientPacket::Pub(p) => {
                let from = self.sessions[&conn].user.clone().unwrap_or_default();
                let store = self.topics.entry(p.topic.to_string()).or_default();
                let (seq, dup) = match store.by_id.get(&p.msg_id) {
                    Some(seq) => (*seq, true),
                    None => {
                        store.messages.push(Stored {
                            id: p.msg_id,
                            from,
                            content: p.content.to_vec(),
                        });
                        let seq = store.messages.len() as u64;
                        store.by_id.insert(p.msg_id, seq);
                        (seq, false)
                    }
                };
                if dup {
                    self.dup_pubs += 1;
                } else {
                    self.stored += 1;
                }
                let topic = p.topic.to_string();
                self.ctrl(
                    conn,
                    p.id,
                    Code::ACCEPTED,
                    &topic,
                    CtrlParams::Pub { seq, ts: seq, dup },
                );
                if !dup {
                    self.push_all(now);
                }
            }
            ClientPacket::Ack(a) => {
                let cfg = self.cfg;
                let latest = self
                    .topics
                    .get(a.topic)
                    .map_or(0, |t| t.messages.len() as u64);
                if let Some(w) = self.sessions.get_mut(&conn).unwrap().subs.get_mut(a.topic) {
                    w.on_ack(now, &cfg, a.seq, latest);
                }
                self.push(now, conn);
            }
            ClientPacket::Get(g) => {
                if let GetWhat::Data {
                    since,
                    before,
                    limit,
                } = g.what
                {
                    let topic = g.topic.to_string();
                    let latest = self
                        .topics
                        .get(&topic)
                        .map_or(0, |t| t.messages.len() as u64);
                    let end = if before == 0 {
                        latest + 1
                    } else {
                        before.min(latest + 1)
                    };
                    let mut count = 0;
                    let mut seq = since.max(1);
                    while seq < end && count < limit {
                        self.send_data(conn, &topic, seq);
                        seq += 1;
                        count += 1;
                    }
                    self.ctrl(conn, g.id, Code::OK, &topic, CtrlParams::Count { count });
                } else {
                    self.ctrl(conn, g.id, Code::NO_CONTENT, g.topic, CtrlParams::None);
                }
            }
            ClientPacket::Note(_) => {}
            other => {
                let id = other.req_id().unwrap_or(0);
                self.ctrl(conn, id, Code::NOT_FOUND, "", CtrlParams::None);
            }
        }
    }

    fn send_data(&mut self, conn: u64, topic: &str, seq: u64) {
        let Some(m) = self
            .topics
            .get(topic)
            .and_then(|t| t.messages.get(seq as usize - 1))
        else {
            return;
        };
        let (id, from, content) = (m.id, m.from.clone(), m.content.clone());
        let p = ServerPacket::Data(Data {
            topic,
            seq,
            msg_id: id,
            from: &from,
            ts: seq,
            head: Head::default(),
            content: &content,
        });
        self.send(conn, &p);
        self.pushes += 1;
    }

    /// Pushes whatever the windows of one connection allow.
    pub fn push(&mut self, now: Instant, conn: u64) {
        let Some(session) = self.sessions.get_mut(&conn) else {
            return;
        };
        let mut ranges = Vec::new();
        for (topic, w) in session.subs.iter_mut() {
            let latest = self
                .topics
                .get(topic)
                .map_or(0, |t| t.messages.len() as u64);
            while let Some(r) = w.poll_push(now, latest) {
                ranges.push((topic.clone(), r));
            }
        }
        for (topic, r) in ranges {
            for seq in r.first..=r.last {
                self.send_data(conn, &topic, seq);
            }
        }
    }

    fn push_all(&mut self, now: Instant) {
        let conns: Vec<u64> = self.sessions.keys().copied().collect();
        for c in conns {
            self.push(now, c);
        }
    }

    /// Retransmit timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        let cfg = self.cfg;
        let mut fired = Vec::new();
        for (conn, s) in self.sessions.iter_mut() {
            for w in s.subs.values_mut() {
                if w.handle_timeout(now, &cfg) {
                    fired.push(*conn);
                }
            }
        }
        for c in fired {
            self.push(now, c);
        }
    }

    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (conn, s) in &self.sessions {
            for (t, w) in &s.subs {
                out += &format!(
                    " conn {conn} user {:?} {t}: acked {} sent {} in_flight {} rto {:?} deadline {:?};",
                    s.user,
                    w.acked(),
                    w.sent(),
                    w.in_flight(),
                    w.rto(),
                    w.poll_timeout()
                );
            }
        }
        out
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sessions
            .values()
            .flat_map(|s| s.subs.values())
            .filter_map(|w| w.poll_timeout())
            .min()
    }
}
