//! End-to-end tests: real TLS, real HTTP/2, real clients, on 127.0.0.1.

mod common;

use std::time::Duration;

use common::*;
use h2rev2_tokio::nat::{self, HttpProxyOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http1_and_http2_through_the_tunnel() {
    init_tracing();
    let certs = Certs::new();
    let public = start_public(&certs, token_config(&[("app", "tok")])).await;
    let internal = start_internal().await;
    let listener = bind_listener(listener_opts(&public, &certs, "app", Some("tok")));
    listener.wait_up().await.unwrap();
    let target = format!("http://{internal}").parse().unwrap();
    tokio::spawn(nat::serve_http_proxy(
        listener,
        HttpProxyOptions::new(target),
    ));

    let url = format!("{}/proxy/app/hello", public.url());
    let cacert = certs.cert_path();
    for v in ["--http1.1", "--http2"] {
        let (ok, out, err) = curl(&[v, "--cacert", cacert.to_str().unwrap(), &url]).await;
        assert!(ok, "{v}: {err}");
        assert_eq!(out, b"hello from inside\n", "{v}");
    }
    // Unknown id: 502 at once.
    let started = std::time::Instant::now();
    let (_, out, _) = curl(&[
        "-k",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{}/proxy/nobody/", public.url()),
    ])
    .await;
    assert_eq!(out, b"502");
    assert!(started.elapsed() < Duration::from_secs(2));
}
