//! What a Client is told when a proxied request fails: a short reason that says what
//! happened (refused, closed without a response, no Listener), never an internal
//! address or a library's error chain (those go to the log).

mod common;

use std::time::Duration;

use common::*;
use http::{StatusCode, Version};

/// A TCP server that accepts, reads a little and closes without answering.
async fn closes_without_answering() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
            });
        }
    });
    addr
}

async fn nat_proxy_to(public: &Public, certs: &Certs, name: &str, target: std::net::SocketAddr) {
    let listener = bind_listener(listener_opts(public, certs, name, Some("tok")));
    tokio::time::timeout(Duration::from_secs(10), listener.wait_up())
        .await
        .expect("Listener up")
        .unwrap();
    let target = format!("http://{target}").parse().unwrap();
    tokio::spawn(h2rev2_tokio::nat::serve_http_proxy(
        listener,
        h2rev2_tokio::nat::HttpProxyOptions::new(target),
    ));
}

async fn internal_failures_get_short_reasons(side: Side) {
    init_tracing();
    let certs = Certs::new();
    let config = token_config(&[("refuses", "tok"), ("closes", "tok")]);
    let public = start_public_with(side, &certs, config, None).await;
    let nobody: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    nat_proxy_to(&public, &certs, "refuses", nobody).await;
    nat_proxy_to(&public, &certs, "closes", closes_without_answering().await).await;
    for v in [Version::HTTP_11, Version::HTTP_2] {
        for (path, want) in [
            (
                "/proxy/refuses/x",
                "h2rev2: the internal server refused the connection\n",
            ),
            (
                "/proxy/closes/x",
                "h2rev2: the internal server closed the connection without a response\n",
            ),
            (
                "/proxy/nobody/x",
                "h2rev2: nobody: no Listener is connected for this id\n",
            ),
        ] {
            let (status, body) = get(public.addr, &certs, v, path).await;
            let body = String::from_utf8_lossy(&body);
            assert_eq!(status, StatusCode::BAD_GATEWAY, "{path} {v:?}: {body}");
            assert_eq!(body, want, "{path} over {v:?}");
            assert!(!body.contains("127.0.0.1"), "{body}");
        }
    }
}
both!(internal_failures_get_short_reasons);
