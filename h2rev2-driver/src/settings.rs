//! HTTP/2 settings, tuned for tunnelling and set deliberately against floods.
//!
//! The values are the core's [`H2Settings`] (its module documents each default and
//! why); this module applies them to h2's builders.
//!
//! # Hardening: which setting answers which attack
//!
//! Each row is played by a test in `h2rev2-tokio/tests/attacks.rs` with a raw HTTP/2
//! client (frames written by hand on a TLS socket), against the tokio and the smol
//! server alike; each test also checks that a legitimate tunnel on the same server
//! keeps working.
//!
//! | attack | answer | setting | test |
//! | --- | --- | --- | --- |
//! | rapid reset (CVE-2023-44487): HEADERS + RST_STREAM in bulk | GOAWAY `ENHANCE_YOUR_CALM` once more than 20 streams were reset before the server accepted them | `max_pending_accept_reset_streams` = 20 | `rapid_reset_is_cut_off` |
//! | rapid reset spread out, so that each request is accepted first | the proxied request's dial and upstream request are dropped when its stream is reset (the server watches `poll_reset`) | none (the proxy) | `slow_rapid_reset_leaves_no_work_behind` |
//! | CONTINUATION flood (a header block that never ends) | h2 counts CONTINUATION frames: more than max(16 KiB / 64 KiB, 1) × 1.25, at least 5, is GOAWAY `ENHANCE_YOUR_CALM`; a block over the header list size is not decoded and over 4× is GOAWAY | `max_header_list_size` = 16 KiB, `max_frame_size` = 64 KiB | `continuation_flood_is_cut_off` |
//! | oversized headers | `431` and `REFUSED_STREAM` for that stream only | `max_header_list_size` = 16 KiB | `header_list_over_16_kib_is_refused` |
//! | small-DATA flood: one-byte DATA frames on a stream nobody reads (a parked spare) | GOAWAY `ENHANCE_YOUR_CALM` once unread frames under 256 bytes exhaust h2's DATA frame budget: 16 MiB of assumed framing overhead, about 65,000 frames. The server fixes it (h2 would follow a tunnel's raised window) | `DATA_FRAME_BUDGET` = 16 MiB (h2 `data_frame_budget`) | `small_data_flood_is_cut_off` |
//! | Clients that stop reading proxied downloads: each holds a stream window of the tunnel's connection window unread | a tunnel's stream window is a budget shared by its open conns (the core's `StreamWindowRule`, announced with SETTINGS): one download alone gets 8 MiB, 64 stalled ones 256 KiB each, so together they hold about the budget and never the 256 MiB connection window; one Client address has a share of 64 requests in flight per id and may go past it only while more than a quarter of the id's 1024 slots are free, so it cannot take them all | `ServerConfig::tunnel_stream_budget` = 16 MiB, `tunnel_connection_window` = 256 MiB, `ProxyLimits::max_requests_per_client` = 64 | `faults::clients_that_stop_reading_do_not_stall_the_tunnel`; figures: `e2e --only stalled` |
//! | SETTINGS flood, PING flood, from a peer that never reads the ACKs | h2 writes each ACK before it reads the next frame, so a peer that does not read stalls its own connection (memory bounded by socket buffers); the PING keep-alive it cannot answer then cuts it | `keepalive_interval` + `keepalive_timeout` = 45 s | `settings_and_ping_floods_are_bounded_and_cut_off` |
//! | streams the server must reset for the peer's errors, in bulk | GOAWAY `ENHANCE_YOUR_CALM` after 1,024 (never unlimited) | `max_local_error_reset_streams` = 1,024 | (h2's own tests) |
//! | unread responses | h2 queues at most 64 KiB per stream beyond the peer's window | `max_send_buffer_size` = 64 KiB | |
//! | unread request bodies | a Client's connection can make the server buffer at most its window: 4 MiB (the public server's `connection_window`); with `ServerConfig::max_connections_per_ip` = 1024 that is up to 4 GiB from one address: lower one of them on small machines | `connection_window`, `max_connections_per_ip` | |
//!
//! Connection-level defences (TLS handshake, first-request and idle timeouts,
//! connections per address) are in [`crate::ServerConfig`]; session, dial and spare
//! limits in [`h2rev2_proto::dialer::DialerConfig`].

pub use h2rev2_proto::settings::H2Settings;

/// h2's budget of framing overhead for small unread DATA frames on one connection
/// (about 65,000 frames under 256 bytes), whatever its window.
pub const DATA_FRAME_BUDGET: usize = 16 << 20;

/// An h2 server builder with the settings `s`.
pub fn server(s: &H2Settings) -> h2::server::Builder {
    let mut b = h2::server::Builder::new();
    b.initial_window_size(s.stream_window)
        .initial_connection_window_size(s.connection_window)
        .max_frame_size(s.max_frame_size)
        .max_concurrent_streams(s.max_concurrent_streams)
        .max_header_list_size(s.max_header_list_size)
        .max_pending_accept_reset_streams(s.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(Some(s.max_local_error_reset_streams))
        .max_send_buffer_size(s.max_send_buffer_size)
        // Fixed, not h2's automatic "half the connection window": a tunnel's window
        // is raised later (`ServerConfig::tunnel_connection_window`), which must not
        // let a registered Listener buffer eight times more tiny frames.
        .data_frame_budget(DATA_FRAME_BUDGET);
    b
}

/// An h2 client builder with the settings `s`.
pub fn client(s: &H2Settings) -> h2::client::Builder {
    let mut b = h2::client::Builder::new();
    b.initial_window_size(s.stream_window)
        .initial_connection_window_size(s.connection_window)
        .max_frame_size(s.max_frame_size)
        .max_concurrent_streams(s.max_concurrent_streams)
        .max_header_list_size(s.max_header_list_size)
        .max_pending_accept_reset_streams(s.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(Some(s.max_local_error_reset_streams))
        .max_send_buffer_size(s.max_send_buffer_size);
    b
}
