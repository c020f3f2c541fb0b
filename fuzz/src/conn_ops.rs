//! `Conn` against a byte-level model: bytes read are exactly the bytes fed, in order,
//! until an error or end of file; what `take_send` hands out, concatenated, is exactly
//! what `write` accepted; credit is returned for consumed bytes only; buffered bytes
//! never wait forever.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::Bytes;
use h2rev2_proto::conn::{Conn, ConnConfig, Read, Write, reset_error_kind};

/// One operation.
#[derive(Debug, Clone, Arbitrary)]
pub enum Op {
    /// The application writes.
    Write(Vec<u8>),
    /// The application writes a run of one byte (large writes, cheaply).
    WriteRun(u8, u16),
    /// The application flushes.
    Flush,
    /// The application shuts its write side.
    Shutdown,
    /// The adapter sends what is due, up to a capacity.
    TakeSend(u16),
    /// The adapter sends END_STREAM if due.
    SendEnd,
    /// DATA arrived.
    OnData(Vec<u8>),
    /// END_STREAM arrived.
    OnEnd,
    /// RST_STREAM arrived with this code.
    OnReset(u8),
    /// The stream failed locally.
    Fail,
    /// The application reads into a buffer of this size.
    Read(u16),
    /// The application takes a chunk of at most this size.
    ReadChunk(u16),
    /// The adapter returns credit.
    TakeCredit,
    /// Time passes.
    Advance(u16),
}

/// A configuration and operations.
#[derive(Debug, Clone, Arbitrary)]
pub struct Input {
    /// Coalescing threshold (taken modulo 64 KiB, at least 1).
    pub coalesce: u16,
    /// Buffer bound (taken modulo 256 KiB, at least 1).
    pub max_buffer: u32,
    /// Flush delay in microseconds.
    pub flush_delay_us: u16,
    /// The operations.
    pub ops: Vec<Op>,
}

#[derive(Default)]
struct Model {
    fed: Vec<u8>,
    read: usize,
    eof: bool,
    failed: Option<ErrorKind>,
    credit_returned: usize,
    written: Vec<u8>,
    sent: Vec<u8>,
    shutdown: bool,
    end_sent: bool,
}

/// The checks.
pub fn check(input: &Input) {
    let config = ConnConfig {
        coalesce: (input.coalesce as usize % (64 * 1024)).max(1),
        max_buffer: (input.max_buffer as usize % (256 * 1024)).max(1),
        flush_delay: Duration::from_micros(input.flush_delay_us as u64),
    };
    let mut now = Instant::now();
    let mut c = Conn::new(config);
    let mut m = Model::default();
    for op in &input.ops {
        apply(&mut c, &mut m, &mut now, config, op);
        invariants(&c, &m, now);
    }
    m.credit_returned += c.take_credit();
    assert_eq!(
        m.credit_returned, m.read,
        "credit must equal the bytes consumed"
    );
    // Drain: everything accepted and not lost to a failure comes out, in order.
    c.flush();
    while c.sendable(now) > 0 {
        let chunk = c.take_send(now, usize::MAX);
        m.sent.extend_from_slice(&chunk);
    }
    if m.failed.is_none() {
        assert_eq!(
            m.sent, m.written,
            "take_send output differs from the bytes written"
        );
        assert_eq!(c.buffered_out(), 0);
        if m.shutdown && !m.end_sent {
            assert!(c.end_due(), "END_STREAM is due after the last byte");
        }
    }
}

fn apply(c: &mut Conn, m: &mut Model, now: &mut Instant, config: ConnConfig, op: &Op) {
    match op {
        Op::Write(data) => write(c, m, *now, config, data),
        Op::WriteRun(b, n) => write(c, m, *now, config, &vec![*b; *n as usize]),
        Op::Flush => {
            c.flush();
            if m.failed.is_none() && c.buffered_out() > 0 {
                assert_eq!(c.sendable(*now), c.buffered_out(), "a flush makes all due");
            }
        }
        Op::Shutdown => {
            c.shutdown();
            m.shutdown = true;
        }
        Op::TakeSend(cap) => {
            let due = c.sendable(*now);
            if due > 0 {
                let chunk = c.take_send(*now, (*cap as usize).max(1));
                assert!(chunk.len() <= due);
                m.sent.extend_from_slice(&chunk);
            }
        }
        Op::SendEnd => {
            let due = m.shutdown && !m.end_sent && m.failed.is_none() && m.sent == m.written;
            assert_eq!(c.end_due(), due, "end_due");
            if due {
                c.on_end_sent();
                m.end_sent = true;
            }
        }
        Op::OnData(data) => {
            c.on_data(Bytes::copy_from_slice(data));
            if !m.eof && m.failed.is_none() {
                m.fed.extend_from_slice(data);
            }
        }
        Op::OnEnd => {
            c.on_end();
            m.eof = true;
        }
        Op::OnReset(code) => {
            let code = u32::from(*code % 16);
            c.on_reset(code);
            match reset_error_kind(code, m.eof) {
                None => m.eof = true,
                Some(kind) => fail(m, kind),
            }
        }
        Op::Fail => {
            c.fail(ErrorKind::BrokenPipe);
            fail(m, ErrorKind::BrokenPipe);
        }
        Op::Read(len) => {
            let mut buf = vec![0u8; *len as usize];
            let r = c.read(&mut buf);
            let available = m.fed.len() - m.read;
            match (m.failed, r) {
                (Some(kind), Read::Error(k)) => assert_eq!(kind, k),
                (Some(kind), other) => panic!("read after {kind:?} gave {other:?}"),
                (None, _) if buf.is_empty() => assert_eq!(r, Read::Data(0)),
                (None, Read::Data(n)) => {
                    assert_eq!(n, available.min(buf.len()), "short read");
                    assert_eq!(&buf[..n], &m.fed[m.read..m.read + n], "bytes out of order");
                    m.read += n;
                }
                (None, Read::Eof) => assert!(m.eof && available == 0, "early EOF"),
                (None, Read::Pending) => assert!(!m.eof && available == 0, "pending with data"),
                (None, Read::Error(k)) => panic!("spurious {k:?}"),
            }
        }
        Op::ReadChunk(max) => {
            let max = *max as usize;
            let got = c.read_chunk(max);
            let available = m.fed.len() - m.read;
            match got {
                Some(chunk) => {
                    assert!(m.failed.is_none());
                    assert!(!chunk.is_empty() && chunk.len() <= max);
                    assert_eq!(&chunk[..], &m.fed[m.read..m.read + chunk.len()]);
                    m.read += chunk.len();
                }
                None => assert!(m.failed.is_some() || max == 0 || available == 0),
            }
        }
        Op::TakeCredit => {
            m.credit_returned += c.take_credit();
            assert!(
                m.credit_returned <= m.read,
                "credit for bytes never consumed"
            );
        }
        Op::Advance(us) => *now += Duration::from_micros(*us as u64),
    }
}

fn write(c: &mut Conn, m: &mut Model, now: Instant, config: ConnConfig, data: &[u8]) {
    let before = c.buffered_out();
    let r = c.write(now, data);
    match (m.failed, m.shutdown, r) {
        (Some(kind), _, Write::Error(k)) => assert_eq!(kind, k),
        (None, true, Write::Error(k)) => assert_eq!(k, ErrorKind::BrokenPipe),
        (None, false, Write::Accepted(n)) => {
            let room = config.max_buffer.saturating_sub(before);
            assert_eq!(n, data.len().min(room), "accepted");
            assert!(n > 0 || data.is_empty());
            m.written.extend_from_slice(&data[..n]);
        }
        (None, false, Write::Full) => {
            assert!(!data.is_empty() && before >= config.max_buffer);
        }
        (f, s, r) => panic!("write gave {r:?} (failed {f:?}, shut down {s})"),
    }
}

fn fail(m: &mut Model, kind: ErrorKind) {
    if m.failed.is_none() {
        m.failed = Some(kind);
        // Unsent bytes are dropped.
        m.written.truncate(m.sent.len());
    }
}

fn invariants(c: &Conn, m: &Model, now: Instant) {
    assert_eq!(c.error(), m.failed);
    assert_eq!(c.read_open(), !m.eof && m.failed.is_none());
    if m.failed.is_none() {
        assert_eq!(c.buffered_in(), m.fed.len() - m.read, "buffered_in");
    }
    assert!(
        m.written.starts_with(&m.sent),
        "sent bytes that were never written"
    );
    if m.failed.is_none() {
        assert_eq!(
            c.buffered_out(),
            m.written.len() - m.sent.len(),
            "buffered_out"
        );
        // Buffered bytes go out now or at the timer: never wait forever.
        if c.buffered_out() > 0 && c.sendable(now) == 0 {
            let t = c.poll_timeout().expect("buffered bytes but no timer");
            assert!(t >= now || c.sendable(t) > 0);
            assert_eq!(c.sendable(t.max(now)), c.buffered_out(), "due at the timer");
        }
    } else {
        assert_eq!(c.buffered_out(), 0);
        assert_eq!(c.sendable(now), 0);
    }
    assert!(
        m.credit_returned <= m.read,
        "credit for bytes never consumed"
    );
}
