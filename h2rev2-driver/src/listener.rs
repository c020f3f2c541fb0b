//! The NAT side: a Listener that dials out to the public server and accepts reverse
//! connections, reconnecting forever with the core's backoff.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use h2rev2_proto::conn::ConnConfig;
use h2rev2_proto::listener::{
    Action, Claim, DownReason, Event, Listener as Machine, ListenerConfig, REPLICA_HEADER,
    RequestId, Spread, State,
};
use h2rev2_proto::wire::{DialerId, GO2022_CONTENT_TYPE, RouteConfig, Wire};
use http::{Request, Uri};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::conn::RevConn;
use crate::io::{Connect, Target};
use crate::runtime::Rt;
use crate::settings::H2Settings;

/// Settings of a [`Listener`].
#[derive(Clone)]
pub struct ListenerOptions {
    /// The public server: `https://host:port[/base]` (`http://` only with
    /// [`ListenerOptions::cleartext`]).
    pub url: Uri,
    /// The core's settings: id, spares, role marking, backoff.
    pub machine: ListenerConfig,
    /// Sent as `Authorization: Bearer` on every revdial request.
    pub token: Option<String>,
    /// TLS client config; its ALPN must offer `h2`. `None` with `cleartext`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Speak HTTP/2 without TLS (prior knowledge). Tests and front proxies only.
    pub cleartext: bool,
    /// HTTP/2 settings.
    pub h2: H2Settings,
    /// Reverse connection write coalescing.
    pub conn: ConnConfig,
    /// TCP + TLS + HTTP/2 handshake must finish within this. Default 10 s.
    pub connect_timeout: Duration,
    /// The group of Listeners to the same address whose sessions go to distinct
    /// replicas of a cluster (`--connections N`). `None`: stand alone.
    pub spread: Option<SpreadGroup>,
}

/// Listeners that keep their sessions on distinct replicas of a cluster behind one
/// (load-balanced) address: give each one's [`ListenerOptions::spread`] a clone of the
/// same group. A session that lands on a replica another one of the group holds (the
/// server names it: [`h2rev2_proto::listener::REPLICA_HEADER`]) is ended and made
/// again, up to 8 times, then kept.
#[derive(Clone, Default)]
pub struct SpreadGroup(Arc<std::sync::Mutex<(Spread, u64)>>);

impl fmt::Debug for SpreadGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpreadGroup").finish_non_exhaustive()
    }
}

impl SpreadGroup {
    /// A new group.
    pub fn new() -> Self {
        SpreadGroup(Arc::new(std::sync::Mutex::new((Spread::new(8), 0))))
    }

    fn with<T>(&self, f: impl FnOnce(&mut (Spread, u64)) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn member(&self) -> u64 {
        self.with(|(_, n)| {
            *n += 1;
            *n
        })
    }
}

impl fmt::Debug for ListenerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerOptions")
            .field("url", &self.url)
            .field("id", &self.machine.id)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// A bad [`ListenerOptions`]: what is wrong, with the URL it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OptionsError {
    /// The public server's URL does not parse.
    BadUrl {
        /// The URL as given.
        url: String,
        /// Why it does not parse.
        reason: String,
    },
    /// `http://` without [`ListenerOptions::cleartext`]: the Listener speaks TLS.
    PlainHttp(Uri),
    /// A scheme other than `https://` (or `http://` for cleartext).
    BadScheme(Uri),
    /// The URL names no host.
    NoHost(Uri),
    /// TLS is asked for and [`ListenerOptions::tls`] is `None`.
    NoTlsConfig,
}

impl fmt::Display for OptionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionsError::BadUrl { url, reason } => write!(f, "bad URL {url:?}: {reason}"),
            OptionsError::PlainHttp(u) => write!(
                f,
                "{u}: plain http is refused: the Listener speaks TLS HTTP/2 (use https://)"
            ),
            OptionsError::BadScheme(u) => write!(f, "{u}: expected https://host[:port][/base]"),
            OptionsError::NoHost(u) => write!(f, "{u}: no host"),
            OptionsError::NoTlsConfig => f.write_str("TLS config missing"),
        }
    }
}

impl std::error::Error for OptionsError {}

impl ListenerOptions {
    /// Options for registering `id` at the public server `url`
    /// (`https://host:port/base`). The URL's path becomes the base path.
    pub fn new(
        url: &str,
        id: DialerId,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Self, OptionsError> {
        let mut o = ListenerOptions::build(url, id)?;
        o.tls = Some(tls);
        o.validate()?;
        Ok(o)
    }

    /// Options for cleartext HTTP/2 (`http://host:port/base`): tests, or a public
    /// server behind a TLS-terminating front proxy.
    pub fn cleartext(url: &str, id: DialerId) -> Result<Self, OptionsError> {
        let mut o = ListenerOptions::build(url, id)?;
        o.cleartext = true;
        o.validate()?;
        Ok(o)
    }

    fn build(url: &str, id: DialerId) -> Result<Self, OptionsError> {
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| OptionsError::BadUrl {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        let mut machine = ListenerConfig::new(id);
        machine.routes = RouteConfig::default().with_base(uri.path());
        Ok(ListenerOptions {
            machine,
            url: uri,
            token: None,
            tls: None,
            cleartext: false,
            h2: H2Settings::default(),
            conn: ConnConfig::default(),
            connect_timeout: Duration::from_secs(10),
            spread: None,
        })
    }

    /// Checks the URL scheme against `cleartext` and that TLS settings are present.
    pub fn validate(&self) -> Result<(), OptionsError> {
        let scheme = self.url.scheme_str().unwrap_or("");
        match (scheme, self.cleartext) {
            ("https", false) | ("http", true) => {}
            ("http", false) => {
                return Err(OptionsError::PlainHttp(self.url.clone()));
            }
            _ => {
                return Err(OptionsError::BadScheme(self.url.clone()));
            }
        }
        if self.url.host().is_none_or(str::is_empty) {
            return Err(OptionsError::NoHost(self.url.clone()));
        }
        if !self.cleartext && self.tls.is_none() {
            return Err(OptionsError::NoTlsConfig);
        }
        Ok(())
    }

    /// `host:port` of the public server.
    pub fn addr(&self) -> String {
        let host = self.url.host().unwrap_or_default();
        let port = self
            .url
            .port_u16()
            .unwrap_or(if self.cleartext { 80 } else { 443 });
        format!("{host}:{port}")
    }
}

/// Where a [`Listener`] is, for health checks and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Connecting or waiting to retry; the last error, if any.
    Down(Option<DownReason>),
    /// The control stream is up.
    Up,
    /// Stopped for good.
    Closed(DownReason),
}

/// The NAT side, on any [`Rt`] and [`Connect`]: dials out to the public server,
/// keeps the session up (reconnecting forever with the core's backoff) and accepts
/// the reverse connections the server dials. The runtime bindings wrap it
/// (`h2rev2_tokio::Listener`, `h2rev2_smol::Listener`).
///
/// [`Listener::accept`] takes `&self`, so several tasks may accept at once, and
/// [`Listener::incoming`] is the same as a `Stream`.
pub struct Listener {
    accept: async_channel::Receiver<RevConn>,
    /// Set once [`Listener::close`] was called; every driver of this Listener (a
    /// session's successor too) watches it.
    stop: watch::Sender<bool>,
    status: watch::Receiver<Status>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("status", &*self.status.borrow())
            .finish()
    }
}

impl Listener {
    /// Starts the Listener's driver on `rt`; it connects through `connector` in the
    /// background and keeps reconnecting. Returns at once.
    pub fn connect(
        opts: ListenerOptions,
        rt: Rt,
        connector: Arc<dyn Connect>,
    ) -> Result<Listener, OptionsError> {
        opts.validate()?;
        // Accepted conns wait here while the application is not accepting; beyond
        // that the public server's dials wait (backpressure).
        let (accept_tx, accept) = async_channel::bounded(64);
        let (status_tx, status) = watch::channel(Status::Down(None));
        let (stop, stopped) = watch::channel(false);
        Driver::start(Shared {
            opts,
            accept_tx,
            status: Arc::new(status_tx),
            stop: stopped,
            up: Default::default(),
            rt,
            connector,
        });
        Ok(Listener {
            accept,
            stop,
            status,
        })
    }

    /// The next reverse connection. Fails only once the Listener is closed.
    pub async fn accept(&self) -> io::Result<RevConn> {
        self.accept.recv().await.map_err(|_| {
            let why = match &*self.status.borrow() {
                Status::Closed(r) => r.to_string(),
                _ => "listener closed".into(),
            };
            io::Error::new(io::ErrorKind::NotConnected, why)
        })
    }

    /// The reverse connections as a `Stream`; it ends when the Listener closes.
    pub fn incoming(&self) -> impl futures_util::Stream<Item = RevConn> + Send + 'static {
        self.accept.clone()
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A watch of the status (a runtime-agnostic `tokio::sync::watch`).
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Waits until the control stream is up (or the Listener closed: `Err`).
    pub async fn wait_up(&self) -> Result<(), DownReason> {
        let mut w = self.status.clone();
        loop {
            match &*w.borrow_and_update() {
                Status::Up => return Ok(()),
                Status::Closed(r) => return Err(r.clone()),
                Status::Down(_) => {}
            }
            if w.changed().await.is_err() {
                return Err(task_ended());
            }
        }
    }

    /// Waits until the Listener is not up (down or closed); the status then.
    pub async fn wait_down(&self) -> Status {
        let mut w = self.status.clone();
        loop {
            let s = w.borrow_and_update().clone();
            if s != Status::Up {
                return s;
            }
            if w.changed().await.is_err() {
                return Status::Closed(task_ended());
            }
        }
    }

    /// Stops for good: the session ends and `accept` fails. Conns already accepted
    /// live on until their connection closes.
    pub fn close(&self) {
        self.stop.send_replace(true);
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
    }
}

/// The Listener's task is gone without saying why (its runtime shut down).
fn task_ended() -> DownReason {
    DownReason::Lost("the Listener's task ended".into())
}

enum Internal {
    Connected(u64, SendRequest<Bytes>),
    ConnectFailed(u64, String),
    /// With the replica the server names, if any.
    ControlAccepted(u64, SendStream<Bytes>, RecvStream, Option<String>),
    ControlRejected(u64, u16, String),
    ControlData(u64, Bytes),
    Disconnected(u64, String),
    DataOpened(u64, RequestId),
    DataFailed(u64, RequestId, String),
    DataRejected(u64, RequestId, u16, String),
    DataUsed(u64, RequestId),
    Close,
}

/// How often a Listener that keeps failing the same way says so again at `warn`.
const DOWN_REMINDER: Duration = Duration::from_secs(600);

/// Logs a Listener's failed attempts on changes, not on every retry: the first failure
/// of a kind at `warn` with the next attempt's delay, the same failure again at `debug`
/// (and at `warn` once per [`DOWN_REMINDER`], with the count), and coming up after
/// failures with their count.
#[derive(Debug, Default)]
struct DownLog {
    /// The last failure logged at `warn`, when, and the attempts since that failed the
    /// same way.
    last: Option<(String, Instant, u64)>,
    /// Attempts failed since the session was last up.
    failed: u64,
}

/// What [`DownLog::down`] decides.
#[derive(Debug, PartialEq, Eq)]
enum DownLine {
    /// A new kind of failure (or a reminder, with the attempts that failed the same way
    /// since the last line): `warn`.
    Warn { same_since: u64 },
    /// The same failure as the last line: `debug`.
    Quiet { same_since: u64 },
}

impl DownLog {
    fn down(&mut self, now: Instant, reason: &str) -> DownLine {
        self.failed += 1;
        match &mut self.last {
            Some((last, at, n)) if last == reason => {
                *n += 1;
                if now.duration_since(*at) >= DOWN_REMINDER {
                    let same_since = std::mem::take(n);
                    *at = now;
                    DownLine::Warn { same_since }
                } else {
                    DownLine::Quiet { same_since: *n }
                }
            }
            _ => {
                self.last = Some((reason.to_string(), now, 0));
                DownLine::Warn { same_since: 0 }
            }
        }
    }

    /// The session is up: the attempts that failed before it, and a fresh start.
    fn up(&mut self) -> u64 {
        self.last = None;
        std::mem::take(&mut self.failed)
    }

    /// Whether this attempt is a retry after failures (its start is logged at `debug`).
    fn retrying(&self) -> bool {
        self.failed > 0
    }
}

/// What every driver of one [`Listener`] shares: a session's successor is started
/// with a clone.
#[derive(Clone)]
struct Shared {
    opts: ListenerOptions,
    accept_tx: async_channel::Sender<RevConn>,
    status: Arc<watch::Sender<Status>>,
    stop: watch::Receiver<bool>,
    /// Sessions up among the drivers: the Listener is down only when none is.
    up: Arc<std::sync::atomic::AtomicUsize>,
    rt: Rt,
    connector: Arc<dyn Connect>,
}

/// One session's driver: connects, reconnects, carries out the core machine's
/// actions. When the public server is going away it starts a successor (a new driver
/// with a new session) and retires: it serves on until its session ends, then stops
/// instead of reconnecting (make before break).
struct Driver {
    down_log: DownLog,
    machine: Machine,
    tx: mpsc::UnboundedSender<Internal>,
    generation: u64,
    h2: Option<SendRequest<Bytes>>,
    control: Option<SendStream<Bytes>>,
    /// The options, the accept queue, the runtime and the connector, with the other
    /// drivers of its Listener.
    shared: Shared,
    /// A successor took over: no reconnecting.
    retiring: bool,
    /// Whether its session is up and counted in [`Shared::up`].
    counted: bool,
    /// Its number in [`ListenerOptions::spread`]'s group.
    member: Option<u64>,
    /// Its last session was ended for landing on a replica another one of the group
    /// holds: the coming `Down` is no failure (logged at `info`).
    respreading: bool,
}

impl Driver {
    fn start(shared: Shared) {
        let (tx, rx) = mpsc::unbounded_channel();
        let seed = fastrand::u64(..);
        let driver = Driver {
            down_log: DownLog::default(),
            machine: Machine::new(shared.opts.machine.clone(), seed),
            tx,
            generation: 0,
            h2: None,
            control: None,
            retiring: false,
            counted: false,
            member: shared.opts.spread.as_ref().map(SpreadGroup::member),
            respreading: false,
            shared: shared.clone(),
        };
        shared.rt.spawn(driver.run(rx));
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Internal>) {
        let mut stop = self.shared.stop.clone();
        if *stop.borrow_and_update() {
            self.on_internal(Internal::Close);
        }
        if !self.drain() {
            return;
        }
        let mut deadline = crate::runtime::Deadline::new(self.shared.rt.clone());
        loop {
            let sleep = deadline.until(self.machine.poll_timeout());
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(m) => self.on_internal(m),
                    None => return,
                },
                changed = stop.changed() => {
                    // The Listener was closed, or dropped (the sender is gone).
                    if changed.is_err() || *stop.borrow_and_update() {
                        self.on_internal(Internal::Close);
                    }
                }
                _ = sleep => self.machine.handle_timeout(self.shared.rt.now()),
            }
            if !self.drain() {
                return;
            }
        }
    }

    /// Its session ended: uncounted; whether another driver's session is up (the
    /// predecessor or successor of this one).
    fn session_ended(&mut self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        if let (Some(group), Some(member)) = (&self.shared.opts.spread, self.member) {
            group.with(|(s, _)| s.release(member));
        }
        if std::mem::take(&mut self.counted) {
            self.shared.up.fetch_sub(1, SeqCst);
        }
        self.shared.up.load(SeqCst) > 0
    }

    fn on_internal(&mut self, msg: Internal) {
        let now = self.shared.rt.now();
        let current = self.generation;
        let ev = match msg {
            Internal::Connected(g, h2) if g == current => {
                self.h2 = Some(h2);
                Event::Connected
            }
            // A late connection of an older attempt: dropping its handle ends it.
            Internal::Connected(..) => return,
            Internal::ConnectFailed(g, reason) if g == current => Event::ConnectFailed { reason },
            Internal::ControlAccepted(g, mut send, recv, replica) if g == current => {
                if let (Some(group), Some(member)) = (&self.shared.opts.spread, self.member) {
                    match group.with(|(s, _)| s.claim(member, replica.as_deref())) {
                        Claim::Distinct => {}
                        Claim::Kept { replica } => {
                            info!(id = %self.shared.opts.machine.id, %replica, "this connection shares its replica with another one of the Listener's (no other replica was reached)");
                        }
                        Claim::Duplicate { replica } => {
                            // Connect again: the load balancer likely picks another.
                            send.send_reset(h2::Reason::CANCEL);
                            drop(recv);
                            self.teardown();
                            self.respreading = true;
                            let reason = format!(
                                "landed on replica {replica}, which another connection of \
                                 this Listener holds: connecting again"
                            );
                            return self
                                .machine
                                .handle_event(now, Event::Disconnected { reason });
                        }
                    }
                }
                self.control = Some(send);
                self.shared.rt.spawn(read_control(g, recv, self.tx.clone()));
                Event::ControlAccepted
            }
            Internal::ControlRejected(g, status, reason) if g == current => {
                Event::ControlRejected { status, reason }
            }
            Internal::ControlData(g, data) if g == current => {
                return self.machine.handle_event(now, Event::ControlData(&data));
            }
            Internal::Disconnected(g, reason) if g == current => {
                self.teardown();
                Event::Disconnected { reason }
            }
            Internal::DataOpened(g, request) if g == current => Event::DataOpened { request },
            Internal::DataFailed(g, request, reason) if g == current => {
                Event::DataFailed { request, reason }
            }
            Internal::DataRejected(g, request, status, body) if g == current => {
                Event::DataRejected {
                    request,
                    status,
                    body,
                }
            }
            Internal::DataUsed(g, request) if g == current => Event::DataUsed { request },
            Internal::Close => Event::Close,
            _ => return, // a late event of an older connection
        };
        self.machine.handle_event(now, ev);
    }

    /// Ends the session: resets the control stream and lets go of the connection.
    ///
    /// The connection itself is not aborted: conns already accepted on it (a response
    /// in flight while the public server shuts down gracefully, say) finish first. Its
    /// task ends by itself once the last stream is done, or when the connection dies
    /// (I/O error, PING timeout); its late `Disconnected` carries an old generation or
    /// arrives in a state that ignores it.
    fn teardown(&mut self) {
        self.h2 = None;
        if let Some(mut c) = self.control.take() {
            c.send_reset(h2::Reason::CANCEL);
        }
    }

    /// Carries out the machine's actions; `false` once closed.
    fn drain(&mut self) -> bool {
        while let Some(action) = self.machine.poll_action() {
            match action {
                Action::Connect if self.retiring => {
                    // Its successor holds the Listener's session now.
                    self.session_ended();
                    self.teardown();
                    return false;
                }
                Action::Connect => {
                    self.teardown();
                    self.generation += 1;
                    let g = self.generation;
                    if self.down_log.retrying() {
                        debug!(url = %self.shared.opts.url, id = %self.shared.opts.machine.id, "Listener connecting again");
                    } else {
                        info!(url = %self.shared.opts.url, id = %self.shared.opts.machine.id, "Listener connecting");
                    }
                    self.shared.rt.spawn(connect(
                        g,
                        self.shared.opts.clone(),
                        self.tx.clone(),
                        self.shared.rt.clone(),
                        self.shared.connector.clone(),
                    ));
                }
                Action::OpenControl { path_and_query } => {
                    let Some(h2) = self.h2.clone() else { continue };
                    let req = self.request(&path_and_query);
                    let g = self.generation;
                    let tx = self.tx.clone();
                    self.shared.rt.spawn(async move {
                        let msg = match open_control(h2, req).await {
                            Ok(m) => m(g),
                            Err(e) => Internal::Disconnected(g, e),
                        };
                        let _ = tx.send(msg);
                    });
                }
                Action::OpenData {
                    request,
                    path_and_query,
                } => {
                    let Some(h2) = self.h2.clone() else { continue };
                    let req = self.request(&path_and_query);
                    let g = self.generation;
                    let tx = self.tx.clone();
                    let accept = self.shared.accept_tx.clone();
                    let conn_cfg = self.shared.opts.conn;
                    let label = self.shared.opts.machine.id.to_string();
                    let rt = self.shared.rt.clone();
                    let go2022 = self.machine.wire() == Wire::Go2022;
                    self.shared.rt.spawn(async move {
                        let msg = match open_data(h2, req).await {
                            Ok((send, recv)) => {
                                let mut conn =
                                    RevConn::new(send, recv, conn_cfg, label, rt.clone());
                                if go2022 {
                                    // The machine replaces a spare once it is used.
                                    let (used, when) = tokio::sync::oneshot::channel();
                                    conn = conn.with_used_signal(used);
                                    let tx = tx.clone();
                                    rt.spawn(async move {
                                        if when.await.is_ok() {
                                            let _ = tx.send(Internal::DataUsed(g, request));
                                        }
                                    });
                                }
                                let _ = tx.send(Internal::DataOpened(g, request));
                                // Waits while the application is not accepting: backpressure.
                                let _ = accept.send(conn).await;
                                return;
                            }
                            Err(DataError::Failed(reason)) => {
                                Internal::DataFailed(g, request, reason)
                            }
                            Err(DataError::Rejected(status, body)) => {
                                Internal::DataRejected(g, request, status, body)
                            }
                        };
                        let _ = tx.send(msg);
                    });
                }
                Action::SendControl(data) => {
                    if let Some(c) = self.control.as_mut() {
                        if let Err(e) = c.send_data(Bytes::from(data), false) {
                            // The control stream is gone: the session is over.
                            let _ = self.tx.send(Internal::Disconnected(
                                self.generation,
                                format!("cannot write to the control stream: {e}"),
                            ));
                        }
                    }
                }
                Action::Disconnect { reason } => {
                    debug!("disconnecting: {reason}");
                    self.teardown();
                }
                Action::Up => {
                    if !std::mem::replace(&mut self.counted, true) {
                        self.shared
                            .up
                            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    let failed = self.down_log.up();
                    if failed > 0 {
                        info!(id = %self.shared.opts.machine.id, url = %self.shared.opts.url, failed_attempts = failed, "Serving on Reverse connection (after {failed} failed attempts)");
                    } else {
                        info!(id = %self.shared.opts.machine.id, url = %self.shared.opts.url, "Serving on Reverse connection");
                    }
                    let _ = self.shared.status.send(Status::Up);
                }
                Action::GoingAway if self.retiring => {}
                Action::GoingAway => {
                    info!(id = %self.shared.opts.machine.id, url = %self.shared.opts.url, "the public server is going away: opening a new session; this one serves until the server ends it");
                    self.retiring = true;
                    Driver::start(self.shared.clone());
                }
                Action::Down { reason, .. } if self.retiring => {
                    debug!(id = %self.shared.opts.machine.id, "the session of a server that went away ended: {reason}");
                    if !self.session_ended() {
                        let _ = self.shared.status.send(Status::Down(Some(reason)));
                    }
                    self.teardown();
                    return false;
                }
                Action::Down { reason, retry_in } => {
                    if std::mem::take(&mut self.respreading) {
                        self.session_ended();
                        let next = format!("{:.1} s", retry_in.as_secs_f64());
                        info!(id = %self.shared.opts.machine.id, "{reason}; next attempt in {next}");
                        continue;
                    }
                    if self.session_ended() {
                        // A successor not up yet while its predecessor still serves:
                        // no outage.
                        let next = format!("{:.1} s", retry_in.as_secs_f64());
                        info!(id = %self.shared.opts.machine.id, "the new session is not up yet: {reason}; next attempt in {next} (the old one serves meanwhile)");
                        continue;
                    }
                    let id = &self.shared.opts.machine.id;
                    let next = format!("{:.1} s", retry_in.as_secs_f64());
                    match self
                        .down_log
                        .down(self.shared.rt.now(), &reason.to_string())
                    {
                        DownLine::Warn { same_since: 0 } => {
                            warn!(%id, "reverse connection down: {reason}; next attempt in {next}");
                        }
                        DownLine::Warn { same_since } => {
                            warn!(%id, "reverse connection still down: {reason} ({same_since} more attempts failed the same way); next attempt in {next}");
                        }
                        DownLine::Quiet { same_since } => {
                            debug!(%id, "reverse connection still down: {reason} (attempt {} of this kind); next attempt in {next}", same_since + 1);
                        }
                    }
                    let _ = self.shared.status.send(Status::Down(Some(reason)));
                }
                Action::Closed { reason } => {
                    info!("Listener closed: {reason}");
                    // Ends the session; accepted conns finish on their connection.
                    self.teardown();
                    self.session_ended();
                    let _ = self.shared.status.send(Status::Closed(reason));
                    return false;
                }
            }
        }
        !matches!(self.machine.state(), State::Closed)
    }

    fn request(&self, path_and_query: &str) -> Request<()> {
        let opts = &self.shared.opts;
        let scheme = if opts.cleartext { "http" } else { "https" };
        let authority = opts.url.authority().map(|a| a.as_str()).unwrap_or_default();
        let mut b = Request::builder()
            .method("GET")
            .uri(format!("{scheme}://{authority}{path_and_query}"));
        if let Some(t) = &opts.token {
            b = b.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if self.machine.wire() == Wire::Go2022 {
            // What the 2022 Go Listener sends (and what our server tells it by).
            b = b.header(http::header::CONTENT_TYPE, GO2022_CONTENT_TYPE);
        }
        b.body(()).expect("valid request")
    }
}

type Outcome = Box<dyn FnOnce(u64) -> Internal + Send>;

async fn open_control(h2: SendRequest<Bytes>, req: Request<()>) -> Result<Outcome, String> {
    let mut h2 = h2
        .ready()
        .await
        .map_err(|e| format!("connection not ready: {e}"))?;
    let (fut, send) = h2
        .send_request(req, false)
        .map_err(|e| format!("cannot open the control stream: {e}"))?;
    let resp = fut
        .await
        .map_err(|e| format!("control request failed: {e}"))?;
    let status = resp.status().as_u16();
    if status == 200 {
        let replica = resp
            .headers()
            .get(REPLICA_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let recv = resp.into_body();
        return Ok(Box::new(move |g| {
            Internal::ControlAccepted(g, send, recv, replica)
        }));
    }
    let body = read_text(resp.into_body()).await;
    Ok(Box::new(move |g| {
        Internal::ControlRejected(g, status, body)
    }))
}

/// Why a data stream could not be opened.
enum DataError {
    /// The connection or the stream failed.
    Failed(String),
    /// The public server answered this status and body.
    Rejected(u16, String),
}

async fn open_data(
    h2: SendRequest<Bytes>,
    req: Request<()>,
) -> Result<(SendStream<Bytes>, RecvStream), DataError> {
    let mut h2 = h2
        .ready()
        .await
        .map_err(|e| DataError::Failed(format!("connection not ready: {e}")))?;
    let (fut, send) = h2
        .send_request(req, false)
        .map_err(|e| DataError::Failed(format!("cannot open a stream: {e}")))?;
    let resp = fut
        .await
        .map_err(|e| DataError::Failed(format!("data stream failed: {e}")))?;
    if resp.status() != 200 {
        let status = resp.status().as_u16();
        let body = read_text(resp.into_body()).await;
        return Err(DataError::Rejected(status, body));
    }
    Ok((send, resp.into_body()))
}

async fn read_text(mut body: RecvStream) -> String {
    let mut out = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
        if out.len() > 4096 {
            break;
        }
    }
    String::from_utf8_lossy(&out).trim().to_string()
}

async fn read_control(g: u64, mut body: RecvStream, tx: mpsc::UnboundedSender<Internal>) {
    let reason = loop {
        match body.data().await {
            Some(Ok(data)) => {
                let _ = body.flow_control().release_capacity(data.len());
                if tx.send(Internal::ControlData(g, data)).is_err() {
                    return;
                }
            }
            Some(Err(e)) => break format!("control stream failed: {e}"),
            None => break "control stream closed by the public server".to_string(),
        }
    };
    let _ = tx.send(Internal::Disconnected(g, reason));
}

async fn connect(
    g: u64,
    opts: ListenerOptions,
    tx: mpsc::UnboundedSender<Internal>,
    rt: Rt,
    connector: Arc<dyn Connect>,
) {
    let attempt = handshake(g, &opts, tx.clone(), rt.clone(), connector);
    let msg = match rt.timeout(opts.connect_timeout, attempt).await {
        Some(Ok(h2)) => Internal::Connected(g, h2),
        Some(Err(e)) => Internal::ConnectFailed(g, e),
        None => Internal::ConnectFailed(g, format!("connecting to {} timed out", opts.addr())),
    };
    let _ = tx.send(msg);
}

async fn handshake(
    g: u64,
    opts: &ListenerOptions,
    tx: mpsc::UnboundedSender<Internal>,
    rt: Rt,
    connector: Arc<dyn Connect>,
) -> Result<SendRequest<Bytes>, String> {
    let addr = opts.addr();
    let tls = if opts.cleartext {
        None
    } else {
        Some(opts.tls.clone().ok_or("TLS config missing")?)
    };
    let target = Target {
        addr: addr.clone(),
        host: opts.url.host().unwrap_or_default().to_string(),
        tls,
    };
    let connected = connector
        .connect(target)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    if !opts.cleartext && connected.alpn.as_deref() != Some(crate::tls::ALPN_H2) {
        return Err(format!("{addr} did not negotiate HTTP/2 (ALPN h2)"));
    }
    let (h2, mut conn) = crate::settings::client(&opts.h2)
        .handshake::<_, Bytes>(connected.io)
        .await
        .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
    let dead = crate::keepalive::dead(conn.ping_pong(), opts.h2, rt.clone());
    // The connection runs in its own task until it ends; a teardown never aborts it
    // (its accepted conns may still be finishing), see `Driver::teardown`.
    rt.spawn(async move {
        let reason = tokio::select! {
            r = &mut conn => match r {
                Ok(()) => "connection closed by the public server".to_string(),
                Err(e) => format!("connection lost: {e}"),
            },
            reason = dead => format!("the public server stopped answering: {reason}"),
        };
        let _ = tx.send(Internal::Disconnected(g, reason));
    });
    Ok(h2)
}

#[cfg(test)]
mod down_log_tests {
    use super::*;

    #[test]
    fn the_same_failure_is_warned_once_then_reminded_and_counted() {
        let t0 = Instant::now();
        let mut log = DownLog::default();
        assert!(!log.retrying());
        assert_eq!(log.down(t0, "403"), DownLine::Warn { same_since: 0 });
        assert!(log.retrying());
        let s = Duration::from_secs;
        assert_eq!(
            log.down(t0 + s(2), "403"),
            DownLine::Quiet { same_since: 1 }
        );
        assert_eq!(
            log.down(t0 + s(4), "403"),
            DownLine::Quiet { same_since: 2 }
        );
        // Another reason: warned at once.
        assert_eq!(
            log.down(t0 + s(6), "refused"),
            DownLine::Warn { same_since: 0 }
        );
        assert_eq!(
            log.down(t0 + s(8), "refused"),
            DownLine::Quiet { same_since: 1 }
        );
        // A reminder once per DOWN_REMINDER, with the count since the last line.
        let later = t0 + s(6) + DOWN_REMINDER;
        assert_eq!(log.down(later, "refused"), DownLine::Warn { same_since: 2 });
        assert_eq!(
            log.down(later + s(1), "refused"),
            DownLine::Quiet { same_since: 1 }
        );
        assert_eq!(log.up(), 7);
        // Up again: the next failure is news.
        assert!(!log.retrying());
        assert_eq!(
            log.down(later + s(9), "refused"),
            DownLine::Warn { same_since: 0 }
        );
    }
}
