//! The tokio binding: tokio as the drivers' [`Runtime`], tokio sockets and
//! tokio-rustls, and the public types in tokio's idiom.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use h2rev2_driver::io::{ConnectFuture, Connected, Target, TcpClient};
use h2rev2_driver::runtime::{Rt, Runtime, Task, Timer};
use h2rev2_driver::{Accepted, Connect, ListenerOptions, OptionsError, ServerConfig, TlsPeer};
use h2rev2_proto::wire::DialerId;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;

/// tokio as the drivers' runtime: tasks on a runtime handle, `tokio::time` timers
/// (which follow a paused test clock).
#[derive(Clone, Debug)]
pub struct TokioRuntime(Handle);

impl TokioRuntime {
    /// The runtime this is called in; outside any tokio runtime, a small runtime of
    /// h2rev2's own (one worker thread, started on first use) instead of a panic.
    pub fn current() -> TokioRuntime {
        TokioRuntime(Handle::try_current().unwrap_or_else(|_| fallback().clone()))
    }

    /// Tasks and timers on `handle`.
    pub fn from_handle(handle: Handle) -> TokioRuntime {
        TokioRuntime(handle)
    }

    /// As the drivers' runtime handle.
    pub fn rt(self) -> Rt {
        Rt::new(self)
    }
}

fn fallback() -> &'static Handle {
    static FALLBACK: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    FALLBACK
        .get_or_init(|| {
            tracing::debug!("no tokio runtime here: h2rev2 starts its own");
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("h2rev2")
                .enable_all()
                .build()
                .expect("a tokio runtime can be built")
        })
        .handle()
}

struct Sleep(Pin<Box<tokio::time::Sleep>>);

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl Timer for Sleep {
    fn reset(mut self: Pin<&mut Self>, at: Instant) {
        self.0.as_mut().reset(at.into());
    }
}

impl Runtime for TokioRuntime {
    fn spawn(&self, task: Task) {
        drop(self.0.spawn(task));
    }

    fn timer(&self, at: Instant) -> Pin<Box<dyn Timer>> {
        let _in_runtime = self.0.enter();
        Box::pin(Sleep(Box::pin(tokio::time::sleep_until(at.into()))))
    }

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

h2rev2_driver::binding_type! {
/// The public server on tokio: [`h2rev2_driver::Server`] (dial, stats, shutdown,
/// the proxy service... through `Deref`) plus tokio's sockets and tokio-rustls.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use h2rev2_tokio::{tls, DialerId, Server, ServerConfig};
///
/// let mut config = ServerConfig::default();
/// config.dialer.auth.add_token(DialerId::new("db")?, "s3cret");
/// let server = Server::new(config);
/// let (identity, _, _) = tls::Identity::self_signed(&["localhost".into()])?;
/// let tls = tls::server_config(identity, None)?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9090").await?;
/// tokio::spawn(server.clone().serve(listener, tls));
///
/// // Later: a byte connection to the NATed machine registered as "db".
/// let conn = server.dial(&DialerId::new("db")?).await?;
/// # drop(conn); Ok(()) }
/// ```
#[derive(Clone, Debug)]
Server(h2rev2_driver::Server)
}

impl Server {
    /// Starts the server on the current tokio runtime (see [`TokioRuntime::current`]).
    pub fn new(config: ServerConfig) -> Server {
        Server::with_runtime(config, TokioRuntime::current())
    }

    /// Starts the server on `runtime`.
    pub fn with_runtime(config: ServerConfig, runtime: TokioRuntime) -> Server {
        Server(h2rev2_driver::Server::new(config, runtime.rt()))
    }

    /// Accepts TLS connections on `listener` until shutdown: HTTP/2 (ALPN `h2`) for
    /// Listeners and Clients, HTTP/1.1 for Clients.
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
    ) -> io::Result<()> {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let which = self.config().cert_identity;
        let handshake = move |tcp: TcpStream| {
            let acceptor = acceptor.clone();
            async move {
                let tls = acceptor.accept(tcp).await?;
                let peer = TlsPeer::of(tls.get_ref().1, which);
                Ok(Accepted::tls(tls, peer))
            }
        };
        self.0.serve_with(|| accept(&listener), handshake).await
    }

    /// Accepts cleartext HTTP/2 (prior knowledge) and HTTP/1.1 connections. Only for
    /// tests and for deployments behind a TLS-terminating front proxy: opt-in.
    pub async fn serve_cleartext(self, listener: TcpListener) -> io::Result<()> {
        let handshake = |tcp: TcpStream| async move {
            // The HTTP/2 preface starts with "PRI"; bounded by the handshake timeout.
            let mut first = [0u8; 3];
            let n = tcp.peek(&mut first).await?;
            Ok(Accepted::cleartext(tcp, &first[..n]))
        };
        self.0.serve_with(|| accept(&listener), handshake).await
    }

    /// Forwards TCP connections accepted on `listener` to the Listener `id`, until
    /// shutdown: raw TCP forwarding.
    pub async fn forward_tcp(self, listener: TcpListener, id: DialerId) -> io::Result<()> {
        let next = || async {
            let (tcp, peer) = accept(&listener).await?;
            Ok((Box::new(tcp) as Box<dyn TcpClient>, peer))
        };
        self.0.forward_with(next, id).await
    }
}

async fn accept(listener: &TcpListener) -> io::Result<(TcpStream, std::net::SocketAddr)> {
    let (tcp, peer) = listener.accept().await?;
    let _ = tcp.set_nodelay(true);
    Ok((tcp, peer))
}

/// A byte stream a [`Connector`] may return: any tokio `AsyncRead + AsyncWrite`.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for T {}

type TransportFn = dyn Fn(String) -> Pin<Box<dyn Future<Output = io::Result<Box<dyn Transport>>> + Send>>
    + Send
    + Sync;

/// How a [`Listener`] reaches the public server: a transport given `host:port` (TCP
/// by default; a SOCKS or HTTP CONNECT proxy, a Unix socket...), with tokio-rustls on
/// top.
///
/// ```
/// use h2rev2_tokio::Connector;
/// // Through an HTTP CONNECT proxy, a Unix socket, ...: any tokio byte stream.
/// let c = Connector::new(|addr: String| async move {
///     let tcp = tokio::net::TcpStream::connect(addr).await?;
///     Ok(tcp)
/// });
/// # drop(c);
/// ```
#[derive(Clone)]
pub struct Connector(Arc<TransportFn>);

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Connector")
    }
}

impl Default for Connector {
    /// TCP, `TCP_NODELAY` on.
    fn default() -> Self {
        Connector::new(|addr: String| async move {
            let tcp = TcpStream::connect(addr).await?;
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        })
    }
}

impl Connector {
    /// A connector whose transport is `connect(host:port)`.
    pub fn new<F, Fut, T>(connect: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<T>> + Send + 'static,
        T: Transport,
    {
        Connector(Arc::new(move |addr| {
            let fut = connect(addr);
            Box::pin(async move { fut.await.map(|t| Box::new(t) as Box<dyn Transport>) })
        }))
    }
}

impl Connect for Connector {
    fn connect(&self, target: Target) -> ConnectFuture {
        let transport = (self.0)(target.addr.clone());
        Box::pin(async move {
            let io = transport.await?;
            let Some(tls) = target.tls else {
                return Ok(Connected {
                    io: Box::new(io),
                    alpn: None,
                });
            };
            let name = crate::tls::server_name(&target.host).map_err(io::Error::other)?;
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, io)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake failed: {e}")))?;
            let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            Ok(Connected {
                io: Box::new(stream),
                alpn,
            })
        })
    }
}

h2rev2_driver::binding_type! {
/// The NAT side on tokio: [`h2rev2_driver::Listener`] (accept, status, close...
/// through `Deref`) connected with a tokio [`Connector`].
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use h2rev2_tokio::{tls, DialerId, Listener, ListenerOptions};
///
/// let trust = tls::ServerTrust::from_pem_file("ca.pem".as_ref())?;
/// let tls = tls::client_config(trust, None, &[tls::ALPN_H2])?;
/// let mut opts = ListenerOptions::new("https://public.example:9090", DialerId::new("db")?, tls)?;
/// opts.token = Some("s3cret".into());
/// let listener = Listener::connect(opts)?;
/// loop {
///     let conn = listener.accept().await?; // AsyncRead + AsyncWrite
///     tokio::spawn(async move { /* serve HTTP or relay bytes on conn */ drop(conn) });
/// }
/// # }
/// ```
#[derive(Debug)]
Listener(h2rev2_driver::Listener)
}

impl Listener {
    /// Starts connecting to the public server over TCP + TLS, on the current tokio
    /// runtime; returns at once and keeps reconnecting in the background.
    pub fn connect(opts: ListenerOptions) -> Result<Listener, OptionsError> {
        Listener::connect_with(opts, Connector::default(), TokioRuntime::current())
    }

    /// The same through `connector` (a proxy, another socket type) on `runtime`.
    pub fn connect_with(
        opts: ListenerOptions,
        connector: Connector,
        runtime: TokioRuntime,
    ) -> Result<Listener, OptionsError> {
        h2rev2_driver::Listener::connect(opts, runtime.rt(), Arc::new(connector)).map(Listener)
    }
}
