//! Deterministic two-party simulation on virtual time.
//!
//! A [`Sim`] wires one or more [`Listener`] machines to one [`Dialer`] and plays the
//! adapters' role in between, in the spirit of quinn-proto's `tests/util.rs` `Pair`:
//! every message between the machines is a timed delivery in a queue, time is a
//! virtual [`Instant`] advanced to the earliest of the next delivery and the machines'
//! `poll_timeout`s, control bytes are cut at seeded random points, and data streams can
//! be reordered by a seeded jitter. Faults (failed connects, failed or black-holed data
//! streams, lost connections or control streams) are injected by the scenarios.
//!
//! Nothing here reads a clock or the OS's randomness: a scenario run twice with the same
//! seed produces the same trace (checked by `same_seed_same_trace`).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use h2rev2_proto::LimitError;
use h2rev2_proto::auth::Credentials;
use h2rev2_proto::dialer::{
    self, ConnId, DialError, DialId, Dialer, DialerConfig, StreamId, StreamKind,
};
use h2rev2_proto::listener::{self, Listener, ListenerConfig, RequestId, State};
use h2rev2_proto::registry::SessionKey;
use h2rev2_proto::wire::{
    Command, Decoder, DialerId, GO2022_CONTENT_TYPE, Route, RouteConfig, Wire,
};

// ---- the harness --------------------------------------------------------------------

/// What the adapter of a Listener does with the data streams it is asked to open.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DataFault {
    /// Open them.
    None,
    /// Fail the next `n` opens locally (REFUSED_STREAM, say).
    FailNext(usize),
    /// Fail the open whose `conn` token is this one.
    FailToken(String),
    /// The requests vanish: never answered, never failed.
    Blackhole,
}

#[derive(Debug, Clone)]
enum StreamRole {
    Control,
    Data {
        request: RequestId,
        token: Option<String>,
    },
}

#[derive(Debug, Clone)]
struct StreamInfo {
    peer: usize,
    conn: ConnId,
    role: StreamRole,
}

#[derive(Debug, Clone)]
enum Msg {
    // to the Dialer
    Revdial {
        peer: usize,
        conn: ConnId,
        stream: StreamId,
        path_and_query: String,
    },
    DialerControlData {
        conn: ConnId,
        stream: StreamId,
        data: Vec<u8>,
    },
    DialerStreamClosed {
        stream: StreamId,
    },
    DialerConnClosed {
        conn: ConnId,
    },
    // to a Listener
    Connected {
        peer: usize,
        conn: ConnId,
    },
    ConnectFailed {
        peer: usize,
        conn: ConnId,
    },
    ControlAccepted {
        peer: usize,
        conn: ConnId,
    },
    ControlRejected {
        peer: usize,
        conn: ConnId,
        status: u16,
        reason: String,
    },
    ListenerControlData {
        peer: usize,
        conn: ConnId,
        data: Vec<u8>,
    },
    DataOpened {
        peer: usize,
        conn: ConnId,
        request: RequestId,
    },
    DataFailed {
        peer: usize,
        conn: ConnId,
        request: RequestId,
        reason: String,
    },
    /// 2022 wire: a stream handed to a dial was used (or, for a 2022 Listener, is
    /// finished).
    DataUsed {
        peer: usize,
        conn: ConnId,
        request: RequestId,
    },
    Disconnected {
        peer: usize,
        conn: ConnId,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Ready {
        stream: StreamId,
        peer: usize,
        token: Option<String>,
        at: Instant,
    },
    Failed {
        error: DialError,
        at: Instant,
    },
}

struct Peer {
    listener: Listener,
    bearer: Option<String>,
    conn: Option<ConnId>,
    control: Option<StreamId>,
    /// Delivery clock of the control stream, Listener to Dialer (bytes stay in order).
    up_clock: Instant,
    /// Delivery clock of the control stream, Dialer to Listener.
    down_clock: Instant,
    fail_connects: usize,
    data_fault: DataFault,
    /// Statuses of refused control requests.
    rejections: Vec<u16>,
    /// `(when, retry_in, attempts after the failure)` of each `Down`.
    downs: Vec<(Instant, Duration, u32)>,
    /// When each `Connect` was asked for.
    connects: Vec<Instant>,
    /// Data streams asked for (`OpenData`): request number and token.
    opened: Vec<(RequestId, Option<String>)>,
    /// Bytes the Listener wrote on its control streams.
    sent_control: Vec<u8>,
    /// Control messages the Listener received (decoded by the harness).
    received: Vec<Command>,
    recv_decoder: Decoder,
    ups: usize,
    /// 2022 wire: how long after a dial takes one of its streams the Listener hears
    /// that it was used ([`listener::Event::DataUsed`]). A 2022 Go Listener opens its
    /// next stream once the last one is finished: set to how long a conn lasts.
    used_after: Duration,
}

struct Sim {
    start: Instant,
    now: Instant,
    rng: fastrand::Rng,
    routes: RouteConfig,
    dialer: Dialer,
    peers: Vec<Peer>,
    queue: BTreeMap<(Instant, u64), Msg>,
    seq: u64,
    next_conn: u64,
    next_stream: u64,
    next_dial: u64,
    streams: HashMap<StreamId, StreamInfo>,
    dead_conns: HashSet<ConnId>,
    outcomes: BTreeMap<DialId, Outcome>,
    /// The token of each dial's first `conn-ready`.
    dial_tokens: HashMap<DialId, String>,
    /// Every `conn-ready` token sent, with the control stream it went to.
    conn_readies: Vec<(StreamId, Option<String>)>,
    handed_out: HashSet<StreamId>,
    /// Data streams in the order they reached the Dialer.
    arrivals: Vec<StreamId>,
    /// `(stream, peer, status)` of every refused revdial request.
    rejects: Vec<(StreamId, usize, u16)>,
    /// Streams the Dialer reset.
    resets: Vec<StreamId>,
    session_ups: Vec<(SessionKey, ConnId)>,
    session_downs: Vec<(SessionKey, String)>,
    trace: String,
    latency: Duration,
    jitter: Duration,
    connect_delay: Duration,
}

fn id(s: &str) -> DialerId {
    DialerId::new(s).unwrap()
}

fn listener_config(name: &str, mark_roles: bool, spares: usize) -> ListenerConfig {
    let mut c = ListenerConfig::new(id(name));
    c.mark_roles = mark_roles;
    c.spares = spares;
    c.backoff_initial = Duration::from_millis(100);
    c.backoff_max = Duration::from_secs(2);
    c
}

fn anonymous_config() -> DialerConfig {
    let mut c = DialerConfig::default();
    c.auth.allow_anonymous();
    c
}

impl Sim {
    fn new(config: DialerConfig, seed: u64) -> Sim {
        let now = Instant::now();
        Sim {
            start: now,
            now,
            rng: fastrand::Rng::with_seed(seed),
            routes: RouteConfig::default(),
            dialer: Dialer::new(config, seed ^ 0x5eed),
            peers: Vec::new(),
            queue: BTreeMap::new(),
            seq: 0,
            next_conn: 1,
            next_stream: 1,
            next_dial: 1,
            streams: HashMap::new(),
            dead_conns: HashSet::new(),
            outcomes: BTreeMap::new(),
            dial_tokens: HashMap::new(),
            conn_readies: Vec::new(),
            handed_out: HashSet::new(),
            arrivals: Vec::new(),
            rejects: Vec::new(),
            resets: Vec::new(),
            session_ups: Vec::new(),
            session_downs: Vec::new(),
            trace: String::new(),
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
            connect_delay: Duration::from_millis(30),
        }
    }

    /// Virtual milliseconds since the start, for the trace.
    fn ms(&self) -> u128 {
        (self.now - self.start).as_millis()
    }

    fn add_listener(&mut self, config: ListenerConfig, bearer: Option<&str>) -> usize {
        let seed = self.rng.u64(..);
        let peer = self.peers.len();
        self.peers.push(Peer {
            listener: Listener::new(config, seed),
            bearer: bearer.map(str::to_string),
            conn: None,
            control: None,
            up_clock: self.now,
            down_clock: self.now,
            fail_connects: 0,
            data_fault: DataFault::None,
            rejections: Vec::new(),
            downs: Vec::new(),
            connects: Vec::new(),
            opened: Vec::new(),
            sent_control: Vec::new(),
            received: Vec::new(),
            recv_decoder: Decoder::new(),
            ups: 0,
            used_after: Duration::ZERO,
        });
        self.drain_listener(peer);
        peer
    }

    fn schedule(&mut self, at: Instant, msg: Msg) {
        self.seq += 1;
        self.queue.insert((at, self.seq), msg);
    }

    fn lat(&mut self) -> Instant {
        self.now + self.latency
    }

    fn jittered(&mut self) -> Instant {
        let j = self.jitter.as_nanos() as u64;
        self.now + self.latency + Duration::from_nanos(self.rng.u64(0..=j))
    }

    /// Cuts `data` at up to three seeded random points; each piece is delivered in
    /// order on the stream's clock.
    fn pieces(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = (0..self.rng.usize(0..=3))
            .map(|_| self.rng.usize(0..=data.len()))
            .collect();
        cuts.sort_unstable();
        let mut out = Vec::new();
        let mut last = 0;
        for c in cuts.into_iter().chain([data.len()]) {
            if c > last {
                out.push(data[last..c].to_vec());
                last = c;
            }
        }
        out
    }

    fn drop_conn(&mut self, peer: usize) {
        if let Some(conn) = self.peers[peer].conn {
            if self.dead_conns.insert(conn) {
                let at = self.lat();
                self.schedule(at, Msg::DialerConnClosed { conn });
            }
        }
    }

    fn new_stream(&mut self) -> StreamId {
        let s = StreamId(self.next_stream);
        self.next_stream += 1;
        s
    }

    // ---- the Listener's adapter -----------------------------------------------------

    fn drain_listener(&mut self, peer: usize) {
        while let Some(action) = self.peers[peer].listener.poll_action() {
            let _ = writeln!(self.trace, "{} L{peer} {action:?}", self.ms());
            match action {
                listener::Action::Connect => {
                    let conn = ConnId(self.next_conn);
                    self.next_conn += 1;
                    let p = &mut self.peers[peer];
                    p.conn = Some(conn);
                    p.control = None;
                    p.connects.push(self.now);
                    let at = self.now + self.connect_delay;
                    if p.fail_connects > 0 {
                        p.fail_connects -= 1;
                        self.dead_conns.insert(conn);
                        self.schedule(at, Msg::ConnectFailed { peer, conn });
                    } else {
                        self.schedule(at, Msg::Connected { peer, conn });
                    }
                }
                listener::Action::OpenControl { path_and_query } => {
                    let conn = self.peers[peer].conn.expect("connected");
                    let stream = self.new_stream();
                    self.streams.insert(
                        stream,
                        StreamInfo {
                            peer,
                            conn,
                            role: StreamRole::Control,
                        },
                    );
                    let at = self.lat();
                    let p = &mut self.peers[peer];
                    p.control = Some(stream);
                    p.up_clock = at;
                    p.down_clock = at;
                    self.schedule(
                        at,
                        Msg::Revdial {
                            peer,
                            conn,
                            stream,
                            path_and_query,
                        },
                    );
                }
                listener::Action::OpenData {
                    request,
                    path_and_query,
                } => {
                    let conn = self.peers[peer].conn.expect("connected");
                    let token = match parse(&self.routes, &path_and_query) {
                        Some(r) => r.conn,
                        None => panic!("the Listener asked for an unroutable {path_and_query}"),
                    };
                    self.peers[peer].opened.push((request, token.clone()));
                    let fail = match &mut self.peers[peer].data_fault {
                        DataFault::None => false,
                        DataFault::Blackhole => continue,
                        DataFault::FailNext(n) => {
                            let fail = *n > 0;
                            *n = n.saturating_sub(1);
                            fail
                        }
                        DataFault::FailToken(t) => token.as_deref() == Some(t.as_str()),
                    };
                    if fail {
                        let now = self.now;
                        self.schedule(
                            now,
                            Msg::DataFailed {
                                peer,
                                conn,
                                request,
                                reason: "injected: stream refused".into(),
                            },
                        );
                        continue;
                    }
                    let stream = self.new_stream();
                    self.streams.insert(
                        stream,
                        StreamInfo {
                            peer,
                            conn,
                            role: StreamRole::Data { request, token },
                        },
                    );
                    let at = self.jittered();
                    self.schedule(
                        at,
                        Msg::Revdial {
                            peer,
                            conn,
                            stream,
                            path_and_query,
                        },
                    );
                }
                listener::Action::SendControl(bytes) => {
                    self.peers[peer].sent_control.extend_from_slice(&bytes);
                    let (Some(conn), Some(stream)) =
                        (self.peers[peer].conn, self.peers[peer].control)
                    else {
                        panic!("SendControl without a control stream");
                    };
                    for piece in self.pieces(&bytes) {
                        let at = self.lat().max(self.peers[peer].up_clock);
                        self.peers[peer].up_clock = at;
                        self.schedule(
                            at,
                            Msg::DialerControlData {
                                conn,
                                stream,
                                data: piece,
                            },
                        );
                    }
                }
                listener::Action::Disconnect { .. } => self.drop_conn(peer),
                listener::Action::Up => self.peers[peer].ups += 1,
                // The simulated Dialer never goes away.
                listener::Action::GoingAway => panic!("going-away from a Dialer that stays"),
                listener::Action::Down { retry_in, .. } => {
                    let attempts = self.peers[peer].listener.attempts();
                    let now = self.now;
                    self.peers[peer].downs.push((now, retry_in, attempts));
                    self.drop_conn(peer);
                }
                listener::Action::Closed { .. } => self.drop_conn(peer),
            }
        }
    }

    fn listener_event(&mut self, peer: usize, conn: ConnId, ev: listener::Event<'_>) {
        if self.peers[peer].conn != Some(conn) {
            return; // a late event of a connection the Listener left
        }
        let _ = writeln!(self.trace, "{} L{peer} <- {ev:?}", self.ms());
        let now = self.now;
        self.peers[peer].listener.handle_event(now, ev);
        self.drain_listener(peer);
    }

    // ---- the Dialer's adapter -------------------------------------------------------

    fn dialer_event(&mut self, ev: dialer::Event<'_>, dialing: Option<DialId>) {
        let _ = writeln!(self.trace, "{} D <- {ev:?}", self.ms());
        let now = self.now;
        self.dialer
            .handle_event(now, ev)
            .expect("the harness keeps the API contract");
        self.drain_dialer(dialing);
    }

    fn drain_dialer(&mut self, dialing: Option<DialId>) {
        while let Some(action) = self.dialer.poll_action() {
            let _ = writeln!(self.trace, "{} D {action:?}", self.ms());
            match action {
                dialer::Action::Accept { stream, kind } => {
                    let info = self.streams[&stream].clone();
                    let at = self.lat();
                    match (&info.role, kind) {
                        (StreamRole::Control, StreamKind::Control(_)) => self.schedule(
                            at,
                            Msg::ControlAccepted {
                                peer: info.peer,
                                conn: info.conn,
                            },
                        ),
                        (StreamRole::Data { request, .. }, StreamKind::Data(_)) => self.schedule(
                            at,
                            Msg::DataOpened {
                                peer: info.peer,
                                conn: info.conn,
                                request: *request,
                            },
                        ),
                        (role, kind) => panic!("{stream:?} ({role:?}) accepted as {kind:?}"),
                    }
                }
                dialer::Action::Reject {
                    stream,
                    status,
                    reason,
                    ..
                } => {
                    let info = self.streams[&stream].clone();
                    self.rejects.push((stream, info.peer, status));
                    let at = self.lat();
                    match info.role {
                        StreamRole::Control => self.schedule(
                            at,
                            Msg::ControlRejected {
                                peer: info.peer,
                                conn: info.conn,
                                status,
                                reason,
                            },
                        ),
                        StreamRole::Data { request, .. } => self.schedule(
                            at,
                            Msg::DataFailed {
                                peer: info.peer,
                                conn: info.conn,
                                request,
                                reason: format!("{status} {reason}"),
                            },
                        ),
                    }
                }
                dialer::Action::SendControl { stream, data } => {
                    let info = self.streams[&stream].clone();
                    assert!(
                        matches!(info.role, StreamRole::Control),
                        "control bytes on a data stream"
                    );
                    let mut d = Decoder::new();
                    d.push(&data);
                    while let Some(m) = d.next_message() {
                        let m = m.expect("the Dialer writes valid control lines");
                        if m.command == Command::ConnReady {
                            let token = (!m.conn_path.is_empty()).then(|| m.conn_path.clone());
                            self.conn_readies.push((stream, token.clone()));
                            if let (Some(dial), Some(t)) = (dialing, token) {
                                if !self.outcomes.contains_key(&dial) {
                                    self.dial_tokens.entry(dial).or_insert(t);
                                }
                            }
                        }
                    }
                    let peer = info.peer;
                    for piece in self.pieces(&data) {
                        let at = self.lat().max(self.peers[peer].down_clock);
                        self.peers[peer].down_clock = at;
                        self.schedule(
                            at,
                            Msg::ListenerControlData {
                                peer,
                                conn: info.conn,
                                data: piece,
                            },
                        );
                    }
                }
                dialer::Action::Reset { stream, reason } => {
                    self.resets.push(stream);
                    let info = self.streams[&stream].clone();
                    if let StreamRole::Control = info.role {
                        let at = self.lat();
                        self.schedule(
                            at,
                            Msg::Disconnected {
                                peer: info.peer,
                                conn: info.conn,
                                reason: format!("control stream reset: {reason}"),
                            },
                        );
                    }
                }
                dialer::Action::DialReady { dial, stream } => {
                    assert!(
                        !self.outcomes.contains_key(&dial),
                        "{dial:?} answered twice"
                    );
                    assert!(
                        self.handed_out.insert(stream),
                        "{stream:?} handed out twice"
                    );
                    let info = self.streams[&stream].clone();
                    let StreamRole::Data { token, request } = info.role else {
                        panic!("a control stream handed to {dial:?}");
                    };
                    if self.peers[info.peer].listener.wire() == Wire::Go2022 {
                        let at = self.lat() + self.peers[info.peer].used_after;
                        self.schedule(
                            at,
                            Msg::DataUsed {
                                peer: info.peer,
                                conn: info.conn,
                                request,
                            },
                        );
                    }
                    let at = self.now;
                    self.outcomes.insert(
                        dial,
                        Outcome::Ready {
                            stream,
                            peer: info.peer,
                            token,
                            at,
                        },
                    );
                }
                dialer::Action::DialFailed { dial, error } => {
                    assert!(
                        !self.outcomes.contains_key(&dial),
                        "{dial:?} answered twice"
                    );
                    let at = self.now;
                    self.outcomes.insert(dial, Outcome::Failed { error, at });
                }
                dialer::Action::SessionUp { session, conn, .. } => {
                    self.session_ups.push((session, conn))
                }
                dialer::Action::SessionDown {
                    session, reason, ..
                } => self.session_downs.push((session, reason)),
            }
        }
    }

    // ---- delivery and time ----------------------------------------------------------

    fn deliver(&mut self, msg: Msg) {
        match msg {
            Msg::Revdial {
                peer,
                conn,
                stream,
                path_and_query,
            } => {
                if self.dead_conns.contains(&conn) {
                    return;
                }
                // The adapter classifies by the content type, which a Listener's
                // adapter sets on the 2022 wire.
                let octet = (self.peers[peer].listener.wire() == Wire::Go2022)
                    .then_some(GO2022_CONTENT_TYPE.as_bytes());
                let request = parse(&self.routes, &path_and_query)
                    .expect("routable")
                    .classify(octet);
                if !matches!(self.streams[&stream].role, StreamRole::Control) {
                    self.arrivals.push(stream);
                }
                let bearer = self.peers[peer].bearer.clone();
                self.dialer_event(
                    dialer::Event::Revdial {
                        conn,
                        stream,
                        request,
                        credentials: Credentials {
                            bearer: bearer.as_deref(),
                            cert_identities: &[],
                        },
                    },
                    None,
                );
            }
            Msg::DialerControlData { conn, stream, data } => {
                if !self.dead_conns.contains(&conn) {
                    self.dialer_event(
                        dialer::Event::ControlData {
                            stream,
                            data: &data,
                        },
                        None,
                    );
                }
            }
            Msg::DialerStreamClosed { stream } => {
                self.dialer_event(dialer::Event::StreamClosed { stream }, None)
            }
            Msg::DialerConnClosed { conn } => {
                self.dialer_event(dialer::Event::ConnectionClosed { conn }, None)
            }
            Msg::Connected { peer, conn } => {
                if !self.dead_conns.contains(&conn) {
                    self.listener_event(peer, conn, listener::Event::Connected)
                }
            }
            Msg::ConnectFailed { peer, conn } => self.listener_event(
                peer,
                conn,
                listener::Event::ConnectFailed {
                    reason: "injected: connection refused".into(),
                },
            ),
            Msg::ControlAccepted { peer, conn } => {
                if !self.dead_conns.contains(&conn) {
                    self.listener_event(peer, conn, listener::Event::ControlAccepted)
                }
            }
            Msg::ControlRejected {
                peer,
                conn,
                status,
                reason,
            } => {
                if !self.dead_conns.contains(&conn) && self.peers[peer].conn == Some(conn) {
                    self.peers[peer].rejections.push(status);
                    self.listener_event(
                        peer,
                        conn,
                        listener::Event::ControlRejected { status, reason },
                    )
                }
            }
            Msg::ListenerControlData { peer, conn, data } => {
                if !self.dead_conns.contains(&conn) && self.peers[peer].conn == Some(conn) {
                    let p = &mut self.peers[peer];
                    p.recv_decoder.push(&data);
                    while let Some(Ok(m)) = p.recv_decoder.next_message() {
                        p.received.push(m.command);
                    }
                    self.listener_event(peer, conn, listener::Event::ControlData(&data))
                }
            }
            Msg::DataOpened {
                peer,
                conn,
                request,
            } => {
                if !self.dead_conns.contains(&conn) {
                    self.listener_event(peer, conn, listener::Event::DataOpened { request })
                }
            }
            Msg::DataFailed {
                peer,
                conn,
                request,
                reason,
            } => {
                if !self.dead_conns.contains(&conn) {
                    self.listener_event(peer, conn, listener::Event::DataFailed { request, reason })
                }
            }
            Msg::DataUsed {
                peer,
                conn,
                request,
            } => {
                if !self.dead_conns.contains(&conn) {
                    self.listener_event(peer, conn, listener::Event::DataUsed { request })
                }
            }
            Msg::Disconnected { peer, conn, reason } => {
                self.listener_event(peer, conn, listener::Event::Disconnected { reason })
            }
        }
    }

    fn next_time(&self) -> Option<Instant> {
        let q = self.queue.keys().next().map(|(t, _)| *t);
        let d = self.dialer.poll_timeout();
        let l = self
            .peers
            .iter()
            .filter_map(|p| p.listener.poll_timeout())
            .min();
        [q, d, l].into_iter().flatten().min()
    }

    /// Advances to the next event if it is due by `limit`.
    fn step(&mut self, limit: Instant) -> bool {
        let Some(t) = self.next_time() else {
            return false;
        };
        if t > limit {
            return false;
        }
        self.now = self.now.max(t);
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let msg = entry.remove();
            self.deliver(msg);
        }
        if self.dialer.poll_timeout().is_some_and(|t| t <= self.now) {
            let _ = writeln!(self.trace, "{} D timeout", self.ms());
            let now = self.now;
            self.dialer.handle_timeout(now);
            self.drain_dialer(None);
            assert!(
                self.dialer.poll_timeout().is_none_or(|t| t > now),
                "the Dialer's timer did not move on"
            );
        }
        for peer in 0..self.peers.len() {
            if self.peers[peer]
                .listener
                .poll_timeout()
                .is_some_and(|t| t <= self.now)
            {
                let now = self.now;
                self.peers[peer].listener.handle_timeout(now);
                self.drain_listener(peer);
            }
        }
        true
    }

    fn run_until(&mut self, t: Instant) {
        let mut steps = 0;
        while self.step(t) {
            steps += 1;
            assert!(steps < 1_000_000, "the simulation does not settle");
        }
        self.now = self.now.max(t);
    }

    fn run_for(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }

    /// Runs until `cond` holds, for at most `max`; panics otherwise.
    fn run_until_cond(&mut self, max: Duration, mut cond: impl FnMut(&Sim) -> bool) {
        let limit = self.now + max;
        while !cond(self) {
            if !self.step(limit) {
                panic!("condition not reached within {max:?}\n{}", self.trace);
            }
        }
    }

    fn run_until_up(&mut self, peers: &[usize]) {
        self.run_until_cond(Duration::from_secs(60), |s| {
            peers
                .iter()
                .all(|p| matches!(s.peers[*p].listener.state(), State::Up { .. }))
        });
    }

    // ---- what the scenarios do ------------------------------------------------------

    fn dial(&mut self, name: &str) -> DialId {
        let dial = DialId(self.next_dial);
        self.next_dial += 1;
        self.dialer_event(dialer::Event::Dial { dial, id: id(name) }, Some(dial));
        dial
    }

    /// The peer's connection dies: the Dialer notices after one latency (a PING
    /// timeout, shortened), the Listener at once.
    fn kill_conn(&mut self, peer: usize) {
        let conn = self.peers[peer].conn.expect("connected");
        self.dead_conns.insert(conn);
        let at = self.lat();
        self.schedule(at, Msg::DialerConnClosed { conn });
        let now = self.now;
        self.schedule(
            now,
            Msg::Disconnected {
                peer,
                conn,
                reason: "injected: connection lost".into(),
            },
        );
    }

    /// Only the control stream dies (its connection is torn down by the Listener's
    /// adapter afterwards, as it reacts to `Down`).
    fn kill_control(&mut self, peer: usize) {
        let conn = self.peers[peer].conn.expect("connected");
        let stream = self.peers[peer].control.expect("control stream");
        let at = self.lat();
        self.schedule(at, Msg::DialerStreamClosed { stream });
        self.schedule(
            at,
            Msg::Disconnected {
                peer,
                conn,
                reason: "injected: control stream reset".into(),
            },
        );
    }

    fn close_listener(&mut self, peer: usize) {
        let now = self.now;
        self.peers[peer]
            .listener
            .handle_event(now, listener::Event::Close);
        self.drain_listener(peer);
    }

    fn outcome(&self, dial: DialId) -> Option<&Outcome> {
        self.outcomes.get(&dial)
    }

    fn ready(&self, dial: DialId) -> (StreamId, usize, Option<String>, Instant) {
        match self.outcomes.get(&dial) {
            Some(Outcome::Ready {
                stream,
                peer,
                token,
                at,
            }) => (*stream, *peer, token.clone(), *at),
            other => panic!("{dial:?} is not ready: {other:?}\n{}", self.trace),
        }
    }

    fn failed(&self, dial: DialId) -> DialError {
        match self.outcomes.get(&dial) {
            Some(Outcome::Failed { error, .. }) => error.clone(),
            other => panic!("{dial:?} did not fail: {other:?}\n{}", self.trace),
        }
    }

    fn arrival_index(&self, stream: StreamId) -> usize {
        self.arrivals
            .iter()
            .position(|s| *s == stream)
            .expect("arrived")
    }
}

fn parse(routes: &RouteConfig, pq: &str) -> Option<h2rev2_proto::wire::RevdialRequest> {
    let (path, query) = match pq.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (pq, None),
    };
    match routes.route(path, query) {
        Ok(Route::Revdial(r)) => Some(r),
        _ => None,
    }
}

impl Sim {
    fn request_of(&self, stream: StreamId) -> RequestId {
        match &self.streams[&stream].role {
            StreamRole::Data { request, .. } => *request,
            StreamRole::Control => panic!("{stream:?} is a control stream"),
        }
    }

    fn stats(&self) -> (usize, usize, usize, usize) {
        let s = self.dialer.stats();
        (s.sessions, s.ids, s.pending_dials, s.spares)
    }

    /// The control messages a peer wrote, decoded.
    fn sent_messages(&self, peer: usize) -> Vec<h2rev2_proto::wire::ControlMessage> {
        let mut d = Decoder::new();
        d.push(&self.peers[peer].sent_control);
        std::iter::from_fn(|| d.next_message().map(Result::unwrap)).collect()
    }
}

// ---- scenarios ----------------------------------------------------------------------

#[test]
fn register_and_dial() {
    let mut sim = Sim::new(anonymous_config(), 1);
    let p = sim.add_listener(listener_config("001", true, 0), None);
    sim.run_until_up(&[p]);
    assert_eq!(sim.stats(), (1, 1, 0, 0));
    assert_eq!(sim.session_ups.len(), 1);
    assert_eq!(Some(sim.session_ups[0].1), sim.peers[p].conn);

    let t0 = sim.now;
    let d = sim.dial("001");
    assert_eq!(
        sim.outcome(d),
        None,
        "no spare: the dial waits for a round trip"
    );
    assert_eq!(sim.stats(), (1, 1, 1, 0));
    sim.run_for(Duration::from_secs(1));
    let (stream, peer, token, at) = sim.ready(d);
    assert_eq!(peer, p);
    assert_eq!(token.as_deref(), Some(sim.dial_tokens[&d].as_str()));
    assert_eq!(at, t0 + 2 * sim.latency, "one round trip");
    assert_eq!(sim.request_of(stream), RequestId(0));
    assert_eq!(sim.stats(), (1, 1, 0, 0));

    let unknown = sim.dial("002");
    assert_eq!(sim.failed(unknown), DialError::NoSession);
    assert_eq!(sim.failed(unknown).status(), 502);

    // Keep-alives flow on the control stream and change nothing else.
    sim.run_for(Duration::from_secs(61));
    let keepalives = sim.peers[p]
        .received
        .iter()
        .filter(|c| **c == Command::KeepAlive)
        .count();
    assert_eq!(keepalives, 2);
    assert_eq!(sim.stats(), (1, 1, 0, 0));
    assert!(matches!(sim.peers[p].listener.state(), State::Up { .. }));
}

#[test]
fn fifo_matching_with_go_mode_listeners() {
    let mut sim = Sim::new(anonymous_config(), 2);
    sim.jitter = Duration::from_millis(8);
    let p = sim.add_listener(listener_config("go", false, 0), None);
    sim.run_until_up(&[p]);
    let dials: Vec<DialId> = (0..8).map(|_| sim.dial("go")).collect();
    sim.run_for(Duration::from_secs(1));

    assert!(
        sim.peers[p].opened.iter().all(|(_, t)| t.is_none()),
        "a Go Listener echoes no token"
    );
    let arrival: Vec<usize> = dials
        .iter()
        .map(|d| sim.arrival_index(sim.ready(*d).0))
        .collect();
    assert_eq!(
        arrival,
        (0..8).collect::<Vec<_>>(),
        "FIFO: the k-th data stream to arrive answers the k-th dial"
    );
    let requests: Vec<RequestId> = dials
        .iter()
        .map(|d| sim.request_of(sim.ready(*d).0))
        .collect();
    assert!(
        requests.windows(2).any(|w| w[0] > w[1]),
        "the jitter must have reordered the streams for this test to mean anything: {requests:?}"
    );
    assert_eq!(sim.stats(), (1, 1, 0, 0));
}

#[test]
fn token_matching_with_out_of_order_streams() {
    let mut sim = Sim::new(anonymous_config(), 3);
    sim.jitter = Duration::from_millis(8);
    let p = sim.add_listener(listener_config("tok", true, 0), None);
    sim.run_until_up(&[p]);
    let dials: Vec<DialId> = (0..8).map(|_| sim.dial("tok")).collect();
    sim.run_for(Duration::from_secs(1));

    for d in &dials {
        let (_, _, token, _) = sim.ready(*d);
        assert_eq!(
            token.as_deref(),
            Some(sim.dial_tokens[d].as_str()),
            "{d:?} got another dial's stream"
        );
    }
    let arrival: Vec<usize> = dials
        .iter()
        .map(|d| sim.arrival_index(sim.ready(*d).0))
        .collect();
    assert!(
        arrival.windows(2).any(|w| w[0] > w[1]),
        "the streams must have arrived out of order for this test to mean anything"
    );
    assert_eq!(sim.stats(), (1, 1, 0, 0));
}

#[test]
fn spares_answer_at_once_and_are_replenished() {
    let mut sim = Sim::new(anonymous_config(), 4);
    let p = sim.add_listener(listener_config("sp", true, 2), None);
    sim.run_until_cond(Duration::from_secs(5), |s| s.dialer.stats().spares == 2);

    let d = sim.dial("sp");
    let (_, peer, token, at) = sim.ready(d);
    assert_eq!((peer, at), (p, sim.now), "answered with zero round trips");
    assert_eq!(token, None, "a spare opened on its own carries no token");
    assert_eq!(sim.stats(), (1, 1, 0, 1));
    sim.run_for(3 * sim.latency);
    assert_eq!(sim.stats(), (1, 1, 0, 2), "the spare was replenished");
    assert_eq!(sim.peers[p].opened.len(), 3);

    // Take both spares, then one more dial that must wait for its own stream.
    let t0 = sim.now;
    let d1 = sim.dial("sp");
    let d2 = sim.dial("sp");
    let d3 = sim.dial("sp");
    assert_eq!(sim.ready(d1).3, t0);
    assert_eq!(sim.ready(d2).3, t0);
    assert_eq!(sim.outcome(d3), None);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.ready(d3).3, t0 + 2 * sim.latency);
    assert_eq!(sim.stats(), (1, 1, 0, 2));
}

#[test]
fn pickup_failed_with_token_fails_exactly_that_dial() {
    let mut sim = Sim::new(anonymous_config(), 5);
    let p = sim.add_listener(listener_config("pf", true, 0), None);
    sim.run_until_up(&[p]);
    let d1 = sim.dial("pf");
    let d2 = sim.dial("pf");
    let d3 = sim.dial("pf");
    sim.peers[p].data_fault = DataFault::FailToken(sim.dial_tokens[&d2].clone());
    sim.run_for(Duration::from_secs(1));
    sim.ready(d1);
    sim.ready(d3);
    assert_eq!(
        sim.failed(d2),
        DialError::PickupFailed("injected: stream refused".into())
    );
    let sent = sim.sent_messages(p);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].command, Command::PickupFailed);
    assert_eq!(sent[0].conn_path, sim.dial_tokens[&d2]);
    assert_eq!(sim.stats(), (1, 1, 0, 0));
}

#[test]
fn pickup_failed_without_token_fails_the_oldest_dial() {
    let mut sim = Sim::new(anonymous_config(), 6);
    let p = sim.add_listener(listener_config("go", false, 0), None);
    sim.run_until_up(&[p]);
    sim.peers[p].data_fault = DataFault::FailNext(1);
    // Without tokens, `pickup-failed` names the oldest outstanding `conn-ready`: the
    // second dial's stream arrives after the first one's failure report.
    let d1 = sim.dial("go");
    sim.run_for(Duration::from_millis(5));
    let d2 = sim.dial("go");
    sim.run_for(Duration::from_secs(1));
    assert!(matches!(sim.failed(d1), DialError::PickupFailed(_)));
    sim.ready(d2);
    let sent = sim.sent_messages(p);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].conn_path, "", "a Go Listener sends no token");
    assert_eq!(sim.stats(), (1, 1, 0, 0));
}

#[test]
fn a_failed_spare_fails_no_dial() {
    let mut sim = Sim::new(anonymous_config(), 7);
    let p = sim.add_listener(listener_config("sp", true, 1), None);
    sim.peers[p].data_fault = DataFault::FailNext(1);
    // The Dialer has the session; the Listener learns it one latency later, opens its
    // spare, which fails. A dial made in between must not pay for that spare.
    sim.run_until_cond(Duration::from_secs(5), |s| s.dialer.stats().sessions == 1);
    sim.run_for(sim.latency / 2);
    let d = sim.dial("sp");
    sim.run_for(Duration::from_secs(1));
    sim.ready(d);
    assert!(
        sim.sent_messages(p).is_empty(),
        "nobody waited for that spare: nothing to report"
    );
}

#[test]
fn a_failed_replenishing_stream_fails_no_dial() {
    let mut sim = Sim::new(anonymous_config(), 18);
    let p = sim.add_listener(listener_config("sp", true, 1), None);
    sim.run_until_cond(Duration::from_secs(5), |s| s.dialer.stats().spares == 1);
    sim.peers[p].data_fault = DataFault::FailNext(1);
    // d1 takes the spare; the `conn-ready` that replenishes it fails on the Listener,
    // whose report reaches the Dialer while d2 waits for its own stream.
    let d1 = sim.dial("sp");
    sim.ready(d1);
    sim.run_for(sim.latency / 2);
    let d2 = sim.dial("sp");
    sim.run_for(Duration::from_secs(1));
    sim.ready(d2);
    let sent = sim.sent_messages(p);
    assert_eq!(sent.len(), 1, "the Listener reports the failed conn-ready");
    assert_eq!(sent[0].command, Command::PickupFailed);
    assert_ne!(
        sent[0].conn_path, "",
        "with the replenishing conn-ready's token"
    );
}

#[test]
fn dial_timeout() {
    let mut cfg = anonymous_config();
    cfg.dial_timeout = Duration::from_secs(3);
    let mut sim = Sim::new(cfg, 8);
    let p = sim.add_listener(listener_config("slow", true, 0), None);
    sim.run_until_up(&[p]);
    sim.peers[p].data_fault = DataFault::Blackhole;
    let t0 = sim.now;
    let d = sim.dial("slow");
    sim.run_for(Duration::from_secs(3) - Duration::from_millis(1));
    assert_eq!(sim.outcome(d), None);
    assert_eq!(sim.stats().2, 1);
    sim.run_for(Duration::from_millis(1));
    assert_eq!(
        sim.outcome(d),
        Some(&Outcome::Failed {
            error: DialError::Timeout,
            at: t0 + Duration::from_secs(3)
        })
    );
    assert_eq!(DialError::Timeout.status(), 504);
    assert_eq!(sim.stats(), (1, 1, 0, 0));
}

#[test]
fn control_stream_loss_fails_pending_dials_and_the_listener_reconnects() {
    let mut sim = Sim::new(anonymous_config(), 9);
    let p = sim.add_listener(listener_config("lost", true, 0), None);
    sim.run_until_up(&[p]);
    sim.peers[p].data_fault = DataFault::Blackhole;
    let d1 = sim.dial("lost");
    let d2 = sim.dial("lost");
    sim.run_for(Duration::from_millis(5));
    assert_eq!(sim.stats(), (1, 1, 2, 0));

    sim.peers[p].fail_connects = 7;
    sim.kill_control(p);
    sim.run_for(sim.latency);
    assert!(matches!(sim.failed(d1), DialError::SessionClosed(_)));
    assert!(matches!(sim.failed(d2), DialError::SessionClosed(_)));
    assert_eq!(sim.stats(), (0, 0, 0, 0));

    sim.peers[p].data_fault = DataFault::None;
    sim.run_until_up(&[p]);
    let peer = &sim.peers[p];
    assert_eq!(peer.downs.len(), 8, "one loss and seven refused connects");
    let initial = Duration::from_millis(100);
    let cap = Duration::from_secs(2);
    for (i, (at, retry_in, attempts)) in peer.downs.iter().enumerate() {
        assert_eq!(*attempts as usize, i + 1);
        let envelope = (initial * 2u32.pow(attempts - 1)).min(cap);
        assert!(
            *retry_in <= envelope,
            "delay {i} = {retry_in:?} is outside [0, {envelope:?}]"
        );
        assert_eq!(
            peer.connects[i + 1],
            *at + *retry_in,
            "the next attempt starts when the backoff ends"
        );
    }
    let delays: HashSet<Duration> = peer.downs.iter().map(|d| d.1).collect();
    assert!(delays.len() > 1, "the delays are jittered");
    assert!(
        peer.downs.iter().any(|d| d.1 > initial),
        "the delays grow past the first step"
    );

    assert_eq!(sim.stats(), (1, 1, 0, 0));
    let d3 = sim.dial("lost");
    sim.run_for(Duration::from_secs(1));
    sim.ready(d3);
}

#[test]
fn two_listeners_per_id_spread_dials_and_fail_over() {
    let mut cfg = DialerConfig::default();
    cfg.auth
        .add_token(id("svc"), "tok-a")
        .add_token(id("svc"), "tok-b");
    let mut sim = Sim::new(cfg, 10);
    let a = sim.add_listener(listener_config("svc", true, 0), Some("tok-a"));
    let b = sim.add_listener(listener_config("svc", true, 0), Some("tok-b"));
    sim.run_until_up(&[a, b]);
    assert_eq!(sim.stats(), (2, 1, 0, 0), "role=control joins");

    let dials: Vec<DialId> = (0..8).map(|_| sim.dial("svc")).collect();
    sim.run_for(Duration::from_secs(1));
    let served_by = |sim: &Sim, p: usize, dials: &[DialId]| {
        dials.iter().filter(|d| sim.ready(**d).1 == p).count()
    };
    assert!(served_by(&sim, a, &dials) >= 2, "dials spread over both");
    assert!(served_by(&sim, b, &dials) >= 2, "dials spread over both");

    // A dies with dials waiting on it: they move to B.
    let control_a = sim.peers[a].control.unwrap();
    let control_b = sim.peers[b].control.unwrap();
    let before = sim.conn_readies.len();
    let dials: Vec<DialId> = (0..6).map(|_| sim.dial("svc")).collect();
    sim.kill_conn(a);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(served_by(&sim, b, &dials), 6, "every dial failed over to B");
    let sent = &sim.conn_readies[before..];
    let moved = sent
        .iter()
        .filter(|(s, t)| *s == control_a && sent.contains(&(control_b, t.clone())))
        .count();
    assert!(moved > 0, "some dials were first sent to A");
    // A comes back and joins again.
    sim.run_until_up(&[a]);
    assert_eq!(sim.stats(), (2, 1, 0, 0));
}

#[test]
fn anonymous_newcomer_is_refused_while_the_session_lives() {
    let mut sim = Sim::new(anonymous_config(), 11);
    let p1 = sim.add_listener(listener_config("anon", false, 0), None);
    sim.run_until_up(&[p1]);
    let d = sim.dial("anon");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.ready(d).1, p1);

    let p2 = sim.add_listener(listener_config("anon", false, 0), None);
    let mut marked = listener_config("anon", true, 0);
    marked.max_attempts = Some(1);
    let p3 = sim.add_listener(marked, None);
    sim.run_for(Duration::from_secs(5));
    assert!(!sim.peers[p2].rejections.is_empty());
    assert!(sim.peers[p2].rejections.iter().all(|s| *s == 409));
    assert_eq!(sim.peers[p3].rejections, vec![409]);
    assert_eq!(sim.session_ups.len(), 1, "nobody took the live id");

    sim.close_listener(p1);
    sim.run_until_up(&[p2]);
    assert_eq!(sim.stats(), (1, 1, 0, 0));
    assert_eq!(Some(sim.session_ups.last().unwrap().1), sim.peers[p2].conn);
    let d = sim.dial("anon");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.ready(d).1, p2);
}

#[test]
fn authenticated_unmarked_newcomer_replaces() {
    let mut cfg = DialerConfig::default();
    cfg.auth.add_token(id("r"), "tok");
    let mut sim = Sim::new(cfg, 12);
    let mut c1 = listener_config("r", false, 0);
    c1.max_attempts = Some(1);
    let p1 = sim.add_listener(c1, Some("tok"));
    sim.run_until_up(&[p1]);
    let old_control = sim.peers[p1].control.unwrap();

    let p2 = sim.add_listener(listener_config("r", false, 0), Some("tok"));
    sim.run_until_up(&[p2]);
    assert_eq!(sim.session_downs.len(), 1);
    assert!(sim.session_downs[0].1.contains("replaced"));
    assert!(sim.resets.contains(&old_control));
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.peers[p1].listener.state(), State::Closed);
    assert_eq!(sim.stats(), (1, 1, 0, 0));
    let d = sim.dial("r");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.ready(d).1, p2);
}

#[test]
fn wrong_token_is_403_and_missing_is_401() {
    let mut cfg = DialerConfig::default();
    cfg.auth.add_token(id("x"), "good");
    let mut sim = Sim::new(cfg, 13);
    let mut c = listener_config("x", true, 0);
    c.max_attempts = Some(1);
    let wrong = sim.add_listener(c.clone(), Some("bad"));
    let missing = sim.add_listener(c.clone(), None);
    let good = sim.add_listener(c, Some("good"));
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.peers[wrong].rejections, vec![403]);
    assert_eq!(sim.peers[missing].rejections, vec![401]);
    assert_eq!(sim.peers[wrong].listener.state(), State::Closed);
    assert!(matches!(sim.peers[good].listener.state(), State::Up { .. }));
    assert_eq!(sim.stats(), (1, 1, 0, 0));
}

#[test]
fn limit_max_sessions() {
    let mut cfg = anonymous_config();
    cfg.max_sessions = 1;
    let mut sim = Sim::new(cfg, 14);
    let a = sim.add_listener(listener_config("a", true, 0), None);
    sim.run_until_up(&[a]);
    let mut c = listener_config("b", true, 0);
    c.max_attempts = Some(1);
    let b = sim.add_listener(c, None);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.peers[b].rejections, vec![LimitError::Sessions.status()]);
    assert_eq!(LimitError::Sessions.status(), 503);
    assert_eq!(sim.stats(), (1, 1, 0, 0));
}

#[test]
fn limit_max_sessions_per_id() {
    let mut cfg = DialerConfig {
        max_sessions_per_id: 1,
        ..DialerConfig::default()
    };
    cfg.auth.add_token(id("a"), "t");
    let mut sim = Sim::new(cfg, 15);
    let a = sim.add_listener(listener_config("a", true, 0), Some("t"));
    sim.run_until_up(&[a]);
    let mut c = listener_config("a", true, 0);
    c.max_attempts = Some(1);
    let b = sim.add_listener(c, Some("t"));
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        sim.peers[b].rejections,
        vec![LimitError::SessionsPerId.status()]
    );
    assert_eq!(LimitError::SessionsPerId.status(), 429);
    assert_eq!(sim.stats(), (1, 1, 0, 0));
}

#[test]
fn limit_max_pending_dials_per_id() {
    let mut cfg = anonymous_config();
    cfg.max_pending_dials_per_id = 2;
    let mut sim = Sim::new(cfg, 16);
    let p = sim.add_listener(listener_config("a", true, 0), None);
    sim.run_until_up(&[p]);
    sim.peers[p].data_fault = DataFault::Blackhole;
    let _d1 = sim.dial("a");
    let _d2 = sim.dial("a");
    let d3 = sim.dial("a");
    let err = sim.failed(d3);
    assert_eq!(err, DialError::Limit(LimitError::PendingDials));
    assert_eq!(err.status(), LimitError::PendingDials.status());
    assert_eq!(err.status(), 429);
    assert_eq!(sim.stats(), (1, 1, 2, 0));
}

#[test]
fn limit_max_spares_per_session() {
    let mut cfg = anonymous_config();
    cfg.max_spares_per_session = 1;
    let mut sim = Sim::new(cfg, 17);
    let p = sim.add_listener(listener_config("a", true, 3), None);
    sim.run_until_up(&[p]);
    sim.run_for(Duration::from_secs(1));
    let statuses: Vec<u16> = sim.rejects.iter().map(|r| r.2).collect();
    assert_eq!(statuses, vec![LimitError::Spares.status(); 2]);
    assert_eq!(LimitError::Spares.status(), 429);
    assert_eq!(sim.stats(), (1, 1, 0, 1));
    assert!(
        sim.sent_messages(p).is_empty(),
        "a refused spare is no dial's pickup failure"
    );
    let d = sim.dial("a");
    assert_eq!(sim.ready(d).3, sim.now);
}

fn mixed_scenario(seed: u64) -> String {
    let mut cfg = DialerConfig::default();
    cfg.auth.add_token(id("m"), "t1").add_token(id("m"), "t2");
    let mut sim = Sim::new(cfg, seed);
    sim.jitter = Duration::from_millis(5);
    let a = sim.add_listener(listener_config("m", true, 1), Some("t1"));
    let b = sim.add_listener(listener_config("m", true, 0), Some("t2"));
    sim.run_until_up(&[a, b]);
    for _ in 0..5 {
        sim.dial("m");
    }
    sim.kill_conn(b);
    for _ in 0..5 {
        sim.dial("m");
    }
    sim.run_for(Duration::from_secs(3));
    sim.trace
}

#[test]
fn same_seed_same_trace() {
    let a = mixed_scenario(7);
    assert_eq!(a, mixed_scenario(7));
    assert_ne!(a, mixed_scenario(8), "the seed matters");
}

// ---- the 2022 wire (issue 14) ---------------------------------------------------------

/// A 2022 Go Listener, played by our machine on the 2022 wire with one spare whose
/// replacement is opened only once the last stream is finished: one reverse
/// connection at a time. Our Dialer parks each stream, writes nothing into any, and
/// queues 20 parallel dials for the next streams, in order; a dial no stream reaches
/// in time times out (504), none fails for want of a session.
#[test]
fn a_2022_listener_serves_queued_dials_one_stream_at_a_time() {
    for seed in 0..8 {
        let mut sim = Sim::new(anonymous_config(), seed);
        sim.jitter = Duration::from_millis(5);
        let mut cfg = listener_config("go", false, 1);
        cfg.wire = Wire::Go2022;
        let peer = sim.add_listener(cfg, None);
        sim.peers[peer].used_after = Duration::from_millis(150);
        sim.run_until_up(&[peer]);
        sim.run_for(Duration::from_millis(100));
        assert_eq!(sim.stats(), (1, 1, 0, 1), "one session, one parked stream");
        let dials: Vec<DialId> = (0..20).map(|_| sim.dial("go")).collect();
        sim.run_for(Duration::from_secs(12));
        let mut last = None;
        for d in &dials {
            let (stream, p, _, at) = sim.ready(*d);
            assert_eq!(p, peer);
            // In order, one stream after the other.
            assert!(
                last.is_none_or(|l| l < at),
                "seed {seed}: {d:?} out of order"
            );
            last = Some(at);
            assert!(sim.handed_out.contains(&stream));
        }
        // No control stream, nothing written into any stream.
        assert_eq!(sim.peers[peer].control, None);
        assert!(sim.conn_readies.is_empty(), "seed {seed}");
        assert!(sim.peers[peer].sent_control.is_empty());
        assert!(sim.resets.is_empty(), "seed {seed}: {:?}", sim.resets);

        // Streams that come too slowly: the dials past the deadline time out.
        sim.peers[peer].used_after = Duration::from_secs(4);
        let _ = sim.dial("go"); // takes the parked stream
        let late: Vec<DialId> = (0..4).map(|_| sim.dial("go")).collect();
        sim.run_for(Duration::from_secs(30));
        let timeouts = late
            .iter()
            .filter(|d| {
                matches!(
                    sim.outcome(**d),
                    Some(Outcome::Failed {
                        error: DialError::Timeout,
                        ..
                    })
                )
            })
            .count();
        assert!(timeouts >= 1, "seed {seed}");
        assert!(
            late.iter().all(|d| matches!(
                sim.outcome(*d),
                Some(Outcome::Ready { .. })
                    | Some(Outcome::Failed {
                        error: DialError::Timeout,
                        ..
                    })
            )),
            "seed {seed}"
        );
    }
}

/// Our Listener on the 2022 wire against a 2022 public side (a model of the Go
/// `ReversePool` of April 2022: every stream is a conn, handed to the next dial; a
/// dial waits up to 5 s). N spares stay open and are replaced as they are used; no
/// control stream is ever opened; every dial is served.
#[test]
fn our_2022_listener_against_a_2022_public_side() {
    #[derive(Debug)]
    enum Ev {
        Connected,
        /// The public side received a stream and answered 200.
        Arrived(RequestId),
        Opened(RequestId),
        Dial(u32),
        Used(RequestId),
    }
    for seed in 0..8u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let t0 = Instant::now();
        let mut now = t0;
        let lat = Duration::from_millis(10);
        let mut cfg = listener_config("go", true, 3);
        cfg.wire = Wire::Go2022;
        let mut l = Listener::new(cfg, seed);
        let mut queue: BTreeMap<(Instant, u64), Ev> = BTreeMap::new();
        let mut seq = 0u64;
        let mut push = |q: &mut BTreeMap<(Instant, u64), Ev>, at: Instant, ev: Ev| {
            seq += 1;
            q.insert((at, seq), ev);
        };
        // 40 dials at seeded times over 4 s.
        for n in 0..40 {
            let at = t0 + Duration::from_millis(200 + rng.u64(0..4000));
            push(&mut queue, at, Ev::Dial(n));
        }
        let mut parked: VecDeque<RequestId> = VecDeque::new();
        let mut waiting: VecDeque<(u32, Instant)> = VecDeque::new();
        let mut served: Vec<(u32, Duration)> = Vec::new();
        let mut open = 0usize;
        let mut max_unused = 0usize;
        loop {
            while let Some(a) = l.poll_action() {
                match a {
                    listener::Action::Connect => push(&mut queue, now + lat, Ev::Connected),
                    listener::Action::OpenData {
                        request,
                        path_and_query,
                    } => {
                        let r = parse(&RouteConfig::default(), &path_and_query).unwrap();
                        assert_eq!((r.role, r.conn), (None, None), "{path_and_query}");
                        open += 1;
                        push(&mut queue, now + lat, Ev::Arrived(request));
                    }
                    listener::Action::Up | listener::Action::Down { .. } => {}
                    other => panic!("seed {seed}: {other:?} on the 2022 wire"),
                }
            }
            let Some(((at, _), ev)) = queue.pop_first() else {
                break;
            };
            now = at;
            match ev {
                Ev::Connected => l.handle_event(now, listener::Event::Connected),
                Ev::Arrived(r) => {
                    // Handed to the oldest waiting dial still within its 5 s, else parked.
                    let mut taken = false;
                    while let Some((d, since)) = waiting.pop_front() {
                        if now - since <= Duration::from_secs(5) {
                            served.push((d, now - since));
                            push(&mut queue, now + lat, Ev::Used(r));
                            taken = true;
                            break;
                        }
                    }
                    if !taken {
                        parked.push_back(r);
                    }
                    push(&mut queue, now + lat, Ev::Opened(r));
                }
                Ev::Opened(r) => l.handle_event(now, listener::Event::DataOpened { request: r }),
                Ev::Dial(d) => match parked.pop_front() {
                    Some(r) => {
                        served.push((d, Duration::ZERO));
                        push(&mut queue, now + lat, Ev::Used(r));
                    }
                    None => waiting.push_back((d, now)),
                },
                Ev::Used(r) => {
                    open -= 1;
                    l.handle_event(now, listener::Event::DataUsed { request: r })
                }
            }
            max_unused = max_unused.max(open);
        }
        assert_eq!(served.len(), 40, "seed {seed}: every dial served");
        assert!(waiting.is_empty());
        // Never more than the spares open and unused (plus one being replaced).
        assert!(max_unused <= 3, "seed {seed}: {max_unused}");
        // Replaced as used: three spares wait at the end.
        assert_eq!(parked.len(), 3, "seed {seed}");
        // A replacement is two latencies away: a dial waits at most that long.
        assert!(
            served.iter().all(|(_, w)| *w <= Duration::from_millis(100)),
            "seed {seed}: {served:?}"
        );
    }
}
