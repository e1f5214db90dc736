//! Customer-service assignment: who serves which consultation. Pure decisions, no I/O and no
//! clock (time is passed in); the gateway applies the results (subscriptions, store, presence).
//!
//! The rules:
//! - An agent is *assignable* when their status is [`AgentStatus::Online`], at least one of
//!   their sessions is connected, and their load (active consultations) is below
//!   [`DeskConfig::max_load`].
//! - [`Desk::open`] hands a new consultation to the least-loaded assignable agent; ties go to the
//!   agent whose last assignment is oldest (then to the smaller user id, so runs replay). With
//!   nobody assignable it waits in one queue, oldest `opened_ms` first (all desks share it; the
//!   desk name is kept for the gateway, not used to route).
//! - Whenever an agent becomes assignable (a session comes up, status goes Online, a close or a
//!   transfer frees a slot) waiting customers are handed out at once, oldest first, and the
//!   assignments are returned. So, between calls, *a customer waits only while no agent is
//!   assignable* (after [`Desk::restore`] call [`Desk::dispatch`] if sessions already exist).
//! - Busy / Away / Offline agents and agents whose sessions all dropped keep their current
//!   consultations; they only get nothing new.
//! - [`Desk::take_next`] and [`Desk::transfer`] are explicit choices and may put an agent over
//!   `max_load`; automatic assignment never does.
//!
//! Costs: `open` scans the agents (O(agents)); queue operations are O(log waiting).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

pub use kefu_core::proto::AgentStatus;
use kefu_core::proto::Code;

use crate::store::{ConsultState, TopicKind, TopicRecord};

/// How many recently closed topics are remembered so that acting on them again says
/// [`DeskError::Closed`] rather than [`DeskError::UnknownTopic`].
const CLOSED_MEMORY: usize = 4096;

/// Desk settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeskConfig {
    /// Most consultations assigned automatically to one agent at a time (default 5). With 0,
    /// nobody is assigned automatically; agents must [`Desk::take_next`].
    pub max_load: u32,
}

impl Default for DeskConfig {
    fn default() -> Self {
        DeskConfig { max_load: 5 }
    }
}

/// An open (waiting or active) consultation as stored, for [`Desk::restore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenConsult {
    /// The consultation topic.
    pub topic: String,
    /// The customer's user id.
    pub customer: String,
    /// The desk it was opened at.
    pub desk: String,
    /// The assigned agent; `None` while waiting.
    pub agent: Option<String>,
    /// When it was opened, ms since the Unix epoch: the queue order.
    pub opened_ms: u64,
}

impl OpenConsult {
    /// The open consultation a stored topic holds, if it is a consultation that is not closed
    /// or deleted (what [`crate::store::Store::open_consults`] returns maps through this).
    pub fn from_record(record: &TopicRecord) -> Option<OpenConsult> {
        let consult = record.consult.as_ref()?;
        if record.kind != TopicKind::Consult
            || record.deleted
            || consult.state == ConsultState::Closed
        {
            return None;
        }
        Some(OpenConsult {
            topic: record.name.clone(),
            customer: consult.customer.clone(),
            desk: consult.desk.clone(),
            agent: match consult.state {
                ConsultState::Active => consult.agent.clone(),
                _ => None,
            },
            opened_ms: consult.opened_ms,
        })
    }
}

/// A consultation handed to an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The consultation topic.
    pub topic: String,
    /// The customer's user id.
    pub customer: String,
    /// The agent now serving it.
    pub agent: String,
}

/// A consultation moved between agents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The consultation topic.
    pub topic: String,
    /// The agent who had it.
    pub from: String,
    /// The agent who has it now (equal to `from` when it already was theirs: nothing moved).
    pub to: String,
    /// A waiting customer handed to `from`, whose load went down (added to the given API:
    /// without it the slot freed by a transfer would sit idle while customers wait).
    pub next: Option<Assignment>,
}

/// A consultation closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closed {
    /// The consultation topic.
    pub topic: String,
    /// The customer's user id.
    pub customer: String,
    /// The agent who served it; `None` if it was still waiting.
    pub agent: Option<String>,
    /// A waiting customer handed to that agent, whose load went down.
    pub next: Option<Assignment>,
}

/// Why a desk command was refused. [`DeskError::code`] gives the `ctrl` code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeskError {
    /// No open consultation has this topic name (never opened, or closed long ago). 404.
    #[error("no such consultation")]
    UnknownTopic,
    /// The consultation was closed recently; it cannot be transferred or closed again. 409.
    #[error("consultation already closed")]
    Closed,
    /// The consultation is still waiting for an agent, so there is nobody to transfer it from
    /// (a supervisor who wants it served sets an agent Online or has one take it). 409.
    #[error("consultation has no agent yet")]
    Waiting,
    /// The caller is neither the consultation's agent (or customer, for close) nor a
    /// supervisor. 403.
    #[error("not your consultation")]
    NotYours,
    /// The agent is Offline (take_next), or the transfer target is not Online/Busy with a
    /// connected session. 409.
    #[error("agent unavailable")]
    AgentUnavailable,
    /// take_next found no customer waiting. 404 rather than 204: a 2xx would read as "you got
    /// one" to clients that only look at the code class.
    #[error("no customer waiting")]
    NothingWaiting,
}

impl DeskError {
    /// The `ctrl` code this error is answered with.
    pub const fn code(&self) -> Code {
        match self {
            DeskError::UnknownTopic | DeskError::NothingWaiting => Code::NOT_FOUND,
            DeskError::Closed | DeskError::Waiting | DeskError::AgentUnavailable => Code::CONFLICT,
            DeskError::NotYours => Code::FORBIDDEN,
        }
    }
}

/// One agent's standing. An agent with status Offline, no session and no load is dropped.
#[derive(Clone, Debug)]
struct Agent {
    status: AgentStatus,
    sessions: u32,
    load: u32,
    /// Tick of the last assignment (0 = never): the tie-breaker, oldest first.
    last_assigned: u64,
}

impl Agent {
    const fn new() -> Agent {
        Agent {
            status: AgentStatus::Offline,
            sessions: 0,
            load: 0,
            last_assigned: 0,
        }
    }
}

/// Queue position: opened time, then arrival order among equal times.
type QueueKey = (u64, u64);

/// Where an open consultation stands.
#[derive(Clone, Debug)]
enum Slot {
    /// In the queue under this key.
    Waiting(QueueKey),
    /// Served by this agent.
    Active(String),
}

#[derive(Clone, Debug)]
struct Consult {
    customer: String,
    slot: Slot,
}

/// The desk: agents, open consultations and the waiting queue.
#[derive(Debug, Default)]
pub struct Desk {
    cfg: DeskConfig,
    agents: BTreeMap<String, Agent>,
    consults: HashMap<String, Consult>,
    queue: BTreeMap<QueueKey, String>,
    arrivals: u64,
    ticks: u64,
    closed: VecDeque<String>,
    closed_set: HashSet<String>,
}

impl Desk {
    /// An empty desk.
    pub fn new(cfg: DeskConfig) -> Desk {
        Desk {
            cfg,
            ..Desk::default()
        }
    }

    /// Rebuilds state on start from the store's open consultations (waiting ones queue in
    /// opened order, active ones count toward their agent's load). A topic already known is
    /// skipped. Nobody is assigned here: agents have no sessions yet; if they do, call
    /// [`Desk::dispatch`] afterwards.
    pub fn restore(&mut self, consults: impl IntoIterator<Item = OpenConsult>) {
        for c in consults {
            if self.consults.contains_key(&c.topic) {
                continue;
            }
            self.forget_closed(&c.topic);
            let slot = match c.agent {
                Some(agent) => {
                    self.agents
                        .entry(agent.clone())
                        .or_insert_with(Agent::new)
                        .load += 1;
                    Slot::Active(agent)
                }
                None => Slot::Waiting(self.enqueue(&c.topic, c.opened_ms)),
            };
            let customer = c.customer;
            self.consults.insert(c.topic, Consult { customer, slot });
        }
    }

    /// An agent's session connected. Sessions are counted: an agent with none is not assignable
    /// whatever their status. Returns the waiting customers handed out because the agent became
    /// assignable.
    pub fn session_up(&mut self, agent: &str) -> Vec<Assignment> {
        let a = self
            .agents
            .entry(agent.to_owned())
            .or_insert_with(Agent::new);
        a.sessions = a.sessions.saturating_add(1);
        self.dispatch_to(agent, usize::MAX)
    }

    /// An agent's session disconnected. Their consultations stay theirs (they may reconnect).
    pub fn session_down(&mut self, agent: &str) {
        if let Some(a) = self.agents.get_mut(agent) {
            a.sessions = a.sessions.saturating_sub(1);
        }
        self.gc(agent);
    }

    /// Sets an agent's status; going Online hands out waiting customers (returned). Other
    /// statuses keep current consultations and take nothing new.
    pub fn set_status(&mut self, agent: &str, status: AgentStatus) -> Vec<Assignment> {
        self.agents
            .entry(agent.to_owned())
            .or_insert_with(Agent::new)
            .status = status;
        if status == AgentStatus::Online {
            self.dispatch_to(agent, usize::MAX)
        } else {
            self.gc(agent);
            Vec::new()
        }
    }

    /// An agent's status; Offline if unknown.
    pub fn status(&self, agent: &str) -> AgentStatus {
        self.agents
            .get(agent)
            .map_or(AgentStatus::Offline, |a| a.status)
    }

    /// A customer opened consultation `topic` at `desk`: assigned at once to the least-loaded
    /// assignable agent (ties: longest since their last assignment), or queued (`None`).
    /// Opening a topic that is already open changes nothing and answers as it stands (its
    /// assignment, or `None` while it waits), so a retried open is harmless.
    pub fn open(
        &mut self,
        topic: &str,
        customer: &str,
        desk: &str,
        now_ms: u64,
    ) -> Option<Assignment> {
        // The desk name routes nothing yet (one shared queue); the gateway stores it.
        let _ = desk;
        if let Some(c) = self.consults.get(topic) {
            return match &c.slot {
                Slot::Active(agent) => Some(Assignment {
                    topic: topic.to_owned(),
                    customer: c.customer.clone(),
                    agent: agent.clone(),
                }),
                Slot::Waiting(_) => None,
            };
        }
        self.forget_closed(topic);
        let key = self.enqueue(topic, now_ms);
        self.consults.insert(
            topic.to_owned(),
            Consult {
                customer: customer.to_owned(),
                slot: Slot::Waiting(key),
            },
        );
        let agent = self.pick()?;
        self.queue.remove(&key);
        Some(self.assign(topic, &agent))
    }

    /// The agent takes the longest-waiting customer (any desk), regardless of `max_load` (an
    /// explicit choice), if the agent is not Offline.
    pub fn take_next(&mut self, agent: &str) -> Result<Assignment, DeskError> {
        if self.status(agent) == AgentStatus::Offline {
            return Err(DeskError::AgentUnavailable);
        }
        let (_, topic) = self.queue.pop_first().ok_or(DeskError::NothingWaiting)?;
        Ok(self.assign(&topic, agent))
    }

    /// Moves `topic` from its agent to `to`, who must be Online or Busy with a connected
    /// session (their load may then exceed `max_load`: an explicit choice). `by` must be the
    /// current agent, or a supervisor (`by_supervisor`). Transferring to the current agent is a
    /// no-op that succeeds. The freed slot may go to a waiting customer ([`Transfer::next`]).
    pub fn transfer(
        &mut self,
        topic: &str,
        by: &str,
        by_supervisor: bool,
        to: &str,
    ) -> Result<Transfer, DeskError> {
        let c = self.lookup(topic)?;
        let Slot::Active(from) = &c.slot else {
            return Err(DeskError::Waiting);
        };
        let from = from.clone();
        if by != from && !by_supervisor {
            return Err(DeskError::NotYours);
        }
        let available = self.agents.get(to).is_some_and(|a| {
            a.sessions > 0 && matches!(a.status, AgentStatus::Online | AgentStatus::Busy)
        });
        if !available {
            return Err(DeskError::AgentUnavailable);
        }
        if from == to {
            return Ok(Transfer {
                topic: topic.to_owned(),
                from,
                to: to.to_owned(),
                next: None,
            });
        }
        self.release(&from);
        self.assign(topic, to);
        let next = self.dispatch_to(&from, 1).pop();
        self.gc(&from);
        Ok(Transfer {
            topic: topic.to_owned(),
            from,
            to: to.to_owned(),
            next,
        })
    }

    /// Closes `topic` (by its customer, its agent or a supervisor); frees the agent's load and
    /// may hand a waiting customer to that agent ([`Closed::next`]).
    pub fn close(
        &mut self,
        topic: &str,
        by: &str,
        by_supervisor: bool,
    ) -> Result<Closed, DeskError> {
        let c = self.lookup(topic)?;
        let agent = match &c.slot {
            Slot::Active(a) => Some(a.as_str()),
            Slot::Waiting(_) => None,
        };
        if by != c.customer && agent != Some(by) && !by_supervisor {
            return Err(DeskError::NotYours);
        }
        let Some(c) = self.consults.remove(topic) else {
            return Err(DeskError::UnknownTopic); // just looked up; kept for no-panic
        };
        self.remember_closed(topic);
        let (agent, next) = match c.slot {
            Slot::Waiting(key) => {
                self.queue.remove(&key);
                (None, None)
            }
            Slot::Active(agent) => {
                self.release(&agent);
                let next = self.dispatch_to(&agent, 1).pop();
                self.gc(&agent);
                (Some(agent), next)
            }
        };
        Ok(Closed {
            topic: topic.to_owned(),
            customer: c.customer,
            agent,
            next,
        })
    }

    /// Hands waiting customers, oldest first, to assignable agents until one side runs out.
    /// Every other method already does this where needed; call it after [`Desk::restore`] if
    /// agents were already connected.
    pub fn dispatch(&mut self) -> Vec<Assignment> {
        let mut out = Vec::new();
        while !self.queue.is_empty() {
            let Some(agent) = self.pick() else { break };
            let Some((_, topic)) = self.queue.pop_first() else {
                break;
            };
            out.push(self.assign(&topic, &agent));
        }
        out
    }

    /// The agent serving `topic`; `None` if it waits or is not open.
    pub fn agent_of(&self, topic: &str) -> Option<&str> {
        match &self.consults.get(topic)?.slot {
            Slot::Active(agent) => Some(agent),
            Slot::Waiting(_) => None,
        }
    }

    /// The customer of open consultation `topic`.
    pub fn customer_of(&self, topic: &str) -> Option<&str> {
        self.consults.get(topic).map(|c| c.customer.as_str())
    }

    /// How many consultations `agent` is serving (0 if unknown).
    pub fn load(&self, agent: &str) -> u32 {
        self.agents.get(agent).map_or(0, |a| a.load)
    }

    /// Whether `open` could hand a consultation to `agent` now (Online, a session, room).
    pub fn is_assignable(&self, agent: &str) -> bool {
        self.agents.get(agent).is_some_and(|a| self.assignable(a))
    }

    /// How many customers wait for an agent.
    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    fn assignable(&self, a: &Agent) -> bool {
        a.status == AgentStatus::Online && a.sessions > 0 && a.load < self.cfg.max_load
    }

    /// The least-loaded assignable agent; ties to the oldest last assignment, then the name.
    fn pick(&self) -> Option<String> {
        self.agents
            .iter()
            .filter(|(_, a)| self.assignable(a))
            .min_by_key(|(_, a)| (a.load, a.last_assigned))
            .map(|(name, _)| name.clone())
    }

    /// Up to `limit` waiting customers to `agent` while the agent stays assignable.
    fn dispatch_to(&mut self, agent: &str, limit: usize) -> Vec<Assignment> {
        let mut out = Vec::new();
        while out.len() < limit && self.is_assignable(agent) {
            let Some((_, topic)) = self.queue.pop_first() else {
                break;
            };
            out.push(self.assign(&topic, agent));
        }
        out
    }

    /// Marks `topic` (already out of the queue) as served by `agent`.
    fn assign(&mut self, topic: &str, agent: &str) -> Assignment {
        self.ticks += 1;
        let a = self
            .agents
            .entry(agent.to_owned())
            .or_insert_with(Agent::new);
        a.load = a.load.saturating_add(1);
        a.last_assigned = self.ticks;
        let customer = match self.consults.get_mut(topic) {
            Some(c) => {
                c.slot = Slot::Active(agent.to_owned());
                c.customer.clone()
            }
            None => String::new(), // queue and consults move together; not reached
        };
        Assignment {
            topic: topic.to_owned(),
            customer,
            agent: agent.to_owned(),
        }
    }

    fn release(&mut self, agent: &str) {
        if let Some(a) = self.agents.get_mut(agent) {
            a.load = a.load.saturating_sub(1);
        }
    }

    fn enqueue(&mut self, topic: &str, opened_ms: u64) -> QueueKey {
        self.arrivals += 1;
        let key = (opened_ms, self.arrivals);
        self.queue.insert(key, topic.to_owned());
        key
    }

    fn lookup(&self, topic: &str) -> Result<&Consult, DeskError> {
        self.consults
            .get(topic)
            .ok_or(if self.closed_set.contains(topic) {
                DeskError::Closed
            } else {
                DeskError::UnknownTopic
            })
    }

    /// Drops an agent who holds nothing: Offline, no session, no load.
    fn gc(&mut self, agent: &str) {
        if self
            .agents
            .get(agent)
            .is_some_and(|a| a.status == AgentStatus::Offline && a.sessions == 0 && a.load == 0)
        {
            self.agents.remove(agent);
        }
    }

    fn remember_closed(&mut self, topic: &str) {
        if self.closed_set.insert(topic.to_owned()) {
            self.closed.push_back(topic.to_owned());
        }
        while self.closed.len() > CLOSED_MEMORY {
            if let Some(old) = self.closed.pop_front() {
                self.closed_set.remove(&old);
            }
        }
    }

    fn forget_closed(&mut self, topic: &str) {
        if self.closed_set.remove(topic) {
            self.closed.retain(|t| t != topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn desk(max_load: u32) -> Desk {
        Desk::new(DeskConfig { max_load })
    }

    /// An agent with a session and status Online.
    fn online(d: &mut Desk, agent: &str) -> Vec<Assignment> {
        let mut out = d.session_up(agent);
        out.extend(d.set_status(agent, AgentStatus::Online));
        out
    }

    fn agent_for(d: &mut Desk, topic: &str, now: u64) -> Option<String> {
        d.open(topic, &format!("cust-{topic}"), "", now)
            .map(|a| a.agent)
    }

    #[test]
    fn three_agents_share_the_load_evenly() {
        let mut d = desk(5);
        for a in ["ann", "bob", "cat"] {
            assert!(online(&mut d, a).is_empty());
        }
        for i in 0..9 {
            assert!(agent_for(&mut d, &format!("t{i}"), i).is_some());
        }
        for a in ["ann", "bob", "cat"] {
            assert_eq!(d.load(a), 3, "{a}");
        }
        assert_eq!(d.waiting(), 0);
    }

    #[test]
    fn ties_go_to_whoever_waited_longest_since_their_last_assignment() {
        let mut d = desk(5);
        online(&mut d, "ann");
        online(&mut d, "bob");
        assert_eq!(agent_for(&mut d, "t1", 1).as_deref(), Some("ann"));
        assert_eq!(agent_for(&mut d, "t2", 2).as_deref(), Some("bob"));
        d.close("t1", "ann", false).expect("ann closes her own");
        d.close("t2", "bob", false).expect("bob closes his own");
        // Both at load 0 again: ann was assigned longer ago.
        assert_eq!(agent_for(&mut d, "t3", 3).as_deref(), Some("ann"));
        assert_eq!(agent_for(&mut d, "t4", 4).as_deref(), Some("bob"));
    }

    #[test]
    fn nobody_online_queues_and_the_first_agent_online_gets_the_oldest_first() {
        let mut d = desk(2);
        assert_eq!(d.open("late", "c1", "", 300), None);
        assert_eq!(d.open("early", "c2", "", 100), None);
        assert_eq!(d.open("mid", "c3", "sales", 200), None);
        assert_eq!(d.waiting(), 3);
        assert_eq!(d.agent_of("early"), None);
        assert!(d.session_up("ann").is_empty(), "status still Offline");
        let got = d.set_status("ann", AgentStatus::Online);
        let topics: Vec<_> = got.iter().map(|a| a.topic.as_str()).collect();
        assert_eq!(topics, ["early", "mid"], "oldest first, up to max_load");
        assert_eq!(got[0].customer, "c2");
        assert_eq!(d.waiting(), 1);
        assert_eq!(d.load("ann"), 2);
    }

    #[test]
    fn an_online_agent_without_a_session_is_not_assigned() {
        let mut d = desk(5);
        assert!(d.set_status("ann", AgentStatus::Online).is_empty());
        assert_eq!(d.status("ann"), AgentStatus::Online);
        assert!(!d.is_assignable("ann"));
        assert_eq!(d.open("t1", "c", "", 1), None);
        let got = d.session_up("ann");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].agent, "ann");
        d.session_down("ann");
        assert_eq!(
            d.open("t2", "c", "", 2),
            None,
            "session gone: not assignable"
        );
        assert_eq!(d.agent_of("t1"), Some("ann"), "keeps what she had");
    }

    #[test]
    fn sessions_are_counted_so_one_of_two_dropping_keeps_the_agent_assignable() {
        let mut d = desk(5);
        online(&mut d, "ann");
        d.session_up("ann");
        d.session_down("ann");
        assert!(d.is_assignable("ann"));
        d.session_down("ann");
        assert!(!d.is_assignable("ann"));
        d.session_down("ann"); // more downs than ups: harmless
        assert!(d.session_up("ann").is_empty());
        assert!(d.is_assignable("ann"));
    }

    #[test]
    fn a_busy_agent_gets_nothing_new_but_keeps_current() {
        let mut d = desk(5);
        online(&mut d, "ann");
        online(&mut d, "bob");
        agent_for(&mut d, "t1", 1);
        assert_eq!(d.agent_of("t1"), Some("ann"));
        assert!(d.set_status("ann", AgentStatus::Busy).is_empty());
        assert_eq!(agent_for(&mut d, "t2", 2).as_deref(), Some("bob"));
        assert_eq!(agent_for(&mut d, "t3", 3).as_deref(), Some("bob"));
        assert_eq!(d.agent_of("t1"), Some("ann"));
        assert_eq!(d.load("ann"), 1);
        d.set_status("bob", AgentStatus::Away);
        assert_eq!(d.open("t4", "c", "", 4), None);
        let back = d.set_status("ann", AgentStatus::Online);
        assert_eq!(back.len(), 1);
        assert_eq!(
            (back[0].topic.as_str(), back[0].agent.as_str()),
            ("t4", "ann")
        );
    }

    #[test]
    fn take_next_serves_the_longest_waiting_even_over_max_load() {
        let mut d = desk(1);
        online(&mut d, "ann");
        agent_for(&mut d, "t0", 0);
        d.open("b", "cb", "x", 20);
        d.open("a", "ca", "y", 10);
        assert_eq!(d.take_next("ann").map(|a| a.topic), Ok("a".to_owned()));
        assert_eq!(d.load("ann"), 2, "over max_load by choice");
        assert_eq!(d.take_next("ann").map(|a| a.topic), Ok("b".to_owned()));
        assert_eq!(d.take_next("ann"), Err(DeskError::NothingWaiting));
    }

    #[test]
    fn take_next_is_refused_to_offline_agents_but_allowed_when_away() {
        let mut d = desk(5);
        d.open("t", "c", "", 1);
        assert_eq!(d.take_next("ghost"), Err(DeskError::AgentUnavailable));
        d.set_status("ann", AgentStatus::Away);
        assert_eq!(d.take_next("ann").map(|a| a.agent), Ok("ann".to_owned()));
    }

    #[test]
    fn transfer_moves_the_load_and_checks_who_asks_and_who_receives() {
        let mut d = desk(5);
        online(&mut d, "ann");
        online(&mut d, "bob");
        agent_for(&mut d, "t", 1);
        assert_eq!(d.agent_of("t"), Some("ann"));
        assert_eq!(
            d.transfer("t", "bob", false, "bob"),
            Err(DeskError::NotYours)
        );
        d.set_status("cat", AgentStatus::Online); // no session
        assert_eq!(
            d.transfer("t", "ann", false, "cat"),
            Err(DeskError::AgentUnavailable)
        );
        d.set_status("bob", AgentStatus::Away);
        assert_eq!(
            d.transfer("t", "ann", false, "bob"),
            Err(DeskError::AgentUnavailable)
        );
        d.set_status("bob", AgentStatus::Busy);
        let t = d
            .transfer("t", "ann", false, "bob")
            .expect("busy with a session may receive");
        assert_eq!(
            (t.from.as_str(), t.to.as_str(), t.next),
            ("ann", "bob", None)
        );
        assert_eq!((d.load("ann"), d.load("bob")), (0, 1));
        assert_eq!(d.agent_of("t"), Some("bob"));
        let back = d
            .transfer("t", "boss", true, "ann")
            .expect("a supervisor may move it");
        assert_eq!(back.from, "bob");
        assert_eq!((d.load("ann"), d.load("bob")), (1, 0));
        let same = d
            .transfer("t", "ann", false, "ann")
            .expect("to oneself is a no-op");
        assert_eq!(same.from, same.to);
        assert_eq!(d.load("ann"), 1);
    }

    #[test]
    fn transfer_of_unknown_waiting_or_closed_consultations_is_refused() {
        let mut d = desk(5);
        assert_eq!(
            d.transfer("nope", "a", true, "b"),
            Err(DeskError::UnknownTopic)
        );
        d.open("w", "c", "", 1);
        assert_eq!(d.transfer("w", "a", true, "b"), Err(DeskError::Waiting));
        d.close("w", "c", false).expect("the customer closes");
        assert_eq!(d.transfer("w", "a", true, "b"), Err(DeskError::Closed));
        assert_eq!(d.close("w", "c", false).map(|_| ()), Err(DeskError::Closed));
    }

    #[test]
    fn a_transfer_frees_a_slot_that_goes_to_the_oldest_waiting_customer() {
        let mut d = desk(1);
        online(&mut d, "ann");
        online(&mut d, "bob");
        agent_for(&mut d, "t1", 1);
        d.set_status("bob", AgentStatus::Busy);
        d.open("w", "cw", "", 2);
        assert_eq!(d.waiting(), 1);
        let t = d.transfer("t1", "ann", false, "bob").expect("transfer");
        let next = t
            .next
            .expect("ann's freed slot serves the waiting customer");
        assert_eq!((next.topic.as_str(), next.agent.as_str()), ("w", "ann"));
        assert_eq!(d.waiting(), 0);
    }

    #[test]
    fn close_frees_the_load_and_hands_over_the_next_waiting_customer() {
        let mut d = desk(1);
        online(&mut d, "ann");
        agent_for(&mut d, "t1", 1);
        d.open("t2", "c2", "", 2);
        d.open("t3", "c3", "", 3);
        assert_eq!(
            d.close("t1", "stranger", false).map(|_| ()),
            Err(DeskError::NotYours)
        );
        let c = d
            .close("t1", "cust-t1", false)
            .expect("the customer closes");
        assert_eq!(c.agent.as_deref(), Some("ann"));
        assert_eq!(c.customer, "cust-t1");
        let next = c.next.expect("the oldest waiting one");
        assert_eq!((next.topic.as_str(), next.customer.as_str()), ("t2", "c2"));
        assert_eq!(d.load("ann"), 1);
        assert_eq!(d.waiting(), 1);
        assert_eq!(d.agent_of("t1"), None);
        let w = d
            .close("t3", "boss", true)
            .expect("a supervisor closes a waiting one");
        assert_eq!((w.agent, w.next), (None, None));
        assert_eq!(d.waiting(), 0);
        assert_eq!(
            d.close("zzz", "boss", true).map(|_| ()),
            Err(DeskError::UnknownTopic)
        );
    }

    #[test]
    fn restore_counts_active_loads_and_queues_waiting_in_opened_order() {
        let mut d = desk(2);
        let oc = |topic: &str, agent: Option<&str>, opened_ms| OpenConsult {
            topic: topic.into(),
            customer: format!("c-{topic}"),
            desk: String::new(),
            agent: agent.map(Into::into),
            opened_ms,
        };
        d.restore([
            oc("a1", Some("ann"), 5),
            oc("w2", None, 30),
            oc("w1", None, 10),
            oc("a2", Some("ann"), 6),
            oc("a1", Some("bob"), 7), // duplicate topic: skipped
        ]);
        assert_eq!(d.load("ann"), 2);
        assert_eq!(d.load("bob"), 0);
        assert_eq!(d.waiting(), 2);
        assert_eq!(d.status("ann"), AgentStatus::Offline);
        assert_eq!(d.customer_of("a2"), Some("c-a2"));
        assert!(online(&mut d, "ann").is_empty(), "ann is full");
        let bob = online(&mut d, "bob");
        let topics: Vec<_> = bob.iter().map(|a| a.topic.as_str()).collect();
        assert_eq!(topics, ["w1", "w2"]);
        let c = d
            .close("a1", "ann", false)
            .expect("restored consults can be closed");
        assert_eq!(c.next, None);
    }

    #[test]
    fn dispatch_after_restore_serves_agents_already_connected() {
        let mut d = desk(5);
        online(&mut d, "ann");
        d.restore([OpenConsult {
            topic: "w".into(),
            customer: "c".into(),
            desk: String::new(),
            agent: None,
            opened_ms: 1,
        }]);
        assert_eq!(d.waiting(), 1);
        let got = d.dispatch();
        assert_eq!(got.len(), 1);
        assert_eq!(d.agent_of("w"), Some("ann"));
    }

    #[test]
    fn a_repeated_open_changes_nothing() {
        let mut d = desk(5);
        assert_eq!(d.open("w", "c", "", 1), None);
        assert_eq!(d.open("w", "c", "", 2), None);
        assert_eq!(d.waiting(), 1);
        online(&mut d, "ann");
        let again = d
            .open("w", "c", "", 3)
            .expect("answers with its assignment");
        assert_eq!(again.agent, "ann");
        assert_eq!(d.load("ann"), 1);
    }

    #[test]
    fn a_zero_max_load_assigns_nobody_automatically() {
        let mut d = desk(0);
        online(&mut d, "ann");
        assert_eq!(d.open("t", "c", "", 1), None);
        assert!(d.take_next("ann").is_ok());
    }

    #[test]
    fn errors_map_to_ctrl_codes() {
        assert_eq!(DeskError::UnknownTopic.code(), Code::NOT_FOUND);
        assert_eq!(DeskError::NothingWaiting.code(), Code::NOT_FOUND);
        assert_eq!(DeskError::NotYours.code(), Code::FORBIDDEN);
        assert_eq!(DeskError::AgentUnavailable.code(), Code::CONFLICT);
        assert_eq!(DeskError::Waiting.code(), Code::CONFLICT);
        assert_eq!(DeskError::Closed.code(), Code::CONFLICT);
    }

    #[test]
    fn store_records_become_open_consults_unless_closed() {
        use crate::store::Consult as Stored;
        let mut rec = TopicRecord {
            name: "t".into(),
            kind: TopicKind::Consult,
            title: String::new(),
            owner: "c".into(),
            created_ms: 1,
            latest: 0,
            deleted: false,
            consult: Some(Stored {
                customer: "c".into(),
                agent: Some("ann".into()),
                desk: "d".into(),
                state: ConsultState::Active,
                opened_ms: 7,
            }),
        };
        let oc = OpenConsult::from_record(&rec).expect("active");
        assert_eq!((oc.agent.as_deref(), oc.opened_ms), (Some("ann"), 7));
        if let Some(c) = rec.consult.as_mut() {
            c.state = ConsultState::Closed;
        }
        assert_eq!(OpenConsult::from_record(&rec), None);
        rec.kind = TopicKind::Group;
        assert_eq!(OpenConsult::from_record(&rec), None);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Up(usize),
        Down(usize),
        Status(usize, u8),
        Open(usize),
        TakeNext(usize),
        Transfer(usize, usize, bool, usize),
        Close(usize, usize, bool),
    }

    const AGENTS: [&str; 4] = ["a0", "a1", "a2", "a3"];

    fn op() -> impl Strategy<Value = Op> {
        let a = || 0..AGENTS.len();
        prop_oneof![
            a().prop_map(Op::Up),
            a().prop_map(Op::Down),
            (a(), 0u8..4).prop_map(|(a, s)| Op::Status(a, s)),
            (0usize..12).prop_map(Op::Open),
            a().prop_map(Op::TakeNext),
            (0usize..12, a(), any::<bool>(), a())
                .prop_map(|(t, b, s, to)| Op::Transfer(t, b, s, to)),
            (0usize..12, a(), any::<bool>()).prop_map(|(t, b, s)| Op::Close(t, b, s)),
        ]
    }

    proptest! {
        #[test]
        fn loads_match_active_consults_and_automatic_assignment_respects_max_load(
            max_load in 0u32..4,
            ops in proptest::collection::vec(op(), 1..120),
        ) {
            let mut d = desk(max_load);
            for (now, op) in ops.into_iter().enumerate() {
                let mut auto: Vec<Assignment> = Vec::new();
                match op {
                    Op::Up(a) => auto = d.session_up(AGENTS[a]),
                    Op::Down(a) => d.session_down(AGENTS[a]),
                    Op::Status(a, s) => {
                        let s = [AgentStatus::Online, AgentStatus::Busy, AgentStatus::Away, AgentStatus::Offline][usize::from(s)];
                        auto = d.set_status(AGENTS[a], s);
                    }
                    Op::Open(t) => {
                        let topic = format!("t{t}");
                        // A repeated open answers with the old assignment: not a new one.
                        let new = d.customer_of(&topic).is_none();
                        let got = d.open(&topic, "c", "", now as u64);
                        if new {
                            auto.extend(got);
                        }
                    }
                    Op::TakeNext(a) => { let _ = d.take_next(AGENTS[a]); }
                    Op::Transfer(t, by, sup, to) => {
                        if let Ok(tr) = d.transfer(&format!("t{t}"), AGENTS[by], sup, AGENTS[to]) {
                            auto.extend(tr.next);
                        }
                    }
                    Op::Close(t, by, sup) => {
                        if let Ok(c) = d.close(&format!("t{t}"), AGENTS[by], sup) {
                            auto.extend(c.next);
                        }
                    }
                }
                for a in &auto {
                    prop_assert!(d.load(&a.agent) <= max_load, "auto-assigned over max_load");
                }
                let mut waiting = 0;
                for agent in AGENTS {
                    let active = (0..12).filter(|t| d.agent_of(&format!("t{t}")) == Some(agent)).count();
                    prop_assert_eq!(d.load(agent) as usize, active);
                }
                for t in 0..12 {
                    let topic = format!("t{t}");
                    if d.customer_of(&topic).is_some() && d.agent_of(&topic).is_none() {
                        waiting += 1;
                    }
                }
                prop_assert_eq!(d.waiting(), waiting);
                if d.waiting() > 0 {
                    prop_assert!(AGENTS.iter().all(|a| !d.is_assignable(a)), "a customer waits while an agent is free");
                }
            }
        }
    }
}
