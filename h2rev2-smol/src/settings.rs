//! HTTP/2 settings (the core's [`H2Settings`]) applied to h2, and the PING keep-alive.

use std::time::Duration;

use h2::{Ping, PingPong};
pub use h2rev2_proto::settings::H2Settings;
use smol::Timer;

/// An h2 server builder with `s`.
pub(crate) fn server(s: &H2Settings) -> h2::server::Builder {
    let mut b = h2::server::Builder::new();
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

/// An h2 client builder with `s`.
pub(crate) fn client(s: &H2Settings) -> h2::client::Builder {
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

/// A PING every `keepalive_interval`; resolves (with the reason) when one is not
/// answered within `keepalive_timeout`. Never resolves otherwise: when `ping` is `None`
/// or the connection ended (its own future reports that).
pub(crate) async fn keepalive(ping: Option<PingPong>, s: H2Settings) -> String {
    let Some(mut ping) = ping else {
        return std::future::pending().await;
    };
    loop {
        Timer::after(s.keepalive_interval).await;
        let answered = smol::future::or(async { Some(ping.ping(Ping::opaque()).await) }, async {
            Timer::after(s.keepalive_timeout).await;
            None
        })
        .await;
        match answered {
            Some(Ok(_)) => {}
            Some(Err(_)) => return std::future::pending().await,
            None => {
                return format!(
                    "PING not answered within {:?}: the peer is gone",
                    s.keepalive_timeout
                );
            }
        }
    }
}

/// Races `fut` against a timer.
pub(crate) async fn timeout<T>(
    d: Duration,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    smol::future::or(async { Some(fut.await) }, async {
        Timer::after(d).await;
        None
    })
    .await
}
