//! The engine bench's sender engine -> relay -> receiver engine pair, shared by
//! `benches/engine.rs` (messages per second) and `examples/engine_instructions.rs` (instructions
//! per message, a fixed amount of work for callgrind).

use kefu_core::engine::{Command, Credentials, Engine, EngineConfig, Event};
use kefu_core::frame::decode_frame;
use kefu_core::proto::{
    ClientPacket, Code, Ctrl, CtrlParams, Data, Head, ServerPacket, decode_client,
};
use kefu_core::time::{Duration, Instant};

type BenchEngine = Engine<1024, 128, 2, 64, 1024>;

const TOPIC: &str = "cns1";

/// The thinnest gateway: answers the handshake, numbers pubs and relays them as data.
struct Relay {
    seq: u64,
    to_sender: Inbox,
    to_receiver: Inbox,
}

/// Frames on their way to one engine: written straight into a zeroed buffer, as a gateway
/// writes into its socket buffer, with no per-frame allocation or clearing.
struct Inbox {
    buf: Vec<u8>,
    len: usize,
}

impl Inbox {
    fn new() -> Self {
        Inbox {
            buf: vec![0; 64 * 1024],
            len: 0,
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Relay {
    fn put(out: &mut Inbox, p: &ServerPacket<'_>) {
        if out.buf.len() - out.len < 1024 {
            out.buf.resize(out.buf.len() * 2, 0);
        }
        let n = kefu_core::proto::encode_server(p, &mut out.buf[out.len..]).unwrap();
        out.len += n;
    }

    /// Handles one frame from a client; `from_sender` tells which.
    fn handle(&mut self, frame: &[u8], from_sender: bool) {
        let Ok((body, _)) = decode_frame(frame, 4096) else {
            return;
        };
        if body.is_empty() {
            return;
        }
        let reply = |id, params| {
            ServerPacket::Ctrl(Ctrl {
                id,
                code: Code::OK,
                text: "",
                topic: "",
                params,
            })
        };
        let own = if from_sender {
            &mut self.to_sender
        } else {
            &mut self.to_receiver
        };
        match decode_client(body).unwrap() {
            ClientPacket::Hi(h) => {
                let p = CtrlParams::Hi {
                    ver: h.ver,
                    server_ms: 1_800_000_000_000,
                    max_content: 128,
                };
                Self::put(own, &reply(h.id, p));
            }
            ClientPacket::Login(l) => {
                let user = if from_sender { "agent" } else { "customer" };
                let p = CtrlParams::Login {
                    user,
                    token: &[],
                    expires_ms: 0,
                };
                Self::put(own, &reply(l.id, p));
            }
            ClientPacket::Sub(s) => {
                let p = CtrlParams::Sub {
                    latest: self.seq,
                    read: 0,
                    recv: 0,
                    acked: s.since.unwrap_or(0),
                };
                Self::put(own, &reply(s.id, p));
            }
            ClientPacket::Pub(p) => {
                self.seq += 1;
                let ack = ServerPacket::Ctrl(Ctrl {
                    id: p.id,
                    code: Code::ACCEPTED,
                    text: "",
                    topic: p.topic,
                    params: CtrlParams::Pub {
                        seq: self.seq,
                        ts: self.seq,
                        dup: false,
                    },
                });
                Self::put(&mut self.to_sender, &ack);
                let data = ServerPacket::Data(Data {
                    topic: p.topic,
                    seq: self.seq,
                    msg_id: p.msg_id,
                    from: "agent",
                    ts: self.seq,
                    head: p.head,
                    content: p.content,
                });
                Self::put(&mut self.to_receiver, &data);
            }
            _ => {}
        }
    }
}

pub struct Pair {
    now: Instant,
    sender: Box<BenchEngine>,
    receiver: Box<BenchEngine>,
    relay: Relay,
    buf: Vec<u8>,
    /// Messages the receiver has shown so far.
    pub received: u64,
}

fn engine(name: &str, seed: u64) -> Box<BenchEngine> {
    let mut cfg = EngineConfig::new(name, Credentials::basic(name, "pw").unwrap());
    cfg.outbox.window = 64;
    let mut e = Box::new(BenchEngine::new(Instant::ZERO, cfg, seed));
    e.subscribe(TOPIC).unwrap();
    e
}

impl Pair {
    pub fn new() -> Self {
        let mut p = Pair {
            now: Instant::ZERO,
            sender: engine("agent", 1),
            receiver: engine("customer", 2),
            relay: Relay {
                seq: 0,
                to_sender: Inbox::new(),
                to_receiver: Inbox::new(),
            },
            buf: vec![0; 1024],
            received: 0,
        };
        for e in [&mut p.sender, &mut p.receiver] {
            e.handle_timeout(Instant::ZERO);
            assert_eq!(e.poll_command(), Some(Command::Connect));
            e.handle_connected(Instant::ZERO);
        }
        for _ in 0..4 {
            p.turn();
        }
        p
    }

    /// One round: both engines write, the relay answers, both engines read and drain events.
    fn turn(&mut self) {
        self.now += Duration::from_micros(1);
        let now = self.now;
        while let Some(n) = self.sender.poll_transmit(now, &mut self.buf) {
            self.relay.handle(&self.buf[..n], true);
        }
        while let Some(n) = self.receiver.poll_transmit(now, &mut self.buf) {
            self.relay.handle(&self.buf[..n], false);
        }
        for (engine, inbox) in [
            (&mut self.sender, &mut self.relay.to_sender),
            (&mut self.receiver, &mut self.relay.to_receiver),
        ] {
            let mut rest = inbox.bytes();
            while !rest.is_empty() {
                let took = engine.handle_bytes(now, rest);
                rest = &rest[took..];
                while let Some(ev) = engine.poll_event() {
                    if let Event::MessageAdded {
                        seq: Some(_),
                        history: false,
                        ..
                    } = ev
                    {
                        self.received += 1;
                    }
                }
            }
            inbox.len = 0;
            engine.handle_timeout(now);
        }
    }

    /// Sends `n` messages from the sender and runs until the receiver has them all.
    pub fn send(&mut self, n: u64) {
        let content = [b'x'; 100];
        let target = self.received + n;
        let mut sent = 0;
        while self.received < target {
            while sent < n
                && self
                    .sender
                    .publish(self.now, TOPIC, Head::default(), &content)
                    .is_ok()
            {
                sent += 1;
            }
            self.turn();
        }
    }
}
