//! The flags of issue 12 item 6, through the binary: Listeners admitted by their client
//! certificate (`server --client-ca --listener-certs`, `client --cert --key`),
//! `--base-path` on both sides, `client --preserve-host`, shell completions and a
//! mistyped subcommand.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::*;

#[test]
fn a_listener_certificate_registers_the_id_it_names_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("listener CA");
    let ca_file = write_file(dir.path(), "ca.crt", &ca.pem)
        .display()
        .to_string();
    let (web_crt, web_key) = ca.client(dir.path(), "web", "web");
    let other = TestCa::new("someone else's CA");
    let (rogue_crt, rogue_key) = other.client(dir.path(), "rogue", "web");

    // No token for `web` anywhere: only its certificate can register it.
    let server = PublicServer::start(
        "db s3cret\n",
        &["--client-ca", &ca_file, "--listener-certs"],
    );
    let internal = format!("http://127.0.0.1:{}", start_http());

    // A certificate naming `web` registers `web` without a token.
    let mut args = server.client_args("web", &internal);
    args.extend(["--cert", &web_crt, "--key", &web_key]);
    let mut web = Proc::h2rev2("client web", &args, &[]);
    web.wait_for("Serving on Reverse connection", Duration::from_secs(20));
    let url = format!("{}/proxy/web/hello", server.url);
    let body = curl_until(
        &["--cacert", &server.cert, &url],
        "internal ok",
        Duration::from_secs(10),
    );
    assert_eq!(body, "internal ok /hello\n");

    // The same certificate does not register `db`: 403, and the client gives up (exit 4).
    let mut args = server.client_args("db", &internal);
    args.extend(["--cert", &web_crt, "--key", &web_key, "--max-attempts", "1"]);
    let mut db = Proc::h2rev2("client db", &args, &[]);
    let status = db.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(4), "stderr: {}", db.stderr());
    assert!(db.stderr().contains("HTTP 403"), "stderr: {}", db.stderr());

    // A certificate naming `web` from another CA fails the TLS handshake.
    let mut args = server.client_args("web", &internal);
    args.extend([
        "--cert",
        &rogue_crt,
        "--key",
        &rogue_key,
        "--max-attempts",
        "1",
    ]);
    let mut rogue = Proc::h2rev2("client rogue", &args, &[]);
    let status = rogue.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "stderr: {}", rogue.stderr());
    // `web` is still served by its own client.
    let (ok, body, _) = curl(&["--cacert", &server.cert, &url]);
    assert!(ok && body == "internal ok /hello\n", "{body:?}");
    web.signal("TERM");
    assert!(web.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn listener_certs_need_a_client_ca_and_client_cert_needs_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("s.crt").display().to_string();
    let mut p = Proc::h2rev2(
        "server",
        &[
            "server",
            "--self-signed",
            "--cert-out",
            &cert,
            "--listener-certs",
        ],
        &[],
    );
    assert_eq!(p.wait_exit(Duration::from_secs(10)).code(), Some(2));
    assert!(
        p.stderr().contains("--listener-certs needs --client-ca"),
        "{}",
        p.stderr()
    );

    let mut c = Proc::h2rev2(
        "client",
        &[
            "client",
            "--server",
            "https://127.0.0.1:1",
            "--id",
            "web",
            "--proxy-host",
            "http://127.0.0.1:2",
            "--cert",
            &cert,
        ],
        &[],
    );
    assert_eq!(c.wait_exit(Duration::from_secs(10)).code(), Some(2));
    assert!(c.stderr().contains("--cert needs --key"), "{}", c.stderr());
}

#[test]
fn base_path_moves_every_route_on_both_sides() {
    let server = PublicServer::start("web s3cret\napi t0ken\n", &["--base-path", "/tun"]);
    let internal = format!("http://127.0.0.1:{}", start_http());

    // The base as a flag of the client...
    let mut args = server.client_args("web", &internal);
    args.extend(["--base-path", "/tun"]);
    let mut web = Proc::h2rev2("client web", &args, &[("H2REV2_TOKEN", "s3cret")]);
    web.wait_for("Serving on Reverse connection", Duration::from_secs(20));
    // ... or as the path of --server's URL.
    let with_path = format!("{}/tun/", server.url);
    let args = [
        "client",
        "--server",
        &with_path,
        "--ca",
        &server.cert,
        "--id",
        "api",
        "--proxy-host",
        &internal,
    ];
    let mut api = Proc::h2rev2("client api", &args, &[("H2REV2_TOKEN", "t0ken")]);
    api.wait_for("Serving on Reverse connection", Duration::from_secs(20));

    for id in ["web", "api"] {
        let url = format!("{}/tun/proxy/{id}/x", server.url);
        let body = curl_until(
            &["--cacert", &server.cert, &url],
            "internal ok",
            Duration::from_secs(10),
        );
        assert_eq!(body, "internal ok /x\n");
    }
    // Outside the base nothing is routed.
    let (_, code, _) = curl(&[
        "--cacert",
        &server.cert,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{}/proxy/web/x", server.url),
    ]);
    assert_eq!(code, "404");

    // A client whose two spellings of the base disagree is a usage error.
    let mut args = server.client_args("web", &internal);
    args[2] = &with_path;
    args.extend(["--base-path", "/other"]);
    let mut bad = Proc::h2rev2("client bad", &args, &[("H2REV2_TOKEN", "s3cret")]);
    assert_eq!(bad.wait_exit(Duration::from_secs(10)).code(), Some(2));
    assert!(bad.stderr().contains("disagree"), "{}", bad.stderr());
}

/// An HTTP/1.1 server on 127.0.0.1 answering `host={Host header}`; its port.
fn start_host_echo() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let host = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("host").then(|| v.trim().to_string())
                    })
                    .unwrap_or_default();
                let body = format!("host={host}\n");
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

#[test]
fn preserve_host_forwards_the_clients_host_header() {
    let server = PublicServer::start("kept s3cret\nplain t0ken\n", &[]);
    let port = start_host_echo();
    let internal = format!("http://127.0.0.1:{port}");
    let mut args = server.client_args("kept", &internal);
    args.push("--preserve-host");
    let mut kept = Proc::h2rev2("client kept", &args, &[("H2REV2_TOKEN", "s3cret")]);
    kept.wait_for("Serving on Reverse connection", Duration::from_secs(20));
    let mut plain = server.client("plain", "t0ken", &internal);

    let get = |id: &str| {
        let url = format!("{}/proxy/{id}/", server.url);
        curl_until(
            &["--cacert", &server.cert, "-H", "Host: app.example", &url],
            "host=",
            Duration::from_secs(10),
        )
    };
    assert_eq!(get("kept"), "host=app.example\n");
    assert_eq!(get("plain"), format!("host=127.0.0.1:{port}\n"));
    for p in [&mut kept, &mut plain] {
        p.signal("TERM");
        assert!(p.wait_exit(Duration::from_secs(10)).success());
    }
}

#[test]
fn completions_version_and_a_mistyped_subcommand() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, bash, _) = run(&["completions", "bash"]);
    assert_eq!(code, Some(0));
    for word in [
        "server",
        "client",
        "--listener-certs",
        "--preserve-host",
        "--base-path",
    ] {
        assert!(bash.contains(word), "bash completions lack {word}");
    }
    assert!(
        !bash.contains("legacy"),
        "the hidden Go form is not completed"
    );
    for shell in ["zsh", "fish"] {
        let (code, out, _) = run(&["completions", shell]);
        assert_eq!(code, Some(0));
        assert!(out.contains("max-requests-per-id"), "{shell}");
    }
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, Some(0));
    assert_eq!(out.trim(), format!("h2rev2 {}", env!("CARGO_PKG_VERSION")));

    for (typo, meant) in [
        ("sever", "server"),
        ("cliennt", "client"),
        ("statsu", "status"),
    ] {
        let (code, _, err) = run(&[typo, "--listen", "127.0.0.1:0"]);
        assert_eq!(code, Some(2), "{typo}: {err}");
        assert!(
            err.contains(&format!("unrecognized subcommand '{typo}'"))
                && err.contains(&format!("similar subcommand exists: '{meant}'")),
            "{typo}: {err}"
        );
    }
    // The Go form still reaches its own parser.
    let (code, _, err) = run(&["localhost", "9090"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("-cert FILE is required"), "{err}");
}
