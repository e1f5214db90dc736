//! What `/metrics` serves: the gateway's counters, gauges and histograms in the OpenMetrics text
//! format, built on the `prometheus-client` crate.
//!
//! The gateway holds one [`Metrics`] behind an `Arc` and calls its `&self` methods on every
//! packet; they are atomic adds (labelled families take a shared read lock on a map that only
//! grows when a new label value first shows up). [`Metrics::render`] writes the exposition,
//! served with [`Metrics::CONTENT_TYPE`] (OpenMetrics 1.0.0; Prometheus scrapes it natively).
//!
//! How each figure the gateway issue asks for is read (PromQL):
//!
//! | figure | series | query |
//! |---|---|---|
//! | connections now | `kefu_connections{transport="ws\|tcp"}` (gauge) | as is |
//! | connections accepted | `kefu_connections_opened_total{transport}` | `rate(...[1m])` |
//! | logged-in sessions | `kefu_sessions_logged_in` (gauge) | as is |
//! | packets by type | `kefu_packets_in_total{type="pub\|sub\|..."}` | `sum by (type) (rate(...[1m]))` |
//! | bad input | `kefu_bad_input_total{what}` | `rate(...[1m])` |
//! | replies by result code | `kefu_replies_total{type,code}` | `sum by (code) (rate(...[1m]))` |
//! | messages stored | `kefu_messages_stored_total` | as is (a total) |
//! | arrival rate | `kefu_messages_stored_total` | `rate(kefu_messages_stored_total[1m])` (messages/s) |
//! | duplicate pubs | `kefu_duplicate_pubs_total` | `rate(...[1m])` |
//! | send success rate | `kefu_pubs_total{result="ok\|failed"}` | `kefu_send_success_ratio` (since start) or `rate(kefu_pubs_total{result="ok"}[5m]) / sum(rate(kefu_pubs_total[5m]))` |
//! | deliveries | `kefu_deliveries_total` | `rate(...[1m])` |
//! | acks | `kefu_acks_total` | `rate(...[1m])` |
//! | retransmits | `kefu_retransmits_total` | `rate(...[1m]) / rate(kefu_deliveries_total[1m])` = retransmit share |
//! | ack latency | `kefu_ack_latency_seconds` (histogram, push → ack) | `histogram_quantile(0.99, rate(kefu_ack_latency_seconds_bucket[5m]))` |
//! | commit latency | `kefu_commit_latency_seconds` (histogram, pub → durable) | as ack latency |
//!
//! `kefu_send_success_ratio` is derived at render time: `ok / (ok + failed)` over the process's
//! lifetime, `1` while no `pub` has finished. The arrival rate is left to Prometheus' `rate()`
//! rather than computed here, so that it is averaged over the window the operator chooses.
//! In the OpenMetrics format a counter family named `x` shows its sample as `x_total`; a
//! histogram shows `x_bucket{le}`, `x_sum` and `x_count`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Which listener a connection came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// The WebSocket listener (`/v0/channels`), JSON or binary frames.
    WebSocket,
    /// The raw TCP listener, core framing on the stream.
    Tcp,
}

impl Transport {
    /// The `transport` label value: `ws` or `tcp`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::WebSocket => "ws",
            Transport::Tcp => "tcp",
        }
    }
}

/// Latency buckets (seconds), 100 µs to 10 s on a 1-2.5-5 scale; `+Inf` is added by the encoder.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabel {
    transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhatLabel {
    what: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplyLabel {
    r#type: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The gateway's metrics; shared as `Arc<Metrics>`. Every recording method is `&self` and cheap.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections: Family<TransportLabel, Gauge>,
    connections_opened: Family<TransportLabel, Counter>,
    packets_in: Family<TypeLabel, Counter>,
    bad_input: Family<WhatLabel, Counter>,
    replies: Family<ReplyLabel, Counter>,
    stored: Counter,
    dup_pubs: Counter,
    pubs_ok: Counter,
    pubs_failed: Counter,
    success_ratio: Gauge<f64, AtomicU64>,
    delivered: Counter,
    acks: Counter,
    retransmits: Counter,
    ack_latency: Histogram,
    commit_latency: Histogram,
    sessions: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The content type of [`Metrics::render`]'s output: the OpenMetrics 1.0.0 text format
    /// (which ends with `# EOF`).
    pub const CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";

    /// Creates the metrics, all at zero, and registers them.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let connections = Family::<TransportLabel, Gauge>::default();
        let connections_opened = Family::<TransportLabel, Counter>::default();
        let packets_in = Family::<TypeLabel, Counter>::default();
        let bad_input = Family::<WhatLabel, Counter>::default();
        let replies = Family::<ReplyLabel, Counter>::default();
        let pubs = Family::<ResultLabel, Counter>::default();
        let sessions = Gauge::default();
        let success_ratio = Gauge::<f64, AtomicU64>::default();
        success_ratio.set(1.0);
        let ack_latency = latency_histogram();
        let commit_latency = latency_histogram();
        let [stored, dup_pubs, delivered, acks, retransmits]: [Counter; 5] = Default::default();

        // Both transports show from the start, at zero, so dashboards need no `or vector(0)`.
        for t in [Transport::WebSocket, Transport::Tcp] {
            let label = TransportLabel {
                transport: t.as_str(),
            };
            let _ = connections.get_or_create(&label);
            let _ = connections_opened.get_or_create(&label);
        }
        // Handles kept outside the family so the ratio needs no map lookups.
        let pubs_ok = pubs.get_or_create_owned(&ResultLabel { result: "ok" });
        let pubs_failed = pubs.get_or_create_owned(&ResultLabel { result: "failed" });

        let r = &mut registry;
        r.register(
            "kefu_connections",
            "Open client connections, by listener",
            connections.clone(),
        );
        r.register(
            "kefu_connections_opened",
            "Client connections accepted since start, by listener",
            connections_opened.clone(),
        );
        r.register(
            "kefu_sessions_logged_in",
            "Sessions that completed login and are still connected",
            sessions.clone(),
        );
        r.register(
            "kefu_packets_in",
            "Client packets decoded, by packet type",
            packets_in.clone(),
        );
        r.register(
            "kefu_bad_input",
            "Input refused before it became a request (malformed JSON, bad frame, ...), by kind",
            bad_input.clone(),
        );
        r.register(
            "kefu_replies",
            "ctrl replies sent, by the request type they answer and result code",
            replies.clone(),
        );
        r.register(
            "kefu_messages_stored",
            "Messages durably stored (new ones only; rate() of it is the arrival rate)",
            stored.clone(),
        );
        r.register(
            "kefu_duplicate_pubs",
            "Repeated pubs answered with the seq they already had, not stored again",
            dup_pubs.clone(),
        );
        r.register(
            "kefu_pubs",
            "Finished pubs, by result (ok = 202, failed = any error)",
            pubs,
        );
        r.register(
            "kefu_send_success_ratio",
            "ok / (ok + failed) pubs since start; 1 when there were none",
            success_ratio.clone(),
        );
        r.register(
            "kefu_deliveries",
            "data packets pushed to subscribers (first pushes and retransmits)",
            delivered.clone(),
        );
        r.register(
            "kefu_acks",
            "Acks (or Tinode note recv) received from subscribers",
            acks.clone(),
        );
        r.register(
            "kefu_retransmits",
            "data packets pushed again after the ack timeout",
            retransmits.clone(),
        );
        r.register_with_unit(
            "kefu_ack_latency",
            "Time from pushing a data packet to its ack",
            Unit::Seconds,
            ack_latency.clone(),
        );
        r.register_with_unit(
            "kefu_commit_latency",
            "Time from receiving a pub to its durable commit",
            Unit::Seconds,
            commit_latency.clone(),
        );

        Metrics {
            registry,
            connections,
            connections_opened,
            packets_in,
            bad_input,
            replies,
            stored,
            dup_pubs,
            pubs_ok,
            pubs_failed,
            success_ratio,
            delivered,
            acks,
            retransmits,
            ack_latency,
            commit_latency,
            sessions,
        }
    }

    /// A connection was accepted on `t`: `kefu_connections{transport}` up by one and
    /// `kefu_connections_opened_total{transport}` counted.
    pub fn connection_opened(&self, t: Transport) {
        let label = TransportLabel {
            transport: t.as_str(),
        };
        self.connections.get_or_create(&label).inc();
        self.connections_opened.get_or_create(&label).inc();
    }

    /// A connection on `t` ended: `kefu_connections{transport}` down by one.
    pub fn connection_closed(&self, t: Transport) {
        let label = TransportLabel {
            transport: t.as_str(),
        };
        self.connections.get_or_create(&label).dec();
    }

    /// A client packet of type `kind` (`"pub"`, `"sub"`, ...) was decoded:
    /// `kefu_packets_in_total{type}`.
    pub fn packet_in(&self, kind: &'static str) {
        self.packets_in
            .get_or_create(&TypeLabel { r#type: kind })
            .inc();
    }

    /// Input was refused before it became a request (`"json"`, `"frame"`, `"too_large"`, ...):
    /// `kefu_bad_input_total{what}`.
    pub fn bad_input(&self, what: &'static str) {
        self.bad_input.get_or_create(&WhatLabel { what }).inc();
    }

    /// A `ctrl` answering a `request` of that type was sent with `code`:
    /// `kefu_replies_total{type,code}`.
    pub fn ctrl_out(&self, request: &'static str, code: u16) {
        self.replies
            .get_or_create(&ReplyLabel {
                r#type: request,
                code,
            })
            .inc();
    }

    /// `n` new messages were durably stored: `kefu_messages_stored_total`.
    pub fn stored(&self, n: u64) {
        self.stored.inc_by(n);
    }

    /// A repeated `pub` got the seq it already had: `kefu_duplicate_pubs_total`.
    pub fn dup_pub(&self) {
        self.dup_pubs.inc();
    }

    /// A `pub` finished, answered 202 (`ok`) or with an error: `kefu_pubs_total{result}`.
    pub fn pub_result(&self, ok: bool) {
        if ok {
            self.pubs_ok.inc();
        } else {
            self.pubs_failed.inc();
        }
    }

    /// `n` data packets were pushed to subscribers: `kefu_deliveries_total`.
    pub fn delivered(&self, n: u64) {
        self.delivered.inc_by(n);
    }

    /// `n` acks were received: `kefu_acks_total`.
    pub fn acks(&self, n: u64) {
        self.acks.inc_by(n);
    }

    /// `n` data packets were pushed again after the ack timeout: `kefu_retransmits_total`.
    pub fn retransmits(&self, n: u64) {
        self.retransmits.inc_by(n);
    }

    /// A push was acked `seconds` after it was sent: `kefu_ack_latency_seconds`. Negative or
    /// NaN values (a clock oddity) are ignored.
    pub fn ack_latency(&self, seconds: f64) {
        if seconds >= 0.0 {
            self.ack_latency.observe(seconds);
        }
    }

    /// A `pub` became durable `seconds` after it arrived: `kefu_commit_latency_seconds`.
    /// Negative or NaN values are ignored.
    pub fn commit_latency(&self, seconds: f64) {
        if seconds >= 0.0 {
            self.commit_latency.observe(seconds);
        }
    }

    /// `delta` sessions logged in (positive) or ended after login (negative):
    /// `kefu_sessions_logged_in`.
    pub fn sessions_logged_in(&self, delta: i64) {
        self.sessions.inc_by(delta);
    }

    /// The send success ratio since start: `ok / (ok + failed)`, `1.0` when no `pub` finished.
    pub fn send_success_ratio(&self) -> f64 {
        let ok = self.pubs_ok.get();
        let failed = self.pubs_failed.get();
        match ok.saturating_add(failed) {
            0 => 1.0,
            total => ok as f64 / total as f64,
        }
    }

    /// The exposition in the OpenMetrics 1.0.0 text format ([`Metrics::CONTENT_TYPE`]),
    /// ending with `# EOF`.
    pub fn render(&self) -> String {
        self.success_ratio.set(self.send_success_ratio());
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail; the encoder only forwards the writer's errors.
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
            out.push_str("# EOF\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The value of the sample line that starts with `series ` (name plus labels, exact).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
            rest.split(' ').next()?.parse().ok()
        })
    }

    #[test]
    fn a_fresh_exposition_shows_every_metric_at_zero_and_ends_with_eof() {
        let text = Metrics::new().render();
        for series in [
            "kefu_connections{transport=\"ws\"}",
            "kefu_connections{transport=\"tcp\"}",
            "kefu_connections_opened_total{transport=\"ws\"}",
            "kefu_sessions_logged_in",
            "kefu_messages_stored_total",
            "kefu_duplicate_pubs_total",
            "kefu_pubs_total{result=\"ok\"}",
            "kefu_pubs_total{result=\"failed\"}",
            "kefu_deliveries_total",
            "kefu_acks_total",
            "kefu_retransmits_total",
            "kefu_ack_latency_seconds_count",
            "kefu_commit_latency_seconds_count",
        ] {
            assert_eq!(sample(&text, series), Some(0.0), "{series} in\n{text}");
        }
        assert_eq!(sample(&text, "kefu_send_success_ratio"), Some(1.0));
        assert!(text.ends_with("# EOF\n"));
        assert!(text.contains("# TYPE kefu_ack_latency_seconds histogram"));
        assert!(text.contains("# UNIT kefu_ack_latency_seconds seconds"));
    }

    #[test]
    fn connections_go_up_and_down_per_transport_and_opened_only_counts() {
        let m = Metrics::new();
        m.connection_opened(Transport::WebSocket);
        m.connection_opened(Transport::WebSocket);
        m.connection_opened(Transport::Tcp);
        m.connection_closed(Transport::WebSocket);
        let text = m.render();
        assert_eq!(
            sample(&text, "kefu_connections{transport=\"ws\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "kefu_connections{transport=\"tcp\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "kefu_connections_opened_total{transport=\"ws\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "kefu_connections_opened_total{transport=\"tcp\"}"),
            Some(1.0)
        );
    }

    #[test]
    fn packets_bad_input_and_replies_carry_their_labels() {
        let m = Metrics::new();
        m.packet_in("pub");
        m.packet_in("pub");
        m.packet_in("sub");
        m.bad_input("json");
        m.ctrl_out("pub", 202);
        m.ctrl_out("pub", 202);
        m.ctrl_out("pub", 422);
        m.ctrl_out("login", 401);
        let text = m.render();
        assert_eq!(
            sample(&text, "kefu_packets_in_total{type=\"pub\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "kefu_packets_in_total{type=\"sub\"}"),
            Some(1.0)
        );
        assert_eq!(sample(&text, "kefu_packets_in_total{type=\"get\"}"), None);
        assert_eq!(
            sample(&text, "kefu_bad_input_total{what=\"json\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "kefu_replies_total{type=\"pub\",code=\"202\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "kefu_replies_total{type=\"pub\",code=\"422\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "kefu_replies_total{type=\"login\",code=\"401\"}"),
            Some(1.0)
        );
    }

    #[test]
    fn message_counters_add_what_they_are_given() {
        let m = Metrics::new();
        m.stored(3);
        m.stored(4);
        m.dup_pub();
        m.delivered(10);
        m.acks(9);
        m.retransmits(2);
        m.sessions_logged_in(3);
        m.sessions_logged_in(-1);
        let text = m.render();
        assert_eq!(sample(&text, "kefu_messages_stored_total"), Some(7.0));
        assert_eq!(sample(&text, "kefu_duplicate_pubs_total"), Some(1.0));
        assert_eq!(sample(&text, "kefu_deliveries_total"), Some(10.0));
        assert_eq!(sample(&text, "kefu_acks_total"), Some(9.0));
        assert_eq!(sample(&text, "kefu_retransmits_total"), Some(2.0));
        assert_eq!(sample(&text, "kefu_sessions_logged_in"), Some(2.0));
    }

    #[test]
    fn the_success_ratio_is_ok_over_all_finished_pubs() {
        let m = Metrics::new();
        assert_eq!(m.send_success_ratio(), 1.0);
        for _ in 0..3 {
            m.pub_result(true);
        }
        m.pub_result(false);
        let text = m.render();
        assert_eq!(sample(&text, "kefu_pubs_total{result=\"ok\"}"), Some(3.0));
        assert_eq!(
            sample(&text, "kefu_pubs_total{result=\"failed\"}"),
            Some(1.0)
        );
        assert_eq!(sample(&text, "kefu_send_success_ratio"), Some(0.75));
    }

    #[test]
    fn latencies_fall_into_cumulative_buckets_from_100us_to_10s() {
        let m = Metrics::new();
        m.ack_latency(0.00005); // below the first bucket
        m.ack_latency(0.003); // in le=0.005
        m.ack_latency(20.0); // only +Inf
        m.ack_latency(-1.0); // ignored
        m.ack_latency(f64::NAN); // ignored
        m.commit_latency(0.0001); // exactly on the first bound
        let text = m.render();
        let b = |le: &str| {
            sample(
                &text,
                &format!("kefu_ack_latency_seconds_bucket{{le=\"{le}\"}}"),
            )
        };
        assert_eq!(b("0.0001"), Some(1.0));
        assert_eq!(b("0.0025"), Some(1.0));
        assert_eq!(b("0.005"), Some(2.0));
        assert_eq!(b("10.0"), Some(2.0));
        assert_eq!(b("+Inf"), Some(3.0));
        assert_eq!(sample(&text, "kefu_ack_latency_seconds_count"), Some(3.0));
        let sum = sample(&text, "kefu_ack_latency_seconds_sum").unwrap_or(0.0);
        assert!((sum - 20.00305).abs() < 1e-9, "sum {sum}");
        assert_eq!(
            sample(&text, "kefu_commit_latency_seconds_bucket{le=\"0.0001\"}"),
            Some(1.0)
        );
        let buckets = text
            .lines()
            .filter(|l| l.starts_with("kefu_ack_latency_seconds_bucket"))
            .count();
        assert_eq!(buckets, LATENCY_BUCKETS.len() + 1);
    }

    #[test]
    fn increments_from_many_threads_all_count() {
        let m = Arc::new(Metrics::new());
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        m.packet_in(if i % 2 == 0 { "pub" } else { "ack" });
                        m.stored(1);
                        m.connection_opened(Transport::Tcp);
                        m.connection_closed(Transport::Tcp);
                        m.ack_latency(0.001);
                        m.pub_result(i != 0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a metrics thread panicked");
        }
        let text = m.render();
        assert_eq!(
            sample(&text, "kefu_packets_in_total{type=\"pub\"}"),
            Some(4000.0)
        );
        assert_eq!(
            sample(&text, "kefu_packets_in_total{type=\"ack\"}"),
            Some(4000.0)
        );
        assert_eq!(sample(&text, "kefu_messages_stored_total"), Some(8000.0));
        assert_eq!(
            sample(&text, "kefu_connections{transport=\"tcp\"}"),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "kefu_connections_opened_total{transport=\"tcp\"}"),
            Some(8000.0)
        );
        assert_eq!(
            sample(&text, "kefu_ack_latency_seconds_count"),
            Some(8000.0)
        );
        assert_eq!(sample(&text, "kefu_send_success_ratio"), Some(0.875));
    }

    #[test]
    fn each_family_is_declared_once() {
        let text = Metrics::new().render();
        let mut names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "a metric family name repeats:\n{text}");
    }
}
