//! Byte transports under HTTP/2: how a Listener connects (futures-io transport plus
//! futures-rustls), and the bridge from futures-io to the tokio I/O traits that h2 is
//! written against.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_io::{AsyncRead, AsyncWrite};
use h2rev2_driver::io::{Connect, ConnectFuture, Connected, Target};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

/// A byte stream HTTP/2 can run over: any futures-io `AsyncRead + AsyncWrite`
/// (smol's and async-std's `TcpStream`, a TLS stream, a Unix socket...).
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {}

/// A boxed [`Transport`].
pub type BoxTransport = Box<dyn Transport>;

type ConnectFn =
    dyn Fn(String) -> Pin<Box<dyn Future<Output = io::Result<BoxTransport>> + Send>> + Send + Sync;

/// How a Listener opens its connection to the public server, given `host:port`.
///
/// The default is [`Connector::tcp`]. Give your own to use another runtime's sockets,
/// a SOCKS or HTTP CONNECT proxy, or a Unix socket; TLS (futures-rustls) is added on
/// top. Vectored writes are passed through in cleartext only (see the crate docs).
///
/// ```
/// use h2rev2_smol::Connector;
/// // Any futures-io stream works: async-std's sockets instead of smol's, say.
/// let c = Connector::new(|addr: String| async_std::net::TcpStream::connect(addr));
/// # drop(c);
/// ```
#[derive(Clone)]
pub struct Connector(Arc<ConnectFn>);

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Connector")
    }
}

impl Default for Connector {
    fn default() -> Self {
        Connector::tcp()
    }
}

impl Connector {
    /// TCP with smol's (async-io's) sockets, `TCP_NODELAY` on.
    pub fn tcp() -> Self {
        Connector::new(|addr: String| async move {
            let tcp = smol::net::TcpStream::connect(addr.as_str()).await?;
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        })
    }

    /// A connector calling `connect` with `host:port`.
    pub fn new<F, Fut, T>(connect: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<T>> + Send + 'static,
        T: Transport,
    {
        Connector(Arc::new(move |addr| {
            let fut = connect(addr);
            Box::pin(async move { fut.await.map(|t| Box::new(t) as BoxTransport) })
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
                    io: Box::new(H2Io::new(io, true)),
                    alpn: None,
                });
            };
            let name = crate::tls::server_name(&target.host).map_err(io::Error::other)?;
            let stream = futures_rustls::TlsConnector::from(tls)
                .connect(name, io)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake failed: {e}")))?;
            let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            Ok(Connected {
                io: Box::new(H2Io::new(stream, false)),
                alpn,
            })
        })
    }
}

/// A futures-io stream seen through tokio's I/O traits, for h2: `tokio_util::compat`,
/// plus vectored writes passed through when `vectored` (compat writes only the first
/// slice of a vectored write, so h2 would send each frame header apart from its
/// payload; through TLS that is one more record and one more write per DATA frame).
pub(crate) struct H2Io<T> {
    inner: Compat<T>,
    vectored: bool,
}

impl<T: AsyncRead + AsyncWrite + Unpin> H2Io<T> {
    pub(crate) fn new(io: T, vectored: bool) -> Self {
        H2Io {
            inner: io.compat(),
            vectored,
        }
    }
}

/// The socket under it, for aborting a forwarded Client's connection (a reset).
#[cfg(unix)]
impl<T: std::os::fd::AsFd> std::os::fd::AsFd for H2Io<T> {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inner.get_ref().as_fd()
    }
}

impl<T: AsyncRead + Unpin> tokio::io::AsyncRead for H2Io<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> tokio::io::AsyncWrite for H2Io<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.vectored {
            Pin::new(this.inner.get_mut()).poll_write_vectored(cx, bufs)
        } else {
            Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.vectored
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
