//! Counters of the public side, rendered in the Prometheus (OpenMetrics) text format
//! by [`prometheus_client`].
//!
//! Why `prometheus-client` and not the `metrics` facade with
//! `metrics-exporter-prometheus`: the facade sends every update to one recorder per
//! process (a global, or a thread-local one around each call), while h2rev2 is a
//! library in which several [`crate::Server`]s may live in one process (every test
//! does it), each answering [`crate::Server::metrics`] with its own numbers.
//! `prometheus-client` has no global state: each [`Metrics`] owns its families and
//! renders them with the same encoder Prometheus' own Rust client uses.
//!
//! The hot-path counters (bytes per read and write, sessions, dials) stay plain
//! relaxed atomics that the rest of the driver bumps directly; at scrape time they are
//! read into the registry as constant metrics next to the labelled families
//! (requests by id and status class, upstream errors by kind) and the histograms.
//! Names are unchanged from the hand-written renderer this replaced.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds of the dial latency histogram, in seconds.
const DIAL_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0, 10.0,
];

/// Upper bounds of the proxied request duration histogram, in seconds.
const REQUEST_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// How many distinct ids get their own `id` label on the request counter; requests
/// for later ids are counted under [`OTHER_ID`], so a flood of made-up ids cannot
/// grow the exposition without bound.
pub const MAX_ID_LABELS: usize = 100;

/// The `id` label of requests for ids past the first [`MAX_ID_LABELS`].
pub const OTHER_ID: &str = "other";

/// Labels of `h2rev2_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    id: String,
    class: String,
}

/// Labels of `h2rev2_request_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: String,
}

/// Labels of `h2rev2_upstream_errors_total` and `h2rev2_dial_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

/// Labels of `h2rev2_reloads_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

/// Live counters. Cheap to update (relaxed atomics, or a labelled family's atomic),
/// read at scrape time by [`Metrics::render`].
#[derive(Debug)]
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
    /// Configuration reloads applied ([`crate::Server::reload`]).
    reloads_applied: AtomicU64,
    /// Configuration reloads refused (an invalid new configuration, reported with
    /// [`Metrics::reload_refused`]; the old one kept serving).
    reloads_refused: AtomicU64,
    /// When the last reload was applied, seconds since the Unix epoch (0: never).
    last_reload: AtomicU64,
    /// The configuration's generation.
    generation: AtomicU64,
    /// Sessions ended by a reload that revoked their credential.
    pub sessions_revoked: AtomicU64,
    dial_seconds: Histogram,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<ClassLabel, Histogram>,
    upstream_errors: Family<KindLabel, Counter>,
    /// Ids that have their own label on `requests` (at most [`MAX_ID_LABELS`]).
    labelled_ids: Mutex<HashSet<String>>,
}

/// Names of [`Metrics::dial_errors`] slots.
pub const DIAL_ERROR_KINDS: [&str; 5] = [
    "no_session",
    "timeout",
    "pickup_failed",
    "session_closed",
    "limit",
];

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            sessions: AtomicI64::new(0),
            sessions_ended: AtomicU64::new(0),
            open_conns: AtomicI64::new(0),
            connections: AtomicI64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            dials_ok: AtomicU64::new(0),
            dial_errors: Default::default(),
            auth_failures: AtomicU64::new(0),
            limit_refusals: AtomicU64::new(0),
            reloads_applied: AtomicU64::new(0),
            reloads_refused: AtomicU64::new(0),
            last_reload: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            sessions_revoked: AtomicU64::new(0),
            dial_seconds: Histogram::new(DIAL_BUCKETS),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(|| Histogram::new(REQUEST_BUCKETS)),
            upstream_errors: Family::default(),
            labelled_ids: Mutex::new(HashSet::new()),
        }
    }
}

/// The status class label of `status`: `1xx` ... `5xx`.
pub fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

impl Metrics {
    /// Records a reload applied as configuration `generation`.
    pub(crate) fn reload_applied(&self, generation: u64, revoked: usize) {
        self.reloads_applied.fetch_add(1, Relaxed);
        self.generation.store(generation, Relaxed);
        self.sessions_revoked.fetch_add(revoked as u64, Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_reload.store(now, Relaxed);
    }

    /// Records a reload refused: the new configuration was invalid and the one in
    /// force keeps serving. (The embedding program validates its configuration; this
    /// counts what it refused.)
    pub fn reload_refused(&self) {
        self.reloads_refused.fetch_add(1, Relaxed);
    }

    /// Records the latency of a successful dial.
    pub fn observe_dial(&self, d: Duration) {
        self.dial_seconds.observe(d.as_secs_f64());
    }

    /// Records one proxied request for `id`: its final status and how long it took
    /// (until the response body was done).
    pub fn observe_request(&self, id: &str, status: u16, took: Duration) {
        let class = status_class(status).to_string();
        let id = self.id_label(id);
        self.requests
            .get_or_create(&RequestLabels {
                id,
                class: class.clone(),
            })
            .inc();
        self.request_seconds
            .get_or_create(&ClassLabel { class })
            .observe(took.as_secs_f64());
    }

    /// Counts a proxied request that got no answer from the far side, by `kind`
    /// (`timeout`, `refused`, `reset`, `no_session`, ...).
    pub fn upstream_error(&self, kind: &str) {
        self.upstream_errors
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// `id` itself while fewer than [`MAX_ID_LABELS`] ids have a label, else
    /// [`OTHER_ID`].
    fn id_label(&self, id: &str) -> String {
        let Ok(mut ids) = self.labelled_ids.lock() else {
            return OTHER_ID.to_string();
        };
        if ids.contains(id) {
            return id.to_string();
        }
        if ids.len() < MAX_ID_LABELS {
            ids.insert(id.to_string());
            return id.to_string();
        }
        OTHER_ID.to_string()
    }

    /// The text exposition of every counter (OpenMetrics, which Prometheus scrapes;
    /// serve it as [`Metrics::CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut r = Registry::with_prefix("h2rev2");
        let gauge = |r: &mut Registry, name: &str, help: &str, v: i64| {
            r.register(name, help, ConstGauge::new(v));
        };
        let counter = |r: &mut Registry, name: &str, help: &str, v: u64| {
            r.register(name, help, ConstCounter::new(v));
        };
        gauge(
            &mut r,
            "sessions",
            "Live Listener sessions.",
            self.sessions.load(Relaxed),
        );
        counter(
            &mut r,
            "sessions_ended",
            "Listener sessions that ended (closed, replaced or found dead).",
            self.sessions_ended.load(Relaxed),
        );
        gauge(
            &mut r,
            "open_conns",
            "Open reverse connections.",
            self.open_conns.load(Relaxed),
        );
        gauge(
            &mut r,
            "connections",
            "Client and Listener connections being served.",
            self.connections.load(Relaxed),
        );
        counter(
            &mut r,
            "bytes_in",
            "Bytes read from reverse connections.",
            self.bytes_in.load(Relaxed),
        );
        counter(
            &mut r,
            "bytes_out",
            "Bytes written to reverse connections.",
            self.bytes_out.load(Relaxed),
        );
        counter(
            &mut r,
            "dials",
            "Successful dials.",
            self.dials_ok.load(Relaxed),
        );
        counter(
            &mut r,
            "auth_failures",
            "Revdial requests refused by authentication.",
            self.auth_failures.load(Relaxed),
        );
        counter(
            &mut r,
            "limit_refusals",
            "Requests refused by a limit.",
            self.limit_refusals.load(Relaxed),
        );
        let reloads = Family::<OutcomeLabel, Counter>::default();
        for (outcome, n) in [
            ("applied", &self.reloads_applied),
            ("refused", &self.reloads_refused),
        ] {
            reloads
                .get_or_create(&OutcomeLabel {
                    outcome: outcome.to_string(),
                })
                .inc_by(n.load(Relaxed));
        }
        r.register("reloads", "Configuration reloads by outcome.", reloads);
        gauge(
            &mut r,
            "last_reload_success_timestamp_seconds",
            "When the last reload was applied (Unix time; 0: never).",
            self.last_reload.load(Relaxed) as i64,
        );
        gauge(
            &mut r,
            "config_generation",
            "Reloads applied since start.",
            self.generation.load(Relaxed) as i64,
        );
        counter(
            &mut r,
            "sessions_revoked",
            "Listener sessions ended by a reload that revoked their credential.",
            self.sessions_revoked.load(Relaxed),
        );
        let dial_errors = Family::<KindLabel, Counter>::default();
        for (i, k) in DIAL_ERROR_KINDS.iter().enumerate() {
            dial_errors
                .get_or_create(&KindLabel {
                    kind: (*k).to_string(),
                })
                .inc_by(self.dial_errors[i].load(Relaxed));
        }
        r.register("dial_errors", "Failed dials by kind.", dial_errors);
        r.register("dial_seconds", "Dial latency.", self.dial_seconds.clone());
        r.register(
            "requests",
            "Proxied requests by id (the first 100 ids, then \"other\") and status class.",
            self.requests.clone(),
        );
        r.register(
            "request_seconds",
            "Proxied request duration, until the response body was done, by status class.",
            self.request_seconds.clone(),
        );
        r.register(
            "upstream_errors",
            "Proxied requests that got no answer from the far side, by kind.",
            self.upstream_errors.clone(),
        );
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }

    /// The content type of [`Metrics::render`]'s text.
    pub const CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_old_names_and_caps_id_labels() {
        let m = Metrics::default();
        m.sessions.fetch_add(1, Relaxed);
        m.bytes_out.fetch_add(10, Relaxed);
        m.dial_errors[1].fetch_add(2, Relaxed);
        m.observe_dial(Duration::from_millis(2));
        for i in 0..MAX_ID_LABELS + 5 {
            m.observe_request(&format!("id{i}"), 200, Duration::from_millis(3));
        }
        m.observe_request("id0", 502, Duration::from_millis(3));
        m.upstream_error("reset");
        let text = m.render();
        for line in [
            "\nh2rev2_sessions 1\n",
            "\nh2rev2_bytes_out_total 10\n",
            "\nh2rev2_dial_errors_total{kind=\"timeout\"} 2\n",
            "\nh2rev2_dial_seconds_count 1\n",
            "\nh2rev2_requests_total{id=\"id0\",class=\"2xx\"} 1\n",
            "\nh2rev2_requests_total{id=\"id0\",class=\"5xx\"} 1\n",
            "\nh2rev2_requests_total{id=\"other\",class=\"2xx\"} 5\n",
            "\nh2rev2_request_seconds_count{class=\"2xx\"} 105\n",
            "\nh2rev2_upstream_errors_total{kind=\"reset\"} 1\n",
        ] {
            assert!(text.contains(line), "no {line:?} in:\n{text}");
        }
        assert!(
            !text.contains(&format!("id=\"id{MAX_ID_LABELS}\"")),
            "{text}"
        );
    }
}
