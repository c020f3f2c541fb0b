//! Byte transports under HTTP/2: the futures-io transports a Listener may use, and the
//! bridge from futures-io to the tokio I/O traits that h2 is written against.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_io::{AsyncRead, AsyncWrite};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

/// A byte stream HTTP/2 can run over: any futures-io `AsyncRead + AsyncWrite`
/// (smol's and async-std's `TcpStream`, a TLS stream, a Unix socket...).
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {}

/// A boxed [`Transport`].
pub type BoxTransport = Box<dyn Transport>;

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
