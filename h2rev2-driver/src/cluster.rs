//! A cluster of public servers: any replica serves any id. The core's
//! [`h2rev2_proto::cluster::Registry`] decides what the shared store holds; this
//! module carries it out (a [`ClusterStore`], Redis in `h2rev2-tokio`) and forwards a
//! proxied request (or a TCP forward's connection) for an id held elsewhere to a
//! replica that holds it, over one long-lived HTTP/2 connection per peer,
//! authenticated by the cluster token. The id's holders are tried in the registry's
//! order: the next one when a replica cannot be reached, when its connection failed
//! before the request went out, or, for a request without a body, when the request
//! was lost or the replica answered [`MISS_HEADER`] (no session of the id any more).
//!
//! A forwarded request carries `h2rev2-cluster-token`, `h2rev2-cluster-hop` (the
//! sending replica's name) and `h2rev2-cluster-client` (the Client's address and
//! scheme, for the owner's `X-Forwarded-*` and per-address limits). The receiving
//! replica checks the token (`403` otherwise), serves the request only from its own
//! sessions (a request is forwarded at most once), and does not check the Client's
//! credentials again: the replica the Client reached did, with the same rules. A
//! request that switches protocols (`Upgrade`) goes over a connection of its own in
//! HTTP/1.1, since HTTP/2 has none; the Client's `Host` (or `:authority`) goes along,
//! so host routing decides alike on both replicas. A TCP connection goes as one
//! HTTP/2 stream to the id's proxy route, marked [`TCP_HEADER`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::BoxStream;
use h2rev2_proto::cluster::{self, Op, Outcome, Owner, Registry, Route};
use h2rev2_proto::wire::DialerId;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::io::{Connect, Target};
use crate::proxy::{BoxError, ProxyBody, UpstreamBody, text};
use crate::runtime::Rt;

/// A boxed future, for [`ClusterStore`].
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The shared store of a cluster's registry. Operations are bounded by the driver
/// ([`ClusterConfig::op_timeout`]): a store that does not answer counts as failed.
pub trait ClusterStore: Send + Sync + 'static {
    /// Carries out `op` (see [`Op`] for each one's semantics).
    fn run(&self, op: Op) -> StoreFuture<Outcome>;
    /// The keys announced on [`cluster::CHANNEL`], until the subscription breaks
    /// (`None`: it could not be made; the driver asks again a moment later).
    fn changes(&self) -> StoreFuture<Option<BoxStream<'static, String>>>;
}

/// How a replica takes part in a cluster.
#[derive(Clone)]
pub struct ClusterConfig {
    /// Its name, address and lease times.
    pub registry: cluster::Config,
    /// The secret every replica shares; sent with forwarded requests.
    pub token: String,
    /// TLS settings for connections to other replicas (ALPN `h2` is set here).
    pub peer_tls: Arc<rustls::ClientConfig>,
    /// Bound on each store operation. Default 2 s.
    pub op_timeout: Duration,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("registry", &self.registry)
            .field("op_timeout", &self.op_timeout)
            .finish_non_exhaustive()
    }
}

impl ClusterConfig {
    /// A config with the default bounds.
    pub fn new(
        registry: cluster::Config,
        token: impl Into<String>,
        peer_tls: Arc<rustls::ClientConfig>,
    ) -> Self {
        ClusterConfig {
            registry,
            token: token.into(),
            peer_tls,
            op_timeout: Duration::from_secs(2),
        }
    }
}

/// Header of a forwarded request: the cluster token.
pub const TOKEN_HEADER: &str = "h2rev2-cluster-token";
/// Header of a forwarded request: the name of the replica that forwarded it.
pub const HOP_HEADER: &str = "h2rev2-cluster-hop";
/// Header of a forwarded request: the Client's address and scheme as the replica it
/// reached saw them (`203.0.113.7:51746 https`), for the owner's `X-Forwarded-*` and
/// its per-address limits. Believed only with a valid token; removed from every
/// request otherwise.
pub const CLIENT_HEADER: &str = "h2rev2-cluster-client";
/// Header of the answer to a forwarded request when the replica holds no session of
/// the id (any more): the forwarding replica then tries another holder.
pub const MISS_HEADER: &str = "h2rev2-cluster-miss";

fn empty_body() -> UpstreamBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

enum Msg {
    Leave(oneshot::Sender<()>),
    Unreachable(DialerId, Owner),
    Up(DialerId),
    Down(DialerId),
    Route(DialerId, oneshot::Sender<Route>),
    Result(u64, Outcome),
    Changed(Option<String>),
}

/// A replica's membership: the registry task's handle and the connections to peers.
pub(crate) struct Cluster {
    tx: mpsc::UnboundedSender<Msg>,
    config: ClusterConfig,
    connect: Arc<dyn Connect>,
    peers: Mutex<HashMap<String, hyper::client::conn::http2::SendRequest<UpstreamBody>>>,
    rt: Rt,
}

/// What a request's cluster headers say.
pub(crate) enum Hop {
    /// None: a Client's request.
    None,
    /// Forwarded by a replica that knows the token, for the Client it names (its
    /// address, and whether it came over TLS), if it names one.
    Valid(Option<(std::net::SocketAddr, bool)>),
    /// Cluster headers with a wrong token, or on a server outside any cluster.
    Invalid,
}

impl Cluster {
    pub(crate) fn start(
        rt: Rt,
        store: Arc<dyn ClusterStore>,
        config: ClusterConfig,
        connect: Arc<dyn Connect>,
        generation: u64,
    ) -> Arc<Cluster> {
        let (tx, rx) = mpsc::unbounded_channel();
        let registry = Registry::new(config.registry.clone(), generation);
        rt.spawn(run(
            rt.clone(),
            registry,
            store.clone(),
            tx.clone(),
            rx,
            config.op_timeout,
        ));
        rt.spawn(subscribe(rt.clone(), store, tx.clone()));
        info!(
            replica = %config.registry.replica,
            address = %config.registry.address,
            "joined the cluster"
        );
        Arc::new(Cluster {
            tx,
            config,
            connect,
            peers: Mutex::new(HashMap::new()),
            rt,
        })
    }

    /// This replica's name.
    pub(crate) fn replica(&self) -> &str {
        &self.config.registry.replica
    }

    pub(crate) fn session_up(&self, id: &DialerId) {
        let _ = self.tx.send(Msg::Up(id.clone()));
    }

    pub(crate) fn session_down(&self, id: &DialerId) {
        let _ = self.tx.send(Msg::Down(id.clone()));
    }

    /// Where a request for `id` (held by no local session) goes; bounded.
    pub(crate) async fn route(&self, id: &DialerId) -> Route {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Msg::Route(id.clone(), reply)).is_err() {
            return Route::Unavailable;
        }
        match self.rt.timeout(self.config.op_timeout, rx).await {
            Some(Ok(r)) => r,
            _ => Route::Unavailable,
        }
    }

    /// Reads and removes the cluster headers of a request.
    pub(crate) fn hop(cluster: Option<&Cluster>, headers: &mut HeaderMap) -> Hop {
        let token = headers.remove(TOKEN_HEADER);
        let hop = headers.remove(HOP_HEADER);
        let client = headers.remove(CLIENT_HEADER);
        if token.is_none() && hop.is_none() {
            return Hop::None;
        }
        let (Some(cluster), Some(token), Some(_)) = (cluster, token, hop) else {
            return Hop::Invalid;
        };
        if bool::from(token.as_bytes().ct_eq(cluster.config.token.as_bytes())) {
            let client = client.and_then(|v| {
                let (addr, scheme) = v.to_str().ok()?.split_once(' ')?;
                Some((addr.parse().ok()?, scheme == "https"))
            });
            Hop::Valid(client)
        } else {
            Hop::Invalid
        }
    }

    /// Forwards a Client's request to a replica that holds `id`, trying `owners` in
    /// order: the next one is tried when a replica cannot be reached, when its
    /// connection fails before the request went out, or, for a request without a body
    /// (which can be sent again), when the request was lost with the connection or the
    /// replica no longer holds a session of the id. Its response, or a short error.
    pub(crate) async fn forward(
        &self,
        id: &DialerId,
        owners: Vec<Owner>,
        mut parts: http::request::Parts,
        body: UpstreamBody,
        client: (std::net::SocketAddr, bool),
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Response<ProxyBody> {
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        // The owner routes the request as this replica did: by the host name the
        // Client named (host routing) when it named one, else by the path.
        let host = crate::proxy::request_host(&parts.uri, &parts.headers, None).map(str::to_string);
        let upgrade =
            crate::proxy::strip_hop_by_hop(&mut parts.headers).filter(|_| client_upgrade.is_some());
        parts.headers.remove(http::header::HOST);
        parts.headers.insert(
            HeaderName::from_static(TOKEN_HEADER),
            HeaderValue::from_str(&self.config.token).unwrap_or(HeaderValue::from_static("")),
        );
        if let Ok(v) = HeaderValue::from_str(&self.config.registry.replica) {
            parts.headers.insert(HeaderName::from_static(HOP_HEADER), v);
        }
        let (addr, tls) = client;
        let scheme = if tls { "https" } else { "http" };
        if let Ok(v) = HeaderValue::from_str(&format!("{addr} {scheme}")) {
            parts
                .headers
                .insert(HeaderName::from_static(CLIENT_HEADER), v);
        }
        let uri_for = |owner: &Owner| -> Option<http::Uri> {
            let by_host = match (&host, owner.address.split_once("://")) {
                (Some(h), Some((scheme, _))) => format!("{scheme}://{h}{pq}").parse().ok(),
                _ => None,
            };
            by_host.or_else(|| {
                format!("{}{pq}", owner.address.trim_end_matches('/'))
                    .parse()
                    .ok()
            })
        };
        if let (Some(protocol), Some(client)) = (upgrade, client_upgrade) {
            return self
                .forward_upgrade(id, &owners, parts, body, &uri_for, protocol, client)
                .await;
        }
        // A request without a body can be sent again as it is.
        let resendable = hyper::body::Body::is_end_stream(&body);
        let mut body = Some(body);
        let last = owners.len().saturating_sub(1);
        for (n, owner) in owners.iter().enumerate() {
            let Some(uri) = uri_for(owner) else {
                warn!(owner = %owner.address, "a replica's address is not a URL");
                continue;
            };
            let Some(mut send) = self.peer_for(id, owner).await else {
                continue;
            };
            let mut req = Request::new(body.take().unwrap_or_else(empty_body));
            *req.method_mut() = parts.method.clone();
            *req.uri_mut() = uri;
            *req.version_mut() = http::Version::HTTP_2;
            *req.headers_mut() = parts.headers.clone();
            match send.try_send_request(req).await {
                Ok(resp) => {
                    if resp.headers().contains_key(MISS_HEADER) {
                        // The replica's session ended since it registered the id.
                        self.unreachable(id, owner);
                        if resendable && n < last {
                            debug!(%id, owner = %owner.address, "the replica no longer holds the id: trying the next");
                            continue;
                        }
                    }
                    let (mut parts, body) = resp.into_parts();
                    parts.headers.remove(MISS_HEADER);
                    crate::proxy::strip_hop_by_hop(&mut parts.headers);
                    return Response::from_parts(parts, body.map_err(BoxError::from).boxed());
                }
                Err(mut e) => {
                    self.connection_failed(id, owner, e.error());
                    if let Some(unsent) = e.take_message() {
                        body = Some(unsent.into_body());
                        continue;
                    }
                    if !resendable {
                        return text(
                            StatusCode::BAD_GATEWAY,
                            "h2rev2: the replica that holds this id failed to answer\n".into(),
                        );
                    }
                }
            }
        }
        text(
            StatusCode::BAD_GATEWAY,
            "h2rev2: no replica that holds this id could be reached\n".into(),
        )
    }

    /// The connection to `owner`, or `None` when it cannot be made (the registry is
    /// told: the next holder is tried first for a while).
    async fn peer_for(
        &self,
        id: &DialerId,
        owner: &Owner,
    ) -> Option<hyper::client::conn::http2::SendRequest<UpstreamBody>> {
        match self.peer(&owner.address).await {
            Ok(s) => Some(s),
            Err(e) => {
                info!(%id, owner = %owner.address, error = %e, "cannot reach a replica that holds the id");
                self.unreachable(id, owner);
                None
            }
        }
    }

    /// A forward of `id` failed on the connection to `owner`: it is dropped (made
    /// again on next use) and the registry told.
    fn connection_failed(&self, id: &DialerId, owner: &Owner, e: &hyper::Error) {
        info!(%id, owner = %owner.address, error = %e, "forwarding to a replica failed");
        self.unreachable(id, owner);
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&owner.address);
    }

    /// Tells the registry that `owner` failed a forward of `id`.
    fn unreachable(&self, id: &DialerId, owner: &Owner) {
        let _ = self.tx.send(Msg::Unreachable(id.clone(), owner.clone()));
    }

    /// This replica is going away: its registrations are removed from the store, so
    /// that other replicas send requests to the other holders; returns once the
    /// store answered (bounded by [`ClusterConfig::op_timeout`]).
    pub(crate) async fn leave(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Msg::Leave(reply)).is_ok() {
            let _ = self.rt.timeout(self.config.op_timeout, rx).await;
        }
    }

    /// Forwards a request that asks to switch protocols (`Upgrade`: WebSocket...) to
    /// `owner` over a connection of its own, in HTTP/1.1 (HTTP/2 has no `Upgrade`):
    /// once both sides switched, the Client's and the owner's byte streams are relayed.
    #[allow(clippy::too_many_arguments)]
    async fn forward_upgrade(
        &self,
        id: &DialerId,
        owners: &[Owner],
        mut parts: http::request::Parts,
        body: UpstreamBody,
        uri_for: &(dyn Fn(&Owner) -> Option<http::Uri> + Sync),
        protocol: HeaderValue,
        client: hyper::upgrade::OnUpgrade,
    ) -> Response<ProxyBody> {
        let failed = |owner: &Owner, what: &str, e: &dyn std::fmt::Display| {
            info!(%id, owner = %owner.address, error = %e, "forwarding an upgrade to a replica: {what}");
            self.unreachable(id, owner);
            text(
                StatusCode::BAD_GATEWAY,
                "h2rev2: the replica that holds this id could not be reached\n".into(),
            )
        };
        // The first holder that takes a connection (nothing was sent before that).
        let mut connected = None;
        for owner in owners {
            let Some(uri) = uri_for(owner) else { continue };
            match self
                .dial_peer(&owner.address, h2rev2_tls::ALPN_HTTP11)
                .await
            {
                Ok(io) => {
                    connected = Some((owner, uri, io));
                    break;
                }
                Err(e) => {
                    failed(owner, "cannot connect", &e);
                }
            }
        }
        let Some((owner, uri, io)) = connected else {
            return text(
                StatusCode::BAD_GATEWAY,
                "h2rev2: no replica that holds this id could be reached\n".into(),
            );
        };
        let handshake = hyper::client::conn::http1::handshake(TokioIo::new(io));
        let (mut send, conn) = match handshake.await {
            Ok(x) => x,
            Err(e) => return failed(owner, "HTTP/1.1 handshake", &e),
        };
        self.rt.spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                debug!(error = %e, "upgraded connection to a replica ended");
            }
        });
        let authority = uri.authority().map(|a| a.as_str().to_string());
        if let Some(h) = authority.and_then(|a| HeaderValue::from_str(&a).ok()) {
            parts.headers.insert(http::header::HOST, h);
        }
        parts.headers.insert(http::header::UPGRADE, protocol);
        parts.headers.insert(
            http::header::CONNECTION,
            HeaderValue::from_static("upgrade"),
        );
        parts.uri = uri.path_and_query().map_or_else(
            || http::Uri::from_static("/"),
            |pq| http::Uri::from(pq.clone()),
        );
        parts.version = http::Version::HTTP_11;
        let mut resp = match send.send_request(Request::from_parts(parts, body)).await {
            Ok(r) => r,
            Err(e) => return failed(owner, "no answer", &e),
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let upstream = hyper::upgrade::on(&mut resp);
            self.rt.spawn(async move {
                match tokio::try_join!(client, upstream) {
                    Ok((c, u)) => {
                        let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                        if let Err(e) = crate::relay::relay(&mut c, &mut u).await {
                            debug!(error = %e, "upgraded connection through a replica ended");
                        }
                    }
                    Err(e) => debug!(error = %e, "upgrade through a replica failed"),
                }
            });
            return resp.map(|b| b.map_err(BoxError::from).boxed());
        }
        let (mut parts, body) = resp.into_parts();
        crate::proxy::strip_hop_by_hop(&mut parts.headers);
        Response::from_parts(parts, body.map_err(BoxError::from).boxed())
    }

    /// A new TLS connection to the replica at `address`, with `alpn`.
    async fn dial_peer(&self, address: &str, alpn: &[u8]) -> Result<crate::io::BoxIo, BoxError> {
        let uri: http::Uri = address.parse()?;
        let host = uri.host().ok_or("no host")?.to_string();
        let port = uri.port_u16().unwrap_or(443);
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut tls = (*self.config.peer_tls).clone();
        tls.alpn_protocols = vec![alpn.to_vec()];
        let target = Target {
            addr: authority,
            host: host.trim_matches(['[', ']']).to_string(),
            tls: Some(Arc::new(tls)),
        };
        let connect = self.connect.connect(target);
        let connected = self
            .rt
            .timeout(self.config.op_timeout, connect)
            .await
            .ok_or("connecting timed out")??;
        Ok(connected.io)
    }

    /// The HTTP/2 connection to the replica at `address`, made on first use and
    /// again when it closed.
    async fn peer(
        &self,
        address: &str,
    ) -> Result<hyper::client::conn::http2::SendRequest<UpstreamBody>, BoxError> {
        if let Some(s) = self
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(address)
            .filter(|s| !s.is_closed())
        {
            return Ok(s.clone());
        }
        let io = self.dial_peer(address, h2rev2_tls::ALPN_H2).await?;
        let (send, conn) = hyper::client::conn::http2::Builder::new(self.rt.clone())
            .timer(self.rt.clone())
            .keep_alive_interval(Duration::from_secs(15))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(TokioIo::new(io))
            .await?;
        let addr = address.to_string();
        self.rt.spawn(async move {
            if let Err(e) = conn.await {
                debug!(peer = %addr, error = %e, "connection to a replica ended");
            }
        });
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(address.to_string(), send.clone());
        Ok(send)
    }
}

async fn run(
    rt: Rt,
    mut registry: Registry,
    store: Arc<dyn ClusterStore>,
    tx: mpsc::UnboundedSender<Msg>,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    op_timeout: Duration,
) {
    let mut deadline = crate::runtime::Deadline::new(rt.clone());
    let mut waiting: HashMap<DialerId, Vec<oneshot::Sender<Route>>> = HashMap::new();
    let mut was_healthy = true;
    let mut leaving: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        let sleep = deadline.until(registry.poll_timeout());
        tokio::select! {
            msg = rx.recv() => {
                let now = rt.now();
                match msg {
                    None => return,
                    Some(Msg::Up(id)) => registry.session_up(now, &id),
                    Some(Msg::Leave(reply)) => {
                        registry.leave();
                        leaving.push(reply);
                    }
                    Some(Msg::Unreachable(id, owner)) => registry.unreachable(now, &id, &owner),
                    Some(Msg::Down(id)) => registry.session_down(&id),
                    Some(Msg::Route(id, reply)) => match registry.route(now, &id) {
                        Route::Pending => waiting.entry(id).or_default().push(reply),
                        r => {
                            let _ = reply.send(r);
                        }
                    },
                    Some(Msg::Result(op, out)) => registry.handle_result(now, op, out),
                    Some(Msg::Changed(Some(key))) => registry.invalidate(&key),
                    Some(Msg::Changed(None)) => registry.forget_lookups(),
                }
            }
            _ = sleep => registry.handle_timeout(rt.now()),
        }
        while let Some(op) = registry.poll_op() {
            let (store, tx, rt2) = (store.clone(), tx.clone(), rt.clone());
            rt.spawn(async move {
                let n = op.number();
                let out = rt2
                    .timeout(op_timeout, store.run(op))
                    .await
                    .unwrap_or(Outcome::Failed);
                let _ = tx.send(Msg::Result(n, out));
            });
        }
        if !registry.busy() {
            for reply in leaving.drain(..) {
                let _ = reply.send(());
            }
        }
        while let Some((id, route)) = registry.poll_lookup() {
            for reply in waiting.remove(&id).unwrap_or_default() {
                let _ = reply.send(route.clone());
            }
        }
        if registry.healthy() != was_healthy {
            was_healthy = registry.healthy();
            if was_healthy {
                info!("the cluster store answers again: registrations rewritten");
            } else {
                warn!(
                    "the cluster store does not answer: local sessions keep serving, requests \
                     for ids held elsewhere get 503 until it is back"
                );
            }
        }
    }
}

/// Follows the store's announcements, subscribing again when the subscription breaks
/// (and then forgetting every cached lookup: announcements may have been missed).
async fn subscribe(rt: Rt, store: Arc<dyn ClusterStore>, tx: mpsc::UnboundedSender<Msg>) {
    use futures_util::StreamExt;
    loop {
        if let Some(mut changes) = store.changes().await {
            if tx.send(Msg::Changed(None)).is_err() {
                return;
            }
            while let Some(key) = changes.next().await {
                if tx.send(Msg::Changed(Some(key))).is_err() {
                    return;
                }
            }
        }
        if tx.is_closed() {
            return;
        }
        rt.sleep(Duration::from_secs(1)).await;
    }
}

/// Header of a TCP connection forwarded to a replica that holds its id (sent to
/// the id's proxy route, with `1`). The request's body carries the Client's bytes and the response's body the Listener
/// side's, a byte stream both ways on one HTTP/2 stream.
pub const TCP_HEADER: &str = "h2rev2-cluster-tcp";

/// A body whose data arrive on a channel; an `Err` item fails it (so that the far
/// side sees a reset rather than a clean end).
struct ChannelBody(mpsc::Receiver<Result<bytes::Bytes, BoxError>>);

impl hyper::body::Body for ChannelBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, BoxError>>> {
        self.0
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(hyper::body::Frame::data)))
    }
}

/// Sends what `r` reads to `tx` until its end (`tx` dropped: the body ends) or an
/// error (sent on: the body fails). Stops, letting go of `r`, as soon as the body is
/// dropped (its stream ended or was reset), even while `r` has nothing to read.
fn pump<R>(rt: &Rt, mut r: R, tx: mpsc::Sender<Result<bytes::Bytes, BoxError>>)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    use tokio::io::AsyncReadExt;
    rt.spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let read = tokio::select! {
                read = r.read(&mut buf) => read,
                _ = tx.closed() => return,
            };
            match read {
                Ok(0) => return,
                Ok(n) => {
                    let chunk = bytes::Bytes::copy_from_slice(&buf[..n]);
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            }
        }
    });
}

/// Writes `body`'s data to `w`, then half-closes it (`shutdown`); an error of the
/// body or of `w` is returned (the caller resets what it can).
async fn body_to<B, W>(body: B, mut w: W) -> Result<(), BoxError>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: Into<BoxError>,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Into::into)?;
        if let Ok(data) = frame.into_data() {
            w.write_all(&data).await?;
            w.flush().await?;
        }
    }
    w.shutdown().await?;
    Ok(())
}

impl Cluster {
    /// Carries a TCP connection accepted for `id`, which no local session holds, to a
    /// replica that holds it (the holders tried in order until one answers `200`:
    /// nothing is read from the Client before that). Returns once the connection is
    /// over; an error says why it could not be carried (the caller resets the Client).
    pub(crate) async fn forward_tcp(
        &self,
        id: &DialerId,
        proxy_path: &str,
        tcp: Box<dyn crate::io::TcpClient>,
    ) -> Result<(), String> {
        let owners = match self.route(id).await {
            Route::Remote(owners) => owners,
            Route::Unavailable => return Err("the cluster registry is unavailable".into()),
            Route::Nowhere | Route::Pending => return Err("no replica holds the id".into()),
        };
        let mut answered = None;
        for owner in &owners {
            let address = owner.address.trim_end_matches('/');
            let Ok(uri) = format!("{address}{proxy_path}").parse::<http::Uri>() else {
                continue;
            };
            let Some(mut send) = self.peer_for(id, owner).await else {
                continue;
            };
            // The Client's bytes flow once the owner answered (it dials first).
            let (tx, rx) = mpsc::channel(4);
            let mut req = Request::new(ChannelBody(rx).boxed_unsync());
            *req.method_mut() = http::Method::POST;
            *req.uri_mut() = uri;
            let h = req.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&self.config.token) {
                h.insert(HeaderName::from_static(TOKEN_HEADER), v);
            }
            if let Ok(v) = HeaderValue::from_str(&self.config.registry.replica) {
                h.insert(HeaderName::from_static(HOP_HEADER), v);
            }
            h.insert(
                HeaderName::from_static(TCP_HEADER),
                HeaderValue::from_static("1"),
            );
            let resp = match send.try_send_request(req).await {
                Ok(r) => r,
                Err(e) => {
                    self.connection_failed(id, owner, e.error());
                    continue;
                }
            };
            if resp.status() != StatusCode::OK {
                self.unreachable(id, owner);
                if resp.headers().contains_key(MISS_HEADER) {
                    continue;
                }
                return Err(format!(
                    "the replica that holds the id answered {}",
                    resp.status()
                ));
            }
            answered = Some((resp, tx));
            break;
        }
        let Some((resp, tx)) = answered else {
            return Err("no replica that holds the id could be reached".into());
        };
        let (read, write) = tokio::io::split(tcp);
        pump(&self.rt, read, tx);
        body_to(resp.into_body(), write)
            .await
            .map_err(|e| format!("the forwarded connection broke: {e}"))
    }
}

/// Serves a TCP connection another replica forwards ([`TCP_HEADER`], on `id`'s proxy
/// route): checks the cluster token, dials `id` on a local session and relays the
/// request's body to the reverse connection and the reverse connection to the
/// response's body.
pub(crate) async fn serve_tcp(
    server: &crate::Server,
    req: Request<UpstreamBody>,
    id: DialerId,
) -> Response<ProxyBody> {
    let (mut parts, body) = req.into_parts();
    let cluster = server.inner.cluster.get().cloned();
    if !matches!(
        Cluster::hop(cluster.as_deref(), &mut parts.headers),
        Hop::Valid(_)
    ) {
        return text(
            StatusCode::FORBIDDEN,
            "h2rev2: bad cluster credentials\n".into(),
        );
    }
    let conn = match server.dial(&id).await {
        Ok(c) => c,
        Err(h2rev2_proto::dialer::DialError::NoSession) => return crate::proxy::missed(&id),
        Err(e) => {
            info!(%id, error = %e, "forwarded TCP connection: dial failed");
            return text(
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_GATEWAY),
                format!("h2rev2: {id}: {}\n", e.client_text()),
            );
        }
    };
    let rt = server.inner.rt.clone();
    let (read, write) = tokio::io::split(conn);
    let to_listener = body_to(body, write);
    rt.spawn(async move {
        if let Err(e) = to_listener.await {
            debug!(error = %e, "forwarded TCP connection: the Client's side ended");
        }
    });
    let (tx, rx) = mpsc::channel(4);
    pump(&rt, read, tx);
    Response::new(ChannelBody(rx).boxed())
}
