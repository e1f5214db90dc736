//! What `kefu chat` shows and how it changes: a pure state machine. Keys, client events and
//! answers go in ([`App::handle`]); the screen is drawn from the state (`super::view`); what
//! the client must do comes out as [`Effect`]s, which `super` carries out. No terminal, no
//! network, no clock of its own: the caller passes `now`, so every rule here is unit-tested.

use std::time::{Duration, Instant};

use crate::client::{
    AgentStatus, ClientEvent, Conversation, FailReason, MessageSnapshot, MessageState, MsgId,
    OrderKey, PresWhat, SessionState, TopicEvent,
};

/// Messages above the read mark that are also shown when a conversation is first opened.
pub const CONTEXT: u64 = 20;
/// Messages asked per history page.
pub const PAGE: u32 = 20;
/// How long "… is typing" stays up after the last typing notice.
pub const TYPING_SHOWN: Duration = Duration::from_secs(4);
/// Conversations followed live at most (the rest are listed, and followed once opened).
pub const FOLLOWED: usize = 64;

/// A key, as the chat understands it (mapped from the terminal's key events).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// A printable character for the input line.
    Char(char),
    /// Send the input line (or run its command).
    Enter,
    /// Delete the last character of the input line.
    Backspace,
    /// The previous conversation.
    Up,
    /// The next conversation.
    Down,
    /// Scroll back (loads older history at the top).
    PageUp,
    /// Scroll forward.
    PageDown,
    /// Cycle the agent status (online → busy → away → offline).
    F2,
    /// Take the next waiting customer.
    F3,
    /// Quit.
    Quit,
}

/// Something that happened, for [`App::handle`].
#[derive(Clone, Debug)]
pub enum Input {
    /// The user pressed a key.
    Key(Key),
    /// An event of a followed conversation.
    Topic(String, TopicEvent),
    /// A client-wide event.
    Client(ClientEvent),
    /// The gateway's conversation list.
    Conversations(Vec<Conversation>),
    /// The answer to an [`Effect`] that waits for the gateway.
    Done(Outcome),
    /// Time passed (expires typing notices).
    Tick,
}

/// How a request the chat made ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The agent status is now this.
    Status(AgentStatus),
    /// A consultation was taken (`/next`) or opened (`/open`): show it.
    Opened(String),
    /// A history page arrived; `more` is false once the conversation's beginning is held.
    History {
        /// The conversation.
        topic: String,
        /// Whether older messages may remain.
        more: bool,
    },
    /// Something worth a line in the notice bar (a transfer done, a close...).
    Notice(String),
    /// A request failed; the reason, for the notice bar.
    Failed(String),
}

/// What the client must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Follow a conversation: from the marks given if the client does not know it yet.
    Follow {
        /// The topic.
        topic: String,
        /// Deliver messages after this seq live.
        mark: u64,
        /// The user's read mark.
        read: u64,
    },
    /// Send a text.
    Publish {
        /// The topic.
        topic: String,
        /// The text.
        text: String,
    },
    /// Send a failed message again (same id).
    Resend(MsgId),
    /// Tell the peer the user is typing.
    Typing(String),
    /// Mark a conversation read up to a seq.
    MarkRead {
        /// The topic.
        topic: String,
        /// Up to here.
        seq: u64,
    },
    /// Page in older messages.
    LoadHistory(String),
    /// Set the agent status.
    SetStatus(AgentStatus),
    /// Take the next waiting customer.
    TakeNext,
    /// Hand a consultation to another agent.
    Transfer {
        /// The consultation.
        topic: String,
        /// The agent's user id.
        to: String,
    },
    /// Close a consultation.
    Close(String),
    /// Open a consultation at a desk (customer).
    OpenConsultation(String),
    /// Ask the gateway for the conversation list again.
    RefreshList,
}

/// One message line of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// Message id.
    pub id: MsgId,
    /// Where it sorts: seq once stored, virtual before.
    pub position: OrderKey,
    /// Sender's user id.
    pub from: String,
    /// Sent by this user.
    pub outgoing: bool,
    /// Timestamp, ms since the Unix epoch.
    pub ts: u64,
    /// The text.
    pub text: String,
    /// Delivery state (own messages: sending, sent, delivered, read, failed).
    pub state: MessageState,
}

impl Line {
    fn of(m: &MessageSnapshot) -> Line {
        Line {
            id: m.id,
            position: m.position,
            from: m.from.clone(),
            outgoing: m.outgoing,
            ts: m.ts,
            text: m.text().into_owned(),
            state: m.state,
        }
    }

    /// The seq, once stored.
    pub fn seq(&self) -> Option<u64> {
        self.position.is_stored().then_some(self.position.seq)
    }
}

/// One conversation in the list.
#[derive(Clone, Debug, Default)]
pub struct Conv {
    /// Topic name.
    pub topic: String,
    /// Display title.
    pub title: String,
    /// Unread messages.
    pub unread: u64,
    /// The peer (one-to-one) or anyone (group) is online.
    pub online: bool,
    /// Messages held, in conversation order.
    pub lines: Vec<Line>,
    /// Who is typing, until when.
    pub typing: Option<(String, Instant)>,
    /// Messages scrolled back from the newest.
    pub scroll: usize,
    /// A history page is on its way.
    pub loading: bool,
    /// The conversation's first message is held.
    pub complete: bool,
    /// Followed live (a subscription exists).
    pub followed: bool,
    /// The user's read mark as last sent.
    pub read: u64,
}

impl Conv {
    fn new(topic: &str) -> Conv {
        Conv {
            topic: topic.to_owned(),
            title: topic.to_owned(),
            ..Conv::default()
        }
    }

    /// The newest stored seq held.
    pub fn last_seq(&self) -> u64 {
        self.lines.iter().filter_map(Line::seq).max().unwrap_or(0)
    }

    fn upsert(&mut self, line: Line) {
        match self.lines.iter_mut().find(|l| l.id == line.id) {
            Some(l) => *l = line,
            None => self.lines.push(line),
        }
        self.lines.sort_by_key(|l| l.position);
    }
}

/// The whole state of the chat screen.
#[derive(Debug)]
pub struct App {
    /// Login name.
    pub login: String,
    /// Own user id.
    pub me: String,
    /// Connection state.
    pub conn: SessionState,
    /// Agent status, once known.
    pub status: Option<AgentStatus>,
    /// Conversations, in the order they became known.
    pub convs: Vec<Conv>,
    /// The open conversation (index into `convs`).
    pub open: Option<usize>,
    /// The input line.
    pub input: String,
    /// The last notice or error.
    pub notice: String,
    /// Message rows the conversation pane shows (set by the view).
    pub rows: usize,
    /// The user asked to quit.
    pub quit: bool,
}

impl App {
    /// A fresh screen for `login` (user id `me`).
    pub fn new(login: &str, me: &str) -> App {
        App {
            login: login.to_owned(),
            me: me.to_owned(),
            conn: SessionState::Ready,
            status: None,
            convs: Vec::new(),
            open: None,
            input: String::new(),
            notice: "/help lists the commands".to_owned(),
            rows: 20,
            quit: false,
        }
    }

    /// The open conversation.
    pub fn current(&self) -> Option<&Conv> {
        self.open.and_then(|i| self.convs.get(i))
    }

    /// Unread messages across all conversations.
    pub fn total_unread(&self) -> u64 {
        self.convs.iter().map(|c| c.unread).sum()
    }

    /// Applies one input at `now`; what the client must do.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Effect> {
        let mut out = Vec::new();
        match input {
            Input::Key(k) => self.key(k, &mut out),
            Input::Topic(topic, ev) => self.topic_event(now, &topic, ev, &mut out),
            Input::Client(ev) => self.client_event(ev, &mut out),
            Input::Conversations(list) => self.listed(list, &mut out),
            Input::Done(o) => self.done(o, &mut out),
            Input::Tick => {}
        }
        for c in &mut self.convs {
            if c.typing.as_ref().is_some_and(|(_, until)| *until <= now) {
                c.typing = None;
            }
        }
        out
    }

    fn key(&mut self, key: Key, out: &mut Vec<Effect>) {
        match key {
            Key::Char(c) => {
                self.input.push(c);
                if !self.input.starts_with('/')
                    && let Some(conv) = self.current()
                {
                    out.push(Effect::Typing(conv.topic.clone()));
                }
            }
            Key::Backspace => {
                self.input.pop();
            }
            Key::Enter => {
                let line = std::mem::take(&mut self.input);
                let line = line.trim();
                if let Some(cmd) = line.strip_prefix('/') {
                    self.command(cmd, out);
                } else if !line.is_empty() {
                    match self.current() {
                        Some(c) => out.push(Effect::Publish {
                            topic: c.topic.clone(),
                            text: line.to_owned(),
                        }),
                        None => self.notice = "no conversation open".into(),
                    }
                }
            }
            Key::Up => self.select_by(-1, out),
            Key::Down => self.select_by(1, out),
            Key::PageUp => {
                let rows = self.rows.max(1);
                if let Some(c) = self.open.and_then(|i| self.convs.get_mut(i)) {
                    c.scroll = (c.scroll + rows).min(c.lines.len().saturating_sub(1));
                    // The oldest held message is on screen: page in older ones.
                    if c.lines.len() <= c.scroll + rows && !c.complete && !c.loading {
                        c.loading = true;
                        out.push(Effect::LoadHistory(c.topic.clone()));
                    }
                }
            }
            Key::PageDown => {
                let rows = self.rows.max(1);
                if let Some(c) = self.open.and_then(|i| self.convs.get_mut(i)) {
                    c.scroll = c.scroll.saturating_sub(rows);
                }
            }
            Key::F2 => {
                let next = match self.status {
                    Some(AgentStatus::Online) => AgentStatus::Busy,
                    Some(AgentStatus::Busy) => AgentStatus::Away,
                    Some(AgentStatus::Away) => AgentStatus::Offline,
                    Some(AgentStatus::Offline) | None => AgentStatus::Online,
                };
                out.push(Effect::SetStatus(next));
            }
            Key::F3 => out.push(Effect::TakeNext),
            Key::Quit => self.quit = true,
        }
    }

    fn command(&mut self, cmd: &str, out: &mut Vec<Effect>) {
        let mut words = cmd.split_whitespace();
        let verb = words.next().unwrap_or_default();
        let arg = words.next();
        let current = self.current().map(|c| c.topic.clone());
        match (verb, arg, current) {
            ("status", Some(s), _) => match parse_status(s) {
                Some(s) => out.push(Effect::SetStatus(s)),
                None => self.notice = "status: online, busy, away or offline".into(),
            },
            ("next", _, _) => out.push(Effect::TakeNext),
            ("transfer", Some(to), Some(topic)) => out.push(Effect::Transfer {
                topic,
                to: to.to_owned(),
            }),
            ("close", _, Some(topic)) => out.push(Effect::Close(topic)),
            ("open", desk, _) => out.push(Effect::OpenConsultation(
                desk.unwrap_or_default().to_owned(),
            )),
            ("resend", _, Some(_)) => {
                let failed = self.current().and_then(|c| {
                    c.lines
                        .iter()
                        .rev()
                        .find(|l| matches!(l.state, MessageState::Failed(_)))
                        .map(|l| l.id)
                });
                match failed {
                    Some(id) => out.push(Effect::Resend(id)),
                    None => self.notice = "nothing failed here".into(),
                }
            }
            ("refresh", _, _) => out.push(Effect::RefreshList),
            ("quit", _, _) => self.quit = true,
            ("transfer" | "close" | "resend", _, None) => {
                self.notice = "open a conversation first".into();
            }
            _ => {
                self.notice = "commands: /status online|busy|away|offline, /next, /transfer \
                               AGENT_ID, /close, /open [DESK], /resend, /refresh, /quit"
                    .into();
            }
        }
    }

    /// Opens the conversation `delta` places away in the list.
    fn select_by(&mut self, delta: isize, out: &mut Vec<Effect>) {
        if self.convs.is_empty() {
            return;
        }
        let n = self.convs.len() as isize;
        let at = self.open.map_or(0, |i| (i as isize + delta).rem_euclid(n));
        self.select(at as usize, out);
    }

    /// Opens conversation `i`: follow it, mark it read.
    fn select(&mut self, i: usize, out: &mut Vec<Effect>) {
        self.open = Some(i);
        self.follow(i, out);
        self.mark_read(out);
    }

    fn follow(&mut self, i: usize, out: &mut Vec<Effect>) {
        if let Some(c) = self.convs.get_mut(i)
            && !c.followed
        {
            c.followed = true;
            out.push(Effect::Follow {
                topic: c.topic.clone(),
                mark: 0,
                read: 0,
            });
        }
    }

    /// The open conversation is read up to its newest message.
    fn mark_read(&mut self, out: &mut Vec<Effect>) {
        if let Some(c) = self.open.and_then(|i| self.convs.get_mut(i)) {
            let last = c.last_seq();
            if last > c.read {
                c.read = last;
                out.push(Effect::MarkRead {
                    topic: c.topic.clone(),
                    seq: last,
                });
            }
        }
    }

    fn index(&self, topic: &str) -> Option<usize> {
        self.convs.iter().position(|c| c.topic == topic)
    }

    /// The conversation of `topic`, added (and followed) if new.
    fn conv(&mut self, topic: &str, out: &mut Vec<Effect>) -> usize {
        match self.index(topic) {
            Some(i) => i,
            None => {
                self.convs.push(Conv::new(topic));
                let i = self.convs.len() - 1;
                if self.convs.iter().filter(|c| c.followed).count() < FOLLOWED {
                    self.follow(i, out);
                }
                if self.open.is_none() {
                    self.select(i, out);
                }
                i
            }
        }
    }

    fn topic_event(&mut self, now: Instant, topic: &str, ev: TopicEvent, out: &mut Vec<Effect>) {
        let Some(i) = self.index(topic) else {
            return;
        };
        let is_open = self.open == Some(i);
        let me = self.me.clone();
        let c = &mut self.convs[i];
        match ev {
            TopicEvent::Added { message, history } => {
                let incoming = !message.outgoing;
                c.upsert(Line::of(&message));
                if history {
                    // Older messages go above: keep what the user looks at in place.
                    c.scroll += usize::from(c.scroll > 0);
                    if message.seq() == Some(1) {
                        c.complete = true;
                    }
                } else if incoming {
                    c.typing = None;
                    if c.scroll > 0 {
                        c.scroll += 1;
                    }
                }
                if message.seq() == Some(1) {
                    c.complete = true;
                }
                if is_open && incoming && !history {
                    self.mark_read(out);
                }
            }
            TopicEvent::Changed { id, state, seq } => {
                if let Some(l) = c.lines.iter_mut().find(|l| l.id == id) {
                    l.state = state;
                    if let Some(seq) = seq {
                        l.position = OrderKey::stored(seq);
                    }
                }
                c.lines.sort_by_key(|l| l.position);
            }
            TopicEvent::Receipt { from, read, seq } => {
                if from != me {
                    let target = if read {
                        MessageState::Read
                    } else {
                        MessageState::Delivered
                    };
                    for l in c.lines.iter_mut().filter(|l| l.outgoing) {
                        if l.seq().is_some_and(|s| s <= seq) && rank(l.state) < rank(target) {
                            l.state = target;
                        }
                    }
                }
            }
            TopicEvent::Typing { from } => {
                if from != me {
                    c.typing = Some((from, now + TYPING_SHOWN));
                }
            }
            TopicEvent::Unread { count } => c.unread = count,
            TopicEvent::Presence { src, what } => match what {
                PresWhat::On if src != me => c.online = true,
                PresWhat::Off if src != me => c.online = false,
                PresWhat::Gone => self.notice = format!("{topic}: the conversation ended"),
                _ => {}
            },
            TopicEvent::Refused { code } => {
                c.followed = false;
                self.notice = format!("{topic}: refused ({code})");
            }
            TopicEvent::Subscribed { .. } => {}
        }
    }

    fn client_event(&mut self, ev: ClientEvent, out: &mut Vec<Effect>) {
        match ev {
            ClientEvent::State(s) => self.conn = s,
            ClientEvent::Unread { topic, count, .. } => {
                if let Some(i) = self.index(&topic) {
                    self.convs[i].unread = count;
                }
            }
            ClientEvent::Presence { src, what, .. } => match what {
                PresWhat::Assigned => {
                    self.notice = format!("new consultation {src}");
                    self.conv(&src, out);
                    out.push(Effect::RefreshList);
                }
                PresWhat::Status(s) if src == self.me => self.status = Some(s),
                PresWhat::On | PresWhat::Off => {
                    if let Some(i) = self.index(&src) {
                        self.convs[i].online = what == PresWhat::On;
                    }
                }
                // News in a conversation the list does not show yet (a customer wrote
                // first, a conversation opened elsewhere): ask for the list now.
                PresWhat::Msg { .. } if self.index(&src).is_none() => {
                    out.push(Effect::RefreshList);
                }
                PresWhat::Gone => {
                    if let Some(i) = self.index(&src) {
                        self.notice = format!("{}: the conversation ended", self.convs[i].title);
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }

    fn listed(&mut self, list: Vec<Conversation>, out: &mut Vec<Effect>) {
        for item in list {
            let known = self.index(&item.topic).is_some();
            let i = match self.index(&item.topic) {
                Some(i) => i,
                None => {
                    self.convs.push(Conv::new(&item.topic));
                    self.convs.len() - 1
                }
            };
            let c = &mut self.convs[i];
            if !item.title.is_empty() {
                c.title = item.title.clone();
            }
            c.online = item.online;
            if !c.followed {
                c.unread = item.unread;
            }
            c.read = c.read.max(item.read);
            let followed = self.convs.iter().filter(|c| c.followed).count();
            if !known && followed < FOLLOWED {
                let c = &mut self.convs[i];
                c.followed = true;
                out.push(Effect::Follow {
                    topic: item.topic.clone(),
                    mark: item.latest.saturating_sub(CONTEXT).min(item.read),
                    read: item.read,
                });
            }
        }
        if self.open.is_none() && !self.convs.is_empty() {
            self.select(0, out);
        }
    }

    fn done(&mut self, o: Outcome, out: &mut Vec<Effect>) {
        match o {
            Outcome::Status(s) => {
                self.status = Some(s);
                self.notice = format!("status: {}", status_name(s));
            }
            Outcome::Opened(topic) => {
                let i = self.conv(&topic, out);
                self.select(i, out);
                self.notice = format!("conversation {topic} opened");
                out.push(Effect::RefreshList);
            }
            Outcome::History { topic, more } => {
                if let Some(i) = self.index(&topic) {
                    let c = &mut self.convs[i];
                    c.loading = false;
                    c.complete |= !more;
                }
            }
            Outcome::Notice(n) => self.notice = n,
            Outcome::Failed(why) => self.notice = why,
        }
    }
}

/// Orders the outgoing states that receipts raise.
fn rank(s: MessageState) -> u8 {
    match s {
        MessageState::Sent => 1,
        MessageState::Delivered => 2,
        MessageState::Read => 3,
        _ => 0,
    }
}

fn parse_status(s: &str) -> Option<AgentStatus> {
    match s {
        "online" => Some(AgentStatus::Online),
        "busy" => Some(AgentStatus::Busy),
        "away" => Some(AgentStatus::Away),
        "offline" => Some(AgentStatus::Offline),
        _ => None,
    }
}

/// An agent status as the chat writes it.
pub fn status_name(s: AgentStatus) -> &'static str {
    match s {
        AgentStatus::Online => "online",
        AgentStatus::Busy => "busy",
        AgentStatus::Away => "away",
        AgentStatus::Offline => "offline",
    }
}

/// The mark shown after an own message.
pub fn mark(state: MessageState) -> String {
    match state {
        MessageState::Queued | MessageState::Sending => "(sending)".into(),
        MessageState::Sent => "(sent)".into(),
        MessageState::Delivered => "(delivered)".into(),
        MessageState::Read => "(read)".into(),
        MessageState::Failed(FailReason::TimedOut) => "(failed: no answer; /resend)".into(),
        MessageState::Failed(FailReason::Refused { code }) => {
            format!("(failed: refused {code}; /resend)")
        }
        MessageState::Failed(FailReason::Cancelled) => "(cancelled)".into(),
        MessageState::Failed(_) => "(failed; /resend)".into(),
        MessageState::Received | MessageState::Arriving => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOB: &str = "usrBob";

    fn app_with_bob() -> (App, Vec<Effect>) {
        let mut app = App::new("alice", "usrAlice");
        let fx = app.handle(
            Instant::now(),
            Input::Conversations(vec![Conversation {
                topic: BOB.into(),
                title: "Bob".into(),
                latest: 50,
                read: 40,
                unread: 10,
                online: false,
            }]),
        );
        (app, fx)
    }

    fn snap(id: u8, position: OrderKey, outgoing: bool, state: MessageState) -> MessageSnapshot {
        MessageSnapshot {
            id: MsgId::from_bytes([id; 16]),
            topic: BOB.into(),
            position,
            state,
            outgoing,
            from: if outgoing { "usrAlice" } else { BOB }.into(),
            ts: 0,
            mime: String::new(),
            reply_to: None,
            content: format!("m{id}").into_bytes(),
        }
    }

    fn added(app: &mut App, m: MessageSnapshot, history: bool) -> Vec<Effect> {
        app.handle(
            Instant::now(),
            Input::Topic(
                BOB.into(),
                TopicEvent::Added {
                    message: m,
                    history,
                },
            ),
        )
    }

    fn typed(app: &mut App, text: &str) -> Vec<Effect> {
        let mut fx = Vec::new();
        for c in text.chars() {
            fx.extend(app.handle(Instant::now(), Input::Key(Key::Char(c))));
        }
        fx.extend(app.handle(Instant::now(), Input::Key(Key::Enter)));
        fx
    }

    #[test]
    fn a_listed_conversation_is_followed_from_its_read_mark_with_context_and_opened() {
        let (app, fx) = app_with_bob();
        assert_eq!(
            fx[0],
            Effect::Follow {
                topic: BOB.into(),
                mark: 30,
                read: 40
            },
            "unread 41..=50 plus 20 of context"
        );
        assert_eq!(app.open, Some(0));
        assert_eq!(app.convs[0].title, "Bob");
        assert_eq!(app.total_unread(), 10);
    }

    #[test]
    fn a_typed_line_is_published_and_typing_is_announced_but_commands_are_not() {
        let (mut app, _) = app_with_bob();
        let fx = typed(&mut app, "hi");
        assert_eq!(
            fx.iter()
                .filter(|e| **e == Effect::Typing(BOB.into()))
                .count(),
            2
        );
        assert_eq!(
            fx.last(),
            Some(&Effect::Publish {
                topic: BOB.into(),
                text: "hi".into()
            })
        );
        assert!(app.input.is_empty());
        let fx = typed(&mut app, "/status busy");
        assert_eq!(fx, vec![Effect::SetStatus(AgentStatus::Busy)]);
        assert_eq!(typed(&mut app, "/next"), vec![Effect::TakeNext]);
        assert_eq!(
            typed(&mut app, "/transfer usrCarol"),
            vec![Effect::Transfer {
                topic: BOB.into(),
                to: "usrCarol".into()
            }]
        );
        assert_eq!(typed(&mut app, "/close"), vec![Effect::Close(BOB.into())]);
        assert!(typed(&mut app, "/status sleepy").is_empty());
        assert!(app.notice.contains("online, busy"));
        assert!(
            !typed(&mut app, "   ")
                .iter()
                .any(|e| matches!(e, Effect::Publish { .. })),
            "blank lines are not sent"
        );
    }

    #[test]
    fn an_own_message_shows_at_once_then_moves_to_its_seq_and_rises_with_receipts() {
        let (mut app, _) = app_with_bob();
        added(
            &mut app,
            snap(1, OrderKey::stored(49), false, MessageState::Received),
            false,
        );
        let mine = snap(2, OrderKey::pending(49, 1), true, MessageState::Queued);
        added(&mut app, mine.clone(), false);
        added(
            &mut app,
            snap(3, OrderKey::stored(50), false, MessageState::Received),
            false,
        );
        let order = |app: &App| -> Vec<u8> {
            app.convs[0]
                .lines
                .iter()
                .map(|l| l.id.as_bytes()[0])
                .collect()
        };
        assert_eq!(order(&app), [1, 2, 3], "pending sorts after seq 49");
        assert_eq!(mark(app.convs[0].lines[1].state), "(sending)");
        app.handle(
            Instant::now(),
            Input::Topic(
                BOB.into(),
                TopicEvent::Changed {
                    id: mine.id,
                    state: MessageState::Sent,
                    seq: Some(51),
                },
            ),
        );
        assert_eq!(order(&app), [1, 3, 2], "stored at seq 51");
        assert_eq!(mark(app.convs[0].lines[2].state), "(sent)");
        let receipt = |read, seq| {
            Input::Topic(
                BOB.into(),
                TopicEvent::Receipt {
                    from: BOB.into(),
                    read,
                    seq,
                },
            )
        };
        app.handle(Instant::now(), receipt(false, 50));
        assert_eq!(app.convs[0].lines[2].state, MessageState::Sent, "below 51");
        app.handle(Instant::now(), receipt(false, 51));
        assert_eq!(mark(app.convs[0].lines[2].state), "(delivered)");
        app.handle(Instant::now(), receipt(true, 51));
        assert_eq!(mark(app.convs[0].lines[2].state), "(read)");
        app.handle(Instant::now(), receipt(false, 51));
        assert_eq!(
            app.convs[0].lines[2].state,
            MessageState::Read,
            "never lowered"
        );
    }

    #[test]
    fn incoming_messages_in_the_open_conversation_are_marked_read() {
        let (mut app, _) = app_with_bob();
        let fx = added(
            &mut app,
            snap(1, OrderKey::stored(50), false, MessageState::Received),
            false,
        );
        assert_eq!(
            fx,
            vec![Effect::MarkRead {
                topic: BOB.into(),
                seq: 50
            }]
        );
        let fx = added(
            &mut app,
            snap(2, OrderKey::stored(49), false, MessageState::Received),
            true,
        );
        assert!(fx.is_empty(), "history is not news");
    }

    #[test]
    fn typing_shows_for_a_while_and_goes_when_the_message_comes() {
        let (mut app, _) = app_with_bob();
        let t0 = Instant::now();
        let typing = Input::Topic(BOB.into(), TopicEvent::Typing { from: BOB.into() });
        app.handle(t0, typing.clone());
        assert!(app.convs[0].typing.is_some());
        app.handle(t0 + TYPING_SHOWN + Duration::from_millis(1), Input::Tick);
        assert!(app.convs[0].typing.is_none(), "expired");
        app.handle(t0, typing);
        added(
            &mut app,
            snap(1, OrderKey::stored(51), false, MessageState::Received),
            false,
        );
        assert!(app.convs[0].typing.is_none(), "the message arrived");
    }

    #[test]
    fn paging_up_to_the_oldest_message_loads_history_once_until_it_arrives() {
        let (mut app, _) = app_with_bob();
        app.rows = 5;
        for i in 0..8u8 {
            added(
                &mut app,
                snap(
                    i,
                    OrderKey::stored(43 + u64::from(i)),
                    false,
                    MessageState::Received,
                ),
                false,
            );
        }
        let up = |app: &mut App| app.handle(Instant::now(), Input::Key(Key::PageUp));
        assert_eq!(up(&mut app), vec![Effect::LoadHistory(BOB.into())]);
        assert!(up(&mut app).is_empty(), "one page at a time");
        app.handle(
            Instant::now(),
            Input::Done(Outcome::History {
                topic: BOB.into(),
                more: true,
            }),
        );
        assert_eq!(up(&mut app), vec![Effect::LoadHistory(BOB.into())]);
        app.handle(
            Instant::now(),
            Input::Done(Outcome::History {
                topic: BOB.into(),
                more: false,
            }),
        );
        assert!(up(&mut app).is_empty(), "the beginning is held");
        app.handle(Instant::now(), Input::Key(Key::PageDown));
        app.handle(Instant::now(), Input::Key(Key::PageDown));
        assert_eq!(app.convs[0].scroll, 0);
    }

    #[test]
    fn an_assigned_consultation_is_added_followed_and_the_status_tracked() {
        let mut app = App::new("alice", "usrAlice");
        let fx = app.handle(
            Instant::now(),
            Input::Client(ClientEvent::Presence {
                topic: "me".into(),
                src: "cnsX".into(),
                what: PresWhat::Assigned,
            }),
        );
        assert!(fx.contains(&Effect::Follow {
            topic: "cnsX".into(),
            mark: 0,
            read: 0
        }));
        assert!(fx.contains(&Effect::RefreshList));
        assert_eq!(app.current().map(|c| c.topic.as_str()), Some("cnsX"));
        assert_eq!(
            app.handle(Instant::now(), Input::Key(Key::F2)),
            vec![Effect::SetStatus(AgentStatus::Online)]
        );
        app.handle(
            Instant::now(),
            Input::Done(Outcome::Status(AgentStatus::Online)),
        );
        assert_eq!(
            app.handle(Instant::now(), Input::Key(Key::F2)),
            vec![Effect::SetStatus(AgentStatus::Busy)]
        );
        let fx = app.handle(Instant::now(), Input::Done(Outcome::Opened("cnsY".into())));
        assert_eq!(app.current().map(|c| c.topic.as_str()), Some("cnsY"));
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::Follow { topic, .. } if topic == "cnsY"))
        );
        // Up and Down walk the list.
        app.handle(Instant::now(), Input::Key(Key::Up));
        assert_eq!(app.current().map(|c| c.topic.as_str()), Some("cnsX"));
        app.handle(Instant::now(), Input::Key(Key::Up));
        assert_eq!(app.current().map(|c| c.topic.as_str()), Some("cnsY"));
    }

    #[test]
    fn news_in_a_conversation_not_listed_refreshes_the_list_at_once() {
        let (mut app, _) = app_with_bob();
        let news = |src: &str| {
            Input::Client(ClientEvent::Presence {
                topic: "me".into(),
                src: src.into(),
                what: PresWhat::Msg { seq: 3 },
            })
        };
        assert_eq!(
            app.handle(Instant::now(), news("cnsNew")),
            vec![Effect::RefreshList]
        );
        assert!(
            app.handle(Instant::now(), news(BOB)).is_empty(),
            "a listed conversation follows its own messages"
        );
    }

    #[test]
    fn a_failed_message_can_be_resent_with_its_id() {
        let (mut app, _) = app_with_bob();
        let m = snap(
            7,
            OrderKey::pending(50, 1),
            true,
            MessageState::Failed(FailReason::Refused { code: 422 }),
        );
        added(&mut app, m.clone(), false);
        assert_eq!(mark(m.state), "(failed: refused 422; /resend)");
        assert_eq!(typed(&mut app, "/resend"), vec![Effect::Resend(m.id)]);
    }
}
