//! Rate limiting for log lines that a failing dependency would otherwise repeat once per
//! request (a full or read-only disk refuses every `pub`, every mark, every account): the first
//! line at once, then at most one per interval, each saying how many were left out since the
//! last.

use std::fmt::Display;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The interval of the gateway's throttled warnings.
pub const EVERY: Duration = Duration::from_secs(10);

/// One kind of repeated log line; see the [module docs](self).
#[derive(Debug)]
pub struct Throttle {
    /// The least time between two lines.
    every: Duration,
    /// When the last line was let through, and how many were held back since.
    last: Mutex<Option<(Instant, u64)>>,
}

impl Throttle {
    /// A throttle letting one line through per `every`.
    pub const fn new(every: Duration) -> Self {
        Throttle {
            every,
            last: Mutex::new(None),
        }
    }

    /// May a line be logged at `now`? `Some(left_out)`: log it, mentioning the `left_out`
    /// lines held back since the last one; `None`: hold it back (it is counted).
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match &mut *last {
            Some((at, left_out)) if now.saturating_duration_since(*at) < self.every => {
                *left_out += 1;
                None
            }
            slot => {
                let left_out = slot.map_or(0, |(_, n)| n);
                *slot = Some((now, 0));
                Some(left_out)
            }
        }
    }

    /// Logs the warning `what` with `error`, if [`Throttle::admit`] lets a line through now.
    pub fn warn(&self, what: &str, error: &dyn Display) {
        if let Some(left_out) = self.admit(Instant::now()) {
            tracing::warn!(error = %error, left_out, "{what}");
        }
    }
}

/// Logs the warning `$what` (a literal) with the error `$error` at most every [`EVERY`] for
/// the place it is written: each use has a [`Throttle`] of its own.
macro_rules! warn_throttled {
    ($what:literal, $error:expr) => {{
        static THROTTLE: $crate::gateway::throttle::Throttle =
            $crate::gateway::throttle::Throttle::new($crate::gateway::throttle::EVERY);
        THROTTLE.warn($what, $error);
    }};
}
pub(crate) use warn_throttled;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_goes_out_then_one_per_interval_counting_those_held_back() {
        let throttle = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(
            throttle.admit(at(0)),
            Some(0),
            "the first failure is logged"
        );
        assert_eq!(throttle.admit(at(1)), None);
        assert_eq!(throttle.admit(at(9)), None);
        assert_eq!(
            throttle.admit(at(10)),
            Some(2),
            "ten seconds on: logged, with the two held back"
        );
        assert_eq!(throttle.admit(at(15)), None);
        assert_eq!(throttle.admit(at(60)), Some(1));
        assert_eq!(throttle.admit(at(61)), None);
    }
}
