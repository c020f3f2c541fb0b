//! The tokio binding: tokio as the drivers' [`Runtime`], tokio sockets and
//! tokio-rustls, and the public types in tokio's idiom.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use h2rev2_driver::runtime::{Rt, Runtime, Task, Timer};
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

/// A byte stream a [`Connector`] may return: any tokio `AsyncRead + AsyncWrite`.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for T {}

/// How a [`Listener`] reaches the public server: a transport given `host:port` (TCP
/// by default; a Unix socket...), with tokio-rustls on top. For an outbound HTTP
/// CONNECT or SOCKS5 proxy, add [`crate::outbound::ProxyRules`] with `.via(rules)`.
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
pub type Connector = h2rev2_driver::Connector<TokioRuntime>;

// tokio's sockets and tokio-rustls under the drivers; its streams need no bridge to h2.
h2rev2_driver::impl_stack! {
    TokioRuntime = TokioRuntime::current();
    sockets: TcpListener, TcpStream;
    tls: tokio_rustls::TlsAcceptor, tokio_rustls::TlsConnector;
    transport: Transport, io: direct;
}

fn direct<T>(io: T, _cleartext: bool) -> T {
    io
}

h2rev2_driver::binding_types! {
    stack: TokioRuntime, tcp_listener: TcpListener,
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
    Server,
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
    Listener,
}
