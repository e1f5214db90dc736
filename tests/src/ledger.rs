//! The ledger of a scenario: what every sender published, which messages the gateway
//! acknowledged (with their seq) and which the sender was told failed; what every receiver was
//! handed. [`Ledger::check`] turns it into [`Totals`] and [`Ledger::assert_clean`] fails the
//! test on the first broken promise:
//!
//! - every acknowledged message reaches each of its receivers exactly once, with the seq it
//!   was acknowledged with, in seq order;
//! - no receiver is handed the same message twice, nor one nobody sent;
//! - every message a live sender made ends acknowledged or failed (a give-up is reported);
//!   only messages of a sender that was killed may stay unknown (delivered at most once);
//! - the stored history holds every acknowledged message at its seq, gapless, once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Mutex;

use kefu_core::id::MsgId;

/// Where one message stands on the sender's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Published, no answer yet.
    Pending,
    /// Acknowledged by the gateway with this seq.
    Acked(u64),
    /// The sender was told it failed.
    Failed,
    /// Its sender was killed before it knew: delivered at most once, not required.
    Abandoned,
}

#[derive(Debug)]
struct Sent {
    /// The conversation (the same label on both sides).
    conv: String,
    /// The receiver stream that must get it.
    to: String,
    fate: Fate,
}

#[derive(Debug, Default)]
struct Inner {
    sent: HashMap<MsgId, Sent>,
    /// Receiver stream → id → seq handed over.
    delivered: HashMap<String, HashMap<MsgId, u64>>,
    /// Receiver stream → last seq handed over.
    last_seq: HashMap<String, u64>,
    duplicates: u64,
    deliveries: u64,
    problems: Vec<String>,
    closed: bool,
    /// Deliveries of ids not (yet) known as sent: several processes' records are merged
    /// here, so a receiver's line may come before its sender's. Settled by [`Ledger::sent`].
    orphans: HashMap<MsgId, String>,
}

/// The shared record of one scenario (cheap to share behind an `Arc`).
#[derive(Debug, Default)]
pub struct Ledger {
    inner: Mutex<Inner>,
    /// Also print every entry as a line (a child process's ledger, read by its parent).
    echo: bool,
}

/// A scenario's totals, printed by every suite.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Messages published.
    pub sent: u64,
    /// Acknowledged by the gateway.
    pub acked: u64,
    /// Reported failed to their sender.
    pub failed: u64,
    /// Left unknown because their sender was killed.
    pub abandoned: u64,
    /// Neither acknowledged nor failed (must be 0 at the end).
    pub pending: u64,
    /// Handed to a receiver (first time).
    pub delivered: u64,
    /// Handed to a receiver again (must be 0).
    pub duplicates: u64,
    /// Acknowledged but never handed to their receiver (must be 0).
    pub lost: u64,
    /// Broken promises found (order, seq mismatch, unknown ids, history); must be 0.
    pub problems: u64,
}

impl fmt::Display for Totals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent {} acknowledged {} failed {} abandoned {} pending {} delivered {} duplicates {} lost {} problems {}",
            self.sent,
            self.acked,
            self.failed,
            self.abandoned,
            self.pending,
            self.delivered,
            self.duplicates,
            self.lost,
            self.problems
        )
    }
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// An empty ledger that also prints every entry on stdout as an `E2E ...` line, which
    /// [`Ledger::apply_line`] replays into another ledger (a killed child's record survives in
    /// its parent).
    pub fn echoing() -> Ledger {
        Ledger {
            echo: true,
            ..Ledger::default()
        }
    }

    /// Replays one line printed by an echoing ledger; false if it is not such a line (e.g. cut
    /// short by a kill).
    pub fn apply_line(&self, line: &str) -> bool {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let id = |s: &str| MsgId::parse_hex(s).ok();
        let seq = |s: &str| s.parse::<u64>().ok();
        match parts.as_slice() {
            ["E2E", "sent", i, conv, to] => id(i).map(|i| self.sent(i, conv, to)).is_some(),
            ["E2E", "acked", i, s] => match (id(i), seq(s)) {
                (Some(i), Some(s)) => {
                    self.acked(i, s);
                    true
                }
                _ => false,
            },
            ["E2E", "failed", i] => id(i).map(|i| self.failed(i)).is_some(),
            ["E2E", "got", to, i, s] => match (id(i), seq(s)) {
                (Some(i), Some(s)) => {
                    self.delivered(to, i, s);
                    true
                }
                _ => false,
            },
            _ => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A sender published `id` in conversation `conv`, for receiver stream `to`.
    pub fn sent(&self, id: MsgId, conv: &str, to: &str) {
        if self.echo {
            println!("E2E sent {} {conv} {to}", hex(&id));
        }
        let mut g = self.lock();
        let fresh = Sent {
            conv: conv.to_owned(),
            to: to.to_owned(),
            fate: Fate::Pending,
        };
        if g.sent.insert(id, fresh).is_some() {
            g.problems
                .push(format!("message id {} made twice", hex(&id)));
        }
        if let Some(got) = g.orphans.remove(&id)
            && got != to
        {
            g.problems
                .push(format!("{got} got {} meant for {to}", hex(&id)));
        }
    }

    /// The gateway acknowledged `id` with `seq`.
    pub fn acked(&self, id: MsgId, seq: u64) {
        if self.echo {
            println!("E2E acked {} {seq}", hex(&id));
        }
        let mut g = self.lock();
        let problem = match g.sent.get_mut(&id) {
            None => Some(format!("ack of unknown id {}", hex(&id))),
            Some(s) => match s.fate {
                Fate::Acked(old) if old != seq => Some(format!(
                    "{} acknowledged with seq {old}, then {seq}",
                    hex(&id)
                )),
                Fate::Failed => Some(format!("{} acknowledged after it failed", hex(&id))),
                _ => {
                    s.fate = Fate::Acked(seq);
                    let to = s.to.clone();
                    match g.delivered.get(&to).and_then(|d| d.get(&id)) {
                        Some(got) if *got != seq => Some(format!(
                            "{to} got {} at seq {got}, acknowledged at {seq}",
                            hex(&id)
                        )),
                        _ => None,
                    }
                }
            },
        };
        g.problems.extend(problem);
    }

    /// The sender was told `id` failed.
    pub fn failed(&self, id: MsgId) {
        if self.echo {
            println!("E2E failed {}", hex(&id));
        }
        let mut g = self.lock();
        let problem = match g.sent.get_mut(&id) {
            None => Some(format!("failure of unknown id {}", hex(&id))),
            Some(s) => match s.fate {
                Fate::Acked(seq) => Some(format!("{} failed after ack at {seq}", hex(&id))),
                _ => {
                    s.fate = Fate::Failed;
                    None
                }
            },
        };
        g.problems.extend(problem);
    }

    /// The sender of these still-pending messages was killed: they may or may not arrive.
    pub fn abandon_pending(&self, ids: impl IntoIterator<Item = MsgId>) {
        let mut g = self.lock();
        for id in ids {
            if let Some(s) = g.sent.get_mut(&id)
                && s.fate == Fate::Pending
            {
                s.fate = Fate::Abandoned;
            }
        }
    }

    /// Every pending message whose receiver stream is `to` and conversation `conv`: what a
    /// killed sender in `conv` left behind (see [`Ledger::abandon_pending`]).
    pub fn pending_in(&self, conv: &str, to: &str) -> Vec<MsgId> {
        self.lock()
            .sent
            .iter()
            .filter(|(_, s)| s.fate == Fate::Pending && s.conv == conv && s.to == to)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Receiver stream `to` was handed `id` at `seq`.
    pub fn delivered(&self, to: &str, id: MsgId, seq: u64) {
        if self.echo {
            println!("E2E got {to} {} {seq}", hex(&id));
        }
        let mut g = self.lock();
        let g = &mut *g;
        let expected = g.sent.get(&id).map(|s| (s.to.clone(), s.fate));
        let mut problems = Vec::new();
        match &expected {
            None => {
                g.orphans.insert(id, to.to_owned());
            }
            Some((want, _)) if want != to => {
                problems.push(format!("{to} got {} meant for {want}", hex(&id)))
            }
            Some((_, Fate::Acked(acked))) if *acked != seq => problems.push(format!(
                "{to} got {} at seq {seq}, acknowledged at {acked}",
                hex(&id)
            )),
            _ => {}
        }
        let seen = g.delivered.entry(to.to_owned()).or_default();
        if seen.insert(id, seq).is_some() {
            g.duplicates += 1;
            problems.push(format!("{to} got {} (seq {seq}) twice", hex(&id)));
        } else {
            g.deliveries += 1;
        }
        let last = g.last_seq.entry(to.to_owned()).or_insert(0);
        if seq <= *last {
            problems.push(format!("{to} got seq {seq} after seq {last}"));
        }
        *last = (*last).max(seq);
        g.problems.extend(problems);
    }

    /// The highest seq receiver stream `to` was handed (its mark: resume from here).
    pub fn mark(&self, to: &str) -> u64 {
        self.lock().last_seq.get(to).copied().unwrap_or(0)
    }

    /// Winds the scenario down: peers make no new messages from now on.
    pub fn close_books(&self) {
        self.lock().closed = true;
    }

    /// Whether [`Ledger::close_books`] was called.
    pub fn books_closed(&self) -> bool {
        self.lock().closed
    }

    /// Messages made whose receiver stream is `to` (what `to`'s peer sent).
    pub fn sent_to(&self, to: &str) -> usize {
        self.lock().sent.values().filter(|s| s.to == to).count()
    }

    /// Whether every acknowledged message has reached its receiver and nothing is pending.
    pub fn settled(&self) -> bool {
        let g = self.lock();
        g.sent.iter().all(|(id, s)| match s.fate {
            Fate::Pending => false,
            Fate::Acked(_) => g.delivered.get(&s.to).is_some_and(|d| d.contains_key(id)),
            Fate::Failed | Fate::Abandoned => true,
        })
    }

    /// Messages published and not yet answered.
    pub fn pending(&self) -> usize {
        let g = self.lock();
        g.sent.values().filter(|s| s.fate == Fate::Pending).count()
    }

    /// Acknowledged messages so far.
    pub fn acked_count(&self) -> usize {
        let g = self.lock();
        g.sent
            .values()
            .filter(|s| matches!(s.fate, Fate::Acked(_)))
            .count()
    }

    /// Compares the stored history of conversation `conv` (every (id, seq) a `get data` returned,
    /// in the order returned, `latest` = the topic's latest seq) with the ledger.
    pub fn check_history(&self, conv: &str, history: &[(MsgId, u64)], latest: u64) {
        let mut g = self.lock();
        let mut problems = Vec::new();
        let seqs: Vec<u64> = history.iter().map(|(_, s)| *s).collect();
        let want: Vec<u64> = (1..=latest).collect();
        if seqs != want {
            problems.push(format!(
                "{conv}: history seqs are not 1..={latest} in order ({} entries)",
                seqs.len()
            ));
        }
        let mut ids = HashSet::new();
        let mut at: BTreeMap<MsgId, u64> = BTreeMap::new();
        for (id, seq) in history {
            if !ids.insert(*id) {
                problems.push(format!("{conv}: {} stored twice", hex(id)));
            }
            at.insert(*id, *seq);
        }
        for (id, s) in g.sent.iter().filter(|(_, s)| s.conv == conv) {
            if let Fate::Acked(seq) = s.fate {
                match at.get(id) {
                    Some(stored) if *stored == seq => {}
                    Some(stored) => problems.push(format!(
                        "{conv}: {} acknowledged at {seq}, stored at {stored}",
                        hex(id)
                    )),
                    None => problems.push(format!(
                        "{conv}: {} acknowledged at {seq}, not stored",
                        hex(id)
                    )),
                }
            }
        }
        g.problems.extend(problems);
    }

    /// Records a problem found outside the ledger (e.g. a wrong error code).
    pub fn problem(&self, what: String) {
        self.lock().problems.push(what);
    }

    /// The totals as they stand.
    pub fn check(&self) -> Totals {
        let g = self.lock();
        let mut t = Totals {
            sent: g.sent.len() as u64,
            delivered: g.deliveries,
            duplicates: g.duplicates,
            problems: (g.problems.len() + g.orphans.len()) as u64,
            ..Totals::default()
        };
        for (id, s) in &g.sent {
            match s.fate {
                Fate::Pending => t.pending += 1,
                Fate::Failed => t.failed += 1,
                Fate::Abandoned => t.abandoned += 1,
                Fate::Acked(_) => {
                    t.acked += 1;
                    if !g.delivered.get(&s.to).is_some_and(|d| d.contains_key(id)) {
                        t.lost += 1;
                    }
                }
            }
        }
        t
    }

    /// Prints the totals under `scenario` and fails the test if any promise was broken.
    pub fn assert_clean(&self, scenario: &str) -> Totals {
        let t = self.check();
        println!("[{scenario}] {t}");
        let g = self.lock();
        let mut report: Vec<String> = g.problems.iter().take(20).cloned().collect();
        report.extend(
            g.orphans
                .iter()
                .take(10)
                .map(|(id, to)| format!("{to} got {} that nobody sent", hex(id))),
        );
        if t.lost > 0 {
            let lost: Vec<String> = g
                .sent
                .iter()
                .filter(|(id, s)| {
                    matches!(s.fate, Fate::Acked(_))
                        && !g.delivered.get(&s.to).is_some_and(|d| d.contains_key(*id))
                })
                .take(10)
                .map(|(id, s)| format!("lost: {} to {} ({:?})", hex(id), s.to, s.fate))
                .collect();
            report.extend(lost);
        }
        assert!(
            t.problems == 0 && t.lost == 0 && t.pending == 0 && t.duplicates == 0,
            "[{scenario}] broken promises: {t}\n{}",
            report.join("\n")
        );
        t
    }
}

/// A message id as text.
pub fn hex(id: &MsgId) -> String {
    String::from_utf8_lossy(&id.to_hex()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> MsgId {
        MsgId::from_bytes([n; 16])
    }

    #[test]
    fn a_clean_exchange_balances() {
        let l = Ledger::new();
        l.sent(id(1), "c", "bob");
        l.sent(id(2), "c", "bob");
        l.acked(id(1), 1);
        l.failed(id(2));
        l.delivered("bob", id(1), 1);
        assert!(l.settled());
        l.check_history("c", &[(id(1), 1)], 1);
        let t = l.assert_clean("unit");
        assert_eq!((t.sent, t.acked, t.failed, t.delivered), (2, 1, 1, 1));
    }

    #[test]
    fn a_duplicate_a_loss_and_a_reorder_are_caught() {
        let l = Ledger::new();
        for n in 1..=3 {
            l.sent(id(n), "c", "bob");
            l.acked(id(n), u64::from(n));
        }
        l.delivered("bob", id(2), 2);
        l.delivered("bob", id(1), 1);
        l.delivered("bob", id(2), 2);
        let t = l.check();
        assert_eq!(t.duplicates, 1);
        assert_eq!(t.lost, 1);
        assert!(t.problems >= 2, "reorder and duplicate: {t}");
        assert!(!l.settled());
    }

    #[test]
    fn a_delivery_recorded_before_its_send_is_matched_later() {
        let l = Ledger::new();
        l.delivered("bob", id(5), 1);
        assert_eq!(l.check().problems, 1, "unknown for now");
        l.sent(id(5), "c", "bob");
        l.acked(id(5), 2);
        let t = l.check();
        assert_eq!(t.problems, 1, "matched, but at the wrong seq: {t}");
        let l = Ledger::new();
        l.delivered("bob", id(5), 1);
        l.sent(id(5), "c", "bob");
        l.acked(id(5), 1);
        assert_eq!(l.check().problems, 0);
    }

    #[test]
    fn history_must_hold_every_acknowledged_message_at_its_seq() {
        let l = Ledger::new();
        l.sent(id(1), "c", "bob");
        l.acked(id(1), 2);
        l.check_history("c", &[(id(9), 1), (id(1), 3)], 2);
        assert!(l.check().problems >= 2);
    }

    #[test]
    fn an_echoed_record_replays_line_by_line() {
        let l = Ledger::new();
        let a = hex(&id(7));
        assert!(l.apply_line(&format!("E2E sent {a} c bob")));
        assert!(l.apply_line(&format!("E2E acked {a} 4")));
        assert!(l.apply_line(&format!("E2E got bob {a} 4")));
        assert!(
            !l.apply_line("E2E got bob 01"),
            "a line cut short is skipped"
        );
        let t = l.check();
        assert_eq!((t.sent, t.acked, t.delivered, t.problems), (1, 1, 1, 0));
    }
}
