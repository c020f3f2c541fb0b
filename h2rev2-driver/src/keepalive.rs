//! HTTP/2 PING keep-alive: a PING every interval; no answer within the timeout means
//! the connection is dead (a cut path without FIN is noticed only this way).

use h2::{Ping, PingPong};

use crate::runtime::Rt;
use crate::settings::H2Settings;

/// Pings the peer every `keepalive_interval`; returns (with the reason) when a PING is
/// not answered within `keepalive_timeout`. Never returns when `ping` is `None` or the
/// connection ended (its own future reports that). Race it against the connection.
pub(crate) async fn dead(ping: Option<PingPong>, s: H2Settings, rt: Rt) -> String {
    let Some(mut ping) = ping else {
        return std::future::pending().await;
    };
    loop {
        rt.sleep(s.keepalive_interval).await;
        match rt
            .timeout(s.keepalive_timeout, ping.ping(Ping::opaque()))
            .await
        {
            Some(Ok(_)) => {}
            // The connection is gone already.
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
