//! The limit flags reach the server: a silent connection is cut after
//! `--handshake-timeout`, and `--max-conns-per-ip` closes the connection over the limit.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

fn closed_within(stream: &mut TcpStream, limit: Duration) -> Duration {
    stream.set_read_timeout(Some(limit)).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => started.elapsed(),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => started.elapsed(),
        other => panic!("expected the server to close the connection, got {other:?}"),
    }
}

/// An internal server that accepts, reads and never answers; its URL.
fn silent_backend() -> String {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let internal = format!("http://{}", silent.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().flatten() {
            held.push(s);
        }
    });
    internal
}

#[test]
fn limit_flags_are_applied() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = anonymous_server(
        dir.path(),
        &["--handshake-timeout", "1", "--max-conns-per-ip", "2"],
    );
    let public = server.wait_value_after("Serving on https://", Duration::from_secs(20));
    let addr = public.trim_end_matches('/').to_string();

    // A client that connects and says nothing is cut after about one second.
    let mut silent = TcpStream::connect(&addr).unwrap();
    let took = closed_within(&mut silent, Duration::from_secs(10));
    assert!(
        took >= Duration::from_millis(500),
        "closed before the handshake timeout: {took:?}"
    );

    // Two connections are admitted; the third from the same address is closed at once.
    let _a = TcpStream::connect(&addr).unwrap();
    let _b = TcpStream::connect(&addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut c = TcpStream::connect(&addr).unwrap();
    let took = closed_within(&mut c, Duration::from_secs(10));
    assert!(
        took < Duration::from_millis(900),
        "the connection over the limit waited for the handshake timeout: {took:?}"
    );
}

/// `--response-timeout` reaches the proxy: a backend that never answers gets the
/// Client a short 504 after about that long, not a request held forever.
#[test]
fn response_timeout_flag_answers_504() {
    let internal = silent_backend();
    let server = PublicServer::start("app tok\n", &["--response-timeout", "1"]);
    let _client = server.client("app", "tok", &internal);
    let (url, cert) = (&server.url, &server.cert);
    let started = Instant::now();
    let (_, body, err) = curl(&[
        "-s",
        "--cacert",
        cert,
        "-w",
        "%{http_code}",
        &format!("{url}/proxy/app/x"),
    ]);
    let took = started.elapsed();
    assert!(body.ends_with("504"), "{body:?} {err}");
    assert!(body.contains("did not answer in time"), "{body:?}");
    assert!(took < Duration::from_secs(5), "504 after {took:?}");
}

/// `--max-requests-per-client` reaches the proxy: it is an address's share of the
/// id, past which the address may use the id's free slots but not the last quarter
/// of `--max-requests-per-id`. With a share of 1 and 4 slots (1 reserved), 3 requests
/// from one address are held at the backend; a 4th from it waits `--queue-timeout`,
/// then gets 429; a Client from another address still gets the reserved slot.
#[test]
fn max_requests_per_client_flag_answers_429_to_that_address_only() {
    let internal = silent_backend();
    let server = PublicServer::start(
        "app tok\n",
        &[
            "--response-timeout",
            "4",
            "--max-requests-per-client",
            "1",
            "--max-requests-per-id",
            "4",
            "--queue-timeout",
            "300",
        ],
    );
    let _client = server.client("app", "tok", &internal);
    let (url, cert) = (server.url.clone(), server.cert.clone());
    let target = format!("{url}/proxy/app/x");
    // Three requests from 127.0.0.1 are held by the silent backend (until 504): its
    // share, and two free slots of the id.
    let held: Vec<_> = (0..3)
        .map(|_| {
            let (cert, target) = (cert.clone(), target.clone());
            std::thread::spawn(move || {
                curl(&["-s", "--cacert", &cert, "-w", "%{http_code}", &target]).1
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    let (_, fourth, err) = curl(&["-s", "--cacert", &cert, "-w", "%{http_code}", &target]);
    assert!(fourth.ends_with("429"), "{fourth:?} {err}");
    assert!(fourth.contains("from your address"), "{fourth:?}");
    // Another address gets the reserved slot: its request reaches the backend (and
    // times out there), it is not refused.
    let (_, other, err) = curl(&[
        "-s",
        "--interface",
        "127.0.0.2",
        "--cacert",
        &cert,
        "-w",
        "%{http_code}",
        &target,
    ]);
    assert!(other.ends_with("504"), "{other:?} {err}");
    for h in held {
        assert!(h.join().unwrap().ends_with("504"));
    }
}

/// A server started with a low soft limit on open files (a shell's `ulimit -Sn 256`;
/// systemd gives 1,024) raises it to the hard limit, as a Go server would: otherwise
/// it refuses Clients at a few hundred connections whatever its own limits say.
#[test]
fn the_server_raises_its_open_files_limit_to_the_hard_limit() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("s.crt").display().to_string();
    let script = format!(
        "ulimit -Sn 256 && exec {} server --listen 127.0.0.1:0 --self-signed --cert-out {cert} --allow-anonymous",
        bin()
    );
    let mut server = Proc::spawn("server", "sh", &["-c", &script], &[]);
    server.wait_for("Serving on https://", Duration::from_secs(20));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    // `Max open files  SOFT  HARD  files`
    let v: Vec<&str> = line.split_whitespace().collect();
    assert_ne!(v[3], "256", "soft limit not raised: {line}");
    if v[4] != "unlimited" {
        assert_eq!(v[3], v[4], "soft limit not raised to the hard one: {line}");
    }
}
