//! Byte relay between two futures-io connections, with half-close passed through.

use std::io;

use futures_io::{AsyncRead, AsyncWrite};

use crate::io::H2Io;

/// Copies both ways until both sides ended; the end of one side's bytes becomes a
/// `close` of the other's write side: END_STREAM on a [`crate::RevConn`], FIN on
/// smol's (async-net's) `TcpStream`. Returns the bytes copied (a to b, b to a).
///
/// `close` is all futures-io offers, and not every type half-closes on it:
/// async-io's `Async<TcpStream>` and async-std's `TcpStream` only flush, so their
/// peer would never see the end. Wrap such a stream so that `poll_close` calls
/// `shutdown(Shutdown::Write)` (tests/async_std.rs shows one).
///
/// For exposing a local TCP service through the tunnel:
///
/// ```no_run
/// # async fn run(listener: h2rev2_smol::Listener) -> std::io::Result<()> {
/// loop {
///     let conn = listener.accept().await?;
///     smol::spawn(async move {
///         let tcp = smol::net::TcpStream::connect("127.0.0.1:5432").await?;
///         h2rev2_smol::relay(conn, tcp).await
///     })
///     .detach();
/// }
/// # }
/// ```
pub async fn relay<A, B>(a: A, b: B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    // The driver's relay, through the same futures-io bridge h2 runs over: its
    // shutdowns are futures-io `close`s.
    h2rev2_driver::relay(&mut H2Io::new(a, false), &mut H2Io::new(b, false)).await
}
