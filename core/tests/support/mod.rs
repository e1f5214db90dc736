//! The deterministic simulation harness: client engines and a model gateway joined by a seeded
//! network emulator, all driven in virtual time order (quinn-proto's test `Pair`, generalised).
#![allow(dead_code)]

pub mod gateway;
pub mod net;

use std::collections::{BTreeMap, HashMap, HashSet};

use kefu_core::delivery::DeliveryConfig;
use kefu_core::engine::{Command, Credentials, Engine, EngineConfig, EngineError, Event};
use kefu_core::frame::decode_frame;
use kefu_core::id::MsgId;
use kefu_core::pool::{FailReason, MessageState};
use kefu_core::proto::Head;
use kefu_core::rng::{Rng, SplitMix64};
use kefu_core::time::{Duration, Instant, earliest};

use gateway::Gateway;
use net::{Dest, Net, NetConfig};

/// The engine size used in simulations: 256 messages of up to 64 bytes, 4 topics, 32 unacked
/// sends, 512-byte frames.
pub type SimEngine = Engine<256, 64, 4, 32, 512>;

/// The topic every simulated client talks in.
pub const TOPIC: &str = "cns1";

/// What the application of one client saw.
#[derive(Default)]
pub struct App {
    /// seq → id of every message shown as stored: received ones and own confirmed ones.
    pub shown: BTreeMap<u64, MsgId>,
    /// Last seq of a received (not own) message, for the order check.
    pub last_received: u64,
    /// Ids shown as received.
    pub received_ids: HashSet<MsgId>,
    /// Content of every received message, as the application read it.
    pub contents: HashMap<MsgId, Vec<u8>>,
    /// Own messages reported as given up (at least once).
    pub gave_up: HashSet<MsgId>,
    /// Given-up messages the user will resend (same id), as the person at the desk would.
    pub to_resend: Vec<MsgId>,
    /// Own messages published, in order.
    pub published: Vec<MsgId>,
    /// Violations seen.
    pub errors: Vec<String>,
}

/// One simulated client: its engine, its connection and its application.
pub struct Client {
    pub eng: SimEngine,
    pub conn: Option<u64>,
    pub connect_at: Option<Instant>,
    pub app: App,
    pub quota: u64,
    pub next_publish: Option<Instant>,
}

/// Knobs of one simulated run.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    pub seed: u64,
    pub clients: usize,
    pub messages_per_client: u64,
    pub net: NetConfig,
    /// Mean spacing of forced disconnects (None = never).
    pub cut_every: Option<Duration>,
    /// Chance that a connection attempt fails, ppm.
    pub connect_fail: u32,
    /// Mean spacing of one client's publishes.
    pub publish_every: Duration,
    /// Outbox give-up deadline.
    pub give_up_after: Duration,
}

/// Totals of a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    pub published: u64,
    pub stored: u64,
    pub delivered: u64,
    pub gave_up: u64,
    pub gave_up_then_stored: u64,
    pub duplicates_dropped: u64,
    pub dup_pubs: u64,
    pub retransmits: u64,
    pub disconnects: u64,
    pub frames_lost: u64,
    pub frames_duplicated: u64,
    pub pulls: u64,
}

impl Totals {
    pub fn add(&mut self, o: &Totals) {
        self.published += o.published;
        self.stored += o.stored;
        self.delivered += o.delivered;
        self.gave_up += o.gave_up;
        self.gave_up_then_stored += o.gave_up_then_stored;
        self.duplicates_dropped += o.duplicates_dropped;
        self.dup_pubs += o.dup_pubs;
        self.retransmits += o.retransmits;
        self.disconnects += o.disconnects;
        self.frames_lost += o.frames_lost;
        self.frames_duplicated += o.frames_duplicated;
        self.pulls += o.pulls;
    }
}

/// The whole simulated system.
pub struct World {
    pub now: Instant,
    pub sc: Scenario,
    pub clients: Vec<Client>,
    pub gateway: Gateway,
    pub net: Net,
    rng: SplitMix64,
    next_conn: u64,
    next_cut: Option<Instant>,
    faults: bool,
    buf: Vec<u8>,
}

/// The engine configuration simulations use: short timers so that virtual time stays short.
pub fn sim_config(name: &str, give_up_after: Duration) -> EngineConfig {
    let mut cfg = EngineConfig::new(name, Credentials::basic(name, "pw").unwrap());
    cfg.outbox.rto = Duration::from_millis(400);
    cfg.outbox.max_rto = Duration::from_secs(3);
    cfg.outbox.give_up_after = give_up_after;
    cfg.outbox.max_tries = 12;
    cfg.backoff.base = Duration::from_millis(50);
    cfg.backoff.cap = Duration::from_secs(2);
    cfg.backoff.stable_after = Duration::from_secs(5);
    cfg.backoff.link_up_spread = Duration::from_millis(500);
    cfg.keepalive.interval = Duration::from_secs(1);
    cfg.keepalive.timeout = Duration::from_secs(5);
    cfg.request_timeout = Duration::from_secs(1);
    cfg.gap_hold = Duration::from_millis(60);
    cfg.wall_ms_at_zero = 1_800_000_000_000;
    cfg
}

impl World {
    pub fn new(sc: Scenario) -> Self {
        let mut rng = SplitMix64::new(sc.seed);
        let clients = (0..sc.clients)
            .map(|i| {
                let name = format!("user{i}");
                let cfg = sim_config(&name, sc.give_up_after);
                let mut eng = SimEngine::new(Instant::ZERO, cfg, rng.next_u64());
                eng.subscribe(TOPIC).unwrap();
                Client {
                    eng,
                    conn: None,
                    connect_at: None,
                    app: App::default(),
                    quota: sc.messages_per_client,
                    next_publish: Some(Instant::from_millis(rng.below(50))),
                }
            })
            .collect();
        let gw_cfg = DeliveryConfig {
            window: 64,
            rto: Duration::from_millis(300),
            max_rto: Duration::from_secs(3),
        };
        let net_seed = rng.next_u64();
        let mut w = World {
            now: Instant::ZERO,
            sc,
            clients,
            gateway: Gateway::new(gw_cfg),
            net: Net::new(net_seed, sc.net),
            rng,
            next_conn: 0,
            next_cut: None,
            faults: true,
            buf: vec![0; 512],
        };
        w.next_cut = w.schedule_cut();
        w
    }

    pub fn stuck_report(&self) -> String {
        let mut s = format!(
            "now {:?} net {:?} gw {:?} [{}] cut {:?}",
            self.now,
            self.net.next_arrival(),
            self.gateway.poll_timeout(),
            self.gateway.describe(),
            self.next_cut
        );
        for c in &self.clients {
            let t = c.eng.topic(0).unwrap();
            if let Some(gap) = t.recv.first_gap() {
                let m = self
                    .gateway
                    .topics
                    .get(TOPIC)
                    .and_then(|st| st.messages.get(gap.first as usize - 1));
                if let Some(m) = m {
                    let v = c.eng.message(&m.id);
                    let at: Vec<_> = c
                        .eng
                        .messages(0)
                        .filter(|v| v.key.seq == gap.first)
                        .map(|v| (v.id, v.key, v.state))
                        .collect();
                    s += &format!(
                        " [pool holds {} shown; at gap seq: {:?}]",
                        c.eng.messages(0).count(),
                        at
                    );
                    s += &format!(
                        " [gap msg from {} id {} local {:?} published-here {} gave-up {}]",
                        m.from,
                        m.id,
                        v.map(|v| (v.key, v.state)),
                        c.app.published.contains(&m.id),
                        c.app.gave_up.contains(&m.id)
                    );
                }
            }
            s += &format!(
                " | eng {:?} state {:?} connect {:?} publish {:?} quota {} stats {:?} mark {} emitted {} handed {} latest {} gaps {:?} pull {:?} attach {:?} errors {:?}",
                c.eng.poll_timeout(),
                c.eng.state(),
                c.connect_at,
                c.next_publish,
                c.quota,
                c.eng.stats(),
                t.recv.mark(),
                t.emitted,
                t.handed,
                t.latest,
                t.recv.first_gap(),
                t.pull,
                t.attach,
                &c.app.errors[..c.app.errors.len().min(3)]
            );
        }
        s
    }

    fn schedule_cut(&mut self) -> Option<Instant> {
        let every = self.sc.cut_every?;
        Some(self.now + Duration::from_micros(self.rng.below(2 * every.as_micros()) + 1))
    }

    /// Stops publishing and faults: the network becomes clean so everything can settle.
    pub fn calm_down(&mut self) {
        self.faults = false;
        self.net.cfg = NetConfig::CLEAN;
        self.next_cut = None;
        for c in &mut self.clients {
            c.next_publish = None;
        }
    }

    fn next_time(&self) -> Option<Instant> {
        let mut at = self.net.next_arrival();
        at = earliest(at, self.gateway.poll_timeout());
        at = earliest(at, self.next_cut);
        for c in &self.clients {
            at = earliest(at, c.eng.poll_timeout());
            at = earliest(at, c.connect_at);
            at = earliest(at, c.next_publish);
        }
        at
    }

    /// Runs until `until` or until nothing is left to do. Returns false if idle.
    pub fn run_until(&mut self, until: Instant) -> bool {
        let mut same = 0u32;
        loop {
            let Some(at) = self.next_time() else {
                return false;
            };
            if at <= self.now {
                same += 1;
                if same > 100_000 {
                    panic!("livelock at {:?}: {}", self.now, self.stuck_report());
                }
            } else {
                same = 0;
            }
            if at > until {
                self.now = until;
                return true;
            }
            self.now = self.now.max(at);
            self.step();
        }
    }

    fn step(&mut self) {
        let now = self.now;
        while let Some((dest, conn, frame)) = self.net.pop_due(now) {
            match dest {
                Dest::Gateway => {
                    if let Ok((body, _)) = decode_frame(&frame, 1 << 16) {
                        self.gateway.handle(now, conn, body);
                    }
                }
                Dest::Client(i) => {
                    if self.clients[i].conn == Some(conn) {
                        let mut rest = &frame[..];
                        loop {
                            let taken = self.clients[i].eng.handle_bytes(now, rest);
                            rest = &rest[taken..];
                            self.drain_client(i);
                            if rest.is_empty() || self.clients[i].conn != Some(conn) {
                                break;
                            }
                        }
                    }
                }
            }
            self.flush_gateway();
        }
        if self.gateway.poll_timeout().is_some_and(|t| t <= now) {
            self.gateway.handle_timeout(now);
        }
        if self.next_cut.is_some_and(|t| t <= now) {
            let i = self.rng.below(self.clients.len() as u64) as usize;
            self.cut(i);
            self.next_cut = self.schedule_cut();
        }
        for i in 0..self.clients.len() {
            if self.clients[i].connect_at.is_some_and(|t| t <= now) {
                self.clients[i].connect_at = None;
                if self.faults && self.rng.chance(self.sc.connect_fail) {
                    self.clients[i].eng.handle_connect_failed(now);
                } else {
                    self.next_conn += 1;
                    let conn = self.next_conn;
                    self.gateway.open(conn);
                    self.clients[i].conn = Some(conn);
                    self.clients[i].eng.handle_connected(now);
                }
            }
            if self.clients[i].eng.poll_timeout().is_some_and(|t| t <= now) {
                self.clients[i].eng.handle_timeout(now);
            }
            if self.clients[i].next_publish.is_some_and(|t| t <= now) {
                self.publish(i);
            }
            self.resend(i);
            self.drain_client(i);
        }
        self.flush_gateway();
    }

    fn publish(&mut self, i: usize) {
        let now = self.now;
        let c = &mut self.clients[i];
        let n = c.app.published.len();
        let text = format!("u{i} m{n} {}", "x".repeat(n % 40));
        match c.eng.publish(now, TOPIC, Head::default(), text.as_bytes()) {
            Ok(id) => {
                c.app.published.push(id);
                c.quota -= 1;
            }
            Err(EngineError::OutboxFull | EngineError::PoolFull) => {}
            Err(e) => c.app.errors.push(format!("publish failed: {e}")),
        }
        let every = self.sc.publish_every.as_micros();
        let c = &mut self.clients[i];
        c.next_publish =
            (c.quota > 0).then(|| now + Duration::from_micros(self.rng.below(2 * every) + 1));
    }

    fn resend(&mut self, i: usize) {
        let c = &mut self.clients[i];
        let now = self.now;
        let mut keep = Vec::new();
        for id in std::mem::take(&mut c.app.to_resend) {
            match c.eng.resend(now, &id) {
                Ok(()) | Err(EngineError::NoSuchMessage) => {}
                Err(_) => keep.push(id),
            }
        }
        c.app.to_resend = keep;
    }

    fn cut(&mut self, i: usize) {
        if let Some(conn) = self.clients[i].conn.take() {
            self.gateway.close(conn);
            self.clients[i].eng.handle_disconnected(self.now);
        }
    }

    fn flush_gateway(&mut self) {
        let now = self.now;
        for (conn, frame) in std::mem::take(&mut self.gateway.out) {
            if let Some(i) = self.clients.iter().position(|c| c.conn == Some(conn)) {
                self.net.send(now, Dest::Client(i), conn, frame);
            }
        }
    }

    fn drain_client(&mut self, i: usize) {
        let now = self.now;
        loop {
            while let Some(cmd) = self.clients[i].eng.poll_command() {
                match cmd {
                    Command::Connect => {
                        self.clients[i].connect_at = Some(now + Duration::from_millis(10))
                    }
                    Command::Close => self.cut(i),
                }
            }
            if let Some(conn) = self.clients[i].conn {
                while let Some(n) = self.clients[i].eng.poll_transmit(now, &mut self.buf) {
                    let frame = self.buf[..n].to_vec();
                    self.net.send(now, Dest::Gateway, conn, frame);
                }
            }
            let mut any = false;
            while let Some(ev) = self.clients[i].eng.poll_event() {
                any = true;
                let c = &mut self.clients[i];
                record(&mut c.app, &c.eng, ev);
            }
            if !any {
                break;
            }
        }
    }

    /// Whether every published message is settled (stored and shown to everyone, or given up)
    /// and every client shows the whole topic.
    pub fn settled(&self) -> bool {
        let Some(store) = self.gateway.topics.get(TOPIC) else {
            return false;
        };
        let latest = store.messages.len() as u64;
        self.clients.iter().all(|c| {
            c.app.shown.len() as u64 == latest
                && c.app
                    .published
                    .iter()
                    .all(|id| store.by_id.contains_key(id))
        })
    }

    /// Checks every promise; returns the violations.
    pub fn check(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let store = self.gateway.topics.get(TOPIC);
        let stored: Vec<MsgId> =
            store.map_or(Vec::new(), |t| t.messages.iter().map(|m| m.id).collect());
        for (i, c) in self.clients.iter().enumerate() {
            errors.extend(c.app.errors.iter().map(|e| format!("client {i}: {e}")));
            let expected: BTreeMap<u64, MsgId> = stored
                .iter()
                .enumerate()
                .map(|(k, id)| (k as u64 + 1, *id))
                .collect();
            if c.app.shown != expected {
                let missing: Vec<u64> = expected
                    .keys()
                    .filter(|s| !c.app.shown.contains_key(s))
                    .copied()
                    .collect();
                errors.push(format!(
                    "client {i}: shows {} of {} stored messages (missing seqs {:?})",
                    c.app.shown.len(),
                    expected.len(),
                    &missing[..missing.len().min(10)]
                ));
                if let Some(seq) = missing.first() {
                    let m = &t_msgs(store)[*seq as usize - 1];
                    let v = c.eng.message(&m.id);
                    let t = c.eng.topic(0).unwrap();
                    errors.push(format!(
                        "client {i}: first missing seq {seq} from {} here {:?} own {} gave up {}; mark {} emitted {} latest {} stats {:?}",
                        m.from, v.map(|v| (v.key, v.state)), c.app.published.contains(&m.id),
                        c.app.gave_up.contains(&m.id), t.recv.mark(), t.emitted, t.latest, c.eng.stats()
                    ));
                }
            }
            for (id, content) in &c.app.contents {
                let want = store
                    .and_then(|t| t.by_id.get(id))
                    .map(|s| &t_msgs(store)[*s as usize - 1].content);
                if want != Some(content) {
                    errors.push(format!(
                        "client {i}: content of {id} differs from what was stored"
                    ));
                }
            }
            for id in &c.app.published {
                if !store.is_some_and(|t| t.by_id.contains_key(id)) {
                    let reported = c.app.gave_up.contains(id);
                    errors.push(format!(
                        "client {i}: {id} never stored (give-up reported: {reported})"
                    ));
                }
            }
        }
        errors
    }

    pub fn totals(&self) -> Totals {
        let store = self.gateway.topics.get(TOPIC);
        let mut t = Totals {
            stored: self.gateway.stored,
            dup_pubs: self.gateway.dup_pubs,
            frames_lost: self.net.lost,
            frames_duplicated: self.net.duplicated,
            ..Totals::default()
        };
        for c in &self.clients {
            let s = c.eng.stats();
            t.published += c.app.published.len() as u64;
            t.delivered += c.app.received_ids.len() as u64;
            t.gave_up += c.app.gave_up.len() as u64;
            t.gave_up_then_stored += c
                .app
                .gave_up
                .iter()
                .filter(|id| store.is_some_and(|st| st.by_id.contains_key(id)))
                .count() as u64;
            t.duplicates_dropped += s.duplicates;
            t.retransmits += s.retransmits;
            t.disconnects += s.disconnects;
            t.pulls += s.pulls;
        }
        t
    }
}

fn t_msgs(store: Option<&gateway::TopicStore>) -> &[gateway::Stored] {
    store.map_or(&[], |t| &t.messages)
}

/// What a simulated application does with an event: records it and checks order and
/// uniqueness on the spot.
fn record(app: &mut App, eng: &SimEngine, ev: Event) {
    match ev {
        Event::MessageAdded {
            id,
            seq: Some(seq),
            history: false,
            ..
        } => {
            if seq <= app.last_received {
                app.errors
                    .push(format!("seq {seq} shown after {}", app.last_received));
            }
            app.last_received = seq;
            if !app.received_ids.insert(id) {
                app.errors.push(format!("message {id} shown twice"));
            }
            if let Some(prev) = app.shown.insert(seq, id) {
                app.errors
                    .push(format!("seq {seq} shown twice ({prev} and {id})"));
            }
            match eng.message(&id) {
                Some(m) => {
                    app.contents.insert(id, m.content.to_vec());
                }
                None => app
                    .errors
                    .push(format!("message {id} announced but not readable")),
            }
        }
        Event::MessageChanged {
            id,
            state: MessageState::Sent,
            seq: Some(seq),
            ..
        } => {
            if let Some(prev) = app.shown.insert(seq, id)
                && prev != id
            {
                app.errors.push(format!("seq {seq} is {prev} and own {id}"));
            }
        }
        Event::MessageChanged {
            id,
            state: MessageState::Failed(reason),
            ..
        } => {
            if reason == FailReason::TimedOut {
                app.gave_up.insert(id);
                app.to_resend.push(id);
            } else {
                app.errors
                    .push(format!("{id} failed unexpectedly: {reason:?}"));
            }
        }
        _ => {}
    }
}
