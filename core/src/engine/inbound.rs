//! Inbound half of the engine: frames from the gateway become state changes and events.

use crate::frame::{FrameError, decode_frame};
use crate::id::MsgId;
use crate::order::Arrival;
use crate::pool::{FailReason, Inserted, MessageState, OrderKey, PoolError, Slot, TopicKey};
use crate::proto::{
    Code, Ctrl, CtrlParams, Data, Info, Meta, MetaItem, NoteWhat, Pres, PresWhat, ServerPacket,
    decode_server,
};
use crate::time::Instant;

use super::config::label;
/// Pool slots kept free of out-of-order arrivals, beyond the outbox's capacity.
const ARRIVING_RESERVE: usize = 8;

use super::{Attach, Command, Engine, EngineError, Event, Handshake, Pull, ReqKind, SessionState};

impl<const N: usize, const C: usize, const T: usize, const O: usize, const F: usize>
    Engine<N, C, T, O, F>
{
    /// Handles buffered frames while the event queue has room. Returns whether it ran dry
    /// (false: stopped for lack of event room).
    pub(super) fn process_frames(&mut self, now: Instant) -> bool {
        loop {
            if !self.room_for_frames() {
                self.input_stalled = true;
                return false;
            }
            self.input_stalled = false;
            let body = match self.deframer.next_frame() {
                None => return true,
                Some(Err(_)) => {
                    self.stats.bad_input += 1;
                    continue;
                }
                Some(Ok(body)) => body,
            };
            self.stats.frames_in += 1;
            if body.is_empty() {
                continue; // keepalive answer; liveness already noted
            }
            // Copy the body out of the deframer so packet views can outlive the next read.
            // Filled in place: `from_slice` returns the whole F-byte vector by value, a
            // memmove of F bytes per frame on top of the body's copy.
            let mut copy = heapless::Vec::<u8, F>::new();
            if copy.extend_from_slice(body).is_err() {
                continue;
            }
            match decode_server(&copy) {
                Ok(packet) => self.handle_packet(now, packet),
                Err(_) => self.stats.bad_input += 1,
            }
            if !self.is_connected() {
                return true;
            }
        }
    }

    /// What writing the next chunk of `bytes` into the deframer and running
    /// [`Self::process_frames`] would do, when the deframer is empty and the bytes it held
    /// start at `bytes[at]`; but whole frames are decoded where they lie, not copied into the
    /// deframer and out again. Returns the new count of bytes taken and whether it ran dry.
    ///
    /// It follows the chunks the deframer would take: each write takes as much as fits, i.e.
    /// up to `F` bytes from the start of the first frame not yet complete. A frame that fails
    /// a check, a full event queue or the end of the input hand the rest of the current chunk
    /// to the deframer and to [`Self::process_frames`], as if it had all been written there.
    pub(super) fn frames_in_place(
        &mut self,
        now: Instant,
        bytes: &[u8],
        mut at: usize,
    ) -> (usize, bool) {
        let max_body = self.deframer.max_body();
        let chunk_end = |at: usize| bytes.len().min(at.saturating_add(F));
        let mut end = chunk_end(at);
        loop {
            if !self.room_for_frames() {
                break;
            }
            let (body, len) = match decode_frame(&bytes[at..end], max_body) {
                Ok(frame) => frame,
                // The deframer would have run dry here and been given the next chunk.
                Err(FrameError::Incomplete { .. }) if chunk_end(at) > end => {
                    end = chunk_end(at);
                    continue;
                }
                Err(_) => break,
            };
            at += len;
            self.input_stalled = false;
            self.stats.frames_in += 1;
            if body.is_empty() {
                continue; // keepalive answer; liveness already noted
            }
            match decode_server(body) {
                Ok(packet) => self.handle_packet(now, packet),
                Err(_) => self.stats.bad_input += 1,
            }
            if !self.is_connected() {
                self.deframer.write(&bytes[at..end]);
                return (end, true);
            }
        }
        // The rest of the chunk fits: the deframer is empty and a chunk is at most F bytes.
        self.deframer.write(&bytes[at..end]);
        (end, self.process_frames(now))
    }

    fn handle_packet(&mut self, now: Instant, packet: ServerPacket<'_>) {
        match packet {
            ServerPacket::Ctrl(c) => self.on_ctrl(now, c),
            ServerPacket::Data(d) => self.on_data(now, &d),
            ServerPacket::Meta(m) => self.on_meta(&m),
            ServerPacket::Pres(p) => self.on_pres(now, &p),
            ServerPacket::Info(i) => self.on_info(&i),
        }
    }

    fn take_request(&mut self, req: u32) -> Option<ReqKind> {
        let i = self.requests.iter().position(|r| r.req == req)?;
        Some(self.requests.swap_remove(i).kind)
    }

    fn on_ctrl(&mut self, now: Instant, c: Ctrl<'_>) {
        if let Some(kind) = self.take_request(c.id) {
            return self.on_reply(now, kind, &c);
        }
        // Not a tracked request: a pub answer, or an unsolicited notice.
        if c.code.is_success() {
            if let CtrlParams::Pub { seq, ts, .. } = c.params
                && let Some(id) = self.outbox.on_ack(c.id)
            {
                self.stats.acked += 1;
                if let Some(slot) = self.find_pub(c.id, &id) {
                    self.confirm_own(slot, &id, seq, Some(ts));
                }
            }
        } else if c.code.is_client_error()
            && c.code != Code::RATE_LIMITED
            && c.code != Code::TIMEOUT
        {
            if let Some(id) = self.outbox.on_refused(c.id) {
                self.fail_message(&id, FailReason::Refused { code: c.code.0 });
            }
        } else if c.id == 0 && c.code == Code::UNAVAILABLE {
            // The gateway is going away: reconnect rather than wait for the socket to die.
            self.push_command(Command::Close);
        }
    }

    fn on_reply(&mut self, now: Instant, kind: ReqKind, c: &Ctrl<'_>) {
        let ok = c.code.is_success();
        match kind {
            ReqKind::Hi => {
                if ok {
                    if let CtrlParams::Hi { server_ms, .. } = c.params {
                        self.wall_ms_at_zero = server_ms.saturating_sub(now.as_millis());
                    }
                    self.handshake = Handshake::SendLogin;
                    self.set_state(SessionState::LoggingIn);
                } else if c.code == Code::VERSION_NOT_SUPPORTED {
                    self.fail(EngineError::VersionRefused);
                    self.push_command(Command::Close);
                } else {
                    self.push_command(Command::Close);
                }
            }
            ReqKind::Login => {
                if ok {
                    if let CtrlParams::Login { user, .. } = c.params {
                        self.user = label(user);
                    }
                    self.handshake = Handshake::Done;
                    self.stats.logins += 1;
                    self.outbox.on_connect(now);
                    self.set_state(SessionState::Subscribing);
                    self.push_event(Event::Connected);
                    self.check_ready();
                } else if c.code == Code::UNAUTHORIZED || c.code == Code::FORBIDDEN {
                    self.fail(EngineError::LoginRefused(c.code));
                    self.push_command(Command::Close);
                } else {
                    self.push_command(Command::Close);
                }
            }
            ReqKind::Sub(topic) => self.on_sub_reply(now, topic, c),
            ReqKind::Pull(topic, _) => {
                // The pulled `data` may still be on its way (or lost): never infer from the
                // answer that a seq does not exist. Holes left open are pulled again.
                if let Some(t) = self.topics.get_mut(usize::from(topic)) {
                    t.pull = Pull::Idle;
                }
                self.pump(topic);
                self.schedule_pull(now, topic);
            }
            ReqKind::Digest(topic) => {
                if let CtrlParams::Digest(remote) = c.params {
                    let local = self.local_digest(topic, remote.first_seq, remote.last_seq);
                    self.push_event(Event::Reconciled {
                        topic,
                        matches: local == remote,
                    });
                }
                self.push_event(Event::Reply {
                    req: c.id,
                    code: c.code,
                    topic: Some(topic),
                });
            }
            ReqKind::History(topic) => {
                if let Some(t) = self.topics.get_mut(usize::from(topic)) {
                    t.history = None;
                }
                self.push_event(Event::Reply {
                    req: c.id,
                    code: c.code,
                    topic: Some(topic),
                });
            }
            ReqKind::App => {
                let mut topic = None;
                if let CtrlParams::Topic { name, .. } = c.params
                    && ok
                {
                    topic = self.subscribe(name).ok();
                }
                self.push_event(Event::Reply {
                    req: c.id,
                    code: c.code,
                    topic,
                });
            }
        }
    }

    fn on_sub_reply(&mut self, now: Instant, topic: TopicKey, c: &Ctrl<'_>) {
        let Some(t) = self.topics.get_mut(usize::from(topic)) else {
            return;
        };
        if !c.code.is_success() {
            // The topic is gone or forbidden: stop asking for it on every reconnect.
            t.attach = Attach::Detached;
            t.wanted = false;
            self.push_event(Event::Reply {
                req: c.id,
                code: c.code,
                topic: Some(topic),
            });
            self.check_ready();
            return;
        }
        t.attach = Attach::Attached;
        let mut latest = t.latest;
        if let CtrlParams::Sub {
            latest: l, read, ..
        } = c.params
        {
            latest = latest.max(l);
            t.latest = latest;
            t.read = t.read.max(read);
            t.recv.note_latest(l);
        }
        self.push_event(Event::Subscribed { topic, latest });
        self.update_unread(topic);
        self.schedule_pull(now, topic);
        self.check_ready();
    }

    pub(super) fn check_ready(&mut self) {
        if self.state == SessionState::Subscribing
            && self
                .topics
                .iter()
                .all(|t| !t.wanted || t.attach == Attach::Attached)
        {
            self.set_state(SessionState::Ready);
        }
    }

    /// The gateway stored one of our own messages at `seq`.
    ///
    /// The seq is recorded as held at once where the receive window allows, so the push of the
    /// same message is a duplicate; beyond the window, the push is recognised by the engine's
    /// id tag even after the pool evicted the message.
    fn confirm_own(&mut self, slot: Slot, id: &MsgId, seq: u64, ts: Option<u64>) {
        let Some(entry) = self.pool.get(slot) else {
            return;
        };
        let topic = entry.topic;
        if entry.key == OrderKey::stored(seq) {
            return; // already confirmed (the push of our own message came first)
        }
        if self.pool.confirm(slot, seq).is_err() {
            return;
        }
        if let (Some(ts), Some(body)) = (ts, self.pool.data_mut(slot)) {
            body.ts = ts;
        }
        let room = self.room_to_show();
        let Some(t) = self.topics.get_mut(usize::from(topic)) else {
            return;
        };
        t.stored_max = t.stored_max.max(seq);
        t.latest = t.latest.max(seq);
        // Held from now on: the push of the same message will be a duplicate.
        t.recv.on_seq(seq);
        // If it is the next to emit, the pump would find it in the pool, shown already, and
        // only step over it: step over it here, without the lookup (and only where the pump
        // would have had event room to get that far).
        if room && t.emitted < t.recv.mark() && t.emitted + 1 == seq {
            t.emitted = seq;
        }
        let state = MessageState::Sent;
        self.push_event(Event::MessageChanged {
            topic,
            id: *id,
            state,
            seq: Some(seq),
        });
        self.pump(topic);
        self.update_unread(topic);
    }

    fn on_data(&mut self, now: Instant, d: &Data<'_>) {
        let Some(topic) = self.topic_key(d.topic) else {
            return;
        };
        if d.seq == 0 {
            self.stats.bad_input += 1;
            return;
        }
        // Our own message coming back: it is stored, whether or not its ctrl arrived.
        if let Some(slot) = self.pool.find_id(&d.msg_id) {
            let awaiting = self.pool.get(slot).is_some_and(|e| !e.key.is_stored());
            if awaiting {
                // The first copy of it: confirming records the seq, nothing is a duplicate.
                self.outbox.cancel(&d.msg_id);
                self.confirm_own(slot, &d.msg_id, d.seq, Some(d.ts));
                self.schedule_pull(now, topic);
            } else {
                self.record_arrival(now, topic, d.seq);
            }
            return;
        }
        // Our own message, confirmed and since evicted from the pool: already shown.
        if d.msg_id.tag() == self.id_tag && d.from == self.user.as_str() {
            self.record_arrival(now, topic, d.seq);
            return;
        }
        let Some(t) = self.topics.get_mut(usize::from(topic)) else {
            return;
        };
        t.latest = t.latest.max(d.seq);
        if d.seq <= t.recv.mark() || t.recv.is_held(d.seq) {
            let asked = t.history.is_some_and(|h| h.contains(d.seq));
            if asked && d.seq <= t.emitted && self.pool.find_seq(topic, d.seq).is_none() {
                self.add_history(topic, d);
            } else {
                self.stats.duplicates += 1;
            }
            return;
        }
        // Messages above a hole may fill the pool only so far that the outbox and the next
        // in-order message always find room: otherwise held messages could block the very
        // message that would release them.
        let in_order = d.seq == t.recv.mark() + 1;
        if !in_order && self.arriving + O + ARRIVING_RESERVE >= N {
            self.stats.no_room += 1; // dropped for now; it is pushed or pulled again
            t.recv.note_latest(d.seq);
            self.schedule_pull(now, topic);
            return;
        }
        // The next message to show, with nothing waiting before it and room for its event:
        // shown at once, entering the pool in its final state, rather than entering as
        // arriving and being found again by seq when the pump releases it.
        let show_now = in_order && t.emitted == t.recv.mark() && self.room_to_show();
        let wanted = self.cfg.filter.is_none_or(|f| f(d));
        if wanted {
            if d.content.len() > C {
                self.stats.bad_input += 1;
                return;
            }
            let key = OrderKey::stored(d.seq);
            let outgoing = self.is_own(d);
            let state = match (show_now, outgoing) {
                (false, _) => MessageState::Arriving,
                (true, true) => MessageState::Sent,
                (true, false) => MessageState::Received,
            };
            if self.insert_body(d, topic, key, state, outgoing).is_err() {
                // No room: not recorded, so it will be pushed or pulled again.
                self.stats.no_room += 1;
                return;
            }
            if show_now {
                self.show_next(topic, d.msg_id, d.seq);
            } else {
                self.arriving += 1;
            }
        } else {
            self.stats.filtered += 1;
        }
        self.record_arrival(now, topic, d.seq);
    }

    /// Notes that `seq` is held (or deliberately dropped) and shows what became contiguous.
    fn record_arrival(&mut self, now: Instant, topic: TopicKey, seq: u64) {
        let Some(t) = self.topics.get_mut(usize::from(topic)) else {
            return;
        };
        match t.recv.on_seq(seq) {
            Arrival::TooFar => {
                t.recv.note_latest(seq);
                if let Some(slot) = self.pool.find_seq(topic, seq)
                    && self
                        .pool
                        .get(slot)
                        .is_some_and(|e| e.state == MessageState::Arriving)
                {
                    self.pool.remove(slot);
                    self.arriving = self.arriving.saturating_sub(1);
                }
            }
            Arrival::Duplicate => self.stats.duplicates += 1,
            Arrival::New { .. } | Arrival::Invalid => {}
        }
        self.pump(topic);
        self.schedule_pull(now, topic);
    }

    fn add_history(&mut self, topic: TopicKey, d: &Data<'_>) {
        if self.cfg.filter.is_some_and(|f| !f(d)) {
            self.stats.filtered += 1;
            return;
        }
        if d.content.len() > C {
            return;
        }
        let key = OrderKey::stored(d.seq);
        let outgoing = self.is_own(d);
        if self
            .insert_body(d, topic, key, MessageState::Received, outgoing)
            .is_ok()
        {
            self.push_event(Event::MessageAdded {
                topic,
                id: d.msg_id,
                seq: Some(d.seq),
                history: true,
            });
        }
    }

    /// Sent by this user (from this or another of the user's devices).
    fn is_own(&self, d: &Data<'_>) -> bool {
        !self.user.is_empty() && d.from == self.user.as_str()
    }

    /// Puts a received message into the pool, its body written in place (content already
    /// checked to fit); `outgoing` is [`Self::is_own`].
    fn insert_body(
        &mut self,
        d: &Data<'_>,
        topic: TopicKey,
        key: OrderKey,
        state: MessageState,
        outgoing: bool,
    ) -> Result<Inserted, PoolError> {
        if key.is_stored()
            && let Some(t) = self.topics.get_mut(usize::from(topic))
        {
            t.stored_max = t.stored_max.max(key.seq);
        }
        let inserted = self.pool.insert_with(d.msg_id, topic, key, state, |body| {
            body.refill(
                d.from,
                outgoing,
                d.ts,
                d.head.mime,
                d.head.reply_to,
                d.content,
            )
        })?;
        if outgoing {
            let _ = self.pool.set_mark(inserted.slot, true); // own: not unread
        }
        Ok(inserted)
    }

    /// Hands the application every message that became contiguous in one topic, in seq order,
    /// as far as the event queue has room.
    #[cfg_attr(not(feature = "small"), inline(always))]
    pub(super) fn pump(&mut self, topic: TopicKey) {
        // The common case after every message: nothing new is contiguous and there is room,
        // so the pump would stop at once without doing anything.
        if self.room_to_show()
            && self
                .topics
                .get(usize::from(topic))
                .is_some_and(|t| t.emitted >= t.recv.mark())
        {
            return;
        }
        self.pump_released(topic);
    }

    /// [`Self::pump`], the loop.
    fn pump_released(&mut self, topic: TopicKey) {
        let mut added = false;
        loop {
            if !self.room_to_show() {
                // Messages that became contiguous may wait here: poll_event resumes.
                self.pump_stalled = true;
                break;
            }
            let Some(t) = self.topics.get_mut(usize::from(topic)) else {
                return;
            };
            if t.emitted >= t.recv.mark() {
                break;
            }
            let seq = t.emitted + 1;
            t.emitted = seq;
            let Some(slot) = self.pool.find_seq(topic, seq) else {
                continue; // filtered or deleted: nothing to show, but the mark moves on
            };
            let Some(entry) = self.pool.get(slot) else {
                continue;
            };
            let (id, state, outgoing) = (entry.id, entry.state, entry.data.outgoing);
            if state != MessageState::Arriving {
                continue; // our own message, already shown
            }
            self.arriving = self.arriving.saturating_sub(1);
            let new_state = if outgoing {
                MessageState::Sent
            } else {
                MessageState::Received
            };
            let _ = self.pool.set_state(slot, new_state);
            t.queued_events = t.queued_events.saturating_add(1);
            self.stats.received += 1;
            added = true;
            self.push_event(Event::MessageAdded {
                topic,
                id,
                seq: Some(seq),
                history: false,
            });
        }
        if added {
            self.update_unread(topic);
        }
    }

    /// Shows the message at `seq`, the next to emit, as the pump shows a released one (the
    /// caller checked the event room and put it into the pool in its final state).
    fn show_next(&mut self, topic: TopicKey, id: MsgId, seq: u64) {
        let Some(t) = self.topics.get_mut(usize::from(topic)) else {
            return;
        };
        t.emitted = seq;
        t.queued_events = t.queued_events.saturating_add(1);
        self.stats.received += 1;
        self.push_event(Event::MessageAdded {
            topic,
            id,
            seq: Some(seq),
            history: false,
        });
        self.update_unread(topic);
    }

    /// Resumes emission in every topic (after the application drained events), as long as
    /// the event queue has room; clears `pump_stalled` once every topic was pumped.
    pub(super) fn pump_all(&mut self) {
        self.pump_stalled = false;
        for i in 0..self.topics.len() {
            if !self.room_to_show() {
                self.pump_stalled = true;
                return;
            }
            self.pump(i as TopicKey);
        }
    }

    fn on_meta(&mut self, m: &Meta<'_>) {
        let (name, latest, read) = match m.item {
            MetaItem::Desc(d) => (m.topic, d.seq, d.read),
            MetaItem::Sub(s) if m.topic == "me" => (s.name, s.seq, s.read),
            MetaItem::Sub(_) => return,
        };
        let Some(topic) = self.topic_key(name) else {
            return;
        };
        if let Some(t) = self.topics.get_mut(usize::from(topic)) {
            t.latest = t.latest.max(latest);
            t.read = t.read.max(read);
        }
        self.update_unread(topic);
    }

    /// A `Msg` notice is about its `src`: for a held topic it raises the latest seq and pulls
    /// what is missing; about any other topic it reaches the application as presence (a
    /// conversation it does not follow has news) and never touches the topic it came on.
    fn on_pres(&mut self, now: Instant, p: &Pres<'_>) {
        if let PresWhat::Msg { seq } = p.what
            && let Some(topic) = self.topic_key(p.src)
        {
            if let Some(t) = self.topics.get_mut(usize::from(topic)) {
                t.latest = t.latest.max(seq);
                if t.attach == Attach::Attached {
                    t.recv.note_latest(seq);
                }
            }
            self.update_unread(topic);
            self.schedule_pull(now, topic);
            return;
        }
        let Some(topic) = self.topic_key(p.topic) else {
            return;
        };
        self.push_event(Event::Presence {
            topic,
            src: label(p.src),
            what: p.what,
        });
    }

    fn on_info(&mut self, i: &Info<'_>) {
        let Some(topic) = self.topic_key(i.topic) else {
            return;
        };
        let target = match i.what {
            NoteWhat::Recv => Some(MessageState::Delivered),
            NoteWhat::Read => Some(MessageState::Read),
            NoteWhat::Kp => None,
        };
        if let Some(target) = target {
            if i.from != self.user.as_str() {
                self.raise_outgoing(topic, i.seq, target);
            } else if i.what == NoteWhat::Read {
                // The user read it on another device.
                if let Some(t) = self.topics.get_mut(usize::from(topic)) {
                    t.read = t.read.max(i.seq);
                }
                self.update_unread(topic);
            }
        }
        self.push_event(Event::Receipt {
            topic,
            from: label(i.from),
            what: i.what,
            seq: i.seq,
        });
    }

    /// Moves own stored messages up to `seq` to Delivered / Read (never backwards).
    fn raise_outgoing(&mut self, topic: TopicKey, seq: u64, target: MessageState) {
        let rank = |s: MessageState| match s {
            MessageState::Sent => 1,
            MessageState::Delivered => 2,
            MessageState::Read => 3,
            _ => 0,
        };
        loop {
            let mut batch: heapless::Vec<crate::pool::Slot, 16> = heapless::Vec::new();
            for (slot, e) in self.pool.iter_topic(topic).rev() {
                if !e.key.is_stored() || e.key.seq > seq || !e.data.outgoing {
                    continue;
                }
                let r = rank(e.state);
                if r == 0 || r >= rank(target) {
                    continue;
                }
                if batch.push(slot).is_err() {
                    break;
                }
            }
            if batch.is_empty() {
                return;
            }
            for slot in batch {
                let _ = self.pool.set_state(slot, target);
            }
        }
    }
}
