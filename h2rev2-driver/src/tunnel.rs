//! What a tunnel's HTTP/2 connection task and the conns on it share: whether it is a
//! tunnel yet, and how many conns are open on it (for the core's
//! [`h2rev2_proto::window::StreamWindowRule`] and the admin view of its session), and
//! the bytes they carried.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

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
    /// The receive flow control of each conn open on it, to make h2 look again for a
    /// window update owed after a decrease ([`TunnelShare::recheck_windows`]).
    flows: Mutex<HashMap<u64, h2::FlowControl>>,
    next_flow: AtomicU64,
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

    /// Makes h2 look again, on every conn of the connection, for a stream window
    /// update it owes: releasing no bytes re-runs its check, which a decrease of the
    /// stream window (applied when the peer acknowledges it) does not, so a conn whose
    /// reader had released everything would otherwise stall for good (the core's
    /// [`h2rev2_proto::window`] docs). Costs one h2 lock per conn; nothing is sent
    /// unless an update is owed.
    pub(crate) fn recheck_windows(&self) {
        let mut flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        for flow in flows.values_mut() {
            let _ = flow.release_capacity(0);
        }
    }
}

/// Counts one conn as open on its connection until dropped.
#[derive(Debug)]
pub(crate) struct ConnSlot {
    share: Arc<TunnelShare>,
    /// Its key in [`TunnelShare::flows`], once registered.
    flow: Option<u64>,
}

impl ConnSlot {
    pub(crate) fn new(share: Arc<TunnelShare>) -> Self {
        share.conns.fetch_add(1, Relaxed);
        share.changed.notify_one();
        ConnSlot { share, flow: None }
    }

    /// Registers the conn's receive flow control for
    /// [`TunnelShare::recheck_windows`], until the slot is dropped.
    pub(crate) fn watch_flow(&mut self, flow: h2::FlowControl) {
        let key = self.share.next_flow.fetch_add(1, Relaxed);
        let mut flows = self.share.flows.lock().unwrap_or_else(|e| e.into_inner());
        flows.insert(key, flow);
        self.flow = Some(key);
    }

    /// Counts `n` bytes read from the conn.
    pub(crate) fn read(&self, n: usize) {
        self.share.bytes_in.fetch_add(n as u64, Relaxed);
    }

    /// Counts `n` bytes written to the conn.
    pub(crate) fn wrote(&self, n: usize) {
        self.share.bytes_out.fetch_add(n as u64, Relaxed);
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Some(key) = self.flow {
            let mut flows = self.share.flows.lock().unwrap_or_else(|e| e.into_inner());
            flows.remove(&key);
        }
        self.share.conns.fetch_sub(1, Relaxed);
        self.share.changed.notify_one();
    }
}
