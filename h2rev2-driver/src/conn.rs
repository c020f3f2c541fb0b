//! [`RevConn`]: one HTTP/2 stream as a byte connection, with both tokio's and
//! futures-io's `AsyncRead + AsyncWrite`.
//!
//! All decisions (credit, coalescing, half-close, reset mapping, the send order) are
//! the core's [`h2rev2_proto::conn::Conn`]; this file only moves bytes between it and
//! h2, with the [`Rt`]'s timer for the flush delay.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll, Waker, ready};

use bytes::Bytes;
use h2::{RecvStream, SendStream};
use h2rev2_proto::conn::{Conn, ConnConfig, DropAction, NO_ERROR, Read, Transmit, Write};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::Metrics;
use crate::runtime::{Rt, Timer};
use crate::wake::{Side, WakeBoth};

/// A reverse connection: `AsyncRead + AsyncWrite` over one HTTP/2 stream, as tokio's
/// I/O traits and as futures-io's (import the extension traits of the one you use).
///
/// * Writes are coalesced ([`ConnConfig`]); `flush` sends what is buffered. A write
///   after a quiet spell (nothing sent for [`ConnConfig::flush_delay`]) goes out at
///   once; later writes of a burst wait up to the flush delay, and go out then only
///   while the conn is polled (a pending read, write or flush on it, as in hyper,
///   `tokio::io::copy` or a request/response exchange): end a burst with a flush
///   before waiting on something else, as with a `BufWriter`.
/// * `shutdown` (futures-io: `close`) half-closes (END_STREAM); reading goes on until
///   the peer ends too.
/// * Dropping without `shutdown` resets the stream (`CANCEL`). Dropping after
///   `shutdown` still delivers what is queued: while the peer's side is open the
///   stream lingers in a task (at most [`h2rev2_proto::conn::LINGER`]) until the peer
///   ends or resets it.
/// * A peer reset reads as `ConnectionReset`.
pub struct RevConn {
    /// The stream's halves; `None` only once `Drop` took them (to linger).
    send: Option<SendStream<Bytes>>,
    recv: Option<RecvStream>,
    state: Conn,
    rt: Rt,
    /// The flush-delay timer, made on first use.
    timer: Option<FlushTimer>,
    /// Registered with h2 for send progress: wakes both a pending reader and writer.
    send_wakers: Arc<WakeBoth>,
    label: String,
    metrics: Option<Arc<Metrics>>,
    /// Counts this conn on its tunnel while it lives (the public side's).
    slot: Option<crate::tunnel::ConnSlot>,
    /// Told once the stream is used: its first byte (or its end) arrived, or the conn
    /// was dropped (a 2022-wire Listener replaces its spares so).
    used: Option<tokio::sync::oneshot::Sender<()>>,
}

/// A conn's flush-delay timer: its deadline, and whether it fired at that deadline.
struct FlushTimer {
    timer: Pin<Box<dyn Timer>>,
    deadline: std::time::Instant,
    fired: bool,
}

impl fmt::Debug for RevConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevConn")
            .field("label", &self.label)
            .field("stream", &self.send.as_ref().map(|s| s.stream_id()))
            .finish()
    }
}

fn h2_error_to_io(e: h2::Error) -> io::Error {
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
    /// Wraps an HTTP/2 stream whose headers have been exchanged; `rt` runs its flush
    /// timer and, after a clean close, its linger.
    pub fn new(
        send: SendStream<Bytes>,
        recv: RecvStream,
        config: ConnConfig,
        label: String,
        rt: Rt,
    ) -> Self {
        RevConn {
            send: Some(send),
            recv: Some(recv),
            state: Conn::new(config),
            rt,
            timer: None,
            send_wakers: Arc::default(),
            label,
            metrics: None,
            slot: None,
            used: None,
        }
    }

    /// Tells `used` once the stream is used: its first byte or its end arrives, or the
    /// conn is dropped.
    pub(crate) fn with_used_signal(mut self, used: tokio::sync::oneshot::Sender<()>) -> Self {
        self.used = Some(used);
        self
    }

    /// Counts this conn's bytes and life in `metrics`.
    pub(crate) fn with_metrics(mut self, metrics: Arc<Metrics>, _public: bool) -> Self {
        metrics.open_conns.fetch_add(1, Relaxed);
        self.metrics = Some(metrics);
        self
    }

    /// Counts this conn among its tunnel's open conns until it is dropped.
    /// Its receive flow control is registered with the tunnel, which makes h2 look
    /// again for a window update owed after the stream window shrinks.
    pub(crate) fn with_slot(mut self, mut slot: crate::tunnel::ConnSlot) -> Self {
        slot.watch_flow(self.recv_stream().flow_control().clone());
        self.slot = Some(slot);
        self
    }

    /// A label for logs: the dialer id and the stream.
    pub fn label(&self) -> &str {
        &self.label
    }

    fn send_stream(&mut self) -> &mut SendStream<Bytes> {
        self.send.as_mut().expect("the stream lives until drop")
    }

    fn recv_stream(&mut self) -> &mut RecvStream {
        self.recv.as_mut().expect("the stream lives until drop")
    }

    fn now(&self) -> std::time::Instant {
        self.rt.now()
    }

    /// Carries out the core's send steps until it is idle; arms the flush timer.
    /// `Ready(Ok)` when nothing due is left unsent; `Pending` while waiting for credit.
    fn drive_send(&mut self, side: Side, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.send_wakers.register(side, cx.waker());
        let waker = Waker::from(self.send_wakers.clone());
        let cx = &mut Context::from_waker(&waker);
        loop {
            let now = self.now();
            let capacity = self.send_stream().capacity();
            let result = match self.state.poll_transmit(now, capacity) {
                Transmit::Failed(kind) => {
                    return Poll::Ready(Err(io::Error::new(kind, "reverse connection failed")));
                }
                Transmit::Data(chunk) => self.send_stream().send_data(chunk, false),
                Transmit::End => {
                    let r = self.send_stream().send_data(Bytes::new(), true);
                    if r.is_ok() {
                        self.state.on_end_sent();
                    }
                    r
                }
                Transmit::Blocked { want } => {
                    let send = self.send_stream();
                    send.reserve_capacity(want);
                    if send.capacity() > 0 {
                        continue;
                    }
                    match ready!(send.poll_capacity(cx)) {
                        Some(Ok(_)) => Ok(()),
                        Some(Err(e)) => Err(e),
                        None => {
                            self.state.fail(io::ErrorKind::BrokenPipe);
                            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
                        }
                    }
                }
                Transmit::Idle { wake_at: None } => return Poll::Ready(Ok(())),
                Transmit::Idle { wake_at: Some(at) } => {
                    // One timer per conn, moved as deadlines change (a fired timer
                    // fires again only once reset, on any runtime).
                    let rt = &self.rt;
                    let t = self.timer.get_or_insert_with(|| FlushTimer {
                        timer: rt.timer(at),
                        deadline: at,
                        fired: false,
                    });
                    if t.deadline != at {
                        t.timer.as_mut().reset(at);
                        t.deadline = at;
                        t.fired = false;
                    }
                    if t.fired || t.timer.as_mut().poll(cx).is_ready() {
                        t.fired = true;
                        continue;
                    }
                    return Poll::Ready(Ok(()));
                }
            };
            if let Err(e) = result {
                let e = h2_error_to_io(e);
                self.state.fail(e.kind());
                return Poll::Ready(Err(e));
            }
        }
    }

    fn release_credit(&mut self) {
        let credit = self.state.take_credit();
        if credit > 0 {
            // Fails only when the stream is gone, which the next read reports.
            let _ = self.recv_stream().flow_control().release_capacity(credit);
        }
    }
}

impl AsyncRead for RevConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Reading also services the write side's flush timer, so a writer that forgets
        // to flush before waiting for an answer is not stuck.
        let _ = this.drive_send(Side::Reader, cx);
        loop {
            match this.state.read(buf.initialize_unfilled()) {
                Read::Data(n) => {
                    buf.advance(n);
                    if let Some(m) = &this.metrics {
                        m.bytes_in.fetch_add(n as u64, Relaxed);
                    }
                    if let Some(slot) = &this.slot {
                        slot.read(n);
                    }
                    this.release_credit();
                    return Poll::Ready(Ok(()));
                }
                Read::Eof => return Poll::Ready(Ok(())),
                Read::Error(kind) => {
                    return Poll::Ready(Err(io::Error::new(kind, "reverse connection reset")));
                }
                Read::Pending => {}
            }
            let polled = ready!(this.recv_stream().poll_data(cx));
            if let Some(used) = this.used.take() {
                let _ = used.send(());
            }
            match polled {
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
            // Nagle's rule is the core's: a write after a quiet spell goes out at once,
            // writes in a burst are coalesced.
            match this.state.write_nagle(this.now(), buf) {
                Write::Accepted(n) => {
                    if let Some(m) = &this.metrics {
                        m.bytes_out.fetch_add(n as u64, Relaxed);
                    }
                    if let Some(slot) = &this.slot {
                        slot.wrote(n);
                    }
                    // Best effort: errors surface on the next call.
                    let _ = this.drive_send(Side::Writer, cx);
                    return Poll::Ready(Ok(n));
                }
                Write::Full => {
                    ready!(this.drive_send(Side::Writer, cx))?;
                    if !this.state.writable() {
                        // Everything due was handed over but the buffer is still full:
                        // wait for credit.
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

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.state.flush();
        ready!(this.drive_send(Side::Writer, cx))?;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.state.shutdown();
        ready!(this.drive_send(Side::Writer, cx))?;
        Poll::Ready(Ok(()))
    }
}

impl Drop for RevConn {
    fn drop(&mut self) {
        if let Some(used) = self.used.take() {
            let _ = used.send(());
        }
        if let Some(m) = &self.metrics {
            m.open_conns.fetch_sub(1, Relaxed);
        }
        let (Some(mut send), Some(recv)) = (self.send.take(), self.recv.take()) else {
            return;
        };
        match self.state.on_drop() {
            DropAction::Nothing => {}
            // Dropped without a completed shutdown (or failed): abort, so the peer does
            // not take a truncated stream for a clean end (PROTOCOL.md 5).
            DropAction::Reset(code) => send.send_reset(h2::Reason::from(code)),
            // Closed cleanly, but the peer's side is still open: h2 would cancel the
            // stream once both handles are gone and discard the DATA and END_STREAM
            // still queued (a truncated stream for the peer). Keep the stream until the
            // peer ends or resets it.
            DropAction::Linger { max } => {
                let rt = self.rt.clone();
                self.rt.spawn(linger(send, recv, max, rt));
            }
        }
    }
}

/// Keeps a cleanly closed stream until the peer ends it too, discarding what it still
/// sends (and returning the credit), for at most `max`; then ends it with
/// `RST_STREAM(NO_ERROR)`.
async fn linger(
    mut send: SendStream<Bytes>,
    mut recv: RecvStream,
    max: std::time::Duration,
    rt: Rt,
) {
    let drained = async {
        while let Some(Ok(data)) = recv.data().await {
            let _ = recv.flow_control().release_capacity(data.len());
        }
    };
    if rt.timeout(max, drained).await.is_none() {
        send.send_reset(h2::Reason::from(NO_ERROR));
    }
}

impl futures_io::AsyncRead for RevConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut rb = ReadBuf::new(buf);
        ready!(AsyncRead::poll_read(self, cx, &mut rb))?;
        Poll::Ready(Ok(rb.filled().len()))
    }
}

impl futures_io::AsyncWrite for RevConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(self, cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(self, cx)
    }

    /// A half-close (END_STREAM), as `shutdown` on tokio's trait.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_shutdown(self, cx)
    }
}

impl hyper_util::client::legacy::connect::Connection for RevConn {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}
