//! Issue 14: interop with the Go package's April-2022 wire, which has no control
//! stream. Our server against a raw HTTP/2 client that behaves exactly as that
//! Listener does, and our Listener in 2022 mode against a raw 2022-style public side.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use h2::client::SendRequest;
use h2rev2_tokio::proto::conn::ConnConfig;
use h2rev2_tokio::tls;
use h2rev2_tokio::{RevConn, ServerConfig, TokioRuntime};
use http::{Request, StatusCode, Version};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// An h2 client connection over TLS, driven by a task of its own.
async fn h2_conn(addr: SocketAddr, certs: &Certs) -> SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = tls::server_name("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(certs.client_tls())
        .connect(name, tcp)
        .await
        .unwrap();
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// Opens one 2022-wire revdial stream: `GET {url}?id={id}`, `Content-Type:
/// application/octet-stream`, no `role`, HEADERS without END_STREAM. The status, and
/// the stream when it is `200`.
async fn open_2022(
    send: &SendRequest<Bytes>,
    port: u16,
    id: &str,
) -> (StatusCode, Option<(h2::SendStream<Bytes>, h2::RecvStream)>) {
    let req = Request::get(format!("https://localhost:{port}/revdial?id={id}"))
        .header("content-type", "application/octet-stream")
        .body(())
        .unwrap();
    let mut send = send.clone().ready().await.unwrap();
    let (resp, stream) = send.send_request(req, false).unwrap();
    let resp = timeout(Duration::from_secs(10), resp)
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let status = resp.status();
    if status == StatusCode::OK {
        (status, Some((stream, resp.into_body())))
    } else {
        (status, None)
    }
}

/// The 2022 Listener: one reverse connection at a time, the next opened once the last
/// is finished; each served as HTTP/1.1 (keep-alive, serially) by the internal routes.
/// A non-200 answer is retried at once. `served` counts finished streams. Before the
/// first stream is served, checks that nothing is written into a parked stream.
async fn go2022_listener(
    send: SendRequest<Bytes>,
    port: u16,
    id: &'static str,
    served: Arc<AtomicUsize>,
    parked_ok: tokio::sync::oneshot::Sender<()>,
) {
    let mut parked_ok = Some(parked_ok);
    loop {
        let (status, stream) = open_2022(&send, port, id).await;
        let Some((send_stream, mut recv)) = stream else {
            assert_ne!(status, StatusCode::OK);
            continue;
        };
        if let Some(tx) = parked_ok.take() {
            // Parked, before any dial: no byte (no control message, no keep-alive)
            // arrives, even past several keep-alive intervals of the server.
            let quiet = timeout(Duration::from_millis(600), recv.data()).await;
            assert!(quiet.is_err(), "written into a parked stream: {quiet:?}");
            let _ = tx.send(());
        }
        let conn = RevConn::new(
            send_stream,
            recv,
            ConnConfig::default(),
            "go2022".into(),
            TokioRuntime::current().rt(),
        );
        serve_internal_conn(conn).await;
        served.fetch_add(1, Relaxed);
    }
}

fn config_2022() -> ServerConfig {
    let mut c = ServerConfig::default();
    c.dialer.auth.allow_anonymous_for(vec![id("001")]);
    // Short keep-alives: a server that took the first stream for a control stream
    // would write into it within the parked check above.
    c.dialer.keepalive_interval = Duration::from_millis(100);
    c
}

/// 20 parallel requests through `/proxy/001/` to a 2022 Listener all succeed, queued
/// for its streams (none `502`), with the right bodies; nothing is written into its
/// parked stream before a dial takes it.
async fn parallel_requests_to_a_2022_listener(side: Side) {
    init_tracing();
    let certs = Arc::new(Certs::new());
    let public = start_public_with(side, &certs, config_2022(), None).await;
    let port = public.addr.port();
    let send = h2_conn(public.addr, &certs).await;
    let served = Arc::new(AtomicUsize::new(0));
    let (parked_tx, parked_rx) = tokio::sync::oneshot::channel();
    let nat = tokio::spawn(go2022_listener(
        send,
        port,
        "001",
        served.clone(),
        parked_tx,
    ));
    timeout(Duration::from_secs(5), parked_rx)
        .await
        .expect("a parked stream within 5 s")
        .unwrap();
    let stats = public.server.stats().await;
    assert_eq!((stats.sessions, stats.spares), (1, 1), "{stats:?}");

    let mut tasks = Vec::new();
    for i in 0..20 {
        let addr = public.addr;
        let certs = certs.clone();
        tasks.push(tokio::spawn(async move {
            let v = if i % 2 == 0 {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            };
            let (status, body) = get(addr, &certs, v, &format!("/proxy/001/get?i={i}")).await;
            (i, status, body)
        }));
    }
    for t in tasks {
        let (i, status, body) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK, "request {i}: {body:?}");
        assert_eq!(body, format!("GET /get?i={i}\n").as_bytes(), "request {i}");
    }
    nat.abort();
}

#[tokio::test]
async fn parallel_requests_to_a_2022_listener_tokio() {
    parallel_requests_to_a_2022_listener(Side::Tokio).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_requests_to_a_2022_listener_smol() {
    parallel_requests_to_a_2022_listener(Side::Smol).await
}

/// A refused 2022 Listener retries at once (no delay at all): the server's refusal
/// throttle slows its answers past the first few, so it costs the server little.
async fn a_refused_2022_listener_is_slowed(side: Side) {
    init_tracing();
    let certs = Certs::new();
    // `001` is not admitted: every stream is refused.
    let public = start_public_with(side, &certs, ServerConfig::default(), None).await;
    let port = public.addr.port();
    let send = h2_conn(public.addr, &certs).await;
    let answer_at_once = ServerConfig::default().refusals.answer_at_once;
    let started = Instant::now();
    let mut refused = 0u32;
    while started.elapsed() < Duration::from_secs(2) {
        let (status, stream) = open_2022(&send, port, "001").await;
        assert!(stream.is_none());
        assert!(status.is_client_error(), "{status}");
        refused += 1;
    }
    // Retrying at full speed for 2 s: a few answers at once, then about one a second.
    assert!(
        refused <= answer_at_once + 3,
        "{refused} refusals answered in 2 s"
    );
    assert!(refused >= answer_at_once, "{refused}");
    assert_eq!(public.server.stats().await.sessions, 0);
}

#[tokio::test]
async fn a_refused_2022_listener_is_slowed_tokio() {
    a_refused_2022_listener_is_slowed(Side::Tokio).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_2022_listener_is_slowed_smol() {
    a_refused_2022_listener_is_slowed(Side::Smol).await
}

/// A raw 2022-style public side: an h2 server over TLS that treats every incoming
/// revdial stream as a reverse connection (answers `200` and hands it out), checking
/// that each request looks as the 2022 Listener's does. Returns its address and the
/// streams, in arrival order.
async fn go2022_public(
    certs: &Certs,
) -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<(h2::SendStream<Bytes>, h2::RecvStream)>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls =
        tokio_rustls::TlsAcceptor::from(tls::server_config(certs.identity.clone(), None).unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = tls.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(io) = tls.accept(tcp).await else {
                    return;
                };
                let mut conn = h2::server::handshake(io).await.unwrap();
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    assert_eq!(req.uri().path(), "/revdial");
                    assert_eq!(req.uri().query(), Some("id=001"), "no role, no conn token");
                    assert_eq!(
                        req.headers().get("content-type").map(|v| v.as_bytes()),
                        Some(&b"application/octet-stream"[..])
                    );
                    let resp = http::Response::builder().status(200).body(()).unwrap();
                    let send = respond.send_response(resp, false).unwrap();
                    let _ = tx.send((send, req.into_body()));
                }
            });
        }
    });
    (addr, rx)
}

/// Sends one HTTP/1.1 request (`Connection: close`) into a reverse connection, as a
/// 2022 public server's dial does; the whole answer.
async fn http_over(conn: (h2::SendStream<Bytes>, h2::RecvStream), path: &str) -> String {
    try_http_over(conn, path).await.unwrap()
}

/// [`http_over`], its I/O error returned.
async fn try_http_over(
    conn: (h2::SendStream<Bytes>, h2::RecvStream),
    path: &str,
) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = RevConn::new(
        conn.0,
        conn.1,
        ConnConfig::default(),
        "go2022-public".into(),
        TokioRuntime::current().rt(),
    );
    let req = format!("GET {path} HTTP/1.1\r\nHost: 001\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await?;
    conn.flush().await?;
    let mut out = Vec::new();
    timeout(Duration::from_secs(10), conn.read_to_end(&mut out))
        .await
        .expect("an answer within 10 s")?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The next stream the 2022 public side was offered.
async fn next(
    streams: &mut tokio::sync::mpsc::UnboundedReceiver<(h2::SendStream<Bytes>, h2::RecvStream)>,
) -> (h2::SendStream<Bytes>, h2::RecvStream) {
    timeout(Duration::from_secs(5), streams.recv())
        .await
        .expect("a stream within 5 s")
        .unwrap()
}

/// Our Listener with `--wire 2022` against a 2022 public side: no control stream, its
/// spares kept open and replaced as they are used, and HTTP served over each.
#[tokio::test]
async fn our_listener_in_2022_mode_serves_a_2022_public_side() {
    init_tracing();
    let certs = Certs::new();
    let (addr, mut streams) = go2022_public(&certs).await;
    let mut opts = h2rev2_tokio::ListenerOptions::new(
        &format!("https://localhost:{}", addr.port()),
        id("001"),
        certs.client_tls(),
    )
    .unwrap();
    opts.machine.wire = h2rev2_tokio::proto::wire::Wire::Go2022;
    opts.machine.spares = 2;
    let listener = bind_listener(opts);
    listener.wait_up().await.unwrap();
    tokio::spawn(async move {
        while let Ok(conn) = listener.accept().await {
            tokio::spawn(serve_internal_conn(conn));
        }
    });
    // Two spares at once, then one more for each used.
    let mut parked = vec![next(&mut streams).await, next(&mut streams).await];
    for i in 0..5 {
        let conn = parked.remove(0);
        let answer = http_over(conn, &format!("/get?i={i}")).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with(&format!("GET /get?i={i}\n")), "{answer}");
        parked.push(next(&mut streams).await);
    }
    // Several at once.
    let answers = futures_util::future::join_all(
        parked
            .drain(..)
            .enumerate()
            .map(|(i, c)| async move { http_over(c, &format!("/get?p={i}")).await }),
    )
    .await;
    for (i, a) in answers.iter().enumerate() {
        assert!(a.ends_with(&format!("GET /get?p={i}\n")), "{a}");
    }
    // No more than the spares are kept open ahead of use.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = 0;
    while streams.try_recv().is_ok() {
        extra += 1;
    }
    assert!(extra <= 2, "{extra} streams beyond the spares");
}

/// Without `--wire`, our Listener against a 2022 public side tells it by the HTTP
/// request that arrives on its control stream, and switches to the 2022 wire.
#[tokio::test]
async fn our_listener_detects_a_2022_public_side() {
    init_tracing();
    let certs = Certs::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor =
        tokio_rustls::TlsAcceptor::from(tls::server_config(certs.identity.clone(), None).unwrap());
    let (tx, mut streams) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(io) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut conn = h2::server::handshake(io).await.unwrap();
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    let ct = req.headers().contains_key("content-type");
                    let resp = http::Response::builder().status(200).body(()).unwrap();
                    let send = respond.send_response(resp, false).unwrap();
                    let _ = tx.send((ct, (send, req.into_body())));
                }
            });
        }
    });
    let mut opts = h2rev2_tokio::ListenerOptions::new(
        &format!("https://localhost:{}", addr.port()),
        id("001"),
        certs.client_tls(),
    )
    .unwrap();
    opts.machine.backoff_initial = Duration::from_millis(50);
    let our = bind_listener(opts);
    let accepting = our.incoming();
    tokio::spawn(async move {
        use futures_util::StreamExt;
        let mut accepting = std::pin::pin!(accepting);
        while let Some(conn) = accepting.next().await {
            tokio::spawn(serve_internal_conn(conn));
        }
    });
    // The first stream is its control stream; the 2022 side hands it to a dial, whose
    // request the Listener cannot serve (that dial fails, as against any Listener of
    // the current wire).
    let (ct, control) = timeout(Duration::from_secs(5), streams.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(!ct, "the control request has no content type");
    let lost = try_http_over(control, "/get?lost").await;
    assert!(lost.is_err(), "{lost:?}");
    // From then on: 2022 streams, which serve requests.
    let (ct, conn) = loop {
        let (ct, c) = timeout(Duration::from_secs(5), streams.recv())
            .await
            .expect("a stream after the switch")
            .unwrap();
        if ct {
            break (ct, c);
        }
    };
    assert!(ct);
    let answer = http_over(conn, "/get?after").await;
    assert!(answer.ends_with("GET /get?after\n"), "{answer}");
    assert_eq!(our.status(), h2rev2_tokio::Status::Up);
}
