//! Byte relay between two connections, with half-close passed through.

use std::io;

use tokio::io::{AsyncRead, AsyncWrite};

/// Copies both ways until both sides ended; a shutdown on one side becomes a shutdown
/// (END_STREAM or FIN) on the other. Returns the bytes copied (a to b, b to a).
pub async fn relay<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    tokio::io::copy_bidirectional_with_sizes(a, b, 16 << 10, 16 << 10).await
}
