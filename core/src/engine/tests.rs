//! Story tests of the client engine. A small hand-played gateway drives an [`Engine`]: it decodes
//! every frame `poll_transmit` writes, answers with server packets fed to `handle_bytes`, and
//! moves time forward the way a faithful driver does (sleep until `poll_timeout`, then
//! `handle_timeout`, then drain commands, frames and events in that order).

use proptest::prelude::*;

use super::*;
use crate::digest::digest_of;
use crate::frame::{decode_frame, encode_frame};
use crate::proto::{
    ClientPacket, Ctrl, CtrlParams, Data, Info, PROTOCOL_VERSION, Pres, PresWhat, ServerPacket,
    decode_client, encode_server,
};
use crate::time::Duration;

type Eng = Engine<64, 256, 4, 16, 1024>;

const BUF: usize = 1024;
const ME: &str = "alice";
const PEER: &str = "bob";
const GRP: &str = "grp1";

/// What the engine wrote, decoded and owned.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Out {
    Ping,
    Hi {
        id: ReqId,
        ver: u16,
    },
    Login {
        id: ReqId,
        secret: std::vec::Vec<u8>,
    },
    Sub {
        id: ReqId,
        topic: String,
        since: Option<u64>,
    },
    Pub {
        id: ReqId,
        topic: String,
        msg_id: MsgId,
        content: std::vec::Vec<u8>,
    },
    Get {
        id: ReqId,
        topic: String,
        what: GetWhat,
    },
    Note {
        topic: String,
        what: NoteWhat,
        seq: u64,
    },
    Ack {
        topic: String,
        seq: u64,
    },
    Other(&'static str),
}

fn out_of(p: ClientPacket<'_>) -> Out {
    match p {
        ClientPacket::Hi(h) => Out::Hi {
            id: h.id,
            ver: h.ver,
        },
        ClientPacket::Login(l) => Out::Login {
            id: l.id,
            secret: l.secret.to_vec(),
        },
        ClientPacket::Sub(s) => Out::Sub {
            id: s.id,
            topic: s.topic.into(),
            since: s.since,
        },
        ClientPacket::Pub(p) => Out::Pub {
            id: p.id,
            topic: p.topic.into(),
            msg_id: p.msg_id,
            content: p.content.to_vec(),
        },
        ClientPacket::Get(g) => Out::Get {
            id: g.id,
            topic: g.topic.into(),
            what: g.what,
        },
        ClientPacket::Note(n) => Out::Note {
            topic: n.topic.into(),
            what: n.what,
            seq: n.seq,
        },
        ClientPacket::Ack(a) => Out::Ack {
            topic: a.topic.into(),
            seq: a.seq,
        },
        other => Out::Other(other.name()),
    }
}

/// The id the peer gave its message number `seq`.
fn peer_id(seq: u64) -> MsgId {
    let mut b = [0xB0; 16];
    b[..8].copy_from_slice(&seq.to_be_bytes());
    MsgId::from_bytes(b)
}

fn ctrl(id: ReqId, code: Code, params: CtrlParams<'_>) -> ServerPacket<'_> {
    ServerPacket::Ctrl(Ctrl {
        id,
        code,
        text: code.text(),
        topic: "",
        params,
    })
}

fn data<'a>(
    seq: u64,
    msg_id: MsgId,
    from: &'a str,
    mime: &'a str,
    content: &'a [u8],
) -> ServerPacket<'a> {
    ServerPacket::Data(Data {
        topic: GRP,
        seq,
        msg_id,
        from,
        ts: 1_700_000_000_000 + seq,
        head: Head {
            mime,
            reply_to: None,
        },
        content,
    })
}

/// The gateway's answer to a pub: stored at `seq` (and at time `seq`), not a duplicate.
fn stored_at(req: ReqId, seq: u64) -> ServerPacket<'static> {
    ctrl(
        req,
        Code::ACCEPTED,
        CtrlParams::Pub {
            seq,
            ts: seq,
            dup: false,
        },
    )
}

fn hi_ok() -> CtrlParams<'static> {
    CtrlParams::Hi {
        ver: PROTOCOL_VERSION,
        server_ms: 1_700_000_000_000,
        max_content: 4096,
    }
}

fn login_ok() -> CtrlParams<'static> {
    CtrlParams::Login {
        user: ME,
        token: &[],
        expires_ms: 0,
    }
}

fn sub_ok(latest: u64) -> CtrlParams<'static> {
    CtrlParams::Sub {
        latest,
        read: 0,
        recv: 0,
        acked: 0,
    }
}

fn config() -> EngineConfig {
    EngineConfig::new("dev1", Credentials::basic(ME, "pw").unwrap())
}

/// Seqs of the live `MessageAdded` events, in order.
fn added(events: &[Event]) -> std::vec::Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::MessageAdded {
                seq: Some(s),
                history: false,
                ..
            } => Some(*s),
            _ => None,
        })
        .collect()
}

fn acks(out: &[Out]) -> std::vec::Vec<u64> {
    out.iter()
        .filter_map(|o| match o {
            Out::Ack { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect()
}

/// (request id, message id) of every `pub` written.
fn pubs(out: &[Out]) -> std::vec::Vec<(ReqId, MsgId)> {
    out.iter()
        .filter_map(|o| match o {
            Out::Pub { id, msg_id, .. } => Some((*id, *msg_id)),
            _ => None,
        })
        .collect()
}

fn states(events: &[Event]) -> std::vec::Vec<SessionState> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::State(s) => Some(*s),
            _ => None,
        })
        .collect()
}

/// The test's gateway and driver around one engine.
struct Gateway {
    eng: Eng,
    now: Instant,
    out: std::vec::Vec<Out>,
    events: std::vec::Vec<Event>,
    commands: std::vec::Vec<Command>,
}

impl Gateway {
    fn new(cfg: EngineConfig) -> Self {
        let now = Instant::from_millis(0);
        Gateway {
            eng: Engine::new(now, cfg, 0x5eed),
            now,
            out: std::vec::Vec::new(),
            events: std::vec::Vec::new(),
            commands: std::vec::Vec::new(),
        }
    }

    /// A session logged in as [`ME`], subscribed to `topics`, `Ready`, with everything drained.
    fn ready(cfg: EngineConfig, topics: &[&str]) -> Self {
        let mut gw = Gateway::new(cfg);
        for t in topics {
            gw.eng.subscribe(t).unwrap();
        }
        gw.open();
        gw.answer_subs();
        assert_eq!(gw.eng.state(), SessionState::Ready);
        gw.clear();
        gw
    }

    fn grp(&self) -> TopicKey {
        self.eng.topic_key(GRP).unwrap()
    }

    fn clear(&mut self) {
        self.out.clear();
        self.events.clear();
        self.commands.clear();
    }

    fn take_out(&mut self) -> std::vec::Vec<Out> {
        core::mem::take(&mut self.out)
    }

    fn take_events(&mut self) -> std::vec::Vec<Event> {
        core::mem::take(&mut self.events)
    }

    fn take_commands(&mut self) -> std::vec::Vec<Command> {
        core::mem::take(&mut self.commands)
    }

    /// Drains commands, then frames.
    fn drain_io(&mut self) {
        while let Some(c) = self.eng.poll_command() {
            self.commands.push(c);
        }
        let mut buf = [0u8; BUF];
        for _ in 0..10_000 {
            let Some(n) = self.eng.poll_transmit(self.now, &mut buf) else {
                return;
            };
            let (body, used) =
                decode_frame(&buf[..n], BUF).expect("the engine writes whole frames");
            assert_eq!(used, n, "one frame per poll_transmit");
            self.out.push(if body.is_empty() {
                Out::Ping
            } else {
                out_of(decode_client(body).expect("the engine writes valid packets"))
            });
        }
        panic!("poll_transmit never ran dry");
    }

    /// Drains commands, frames and events, in that order.
    fn drain(&mut self) {
        self.drain_io();
        while let Some(e) = self.eng.poll_event() {
            self.events.push(e);
        }
    }

    fn tick(&mut self) {
        self.eng.handle_timeout(self.now);
    }

    fn wait(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
    }

    /// Runs as a driver does until `deadline`: sleeps until each `poll_timeout`, handles it and
    /// drains (events too, if `take_events`).
    fn run_until(&mut self, deadline: Instant, take_events: bool) {
        let mut handled: Option<Instant> = None;
        for _ in 0..10_000 {
            let Some(at) = self.eng.poll_timeout() else {
                break;
            };
            // A timer at or before the instant just handled waits for the driver (e.g. to
            // close the connection): do not spin on it.
            if at > deadline || handled.is_some_and(|h| at <= h) {
                break;
            }
            self.now = self.now.max(at);
            handled = Some(self.now);
            self.tick();
            self.drain_or_io(take_events);
        }
        if self.now < deadline {
            self.now = deadline;
            self.tick();
            self.drain_or_io(take_events);
        }
    }

    fn drain_or_io(&mut self, take_events: bool) {
        if take_events {
            self.drain();
        } else {
            self.drain_io();
        }
    }

    fn run_for(&mut self, ms: u64) {
        let deadline = self.now + Duration::from_millis(ms);
        self.run_until(deadline, true);
    }

    /// Feeds one server packet as one frame.
    fn send(&mut self, p: ServerPacket<'_>) {
        let mut buf = [0u8; BUF];
        let n = encode_server(&p, &mut buf).unwrap();
        let taken = self.eng.handle_bytes(self.now, &buf[..n]);
        assert_eq!(taken, n, "the engine took the whole frame");
    }

    fn send_raw(&mut self, bytes: &[u8]) -> usize {
        self.eng.handle_bytes(self.now, bytes)
    }

    /// A message from the peer at `seq` in [`GRP`], then a drain.
    fn push(&mut self, seq: u64) {
        let content = format!("m{seq}");
        self.send(data(seq, peer_id(seq), PEER, "", content.as_bytes()));
        self.drain();
    }

    /// From offline: waits for `Connect`, connects, says hi and logs in; leaves what the engine
    /// wrote after the login answer in `self.out`.
    fn open(&mut self) {
        for _ in 0..20 {
            if self.commands.contains(&Command::Connect) {
                break;
            }
            let at = self
                .eng
                .poll_timeout()
                .expect("an offline engine has a reconnect timer");
            self.now = self.now.max(at);
            self.tick();
            self.drain();
        }
        assert!(self.take_commands().contains(&Command::Connect));
        self.eng.handle_connected(self.now);
        self.drain();
        let [Out::Hi { id: hi, .. }] = self.take_out()[..] else {
            panic!("expected a lone hi");
        };
        self.send(ctrl(hi, Code::OK, hi_ok()));
        self.drain();
        let [Out::Login { id: login, .. }] = self.take_out()[..] else {
            panic!("expected a lone login");
        };
        self.send(ctrl(login, Code::OK, login_ok()));
        self.drain();
    }

    /// Answers every `sub` in `self.out` with a 200 (latest 0).
    fn answer_subs(&mut self) {
        let subs: std::vec::Vec<ReqId> = self
            .out
            .iter()
            .filter_map(|o| match o {
                Out::Sub { id, .. } => Some(*id),
                _ => None,
            })
            .collect();
        for id in subs {
            self.send(ctrl(id, Code::OK, sub_ok(0)));
        }
        self.drain();
    }

    fn ids(&self, topic: TopicKey) -> std::vec::Vec<MsgId> {
        self.eng.messages(topic).map(|m| m.id).collect()
    }
}

// ----- 1. connecting -----------------------------------------------------------------------

#[test]
fn a_new_engine_asks_to_connect_says_hi_logs_in_and_subscribes_before_it_is_ready() {
    let mut gw = Gateway::new(config());
    let grp = gw.eng.subscribe(GRP).unwrap();
    assert_eq!(gw.eng.state(), SessionState::Offline);
    assert_eq!(gw.eng.poll_timeout(), Some(gw.now), "connect at once");

    gw.tick();
    gw.drain();
    assert_eq!(gw.take_commands(), [Command::Connect]);
    assert_eq!(gw.eng.state(), SessionState::Connecting);
    assert!(
        gw.take_out().is_empty(),
        "nothing to write without a connection"
    );

    gw.wait(30);
    gw.eng.handle_connected(gw.now);
    gw.drain();
    assert_eq!(gw.eng.state(), SessionState::Handshake);
    let [Out::Hi { id: hi, ver }] = gw.take_out()[..] else {
        panic!("hi first, alone");
    };
    assert_eq!(ver, PROTOCOL_VERSION);

    gw.wait(5);
    gw.tick();
    gw.drain();
    assert!(gw.take_out().is_empty(), "login waits for the hi answer");

    gw.send(ctrl(hi, Code::OK, hi_ok()));
    gw.drain();
    assert_eq!(gw.eng.state(), SessionState::LoggingIn);
    let out = gw.take_out();
    let [Out::Login { id: login, secret }] = &out[..] else {
        panic!("login after hi, alone: {out:?}");
    };
    assert_eq!(secret.as_slice(), b"alice:pw");

    gw.send(ctrl(*login, Code::OK, login_ok()));
    gw.drain();
    assert_eq!(gw.eng.state(), SessionState::Subscribing);
    assert_eq!(gw.eng.user(), ME);
    let out = gw.take_out();
    let [
        Out::Sub {
            id: sub,
            topic,
            since,
        },
    ] = &out[..]
    else {
        panic!("a sub for the wanted topic: {out:?}");
    };
    assert_eq!((topic.as_str(), *since), (GRP, Some(0)));

    gw.send(ctrl(*sub, Code::OK, sub_ok(7)));
    gw.drain();
    assert_eq!(gw.eng.state(), SessionState::Ready);

    let events = gw.take_events();
    assert_eq!(
        states(&events),
        [
            SessionState::Connecting,
            SessionState::Handshake,
            SessionState::LoggingIn,
            SessionState::Subscribing,
            SessionState::Ready,
        ]
    );
    let connected = events
        .iter()
        .position(|e| *e == Event::Connected)
        .expect("Connected");
    let subscribing = events
        .iter()
        .position(|e| *e == Event::State(SessionState::Subscribing))
        .unwrap();
    assert!(connected > subscribing, "Connected once logged in");
    assert!(events.contains(&Event::Subscribed {
        topic: grp,
        latest: 7
    }));
    assert_eq!(gw.eng.stats().logins, 1);
}

// ----- 2. sticky refusals ------------------------------------------------------------------

/// Every command fails with `e`, and the engine never asks to connect again.
fn assert_stopped_for_good(gw: &mut Gateway, e: EngineError) {
    assert_eq!(gw.eng.error(), Some(e));
    assert_eq!(gw.eng.state(), SessionState::Failed);
    let grp = gw.grp();
    assert_eq!(gw.eng.publish(gw.now, GRP, Head::default(), b"x"), Err(e));
    assert_eq!(gw.eng.subscribe("grp2"), Err(e));
    assert_eq!(gw.eng.mark_read(grp, 1), Err(e));
    assert_eq!(gw.eng.check_digest(grp, 5), Err(e));
    assert_eq!(gw.eng.load_history(grp, 5), Err(e));
    assert_eq!(gw.eng.action(ActionCmd::TakeNext), Err(e));
    assert_eq!(gw.eng.typing(gw.now, grp), Err(e));

    gw.eng.handle_disconnected(gw.now);
    gw.drain();
    assert_eq!(gw.eng.poll_timeout(), None, "no timer: nothing will happen");
    for s in [1, 10, 100, 10_000] {
        gw.now = gw.now.max(Instant::from_millis(s * 1000));
        gw.tick();
        gw.drain();
    }
    assert!(
        !gw.take_commands().contains(&Command::Connect),
        "no reconnect after a sticky error"
    );
    assert_eq!(gw.eng.state(), SessionState::Failed);
    assert_eq!(gw.eng.error(), Some(e));
}

#[test]
fn a_505_answer_to_hi_stops_the_session_for_good() {
    let mut gw = Gateway::new(config());
    gw.eng.subscribe(GRP).unwrap();
    gw.tick();
    gw.drain();
    gw.eng.handle_connected(gw.now);
    gw.drain();
    let [Out::Hi { id: hi, .. }] = gw.take_out()[..] else {
        panic!("hi");
    };
    gw.send(ctrl(hi, Code::VERSION_NOT_SUPPORTED, CtrlParams::None));
    gw.drain();
    assert_eq!(gw.take_commands(), [Command::Connect, Command::Close]);
    assert!(gw.take_out().is_empty(), "no login after a refused hi");
    assert_stopped_for_good(&mut gw, EngineError::VersionRefused);
}

#[test]
fn a_401_answer_to_login_stops_the_session_for_good() {
    let mut gw = Gateway::new(config());
    gw.eng.subscribe(GRP).unwrap();
    gw.tick();
    gw.drain();
    gw.eng.handle_connected(gw.now);
    gw.drain();
    let [Out::Hi { id: hi, .. }] = gw.take_out()[..] else {
        panic!("hi");
    };
    gw.send(ctrl(hi, Code::OK, hi_ok()));
    gw.drain();
    let [Out::Login { id: login, .. }] = gw.take_out()[..] else {
        panic!("login");
    };
    gw.send(ctrl(login, Code::UNAUTHORIZED, CtrlParams::None));
    gw.drain();
    assert_eq!(gw.take_commands(), [Command::Connect, Command::Close]);
    assert!(gw.take_out().is_empty(), "no sub after a refused login");
    assert!(!gw.take_events().contains(&Event::Connected));
    assert_stopped_for_good(&mut gw, EngineError::LoginRefused(Code::UNAUTHORIZED));
}

// ----- 3. publishing -----------------------------------------------------------------------

#[test]
fn a_published_message_shows_at_once_goes_out_with_its_id_and_moves_to_its_stored_seq() {
    let mut gw = Gateway::ready(config(), &[GRP]);
    let grp = gw.grp();
    gw.push(1);
    gw.push(2);
    gw.run_for(100);
    gw.clear();

    let frames = gw.eng.stats().frames_out;
    let id = gw
        .eng
        .publish(gw.now, GRP, Head::default(), b"hello")
        .unwrap();
    assert_eq!(
        gw.eng.poll_event(),
        Some(Event::MessageAdded {
            topic: grp,
            id,
            seq: None,
            history: false
        }),
        "shown before any network traffic"
    );
    assert_eq!(gw.eng.stats().frames_out, frames, "nothing written yet");
    let m = gw.eng.message(&id).unwrap();
    assert_eq!(
        (m.state, m.outgoing, m.content),
        (MessageState::Queued, true, &b"hello"[..])
    );

    gw.drain();
    let out = gw.take_out();
    let [
        Out::Pub {
            id: req,
            topic,
            msg_id,
            content,
        },
    ] = &out[..]
    else {
        panic!("one pub: {out:?}");
    };
    assert_eq!(
        (topic.as_str(), *msg_id, content.as_slice()),
        (GRP, id, &b"hello"[..])
    );
    assert_eq!(gw.eng.message(&id).unwrap().state, MessageState::Sending);
    assert_eq!(
        gw.ids(grp),
        [peer_id(1), peer_id(2), id],
        "after the last received seq"
    );

    // Someone else's message is stored first, then ours is acknowledged at seq 4.
    gw.push(3);
    assert_eq!(gw.ids(grp), [peer_id(1), peer_id(2), id, peer_id(3)]);
    gw.send(ctrl(
        *req,
        Code::ACCEPTED,
        CtrlParams::Pub {
            seq: 4,
            ts: 1_700_000_000_004,
            dup: false,
        },
    ));
    gw.drain();
    assert!(gw.take_events().contains(&Event::MessageChanged {
        topic: grp,
        id,
        state: MessageState::Sent,
        seq: Some(4)
    }));
    let m = gw.eng.message(&id).unwrap();
    assert_eq!((m.state, m.seq()), (MessageState::Sent, Some(4)));
    assert_eq!(gw.ids(grp), [peer_id(1), peer_id(2), peer_id(3), id]);

    // The gateway's push of our own message is not shown a second time.
    gw.send(data(4, id, ME, "", b"hello"));
    gw.drain();
    assert!(added(&gw.take_events()).is_empty());
    assert_eq!(gw.ids(grp), [peer_id(1), peer_id(2), peer_id(3), id]);
}

#[test]
fn the_echo_of_an_own_message_counts_as_one_duplicate() {
    let mut gw = Gateway::ready(config(), &[GRP]);
    let id = gw
        .eng
        .publish(gw.now, GRP, Head::default(), b"hello")
        .unwrap();
    gw.drain();
    let [(req, _)] = pubs(&gw.take_out())[..] else {
        panic!("one pub");
    };
    gw.send(stored_at(req, 1));
    gw.drain();
    let before = gw.eng.stats().duplicates;
    gw.send(data(1, id, ME, "", b"hello"));
    gw.drain();
    assert_eq!(
        gw.eng.stats().duplicates,
        before + 1,
        "one data dropped, one counted"
    );
}

#[test]
fn a_message_published_while_later_seqs_wait_above_a_hole_sorts_after_them() {
    let mut gw = Gateway::ready(config(), &[GRP]);
    let grp = gw.grp();
    gw.push(1);
    // Seq 3 waits for seq 2: not shown, but held in the pool.
    gw.push(3);
    assert_eq!(added(&gw.take_events()), [1]);
    let first = gw.eng.publish(gw.now, GRP, Head::default(), b"a").unwrap();
    assert_eq!(
        gw.eng.message(&first).unwrap().key.seq,
        3,
        "after the held seq 3, not after the shown seq 1"
    );
    gw.drain();
    let [(req, _)] = pubs(&gw.take_out())[..] else {
        panic!("one pub");
    };
    // Ours is stored at 5, above the hole too.
    gw.send(stored_at(req, 5));
    gw.drain();
    let second = gw.eng.publish(gw.now, GRP, Head::default(), b"b").unwrap();
    assert_eq!(gw.eng.message(&second).unwrap().key.seq, 5);
    gw.push(2);
    assert_eq!(
        gw.ids(grp),
        [peer_id(1), peer_id(2), peer_id(3), first, second]
    );
}

#[test]
fn pubs_whose_request_ids_are_a_whole_outbox_apart_are_both_confirmed() {
    let mut gw = Gateway::ready(config(), &[GRP]);
    let grp = gw.grp();
    let first = gw.eng.publish(gw.now, GRP, Head::default(), b"1").unwrap();
    gw.drain();
    let [(r1, _)] = pubs(&gw.take_out())[..] else {
        panic!("one pub");
    };
    // Requests in between: the next pub's request id is the first's plus the outbox size.
    for _ in 0..15 {
        let req = gw.eng.check_digest(grp, 1).unwrap();
        gw.drain();
        gw.send(ctrl(req, Code::NOT_FOUND, CtrlParams::None));
    }
    let second = gw.eng.publish(gw.now, GRP, Head::default(), b"2").unwrap();
    gw.drain();
    let [(r2, _)] = pubs(&gw.take_out())[..] else {
        panic!("one pub");
    };
    assert_eq!(r2 - r1, 16, "the same place in a table of 16");
    for (req, seq) in [(r2, 1), (r1, 2)] {
        gw.send(stored_at(req, seq));
    }
    gw.drain();
    assert_eq!(gw.eng.message(&second).unwrap().seq(), Some(1));
    assert_eq!(gw.eng.message(&first).unwrap().seq(), Some(2));
    assert_eq!(gw.ids(grp), [second, first]);
}

// ----- 4. retransmission and reconnect -----------------------------------------------------

#[test]
fn an_unacknowledged_pub_is_retransmitted_with_the_same_ids_and_sent_again_after_a_reconnect() {
    let mut gw = Gateway::ready(config(), &[GRP]);
    let grp = gw.grp();
    let rto = config().outbox.rto.as_millis();
    let id = gw
        .eng
        .publish(gw.now, GRP, Head::default(), b"hello")
        .unwrap();
    gw.drain();
    let first = pubs(&gw.take_out());
    let [(req, msg_id)] = first[..] else {
        panic!("one pub: {first:?}");
    };
    assert_eq!(msg_id, id);

    gw.wait(rto - 1);
    gw.tick();
    gw.drain();
    assert!(pubs(&gw.take_out()).is_empty(), "not before the rto");
    gw.wait(1);
    gw.tick();
    gw.drain();
    assert_eq!(
        pubs(&gw.take_out()),
        [(req, id)],
        "same request id and message id"
    );
    assert_eq!(gw.eng.stats().retransmits, 1);

    gw.eng.handle_disconnected(gw.now);
    gw.drain();
    assert!(gw.take_events().contains(&Event::Disconnected));
    assert_eq!(gw.eng.state(), SessionState::Offline);

    gw.open();
    let again = pubs(&gw.out);
    assert_eq!(
        again.iter().map(|p| p.1).collect::<std::vec::Vec<_>>(),
        [id],
        "sent again after the login, with the same message id"
    );
    gw.answer_subs();
    gw.clear();
    gw.send(ctrl(
        again[0].0,
        Code::ACCEPTED,
        CtrlParams::Pub {
            seq: 1,
            ts: 1,
            dup: true,
        },
    ));
    gw.drain();
    assert_eq!(gw.eng.message(&id).unwrap().state, MessageState::Sent);
    assert_eq!(gw.eng.message(&id).unwrap().seq(), Some(1));
    assert_eq!(gw.ids(grp), [id], "one message, not two");
    // Acknowledged: no more retransmissions.
    gw.run_for(60_000);
    assert!(pubs(&gw.take_out()).is_empty());
}

// ----- 5. refusal and resend ---------------------------------------------------------------

#[test]
fn a_refused_message_fails_in_place_and_a_resend_queues_it_again_with_the_same_id() {
    let mut gw = Gateway::ready(config(), &[GRP]);
    let grp = gw.grp();
    gw.push(1);
    gw.push(2);
    let id = gw
        .eng
        .publish(gw.now, GRP, Head::default(), b"bad word")
        .unwrap();
    gw.drain();
    let [(req, _)] = pubs(&gw.take_out())[..] else {
        panic!("one pub");
    };
    gw.push(3);
    gw.clear();

    gw.send(ctrl(req, Code::POLICY, CtrlParams::None));
    gw.drain();
    let failed = MessageState::Failed(FailReason::Refused { code: 422 });
    assert!(gw.take_events().contains(&Event::MessageChanged {
        topic: grp,
        id,
        state: failed,
        seq: None
    }));
    let m = gw.eng.message(&id).unwrap();
    assert_eq!((m.state, m.key), (failed, OrderKey::pending(2, 1)));
    assert_eq!(
        gw.ids(grp),
        [peer_id(1), peer_id(2), id, peer_id(3)],
        "keeps its virtual position"
    );
    gw.run_for(10_000);
    assert!(
        pubs(&gw.take_out()).is_empty(),
        "a refused message is not retried"
    );

    gw.eng.resend(gw.now, &id).unwrap();
    assert_eq!(gw.eng.message(&id).unwrap().state, MessageState::Queued);
    gw.drain();
    assert!(gw.take_events().contains(&Event::MessageChanged {
        topic: grp,
        id,
        state: MessageState::Queued,
        seq: None
    }));
    let again = pubs(&gw.take_out());
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1, id, "the same message id");
    assert_eq!(gw.ids(grp).iter().filter(|x| **x == id).count(), 1);
}

// ----- 6. ordering, duplicates and gap pulls -----------------------------------------------

#[test]
fn pushes_out_of_order_are_shown_in_seq_order_and_a_duplicate_is_not_shown_again() {
    let mut gw = Gateway::ready(config(), &[GRP]);
    let grp = gw.grp();
    gw.push(3);
    assert!(added(&gw.events).is_empty(), "3 waits for 1 and 2");
    assert!(
        gw.eng.message(&peer_id(3)).is_none(),
        "held messages are not shown"
    );
    gw.push(1);
    assert_eq!(added(&gw.events), [1]);
    gw.push(2);
    assert_eq!(added(&gw.events), [1, 2, 3]);

    let dups = gw.eng.stats().duplicates;
    gw.push(2);
    gw.push(3);
    gw.push(1);
    assert_eq!(added(&gw.events), [1, 2, 3], "duplicates are not shown");
    assert!(gw.eng.stats().duplicates >= dups + 3);
    assert_eq!(gw.ids(grp), [peer_id(1), peer_id(2), peer_id(3)]);
}

#[test]
fn in_order_pushes_beyond_the_pool_evict_the_oldest_and_still_leave_room_for_held_ones() {
    let mut gw = Gateway::ready(config(), &[GRP]);
    let grp = gw.grp();
    // Pushed in order, each shown as it arrives: more than the pool holds.
    for seq in 1..=100 {
        gw.push(seq);
    }
    // One of ours, sent from another device, arrives in order too.
    gw.send(data(101, peer_id(101), ME, "", b"mine"));
    gw.drain();
    assert_eq!(
        added(&gw.take_events()),
        (1..=101).collect::<std::vec::Vec<_>>()
    );
    assert!(
        gw.eng.message(&peer_id(1)).is_none(),
        "the oldest were evicted"
    );
    let m = gw.eng.message(&peer_id(100)).unwrap();
    assert_eq!((m.state, m.outgoing), (MessageState::Received, false));
    let m = gw.eng.message(&peer_id(101)).unwrap();
    assert_eq!((m.state, m.outgoing), (MessageState::Sent, true));
    assert_eq!(gw.eng.unread(grp), 100, "own messages are not unread");

    // Held above a hole, still let in: nothing counts as arriving any more.
    for seq in 103..=140 {
        gw.push(seq);
    }
    assert!(added(&gw.take_events()).is_empty());
    assert_eq!(gw.eng.stats().no_room, 0);
    gw.push(102);
    assert_eq!(
        added(&gw.take_events()),
        (102..=140).collect::<std::vec::Vec<_>>()
    );
}

#[test]
fn messages_released_into_a_full_event_queue_come_out_as_the_application_drains_it() {
    let mut gw = Gateway::ready(config(), &[GRP]);
    // 2..=30 wait for 1, shown nothing yet.
    for seq in 2..=30 {
        let content = format!("m{seq}");
        gw.send(data(seq, peer_id(seq), PEER, "", content.as_bytes()));
    }
    // The application does not drain: presence notices fill most of the event queue.
    for _ in 0..50 {
        gw.send(ServerPacket::Pres(Pres {
            topic: GRP,
            src: PEER,
            what: PresWhat::On,
        }));
    }
    // 1 releases all thirty at once, more than the queue has room for.
    gw.send(data(1, peer_id(1), PEER, "", b"m1"));
    let mut first = std::vec::Vec::new();
    while first.len() < 50 {
        first.push(gw.eng.poll_event().expect("the notices are queued"));
    }
    let shown_early = added(&first).len();
    // Each event drained makes room for more: in the end all thirty come out, once, in order.
    gw.drain();
    first.extend(gw.take_events());
    assert!(
        shown_early < 30,
        "the queue could not hold them all at once"
    );
    assert_eq!(added(&first), (1..=30).collect::<std::vec::Vec<_>>());
    assert_eq!(gw.eng.stats().received, 30);
}

#[test]
fn a_gap_open_longer_than_gap_hold_is_pulled_with_a_get_for_exactly_the_missing_range() {
    let mut gw = Gateway::ready(config(), &[GRP]);
    let hold = config().gap_hold.as_millis();
    let start = gw.now;
    gw.push(1);
    gw.push(4);
    gw.push(5);
    assert_eq!(added(&gw.events), [1]);

    gw.run_until(start + Duration::from_millis(hold - 1), true);
    let early: std::vec::Vec<_> = gw
        .take_out()
        .into_iter()
        .filter(|o| matches!(o, Out::Get { .. }))
        .collect();
    assert!(
        early.is_empty(),
        "reordered pushes get gap_hold to fill the hole: {early:?}"
    );

    gw.run_until(start + Duration::from_millis(hold), true);
    let gets: std::vec::Vec<_> = gw
        .take_out()
        .into_iter()
        .filter(|o| matches!(o, Out::Get { .. }))
        .collect();
    let [Out::Get { id, topic, what }] = &gets[..] else {
        panic!("one get: {gets:?}");
    };
    assert_eq!(topic, GRP);
    assert_eq!(
        *what,
        GetWhat::Data {
            since: 2,
            before: 4,
            limit: 2
        }
    );
    assert_eq!(gw.eng.stats().pulls, 1);

    gw.push(2);
    gw.push(3);
    gw.send(ctrl(*id, Code::OK, CtrlParams::Count { count: 2 }));
    gw.drain();
    assert_eq!(added(&gw.events), [1, 2, 3, 4, 5]);
    gw.run_for(5_000);
    assert!(
        !gw.take_out().iter().any(|o| matches!(o, Out::Get { .. })),
        "nothing more to pull"
    );
}

/// A `pres` notice on `me`: a message at `seq` in `src`.
fn news(src: &str, seq: u64) -> ServerPacket<'_> {
    ServerPacket::Pres(Pres {
        topic: "me",
        src,
        what: PresWhat::Msg { seq },
    })
}

#[test]
fn news_on_me_pulls_a_followed_topic_and_reports_an_unfollowed_one_without_touching_me() {
    let mut gw = Gateway::ready(config(), &["me", GRP]);
    let me = gw.eng.topic_key("me").unwrap();
    let grp = gw.grp();
    let start = gw.now;

    // News in a followed conversation: its latest rises and what was missed is pulled.
    gw.send(news(GRP, 2));
    gw.drain();
    assert!(
        gw.events.contains(&Event::Unread {
            topic: grp,
            count: 2
        }),
        "two unread in {GRP}: {:?}",
        gw.events
    );
    gw.run_until(start + config().gap_hold, true);
    let gets: std::vec::Vec<_> = gw
        .take_out()
        .into_iter()
        .filter(|o| matches!(o, Out::Get { .. }))
        .collect();
    let [Out::Get { topic, what, .. }] = &gets[..] else {
        panic!("one get: {gets:?}");
    };
    assert_eq!(topic, GRP);
    assert_eq!(
        *what,
        GetWhat::Data {
            since: 1,
            before: 3,
            limit: 2
        }
    );
    gw.clear();

    // News in a conversation the engine does not hold: the application hears of it.
    gw.send(news("grp9", 7));
    gw.drain();
    assert_eq!(
        gw.take_events(),
        [Event::Presence {
            topic: me,
            src: label("grp9"),
            what: PresWhat::Msg { seq: 7 },
        }]
    );
    // ... and `me`'s own order is untouched: nothing to pull there, nothing unread.
    gw.run_for(5_000);
    assert!(
        !gw.take_out()
            .iter()
            .any(|o| matches!(o, Out::Get { topic, .. } if topic == "me")),
        "no pull on me"
    );
    assert!(
        !gw.events
            .iter()
            .any(|e| matches!(e, Event::Unread { topic, .. } if *topic == me)),
        "me has no unread messages: {:?}",
        gw.events
    );
}

// ----- 7. acks -----------------------------------------------------------------------------

fn ten_pushes(gw: &mut Gateway) {
    let mut bytes = std::vec::Vec::new();
    for seq in 1..=10u64 {
        let mut buf = [0u8; BUF];
        let content = format!("m{seq}");
        let n = encode_server(
            &data(seq, peer_id(seq), PEER, "", content.as_bytes()),
            &mut buf,
        )
        .unwrap();
        bytes.extend_from_slice(&buf[..n]);
    }
    assert_eq!(gw.send_raw(&bytes), bytes.len());
}

#[test]
fn ten_pushes_handled_together_are_acknowledged_by_one_ack_for_the_highest_seq() {
    let mut gw = Gateway::ready(config(), &[GRP]);
    let max_delay = config().ack.max_delay.as_millis();
    let start = gw.now;
    ten_pushes(&mut gw);
    gw.drain();
    assert_eq!(added(&gw.events), (1..=10).collect::<std::vec::Vec<_>>());
    assert!(acks(&gw.out).is_empty(), "acks wait to be coalesced");

    // A driver sleeps until poll_timeout: the ack must be due within max_delay.
    gw.run_until(start + Duration::from_millis(max_delay), true);
    assert_eq!(acks(&gw.take_out()), [10], "one ack for the highest seq");
    gw.run_for(1_000);
    assert!(acks(&gw.take_out()).is_empty(), "and nothing more");
}

#[test]
fn no_ack_covers_a_message_whose_event_the_application_has_not_taken() {
    let mut gw = Gateway::ready(config(), &[GRP]);
    ten_pushes(&mut gw);
    gw.drain_io();
    // The application takes events up to the one showing seq 4, then stops reading.
    loop {
        let e = gw.eng.poll_event().expect("events up to seq 4");
        if let Event::MessageAdded { seq: Some(4), .. } = e {
            break;
        }
    }
    // Keep polling frames (not events) for a while, waking on every timer.
    for _ in 0..50 {
        gw.wait(10);
        gw.tick();
        gw.drain_io();
    }
    let sent = acks(&gw.take_out());
    assert!(
        sent.iter().all(|s| *s <= 4),
        "acks beyond what was taken: {sent:?}"
    );
    assert_eq!(sent.last(), Some(&4), "what was taken is acknowledged");

    // Once every event is taken, the rest is acknowledged (polled the same way as above).
    gw.drain();
    for _ in 0..10 {
        gw.wait(10);
        gw.tick();
        gw.drain();
    }
    assert_eq!(acks(&gw.take_out()), [10]);
}

// ----- 8. the filter hook ------------------------------------------------------------------

fn no_system_messages(d: &Data<'_>) -> bool {
    d.head.mime != "system"
}

#[test]
fn filtered_messages_are_never_shown_but_the_ack_moves_past_them() {
    let mut cfg = config();
    cfg.filter = Some(no_system_messages);
    let mut gw = Gateway::ready(cfg, &[GRP]);
    let grp = gw.grp();
    for (seq, mime) in [(1, ""), (2, "system"), (3, "text/plain"), (4, "system")] {
        gw.send(data(seq, peer_id(seq), PEER, mime, b"x"));
        gw.drain();
    }
    assert_eq!(added(&gw.events), [1, 3]);
    assert!(gw.eng.message(&peer_id(2)).is_none());
    assert!(gw.eng.message(&peer_id(4)).is_none());
    assert_eq!(gw.ids(grp), [peer_id(1), peer_id(3)]);
    assert_eq!(gw.eng.stats().filtered, 2);

    gw.run_for(1_000);
    assert_eq!(
        acks(&gw.out).last(),
        Some(&4),
        "the ack covers the dropped seq 4"
    );

    // A re-push of a dropped message is still not shown.
    gw.send(data(2, peer_id(2), PEER, "system", b"x"));
    gw.drain();
    assert_eq!(added(&gw.events), [1, 3]);
}

// ----- 9. keepalive ------------------------------------------------------------------------

#[test]
fn a_quiet_connection_is_pinged_after_the_interval_and_closed_after_the_timeout() {
    let mut gw = Gateway::ready(config(), &[GRP]);
    let ka = config().keepalive;
    let start = gw.now;

    gw.run_until(
        start + ka.interval.saturating_sub(Duration::from_millis(1)),
        true,
    );
    assert!(gw.take_out().is_empty(), "no ping before the interval");
    gw.run_until(start + ka.interval, true);
    assert_eq!(gw.take_out(), [Out::Ping], "an empty frame");

    gw.run_until(
        start + ka.timeout.saturating_sub(Duration::from_millis(1)),
        true,
    );
    assert!(gw.take_commands().is_empty(), "not dead yet");
    gw.run_until(start + ka.timeout, true);
    assert_eq!(gw.take_commands(), [Command::Close]);

    gw.eng.handle_disconnected(gw.now);
    gw.drain();
    assert!(gw.take_events().contains(&Event::Disconnected));
    assert_eq!(gw.eng.state(), SessionState::Offline);
    assert_eq!(gw.eng.stats().disconnects, 1);
}

#[test]
fn an_answer_to_the_ping_keeps_the_connection_open() {
    let mut gw = Gateway::ready(config(), &[GRP]);
    let ka = config().keepalive;
    let start = gw.now;
    gw.run_until(start + ka.interval, true);
    assert_eq!(gw.take_out(), [Out::Ping]);
    gw.wait(1_000);
    let mut buf = [0u8; 16];
    let n = encode_frame(&[], &mut buf).unwrap();
    assert_eq!(gw.send_raw(&buf[..n]), n);
    let answered = gw.now;
    gw.run_until(
        answered + ka.timeout.saturating_sub(Duration::from_millis(1)),
        true,
    );
    assert!(
        gw.take_commands().is_empty(),
        "the answer restarted the dead-peer clock"
    );
    gw.run_until(answered + ka.timeout, true);
    assert_eq!(gw.take_commands(), [Command::Close]);
}

// ----- 10. read marks and receipts ---------------------------------------------------------

#[test]
fn mark_read_updates_unread_and_tells_the_others_and_their_read_receipt_marks_own_messages_read() {
    let mut gw = Gateway::ready(config(), &[GRP]);
    let grp = gw.grp();
    for seq in 1..=3 {
        gw.push(seq);
    }
    assert_eq!(gw.eng.unread(grp), 3);
    assert!(gw.take_events().contains(&Event::Unread {
        topic: grp,
        count: 3
    }));
    gw.clear();

    gw.eng.mark_read(grp, 2).unwrap();
    gw.drain();
    assert_eq!(gw.eng.unread(grp), 1);
    assert!(gw.take_events().contains(&Event::Unread {
        topic: grp,
        count: 1
    }));
    assert!(gw.take_out().contains(&Out::Note {
        topic: GRP.into(),
        what: NoteWhat::Read,
        seq: 2
    }));

    let id = gw
        .eng
        .publish(gw.now, GRP, Head::default(), b"mine")
        .unwrap();
    gw.drain();
    let [(req, _)] = pubs(&gw.take_out())[..] else {
        panic!("one pub");
    };
    gw.send(stored_at(req, 4));
    gw.drain();
    assert_eq!(gw.eng.unread(grp), 1, "own messages are never unread");

    gw.send(ServerPacket::Info(Info {
        topic: GRP,
        from: PEER,
        what: NoteWhat::Recv,
        seq: 4,
    }));
    gw.drain();
    assert_eq!(gw.eng.message(&id).unwrap().state, MessageState::Delivered);

    gw.send(ServerPacket::Info(Info {
        topic: GRP,
        from: PEER,
        what: NoteWhat::Read,
        seq: 4,
    }));
    gw.drain();
    assert_eq!(gw.eng.message(&id).unwrap().state, MessageState::Read);
    assert!(gw.take_events().contains(&Event::Receipt {
        topic: grp,
        from: label(PEER),
        what: NoteWhat::Read,
        seq: 4
    }));
    assert_eq!(
        gw.eng.message(&peer_id(3)).unwrap().state,
        MessageState::Received,
        "others' messages are not touched by receipts"
    );
}

// ----- 11. malformed input -----------------------------------------------------------------

#[test]
fn malformed_input_is_counted_never_panics_and_the_session_keeps_working() {
    let mut gw = Gateway::ready(config(), &[GRP]);
    let bad = |gw: &Gateway| gw.eng.stats().bad_input;

    let b0 = bad(&gw);
    let garbage = [0x00, 0x13, 0x37, 0xff, 0xfe, b'x', b'y', 0x80, 0x01];
    assert_eq!(gw.send_raw(&garbage), garbage.len());
    gw.drain();
    assert!(bad(&gw) > b0, "garbage is counted");

    let b1 = bad(&gw);
    let mut buf = [0u8; BUF];
    let n = encode_server(&data(1, peer_id(1), PEER, "", b"m1"), &mut buf).unwrap();
    buf[n - 1] ^= 0xff; // the body CRC
    assert_eq!(gw.send_raw(&buf[..n]), n);
    gw.drain();
    assert!(bad(&gw) > b1, "a bad CRC is counted");

    let b2 = bad(&gw);
    let n = encode_frame(&[0xEE, 1, 2, 3], &mut buf).unwrap();
    assert_eq!(gw.send_raw(&buf[..n]), n);
    gw.drain();
    assert_eq!(bad(&gw), b2 + 1, "an undecodable body is counted once");

    let b3 = bad(&gw);
    gw.send(data(0, peer_id(0), PEER, "", b"zero"));
    gw.drain();
    assert_eq!(bad(&gw), b3 + 1, "seq 0 does not exist");

    gw.send(ctrl(9_999, Code::OK, CtrlParams::None));
    gw.send(ctrl(9_998, Code::POLICY, CtrlParams::None));
    gw.drain();

    assert!(added(&gw.events).is_empty());
    assert!(
        gw.take_commands().is_empty(),
        "bad input does not close the session"
    );
    assert_eq!(gw.eng.state(), SessionState::Ready);
    gw.push(1);
    assert_eq!(added(&gw.events), [1], "a following valid data is shown");
}

// ----- 12. reconciliation ------------------------------------------------------------------

#[test]
fn check_digest_reports_whether_the_gateways_last_messages_match_the_local_ones() {
    let mut gw = Gateway::ready(config(), &[GRP]);
    let grp = gw.grp();
    for seq in 1..=3 {
        gw.push(seq);
    }
    gw.clear();

    let req = gw.eng.check_digest(grp, 3).unwrap();
    gw.drain();
    assert!(gw.take_out().contains(&Out::Get {
        id: req,
        topic: GRP.into(),
        what: GetWhat::Digest { last: 3 }
    }));
    let same = digest_of((1..=3).map(|s| (s, peer_id(s)))).unwrap();
    gw.send(ctrl(req, Code::OK, CtrlParams::Digest(same)));
    gw.drain();
    let events = gw.take_events();
    assert!(events.contains(&Event::Reconciled {
        topic: grp,
        matches: true
    }));
    assert!(events.contains(&Event::Reply {
        req,
        code: Code::OK,
        topic: Some(grp)
    }));

    let req = gw.eng.check_digest(grp, 3).unwrap();
    gw.drain();
    let other = digest_of([(1, peer_id(1)), (2, peer_id(99)), (3, peer_id(3))]).unwrap();
    gw.send(ctrl(req, Code::OK, CtrlParams::Digest(other)));
    gw.drain();
    assert!(gw.take_events().contains(&Event::Reconciled {
        topic: grp,
        matches: false
    }));
}

// ----- properties --------------------------------------------------------------------------

/// Seqs 1..=n in a random order, with random duplicates inserted anywhere.
fn pushes() -> impl Strategy<Value = (u64, std::vec::Vec<u64>)> {
    (1u64..=30).prop_flat_map(|n| {
        (
            Just(n),
            Just((1..=n).collect::<std::vec::Vec<u64>>()).prop_shuffle(),
            proptest::collection::vec(
                (any::<prop::sample::Index>(), any::<prop::sample::Index>()),
                0..20,
            ),
        )
            .prop_map(|(n, mut order, dups)| {
                for (at, which) in dups {
                    let seq = order[which.index(order.len())];
                    let at = at.index(order.len() + 1);
                    order.insert(at, seq);
                }
                (n, order)
            })
    })
}

/// One piece of a byte stream from the gateway.
#[derive(Clone, Debug)]
enum Piece {
    /// A push of `seq` with `len` bytes of content.
    Push { seq: u64, len: usize },
    /// A presence notice (an event that is not a message).
    Presence,
    /// An empty frame (the answer to a ping).
    Keepalive,
    /// A push with one byte changed at `at`.
    Corrupt { seq: u64, at: prop::sample::Index },
    /// Bytes that are no frame.
    Garbage(std::vec::Vec<u8>),
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        6 => (1u64..=80, 0usize..=250).prop_map(|(seq, len)| Piece::Push { seq, len }),
        4 => Just(Piece::Presence),
        1 => Just(Piece::Keepalive),
        1 => (1u64..=80, any::<prop::sample::Index>()).prop_map(|(seq, at)| Piece::Corrupt { seq, at }),
        1 => proptest::collection::vec(any::<u8>(), 1..20).prop_map(Piece::Garbage),
    ]
}

fn stream_of(pieces: &[Piece]) -> std::vec::Vec<u8> {
    let mut out = std::vec::Vec::new();
    let mut buf = [0u8; BUF];
    for p in pieces {
        let packet_bytes = |p: ServerPacket<'_>, buf: &mut [u8; BUF]| {
            let n = encode_server(&p, buf).unwrap();
            buf[..n].to_vec()
        };
        let content = [b'c'; 250];
        match p {
            Piece::Push { seq, len } => {
                out.extend(packet_bytes(
                    data(*seq, peer_id(*seq), PEER, "", &content[..*len]),
                    &mut buf,
                ));
            }
            Piece::Presence => out.extend(packet_bytes(
                ServerPacket::Pres(Pres {
                    topic: GRP,
                    src: PEER,
                    what: PresWhat::On,
                }),
                &mut buf,
            )),
            Piece::Keepalive => {
                let n = encode_frame(&[], &mut buf).unwrap();
                out.extend_from_slice(&buf[..n]);
            }
            Piece::Corrupt { seq, at } => {
                let mut f = packet_bytes(data(*seq, peer_id(*seq), PEER, "", b"x"), &mut buf);
                let i = at.index(f.len());
                f[i] ^= 0x5A;
                out.extend(f);
            }
            Piece::Garbage(g) => out.extend_from_slice(g),
        }
    }
    out
}

/// Feeds `bytes` cut at `cuts`, as a driver does: what was not taken is offered again after
/// draining events; after a piece marked `true` events are drained too. Returns every count
/// taken and every event, in order.
fn feed(
    gw: &mut Gateway,
    bytes: &[u8],
    cuts: &[(prop::sample::Index, bool)],
) -> std::vec::Vec<String> {
    let mut trace = std::vec::Vec::new();
    let mut ends: std::vec::Vec<(usize, bool)> = cuts
        .iter()
        .map(|(at, drain)| (at.index(bytes.len() + 1), *drain))
        .collect();
    ends.push((bytes.len(), true));
    ends.sort_by_key(|e| e.0);
    let mut from = 0;
    for (end, drain) in ends {
        let mut rest = &bytes[from..end.max(from)];
        from = from.max(end);
        for _ in 0..1000 {
            let took = gw.eng.handle_bytes(gw.now, rest);
            // How far input handling got: events waiting, bytes held back.
            trace.push(format!(
                "took {took}, {} events, {} bytes buffered",
                gw.eng.events.len(),
                gw.eng.deframer.buffered()
            ));
            rest = &rest[took..];
            if drain || !rest.is_empty() {
                while let Some(e) = gw.eng.poll_event() {
                    trace.push(format!("{e:?}"));
                }
                gw.tick();
            }
            if rest.is_empty() {
                break;
            }
        }
    }
    trace.push(format!("{:?}", gw.eng.stats()));
    trace
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn pushes_in_any_order_with_duplicates_are_shown_exactly_once_in_seq_order((n, order) in pushes()) {
        let mut gw = Gateway::ready(config(), &[GRP]);
        for seq in order {
            gw.wait(1);
            gw.push(seq);
        }
        gw.run_for(50);
        prop_assert_eq!(added(&gw.events), (1..=n).collect::<std::vec::Vec<_>>());
    }

    #[test]
    fn random_bytes_from_the_gateway_never_panic_and_a_later_frame_still_gets_through(
        bytes in proptest::collection::vec(any::<u8>(), 1..300),
    ) {
        let mut gw = Gateway::ready(config(), &[GRP]);
        // Without a 'K' the bytes cannot start a frame that swallows the next one.
        let bytes: std::vec::Vec<u8> = bytes.into_iter().map(|b| if b == b'K' { 0 } else { b }).collect();
        let before = gw.eng.stats().bad_input;
        prop_assert_eq!(gw.send_raw(&bytes), bytes.len());
        gw.drain();
        prop_assert!(gw.eng.stats().bad_input > before);
        gw.push(1);
        prop_assert_eq!(added(&gw.events), [1]);
    }

    #[test]
    fn arbitrary_bytes_from_the_gateway_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut gw = Gateway::ready(config(), &[GRP]);
        let mut taken = 0;
        for _ in 0..100 {
            taken += gw.send_raw(&bytes[taken..]);
            gw.drain();
            if taken == bytes.len() {
                break;
            }
        }
        prop_assert_eq!(taken, bytes.len());
        gw.run_for(100_000);
    }

    #[test]
    fn frames_decoded_in_place_behave_exactly_as_frames_copied_through_the_deframer(
        pieces in proptest::collection::vec(piece(), 0..200),
        cuts in proptest::collection::vec((any::<prop::sample::Index>(), prop::bool::weighted(0.2)), 0..8),
    ) {
        let bytes = stream_of(&pieces);
        let mut fast = Gateway::ready(config(), &[GRP]);
        let mut copied = Gateway::ready(config(), &[GRP]);
        copied.eng.copy_frames = true;
        let a = feed(&mut fast, &bytes, &cuts);
        let b = feed(&mut copied, &bytes, &cuts);
        prop_assert_eq!(a, b);
        let grp = fast.grp();
        prop_assert_eq!(fast.ids(grp), copied.ids(grp));
    }
}
