//! Test fixtures: certificates, a public server, Listeners, an internal hyper server.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2rev2_tokio::proto::wire::DialerId;
use h2rev2_tokio::tls::{self, Identity, ServerTrust};
use h2rev2_tokio::{Listener, ListenerOptions, Server, ServerConfig};
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub fn id(s: &str) -> DialerId {
    DialerId::new(s).unwrap()
}

/// A self-signed identity for localhost, its PEM written to a temp dir.
pub struct Certs {
    pub identity: Identity,
    pub dir: tempfile::TempDir,
}

impl Certs {
    pub fn new() -> Certs {
        let (identity, cert_pem, key_pem) =
            Identity::self_signed(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("server.crt"), cert_pem).unwrap();
        std::fs::write(dir.path().join("server.key"), key_pem).unwrap();
        Certs { identity, dir }
    }

    pub fn cert_path(&self) -> std::path::PathBuf {
        self.dir.path().join("server.crt")
    }

    pub fn client_tls(&self) -> Arc<rustls::ClientConfig> {
        let trust = ServerTrust::from_certs(&self.identity.certs).unwrap();
        tls::client_config(trust, None, &[tls::ALPN_H2]).unwrap()
    }
}

/// A test CA that signs client certificates.
pub struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    cert: rustls::pki_types::CertificateDer<'static>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            issuer: rcgen::Issuer::new(params, key),
            cert: cert.der().clone(),
        }
    }

    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        roots
    }

    /// A client certificate with these DNS SANs and this CN.
    pub fn client(&self, sans: &[&str], cn: &str) -> Identity {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(sans).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Identity {
            certs: vec![cert.der().clone()],
            key: rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        }
    }
}

/// The runtime binding serving the public side of a test: the same scenario runs on
/// both (`both!` in the test files instantiates it for each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// `h2rev2_tokio::Server` on the test's tokio runtime.
    Tokio,
    /// `h2rev2_smol::Server`: its tasks on smol's global executor, its sockets
    /// async-io's, TLS futures-rustls.
    Smol,
}

pub struct Public {
    pub server: h2rev2_driver::Server,
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Public {
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }
}

pub async fn start_public(certs: &Certs, config: ServerConfig) -> Public {
    start_public_with(Side::Tokio, certs, config, None).await
}

pub async fn start_public_on(certs: &Certs, config: ServerConfig, listener: TcpListener) -> Public {
    let tls = tls::server_config(certs.identity.clone(), None).unwrap();
    serve_on(Side::Tokio, config, listener, tls)
}

/// A public server of `side` on 127.0.0.1 (TLS with `client_roots` for mutual TLS).
pub async fn start_public_with(
    side: Side,
    certs: &Certs,
    config: ServerConfig,
    client_roots: Option<rustls::RootCertStore>,
) -> Public {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls = tls::server_config(certs.identity.clone(), client_roots).unwrap();
    serve_on(side, config, listener, tls)
}

fn serve_on(
    side: Side,
    config: ServerConfig,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
) -> Public {
    let addr = listener.local_addr().unwrap();
    match side {
        Side::Tokio => {
            let server = Server::new(config);
            let task = tokio::spawn(server.clone().serve(listener, tls));
            Public {
                server: server.into(),
                addr,
                task,
            }
        }
        Side::Smol => {
            let server = h2rev2_smol::Server::new(config);
            let std = listener.into_std().unwrap();
            let listener = smol::net::TcpListener::try_from(std).unwrap();
            // The accept loop polls async-io's socket from this task; every connection
            // is served on smol's executor.
            let task = tokio::spawn(server.clone().serve(listener, tls));
            Public {
                server: server.into(),
                addr,
                task,
            }
        }
    }
}

/// A config admitting `id` with `token`.
pub fn token_config(ids: &[(&str, &str)]) -> ServerConfig {
    let mut c = ServerConfig::default();
    for (i, t) in ids {
        c.dialer.auth.add_token(id(i), t);
    }
    c
}

pub fn listener_opts(
    public: &Public,
    certs: &Certs,
    name: &str,
    token: Option<&str>,
) -> ListenerOptions {
    let mut o = ListenerOptions::new(&public.url(), id(name), certs.client_tls()).unwrap();
    o.token = token.map(str::to_string);
    o.machine.backoff_initial = Duration::from_millis(50);
    o.machine.backoff_max = Duration::from_millis(500);
    o
}

pub async fn wait_session(server: &h2rev2_driver::Server, n: usize) {
    for _ in 0..500 {
        if server.stats().await.sessions >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no session after 5 s");
}

pub fn bind_listener(opts: ListenerOptions) -> Listener {
    Listener::connect(opts).unwrap()
}

/// Deterministic content of `/big/{n}`.
pub fn pattern(n: usize) -> Vec<u8> {
    pattern_at(0, n)
}

/// Bytes `offset..offset + n` of the endless pattern.
pub fn pattern_at(offset: usize, n: usize) -> Vec<u8> {
    // Period 251: copy slices of one period (fast even in debug builds).
    let period: Vec<u8> = (0..251usize).map(|i| (i * 31 % 251) as u8).collect();
    let mut out = Vec::with_capacity(n);
    let mut at = offset % 251;
    while out.len() < n {
        let take = (251 - at).min(n - out.len());
        out.extend_from_slice(&period[at..at + take]);
        at = 0;
    }
    out
}

/// The first `n` pattern bytes as a stream of `chunk`-sized frames, made lazily.
pub fn pattern_stream<E>(
    n: usize,
    chunk: usize,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, E>> + Send + 'static {
    futures_util::stream::unfold(0usize, move |off| async move {
        if off >= n {
            return None;
        }
        let len = chunk.min(n - off);
        let data = Bytes::from(pattern_at(off, len));
        Some((Ok(Frame::data(data)), off + len))
    })
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// The internal server's routes: `/hello`, `/get` (method, path and query back),
/// `/big/{n}` (streamed [`pattern`]), `/echo`, `/sha256` (of the request body, hashed
/// as it streams in), `/sse` (3 events 500 ms apart), `/headers`, `/ws` (WebSocket echo),
/// `/slow/{ms}` (answers after `ms` milliseconds), `/stall` (headers, a first chunk,
/// then nothing for a minute).
pub async fn internal(mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let full = |b: Bytes| Full::new(b).boxed();
    if let Some(ms) = path.strip_prefix("/slow/").and_then(|m| m.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return Ok(Response::new(full(Bytes::from_static(b"slow answer\n"))));
    }
    if path == "/stall" {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
        tokio::spawn(async move {
            let _ = tx
                .send(Ok(Frame::data(Bytes::from_static(b"first\n"))))
                .await;
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(tx);
        });
        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        return Ok(Response::new(BodyExt::boxed(body)));
    }
    if path == "/get" {
        let s = format!("{} {}\n", req.method(), req.uri());
        return Ok(Response::new(full(Bytes::from(s))));
    }
    if path == "/ws" {
        return Ok(websocket_echo(&mut req));
    }
    if path == "/sha256" {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        let mut n = 0usize;
        let mut body = req.into_body();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Ok(d) = f.into_data() {
                        n += d.len();
                        h.update(&d);
                    }
                }
                Err(_) => {
                    let mut r = Response::new(full(Bytes::from_static(b"body failed\n")));
                    *r.status_mut() = http::StatusCode::BAD_REQUEST;
                    return Ok(r);
                }
            }
        }
        return Ok(Response::new(full(Bytes::from(format!(
            "{:x} {}",
            h.finalize(),
            n
        )))));
    }
    if path == "/hello" {
        return Ok(Response::new(full(Bytes::from_static(
            b"hello from inside\n",
        ))));
    }
    if let Some(n) = path.strip_prefix("/big/") {
        let n: usize = n.parse().unwrap();
        // Generated as it streams, in 256 KiB chunks: no whole-body buffer.
        return Ok(Response::new(BodyExt::boxed(StreamBody::new(
            pattern_stream(n, 256 << 10),
        ))));
    }
    if path == "/echo" {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        if path == "/sha256" {
            use sha2::Digest;
            let d = sha2::Sha256::digest(&body);
            return Ok(Response::new(full(Bytes::from(format!(
                "{:x} {}",
                d,
                body.len()
            )))));
        }
        return Ok(Response::new(full(body)));
    }
    if path == "/sse" {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        tokio::spawn(async move {
            for i in 0..3 {
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from(format!("data: event {i}\n\n")))))
                    .await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut resp = Response::new(BodyExt::boxed(body));
        resp.headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        return Ok(resp);
    }
    if path == "/headers" {
        let mut s = String::new();
        for (k, v) in req.headers() {
            s.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
        }
        s.push_str(&format!("path: {}\n", req.uri()));
        return Ok(Response::new(full(Bytes::from(s))));
    }
    let mut r = Response::new(full(Bytes::from_static(b"not found\n")));
    *r.status_mut() = http::StatusCode::NOT_FOUND;
    Ok(r)
}

/// A hyper HTTP/1.1 server on 127.0.0.1; returns its address.
pub async fn start_internal() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), hyper::service::service_fn(internal))
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// Runs curl; returns (exit status ok, stdout bytes, stderr).
pub async fn curl(args: &[&str]) -> (bool, Vec<u8>, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .args(args)
        .output()
        .await
        .expect("curl is installed");
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Answers a WebSocket handshake with `101` and echoes every message on the upgraded
/// connection.
fn websocket_echo(req: &mut Request<Incoming>) -> Response<Body> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        let mut r = Response::new(Full::new(Bytes::from_static(b"not a websocket\n")).boxed());
        *r.status_mut() = http::StatusCode::BAD_REQUEST;
        return r;
    };
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                let _ = ws.close(None).await;
                break;
            }
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(http::StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
        .body(Full::new(Bytes::new()).boxed())
        .unwrap()
}

/// Serves the internal routes as HTTP/1.1 on one connection (a reverse conn, say).
pub async fn serve_internal_conn<IO>(io: IO)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), hyper::service::service_fn(internal))
        .with_upgrades()
        .await;
}

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on `addr` (5 s at most).
pub async fn wait_port(addr: SocketAddr) {
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("nothing listens on {addr} after 5 s");
}

/// `python3 -m http.server` serving a temp dir that holds `index.txt` and `data.bin`.
pub struct PyServer {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    _child: tokio::process::Child,
}

pub const PY_INDEX: &[u8] = b"served by python http.server\n";

pub async fn start_python() -> PyServer {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.txt"), PY_INDEX).unwrap();
    std::fs::write(dir.path().join("data.bin"), pattern(300_000)).unwrap();
    let port = free_port();
    let child = tokio::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 is installed");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_port(addr).await;
    PyServer {
        addr,
        dir,
        _child: child,
    }
}

pub type TestBody = http_body_util::combinators::BoxBody<Bytes, h2rev2_tokio::BoxError>;

pub fn empty() -> TestBody {
    Full::new(Bytes::new()).map_err(|e| match e {}).boxed()
}

pub fn full_body(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// A TLS connection to the public server offering `alpn`.
pub async fn tls_connect(
    addr: SocketAddr,
    certs: &Certs,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    tls_connect_from(None, addr, certs, alpn).await
}

/// [`tls_connect`] from the local address `src` (on Linux every 127.0.0.0/8 address
/// is loopback: a test can play Clients from several addresses).
pub async fn tls_connect_from(
    src: Option<std::net::IpAddr>,
    addr: SocketAddr,
    certs: &Certs,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let trust = ServerTrust::from_certs(&certs.identity.certs).unwrap();
    let cfg = tls::client_config(trust, None, &[alpn]).unwrap();
    let tcp = match src {
        None => tokio::net::TcpStream::connect(addr).await.unwrap(),
        Some(ip) => {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind(SocketAddr::new(ip, 0)).unwrap();
            s.connect(addr).await.unwrap()
        }
    };
    tcp.set_nodelay(true).unwrap();
    let name = tls::server_name("localhost").unwrap();
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .unwrap()
}

/// A hyper HTTP/2 client connection (TLS, ALPN h2) to the public server.
pub async fn h2_client(
    addr: SocketAddr,
    certs: &Certs,
) -> hyper::client::conn::http2::SendRequest<TestBody> {
    h2_client_from(None, addr, certs).await
}

/// [`h2_client`] from the local address `src`.
pub async fn h2_client_from(
    src: Option<std::net::IpAddr>,
    addr: SocketAddr,
    certs: &Certs,
) -> hyper::client::conn::http2::SendRequest<TestBody> {
    let tls = tls_connect_from(src, addr, certs, tls::ALPN_H2).await;
    let (send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(16 << 20)
            .handshake(TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

/// A hyper HTTP/1.1 client connection (TLS, ALPN http/1.1) to the public server.
pub async fn h1_client(
    addr: SocketAddr,
    certs: &Certs,
) -> hyper::client::conn::http1::SendRequest<TestBody> {
    h1_client_from(None, addr, certs).await
}

/// [`h1_client`] from the local address `src`.
pub async fn h1_client_from(
    src: Option<std::net::IpAddr>,
    addr: SocketAddr,
    certs: &Certs,
) -> hyper::client::conn::http1::SendRequest<TestBody> {
    let tls = tls_connect_from(src, addr, certs, tls::ALPN_HTTP11).await;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    send
}

/// One request on a fresh client connection of version `v`; the response.
pub async fn request(
    addr: SocketAddr,
    certs: &Certs,
    v: http::Version,
    req: Request<TestBody>,
) -> hyper::Result<Response<Incoming>> {
    request_from(None, addr, certs, v, req).await
}

/// [`request`] from the local address `src`.
pub async fn request_from(
    src: Option<std::net::IpAddr>,
    addr: SocketAddr,
    certs: &Certs,
    v: http::Version,
    req: Request<TestBody>,
) -> hyper::Result<Response<Incoming>> {
    if v == http::Version::HTTP_2 {
        h2_client_from(src, addr, certs)
            .await
            .send_request(req)
            .await
    } else {
        h1_client_from(src, addr, certs)
            .await
            .send_request(req)
            .await
    }
}

/// GET `path` on the public server; status and whole body.
pub async fn get(
    addr: SocketAddr,
    certs: &Certs,
    v: http::Version,
    path: &str,
) -> (http::StatusCode, Bytes) {
    get_from(None, addr, certs, v, path).await
}

/// [`get`] from the local address `src`.
pub async fn get_from(
    src: Option<std::net::IpAddr>,
    addr: SocketAddr,
    certs: &Certs,
    v: http::Version,
    path: &str,
) -> (http::StatusCode, Bytes) {
    let req = Request::get(format!("https://localhost:{}{path}", addr.port()))
        .header("host", format!("localhost:{}", addr.port()))
        .body(empty())
        .unwrap();
    let resp = tokio::time::timeout(
        Duration::from_secs(20),
        request_from(src, addr, certs, v, req),
    )
    .await
    .expect("response within 20 s")
    .unwrap();
    let status = resp.status();
    let body = tokio::time::timeout(Duration::from_secs(20), resp.into_body().collect())
        .await
        .expect("body within 20 s")
        .unwrap()
        .to_bytes();
    (status, body)
}

/// The NAT side (a Listener serving `serve`) in a runtime of its own, on its own
/// thread: [`NatSide::kill`] ends it the way a process dies (tasks gone, sockets
/// closed).
pub struct NatSide {
    rt: Option<tokio::runtime::Runtime>,
    pub status: tokio::sync::watch::Receiver<h2rev2_tokio::Status>,
}

impl NatSide {
    /// Starts a Listener with `opts` whose conns are served by `serve`.
    pub fn start<F, Fut>(opts: ListenerOptions, serve: F) -> NatSide
    where
        F: FnOnce(Listener) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let status = {
            let _guard = rt.enter();
            let listener = Listener::connect(opts).unwrap();
            let status = listener.watch_status();
            rt.spawn(serve(listener));
            status
        };
        NatSide {
            rt: Some(rt),
            status,
        }
    }

    /// A NAT proxy to the internal server at `target`.
    pub fn proxy(opts: ListenerOptions, target: SocketAddr) -> NatSide {
        NatSide::start(opts, move |l| async move {
            let t = format!("http://{target}").parse().unwrap();
            let _ =
                h2rev2_tokio::nat::serve_http_proxy(l, h2rev2_tokio::nat::HttpProxyOptions::new(t))
                    .await;
        })
    }

    pub async fn wait_up(&self) {
        let mut w = self.status.clone();
        tokio::time::timeout(
            Duration::from_secs(10),
            w.wait_for(|s| *s == h2rev2_tokio::Status::Up),
        )
        .await
        .expect("Listener up within 10 s")
        .unwrap();
    }

    /// Kills the NAT side at once.
    pub fn kill(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for NatSide {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until the server's session count is `n` (5 s at most).
pub async fn wait_sessions(server: &h2rev2_driver::Server, n: usize) {
    for _ in 0..500 {
        if server.stats().await.sessions == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "sessions stayed at {} (wanted {n}) for 5 s",
        server.stats().await.sessions
    );
}

/// Public server + internal hyper server + a NAT proxy in this runtime, for id `app`
/// with token `tok`.
pub struct Stack {
    pub certs: Certs,
    pub public: Public,
    pub internal: SocketAddr,
}

pub async fn stack_with(config: ServerConfig, tweak: impl FnOnce(&mut ListenerOptions)) -> Stack {
    stack_on(Side::Tokio, config, tweak).await
}

/// [`stack_with`] with the public server of `side`.
pub async fn stack_on(
    side: Side,
    config: ServerConfig,
    tweak: impl FnOnce(&mut ListenerOptions),
) -> Stack {
    stack_on_with(side, config, None, tweak).await
}

/// [`stack_on`] with a public server asking for client certificates of `client_roots`.
pub async fn stack_on_with(
    side: Side,
    config: ServerConfig,
    client_roots: Option<rustls::RootCertStore>,
    tweak: impl FnOnce(&mut ListenerOptions),
) -> Stack {
    let certs = Certs::new();
    let public = start_public_with(side, &certs, config, client_roots).await;
    let internal = start_internal().await;
    let mut opts = listener_opts(&public, &certs, "app", Some("tok"));
    tweak(&mut opts);
    let listener = bind_listener(opts);
    tokio::time::timeout(Duration::from_secs(10), listener.wait_up())
        .await
        .expect("Listener up within 10 s")
        .unwrap();
    let target = format!("http://{internal}").parse().unwrap();
    tokio::spawn(h2rev2_tokio::nat::serve_http_proxy(
        listener,
        h2rev2_tokio::nat::HttpProxyOptions::new(target),
    ));
    Stack {
        certs,
        public,
        internal,
    }
}

pub async fn stack() -> Stack {
    stack_with(token_config(&[("app", "tok")]), |_| {}).await
}

/// Instantiates the scenario `$name(side: Side)` once per runtime binding of the public
/// server: `$name::tokio` and `$name::smol`.
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tokio() {
                super::$name(super::Side::Tokio).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn smol() {
                super::$name(super::Side::Smol).await
            }
        }
    };
}
