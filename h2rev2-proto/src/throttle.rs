//! Refusals that repeat: what to log and how fast to answer.
//!
//! A Listener refused (a wrong token, a taken id, a limit) may retry with no backoff at
//! all: the 2022 Go Listener retries a non-200 answer at once, thousands of times a
//! second. Logging each refusal floods the log, and answering each at once lets the
//! loop spin. [`RefusalThrottle`] counts refusals per peer (the caller's key, e.g. its
//! IP address) in fixed intervals:
//! the first refusal of an interval is logged (with how many were not, since the last
//! line), and once an address has been refused more than
//! [`ThrottleConfig::answer_at_once`] times in an interval, its further refusals are
//! answered only after [`ThrottleConfig::delay`], so a client waiting for the answer
//! retries at most about once per delay per stream.
//!
//! Sans-IO: the caller passes the time and the peer's key, and carries out the delay.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Settings of a [`RefusalThrottle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Length of a counting interval. Default 10 s.
    pub interval: Duration,
    /// Refusals per address and interval answered at once. Default 20.
    pub answer_at_once: u32,
    /// How long later refusals of that address wait for their answer. Default 1 s.
    pub delay: Duration,
    /// Addresses tracked at most; past it the table starts afresh. Default 4,096.
    pub max_addresses: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            interval: Duration::from_secs(10),
            answer_at_once: 20,
            delay: Duration::from_secs(1),
            max_addresses: 4096,
        }
    }
}

/// What to do with one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// Log it: `Some(n)` with the number of this address's refusals not logged since
    /// its last logged one; `None`: do not log this one.
    pub log: Option<u64>,
    /// Answer after this long (zero: at once).
    pub delay: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    since: Instant,
    count: u32,
    unlogged: u64,
}

/// Counts refusals per peer key `K` (the driver uses the IP address); see the module
/// documentation.
#[derive(Debug, Clone)]
pub struct RefusalThrottle<K> {
    config: ThrottleConfig,
    by_addr: HashMap<K, Entry>,
}

impl<K: Hash + Eq> RefusalThrottle<K> {
    /// A throttle with `config`.
    pub fn new(config: ThrottleConfig) -> Self {
        RefusalThrottle {
            config,
            by_addr: HashMap::new(),
        }
    }

    /// `addr` was refused at `now`: whether to log it and when to answer.
    pub fn handle_refusal(&mut self, now: Instant, addr: K) -> Refusal {
        if self.by_addr.len() >= self.config.max_addresses && !self.by_addr.contains_key(&addr) {
            let interval = self.config.interval;
            self.by_addr
                .retain(|_, e| now.saturating_duration_since(e.since) < interval);
            if self.by_addr.len() >= self.config.max_addresses {
                self.by_addr.clear();
            }
        }
        let e = self.by_addr.entry(addr).or_insert(Entry {
            since: now,
            count: 0,
            unlogged: 0,
        });
        let fresh = now.saturating_duration_since(e.since) >= self.config.interval;
        if fresh {
            e.since = now;
            e.count = 0;
        }
        e.count = e.count.saturating_add(1);
        let log = if e.count == 1 {
            Some(std::mem::take(&mut e.unlogged))
        } else {
            e.unlogged += 1;
            None
        };
        let delay = if e.count > self.config.answer_at_once {
            self.config.delay
        } else {
            Duration::ZERO
        };
        Refusal { log, delay }
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.by_addr.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u32 = 1;
    const B: u32 = 2;

    #[test]
    fn the_first_refusal_of_an_interval_is_logged_with_the_count_before_it() {
        let mut t = RefusalThrottle::new(ThrottleConfig::default());
        let t0 = Instant::now();
        assert_eq!(t.handle_refusal(t0, A).log, Some(0));
        for i in 1..1000u64 {
            let r = t.handle_refusal(t0 + Duration::from_millis(i), A);
            assert_eq!(r.log, None);
        }
        // Another address is counted on its own.
        assert_eq!(t.handle_refusal(t0, B).log, Some(0));
        let r = t.handle_refusal(t0 + Duration::from_secs(10), A);
        assert_eq!(r.log, Some(999));
        assert_eq!(
            r.delay,
            Duration::ZERO,
            "a new interval starts counting again"
        );
    }

    #[test]
    fn an_address_refused_too_often_waits_for_its_answers() {
        let cfg = ThrottleConfig::default();
        let mut t = RefusalThrottle::new(cfg);
        let t0 = Instant::now();
        for _ in 0..cfg.answer_at_once {
            assert_eq!(t.handle_refusal(t0, A).delay, Duration::ZERO);
        }
        assert_eq!(t.handle_refusal(t0, A).delay, cfg.delay);
        assert_eq!(t.handle_refusal(t0, B).delay, Duration::ZERO);
    }

    #[test]
    fn the_table_is_bounded() {
        let cfg = ThrottleConfig {
            max_addresses: 8,
            ..ThrottleConfig::default()
        };
        let mut t = RefusalThrottle::new(cfg);
        let t0 = Instant::now();
        for i in 0..100u32 {
            t.handle_refusal(t0, i);
            assert!(t.tracked() <= 8);
        }
    }
}
