//! The public side's live sessions, for an admin view: [`Server::sessions`] and
//! [`Server::recent_errors`].
//!
//! The driver task records a session when the core accepts its control stream and
//! forgets it when the core reports it down; byte and conn counts are read from the
//! session's HTTP/2 connection (every reverse conn on it counts there), spares from
//! the core at the moment of the snapshot.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use h2rev2_proto::registry::SessionKey;
use h2rev2_proto::wire::DialerId;
use tokio::sync::oneshot;

use crate::server::{Cmd, Server};
use crate::tunnel::TunnelShare;

/// How many entries [`Server::recent_errors`] keeps (the oldest go first).
pub const RECENT_ERRORS: usize = 50;

/// One live Listener session, as [`Server::sessions`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The id it registered.
    pub id: DialerId,
    /// The core's slot index of the session (unique among live sessions; for logs,
    /// which print it as `session=`).
    pub session: u32,
    /// The Listener's address.
    pub peer: SocketAddr,
    /// When its control stream was accepted (wall clock).
    pub since: SystemTime,
    /// Reverse connections open on its HTTP/2 connection now.
    pub open_conns: usize,
    /// Bytes read from its reverse connections (Listener to Dialer), since it started.
    pub bytes_from_listener: u64,
    /// Bytes written to its reverse connections (Dialer to Listener), since it started.
    pub bytes_to_listener: u64,
    /// Spare streams it has parked, ready for the next dial.
    pub spares: usize,
    /// The last failure seen for its id while it was up (a dial or a proxied request
    /// that failed), if any.
    pub last_error: Option<String>,
}

/// A failure kept for the admin view: a session that ended, a dial or a proxied
/// request that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentError {
    /// When (wall clock).
    pub at: SystemTime,
    /// The id concerned.
    pub id: DialerId,
    /// What happened, short.
    pub message: String,
}

struct Entry {
    id: DialerId,
    peer: SocketAddr,
    since: SystemTime,
    tunnel: Arc<TunnelShare>,
    last_error: Option<String>,
}

#[derive(Default)]
struct Table {
    live: HashMap<SessionKey, Entry>,
    recent: VecDeque<RecentError>,
}

/// The sessions and recent errors, shared by the driver task and the [`Server`]
/// handles.
#[derive(Default)]
pub(crate) struct SessionTable(Mutex<Table>);

impl std::fmt::Debug for SessionTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTable").finish_non_exhaustive()
    }
}

impl SessionTable {
    fn with<R>(&self, f: impl FnOnce(&mut Table) -> R) -> R {
        // A panic while holding the lock leaves plain data behind: keep using it.
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut t)
    }

    /// The core accepted the control stream of session `key`.
    pub(crate) fn up(
        &self,
        key: SessionKey,
        id: &DialerId,
        peer: SocketAddr,
        tunnel: Arc<TunnelShare>,
    ) {
        self.with(|t| {
            t.live.insert(
                key,
                Entry {
                    id: id.clone(),
                    peer,
                    since: SystemTime::now(),
                    tunnel,
                    last_error: None,
                },
            )
        });
    }

    /// The core reported session `key` down, for `reason`.
    /// Whether a live session holds `id`.
    pub(crate) fn holds(&self, id: &DialerId) -> bool {
        let t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        t.live.values().any(|e| e.id == *id)
    }

    /// The connection share of the live session `key`.
    pub(crate) fn tunnel(&self, key: SessionKey) -> Option<Arc<TunnelShare>> {
        let t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        t.live.get(&key).map(|e| e.tunnel.clone())
    }

    pub(crate) fn down(&self, key: SessionKey, id: &DialerId, reason: &str) {
        self.with(|t| {
            t.live.remove(&key);
            push(t, id, format!("session down: {reason}"));
        });
    }

    /// A dial or a proxied request for `id` failed: the last error of its live
    /// sessions, and a recent error.
    pub(crate) fn failed(&self, id: &DialerId, message: &str) {
        self.with(|t| {
            let mut any = false;
            for e in t.live.values_mut().filter(|e| &e.id == id) {
                e.last_error = Some(message.to_string());
                any = true;
            }
            // Failures for ids nobody holds are a scanner's noise, not a session's.
            if any {
                push(t, id, message.to_string());
            }
        });
    }

    /// Every live session, with the spares the core reports for it.
    pub(crate) fn snapshot(
        &self,
        spares: impl Fn(SessionKey) -> Option<usize>,
    ) -> Vec<SessionInfo> {
        let mut out = self.with(|t| {
            t.live
                .iter()
                .map(|(key, e)| {
                    let (from, to) = e.tunnel.bytes();
                    SessionInfo {
                        id: e.id.clone(),
                        session: key.index(),
                        peer: e.peer,
                        since: e.since,
                        open_conns: e.tunnel.open_conns(),
                        bytes_from_listener: from,
                        bytes_to_listener: to,
                        spares: spares(*key).unwrap_or(0),
                        last_error: e.last_error.clone(),
                    }
                })
                .collect::<Vec<_>>()
        });
        out.sort_by(|a, b| (&a.id, a.since).cmp(&(&b.id, b.since)));
        out
    }

    fn recent(&self) -> Vec<RecentError> {
        self.with(|t| t.recent.iter().rev().cloned().collect())
    }
}

fn push(t: &mut Table, id: &DialerId, message: String) {
    if t.recent.len() >= RECENT_ERRORS {
        t.recent.pop_front();
    }
    t.recent.push_back(RecentError {
        at: SystemTime::now(),
        id: id.clone(),
        message,
    });
}

impl Server {
    /// Every live Listener session, sorted by id then age: its address, when it
    /// connected, its open conns, bytes each way, spares and last error.
    ///
    /// Empty once the server's driver has stopped.
    pub async fn sessions(&self) -> Vec<SessionInfo> {
        let (reply, rx) = oneshot::channel();
        if self.inner.cmd.send(Cmd::Sessions { reply }).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// The last [`RECENT_ERRORS`] failures (sessions that ended, failed dials and
    /// proxied requests of ids with a live session), newest first.
    pub fn recent_errors(&self) -> Vec<RecentError> {
        self.inner.sessions.recent()
    }
}
