//! Stream-to-conn adaptation (PROTOCOL.md section 5), as a pure state machine.
//!
//! An adapter turns one HTTP/2 stream (h2's `RecvStream` + `SendStream`) into a byte
//! connection by feeding [`Conn`] what the stream delivers and carrying out what the
//! machine asks for:
//!
//! * **read**: received DATA is queued as [`bytes::Bytes`] (no copy); flow-control
//!   credit is returned ([`Conn::take_credit`]) only for bytes the application consumed,
//!   so a slow reader slows its writer and nothing else.
//! * **write**: small writes are coalesced. Buffered bytes go out when at least
//!   [`ConnConfig::coalesce`] bytes wait, when the application flushes or shuts down,
//!   or [`ConnConfig::flush_delay`] after the first unsent byte: a burst of tiny
//!   writes neither floods the peer with tiny DATA frames (which h2 punishes with
//!   `GOAWAY ENHANCE_YOUR_CALM`) nor waits forever. The buffer is bounded
//!   ([`ConnConfig::max_buffer`]); past it, writes wait (backpressure).
//! * **half-close**: [`Conn::shutdown`] sends END_STREAM after the buffered bytes;
//!   reading goes on.
//! * **reset**: a peer `RST_STREAM` maps to an [`std::io::ErrorKind`] with
//!   [`reset_error_kind`].
//!
//! ```text
//! write side:  Open ──shutdown──► Closing (drain buffer) ──END_STREAM sent──► Closed
//! read side:   Open ──END_STREAM──► Eof        Open ──RST_STREAM──► Failed(kind)
//! ```

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

/// HTTP/2 error code `NO_ERROR` (RFC 9113 section 7).
pub const NO_ERROR: u32 = 0x0;
/// HTTP/2 error code `PROTOCOL_ERROR`.
pub const PROTOCOL_ERROR: u32 = 0x1;
/// HTTP/2 error code `INTERNAL_ERROR`.
pub const INTERNAL_ERROR: u32 = 0x2;
/// HTTP/2 error code `FLOW_CONTROL_ERROR`.
pub const FLOW_CONTROL_ERROR: u32 = 0x3;
/// HTTP/2 error code `REFUSED_STREAM`.
pub const REFUSED_STREAM: u32 = 0x7;
/// HTTP/2 error code `CANCEL`.
pub const CANCEL: u32 = 0x8;
/// HTTP/2 error code `ENHANCE_YOUR_CALM`.
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Maps a peer's `RST_STREAM` code to the error a reader or writer sees.
///
/// `None` means a clean end: `NO_ERROR` after the peer's END_STREAM (RFC 9113 8.1: a
/// server may reset with `NO_ERROR` once its response is complete).
///
/// ```
/// use std::io::ErrorKind;
/// use h2rev2_proto::conn::{reset_error_kind, CANCEL, NO_ERROR, REFUSED_STREAM};
/// assert_eq!(reset_error_kind(NO_ERROR, true), None);
/// assert_eq!(reset_error_kind(NO_ERROR, false), Some(ErrorKind::ConnectionReset));
/// assert_eq!(reset_error_kind(CANCEL, true), Some(ErrorKind::ConnectionReset));
/// assert_eq!(reset_error_kind(REFUSED_STREAM, false), Some(ErrorKind::ConnectionRefused));
/// ```
pub fn reset_error_kind(code: u32, after_end_stream: bool) -> Option<ErrorKind> {
    match code {
        NO_ERROR if after_end_stream => None,
        REFUSED_STREAM => Some(ErrorKind::ConnectionRefused),
        _ => Some(ErrorKind::ConnectionReset),
    }
}

/// Write coalescing and buffering settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnConfig {
    /// Buffered bytes that are sent without waiting for a flush. Default 16 KiB (one
    /// default-size DATA frame).
    pub coalesce: usize,
    /// Most bytes buffered before writes wait. Default 64 KiB (measured: 256 KiB
    /// doubled the NAT side's RSS under 256 concurrent downloads for no throughput).
    pub max_buffer: usize,
    /// Longest time a buffered byte waits for more before it is sent anyway. Default
    /// 1 ms.
    pub flush_delay: Duration,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            coalesce: 16 * 1024,
            max_buffer: 64 * 1024,
            flush_delay: Duration::from_millis(1),
        }
    }
}

/// The result of a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// `n` bytes were copied.
    Data(usize),
    /// The peer ended its side: end of file.
    Eof,
    /// Nothing yet: wait for [`Conn::on_data`] and friends.
    Pending,
    /// The stream failed.
    Error(ErrorKind),
}

/// The result of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// `n` bytes (at least one) were accepted into the buffer.
    Accepted(usize),
    /// The buffer is full: send some first.
    Full,
    /// The write side is closed (`BrokenPipe` after shutdown) or the stream failed.
    Error(ErrorKind),
}

/// The next step of the send side, from [`Conn::poll_transmit`].
///
/// The adapter loops: it asks, carries the step out on its stream, and asks again,
/// until [`Transmit::Idle`] (or it must wait for send capacity). The order of the
/// steps is the core's: a failure first, then due data, then END_STREAM once nothing
/// is left, and a flush timer only when nothing is due.
///
/// ```text
/// poll_transmit(now, capacity)
///   failed ─────────────────────────────────────► Failed(kind)
///   bytes due, capacity > 0 ─────────────────────► Data(chunk)     send, no END_STREAM
///   bytes due, capacity = 0 ─────────────────────► Blocked { want } reserve, wait, ask again
///   nothing due, shut down, END_STREAM not sent ─► End             send END_STREAM, on_end_sent
///   nothing due ─────────────────────────────────► Idle { wake_at } arm the flush timer (if any)
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// The stream failed: report this error to the application.
    Failed(ErrorKind),
    /// Send this chunk now, without END_STREAM.
    Data(Bytes),
    /// Send END_STREAM now (an empty DATA frame with the flag), then call
    /// [`Conn::on_end_sent`].
    End,
    /// `want` bytes are due but there is no send capacity: ask the stream for `want`
    /// bytes of capacity, wait until some is granted, then ask again.
    Blocked {
        /// Bytes due.
        want: usize,
    },
    /// Nothing is due. With `wake_at`, buffered bytes become due then (the flush
    /// delay): call [`Conn::poll_transmit`] again at that time.
    Idle {
        /// When to ask again, if buffered bytes wait for the flush delay.
        wake_at: Option<Instant>,
    },
}

/// Longest a dropped conn lingers after its clean close ([`DropAction::Linger`]).
pub const LINGER: Duration = Duration::from_secs(5);

/// What the adapter does with the stream when the application drops the conn, from
/// [`Conn::on_drop`] (PROTOCOL.md 5).
///
/// ```text
/// dropped without close (or failed) ─────────────► Reset(CANCEL)   an abort: never a clean end
/// closed cleanly, the peer's side still open ────► Linger { max }  deliver, then end cleanly
/// closed cleanly, the peer's side ended too ─────► Nothing
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropAction {
    /// The stream ended both ways: nothing to do.
    Nothing,
    /// Reset the stream now with this code.
    Reset(u32),
    /// Our side ended cleanly (END_STREAM queued) but the peer's is still open. HTTP/2
    /// libraries cancel a half-open stream whose handles are all dropped, and discard
    /// what is still queued for it, so the last bytes and END_STREAM could be lost.
    /// Keep the stream for up to `max`: read and discard what the peer still sends
    /// (returning its credit) until its END_STREAM or reset, then drop it; at `max`,
    /// reset it with `NO_ERROR` (RFC 9113 8.1: a clean "stop sending").
    Linger {
        /// The longest wait.
        max: Duration,
    },
}

/// One byte connection over one HTTP/2 stream.
#[derive(Debug)]
pub struct Conn {
    config: ConnConfig,
    // read side
    chunks: VecDeque<Bytes>,
    buffered_in: usize,
    eof: bool,
    credit: usize,
    // write side
    out: BytesMut,
    /// Bytes at the front of `out` that must go out now (flush requested).
    forced: usize,
    oldest: Option<Instant>,
    shutdown: bool,
    end_sent: bool,
    /// When bytes last went to the stream ([`Conn::take_send`]), for
    /// [`Conn::write_nagle`].
    last_send: Option<Instant>,
    // both
    failed: Option<ErrorKind>,
}

impl Conn {
    /// A new connection.
    pub fn new(config: ConnConfig) -> Self {
        Conn {
            config,
            chunks: VecDeque::new(),
            buffered_in: 0,
            eof: false,
            credit: 0,
            out: BytesMut::new(),
            forced: 0,
            oldest: None,
            shutdown: false,
            end_sent: false,
            last_send: None,
            failed: None,
        }
    }

    // ---- read side -------------------------------------------------------------

    /// A DATA frame's payload arrived. Empty chunks (h2 may yield one) are ignored.
    pub fn on_data(&mut self, data: Bytes) {
        if data.is_empty() || self.eof || self.failed.is_some() {
            return;
        }
        self.buffered_in += data.len();
        self.chunks.push_back(data);
    }

    /// The peer sent END_STREAM: reads end after the buffered bytes.
    pub fn on_end(&mut self) {
        self.eof = true;
    }

    /// The peer reset the stream, or the connection died.
    pub fn on_reset(&mut self, code: u32) {
        match reset_error_kind(code, self.eof) {
            None => self.eof = true,
            Some(kind) => self.fail(kind),
        }
    }

    /// The stream failed locally (connection lost, I/O error).
    pub fn fail(&mut self, kind: ErrorKind) {
        if self.failed.is_none() {
            self.failed = Some(kind);
            self.out.clear();
            self.forced = 0;
            self.oldest = None;
        }
    }

    /// Copies received bytes into `dst`. Bytes received before a reset are still
    /// readable only if the reset was clean; otherwise the error wins at once.
    pub fn read(&mut self, dst: &mut [u8]) -> Read {
        if let Some(kind) = self.failed {
            return Read::Error(kind);
        }
        if dst.is_empty() {
            return Read::Data(0);
        }
        let mut n = 0;
        while n < dst.len() {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let take = front.len().min(dst.len() - n);
            dst[n..n + take].copy_from_slice(&front[..take]);
            front.advance(take);
            if front.is_empty() {
                self.chunks.pop_front();
            }
            n += take;
        }
        if n > 0 {
            self.buffered_in -= n;
            self.credit += n;
            Read::Data(n)
        } else if self.eof {
            Read::Eof
        } else {
            Read::Pending
        }
    }

    /// Takes up to `max` received bytes without copying (`None`: see [`Conn::read`]'s
    /// non-data outcomes via [`Conn::read`] with an empty queue).
    pub fn read_chunk(&mut self, max: usize) -> Option<Bytes> {
        if self.failed.is_some() || max == 0 {
            return None;
        }
        let front = self.chunks.front_mut()?;
        let chunk = if front.len() <= max {
            self.chunks.pop_front()?
        } else {
            front.split_to(max)
        };
        self.buffered_in -= chunk.len();
        self.credit += chunk.len();
        Some(chunk)
    }

    /// Received bytes not yet read.
    pub fn buffered_in(&self) -> usize {
        self.buffered_in
    }

    /// Flow-control credit to hand back to the peer (bytes consumed since last call).
    pub fn take_credit(&mut self) -> usize {
        std::mem::take(&mut self.credit)
    }

    /// Whether the read side still expects DATA (not ended, not failed).
    pub fn read_open(&self) -> bool {
        !self.eof && self.failed.is_none()
    }

    // ---- write side ------------------------------------------------------------

    /// Buffers bytes from `src`.
    pub fn write(&mut self, now: Instant, src: &[u8]) -> Write {
        if let Some(kind) = self.failed {
            return Write::Error(kind);
        }
        if self.shutdown {
            return Write::Error(ErrorKind::BrokenPipe);
        }
        if src.is_empty() {
            return Write::Accepted(0);
        }
        let room = self.config.max_buffer.saturating_sub(self.out.len());
        if room == 0 {
            return Write::Full;
        }
        let n = room.min(src.len());
        self.out.extend_from_slice(&src[..n]);
        self.oldest.get_or_insert(now);
        Write::Accepted(n)
    }

    /// Buffers bytes from `src` like [`Conn::write`], with Nagle's rule: a write after
    /// a quiet spell (nothing buffered, nothing sent for [`ConnConfig::flush_delay`])
    /// is due at once, so a lone small message written without a flush goes out even
    /// if the application never polls the conn again. The writes of a burst that
    /// follow are coalesced as with [`Conn::write`].
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use h2rev2_proto::conn::{Conn, ConnConfig, Write};
    /// let t0 = Instant::now();
    /// let mut c = Conn::new(ConnConfig::default());
    /// assert_eq!(c.write_nagle(t0, b"hello"), Write::Accepted(5));
    /// assert_eq!(c.sendable(t0), 5, "a first write goes at once");
    /// let _ = c.take_send(t0, 5);
    /// assert_eq!(c.write_nagle(t0, b"a"), Write::Accepted(1));
    /// assert_eq!(c.sendable(t0), 0, "a write right after a send waits to coalesce");
    /// let later = t0 + Duration::from_secs(1);
    /// let _ = c.take_send(later, 1);
    /// assert_eq!(c.write_nagle(later + Duration::from_secs(1), b"b"), Write::Accepted(1));
    /// assert_eq!(c.sendable(later + Duration::from_secs(1)), 1, "quiet again");
    /// ```
    pub fn write_nagle(&mut self, now: Instant, src: &[u8]) -> Write {
        let quiet = self.out.is_empty()
            && self
                .last_send
                .is_none_or(|t| now.saturating_duration_since(t) >= self.config.flush_delay);
        let w = self.write(now, src);
        if quiet && matches!(w, Write::Accepted(n) if n > 0) {
            self.flush();
        }
        w
    }

    /// The application flushed: everything buffered must go out now.
    pub fn flush(&mut self) {
        self.forced = self.out.len();
    }

    /// The application shut its write side: flush, then END_STREAM.
    pub fn shutdown(&mut self) {
        self.flush();
        self.shutdown = true;
    }

    /// How many buffered bytes should be sent now (0 when nothing is due).
    pub fn sendable(&self, now: Instant) -> usize {
        if self.failed.is_some() || self.out.is_empty() {
            return 0;
        }
        let due = self.forced > 0
            || self.out.len() >= self.config.coalesce
            || self
                .oldest
                .is_some_and(|t| now.saturating_duration_since(t) >= self.config.flush_delay);
        if due { self.out.len() } else { 0 }
    }

    /// Takes up to `capacity` buffered bytes to send, regardless of the coalescing rule
    /// (call after [`Conn::sendable`] said how many are due).
    pub fn take_send(&mut self, now: Instant, capacity: usize) -> Bytes {
        let n = capacity.min(self.out.len());
        let chunk = self.out.split_to(n).freeze();
        if n > 0 {
            self.last_send = Some(now);
        }
        self.forced = self.forced.saturating_sub(n);
        self.oldest = if self.out.is_empty() { None } else { Some(now) };
        chunk
    }

    /// Whether END_STREAM should be sent now (shut down and nothing left to send).
    pub fn end_due(&self) -> bool {
        self.shutdown && !self.end_sent && self.out.is_empty() && self.failed.is_none()
    }

    /// Records that END_STREAM was sent.
    pub fn on_end_sent(&mut self) {
        self.end_sent = true;
    }

    /// Whether END_STREAM was sent (the write side completed a shutdown).
    pub fn end_sent(&self) -> bool {
        self.end_sent
    }

    /// Whether every byte the application flushed has been handed to the stream.
    pub fn flushed(&self) -> bool {
        self.forced == 0 && (!self.shutdown || self.end_sent)
    }

    /// Bytes waiting to be sent.
    pub fn buffered_out(&self) -> usize {
        self.out.len()
    }

    /// Whether a write of at least one byte would be accepted.
    pub fn writable(&self) -> bool {
        self.out.len() < self.config.max_buffer
    }

    /// When buffered bytes become due by the flush delay.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.out.is_empty() || self.forced > 0 || self.failed.is_some() {
            return None;
        }
        self.oldest.map(|t| t + self.config.flush_delay)
    }

    /// The next send step, given the stream's current send `capacity` (bytes the
    /// peer's flow-control windows let us send now). See [`Transmit`] for the loop.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, capacity: usize) -> Transmit {
        if let Some(kind) = self.failed {
            return Transmit::Failed(kind);
        }
        let due = self.sendable(now);
        if due > 0 {
            if capacity == 0 {
                return Transmit::Blocked { want: due };
            }
            return Transmit::Data(self.take_send(now, capacity.min(due)));
        }
        if self.end_due() {
            return Transmit::End;
        }
        Transmit::Idle {
            wake_at: self.poll_timeout(),
        }
    }

    /// What to do with the stream when the application drops the conn.
    ///
    /// ```
    /// use std::time::Instant;
    /// use h2rev2_proto::conn::{Conn, ConnConfig, DropAction, CANCEL, LINGER};
    /// let mut c = Conn::new(ConnConfig::default());
    /// assert_eq!(c.on_drop(), DropAction::Reset(CANCEL), "no close: an abort");
    /// c.shutdown();
    /// c.on_end_sent();
    /// assert_eq!(c.on_drop(), DropAction::Linger { max: LINGER }, "the peer still sends");
    /// c.on_end();
    /// assert_eq!(c.on_drop(), DropAction::Nothing, "both sides ended");
    /// ```
    #[must_use]
    pub fn on_drop(&self) -> DropAction {
        if !self.end_sent || self.failed.is_some() {
            DropAction::Reset(CANCEL)
        } else if self.read_open() {
            DropAction::Linger { max: LINGER }
        } else {
            DropAction::Nothing
        }
    }

    /// The failure, if the stream failed.
    pub fn error(&self) -> Option<ErrorKind> {
        self.failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_only_for_consumed_bytes() {
        let mut c = Conn::new(ConnConfig::default());
        c.on_data(Bytes::from_static(b"hello"));
        c.on_data(Bytes::new());
        assert_eq!(c.take_credit(), 0);
        let mut buf = [0u8; 3];
        assert_eq!(c.read(&mut buf), Read::Data(3));
        assert_eq!(&buf, b"hel");
        assert_eq!(c.take_credit(), 3);
        assert_eq!(c.read_chunk(10).unwrap(), Bytes::from_static(b"lo"));
        assert_eq!(c.take_credit(), 2);
        assert_eq!(c.read(&mut buf), Read::Pending);
        c.on_end();
        assert_eq!(c.read(&mut buf), Read::Eof);
    }

    #[test]
    fn coalescing_rule() {
        let t0 = Instant::now();
        let cfg = ConnConfig {
            coalesce: 8,
            max_buffer: 16,
            flush_delay: Duration::from_millis(1),
        };
        let mut c = Conn::new(cfg);
        for _ in 0..5 {
            assert_eq!(c.write(t0, b"x"), Write::Accepted(1));
        }
        assert_eq!(c.sendable(t0), 0, "tiny writes wait to be coalesced");
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_millis(1)));
        assert_eq!(
            c.sendable(t0 + Duration::from_millis(1)),
            5,
            "but not forever"
        );
        assert_eq!(c.write(t0, b"xxx"), Write::Accepted(3));
        assert_eq!(c.sendable(t0), 8, "a full chunk goes at once");
        assert_eq!(c.write(t0, &[0; 20]), Write::Accepted(8));
        assert_eq!(c.write(t0, b"y"), Write::Full);
        let chunk = c.take_send(t0, 10);
        assert_eq!(chunk.len(), 10);
        assert_eq!(c.buffered_out(), 6);
        c.flush();
        assert_eq!(c.sendable(t0), 6);
        assert!(!c.flushed());
        let _ = c.take_send(t0, 100);
        assert!(c.flushed());
    }

    #[test]
    fn transmit_loop_order() {
        let t0 = Instant::now();
        let cfg = ConnConfig {
            coalesce: 8,
            max_buffer: 64,
            flush_delay: Duration::from_millis(1),
        };
        let mut c = Conn::new(cfg);
        assert_eq!(c.poll_transmit(t0, 100), Transmit::Idle { wake_at: None });
        assert_eq!(c.write(t0, b"abc"), Write::Accepted(3));
        let wake = t0 + Duration::from_millis(1);
        assert_eq!(
            c.poll_transmit(t0, 100),
            Transmit::Idle {
                wake_at: Some(wake)
            },
            "tiny writes wait for the flush delay"
        );
        assert_eq!(c.poll_transmit(wake, 0), Transmit::Blocked { want: 3 });
        assert_eq!(
            c.poll_transmit(wake, 2),
            Transmit::Data(Bytes::from_static(b"ab"))
        );
        c.shutdown();
        assert_eq!(
            c.poll_transmit(wake, 100),
            Transmit::Data(Bytes::from_static(b"c")),
            "data before END_STREAM"
        );
        assert_eq!(c.poll_transmit(wake, 100), Transmit::End);
        c.on_end_sent();
        assert_eq!(c.poll_transmit(wake, 100), Transmit::Idle { wake_at: None });
        assert!(c.flushed());
        c.on_reset(CANCEL);
        assert_eq!(
            c.poll_transmit(wake, 100),
            Transmit::Failed(ErrorKind::ConnectionReset)
        );
    }

    #[test]
    fn half_close_and_resets() {
        let t0 = Instant::now();
        let mut c = Conn::new(ConnConfig::default());
        assert_eq!(c.write(t0, b"bye"), Write::Accepted(3));
        c.shutdown();
        assert!(!c.end_due(), "data first");
        assert_eq!(c.take_send(t0, 100), Bytes::from_static(b"bye"));
        assert!(c.end_due());
        c.on_end_sent();
        assert!(c.flushed());
        assert_eq!(c.write(t0, b"x"), Write::Error(ErrorKind::BrokenPipe));
        // Reading goes on after our half-close.
        c.on_data(Bytes::from_static(b"more"));
        let mut buf = [0u8; 8];
        assert_eq!(c.read(&mut buf), Read::Data(4));
        c.on_end();
        c.on_reset(NO_ERROR);
        assert_eq!(
            c.read(&mut buf),
            Read::Eof,
            "NO_ERROR after END_STREAM is clean"
        );

        let mut c = Conn::new(ConnConfig::default());
        c.on_data(Bytes::from_static(b"lost"));
        c.on_reset(CANCEL);
        assert_eq!(c.read(&mut buf), Read::Error(ErrorKind::ConnectionReset));
        assert_eq!(c.write(t0, b"x"), Write::Error(ErrorKind::ConnectionReset));
    }
}
