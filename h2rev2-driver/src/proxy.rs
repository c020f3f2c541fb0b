//! The public side's reverse HTTP proxy (PROTOCOL.md 2.2 and 2.3), on hyper.
//!
//! Requests are forwarded as HTTP/1.1 over pooled reverse connections (hyper's client
//! pool over [`crate::DialConnector`]), so keep-alive reuses conns instead of dialing per
//! request as the Go package does. Bodies stream both ways chunk by chunk; `Upgrade`
//! (WebSocket) becomes a raw byte pipe.

use std::collections::HashMap;
use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use h2rev2_proto::caller::Admitted;
use h2rev2_proto::dialer::DialError;
use h2rev2_proto::wire::{DialerId, Route};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::connector::{ConnectError, DialConnector};
use crate::runtime::{Rt, Timer};
use crate::server::{Server, respond_text};

/// A boxed error.
pub type BoxError = Box<dyn StdError + Send + Sync>;
/// The body type of proxied requests and responses.
pub type ProxyBody = BoxBody<Bytes, BoxError>;
/// The body of a request on its way to a NATed server: `Send` but not necessarily
/// `Sync` (axum's and tower's bodies are not), boxed once.
pub(crate) type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;
/// The pooled HTTP/1.1 client over reverse connections.
pub(crate) type ProxyClient = Client<DialConnector, UpstreamBody>;

/// A text response.
pub fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed())
        .expect("static response")
}

/// Bounds on the requests the HTTP proxy forwards, so that a slow backend or a Client
/// that never sends its body holds nothing for long, and one id's Clients cannot open
/// reverse connections without limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyLimits {
    /// How long the NATed server may take to answer with a response's headers; then
    /// the Client gets `504`. Streams that answered (SSE, WebSocket upgrades, long
    /// downloads) are not cut by it. Default 60 s.
    pub response_timeout: Duration,
    /// A request or response body that yields nothing for this long is aborted (the
    /// Client's upload that never arrives, a backend that stops mid-body). Not applied
    /// to `text/event-stream` responses, whose events may be far apart. Default 300 s.
    pub body_idle_timeout: Duration,
    /// Requests forwarded to one id at once; more wait up to `queue_timeout`, then get
    /// `503`. Default 1024.
    pub max_requests_per_id: usize,
    /// How long a request waits for one of `max_requests_per_id` (and of
    /// `max_requests_per_client`). Default 2 s.
    pub queue_timeout: Duration,
    /// One Client IP address's share of an id's requests in flight. Past it, the
    /// address may still use the id's free permits, except the last quarter of
    /// `max_requests_per_id`, which is kept for addresses within their share; an
    /// address past its share with the id that busy waits up to `queue_timeout`,
    /// then gets `429`. So one address (one attacker, or Clients that stop reading)
    /// cannot take all of an id's requests, while a load balancer or a NAT with many
    /// Clients behind one address is not refused while the id has room. Default 64.
    pub max_requests_per_client: usize,
}

impl Default for ProxyLimits {
    fn default() -> Self {
        ProxyLimits {
            response_timeout: Duration::from_secs(60),
            body_idle_timeout: Duration::from_secs(300),
            max_requests_per_id: 1024,
            queue_timeout: Duration::from_secs(2),
            max_requests_per_client: 64,
        }
    }
}

/// An id's pooled client and the permits of its requests in flight.
#[derive(Clone)]
struct Upstream {
    client: ProxyClient,
    permits: Arc<Semaphore>,
    by_client: Arc<Mutex<HashMap<IpAddr, Arc<Semaphore>>>>,
}

/// What a proxied request holds while it lasts (its body included): one of its id's
/// permits and one of its Client address's.
struct RequestPermit {
    _id: OwnedSemaphorePermit,
    _client: ClientPermit,
}

/// One of a Client address's permits for an id; the address's entry is removed when
/// its last permit goes.
struct ClientPermit {
    permit: Option<OwnedSemaphorePermit>,
    map: Arc<Mutex<HashMap<IpAddr, Arc<Semaphore>>>>,
    ip: IpAddr,
}

impl Drop for ClientPermit {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        // Clones are made under this lock only, so a count of one (the map's) means
        // nobody holds or waits for this address's permits.
        if map.get(&self.ip).is_some_and(|s| Arc::strong_count(s) == 1) {
            map.remove(&self.ip);
        }
    }
}

/// Why a request got no permit.
enum Busy {
    /// Its Client address has `max_requests_per_client` in flight to this id.
    Client,
    /// The id has `max_requests_per_id` in flight.
    Id,
}

impl Upstream {
    /// Waits (until `deadline`) for a permit of `ip` and one of the id.
    ///
    /// `per_client` is an address's share, not a hard cap: past it, an address may
    /// still use the id's permits while more than `reserve` of them are free (a load
    /// test, a corporate NAT or a load balancer is one address with many Clients).
    /// The last `reserve` permits go only to addresses within their share, so one
    /// address (Clients that stop reading, say) never takes them all; past its share
    /// with the id that busy, a request waits for one of its address's own permits.
    async fn permit(
        &self,
        rt: &Rt,
        ip: IpAddr,
        per_client: usize,
        reserve: usize,
        deadline: std::time::Instant,
    ) -> Result<RequestPermit, Busy> {
        let sem = self
            .by_client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(ip)
            .or_insert_with(|| Arc::new(Semaphore::new(per_client.max(1))))
            .clone();
        // From here on, `client` removes the address's entry when it is the last.
        let mut client = ClientPermit {
            permit: None,
            map: self.by_client.clone(),
            ip,
        };
        let own = match sem.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) if self.permits.available_permits() > reserve => {
                match self.permits.clone().try_acquire_owned() {
                    Ok(p) => {
                        drop(sem);
                        return Ok(RequestPermit {
                            _id: p,
                            _client: client,
                        });
                    }
                    Err(_) => None,
                }
            }
            Err(_) => None,
        };
        let own = match own {
            Some(p) => Some(p),
            None => rt
                .timeout_at(deadline, sem.clone().acquire_owned())
                .await
                .and_then(Result::ok),
        };
        // Before `client` can be dropped: its entry goes when no one else holds it.
        drop(sem);
        client.permit = Some(own.ok_or(Busy::Client)?);
        let id = rt.timeout_at(deadline, self.permits.clone().acquire_owned());
        match id.await {
            Some(Ok(p)) => Ok(RequestPermit {
                _id: p,
                _client: client,
            }),
            _ => Err(Busy::Id),
        }
    }
}

/// Most ids with a pooled client at once; past it the map is emptied (requests in
/// flight keep their clients, idle pooled conns of the others are dropped).
const MAX_POOLED_IDS: usize = 4096;

/// The proxy's pooled clients, one per id, each with a connector that dials exactly
/// that id: an id never travels through a URI authority, where `alice@corp` would be
/// read as host `corp` and `DB` would share `db`'s pooled connections.
#[derive(Default)]
pub(crate) struct ProxyClients {
    by_id: HashMap<DialerId, Upstream>,
    closed: bool,
}

impl ProxyClients {
    /// Drops every pooled client (and its idle conns); no new one is made after.
    pub(crate) fn close(&mut self) {
        self.closed = true;
        self.by_id.clear();
    }

    /// Drops the pooled client of `id` and its idle conns (a reload revoked a
    /// session of the id): the next request dials afresh.
    pub(crate) fn forget(&mut self, id: &DialerId) {
        self.by_id.remove(id);
    }
}

/// The pooled client for `id`, made on first use; `None` once the server is shutting
/// down.
fn client(server: &Server, id: &DialerId) -> Option<Upstream> {
    let mut clients = server
        .inner
        .clients
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if clients.closed || server.shutting_down() {
        return None;
    }
    if let Some(c) = clients.by_id.get(id) {
        return Some(c.clone());
    }
    if clients.by_id.len() >= MAX_POOLED_IDS {
        clients.by_id.clear();
    }
    let rt = server.inner.rt.clone();
    let client = Client::builder(rt.clone())
        .pool_timer(rt)
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(1024)
        .set_host(false)
        .build(DialConnector::to(server.clone(), id.clone()));
    let limit = server.config().proxy.max_requests_per_id.max(1);
    let upstream = Upstream {
        client,
        permits: Arc::new(Semaphore::new(limit)),
        by_client: Arc::default(),
    };
    clients.by_id.insert(id.clone(), upstream.clone());
    Some(upstream)
}

/// Forgets `id`'s pooled client (its session is gone: nothing to reuse).
fn forget_client(server: &Server, id: &DialerId) {
    server
        .inner
        .clients
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .by_id
        .remove(id);
}

/// The authority of every proxied request URI. The pool of a client is per id, so
/// it carries no meaning; the id goes in `Host` and in the connector.
const UPSTREAM_AUTHORITY: &str = "h2rev2.invalid";

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers (RFC 9110 7.6.1), including those named by `Connection`.
/// Returns the `Upgrade` value when the message asks for a protocol upgrade.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> Option<HeaderValue> {
    let mut named: Vec<HeaderName> = Vec::new();
    let mut upgrade_requested = false;
    for v in headers.get_all(header::CONNECTION) {
        if let Ok(s) = v.to_str() {
            for token in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if token.eq_ignore_ascii_case("upgrade") {
                    upgrade_requested = true;
                }
                if let Ok(n) = HeaderName::from_bytes(token.as_bytes()) {
                    named.push(n);
                }
            }
        }
    }
    let upgrade = headers
        .remove(header::UPGRADE)
        .filter(|_| upgrade_requested);
    for n in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(n);
    }
    headers.remove(header::PROXY_AUTHORIZATION);
    upgrade
}

fn append_forwarded(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    tls: bool,
    host: Option<HeaderValue>,
    prefix: Option<&str>,
) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let ip = peer.ip().to_string();
    let value = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(xff, v);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    if let Some(h) = host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), h);
    }
    if let Some(p) = prefix.and_then(|p| HeaderValue::from_str(p).ok()) {
        headers.insert(HeaderName::from_static("x-forwarded-prefix"), p);
    }
}

/// Why a proxied request got no response, in words safe to show a Client: the status
/// and what the far side did (`refused the connection`, `closed the connection
/// without a response`, `timed out`...). The error itself, with addresses and causes,
/// is for the log only.
pub fn upstream_failure(e: &(dyn StdError + 'static)) -> (StatusCode, &'static str) {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    let mut connect = false;
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() {
                return (
                    StatusCode::BAD_GATEWAY,
                    "closed the connection without a response",
                );
            }
            if h.is_timeout() {
                return (StatusCode::GATEWAY_TIMEOUT, "timed out");
            }
        }
        if let Some(l) = err.downcast_ref::<hyper_util::client::legacy::Error>() {
            connect |= l.is_connect();
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::ConnectionRefused => {
                    return (StatusCode::BAD_GATEWAY, "refused the connection");
                }
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                    return (StatusCode::BAD_GATEWAY, "reset the connection");
                }
                io::ErrorKind::TimedOut => return (StatusCode::GATEWAY_TIMEOUT, "timed out"),
                _ => {}
            }
        }
        cur = err.source();
    }
    if connect {
        (StatusCode::BAD_GATEWAY, "could not be reached")
    } else {
        (StatusCode::BAD_GATEWAY, "failed to answer")
    }
}

fn dial_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a DialError> {
    let mut cur: Option<&'a (dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(c) = err.downcast_ref::<ConnectError>() {
            return c.dial_error();
        }
        if let Some(d) = err.downcast_ref::<DialError>() {
            return Some(d);
        }
        cur = err.source();
    }
    None
}

/// Applies the server's [`h2rev2_proto::caller::CallerPolicy`] to a Client's request
/// for `id`. The credential is the tunnel's, not the NATed server's: taken from
/// `Proxy-Authorization` (never forwarded), else from `Authorization`, which is then
/// removed, or the connection's verified client certificate `identities` (an
/// `Authorization` that opened nothing is then left for the NATed server). The refusal to send, if any, names no id, so known and unknown ids look
/// the same.
fn refuse_caller(
    server: &Server,
    id: &DialerId,
    peer: SocketAddr,
    identities: &[String],
    headers: &mut HeaderMap,
) -> Option<Response<ProxyBody>> {
    let policy = &server.config().callers;
    if !policy.is_enforced() {
        return None;
    }
    let proxy_auth = headers.get(header::PROXY_AUTHORIZATION).is_some();
    let name = if proxy_auth {
        header::PROXY_AUTHORIZATION
    } else {
        header::AUTHORIZATION
    };
    let given = headers.get(&name).and_then(|v| v.to_str().ok());
    match policy.check(id, given, identities) {
        Ok(Admitted::Header) => {
            headers.remove(name);
            None
        }
        Ok(Admitted::Open | Admitted::Certificate) => {
            // The tunnel's own header is never forwarded; `Authorization` opened
            // nothing here, so it is the NATed server's.
            headers.remove(header::PROXY_AUTHORIZATION);
            None
        }
        Err(refusal) => {
            server
                .metrics()
                .auth_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            info!(%peer, %id, "proxy: caller refused: {refusal}");
            let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::FORBIDDEN);
            let mut resp = text(status, format!("h2rev2: {refusal}\n"));
            if status == StatusCode::UNAUTHORIZED {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer, Basic realm=\"h2rev2\""),
                );
            }
            Some(resp)
        }
    }
}

/// Forwards `req` to the Listener `id` as `path_and_query`; once the response body
/// is done (or dropped), writes its access log line (target `h2rev2::access`) and
/// counts it in the metrics.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn forward(
    server: &Server,
    req: Request<UpstreamBody>,
    id: DialerId,
    path_and_query: String,
    prefix: Option<String>,
    peer: SocketAddr,
    identities: Arc<[String]>,
    tls: bool,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<ProxyBody> {
    if req.headers().contains_key(crate::cluster::TCP_HEADER) {
        // A TCP connection another replica of the cluster forwards for `id`.
        return crate::cluster::serve_tcp(server, req, id).await;
    }
    let started = server.inner.rt.now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = forward_inner(
        server,
        req,
        id.clone(),
        path_and_query,
        prefix,
        peer,
        identities,
        tls,
        client_upgrade,
    )
    .await;
    let status = resp.status();
    resp.map(|inner| {
        AccessBody {
            inner,
            bytes: 0,
            line: Some(AccessLine {
                server: server.clone(),
                method,
                id,
                path,
                peer,
                status,
                started,
            }),
        }
        .boxed()
    })
}

/// What the access log line of one request says, written when its body is done.
struct AccessLine {
    server: Server,
    method: http::Method,
    id: DialerId,
    path: String,
    peer: SocketAddr,
    status: StatusCode,
    started: std::time::Instant,
}

impl AccessLine {
    fn write(self, bytes: u64, complete: bool) {
        let took = self
            .server
            .inner
            .rt
            .now()
            .saturating_duration_since(self.started);
        self.server
            .metrics()
            .observe_request(self.id.as_str(), self.status.as_u16(), took);
        tracing::info!(
            target: "h2rev2::access",
            method = %self.method,
            id = %self.id,
            path = %self.path,
            status = self.status.as_u16(),
            bytes,
            duration_ms = took.as_secs_f64() * 1000.0,
            peer = %self.peer,
            complete,
            "{} {} {}",
            self.method,
            self.path,
            self.status.as_u16(),
        );
    }
}

/// A response body that counts the bytes sent to the Client and writes the access
/// line when it ends, fails or is dropped.
struct AccessBody {
    inner: ProxyBody,
    bytes: u64,
    line: Option<AccessLine>,
}

impl Body for AccessBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    this.bytes += d.len() as u64;
                }
                if this.inner.is_end_stream() {
                    if let Some(line) = this.line.take() {
                        line.write(this.bytes, true);
                    }
                }
            }
            Some(Err(_)) => {
                if let Some(line) = this.line.take() {
                    line.write(this.bytes, false);
                }
            }
            None => {
                if let Some(line) = this.line.take() {
                    line.write(this.bytes, true);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AccessBody {
    fn drop(&mut self) {
        if let Some(line) = self.line.take() {
            // Never polled to the end: complete only if there was nothing left.
            let complete = self.inner.is_end_stream();
            line.write(self.bytes, complete);
        }
    }
}

/// The `kind` label of an upstream failure, from [`upstream_failure`]'s words.
fn upstream_kind(what: &str) -> &'static str {
    match what {
        "closed the connection without a response" => "closed",
        "timed out" => "timeout",
        "refused the connection" => "refused",
        "reset the connection" => "reset",
        "could not be reached" => "unreachable",
        _ => "failed",
    }
}

/// The `kind` label of a failed dial (as in `h2rev2_dial_errors_total`).
fn dial_kind(d: &DialError) -> &'static str {
    let i = match d {
        DialError::NoSession => 0,
        DialError::Timeout => 1,
        DialError::PickupFailed(_) => 2,
        DialError::SessionClosed(_) => 3,
        DialError::Limit(_) => 4,
    };
    crate::metrics::DIAL_ERROR_KINDS[i]
}

/// The answer to a request another replica forwarded for an id this one holds no
/// session of (any more): `502`, marked so that the sender tries another holder.
pub(crate) fn missed(id: &DialerId) -> Response<ProxyBody> {
    let mut resp = text(
        StatusCode::BAD_GATEWAY,
        format!("h2rev2: {id}: {}\n", DialError::NoSession.client_text()),
    );
    resp.headers_mut().insert(
        HeaderName::from_static(crate::cluster::MISS_HEADER),
        HeaderValue::from_static("1"),
    );
    resp
}

#[allow(clippy::too_many_arguments)]
async fn forward_inner(
    server: &Server,
    req: Request<UpstreamBody>,
    id: DialerId,
    path_and_query: String,
    prefix: Option<String>,
    peer: SocketAddr,
    identities: Arc<[String]>,
    tls: bool,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<ProxyBody> {
    let uri: Uri = match format!("http://{UPSTREAM_AUTHORITY}{path_and_query}").parse() {
        Ok(u) => u,
        Err(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                "the path cannot form a request URL\n".into(),
            );
        }
    };
    let (mut parts, body) = req.into_parts();
    let cluster = server.inner.cluster.get().cloned();
    let (mut peer, mut tls) = (peer, tls);
    let mut forwarded = false;
    match crate::cluster::Cluster::hop(cluster.as_deref(), &mut parts.headers) {
        crate::cluster::Hop::Invalid => {
            return text(
                StatusCode::FORBIDDEN,
                "h2rev2: bad cluster credentials\n".into(),
            );
        }
        // Forwarded by the replica the Client reached, which checked its credentials;
        // served from local sessions only, for the Client's address (its
        // `X-Forwarded-For` and its share of the id's requests).
        crate::cluster::Hop::Valid(client) => {
            if let Some((addr, https)) = client {
                (peer, tls) = (addr, https);
            }
            forwarded = true;
            if !server.inner.sessions.holds(&id) {
                return missed(&id);
            }
        }
        crate::cluster::Hop::None => {
            if let Some(refused) = refuse_caller(server, &id, peer, &identities, &mut parts.headers)
            {
                return refused;
            }
            if let Some(c) = cluster.filter(|_| !server.inner.sessions.holds(&id)) {
                match c.route(&id).await {
                    h2rev2_proto::cluster::Route::Remote(owners) => {
                        debug!(%id, replica = %owners[0].replica, "forwarding to a replica that holds the id");
                        let client = (peer, tls);
                        return c
                            .forward(&id, owners, parts, body, client, client_upgrade)
                            .await;
                    }
                    h2rev2_proto::cluster::Route::Unavailable => {
                        server.metrics().upstream_error("cluster_unavailable");
                        return text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "h2rev2: the cluster registry is unavailable\n".into(),
                        );
                    }
                    _ => {}
                }
            }
        }
    }
    let host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let upgrade = strip_hop_by_hop(&mut parts.headers).filter(|_| client_upgrade.is_some());
    if let Some(u) = &upgrade {
        parts.headers.insert(header::UPGRADE, u.clone());
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    append_forwarded(&mut parts.headers, peer, tls, host, prefix.as_deref());
    match HeaderValue::from_bytes(id.as_str().as_bytes()) {
        Ok(h) => {
            parts.headers.insert(header::HOST, h);
        }
        Err(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                "id cannot be a Host header\n".into(),
            );
        }
    }
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let limits = server.config().proxy;
    let rt = server.inner.rt.clone();
    let body = IdleBody::new(body, limits.body_idle_timeout, rt.clone(), None).boxed_unsync();
    let out = Request::from_parts(parts, body);
    let Some(upstream) = client(server, &id) else {
        if forwarded {
            // Another replica sent it: it tries the id's other holders.
            return missed(&id);
        }
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "h2rev2: the server is shutting down\n".into(),
        );
    };
    let deadline = rt.now() + limits.queue_timeout;
    let permit = match upstream
        .permit(
            &rt,
            peer.ip(),
            limits.max_requests_per_client,
            limits.max_requests_per_id / 4,
            deadline,
        )
        .await
    {
        Ok(p) => p,
        Err(busy) => {
            let (status, what) = match busy {
                Busy::Client => {
                    info!(%id, %peer, "proxy: too many requests in flight from this address");
                    (StatusCode::TOO_MANY_REQUESTS, " from your address")
                }
                Busy::Id => {
                    info!(%id, "proxy: too many requests in flight for this id");
                    (StatusCode::SERVICE_UNAVAILABLE, "")
                }
            };
            let mut resp = text(
                status,
                format!("h2rev2: {id}: too many requests in flight{what}, try again later\n"),
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return resp;
        }
    };
    let Some(answered) = rt
        .timeout(limits.response_timeout, upstream.client.request(out))
        .await
    else {
        info!(%id, timeout = ?limits.response_timeout, "proxy: no response in time");
        server.metrics().upstream_error("response_timeout");
        server
            .inner
            .sessions
            .failed(&id, "proxy: no response in time");
        return text(
            StatusCode::GATEWAY_TIMEOUT,
            format!("h2rev2: {id}: the internal server did not answer in time\n"),
        );
    };
    let mut resp = match answered {
        Ok(r) => r,
        Err(e) => {
            return match dial_error(&e) {
                Some(d) => {
                    server.metrics().upstream_error(dial_kind(d));
                    if *d == DialError::NoSession {
                        forget_client(server, &id);
                    }
                    // The session here ended before the request reached the Listener:
                    // the replica that sent it tries the id's other holders.
                    if forwarded && matches!(d, DialError::NoSession | DialError::SessionClosed(_))
                    {
                        return missed(&id);
                    }
                    text(
                        StatusCode::from_u16(d.status()).unwrap_or(StatusCode::BAD_GATEWAY),
                        format!("h2rev2: {id}: {}\n", d.client_text()),
                    )
                }
                None => {
                    let (status, what) = upstream_failure(&e);
                    info!(%id, error = ?e, "proxy: the reverse connection {what}");
                    server.metrics().upstream_error(upstream_kind(what));
                    server
                        .inner
                        .sessions
                        .failed(&id, &format!("proxy: the reverse connection {what}"));
                    text(
                        status,
                        format!("h2rev2: {id}: the reverse connection {what}\n"),
                    )
                }
            };
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream = hyper::upgrade::on(&mut resp);
            server.inner.rt.spawn(async move {
                // The upgraded stream counts as a request in flight while it lasts.
                let _permit = permit;
                match tokio::try_join!(client_upgrade, upstream) {
                    Ok((c, u)) => {
                        let mut c = TokioIo::new(c);
                        let mut u = TokioIo::new(u);
                        if let Err(e) = crate::relay::relay(&mut c, &mut u).await {
                            debug!(error = %e, "upgraded connection ended");
                        }
                    }
                    Err(e) => debug!(error = %e, "upgrade failed"),
                }
            });
            return resp.map(|b| b.map_err(BoxError::from).boxed());
        }
    }
    strip_hop_by_hop(resp.headers_mut());
    let events = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let idle = if events {
        None
    } else {
        Some(limits.body_idle_timeout)
    };
    resp.map(|b| {
        let b = b.map_err(BoxError::from);
        IdleBody::with_permit(b, idle, rt, permit).boxed()
    })
}

pin_project_lite::pin_project! {
    /// A body that fails when its source yields nothing for `idle` (while it is being
    /// read), and that holds its request's permit until it is done or dropped. The
    /// timer is re-armed only when it fires (progress just records the time), so a
    /// busy body costs no timer operation per chunk.
    struct IdleBody<B> {
        #[pin]
        inner: B,
        idle: Option<Duration>,
        timer: Option<Pin<Box<dyn Timer>>>,
        last: std::time::Instant,
        rt: Rt,
        permit: Option<RequestPermit>,
    }
}

impl<B> IdleBody<B> {
    fn new(inner: B, idle: Duration, rt: Rt, permit: Option<RequestPermit>) -> Self {
        IdleBody {
            inner,
            idle: Some(idle),
            timer: None,
            last: rt.now(),
            rt,
            permit,
        }
    }

    fn with_permit(inner: B, idle: Option<Duration>, rt: Rt, permit: RequestPermit) -> Self {
        IdleBody {
            inner,
            idle,
            timer: None,
            last: rt.now(),
            rt,
            permit: Some(permit),
        }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            if this.idle.is_some() {
                *this.last = this.rt.now();
            }
            if frame.is_none() {
                this.permit.take();
            }
            return Poll::Ready(frame);
        }
        let Some(idle) = *this.idle else {
            return Poll::Pending;
        };
        let rt = &*this.rt;
        let due = *this.last + idle;
        let timer = this.timer.get_or_insert_with(|| rt.timer(due));
        while timer.as_mut().poll(cx).is_ready() {
            if rt.now() >= *this.last + idle {
                this.permit.take();
                *this.idle = None;
                return Poll::Ready(Some(Err(
                    format!("the body made no progress for {idle:?}").into()
                )));
            }
            // Progress since it was armed: wait for the rest of the idle time.
            timer.as_mut().reset(*this.last + idle);
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves HTTP/1.1 Clients on `io`.
pub(crate) async fn serve_http1<IO>(
    server: Server,
    io: IO,
    peer: SocketAddr,
    identities: Arc<[String]>,
    tls: bool,
    server_name: Option<Arc<str>>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut stop = server.shutdown_signal();
    let cfg = server.config().clone();
    let svc_server = server.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let server = svc_server.clone();
        let identities = identities.clone();
        let sni = server_name.clone();
        async move { Ok::<_, Infallible>(handle_http1(server, req, peer, identities, tls, sni).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(server.inner.rt.clone())
        .header_read_timeout(cfg.handshake_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(%peer, error = %e, "HTTP/1.1 connection ended");
            }
        }
        until = crate::server::stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = server.inner.rt.timeout_at(until, conn).await;
        }
    }
}

async fn handle_http1(
    server: Server,
    req: Request<Incoming>,
    peer: SocketAddr,
    identities: Arc<[String]>,
    tls: bool,
    server_name: Option<Arc<str>>,
) -> Response<ProxyBody> {
    handle(server, req, peer, identities, tls, server_name.as_deref()).await
}

/// The host name a request names: its `:authority` (HTTP/2, or an absolute URL),
/// else its `Host` header, else the TLS server name of its connection.
pub(crate) fn request_host<'a>(
    uri: &'a Uri,
    headers: &'a HeaderMap,
    server_name: Option<&'a str>,
) -> Option<&'a str> {
    uri.authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .or(server_name)
}

/// Serves one Client request on the proxy routes (any body type).
async fn handle<B>(
    server: Server,
    mut req: Request<B>,
    peer: SocketAddr,
    identities: Arc<[String]>,
    tls: bool,
    server_name: Option<&str>,
) -> Response<ProxyBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let route = server.config().routes.route_with_host(
        request_host(req.uri(), req.headers(), server_name),
        req.uri().path(),
        req.uri().query(),
    );
    let (id, pq, prefix) = match route {
        Ok(Route::Revdial(_)) => {
            return text(
                StatusCode::BAD_REQUEST,
                "reverse connections need HTTP/2 (TLS with ALPN h2) on the h2rev2 server itself\n"
                    .into(),
            );
        }
        Ok(Route::Proxy {
            id,
            path_and_query,
            prefix,
        }) => (id, path_and_query, Some(prefix)),
        Ok(Route::Default { id, path_and_query } | Route::Host { id, path_and_query }) => {
            (id, path_and_query, None)
        }
        Ok(Route::NotFound) => return text(StatusCode::NOT_FOUND, "no such route\n".into()),
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let wants_upgrade = req.headers().contains_key(header::UPGRADE);
    let on_upgrade = wants_upgrade.then(|| hyper::upgrade::on(&mut req));
    let req = req.map(|b| b.map_err(Into::into).boxed_unsync());
    forward(
        &server, req, id, pq, prefix, peer, identities, tls, on_upgrade,
    )
    .await
}

impl Server {
    /// Serves one Client request on the proxy routes (`B/proxy/{id}/…` and the
    /// default target), for mounting the proxy in your own hyper or axum server.
    ///
    /// `peer` is the Client's address and `tls` whether it came over TLS (for
    /// `X-Forwarded-For` and `X-Forwarded-Proto`). A WebSocket (or any `Upgrade`)
    /// request works when your server is hyper's HTTP/1.1 with upgrades enabled.
    ///
    /// Reverse connections themselves (`B/revdial`) cannot be served this way: they
    /// need raw HTTP/2 streams, so Listeners must connect to [`Server::serve`] (or
    /// [`Server::serve_connection`]); here they get `400`.
    ///
    /// Caller certificate rules see no certificate here (your server did the TLS):
    /// such Clients need a header credential.
    ///
    /// The body needs to be `Send`, not `Sync`: axum's `Body` and tower's boxed
    /// bodies work as they are (boxed once, chunks passed on without a copy).
    pub async fn handle<B>(
        &self,
        req: Request<B>,
        peer: SocketAddr,
        tls: bool,
    ) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        handle(self.clone(), req, peer, Arc::from([]), tls, None).await
    }

    /// [`Server::handle`] as a hyper (and tower) service for one Client connection.
    ///
    /// ```no_run
    /// # async fn run<IO>(server: h2rev2_driver::Server, io: IO, peer: std::net::SocketAddr)
    /// # where IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {
    /// let io = hyper_util::rt::TokioIo::new(io);
    /// hyper::server::conn::http1::Builder::new()
    ///     .serve_connection(io, server.service(peer, false))
    ///     .with_upgrades()
    ///     .await
    ///     .ok();
    /// # }
    /// ```
    pub fn service(&self, peer: SocketAddr, tls: bool) -> ProxyService {
        ProxyService {
            server: self.clone(),
            peer,
            tls,
        }
    }
}

/// The proxy routes of a [`Server`] as a hyper and tower service (see
/// [`Server::service`]). Never fails: errors are answered with a status.
#[derive(Clone, Debug)]
pub struct ProxyService {
    server: Server,
    peer: SocketAddr,
    tls: bool,
}

type ServiceFuture =
    Pin<Box<dyn std::future::Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

impl<B> hyper::service::Service<Request<B>> for ProxyService
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn call(&self, req: Request<B>) -> Self::Future {
        let (server, peer, tls) = (self.server.clone(), self.peer, self.tls);
        Box::pin(async move { Ok(handle(server, req, peer, Arc::from([]), tls, None).await) })
    }
}

impl<B> tower_service::Service<Request<B>> for ProxyService
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        hyper::service::Service::call(&*self, req)
    }
}

/// An h2 request body as an [`http_body::Body`], releasing flow-control credit as
/// hyper takes each chunk.
struct H2Body {
    recv: RecvStream,
    data_done: bool,
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match self.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => self.data_done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        match self.recv.poll_trailers(cx) {
            Poll::Ready(Ok(Some(t))) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

/// Sends `data` on an h2 stream, waiting for flow-control credit as needed.
pub(crate) async fn send_all(
    send: &mut h2::SendStream<Bytes>,
    mut data: Bytes,
) -> Result<(), h2::Error> {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let cap = loop {
            let c = send.capacity();
            if c > 0 {
                break c;
            }
            match poll_fn(|cx| send.poll_capacity(cx)).await {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Err(h2::Error::from(h2::Reason::CANCEL)),
            }
        };
        send.send_data(data.split_to(cap.min(data.len())), false)?;
    }
    Ok(())
}

/// Serves one proxied request of an HTTP/2 Client.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve_h2_proxy(
    server: Server,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    id: DialerId,
    path_and_query: String,
    prefix: Option<String>,
    peer: SocketAddr,
    identities: Arc<[String]>,
    tls: bool,
) {
    let req = req.map(|recv| {
        H2Body {
            recv,
            data_done: false,
        }
        .map_err(BoxError::from)
        .boxed_unsync()
    });
    // A Client that resets its stream (rapid reset, CVE-2023-44487, spread out so that
    // each request is accepted first) must not leave its dial and upstream request
    // running: dropping `forward` cancels both.
    let forwarded = forward(
        &server,
        req,
        id,
        path_and_query,
        prefix,
        peer,
        identities,
        tls,
        None,
    );
    let resp = tokio::select! {
        resp = forwarded => resp,
        reason = poll_fn(|cx| respond.poll_reset(cx)) => {
            return debug!(?reason, "client reset the request: its work is dropped");
        }
    };
    let (mut parts, mut body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.version = Version::HTTP_2;
    let end = body.is_end_stream();
    let mut send = match respond.send_response(Response::from_parts(parts, ()), end) {
        Ok(s) => s,
        Err(e) => return debug!(error = %e, "client went away before the response"),
    };
    if end {
        return;
    }
    loop {
        // A reset also ends a response that waits for upstream bytes (a long poll).
        let frame = tokio::select! {
            frame = body.frame() => frame,
            reason = poll_fn(|cx| send.poll_reset(cx)) => {
                return debug!(?reason, "client reset the response stream");
            }
        };
        let Some(frame) = frame else { break };
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => {
                    if send_all(&mut send, data).await.is_err() {
                        return;
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        let _ = send.send_trailers(trailers);
                        return;
                    }
                }
            },
            Err(e) => {
                debug!(error = %e, "upstream body failed");
                send.send_reset(h2::Reason::INTERNAL_ERROR);
                return;
            }
        }
    }
    let _ = send.send_data(Bytes::new(), true);
}

/// Answers a request on an h2 stream that cannot be served.
#[allow(dead_code)]
pub(crate) fn refuse(respond: &mut SendResponse<Bytes>, status: StatusCode, msg: &str) {
    respond_text(respond, status, msg);
}
