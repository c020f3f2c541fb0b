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

pub struct Public {
    pub server: Server,
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Public {
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }
}

pub async fn start_public(certs: &Certs, config: ServerConfig) -> Public {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    start_public_on(certs, config, listener).await
}

pub async fn start_public_on(certs: &Certs, config: ServerConfig, listener: TcpListener) -> Public {
    let addr = listener.local_addr().unwrap();
    let server = Server::new(config);
    let tls = tls::server_config(certs.identity.clone(), None).unwrap();
    let task = tokio::spawn(server.clone().serve(listener, tls));
    Public { server, addr, task }
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

pub async fn wait_session(server: &Server, n: usize) {
    for _ in 0..500 {
        if server.stats().await.sessions >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no session after 5 s");
}

pub fn bind_listener(opts: ListenerOptions) -> Listener {
    Listener::bind(opts).unwrap()
}

/// Deterministic content of `/big/{n}`.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn internal(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let full = |b: Bytes| Full::new(b).boxed();
    if path == "/hello" {
        return Ok(Response::new(full(Bytes::from_static(
            b"hello from inside\n",
        ))));
    }
    if let Some(n) = path.strip_prefix("/big/") {
        let n: usize = n.parse().unwrap();
        // Stream it in 1 MiB chunks.
        let chunks: Vec<Result<Frame<Bytes>, Infallible>> = pattern(n)
            .chunks(1 << 20)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let body = StreamBody::new(futures_util::stream::iter(chunks));
        return Ok(Response::new(BodyExt::boxed(body)));
    }
    if path == "/echo" || path == "/sha256" {
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
