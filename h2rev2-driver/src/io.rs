//! Byte streams under HTTP/2, and how a Listener reaches the public server.
//!
//! h2 is written against tokio's I/O traits (runtime-agnostic traits: no tokio runtime
//! is needed to use them). A binding hands the drivers its sockets and TLS streams as
//! [`BoxIo`]: tokio's as they are, futures-io ones through `tokio_util::compat`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream HTTP/2 can run over (tokio's I/O traits).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A boxed [`Io`].
pub type BoxIo = Box<dyn Io>;

/// A borrowed byte stream with tokio's I/O traits: a Listener's transport while an
/// outbound proxy's handshake runs on it, before TLS (see [`crate::outbound`]).
pub trait IoMut: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + ?Sized> IoMut for T {}

/// Where a Listener connects: the public server's address and, unless cleartext,
/// the TLS settings to use.
#[derive(Clone, Debug)]
pub struct Target {
    /// `host:port`.
    pub addr: String,
    /// The host, as the TLS server name.
    pub host: String,
    /// TLS client settings (ALPN must offer `h2`); `None` for cleartext HTTP/2.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// A connection made by a [`Connect`].
pub struct Connected {
    /// The byte stream, TLS done when the target asked for it.
    pub io: BoxIo,
    /// The ALPN protocol TLS negotiated (`None` in cleartext).
    pub alpn: Option<Vec<u8>>,
}

/// The future of [`Connect::connect`].
pub type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<Connected>> + Send>>;

/// How a Listener opens its connection to the public server: a transport (TCP, a
/// SOCKS or HTTP CONNECT proxy, a Unix socket...) and TLS on top. The runtime
/// bindings provide one over their sockets and TLS crate, with a replaceable
/// transport.
pub trait Connect: Send + Sync + 'static {
    /// Connects to `target`.
    fn connect(&self, target: Target) -> ConnectFuture;
}

/// A Client's connection accepted for TCP forwarding: a byte stream that can also be
/// aborted, so that a reverse connection that broke mid-stream reaches the Client as
/// a reset (RST), never as a clean end (FIN) it could take for the whole stream.
pub trait TcpClient: Io {
    /// Makes the coming close a reset (`SO_LINGER` 0).
    fn abort(&self);

    /// A second handle on the socket ([`AbortHandle`]), for [`TcpClient::abort`]
    /// once the connection was split into halves; `None` where there is none.
    fn abort_handle(&self) -> AbortHandle {
        AbortHandle(None)
    }
}

/// A second file descriptor of a [`TcpClient`]'s socket: [`AbortHandle::abort`]
/// makes the socket's close a reset after the client itself was moved away. The
/// socket closes when both are dropped.
pub struct AbortHandle(
    #[cfg(unix)] Option<std::os::fd::OwnedFd>,
    #[cfg(not(unix))] Option<()>,
);

impl AbortHandle {
    /// The handle of `tcp`'s socket.
    pub(crate) fn of(tcp: &dyn TcpClient) -> Self {
        tcp.abort_handle()
    }

    /// Makes the socket's coming close a reset (`SO_LINGER` 0).
    pub fn abort(&self) {
        #[cfg(unix)]
        if let Some(fd) = &self.0 {
            let _ = socket2::SockRef::from(fd).set_linger(Some(std::time::Duration::ZERO));
        }
    }
}

/// Any socket with a file descriptor (tokio's and smol's `TcpStream`, and wrappers
/// that expose theirs).
#[cfg(unix)]
impl<T: Io + std::os::fd::AsFd> TcpClient for T {
    fn abort(&self) {
        let _ = socket2::SockRef::from(self).set_linger(Some(std::time::Duration::ZERO));
    }

    fn abort_handle(&self) -> AbortHandle {
        AbortHandle(self.as_fd().try_clone_to_owned().ok())
    }
}
