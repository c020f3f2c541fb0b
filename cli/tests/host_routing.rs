//! Host routing (issue 12 item 8), through the binary: `server --domain tunnel.test`
//! with a wildcard certificate makes `https://web.tunnel.test/` reach id `web`, from
//! the `Host` header (HTTP/1.1 and HTTP/2) or, for a request without one, the TLS
//! server name; the bare domain keeps the path routes.

mod common;

use std::time::Duration;

use common::*;

/// curl `https://{host}:{port}{path}` with `host` resolved to 127.0.0.1 and the
/// server's certificate trusted (checked for `host`, no pin): (success, body, stderr).
fn get(server: &PublicServer, host: &str, path: &str, extra: &[&str]) -> (bool, String, String) {
    let port = server.url.rsplit(':').next().unwrap();
    let resolve = format!("{host}:{port}:127.0.0.1");
    let url = format!("https://{host}:{port}{path}");
    let mut args = vec!["--resolve", &resolve, "--cacert", &server.cert];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&args)
}

#[test]
fn a_host_under_the_domain_reaches_its_id_and_the_bare_domain_routes_by_path() {
    let server = PublicServer::start(
        "web s3cret\napi t0ken\n",
        &[
            "--hostname",
            "tunnel.test",
            "--hostname",
            "*.tunnel.test",
            "--domain",
            "tunnel.test",
        ],
    );
    let web = format!("http://127.0.0.1:{}", start_http_named("web"));
    let api = format!("http://127.0.0.1:{}", start_http_named("api"));
    let _web = server.client("web", "s3cret", &web);
    let _api = server.client("api", "t0ken", &api);

    // Each id under its own name, over HTTP/2 and HTTP/1.1, the path unchanged.
    let http2 = ["--http2"];
    let http11 = ["--http1.1"];
    for version in [&http2[..], &http11[..]] {
        let (ok, body, err) = get(&server, "web.tunnel.test", "/hello?x=1", version);
        assert!(ok, "{version:?}: {err}");
        assert_eq!(body, "web /hello?x=1\n", "{version:?}");
        let (ok, body, err) = get(&server, "api.tunnel.test", "/", version);
        assert!(ok, "{version:?}: {err}");
        assert_eq!(body, "api /\n", "{version:?}");
    }
    // Host names compare without case.
    let (_, body, _) = get(&server, "API.Tunnel.Test", "/case", &[]);
    assert_eq!(body, "api /case\n");

    // Every path of a host name belongs to its id: no way into another id from it.
    let (_, body, _) = get(&server, "web.tunnel.test", "/proxy/api/x", &[]);
    assert_eq!(body, "web /proxy/api/x\n");

    // The bare domain keeps the path routes.
    let (_, body, _) = get(&server, "tunnel.test", "/proxy/api/y", &[]);
    assert_eq!(body, "api /y\n");
    let (_, body, _) = get(
        &server,
        "tunnel.test",
        "/elsewhere",
        &["-w", "%{http_code}"],
    );
    assert!(body.ends_with("404"), "{body}");

    // A request without a Host header (HTTP/1.0) is routed by the TLS server name.
    let (ok, body, err) = get(
        &server,
        "api.tunnel.test",
        "/no-host",
        &["--http1.0", "-H", "Host:"],
    );
    assert!(ok, "{err}");
    assert_eq!(body, "api /no-host\n");

    // A name under the domain with no Listener: 502 naming the id, at once.
    let (_, body, _) = get(
        &server,
        "nobody.tunnel.test",
        "/",
        &["-w", "\n%{http_code}"],
    );
    assert!(body.ends_with("\n502"), "{body}");
    assert!(body.contains("nobody"), "{body}");
    assert!(
        !body.contains("127.0.0.1"),
        "an internal address leaked: {body}"
    );
}

#[test]
fn a_domain_that_is_not_a_name_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = anonymous_server(dir.path(), &["--domain", "tunnel.test/x"]);
    let status = server.wait_exit(Duration::from_secs(20));
    assert!(!status.success());
    assert!(
        server
            .stderr()
            .contains("--domain \"tunnel.test/x\": not a domain name"),
        "stderr: {}",
        server.stderr()
    );
}
