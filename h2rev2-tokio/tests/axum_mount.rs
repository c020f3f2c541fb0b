//! The proxy mounted in a real axum 0.8 app, the way the README shows it: the app's
//! own route next to the h2rev2 proxy routes as the fallback (`Server::handle` with
//! axum's body, which is `Send` but not `Sync`), and `Server::service` under
//! `Router::nest_service` (the tower impl). Listeners still connect to the built-in
//! TLS listener. `mount.rs` does the same in a bare hyper server.
//!
//! Also: the README's Rust code blocks are the visible text of the crate
//! documentation's doc tests, so what the README shows is what `cargo test --doc`
//! compiles.

mod common;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::response::IntoResponse;
use axum::{Router, routing::get};
use common::*;

/// The README's `tunnel` handler, with the driver's `Server` (what the tokio binding
/// derefs to).
async fn tunnel(
    State(server): State<h2rev2_driver::Server>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> impl IntoResponse {
    server.handle(req, peer, false).await
}

/// An axum app on 127.0.0.1: `/health` is its own, `/tunnel/…` is `Server::service`
/// nested (a tower service), the rest falls back to the proxy.
async fn axum_app(server: h2rev2_driver::Server) -> SocketAddr {
    let nested = server.service("127.0.0.1:9".parse().unwrap(), false);
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .nest_service("/tunnel", nested)
        .fallback(tunnel)
        .with_state(server);
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(tcp, app.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .unwrap();
    });
    addr
}

/// `curl -w '%{http_code}'` after the body: (body, status).
async fn fetch(args: &[&str]) -> (Vec<u8>, String) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-w", "\n%{http_code}"]);
    let (ok, out, err) = curl(&all).await;
    assert!(ok, "curl {args:?}: {err}");
    let cut = out.iter().rposition(|&b| b == b'\n').unwrap();
    let status = String::from_utf8(out[cut + 1..].to_vec()).unwrap();
    (out[..cut].to_vec(), status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_axum_router_mounts_the_proxy() {
    init_tracing();
    let s = stack().await;
    let addr = axum_app(s.public.server.clone()).await;
    let base = format!("http://127.0.0.1:{}", addr.port());

    for v in ["--http1.1", "--http2-prior-knowledge"] {
        // The app's own route still answers.
        let (body, status) = fetch(&[v, &format!("{base}/health")]).await;
        assert_eq!(
            (body.as_slice(), status.as_str()),
            (&b"ok"[..], "200"),
            "{v}"
        );

        // Through the fallback to the internal server.
        let (body, status) = fetch(&[v, &format!("{base}/proxy/app/hello")]).await;
        assert_eq!(status, "200", "{v}");
        assert_eq!(body, b"hello from inside\n", "{v}");

        // A POST body (axum's non-Sync body) goes up and comes back.
        let (body, status) = fetch(&[
            v,
            "--data-binary",
            "through axum",
            &format!("{base}/proxy/app/echo"),
        ])
        .await;
        assert_eq!(status, "200", "{v}");
        assert_eq!(body, b"through axum", "{v}");

        // The nested tower service: axum strips `/tunnel`.
        let (body, status) = fetch(&[v, &format!("{base}/tunnel/proxy/app/hello")]).await;
        assert_eq!(status, "200", "{v}");
        assert_eq!(body, b"hello from inside\n", "{v}");

        // An id without a session gets the proxy's own error status.
        let (_, status) = fetch(&[v, &format!("{base}/proxy/nobody/")]).await;
        assert_eq!(status, "502", "{v}");
        // Reverse connections need the built-in listener.
        let (_, status) = fetch(&[v, &format!("{base}/revdial?id=app")]).await;
        assert_eq!(status, "400", "{v}");
    }

    // A streamed upload of 4 MiB through the fallback arrives whole.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("up.bin");
    let data = pattern(4 << 20);
    std::fs::write(&file, &data).unwrap();
    let digest = {
        use sha2::Digest;
        format!("{:x} {}", sha2::Sha256::digest(&data), data.len())
    };
    let upload = format!("@{}", file.display());
    let (body, status) = fetch(&[
        "-H",
        "content-type: application/octet-stream",
        "--data-binary",
        &upload,
        &format!("{base}/proxy/app/sha256"),
    ])
    .await;
    assert_eq!(status, "200");
    assert_eq!(String::from_utf8_lossy(&body), digest);

    // The forwarded headers name the Client's address as axum saw it.
    let (body, _) = fetch(&[&format!("{base}/proxy/app/headers")]).await;
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("x-forwarded-for: 127.0.0.1\n"), "{text}");
    assert!(text.contains("x-forwarded-proto: http\n"), "{text}");
}

/// The visible lines of each ```` ``` ```` block in the `//!` docs of `src`.
fn doc_blocks(src: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut cur: Option<String> = None;
    for line in src.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            continue;
        };
        let doc = doc.strip_prefix(' ').unwrap_or(doc);
        if doc.starts_with("```") {
            match cur.take() {
                Some(b) => blocks.push(b),
                None => cur = Some(String::new()),
            }
            continue;
        }
        if let Some(b) = &mut cur {
            if doc == "#" || doc.starts_with("# ") {
                continue; // a hidden line of the doc test
            }
            b.push_str(doc);
            b.push('\n');
        }
    }
    blocks
}

#[test]
fn the_readme_shows_the_crate_docs_doc_tests() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let readme = std::fs::read_to_string(root.join("../README.md")).unwrap();
    let blocks = doc_blocks(&lib);
    assert!(blocks.len() >= 2, "the crate docs lost their doc tests");
    assert!(
        blocks.iter().any(|b| b.contains("axum::serve")),
        "the axum doc test is gone"
    );
    for b in blocks {
        let shown = format!("```rust\n{b}```\n");
        assert!(
            readme.contains(&shown),
            "the README does not show this doc test of h2rev2-tokio as it is:\n{b}"
        );
    }
}
