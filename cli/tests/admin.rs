//! The admin endpoint (`h2rev2 server --admin ADDR`), `h2rev2 status` and the access
//! log, through the release binary: a real client, python's `http.server` as the
//! internal server, curl as the Client, headless Chromium for the status page.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const UP: Duration = Duration::from_secs(20);

/// `python3 -m http.server` on a free port serving `dir`; returns it and its URL.
fn python_http(dir: &Path) -> (Proc, String) {
    let port = free_port().to_string();
    let dir = dir.display().to_string();
    let proc = Proc::spawn(
        "python",
        "python3",
        &[
            "-m",
            "http.server",
            &port,
            "--bind",
            "127.0.0.1",
            "--directory",
            &dir,
        ],
        &[],
    );
    let until = Instant::now() + UP;
    while TcpStream::connect(format!("127.0.0.1:{port}")).is_err() {
        assert!(
            Instant::now() < until,
            "python3 -m http.server never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (proc, format!("http://127.0.0.1:{port}"))
}

/// curl `url` with `extra` flags; returns (HTTP status, body).
fn get(url: &str, extra: &[&str]) -> (u16, String) {
    let mut args = vec!["-o", "-", "-w", "\n%{http_code}"];
    args.extend_from_slice(extra);
    args.push(url);
    let (ok, out, err) = curl(&args);
    assert!(ok, "curl {url}: {err}");
    let (body, code) = out.rsplit_once('\n').expect("curl printed the status");
    (
        code.trim().parse().expect("a status code"),
        body.to_string(),
    )
}

/// The server's admin address from its log (`admin on http://ADDR/`).
fn admin_addr(server: &mut Proc) -> String {
    server
        .wait_value_after("admin on http://", UP)
        .trim_end_matches('/')
        .to_string()
}

/// A server with `--admin`, a client `web` in front of python's http.server, one
/// request through the tunnel; returns the server, the client, python, the admin
/// address and the body fetched.
struct Tunnel {
    server: PublicServer,
    client: Proc,
    _python: Proc,
    _files: tempfile::TempDir,
    admin: String,
    body: String,
}

fn tunnel(extra: &[&str]) -> Tunnel {
    let files = tempfile::tempdir().unwrap();
    write_file(
        files.path(),
        "hello.txt",
        &"hello through the tunnel\n".repeat(40),
    );
    let (python, internal) = python_http(files.path());
    let mut args = vec!["--admin", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut server = PublicServer::start("web t0k\nslow t1k\n", &args);
    let admin = admin_addr(&mut server.proc);
    let client = server.client("web", "t0k", &internal);
    let url = format!("{}/proxy/web/hello.txt?secret=q", server.url);
    let body = curl_until(&["--cacert", &server.cert, &url], "hello through", UP);
    Tunnel {
        server,
        client,
        _python: python,
        _files: files,
        admin,
        body,
    }
}

/// An HTTP/1.1 server on 127.0.0.1 that answers `slow ok` `delay` after each
/// request; returns its port and a channel told when a request arrives.
fn slow_http(delay: Duration) -> (u16, std::sync::mpsc::Receiver<()>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = tx.send(());
                std::thread::sleep(delay);
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nslow ok\n",
                );
            });
        }
    });
    (port, rx)
}

/// The number after `name` on the exposition line that starts with it.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn admin_routes_status_command_token_and_access_log() {
    let secrets = tempfile::tempdir().unwrap();
    let token_file = write_file(secrets.path(), "admin.token", "adm1n-s3cret\n");
    let token_file = token_file.display().to_string();
    let mut t = tunnel(&["--admin-token-file", &token_file]);
    let admin = t.admin.clone();
    let bearer = "Authorization: Bearer adm1n-s3cret";

    // Token enforcement: /healthz is open, the rest needs the bearer token.
    assert_eq!(get(&format!("http://{admin}/healthz"), &[]).0, 200);
    for route in ["/metrics", "/readyz", "/api/sessions", "/"] {
        let url = format!("http://{admin}{route}");
        assert_eq!(get(&url, &[]).0, 401, "{route} without a token");
        let wrong = "Authorization: Bearer adm1n-s3cre";
        assert_eq!(get(&url, &["-H", wrong]).0, 401, "{route}, wrong token");
        assert_eq!(get(&url, &["-H", bearer]).0, 200, "{route} with the token");
    }
    let (status, ready) = get(&format!("http://{admin}/readyz"), &["-H", bearer]);
    assert_eq!((status, ready.as_str()), (200, "ready\n"));

    // /api/sessions lists the session with the bytes it carried.
    let (_, json) = get(&format!("http://{admin}/api/sessions"), &["-H", bearer]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let sessions = v["sessions"].as_array().expect("a sessions array");
    assert_eq!(sessions.len(), 1, "{json}");
    let s = &sessions[0];
    assert_eq!(s["id"], "web", "{json}");
    assert!(
        s["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{json}"
    );
    let from = s["bytes_from_listener"].as_u64().unwrap();
    let to = s["bytes_to_listener"].as_u64().unwrap();
    assert!(
        from >= t.body.len() as u64,
        "response bytes {from} < body: {json}"
    );
    assert!(to > 0, "{json}");
    assert!(
        s["connected_unix"].as_u64().unwrap() > 1_600_000_000,
        "{json}"
    );
    assert!(
        s["connected_since"].as_str().unwrap().ends_with('Z'),
        "{json}"
    );
    assert!(s["spares"].as_u64().is_some() && s["open_conns"].as_u64().is_some());

    // /metrics: the request by id and status class, its duration, the old names.
    let (_, metrics) = get(&format!("http://{admin}/metrics"), &["-H", bearer]);
    assert_eq!(
        sample(&metrics, "h2rev2_requests_total{id=\"web\",class=\"2xx\"} "),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "h2rev2_request_seconds_count{class=\"2xx\"} "),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(sample(&metrics, "h2rev2_sessions "), Some(1.0), "{metrics}");
    assert!(sample(&metrics, "h2rev2_bytes_in_total ").unwrap() >= from as f64);

    // A request the internal server answers 404 counts as 4xx.
    let url = format!("{}/proxy/web/missing", t.server.url);
    assert_eq!(get(&url, &["--cacert", &t.server.cert]).0, 404);
    let (_, metrics) = get(&format!("http://{admin}/metrics"), &["-H", bearer]);
    assert_eq!(
        sample(&metrics, "h2rev2_requests_total{id=\"web\",class=\"4xx\"} "),
        Some(1.0),
        "{metrics}"
    );

    // No Listener holds `ghost`: an upstream error of kind no_session.
    let url = format!("{}/proxy/ghost/x", t.server.url);
    let (status, _) = get(&url, &["--cacert", &t.server.cert]);
    assert!(status >= 500, "{status}");
    let (_, metrics) = get(&format!("http://{admin}/metrics"), &["-H", bearer]);
    assert_eq!(
        sample(
            &metrics,
            "h2rev2_upstream_errors_total{kind=\"no_session\"} "
        ),
        Some(1.0),
        "{metrics}"
    );

    // h2rev2 status prints the session as a table; without the token it is refused.
    let status = Command::new(bin())
        .args(["status", "--admin", &format!("http://{admin}")])
        .args(["--admin-token-file", &token_file])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{table} {status:?}");
    let header = table.lines().next().unwrap_or("");
    assert!(
        header.starts_with("ID") && header.contains("PEER"),
        "{table}"
    );
    let row = table.lines().nth(1).unwrap_or("");
    assert!(
        row.starts_with("web ") && row.contains("127.0.0.1:"),
        "{table}"
    );
    let refused = Command::new(bin())
        .args(["status", "--admin", &format!("http://{admin}")])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(4), "{refused:?}");

    // The access log: one line per request, path without its query string.
    t.server.proc.wait_for("path=/proxy/web/missing", UP);
    let log = t.server.proc.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("path=/proxy/web/hello.txt") && l.contains("status=200"))
        .unwrap_or_else(|| panic!("no access line in {log}"));
    assert!(
        line.contains("method=GET") && line.contains("id=web"),
        "{line}"
    );
    assert!(line.contains(&format!("bytes={}", t.body.len())), "{line}");
    assert!(line.contains("duration_ms="), "{line}");
    assert!(
        !log.contains("secret=q"),
        "the query string was logged: {log}"
    );
    assert!(log.contains("path=/proxy/web/missing") && log.contains("status=404"));

    // /readyz says 503 once shutdown began: a request in flight to a slow internal
    // server keeps the server draining (up to --grace, 5 s) while we look.
    let (slow_port, got) = slow_http(Duration::from_secs(3));
    let slow = t
        .server
        .client("slow", "t1k", &format!("http://127.0.0.1:{slow_port}"));
    let url = format!("{}/proxy/slow/wait", t.server.url);
    let mut waiting = Proc::spawn(
        "curl",
        "curl",
        &["-sS", "--cacert", &t.server.cert, &url],
        &[],
    );
    got.recv_timeout(UP)
        .expect("the slow server got the request");
    t.server.proc.signal("TERM");
    t.server.proc.wait_for("shutting down", UP);
    let (status, body) = get(&format!("http://{admin}/readyz"), &["-H", bearer]);
    assert_eq!((status, body.as_str()), (503, "not ready\n"));
    assert_eq!(get(&format!("http://{admin}/healthz"), &[]).0, 200);
    assert!(
        waiting.wait_exit(UP).success(),
        "the request in flight finished"
    );
    assert!(waiting.stdout().contains("slow ok"), "{}", waiting.stdout());
    assert!(t.server.proc.wait_exit(UP).success());
    t.client.signal("TERM");
    slow.signal("TERM");
}

#[test]
fn status_page_renders_in_headless_chromium_and_json_access_log() {
    let mut t = tunnel(&["--log-format", "json"]);
    let page = format!("http://{}/", t.admin);
    let profile = tempfile::tempdir().unwrap();
    let chromium = |extra: &[String]| {
        let out = Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--window-size=1000,700")
            .args(extra)
            .arg(&page)
            .output()
            .expect("chromium is installed (.ci/run installs Debian's chromium)");
        assert!(out.status.success(), "chromium failed: {out:?}");
        out
    };

    // The rendered DOM, after the page's script built the tables from the data.
    let dom = String::from_utf8_lossy(&chromium(&["--dump-dom".into()]).stdout).into_owned();
    assert!(
        dom.contains("<td>web</td>"),
        "no session row for web in:\n{dom}"
    );
    assert!(dom.contains("<td>127.0.0.1:"), "no peer cell in:\n{dom}");
    assert!(!dom.contains("muted\">no live sessions<"), "{dom}");
    assert!(
        dom.contains("id=\"updated\">updated "),
        "the script did not run:\n{dom}"
    );

    // And a screenshot of it, as a user would see it.
    let shot = profile.path().join("status.png");
    chromium(&[format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "{} bytes",
        png.len()
    );
    if let Ok(keep) = std::env::var("H2REV2_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }

    // --log-format json: the access line is a JSON object with target h2rev2::access.
    let log = t.server.proc.stderr();
    let line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["target"] == "h2rev2::access")
        .unwrap_or_else(|| panic!("no JSON access line in {log}"));
    assert_eq!(line["path"], "/proxy/web/hello.txt", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["method"], "GET", "{line}");
    assert_eq!(line["id"], "web", "{line}");
    assert_eq!(line["bytes"], t.body.len() as u64, "{line}");
    assert!(line["duration_ms"].as_f64().is_some(), "{line}");

    t.client.signal("TERM");
    t.server.proc.signal("TERM");
    assert!(t.server.proc.wait_exit(UP).success());
}
