//! What a runtime binding provides besides its [`Runtime`]: sockets and a TLS crate.
//!
//! A binding implements [`Stack`] once (tokio's sockets and tokio-rustls, or smol's and
//! futures-rustls) and gets everything built on it from here: the TLS and cleartext
//! accept loops, TCP forwarding, the Listener's [`Connector`] with a replaceable
//! transport, and its public `Server`/`Listener` types through [`binding_types!`].
//! tokio and smol have the same socket and TLS APIs under other names (`accept`,
//! `peek`, `connect`, `set_nodelay`; tokio-rustls and futures-rustls), so
//! [`impl_stack!`] writes the [`Stack`] impl once from the names; a binding for a
//! runtime with other APIs implements [`Stack`] by hand.

use std::fmt;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use h2rev2_proto::wire::DialerId;

use crate::identity::CertIdentity;
use crate::io::{BoxIo, Connect, ConnectFuture, Connected, IoMut, Target, TcpClient};
use crate::outbound::{self, ProxyRules, Route};
use crate::runtime::Runtime;
use crate::server::{Accepted, Server};

/// A boxed future that the stack's methods return where a trait object is needed.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A runtime's sockets and TLS crate, as the drivers use them.
pub trait Stack: Runtime + Clone + Sized {
    /// The runtime's TCP listener.
    type TcpListener: Send + Sync;
    /// A TCP socket it accepted.
    type Tcp: Send + 'static;
    /// What a Listener's transport returns: the runtime's byte-stream trait, boxed
    /// (`dyn` tokio `AsyncRead + AsyncWrite`, or the futures-io pair).
    type Transport: ?Sized + Send + 'static;

    /// The runtime to use when the caller names none.
    fn current() -> Self;

    /// Accepts a TCP connection, `TCP_NODELAY` on.
    fn accept(
        listener: &Self::TcpListener,
    ) -> impl Future<Output = io::Result<(Self::Tcp, SocketAddr)>>;

    /// Peeks at the first bytes of `tcp` without consuming them.
    fn peek(tcp: &Self::Tcp, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>> + Send;

    /// `tcp` as a byte stream h2 can run over, which can also be aborted.
    fn plain(tcp: Self::Tcp) -> Box<dyn TcpClient>;

    /// The server side of a TLS handshake on `tcp`.
    fn tls_accept(
        tcp: Self::Tcp,
        config: Arc<rustls::ServerConfig>,
        which: CertIdentity,
    ) -> impl Future<Output = io::Result<Accepted>> + Send + 'static;

    /// A TCP connection to `host:port`, `TCP_NODELAY` on: the default transport.
    fn tcp_connect(addr: String) -> BoxFuture<io::Result<Box<Self::Transport>>>;

    /// A transport as a byte stream h2 can run over (cleartext HTTP/2).
    fn transport_io(io: Box<Self::Transport>) -> BoxIo;

    /// A transport borrowed with tokio's I/O traits, for an outbound proxy's
    /// handshake before TLS.
    fn transport_mut(io: &mut Self::Transport) -> Box<dyn IoMut + '_>;

    /// The client side of a TLS handshake on `io`; the stream and the negotiated ALPN.
    fn tls_connect(
        io: Box<Self::Transport>,
        name: rustls::pki_types::ServerName<'static>,
        config: Arc<rustls::ClientConfig>,
    ) -> BoxFuture<io::Result<(BoxIo, Option<Vec<u8>>)>>;
}

/// `X` is one of the stack's transports: how a user's stream becomes a
/// [`Stack::Transport`] (an unsizing box, implemented by the binding for every type
/// with its byte-stream traits).
pub trait Boxes<X>: Stack {
    /// Boxes `x`.
    fn boxed(x: X) -> Box<Self::Transport>;
}

type OpenFn<T> = dyn Fn(String) -> BoxFuture<io::Result<Box<T>>> + Send + Sync;

/// How a Listener reaches the public server: a transport given `host:port` (TCP by
/// default; a Unix socket...), optionally through an outbound HTTP CONNECT or SOCKS5
/// proxy ([`Connector::via`]), with the stack's TLS on top. Each binding names it
/// `Connector`.
pub struct Connector<S: Stack> {
    open: Arc<OpenFn<S::Transport>>,
    proxy: Option<Arc<ProxyRules>>,
    stack: PhantomData<fn() -> S>,
}

impl<S: Stack> Connector<S> {
    /// A connector whose transport is `connect(host:port)`.
    pub fn new<F, Fut, X>(connect: F) -> Self
    where
        S: Boxes<X>,
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<X>> + Send + 'static,
    {
        Connector::from_fn(move |addr| {
            let fut = connect(addr);
            Box::pin(async move { fut.await.map(S::boxed) })
        })
    }

    /// TCP with the runtime's sockets, `TCP_NODELAY` on (the default).
    pub fn tcp() -> Self {
        Connector::from_fn(S::tcp_connect)
    }

    fn from_fn(
        open: impl Fn(String) -> BoxFuture<io::Result<Box<S::Transport>>> + Send + Sync + 'static,
    ) -> Self {
        Connector {
            open: Arc::new(open),
            proxy: None,
            stack: PhantomData,
        }
    }

    /// The same connector through the outbound proxy that `rules` name for the
    /// public server (none when they name none, or `NO_PROXY` exempts it): the
    /// transport reaches the proxy, the proxy's handshake (HTTP CONNECT or SOCKS5)
    /// runs on it, and TLS runs on the tunnel under the public server's name, which is
    /// the name verified. The Listener's `connect_timeout` bounds it all.
    pub fn via(mut self, rules: ProxyRules) -> Self {
        self.proxy = Some(Arc::new(rules));
        self
    }

    /// The outbound proxy rules set with [`Connector::via`].
    pub fn proxy_rules(&self) -> Option<&ProxyRules> {
        self.proxy.as_deref()
    }
}

impl<S: Stack> Clone for Connector<S> {
    fn clone(&self) -> Self {
        Connector {
            open: self.open.clone(),
            proxy: self.proxy.clone(),
            stack: PhantomData,
        }
    }
}

impl<S: Stack> Default for Connector<S> {
    fn default() -> Self {
        Connector::tcp()
    }
}

impl<S: Stack> fmt::Debug for Connector<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("proxy", &self.proxy)
            .finish_non_exhaustive()
    }
}

impl<S: Stack> Connect for Connector<S> {
    fn connect(&self, target: Target) -> ConnectFuture {
        let open = self.open.clone();
        let rules = self.proxy.clone();
        Box::pin(async move {
            let port = outbound::port_of(&target.addr).unwrap_or(443);
            let route = match &rules {
                Some(r) => r.route(&target.host, port),
                None => Route::Direct,
            };
            let (io, early) = match route {
                Route::Direct => (open(target.addr.clone()).await?, Vec::new()),
                Route::Bypass(entry) => {
                    tracing::debug!("NO_PROXY entry {entry:?}: {} reached directly", target.addr);
                    (open(target.addr.clone()).await?, Vec::new())
                }
                Route::Proxy(proxy) => {
                    tracing::debug!("connecting to {} through {proxy}", target.addr);
                    let mut io = open(proxy.addr()).await.map_err(|e| {
                        io::Error::new(e.kind(), format!("cannot reach {proxy}: {e}"))
                    })?;
                    let early = outbound::handshake(
                        &mut *S::transport_mut(&mut io),
                        proxy,
                        &target.host,
                        port,
                    )
                    .await?;
                    (io, early)
                }
            };
            let Some(tls) = target.tls else {
                let mut io = S::transport_io(io);
                if !early.is_empty() {
                    io = Box::new(outbound::Prefixed::new(early, io));
                }
                return Ok(Connected { io, alpn: None });
            };
            if !early.is_empty() {
                // A TLS server speaks only once spoken to: these bytes are no server's.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the proxy sent {} bytes after its CONNECT answer, before TLS started",
                        early.len()
                    ),
                ));
            }
            let name = h2rev2_tls::server_name(&target.host).map_err(io::Error::other)?;
            let (io, alpn) = S::tls_connect(io, name, tls)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake failed: {e}")))?;
            Ok(Connected { io, alpn })
        })
    }
}

impl Server {
    /// Accepts TLS connections on `listener` until shutdown: HTTP/2 (ALPN `h2`) for
    /// Listeners and Clients, HTTP/1.1 for Clients; client certificates verified by
    /// rustls are passed on (ids bound to certificates).
    pub async fn serve_on<S: Stack>(
        &self,
        listener: S::TcpListener,
        tls: Arc<rustls::ServerConfig>,
    ) -> io::Result<()> {
        let running = AcceptLoop::new(self);
        let which = self.config().cert_identity;
        let handshake = move |tcp| S::tls_accept(tcp, tls.clone(), which);
        let result = self.serve_with(|| S::accept(&listener), handshake).await;
        running.close(listener);
        result
    }

    /// Accepts cleartext HTTP/2 (prior knowledge) and HTTP/1.1 connections.
    pub async fn serve_cleartext_on<S: Stack>(&self, listener: S::TcpListener) -> io::Result<()> {
        let running = AcceptLoop::new(self);
        let handshake = |tcp: S::Tcp| async move {
            // The HTTP/2 preface starts with "PRI"; bounded by the handshake timeout.
            let mut first = [0u8; 3];
            let n = S::peek(&tcp, &mut first).await?;
            Ok(Accepted::cleartext(S::plain(tcp), &first[..n]))
        };
        let result = self.serve_with(|| S::accept(&listener), handshake).await;
        running.close(listener);
        result
    }

    /// Forwards TCP connections accepted on `listener` to the Listener `id`.
    pub async fn forward_tcp_on<S: Stack>(
        &self,
        listener: S::TcpListener,
        id: DialerId,
    ) -> io::Result<()> {
        let running = AcceptLoop::new(self);
        let next = || async {
            let (tcp, peer) = S::accept(&listener).await?;
            Ok((S::plain(tcp), peer))
        };
        let result = self.forward_with(next, id).await;
        running.close(listener);
        result
    }
}

/// One running accept loop, counted until its socket is closed.
struct AcceptLoop(Server);

impl AcceptLoop {
    fn new(server: &Server) -> Self {
        server.inner.accept_loops.fetch_add(1, Relaxed);
        AcceptLoop(server.clone())
    }

    /// Closes the loop's socket, then stops counting it.
    fn close<L>(self, listener: L) {
        drop(listener);
    }
}

impl Drop for AcceptLoop {
    fn drop(&mut self) {
        self.0.inner.accept_loops.fetch_sub(1, Relaxed);
    }
}

/// Defines a binding's public `Server` and `Listener`: the shared driver's types with
/// the binding's [`Stack`] (`$rt`) and TCP listener type filled in. `Server` and
/// `Listener` reach the driver's methods through `Deref`.
#[macro_export]
macro_rules! binding_types {
    (
        stack: $rt:ty, tcp_listener: $tcp:ty,
        $(#[$sdoc:meta])* Server,
        $(#[$ldoc:meta])* Listener $(,)?
    ) => {
        $crate::binding_type! {
            $(#[$sdoc])*
            #[derive(Clone, Debug)]
            Server($crate::Server)
        }

        impl Server {
            /// Starts the server on the binding's default runtime.
            pub fn new(config: $crate::ServerConfig) -> Server {
                Server::with_runtime(config, <$rt as $crate::stack::Stack>::current())
            }

            /// Starts the server, its tasks on `runtime`.
            pub fn with_runtime(config: $crate::ServerConfig, runtime: $rt) -> Server {
                Server($crate::Server::new(config, $crate::Rt::new(runtime)))
            }

            /// Accepts TLS connections on `listener` until shutdown: HTTP/2 (ALPN
            /// `h2`) for Listeners and Clients, HTTP/1.1 for Clients. Client
            /// certificates are verified by rustls and their identities passed on.
            pub async fn serve(
                self,
                listener: $tcp,
                tls: ::std::sync::Arc<$crate::rustls::ServerConfig>,
            ) -> ::std::io::Result<()> {
                self.0.serve_on::<$rt>(listener, tls).await
            }

            /// Accepts cleartext HTTP/2 (prior knowledge) and HTTP/1.1 connections.
            /// Only for tests and for deployments behind a TLS-terminating front
            /// proxy: opt-in.
            pub async fn serve_cleartext(self, listener: $tcp) -> ::std::io::Result<()> {
                self.0.serve_cleartext_on::<$rt>(listener).await
            }

            /// Forwards TCP connections accepted on `listener` to the Listener `id`,
            /// until shutdown: raw TCP forwarding.
            pub async fn forward_tcp(
                self,
                listener: $tcp,
                id: $crate::proto::wire::DialerId,
            ) -> ::std::io::Result<()> {
                self.0.forward_tcp_on::<$rt>(listener, id).await
            }
        }

        $crate::binding_type! {
            $(#[$ldoc])*
            #[derive(Debug)]
            Listener($crate::Listener)
        }

        impl Listener {
            /// Starts connecting to the public server over TCP + TLS on the binding's
            /// default runtime; returns at once and keeps reconnecting in the
            /// background.
            pub fn connect(
                opts: $crate::ListenerOptions,
            ) -> ::std::result::Result<Listener, $crate::OptionsError> {
                let rt = <$rt as $crate::stack::Stack>::current();
                Listener::connect_with(opts, $crate::stack::Connector::default(), rt)
            }

            /// The same through `connector` (a proxy, another socket type), its tasks
            /// on `runtime`.
            pub fn connect_with(
                opts: $crate::ListenerOptions,
                connector: $crate::stack::Connector<$rt>,
                runtime: $rt,
            ) -> ::std::result::Result<Listener, $crate::OptionsError> {
                let rt = $crate::Rt::new(runtime);
                $crate::Listener::connect(opts, rt, ::std::sync::Arc::new(connector)).map(Listener)
            }
        }
    };
}

/// Implements [`Stack`] for a runtime whose sockets and TLS crate have tokio's and
/// smol's API (`accept`, `peek`, `connect`, `set_nodelay`; tokio-rustls' and
/// futures-rustls' `TlsAcceptor`/`TlsConnector`), given their names: the runtime type
/// and its default, the listener, stream, TLS acceptor and connector types, the
/// binding's transport trait, and `io(stream, cleartext) -> impl Io` bridging its
/// streams to h2 (the identity for tokio).
#[macro_export]
macro_rules! impl_stack {
    (
        $rt:ty = $current:expr;
        sockets: $listener:ty, $tcp:ty;
        tls: $acceptor:ty, $connector:ty;
        transport: $transport:ident, io: $io:path $(;)?
    ) => {
        impl $crate::stack::Stack for $rt {
            type TcpListener = $listener;
            type Tcp = $tcp;
            type Transport = dyn $transport;

            fn current() -> Self {
                $current
            }

            async fn accept(
                listener: &$listener,
            ) -> ::std::io::Result<($tcp, ::std::net::SocketAddr)> {
                let (tcp, peer) = listener.accept().await?;
                let _ = tcp.set_nodelay(true);
                Ok((tcp, peer))
            }

            fn peek(
                tcp: &$tcp,
                buf: &mut [u8],
            ) -> impl ::std::future::Future<Output = ::std::io::Result<usize>> + Send {
                tcp.peek(buf)
            }

            fn plain(tcp: $tcp) -> Box<dyn $crate::io::TcpClient> {
                Box::new($io(tcp, true))
            }

            async fn tls_accept(
                tcp: $tcp,
                config: ::std::sync::Arc<$crate::rustls::ServerConfig>,
                which: $crate::CertIdentity,
            ) -> ::std::io::Result<$crate::Accepted> {
                let tls = <$acceptor>::from(config).accept(tcp).await?;
                let peer = $crate::TlsPeer::of(tls.get_ref().1, which);
                Ok($crate::Accepted::tls($io(tls, false), peer))
            }

            fn tcp_connect(
                addr: String,
            ) -> $crate::stack::BoxFuture<::std::io::Result<Box<dyn $transport>>> {
                Box::pin(async move {
                    let tcp = <$tcp>::connect(addr.as_str()).await?;
                    let _ = tcp.set_nodelay(true);
                    Ok(Box::new(tcp) as Box<dyn $transport>)
                })
            }

            fn transport_io(io: Box<dyn $transport>) -> $crate::BoxIo {
                Box::new($io(io, true))
            }

            fn transport_mut(io: &mut Self::Transport) -> Box<dyn $crate::io::IoMut + '_> {
                Box::new($io(io, true))
            }

            fn tls_connect(
                io: Box<dyn $transport>,
                name: $crate::rustls::pki_types::ServerName<'static>,
                config: ::std::sync::Arc<$crate::rustls::ClientConfig>,
            ) -> $crate::stack::BoxFuture<::std::io::Result<($crate::BoxIo, Option<Vec<u8>>)>> {
                Box::pin(async move {
                    let tls = <$connector>::from(config).connect(name, io).await?;
                    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                    Ok((Box::new($io(tls, false)) as $crate::BoxIo, alpn))
                })
            }
        }

        impl<T: $transport> $crate::stack::Boxes<T> for $rt {
            fn boxed(x: T) -> Box<dyn $transport> {
                Box::new(x)
            }
        }
    };
}
