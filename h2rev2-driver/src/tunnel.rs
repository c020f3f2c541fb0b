//! What a tunnel's HTTP/2 connection task and the conns on it share: whether it is a
//! tunnel yet, and how many conns are open on it (for the core's
//! [`h2rev2_proto::window::StreamWindowRule`] and the admin view of its session), and
//! the bytes they carried.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use tokio::sync::Notify;

/// One HTTP/2 connection's share.
#[derive(Debug, Default)]
pub(crate) struct TunnelShare {
    /// Told when a session's control stream is accepted on the connection.
    pub(crate) became_tunnel: Notify,
    /// Told when a conn opens or closes on it.
    pub(crate) changed: Notify,
    /// Told when the connection must close (a reload revoked its last session).
    pub(crate) close: Notify,
    conns: AtomicUsize,
    /// Bytes read from its conns (Listener to Dialer), since it started.
    bytes_in: AtomicU64,
    /// Bytes written to its conns (Dialer to Listener), since it started.
    bytes_out: AtomicU64,
}

impl TunnelShare {
    /// Conns open on the connection now.
    pub(crate) fn open_conns(&self) -> usize {
        self.conns.load(Relaxed)
    }

    /// Bytes carried by its conns so far: (from the Listener, to the Listener).
    pub(crate) fn bytes(&self) -> (u64, u64) {
        (self.bytes_in.load(Relaxed), self.bytes_out.load(Relaxed))
    }
}

/// Counts one conn as open on its connection until dropped.
#[derive(Debug)]
pub(crate) struct ConnSlot(Arc<TunnelShare>);

impl ConnSlot {
    pub(crate) fn new(share: Arc<TunnelShare>) -> Self {
        share.conns.fetch_add(1, Relaxed);
        share.changed.notify_one();
        ConnSlot(share)
    }

    /// Counts `n` bytes read from the conn.
    pub(crate) fn read(&self, n: usize) {
        self.0.bytes_in.fetch_add(n as u64, Relaxed);
    }

    /// Counts `n` bytes written to the conn.
    pub(crate) fn wrote(&self, n: usize) {
        self.0.bytes_out.fetch_add(n as u64, Relaxed);
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.conns.fetch_sub(1, Relaxed);
        self.0.changed.notify_one();
    }
}
