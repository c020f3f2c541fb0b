//! The proxy routes mounted in a user's own hyper server ([`Server::service`]), next
//! to the user's routes; Listeners still connect to the built-in listener.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

/// A cleartext hyper server (HTTP/1.1 and h2c): `/health` is the user's own, the rest
/// goes to the h2rev2 proxy.
async fn user_server(server: h2rev2_driver::Server) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, peer)) = listener.accept().await {
            let proxy = server.service(peer, false);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let proxy = proxy.clone();
                    async move {
                        if req.uri().path() == "/health" {
                            let body = Full::new(Bytes::from_static(b"ok"))
                                .map_err(|e| match e {})
                                .boxed();
                            return Ok::<_, Infallible>(Response::new(body));
                        }
                        hyper::service::Service::call(&proxy, req).await
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_routes_in_a_user_server() {
    init_tracing();
    let s = stack().await;
    let addr = user_server(s.public.server.clone()).await;
    let base = format!("http://127.0.0.1:{}", addr.port());

    // HTTP/1.1 and HTTP/2 with prior knowledge, with curl.
    for v in ["--http1.1", "--http2-prior-knowledge"] {
        let (ok, out, err) = curl(&[v, &format!("{base}/health")]).await;
        assert!(ok, "{v}: {err}");
        assert_eq!(out, b"ok");
        let (ok, out, err) = curl(&[v, &format!("{base}/proxy/app/hello")]).await;
        assert!(ok, "{v}: {err}");
        assert_eq!(out, b"hello from inside\n", "{v}");
        let (ok, out, _) = curl(&[
            v,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{base}/revdial?id=app"),
        ])
        .await;
        assert!(ok);
        assert_eq!(out, b"400", "{v}: revdial needs the built-in listener");
        let (_, out, _) = curl(&[
            v,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{base}/proxy/nobody/"),
        ])
        .await;
        assert_eq!(out, b"502", "{v}");
    }
    let (ok, out, err) = curl(&["--data-binary", "up", &format!("{base}/proxy/app/headers")]).await;
    assert!(ok, "{err}");
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("x-forwarded-proto: http\n"), "{text}");

    // A WebSocket through the mounted service.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(
            format!("ws://127.0.0.1:{}/proxy/app/ws", addr.port()),
            tcp,
        ),
    )
    .await
    .unwrap()
    .unwrap();
    ws.send(Message::text("over the mount")).await.unwrap();
    let back = timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(back, Message::text("over the mount"));
    ws.close(None).await.unwrap();
}

/// `Server::handle` with a body type of the caller's choosing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_takes_any_body() {
    init_tracing();
    let s = stack().await;
    let req = Request::post("/proxy/app/echo")
        .body(Full::new(Bytes::from_static(b"in-process")))
        .unwrap();
    let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let resp = timeout(
        Duration::from_secs(10),
        s.public.server.handle(req, peer, true),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "in-process");
}
