//! What the terminal does with the engine's events and the agent's entries: shows messages,
//! keeps the marks (saved in batches), serves the consultations the desk assigns, and tells
//! the desk whether it has room for another.
//!
//! Serving ([`crate::Config::serve`]): after every login the terminal sets the agent's status —
//! Online while the [`MarkTable`] has room for another consultation, Busy when it is full — and
//! follows `me`, where the desk announces assignments. An assigned consultation joins the table
//! (saved at once) and is subscribed; it is in focus, so a plain typed line answers it. It ends
//! when the agent closes it, when the desk moves it to another agent, or when a reply is refused
//! with 409 (the customer closed it); it then leaves the table and the desk may assign the next.

use heapless::Vec;
use kefu_core::engine::{ActionCmd, EngineError, Event, SessionState, TopicName};
use kefu_core::id::MsgId;
use kefu_core::pool::{FailReason, MessageState, TopicKey};
use kefu_core::proto::{AgentStatus, Code, Head, PresWhat, ReqId};

use crate::capacity::{KioskEngine, OUTBOX, TOPICS};
use crate::marks::{MarkTable, SaveBatch};
use crate::terminal::{Config, now};
use crate::ui::{Display, Entry, Marks, Shown, Status, Storage};

/// Per-session state of the app besides the engine.
pub(crate) struct App<'c, 'a, D, S> {
    pub(crate) display: &'c mut D,
    storage: &'c mut S,
    table: &'c mut MarkTable,
    cfg: &'c Config<'a>,
    /// Replies the core gave up on, sent again after the next login.
    failed: Vec<MsgId, OUTBOX>,
    /// Replies published and not yet stored or failed.
    sending: usize,
    /// Highest seq shown per topic in the current batch of events (read marks to send).
    shown: [u64; TOPICS],
    /// Per topic: seqs up to this were read on this account before (shown again = replayed).
    replay_upto: [u64; TOPICS],
    batch: SaveBatch,
    /// Where a reply without a topic goes.
    focus: Option<TopicName>,
    /// The status last sent to the desk on this connection.
    agent: Option<AgentStatus>,
    /// Close requests awaiting their answer.
    closing: Vec<(ReqId, TopicName), 2>,
    /// A consultation waits for an engine topic slot: start a fresh engine once idle.
    pub(crate) recycle: bool,
}

fn name_of(engine: &KioskEngine, t: TopicKey) -> TopicName {
    engine.topic(t).map(|t| t.name.clone()).unwrap_or_default()
}

impl<'c, 'a, D: Display, S: Storage> App<'c, 'a, D, S> {
    pub(crate) fn new(
        display: &'c mut D,
        storage: &'c mut S,
        table: &'c mut MarkTable,
        cfg: &'c Config<'a>,
    ) -> Self {
        let mut app = App {
            display,
            storage,
            table,
            cfg,
            failed: Vec::new(),
            sending: 0,
            shown: [0; TOPICS],
            replay_upto: [0; TOPICS],
            batch: SaveBatch::new(),
            focus: None,
            agent: None,
            closing: Vec::new(),
            recycle: false,
        };
        app.focus = app.last_consult();
        app
    }

    /// Hands every queued event to the display; returns how many there were. Read marks go
    /// out once per batch, then the table takes the engine's marks and is saved if due.
    pub(crate) fn drain(&mut self, engine: &mut KioskEngine) -> usize {
        let mut count = 0;
        while let Some(ev) = engine.poll_event() {
            count += 1;
            self.on_event(engine, ev);
        }
        for (i, seq) in self.shown.iter_mut().enumerate() {
            if *seq > 0 {
                let _ = engine.mark_read(i as TopicKey, *seq);
                *seq = 0;
            }
        }
        self.refresh_marks(engine);
        if self.batch.due(
            embassy_time::Instant::now(),
            self.cfg.save_batch,
            self.cfg.save_delay,
        ) {
            self.save();
        }
        count
    }

    /// When the table must be saved even if nothing else happens.
    pub(crate) fn save_deadline(&self) -> Option<embassy_time::Instant> {
        self.batch.deadline(self.cfg.save_delay)
    }

    /// Saves the table now if anything is unsaved (before a shutdown or a fresh engine).
    pub(crate) fn flush(&mut self) {
        if self.batch.is_dirty() {
            self.save();
        }
    }

    /// No reply and no close request is on its way: a fresh engine would lose nothing.
    pub(crate) fn is_idle(&self) -> bool {
        self.sending == 0 && self.failed.is_empty() && self.closing.is_empty()
    }

    /// The terminal is switched off: the desk hears the agent is offline (sent with the
    /// frames the caller writes next), and the table is saved.
    pub(crate) fn shutdown(&mut self, engine: &mut KioskEngine) {
        if self.cfg.serve
            && engine.state().is_online()
            && engine
                .action(ActionCmd::Status(AgentStatus::Offline))
                .is_ok()
        {
            self.display.status(&Status::Agent(AgentStatus::Offline));
        }
        self.flush();
    }

    fn save(&mut self) {
        self.storage.save_marks(self.table);
        self.batch.saved();
    }

    /// Copies the engine's marks of every followed topic into the table.
    fn refresh_marks(&mut self, engine: &KioskEngine) {
        let now = embassy_time::Instant::now();
        for row in self.table.rows_mut() {
            let Some(t) = engine.topic_key(&row.topic).and_then(|k| engine.topic(k)) else {
                continue;
            };
            let marks = Marks {
                shown: t.handed,
                read: t.read,
            };
            if marks != row.marks {
                self.batch
                    .note(now, marks.shown.saturating_sub(row.marks.shown));
                row.marks = marks;
            }
        }
    }

    fn is_consult(&self, topic: &str) -> bool {
        self.table.contains(topic) && !self.cfg.topics.contains(&topic)
    }

    fn last_consult(&self) -> Option<TopicName> {
        let rows = self.table.rows().iter().rev();
        rows.map(|r| &r.topic)
            .find(|t| !self.cfg.topics.contains(&t.as_str()))
            .cloned()
    }

    /// Tells the desk Online or Busy (as room allows) if that changed on this connection.
    fn send_status(&mut self, engine: &mut KioskEngine) {
        if !self.cfg.serve || !engine.state().is_online() {
            return;
        }
        let want = if self.table.is_full() {
            AgentStatus::Busy
        } else {
            AgentStatus::Online
        };
        if self.agent != Some(want) && engine.action(ActionCmd::Status(want)).is_ok() {
            self.agent = Some(want);
            self.display.status(&Status::Agent(want));
        }
    }

    fn assign(&mut self, engine: &mut KioskEngine, topic: &str) {
        if !self.table.contains(topic) {
            if self.table.set(topic, Marks::default()).is_err() {
                // Only if the desk assigned before our Busy reached it.
                self.display
                    .status(&Status::Refused(EngineError::TooManyTopics));
                return;
            }
            self.batch.note_urgent(embassy_time::Instant::now());
        }
        match engine.subscribe(topic) {
            Ok(_) => {}
            // Every engine slot is taken (ended topics keep theirs): a fresh engine follows
            // the table once no reply is on its way.
            Err(EngineError::TooManyTopics) => self.recycle = true,
            Err(e) => self.display.status(&Status::Refused(e)),
        }
        self.display.status(&Status::Assigned { topic });
        self.focus = TopicName::try_from(topic).ok();
        self.send_status(engine);
    }

    fn end(&mut self, engine: &mut KioskEngine, topic: &str) {
        if !self.is_consult(topic) || !self.table.remove(topic) {
            return;
        }
        self.batch.note_urgent(embassy_time::Instant::now());
        if let Some(k) = engine.topic_key(topic) {
            let _ = engine.leave(k, false);
        }
        self.display.status(&Status::Ended { topic });
        if self.focus.as_deref() == Some(topic) {
            self.focus = self.last_consult();
        }
        self.send_status(engine);
    }

    /// Does what the agent entered (not [`Entry::Shutdown`], which the session loop handles).
    pub(crate) fn entry(&mut self, engine: &mut KioskEngine, entry: Entry<'_>) {
        let focus = self.focus.clone();
        match entry {
            Entry::Reply { topic, content } => {
                let target = topic.or(focus.as_deref());
                let Some(target) = target.filter(|t| self.table.contains(t)) else {
                    return self
                        .display
                        .status(&Status::Refused(EngineError::NoSuchTopic));
                };
                let head = Head {
                    mime: "",
                    reply_to: None,
                };
                match engine.publish(now(), target, head, content) {
                    Ok(_) => self.sending += 1,
                    Err(e) => self.display.status(&Status::Refused(e)),
                }
            }
            Entry::Close { topic } => {
                let target = topic.or(focus.as_deref());
                let found = target
                    .filter(|t| self.is_consult(t))
                    .and_then(|t| Some((engine.topic_key(t)?, TopicName::try_from(t).ok()?)));
                let Some((key, name)) = found else {
                    return self
                        .display
                        .status(&Status::Refused(EngineError::NoSuchTopic));
                };
                match engine.action(ActionCmd::Close { topic: key }) {
                    Ok(req) => {
                        if self.closing.is_full() {
                            self.closing.remove(0);
                        }
                        let _ = self.closing.push((req, name));
                    }
                    Err(e) => self.display.status(&Status::Refused(e)),
                }
            }
            Entry::Shutdown => {}
        }
    }

    fn on_event(&mut self, engine: &mut KioskEngine, ev: Event) {
        let me = engine.topic_key("me");
        match ev {
            Event::State(SessionState::Connecting) => self.display.status(&Status::Connecting),
            Event::State(SessionState::Offline) => self.display.status(&Status::Offline),
            Event::State(_) => {}
            Event::Connected => {
                self.display.status(&Status::Online {
                    user: engine.user(),
                });
                for id in core::mem::take(&mut self.failed) {
                    if engine.resend(now(), &id).is_ok() {
                        self.sending += 1;
                    }
                }
                // The desk forgets statuses when it restarts: tell it on every login.
                self.agent = None;
                self.send_status(engine);
            }
            Event::Disconnected => log!(*self.display, "disconnected"),
            Event::Subscribed { topic, latest } if Some(topic) != me => {
                // The read mark the gateway kept: anything pushed up to it was shown before.
                if let Some(r) = self.replay_upto.get_mut(usize::from(topic)) {
                    *r = engine.topic(topic).map_or(0, |t| t.read);
                }
                let topic = name_of(engine, topic);
                self.display.status(&Status::Subscribed {
                    topic: &topic,
                    latest,
                });
            }
            Event::MessageAdded {
                topic, id, history, ..
            } => self.on_message(engine, topic, id, history),
            Event::MessageChanged {
                topic,
                id,
                state,
                seq,
            } => self.on_changed(engine, topic, id, state, seq),
            Event::Unread { topic, count } if Some(topic) != me => {
                let topic = name_of(engine, topic);
                self.display.status(&Status::Unread {
                    topic: &topic,
                    count,
                });
            }
            Event::Presence { topic, src, what } if Some(topic) == me => match what {
                PresWhat::Assigned if self.cfg.serve => self.assign(engine, &src),
                PresWhat::Gone => self.end(engine, &src),
                _ => {}
            },
            Event::Reply { req, code, .. } => {
                match self.closing.iter().position(|(r, _)| *r == req) {
                    Some(i) => {
                        let (_, topic) = self.closing.swap_remove(i);
                        // 409 / 404: closed already (by the customer) or gone.
                        if code.is_success() || code == Code::CONFLICT || code == Code::NOT_FOUND {
                            self.end(engine, &topic);
                        }
                    }
                    None => log!(*self.display, "reply {}: {}", req, code.0),
                }
            }
            _ => {}
        }
    }

    fn on_message(&mut self, engine: &mut KioskEngine, topic: TopicKey, id: MsgId, history: bool) {
        let tname = name_of(engine, topic);
        let Some(m) = engine.message(&id) else {
            return;
        };
        let k = usize::from(topic);
        let seq = m.seq();
        let upto = self.replay_upto.get(k).copied().unwrap_or(0);
        // A pushed message of our own account was sent before this boot (this boot's own
        // replies never come back as new messages).
        let replayed = !history && seq.is_some_and(|s| m.outgoing || s <= upto);
        self.display.message(&Shown {
            topic: &tname,
            seq,
            id,
            from: m.from,
            outgoing: m.outgoing,
            replayed,
            content: m.content,
        });
        if let (Some(seq), false, false) = (seq, history, m.outgoing) {
            if let Some(s) = self.shown.get_mut(k) {
                *s = (*s).max(seq);
            }
            if self.table.contains(&tname) {
                self.focus = Some(tname);
            }
        }
    }

    fn on_changed(
        &mut self,
        engine: &mut KioskEngine,
        topic: TopicKey,
        id: MsgId,
        state: MessageState,
        seq: Option<u64>,
    ) {
        let tname = name_of(engine, topic);
        match (state, seq) {
            (MessageState::Sent, Some(seq)) => {
                self.sending = self.sending.saturating_sub(1);
                self.display.status(&Status::Sent {
                    topic: &tname,
                    id,
                    seq,
                });
                if let Some(m) = engine.message(&id) {
                    self.display.message(&Shown {
                        topic: &tname,
                        seq: Some(seq),
                        id,
                        from: m.from,
                        outgoing: true,
                        replayed: false,
                        content: m.content,
                    });
                }
            }
            (MessageState::Failed(reason), _) => {
                self.sending = self.sending.saturating_sub(1);
                self.display
                    .status(&Status::SendFailed { topic: &tname, id });
                match reason {
                    // Timed out: sent again (same id, so never doubled) after the next login.
                    FailReason::TimedOut if !self.failed.contains(&id) => {
                        let _ = self.failed.push(id);
                    }
                    // The consultation was closed (by the customer): it is over here too.
                    FailReason::Refused { code: 409 } => self.end(engine, &tname),
                    _ => {}
                }
            }
            _ => {}
        }
    }
}
