//! Liveness of one connection: send a ping when a direction has been quiet for a while, and
//! declare the peer dead when nothing at all was received for longer.
//!
//! Inputs are [`Keepalive::on_send`] and [`Keepalive::on_recv`] (any bytes count); the output is
//! [`Keepalive::poll`], called at (or after) [`Keepalive::poll_timeout`] and after inputs. Time
//! only moves forward: never pass an earlier `now` after a later one.

use crate::time::{Duration, Instant};

/// Tuning of a [`Keepalive`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct KeepaliveConfig {
    /// Send a ping when nothing was sent or received this long (default 25 s).
    pub interval: Duration,
    /// The peer is dead when nothing was received this long (default 60 s).
    pub timeout: Duration,
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        KeepaliveConfig {
            interval: Duration::from_secs(25),
            timeout: Duration::from_secs(60),
        }
    }
}

/// What the connection must do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum KeepaliveAction {
    /// Nothing to do.
    Idle,
    /// Send a ping now (already recorded as a send).
    SendPing,
    /// Nothing was received for `timeout`: close the connection and reconnect.
    Dead,
}

/// Keepalive timers of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Keepalive {
    last_send: Instant,
    last_recv: Instant,
    ping_sent_at: Option<Instant>,
}

impl Keepalive {
    /// A fresh connection, established at `now`.
    pub const fn new(now: Instant) -> Self {
        Keepalive {
            last_send: now,
            last_recv: now,
            ping_sent_at: None,
        }
    }

    /// Something was sent at `now`.
    pub fn on_send(&mut self, now: Instant) {
        self.last_send = self.last_send.max(now);
    }

    /// Some bytes were received at `now`: clears the outstanding ping.
    pub fn on_recv(&mut self, now: Instant) {
        self.last_recv = self.last_recv.max(now);
        self.ping_sent_at = None;
    }

    /// When the outstanding ping was sent, if one is.
    pub fn ping_sent_at(&self) -> Option<Instant> {
        self.ping_sent_at
    }

    /// Dead if now - last_recv >= timeout; SendPing if now - min(last_send, last_recv) >= interval
    /// and no ping outstanding since the last receive (a ping sent is recorded here: counts as a send);
    /// Idle otherwise.
    pub fn poll(&mut self, now: Instant, cfg: &KeepaliveConfig) -> KeepaliveAction {
        if now - self.last_recv >= cfg.timeout {
            return KeepaliveAction::Dead;
        }
        if self.ping_sent_at.is_none() && now - self.quiet_since() >= cfg.interval {
            self.ping_sent_at = Some(now);
            self.on_send(now);
            return KeepaliveAction::SendPing;
        }
        KeepaliveAction::Idle
    }

    /// The next instant at which [`Keepalive::poll`] may return something other than Idle.
    pub fn poll_timeout(&self, cfg: &KeepaliveConfig) -> Instant {
        let dead = self.last_recv + cfg.timeout;
        match self.ping_sent_at {
            Some(_) => dead,
            None => dead.min(self.quiet_since() + cfg.interval),
        }
    }

    /// The start of the longer quiet direction.
    fn quiet_since(&self) -> Instant {
        self.last_send.min(self.last_recv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use KeepaliveAction::*;

    fn s(t: u64) -> Instant {
        Instant::from_millis(t * 1_000)
    }

    #[test]
    fn a_quiet_link_pings_once_at_the_interval_then_dies_at_the_timeout() {
        let cfg = KeepaliveConfig::default();
        let mut k = Keepalive::new(s(0));
        assert_eq!(k.poll_timeout(&cfg), s(25));
        assert_eq!(k.poll(s(24), &cfg), Idle);
        assert_eq!(k.poll(s(25), &cfg), SendPing);
        assert_eq!(k.ping_sent_at(), Some(s(25)));
        assert_eq!(k.poll_timeout(&cfg), s(60));
        for t in [25, 30, 50, 59] {
            assert_eq!(k.poll(s(t), &cfg), Idle, "the ping is not repeated at {t}");
        }
        assert_eq!(k.poll(s(60), &cfg), Dead);
        assert_eq!(k.poll(s(61), &cfg), Dead, "dead stays dead");
    }

    #[test]
    fn an_answer_clears_the_ping_and_restarts_the_clock() {
        let cfg = KeepaliveConfig::default();
        let mut k = Keepalive::new(s(0));
        assert_eq!(k.poll(s(25), &cfg), SendPing);
        k.on_recv(s(26));
        assert_eq!(k.ping_sent_at(), None);
        assert_eq!(k.poll_timeout(&cfg), s(50), "quiet since the ping was sent");
        assert_eq!(k.poll(s(49), &cfg), Idle);
        assert_eq!(k.poll(s(50), &cfg), SendPing);
        assert_eq!(k.poll(s(85), &cfg), Idle);
        assert_eq!(k.poll(s(86), &cfg), Dead);
    }

    #[test]
    fn traffic_both_ways_keeps_it_idle() {
        let cfg = KeepaliveConfig::default();
        let mut k = Keepalive::new(s(0));
        for t in 1..1_000 {
            k.on_send(s(t));
            k.on_recv(s(t));
            assert_eq!(k.poll(s(t), &cfg), Idle);
            assert_eq!(k.poll_timeout(&cfg), s(t + 25));
        }
    }

    #[test]
    fn sending_alone_does_not_keep_the_peer_alive() {
        let cfg = KeepaliveConfig::default();
        let mut k = Keepalive::new(s(0));
        let mut pings = 0;
        for t in 1..60 {
            k.on_send(s(t));
            if k.poll(s(t), &cfg) == SendPing {
                pings += 1;
            }
        }
        assert_eq!(pings, 1, "a quiet receive side asks for one ping");
        assert_eq!(k.poll(s(60), &cfg), Dead);
    }

    #[test]
    fn receiving_alone_still_pings_so_the_peer_hears_from_us() {
        let cfg = KeepaliveConfig::default();
        let mut k = Keepalive::new(s(0));
        k.on_recv(s(24));
        assert_eq!(k.poll(s(25), &cfg), SendPing);
        k.on_recv(s(26));
        assert_eq!(k.poll(s(30), &cfg), Idle, "we just sent the ping");
        assert_eq!(k.poll_timeout(&cfg), s(50));
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        let cfg = KeepaliveConfig {
            interval: Duration::MAX,
            timeout: Duration::MAX,
        };
        let mut k = Keepalive::new(Instant::NEVER);
        assert_eq!(k.poll_timeout(&cfg), Instant::NEVER);
        assert_eq!(
            k.poll(Instant::ZERO, &cfg),
            Idle,
            "time going back is harmless"
        );
        k.on_send(Instant::ZERO);
        assert_eq!(k.poll_timeout(&cfg), Instant::NEVER);
        let zero = KeepaliveConfig {
            interval: Duration::ZERO,
            timeout: Duration::ZERO,
        };
        assert_eq!(Keepalive::new(s(1)).poll(s(1), &zero), Dead);
    }
}
