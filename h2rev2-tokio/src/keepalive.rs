//! HTTP/2 PING keep-alive: a PING every interval; no answer within the timeout means
//! the connection is dead (a cut path without FIN is noticed only this way).

use std::future::Future;
use std::pin::Pin;

use h2::{Ping, PingPong};
use tokio::sync::oneshot;

use crate::settings::H2Settings;

/// Starts the pinger; the returned future resolves when the peer stopped answering.
/// It never resolves when `ping` is `None` or the connection ends normally.
pub(crate) fn spawn(
    ping: Option<PingPong>,
    h2: H2Settings,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let Some(mut ping) = ping else {
        return Box::pin(std::future::pending());
    };
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut tx = tx;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(h2.keepalive_interval) => {}
                _ = tx.closed() => return,
            }
            match tokio::time::timeout(h2.keepalive_timeout, ping.ping(Ping::opaque())).await {
                Ok(Ok(_)) => {}
                // The connection is gone already.
                Ok(Err(_)) => return,
                Err(_) => {
                    let _ = tx.send(());
                    return;
                }
            }
        }
    });
    Box::pin(async move {
        if rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    })
}
