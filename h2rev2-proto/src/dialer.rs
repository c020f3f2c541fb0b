//! The public side (the Go `ReversePool`): sessions, pending dials, matching, spares.
//!
//! # Streams of one id
//!
//! ```text
//!  revdial request ──auth──► refused (401/403)
//!        │
//!        ├─ role=control, or unmarked and no session can own it ──► new session
//!        │        (a live session for the id: join / replace / 409 by auth::takeover)
//!        │
//!        └─ role=data, or unmarked while the id has a session ──► data stream
//!                 ├─ conn={token} of a pending dial of its session ─► that dial  (4.2)
//!                 ├─ the session has outstanding conn-ready ────────► oldest dial (FIFO)
//!                 └─ otherwise ─────────────────────────────────────► parked spare (4.3)
//! ```
//!
//! # The 2022 wire
//!
//! A request classified [`Wire::Go2022`] ([`RevdialRequest::classify`]: the April-2022
//! Go Listener, `Content-Type: application/octet-stream` and no `role`) has no control
//! stream behind it. Every such stream is a reverse connection:
//!
//! ```text
//!  2022 stream ─┬─ its connection holds a session of the id ─► data stream (as above)
//!               └─ otherwise ─► new session without control stream (takeover rule as
//!                               for a control stream), the stream its first spare
//! ```
//!
//! Nothing is ever written into such a stream before a dial takes it: no `conn-ready`,
//! no keep-alive. A dial takes a parked one at once; with none parked it waits, in
//! order, until its deadline, for the next stream the Listener opens (that Listener
//! opens one at a time, the next once the last is finished). The session ends with its
//! HTTP/2 connection.
//!
//! An unmarked stream on the HTTP/2 connection of the id's session is a data stream. An
//! unmarked stream on another connection is a data stream while the id has outstanding
//! `conn-ready` (a Go Listener may open a second connection) *and* it proved it owns the
//! id (token or certificate), and otherwise a new control stream: the Listener
//! reconnected (4.2). An anonymous stream from another connection is never handed to a
//! waiting dial: anybody who knows the id could answer that dial with their own bytes
//! (it becomes a control stream, refused with `409` while the session lives).
//!
//! # Dials
//!
//! A dial picks a session of its id round-robin, preferring one with a parked spare:
//! a spare answers at once and a `conn-ready` replenishes it. Otherwise a `conn-ready`
//! carrying a fresh token is sent and the dial waits, until its deadline, for its stream.
//! When a session ends, its waiting dials move to another session of the same id (4.4)
//! or fail. Every dial ends in exactly one [`Action::DialReady`] or [`Action::DialFailed`]
//! (or in silence after [`Event::CancelDial`]).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use crate::auth::{self, AuthPolicy, Credentials, Grant, Principal, Takeover};
use crate::error::{LimitError, Misuse};
use crate::registry::{Registry, SessionKey};
use crate::wire::{Command, ControlMessage, Decoder, DialerId, RevdialRequest, Role, Wire};

/// An HTTP/2 connection, numbered by the adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// A revdial request stream, numbered by the adapter (unique for the Dialer's life).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

/// A dial, numbered by the adapter (unique for the Dialer's life).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DialId(pub u64);

/// Settings of the public side. The defaults are safe on the public internet.
#[derive(Debug, Clone)]
pub struct DialerConfig {
    /// How long a dial waits for its data stream: `504` after that. Default 10 s.
    pub dial_timeout: Duration,
    /// Interval of `keep-alive` messages on each control stream. Default 30 s; zero
    /// turns them off.
    pub keepalive_interval: Duration,
    /// Sessions on the server in total. Default 10,000.
    pub max_sessions: usize,
    /// Sessions (Listeners) holding one id. Default 16.
    pub max_sessions_per_id: usize,
    /// Dials waiting for a stream, per id. Default 1,024.
    pub max_pending_dials_per_id: usize,
    /// Parked spare streams per session. Default 64.
    pub max_spares_per_session: usize,
    /// Who may register which id.
    pub auth: AuthPolicy,
}

impl Default for DialerConfig {
    fn default() -> Self {
        DialerConfig {
            dial_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            max_sessions: 10_000,
            max_sessions_per_id: 16,
            max_pending_dials_per_id: 1024,
            max_spares_per_session: 64,
            auth: AuthPolicy::new(),
        }
    }
}

/// An input to the [`Dialer`].
#[derive(Debug)]
pub enum Event<'a> {
    /// A revdial request arrived (routed by [`crate::wire::RouteConfig::route`]).
    Revdial {
        /// Its HTTP/2 connection.
        conn: ConnId,
        /// Its stream.
        stream: StreamId,
        /// The parsed request.
        request: RevdialRequest,
        /// What the adapter knows of the peer.
        credentials: Credentials<'a>,
    },
    /// Bytes arrived on a control stream (Listener to Dialer).
    ControlData {
        /// The control stream.
        stream: StreamId,
        /// The bytes, split anywhere.
        data: &'a [u8],
    },
    /// A revdial stream that was not handed to a dial ended (EOF, reset, or error).
    /// Streams already handed out with [`Action::DialReady`] are not tracked.
    StreamClosed {
        /// The stream.
        stream: StreamId,
    },
    /// An HTTP/2 connection ended: every session and spare on it ends.
    ConnectionClosed {
        /// The connection.
        conn: ConnId,
    },
    /// A caller wants a reverse connection to `id`.
    Dial {
        /// The dial's number.
        dial: DialId,
        /// The target id.
        id: DialerId,
    },
    /// The caller of a dial gave up; no action will name this dial again.
    CancelDial {
        /// The dial.
        dial: DialId,
    },
}

/// What a stream accepted with [`Action::Accept`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// The control stream of a new session: relay its bytes as [`Event::ControlData`]
    /// and write [`Action::SendControl`] bytes to it.
    Control(SessionKey),
    /// A data stream: hold it until [`Action::DialReady`] or [`Action::Reset`].
    Data(SessionKey),
}

/// An output of the [`Dialer`], for the adapter to carry out in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Answer the revdial request `200` now (headers flushed, no body yet).
    Accept {
        /// The stream.
        stream: StreamId,
        /// What it is.
        kind: StreamKind,
    },
    /// Answer the revdial request with `status` and a short text body.
    Reject {
        /// The stream.
        stream: StreamId,
        /// The HTTP status.
        status: u16,
        /// Why, as a kind (for metrics and log levels; the status follows from it).
        kind: RejectKind,
        /// The text body.
        reason: String,
    },
    /// Write these bytes on a control stream.
    SendControl {
        /// The control stream.
        stream: StreamId,
        /// Encoded control messages.
        data: Vec<u8>,
    },
    /// Reset a stream (`RST_STREAM`), for the reason given.
    Reset {
        /// The stream.
        stream: StreamId,
        /// Why, for the log.
        reason: String,
    },
    /// The dial is answered: the data stream is the reverse connection.
    DialReady {
        /// The dial.
        dial: DialId,
        /// Its stream, already answered `200` by an earlier [`Action::Accept`].
        stream: StreamId,
    },
    /// The dial failed.
    DialFailed {
        /// The dial.
        dial: DialId,
        /// Why.
        error: DialError,
    },
    /// A session started (for logs and metrics).
    SessionUp {
        /// The session.
        session: SessionKey,
        /// Its id.
        id: DialerId,
        /// Its connection.
        conn: ConnId,
    },
    /// A session ended (for logs and metrics).
    SessionDown {
        /// The session.
        session: SessionKey,
        /// Its id.
        id: DialerId,
        /// Why.
        reason: String,
    },
}

/// Why a dial failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialError {
    /// No Listener holds the id.
    NoSession,
    /// No data stream arrived before the deadline.
    Timeout,
    /// The Listener could not open the data stream (`pickup-failed`).
    PickupFailed(String),
    /// The session ended and no other session of the id could take the dial.
    SessionClosed(String),
    /// A limit was reached.
    Limit(LimitError),
}

/// Why a revdial request was refused ([`Action::Reject`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectKind {
    /// No credentials, wrong ones, or another session's conn token (`401`/`403`).
    Auth,
    /// The id is held by a live session the request may not replace or join (`409`).
    Conflict,
    /// A limit was reached (`429`/`503`).
    Limit,
    /// The request itself is malformed (`400`).
    BadRequest,
}

impl DialError {
    /// The HTTP status a proxy answers with (PROTOCOL.md 2.2); a limit answers with
    /// its own status ([`LimitError::status`]).
    pub fn status(&self) -> u16 {
        match self {
            DialError::Timeout => 504,
            DialError::Limit(l) => l.status(),
            _ => 502,
        }
    }
}

impl DialError {
    /// A short reason safe to show a Client (a proxied request's error body): no
    /// detail that came from the Listener's side (its addresses, its errors), which
    /// [`Display`](fmt::Display) includes for the log.
    pub fn client_text(&self) -> String {
        match self {
            DialError::NoSession => "no Listener is connected for this id".into(),
            DialError::Timeout => "timed out waiting for a reverse connection".into(),
            DialError::PickupFailed(_) => "the Listener could not open a reverse connection".into(),
            DialError::SessionClosed(_) => "the Listener's session ended".into(),
            DialError::Limit(l) => l.to_string(),
        }
    }
}

impl fmt::Display for DialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialError::NoSession => f.write_str("no Listener is connected for this id"),
            DialError::Timeout => f.write_str("timed out waiting for a reverse connection"),
            DialError::PickupFailed(e) => {
                write!(f, "the Listener failed to open the connection: {e}")
            }
            DialError::SessionClosed(e) => write!(f, "the Listener's session ended: {e}"),
            DialError::Limit(l) => l.fmt(f),
        }
    }
}

impl std::error::Error for DialError {}

/// The reason of a session ended by [`Dialer::reconfigure`] because the new policy
/// no longer admits it.
pub const REVOKED: &str = "its credential was revoked by a configuration reload";

/// What [`Dialer::reconfigure`] ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconfigured {
    /// The sessions ended, with their ids and connections (each also reported by
    /// [`Action::SessionDown`]).
    pub ended: Vec<(SessionKey, DialerId, ConnId)>,
    /// Connections that carried an ended session and carry no session now: the
    /// adapter closes them, so that no stream of a revoked Listener (an idle pooled
    /// reverse connection) serves again.
    pub idle_conns: Vec<ConnId>,
}

/// Counters, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Live sessions.
    pub sessions: usize,
    /// Distinct ids with a session.
    pub ids: usize,
    /// Dials waiting for a stream.
    pub pending_dials: usize,
    /// Parked spare streams.
    pub spares: usize,
}

#[derive(Debug)]
struct Session {
    conn: ConnId,
    /// What admitted it: a reconfiguration ends it once the policy no longer would.
    grant: Grant,
    /// `None` for a 2022-wire session ([`Wire::Go2022`]): no control stream, and no
    /// `conn-ready` or keep-alive to send; its Listener opens streams on its own.
    control: Option<StreamId>,
    decoder: Decoder,
    /// Dials with a `conn-ready` sent and no stream yet, oldest first.
    outstanding: VecDeque<DialId>,
    spares: VecDeque<StreamId>,
    next_keepalive: Instant,
}

#[derive(Debug, Clone, Copy)]
enum Tracked {
    Control(SessionKey),
    Spare(SessionKey),
}

#[derive(Debug)]
struct PendingDial {
    session: SessionKey,
    token: String,
    deadline: Instant,
}

/// The public side's state machine.
///
/// Drive it with [`Dialer::handle_event`] and [`Dialer::handle_timeout`]; after each call
/// drain [`Dialer::poll_action`] until `None`, then sleep until [`Dialer::poll_timeout`].
pub struct Dialer {
    config: DialerConfig,
    sessions: Registry<Session>,
    streams: HashMap<StreamId, Tracked>,
    dials: HashMap<DialId, PendingDial>,
    tokens: HashMap<String, DialId>,
    deadlines: BTreeSet<(Instant, DialId)>,
    keepalives: BTreeSet<(Instant, SessionKey)>,
    actions: VecDeque<Action>,
    rng: fastrand::Rng,
    rr: usize,
    /// [`Dialer::go_away`] was called: new sessions are refused.
    going_away: bool,
}

impl fmt::Debug for Dialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dialer")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Dialer {
    /// A Dialer with `config`; `seed` feeds the generator of `conn-ready` tokens.
    pub fn new(config: DialerConfig, seed: u64) -> Self {
        Dialer {
            config,
            sessions: Registry::new(),
            streams: HashMap::new(),
            dials: HashMap::new(),
            tokens: HashMap::new(),
            deadlines: BTreeSet::new(),
            keepalives: BTreeSet::new(),
            actions: VecDeque::new(),
            rng: fastrand::Rng::with_seed(seed),
            rr: 0,
            going_away: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DialerConfig {
        &self.config
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        let mut spares = 0;
        for (_, _, s) in self.sessions.iter() {
            spares += s.spares.len();
        }
        Stats {
            sessions: self.sessions.len(),
            ids: self.sessions.id_count(),
            pending_dials: self.dials.len(),
            spares,
        }
    }

    /// Spare streams parked for the session `key` now; `None` once it has ended.
    pub fn session_spares(&self, key: SessionKey) -> Option<usize> {
        self.sessions.get(key).map(|s| s.spares.len())
    }

    /// Whether `id` has at least one live session.
    pub fn has_session(&self, id: &DialerId) -> bool {
        !self.sessions.sessions(id).is_empty()
    }

    /// Feeds one input. `Err` means the adapter broke the API contract (a bug); the
    /// machine is unchanged then. Errors of the peer are handled inside (the session or
    /// stream concerned is refused or closed) and reported through actions.
    pub fn handle_event(&mut self, now: Instant, event: Event<'_>) -> Result<(), Misuse> {
        match event {
            Event::Revdial {
                conn,
                stream,
                request,
                credentials,
            } => {
                if self.streams.contains_key(&stream) {
                    return Err(Misuse("revdial stream id reused"));
                }
                self.on_revdial(now, conn, stream, request, &credentials);
            }
            Event::ControlData { stream, data } => match self.streams.get(&stream) {
                Some(Tracked::Control(key)) => {
                    let key = *key;
                    self.on_control_data(now, key, data);
                }
                Some(Tracked::Spare(_)) => return Err(Misuse("control data on a data stream")),
                // The session may have ended while bytes were in flight.
                None => {}
            },
            Event::StreamClosed { stream } => match self.streams.remove(&stream) {
                Some(Tracked::Control(key)) => {
                    self.close_session(now, key, "control stream closed".into(), false)
                }
                Some(Tracked::Spare(key)) => {
                    if let Some(s) = self.sessions.get_mut(key) {
                        s.spares.retain(|x| *x != stream);
                    }
                }
                None => {}
            },
            Event::ConnectionClosed { conn } => {
                let keys: Vec<SessionKey> = self
                    .sessions
                    .iter()
                    .filter(|(_, _, s)| s.conn == conn)
                    .map(|(k, _, _)| k)
                    .collect();
                for key in keys {
                    self.close_session(now, key, "connection closed".into(), false);
                }
            }
            Event::Dial { dial, id } => {
                if self.dials.contains_key(&dial) {
                    return Err(Misuse("dial id reused"));
                }
                self.on_dial(now, dial, id);
            }
            Event::CancelDial { dial } => {
                if let Some(p) = self.dials.remove(&dial) {
                    self.forget_dial(dial, &p);
                    if let Some(s) = self.sessions.get_mut(p.session) {
                        s.outstanding.retain(|d| *d != dial);
                    }
                }
            }
        }
        Ok(())
    }

    /// Replaces the configuration (a live reload). Limits, timeouts and the policy
    /// apply to what comes next (new sessions, dials, streams); live sessions that the
    /// new policy would no longer admit ([`AuthPolicy::still_admits`]: their token was
    /// removed or changed, certificates or anonymous mode turned off) end now, their
    /// control stream reset, with the reason [`REVOKED`]; every other session is
    /// untouched, over the limits or not.
    pub fn reconfigure(&mut self, now: Instant, config: DialerConfig) -> Reconfigured {
        let revoked: Vec<(SessionKey, DialerId, ConnId)> = self
            .sessions
            .iter()
            .filter(|(_, id, s)| !config.auth.still_admits(id, &s.grant))
            .map(|(k, id, s)| (k, id.clone(), s.conn))
            .collect();
        let interval_changed = config.keepalive_interval != self.config.keepalive_interval;
        self.config = config;
        let mut out = Reconfigured::default();
        for (key, id, conn) in revoked {
            self.close_session(now, key, REVOKED.into(), true);
            out.ended.push((key, id, conn));
            if !out.idle_conns.contains(&conn) {
                out.idle_conns.push(conn);
            }
        }
        // A connection that still carries a session is not idle.
        out.idle_conns
            .retain(|c| !self.sessions.iter().any(|(_, _, s)| s.conn == *c));
        if interval_changed {
            // Keep-alives follow the new interval from now on.
            let interval = self.config.keepalive_interval;
            self.keepalives.clear();
            let keys: Vec<SessionKey> = self.sessions.iter().map(|(k, _, _)| k).collect();
            for key in keys {
                if let Some(s) = self.sessions.get_mut(key) {
                    if s.control.is_some() && !interval.is_zero() {
                        s.next_keepalive = now + interval;
                        self.keepalives.insert((now + interval, key));
                    }
                }
            }
        }
        out
    }

    /// This server is going away (a replica being stopped): every session's Listener
    /// is told (`going-away`, PROTOCOL.md 4.5) so that it opens a new session
    /// elsewhere while this one goes on serving, and new sessions are refused with
    /// `503` from now on. Sessions end later, when the adapter ends their streams.
    pub fn go_away(&mut self) {
        if self.going_away {
            return;
        }
        self.going_away = true;
        let message = ControlMessage::going_away().to_bytes();
        let controls: Vec<StreamId> = self
            .sessions
            .iter()
            .filter_map(|(_, _, s)| s.control)
            .collect();
        for stream in controls {
            self.actions.push_back(Action::SendControl {
                stream,
                data: message.clone(),
            });
        }
    }

    /// Whether [`Dialer::go_away`] was called.
    pub fn going_away(&self) -> bool {
        self.going_away
    }

    /// Fires the timers due at `now`: dial deadlines and keep-alives.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, dial)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(p) = self.dials.remove(&dial) {
                self.forget_dial(dial, &p);
                if let Some(s) = self.sessions.get_mut(p.session) {
                    s.outstanding.retain(|d| *d != dial);
                }
                self.actions.push_back(Action::DialFailed {
                    dial,
                    error: DialError::Timeout,
                });
            }
        }
        while let Some(&(at, key)) = self.keepalives.first() {
            if at > now {
                break;
            }
            self.keepalives.pop_first();
            let interval = self.config.keepalive_interval;
            if let Some(s) = self.sessions.get_mut(key) {
                let Some(stream) = s.control else { continue };
                s.next_keepalive = now + interval;
                self.keepalives.insert((now + interval, key));
                self.actions.push_back(Action::SendControl {
                    stream,
                    data: ControlMessage::keep_alive().to_bytes(),
                });
            }
        }
    }

    /// The next action to carry out, in order.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Dialer::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let a = self.deadlines.first().map(|(t, _)| *t);
        let b = self.keepalives.first().map(|(t, _)| *t);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn reject(&mut self, stream: StreamId, status: u16, reason: impl Into<String>) {
        let kind = match status {
            401 | 403 => RejectKind::Auth,
            409 => RejectKind::Conflict,
            429 | 503 => RejectKind::Limit,
            _ => RejectKind::BadRequest,
        };
        self.actions.push_back(Action::Reject {
            stream,
            status,
            kind,
            reason: reason.into(),
        });
    }

    fn on_revdial(
        &mut self,
        now: Instant,
        conn: ConnId,
        stream: StreamId,
        req: RevdialRequest,
        creds: &Credentials<'_>,
    ) {
        let grant = match self.config.auth.admit(&req.id, creds) {
            Ok(g) => g,
            Err(e) => return self.reject(stream, e.status(), e.to_string()),
        };
        let principal = grant.principal();
        let own = self
            .sessions
            .sessions(&req.id)
            .iter()
            .copied()
            .find(|k| self.sessions.get(*k).is_some_and(|s| s.conn == conn));
        if req.wire == Wire::Go2022 {
            // Every stream of a 2022 Listener is a reverse connection: a stream on the
            // connection of its session parks as a spare (or answers the oldest waiting
            // dial); the first one on a new connection starts a session without a
            // control stream, by the same takeover rule as a control stream.
            return match own {
                Some(key) => self.on_data(stream, key, None),
                None => self.on_control(now, conn, stream, req.id, grant, false, Wire::Go2022),
            };
        }
        match req.role {
            Some(Role::Control) => {
                self.on_control(now, conn, stream, req.id, grant, true, Wire::Current)
            }
            Some(Role::Data) => match own {
                Some(key) => self.on_data(stream, key, req.conn),
                None => self.reject(stream, 409, "no session for this id on this connection"),
            },
            None => {
                if let Some(key) = own {
                    return self.on_data(stream, key, req.conn);
                }
                // A Go Listener may open a data stream on a second connection while a
                // conn-ready is outstanding: give it to the oldest such dial's session,
                // but only if it proved it owns the id. An anonymous one could be anybody
                // racing the real Listener to answer the dial (a hijack).
                if principal != Principal::Authenticated {
                    return self.on_control(now, conn, stream, req.id, grant, false, Wire::Current);
                }
                let waiting = self
                    .sessions
                    .sessions(&req.id)
                    .iter()
                    .copied()
                    .filter_map(|k| {
                        let s = self.sessions.get(k)?;
                        let d = *s.outstanding.front()?;
                        Some((self.dials.get(&d)?.deadline, k))
                    })
                    .min();
                match waiting {
                    Some((_, key)) if req.conn.is_none() => self.on_data(stream, key, None),
                    _ => self.on_control(now, conn, stream, req.id, grant, false, Wire::Current),
                }
            }
        }
    }

    /// Starts a session on `stream`: its control stream, or for [`Wire::Go2022`] its
    /// first reverse connection, parked as a spare.
    #[allow(clippy::too_many_arguments)]
    fn on_control(
        &mut self,
        now: Instant,
        conn: ConnId,
        stream: StreamId,
        id: DialerId,
        grant: Grant,
        explicit: bool,
        wire: Wire,
    ) {
        if self.going_away {
            return self.reject(
                stream,
                503,
                "this server is going away: connect again (another replica takes the session)",
            );
        }
        let principal = grant.principal();
        let live: Vec<SessionKey> = self.sessions.sessions(&id).to_vec();
        let mut replace = false;
        if !live.is_empty() {
            match auth::takeover(principal, explicit) {
                Takeover::Refuse => {
                    return self.reject(stream, 409, format!("id {id} is held by a live session"));
                }
                Takeover::Join => {
                    if live.len() >= self.config.max_sessions_per_id {
                        let l = LimitError::SessionsPerId;
                        return self.reject(stream, l.status(), l.to_string());
                    }
                }
                Takeover::Replace => replace = true,
            }
        }
        let replaced = if replace { live.len() } else { 0 };
        if self.sessions.len() - replaced >= self.config.max_sessions {
            let l = LimitError::Sessions;
            return self.reject(stream, l.status(), l.to_string());
        }
        let go2022 = wire == Wire::Go2022;
        let key = self.sessions.insert(
            id.clone(),
            Session {
                conn,
                grant,
                control: (!go2022).then_some(stream),
                decoder: Decoder::new(),
                outstanding: VecDeque::new(),
                spares: VecDeque::new(),
                next_keepalive: now + self.config.keepalive_interval,
            },
        );
        if go2022 {
            // Nothing is written into it: it waits, parked, for the next dial.
            self.streams.insert(stream, Tracked::Spare(key));
            if let Some(s) = self.sessions.get_mut(key) {
                s.spares.push_back(stream);
            }
            self.actions.push_back(Action::Accept {
                stream,
                kind: StreamKind::Data(key),
            });
        } else {
            self.streams.insert(stream, Tracked::Control(key));
            self.actions.push_back(Action::Accept {
                stream,
                kind: StreamKind::Control(key),
            });
        }
        if !go2022 && !self.config.keepalive_interval.is_zero() {
            // A zero interval would fire at `now` for ever: it means no keep-alives.
            self.keepalives
                .insert((now + self.config.keepalive_interval, key));
        }
        self.actions.push_back(Action::SessionUp {
            session: key,
            id,
            conn,
        });
        if replace {
            for old in live {
                self.close_session(now, old, "replaced by a new session".into(), true);
            }
        }
    }

    fn on_data(&mut self, stream: StreamId, key: SessionKey, token: Option<String>) {
        let dial = match token {
            Some(t) => match self.tokens.get(&t).copied() {
                Some(d) if self.dials.get(&d).is_some_and(|p| p.session == key) => Some(d),
                Some(_) => {
                    return self.reject(stream, 403, "conn token belongs to another session");
                }
                // Its dial timed out or was cancelled: keep the stream as a spare.
                None => None,
            },
            None => self
                .sessions
                .get(key)
                .and_then(|s| s.outstanding.front().copied()),
        };
        if let Some(dial) = dial {
            let p = self.dials.remove(&dial).expect("tracked dial");
            self.forget_dial(dial, &p);
            if let Some(s) = self.sessions.get_mut(key) {
                s.outstanding.retain(|d| *d != dial);
            }
            self.actions.push_back(Action::Accept {
                stream,
                kind: StreamKind::Data(key),
            });
            self.actions.push_back(Action::DialReady { dial, stream });
            return;
        }
        let max = self.config.max_spares_per_session;
        let Some(s) = self.sessions.get_mut(key) else {
            return self.reject(stream, 409, "session ended");
        };
        if s.spares.len() >= max {
            let l = LimitError::Spares;
            return self.reject(stream, l.status(), l.to_string());
        }
        s.spares.push_back(stream);
        self.streams.insert(stream, Tracked::Spare(key));
        self.actions.push_back(Action::Accept {
            stream,
            kind: StreamKind::Data(key),
        });
    }

    fn on_control_data(&mut self, now: Instant, key: SessionKey, data: &[u8]) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        s.decoder.push(data);
        loop {
            let Some(s) = self.sessions.get_mut(key) else {
                return;
            };
            match s.decoder.next_message() {
                None => return,
                Some(Err(e)) => {
                    return self.close_session(now, key, format!("protocol error: {e}"), true);
                }
                Some(Ok(msg)) => {
                    if msg.command != Command::PickupFailed {
                        // keep-alive or conn-ready from a Listener, or unknown: ignored.
                        continue;
                    }
                    let dial = if msg.conn_path.is_empty() {
                        s.outstanding.pop_front()
                    } else {
                        self.tokens
                            .get(&msg.conn_path)
                            .copied()
                            .filter(|d| self.dials.get(d).is_some_and(|p| p.session == key))
                    };
                    let Some(dial) = dial else { continue };
                    if let Some(p) = self.dials.remove(&dial) {
                        self.forget_dial(dial, &p);
                        if let Some(s) = self.sessions.get_mut(key) {
                            s.outstanding.retain(|d| *d != dial);
                        }
                        self.actions.push_back(Action::DialFailed {
                            dial,
                            error: DialError::PickupFailed(msg.err),
                        });
                    }
                }
            }
        }
    }

    fn on_dial(&mut self, now: Instant, dial: DialId, id: DialerId) {
        let keys = self.sessions.sessions(&id);
        if keys.is_empty() {
            return self.actions.push_back(Action::DialFailed {
                dial,
                error: DialError::NoSession,
            });
        }
        let n = keys.len();
        let start = self.rr % n;
        self.rr = self.rr.wrapping_add(1);
        let order: Vec<SessionKey> = (0..n).map(|i| keys[(start + i) % n]).collect();
        // A parked spare answers at once.
        for key in &order {
            let s = self.sessions.get_mut(*key).expect("registered");
            if let Some(stream) = s.spares.pop_front() {
                let control = s.control;
                self.streams.remove(&stream);
                self.actions.push_back(Action::DialReady { dial, stream });
                // A 2022 Listener replaces the stream on its own once it is finished.
                let Some(control) = control else { return };
                // The replenishing `conn-ready` carries a token that names no dial: the
                // stream it brings parks as a spare, and a `pickup-failed` for it (from
                // a Listener of ours, which echoes the token) fails no waiting dial.
                let token = self.new_token();
                self.actions.push_back(Action::SendControl {
                    stream: control,
                    data: ControlMessage::conn_ready(Some(&token)).to_bytes(),
                });
                return;
            }
        }
        let pending: usize = order
            .iter()
            .map(|k| self.sessions.get(*k).map_or(0, |s| s.outstanding.len()))
            .sum();
        if pending >= self.config.max_pending_dials_per_id {
            return self.actions.push_back(Action::DialFailed {
                dial,
                error: DialError::Limit(LimitError::PendingDials),
            });
        }
        let key = *order
            .iter()
            .min_by_key(|k| {
                self.sessions
                    .get(**k)
                    .map_or(usize::MAX, |s| s.outstanding.len())
            })
            .expect("non-empty");
        let token = self.new_token();
        let deadline = now + self.config.dial_timeout;
        self.deadlines.insert((deadline, dial));
        self.tokens.insert(token.clone(), dial);
        self.dials.insert(
            dial,
            PendingDial {
                session: key,
                token,
                deadline,
            },
        );
        self.send_conn_ready(key, dial);
    }

    fn send_conn_ready(&mut self, key: SessionKey, dial: DialId) {
        let token = self.dials[&dial].token.clone();
        let s = self.sessions.get_mut(key).expect("registered");
        s.outstanding.push_back(dial);
        // A 2022 session has no control stream: the dial waits, in order, for the next
        // stream its Listener opens (until its deadline).
        if let Some(control) = s.control {
            self.actions.push_back(Action::SendControl {
                stream: control,
                data: ControlMessage::conn_ready(Some(&token)).to_bytes(),
            });
        }
    }

    fn new_token(&mut self) -> String {
        loop {
            let t = format!("{:016x}", self.rng.u64(..));
            if !self.tokens.contains_key(&t) {
                return t;
            }
        }
    }

    fn forget_dial(&mut self, dial: DialId, p: &PendingDial) {
        self.tokens.remove(&p.token);
        self.deadlines.remove(&(p.deadline, dial));
    }

    fn close_session(
        &mut self,
        _now: Instant,
        key: SessionKey,
        reason: String,
        reset_control: bool,
    ) {
        let Some((id, s)) = self.sessions.remove(key) else {
            return;
        };
        if let Some(control) = s.control {
            self.streams.remove(&control);
            self.keepalives.remove(&(s.next_keepalive, key));
            if reset_control {
                self.actions.push_back(Action::Reset {
                    stream: control,
                    reason: reason.clone(),
                });
            }
        }
        for spare in s.spares {
            self.streams.remove(&spare);
            self.actions.push_back(Action::Reset {
                stream: spare,
                reason: "session ended".into(),
            });
        }
        self.actions.push_back(Action::SessionDown {
            session: key,
            id: id.clone(),
            reason: reason.clone(),
        });
        // Fail over waiting dials to another session of the id (4.4).
        let others: Vec<SessionKey> = self.sessions.sessions(&id).to_vec();
        for (i, dial) in s.outstanding.into_iter().enumerate() {
            if others.is_empty() {
                if let Some(p) = self.dials.remove(&dial) {
                    self.forget_dial(dial, &p);
                }
                self.actions.push_back(Action::DialFailed {
                    dial,
                    error: DialError::SessionClosed(reason.clone()),
                });
            } else {
                let target = others[i % others.len()];
                if let Some(p) = self.dials.get_mut(&dial) {
                    p.session = target;
                }
                self.send_conn_ready(target, dial);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revdial(conn: u64, stream: u64, id: &str, bearer: Option<&str>) -> Event<'static> {
        Event::Revdial {
            conn: ConnId(conn),
            stream: StreamId(stream),
            request: RevdialRequest {
                id: DialerId::new(id).unwrap(),
                role: None,
                conn: None,
                wire: crate::wire::Wire::Current,
            },
            credentials: Credentials {
                bearer: bearer.map(|b| Box::leak(b.to_string().into_boxed_str()) as &str),
                cert_identities: &[],
            },
        }
    }

    fn actions(d: &mut Dialer) -> Vec<Action> {
        std::iter::from_fn(|| d.poll_action()).collect()
    }

    /// A server going away tells every session's Listener, keeps serving their dials,
    /// and refuses new sessions with 503.
    #[test]
    fn going_away_tells_every_listener_keeps_dialing_and_refuses_new_sessions() {
        let now = Instant::now();
        let mut config = DialerConfig::default();
        config.auth.add_token(DialerId::new("a").unwrap(), "ta");
        config.auth.add_token(DialerId::new("b").unwrap(), "tb");
        let mut d = Dialer::new(config, 1);
        d.handle_event(now, revdial(1, 1, "a", Some("ta"))).unwrap();
        d.handle_event(now, revdial(2, 3, "b", Some("tb"))).unwrap();
        let _ = actions(&mut d);
        d.go_away();
        d.go_away();
        let mut told: Vec<u64> = actions(&mut d)
            .into_iter()
            .map(|a| match a {
                Action::SendControl { stream, data } => {
                    assert_eq!(data, b"{\"command\":\"going-away\"}\n");
                    stream.0
                }
                other => panic!("{other:?}"),
            })
            .collect();
        told.sort();
        assert_eq!(told, [1, 3]);
        assert!(d.going_away());
        // A new session (the Listener of a, reconnecting here) is refused...
        d.handle_event(now, revdial(3, 5, "a", Some("ta"))).unwrap();
        let a = actions(&mut d);
        assert!(
            matches!(
                a.as_slice(),
                [Action::Reject {
                    status: 503,
                    kind: RejectKind::Limit,
                    ..
                }]
            ),
            "{a:?}"
        );
        // ...while the live one still answers dials.
        d.handle_event(
            now,
            Event::Dial {
                dial: DialId(1),
                id: DialerId::new("a").unwrap(),
            },
        )
        .unwrap();
        let a = actions(&mut d);
        assert!(
            a.iter().any(|a| matches!(
                a,
                Action::SendControl {
                    stream: StreamId(1),
                    ..
                }
            )),
            "{a:?}"
        );
        d.handle_event(now, revdial(1, 7, "a", Some("ta"))).unwrap();
        assert!(actions(&mut d).contains(&Action::DialReady {
            dial: DialId(1),
            stream: StreamId(7)
        }));
    }

    /// Issue 6: an anonymous newcomer on another connection cannot answer a dial that
    /// waits for the live session's stream; an authenticated one (a Go Listener with a
    /// second connection) can.
    #[test]
    fn only_an_owner_answers_a_waiting_dial_from_another_connection() {
        let now = Instant::now();
        let id = DialerId::new("app").unwrap();
        let mut config = DialerConfig::default();
        config.auth.allow_anonymous_for(vec![id.clone()]);
        config
            .auth
            .add_token(DialerId::new("tok-app").unwrap(), "tok");
        let mut d = Dialer::new(config, 1);
        d.handle_event(now, revdial(1, 1, "app", None)).unwrap();
        d.handle_event(
            now,
            Event::Dial {
                dial: DialId(1),
                id: id.clone(),
            },
        )
        .unwrap();
        let _ = actions(&mut d);
        // The stranger's unmarked stream is a control stream: 409, the dial still waits.
        d.handle_event(now, revdial(2, 2, "app", None)).unwrap();
        let a = actions(&mut d);
        assert!(
            matches!(a.as_slice(), [Action::Reject { status: 409, .. }]),
            "{a:?}"
        );
        assert_eq!(d.stats().pending_dials, 1);
        // The session's own connection answers it.
        d.handle_event(now, revdial(1, 3, "app", None)).unwrap();
        let a = actions(&mut d);
        assert!(a.contains(&Action::DialReady {
            dial: DialId(1),
            stream: StreamId(3)
        }));

        // With a token, a second connection may answer (a Go Listener's second conn).
        let id = DialerId::new("tok-app").unwrap();
        d.handle_event(now, revdial(3, 4, "tok-app", Some("tok")))
            .unwrap();
        d.handle_event(
            now,
            Event::Dial {
                dial: DialId(2),
                id,
            },
        )
        .unwrap();
        let _ = actions(&mut d);
        d.handle_event(now, revdial(4, 5, "tok-app", Some("tok")))
            .unwrap();
        let a = actions(&mut d);
        assert!(a.contains(&Action::DialReady {
            dial: DialId(2),
            stream: StreamId(5)
        }));
    }

    /// A reload ends exactly the sessions whose token it removed or changed: their
    /// control streams are reset, their waiting dials fail, their connections are
    /// reported idle when no other session lives there; the other sessions keep
    /// their streams and dials, and the new policy decides the next registrations.
    #[test]
    fn reconfigure_ends_exactly_the_revoked_sessions() {
        let now = Instant::now();
        let i = |s: &str| DialerId::new(s).unwrap();
        let mut config = DialerConfig::default();
        config.auth.add_token(i("a"), "ta").add_token(i("b"), "tb");
        config.auth.add_token(i("c"), "tc");
        let mut d = Dialer::new(config.clone(), 1);
        // a on connection 1, b on connection 2; c shares connection 2 with b.
        d.handle_event(now, revdial(1, 1, "a", Some("ta"))).unwrap();
        d.handle_event(now, revdial(2, 2, "b", Some("tb"))).unwrap();
        d.handle_event(now, revdial(2, 3, "c", Some("tc"))).unwrap();
        for (dial, id) in [(1, "a"), (2, "b")] {
            d.handle_event(
                now,
                Event::Dial {
                    dial: DialId(dial),
                    id: i(id),
                },
            )
            .unwrap();
        }
        let _ = actions(&mut d);

        // a's token changed, c's removed, b's kept; a new id d.
        let mut new = config.clone();
        new.auth = AuthPolicy::new();
        new.auth.add_token(i("a"), "ta2").add_token(i("b"), "tb");
        new.auth.add_token(i("d"), "td");
        let out = d.reconfigure(now, new);
        let mut ended: Vec<&str> = out.ended.iter().map(|(_, id, _)| id.as_str()).collect();
        ended.sort();
        assert_eq!(ended, ["a", "c"]);
        // Connection 2 still carries b: only connection 1 is idle.
        assert_eq!(out.idle_conns, vec![ConnId(1)]);
        let a = actions(&mut d);
        assert!(a.contains(&Action::Reset {
            stream: StreamId(1),
            reason: REVOKED.into()
        }));
        assert!(a.contains(&Action::Reset {
            stream: StreamId(3),
            reason: REVOKED.into()
        }));
        assert!(!a.iter().any(|x| matches!(
            x,
            Action::Reset {
                stream: StreamId(2),
                ..
            }
        )));
        assert!(a.contains(&Action::DialFailed {
            dial: DialId(1),
            error: DialError::SessionClosed(REVOKED.into())
        }));
        let downs = a
            .iter()
            .filter(|x| matches!(x, Action::SessionDown { reason, .. } if reason == REVOKED))
            .count();
        assert_eq!(downs, 2, "{a:?}");
        assert!(d.has_session(&i("b")) && !d.has_session(&i("a")) && !d.has_session(&i("c")));
        // b's dial still waits and its stream answers it.
        assert_eq!(d.stats().pending_dials, 1);
        d.handle_event(now, revdial(2, 4, "b", Some("tb"))).unwrap();
        assert!(actions(&mut d).contains(&Action::DialReady {
            dial: DialId(2),
            stream: StreamId(4)
        }));
        // The new policy decides registrations: the old token of a is refused, the new
        // one and d's are admitted; a stranger gets 401.
        d.handle_event(now, revdial(3, 5, "a", Some("ta"))).unwrap();
        assert!(matches!(
            actions(&mut d).as_slice(),
            [Action::Reject { status: 403, .. }]
        ));
        d.handle_event(now, revdial(3, 6, "a", Some("ta2")))
            .unwrap();
        d.handle_event(now, revdial(4, 7, "d", Some("td"))).unwrap();
        assert_eq!(d.stats().sessions, 3);
        let _ = actions(&mut d);
        d.handle_event(now, revdial(5, 8, "e", None)).unwrap();
        assert!(matches!(
            actions(&mut d).as_slice(),
            [Action::Reject { status: 401, .. }]
        ));
    }

    fn revdial_2022(conn: u64, stream: u64, id: &str) -> Event<'static> {
        let Event::Revdial {
            conn,
            stream,
            request,
            credentials,
        } = revdial(conn, stream, id, None)
        else {
            unreachable!()
        };
        Event::Revdial {
            conn,
            stream,
            request: request.classify(Some(b"application/octet-stream")),
            credentials,
        }
    }

    fn anonymous(ids: &[&str]) -> Dialer {
        let mut config = DialerConfig::default();
        config
            .auth
            .allow_anonymous_for(ids.iter().map(|i| DialerId::new(*i).unwrap()).collect());
        Dialer::new(config, 7)
    }

    /// Issue 14: a 2022 Listener's streams are parked spares, nothing is written into
    /// them, and dials queue for the next stream instead of failing.
    #[test]
    fn a_2022_listener_streams_are_spares_and_dials_queue() {
        let now = Instant::now();
        let id = DialerId::new("001").unwrap();
        let mut d = anonymous(&["001"]);
        d.handle_event(now, revdial_2022(1, 1, "001")).unwrap();
        let a = actions(&mut d);
        assert!(
            matches!(
                a.as_slice(),
                [
                    Action::Accept {
                        stream: StreamId(1),
                        kind: StreamKind::Data(_)
                    },
                    Action::SessionUp { .. }
                ]
            ),
            "{a:?}"
        );
        assert_eq!(d.stats().spares, 1);
        // No keep-alive is ever written: there is no control stream.
        assert_eq!(d.poll_timeout(), None);
        d.handle_timeout(now + Duration::from_secs(3600));
        assert_eq!(actions(&mut d), vec![]);

        // Three dials at once: the first takes the spare, the others wait; nothing is
        // written anywhere.
        for n in 1..=3 {
            d.handle_event(
                now,
                Event::Dial {
                    dial: DialId(n),
                    id: id.clone(),
                },
            )
            .unwrap();
        }
        let a = actions(&mut d);
        assert_eq!(
            a,
            vec![Action::DialReady {
                dial: DialId(1),
                stream: StreamId(1)
            }]
        );
        assert_eq!(d.stats().pending_dials, 2);
        // The next streams answer the waiting dials in order.
        d.handle_event(now, revdial_2022(1, 2, "001")).unwrap();
        d.handle_event(now, revdial_2022(1, 3, "001")).unwrap();
        let ready: Vec<_> = actions(&mut d)
            .into_iter()
            .filter_map(|a| match a {
                Action::DialReady { dial, stream } => Some((dial.0, stream.0)),
                Action::Accept { .. } => None,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ready, vec![(2, 2), (3, 3)]);
        // A dial with no stream coming times out (504), bounded by the dial timeout.
        d.handle_event(
            now,
            Event::Dial {
                dial: DialId(4),
                id: id.clone(),
            },
        )
        .unwrap();
        assert_eq!(actions(&mut d), vec![]);
        assert_eq!(d.poll_timeout(), Some(now + d.config().dial_timeout));
        d.handle_timeout(now + d.config().dial_timeout);
        assert_eq!(
            actions(&mut d),
            vec![Action::DialFailed {
                dial: DialId(4),
                error: DialError::Timeout
            }]
        );
        // The session lives with its connection, not with its streams.
        assert!(d.has_session(&id));
        d.handle_event(now, Event::ConnectionClosed { conn: ConnId(1) })
            .unwrap();
        assert!(!d.has_session(&id));
    }

    /// A stranger's 2022 stream on another connection cannot take a live id; a parked
    /// spare the Listener resets is forgotten, and the session stays.
    #[test]
    fn a_2022_session_follows_the_takeover_rule_and_forgets_reset_spares() {
        let now = Instant::now();
        let id = DialerId::new("001").unwrap();
        let mut d = anonymous(&["001"]);
        d.handle_event(now, revdial_2022(1, 1, "001")).unwrap();
        let _ = actions(&mut d);
        d.handle_event(now, revdial_2022(2, 2, "001")).unwrap();
        let a = actions(&mut d);
        assert!(
            matches!(a.as_slice(), [Action::Reject { status: 409, .. }]),
            "{a:?}"
        );
        d.handle_event(
            now,
            Event::StreamClosed {
                stream: StreamId(1),
            },
        )
        .unwrap();
        assert_eq!(d.stats().spares, 0);
        assert!(d.has_session(&id));
        d.handle_event(
            now,
            Event::Dial {
                dial: DialId(1),
                id: id.clone(),
            },
        )
        .unwrap();
        assert_eq!(actions(&mut d), vec![]);
        d.handle_event(now, revdial_2022(1, 3, "001")).unwrap();
        assert!(actions(&mut d).contains(&Action::DialReady {
            dial: DialId(1),
            stream: StreamId(3)
        }));
    }

    /// Only the 2022 Listener's exact signature is classified as such.
    #[test]
    fn classification() {
        use crate::wire::{Route, RouteConfig};
        let cfg = RouteConfig::default();
        let req = |q: &str| match cfg.route("/revdial", Some(q)).unwrap() {
            Route::Revdial(r) => r,
            other => panic!("{other:?}"),
        };
        let ct = |v: &'static str| Some(v.as_bytes());
        let w = |q: &str, c: Option<&[u8]>| req(q).classify(c).wire;
        assert_eq!(w("id=a", ct("application/octet-stream")), Wire::Go2022);
        assert_eq!(
            w("id=a", ct("Application/Octet-Stream ; x=1")),
            Wire::Go2022
        );
        assert_eq!(w("id=a", None), Wire::Current);
        assert_eq!(w("id=a", ct("text/plain")), Wire::Current);
        assert_eq!(w("id=a", ct("application/octet-streamx")), Wire::Current);
        assert_eq!(
            w("id=a&role=data", ct("application/octet-stream")),
            Wire::Current
        );
        assert_eq!(
            w("id=a&role=control", ct("application/octet-stream")),
            Wire::Current
        );
        assert_eq!(
            w("id=a&conn=t", ct("application/octet-stream")),
            Wire::Current
        );
    }
}
