//! Outbound half of the engine: what to write next, in priority order.

use crate::frame::encode_frame;
use crate::pool::{FailReason, MessageState};
use crate::proto::{
    Ack, Action, ActionWhat, ClientPacket, Get, GetWhat, Head, Hi, Leave, Login, Note,
    PROTOCOL_VERSION, Pub, ReqId, Sub, encode_client,
};
use crate::time::Instant;

use super::{ActionCmd, Attach, Engine, Handshake, Outgoing, Pull, ReqKind, Request};

impl<const N: usize, const C: usize, const T: usize, const O: usize, const F: usize>
    Engine<N, C, T, O, F>
{
    /// The next frame to write to the connection, encoded into `buf`; returns its length.
    ///
    /// `buf` should hold the largest frame (`F` bytes); a frame that does not fit is skipped and,
    /// for a `pub`, the message is failed with code 413. Priority: handshake, subscriptions,
    /// acks, application requests, gap pulls, publishes, keepalive.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        self.advance(now);
        if !self.is_connected() || self.error.is_some() {
            return None;
        }
        let n = self.next_frame(now, buf)?;
        self.stats.frames_out += 1;
        self.keepalive.on_send(now);
        Some(n)
    }

    fn next_frame(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        match self.handshake {
            Handshake::SendHi => return self.send_hi(now, buf),
            Handshake::SendLogin => return self.send_login(now, buf),
            Handshake::WaitHi | Handshake::WaitLogin => return self.ping(buf),
            Handshake::Done => {}
        }
        if let Some(n) = self.send_sub(now, buf) {
            return Some(n);
        }
        if let Some(n) = self.send_ack(now, buf) {
            return Some(n);
        }
        if let Some(n) = self.send_outgoing(now, buf) {
            return Some(n);
        }
        if let Some(n) = self.send_pull(now, buf) {
            return Some(n);
        }
        if let Some(n) = self.send_pub(now, buf) {
            return Some(n);
        }
        self.ping(buf)
    }

    fn track(&mut self, now: Instant, req: ReqId, kind: ReqKind) -> bool {
        let deadline = now + self.cfg.request_timeout;
        self.requests
            .push(Request {
                req,
                kind,
                deadline,
            })
            .is_ok()
    }

    fn ping(&mut self, buf: &mut [u8]) -> Option<usize> {
        if !self.ping_due {
            return None;
        }
        self.ping_due = false;
        encode_frame(&[], buf).ok()
    }

    fn send_hi(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let id = self.alloc_req();
        let packet = ClientPacket::Hi(Hi {
            id,
            ver: PROTOCOL_VERSION,
            device: &self.cfg.device,
            platform: &self.cfg.platform,
            lang: &self.cfg.lang,
            ua: &self.cfg.ua,
        });
        let n = encode_client(&packet, buf).ok()?;
        self.handshake = Handshake::WaitHi;
        self.track(now, id, ReqKind::Hi);
        Some(n)
    }

    fn send_login(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let id = self.alloc_req();
        let packet = ClientPacket::Login(Login {
            id,
            scheme: self.cfg.credentials.scheme,
            secret: &self.cfg.credentials.secret,
        });
        let n = encode_client(&packet, buf).ok()?;
        self.handshake = Handshake::WaitLogin;
        self.track(now, id, ReqKind::Login);
        Some(n)
    }

    fn send_sub(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if self.requests.is_full() {
            return None;
        }
        let i = self
            .topics
            .iter()
            .position(|t| t.wanted && t.attach == Attach::Detached)?;
        let id = self.alloc_req();
        let t = &self.topics[i];
        let packet = ClientPacket::Sub(Sub {
            id,
            topic: &t.name,
            since: Some(t.recv.mark()),
        });
        let n = encode_client(&packet, buf).ok()?;
        self.topics[i].attach = Attach::Subscribing { req: id };
        self.track(now, id, ReqKind::Sub(i as u16));
        Some(n)
    }

    fn send_ack(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let cfg = self.cfg.ack;
        for t in self.topics.iter_mut() {
            if t.attach != Attach::Attached {
                continue;
            }
            if t.queued_events == 0 {
                t.handed = t.handed.max(t.emitted);
            }
            t.acks.on_advance(now, &cfg, t.handed);
            if let Some(seq) = t.acks.poll_ack(now) {
                let packet = ClientPacket::Ack(Ack {
                    topic: &t.name,
                    seq,
                });
                return encode_client(&packet, buf).ok();
            }
        }
        None
    }

    fn send_outgoing(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if !self.state.is_online() || self.requests.is_full() {
            return None;
        }
        let o = self.outgoing.pop_front()?;
        let name = |k: u16| self.topics.get(usize::from(k)).map(|t| t.name.as_str());
        let (packet, track) = match &o {
            Outgoing::Note { topic, what, seq } => {
                let topic = name(*topic)?;
                (
                    ClientPacket::Note(Note {
                        topic,
                        what: *what,
                        seq: *seq,
                    }),
                    None,
                )
            }
            Outgoing::Get {
                req,
                topic,
                what,
                kind,
            } => {
                let topic = name(*topic)?;
                (
                    ClientPacket::Get(Get {
                        id: *req,
                        topic,
                        what: *what,
                    }),
                    Some((*req, *kind)),
                )
            }
            Outgoing::Leave { req, topic, unsub } => {
                let topic = name(*topic)?;
                let packet = ClientPacket::Leave(Leave {
                    id: *req,
                    topic,
                    unsub: *unsub,
                });
                (packet, Some((*req, ReqKind::App)))
            }
            Outgoing::Action { req, cmd } => {
                let what = match cmd {
                    ActionCmd::Open { desk } => ActionWhat::Open { desk },
                    ActionCmd::Status(s) => ActionWhat::Status(*s),
                    ActionCmd::TakeNext => ActionWhat::TakeNext,
                    ActionCmd::Transfer { topic, to } => ActionWhat::Transfer {
                        topic: name(*topic)?,
                        to,
                    },
                    ActionCmd::Close { topic } => ActionWhat::Close {
                        topic: name(*topic)?,
                    },
                    ActionCmd::Join { topic } => ActionWhat::Join {
                        topic: name(*topic)?,
                    },
                };
                (
                    ClientPacket::Action(Action { id: *req, what }),
                    Some((*req, ReqKind::App)),
                )
            }
        };
        let n = encode_client(&packet, buf).ok()?;
        if let Some((req, kind)) = track {
            self.track(now, req, kind);
        }
        if let Outgoing::Leave { topic, .. } = o
            && let Some(t) = self.topics.get_mut(usize::from(topic))
        {
            t.attach = Attach::Detached;
        }
        Some(n)
    }

    fn send_pull(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if self.requests.is_full() {
            return None;
        }
        let limit = u64::from(self.cfg.pull_limit.max(1));
        for i in 0..self.topics.len() {
            let t = &mut self.topics[i];
            let Pull::Holding { until } = t.pull else {
                continue;
            };
            if until > now || t.attach != Attach::Attached {
                continue;
            }
            let Some(mut gap) = t.recv.first_gap() else {
                t.pull = Pull::Idle;
                continue;
            };
            gap.last = gap.last.min(gap.first.saturating_add(limit - 1));
            let id = self.alloc_req();
            let t = &self.topics[i];
            let what = GetWhat::Data {
                since: gap.first,
                before: gap.last.saturating_add(1),
                limit: (gap.last - gap.first + 1) as u32,
            };
            let n = encode_client(
                &ClientPacket::Get(Get {
                    id,
                    topic: &t.name,
                    what,
                }),
                buf,
            )
            .ok()?;
            self.topics[i].pull = Pull::Pulling {
                req: id,
                range: gap,
            };
            self.track(now, id, ReqKind::Pull(i as u16, gap));
            self.stats.pulls += 1;
            return Some(n);
        }
        None
    }

    fn send_pub(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        loop {
            let order = self.outbox.poll_send(now, &self.cfg.outbox)?;
            let Some(slot) = self.find_pub(order.req, &order.id) else {
                self.outbox.cancel(&order.id);
                continue;
            };
            let Some(entry) = self.pool.get(slot) else {
                continue;
            };
            let Some(t) = self.topics.get(usize::from(entry.topic)) else {
                continue;
            };
            let packet = ClientPacket::Pub(Pub {
                id: order.req,
                topic: &t.name,
                msg_id: order.id,
                head: Head {
                    mime: &entry.data.mime,
                    reply_to: entry.data.reply_to,
                },
                content: &entry.data.content,
            });
            match encode_client(&packet, buf) {
                Ok(n) => {
                    if order.attempt > 1 {
                        self.stats.retransmits += 1;
                    }
                    if entry.state == MessageState::Queued {
                        let _ = self.pool.set_state(slot, MessageState::Sending);
                    }
                    return Some(n);
                }
                Err(_) => {
                    self.outbox.cancel(&order.id);
                    self.fail_message(&order.id, FailReason::Refused { code: 413 });
                }
            }
        }
    }
}
