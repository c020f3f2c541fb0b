//! The Listener machine on arbitrary event sequences: no panic, legal transitions,
//! requests that route back to what it meant, `pickup-failed` only for streams a
//! `conn-ready` asked for, and backoff delays inside the capped exponential envelope
//! (never over `backoff_max`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use h2rev2_proto::listener::{Action, Event, Listener, ListenerConfig, RequestId, State};
use h2rev2_proto::wire::{Command, ControlMessage, Decoder, DialerId, Role, Route};

/// One input event (or the passing of time).
#[derive(Debug, Clone, Arbitrary)]
pub enum Op {
    /// The connection is up.
    Connected,
    /// The connection attempt failed.
    ConnectFailed,
    /// The control request was answered 200.
    ControlAccepted,
    /// The control request was refused.
    ControlRejected(u16),
    /// A `conn-ready`, with this `connPath`.
    ConnReady(Option<String>),
    /// A `keep-alive`.
    KeepAlive,
    /// A line that is not JSON.
    Garbage,
    /// Raw control bytes.
    RawControl(Vec<u8>),
    /// The connection or control stream was lost.
    Disconnected,
    /// A data stream (picked among those asked for) was answered 200.
    DataOpened(u8),
    /// A data stream (picked among those asked for) failed.
    DataFailed(u8),
    /// The application closes the Listener.
    Close,
    /// Time passes (milliseconds).
    Advance(u32),
    /// The backoff timer is fired (even early).
    Timeout,
}

/// A configuration and events.
#[derive(Debug, Clone, Arbitrary)]
pub struct Input {
    /// Mark requests with roles and tokens.
    pub mark_roles: bool,
    /// Spare streams (modulo 4).
    pub spares: u8,
    /// First backoff step, ms.
    pub initial_ms: u32,
    /// Backoff cap, ms (up to centuries).
    pub max_ms: u64,
    /// Stability threshold, ms.
    pub stable_ms: u32,
    /// Give up after this many failures.
    pub max_attempts: Option<u8>,
    /// Seed of the jitter.
    pub seed: u64,
    /// The events.
    pub ops: Vec<Op>,
}

#[derive(Debug)]
struct Req {
    token: Option<String>,
    asked: bool,
}

/// The checks.
pub fn check(input: &Input) {
    let id = DialerId::new("listener-1").unwrap();
    let mut cfg = ListenerConfig::new(id.clone());
    cfg.mark_roles = input.mark_roles;
    cfg.spares = (input.spares % 4) as usize;
    cfg.backoff_initial = Duration::from_millis(input.initial_ms as u64);
    cfg.backoff_max = Duration::from_millis(input.max_ms);
    cfg.stable_after = Duration::from_millis(input.stable_ms as u64);
    cfg.max_attempts = input.max_attempts.map(u32::from);
    let routes = cfg.routes.clone();
    let mut now = Instant::now();
    let mut l = Listener::new(cfg.clone(), input.seed);
    assert_eq!(l.poll_action(), Some(Action::Connect));
    assert_eq!(l.poll_action(), None);

    let mut requests: HashMap<RequestId, Req> = HashMap::new();
    let mut order: Vec<RequestId> = Vec::new();
    let mut next_request = 0u64;
    let mut attempts = 0u32;
    // Raw bytes may leave a partial line that changes the next conn-ready's token.
    let mut raw_dirty = false;

    for op in &input.ops {
        let before = l.state();
        let mut picked = None;
        match op {
            Op::Connected => l.handle_event(now, Event::Connected),
            Op::ConnectFailed => l.handle_event(now, Event::ConnectFailed { reason: "x".into() }),
            Op::ControlAccepted => l.handle_event(now, Event::ControlAccepted),
            Op::ControlRejected(status) => l.handle_event(
                now,
                Event::ControlRejected {
                    status: *status,
                    reason: "no".into(),
                },
            ),
            Op::ConnReady(token) => {
                let bytes = ControlMessage::conn_ready(token.as_deref()).to_bytes();
                l.handle_event(now, Event::ControlData(&bytes))
            }
            Op::KeepAlive => {
                let bytes = ControlMessage::keep_alive().to_bytes();
                l.handle_event(now, Event::ControlData(&bytes))
            }
            Op::Garbage => l.handle_event(now, Event::ControlData(b"garbage\n")),
            Op::RawControl(bytes) => l.handle_event(now, Event::ControlData(bytes)),
            Op::Disconnected => l.handle_event(now, Event::Disconnected { reason: "x".into() }),
            Op::DataOpened(k) | Op::DataFailed(k) => {
                let request = if order.is_empty() {
                    RequestId(u64::from(*k))
                } else {
                    order[*k as usize % order.len()]
                };
                picked = Some(request);
                if matches!(op, Op::DataOpened(_)) {
                    l.handle_event(now, Event::DataOpened { request });
                } else {
                    l.handle_event(
                        now,
                        Event::DataFailed {
                            request,
                            reason: "refused".into(),
                        },
                    );
                }
            }
            Op::Close => l.handle_event(now, Event::Close),
            Op::Advance(ms) => now += Duration::from_millis(u64::from(*ms)),
            Op::Timeout => l.handle_timeout(now),
        }
        let after = l.state();
        let actions: Vec<Action> = std::iter::from_fn(|| l.poll_action()).collect();
        if before == State::Closed {
            assert!(actions.is_empty(), "actions after Closed: {actions:?}");
        }
        if matches!(op, Op::RawControl(_)) && matches!(before, State::Up { .. }) {
            raw_dirty = true;
        }
        let asked = matches!(op, Op::ConnReady(_) | Op::RawControl(_));
        let mut pickups = 0;
        // Whether the session is up at this point of the batch (a batch may open data
        // streams and then, on a later bad line, tear the session down).
        let mut up = matches!(before, State::Up { .. });
        for a in &actions {
            match a {
                Action::Connect => {
                    assert!(matches!(before, State::Backoff { .. }));
                    assert_eq!(after, State::Connecting);
                }
                Action::OpenControl { path_and_query } => {
                    assert_eq!(before, State::Connecting);
                    let r = route(&routes, path_and_query);
                    assert_eq!(r.id, id);
                    assert_eq!(r.role, cfg.mark_roles.then_some(Role::Control));
                    assert_eq!(r.conn, None);
                }
                Action::OpenData {
                    request,
                    path_and_query,
                } => {
                    assert!(up, "OpenData while {after:?}");
                    assert_eq!(request.0, next_request, "request numbers are sequential");
                    next_request += 1;
                    let token = match op {
                        Op::ConnReady(t) => t.clone().filter(|t| !t.is_empty()),
                        _ => None,
                    };
                    let valid = token.as_ref().is_none_or(|t| t.len() <= 128);
                    if valid && !raw_dirty && !matches!(op, Op::RawControl(_)) {
                        let r = route(&routes, path_and_query);
                        assert_eq!(r.id, id);
                        if cfg.mark_roles {
                            assert_eq!(r.role, Some(Role::Data));
                            assert_eq!(r.conn, token);
                        } else {
                            assert_eq!((r.role, r.conn), (None, None));
                        }
                    }
                    requests.insert(*request, Req { token, asked });
                    order.push(*request);
                }
                Action::SendControl(bytes) => {
                    pickups += 1;
                    let request = picked.expect("pickup-failed answers a DataFailed");
                    assert!(matches!(op, Op::DataFailed(_)));
                    assert!(matches!(after, State::Up { .. }));
                    let req = &requests[&request];
                    assert!(req.asked, "pickup-failed for a spare nobody asked for");
                    let mut d = Decoder::new();
                    d.push(bytes);
                    let m = d.next_message().unwrap().unwrap();
                    assert!(d.next_message().is_none());
                    assert_eq!(m.command, Command::PickupFailed);
                    assert_eq!(m.err, "refused");
                    if cfg.mark_roles && !raw_dirty {
                        assert_eq!(
                            Some(m.conn_path.clone()).filter(|t| !t.is_empty()),
                            req.token
                        );
                    } else if !cfg.mark_roles {
                        assert_eq!(m.conn_path, "");
                    }
                }
                Action::Disconnect { .. } => {}
                Action::GoingAway => {
                    // Only from the server's own words, on a live session.
                    assert!(matches!(op, Op::RawControl(_)), "GoingAway after {op:?}");
                    assert!(up, "GoingAway while {after:?}");
                }
                Action::Up => {
                    assert!(matches!(after, State::Up { .. }));
                    up = true;
                    raw_dirty = false;
                }
                Action::Down { retry_in, .. } => {
                    up = false;
                    attempts = match before {
                        State::Up { since } if now - since >= cfg.stable_after => 1,
                        _ => attempts + 1,
                    };
                    assert_eq!(l.attempts(), attempts);
                    assert!(*retry_in <= cfg.backoff_max, "{retry_in:?} > backoff_max");
                    let step = attempts.saturating_sub(1).min(40);
                    let envelope = cfg
                        .backoff_initial
                        .checked_mul(1u32 << step.min(31))
                        .unwrap_or(Duration::MAX)
                        .min(cfg.backoff_max);
                    if step < 31 {
                        assert!(*retry_in <= envelope, "{retry_in:?} > {envelope:?}");
                    }
                    assert_eq!(
                        after,
                        State::Backoff {
                            until: now + *retry_in
                        }
                    );
                    requests.clear();
                    order.clear();
                }
                Action::Closed { .. } => {
                    up = false;
                    assert_eq!(after, State::Closed);
                    requests.clear();
                    order.clear();
                }
            }
        }
        if let (Op::DataFailed(_), Some(r)) = (op, picked) {
            let expected =
                matches!(after, State::Up { .. }) && requests.get(&r).is_some_and(|q| q.asked);
            assert_eq!(pickups, usize::from(expected), "pickup-failed for {r:?}");
        }
        if let Some(r) = picked {
            if matches!(op, Op::DataOpened(_) | Op::DataFailed(_)) {
                requests.remove(&r);
                order.retain(|x| *x != r);
            }
        }
        match after {
            State::Backoff { until } => assert_eq!(l.poll_timeout(), Some(until)),
            _ => assert_eq!(l.poll_timeout(), None),
        }
    }
}

fn route(routes: &h2rev2_proto::wire::RouteConfig, pq: &str) -> h2rev2_proto::wire::RevdialRequest {
    let (path, query) = pq.split_once('?').expect("query");
    match routes.route(path, Some(query)) {
        Ok(Route::Revdial(r)) => r,
        other => panic!("{pq:?} routes to {other:?}"),
    }
}
