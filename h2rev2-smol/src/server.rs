//! The public side: accepts Listeners' reverse connections on `B/revdial` and dials
//! them. The HTTP reverse proxy (`B/proxy/{id}/…`) is served by h2rev2-tokio only:
//! here those routes answer `404` with a text body saying so.
//!
//! One driver task owns the core's [`Dialer`] machine; connection tasks feed it
//! revdial requests and control bytes through a channel and decide nothing. The
//! driver answers streams, writes control messages and hands data streams to dials.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use h2rev2_proto::auth::{Credentials, parse_bearer};
use h2rev2_proto::conn::{CANCEL, ConnConfig};
use h2rev2_proto::dialer::{
    Action, ConnId, DialError, DialId, Dialer, DialerConfig, Event, Stats, StreamId, StreamKind,
};
use h2rev2_proto::idle::IdleRule;
use h2rev2_proto::wire::{DialerId, RevdialRequest, Route, RouteConfig};
use http::{Request, Response, StatusCode};
use smol::Timer;
use smol::channel::{self, Receiver, Sender, WeakSender};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpListener;
use tracing::{debug, info, warn};

use crate::conn::RevConn;
use crate::io::{H2Io, Transport};
use crate::settings::{self, H2Settings};
use crate::spawn::Spawner;
use crate::tls::rustls;

/// The text of the `404` for proxy routes: this adapter serves no HTTP proxy.
pub const NO_PROXY_HERE: &str = "not found: this h2rev2-smol server serves only the revdial \
route (reverse connections for Server::dial); the HTTP reverse proxy (B/proxy/{id}/...) is \
served by h2rev2-tokio\n";

/// Settings of the public server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Route layout (base path, revdial segment, id key).
    pub routes: RouteConfig,
    /// The core's settings: timeouts, limits, authentication.
    pub dialer: DialerConfig,
    /// HTTP/2 settings.
    pub h2: H2Settings,
    /// Reverse connection write coalescing.
    pub conn: ConnConfig,
    /// TLS handshake plus HTTP/2 preface must complete within this, and the first
    /// request must follow within it too (a slowloris client holds nothing for long).
    /// Default 10 s.
    pub handshake_timeout: Duration,
    /// An HTTP/2 connection without streams for this long is closed. A Listener's
    /// connection always holds its control stream, so it is never idle. Default 120 s.
    pub idle_timeout: Duration,
    /// Concurrent connections from one IP address. Default 256.
    pub max_connections_per_ip: usize,
    /// Where the server's tasks run. Default: smol's global executor.
    pub spawner: Spawner,
    /// On cleartext connections ([`Server::serve_cleartext`], and transports given
    /// to [`Server::serve_connection`]), hand h2's vectored writes (frame header +
    /// payload) to the transport in one call (measured: 10-20% less CPU per byte).
    /// [`Server::serve`]'s TLS connections never forward them: with futures-rustls
    /// they cost 5-15% more CPU (tests/vectored_writes.rs). Default on.
    pub vectored_writes: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            routes: RouteConfig::default(),
            dialer: DialerConfig::default(),
            h2: H2Settings::default(),
            conn: ConnConfig::default(),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connections_per_ip: 256,
            spawner: Spawner::default(),
            vectored_writes: true,
        }
    }
}

enum Cmd {
    Revdial {
        conn: ConnId,
        stream: StreamId,
        request: RevdialRequest,
        bearer: Option<String>,
        identities: Vec<String>,
        respond: SendResponse<Bytes>,
        body: RecvStream,
        peer: SocketAddr,
    },
    ControlData {
        stream: StreamId,
        data: Bytes,
    },
    StreamClosed {
        stream: StreamId,
    },
    ConnClosed {
        conn: ConnId,
    },
    Dial {
        dial: DialId,
        id: DialerId,
        reply: Sender<Result<RevConn, DialError>>,
    },
    CancelDial {
        dial: DialId,
    },
    Stats {
        reply: Sender<Stats>,
    },
    Shutdown,
}

/// The reply channel of a dial.
type DialReply = Sender<Result<RevConn, DialError>>;

/// A data stream the core holds as a spare, until a dial takes it.
enum Parked {
    /// Parked during the current drain (it may be handed out at once).
    Fresh(SendStream<Bytes>, RecvStream, DialerId),
    /// Held by a [`watch_parked`] task; send it the dial's reply to hand it out.
    Watched(Sender<DialReply>),
}

struct Inner {
    cmd: Sender<Cmd>,
    config: ServerConfig,
    next: AtomicU64,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    connections: AtomicUsize,
    stopping: AtomicBool,
    drain_until: Mutex<Option<Instant>>,
    stop: event_listener::Event,
}

/// The public server (the Go package's `ReversePool`), revdial side. Cheap to clone:
/// every clone is a handle to the same server.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use h2rev2_smol::{tls, Server, ServerConfig};
/// use h2rev2_smol::proto::wire::DialerId;
///
/// smol::block_on(async {
///     let mut config = ServerConfig::default();
///     config.dialer.auth.add_token(DialerId::new("db")?, "s3cret");
///     let server = Server::new(config);
///     let (identity, _, _) = tls::Identity::self_signed(&["localhost".into()])?;
///     let tls = tls::server_config(identity)?;
///     let listener = smol::net::TcpListener::bind("127.0.0.1:9090").await?;
///     smol::spawn(server.clone().serve(listener, tls)).detach();
///
///     // Later: a byte connection to the NATed machine registered as "db".
///     let conn = server.dial(&DialerId::new("db")?).await?;
///     # drop(conn);
///     Ok(())
/// })
/// # }
/// ```
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

struct CancelOnDrop<'a> {
    server: &'a Server,
    dial: DialId,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self
                .server
                .inner
                .cmd
                .try_send(Cmd::CancelDial { dial: self.dial });
        }
    }
}

type Accepted = Option<Result<(Request<RecvStream>, SendResponse<Bytes>), h2::Error>>;

enum Next {
    Request(Box<Accepted>),
    Dead(String),
    Stop,
    DrainOver,
    IdleCheck,
}

impl Server {
    /// Starts the server's driver task on `config.spawner`. Needs no runtime.
    pub fn new(config: ServerConfig) -> Server {
        let (tx, rx) = channel::unbounded();
        let dialer = Dialer::new(config.dialer.clone(), fastrand::u64(..));
        let driver = Driver {
            dialer,
            cmd_tx: tx.downgrade(),
            pending: HashMap::new(),
            controls: HashMap::new(),
            parked: HashMap::new(),
            fresh: Vec::new(),
            dials: HashMap::new(),
            conn_config: config.conn,
            spawner: config.spawner.clone(),
        };
        config.spawner.spawn(driver.run(rx));
        Server {
            inner: Arc::new(Inner {
                cmd: tx,
                config,
                next: AtomicU64::new(1),
                per_ip: Mutex::new(HashMap::new()),
                connections: AtomicUsize::new(0),
                stopping: AtomicBool::new(false),
                drain_until: Mutex::new(None),
                stop: event_listener::Event::new(),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    fn next_id(&self) -> u64 {
        self.inner.next.fetch_add(1, Relaxed)
    }

    /// The core's counters (sessions, pending dials, spares).
    pub async fn stats(&self) -> Stats {
        let (reply, rx) = channel::bounded(1);
        let _ = self.inner.cmd.try_send(Cmd::Stats { reply });
        rx.recv().await.unwrap_or_default()
    }

    /// Open client connections (TLS or not, HTTP/2 or HTTP/1.1).
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Relaxed)
    }

    /// A reverse connection to the Listener registered as `id`.
    ///
    /// Fails at once with [`DialError::NoSession`] when no Listener holds the id, and
    /// with [`DialError::Timeout`] after the configured dial timeout. Dropping the
    /// future cancels the dial.
    pub async fn dial(&self, id: &DialerId) -> Result<RevConn, DialError> {
        let dial = DialId(self.next_id());
        let (reply, rx) = channel::bounded(1);
        let cmd = Cmd::Dial {
            dial,
            id: id.clone(),
            reply,
        };
        if self.inner.cmd.try_send(cmd).is_err() {
            return Err(DialError::SessionClosed("server stopped".into()));
        }
        let mut guard = CancelOnDrop {
            server: self,
            dial,
            armed: true,
        };
        let result = rx
            .recv()
            .await
            .unwrap_or_else(|_| Err(DialError::SessionClosed("server stopped".into())));
        guard.armed = false;
        match &result {
            Ok(_) => debug!(%id, "dial"),
            Err(e) => info!(%id, error = %e, "dial failed"),
        }
        result
    }

    /// Stops accepting, ends Listeners' control streams (END_STREAM: they reconnect at
    /// once, elsewhere or here after a restart), asks every connection to finish
    /// (HTTP/2 GOAWAY), cuts those still open after `grace`, and returns once they are
    /// gone. Sessions end with their connections; their pending dials fail.
    pub async fn shutdown(&self, grace: Duration) {
        let until = Instant::now() + grace;
        *self
            .inner
            .drain_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(until);
        self.inner.stopping.store(true, Relaxed);
        self.inner.stop.notify(usize::MAX);
        // Listeners' control streams end cleanly: they reconnect (elsewhere, or here
        // after a restart) without waiting for a PING timeout.
        let _ = self.inner.cmd.try_send(Cmd::Shutdown);
        // Cut connections end within a poll; give slow tasks a little more.
        let hard = until + Duration::from_secs(2);
        while self.connections() > 0 && Instant::now() < hard {
            Timer::after(Duration::from_millis(10)).await;
        }
    }

    async fn stopped(&self) {
        loop {
            let listener = self.inner.stop.listen();
            if self.inner.stopping.load(Relaxed) {
                return;
            }
            listener.await;
        }
    }

    fn drain_deadline(&self) -> Instant {
        self.inner
            .drain_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or_else(Instant::now)
    }

    /// Accepts TLS connections on `listener` until [`Server::shutdown`]: HTTP/2 (ALPN
    /// `h2`) for Listeners; HTTP/1.1 Clients get a `404` naming h2rev2-tokio.
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
    ) -> io::Result<()> {
        let acceptor = futures_rustls::TlsAcceptor::from(tls);
        loop {
            let Some((tcp, peer)) = self.accept(&listener).await else {
                return Ok(());
            };
            let Some(slot) = self.admit(peer) else {
                debug!(%peer, "too many connections from this address");
                continue;
            };
            let this = self.clone();
            let acceptor = acceptor.clone();
            self.inner.config.spawner.spawn(async move {
                let _slot = slot;
                let timeout = this.inner.config.handshake_timeout;
                let tls = match settings::timeout(timeout, acceptor.accept(tcp)).await {
                    Some(Ok(tls)) => tls,
                    Some(Err(e)) => return debug!(%peer, error = %e, "TLS handshake failed"),
                    None => return debug!(%peer, "TLS handshake timed out"),
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(crate::tls::ALPN_H2);
                this.serve_any(tls, peer, h2, Vec::new(), false).await;
            });
        }
    }

    /// Accepts cleartext HTTP/2 (prior knowledge) and HTTP/1.1 connections, until
    /// [`Server::shutdown`]. Only for tests and for deployments behind a
    /// TLS-terminating front proxy: opt-in.
    pub async fn serve_cleartext(self, listener: TcpListener) -> io::Result<()> {
        loop {
            let Some((tcp, peer)) = self.accept(&listener).await else {
                return Ok(());
            };
            let Some(slot) = self.admit(peer) else {
                continue;
            };
            let this = self.clone();
            self.inner.config.spawner.spawn(async move {
                let _slot = slot;
                let mut preface = [0u8; 3];
                let timeout = this.inner.config.handshake_timeout;
                let h2 = matches!(
                    settings::timeout(timeout, tcp.peek(&mut preface)).await,
                    Some(Ok(3)) if &preface == b"PRI"
                );
                this.serve_connection(tcp, peer, h2, Vec::new()).await;
            });
        }
    }

    async fn accept(&self, listener: &TcpListener) -> Option<(smol::net::TcpStream, SocketAddr)> {
        loop {
            let r = smol::future::or(async { Some(listener.accept().await) }, async {
                self.stopped().await;
                None
            })
            .await?;
            match r {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    return Some((tcp, peer));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    Timer::after(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn admit(&self, peer: SocketAddr) -> Option<IpSlot> {
        let mut map = self.inner.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(peer.ip()).or_insert(0);
        if *n >= self.inner.config.max_connections_per_ip {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            server: self.clone(),
            ip: peer.ip(),
        })
    }

    /// Serves one established connection (TLS done, or cleartext), from any
    /// futures-io transport. `h2` selects HTTP/2, otherwise HTTP/1.1 (answered `404`).
    /// `identities` are the verified client certificate's identities, for ids bound
    /// to certificates ([`h2rev2_proto::auth::AuthPolicy::bind_ids_to_certificates`]);
    /// [`Server::serve`] passes none.
    pub async fn serve_connection<IO: Transport>(
        &self,
        io: IO,
        peer: SocketAddr,
        h2: bool,
        identities: Vec<String>,
    ) {
        let vectored = self.inner.config.vectored_writes;
        self.serve_any(io, peer, h2, identities, vectored).await;
    }

    async fn serve_any<IO: Transport>(
        &self,
        io: IO,
        peer: SocketAddr,
        h2: bool,
        identities: Vec<String>,
        vectored: bool,
    ) {
        self.inner.connections.fetch_add(1, Relaxed);
        if h2 {
            self.serve_h2(io, peer, identities, vectored).await;
        } else {
            self.serve_http1(io, peer).await;
        }
        self.inner.connections.fetch_sub(1, Relaxed);
    }

    async fn serve_h2<IO: Transport>(
        &self,
        io: IO,
        peer: SocketAddr,
        identities: Vec<String>,
        vectored: bool,
    ) {
        let cfg = &self.inner.config;
        let handshake = settings::server(&cfg.h2).handshake::<_, Bytes>(H2Io::new(io, vectored));
        let mut conn = match settings::timeout(cfg.handshake_timeout, handshake).await {
            Some(Ok(c)) => c,
            Some(Err(e)) => return debug!(%peer, error = %e, "HTTP/2 handshake failed"),
            None => return debug!(%peer, "HTTP/2 handshake timed out"),
        };
        let conn_id = ConnId(self.next_id());
        let mut keepalive = Box::pin(settings::keepalive(conn.ping_pong(), cfg.h2));
        let mut draining = None;
        // A connection without streams is closed (the core's idle rule).
        let mut idle_rule = IdleRule::new(Instant::now(), cfg.handshake_timeout, cfg.idle_timeout);
        loop {
            let accept = async { Next::Request(Box::new(conn.accept().await)) };
            let dead = async { Next::Dead((&mut keepalive).await) };
            let stop = async {
                match draining {
                    Some(at) => {
                        Timer::at(at).await;
                        Next::DrainOver
                    }
                    None => {
                        self.stopped().await;
                        Next::Stop
                    }
                }
            };
            let idle = async {
                if draining.is_some() {
                    std::future::pending::<()>().await;
                }
                Timer::at(idle_rule.deadline()).await;
                Next::IdleCheck
            };
            let next = smol::future::or(smol::future::or(accept, dead), stop);
            match smol::future::or(next, idle).await {
                Next::IdleCheck => {
                    let now = Instant::now();
                    if idle_rule.check(now, conn.has_streams()) {
                        let opened_any = idle_rule.opened_any();
                        debug!(%peer, opened_any, "closing HTTP/2 connection without streams");
                        conn.graceful_shutdown();
                        draining = Some(now + cfg.handshake_timeout.min(Duration::from_secs(1)));
                    }
                }
                Next::Request(next) => match *next {
                    Some(Ok((req, respond))) => {
                        idle_rule.on_stream(Instant::now());
                        self.on_h2_request(conn_id, peer, &identities, req, respond);
                    }
                    Some(Err(e)) => {
                        debug!(%peer, error = %e, "HTTP/2 connection error");
                        break;
                    }
                    None => break,
                },
                Next::Dead(reason) => {
                    info!(%peer, "HTTP/2 connection is dead: {reason}");
                    conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                    break;
                }
                Next::Stop => {
                    conn.graceful_shutdown();
                    draining = Some(self.drain_deadline());
                }
                Next::DrainOver => break,
            }
        }
        let _ = self.inner.cmd.try_send(Cmd::ConnClosed { conn: conn_id });
    }

    fn on_h2_request(
        &self,
        conn: ConnId,
        peer: SocketAddr,
        identities: &[String],
        req: Request<RecvStream>,
        mut respond: SendResponse<Bytes>,
    ) {
        let uri = req.uri();
        match self.inner.config.routes.route(uri.path(), uri.query()) {
            Ok(Route::Revdial(request)) => {
                let bearer = req
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_bearer)
                    .map(str::to_string);
                let stream = StreamId(self.next_id());
                let (_, body) = req.into_parts();
                let _ = self.inner.cmd.try_send(Cmd::Revdial {
                    conn,
                    stream,
                    request,
                    bearer,
                    identities: identities.to_vec(),
                    respond,
                    body,
                    peer,
                });
            }
            Ok(Route::Proxy { .. } | Route::Default { .. } | Route::NotFound) => {
                respond_text(&mut respond, StatusCode::NOT_FOUND, NO_PROXY_HERE)
            }
            Err(e) => respond_text(&mut respond, StatusCode::BAD_REQUEST, &format!("{e}\n")),
        }
    }

    /// HTTP/1.1 Clients: read the request head, answer `404` naming h2rev2-tokio.
    async fn serve_http1<IO: Transport>(&self, mut io: IO, peer: SocketAddr) {
        let timeout = self.inner.config.handshake_timeout;
        let read_head = async {
            let mut head = Vec::new();
            let mut buf = [0u8; 2048];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 << 10 {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            true
        };
        if settings::timeout(timeout, read_head).await != Some(true) {
            return debug!(%peer, "HTTP/1.1 request head not received");
        }
        let resp = format!(
            "HTTP/1.1 404 Not Found\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{NO_PROXY_HERE}",
            NO_PROXY_HERE.len()
        );
        let _ = settings::timeout(timeout, async {
            let _ = io.write_all(resp.as_bytes()).await;
            let _ = io.close().await;
        })
        .await;
    }
}

struct IpSlot {
    server: Server,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self
            .server
            .inner
            .per_ip
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

fn respond_text(respond: &mut SendResponse<Bytes>, status: StatusCode, body: &str) {
    let resp = Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(())
        .expect("static response");
    if let Ok(mut send) = respond.send_response(resp, false) {
        let _ = send.send_data(Bytes::copy_from_slice(body.as_bytes()), true);
    }
}

struct Driver {
    dialer: Dialer,
    /// Weak, so that the driver ends once every handle and connection is gone.
    cmd_tx: WeakSender<Cmd>,
    pending: HashMap<StreamId, (SendResponse<Bytes>, RecvStream, SocketAddr, DialerId)>,
    controls: HashMap<StreamId, SendStream<Bytes>>,
    parked: HashMap<StreamId, Parked>,
    /// Streams parked during this drain, to watch once it ends.
    fresh: Vec<StreamId>,
    dials: HashMap<DialId, Sender<Result<RevConn, DialError>>>,
    conn_config: ConnConfig,
    spawner: Spawner,
}

enum Wake {
    Cmd(Option<Cmd>),
    Timer,
}

impl Driver {
    async fn run(mut self, rx: Receiver<Cmd>) {
        loop {
            let timeout = self.dialer.poll_timeout();
            let wake = smol::future::or(async { Wake::Cmd(rx.recv().await.ok()) }, async {
                match timeout {
                    Some(t) => {
                        Timer::at(t).await;
                        Wake::Timer
                    }
                    None => std::future::pending().await,
                }
            })
            .await;
            match wake {
                Wake::Cmd(Some(cmd)) => self.on_cmd(cmd),
                Wake::Cmd(None) => return,
                Wake::Timer => self.dialer.handle_timeout(Instant::now()),
            }
            self.drain();
        }
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        let now = Instant::now();
        let result = match cmd {
            Cmd::Revdial {
                conn,
                stream,
                request,
                bearer,
                identities,
                respond,
                body,
                peer,
            } => {
                self.pending
                    .insert(stream, (respond, body, peer, request.id.clone()));
                let credentials = Credentials {
                    bearer: bearer.as_deref(),
                    cert_identities: &identities,
                };
                self.dialer.handle_event(
                    now,
                    Event::Revdial {
                        conn,
                        stream,
                        request,
                        credentials,
                    },
                )
            }
            Cmd::ControlData { stream, data } => self.dialer.handle_event(
                now,
                Event::ControlData {
                    stream,
                    data: &data,
                },
            ),
            Cmd::StreamClosed { stream } => {
                self.controls.remove(&stream);
                self.parked.remove(&stream);
                self.dialer
                    .handle_event(now, Event::StreamClosed { stream })
            }
            Cmd::ConnClosed { conn } => self
                .dialer
                .handle_event(now, Event::ConnectionClosed { conn }),
            Cmd::Dial { dial, id, reply } => {
                self.dials.insert(dial, reply);
                self.dialer.handle_event(now, Event::Dial { dial, id })
            }
            Cmd::CancelDial { dial } => {
                self.dials.remove(&dial);
                self.dialer.handle_event(now, Event::CancelDial { dial })
            }
            Cmd::Stats { reply } => {
                let _ = reply.try_send(self.dialer.stats());
                Ok(())
            }
            Cmd::Shutdown => {
                for send in self.controls.values_mut() {
                    let _ = send.send_data(Bytes::new(), true);
                }
                Ok(())
            }
        };
        if let Err(e) = result {
            // A bug in this adapter; say so loudly, but keep serving.
            warn!(error = %e, "h2rev2 adapter bug");
        }
    }

    fn drain(&mut self) {
        self.carry_out();
        // Streams that stay parked are watched: a Listener that resets one (it closed,
        // or gave up on it) must not leave a dead stream for the next dial.
        for stream in std::mem::take(&mut self.fresh) {
            let Some(Parked::Fresh(..)) = self.parked.get(&stream) else {
                continue;
            };
            let Some(Parked::Fresh(send, recv, id)) = self.parked.remove(&stream) else {
                continue;
            };
            let (take, taken) = channel::bounded(1);
            self.parked.insert(stream, Parked::Watched(take));
            self.spawner.spawn(watch_parked(ParkedStream {
                stream,
                send,
                recv,
                id,
                taken,
                cmd: self.cmd_tx.clone(),
                config: self.conn_config,
                spawner: self.spawner.clone(),
            }));
        }
    }

    fn carry_out(&mut self) {
        while let Some(action) = self.dialer.poll_action() {
            match action {
                Action::Accept { stream, kind } => {
                    let Some((mut respond, body, peer, id)) = self.pending.remove(&stream) else {
                        continue;
                    };
                    let resp = Response::builder().status(200).body(()).expect("static");
                    let send = match respond.send_response(resp, false) {
                        Ok(s) => s,
                        Err(e) => {
                            debug!(error = %e, "revdial stream gone before its answer");
                            if let Some(tx) = self.cmd_tx.upgrade() {
                                let _ = tx.try_send(Cmd::StreamClosed { stream });
                            }
                            continue;
                        }
                    };
                    match kind {
                        StreamKind::Control(_) => {
                            info!(%id, %peer, "created reverse connection control stream");
                            self.controls.insert(stream, send);
                            if let Some(tx) = self.cmd_tx.upgrade() {
                                self.spawner.spawn(read_control(stream, body, tx));
                            }
                        }
                        StreamKind::Data(_) => {
                            debug!(%id, %peer, "reverse connection stream ready");
                            self.parked.insert(stream, Parked::Fresh(send, body, id));
                            self.fresh.push(stream);
                        }
                    }
                }
                Action::Reject {
                    stream,
                    status,
                    reason,
                } => {
                    if let Some((mut respond, _, peer, id)) = self.pending.remove(&stream) {
                        info!(%peer, %id, status, "revdial request refused: {reason}");
                        let status =
                            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
                        respond_text(&mut respond, status, &format!("{reason}\n"));
                    }
                }
                Action::SendControl { stream, data } => {
                    if let Some(send) = self.controls.get_mut(&stream) {
                        if let Err(e) = send.send_data(Bytes::from(data), false) {
                            // The control stream is gone: so is the session.
                            debug!(error = %e, "control stream write failed");
                            self.controls.remove(&stream);
                            if let Some(tx) = self.cmd_tx.upgrade() {
                                let _ = tx.try_send(Cmd::StreamClosed { stream });
                            }
                        }
                    }
                }
                Action::Reset { stream, reason } => {
                    debug!(?stream, "reset: {reason}");
                    if let Some(mut s) = self.controls.remove(&stream) {
                        s.send_reset(h2::Reason::from(CANCEL));
                    }
                    match self.parked.remove(&stream) {
                        Some(Parked::Fresh(mut s, _, _)) => s.send_reset(h2::Reason::from(CANCEL)),
                        // Its watcher resets it when the sender is dropped.
                        Some(Parked::Watched(take)) => drop(take),
                        None => {}
                    }
                }
                Action::DialReady { dial, stream } => {
                    let Some(parked) = self.parked.remove(&stream) else {
                        continue;
                    };
                    let reply = self.dials.remove(&dial);
                    match parked {
                        Parked::Fresh(send, recv, id) => {
                            let conn = RevConn::new(
                                send,
                                recv,
                                self.conn_config,
                                id.to_string(),
                                self.spawner.clone(),
                            );
                            if let Some(reply) = reply {
                                let _ = reply.try_send(Ok(conn));
                            }
                        }
                        Parked::Watched(take) => {
                            if let Some(reply) = reply {
                                if let Err(e) = take.try_send(reply) {
                                    // Reset by the Listener a moment ago.
                                    let _ = e.into_inner().try_send(Err(DialError::PickupFailed(
                                        "the spare stream was reset by the Listener".into(),
                                    )));
                                }
                            }
                        }
                    }
                }
                Action::DialFailed { dial, error } => {
                    if let Some(reply) = self.dials.remove(&dial) {
                        let _ = reply.try_send(Err(error));
                    }
                }
                Action::SessionUp { session, id, conn } => {
                    info!(%id, session = session.index(), conn = conn.0, "session up");
                }
                Action::SessionDown {
                    session,
                    id,
                    reason,
                } => {
                    info!(%id, session = session.index(), "session down: {reason}");
                }
            }
        }
    }
}

async fn read_control(stream: StreamId, mut body: RecvStream, tx: Sender<Cmd>) {
    loop {
        match body.data().await {
            Some(Ok(data)) => {
                let _ = body.flow_control().release_capacity(data.len());
                if !data.is_empty() && tx.send(Cmd::ControlData { stream, data }).await.is_err() {
                    return;
                }
            }
            Some(Err(e)) => {
                debug!(error = %e, "control stream error");
                break;
            }
            None => break,
        }
    }
    let _ = tx.send(Cmd::StreamClosed { stream }).await;
}

struct ParkedStream {
    stream: StreamId,
    send: SendStream<Bytes>,
    recv: RecvStream,
    id: DialerId,
    taken: Receiver<DialReply>,
    cmd: WeakSender<Cmd>,
    config: ConnConfig,
    spawner: Spawner,
}

/// Holds a parked spare until a dial takes it (it becomes that dial's conn) or the
/// Listener resets it (the core forgets it), or the driver lets go of it (reset).
async fn watch_parked(p: ParkedStream) {
    let ParkedStream {
        stream,
        mut send,
        recv,
        id,
        taken,
        cmd,
        config,
        spawner,
    } = p;
    let taken = smol::future::or(async { Some(taken.recv().await) }, async {
        let reset = std::future::poll_fn(|cx| send.poll_reset(cx)).await;
        debug!(%id, ?reset, "parked stream reset by the Listener");
        None
    })
    .await;
    match taken {
        Some(Ok(reply)) => {
            let conn = RevConn::new(send, recv, config, id.to_string(), spawner);
            // A dial that gave up drops the conn, which resets the stream.
            let _ = reply.try_send(Ok(conn));
        }
        // The driver let go of it (the session ended): reset it.
        Some(Err(_)) => send.send_reset(h2::Reason::from(CANCEL)),
        None => {
            if let Some(tx) = cmd.upgrade() {
                let _ = tx.try_send(Cmd::StreamClosed { stream });
            }
        }
    }
}
