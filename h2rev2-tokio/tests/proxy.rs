//! The public HTTP proxy as a user drives it: curl and hyper Clients over TLS, HTTP/1.1
//! and HTTP/2, through `/proxy/{id}/` and the default-target route, to a real internal
//! server (python's `http.server`, or the hyper fixture) behind the NAT side.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use h2rev2_tokio::proto::wire::RouteConfig;
use h2rev2_tokio::{DialConnector, ServerConfig};
use http::{Request, StatusCode, Version};
use http_body_util::BodyExt;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

const VERSIONS: [Version; 2] = [Version::HTTP_11, Version::HTTP_2];

async fn python_http_server_through_curl_and_hyper(side: Side) {
    init_tracing();
    let py = start_python().await;
    let certs = Certs::new();
    let public = start_public_with(side, &certs, token_config(&[("py", "tok")]), None).await;
    let listener = bind_listener(listener_opts(&public, &certs, "py", Some("tok")));
    timeout(Duration::from_secs(10), listener.wait_up())
        .await
        .unwrap()
        .unwrap();
    let target = format!("http://{}", py.addr).parse().unwrap();
    tokio::spawn(h2rev2_tokio::nat::serve_http_proxy(
        listener,
        h2rev2_tokio::nat::HttpProxyOptions::new(target),
    ));

    let cacert = certs.cert_path();
    let base = format!("{}/proxy/py", public.url());
    let data = pattern(300_000);
    for v in ["--http1.1", "--http2"] {
        let (ok, out, err) = curl(&[
            v,
            "--cacert",
            cacert.to_str().unwrap(),
            &format!("{base}/index.txt"),
        ])
        .await;
        assert!(ok, "{v}: {err}");
        assert_eq!(out, PY_INDEX, "{v}");
        let (ok, out, err) = curl(&[
            v,
            "--cacert",
            cacert.to_str().unwrap(),
            &format!("{base}/data.bin"),
        ])
        .await;
        assert!(ok, "{v}: {err}");
        assert!(out == data, "{v}: data.bin differs ({} bytes)", out.len());
        // The directory listing: python's own HTML, through the tunnel.
        let (ok, out, err) =
            curl(&[v, "--cacert", cacert.to_str().unwrap(), &format!("{base}/")]).await;
        assert!(ok, "{v}: {err}");
        let html = String::from_utf8_lossy(&out);
        assert!(
            html.contains("index.txt") && html.contains("data.bin"),
            "{html}"
        );
    }
    for v in VERSIONS {
        let (status, body) = get(public.addr, &certs, v, "/proxy/py/index.txt").await;
        assert_eq!(status, StatusCode::OK, "{v:?}");
        assert_eq!(body, PY_INDEX, "{v:?}");
        let (status, _) = get(public.addr, &certs, v, "/proxy/py/missing.txt").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{v:?}");
    }
}
both!(python_http_server_through_curl_and_hyper);

/// Checks every basic thing a user does through a tunnel for id `app`: curl and hyper
/// over HTTP/1.1 and HTTP/2, a query string, a request body, and concurrency.
async fn basic_checks(s: &Stack) {
    let cacert = s.certs.cert_path();
    let url = format!("{}/proxy/app/hello", s.public.url());
    for v in ["--http1.1", "--http2"] {
        let (ok, out, err) = curl(&[v, "--cacert", cacert.to_str().unwrap(), &url]).await;
        assert!(ok, "{v}: {err}");
        assert_eq!(out, b"hello from inside\n", "{v}");
        let (ok, out, err) = curl(&[
            v,
            "--cacert",
            cacert.to_str().unwrap(),
            "--data-binary",
            "posted body",
            &format!("{}/proxy/app/echo", s.public.url()),
        ])
        .await;
        assert!(ok, "{v}: {err}");
        assert_eq!(out, b"posted body", "{v}");
    }
    for v in VERSIONS {
        let (status, body) = get(s.public.addr, &s.certs, v, "/proxy/app/get?a=1&b=two").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "GET /get?a=1&b=two\n", "{v:?}");
    }
    // 50 concurrent requests on one HTTP/2 connection.
    let client = h2_client(s.public.addr, &s.certs).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut c = client.clone();
        let port = s.public.addr.port();
        tasks.push(tokio::spawn(async move {
            let req = Request::get(format!("https://localhost:{port}/proxy/app/get?i={i}"))
                .body(empty())
                .unwrap();
            let resp = c.send_request(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, format!("GET /get?i={i}\n"));
        }));
    }
    for t in tasks {
        timeout(Duration::from_secs(30), t).await.unwrap().unwrap();
    }
}

async fn basic_with_tokens_roles_and_spares(side: Side) {
    init_tracing();
    let s = stack_on(side, token_config(&[("app", "tok")]), |_| {}).await;
    basic_checks(&s).await;
}
both!(basic_with_tokens_roles_and_spares);

/// A Listener that behaves like the Go package on the wire (unmarked revdial requests,
/// FIFO matching, no spares) against a server in anonymous mode.
async fn basic_with_go_wire_behaviour(side: Side) {
    init_tracing();
    let mut config = ServerConfig::default();
    config.dialer.auth.allow_anonymous();
    let s = stack_on(side, config, |o| {
        o.token = None;
        o.machine.mark_roles = false;
        o.machine.spares = 0;
    })
    .await;
    basic_checks(&s).await;
    // WebSocket and SSE work the same way.
    websocket_echo_through(&s, "/proxy/app/ws").await;
    let (status, body) = get(s.public.addr, &s.certs, Version::HTTP_2, "/proxy/app/sse").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "data: event 0\n\ndata: event 1\n\ndata: event 2\n\n");
}
both!(basic_with_go_wire_behaviour);

/// The original README's example: a server with a default dialer id proxies every
/// other path, unchanged, to it (`curl -k https://localhost:9090/get`).
async fn default_target_route(side: Side) {
    init_tracing();
    let mut config = token_config(&[("app", "tok")]);
    config.routes = RouteConfig::default().with_default_id(Some(id("app")));
    let s = stack_on(side, config, |_| {}).await;
    for v in ["--http1.1", "--http2"] {
        let (ok, out, err) = curl(&[v, "-k", &format!("{}/get?show_env=1", s.public.url())]).await;
        assert!(ok, "{v}: {err}");
        assert_eq!(out, b"GET /get?show_env=1\n", "{v}");
    }
    for v in VERSIONS {
        let (status, body) = get(s.public.addr, &s.certs, v, "/get").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"GET /get\n"[..]));
        // The explicit route still works, and strips its prefix.
        let (status, body) = get(s.public.addr, &s.certs, v, "/proxy/app/get").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"GET /get\n"[..]));
        let (status, _) = get(s.public.addr, &s.certs, v, "/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "the internal server's 404");
    }
}
both!(default_target_route);

async fn forwarded_headers_and_hop_by_hop(side: Side) {
    init_tracing();
    let s = stack_on(side, token_config(&[("app", "tok")]), |_| {}).await;
    let req = Request::get(format!(
        "https://localhost:{}/proxy/app/headers?q=1",
        s.public.addr.port()
    ))
    .header("host", "public.example")
    .header("connection", "x-private, keep-alive")
    .header("x-private", "secret")
    .header("x-kept", "yes")
    .body(empty())
    .unwrap();
    let resp = h1_client(s.public.addr, &s.certs)
        .await
        .send_request(req)
        .await
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body).to_lowercase();
    assert!(text.contains("x-kept: yes"), "{text}");
    assert!(!text.contains("x-private"), "named by Connection: {text}");
    assert!(text.contains("x-forwarded-for: 127.0.0.1"), "{text}");
    assert!(text.contains("x-forwarded-proto: https"), "{text}");
    assert!(text.contains("x-forwarded-host: public.example"), "{text}");
    assert!(text.contains("x-forwarded-prefix: /proxy/app"), "{text}");
    assert!(text.contains("path: /headers?q=1"), "{text}");
}
both!(forwarded_headers_and_hop_by_hop);

/// 200 requests at once through one tunnel: on one HTTP/2 connection to the public
/// server, and through the [`DialConnector`] in process.
async fn two_hundred_concurrent_requests(side: Side) {
    init_tracing();
    let s = stack_on(side, token_config(&[("app", "tok")]), |_| {}).await;
    let client = h2_client(s.public.addr, &s.certs).await;
    let port = s.public.addr.port();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            // Alternate small answers and 64 KiB ones.
            let path = if i % 2 == 0 {
                format!("/proxy/app/get?i={i}")
            } else {
                "/proxy/app/big/65536".to_string()
            };
            let req = Request::get(format!("https://localhost:{port}{path}"))
                .body(empty())
                .unwrap();
            let resp = c.send_request(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "request {i}");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            if i % 2 == 0 {
                assert_eq!(body, format!("GET /get?i={i}\n"));
            } else {
                assert!(body == pattern(65536), "request {i}: wrong body");
            }
        }));
    }
    for t in tasks {
        timeout(Duration::from_secs(60), t).await.unwrap().unwrap();
    }

    // The same through the DialConnector: a hyper client reaching the NATed server.
    let client: hyper_util::client::legacy::Client<_, TestBody> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(DialConnector::new(s.public.server.clone()));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let req = Request::post(format!("http://app/echo?i={i}"))
                .body(full_body(format!("body {i}")))
                .unwrap();
            let resp = c.request(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, format!("body {i}"));
        }));
    }
    for t in tasks {
        timeout(Duration::from_secs(60), t).await.unwrap().unwrap();
    }
}
both!(two_hundred_concurrent_requests);

/// Server-sent events: the first event reaches the Client before the stream ends.
async fn sse_events_arrive_as_they_are_sent(side: Side) {
    init_tracing();
    let s = stack_on(side, token_config(&[("app", "tok")]), |_| {}).await;
    for v in VERSIONS {
        let req = Request::get(format!(
            "https://localhost:{}/proxy/app/sse",
            s.public.addr.port()
        ))
        .body(empty())
        .unwrap();
        let resp = timeout(
            Duration::from_secs(10),
            request(s.public.addr, &s.certs, v, req),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let mut body = resp.into_body();
        let mut got = Vec::new();
        let mut first_at = None;
        while let Some(frame) = timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("a frame within 10 s")
        {
            if let Ok(data) = frame.unwrap().into_data() {
                if first_at.is_none() && !data.is_empty() {
                    first_at = Some(Instant::now());
                    // Only the first event has been sent so far.
                    assert_eq!(data, "data: event 0\n\n", "{v:?}: first chunk");
                }
                got.extend_from_slice(&data);
            }
        }
        let ended = Instant::now();
        assert_eq!(got, b"data: event 0\n\ndata: event 1\n\ndata: event 2\n\n");
        // The server sends for 1.5 s: the first event came long before the end.
        let lead = ended - first_at.unwrap();
        assert!(lead >= Duration::from_millis(700), "{v:?}: lead {lead:?}");
    }
}
both!(sse_events_arrive_as_they_are_sent);

async fn websocket_echo_through(s: &Stack, path: &str) {
    let tls = tls_connect(s.public.addr, &s.certs, h2rev2_tokio::tls::ALPN_HTTP11).await;
    let url = format!("wss://localhost:{}{path}", s.public.addr.port());
    let (mut ws, resp) = timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(url, tls),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..20 {
        ws.send(Message::text(format!("message {i}")))
            .await
            .unwrap();
        let back = timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back, Message::text(format!("message {i}")));
    }
    let big = Bytes::from(pattern(200_000));
    ws.send(Message::binary(big.clone())).await.unwrap();
    let back = timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(back, Message::binary(big));
    ws.close(None).await.unwrap();
    // The close handshake completes through the tunnel.
    let end = timeout(Duration::from_secs(5), async {
        while let Some(m) = ws.next().await {
            if m.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(end.is_ok(), "close handshake did not complete");
}

async fn websocket_echo(side: Side) {
    init_tracing();
    let s = stack_on(side, token_config(&[("app", "tok")]), |_| {}).await;
    websocket_echo_through(&s, "/proxy/app/ws").await;
}
both!(websocket_echo);

/// Unknown id: `502` naming the id, within 100 ms (measured in process, on an
/// established connection).
async fn unknown_id_is_502_at_once(side: Side) {
    init_tracing();
    let s = stack_on(side, token_config(&[("app", "tok")]), |_| {}).await;
    let mut h2 = h2_client(s.public.addr, &s.certs).await;
    let mut h1 = h1_client(s.public.addr, &s.certs).await;
    for round in 0..3 {
        for v in VERSIONS {
            let req = Request::get(format!(
                "https://localhost:{}/proxy/nobody/x",
                s.public.addr.port()
            ))
            .body(empty())
            .unwrap();
            let started = Instant::now();
            let resp = if v == Version::HTTP_2 {
                h2.send_request(req).await.unwrap()
            } else {
                h1.send_request(req).await.unwrap()
            };
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let took = started.elapsed();
            assert!(
                took < Duration::from_millis(100),
                "round {round} {v:?}: 502 took {took:?}"
            );
            assert!(
                String::from_utf8_lossy(&body).contains("nobody"),
                "{body:?}"
            );
        }
    }
    // And the status itself.
    let (status, _) = get(s.public.addr, &s.certs, Version::HTTP_2, "/proxy/nobody/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    // A malformed id is the Client's fault, an unknown route is a 404.
    let (status, _) = get(s.public.addr, &s.certs, Version::HTTP_11, "/proxy/").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = get(s.public.addr, &s.certs, Version::HTTP_11, "/elsewhere").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
both!(unknown_id_is_502_at_once);

/// `Server::shutdown` lets a response in flight finish, then the server is gone.
async fn graceful_shutdown_finishes_in_flight_responses(side: Side) {
    init_tracing();
    let s = stack_on(side, token_config(&[("app", "tok")]), |_| {}).await;
    let mut bodies = Vec::new();
    for v in VERSIONS {
        let req = Request::get(format!(
            "https://localhost:{}/proxy/app/sse",
            s.public.addr.port()
        ))
        .body(empty())
        .unwrap();
        let resp = request(s.public.addr, &s.certs, v, req).await.unwrap();
        let mut body = resp.into_body();
        // The first event is there: the response is in flight.
        let first = timeout(Duration::from_secs(5), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap();
        assert_eq!(first, "data: event 0\n\n");
        bodies.push((v, body));
    }
    let server = s.public.server.clone();
    let started = Instant::now();
    let shutdown = tokio::spawn(async move { server.shutdown(Duration::from_secs(10)).await });
    for (v, body) in bodies {
        let rest = timeout(Duration::from_secs(5), body.collect())
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{v:?}: in-flight response cut: {e}"))
            .to_bytes();
        assert_eq!(rest, "data: event 1\n\ndata: event 2\n\n", "{v:?}");
    }
    // Nothing new is accepted.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(s.public.addr).await.is_err(),
        "still accepting after shutdown"
    );
    timeout(Duration::from_secs(15), shutdown)
        .await
        .unwrap()
        .unwrap();
    eprintln!("shutdown took {:?}", started.elapsed());
}
both!(graceful_shutdown_finishes_in_flight_responses);

/// curl uploads a 3 MiB file (HTTP/1.1 with `Expect: 100-continue`, and HTTP/2), and
/// sends HEAD requests: what a user's shell does.
async fn curl_uploads_and_head(side: Side) {
    init_tracing();
    let s = stack_on(side, token_config(&[("app", "tok")]), |_| {}).await;
    let data = pattern(3 << 20);
    let file = s.certs.dir.path().join("upload.bin");
    std::fs::write(&file, &data).unwrap();
    let expected = {
        use sha2::Digest;
        format!("{:x} {}", sha2::Sha256::digest(&data), data.len())
    };
    let cacert = s.certs.cert_path();
    let url = format!("{}/proxy/app/sha256", s.public.url());
    for v in ["--http1.1", "--http2"] {
        let (ok, out, err) = curl(&[
            v,
            "--cacert",
            cacert.to_str().unwrap(),
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            &format!("@{}", file.display()),
            &url,
        ])
        .await;
        assert!(ok, "{v}: {err}");
        assert_eq!(String::from_utf8_lossy(&out), expected, "{v}");
        let (ok, out, err) = curl(&[
            v,
            "--cacert",
            cacert.to_str().unwrap(),
            "-I",
            &format!("{}/proxy/app/big/1000", s.public.url()),
        ])
        .await;
        assert!(ok, "{v}: {err}");
        let head = String::from_utf8_lossy(&out);
        assert!(head.starts_with("HTTP/"), "{v}: {head}");
        assert!(head.contains(" 200"), "{v}: {head}");
    }
}
both!(curl_uploads_and_head);

/// Clients that give up mid-download (drop the response, or the connection) release
/// their reverse conns: nothing piles up on the public side.
async fn abandoned_downloads_release_their_conns(side: Side) {
    init_tracing();
    let s = stack_on(side, token_config(&[("app", "tok")]), |_| {}).await;
    let open = || {
        s.public
            .server
            .metrics()
            .open_conns
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = open();
    for round in 0..10 {
        for v in VERSIONS {
            let req = Request::get(format!(
                "https://localhost:{}/proxy/app/big/{}",
                s.public.addr.port(),
                64 << 20
            ))
            .body(empty())
            .unwrap();
            let resp = timeout(
                Duration::from_secs(10),
                request(s.public.addr, &s.certs, v, req),
            )
            .await
            .unwrap()
            .unwrap();
            let mut body = resp.into_body();
            let f = timeout(Duration::from_secs(10), body.frame())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert!(f.is_data(), "round {round}");
            drop(body);
        }
    }
    let mut now = open();
    for _ in 0..300 {
        if now <= before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        now = open();
    }
    assert!(
        now <= before,
        "reverse conns left open: {before} before, {now} after"
    );
    // And the tunnel still works.
    let (status, _) = get(s.public.addr, &s.certs, Version::HTTP_2, "/proxy/app/hello").await;
    assert_eq!(status, StatusCode::OK);
}
both!(abandoned_downloads_release_their_conns);

/// The NAT proxy's `strip_prefix` (for a Go public server, which forwards full paths)
/// strips whole segments only.
async fn nat_proxy_strips_whole_prefix_segments(side: Side) {
    init_tracing();
    let certs = Certs::new();
    let public = start_public_with(side, &certs, token_config(&[("app", "tok")]), None).await;
    let internal = start_internal().await;
    let listener = bind_listener(listener_opts(&public, &certs, "app", Some("tok")));
    timeout(Duration::from_secs(10), listener.wait_up())
        .await
        .unwrap()
        .unwrap();
    let mut opts =
        h2rev2_tokio::nat::HttpProxyOptions::new(format!("http://{internal}").parse().unwrap());
    opts.strip_prefix = Some("/proxy/app".into());
    tokio::spawn(h2rev2_tokio::nat::serve_http_proxy(listener, opts));
    for (path, want) in [
        ("/proxy/app/proxy/app/get?x=1", "GET /get?x=1\n"),
        ("/proxy/app/proxy/app", "not found\n"),
        ("/proxy/app/proxy/appx/get", "not found\n"),
        ("/proxy/app/get", "GET /get\n"),
    ] {
        let (_, body) = get(public.addr, &certs, Version::HTTP_11, path).await;
        assert_eq!(String::from_utf8_lossy(&body), want, "{path}");
    }
}
both!(nat_proxy_strips_whole_prefix_segments);

/// What is still running at the shutdown deadline is cut: `shutdown` returns on time
/// and a Client stuck in a download sees an error, not a clean end.
async fn shutdown_cuts_what_is_left_at_the_deadline(side: Side) {
    init_tracing();
    let s = stack_on(side, token_config(&[("app", "tok")]), |_| {}).await;
    const TOTAL: usize = 256 << 20;
    let mut bodies = Vec::new();
    for v in VERSIONS {
        let req = Request::get(format!(
            "https://localhost:{}/proxy/app/big/{TOTAL}",
            s.public.addr.port()
        ))
        .body(empty())
        .unwrap();
        let resp = request(s.public.addr, &s.certs, v, req).await.unwrap();
        let mut body = resp.into_body();
        let first = timeout(Duration::from_secs(5), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        bodies.push((v, body, first.into_data().map(|d| d.len()).unwrap_or(0)));
    }
    // The Clients stop reading; the server shuts down with a short deadline.
    let started = Instant::now();
    timeout(
        Duration::from_secs(5),
        s.public.server.shutdown(Duration::from_millis(500)),
    )
    .await
    .expect("shutdown keeps its deadline");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(500), "{took:?}");
    for (v, mut body, mut got) in bodies {
        let r = timeout(Duration::from_secs(10), async {
            while let Some(f) = body.frame().await {
                got += f?.into_data().map(|d| d.len()).unwrap_or(0);
            }
            Ok::<_, hyper::Error>(())
        })
        .await
        .unwrap_or_else(|_| panic!("{v:?}: the cut download hung"));
        assert!(
            r.is_err(),
            "{v:?}: a cut download ended cleanly at {got} bytes"
        );
        assert!(got < TOTAL, "{v:?}");
    }
    let mut n = 0;
    while s
        .public
        .server
        .metrics()
        .connections
        .load(std::sync::atomic::Ordering::Relaxed)
        > 0
    {
        n += 1;
        assert!(n < 300, "connections still served 3 s after the deadline");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
both!(shutdown_cuts_what_is_left_at_the_deadline);

/// A base path and the original README's `-dialer-key dialerid`: both sides agree on
/// the layout, and Clients use `B/proxy/{id}/`.
async fn base_path_and_custom_id_key(side: Side) {
    init_tracing();
    let mut config = token_config(&[("app", "tok")]);
    config.routes = RouteConfig::default()
        .with_base("/tunnel")
        .with_id_key("dialerid");
    let certs = Certs::new();
    let public = start_public_with(side, &certs, config, None).await;
    let internal = start_internal().await;
    let mut opts = h2rev2_tokio::ListenerOptions::new(
        &format!("{}/tunnel", public.url()),
        id("app"),
        certs.client_tls(),
    )
    .unwrap();
    opts.token = Some("tok".into());
    opts.machine.routes = opts.machine.routes.clone().with_id_key("dialerid");
    let listener = bind_listener(opts);
    timeout(Duration::from_secs(10), listener.wait_up())
        .await
        .unwrap()
        .unwrap();
    tokio::spawn(h2rev2_tokio::nat::serve_http_proxy(
        listener,
        h2rev2_tokio::nat::HttpProxyOptions::new(format!("http://{internal}").parse().unwrap()),
    ));
    for v in VERSIONS {
        let (status, body) = get(public.addr, &certs, v, "/tunnel/proxy/app/get?q").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"GET /get?q\n"[..]));
        let (status, _) = get(public.addr, &certs, v, "/proxy/app/get").await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "{v:?}: outside the base path"
        );
    }
}
both!(base_path_and_custom_id_key);
