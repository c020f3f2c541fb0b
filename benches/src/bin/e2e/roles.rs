//! The role processes: `e2e --role internal|public|nat`. Each uses h2rev2-tokio (or
//! hyper, for the internal server) directly, prints `ready {json}` with its ports, then
//! answers commands from stdin (see `child.rs`) until stdin closes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use h2rev2_tokio::nat::{self, HttpProxyOptions};
use h2rev2_tokio::proto::wire::DialerId;
use h2rev2_tokio::tls::{self, Identity, ServerTrust};
use h2rev2_tokio::{Listener, ListenerOptions, RevConn, Server, ServerConfig};
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::Res;

/// The small response of the internal server (`/small`).
pub const SMALL_BODY: &[u8] = b"hello, world\n";

/// Which role to play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The fast internal HTTP server (plain and TLS ports).
    Internal,
    /// The public server (TLS port, TCP forward ports, in-process dials).
    Public,
    /// The NAT side: Listeners and their services.
    Nat,
}

/// Environment variable with the role processes' tokio worker threads: a number, or
/// `current` for a current-thread runtime. Unset: tokio's default (one per CPU).
pub const THREADS_ENV: &str = "H2REV2_E2E_ROLE_THREADS";

/// Runs a role until stdin closes.
pub fn run(role: Role) -> Res<()> {
    let rt = match std::env::var(THREADS_ENV).ok().as_deref() {
        None | Some("") => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
        Some("current") => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n.parse().map_err(|e| format!("{THREADS_ENV}={n}: {e}"))?)
            .enable_all()
            .build()?,
    };
    rt.block_on(async move {
        match role {
            Role::Internal => internal().await,
            Role::Public => public().await,
            Role::Nat => nat_side().await,
        }
    })
}

async fn say(line: String) -> Res<()> {
    let mut out = tokio::io::stdout();
    out.write_all(line.as_bytes()).await?;
    out.write_all(b"\n").await?;
    out.flush().await?;
    Ok(())
}

/// Reads commands until stdin closes; each is answered before the next is read.
async fn command_loop<S, F>(state: &mut S, mut handle: F) -> Res<()>
where
    F: for<'a> FnMut(
        &'a mut S,
        Vec<String>,
    ) -> Pin<Box<dyn std::future::Future<Output = Res<Value>> + Send + 'a>>,
{
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        if args.is_empty() {
            continue;
        }
        let answer = match handle(state, args).await {
            Ok(v) => format!("ok {v}"),
            Err(e) => format!("err {}", e.to_string().replace('\n', " ")),
        };
        say(answer).await?;
    }
    Ok(())
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> Res<T>
where
    T::Err: std::fmt::Display,
{
    let s = args
        .get(i)
        .ok_or_else(|| format!("{}: argument {i} missing", args[0]))?;
    s.parse::<T>()
        .map_err(|e| format!("{}: bad argument {s:?}: {e}", args[0]).into())
}

fn self_signed() -> Res<Identity> {
    let (identity, _, _) = Identity::self_signed(&["127.0.0.1".into(), "localhost".into()])?;
    Ok(identity)
}

// ---------------------------------------------------------------------------------
// internal

/// `n` bytes made of slices of one shared chunk: no copying, exact length.
pub struct Repeat {
    left: u64,
    chunk: Bytes,
}

impl Repeat {
    /// A body of `n` bytes.
    pub fn new(n: u64, chunk: Bytes) -> Self {
        Repeat { left: n, chunk }
    }
}

impl Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

type InternalBody = Either<Full<Bytes>, Repeat>;

fn internal_handle(chunk: &Bytes, req: &Request<Incoming>) -> Response<InternalBody> {
    let path = req.uri().path();
    if path == "/small" {
        return Response::new(Either::Left(Full::new(Bytes::from_static(SMALL_BODY))));
    }
    if let Some(n) = path
        .strip_prefix("/big/")
        .and_then(|n| n.parse::<u64>().ok())
    {
        return Response::new(Either::Right(Repeat::new(n, chunk.clone())));
    }
    let mut r = Response::new(Either::Left(Full::new(Bytes::from_static(b"not found\n"))));
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}

fn serve_internal_conn<IO>(io: IO, chunk: Bytes)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let resp = internal_handle(&chunk, &req);
            async move { Ok::<_, Infallible>(resp) }
        });
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(io), service)
            .await;
    });
}

async fn internal() -> Res<()> {
    let chunk = Bytes::from(vec![0x5au8; 256 << 10]);
    let plain = TcpListener::bind("127.0.0.1:0").await?;
    let secure = TcpListener::bind("127.0.0.1:0").await?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(self_signed()?, None)?);
    let ready = json!({
        "plain": plain.local_addr()?.port(),
        "tls": secure.local_addr()?.port(),
    });
    let c = chunk.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = plain.accept().await {
            let _ = tcp.set_nodelay(true);
            serve_internal_conn(tcp, c.clone());
        }
    });
    tokio::spawn(async move {
        while let Ok((tcp, _)) = secure.accept().await {
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let c = chunk.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    serve_internal_conn(tls, c);
                }
            });
        }
    });
    say(format!("ready {ready}")).await?;
    command_loop(&mut (), |_, args| {
        Box::pin(async move {
            match args[0].as_str() {
                "ping" => Ok(json!({})),
                other => Err(format!("unknown command {other}").into()),
            }
        })
    })
    .await
}

/// `relay TARGET`: a plain TCP relay (tokio's `copy_bidirectional`, 8 KiB buffers) on
/// a new port, for the "2 TCP relays" baseline: what two extra processes on the path
/// cost with no TLS and no HTTP/2.
async fn plain_relay(args: &[String]) -> Res<Value> {
    let target: SocketAddr = arg(args, 1)?;
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = l.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Ok(json!({ "port": port }))
}

// ---------------------------------------------------------------------------------
// public

struct PublicState {
    server: Server,
    held: Vec<RevConn>,
}

/// The public server's settings in the harness: the library defaults, except limits
/// that a load test from one address on one machine would hit by design.
pub fn public_config() -> ServerConfig {
    let mut config = ServerConfig::default();
    config.dialer.auth.allow_anonymous();
    // 500 clients and 1,000 Listeners all come from 127.0.0.1 (default 256 per IP).
    config.max_connections_per_ip = 1 << 20;
    // 10,000 held streams plus the control stream and spares on one Listener connection.
    config.h2.max_concurrent_streams = 20_000;
    tune(&mut config.h2, &mut config.conn);
    if let Some(b) = std::env::var(STREAM_BUDGET_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        config.tunnel_stream_budget = b;
    }
    config
}

/// Environment variable: the public server's `ServerConfig::tunnel_stream_budget` in
/// bytes, for A/B runs (`4294967295`: every stream keeps the full stream window, the
/// behaviour before the budget existed). Unset: the library's default.
pub const STREAM_BUDGET_ENV: &str = "H2REV2_E2E_STREAM_BUDGET";

/// Environment variable: per-stream buffer limits for experiments, applied to both
/// sides, `CONN_MAX_BUFFER,H2_SEND_BUFFER` in bytes (`ConnConfig::max_buffer`,
/// `H2Settings::max_send_buffer_size`). Unset: the library's defaults.
pub const BUFFERS_ENV: &str = "H2REV2_E2E_BUFFERS";

fn tune(h2: &mut h2rev2_tokio::H2Settings, conn: &mut h2rev2_tokio::proto::conn::ConnConfig) {
    let Ok(v) = std::env::var(BUFFERS_ENV) else {
        return;
    };
    let mut it = v.split(',').map(|x| x.trim().parse::<usize>());
    if let Some(Ok(n)) = it.next() {
        conn.max_buffer = n;
    }
    if let Some(Ok(n)) = it.next() {
        h2.max_send_buffer_size = n;
    }
}

async fn public() -> Res<()> {
    let server = Server::new(public_config());
    let tls_config = tls::server_config(self_signed()?, None)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let ready = json!({ "tls": listener.local_addr()?.port() });
    tokio::spawn(server.clone().serve(listener, tls_config));
    say(format!("ready {ready}")).await?;
    let mut state = PublicState {
        server,
        held: Vec::new(),
    };
    command_loop(&mut state, |s, args| Box::pin(public_cmd(s, args))).await
}

async fn public_cmd(s: &mut PublicState, args: Vec<String>) -> Res<Value> {
    match args[0].as_str() {
        "forward" => {
            let id = DialerId::new(arg::<String>(&args, 1)?)?;
            let l = TcpListener::bind("127.0.0.1:0").await?;
            let port = l.local_addr()?.port();
            tokio::spawn(s.server.clone().forward_tcp(l, id));
            Ok(json!({ "port": port }))
        }
        "relay" => plain_relay(&args).await,
        "stats" => Ok(public_stats(&s.server).await),
        "wait-sessions" => {
            let n: usize = arg(&args, 1)?;
            let timeout = Duration::from_millis(arg(&args, 2)?);
            let until = Instant::now() + timeout;
            loop {
                let st = s.server.stats().await;
                if st.sessions >= n {
                    return Ok(public_stats(&s.server).await);
                }
                if Instant::now() > until {
                    return Err(
                        format!("{} sessions after {timeout:?}, want {n}", st.sessions).into(),
                    );
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        "dial-bench" => {
            let id = DialerId::new(arg::<String>(&args, 1)?)?;
            let n: usize = arg(&args, 2)?;
            let pause = Duration::from_micros(arg(&args, 3)?);
            let mut hist = crate::load::new_histogram();
            for _ in 0..n {
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                let t0 = Instant::now();
                let conn = s.server.dial(&id).await?;
                let dt = t0.elapsed();
                drop(conn);
                crate::load::record(&mut hist, dt);
            }
            Ok(crate::load::percentiles_json(&hist))
        }
        "hold" => {
            let id = DialerId::new(arg::<String>(&args, 1)?)?;
            let n: usize = arg(&args, 2)?;
            let conc: usize = arg(&args, 3)?;
            let server = s.server.clone();
            let mut dials = futures_util::stream::iter(0..n)
                .map(|_| {
                    let server = server.clone();
                    let id = id.clone();
                    async move { server.dial(&id).await }
                })
                .buffer_unordered(conc.max(1));
            while let Some(r) = dials.next().await {
                s.held.push(r?);
            }
            Ok(json!({ "held": s.held.len() }))
        }
        "release" => {
            let n = s.held.len();
            s.held = Vec::new();
            Ok(json!({ "released": n }))
        }
        other => Err(format!("unknown command {other}").into()),
    }
}

async fn public_stats(server: &Server) -> Value {
    let st = server.stats().await;
    let m = server.metrics();
    json!({
        "sessions": st.sessions,
        "spares": st.spares,
        "pending_dials": st.pending_dials,
        "connections": m.connections.load(Relaxed),
        "open_conns": m.open_conns.load(Relaxed),
    })
}

// ---------------------------------------------------------------------------------
// nat

struct NatState {
    tls: Arc<rustls::ClientConfig>,
    services: HashMap<String, JoinHandle<()>>,
    idle: Vec<JoinHandle<()>>,
    held: Arc<AtomicUsize>,
}

/// Keeps `conn` open (reading, so a reset or end is noticed) until the peer ends it.
fn hold_conn(mut conn: RevConn, held: Arc<AtomicUsize>) {
    held.fetch_add(1, Relaxed);
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        while let Ok(n) = conn.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        drop(conn);
        held.fetch_sub(1, Relaxed);
    });
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Service {
    Http(String),
    Tcp(String),
    Hold,
}

fn parse_service(s: &str) -> Res<Service> {
    if let Some(t) = s.strip_prefix("http:") {
        return Ok(Service::Http(t.to_string()));
    }
    if let Some(t) = s.strip_prefix("tcp:") {
        return Ok(Service::Tcp(t.to_string()));
    }
    match s {
        "hold" => Ok(Service::Hold),
        _ => Err(format!("unknown service {s:?}").into()),
    }
}

fn start_service(listener: Listener, service: Service, held: Arc<AtomicUsize>) -> JoinHandle<()> {
    tokio::spawn(async move {
        match service {
            Service::Http(target) => match target.parse() {
                Ok(uri) => {
                    let _ = nat::serve_http_proxy(listener, HttpProxyOptions::new(uri)).await;
                }
                Err(e) => eprintln!("nat: bad target {target}: {e}"),
            },
            Service::Tcp(target) => {
                let _ = nat::relay_tcp(listener, target).await;
            }
            Service::Hold => {
                let listener = listener;
                while let Ok(conn) = listener.accept().await {
                    hold_conn(conn, held.clone());
                }
            }
        }
    })
}

impl NatState {
    fn bind(&self, url: &str, id: &str, spares: usize) -> Res<Listener> {
        let mut o = ListenerOptions::new(url, DialerId::new(id)?, self.tls.clone())?;
        o.machine.spares = spares;
        o.machine.backoff_initial = Duration::from_millis(50);
        o.machine.backoff_max = Duration::from_millis(500);
        tune(&mut o.h2, &mut o.conn);
        Ok(Listener::connect(o)?)
    }
}

async fn wait_up(l: &Listener, id: &str) -> Res<()> {
    match tokio::time::timeout(Duration::from_secs(20), l.wait_up()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("Listener {id}: {e}").into()),
        Err(_) => Err(format!("Listener {id}: not up after 20 s ({:?})", l.status()).into()),
    }
}

async fn nat_side() -> Res<()> {
    let tls = tls::client_config(ServerTrust::Insecure, None, &[tls::ALPN_H2])?;
    say("ready {}".to_string()).await?;
    let mut state = NatState {
        tls,
        services: HashMap::new(),
        idle: Vec::new(),
        held: Arc::new(AtomicUsize::new(0)),
    };
    command_loop(&mut state, |s, args| Box::pin(nat_cmd(s, args))).await
}

async fn nat_cmd(s: &mut NatState, args: Vec<String>) -> Res<Value> {
    match args[0].as_str() {
        "listen" => {
            let id: String = arg(&args, 1)?;
            let url: String = arg(&args, 2)?;
            let service = parse_service(&arg::<String>(&args, 3)?)?;
            let spares: usize = arg(&args, 4)?;
            let l = s.bind(&url, &id, spares)?;
            wait_up(&l, &id).await?;
            let task = start_service(l, service, s.held.clone());
            if let Some(old) = s.services.insert(id, task) {
                old.abort();
            }
            Ok(json!({}))
        }
        "idle" => {
            let n: usize = arg(&args, 1)?;
            let url: String = arg(&args, 2)?;
            let prefix: String = arg(&args, 3)?;
            let spares: usize = arg(&args, 4)?;
            // Bind in batches of 100, each waited up, so the handshakes do not all
            // race the server's handshake timeout on two cores.
            for batch in (0..n).collect::<Vec<_>>().chunks(100) {
                let mut up = Vec::new();
                for k in batch {
                    let id = format!("{prefix}-{k}");
                    up.push((s.bind(&url, &id, spares)?, id));
                }
                for (l, id) in up {
                    wait_up(&l, &id).await?;
                    s.idle.push(start_service(l, Service::Hold, s.held.clone()));
                }
            }
            Ok(json!({ "up": s.idle.len() }))
        }
        "close-idle" => {
            let n = s.idle.len();
            for t in s.idle.drain(..) {
                t.abort();
            }
            Ok(json!({ "closed": n }))
        }
        "held" => Ok(json!({ "held": s.held.load(Relaxed) })),
        "relay" => plain_relay(&args).await,
        other => Err(format!("unknown command {other}").into()),
    }
}

/// The URL a Listener uses for a public server on `addr`.
pub fn public_url(addr: SocketAddr) -> String {
    format!("https://{addr}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn services_parse() {
        assert_eq!(
            parse_service("http:http://127.0.0.1:80").unwrap(),
            Service::Http("http://127.0.0.1:80".into())
        );
        assert_eq!(
            parse_service("tcp:127.0.0.1:80").unwrap(),
            Service::Tcp("127.0.0.1:80".into())
        );
        assert_eq!(parse_service("hold").unwrap(), Service::Hold);
        assert!(parse_service("nope").is_err());
    }

    #[tokio::test]
    async fn repeat_body_has_exact_length() {
        let chunk = Bytes::from(vec![1u8; 1000]);
        for n in [0u64, 1, 999, 1000, 1001, 12_345] {
            let body = Repeat::new(n, chunk.clone());
            assert_eq!(body.size_hint().exact(), Some(n));
            let got = body.collect().await.unwrap().to_bytes();
            assert_eq!(got.len() as u64, n);
        }
    }
}
