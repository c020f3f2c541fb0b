//! The NAT side may start first: it connects once the public server comes up.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn client_started_before_server_connects_when_it_comes_up() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("server.crt").display().to_string();
    let port = free_port();
    let url = format!("https://localhost:{port}");
    let internal = format!("http://127.0.0.1:{}", start_http());
    let mut client = Proc::h2rev2(
        "client",
        &[
            "client",
            "--server",
            &url,
            "--insecure",
            "--id",
            "web",
            "--proxy-host",
            &internal,
        ],
        &[("H2REV2_TOKEN", "s3cret")],
    );
    client.wait_for("--insecure", Duration::from_secs(10));
    client.wait_for("Connection refused", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));

    let listen = format!("127.0.0.1:{port}");
    let mut server = Proc::h2rev2(
        "server",
        &[
            "server",
            "--listen",
            &listen,
            "--self-signed",
            "--cert-out",
            &cert,
            "--default-id",
            "web",
        ],
        &[("H2REV2_TOKENS", "web=s3cret")],
    );
    server.wait_for("Serving on", Duration::from_secs(20));
    // The client's backoff is capped at 5 s by default.
    server.wait_for("session up", Duration::from_secs(20));
    client.wait_for("Serving on Reverse connection", Duration::from_secs(5));
    let body = curl_until(
        &["--cacert", &cert, &format!("{url}/hello?x=1")],
        "internal ok",
        Duration::from_secs(10),
    );
    assert_eq!(body, "internal ok /hello?x=1\n");
}
