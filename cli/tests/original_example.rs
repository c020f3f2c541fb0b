//! The original project's README example, run as processes: python3's http.server
//! inside, the Go-style client started first, then the Go-style public server, then
//! curl.

mod common;

use std::time::Duration;

use common::*;

fn tools_present() -> bool {
    let ok = have("python3") && have("curl");
    if !ok {
        eprintln!("note: skipped: python3 and curl are needed");
    }
    ok
}

/// Runs the example's exact flags with the given ports and checks every step.
fn run_example(internal_port: u16, public_port: u16) {
    let certs = Certs::new();
    // The internal server serves a directory that holds a file named `get`.
    let www = tempfile::tempdir().unwrap();
    write_file(www.path(), "get", "the internal server's /get\n");
    let internal_port_s = internal_port.to_string();
    let mut python = Proc::spawn_in(
        "python",
        "python3",
        &["-m", "http.server", &internal_port_s, "--bind", "127.0.0.1"],
        &[("PYTHONUNBUFFERED", "1")],
        Some(www.path()),
    );
    python.wait_for("Serving HTTP", Duration::from_secs(20));

    let proxy_host = format!("http://localhost:{internal_port}");
    let port = public_port.to_string();
    let crt = certs.crt();
    let key = certs.key();
    // Step 2 of the README: the internal side, started before the public one.
    let mut client = Proc::h2rev2(
        "client",
        &[
            "-cert",
            &crt,
            "-dialer-key",
            "dialerid",
            "-dialer-id",
            "001",
            "-dialer-path",
            "/revdial",
            "-proxy-host",
            &proxy_host,
            "localhost",
            &port,
        ],
        &[],
    );
    client.wait_for("cannot connect to localhost", Duration::from_secs(20));
    // Step 3: the public side.
    let mut server = Proc::h2rev2(
        "server",
        &[
            "-public",
            "-cert",
            &crt,
            "-key",
            &key,
            "-dialer-key",
            "dialerid",
            "-dialer-id",
            "001",
            "-dialer-path",
            "/revdial",
            "localhost",
            &port,
        ],
        &[],
    );
    server.wait_for("Serving on", Duration::from_secs(20));
    server.wait_for("created reverse connection", Duration::from_secs(30));
    client.wait_for("Serving on Reverse connection", Duration::from_secs(10));
    assert!(
        server.stderr().contains("NOT authenticated"),
        "the Go-style server warns that it is unauthenticated"
    );

    // Step 4.
    let url = format!("https://localhost:{port}/get");
    let body = curl_until(
        &["-k", &url],
        "the internal server's /get",
        Duration::from_secs(20),
    );
    assert_eq!(body, "the internal server's /get\n");
    server.wait_for(" dial id=", Duration::from_secs(5));
    python.wait_for("\"GET /get HTTP/1.1\" 200", Duration::from_secs(5));

    // A stranger cannot take the id while the session lives, nor register another one.
    let (_, code, _) = curl(&[
        "-k",
        "--http2",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("https://localhost:{port}/revdial?dialerid=002"),
    ]);
    assert_eq!(code, "403", "only -dialer-id may register");
    let mut intruder = Proc::h2rev2(
        "intruder",
        &[
            "-cert",
            &crt,
            "-dialer-id",
            "001",
            "-proxy-host",
            "http://127.0.0.1:9",
            "localhost",
            &port,
        ],
        &[],
    );
    intruder.wait_for("HTTP 409", Duration::from_secs(20));
    drop(intruder);
    let body = curl_until(
        &["-k", &url],
        "the internal server's /get",
        Duration::from_secs(5),
    );
    assert_eq!(
        body, "the internal server's /get\n",
        "the live session was kept"
    );

    // Graceful stop on SIGINT, exit 0, on both sides.
    client.signal("INT");
    assert!(client.wait_exit(Duration::from_secs(10)).success());
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(15)).success());
}

#[test]
fn original_example_with_free_ports() {
    if !tools_present() {
        return;
    }
    run_example(free_port(), free_port());
}

#[test]
fn original_example_verbatim_ports_8000_and_9090() {
    if !tools_present() {
        return;
    }
    if !port_is_free(8000) || !port_is_free(9090) {
        eprintln!("note: skipped: port 8000 or 9090 is in use on this machine");
        return;
    }
    run_example(8000, 9090);
}
