//! Ready-made NAT-side services over a [`Listener`]: a reverse proxy to an internal
//! HTTP(S) URL (the original CLI's `-proxy-host`) and a raw TCP relay.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tower_service::Service as _;
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
    /// Give the internal server the Host the Client asked the public server for
    /// (its `X-Forwarded-Host`, else the `Host` received) instead of the target's
    /// authority: the public server itself sends `Host: {id}`, as the Go package does.
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

type Https = hyper_rustls::HttpsConnector<HttpConnector>;
type UpstreamIo = hyper_rustls::MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;
type UpstreamConn = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Serves every conn accepted by `listener` as HTTP/1.1, forwarding each request to the
/// internal server. Returns when the Listener closes.
///
/// Each reverse conn gets its own HTTP/1.1 connection to the internal server, opened
/// on its first request and polled in the conn's own task: requests on a reverse conn
/// come one at a time, so no pool is needed, no request crosses to another task, and
/// the internal connection closes with the reverse conn (nothing kept afterwards).
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
    let https: Https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    info!(target = %opts.target, "Reversing proxy to {}", opts.target);
    let opts = Arc::new(opts);
    loop {
        let conn = listener.accept().await?;
        tokio::spawn(serve_conn(conn, https.clone(), opts.clone()));
    }
}

/// One reverse conn: the HTTP/1.1 server on it and its internal connections, in one
/// task.
async fn serve_conn(conn: crate::RevConn, https: Https, opts: Arc<HttpProxyOptions>) {
    let (conns_tx, mut conns_rx) = mpsc::unbounded_channel::<UpstreamConn>();
    let slot = Arc::new(Mutex::new(None::<SendRequest<ProxyBody>>));
    let service = hyper::service::service_fn(move |req| {
        let upstream = Upstream {
            https: https.clone(),
            slot: slot.clone(),
            conns: conns_tx.clone(),
        };
        let opts = opts.clone();
        async move { Ok::<_, Infallible>(forward(&upstream, &opts, req).await) }
    });
    let server = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(conn), service)
        .with_upgrades();
    let mut server = Box::pin(server);
    let mut upstreams = FuturesUnordered::new();
    let served = loop {
        tokio::select! {
            r = &mut server => break r,
            Some(c) = conns_rx.recv() => upstreams.push(c),
            Some(()) = upstreams.next(), if !upstreams.is_empty() => {}
        }
    };
    if let Err(e) = served {
        debug!(error = %e, "reverse conn ended");
    }
    // The server (and with it the service's handle on the internal connection) is
    // gone: an idle internal connection ends now, an upgraded one hands its socket to
    // the relay task.
    drop(server);
    while let Ok(c) = conns_rx.try_recv() {
        upstreams.push(c);
    }
    while upstreams.next().await.is_some() {}
}

/// Why a request got no answer from the internal server.
#[derive(Debug)]
enum Failed {
    /// No connection could be made (refused, no such host, TLS failed...).
    Connect(BoxError),
    /// The connection failed during the request.
    Request(hyper::Error),
}

/// A reverse conn's way to the internal server: its one connection, opened on demand.
struct Upstream {
    https: Https,
    slot: Arc<Mutex<Option<SendRequest<ProxyBody>>>>,
    conns: mpsc::UnboundedSender<UpstreamConn>,
}

impl Upstream {
    /// Sends `req` on the conn's internal connection, opening one if there is none
    /// or it closed; a request the old connection could not take is sent once on a
    /// new one.
    async fn request(&self, req: Request<ProxyBody>) -> Result<Response<Incoming>, Failed> {
        // The connection is made to the URI's authority; the request line carries the
        // origin form (path and query) only.
        let mut req = req;
        let target = req.uri().clone();
        *req.uri_mut() = target
            .path_and_query()
            .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
        let cached = self.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut sr) = cached {
            if sr.ready().await.is_ok() {
                match sr.try_send_request(req).await {
                    Ok(resp) => {
                        self.keep(sr);
                        return Ok(resp);
                    }
                    Err(mut e) => match e.take_message() {
                        // Not sent (the internal server closed it just now): a new one.
                        Some(r) => req = r,
                        None => return Err(Failed::Request(e.into_error())),
                    },
                }
            }
        }
        let mut sr = self.open(target).await?;
        let resp = sr.send_request(req).await.map_err(Failed::Request)?;
        self.keep(sr);
        Ok(resp)
    }

    fn keep(&self, sr: SendRequest<ProxyBody>) {
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(sr);
    }

    async fn open(&self, uri: Uri) -> Result<SendRequest<ProxyBody>, Failed> {
        let io: UpstreamIo = self
            .https
            .clone()
            .call(uri)
            .await
            .map_err(Failed::Connect)?;
        let (sr, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| Failed::Connect(e.into()))?;
        let conn = conn.with_upgrades();
        let _ = self.conns.send(Box::pin(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "internal connection ended");
            }
        }));
        Ok(sr)
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
    let host = if opts.preserve_host {
        client_host(&parts.headers)
    } else {
        uri.authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    };
    if let Some(h) = host {
        parts.headers.insert(header::HOST, h);
    }
    parts.uri = uri;
    let out = Request::from_parts(parts, body.map_err(BoxError::from).boxed());
    let mut resp = match client.request(out).await {
        Ok(r) => r,
        Err(e) => {
            // Clients get the short reason; the target and the cause go to the log.
            let (status, what) = match &e {
                Failed::Connect(e) => match h2rev2_driver::upstream_failure(&**e) {
                    (_, "failed to answer") => (StatusCode::BAD_GATEWAY, "could not be reached"),
                    known => known,
                },
                Failed::Request(e) => h2rev2_driver::upstream_failure(e),
            };
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

/// The Host a Client asked the public server for: the single value of
/// `X-Forwarded-Host` (set by the public server, replacing any a Client sent), when it
/// is one plain host; `None` keeps the `Host` received.
fn client_host(headers: &http::HeaderMap) -> Option<HeaderValue> {
    let mut values = headers.get_all("x-forwarded-host").iter();
    let v = values.next()?;
    let plain = values.next().is_none()
        && v.to_str().is_ok_and(|s| {
            !s.is_empty() && !s.contains(',') && s.parse::<http::uri::Authority>().is_ok()
        });
    plain.then(|| v.clone())
}
