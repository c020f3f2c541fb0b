//! The Dialer against a reference model.
//!
//! The model keeps the Dialer's state in plain vectors and maps and predicts, for each
//! operation, the exact sequence of actions (reasons and random tokens aside: a new
//! session key and a new `conn-ready` token are read from the action that introduces
//! them, and checked for freshness). After every operation the counters
//! ([`Dialer::stats`]) and the next timer ([`Dialer::poll_timeout`]) must match the
//! model. At the end, time runs past the dial timeout and every connection closes:
//! nothing may remain pending, and every dial that was not cancelled while waiting must
//! have been answered exactly once (a second answer, or an answer to a cancelled dial,
//! is an unexpected action and fails earlier). A stream is never handed out twice.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use h2rev2_proto::LimitError;
use h2rev2_proto::auth::Credentials;
use h2rev2_proto::dialer::{
    Action, ConnId, DialError, DialId, Dialer, DialerConfig, Event, StreamId, StreamKind,
};
use h2rev2_proto::registry::SessionKey;
use h2rev2_proto::wire::{Command, ControlMessage, Decoder, DialerId, RevdialRequest, Role};

/// The ids in play: `a` and `b` have tokens `ta` and `tb`; `c` has none (anonymous
/// only, when allowed).
pub const IDS: [&str; 3] = ["a", "b", "c"];
/// HTTP/2 connections in play.
pub const CONNS: u8 = 3;

/// The `role` of a revdial request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum RoleChoice {
    /// Unmarked (a Go Listener).
    None,
    /// `role=control`.
    Control,
    /// `role=data`.
    Data,
}

/// A `conn` token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum TokenChoice {
    /// None.
    None,
    /// The token of the n-th dial made (modulo), if it got one.
    OfDial(u8),
    /// A token nobody issued.
    Bogus,
}

/// Credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum CredChoice {
    /// No credentials.
    None,
    /// The right bearer token for the id (`a`: `ta`, `b`: `tb`; `c` has none).
    Good,
    /// A wrong bearer token.
    Bad,
}

/// Bytes a Listener sends on its control stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum ControlChoice {
    /// `pickup-failed`, with or without a token.
    PickupFailed(TokenChoice),
    /// `keep-alive` (ignored).
    KeepAlive,
    /// `conn-ready` from a Listener (ignored).
    ConnReady,
    /// An unknown command (ignored).
    Unknown,
    /// A line that is not JSON: protocol error, the session is reset.
    Garbage,
    /// Half a line, no newline: the next complete message becomes garbage.
    Partial,
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
pub enum Op {
    /// A revdial request arrives on a new stream.
    Revdial {
        /// Connection (modulo [`CONNS`]).
        conn: u8,
        /// Id (modulo 3).
        id: u8,
        /// Role.
        role: RoleChoice,
        /// `conn` token (ignored with `role=control`, as the route parser refuses it).
        token: TokenChoice,
        /// Credentials.
        cred: CredChoice,
    },
    /// A dial.
    Dial {
        /// Id (modulo 3).
        id: u8,
    },
    /// The caller of the n-th dial (modulo) gives up.
    Cancel {
        /// Which dial.
        dial: u8,
    },
    /// Bytes on the control stream of the n-th live session (modulo), in two pieces.
    Control {
        /// Which session.
        session: u8,
        /// What.
        msg: ControlChoice,
        /// Where to cut.
        split: u8,
    },
    /// The n-th stream ever made (modulo) ends.
    CloseStream {
        /// Which stream.
        stream: u8,
    },
    /// A connection ends.
    CloseConn {
        /// Which (modulo [`CONNS`]).
        conn: u8,
    },
    /// The server is going away ([`Dialer::go_away`]).
    GoAway,
    /// Time passes, then the timers fire.
    Advance {
        /// Milliseconds.
        ms: u16,
    },
}

/// The Dialer's configuration, in small ranges so limits are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub struct ConfigChoice {
    /// 0: no anonymous mode, 1: anonymous for `c` only, 2: for any id.
    pub anon: u8,
    /// `max_sessions` = 1 + this % 6.
    pub max_sessions: u8,
    /// `max_sessions_per_id` = 1 + this % 3.
    pub max_per_id: u8,
    /// `max_pending_dials_per_id` = 1 + this % 8.
    pub max_pending: u8,
    /// `max_spares_per_session` = this % 3.
    pub max_spares: u8,
    /// `dial_timeout` = 1 + this % 5 seconds.
    pub dial_timeout: u8,
    /// `keepalive_interval` = this % 11 seconds (0: keep-alives off).
    pub keepalive: u8,
}

/// A whole run.
#[derive(Debug, Clone, Arbitrary)]
pub struct Input {
    /// Configuration.
    pub config: ConfigChoice,
    /// The Dialer's seed.
    pub seed: u64,
    /// The operations.
    pub ops: Vec<Op>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Principal {
    Authenticated,
    Anonymous,
}

#[derive(Debug)]
struct MSession {
    key: SessionKey,
    id: usize,
    conn: u8,
    control: StreamId,
    outstanding: VecDeque<DialId>,
    spares: VecDeque<StreamId>,
    /// `None` when keep-alives are off.
    next_keepalive: Option<Instant>,
    /// Half a line is buffered.
    partial: bool,
}

#[derive(Debug)]
struct MDial {
    session: SessionKey,
    token: String,
    deadline: Instant,
}

struct Model {
    anon: u8,
    max_sessions: usize,
    max_per_id: usize,
    max_pending: usize,
    max_spares: usize,
    dial_timeout: Duration,
    keepalive: Duration,
    now: Instant,
    /// Live sessions, in registration order.
    sessions: Vec<MSession>,
    dials: BTreeMap<DialId, MDial>,
    rr: usize,
    /// Every dial made, in order, with its first token.
    made: Vec<(DialId, Option<String>)>,
    answered: HashSet<DialId>,
    cancelled: HashSet<DialId>,
    handed: HashSet<StreamId>,
    streams: Vec<StreamId>,
    next_stream: u64,
    next_dial: u64,
    /// The actions of the current operation, not yet matched.
    actions: VecDeque<Action>,
    /// [`Op::GoAway`] happened: new sessions are refused with 503.
    going_away: bool,
}

impl ConfigChoice {
    fn dialer_config(&self) -> DialerConfig {
        let mut c = DialerConfig {
            dial_timeout: Duration::from_secs(1 + u64::from(self.dial_timeout % 5)),
            keepalive_interval: Duration::from_secs(u64::from(self.keepalive % 11)),
            max_sessions: 1 + usize::from(self.max_sessions % 6),
            max_sessions_per_id: 1 + usize::from(self.max_per_id % 3),
            max_pending_dials_per_id: 1 + usize::from(self.max_pending % 8),
            max_spares_per_session: usize::from(self.max_spares % 3),
            ..DialerConfig::default()
        };
        c.auth
            .add_token(DialerId::new("a").unwrap(), "ta")
            .add_token(DialerId::new("b").unwrap(), "tb");
        match self.anon % 3 {
            0 => {}
            1 => {
                c.auth
                    .allow_anonymous_for(vec![DialerId::new("c").unwrap()]);
            }
            _ => {
                c.auth.allow_anonymous();
            }
        }
        c
    }
}

/// Runs `input` against the Dialer and the model; panics on any divergence.
pub fn check(input: &Input) {
    let config = input.config.dialer_config();
    let now = Instant::now();
    let mut m = Model {
        anon: input.config.anon % 3,
        max_sessions: config.max_sessions,
        max_per_id: config.max_sessions_per_id,
        max_pending: config.max_pending_dials_per_id,
        max_spares: config.max_spares_per_session,
        dial_timeout: config.dial_timeout,
        keepalive: config.keepalive_interval,
        now,
        sessions: Vec::new(),
        dials: BTreeMap::new(),
        rr: 0,
        made: Vec::new(),
        answered: HashSet::new(),
        cancelled: HashSet::new(),
        handed: HashSet::new(),
        streams: Vec::new(),
        next_stream: 1,
        next_dial: 1,
        actions: VecDeque::new(),
        going_away: false,
    };
    let mut d = Dialer::new(config, input.seed);
    for op in &input.ops {
        m.apply(&mut d, op);
    }
    // Time runs out for every waiting dial, then every connection closes.
    let t = m.dial_timeout;
    m.apply(&mut d, &Op::Advance { ms: 0 });
    m.advance(&mut d, t);
    for conn in 0..CONNS {
        m.apply(&mut d, &Op::CloseConn { conn });
    }
    let stats = d.stats();
    assert_eq!(stats.pending_dials, 0, "dials left pending");
    assert_eq!(stats.sessions, 0);
    assert_eq!(stats.spares, 0);
    for (dial, _) in &m.made {
        let answered = m.answered.contains(dial);
        let cancelled = m.cancelled.contains(dial);
        assert!(
            answered != cancelled,
            "{dial:?}: answered {answered}, cancelled while waiting {cancelled}"
        );
    }
}

impl Model {
    fn apply(&mut self, d: &mut Dialer, op: &Op) {
        match *op {
            Op::Revdial {
                conn,
                id,
                role,
                token,
                cred,
            } => {
                let conn = conn % CONNS;
                let id = usize::from(id % 3);
                let stream = StreamId(self.next_stream);
                self.next_stream += 1;
                self.streams.push(stream);
                let role = match role {
                    RoleChoice::None => None,
                    RoleChoice::Control => Some(Role::Control),
                    RoleChoice::Data => Some(Role::Data),
                };
                let token = if role == Some(Role::Control) {
                    None
                } else {
                    self.token(token)
                };
                let bearer = match cred {
                    CredChoice::None => None,
                    CredChoice::Good => Some(format!("t{}", IDS[id])),
                    CredChoice::Bad => Some("wrong".to_string()),
                };
                self.run(
                    d,
                    Event::Revdial {
                        conn: ConnId(conn.into()),
                        stream,
                        request: RevdialRequest {
                            id: DialerId::new(IDS[id]).unwrap(),
                            role,
                            conn: token.clone(),
                            wire: h2rev2_proto::wire::Wire::Current,
                        },
                        credentials: Credentials {
                            bearer: bearer.as_deref(),
                            cert_identities: &[],
                        },
                    },
                );
                self.on_revdial(conn, stream, id, role, token, cred);
            }
            Op::Dial { id } => {
                let id = usize::from(id % 3);
                let dial = DialId(self.next_dial);
                self.next_dial += 1;
                self.run(
                    d,
                    Event::Dial {
                        dial,
                        id: DialerId::new(IDS[id]).unwrap(),
                    },
                );
                self.made.push((dial, None));
                self.on_dial(dial, id);
            }
            Op::Cancel { dial } => {
                if self.made.is_empty() {
                    return;
                }
                let dial = self.made[usize::from(dial) % self.made.len()].0;
                self.run(d, Event::CancelDial { dial });
                if let Some(p) = self.dials.remove(&dial) {
                    self.cancelled.insert(dial);
                    let s = self.session_mut(p.session);
                    s.outstanding.retain(|x| *x != dial);
                }
            }
            Op::Control {
                session,
                msg,
                split,
            } => {
                if self.sessions.is_empty() {
                    return;
                }
                let i = usize::from(session) % self.sessions.len();
                let (key, control) = (self.sessions[i].key, self.sessions[i].control);
                let bytes = match msg {
                    ControlChoice::PickupFailed(t) => {
                        let t = self.token(t);
                        ControlMessage::pickup_failed(t.as_deref(), "refused").to_bytes()
                    }
                    ControlChoice::KeepAlive => ControlMessage::keep_alive().to_bytes(),
                    ControlChoice::ConnReady => ControlMessage::conn_ready(None).to_bytes(),
                    ControlChoice::Unknown => b"{\"command\":\"zzz\",\"x\":[1]}\n".to_vec(),
                    ControlChoice::Garbage => b"not json\n".to_vec(),
                    ControlChoice::Partial => b"{\"command\":\"pick".to_vec(),
                };
                let cut = usize::from(split) % (bytes.len() + 1);
                let now = self.now;
                for piece in [&bytes[..cut], &bytes[cut..]] {
                    d.handle_event(
                        now,
                        Event::ControlData {
                            stream: control,
                            data: piece,
                        },
                    )
                    .expect("no misuse");
                    self.actions.extend(std::iter::from_fn(|| d.poll_action()));
                }
                self.on_control(key, msg);
            }
            Op::CloseStream { stream } => {
                if self.streams.is_empty() {
                    return;
                }
                let stream = self.streams[usize::from(stream) % self.streams.len()];
                self.run(d, Event::StreamClosed { stream });
                if let Some(s) = self.sessions.iter().find(|s| s.control == stream) {
                    let key = s.key;
                    self.close_session(key, false);
                } else if let Some(s) = self
                    .sessions
                    .iter_mut()
                    .find(|s| s.spares.contains(&stream))
                {
                    s.spares.retain(|x| *x != stream);
                }
            }
            Op::CloseConn { conn } => {
                let conn = conn % CONNS;
                self.run(
                    d,
                    Event::ConnectionClosed {
                        conn: ConnId(conn.into()),
                    },
                );
                // The Dialer closes them in slot order, which is key order.
                let mut keys: Vec<SessionKey> = self
                    .sessions
                    .iter()
                    .filter(|s| s.conn == conn)
                    .map(|s| s.key)
                    .collect();
                keys.sort();
                for key in keys {
                    self.close_session(key, false);
                }
            }
            Op::GoAway => {
                d.go_away();
                self.actions.extend(std::iter::from_fn(|| d.poll_action()));
                if !self.going_away {
                    // Each live session's control stream is told, once.
                    let mut told: Vec<StreamId> = Vec::new();
                    while let Some(a) = self.actions.pop_front() {
                        match a {
                            Action::SendControl { stream, data } => {
                                assert_eq!(data, ControlMessage::going_away().to_bytes());
                                told.push(stream);
                            }
                            other => panic!("go_away: unexpected {other:?}"),
                        }
                    }
                    let mut want: Vec<StreamId> = self.sessions.iter().map(|s| s.control).collect();
                    told.sort();
                    want.sort();
                    assert_eq!(told, want, "going-away goes to every session");
                }
                self.going_away = true;
            }
            Op::Advance { ms } => self.advance(d, Duration::from_millis(ms.into())),
        }
        self.finish(d);
    }

    fn advance(&mut self, d: &mut Dialer, by: Duration) {
        self.now += by;
        d.handle_timeout(self.now);
        self.actions.extend(std::iter::from_fn(|| d.poll_action()));
        self.on_timeout();
        self.finish(d);
    }

    fn run(&mut self, d: &mut Dialer, ev: Event<'_>) {
        d.handle_event(self.now, ev).expect("no misuse");
        self.actions.extend(std::iter::from_fn(|| d.poll_action()));
    }

    /// After an operation: nothing unexpected, and the counters and timer agree.
    fn finish(&mut self, d: &Dialer) {
        assert!(
            self.actions.is_empty(),
            "unexpected actions: {:?}",
            self.actions
        );
        let stats = d.stats();
        let mut ids: Vec<usize> = self.sessions.iter().map(|s| s.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(stats.sessions, self.sessions.len(), "sessions");
        assert_eq!(stats.ids, ids.len(), "ids");
        assert_eq!(stats.pending_dials, self.dials.len(), "pending dials");
        let spares: usize = self.sessions.iter().map(|s| s.spares.len()).sum();
        assert_eq!(stats.spares, spares, "spares");
        let timer = self
            .dials
            .values()
            .map(|p| p.deadline)
            .chain(self.sessions.iter().filter_map(|s| s.next_keepalive))
            .min();
        assert_eq!(d.poll_timeout(), timer, "poll_timeout");
        for s in &self.sessions {
            for dial in &s.outstanding {
                assert_eq!(self.dials[dial].session, s.key);
            }
        }
        assert_eq!(
            self.sessions
                .iter()
                .map(|s| s.outstanding.len())
                .sum::<usize>(),
            self.dials.len()
        );
    }

    fn token(&self, t: TokenChoice) -> Option<String> {
        match t {
            TokenChoice::None => None,
            TokenChoice::Bogus => Some("bogus".into()),
            TokenChoice::OfDial(k) => {
                if self.made.is_empty() {
                    return Some("none-yet".into());
                }
                let (_, tok) = &self.made[usize::from(k) % self.made.len()];
                Some(tok.clone().unwrap_or_else(|| "no-token".into()))
            }
        }
    }

    fn session(&self, key: SessionKey) -> &MSession {
        self.sessions.iter().find(|s| s.key == key).expect("live")
    }

    fn session_mut(&mut self, key: SessionKey) -> &mut MSession {
        self.sessions
            .iter_mut()
            .find(|s| s.key == key)
            .expect("live")
    }

    fn of_id(&self, id: usize) -> Vec<SessionKey> {
        self.sessions
            .iter()
            .filter(|s| s.id == id)
            .map(|s| s.key)
            .collect()
    }

    // ---- expectations -------------------------------------------------------------

    fn next(&mut self, what: &str) -> Action {
        self.actions
            .pop_front()
            .unwrap_or_else(|| panic!("expected {what}, got no action"))
    }

    fn expect_reject(&mut self, stream: StreamId, status: u16) {
        match self.next("Reject") {
            Action::Reject {
                stream: s,
                status: st,
                ..
            } if s == stream && st == status => {}
            other => panic!("expected Reject {stream:?} {status}, got {other:?}"),
        }
    }

    fn expect_accept_data(&mut self, stream: StreamId, key: SessionKey) {
        let a = self.next("Accept data");
        assert_eq!(
            a,
            Action::Accept {
                stream,
                kind: StreamKind::Data(key)
            }
        );
    }

    fn expect_ready(&mut self, dial: DialId, stream: StreamId) {
        let a = self.next("DialReady");
        assert_eq!(a, Action::DialReady { dial, stream });
        assert!(self.answered.insert(dial), "{dial:?} answered twice");
        assert!(self.handed.insert(stream), "{stream:?} handed out twice");
    }

    fn expect_failed(&mut self, dial: DialId, ok: impl Fn(&DialError) -> bool) {
        match self.next("DialFailed") {
            Action::DialFailed { dial: x, error } if x == dial && ok(&error) => {}
            other => panic!("expected DialFailed {dial:?}, got {other:?}"),
        }
        assert!(self.answered.insert(dial), "{dial:?} answered twice");
    }

    /// A `conn-ready` on `control`; returns its token.
    fn expect_conn_ready(&mut self, control: StreamId) -> String {
        match self.next("conn-ready") {
            Action::SendControl { stream, data } if stream == control => {
                let mut dec = Decoder::new();
                dec.push(&data);
                let msg = dec.next_message().expect("a line").expect("valid");
                assert!(dec.next_message().is_none(), "one message");
                assert_eq!(msg.command, Command::ConnReady);
                assert!(!msg.conn_path.is_empty(), "our conn-ready carries a token");
                msg.conn_path
            }
            other => panic!("expected conn-ready on {control:?}, got {other:?}"),
        }
    }

    fn fresh_token(&self, token: &str) {
        assert!(
            self.dials.values().all(|p| p.token != token),
            "token {token} reused while its dial waits"
        );
    }

    // ---- the reference behaviour --------------------------------------------------

    fn authenticate(&self, id: usize, cred: CredChoice) -> Result<Principal, u16> {
        match cred {
            CredChoice::Good if id < 2 => Ok(Principal::Authenticated),
            CredChoice::Good | CredChoice::Bad => Err(403),
            CredChoice::None => match self.anon {
                2 => Ok(Principal::Anonymous),
                1 if id == 2 => Ok(Principal::Anonymous),
                1 => Err(403),
                _ => Err(401),
            },
        }
    }

    fn on_revdial(
        &mut self,
        conn: u8,
        stream: StreamId,
        id: usize,
        role: Option<Role>,
        token: Option<String>,
        cred: CredChoice,
    ) {
        let principal = match self.authenticate(id, cred) {
            Ok(p) => p,
            Err(status) => return self.expect_reject(stream, status),
        };
        let own = self
            .sessions
            .iter()
            .find(|s| s.id == id && s.conn == conn)
            .map(|s| s.key);
        match (role, own) {
            (Some(Role::Control), _) => self.new_session(conn, stream, id, principal, true),
            (Some(Role::Data), Some(key)) | (None, Some(key)) => self.on_data(stream, key, token),
            (Some(Role::Data), None) => self.expect_reject(stream, 409),
            (None, None) => {
                // A Go Listener's data stream on a second connection, while a dial waits,
                // if it proved it owns the id (an anonymous one is a hijack attempt: it
                // becomes a control stream, 409 while the session lives).
                let waiting = self
                    .sessions
                    .iter()
                    .filter(|s| s.id == id)
                    .filter_map(|s| {
                        let d = s.outstanding.front()?;
                        Some((self.dials[d].deadline, s.key))
                    })
                    .min();
                match waiting {
                    Some((_, key))
                        if token.is_none() && matches!(principal, Principal::Authenticated) =>
                    {
                        self.on_data(stream, key, None)
                    }
                    _ => self.new_session(conn, stream, id, principal, false),
                }
            }
        }
    }

    fn new_session(
        &mut self,
        conn: u8,
        stream: StreamId,
        id: usize,
        principal: Principal,
        explicit: bool,
    ) {
        if self.going_away {
            return self.expect_reject(stream, 503);
        }
        let live = self.of_id(id);
        let mut replace = false;
        if !live.is_empty() {
            match (principal, explicit) {
                (Principal::Anonymous, _) => return self.expect_reject(stream, 409),
                (Principal::Authenticated, true) => {
                    if live.len() >= self.max_per_id {
                        return self.expect_reject(stream, LimitError::SessionsPerId.status());
                    }
                }
                (Principal::Authenticated, false) => replace = true,
            }
        }
        let replaced = if replace { live.len() } else { 0 };
        if self.sessions.len() - replaced >= self.max_sessions {
            return self.expect_reject(stream, LimitError::Sessions.status());
        }
        let key = match self.next("Accept control") {
            Action::Accept {
                stream: s,
                kind: StreamKind::Control(k),
            } if s == stream => k,
            other => panic!("expected Accept control {stream:?}, got {other:?}"),
        };
        assert!(
            self.sessions.iter().all(|s| s.key != key),
            "a live key was reused"
        );
        match self.next("SessionUp") {
            Action::SessionUp {
                session,
                id: i,
                conn: c,
            } => {
                assert_eq!(
                    (session, i.as_str(), c),
                    (key, IDS[id], ConnId(conn.into()))
                );
            }
            other => panic!("expected SessionUp, got {other:?}"),
        }
        self.sessions.push(MSession {
            key,
            id,
            conn,
            control: stream,
            outstanding: VecDeque::new(),
            spares: VecDeque::new(),
            next_keepalive: (!self.keepalive.is_zero()).then(|| self.now + self.keepalive),
            partial: false,
        });
        if replace {
            for old in live {
                self.close_session(old, true);
            }
        }
    }

    fn on_data(&mut self, stream: StreamId, key: SessionKey, token: Option<String>) {
        let dial = match token {
            Some(t) => match self.dials.iter().find(|(_, p)| p.token == t) {
                Some((d, p)) if p.session == key => Some(*d),
                Some(_) => return self.expect_reject(stream, 403),
                None => None,
            },
            None => self.session(key).outstanding.front().copied(),
        };
        if let Some(dial) = dial {
            self.dials.remove(&dial);
            self.session_mut(key).outstanding.retain(|d| *d != dial);
            self.expect_accept_data(stream, key);
            return self.expect_ready(dial, stream);
        }
        if self.session(key).spares.len() >= self.max_spares {
            return self.expect_reject(stream, LimitError::Spares.status());
        }
        self.session_mut(key).spares.push_back(stream);
        self.expect_accept_data(stream, key);
    }

    fn on_dial(&mut self, dial: DialId, id: usize) {
        let keys = self.of_id(id);
        if keys.is_empty() {
            return self.expect_failed(dial, |e| *e == DialError::NoSession);
        }
        let n = keys.len();
        let start = self.rr % n;
        self.rr = self.rr.wrapping_add(1);
        let order: Vec<SessionKey> = (0..n).map(|i| keys[(start + i) % n]).collect();
        for key in &order {
            let s = self.session_mut(*key);
            if let Some(stream) = s.spares.pop_front() {
                let control = s.control;
                self.expect_ready(dial, stream);
                let t = self.expect_conn_ready(control);
                self.fresh_token(&t);
                return;
            }
        }
        let pending: usize = order
            .iter()
            .map(|k| self.session(*k).outstanding.len())
            .sum();
        if pending >= self.max_pending {
            return self.expect_failed(dial, |e| *e == DialError::Limit(LimitError::PendingDials));
        }
        let key = *order
            .iter()
            .min_by_key(|k| self.session(**k).outstanding.len())
            .unwrap();
        let control = self.session(key).control;
        let token = self.expect_conn_ready(control);
        self.fresh_token(&token);
        self.made.last_mut().unwrap().1 = Some(token.clone());
        self.dials.insert(
            dial,
            MDial {
                session: key,
                token,
                deadline: self.now + self.dial_timeout,
            },
        );
        self.session_mut(key).outstanding.push_back(dial);
    }

    fn on_control(&mut self, key: SessionKey, msg: ControlChoice) {
        if msg == ControlChoice::Partial {
            self.session_mut(key).partial = true;
            return;
        }
        if self.session(key).partial || msg == ControlChoice::Garbage {
            return self.close_session(key, true);
        }
        let ControlChoice::PickupFailed(t) = msg else {
            return; // ignored
        };
        let dial = match self.token(t) {
            None => self.session(key).outstanding.front().copied(),
            Some(t) => self
                .dials
                .iter()
                .find(|(_, p)| p.token == t && p.session == key)
                .map(|(d, _)| *d),
        };
        if let Some(dial) = dial {
            self.dials.remove(&dial);
            self.session_mut(key).outstanding.retain(|d| *d != dial);
            self.expect_failed(dial, |e| *e == DialError::PickupFailed("refused".into()));
        }
    }

    fn close_session(&mut self, key: SessionKey, reset_control: bool) {
        let i = self
            .sessions
            .iter()
            .position(|s| s.key == key)
            .expect("live");
        let s = self.sessions.remove(i);
        if reset_control {
            let a = self.next("Reset control");
            assert!(
                matches!(a, Action::Reset { stream, .. } if stream == s.control),
                "{a:?}"
            );
        }
        for spare in &s.spares {
            let a = self.next("Reset spare");
            assert!(
                matches!(a, Action::Reset { stream, .. } if stream == *spare),
                "{a:?}"
            );
        }
        match self.next("SessionDown") {
            Action::SessionDown { session, id, .. } => {
                assert_eq!((session, id.as_str()), (key, IDS[s.id]))
            }
            other => panic!("expected SessionDown, got {other:?}"),
        }
        let others = self.of_id(s.id);
        for (i, dial) in s.outstanding.into_iter().enumerate() {
            if others.is_empty() {
                self.dials.remove(&dial);
                self.expect_failed(dial, |e| matches!(e, DialError::SessionClosed(_)));
            } else {
                let target = others[i % others.len()];
                let control = self.session(target).control;
                let token = self.expect_conn_ready(control);
                let p = self.dials.get_mut(&dial).expect("pending");
                assert_eq!(token, p.token, "a dial keeps its token when it moves");
                p.session = target;
                self.session_mut(target).outstanding.push_back(dial);
            }
        }
    }

    fn on_timeout(&mut self) {
        let now = self.now;
        let mut due: Vec<(Instant, DialId)> = self
            .dials
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(d, p)| (p.deadline, *d))
            .collect();
        due.sort();
        for (_, dial) in due {
            let p = self.dials.remove(&dial).unwrap();
            self.session_mut(p.session)
                .outstanding
                .retain(|d| *d != dial);
            self.expect_failed(dial, |e| *e == DialError::Timeout);
        }
        let mut due: Vec<(Instant, SessionKey)> = self
            .sessions
            .iter()
            .filter_map(|s| Some((s.next_keepalive.filter(|t| *t <= now)?, s.key)))
            .collect();
        due.sort();
        for (_, key) in due {
            let interval = self.keepalive;
            let s = self.session_mut(key);
            s.next_keepalive = Some(now + interval);
            let control = s.control;
            let a = self.next("keep-alive");
            assert_eq!(
                a,
                Action::SendControl {
                    stream: control,
                    data: ControlMessage::keep_alive().to_bytes()
                }
            );
        }
    }
}
