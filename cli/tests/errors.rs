//! Mistakes a user can make get a clear message and a documented exit code.

mod common;

use std::time::Duration;

use common::*;

/// Runs h2rev2 to completion; returns (exit code, stderr).
fn run(args: &[&str]) -> (Option<i32>, String) {
    let mut p = Proc::h2rev2("h2rev2", args, &[]);
    let st = p.wait_exit(Duration::from_secs(20));
    (st.code(), p.stderr())
}

#[test]
fn usage_errors_exit_2() {
    let (code, err) = run(&["server", "--bogus"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = run(&["server", "--self-signed", "--cert-out", "/dev/null"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--allow-anonymous") && err.contains("--tokens"),
        "{err}"
    );
    let (code, err) = run(&[
        "client",
        "--server",
        "localhost:9090",
        "--id",
        "a",
        "--insecure",
        "--proxy-host",
        "http://127.0.0.1:1",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("https://"), "{err}");
    let (code, err) = run(&[
        "client",
        "--server",
        "https://localhost:1",
        "--id",
        "a",
        "--insecure",
        "--proxy-host",
        "localhost:8000",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--proxy-host") && err.contains("http://HOST:PORT"),
        "{err}"
    );
    let (code, err) = run(&["client", "--server", "https://localhost:1", "--id", "a"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--proxy-host") && err.contains("--tcp-target"),
        "{err}"
    );
    // Go-style form without the positional HOST PORT.
    let (code, err) = run(&["-public", "-cert", "a", "-key", "b"]);
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn certificate_errors_exit_3() {
    let (code, err) = run(&[
        "server",
        "--cert",
        "/nonexistent/server.crt",
        "--key",
        "/nonexistent/server.key",
        "--allow-anonymous",
    ]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("/nonexistent/server.crt"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let junk = write_file(dir.path(), "junk.pem", "not a certificate\n");
    let junk = junk.display().to_string();
    let (code, err) = run(&[
        "server",
        "--cert",
        &junk,
        "--key",
        &junk,
        "--allow-anonymous",
    ]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("junk.pem"), "{err}");
    let (code, err) = run(&[
        "client",
        "--server",
        "https://localhost:1",
        "--id",
        "a",
        "--ca",
        "/nonexistent/ca.crt",
        "--proxy-host",
        "http://127.0.0.1:1",
    ]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("/nonexistent/ca.crt"), "{err}");
    // The original form with a missing -cert file.
    let (code, err) = run(&[
        "-cert",
        "/nonexistent/x.crt",
        "-proxy-host",
        "http://localhost:1",
        "localhost",
        "1",
    ]);
    assert_eq!(code, Some(3), "{err}");
    let (code, err) = run(&[
        "server",
        "--self-signed",
        "--cert-out",
        "/tmp/x",
        "--tokens",
        "/nonexistent/tokens",
    ]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("token file"), "{err}");
}

#[test]
fn busy_port_exits_5() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("c.crt").display().to_string();
    let (code, err) = run(&[
        "server",
        "--listen",
        &addr,
        "--self-signed",
        "--cert-out",
        &cert,
        "--allow-anonymous",
    ]);
    assert_eq!(code, Some(5), "{err}");
    assert!(err.contains(&addr) && err.contains("in use"), "{err}");
}

#[test]
fn help_explains_every_subcommand() {
    for sub in ["server", "client", "demo"] {
        let out = std::process::Command::new(bin())
            .args([sub, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Example"), "{sub}: {text}");
    }
    // Go-style -help too.
    let out = std::process::Command::new(bin())
        .arg("-help")
        .output()
        .unwrap();
    assert!(out.status.success());
}
