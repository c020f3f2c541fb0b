//! HTTP/2 settings shared by every adapter, as plain data.
//!
//! The values are decisions (window sizes against the bandwidth-delay product, limits
//! against floods, the Go Listener's PING keep-alive), so they live here once; each
//! adapter turns them into its HTTP/2 library's builders.
//!
//! | setting | default | why |
//! | --- | --- | --- |
//! | stream window | 8 MiB | one stream must fill a 20 ms link at 200 MB/s (window ≥ rate × RTT = 4 MB); h2's 64 KiB default caps it near 3 MiB/s |
//! | connection window | 32 MiB | several fast streams at once; also the most unread data one connection can make us buffer |
//! | max frame size | 64 KiB | fewer frame headers and wake-ups per byte; TLS still cuts 16 KiB records |
//! | max concurrent streams | 10,000 | every reverse conn is a stream of the Listener's connection |
//! | max header list size | 16 KiB | revdial and proxy requests are small; bounds HPACK/CONTINUATION memory |
//! | pending accept reset streams | 20 | rapid reset (CVE-2023-44487): streams reset before we accept them |
//! | local error reset streams | 1,024 | streams we reset for the peer's errors, then GOAWAY |
//! | send buffer per stream | 64 KiB | bounds what h2 queues per stream beyond flow control (256 KiB doubled RSS under many streams, for no throughput) |
//! | PING keep-alive | 30 s, timeout 15 s | the Go Listener's settings (PROTOCOL.md 1): a dead peer or a cut path is noticed within 45 s |

use std::time::Duration;

/// HTTP/2 settings of one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2Settings {
    /// `SETTINGS_INITIAL_WINDOW_SIZE`: what the peer may send on one stream unread.
    pub stream_window: u32,
    /// Connection flow-control window.
    pub connection_window: u32,
    /// `SETTINGS_MAX_FRAME_SIZE`.
    pub max_frame_size: u32,
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub max_concurrent_streams: u32,
    /// `SETTINGS_MAX_HEADER_LIST_SIZE`.
    pub max_header_list_size: u32,
    /// Streams reset by the peer before being accepted, at most (rapid reset).
    pub max_pending_accept_reset_streams: usize,
    /// Streams reset for the peer's protocol errors before GOAWAY.
    pub max_local_error_reset_streams: usize,
    /// Bytes buffered per stream before send capacity is withheld.
    pub max_send_buffer_size: usize,
    /// Send a PING after this long without one.
    pub keepalive_interval: Duration,
    /// The connection is dead when the PING is not answered within this.
    pub keepalive_timeout: Duration,
}

impl Default for H2Settings {
    fn default() -> Self {
        H2Settings {
            stream_window: 8 << 20,
            connection_window: 32 << 20,
            max_frame_size: 64 << 10,
            max_concurrent_streams: 10_000,
            max_header_list_size: 16 << 10,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 1024,
            max_send_buffer_size: 64 << 10,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(15),
        }
    }
}
