//! The public side: accepts Listeners' reverse connections, dials them, and proxies
//! Clients' requests through them.
//!
//! One driver task owns the core's [`Dialer`] machine; connection tasks feed it
//! revdial requests and control bytes through a channel, and carry out nothing
//! themselves. The driver answers streams, writes control messages and hands data
//! streams to dials.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::RecvStream;
use h2::SendStream;
use h2::server::SendResponse;
use h2rev2_proto::auth::Credentials;
use h2rev2_proto::conn::{CANCEL, ConnConfig};
use h2rev2_proto::dialer::{
    Action, ConnId, DialError, DialId, Dialer, DialerConfig, Event, RejectKind, Stats, StreamId,
    StreamKind,
};
use h2rev2_proto::idle::{IdleAction, IdleRule};
use h2rev2_proto::throttle::RefusalThrottle;
use h2rev2_proto::window::{MIN_STREAM_WINDOW, StreamWindowRule};
use h2rev2_proto::wire::{DialerId, RevdialRequest, Route, RouteConfig};
use http::{Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::conn::RevConn;
use crate::io::BoxIo;
use crate::metrics::Metrics;
use crate::runtime::Rt;
use crate::sessions::{SessionInfo, SessionTable};
use crate::settings::H2Settings;
use crate::tunnel::{ConnSlot, TunnelShare};

/// What [`Server::reload`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reloaded {
    /// The configuration's generation now ([`Server::generation`]).
    pub generation: u64,
    /// Ids whose sessions the new policy no longer admits, ended.
    pub ended: Vec<DialerId>,
}

/// How long an HTTP/2 connection closed for idleness (or for never opening a stream)
/// may take to read its GOAWAY before it is cut.
const IDLE_DRAIN: Duration = Duration::from_secs(1);

/// Settings of the public server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Route layout (base path, revdial segment, id key, default id).
    pub routes: RouteConfig,
    /// The core's settings: timeouts, limits, authentication.
    pub dialer: DialerConfig,
    /// HTTP/2 settings.
    pub h2: H2Settings,
    /// Reverse connection write coalescing.
    pub conn: ConnConfig,
    /// Each step of a new connection must complete within this: the TLS handshake, the
    /// HTTP/2 preface and then the first request (an HTTP/2 connection that opens no
    /// stream is closed), or the first HTTP/1.1 request's headers. For HTTP/1.1 it is
    /// also how long a keep-alive connection may wait for its next request's headers
    /// (hyper's header read timeout). Default 10 s: a slowloris client holds nothing
    /// for long.
    pub handshake_timeout: Duration,
    /// Concurrent connections from one IP address; more are closed at once. Default
    /// 1024: a load test, a corporate NAT or a load balancer in front brings many
    /// Clients from one address, and what each connection may make the server buffer
    /// is bounded by its window ([`H2Settings::connection_window`], 4 MiB for a
    /// Client's connection by default: 4 GiB from one address at most).
    pub max_connections_per_ip: usize,
    /// An HTTP/2 connection that had streams and has had none for this long is closed
    /// (GOAWAY). A Listener's connection always holds its control stream and is never
    /// idle. Default 120 s.
    pub idle_timeout: Duration,
    /// Which part of a client certificate names an id (with
    /// [`h2rev2_proto::auth::AuthPolicy::bind_ids_to_certificates`]).
    pub cert_identity: crate::identity::CertIdentity,
    /// The connection-level receive window of a connection once it carries a session
    /// (a Listener's tunnel); other connections keep [`H2Settings::connection_window`].
    /// Every proxied download whose Client stops reading holds its stream window of
    /// it unread; the stream windows shrink as conns open
    /// ([`ServerConfig::tunnel_stream_budget`]), so stalled downloads hold about that
    /// budget, far below this. Default 256 MiB, the most unread data one tunnel can
    /// make the server buffer.
    pub tunnel_connection_window: u32,
    /// What the streams of one tunnel may hold unread together, about: each stream's
    /// window is this shared among the conns open on the tunnel, between 64 KiB and
    /// [`H2Settings::stream_window`] (the core's
    /// [`h2rev2_proto::window::StreamWindowRule`]). One download alone gets the whole
    /// stream window (two streams too: 8 MiB each); 64 downloads whose Clients
    /// stopped reading get 256 KiB each, so together they cost about this much
    /// memory, and the tunnel keeps serving everyone else. Many fast streams over a
    /// long link share it too: 16 MiB per 20 ms round trip is 800 MB/s in all.
    /// Default 16 MiB.
    pub tunnel_stream_budget: u32,
    /// Bounds on proxied requests: response and body timeouts, requests per id.
    pub proxy: crate::proxy::ProxyLimits,
    /// Refused revdial requests that repeat: each address's first refusal in an
    /// interval is logged (with a count of the others), and past 20 in an interval
    /// its refusals are answered only after a delay (1 s), so a Listener that retries
    /// a refusal at once (the 2022 Go Listener) neither floods the log nor spins.
    pub refusals: h2rev2_proto::throttle::ThrottleConfig,
    /// Who may use the tunnels (Clients of `B/proxy/{id}/…` and the default target):
    /// open to all unless a rule is added.
    pub callers: h2rev2_proto::caller::CallerPolicy,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            routes: RouteConfig::default(),
            dialer: DialerConfig::default(),
            // A Client's connection: 4 MiB unread at most (40 MB/s of upload at a
            // 100 ms round trip); a tunnel's is raised to `tunnel_connection_window`.
            h2: H2Settings {
                connection_window: 4 << 20,
                ..H2Settings::default()
            },
            conn: ConnConfig::default(),
            handshake_timeout: Duration::from_secs(10),
            max_connections_per_ip: 1024,
            idle_timeout: Duration::from_secs(120),
            cert_identity: Default::default(),
            tunnel_connection_window: 256 << 20,
            tunnel_stream_budget: 16 << 20,
            proxy: Default::default(),
            refusals: Default::default(),
            callers: Default::default(),
        }
    }
}

pub(crate) enum Cmd {
    Revdial {
        conn: ConnId,
        stream: StreamId,
        request: RevdialRequest,
        bearer: Option<String>,
        identities: Vec<String>,
        respond: SendResponse<Bytes>,
        body: RecvStream,
        peer: SocketAddr,
        /// Its connection's share: told when the request becomes a session's control
        /// stream (the connection is a tunnel then, and gets the larger window).
        tunnel: Arc<TunnelShare>,
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
        reply: oneshot::Sender<Result<RevConn, DialError>>,
    },
    CancelDial {
        dial: DialId,
    },
    /// [`Server::go_away`]: tell every Listener, refuse new sessions.
    GoAway,
    /// [`Server::shutdown`] began: end every control stream (END_STREAM), so that
    /// Listeners leave while their conns in flight finish.
    Shutdown,
    Stats {
        reply: oneshot::Sender<Stats>,
    },
    /// [`Server::sessions`].
    Sessions {
        reply: oneshot::Sender<Vec<SessionInfo>>,
    },
    /// [`Server::reload`]: the core's new settings; the ids whose sessions ended.
    Reconfigure {
        config: Box<ServerConfig>,
        reply: oneshot::Sender<Vec<DialerId>>,
    },
}

pub(crate) struct Inner {
    pub(crate) rt: Rt,
    pub(crate) cmd: mpsc::UnboundedSender<Cmd>,
    /// The configuration in force; [`Server::reload`] replaces it.
    config: RwLock<Arc<ServerConfig>>,
    /// How many times it was replaced.
    generation: AtomicU64,
    /// Reloads serialised, so that configs reach the driver in their order.
    reloading: tokio::sync::Mutex<()>,
    next: AtomicU64,
    pub(crate) metrics: Arc<Metrics>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// `Some(deadline)` once [`Server::shutdown`] began: stop accepting, drain until
    /// the deadline, then cut.
    shutdown: watch::Sender<Option<Instant>>,
    /// The proxy's pooled clients, one per id; emptied (their idle conns dropped) and
    /// closed at shutdown.
    pub(crate) clients: Mutex<crate::proxy::ProxyClients>,
    /// Accept loops of the bindings still running (their sockets still bound):
    /// [`Server::shutdown`] returns after they ended, so the port can be bound again.
    pub(crate) accept_loops: std::sync::atomic::AtomicUsize,
    /// Live sessions and recent errors, for [`Server::sessions`].
    pub(crate) sessions: Arc<SessionTable>,
    /// The cluster this replica is part of ([`Server::join_cluster`]).
    pub(crate) cluster: Arc<std::sync::OnceLock<Arc<crate::cluster::Cluster>>>,
}

/// The public server (the Go package's `ReversePool`), on any [`Rt`]. Cheap to clone:
/// every clone is a handle to the same server.
///
/// The runtime bindings wrap it (`h2rev2_tokio::Server`, `h2rev2_smol::Server`) with
/// their runtime, sockets and TLS; everything it does is here, once.
#[derive(Clone)]
pub struct Server {
    pub(crate) inner: Arc<Inner>,
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
                .send(Cmd::CancelDial { dial: self.dial });
        }
    }
}

impl Server {
    /// Starts the server's driver task on `rt`.
    pub fn new(config: ServerConfig, rt: Rt) -> Server {
        let (tx, rx) = mpsc::unbounded_channel();
        let metrics = Arc::new(Metrics::default());
        let seed = fastrand::u64(..);
        let dialer = Dialer::new(config.dialer.clone(), seed);
        let (conn_config, refusals) = (config.conn, config.refusals);
        let (shutdown, _) = watch::channel(None);
        let sessions = Arc::new(SessionTable::default());
        let cluster: Arc<std::sync::OnceLock<Arc<crate::cluster::Cluster>>> = Default::default();
        let inner = Arc::new(Inner {
            rt: rt.clone(),
            cmd: tx.clone(),
            config: RwLock::new(Arc::new(config)),
            generation: AtomicU64::new(0),
            reloading: Default::default(),
            next: AtomicU64::new(1),
            metrics: metrics.clone(),
            per_ip: Mutex::new(HashMap::new()),
            shutdown,
            clients: Mutex::new(Default::default()),
            accept_loops: Default::default(),
            sessions: sessions.clone(),
            cluster: cluster.clone(),
        });
        let driver = Driver {
            dialer,
            cmd_tx: tx.downgrade(),
            pending: HashMap::new(),
            controls: HashMap::new(),
            parked: HashMap::new(),
            fresh: Vec::new(),
            dials: HashMap::new(),
            metrics,
            conn_config,
            refusals: RefusalThrottle::new(refusals),
            rt: rt.clone(),
            sessions,
            cluster,
        };
        rt.spawn(driver.run(rx));
        Server { inner }
    }

    /// HTTP connections open now (Listeners' and Clients').
    pub fn connections(&self) -> usize {
        self.inner.metrics.connections.load(Relaxed) as usize
    }

    /// The runtime it runs on.
    pub fn runtime(&self) -> &Rt {
        &self.inner.rt
    }

    /// The configuration in force now (a snapshot: [`Server::reload`] may replace it).
    pub fn config(&self) -> Arc<ServerConfig> {
        self.inner
            .config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes this server a replica of a cluster: its sessions are registered in
    /// `store`, and a proxied request for an id that no local session holds is
    /// forwarded to the replica that holds one (through `connect`, the binding's TCP
    /// and TLS). Call it once, before serving; `generation` must grow from one start
    /// of the replica to the next (milliseconds since the epoch will do). `Err` when
    /// the server is already part of one.
    pub fn join_cluster(
        &self,
        store: Arc<dyn crate::cluster::ClusterStore>,
        config: crate::cluster::ClusterConfig,
        connect: Arc<dyn crate::io::Connect>,
        generation: u64,
    ) -> Result<(), &'static str> {
        let c = crate::cluster::Cluster::start(
            self.inner.rt.clone(),
            store,
            config,
            connect,
            generation,
        );
        self.inner
            .cluster
            .set(c)
            .map_err(|_| "this server is already part of a cluster")
    }

    /// How many times [`Server::reload`] replaced the configuration (0 at start).
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Relaxed)
    }

    /// Replaces the configuration while everything keeps serving (a live reload):
    /// Listeners' credentials, Client access control, limits, timeouts and routes
    /// apply from now on; live sessions that the new authentication policy would no
    /// longer admit (their token removed or changed, certificate binding or anonymous
    /// mode turned off: [`h2rev2_proto::auth::AuthPolicy::still_admits`]) end now,
    /// with their connection when it carries no other session, and every other
    /// session is untouched. HTTP/2 settings apply to new connections.
    pub async fn reload(&self, config: ServerConfig) -> Reloaded {
        let _one_at_a_time = self.inner.reloading.lock().await;
        let config = Arc::new(config);
        *self.inner.config.write().unwrap_or_else(|e| e.into_inner()) = config.clone();
        let generation = self.inner.generation.fetch_add(1, Relaxed) + 1;
        let (reply, ended) = oneshot::channel();
        let cmd = Cmd::Reconfigure {
            config: Box::new((*config).clone()),
            reply,
        };
        let ended = match self.inner.cmd.send(cmd) {
            Ok(()) => ended.await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        {
            let mut clients = self.inner.clients.lock().unwrap_or_else(|e| e.into_inner());
            for id in &ended {
                clients.forget(id);
            }
        }
        self.inner.metrics.reload_applied(generation, ended.len());
        Reloaded { generation, ended }
    }

    /// Live counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    fn next_id(&self) -> u64 {
        self.inner.next.fetch_add(1, Relaxed)
    }

    /// The core's counters (sessions, pending dials, spares).
    pub async fn stats(&self) -> Stats {
        let (reply, rx) = oneshot::channel();
        let _ = self.inner.cmd.send(Cmd::Stats { reply });
        rx.await.unwrap_or_default()
    }

    /// A reverse connection to the Listener registered as `id`.
    ///
    /// Fails at once with [`DialError::NoSession`] when no Listener holds the id, and
    /// with [`DialError::Timeout`] after the configured dial timeout. Dropping the
    /// future cancels the dial.
    pub async fn dial(&self, id: &DialerId) -> Result<RevConn, DialError> {
        let started = self.inner.rt.now();
        let dial = DialId(self.next_id());
        let (reply, rx) = oneshot::channel();
        if self
            .inner
            .cmd
            .send(Cmd::Dial {
                dial,
                id: id.clone(),
                reply,
            })
            .is_err()
        {
            return Err(DialError::SessionClosed("server stopped".into()));
        }
        let mut guard = CancelOnDrop {
            server: self,
            dial,
            armed: true,
        };
        let result = rx
            .await
            .unwrap_or_else(|_| Err(DialError::SessionClosed("server stopped".into())));
        guard.armed = false;
        let m = &self.inner.metrics;
        match &result {
            Ok(_) => {
                m.dials_ok.fetch_add(1, Relaxed);
                let latency = self.inner.rt.now().saturating_duration_since(started);
                m.observe_dial(latency);
                info!(%id, latency_us = latency.as_micros() as u64, "dial");
            }
            Err(e) => {
                let slot = match e {
                    DialError::NoSession => 0,
                    DialError::Timeout => 1,
                    DialError::PickupFailed(_) => 2,
                    DialError::SessionClosed(_) => 3,
                    DialError::Limit(_) => 4,
                };
                m.dial_errors[slot].fetch_add(1, Relaxed);
                self.inner.sessions.failed(id, &format!("dial failed: {e}"));
                info!(%id, error = %e, "dial failed");
            }
        }
        result
    }

    /// A signal that holds the drain deadline once [`Server::shutdown`] started; wait
    /// on it with [`stopped`].
    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<Option<Instant>> {
        self.inner.shutdown.subscribe()
    }

    /// Whether [`Server::shutdown`] was called.
    pub(crate) fn shutting_down(&self) -> bool {
        self.inner.shutdown.borrow().is_some()
    }

    /// Prepares a stop without downtime (make before break): every Listener of ours is
    /// told that this server is going away (`going-away`) and opens a new session
    /// (through a load balancer, on another replica) while its session here goes on
    /// serving; new sessions are refused with `503`. Everything else goes on (a
    /// cluster replica stays registered: its sessions still serve) until
    /// [`Server::shutdown`], which calls this first.
    pub fn go_away(&self) {
        let _ = self.inner.cmd.send(Cmd::GoAway);
    }

    /// Tells Listeners it is going away ([`Server::go_away`]), removes a cluster
    /// replica's registrations (bounded by the store's operation timeout), stops accepting,
    /// asks every connection to finish (HTTP/2 GOAWAY, HTTP/1.1
    /// `Connection: close` after the current response), ends every Listener's session
    /// (their conns in flight go on), drops the proxy's idle pooled conns, and returns
    /// when every connection is done and the bindings' accept loops have closed their
    /// sockets (the port can be bound again). Connections still open at the deadline are cut,
    /// even if this future was dropped before; it waits at most a second more for the
    /// cut ones to end, so that [`Server::connections`] is 0 when it returns.
    pub async fn shutdown(&self, deadline: Duration) {
        let until = self.inner.rt.now() + deadline;
        self.go_away();
        // A cluster replica's registrations go first: other replicas send requests for
        // its ids to their other holders from now on (one that still arrives is
        // answered as a miss, and its sender tries another holder).
        if let Some(c) = self.inner.cluster.get() {
            c.leave().await;
        }
        self.inner.shutdown.send_modify(|d| {
            // A second call may shorten the deadline, never extend it.
            *d = Some(d.map_or(until, |old| old.min(until)));
        });
        let until = self.inner.shutdown.borrow().unwrap_or(until);
        self.inner
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .close();
        let _ = self.inner.cmd.send(Cmd::Shutdown);
        // Until the deadline connections finish by themselves; at the deadline they are
        // cut, which takes their tasks a moment more.
        let cut_by = until + Duration::from_secs(1);
        let busy = || {
            self.inner.metrics.connections.load(Relaxed) > 0
                || self.inner.accept_loops.load(Relaxed) > 0
        };
        while busy() && self.inner.rt.now() < cut_by {
            let step = if self.inner.rt.now() < until { 20 } else { 2 };
            self.inner.rt.sleep(Duration::from_millis(step)).await;
        }
    }

    /// Accepts connections until shutdown: `accept` yields the next raw connection
    /// (a TCP socket of the binding's runtime), `handshake` turns it into an
    /// [`Accepted`] (TLS with ALPN, or cleartext with its protocol sniffed) within
    /// [`ServerConfig::handshake_timeout`]. Then HTTP/2 (Listeners and Clients) or
    /// HTTP/1.1 (Clients) is served on it.
    ///
    /// The runtime bindings call this from their `serve` and `serve_cleartext`. A failed
    /// accept (out of file descriptors, say) is logged and retried after 50 ms; it never
    /// stops the server. Connections beyond
    /// [`ServerConfig::max_connections_per_ip`] from one address are closed at once.
    pub async fn serve_with<R, A, AF, H, HF>(&self, mut accept: A, handshake: H) -> io::Result<()>
    where
        R: Send + 'static,
        A: FnMut() -> AF,
        AF: std::future::Future<Output = io::Result<(R, SocketAddr)>>,
        H: Fn(R) -> HF + Clone + Send + Sync + 'static,
        HF: std::future::Future<Output = io::Result<Accepted>> + Send + 'static,
    {
        let mut stop = self.shutdown_signal();
        while let Some((raw, peer)) = self.next_accepted(&mut accept, &mut stop).await {
            let Some(slot) = self.admit(peer) else {
                debug!(%peer, "too many connections from this address");
                continue;
            };
            let this = self.clone();
            let handshake = handshake.clone();
            self.inner.rt.spawn(async move {
                let _slot = slot;
                let timeout = this.config().handshake_timeout;
                let accepted = match this.inner.rt.timeout(timeout, handshake(raw)).await {
                    Some(Ok(a)) => a,
                    Some(Err(e)) => return debug!(%peer, error = %e, "handshake failed"),
                    None => return debug!(%peer, "handshake timed out"),
                };
                let server_name = accepted.server_name.map(Arc::from);
                this.serve_conn(
                    accepted.io,
                    peer,
                    accepted.h2,
                    accepted.identities,
                    accepted.tls,
                    server_name,
                )
                .await;
            });
        }
        Ok(())
    }

    /// The next connection `accept` yields, or `None` once shutdown began. A failed
    /// accept (out of file descriptors, say) is logged and retried after 50 ms instead
    /// of spinning or ending the loop.
    async fn next_accepted<R, A, AF>(
        &self,
        accept: &mut A,
        stop: &mut watch::Receiver<Option<Instant>>,
    ) -> Option<(R, SocketAddr)>
    where
        A: FnMut() -> AF,
        AF: std::future::Future<Output = io::Result<(R, SocketAddr)>>,
    {
        loop {
            tokio::select! {
                r = accept() => match r {
                    Ok(x) => return Some(x),
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        self.inner.rt.sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = stopped(stop) => return None,
            }
        }
    }

    fn admit(&self, peer: SocketAddr) -> Option<IpSlot> {
        let mut map = self.inner.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(peer.ip()).or_insert(0);
        if *n >= self.config().max_connections_per_ip {
            self.inner.metrics.limit_refusals.fetch_add(1, Relaxed);
            return None;
        }
        *n += 1;
        Some(IpSlot {
            server: self.clone(),
            ip: peer.ip(),
        })
    }

    /// Serves one established connection (TLS already done, or cleartext).
    /// `h2` selects HTTP/2; otherwise HTTP/1.1. `identities` are the verified client
    /// certificate's identities (for certificate-bound ids, and for the callers'
    /// certificate rules of [`ServerConfig::callers`]).
    pub async fn serve_connection<IO>(
        &self,
        io: IO,
        peer: SocketAddr,
        h2: bool,
        identities: Vec<String>,
        tls: bool,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.serve_conn(io, peer, h2, identities, tls, None).await
    }

    /// [`Server::serve_connection`] with the TLS server name the Client sent, the
    /// host name of requests that carry none (host routing).
    async fn serve_conn<IO>(
        &self,
        io: IO,
        peer: SocketAddr,
        h2: bool,
        identities: Vec<String>,
        tls: bool,
        server_name: Option<Arc<str>>,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let m = self.inner.metrics.clone();
        m.connections.fetch_add(1, Relaxed);
        if h2 {
            self.serve_h2(io, peer, identities, tls, server_name).await;
        } else {
            let ids = identities.into();
            crate::proxy::serve_http1(self.clone(), io, peer, ids, tls, server_name).await;
        }
        m.connections.fetch_sub(1, Relaxed);
    }

    async fn serve_h2<IO>(
        &self,
        io: IO,
        peer: SocketAddr,
        identities: Vec<String>,
        tls: bool,
        server_name: Option<Arc<str>>,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let cfg = &*self.config();
        let rt = &self.inner.rt;
        let handshake = crate::settings::server(&cfg.h2).handshake::<_, Bytes>(io);
        let mut conn = match rt.timeout(cfg.handshake_timeout, handshake).await {
            Some(Ok(c)) => c,
            Some(Err(e)) => return debug!(%peer, error = %e, "HTTP/2 handshake failed"),
            None => return debug!(%peer, "HTTP/2 handshake timed out"),
        };
        let conn_id = ConnId(self.next_id());
        // Shared by every request of the connection (caller certificate rules).
        let identities: Arc<[String]> = identities.into();
        let mut dead = std::pin::pin!(crate::keepalive::dead(conn.ping_pong(), cfg.h2, rt.clone()));
        let mut stop = self.shutdown_signal();
        let mut draining = false;
        // Set to the shutdown deadline once draining: then the connection is cut.
        let mut drain_deadline = rt.timer(rt.now() + Duration::from_secs(86400 * 365));
        // A connection without streams is closed (the core's idle rule): a slowloris
        // past the HTTP/2 handshake holds nothing for long; a Listener's connection
        // always holds its control stream.
        let mut idle_rule = IdleRule::new(rt.now(), cfg.handshake_timeout, cfg.idle_timeout);
        let far = || rt.now() + Duration::from_secs(86400 * 365);
        let mut idle_check = rt.timer(idle_rule.poll_timeout().unwrap_or_else(far));
        // Told when a session is accepted on this connection (it is a tunnel), and
        // when conns open or close on it (the stream window is shared among them).
        let tunnel = Arc::new(TunnelShare::default());
        let mut is_tunnel = false;
        let mut windows = StreamWindowRule::new(
            cfg.tunnel_stream_budget,
            MIN_STREAM_WINDOW,
            cfg.h2.stream_window,
        );
        // h2 takes one SETTINGS at a time: a change made while the last one is not yet
        // acknowledged is retried a moment later.
        let mut retune = rt.timer(far());
        let mut retune_armed = false;
        // After a decrease, h2 is made to look again for window updates it owes.
        let mut recheck = rt.timer(far());
        loop {
            tokio::select! {
                next = conn.accept() => match next {
                    Some(Ok((req, respond))) => {
                        idle_rule.handle_stream(rt.now());
                        idle_check.as_mut().reset(idle_rule.poll_timeout().unwrap_or_else(far));
                        let conn = ConnMeta { id: conn_id, peer, identities: &identities, tls, server_name: server_name.as_deref() };
                        self.on_h2_request(conn, req, respond, &tunnel);
                    }
                    Some(Err(e)) => {
                        debug!(%peer, error = %e, "HTTP/2 connection error");
                        break;
                    }
                    None => break,
                },
                reason = &mut dead => {
                    info!(%peer, "HTTP/2 connection is dead: {reason}");
                    conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                    break;
                }
                until = stopped(&mut stop), if !draining => {
                    draining = true;
                    conn.graceful_shutdown();
                    drain_deadline.as_mut().reset(until);
                }
                _ = idle_check.as_mut(), if !draining => {
                    let now = rt.now();
                    idle_rule.handle_timeout(now, conn.has_streams());
                    if let Some(IdleAction::Close { opened_any }) = idle_rule.poll_action() {
                        debug!(%peer, opened_any, "closing HTTP/2 connection without streams");
                        // GOAWAY; a peer that does not even read it is cut soon after.
                        draining = true;
                        conn.graceful_shutdown();
                        drain_deadline
                            .as_mut()
                            .reset(now + cfg.handshake_timeout.min(IDLE_DRAIN));
                    } else {
                        idle_check.as_mut().reset(idle_rule.poll_timeout().unwrap_or_else(far));
                    }
                }
                _ = tunnel.close.notified(), if !draining => {
                    info!(%peer, "closing the connection: a reload revoked its session");
                    draining = true;
                    conn.graceful_shutdown();
                    drain_deadline.as_mut().reset(rt.now() + IDLE_DRAIN);
                }
                _ = tunnel.became_tunnel.notified(), if !is_tunnel => {
                    is_tunnel = true;
                    conn.set_target_window_size(cfg.tunnel_connection_window);
                }
                _ = tunnel.changed.notified(), if is_tunnel && !retune_armed => {
                    retune_armed = !announce_window(&mut conn, &mut windows, &tunnel, rt.now());
                    if retune_armed {
                        retune.as_mut().reset(rt.now() + SETTINGS_RETRY);
                    }
                    recheck.as_mut().reset(windows.poll_recheck().unwrap_or_else(far));
                }
                _ = retune.as_mut(), if retune_armed => {
                    retune_armed = !announce_window(&mut conn, &mut windows, &tunnel, rt.now());
                    let next = if retune_armed { rt.now() + SETTINGS_RETRY } else { far() };
                    retune.as_mut().reset(next);
                    recheck.as_mut().reset(windows.poll_recheck().unwrap_or_else(far));
                }
                _ = recheck.as_mut() => {
                    tunnel.recheck_windows();
                    windows.handle_recheck();
                    recheck.as_mut().reset(windows.poll_recheck().unwrap_or_else(far));
                }
                _ = drain_deadline.as_mut() => break,
            }
        }
        let _ = self.inner.cmd.send(Cmd::ConnClosed { conn: conn_id });
    }

    fn on_h2_request(
        &self,
        meta: ConnMeta<'_>,
        req: Request<RecvStream>,
        mut respond: SendResponse<Bytes>,
        tunnel: &Arc<TunnelShare>,
    ) {
        let ConnMeta {
            id: conn,
            peer,
            identities,
            tls,
            server_name,
        } = meta;
        let route = self.config().routes.route_with_host(
            crate::proxy::request_host(req.uri(), req.headers(), server_name),
            req.uri().path(),
            req.uri().query(),
        );
        match route {
            Ok(Route::Revdial(request)) => {
                // Which wire generation: the core decides by the content type.
                let content_type = req.headers().get(http::header::CONTENT_TYPE);
                let request = request.classify(content_type.map(|v| v.as_bytes()));
                let bearer = bearer_token(req.headers());
                let stream = StreamId(self.next_id());
                let (_, body) = req.into_parts();
                let _ = self.inner.cmd.send(Cmd::Revdial {
                    conn,
                    stream,
                    request,
                    bearer,
                    identities: identities.to_vec(),
                    respond,
                    body,
                    peer,
                    tunnel: tunnel.clone(),
                });
            }
            Ok(Route::Proxy {
                id,
                path_and_query,
                prefix,
            }) => {
                let this = self.clone();
                self.inner.rt.spawn(crate::proxy::serve_h2_proxy(
                    this,
                    req,
                    respond,
                    id,
                    path_and_query,
                    Some(prefix),
                    peer,
                    identities.clone(),
                    tls,
                ));
            }
            Ok(Route::Default { id, path_and_query } | Route::Host { id, path_and_query }) => {
                let this = self.clone();
                self.inner.rt.spawn(crate::proxy::serve_h2_proxy(
                    this,
                    req,
                    respond,
                    id,
                    path_and_query,
                    None,
                    peer,
                    identities.clone(),
                    tls,
                ));
            }
            Ok(Route::NotFound) => {
                respond_text(&mut respond, StatusCode::NOT_FOUND, "no such route\n")
            }
            Err(e) => respond_text(&mut respond, StatusCode::BAD_REQUEST, &format!("{e}\n")),
        }
    }

    /// Forwards each connection that `accept` yields to the Listener `id`, until
    /// shutdown: raw TCP forwarding. The runtime bindings call this from their
    /// `forward_tcp`.
    pub async fn forward_with<A, AF>(&self, mut accept: A, id: DialerId) -> io::Result<()>
    where
        A: FnMut() -> AF,
        AF: std::future::Future<Output = io::Result<(Box<dyn crate::io::TcpClient>, SocketAddr)>>,
    {
        let mut stop = self.shutdown_signal();
        while let Some((mut tcp, peer)) = self.next_accepted(&mut accept, &mut stop).await {
            let this = self.clone();
            let id = id.clone();
            self.inner.rt.spawn(async move {
                match this.dial(&id).await {
                    Ok(mut conn) => {
                        if let Err(e) = crate::relay::relay(&mut tcp, &mut conn).await {
                            // A broken tunnel (or Client) must not look like a clean
                            // end: the Client gets a reset; dropping `conn` unfinished
                            // resets the stream for the far side.
                            tcp.abort();
                            debug!(%peer, %id, error = %e, "TCP forward aborted");
                        }
                    }
                    Err(e) => match (e, this.inner.cluster.get()) {
                        // Held by another replica of the cluster, maybe.
                        (DialError::NoSession, Some(cluster)) => {
                            let path = this.config().routes.proxy_path(&id);
                            tcp_cluster(cluster, &id, &path, peer, tcp).await;
                        }
                        (e, _) => {
                            tcp.abort();
                            info!(%peer, %id, error = %e, "TCP forward: dial failed");
                        }
                    },
                }
            });
        }
        Ok(())
    }
}

/// Carries a TCP forward's connection to the replica of the cluster that holds `id`.
async fn tcp_cluster(
    cluster: &crate::cluster::Cluster,
    id: &DialerId,
    proxy_path: &str,
    peer: SocketAddr,
    tcp: Box<dyn crate::io::TcpClient>,
) {
    // Kept to reset the Client when the forward fails (the socket is shared by fd).
    let abort = crate::io::AbortHandle::of(&*tcp);
    if let Err(e) = cluster.forward_tcp(id, proxy_path, tcp).await {
        abort.abort();
        info!(%peer, %id, error = %e, "TCP forward through the cluster failed");
    }
}

/// What a request on an HTTP/2 connection is told about the connection.
struct ConnMeta<'a> {
    id: ConnId,
    peer: SocketAddr,
    identities: &'a Arc<[String]>,
    tls: bool,
    /// The TLS server name (SNI) the Client sent.
    server_name: Option<&'a str>,
}

/// A connection after its handshake, ready for HTTP: what a binding's `handshake`
/// gives [`Server::serve_with`].
pub struct Accepted {
    /// The byte stream (TLS already done, or cleartext).
    pub io: BoxIo,
    /// HTTP/2 (ALPN `h2`, or the cleartext preface); otherwise HTTP/1.1.
    pub h2: bool,
    /// The verified client certificate's identities
    /// ([`crate::identity::peer_identities`]), for ids bound to certificates and for
    /// caller certificate rules.
    pub identities: Vec<String>,
    /// Whether it came over TLS (for `X-Forwarded-Proto`).
    pub tls: bool,
    /// The TLS server name (SNI) the Client asked for: the host name of its requests
    /// that carry no `Host` (host routing, [`h2rev2_proto::wire::RouteConfig::route_with_host`]).
    pub server_name: Option<String>,
}

/// What a TLS handshake told about the peer: whether ALPN chose `h2`, the
/// identities of its verified client certificate, and the server name it asked for.
#[derive(Debug, Clone)]
pub struct TlsPeer {
    h2: bool,
    identities: Vec<String>,
    server_name: Option<String>,
}

impl TlsPeer {
    /// Reads `session` (whichever TLS crate the binding uses); `which` names the part
    /// of a client certificate that names an id.
    pub fn of(session: &rustls::ServerConnection, which: crate::CertIdentity) -> TlsPeer {
        TlsPeer {
            h2: session.alpn_protocol() == Some(crate::tls::ALPN_H2),
            identities: crate::identity::peer_identities(session, which),
            server_name: session.server_name().map(str::to_string),
        }
    }
}

impl Accepted {
    /// A TLS connection whose handshake told `peer`.
    pub fn tls(io: impl crate::io::Io, peer: TlsPeer) -> Accepted {
        Accepted {
            io: Box::new(io),
            h2: peer.h2,
            identities: peer.identities,
            tls: true,
            server_name: peer.server_name,
        }
    }

    /// A cleartext connection whose first bytes are `first` (peeked, not consumed):
    /// HTTP/2 when they start the HTTP/2 preface (`PRI`), otherwise HTTP/1.1.
    pub fn cleartext(io: impl crate::io::Io, first: &[u8]) -> Accepted {
        Accepted {
            io: Box::new(io),
            h2: first.starts_with(b"PRI"),
            identities: Vec::new(),
            tls: false,
            server_name: None,
        }
    }
}

/// Declares a binding's wrapper of a driver type: a newtype with `Deref` to the
/// driver type (every method of it) and `From` into it, so each binding adds only
/// its constructors and socket-taking methods.
#[macro_export]
macro_rules! binding_type {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        pub struct $name($inner);

        impl ::std::ops::Deref for $name {
            type Target = $inner;
            fn deref(&self) -> &$inner {
                &self.0
            }
        }

        impl ::std::convert::From<$name> for $inner {
            fn from(x: $name) -> $inner {
                x.0
            }
        }
    };
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

/// The token of an `Authorization: Bearer` header.
pub(crate) fn bearer_token(headers: &http::HeaderMap) -> Option<String> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    h2rev2_proto::auth::parse_bearer(v).map(str::to_string)
}

pub(crate) fn respond_text(respond: &mut SendResponse<Bytes>, status: StatusCode, body: &str) {
    let resp = Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(())
        .expect("static response");
    if let Ok(mut send) = respond.send_response(resp, false) {
        let _ = send.send_data(Bytes::copy_from_slice(body.as_bytes()), true);
    }
}

/// How soon a stream window change h2 refused (a SETTINGS frame not yet acknowledged)
/// is tried again.
const SETTINGS_RETRY: Duration = Duration::from_millis(5);

/// Announces the stream window that the conns now open on `tunnel` should have, if it
/// changed; false when h2 cannot take it yet (try again later).
fn announce_window<T, B>(
    conn: &mut h2::server::Connection<T, B>,
    windows: &mut StreamWindowRule,
    tunnel: &TunnelShare,
    now: Instant,
) -> bool
where
    T: AsyncRead + AsyncWrite + Unpin,
    B: bytes::Buf,
{
    let Some(w) = windows.poll_window(tunnel.open_conns()) else {
        return true;
    };
    match conn.set_initial_window_size(w) {
        Ok(()) => {
            debug!(
                window = w,
                conns = tunnel.open_conns(),
                "tunnel stream window"
            );
            windows.handle_announced(now, w);
            true
        }
        Err(_) => false,
    }
}

/// A revdial request waiting for the core's answer: its response, body, peer, id, and
/// its connection's share.
type Pending = (
    SendResponse<Bytes>,
    RecvStream,
    SocketAddr,
    DialerId,
    Arc<TunnelShare>,
);

struct Driver {
    rt: Rt,
    dialer: Dialer,
    /// Weak, so that the driver ends when the last `Server` handle is dropped.
    cmd_tx: mpsc::WeakUnboundedSender<Cmd>,
    pending: HashMap<StreamId, Pending>,
    controls: HashMap<StreamId, SendStream<Bytes>>,
    parked: HashMap<StreamId, Parked>,
    /// Streams parked during this drain, to watch once it ends.
    fresh: Vec<StreamId>,
    dials: HashMap<DialId, oneshot::Sender<Result<RevConn, DialError>>>,
    metrics: Arc<Metrics>,
    conn_config: ConnConfig,
    /// Per-address counts of refused revdial requests: what to log, when to answer.
    refusals: RefusalThrottle<IpAddr>,
    /// What [`Server::sessions`] reports.
    sessions: Arc<SessionTable>,
    /// Told of sessions up and down, once the server joined a cluster.
    cluster: Arc<std::sync::OnceLock<Arc<crate::cluster::Cluster>>>,
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        let mut deadline = crate::runtime::Deadline::new(self.rt.clone());
        loop {
            let sleep = deadline.until(self.dialer.poll_timeout());
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.on_cmd(cmd),
                    None => return,
                },
                _ = sleep => self.dialer.handle_timeout(self.rt.now()),
            }
            self.drain();
        }
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        let now = self.rt.now();
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
                tunnel,
            } => {
                self.pending
                    .insert(stream, (respond, body, peer, request.id.clone(), tunnel));
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
            Cmd::GoAway => {
                self.dialer.go_away();
                Ok(())
            }
            Cmd::Shutdown => {
                for send in self.controls.values_mut() {
                    let _ = send.send_data(Bytes::new(), true);
                }
                Ok(())
            }
            Cmd::Stats { reply } => {
                let _ = reply.send(self.dialer.stats());
                Ok(())
            }
            Cmd::Sessions { reply } => {
                let dialer = &self.dialer;
                let _ = reply.send(self.sessions.snapshot(|k| dialer.session_spares(k)));
                Ok(())
            }
            Cmd::Reconfigure { config, reply } => {
                self.conn_config = config.conn;
                let out = self.dialer.reconfigure(now, config.dialer);
                let mut ids = Vec::new();
                for (key, id, conn) in out.ended {
                    // Before the SessionDown actions remove the sessions from the table.
                    if out.idle_conns.contains(&conn) {
                        if let Some(t) = self.sessions.tunnel(key) {
                            t.close.notify_one();
                        }
                    }
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
                for id in &ids {
                    warn!(%id, "a reload revoked this id's session: ended");
                }
                let _ = reply.send(ids);
                Ok(())
            }
        };
        if let Err(e) = result {
            // A bug in this adapter; say so loudly, but keep serving.
            warn!(error = %e, "h2rev2 adapter bug");
        }
    }

    /// Queues a command to this driver itself (handled after the current batch).
    fn send_self(&self, cmd: Cmd) {
        if let Some(tx) = self.cmd_tx.upgrade() {
            let _ = tx.send(cmd);
        }
    }

    fn drain(&mut self) {
        self.carry_out();
        // Streams that stay parked are watched: a Listener that resets one (it closed,
        // or gave up on it) must not leave a dead stream for the next dial.
        for stream in std::mem::take(&mut self.fresh) {
            if let Some(Parked::Fresh(..)) = self.parked.get(&stream) {
                let Some(Parked::Fresh(send, recv, id, share)) = self.parked.remove(&stream) else {
                    continue;
                };
                let Some(cmd) = self.cmd_tx.upgrade() else {
                    continue;
                };
                let (take, taken) = oneshot::channel();
                self.parked.insert(stream, Parked::Watched(take));
                self.rt.spawn(watch_parked(ParkedStream {
                    stream,
                    send,
                    recv,
                    id,
                    share,
                    taken,
                    cmd,
                    config: self.conn_config,
                    metrics: self.metrics.clone(),
                    rt: self.rt.clone(),
                }));
            }
        }
    }

    fn carry_out(&mut self) {
        while let Some(action) = self.dialer.poll_action() {
            match action {
                Action::Accept { stream, kind } => {
                    let Some((mut respond, body, peer, id, tunnel)) = self.pending.remove(&stream)
                    else {
                        continue;
                    };
                    let mut resp = Response::builder().status(200).body(()).expect("static");
                    if let (StreamKind::Control(_), Some(c)) = (kind, self.cluster.get()) {
                        // Which replica took the session: a Listener that keeps several
                        // through one address spreads them over distinct replicas.
                        if let Ok(v) = http::HeaderValue::from_str(c.replica()) {
                            resp.headers_mut().insert(
                                http::HeaderName::from_static(
                                    h2rev2_proto::listener::REPLICA_HEADER,
                                ),
                                v,
                            );
                        }
                    }
                    let send = match respond.send_response(resp, false) {
                        Ok(s) => s,
                        Err(e) => {
                            debug!(error = %e, "revdial stream gone before its answer");
                            self.send_self(Cmd::StreamClosed { stream });
                            continue;
                        }
                    };
                    match kind {
                        StreamKind::Control(key) => {
                            info!(%id, %peer, "created reverse connection control stream");
                            self.sessions.up(key, &id, peer, tunnel.clone());
                            tunnel.became_tunnel.notify_one();
                            self.controls.insert(stream, send);
                            if let Some(tx) = self.cmd_tx.upgrade() {
                                self.rt.spawn(read_control(stream, body, tx));
                            }
                        }
                        StreamKind::Data(_) => {
                            debug!(%id, %peer, "reverse connection stream ready");
                            // A 2022 Listener's connection holds only such streams.
                            tunnel.became_tunnel.notify_one();
                            self.parked
                                .insert(stream, Parked::Fresh(send, body, id, tunnel));
                            self.fresh.push(stream);
                        }
                    }
                }
                Action::Reject {
                    stream,
                    status,
                    kind,
                    reason,
                } => {
                    if let Some((mut respond, _, peer, id, _)) = self.pending.remove(&stream) {
                        let counter = match kind {
                            RejectKind::Auth => Some(&self.metrics.auth_failures),
                            RejectKind::Limit => Some(&self.metrics.limit_refusals),
                            _ => None,
                        };
                        if let Some(c) = counter {
                            c.fetch_add(1, Relaxed);
                        }
                        let refusal = self.refusals.handle_refusal(self.rt.now(), peer.ip());
                        if let Some(unlogged) = refusal.log {
                            let more = if unlogged > 0 {
                                format!(
                                    " ({unlogged} more refusals of this address were not logged)"
                                )
                            } else {
                                String::new()
                            };
                            if kind == RejectKind::Auth {
                                warn!(%peer, %id, status, "revdial request refused: {reason}{more}");
                            } else {
                                info!(%peer, %id, status, "revdial request refused: {reason}{more}");
                            }
                        }
                        let status =
                            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
                        let body = format!("{reason}\n");
                        if refusal.delay.is_zero() {
                            respond_text(&mut respond, status, &body);
                        } else {
                            // Refused too often: a client that retries on the answer
                            // at once now retries about once per delay.
                            let rt = self.rt.clone();
                            self.rt.spawn(async move {
                                rt.sleep(refusal.delay).await;
                                respond_text(&mut respond, status, &body);
                            });
                        }
                    }
                }
                Action::SendControl { stream, data } => {
                    if let Some(send) = self.controls.get_mut(&stream) {
                        if let Err(e) = send.send_data(Bytes::from(data), false) {
                            // The control stream is gone: so is the session.
                            debug!(error = %e, "control stream write failed");
                            self.controls.remove(&stream);
                            self.send_self(Cmd::StreamClosed { stream });
                        }
                    }
                }
                Action::Reset { stream, reason } => {
                    debug!(?stream, "reset: {reason}");
                    if let Some(mut s) = self.controls.remove(&stream) {
                        s.send_reset(h2::Reason::from(CANCEL));
                    }
                    match self.parked.remove(&stream) {
                        Some(Parked::Fresh(mut s, ..)) => s.send_reset(h2::Reason::from(CANCEL)),
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
                        Parked::Fresh(send, recv, id, share) => {
                            let conn = RevConn::new(
                                send,
                                recv,
                                self.conn_config,
                                id.to_string(),
                                self.rt.clone(),
                            )
                            .with_metrics(self.metrics.clone(), true)
                            .with_slot(ConnSlot::new(share));
                            if let Some(reply) = reply {
                                let _ = reply.send(Ok(conn));
                            }
                        }
                        Parked::Watched(take) => {
                            if let Some(reply) = reply {
                                if let Err(reply) = take.send(reply) {
                                    // Reset by the Listener a moment ago.
                                    let _ = reply.send(Err(DialError::PickupFailed(
                                        "the spare stream was reset by the Listener".into(),
                                    )));
                                }
                            }
                        }
                    }
                }
                Action::DialFailed { dial, error } => {
                    if let Some(reply) = self.dials.remove(&dial) {
                        let _ = reply.send(Err(error));
                    }
                }
                Action::SessionUp { session, id, conn } => {
                    self.metrics.sessions.fetch_add(1, Relaxed);
                    info!(%id, session = session.index(), conn = conn.0, "session up");
                    if let Some(c) = self.cluster.get() {
                        c.session_up(&id);
                    }
                }
                Action::SessionDown {
                    session,
                    id,
                    reason,
                } => {
                    self.metrics.sessions.fetch_sub(1, Relaxed);
                    self.metrics.sessions_ended.fetch_add(1, Relaxed);
                    self.sessions.down(session, &id, &reason);
                    if let Some(c) = self.cluster.get() {
                        c.session_down(&id);
                    }
                    info!(%id, session = session.index(), "session down: {reason}");
                }
            }
        }
    }
}

async fn read_control(stream: StreamId, mut body: RecvStream, tx: mpsc::UnboundedSender<Cmd>) {
    loop {
        match body.data().await {
            Some(Ok(data)) => {
                let _ = body.flow_control().release_capacity(data.len());
                if !data.is_empty() && tx.send(Cmd::ControlData { stream, data }).is_err() {
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
    let _ = tx.send(Cmd::StreamClosed { stream });
}

type DialReply = oneshot::Sender<Result<RevConn, DialError>>;

/// A data stream answered `200` and not yet handed to a dial.
enum Parked {
    /// Parked during the current drain (it may be handed out at once).
    Fresh(SendStream<Bytes>, RecvStream, DialerId, Arc<TunnelShare>),
    /// Held by a [`watch_parked`] task; send it the dial's reply to hand it out.
    Watched(oneshot::Sender<DialReply>),
}

struct ParkedStream {
    stream: StreamId,
    send: SendStream<Bytes>,
    recv: RecvStream,
    id: DialerId,
    share: Arc<TunnelShare>,
    taken: oneshot::Receiver<DialReply>,
    cmd: mpsc::UnboundedSender<Cmd>,
    config: ConnConfig,
    metrics: Arc<Metrics>,
    rt: Rt,
}

/// Holds a parked spare stream until a dial takes it, and reports it closed when the
/// Listener resets it first (PROTOCOL.md 4.3).
async fn watch_parked(mut p: ParkedStream) {
    tokio::select! {
        taken = &mut p.taken => match taken {
            Ok(reply) => {
                let conn = RevConn::new(p.send, p.recv, p.config, p.id.to_string(), p.rt)
                    .with_metrics(p.metrics, true)
                    .with_slot(ConnSlot::new(p.share));
                // A dial that gave up drops the conn, which resets the stream.
                let _ = reply.send(Ok(conn));
            }
            // The driver let go of it (session ended): reset it.
            Err(_) => p.send.send_reset(h2::Reason::from(CANCEL)),
        },
        reset = std::future::poll_fn(|cx| p.send.poll_reset(cx)) => {
            debug!(id = %p.id, ?reset, "parked stream reset by the Listener");
            let _ = p.cmd.send(Cmd::StreamClosed { stream: p.stream });
        }
    }
}

/// Waits until [`Server::shutdown`] started; returns its deadline. Pending forever
/// when the server is gone without a shutdown.
pub(crate) async fn stopped(stop: &mut watch::Receiver<Option<Instant>>) -> Instant {
    let deadline = stop.wait_for(Option::is_some).await.map(|d| *d);
    match deadline {
        Ok(d) => d.unwrap_or_else(Instant::now),
        Err(_) => std::future::pending().await,
    }
}
