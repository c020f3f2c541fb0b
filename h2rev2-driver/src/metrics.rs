//! Counters of the public side, rendered in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the dial latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0, 10.0,
];

/// Live counters. Cheap to update (relaxed atomics), read at scrape time.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Live sessions (Listeners).
    pub sessions: AtomicI64,
    /// Sessions that ended (replaced, closed, dead), since start.
    pub sessions_ended: AtomicU64,
    /// Reverse connections handed out and not yet dropped.
    pub open_conns: AtomicI64,
    /// HTTP/2 and HTTP/1.1 connections being served.
    pub connections: AtomicI64,
    /// Bytes read from reverse connections (Listener to Dialer).
    pub bytes_in: AtomicU64,
    /// Bytes written to reverse connections (Dialer to Listener).
    pub bytes_out: AtomicU64,
    /// Dials that returned a conn.
    pub dials_ok: AtomicU64,
    /// Failed dials by kind: no session, timeout, pickup failed, session closed, limit.
    pub dial_errors: [AtomicU64; 5],
    /// Revdial requests refused by authentication.
    pub auth_failures: AtomicU64,
    /// Requests refused by a limit.
    pub limit_refusals: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ns: AtomicU64,
}

/// Names of [`Metrics::dial_errors`] slots.
pub const DIAL_ERROR_KINDS: [&str; 5] = [
    "no_session",
    "timeout",
    "pickup_failed",
    "session_closed",
    "limit",
];

impl Metrics {
    /// Records the latency of a successful dial.
    pub fn observe_dial(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.latency_buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_ns
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let g = |o: &mut String, name: &str, help: &str, kind: &str, v: String| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        g(
            &mut o,
            "h2rev2_sessions",
            "Live Listener sessions.",
            "gauge",
            self.sessions.load(Relaxed).to_string(),
        );
        g(
            &mut o,
            "h2rev2_sessions_ended_total",
            "Listener sessions that ended (closed, replaced or found dead).",
            "counter",
            self.sessions_ended.load(Relaxed).to_string(),
        );
        g(
            &mut o,
            "h2rev2_open_conns",
            "Open reverse connections.",
            "gauge",
            self.open_conns.load(Relaxed).to_string(),
        );
        g(
            &mut o,
            "h2rev2_connections",
            "Client and Listener connections being served.",
            "gauge",
            self.connections.load(Relaxed).to_string(),
        );
        g(
            &mut o,
            "h2rev2_bytes_in_total",
            "Bytes read from reverse connections.",
            "counter",
            self.bytes_in.load(Relaxed).to_string(),
        );
        g(
            &mut o,
            "h2rev2_bytes_out_total",
            "Bytes written to reverse connections.",
            "counter",
            self.bytes_out.load(Relaxed).to_string(),
        );
        g(
            &mut o,
            "h2rev2_dials_total",
            "Successful dials.",
            "counter",
            self.dials_ok.load(Relaxed).to_string(),
        );
        g(
            &mut o,
            "h2rev2_auth_failures_total",
            "Revdial requests refused by authentication.",
            "counter",
            self.auth_failures.load(Relaxed).to_string(),
        );
        g(
            &mut o,
            "h2rev2_limit_refusals_total",
            "Requests refused by a limit.",
            "counter",
            self.limit_refusals.load(Relaxed).to_string(),
        );
        let _ = writeln!(
            o,
            "# HELP h2rev2_dial_errors_total Failed dials by kind.\n# TYPE h2rev2_dial_errors_total counter"
        );
        for (i, k) in DIAL_ERROR_KINDS.iter().enumerate() {
            let _ = writeln!(
                o,
                "h2rev2_dial_errors_total{{kind=\"{k}\"}} {}",
                self.dial_errors[i].load(Relaxed)
            );
        }
        let _ = writeln!(
            o,
            "# HELP h2rev2_dial_seconds Dial latency.\n# TYPE h2rev2_dial_seconds histogram"
        );
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                o,
                "h2rev2_dial_seconds_bucket{{le=\"{b}\"}} {}",
                self.latency_buckets[i].load(Relaxed)
            );
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(o, "h2rev2_dial_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            o,
            "h2rev2_dial_seconds_sum {}",
            self.latency_sum_ns.load(Relaxed) as f64 / 1e9
        );
        let _ = writeln!(o, "h2rev2_dial_seconds_count {count}");
        o
    }
}
