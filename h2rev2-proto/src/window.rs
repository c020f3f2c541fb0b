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
//!
//! ## Re-checking the windows after a decrease
//!
//! A receiver sends a stream's `WINDOW_UPDATE` when its application releases bytes and
//! the released credit reaches a threshold (h2: half the window). A decrease applied
//! when the peer acknowledges it can leave a stream whose reader already released
//! everything with a window at or below zero: the sender is blocked, the receiver has
//! credit to give but nothing makes it look again, and the stream stalls for good (the
//! bug nghttp2 fixed in 2022, #1679; h2 has it too). A reverse conn pooled for
//! keep-alive is exactly such a stream: tens of small responses received, all read,
//! under the 4 MiB threshold of an 8 MiB window, then 500 Clients arrive, the window
//! drops to 64 KiB and its next response never comes. So after each decrease the rule
//! asks the driver to make every stream of the tunnel look again
//! ([`StreamWindowRule::poll_recheck`]): a few times soon after (the acknowledgement
//! takes a round trip), then now and then while the window stays below its maximum.

use std::time::{Duration, Instant};

/// The smallest stream window the rule announces: HTTP/2's own default.
pub const MIN_STREAM_WINDOW: u32 = 65_535;

/// When the streams are re-checked after a decrease is announced, from the
/// announcement: then every [`RECHECK_EVERY`] while the window is below its maximum.
pub const RECHECK_AFTER: [Duration; 3] = [
    Duration::from_millis(20),
    Duration::from_millis(200),
    Duration::from_secs(1),
];

/// How often the streams are re-checked while the window is below its maximum, once
/// the re-checks of [`RECHECK_AFTER`] are done.
pub const RECHECK_EVERY: Duration = Duration::from_secs(2);

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
    /// When the last decrease was announced, and how many re-checks followed it.
    decreased: Option<(Instant, usize)>,
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
            decreased: None,
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

    /// `window` was announced at `now`.
    pub fn handle_announced(&mut self, now: Instant, window: u32) {
        if window < self.announced {
            self.decreased = Some((now, 0));
        }
        self.announced = window;
    }

    /// When the streams should next be re-checked (see the module docs): `None` when
    /// no decrease needs it.
    #[must_use]
    pub fn poll_recheck(&self) -> Option<Instant> {
        let (at, done) = self.decreased?;
        match RECHECK_AFTER.get(done) {
            Some(after) => Some(at + *after),
            None if self.announced < self.max => {
                let periodic = done - RECHECK_AFTER.len() + 1;
                Some(at + RECHECK_AFTER[RECHECK_AFTER.len() - 1] + RECHECK_EVERY * periodic as u32)
            }
            None => None,
        }
    }

    /// The streams were re-checked (at the time [`StreamWindowRule::poll_recheck`] gave).
    pub fn handle_recheck(&mut self) {
        if let Some((_, done)) = &mut self.decreased {
            *done += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decrease_is_followed_by_rechecks_until_the_window_is_back() {
        let t0 = Instant::now();
        let mut r = StreamWindowRule::new(32 << 20, MIN_STREAM_WINDOW, 8 << 20);
        assert_eq!(r.poll_recheck(), None);
        // An increase alone needs none.
        r.handle_announced(t0, 8 << 20);
        assert_eq!(r.poll_recheck(), None);
        r.handle_announced(t0, MIN_STREAM_WINDOW);
        let mut at = Vec::new();
        for _ in 0..5 {
            let next = r.poll_recheck().expect("the window is below its maximum");
            at.push(next - t0);
            r.handle_recheck();
        }
        let ms = Duration::from_millis;
        assert_eq!(at, [ms(20), ms(200), ms(1000), ms(3000), ms(5000)]);
        // Back to the maximum: the periodic re-checks stop.
        r.handle_announced(t0 + ms(5000), 8 << 20);
        assert_eq!(r.poll_recheck(), None);
        // A new decrease starts the soon ones again from its own time.
        let t1 = t0 + Duration::from_secs(9);
        r.handle_announced(t1, 1 << 20);
        assert_eq!(r.poll_recheck(), Some(t1 + ms(20)));
    }

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
        r.handle_announced(Instant::now(), w);
        assert_eq!(r.poll_window(6), None);
        assert_eq!(r.poll_window(7), None);
        // Back to one stream: the whole window again.
        assert_eq!(r.poll_window(1), Some(8 << 20));
    }

    #[test]
    fn reaching_a_bound_is_always_announced() {
        let mut r = StreamWindowRule::new(32 << 20, MIN_STREAM_WINDOW, 8 << 20);
        r.handle_announced(Instant::now(), 70_000);
        assert_eq!(r.poll_window(1_000), Some(MIN_STREAM_WINDOW));
        r.handle_announced(Instant::now(), 7 << 20);
        assert_eq!(r.poll_window(0), Some(8 << 20));
    }
}
