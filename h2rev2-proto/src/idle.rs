//! When a server closes an HTTP/2 connection that carries no streams.
//!
//! A connection that never opens a stream is closed `first_request` after its
//! handshake (a slowloris client past the TLS and HTTP/2 handshakes holds nothing for
//! long); one that had streams is closed once it has had none for `idle`. A Listener's
//! connection always holds its control stream, so it is never idle.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use h2rev2_proto::idle::IdleRule;
//! let t0 = Instant::now();
//! let mut rule = IdleRule::new(t0, Duration::from_secs(10), Duration::from_secs(120));
//! assert_eq!(rule.deadline(), t0 + Duration::from_secs(10));
//! rule.on_stream(t0 + Duration::from_secs(1));
//! assert_eq!(rule.deadline(), t0 + Duration::from_secs(121));
//! // At the deadline the connection still has a stream: not idle, check again later.
//! assert!(!rule.check(t0 + Duration::from_secs(121), true));
//! assert!(rule.check(t0 + Duration::from_secs(241), false), "idle for 120 s: close");
//! ```

use std::time::{Duration, Instant};

/// The idle rule of one connection. Feed it streams as they open and call
/// [`IdleRule::check`] at [`IdleRule::deadline`].
#[derive(Debug, Clone, Copy)]
pub struct IdleRule {
    first_request: Duration,
    idle: Duration,
    opened_any: bool,
    active_at: Instant,
}

impl IdleRule {
    /// The rule of a connection whose handshake finished at `now`.
    pub fn new(now: Instant, first_request: Duration, idle: Duration) -> Self {
        IdleRule {
            first_request,
            idle,
            opened_any: false,
            active_at: now,
        }
    }

    /// A stream opened at `now`.
    pub fn on_stream(&mut self, now: Instant) {
        self.opened_any = true;
        self.active_at = now;
    }

    fn limit(&self) -> Duration {
        if self.opened_any {
            self.idle
        } else {
            self.first_request
        }
    }

    /// When [`IdleRule::check`] must run next.
    #[must_use]
    pub fn deadline(&self) -> Instant {
        self.active_at + self.limit()
    }

    /// Whether to close the connection now; `has_streams` says whether it carries
    /// streams at this moment (they count as activity).
    pub fn check(&mut self, now: Instant, has_streams: bool) -> bool {
        if has_streams {
            self.active_at = now;
        }
        now.saturating_duration_since(self.active_at) >= self.limit()
    }

    /// Whether the connection ever opened a stream (for the log).
    pub fn opened_any(&self) -> bool {
        self.opened_any
    }
}
