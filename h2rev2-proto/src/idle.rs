//! When a server closes an HTTP/2 connection that carries no streams.
//!
//! A connection that never opens a stream is closed `first_request` after its
//! handshake (a slowloris client past the TLS and HTTP/2 handshakes holds nothing for
//! long); one that had streams is closed once it has had none for `idle`. A Listener's
//! connection always holds its control stream, so it is never idle.
//!
//! The same run loop as the other machines: inputs through `handle_*` with the time
//! from outside, then drain [`IdleRule::poll_action`], and sleep until
//! [`IdleRule::poll_timeout`].
//!
//! ```
//! use std::time::{Duration, Instant};
//! use h2rev2_proto::idle::{IdleAction, IdleRule};
//! let t0 = Instant::now();
//! let mut rule = IdleRule::new(t0, Duration::from_secs(10), Duration::from_secs(120));
//! assert_eq!(rule.poll_timeout(), Some(t0 + Duration::from_secs(10)));
//! rule.handle_stream(t0 + Duration::from_secs(1));
//! assert_eq!(rule.poll_timeout(), Some(t0 + Duration::from_secs(121)));
//! // At the deadline the connection still has a stream: not idle, later then.
//! rule.handle_timeout(t0 + Duration::from_secs(121), true);
//! assert_eq!(rule.poll_action(), None);
//! rule.handle_timeout(t0 + Duration::from_secs(241), false);
//! assert_eq!(rule.poll_action(), Some(IdleAction::Close { opened_any: true }));
//! assert_eq!(rule.poll_timeout(), None, "closed: nothing more to wait for");
//! ```

use std::time::{Duration, Instant};

/// What the [`IdleRule`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleAction {
    /// Close the connection (GOAWAY): it carried no stream for too long.
    Close {
        /// Whether it ever opened a stream (for the log: a slowloris never did).
        opened_any: bool,
    },
}

/// The idle rule of one connection.
#[derive(Debug, Clone, Copy)]
pub struct IdleRule {
    first_request: Duration,
    idle: Duration,
    opened_any: bool,
    active_at: Instant,
    /// The decision not yet taken by `poll_action`, then `closed`.
    pending: Option<IdleAction>,
    closed: bool,
}

impl IdleRule {
    /// The rule of a connection whose handshake finished at `now`.
    pub fn new(now: Instant, first_request: Duration, idle: Duration) -> Self {
        IdleRule {
            first_request,
            idle,
            opened_any: false,
            active_at: now,
            pending: None,
            closed: false,
        }
    }

    /// A stream opened at `now`.
    pub fn handle_stream(&mut self, now: Instant) {
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

    /// The time is `now` (at or after [`IdleRule::poll_timeout`]); `has_streams` says
    /// whether the connection carries streams at this moment (they count as activity).
    pub fn handle_timeout(&mut self, now: Instant, has_streams: bool) {
        if self.closed {
            return;
        }
        if has_streams {
            self.active_at = now;
        }
        if now.saturating_duration_since(self.active_at) >= self.limit() {
            self.closed = true;
            self.pending = Some(IdleAction::Close {
                opened_any: self.opened_any,
            });
        }
    }

    /// The decision to carry out, if any.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<IdleAction> {
        self.pending.take()
    }

    /// When [`IdleRule::handle_timeout`] must be called next; `None` once closed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.closed).then(|| self.active_at + self.limit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_that_never_opens_a_stream_closes_after_the_first_request_limit() {
        let t0 = Instant::now();
        let mut r = IdleRule::new(t0, Duration::from_secs(10), Duration::from_secs(120));
        r.handle_timeout(t0 + Duration::from_secs(9), false);
        assert_eq!(r.poll_action(), None);
        r.handle_timeout(t0 + Duration::from_secs(10), false);
        assert_eq!(
            r.poll_action(),
            Some(IdleAction::Close { opened_any: false })
        );
        r.handle_timeout(t0 + Duration::from_secs(20), false);
        assert_eq!(r.poll_action(), None, "decided once");
    }
}
