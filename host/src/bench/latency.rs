//! Latency recording: an HDR histogram of microseconds (3 significant figures, up to a minute)
//! and the percentiles a report prints.

use std::time::Duration;

use hdrhistogram::Histogram;

/// The longest latency recorded exactly; longer ones count as this.
const MAX_US: u64 = 60_000_000;

/// A latency histogram. Cheap to record into; merge one per task at the end.
#[derive(Clone, Debug)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Latency {
        Latency {
            // The bounds are constants that hdrhistogram accepts: 1 ≤ low, high ≥ 2 low, 3 figures.
            hist: Histogram::new_with_bounds(1, MAX_US, 3).unwrap_or_else(|_| {
                unreachable!("1 µs .. 60 s with 3 significant figures is a valid histogram")
            }),
        }
    }

    /// Records one latency (clamped to 1 µs .. 60 s).
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(MAX_US);
        self.hist.saturating_record(us.clamp(1, MAX_US));
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Latency) {
        // Both have the same bounds, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    /// How many samples.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The percentiles reports print.
    pub fn summary(&self) -> Percentiles {
        let at = |q: f64| Duration::from_micros(self.hist.value_at_quantile(q));
        Percentiles {
            samples: self.hist.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: Duration::from_micros(self.hist.max()),
        }
    }
}

/// Latency percentiles of one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Percentiles {
    /// How many samples they come from.
    pub samples: u64,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// The largest sample.
    pub max: Duration,
}

/// A duration in milliseconds with two decimals, as reports print it.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_recorded_samples() {
        let mut a = Latency::new();
        for us in 1..=1000u64 {
            a.record(Duration::from_micros(us));
        }
        let mut b = Latency::new();
        b.record(Duration::from_secs(3600));
        a.merge(&b);
        let s = a.summary();
        assert_eq!(s.samples, 1001);
        assert!((499..=501).contains(&s.p50.as_micros()), "{s:?}");
        assert!((989..=991).contains(&s.p99.as_micros()), "{s:?}");
        // Clamped to a minute, give or take the histogram's 3 significant figures.
        assert!(
            s.max.abs_diff(Duration::from_secs(60)) < Duration::from_millis(60),
            "{s:?}"
        );
        assert_eq!(ms(Duration::from_micros(1234)), "1.23");
    }
}
