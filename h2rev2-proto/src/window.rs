//! Sharing a tunnel's receive buffer among its streams.
//!
//! Every byte the far side sends on a stream that nobody reads stays buffered until
//! its reader catches up: a proxied download whose Client stops reading holds up to a
//! whole stream window. With one fixed window (8 MiB, what one stream needs to fill a
//! 20 ms link), 64 such Clients would make the public server hold 512 MiB and, once
//! the connection window is spent, stop every other stream of the tunnel.
//!
//! So a tunnel's stream window is not fixed: it is a **budget** shared by the streams
//! open on it, `budget / open` clamped to `[min, max]`, announced with
//! `SETTINGS_INITIAL_WINDOW_SIZE` (which moves the window of every open stream by the
//! difference, RFC 9113 6.9.2). One stream alone gets the full window and its
//! throughput; 64 stalled streams get 1/64 of the budget each, so together they hold
//! about the budget (plus what the first ones received before the window shrank),
//! far below the connection window: the tunnel keeps flowing for everyone else.
//!
//! [`StreamWindowRule`] decides; the driver counts open streams and announces.

/// The smallest stream window the rule announces: HTTP/2's own default.
pub const MIN_STREAM_WINDOW: u32 = 65_535;

/// Decides the stream window to announce on a tunnel for a number of open streams.
///
/// A change is announced only when it moves the window by a quarter or more (or
/// reaches a bound), so streams opening and closing do not send a SETTINGS frame each.
#[derive(Debug, Clone)]
pub struct StreamWindowRule {
    budget: u32,
    min: u32,
    max: u32,
    announced: u32,
}

impl StreamWindowRule {
    /// `budget` bytes shared by the open streams, each window within `[min, max]`;
    /// `max` is also what the connection announced at its handshake.
    pub fn new(budget: u32, min: u32, max: u32) -> Self {
        let min = min.min(max);
        StreamWindowRule {
            budget,
            min,
            max,
            announced: max,
        }
    }

    /// The window that `open` streams should each have.
    pub fn target(&self, open: usize) -> u32 {
        let share = u64::from(self.budget) / open.max(1) as u64;
        share.clamp(u64::from(self.min), u64::from(self.max)) as u32
    }

    /// The window currently announced (as far as this rule knows).
    pub fn announced(&self) -> u32 {
        self.announced
    }

    /// With `open` streams now: the window to announce, if it should change. Call
    /// [`StreamWindowRule::handle_announced`] once it is sent.
    pub fn poll_window(&self, open: usize) -> Option<u32> {
        let t = self.target(open);
        let now = self.announced;
        let far_enough = if t < now {
            t <= now - now / 4 || t == self.min
        } else {
            t >= now.saturating_add(now / 4) || t == self.max
        };
        (t != now && far_enough).then_some(t)
    }

    /// `window` was announced.
    pub fn handle_announced(&mut self, window: u32) {
        self.announced = window;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_stream_gets_the_whole_window_many_share_the_budget() {
        let r = StreamWindowRule::new(32 << 20, MIN_STREAM_WINDOW, 8 << 20);
        assert_eq!(r.target(0), 8 << 20);
        assert_eq!(r.target(1), 8 << 20);
        assert_eq!(r.target(4), 8 << 20);
        assert_eq!(r.target(64), 512 << 10);
        assert_eq!(r.target(100_000), MIN_STREAM_WINDOW);
    }

    #[test]
    fn small_moves_are_not_announced() {
        let mut r = StreamWindowRule::new(32 << 20, MIN_STREAM_WINDOW, 8 << 20);
        assert_eq!(r.poll_window(4), None);
        // 5 streams: 6.4 MiB, a fifth less: not yet.
        assert_eq!(r.poll_window(5), None);
        let w = r.poll_window(6).expect("a third less");
        assert_eq!(w, (32 << 20) / 6);
        r.handle_announced(w);
        assert_eq!(r.poll_window(6), None);
        assert_eq!(r.poll_window(7), None);
        // Back to one stream: the whole window again.
        assert_eq!(r.poll_window(1), Some(8 << 20));
    }

    #[test]
    fn reaching_a_bound_is_always_announced() {
        let mut r = StreamWindowRule::new(32 << 20, MIN_STREAM_WINDOW, 8 << 20);
        r.handle_announced(70_000);
        assert_eq!(r.poll_window(1_000), Some(MIN_STREAM_WINDOW));
        r.handle_announced(7 << 20);
        assert_eq!(r.poll_window(0), Some(8 << 20));
    }
}
