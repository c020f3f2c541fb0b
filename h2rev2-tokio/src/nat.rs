//! Ready-made NAT-side services over a [`Listener`]: a reverse proxy to an internal
//! HTTP(S) URL (the original CLI's `-proxy-host`) and a raw TCP relay.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tracing::{debug, info};

use crate::Listener;
use h2rev2_driver::{BoxError, ProxyBody, strip_hop_by_hop, text_response as text};

/// Settings of [`serve_http_proxy`].
#[derive(Clone, Debug)]
pub struct HttpProxyOptions {
    /// The internal server, `http://host:port[/base]` or `https://…`.
    pub target: Uri,
    /// Strip this prefix from request paths (e.g. `/proxy/001` when the public server is
    /// the Go package, which forwards full paths).
    pub strip_prefix: Option<String>,
    /// TLS settings for an `https://` target (its ALPN is replaced by `http/1.1`).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Keep the Client's `Host` header instead of the target's authority.
    pub preserve_host: bool,
}

impl HttpProxyOptions {
    /// Options for `target`.
    pub fn new(target: Uri) -> Self {
        HttpProxyOptions {
            target,
            strip_prefix: None,
            tls: None,
            preserve_host: false,
        }
    }
}

type Upstream = Client<hyper_rustls::HttpsConnector<HttpConnector>, ProxyBody>;

/// Serves every conn accepted by `listener` as HTTP/1.1, forwarding each request to the
/// internal server. Returns when the Listener closes.
pub async fn serve_http_proxy(listener: Listener, opts: HttpProxyOptions) -> io::Result<()> {
    let scheme = opts.target.scheme_str().unwrap_or("");
    if scheme != "http" && scheme != "https" || opts.target.authority().is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "proxy target {} must be http://host[:port] or https://host[:port]",
                opts.target
            ),
        ));
    }
    let tls = match &opts.tls {
        Some(t) => (**t).clone(),
        None => {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            (*crate::tls::client_config(crate::tls::ServerTrust::Roots(roots), None, &[])
                .map_err(io::Error::other)?)
            .clone()
        }
    };
    let mut tls = tls;
    // hyper-rustls sets ALPN itself (http/1.1 only here).
    tls.alpn_protocols = Vec::new();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client: Upstream = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(https);
    info!(target = %opts.target, "Reversing proxy to {}", opts.target);
    let opts = Arc::new(opts);
    loop {
        let conn = listener.accept().await?;
        let client = client.clone();
        let opts = opts.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let client = client.clone();
                let opts = opts.clone();
                async move { Ok::<_, Infallible>(forward(&client, &opts, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(conn), service)
                .with_upgrades()
                .await
            {
                debug!(error = %e, "reverse conn ended");
            }
        });
    }
}

fn target_uri(opts: &HttpProxyOptions, req_uri: &Uri) -> Result<Uri, String> {
    let mut path = req_uri.path();
    if let Some(p) = &opts.strip_prefix {
        // Only a whole segment: `/proxy/001` strips from `/proxy/001/x`, not from
        // `/proxy/0012/x`.
        if let Some(rest) = path.strip_prefix(p.trim_end_matches('/')) {
            if rest.is_empty() || rest.starts_with('/') {
                path = rest;
            }
        }
    }
    let base = opts.target.path().trim_end_matches('/');
    let path = if path.is_empty() { "/" } else { path };
    let mut s = format!(
        "{}://{}{}{}",
        opts.target.scheme_str().unwrap_or("http"),
        opts.target
            .authority()
            .map(|a| a.as_str())
            .unwrap_or_default(),
        base,
        path
    );
    if let Some(q) = req_uri.query() {
        s.push('?');
        s.push_str(q);
    }
    s.parse().map_err(|e| format!("{e}"))
}

async fn forward(
    client: &Upstream,
    opts: &HttpProxyOptions,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let uri = match target_uri(opts, req.uri()) {
        Ok(u) => u,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("bad request path: {e}\n")),
    };
    let on_upgrade = req
        .headers()
        .contains_key(header::UPGRADE)
        .then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let upgrade = strip_hop_by_hop(&mut parts.headers).filter(|_| on_upgrade.is_some());
    if let Some(u) = &upgrade {
        parts.headers.insert(header::UPGRADE, u.clone());
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if !opts.preserve_host {
        if let Some(a) = uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(header::HOST, a);
        }
    }
    parts.uri = uri;
    let out = Request::from_parts(parts, body.map_err(BoxError::from).boxed());
    let mut resp = match client.request(out).await {
        Ok(r) => r,
        Err(e) => {
            // Clients get the short reason; the target and the cause go to the log.
            let (status, what) = h2rev2_driver::upstream_failure(&e);
            info!(target = %opts.target, error = ?e, "internal server {what}");
            return text(status, format!("h2rev2: the internal server {what}\n"));
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_up) = on_upgrade {
            let upstream = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                if let Ok((c, u)) = tokio::try_join!(client_up, upstream) {
                    let _ = h2rev2_driver::relay(&mut TokioIo::new(c), &mut TokioIo::new(u)).await;
                }
            });
            return resp.map(|b| b.map_err(BoxError::from).boxed());
        }
    }
    strip_hop_by_hop(resp.headers_mut());
    resp.map(|b| b.map_err(BoxError::from).boxed())
}

/// Relays every conn accepted by `listener` to a TCP connection to `target`
/// (`host:port`). Returns when the Listener closes.
pub async fn relay_tcp(listener: Listener, target: String) -> io::Result<()> {
    loop {
        let mut conn = listener.accept().await?;
        let target = target.clone();
        tokio::spawn(async move {
            match tokio::net::TcpStream::connect(&target).await {
                Ok(mut tcp) => {
                    let _ = tcp.set_nodelay(true);
                    match h2rev2_driver::relay(&mut conn, &mut tcp).await {
                        Ok((a, b)) => debug!(%target, to_target = a, from_target = b, "relay done"),
                        Err(e) => {
                            // The tunnel broke: the target sees a reset, not a clean end.
                            h2rev2_driver::io::TcpClient::abort(&tcp);
                            debug!(%target, error = %e, "relay aborted");
                        }
                    }
                }
                Err(e) => info!(%target, error = %e, "cannot connect to the TCP target"),
            }
        });
    }
}

#[allow(dead_code)]
fn _assert_body(_: Bytes) {}
