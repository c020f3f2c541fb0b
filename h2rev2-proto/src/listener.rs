//! The NAT side: one session's life, reconnects, `conn-ready`, spares.
//!
//! ```text
//!             ┌──────────────── Disconnected / ControlRejected / ConnectFailed ─────┐
//!             ▼                                                                      │
//!   ┌──► Backoff ──timeout──► Connecting ──Connected──► Opening ──ControlAccepted──► Up
//!   │   (full jitter,          (Connect)              (OpenControl)                  │
//!   │    capped, seeded)                                                  conn-ready ─┤─► OpenData
//!   │                                                                  DataFailed ───┘─► pickup-failed
//!   └── Close from any state ──► Closed
//! ```
//!
//! # The 2022 wire ([`ListenerConfig::wire`] = [`Wire::Go2022`])
//!
//! For a public server of the Go package as of April 2022, which has no control stream:
//!
//! ```text
//!   Connecting ──Connected──► Opening (OpenData × max(spares, 1), no role, octet-stream)
//!                                │ first DataOpened
//!                                ▼
//!                                Up ── DataUsed (a dial took a spare) ──► OpenData
//!                                 └─── DataFailed / DataRejected ──► Disconnect, Backoff
//! ```
//!
//! No control stream and no control messages: `max(spares, 1)` streams are kept open as
//! spares, each replaced as soon as the adapter reports it used ([`Event::DataUsed`]:
//! its first byte arrived, or it ended). A stream that cannot be opened ends the
//! session (a 2022 server refuses only when something is wrong, and retrying it at
//! once is what the Go Listener does and should not).
//!
//! Detection: with [`ListenerConfig::detect_2022`] (default on), a Listener of the
//! current wire whose control stream receives an HTTP/1.x request line (a 2022 server
//! took the control stream for a reverse connection and handed it to a dial) switches
//! to the 2022 wire for its next attempts. That is safe to tell: no control-stream
//! server writes anything but JSON objects there. Nothing else switches it; a server
//! that answers with silence is not taken for a 2022 one.
//!
//! The Go Listener gives up after five attempts; this one retries forever unless
//! [`ListenerConfig::max_attempts`] says otherwise. After a session that stayed up for
//! [`ListenerConfig::stable_after`], the backoff starts again from its first step.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::wire::{
    Command, ControlMessage, Decoder, DialerId, MAX_TOKEN_LEN, Role, RouteConfig, Wire,
};

/// Settings of the NAT side.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// The id to register.
    pub id: DialerId,
    /// Route layout of the public server (base path, revdial segment, id key).
    pub routes: RouteConfig,
    /// Mark requests with `role` and echo `conn` tokens (PROTOCOL.md 4.2). Turn off to
    /// behave exactly like the Go Listener on the wire.
    pub mark_roles: bool,
    /// Spare data streams opened as soon as the control stream is up (4.3). Default 2.
    pub spares: usize,
    /// First backoff step. Default 250 ms.
    pub backoff_initial: Duration,
    /// Backoff cap. Default 30 s.
    pub backoff_max: Duration,
    /// A session up for this long resets the backoff. Default 30 s.
    pub stable_after: Duration,
    /// Give up after this many failed attempts in a row; `None` (default) never gives up.
    pub max_attempts: Option<u32>,
    /// For `reconnect_window` after a session that was up goes down, the backoff
    /// grows to at most this (default 1 s): a public server that restarts is found
    /// again within about a second of being back, instead of after a backoff step
    /// that grew while it was down (2 s, 4 s, ...). Later failures grow to
    /// `backoff_max` as usual.
    pub reconnect_max: Duration,
    /// See `reconnect_max`. Default 30 s.
    pub reconnect_window: Duration,
    /// The wire of the public server: [`Wire::Current`] (default, a control stream) or
    /// [`Wire::Go2022`] (no control stream; every stream a reverse connection, see the
    /// module docs).
    pub wire: Wire,
    /// Switch to [`Wire::Go2022`] when the control stream receives an HTTP/1.x request
    /// line (module docs). Default on.
    pub detect_2022: bool,
}

impl ListenerConfig {
    /// Defaults for `id`.
    pub fn new(id: DialerId) -> Self {
        ListenerConfig {
            id,
            routes: RouteConfig::default(),
            mark_roles: true,
            spares: 2,
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            stable_after: Duration::from_secs(30),
            max_attempts: None,
            reconnect_max: Duration::from_secs(1),
            reconnect_window: Duration::from_secs(30),
            wire: Wire::Current,
            detect_2022: true,
        }
    }
}

/// Where the Listener is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for the backoff timer before the next attempt.
    Backoff {
        /// When the next attempt starts.
        until: Instant,
    },
    /// A connection is being made (TCP, TLS, HTTP/2).
    Connecting,
    /// The control request was sent; waiting for its response.
    Opening,
    /// The control stream is up: the session is live.
    Up {
        /// Since when.
        since: Instant,
    },
    /// Closed for good.
    Closed,
}

/// An input to the [`Listener`].
#[derive(Debug)]
pub enum Event<'a> {
    /// The HTTP/2 connection is ready.
    Connected,
    /// The connection attempt failed.
    ConnectFailed {
        /// Why, for the log.
        reason: String,
    },
    /// The control request was answered `200`.
    ControlAccepted,
    /// The control request was answered with another status.
    ControlRejected {
        /// The status.
        status: u16,
        /// The body or reason.
        reason: String,
    },
    /// Bytes arrived on the control stream.
    ControlData(&'a [u8]),
    /// The connection or the control stream was lost.
    Disconnected {
        /// Why.
        reason: String,
    },
    /// A data stream requested with [`Action::OpenData`] was answered `200`.
    DataOpened {
        /// The request's number.
        request: RequestId,
    },
    /// A data stream was answered with another status than `200`.
    DataRejected {
        /// The request's number.
        request: RequestId,
        /// The status.
        status: u16,
        /// The answer's body, trimmed.
        body: String,
    },
    /// A stream opened on the 2022 wire was used: its first byte arrived, or it ended
    /// (ignored on the current wire).
    DataUsed {
        /// The request's number.
        request: RequestId,
    },
    /// A data stream could not be opened.
    DataFailed {
        /// The request's number.
        request: RequestId,
        /// Why; sent to the Dialer in `pickup-failed`.
        reason: String,
    },
    /// Stop for good.
    Close,
}

/// The number of a data stream the [`Listener`] asked to open ([`Action::OpenData`]),
/// echoed in [`Event::DataOpened`] and [`Event::DataFailed`]. Sequential from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// An output of the [`Listener`], carried out in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open the HTTP/2 connection to the public server.
    Connect,
    /// Send the control request (`GET`, no END_STREAM) to this path and query.
    OpenControl {
        /// Path and query.
        path_and_query: String,
    },
    /// Open a data stream to this path and query.
    OpenData {
        /// Its number, for [`Event::DataOpened`] and [`Event::DataFailed`].
        request: RequestId,
        /// Path and query.
        path_and_query: String,
    },
    /// Write these bytes on the control stream.
    SendControl(Vec<u8>),
    /// Tear the connection down (a protocol error on the control stream).
    Disconnect {
        /// Why.
        reason: String,
    },
    /// The session is up.
    Up,
    /// The public server is going away (`going-away`): make before break. Start a
    /// new session to the same address (a load balancer sends it to another replica)
    /// while this one serves on until the server ends it; then do not reconnect it.
    GoingAway,
    /// The session is down; the next attempt starts after `retry_in`.
    Down {
        /// Why.
        reason: DownReason,
        /// The backoff delay.
        retry_in: Duration,
    },
    /// The Listener stopped for good.
    Closed {
        /// Why.
        reason: DownReason,
    },
}

/// Why a Listener's session is down, or why the Listener stopped: a value to match
/// on (a refusal's status decides whether retrying can help), with a `Display` for
/// logs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownReason {
    /// The connection to the public server could not be made (TCP, TLS, HTTP/2);
    /// the adapter's description.
    Connect(String),
    /// The public server answered the control stream with `status` (not 200).
    Refused {
        /// The HTTP status: 401/403 (credentials), 409 (the id is taken), 429/503
        /// (limits), ...
        status: u16,
        /// The answer's body, trimmed.
        body: String,
    },
    /// The connection or the control stream was lost; the adapter's description.
    Lost(String),
    /// The control stream carried something that is not the protocol.
    Protocol(String),
    /// The control stream received an HTTP/1.x request: the public server speaks the
    /// 2022 wire (it took the control stream for a reverse connection). The next
    /// attempts use [`Wire::Go2022`] when [`ListenerConfig::detect_2022`] is on.
    Wire2022Detected,
    /// [`ListenerConfig::max_attempts`] failures in a row; the last one's reason.
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// Why the last one failed.
        last: Box<DownReason>,
    },
    /// The application closed the Listener.
    ClosedByApplication,
}

impl DownReason {
    /// The public server's refusal (status and body), if this is one (also as the
    /// last reason of [`DownReason::GaveUp`]).
    pub fn refusal(&self) -> Option<(u16, &str)> {
        match self {
            DownReason::Refused { status, body } => Some((*status, body)),
            DownReason::GaveUp { last, .. } => last.refusal(),
            _ => None,
        }
    }
}

impl std::fmt::Display for DownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownReason::Connect(d) | DownReason::Lost(d) => f.write_str(d),
            DownReason::Refused { status, body } => {
                write!(
                    f,
                    "public server refused the control stream: {status} {body}"
                )
            }
            DownReason::Protocol(d) => write!(f, "protocol error on the control stream: {d}"),
            DownReason::Wire2022Detected => f.write_str(
                "the public server speaks the 2022 wire (an HTTP request arrived on the \
                 control stream); switching to it",
            ),
            DownReason::GaveUp { attempts, last } => {
                write!(f, "gave up after {attempts} attempts: {last}")
            }
            DownReason::ClosedByApplication => f.write_str("closed by the application"),
        }
    }
}

impl std::error::Error for DownReason {}

/// A data stream being opened.
#[derive(Debug)]
struct Opening {
    request: RequestId,
    /// The `conn-ready` token it answers, if any.
    token: Option<String>,
    /// Whether a `conn-ready` asked for it; a spare opened on the Listener's own
    /// initiative answers nobody, and its failure is not reported.
    asked: bool,
}

/// The NAT side's state machine.
///
/// After [`Listener::new`], drain [`Listener::poll_action`]: the first action is
/// [`Action::Connect`]. After every `handle_*`, drain again, and call
/// [`Listener::handle_timeout`] at [`Listener::poll_timeout`].
#[derive(Debug)]
pub struct Listener {
    config: ListenerConfig,
    state: State,
    attempts: u32,
    decoder: Decoder,
    next_request: u64,
    /// Data streams being opened.
    opening: Vec<Opening>,
    actions: VecDeque<Action>,
    rng: fastrand::Rng,
    /// When the last session that was up went down.
    lost_at: Option<Instant>,
    /// The wire in use: [`ListenerConfig::wire`], or [`Wire::Go2022`] once detected.
    wire: Wire,
    /// The first bytes of the current control stream (for detection).
    first_bytes: Vec<u8>,
    /// 2022 wire: streams open and not yet used.
    spares: Vec<RequestId>,
}

impl Listener {
    /// A Listener that starts connecting at once.
    pub fn new(config: ListenerConfig, seed: u64) -> Self {
        let mut l = Listener {
            state: State::Connecting,
            attempts: 0,
            decoder: Decoder::new(),
            next_request: 0,
            opening: Vec::new(),
            actions: VecDeque::new(),
            rng: fastrand::Rng::with_seed(seed),
            lost_at: None,
            wire: config.wire,
            first_bytes: Vec::new(),
            spares: Vec::new(),
            config,
        };
        l.actions.push_back(Action::Connect);
        l
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The configuration.
    pub fn config(&self) -> &ListenerConfig {
        &self.config
    }

    /// The wire in use: [`ListenerConfig::wire`], or [`Wire::Go2022`] once detected.
    pub fn wire(&self) -> Wire {
        self.wire
    }

    /// Failed attempts in a row so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Feeds one input. Inputs that make no sense in the current state (a late event
    /// from a torn-down connection) are ignored.
    pub fn handle_event(&mut self, now: Instant, event: Event<'_>) {
        if self.state == State::Closed {
            return;
        }
        match event {
            Event::Connected => {
                if self.state == State::Connecting && self.wire == Wire::Go2022 {
                    self.state = State::Opening;
                    self.spares.clear();
                    for _ in 0..self.config.spares.max(1) {
                        self.open_data(None, false);
                    }
                } else if self.state == State::Connecting {
                    self.state = State::Opening;
                    let role = self.config.mark_roles.then_some(Role::Control);
                    self.actions.push_back(Action::OpenControl {
                        path_and_query: self.path(role, None),
                    });
                }
            }
            Event::ConnectFailed { reason } => {
                if self.state == State::Connecting {
                    self.fail(now, DownReason::Connect(reason));
                }
            }
            Event::ControlAccepted => {
                if self.state == State::Opening {
                    self.state = State::Up { since: now };
                    self.decoder = Decoder::new();
                    self.first_bytes.clear();
                    self.actions.push_back(Action::Up);
                    for _ in 0..self.config.spares {
                        self.open_data(None, false);
                    }
                }
            }
            Event::ControlRejected { status, reason } => {
                if self.state == State::Opening {
                    self.actions.push_back(Action::Disconnect {
                        reason: format!("control stream refused: {status} {reason}"),
                    });
                    self.fail(
                        now,
                        DownReason::Refused {
                            status,
                            body: reason,
                        },
                    );
                }
            }
            Event::ControlData(data) => {
                if matches!(self.state, State::Up { .. }) && self.wire == Wire::Current {
                    let room = FIRST_BYTES.saturating_sub(self.first_bytes.len());
                    self.first_bytes
                        .extend_from_slice(&data[..room.min(data.len())]);
                    self.decoder.push(data);
                    self.drain_control(now);
                }
            }
            Event::Disconnected { reason } => {
                if matches!(
                    self.state,
                    State::Up { .. } | State::Opening | State::Connecting
                ) {
                    self.fail(now, DownReason::Lost(reason));
                }
            }
            Event::DataOpened { request } => {
                let Some(i) = self.opening.iter().position(|o| o.request == request) else {
                    return;
                };
                self.opening.swap_remove(i);
                if self.wire == Wire::Go2022 {
                    self.spares.push(request);
                    if self.state == State::Opening {
                        self.state = State::Up { since: now };
                        self.actions.push_back(Action::Up);
                    }
                }
            }
            Event::DataUsed { request } => {
                if self.wire != Wire::Go2022 || !matches!(self.state, State::Up { .. }) {
                    return;
                }
                let Some(i) = self.spares.iter().position(|r| *r == request) else {
                    return;
                };
                self.spares.swap_remove(i);
                if self.spares.len() + self.opening.len() < self.config.spares.max(1) {
                    self.open_data(None, false);
                }
            }
            Event::DataRejected {
                request,
                status,
                body,
            } => {
                if self.wire == Wire::Go2022 {
                    if self.opening.iter().any(|o| o.request == request) {
                        self.end_2022(now, DownReason::Refused { status, body });
                    }
                    return;
                }
                let reason = format!("public server answered {status}: {body}");
                self.handle_event(now, Event::DataFailed { request, reason });
            }
            Event::DataFailed { request, reason } => {
                let Some(i) = self.opening.iter().position(|o| o.request == request) else {
                    return;
                };
                if self.wire == Wire::Go2022 {
                    return self.end_2022(now, DownReason::Lost(reason));
                }
                let Opening { token, asked, .. } = self.opening.swap_remove(i);
                // A spare nobody asked for fails silently: a token-less `pickup-failed`
                // would fail the oldest dial waiting on the Dialer, which is not its.
                if asked && matches!(self.state, State::Up { .. }) {
                    let token = if self.config.mark_roles { token } else { None };
                    self.actions.push_back(Action::SendControl(
                        ControlMessage::pickup_failed(token.as_deref(), &reason).to_bytes(),
                    ));
                }
            }
            Event::Close => {
                self.state = State::Closed;
                self.actions.push_back(Action::Closed {
                    reason: DownReason::ClosedByApplication,
                });
            }
        }
    }

    /// Fires the backoff timer.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let State::Backoff { until } = self.state {
            if now >= until {
                self.state = State::Connecting;
                self.actions.push_back(Action::Connect);
            }
        }
    }

    /// The next action to carry out.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Listener::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Backoff { until } => Some(until),
            _ => None,
        }
    }

    fn path(&self, role: Option<Role>, token: Option<&str>) -> String {
        self.config
            .routes
            .revdial_path_and_query(&self.config.id, role, token)
    }

    /// 2022 wire: a stream could not be opened; the session ends.
    fn end_2022(&mut self, now: Instant, reason: DownReason) {
        if !matches!(self.state, State::Up { .. } | State::Opening) {
            return;
        }
        self.actions.push_back(Action::Disconnect {
            reason: reason.to_string(),
        });
        self.fail(now, reason);
    }

    fn open_data(&mut self, token: Option<String>, asked: bool) {
        let request = RequestId(self.next_request);
        self.next_request += 1;
        // A token the route parser would refuse stays out of the URL (the stream is then
        // matched FIFO instead of failing with 400); a `pickup-failed` still names it.
        let (role, tok) = if self.config.mark_roles && self.wire == Wire::Current {
            (
                Some(Role::Data),
                token.as_deref().filter(|t| t.len() <= MAX_TOKEN_LEN),
            )
        } else {
            (None, None)
        };
        let path_and_query = self.path(role, tok);
        self.opening.push(Opening {
            request,
            token,
            asked,
        });
        self.actions.push_back(Action::OpenData {
            request,
            path_and_query,
        });
    }

    fn drain_control(&mut self, now: Instant) {
        while let Some(msg) = self.decoder.next_message() {
            match msg {
                Ok(m) if m.command == Command::ConnReady => {
                    let token = (!m.conn_path.is_empty()).then_some(m.conn_path);
                    self.open_data(token, true);
                }
                Ok(m) if m.command == Command::GoingAway => {
                    self.actions.push_back(Action::GoingAway);
                }
                Ok(_) => {}
                Err(e) => {
                    let reason = if looks_like_http_request(&self.first_bytes) {
                        if self.config.detect_2022 {
                            self.wire = Wire::Go2022;
                        }
                        DownReason::Wire2022Detected
                    } else {
                        DownReason::Protocol(e.to_string())
                    };
                    self.actions.push_back(Action::Disconnect {
                        reason: reason.to_string(),
                    });
                    self.fail(now, reason);
                    return;
                }
            }
        }
    }

    /// The backoff delay after `attempts` failures in a row (1-based): full jitter over
    /// `[0, min(max, initial * 2^(attempts - 1))]`, so the first delay is at most
    /// `backoff_initial`; `max` is `reconnect_max` for `reconnect_window` after a
    /// session went down.
    fn backoff(&mut self, now: Instant) -> Duration {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let reconnecting = self
            .lost_at
            .is_some_and(|t| now.saturating_duration_since(t) < self.config.reconnect_window);
        let cap = if reconnecting {
            nanos(self.config.backoff_max.min(self.config.reconnect_max))
        } else {
            nanos(self.config.backoff_max)
        };
        let base = nanos(self.config.backoff_initial);
        let step = self.attempts.saturating_sub(1).min(40);
        let exp = base.saturating_mul(1u64 << step).min(cap);
        Duration::from_nanos(self.rng.u64(0..=exp))
    }

    fn fail(&mut self, now: Instant, reason: DownReason) {
        // However the session ended (lost, or a protocol error), a stable one resets
        // the backoff.
        if let State::Up { since } = self.state {
            if now.saturating_duration_since(since) >= self.config.stable_after {
                self.attempts = 0;
            }
            self.lost_at = Some(now);
        }
        self.opening.clear();
        self.spares.clear();
        self.attempts = self.attempts.saturating_add(1);
        if let Some(max) = self.config.max_attempts {
            if self.attempts >= max {
                self.state = State::Closed;
                self.actions.push_back(Action::Closed {
                    reason: DownReason::GaveUp {
                        attempts: max,
                        last: Box::new(reason),
                    },
                });
                return;
            }
        }
        let delay = self.backoff(now);
        self.state = State::Backoff { until: now + delay };
        self.actions.push_back(Action::Down {
            reason,
            retry_in: delay,
        });
    }
}

/// How many first bytes of a control stream are kept for detection.
const FIRST_BYTES: usize = 8192;

/// Whether `b` starts like an HTTP/1.x request line: an upper-case method token, a
/// space, a target, and ` HTTP/1.` on the same line.
fn looks_like_http_request(b: &[u8]) -> bool {
    let Some(sp) = b.iter().position(|c| *c == b' ') else {
        return false;
    };
    if sp == 0 || sp > 16 || !b[..sp].iter().all(u8::is_ascii_uppercase) {
        return false;
    }
    let line_end = b.iter().position(|c| *c == b'\n').unwrap_or(b.len());
    b[..line_end].windows(7).any(|w| w == b" HTTP/1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(l: &mut Listener) -> Vec<Action> {
        std::iter::from_fn(|| l.poll_action()).collect()
    }

    #[test]
    fn happy_path_and_go_mode() {
        let now = Instant::now();
        let mut cfg = ListenerConfig::new(DialerId::new("a").unwrap());
        cfg.spares = 1;
        let mut l = Listener::new(cfg.clone(), 1);
        assert_eq!(drain(&mut l), vec![Action::Connect]);
        l.handle_event(now, Event::Connected);
        assert_eq!(
            drain(&mut l),
            vec![Action::OpenControl {
                path_and_query: "/revdial?id=a&role=control".into()
            }]
        );
        l.handle_event(now, Event::ControlAccepted);
        assert_eq!(
            drain(&mut l),
            vec![
                Action::Up,
                Action::OpenData {
                    request: RequestId(0),
                    path_and_query: "/revdial?id=a&role=data".into()
                }
            ]
        );
        l.handle_event(
            now,
            Event::ControlData(b"{\"command\":\"conn-ready\",\"connPath\":\"t1\"}\n"),
        );
        assert_eq!(
            drain(&mut l),
            vec![Action::OpenData {
                request: RequestId(1),
                path_and_query: "/revdial?id=a&role=data&conn=t1".into()
            }]
        );
        l.handle_event(
            now,
            Event::DataFailed {
                request: RequestId(1),
                reason: "boom".into(),
            },
        );
        assert_eq!(
            drain(&mut l),
            vec![Action::SendControl(
                b"{\"command\":\"pickup-failed\",\"connPath\":\"t1\",\"err\":\"boom\"}\n".to_vec()
            )]
        );

        cfg.mark_roles = false;
        cfg.spares = 0;
        let mut g = Listener::new(cfg, 1);
        let _ = drain(&mut g);
        g.handle_event(now, Event::Connected);
        assert_eq!(
            drain(&mut g),
            vec![Action::OpenControl {
                path_and_query: "/revdial?id=a".into()
            }]
        );
        g.handle_event(now, Event::ControlAccepted);
        g.handle_event(
            now,
            Event::ControlData(b"{\"command\":\"conn-ready\",\"connPath\":\"t1\"}\n"),
        );
        assert_eq!(
            drain(&mut g),
            vec![
                Action::Up,
                Action::OpenData {
                    request: RequestId(0),
                    path_and_query: "/revdial?id=a".into()
                }
            ]
        );
    }

    #[test]
    fn going_away_from_the_server_is_an_action_and_the_session_stays_up() {
        let now = Instant::now();
        let mut l = Listener::new(ListenerConfig::new(DialerId::new("a").unwrap()), 1);
        let _ = drain(&mut l);
        l.handle_event(now, Event::Connected);
        l.handle_event(now, Event::ControlAccepted);
        let _ = drain(&mut l);
        l.handle_event(now, Event::ControlData(b"{\"command\":\"going-away\"}\n"));
        assert_eq!(drain(&mut l), vec![Action::GoingAway]);
        assert!(matches!(l.state(), State::Up { .. }));
        // It still opens the streams the server asks for.
        l.handle_event(now, Event::ControlData(b"{\"command\":\"conn-ready\"}\n"));
        assert!(matches!(
            drain(&mut l).as_slice(),
            [Action::OpenData { .. }]
        ));
    }

    /// Issue 14: the 2022 wire keeps `spares` streams open, no control stream, and
    /// replaces each one once it is used; a refused stream ends the session.
    #[test]
    fn wire_2022_keeps_spares_and_replaces_used_ones() {
        let now = Instant::now();
        let mut cfg = ListenerConfig::new(DialerId::new("a").unwrap());
        cfg.spares = 2;
        cfg.wire = Wire::Go2022;
        let mut l = Listener::new(cfg, 1);
        assert_eq!(drain(&mut l), vec![Action::Connect]);
        l.handle_event(now, Event::Connected);
        let open = |n: u64| Action::OpenData {
            request: RequestId(n),
            path_and_query: "/revdial?id=a".into(),
        };
        assert_eq!(drain(&mut l), vec![open(0), open(1)]);
        assert_eq!(l.state(), State::Opening);
        l.handle_event(
            now,
            Event::DataOpened {
                request: RequestId(0),
            },
        );
        assert_eq!(drain(&mut l), vec![Action::Up]);
        l.handle_event(
            now,
            Event::DataOpened {
                request: RequestId(1),
            },
        );
        assert_eq!(drain(&mut l), vec![]);
        // Used: replaced at once; used twice or unknown: nothing.
        l.handle_event(
            now,
            Event::DataUsed {
                request: RequestId(0),
            },
        );
        assert_eq!(drain(&mut l), vec![open(2)]);
        l.handle_event(
            now,
            Event::DataUsed {
                request: RequestId(0),
            },
        );
        assert_eq!(drain(&mut l), vec![]);
        // Control data is never expected (and ignored).
        l.handle_event(now, Event::ControlData(b"garbage\n"));
        assert_eq!(drain(&mut l), vec![]);
        l.handle_event(
            now,
            Event::DataRejected {
                request: RequestId(2),
                status: 403,
                body: "no".into(),
            },
        );
        let a = drain(&mut l);
        assert!(matches!(a[0], Action::Disconnect { .. }), "{a:?}");
        assert!(
            matches!(
                &a[1],
                Action::Down {
                    reason: DownReason::Refused { status: 403, .. },
                    ..
                }
            ),
            "{a:?}"
        );
    }

    /// A Listener of the current wire whose control stream receives an HTTP request
    /// (a 2022 server handed it to a dial) switches to the 2022 wire; other garbage is
    /// a protocol error and switches nothing.
    #[test]
    fn a_2022_server_is_detected_by_an_http_request_on_the_control_stream() {
        let now = Instant::now();
        let cfg = ListenerConfig::new(DialerId::new("a").unwrap());
        for (bytes, detected) in [
            (&b"GET /get HTTP/1.1\r\nHost: a\r\n\r\n"[..], true),
            (&b"garbage\n"[..], false),
            (&b"GET is not a request line\n"[..], false),
        ] {
            let mut l = Listener::new(cfg.clone(), 1);
            let _ = drain(&mut l);
            l.handle_event(now, Event::Connected);
            l.handle_event(now, Event::ControlAccepted);
            let _ = drain(&mut l);
            // Split anywhere.
            l.handle_event(now, Event::ControlData(&bytes[..3]));
            l.handle_event(now, Event::ControlData(&bytes[3..]));
            let a = drain(&mut l);
            let reason = a.iter().find_map(|a| match a {
                Action::Down { reason, .. } => Some(reason.clone()),
                _ => None,
            });
            assert_eq!(
                reason == Some(DownReason::Wire2022Detected),
                detected,
                "{bytes:?}: {a:?}"
            );
            let want = if detected {
                Wire::Go2022
            } else {
                Wire::Current
            };
            assert_eq!(l.wire(), want);
            let until = l.poll_timeout().unwrap();
            l.handle_timeout(until);
            l.handle_event(until, Event::Connected);
            let next = drain(&mut l);
            assert_eq!(
                matches!(next.last(), Some(Action::OpenData { .. })),
                detected,
                "{next:?}"
            );
        }
        // Off: no switch.
        let mut cfg = cfg;
        cfg.detect_2022 = false;
        let mut l = Listener::new(cfg, 1);
        let _ = drain(&mut l);
        l.handle_event(now, Event::Connected);
        l.handle_event(now, Event::ControlAccepted);
        l.handle_event(now, Event::ControlData(b"GET / HTTP/1.1\r\n"));
        assert_eq!(l.wire(), Wire::Current);
    }

    #[test]
    fn backoff_is_capped_jittered_and_resets() {
        let mut now = Instant::now();
        let mut cfg = ListenerConfig::new(DialerId::new("a").unwrap());
        cfg.backoff_initial = Duration::from_millis(100);
        cfg.backoff_max = Duration::from_secs(2);
        cfg.stable_after = Duration::from_secs(10);
        let mut l = Listener::new(cfg, 7);
        let _ = drain(&mut l);
        let mut delays = Vec::new();
        for _ in 0..20 {
            l.handle_event(
                now,
                Event::ConnectFailed {
                    reason: "refused".into(),
                },
            );
            let until = l.poll_timeout().unwrap();
            delays.push(until - now);
            now = until;
            l.handle_timeout(now);
            assert_eq!(drain(&mut l).last(), Some(&Action::Connect));
        }
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!(delays[0] <= Duration::from_millis(200));
        assert_eq!(l.attempts(), 20);
        l.handle_event(now, Event::Connected);
        l.handle_event(now, Event::ControlAccepted);
        now += Duration::from_secs(11);
        l.handle_event(now, Event::Disconnected { reason: "x".into() });
        assert_eq!(l.attempts(), 1, "a stable session resets the backoff");
    }

    #[test]
    fn after_a_lost_session_retries_stay_within_a_second_for_a_while() {
        let mut now = Instant::now();
        let cfg = ListenerConfig::new(DialerId::new("a").unwrap());
        let mut l = Listener::new(cfg.clone(), 11);
        let _ = drain(&mut l);
        l.handle_event(now, Event::Connected);
        l.handle_event(now, Event::ControlAccepted);
        now += Duration::from_secs(3600);
        l.handle_event(now, Event::Disconnected { reason: "x".into() });
        let lost = now;
        let mut delays = Vec::new();
        loop {
            let until = l.poll_timeout().unwrap();
            delays.push((until - lost, until - now));
            now = until;
            l.handle_timeout(now);
            let _ = drain(&mut l);
            if now - lost > Duration::from_secs(120) {
                break;
            }
            l.handle_event(
                now,
                Event::ConnectFailed {
                    reason: "refused".into(),
                },
            );
        }
        let (within, after): (Vec<_>, Vec<_>) = delays
            .iter()
            .partition(|(at, d)| *at - *d < cfg.reconnect_window);
        assert!(within.len() > 20, "retried often while the server restarts");
        assert!(
            within.iter().all(|(_, d)| *d <= cfg.reconnect_max),
            "{within:?}"
        );
        assert!(
            after.iter().any(|(_, d)| *d > Duration::from_secs(2)),
            "the backoff grows again after the window: {after:?}"
        );
    }

    #[test]
    fn a_refusal_is_typed_even_when_the_listener_gave_up() {
        let now = Instant::now();
        let mut cfg = ListenerConfig::new(DialerId::new("a").unwrap());
        cfg.max_attempts = Some(1);
        let mut l = Listener::new(cfg, 7);
        let _ = drain(&mut l);
        l.handle_event(now, Event::Connected);
        l.handle_event(
            now,
            Event::ControlRejected {
                status: 403,
                reason: "credentials not valid".into(),
            },
        );
        let Some(Action::Closed { reason }) = drain(&mut l).pop() else {
            panic!("closed after one attempt")
        };
        assert_eq!(reason.refusal(), Some((403, "credentials not valid")));
        assert_eq!(
            reason.to_string(),
            "gave up after 1 attempts: public server refused the control stream: 403 \
             credentials not valid"
        );
        assert_eq!(DownReason::Lost("cut".into()).refusal(), None);
    }

    #[test]
    fn gives_up_only_when_told() {
        let now = Instant::now();
        let mut cfg = ListenerConfig::new(DialerId::new("a").unwrap());
        cfg.max_attempts = Some(2);
        let mut l = Listener::new(cfg, 7);
        let _ = drain(&mut l);
        l.handle_event(now, Event::ConnectFailed { reason: "x".into() });
        l.handle_timeout(l.poll_timeout().unwrap());
        l.handle_event(now, Event::ConnectFailed { reason: "x".into() });
        assert_eq!(l.state(), State::Closed);
        assert!(matches!(drain(&mut l).last(), Some(Action::Closed { .. })));
    }
}

#[cfg(test)]
mod token_tests {
    use super::*;

    #[test]
    fn oversized_token_is_dropped_not_echoed() {
        let now = Instant::now();
        let mut l = Listener::new(ListenerConfig::new(DialerId::new("a").unwrap()), 1);
        l.handle_event(now, Event::Connected);
        l.handle_event(now, Event::ControlAccepted);
        while l.poll_action().is_some() {}
        let line = format!(
            "{{\"command\":\"conn-ready\",\"connPath\":\"{}\"}}\n",
            "x".repeat(MAX_TOKEN_LEN + 1)
        );
        l.handle_event(now, Event::ControlData(line.as_bytes()));
        match l.poll_action() {
            Some(Action::OpenData { path_and_query, .. }) => {
                assert_eq!(path_and_query, "/revdial?id=a&role=data")
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Response header of an accepted control stream from a public server that is a
/// replica of a cluster: the replica's name. A Listener that keeps several sessions
/// through one (load-balanced) address uses it to spread them ([`Spread`]).
pub const REPLICA_HEADER: &str = "h2rev2-replica";

/// What [`Spread::claim`] decides about a new session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// No other session of the group is on this replica (or the server names none):
    /// keep it.
    Distinct,
    /// Another session of the group holds this replica: end this one and connect
    /// again (the load balancer will likely pick another replica).
    Duplicate {
        /// The replica.
        replica: String,
    },
    /// A duplicate again after [`Spread::new`]'s `tries` attempts: keep it anyway
    /// (fewer replicas than sessions, or a load balancer that keeps picking the same).
    Kept {
        /// The replica.
        replica: String,
    },
}

/// The sessions of one Listener's connections to one address (`--connections N`):
/// which replica each one landed on, so that they end up on distinct replicas, the
/// way Konnectivity agents spread over the server count. Pure bookkeeping; members
/// are numbered by the caller.
#[derive(Debug, Default)]
pub struct Spread {
    on: std::collections::BTreeMap<u64, String>,
    tries: std::collections::BTreeMap<u64, u32>,
    max_tries: u32,
}

impl Spread {
    /// A group whose members retry a duplicate replica up to `max_tries` times.
    pub fn new(max_tries: u32) -> Self {
        Spread {
            max_tries,
            ..Default::default()
        }
    }

    /// Member `member`'s new session landed on `replica` (`None`: the server names
    /// none, not a cluster).
    pub fn claim(&mut self, member: u64, replica: Option<&str>) -> Claim {
        self.on.remove(&member);
        let Some(replica) = replica else {
            self.tries.remove(&member);
            return Claim::Distinct;
        };
        let taken = self.on.values().any(|r| r == replica);
        self.on.insert(member, replica.to_string());
        if !taken {
            self.tries.remove(&member);
            return Claim::Distinct;
        }
        let tries = self.tries.entry(member).or_insert(0);
        *tries += 1;
        if *tries > self.max_tries {
            self.tries.remove(&member);
            Claim::Kept {
                replica: replica.to_string(),
            }
        } else {
            self.on.remove(&member);
            Claim::Duplicate {
                replica: replica.to_string(),
            }
        }
    }

    /// Member `member`'s session ended (or it is gone).
    pub fn release(&mut self, member: u64) {
        self.on.remove(&member);
    }

    /// How many members hold a session on a named replica.
    pub fn placed(&self) -> usize {
        self.on.len()
    }
}

#[cfg(test)]
mod spread_tests {
    use super::*;

    #[test]
    fn sessions_of_a_group_spread_over_replicas_and_a_duplicate_is_kept_after_the_tries() {
        let mut s = Spread::new(2);
        assert_eq!(s.claim(1, Some("r1")), Claim::Distinct);
        assert_eq!(s.claim(2, Some("r2")), Claim::Distinct);
        // Member 3 lands on r1 twice, then on r3.
        let dup = Claim::Duplicate {
            replica: "r1".into(),
        };
        assert_eq!(s.claim(3, Some("r1")), dup);
        assert_eq!(s.claim(3, Some("r1")), dup);
        assert_eq!(s.claim(3, Some("r3")), Claim::Distinct);
        assert_eq!(s.placed(), 3);
        // Member 2's session ends; its replica is free again.
        s.release(2);
        assert_eq!(s.claim(4, Some("r2")), Claim::Distinct);
        // With two replicas only, a third session is kept after the tries.
        let mut s = Spread::new(2);
        s.claim(1, Some("a"));
        s.claim(2, Some("b"));
        assert!(matches!(s.claim(3, Some("a")), Claim::Duplicate { .. }));
        assert!(matches!(s.claim(3, Some("b")), Claim::Duplicate { .. }));
        assert_eq!(
            s.claim(3, Some("a")),
            Claim::Kept {
                replica: "a".into()
            }
        );
        // A server outside any cluster names no replica: every session is kept.
        assert_eq!(s.claim(4, None), Claim::Distinct);
        // A member that lands again (a reconnect) replaces its own claim.
        assert_eq!(s.claim(3, Some("c")), Claim::Distinct);
    }
}
