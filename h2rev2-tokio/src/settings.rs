//! HTTP/2 settings, tuned for tunnelling and set deliberately against floods.
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
//! | send buffer per stream | 256 KiB | bounds what h2 queues per stream beyond flow control |
//! | PING keep-alive | 30 s, timeout 15 s | the Go Listener's settings: a dead peer or a cut path is noticed within 45 s |
//!
//! # Hardening: which setting answers which attack
//!
//! Each row is played by a test in `tests/attacks.rs` with a raw HTTP/2 client (frames
//! written by hand on a TLS socket); each test also checks that a legitimate tunnel on
//! the same server keeps working.
//!
//! | attack | answer | setting | test |
//! | --- | --- | --- | --- |
//! | rapid reset (CVE-2023-44487): HEADERS + RST_STREAM in bulk | GOAWAY `ENHANCE_YOUR_CALM` once more than 20 streams were reset before the server accepted them | `max_pending_accept_reset_streams` = 20 | `rapid_reset_is_cut_off` |
//! | rapid reset spread out, so that each request is accepted first | the proxied request's dial and upstream request are dropped when its stream is reset (the server watches `poll_reset`) | none (the proxy) | `slow_rapid_reset_leaves_no_work_behind` |
//! | CONTINUATION flood (a header block that never ends) | h2 counts CONTINUATION frames: more than max(16 KiB / 64 KiB, 1) × 1.25, at least 5, is GOAWAY `ENHANCE_YOUR_CALM`; a block over the header list size is not decoded and over 4× is GOAWAY | `max_header_list_size` = 16 KiB, `max_frame_size` = 64 KiB | `continuation_flood_is_cut_off` |
//! | oversized headers | `431` and `REFUSED_STREAM` for that stream only | `max_header_list_size` = 16 KiB | `header_list_over_16_kib_is_refused` |
//! | small-DATA flood: one-byte DATA frames on a stream nobody reads (a parked spare) | GOAWAY `ENHANCE_YOUR_CALM` once unread frames under 256 bytes exhaust h2's DATA frame budget: 16 MiB of assumed framing overhead, about 65,000 frames. The server fixes it at half of `connection_window` (h2 would follow a tunnel's raised window) | `connection_window` = 32 MiB (h2 `data_frame_budget`) | `small_data_flood_is_cut_off` |
//! | Clients that stop reading proxied downloads: each holds a stream window of the tunnel's connection window unread | a connection that carries a session gets a larger connection window, so it takes 32 stalled downloads instead of 4 to freeze the tunnel | `ServerConfig::tunnel_connection_window` = 256 MiB | `faults::clients_that_stop_reading_do_not_stall_the_tunnel` |
//! | SETTINGS flood, PING flood, from a peer that never reads the ACKs | h2 writes each ACK before it reads the next frame, so a peer that does not read stalls its own connection (memory bounded by socket buffers); the PING keep-alive it cannot answer then cuts it | `keepalive_interval` + `keepalive_timeout` = 45 s | `settings_and_ping_floods_are_bounded_and_cut_off` |
//! | streams the server must reset for the peer's errors, in bulk | GOAWAY `ENHANCE_YOUR_CALM` after 1,024 (never unlimited) | `max_local_error_reset_streams` = 1,024 | (h2's own tests) |
//! | unread responses | h2 queues at most 256 KiB per stream beyond the peer's window | `max_send_buffer_size` = 256 KiB | |
//! | unread request bodies | a connection can make the server buffer at most its window: 32 MiB (8 MiB per stream); with `ServerConfig::max_connections_per_ip` = 256 that is up to 8 GiB from one address: lower one of them on small machines | `connection_window`, `stream_window` | |
//!
//! Connection-level defences (TLS handshake, first-request and idle timeouts,
//! connections per address) are in [`crate::ServerConfig`]; session, dial and spare
//! limits in [`h2rev2_proto::dialer::DialerConfig`].

use std::time::Duration;

/// HTTP/2 settings shared by both sides.
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
    /// Bytes h2 buffers per stream before send capacity is withheld.
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
            max_send_buffer_size: 256 << 10,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(15),
        }
    }
}

impl H2Settings {
    /// An h2 server builder with these settings.
    pub fn server(&self) -> h2::server::Builder {
        let mut b = h2::server::Builder::new();
        b.initial_window_size(self.stream_window)
            .initial_connection_window_size(self.connection_window)
            .max_frame_size(self.max_frame_size)
            .max_concurrent_streams(self.max_concurrent_streams)
            .max_header_list_size(self.max_header_list_size)
            .max_pending_accept_reset_streams(self.max_pending_accept_reset_streams)
            .max_local_error_reset_streams(Some(self.max_local_error_reset_streams))
            .max_send_buffer_size(self.max_send_buffer_size)
            // Fixed, not h2's automatic "half the connection window": a tunnel's window
            // is raised later (`ServerConfig::tunnel_connection_window`), which must not
            // let a registered Listener buffer eight times more tiny frames.
            .data_frame_budget(self.connection_window as usize / 2);
        b
    }

    /// An h2 client builder with these settings.
    pub fn client(&self) -> h2::client::Builder {
        let mut b = h2::client::Builder::new();
        b.initial_window_size(self.stream_window)
            .initial_connection_window_size(self.connection_window)
            .max_frame_size(self.max_frame_size)
            .max_concurrent_streams(self.max_concurrent_streams)
            .max_header_list_size(self.max_header_list_size)
            .max_pending_accept_reset_streams(self.max_pending_accept_reset_streams)
            .max_local_error_reset_streams(Some(self.max_local_error_reset_streams))
            .max_send_buffer_size(self.max_send_buffer_size);
        b
    }
}
