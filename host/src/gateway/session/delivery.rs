//! Receipts and delivery: `note`, `ack`, and pushing what topics commit through the
//! session's delivery windows (with go-back retransmission on timeout).

use std::sync::Arc;
use std::time::Instant;

use kefu_core::delivery::AckOutcome;

use super::{Conn, End, Session};
use crate::gateway::hub::Event;
use crate::gateway::names::{self, Target};
use crate::gateway::throttle::warn_throttled;
use crate::gateway::wire::{Code, NoteWhat, Out};
use crate::model::Message;
use crate::store::Store;

impl<S: Store, C: Conn> Session<S, C> {
    pub(super) async fn note(&mut self, name: String, what: NoteWhat, seq: u64) {
        let topic = match self.member_topic(&name).await {
            Ok(t) => t,
            Err(r) => return self.refuse(0, &name, r),
        };
        let user = self.user();
        if what != NoteWhat::Kp {
            if seq == 0 || seq > topic.latest() {
                return self.refuse(0, &name, (Code::MALFORMED, "receipt beyond the latest seq"));
            }
            let (read, recv) = match what {
                NoteWhat::Read => (Some(seq), Some(seq)),
                _ => (None, Some(seq)),
            };
            {
                let mut st = topic.state();
                if let Some(m) = st.subs.get_mut(&*user) {
                    if let Some(r) = read {
                        m.read = m.read.max(r);
                    }
                    if let Some(r) = recv {
                        m.recv = m.recv.max(r);
                    }
                }
            }
            let store = Arc::clone(&self.ctx.store);
            let (t, u) = (topic.name.clone(), user.to_string());
            tokio::spawn(async move {
                if let Err(e) = store.set_marks(&t, &u, read, recv).await {
                    warn_throttled!("could not store a mark", &e);
                }
            });
        }
        let links: Vec<_> = topic.state().attached.values().cloned().collect();
        for link in links {
            if link.id == self.id {
                continue;
            }
            link.send(Event::Out(Out::Info {
                topic: names::view_name(&topic.name, &link.user),
                from: user.to_string(),
                what,
                seq,
            }));
        }
    }

    pub(super) fn ack(&mut self, name: &str, seq: u64) {
        let user = self.user();
        let internal = match names::resolve(name, &user) {
            Some(Target::Topic { internal, .. }) => internal,
            _ => return self.refuse(0, name, (Code::NOT_FOUND, "no such topic")),
        };
        let now = self.core_now();
        let cfg = self.ctx.cfg.delivery;
        let Some(a) = self.attached.get_mut(&internal) else {
            return self.refuse(0, name, (Code::NOT_FOUND, "not attached"));
        };
        let latest = a.topic.latest();
        match a.window.on_ack(now, &cfg, seq, latest) {
            AckOutcome::Advanced(n) => {
                self.ctx.metrics.acks(n);
                let now = Instant::now();
                while let Some(&(s, at)) = a.pushed_at.front() {
                    if s > seq {
                        break;
                    }
                    a.pushed_at.pop_front();
                    if s == seq {
                        self.ctx
                            .metrics
                            .ack_latency(now.saturating_duration_since(at).as_secs_f64());
                    }
                }
                if let Some(m) = a.topic.state().subs.get_mut(&*user) {
                    m.recv = m.recv.max(seq);
                }
                self.dirty_recv.insert(internal, seq);
            }
            AckOutcome::Stale => {}
            AckOutcome::BeyondLatest => {
                self.refuse(0, name, (Code::MALFORMED, "ack beyond the latest seq"))
            }
        }
    }

    pub(super) fn handle_window_timeouts(&mut self, now: Instant) {
        let now = self.to_core(now);
        let cfg = self.ctx.cfg.delivery;
        let mut retransmits = 0;
        for a in self.attached.values_mut() {
            if a.window.handle_timeout(now, &cfg) {
                retransmits += 1;
                a.pushed_at.clear();
            }
        }
        if retransmits > 0 {
            self.ctx.metrics.retransmits(retransmits);
        }
    }

    /// Pushes whatever the windows allow on every attached topic.
    pub(super) async fn push_all(&mut self) -> Result<(), End> {
        let names: Vec<String> = self.attached.keys().cloned().collect();
        for internal in names {
            self.push_topic(&internal).await;
        }
        Ok(())
    }

    async fn push_topic(&mut self, internal: &str) {
        let cfg = self.ctx.cfg.delivery;
        let user = self.user();
        loop {
            let now = self.core_now();
            let Some(a) = self.attached.get_mut(internal) else {
                return;
            };
            let latest = a.topic.latest();
            let Some(range) = a.window.poll_push(now, latest) else {
                return;
            };
            let topic = Arc::clone(&a.topic);
            let view = a.view.clone();
            let msgs: Vec<Arc<Message>> = match topic.cached(range.first, range.last) {
                Some(m) => m,
                None => {
                    let n = u32::try_from(range.last - range.first + 1).unwrap_or(u32::MAX);
                    match self
                        .ctx
                        .store
                        .messages(internal, range.first, range.last + 1, n, Some(&user))
                        .await
                    {
                        Ok(m) => m.into_iter().map(Arc::new).collect(),
                        Err(e) => {
                            warn_throttled!("could not read messages to push", &e);
                            return;
                        }
                    }
                }
            };
            let Some(a) = self.attached.get_mut(internal) else {
                return;
            };
            let pushed = Instant::now();
            let mut n = 0;
            for m in msgs {
                if a.auto_ack && self.noecho.remove(&m.msg_id) {
                    continue;
                }
                if !a.auto_ack {
                    if a.pushed_at.len() >= 256 {
                        a.pushed_at.pop_front();
                    }
                    a.pushed_at.push_back((m.seq, pushed));
                }
                self.outq.push(Out::Data {
                    topic: view.clone(),
                    msg: m,
                });
                n += 1;
            }
            self.ctx.metrics.delivered(n);
            if a.auto_ack {
                // Tinode semantics: no acks; receipts come as `note recv`.
                a.window.on_ack(now, &cfg, range.last, topic.latest());
            }
            if self.outq.len() > 512 {
                // Write these first; come back for the rest.
                self.wake.notify_one();
                return;
            }
        }
    }
}
