//! Big transfers through the tunnel, checked with SHA-256: a 256 MiB download and a
//! 64 MiB upload, both streamed (the test holds one chunk at a time), with an HTTP/2
//! Client and with an HTTP/1.1 Client (the public side's code paths differ).
//!
//! Slow in debug builds (hashing and TLS dominate); CI may run this file with
//! `cargo test --release -p h2rev2-tokio --test big`.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, StreamBody};
use sha2::{Digest, Sha256};
use tokio::time::timeout;

const DOWN: usize = 256 << 20;
const UP: usize = 64 << 20;

/// SHA-256 of the first `n` pattern bytes, hashed chunk by chunk.
fn pattern_sha256(n: usize) -> String {
    let mut h = Sha256::new();
    let chunk = 1 << 20;
    let mut off = 0;
    while off < n {
        let len = chunk.min(n - off);
        h.update(pattern_at(off, len));
        off += len;
    }
    format!("{:x}", h.finalize())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_256_mib_http2() {
    download(Version::HTTP_2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_256_mib_http1() {
    download(Version::HTTP_11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_64_mib_http2() {
    upload(Version::HTTP_2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_64_mib_http1() {
    upload(Version::HTTP_11).await;
}

async fn download(v: Version) {
    init_tracing();
    let s = stack().await;
    let expected = tokio::task::spawn_blocking(|| pattern_sha256(DOWN));
    let started = Instant::now();
    let req = Request::get(format!(
        "https://localhost:{}/proxy/app/big/{DOWN}",
        s.public.addr.port()
    ))
    .body(empty())
    .unwrap();
    let resp = timeout(
        Duration::from_secs(20),
        request(s.public.addr, &s.certs, v, req),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut h = Sha256::new();
    let mut n = 0usize;
    timeout(Duration::from_secs(240), async {
        while let Some(frame) = body.frame().await {
            if let Ok(d) = frame.unwrap().into_data() {
                n += d.len();
                h.update(&d);
            }
        }
    })
    .await
    .expect("download within 240 s");
    let took = started.elapsed();
    assert_eq!(n, DOWN);
    assert_eq!(format!("{:x}", h.finalize()), expected.await.unwrap());
    eprintln!(
        "256 MiB download, {v:?}: {took:?} ({:.0} MiB/s)",
        DOWN as f64 / (1 << 20) as f64 / took.as_secs_f64()
    );
}

async fn upload(v: Version) {
    init_tracing();
    let s = stack().await;
    let expected = tokio::task::spawn_blocking(|| pattern_sha256(UP));
    let started = Instant::now();
    let body = StreamBody::new(pattern_stream::<h2rev2_tokio::BoxError>(UP, 256 << 10));
    let req = Request::post(format!(
        "https://localhost:{}/proxy/app/sha256",
        s.public.addr.port()
    ))
    .header("content-length", UP.to_string())
    .body(BodyExt::boxed(body))
    .unwrap();
    let resp = timeout(
        Duration::from_secs(240),
        request(s.public.addr, &s.certs, v, req),
    )
    .await
    .expect("upload within 240 s")
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let answer: Bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let took = started.elapsed();
    assert_eq!(
        String::from_utf8_lossy(&answer),
        format!("{} {UP}", expected.await.unwrap())
    );
    eprintln!(
        "64 MiB upload, {v:?}: {took:?} ({:.0} MiB/s)",
        UP as f64 / (1 << 20) as f64 / took.as_secs_f64()
    );
}
