//! One connection's session: reads requests, answers them, pushes what its topics commit
//! through per-topic delivery windows, and ends cleanly on close, timeout or shutdown.
//!
//! A session is one task that owns its connection's write side, its delivery windows and its
//! timers; a reader task feeds it whole frames or JSON texts. Requests are handled one at a time
//! in arrival order; a `pub` waits for its commit off the loop, so many can be in flight.
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | the loop, phases, output, timers |
//! | `account.rs` | `hi`, `acc`, `login` |
//! | `topics.rs` | finding topics; `sub`, `leave` |
//! | `query.rs` | `get`: desc, subs, data, digest; unread counts |
//! | `manage.rs` | `set`, `del`, and who may change a topic |
//! | `delivery.rs` | `note`, `ack`, pushing through the delivery windows |
//! | `publish.rs` | `pub`: policy, append, commit, answer |
//! | `service.rs` | customer-service `action`s |

mod account;
mod delivery;
mod manage;
mod publish;
mod query;
mod service;
mod topics;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use kefu_core::delivery::DeliveryWindow;
use kefu_core::frame;
use kefu_core::id::MsgId;
use kefu_core::time::Instant as CoreInstant;
use tokio::sync::Notify;

use super::binary;
use super::conn::{Conn, Inbound, Inlet, Unit};
use super::context::Ctx;
use super::hub::{Event, EventQueue, SessionId, SessionLink, Topic};
use super::json::JsonCodec;
use super::metrics::Transport;
use super::policy::RateLimiter;
use super::throttle::warn_throttled;
use super::wire::{Code, Out, Params, Req};
use crate::store::{Role, Store};

/// How often dirty recv marks are written to the store.
const MARKS_FLUSH: Duration = Duration::from_secs(1);

/// How the client talks: decided by its first packet.
enum Dialect {
    /// Core frames.
    Binary,
    /// Tinode's JSON.
    Json(Box<JsonCodec>),
}

/// Where the session stands.
#[derive(Clone, Debug)]
enum Phase {
    /// Connected; `hi` not yet seen.
    Connected,
    /// `hi` accepted; no user yet.
    Greeted,
    /// Logged in.
    Ready(Login),
}

/// The logged-in user of a session.
#[derive(Clone, Debug)]
struct Login {
    user: Arc<str>,
    role: Role,
    link: SessionLink,
}

/// A topic this session is attached to.
struct Attached {
    topic: Arc<Topic>,
    /// The name this user knows the topic by.
    view: String,
    window: DeliveryWindow,
    /// Tinode semantics: pushes count as delivered when sent (no acks).
    auto_ack: bool,
    /// When recent seqs were pushed, for the ack latency histogram.
    pushed_at: VecDeque<(u64, Instant)>,
}

/// Why the loop ends.
#[derive(Debug)]
enum End {
    /// The client closed or the connection failed.
    Gone,
    /// Framing garbage, timeout or shutdown: close after sending what is queued.
    Close(&'static str),
}

/// The answer of a `pub` whose commit finished.
struct PubDone {
    out: Out,
}

type PubFuture = std::pin::Pin<Box<dyn std::future::Future<Output = PubDone> + Send + Sync>>;

/// One session.
pub struct Session<S: Store, C: Conn> {
    ctx: Arc<Ctx<S>>,
    id: SessionId,
    transport: Transport,
    conn: C,
    dialect: Option<Dialect>,
    phase: Phase,
    device: String,
    wake: Arc<Notify>,
    events: Arc<EventQueue>,
    attached: HashMap<String, Attached>,
    me_attached: bool,
    rate: RateLimiter,
    commits: FuturesUnordered<PubFuture>,
    /// Recv marks advanced by acks, not yet written.
    dirty_recv: HashMap<String, u64>,
    /// Message ids published with Tinode's `noecho`: not pushed back to this session.
    noecho: HashSet<MsgId>,
    /// Answers and pushes waiting to be written.
    outq: Vec<Out>,
    /// Keepalives to answer.
    pongs: usize,
    /// Raw texts to send (Tinode's network probe answer).
    raw_texts: Vec<String>,
    /// The kind of each request awaiting its `ctrl`, for metrics by type and code.
    kinds: HashMap<u32, &'static str>,
    epoch: Instant,
    last_heard: Instant,
    started: Instant,
}

impl<S: Store, C: Conn> Session<S, C> {
    /// A session for a connection that just opened.
    pub fn new(ctx: Arc<Ctx<S>>, transport: Transport, conn: C) -> Self {
        let events = Arc::new(EventQueue::new(ctx.cfg.event_queue));
        let now = Instant::now();
        Session {
            id: ctx.hub.session_id(),
            rate: RateLimiter::new(ctx.cfg.rate_per_sec, ctx.cfg.rate_burst),
            ctx,
            transport,
            conn,
            dialect: None,
            phase: Phase::Connected,
            device: String::new(),
            wake: Arc::new(Notify::new()),
            events,
            attached: HashMap::new(),
            me_attached: false,
            commits: FuturesUnordered::new(),
            dirty_recv: HashMap::new(),
            noecho: HashSet::new(),
            outq: Vec::new(),
            pongs: 0,
            raw_texts: Vec::new(),
            kinds: HashMap::new(),
            epoch: now,
            last_heard: now,
            started: now,
        }
    }

    /// Runs the session until the client goes away, misbehaves, times out or the gateway shuts
    /// down; then cleans up everything it registered.
    pub async fn run(mut self, mut inbound: impl Inlet) {
        self.ctx.metrics.connection_opened(self.transport);
        let end = self.serve(&mut inbound).await;
        tracing::debug!(session = self.id, ?end, "session ends");
        // Finish commits in flight: their answers are owed (and the commits happen anyway).
        let drain = tokio::time::sleep(self.ctx.cfg.drain_timeout);
        tokio::pin!(drain);
        while !self.commits.is_empty() {
            tokio::select! {
                Some(done) = self.commits.next() => self.outq.push(done.out),
                () = &mut drain => break,
            }
        }
        if let End::Close(why) = end {
            if !self.outq.is_empty() || why == "shutdown" {
                let _ = self.write_out().await;
            }
            self.conn.close().await;
        }
        self.cleanup().await;
        self.ctx.metrics.connection_closed(self.transport);
    }

    async fn serve(&mut self, inbound: &mut impl Inlet) -> End {
        let mut shutdown = self.ctx.shutdown.clone();
        if *shutdown.borrow() {
            return End::Close("shutdown");
        }
        let mut next_marks_flush = Instant::now() + MARKS_FLUSH;
        loop {
            let deadline = self.next_deadline(next_marks_flush);
            tokio::select! {
                unit = inbound.recv() => {
                    let Some(unit) = unit else { return End::Gone };
                    self.last_heard = Instant::now();
                    if let Err(end) = self.on_inbound(unit).await {
                        return end;
                    }
                    // Take everything already read before writing: answers batch up.
                    while let Some(unit) = inbound.try_recv() {
                        if let Err(end) = self.on_inbound(unit).await {
                            return end;
                        }
                        if self.outq.len() > 256 {
                            break;
                        }
                    }
                    // Silence is measured from when the gateway finished with the client's
                    // last request, not from when it arrived (hashing a password takes time).
                    self.last_heard = Instant::now();
                }
                () = self.wake.notified() => {
                    for event in self.events.take() {
                        match event {
                            Event::Out(out) => self.on_event(out),
                            Event::Detach { topic, notice } => {
                                self.detach(&topic);
                                self.outq.push(notice);
                            }
                            Event::Close(out) => {
                                self.outq.push(out);
                                return End::Close("closed by the gateway");
                            }
                        }
                    }
                }
                Some(done) = self.commits.next(), if !self.commits.is_empty() => {
                    self.outq.push(done.out);
                }
                () = tokio::time::sleep_until(deadline.into()) => {
                    let now = Instant::now();
                    if let Some(why) = self.timed_out(now) {
                        self.outq.push(Out::Ctrl {
                            id: 0,
                            code: Code::TIMEOUT,
                            text: why.into(),
                            topic: String::new(),
                            params: Params::None,
                        });
                        return End::Close(why);
                    }
                    if now >= next_marks_flush {
                        self.flush_marks();
                        next_marks_flush = now + MARKS_FLUSH;
                    }
                    self.handle_window_timeouts(now);
                }
                _ = shutdown.changed() => {
                    self.outq.push(Out::Ctrl {
                        id: 0,
                        code: Code::UNAVAILABLE,
                        text: "the gateway is shutting down".into(),
                        topic: String::new(),
                        params: Params::RetryAfter { ms: 1000 },
                    });
                    return End::Close("shutdown");
                }
            }
            if let Err(end) = self.push_all().await {
                return end;
            }
            if self.write_out().await.is_err() {
                return End::Gone;
            }
        }
    }

    /// The earliest of: handshake or idle timeout, window retransmits, the marks flush.
    fn next_deadline(&self, marks_flush: Instant) -> Instant {
        let cfg = &self.ctx.cfg;
        let mut next = self.last_heard + cfg.idle_timeout;
        if !matches!(self.phase, Phase::Ready(_)) {
            next = next.min(self.started + cfg.handshake_timeout);
        }
        if !self.dirty_recv.is_empty() {
            next = next.min(marks_flush);
        }
        for a in self.attached.values() {
            if let Some(t) = a.window.poll_timeout() {
                next = next.min(self.std_instant(t));
            }
        }
        next
    }

    fn timed_out(&self, now: Instant) -> Option<&'static str> {
        let cfg = &self.ctx.cfg;
        if !matches!(self.phase, Phase::Ready(_)) && now >= self.started + cfg.handshake_timeout {
            return Some("no login in time");
        }
        if now >= self.last_heard + cfg.idle_timeout {
            return Some("idle too long");
        }
        None
    }

    /// The core's clock: microseconds since this session started.
    fn core_now(&self) -> CoreInstant {
        self.to_core(Instant::now())
    }

    fn to_core(&self, t: Instant) -> CoreInstant {
        let us = t.saturating_duration_since(self.epoch).as_micros();
        CoreInstant::from_micros(u64::try_from(us).unwrap_or(u64::MAX))
    }

    fn std_instant(&self, t: CoreInstant) -> Instant {
        self.epoch + Duration::from_micros(t.as_micros())
    }

    async fn on_inbound(&mut self, unit: Inbound) -> Result<(), End> {
        match unit {
            Inbound::Ping => {
                self.pongs += 1;
                Ok(())
            }
            Inbound::Garbage(what) => {
                self.ctx.metrics.bad_input(what);
                Err(End::Close(what))
            }
            Inbound::Body(body) => {
                if matches!(self.dialect, Some(Dialect::Json(_))) {
                    self.ctx.metrics.bad_input("binary on a json session");
                    return Err(End::Close("binary frame on a JSON session"));
                }
                self.dialect.get_or_insert(Dialect::Binary);
                match binary::decode(&body) {
                    Ok(req) => self.on_request(req).await,
                    Err(bad) => {
                        self.ctx.metrics.bad_input("malformed packet");
                        self.reply_code(bad.id, bad.error.code(), "", &bad.error.to_string());
                    }
                }
                Ok(())
            }
            Inbound::Text(text) => {
                if let Some(answer) = JsonCodec::probe_reply(&text) {
                    self.raw_texts.push(answer.to_owned());
                    return Ok(());
                }
                if matches!(self.dialect, Some(Dialect::Binary)) {
                    self.ctx.metrics.bad_input("json on a binary session");
                    return Err(End::Close("JSON text on a binary session"));
                }
                let max = self.ctx.cfg.max_body();
                let dialect = self
                    .dialect
                    .get_or_insert_with(|| Dialect::Json(Box::new(JsonCodec::with_max_len(max))));
                let Dialect::Json(codec) = dialect else {
                    return Ok(());
                };
                match codec.decode(&text, super::context::now_ms()) {
                    Ok(reqs) => {
                        for req in reqs {
                            self.on_request(req).await;
                        }
                    }
                    Err(e) => {
                        self.ctx.metrics.bad_input("malformed json");
                        self.outq.push(e.reply());
                    }
                }
                Ok(())
            }
        }
    }

    /// Handles one request, queueing its answers.
    async fn on_request(&mut self, req: Req) {
        self.ctx.metrics.packet_in(req.name());
        let id = req.id().unwrap_or(0);
        if id != 0 && self.kinds.len() < 4096 {
            self.kinds.insert(id, req.name());
        }
        match (&self.phase, &req) {
            (Phase::Connected, Req::Hi { .. }) => {}
            (Phase::Connected, _) => {
                return self.reply_code(id, Code::MALFORMED, "", "hi first");
            }
            (_, Req::Hi { .. }) => {
                return self.reply_code(id, Code::CONFLICT, "", "hi was already sent");
            }
            (Phase::Greeted, Req::Acc { .. } | Req::Login { .. }) => {}
            (Phase::Greeted, _) => {
                let topic = req.topic();
                return self.reply_code(id, Code::UNAUTHORIZED, topic, "login first");
            }
            (Phase::Ready(_), _) => {}
        }
        if !matches!(req, Req::Hi { .. } | Req::Ack { .. })
            && let Err(retry_ms) = self.rate.check(Instant::now())
        {
            self.outq.push(Out::Ctrl {
                id,
                code: Code::RATE_LIMITED,
                text: Code::RATE_LIMITED.text().into(),
                topic: req.topic().to_owned(),
                params: Params::RetryAfter { ms: retry_ms },
            });
            return;
        }
        // Handlers that wait are boxed: the session task is as large as its largest
        // in-line future, and every connection, idle or not, holds its task.
        match req {
            Req::Hi {
                id, ver, device, ..
            } => self.hi(id, ver, device),
            Req::Acc {
                id,
                scheme,
                secret,
                name,
                login,
            } => Box::pin(self.acc(id, scheme, secret, name, login)).await,
            Req::Login { id, scheme, secret } => Box::pin(self.login(id, scheme, secret)).await,
            Req::Sub {
                id,
                topic,
                since,
                get,
            } => Box::pin(self.sub(id, topic, since, get)).await,
            Req::Leave { id, topic, unsub } => Box::pin(self.leave(id, topic, unsub)).await,
            Req::Pub {
                id,
                topic,
                msg_id,
                head,
                content,
                noecho,
            } => {
                Box::pin(self.publish(id, topic, msg_id, head, content, noecho)).await;
            }
            Req::Get { id, topic, what } => Box::pin(self.get(id, &topic, what)).await,
            Req::Set { id, topic, what } => Box::pin(self.set(id, topic, what)).await,
            Req::Del { id, topic, what } => Box::pin(self.del(id, topic, what)).await,
            Req::Note { topic, what, seq } => Box::pin(self.note(topic, what, seq)).await,
            Req::Action { id, what } => Box::pin(self.action(id, what)).await,
            Req::Ack { topic, seq } => self.ack(&topic, seq),
        }
    }

    /// Queues a `ctrl` with `text` (the code's own text when empty).
    fn reply_code(&mut self, id: u32, code: Code, topic: &str, text: &str) {
        let text = if text.is_empty() { code.text() } else { text };
        self.outq.push(Out::Ctrl {
            id,
            code,
            text: text.to_owned(),
            topic: topic.to_owned(),
            params: Params::None,
        });
    }

    fn on_event(&mut self, out: Out) {
        self.outq.push(out);
    }

    fn login_info(&self) -> Option<&Login> {
        match &self.phase {
            Phase::Ready(l) => Some(l),
            _ => None,
        }
    }

    fn user(&self) -> Arc<str> {
        self.login_info()
            .map(|l| Arc::clone(&l.user))
            .unwrap_or_else(|| Arc::from(""))
    }

    /// Encodes and writes everything queued, then flushes.
    async fn write_out(&mut self) -> std::io::Result<()> {
        if self.outq.is_empty() && self.pongs == 0 && self.raw_texts.is_empty() {
            return Ok(());
        }
        for text in std::mem::take(&mut self.raw_texts) {
            self.conn.feed(Unit::Text(text)).await?;
        }
        for _ in 0..std::mem::take(&mut self.pongs) {
            let mut buf = vec![0u8; frame::OVERHEAD];
            if let Ok(n) = frame::encode_frame(&[], &mut buf) {
                buf.truncate(n);
                self.conn.feed(Unit::Frame(buf)).await?;
            }
        }
        let outs = std::mem::take(&mut self.outq);
        for out in outs {
            if let Out::Ctrl { id, code, .. } = &out {
                let kind = self.kinds.remove(id).unwrap_or("none");
                self.ctx.metrics.ctrl_out(kind, code.0);
            }
            match &mut self.dialect {
                Some(Dialect::Json(codec)) => {
                    for text in codec.encode(&out) {
                        self.conn.feed(Unit::Text(text)).await?;
                    }
                }
                _ => {
                    let mut buf = Vec::new();
                    binary::encode(&out, &mut buf);
                    if !buf.is_empty() {
                        self.conn.feed(Unit::Frame(buf)).await?;
                    }
                }
            }
        }
        self.conn.flush().await
    }

    fn flush_marks(&mut self) {
        let Some(login) = self.login_info() else {
            return;
        };
        let user = login.user.to_string();
        for (topic, recv) in self.dirty_recv.drain() {
            let store = Arc::clone(&self.ctx.store);
            let user = user.clone();
            tokio::spawn(async move {
                if let Err(e) = store.set_marks(&topic, &user, None, Some(recv)).await {
                    warn_throttled!("could not store a recv mark", &e);
                }
            });
        }
    }

    /// Unregisters the session everywhere.
    async fn cleanup(&mut self) {
        self.flush_marks();
        for (_, a) in self.attached.drain() {
            a.topic.state().attached.remove(&self.id);
        }
        if let Phase::Ready(login) = &self.phase {
            let last = self.ctx.hub.session_down(&login.user, self.id);
            if last {
                let ctx = Arc::clone(&self.ctx);
                let user = login.user.to_string();
                tokio::spawn(async move {
                    ctx.hub
                        .announce(&*ctx.store, &user, super::wire::PresWhat::Off)
                        .await
                });
            }
            self.ctx.metrics.sessions_logged_in(-1);
            if last && matches!(login.role, Role::Agent | Role::Supervisor) {
                self.ctx.desk().session_down(&login.user);
            }
        }
    }
}
