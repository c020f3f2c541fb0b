//! [`RevConn`]: one HTTP/2 stream as a futures-io byte connection.
//!
//! All decisions (credit, coalescing, half-close, reset mapping, the order of the send
//! steps) are the core's [`h2rev2_proto::conn::Conn`]; this file only moves bytes
//! between it and h2, with an async-io timer for the flush delay.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_io::{AsyncRead, AsyncWrite};
use h2::{RecvStream, SendStream};
use h2rev2_proto::conn::{
    Conn, ConnConfig, DropAction, NO_ERROR, Read, Side, Transmit, WakeBoth, Write,
};
use smol::Timer;

use crate::spawn::Spawner;

/// A reverse connection: futures-io `AsyncRead + AsyncWrite` over one HTTP/2 stream
/// (PROTOCOL.md 5).
///
/// * Writes are coalesced ([`ConnConfig`]): a burst of small writes becomes few DATA
///   frames; `flush` sends what is buffered. A write after a quiet spell (nothing
///   sent for [`ConnConfig::flush_delay`]) goes out at once (Nagle's rule, the core's
///   [`Conn::write_nagle`]); the rest of a burst goes out after the flush delay while
///   the conn is polled (any read or write on it). End a burst with a flush before
///   waiting on something else, as with any buffered writer.
/// * `close` is a **half-close** (END_STREAM): reading goes on until the peer ends
///   too, as with `TcpStream::shutdown(Write)`.
/// * Dropping it without `close` resets the stream (`CANCEL`), so the peer never takes
///   a truncated stream for a clean end. Dropped after `close` while the peer's side
///   is still open, it lingers in the background (at most
///   [`h2rev2_proto::conn::LINGER`]) so that the last bytes and END_STREAM still go
///   out, discarding what the peer sends until it ends.
/// * A peer reset reads as `ConnectionReset` (`ConnectionRefused` for
///   `REFUSED_STREAM`).
pub struct RevConn {
    /// The stream's two halves; taken only by `Drop` (to linger).
    h2: Option<Streams>,
    state: Conn,
    timer: Option<(Timer, Instant)>,
    send_wakers: Arc<WakeBoth>,
    spawner: Spawner,
    label: String,
}

struct Streams {
    send: SendStream<Bytes>,
    recv: RecvStream,
}

const PRESENT: &str = "the stream is present until drop";

impl fmt::Debug for RevConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevConn")
            .field("label", &self.label)
            .field("stream", &self.h2.as_ref().map(|h| h.send.stream_id()))
            .finish()
    }
}

/// Maps an h2 error to the I/O error a reader or writer sees.
pub(crate) fn h2_error_to_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        return e
            .into_io()
            .unwrap_or_else(|| io::Error::other("h2 I/O error"));
    }
    let kind = match e.reason() {
        Some(r) if e.is_reset() || e.is_go_away() => {
            h2rev2_proto::conn::reset_error_kind(u32::from(r), false)
                .unwrap_or(io::ErrorKind::ConnectionReset)
        }
        _ => io::ErrorKind::ConnectionReset,
    };
    io::Error::new(kind, e)
}

impl RevConn {
    /// Wraps an HTTP/2 stream whose headers have been exchanged.
    pub(crate) fn new(
        send: SendStream<Bytes>,
        recv: RecvStream,
        config: ConnConfig,
        label: String,
        spawner: Spawner,
    ) -> Self {
        RevConn {
            h2: Some(Streams { send, recv }),
            state: Conn::new(config),
            timer: None,
            send_wakers: Arc::default(),
            spawner,
            label,
        }
    }

    /// A label for logs: the dialer id.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Carries out the core's send steps until it is idle; arms the flush timer.
    /// `Ready(Ok)` when nothing due is left unsent; `Pending` while waiting for credit.
    fn drive_send(&mut self, side: Side, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.send_wakers.register(side, cx.waker());
        let waker = Waker::from(self.send_wakers.clone());
        let cx = &mut Context::from_waker(&waker);
        let send = &mut self.h2.as_mut().expect(PRESENT).send;
        loop {
            let now = Instant::now();
            match self.state.poll_transmit(now, send.capacity()) {
                Transmit::Failed(kind) => {
                    return Poll::Ready(Err(io::Error::new(kind, "reverse connection failed")));
                }
                Transmit::Data(chunk) => {
                    if let Err(e) = send.send_data(chunk, false) {
                        return fail(&mut self.state, e);
                    }
                }
                Transmit::End => {
                    if let Err(e) = send.send_data(Bytes::new(), true) {
                        return fail(&mut self.state, e);
                    }
                    self.state.on_end_sent();
                }
                Transmit::Blocked { want } => {
                    send.reserve_capacity(want);
                    if send.capacity() > 0 {
                        continue;
                    }
                    match ready!(send.poll_capacity(cx)) {
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return fail(&mut self.state, e),
                        None => {
                            self.state.fail(io::ErrorKind::BrokenPipe);
                            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
                        }
                    }
                }
                Transmit::Idle { wake_at: None } => return Poll::Ready(Ok(())),
                Transmit::Idle { wake_at: Some(at) } => {
                    let (timer, deadline) = self.timer.get_or_insert_with(|| (Timer::at(at), at));
                    if *deadline != at {
                        timer.set_at(at);
                        *deadline = at;
                    }
                    if Pin::new(timer).poll(cx).is_ready() {
                        continue;
                    }
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }

    fn release_credit(&mut self) {
        let credit = self.state.take_credit();
        if credit > 0 {
            // Fails only when the stream is gone, which the next read reports.
            let recv = &mut self.h2.as_mut().expect(PRESENT).recv;
            let _ = recv.flow_control().release_capacity(credit);
        }
    }
}

impl AsyncRead for RevConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Reading also services the write side's flush timer, so a writer that forgets
        // to flush before waiting for an answer is not stuck.
        let _ = this.drive_send(Side::Reader, cx);
        loop {
            match this.state.read(buf) {
                Read::Data(n) => {
                    this.release_credit();
                    return Poll::Ready(Ok(n));
                }
                Read::Eof => return Poll::Ready(Ok(0)),
                Read::Error(kind) => {
                    return Poll::Ready(Err(io::Error::new(kind, "reverse connection reset")));
                }
                Read::Pending => {}
            }
            match ready!(this.h2.as_mut().expect(PRESENT).recv.poll_data(cx)) {
                Some(Ok(data)) => this.state.on_data(data),
                Some(Err(e)) => match e.reason() {
                    Some(r) if e.is_reset() => this.state.on_reset(u32::from(r)),
                    _ => this.state.fail(h2_error_to_io(e).kind()),
                },
                None => this.state.on_end(),
            }
        }
    }
}

impl AsyncWrite for RevConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            // Nagle's rule (the core's): a write after a quiet spell goes out at once.
            match this.state.write_nagle(Instant::now(), buf) {
                Write::Accepted(n) => {
                    // Best effort: errors surface on the next call.
                    let _ = this.drive_send(Side::Writer, cx);
                    return Poll::Ready(Ok(n));
                }
                Write::Full => {
                    ready!(this.drive_send(Side::Writer, cx))?;
                    if !this.state.writable() {
                        // Everything due was handed over but the buffer is still full:
                        // make it all due and wait for credit.
                        this.state.flush();
                        ready!(this.drive_send(Side::Writer, cx))?;
                    }
                }
                Write::Error(kind) => {
                    return Poll::Ready(Err(io::Error::new(kind, "reverse connection closed")));
                }
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let now = Instant::now();
        let mut total = 0;
        for (i, b) in bufs.iter().filter(|b| !b.is_empty()).enumerate() {
            let w = if i == 0 {
                this.state.write_nagle(now, b)
            } else {
                this.state.write(now, b)
            };
            match w {
                Write::Accepted(n) => {
                    total += n;
                    if n < b.len() {
                        break;
                    }
                }
                Write::Full | Write::Error(_) => break,
            }
        }
        if total > 0 {
            let _ = this.drive_send(Side::Writer, cx);
            return Poll::Ready(Ok(total));
        }
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &**b);
        Pin::new(this).poll_write(cx, first)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.state.flush();
        this.drive_send(Side::Writer, cx)
    }

    /// Half-close: sends what is buffered, then END_STREAM. Reading goes on.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.state.shutdown();
        this.drive_send(Side::Writer, cx)
    }
}

fn fail(state: &mut Conn, e: h2::Error) -> Poll<io::Result<()>> {
    let e = h2_error_to_io(e);
    state.fail(e.kind());
    Poll::Ready(Err(e))
}

impl Drop for RevConn {
    fn drop(&mut self) {
        let Some(Streams { mut send, recv }) = self.h2.take() else {
            return;
        };
        // The core decides (PROTOCOL.md 5): an abort without a clean close; after a
        // clean close with the peer still sending, linger so that what is queued
        // still goes out (h2 discards it when a half-open stream is dropped).
        match self.state.on_drop() {
            DropAction::Nothing => {}
            DropAction::Reset(code) => send.send_reset(h2::Reason::from(code)),
            DropAction::Linger { max } => self.spawner.spawn(linger(send, recv, max)),
        }
    }
}

/// Keeps a cleanly closed stream until the peer ends it too, discarding what it
/// still sends (and returning the credit), for at most `max`; then ends it with
/// `RST_STREAM(NO_ERROR)`.
async fn linger(mut send: SendStream<Bytes>, mut recv: RecvStream, max: Duration) {
    let drained = async {
        while let Some(Ok(data)) = recv.data().await {
            let _ = recv.flow_control().release_capacity(data.len());
        }
    };
    if crate::settings::timeout(max, drained).await.is_none() {
        send.send_reset(h2::Reason::from(NO_ERROR));
    }
}
