//! The NAT side: a Listener that dials out to the public server and accepts reverse
//! connections, reconnecting forever with the core's backoff.
//!
//! One driver task owns the core's [`Machine`]; the tasks it spawns (connect, open a
//! stream, read the control stream, run the HTTP/2 connection) report back through a
//! channel, tagged with the connection's generation so that late news of an old
//! connection is dropped.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{AbortHandle, Abortable};
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use h2rev2_proto::conn::ConnConfig;
use h2rev2_proto::listener::{Action, Event, Listener as Machine, ListenerConfig, State};
use h2rev2_proto::wire::{DialerId, RouteConfig};
use http::{Request, Uri};
use smol::Timer;
use smol::channel::{self, Receiver, Sender};
use tracing::{debug, info, warn};

use crate::conn::RevConn;
use crate::io::{Connector, H2Io, Transport};
use crate::settings::{self, H2Settings};
use crate::spawn::Spawner;
use crate::status::Watch;
use crate::tls::rustls;

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
    /// TLS client config; its ALPN must offer `h2` ([`crate::tls::client_config`]
    /// does). `None` with `cleartext`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Speak HTTP/2 without TLS (prior knowledge). Tests and front proxies only.
    pub cleartext: bool,
    /// HTTP/2 settings.
    pub h2: H2Settings,
    /// Reverse connection write coalescing.
    pub conn: ConnConfig,
    /// Connect + TLS + HTTP/2 handshake must finish within this. Default 10 s.
    pub connect_timeout: Duration,
    /// How the connection to the public server is opened. Default: smol's TCP.
    pub connector: Connector,
    /// Where the Listener's tasks run. Default: smol's global executor.
    pub spawner: Spawner,
    /// On cleartext connections, hand h2's vectored writes (frame header + payload)
    /// to the socket in one `writev` (measured: 10-20% less CPU per byte). Over
    /// this crate's TLS they are never forwarded: with futures-rustls they cost
    /// 5-15% more CPU (tests/vectored_writes.rs). Default on.
    pub vectored_writes: bool,
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

/// A bad [`ListenerOptions`].
#[derive(Debug)]
pub struct OptionsError(String);

impl fmt::Display for OptionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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
            .map_err(|e| OptionsError(format!("bad URL {url:?}: {e}")))?;
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
            connector: Connector::default(),
            spawner: Spawner::default(),
            vectored_writes: true,
        })
    }

    fn validate(&self) -> Result<(), OptionsError> {
        let scheme = self.url.scheme_str().unwrap_or("");
        match (scheme, self.cleartext) {
            ("https", false) | ("http", true) => {}
            ("http", false) => {
                return Err(OptionsError(format!(
                    "{}: plain http is refused: the Listener speaks TLS HTTP/2 (use https://)",
                    self.url
                )));
            }
            _ => {
                return Err(OptionsError(format!(
                    "{}: expected https://host[:port][/base]",
                    self.url
                )));
            }
        }
        if self.url.host().is_none_or(str::is_empty) {
            return Err(OptionsError(format!("{}: no host", self.url)));
        }
        if !self.cleartext && self.tls.is_none() {
            return Err(OptionsError("TLS config missing".into()));
        }
        Ok(())
    }

    fn addr(&self) -> String {
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
    Down(Option<String>),
    /// The control stream is up.
    Up,
    /// Stopped for good.
    Closed(String),
}

/// The NAT side: accepts reverse connections dialed by the public server.
///
/// It connects in the background, keeps `spares` data streams open ahead of dials,
/// and reconnects with capped, jittered backoff whenever the connection is lost. All
/// of that is the core's [`h2rev2_proto::listener::Listener`]; this type runs it.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use h2rev2_smol::{tls, Listener, ListenerOptions};
/// use h2rev2_smol::proto::wire::DialerId;
///
/// smol::block_on(async {
///     let trust = tls::ServerTrust::from_pem_file("ca.pem".as_ref())?;
///     let tls = tls::client_config(trust, None)?;
///     let mut opts =
///         ListenerOptions::new("https://public.example:9090", DialerId::new("db")?, tls)?;
///     opts.token = Some("s3cret".into());
///     let listener = Listener::bind(opts)?;
///     loop {
///         let conn = listener.accept().await?; // futures-io AsyncRead + AsyncWrite
///         smol::spawn(async move { /* serve bytes on conn */ drop(conn) }).detach();
///     }
/// })
/// # }
/// ```
pub struct Listener {
    accept: Receiver<RevConn>,
    cmd: Sender<Internal>,
    status: Arc<Watch<Status>>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("status", &self.status.get())
            .finish()
    }
}

impl Listener {
    /// Starts the Listener's task on `opts.spawner`. It connects in the background and
    /// keeps reconnecting; this returns at once. Needs no runtime: call it from
    /// anywhere.
    pub fn bind(opts: ListenerOptions) -> Result<Listener, OptionsError> {
        opts.validate()?;
        let (accept_tx, accept) = channel::bounded(64);
        let (tx, rx) = channel::unbounded();
        let status = Arc::new(Watch::new(Status::Down(None)));
        let seed = fastrand::u64(..);
        let driver = Driver {
            machine: Machine::new(opts.machine.clone(), seed),
            opts,
            tx: tx.clone(),
            generation: 0,
            h2: None,
            control: None,
            conn_task: None,
            accept_tx,
            status: status.clone(),
        };
        let spawner = driver.opts.spawner.clone();
        spawner.spawn(driver.run(rx));
        Ok(Listener {
            accept,
            cmd: tx,
            status,
        })
    }

    /// The next reverse connection. Fails only once the Listener is closed. Several
    /// tasks may call it at once (each conn goes to one of them).
    pub async fn accept(&self) -> io::Result<RevConn> {
        self.accept.recv().await.map_err(|_| {
            let why = match self.status.get() {
                Status::Closed(r) => r,
                _ => "listener closed".into(),
            };
            io::Error::new(io::ErrorKind::NotConnected, why)
        })
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.status.get()
    }

    /// Waits until the control stream is up (or the Listener closed: `Err`).
    pub async fn wait_up(&self) -> Result<(), String> {
        self.status
            .wait_for(|s| match s {
                Status::Up => Some(Ok(())),
                Status::Closed(r) => Some(Err(r.clone())),
                Status::Down(_) => None,
            })
            .await
    }

    /// Waits until the status is no longer [`Status::Up`] (the connection was lost or
    /// the Listener closed); returns it.
    pub async fn wait_down(&self) -> Status {
        self.status
            .wait_for(|s| (*s != Status::Up).then(|| s.clone()))
            .await
    }

    /// Stops for good: the session ends and `accept` fails. Conns already accepted
    /// live on until their connection closes.
    pub fn close(&self) {
        let _ = self.cmd.try_send(Internal::Close);
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
    }
}

enum Internal {
    Connected(u64, SendRequest<Bytes>, AbortHandle),
    ConnectFailed(u64, String),
    ControlAccepted(u64, SendStream<Bytes>, RecvStream),
    ControlRejected(u64, u16, String),
    ControlData(u64, Bytes),
    Disconnected(u64, String),
    DataOpened(u64, u64),
    DataFailed(u64, u64, String),
    Close,
}

struct Driver {
    machine: Machine,
    opts: ListenerOptions,
    tx: Sender<Internal>,
    generation: u64,
    h2: Option<SendRequest<Bytes>>,
    control: Option<SendStream<Bytes>>,
    conn_task: Option<AbortHandle>,
    accept_tx: Sender<RevConn>,
    status: Arc<Watch<Status>>,
}

enum Wake {
    Msg(Option<Internal>),
    Timer,
}

impl Driver {
    async fn run(mut self, rx: Receiver<Internal>) {
        if !self.drain() {
            return;
        }
        loop {
            let timeout = self.machine.poll_timeout();
            let wake = smol::future::or(async { Wake::Msg(rx.recv().await.ok()) }, async {
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
                Wake::Msg(Some(m)) => self.on_internal(m),
                Wake::Msg(None) => return,
                Wake::Timer => self.machine.handle_timeout(Instant::now()),
            }
            if !self.drain() {
                return;
            }
        }
    }

    fn on_internal(&mut self, msg: Internal) {
        let now = Instant::now();
        let current = self.generation;
        let ev = match msg {
            Internal::Connected(g, h2, task) if g == current => {
                self.h2 = Some(h2);
                self.conn_task = Some(task);
                Event::Connected
            }
            Internal::Connected(_, _, task) => {
                task.abort();
                return;
            }
            Internal::ConnectFailed(g, reason) if g == current => Event::ConnectFailed { reason },
            Internal::ControlAccepted(g, send, recv) if g == current => {
                self.control = Some(send);
                self.opts
                    .spawner
                    .spawn(read_control(g, recv, self.tx.clone()));
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
            Internal::Close => Event::Close,
            _ => return, // late news of an older connection
        };
        self.machine.handle_event(now, ev);
    }

    fn teardown(&mut self) {
        self.h2 = None;
        self.control = None;
        if let Some(t) = self.conn_task.take() {
            t.abort();
        }
    }

    /// Carries out the machine's actions; `false` once closed.
    fn drain(&mut self) -> bool {
        while let Some(action) = self.machine.poll_action() {
            match action {
                Action::Connect => {
                    self.teardown();
                    self.generation += 1;
                    let g = self.generation;
                    info!(url = %self.opts.url, id = %self.opts.machine.id, "Listener connecting");
                    self.opts
                        .spawner
                        .spawn(connect(g, self.opts.clone(), self.tx.clone()));
                }
                Action::OpenControl { path_and_query } => {
                    let Some(h2) = self.h2.clone() else { continue };
                    let req = self.request(&path_and_query);
                    let g = self.generation;
                    let tx = self.tx.clone();
                    self.opts.spawner.spawn(async move {
                        let msg = open_control(g, h2, req).await;
                        let _ = tx.send(msg).await;
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
                    let accept = self.accept_tx.clone();
                    let conn_cfg = self.opts.conn;
                    let label = self.opts.machine.id.to_string();
                    let spawner = self.opts.spawner.clone();
                    self.opts.spawner.spawn(async move {
                        match open_stream(h2, req).await {
                            Ok((send, recv)) => {
                                let conn = RevConn::new(send, recv, conn_cfg, label, spawner);
                                let _ = tx.send(Internal::DataOpened(g, request)).await;
                                // Waits while the application is not accepting: backpressure.
                                let _ = accept.send(conn).await;
                            }
                            Err(reason) => {
                                let _ = tx.send(Internal::DataFailed(g, request, reason)).await;
                            }
                        }
                    });
                }
                Action::SendControl(data) => {
                    if let Some(c) = self.control.as_mut() {
                        let _ = c.send_data(Bytes::from(data), false);
                    }
                }
                Action::Disconnect { reason } => {
                    debug!("disconnecting: {reason}");
                    self.teardown();
                }
                Action::Up => {
                    info!(id = %self.opts.machine.id, url = %self.opts.url, "Serving on Reverse connection");
                    self.status.set(Status::Up);
                }
                Action::Down { reason, retry_in } => {
                    warn!(id = %self.opts.machine.id, "reverse connection down: {reason}; retrying in {retry_in:?}");
                    self.status.set(Status::Down(Some(reason)));
                }
                Action::Closed { reason } => {
                    info!("Listener closed: {reason}");
                    self.teardown();
                    self.accept_tx.close();
                    self.status.set(Status::Closed(reason));
                    return false;
                }
            }
        }
        !matches!(self.machine.state(), State::Closed)
    }

    fn request(&self, path_and_query: &str) -> Request<()> {
        let scheme = if self.opts.cleartext { "http" } else { "https" };
        let authority = self
            .opts
            .url
            .authority()
            .map(|a| a.as_str())
            .unwrap_or_default();
        let mut b = Request::builder()
            .method("GET")
            .uri(format!("{scheme}://{authority}{path_and_query}"));
        if let Some(t) = &self.opts.token {
            b = b.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        b.body(()).expect("valid request")
    }
}

async fn open_control(g: u64, h2: SendRequest<Bytes>, req: Request<()>) -> Internal {
    let result = async {
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
        Ok::<_, String>((resp, send))
    };
    match result.await {
        Err(e) => Internal::Disconnected(g, e),
        Ok((resp, send)) if resp.status() == 200 => {
            Internal::ControlAccepted(g, send, resp.into_body())
        }
        Ok((resp, _)) => {
            let status = resp.status().as_u16();
            Internal::ControlRejected(g, status, read_text(resp.into_body()).await)
        }
    }
}

async fn open_stream(
    h2: SendRequest<Bytes>,
    req: Request<()>,
) -> Result<(SendStream<Bytes>, RecvStream), String> {
    let mut h2 = h2
        .ready()
        .await
        .map_err(|e| format!("connection not ready: {e}"))?;
    let (fut, send) = h2
        .send_request(req, false)
        .map_err(|e| format!("cannot open a stream: {e}"))?;
    let resp = fut.await.map_err(|e| format!("data stream failed: {e}"))?;
    if resp.status() != 200 {
        let status = resp.status();
        let body = read_text(resp.into_body()).await;
        return Err(format!("public server answered {status}: {body}"));
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

async fn read_control(g: u64, mut body: RecvStream, tx: Sender<Internal>) {
    let reason = loop {
        match body.data().await {
            Some(Ok(data)) => {
                let _ = body.flow_control().release_capacity(data.len());
                if tx.send(Internal::ControlData(g, data)).await.is_err() {
                    return;
                }
            }
            Some(Err(e)) => break format!("control stream failed: {e}"),
            None => break "control stream closed by the public server".to_string(),
        }
    };
    let _ = tx.send(Internal::Disconnected(g, reason)).await;
}

async fn connect(g: u64, opts: ListenerOptions, tx: Sender<Internal>) {
    let msg = match settings::timeout(opts.connect_timeout, handshake(g, &opts, tx.clone())).await {
        Some(Ok((h2, task))) => Internal::Connected(g, h2, task),
        Some(Err(e)) => Internal::ConnectFailed(g, e),
        None => Internal::ConnectFailed(g, format!("connecting to {} timed out", opts.addr())),
    };
    let _ = tx.send(msg).await;
}

async fn handshake(
    g: u64,
    opts: &ListenerOptions,
    tx: Sender<Internal>,
) -> Result<(SendRequest<Bytes>, AbortHandle), String> {
    let addr = opts.addr();
    let io = opts
        .connector
        .connect(addr.clone())
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    if opts.cleartext {
        return h2_handshake(g, opts, io, opts.vectored_writes, tx).await;
    }
    let tls = opts.tls.clone().ok_or("TLS config missing")?;
    let name =
        crate::tls::server_name(opts.url.host().unwrap_or_default()).map_err(|e| e.to_string())?;
    let stream = futures_rustls::TlsConnector::from(tls)
        .connect(name, io)
        .await
        .map_err(|e| format!("TLS handshake with {addr} failed: {e}"))?;
    if stream.get_ref().1.alpn_protocol() != Some(crate::tls::ALPN_H2) {
        return Err(format!("{addr} did not negotiate HTTP/2 (ALPN h2)"));
    }
    h2_handshake(g, opts, stream, false, tx).await
}

async fn h2_handshake<IO: Transport>(
    g: u64,
    opts: &ListenerOptions,
    io: IO,
    vectored: bool,
    tx: Sender<Internal>,
) -> Result<(SendRequest<Bytes>, AbortHandle), String> {
    let (h2, mut conn) = settings::client(&opts.h2)
        .handshake::<_, Bytes>(H2Io::new(io, vectored))
        .await
        .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
    let ping = conn.ping_pong();
    let h2s = opts.h2;
    let (abort, registration) = AbortHandle::new_pair();
    let task = async move {
        let reason = smol::future::or(
            async move {
                match conn.await {
                    Ok(()) => "connection closed by the public server".to_string(),
                    Err(e) => format!("connection lost: {e}"),
                }
            },
            settings::keepalive(ping, h2s),
        )
        .await;
        let _ = tx.send(Internal::Disconnected(g, reason)).await;
    };
    opts.spawner.spawn(async move {
        let _ = Abortable::new(task, registration).await;
    });
    Ok((h2, abort))
}
