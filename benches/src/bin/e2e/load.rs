//! Load clients: hyper client connections over TCP or TLS, HTTP/1.1 or HTTP/2, for
//! downloads (throughput) and back-to-back small requests (rate and latency).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::Res;

/// A latency histogram, in nanoseconds.
pub type Hist = Histogram<u64>;

/// A histogram from 1 ns to 100 s, 3 significant digits.
pub fn new_histogram() -> Hist {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// Records `d` (saturating at the histogram's top).
pub fn record(h: &mut Hist, d: Duration) {
    h.saturating_record(d.as_nanos().clamp(1, u64::MAX as u128) as u64);
}

/// `q` quantile in microseconds.
pub fn quantile_us(h: &Hist, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Count, mean and the usual quantiles, in microseconds.
pub fn percentiles_json(h: &Hist) -> Value {
    json!({
        "n": h.len(),
        "mean_us": h.mean() / 1000.0,
        "p50_us": quantile_us(h, 0.5),
        "p90_us": quantile_us(h, 0.9),
        "p99_us": quantile_us(h, 0.99),
        "p999_us": quantile_us(h, 0.999),
        "max_us": h.max() as f64 / 1000.0,
    })
}

/// HTTP version of a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Proto {
    /// HTTP/1.1, one request at a time per connection (keep-alive).
    H1,
    /// HTTP/2, many streams per connection.
    H2,
}

impl Proto {
    /// `h1` or `h2`.
    pub fn label(self) -> &'static str {
        match self {
            Proto::H1 => "h1",
            Proto::H2 => "h2",
        }
    }
}

/// Where a client connects and what it puts before each path.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The address.
    pub addr: SocketAddr,
    /// TLS (self-signed certificate, not verified) or plain TCP.
    pub tls: bool,
    /// Path prefix, e.g. `/proxy/http` (empty for direct and TCP forwarding).
    pub prefix: String,
    /// The local address to connect from (any 127.0.0.0/8 address is loopback):
    /// Clients on distinct addresses. `None`: the system's choice.
    pub from: Option<std::net::IpAddr>,
}

/// Client TLS configs, one per ALPN.
#[derive(Clone)]
pub struct ClientTls {
    h1: Arc<rustls::ClientConfig>,
    h2: Arc<rustls::ClientConfig>,
}

impl ClientTls {
    /// Configs that accept any certificate (the harness's own self-signed ones).
    pub fn new() -> Res<Self> {
        use h2rev2_tokio::tls::{ALPN_H2, ALPN_HTTP11, ServerTrust, client_config};
        Ok(ClientTls {
            h1: client_config(ServerTrust::Insecure, None, &[ALPN_HTTP11])?,
            h2: client_config(ServerTrust::Insecure, None, &[ALPN_H2])?,
        })
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

async fn connect(ep: &Endpoint, proto: Proto, tls: &ClientTls) -> Res<Box<dyn Io>> {
    let tcp = match ep.from {
        None => TcpStream::connect(ep.addr).await?,
        Some(ip) => {
            let s = tokio::net::TcpSocket::new_v4()?;
            s.bind(SocketAddr::new(ip, 0))?;
            s.connect(ep.addr).await?
        }
    };
    tcp.set_nodelay(true)?;
    if !ep.tls {
        return Ok(Box::new(tcp));
    }
    let cfg = match proto {
        Proto::H1 => tls.h1.clone(),
        Proto::H2 => tls.h2.clone(),
    };
    let name = rustls::pki_types::ServerName::IpAddress(ep.addr.ip().into());
    let stream = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await?;
    let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let want: &[u8] = match proto {
        Proto::H1 => b"http/1.1",
        Proto::H2 => b"h2",
    };
    if alpn.as_deref() != Some(want) {
        return Err(format!("{}: ALPN {alpn:?}, wanted {want:?}", ep.addr).into());
    }
    Ok(Box::new(stream))
}

/// One client connection.
pub enum Client {
    /// HTTP/1.1.
    H1(http1::SendRequest<Empty<Bytes>>, Endpoint),
    /// HTTP/2 (cheap to clone: streams of one connection).
    H2(http2::SendRequest<Empty<Bytes>>, Endpoint),
}

impl Clone for Client {
    fn clone(&self) -> Self {
        match self {
            Client::H2(s, e) => Client::H2(s.clone(), e.clone()),
            Client::H1(..) => panic!("an HTTP/1.1 connection cannot be shared"),
        }
    }
}

impl Client {
    /// Connects and does the HTTP handshake.
    pub async fn open(ep: &Endpoint, proto: Proto, tls: &ClientTls) -> Res<Client> {
        let io = TokioIo::new(connect(ep, proto, tls).await?);
        Ok(match proto {
            Proto::H1 => {
                let (send, conn) = http1::handshake(io).await?;
                tokio::spawn(conn);
                Client::H1(send, ep.clone())
            }
            Proto::H2 => {
                let (send, conn) = http2::Builder::new(TokioExecutor::new())
                    .initial_stream_window_size(8 << 20)
                    .initial_connection_window_size(32 << 20)
                    .handshake(io)
                    .await?;
                tokio::spawn(conn);
                Client::H2(send, ep.clone())
            }
        })
    }

    /// `GET {prefix}{path}`: the status and the body's length (read to the end).
    pub async fn get(&mut self, path: &str) -> Res<(StatusCode, u64)> {
        let resp = match self {
            Client::H1(send, ep) => {
                let req = Request::get(format!("{}{path}", ep.prefix))
                    .header(header::HOST, "bench")
                    .body(Empty::new())?;
                send.ready().await?;
                send.send_request(req).await?
            }
            Client::H2(send, ep) => {
                let scheme = if ep.tls { "https" } else { "http" };
                let uri: Uri = format!("{scheme}://{}{}{path}", ep.addr, ep.prefix).parse()?;
                let req = Request::get(uri).body(Empty::new())?;
                send.ready().await?;
                send.send_request(req).await?
            }
        };
        let status = resp.status();
        let mut body = resp.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                n += data.len() as u64;
            }
        }
        Ok((status, n))
    }
}

/// Clients that asked for a download and do not read it; dropping this closes them.
pub struct Held {
    /// How many got their response headers (200) so far.
    pub answered: Arc<std::sync::atomic::AtomicUsize>,
    _release: tokio::sync::watch::Sender<()>,
}

/// `n` HTTP/2 Clients, one connection each from its own address (127.0.1.1,
/// 127.0.1.2, ...), that each ask for `GET {prefix}/big/{bytes}` and never read the
/// body. Each holds its request (answered or not) until the result is dropped, which
/// closes their connections.
pub async fn hold_downloads(ep: &Endpoint, tls: &ClientTls, n: usize, bytes: u64) -> Res<Held> {
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let from = std::net::Ipv4Addr::new(127, 0, 1 + (i / 250) as u8, 1 + (i % 250) as u8);
        let ep = Endpoint {
            from: Some(from.into()),
            ..ep.clone()
        };
        clients.push(Client::open(&ep, Proto::H2, tls).await?);
    }
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (release, rx) = tokio::sync::watch::channel(());
    for c in clients {
        let Client::H2(mut send, ep) = c else {
            unreachable!("opened as HTTP/2")
        };
        let uri: Uri = format!("https://{}{}/big/{bytes}", ep.addr, ep.prefix).parse()?;
        let req = Request::get(uri).body(Empty::new())?;
        let answered = answered.clone();
        let mut rx = rx.clone();
        tokio::spawn(async move {
            let hold = async {
                if send.ready().await.is_err() {
                    return std::future::pending().await;
                }
                if let Ok(resp) = send.send_request(req).await {
                    if resp.status() == StatusCode::OK {
                        answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    // Held, never read.
                    let _resp = resp;
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = hold => {}
                _ = rx.changed() => {}
            }
        });
    }
    Ok(Held {
        answered,
        _release: release,
    })
}

/// Prints the first few failed requests of the run (status or error), so that an
/// error count comes with its cause.
fn report_failure<E: std::fmt::Display>(r: &Result<(StatusCode, u64), E>) {
    static SHOWN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    if SHOWN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 5 {
        match r {
            Ok((status, n)) => eprintln!("e2e: failed request: status {status}, {n} bytes"),
            Err(e) => eprintln!("e2e: failed request: {e}"),
        }
    }
}

/// Latencies of `GET path` done back to back on `c` for `duration`; a request that
/// fails or takes longer than `limit` is an error (and is recorded as `limit`).
pub async fn serial_latency(
    c: &mut Client,
    path: &str,
    duration: Duration,
    limit: Duration,
) -> LoadResult {
    let mut hist = new_histogram();
    let mut errors = 0;
    let t_end = Instant::now() + duration;
    while Instant::now() < t_end {
        let t0 = Instant::now();
        match tokio::time::timeout(limit, c.get(path)).await {
            Ok(Ok((StatusCode::OK, n))) if n as usize == crate::roles::SMALL_BODY.len() => {
                record(&mut hist, t0.elapsed());
            }
            _ => {
                errors += 1;
                record(&mut hist, limit);
            }
        }
    }
    let requests = hist.len();
    LoadResult {
        requests,
        requests_all: requests,
        errors,
        rps: requests as f64 / duration.as_secs_f64(),
        hist,
    }
}

/// Opens `n` connections, at most 64 handshakes at a time.
pub async fn open_many(ep: &Endpoint, proto: Proto, tls: &ClientTls, n: usize) -> Res<Vec<Client>> {
    let mut opened = futures_util::stream::iter(0..n)
        .map(|_| Client::open(ep, proto, tls))
        .buffer_unordered(64);
    let mut out = Vec::with_capacity(n);
    while let Some(c) = opened.next().await {
        out.push(c?);
    }
    Ok(out)
}

/// Result of a throughput run.
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    /// Bytes received in total.
    pub bytes: u64,
    /// Wall time from the first request to the last byte.
    pub secs: f64,
}

impl Transfer {
    /// Decimal megabytes per second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }
}

/// `streams` concurrent HTTP/1.1 downloads of `bytes_each` bytes each, each on its own
/// connection (connections are opened before the clock starts).
pub async fn download(
    ep: &Endpoint,
    tls: &ClientTls,
    streams: usize,
    bytes_each: u64,
) -> Res<Transfer> {
    let clients = open_many(ep, Proto::H1, tls, streams).await?;
    let path = format!("/big/{bytes_each}");
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let path = path.clone();
            tokio::spawn(async move { c.get(&path).await.map_err(|e| e.to_string()) })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        let (status, n) = t.await??;
        if status != StatusCode::OK || n != bytes_each {
            return Err(format!("download: status {status}, {n} of {bytes_each} bytes").into());
        }
        total += n;
    }
    Ok(Transfer {
        bytes: total,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// Result of a small-request run.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Requests completed in the measured window.
    pub requests: u64,
    /// Requests completed in all, warm-up included.
    pub requests_all: u64,
    /// Requests that failed (any time).
    pub errors: u64,
    /// Requests per second in the measured window.
    pub rps: f64,
    /// Latency of the measured requests.
    pub hist: Hist,
}

/// Settings of a small-request run.
#[derive(Debug, Clone, Copy)]
pub struct LoadSpec {
    /// HTTP version.
    pub proto: Proto,
    /// Concurrent clients: HTTP/1.1 connections, or HTTP/2 streams in flight.
    pub clients: usize,
    /// Not measured, first.
    pub warmup: Duration,
    /// Measured.
    pub duration: Duration,
}

/// HTTP/2 streams in flight per connection in a small-request run.
pub const H2_STREAMS_PER_CONN: usize = 50;

/// The longest a worker's first (warm-up) request may take before it counts as failed.
const FIRST_REQUEST: Duration = Duration::from_secs(10);

/// `clients` workers doing `GET /small` back to back. HTTP/1.1: one connection per
/// worker. HTTP/2: one connection per 50 workers, each worker one stream at a time.
pub async fn small_requests(ep: &Endpoint, tls: &ClientTls, spec: LoadSpec) -> Res<LoadResult> {
    let conns = match spec.proto {
        Proto::H1 => spec.clients,
        Proto::H2 => spec.clients.div_ceil(H2_STREAMS_PER_CONN),
    };
    let opened = open_many(ep, spec.proto, tls, conns).await?;
    let mut workers: Vec<Client> = Vec::with_capacity(spec.clients);
    match spec.proto {
        Proto::H1 => workers = opened,
        Proto::H2 => {
            for i in 0..spec.clients {
                workers.push(opened[i % conns].clone());
            }
        }
    }
    // The measured window opens only once every worker has finished one request (a
    // cold accept queue or a loaded machine can hold first requests longer than a
    // short window: smoke mode's is 200 ms), then waits `warmup` more.
    let start = Arc::new(tokio::sync::Barrier::new(workers.len() + 1));
    let (window_tx, window_rx) = tokio::sync::watch::channel(None::<(Instant, Instant)>);
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut c| {
            let start = start.clone();
            let mut window = window_rx.clone();
            tokio::spawn(async move {
                let mut hist = new_histogram();
                let mut errors = 0u64;
                let mut all = 0u64;
                let mut alive = match tokio::time::timeout(FIRST_REQUEST, c.get("/small")).await {
                    Ok(Ok((StatusCode::OK, n))) if n as usize == crate::roles::SMALL_BODY.len() => {
                        all += 1;
                        true
                    }
                    first => {
                        errors += 1;
                        match first {
                            Ok(r) => report_failure(&r),
                            Err(_) => report_failure::<&str>(&Err("no answer within 10 s")),
                        }
                        !matches!(c, Client::H1(..))
                    }
                };
                start.wait().await;
                let Ok(w) = window.wait_for(Option::is_some).await.map(|w| *w) else {
                    return (hist, errors, all);
                };
                let (measure_from, end) = w.expect("waited for Some");
                while alive && Instant::now() < end {
                    let t0 = Instant::now();
                    match c.get("/small").await {
                        Ok((StatusCode::OK, n)) if n as usize == crate::roles::SMALL_BODY.len() => {
                            all += 1;
                            let done = Instant::now();
                            if t0 >= measure_from && done <= end {
                                record(&mut hist, done - t0);
                            }
                        }
                        other => {
                            errors += 1;
                            report_failure(&other);
                            // The connection may be gone: this worker stops.
                            alive = !matches!(c, Client::H1(..));
                        }
                    }
                }
                (hist, errors, all)
            })
        })
        .collect();
    start.wait().await;
    let measure_from = Instant::now() + spec.warmup;
    window_tx.send_replace(Some((measure_from, measure_from + spec.duration)));
    let mut hist = new_histogram();
    let mut errors = 0;
    let mut requests_all = 0;
    for t in tasks {
        let (h, e, a) = t.await?;
        hist.add(&h)?;
        errors += e;
        requests_all += a;
    }
    let requests = hist.len();
    Ok(LoadResult {
        requests,
        requests_all,
        errors,
        rps: requests as f64 / spec.duration.as_secs_f64(),
        hist,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_in_microseconds() {
        let mut h = new_histogram();
        for us in 1..=1000u64 {
            record(&mut h, Duration::from_micros(us));
        }
        let p50 = quantile_us(&h, 0.5);
        assert!((499.0..=501.0).contains(&p50), "{p50}");
        let j = percentiles_json(&h);
        assert_eq!(j["n"], 1000);
        assert!(j["p99_us"].as_f64().unwrap() >= 989.0);
    }

    #[test]
    fn transfer_rate_is_decimal_megabytes() {
        let t = Transfer {
            bytes: 200_000_000,
            secs: 2.0,
        };
        assert_eq!(t.mb_per_s(), 100.0);
    }
}
