//! `--metrics ADDR`: the server's counters over plain HTTP/1.1 at `/metrics`
//! (Prometheus text format).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use h2rev2_tokio::metrics::Metrics;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, info};

use crate::error::CliError;

/// Binds `addr` now (so a busy port is reported at start-up) and serves in the
/// background.
pub async fn start(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<SocketAddr, CliError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::bind("metrics", &addr.to_string(), &e))?;
    let local = listener.local_addr().unwrap_or(addr);
    info!("metrics on http://{local}/metrics");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let metrics = metrics.clone();
                    async move {
                        let resp = if req.uri().path() == "/metrics" {
                            Response::builder()
                                .header("content-type", "text/plain; version=0.0.4")
                                .body(Full::new(Bytes::from(metrics.render())))
                        } else {
                            Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::from_static(b"try /metrics\n")))
                        };
                        Ok::<_, Infallible>(resp.expect("static response"))
                    }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await
                {
                    debug!(error = %e, "metrics connection");
                }
            });
        }
    });
    Ok(local)
}
