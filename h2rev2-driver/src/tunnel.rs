//! What a tunnel's HTTP/2 connection task and the conns on it share: whether it is a
//! tunnel yet, and how many conns are open on it (for the core's
//! [`h2rev2_proto::window::StreamWindowRule`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use tokio::sync::Notify;

/// One HTTP/2 connection's share.
#[derive(Debug, Default)]
pub(crate) struct TunnelShare {
    /// Told when a session's control stream is accepted on the connection.
    pub(crate) became_tunnel: Notify,
    /// Told when a conn opens or closes on it.
    pub(crate) changed: Notify,
    conns: AtomicUsize,
}

impl TunnelShare {
    /// Conns open on the connection now.
    pub(crate) fn open_conns(&self) -> usize {
        self.conns.load(Relaxed)
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
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.conns.fetch_sub(1, Relaxed);
        self.0.changed.notify_one();
    }
}
