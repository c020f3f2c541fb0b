//! Live reload of `h2rev2 server`, through the binary: a changed tokens file (no
//! signal), SIGHUP, an invalid file, a renewed certificate and TCP forwards, while
//! the sessions that keep their credential stay up.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const UP: Duration = Duration::from_secs(20);
const RELOADED: &str = "configuration reloaded";
const REFUSED: &str = "reload refused, the configuration in force keeps serving";
const SESSION_UP: &str = "Serving on Reverse connection";

/// Replaces `path` as editors do: a new file renamed over it.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Waits until `needle` occurs `n` times in `p`'s stderr.
fn wait_count(p: &mut Proc, needle: &str, n: usize, timeout: Duration) {
    let until = Instant::now() + timeout;
    while p.stderr().matches(needle).count() < n {
        assert!(p.running(), "{} exited:\n{}", p.name, p.stderr());
        assert!(
            Instant::now() < until,
            "{} did not print {needle:?} {n} times:\n{}",
            p.name,
            p.stderr()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The HTTP status of `url` (trusting `ca`), "000" when nothing answered.
fn status(ca: &str, url: &str) -> String {
    let (_, code, _) = curl(&["--cacert", ca, "-o", "/dev/null", "-w", "%{http_code}", url]);
    code
}

/// A server run from `dir/server.toml`; its `https://` URL.
fn start_server(dir: &Path) -> (Proc, String) {
    let config = dir.join("server.toml").display().to_string();
    let mut p = Proc::h2rev2("server", &["server", "--config", &config], &[]);
    let addr = p.wait_value_after("Serving on https://", UP);
    (p, format!("https://{addr}"))
}

fn client(url: &str, ca: &str, id: &str, token: &str, target: &[&str]) -> Proc {
    let mut args = vec![
        "client",
        "--server",
        url,
        "--ca",
        ca,
        "--id",
        id,
        "--max-backoff",
        "1",
    ];
    args.extend_from_slice(target);
    let mut c = Proc::h2rev2(&format!("client {id}"), &args, &[("H2REV2_TOKEN", token)]);
    c.wait_for(SESSION_UP, UP);
    c
}

#[test]
fn a_changed_tokens_file_ends_exactly_the_revoked_session() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_file(
        d,
        "server.toml",
        "listen = \"127.0.0.1:0\"\nself-signed = true\ntokens = \"tokens.txt\"\n",
    );
    let tokens = write_file(d, "tokens.txt", "a ta\nb tb\n");
    let ca = d.join("h2rev2-server.crt").display().to_string();
    let (mut server, url) = start_server(d);
    let internal = format!("http://127.0.0.1:{}", start_http());
    let target = ["--proxy-host", internal.as_str()];
    let mut a = client(&url, &ca, "a", "ta", &target);
    let b = client(&url, &ca, "b", "tb", &target);
    for id in ["a", "b"] {
        curl_until(
            &["--cacert", &ca, &format!("{url}/proxy/{id}/x")],
            "internal ok /x",
            UP,
        );
    }

    // a's token changes, c is added; no signal: the file change is seen.
    replace(&tokens, "a ta2\nb tb\nc tc\n");
    server.wait_for("ended the sessions of a (credential revoked)", UP);
    assert_eq!(
        server.stderr().matches(RELOADED).count(),
        1,
        "one reload per change"
    );
    a.wait_for("HTTP 403", UP);
    assert_eq!(
        status(&ca, &format!("{url}/proxy/a/x")).chars().next(),
        Some('5')
    );
    // b's session never went down.
    assert_eq!(status(&ca, &format!("{url}/proxy/b/x")), "200");
    assert_eq!(b.stderr().matches(SESSION_UP).count(), 1, "{}", b.stderr());
    // The new token is in force.
    let _c = client(&url, &ca, "c", "tc", &target);
    curl_until(
        &["--cacert", &ca, &format!("{url}/proxy/c/y")],
        "internal ok /y",
        UP,
    );

    // An invalid config file is refused, with the key and line; everything serves on.
    write_file(
        d,
        "server.toml",
        "listen = \"127.0.0.1:0\"\nself-signed = true\ntokens = \"tokens.txt\"\nmax-sesions = 3\n",
    );
    server.wait_for(REFUSED, UP);
    assert!(
        server.stderr().contains("max-sesions"),
        "{}",
        server.stderr()
    );
    // And so is SIGHUP with it, any number of times.
    for n in 2..4 {
        server.signal("HUP");
        wait_count(&mut server, REFUSED, n, UP);
    }
    assert_eq!(status(&ca, &format!("{url}/proxy/b/x")), "200");
    // Fixed, with a default id: applied.
    write_file(
        d,
        "server.toml",
        "listen = \"127.0.0.1:0\"\nself-signed = true\ntokens = \"tokens.txt\"\ndefault-id = \"b\"\n",
    );
    wait_count(&mut server, RELOADED, 2, UP);
    assert_eq!(
        curl(&["--cacert", &ca, &format!("{url}/anything")]).1,
        "internal ok /anything\n"
    );
    assert_eq!(b.stderr().matches(SESSION_UP).count(), 1, "{}", b.stderr());
    server.signal("TERM");
    assert_eq!(server.wait_exit(UP).code(), Some(0));
}

/// A certificate for localhost and 127.0.0.1 made with rcgen, as PEM (cert, key).
fn certificate() -> (String, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

#[test]
fn a_renewed_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (crt, key) = certificate();
    let (crt_file, key_file) = (write_file(d, "s.crt", &crt), write_file(d, "s.key", &key));
    let old_ca = write_file(d, "old.crt", &crt).display().to_string();
    write_file(
        d,
        "server.toml",
        "listen = \"127.0.0.1:0\"\ncert = \"s.crt\"\nkey = \"s.key\"\ntokens = \"tokens.txt\"\n",
    );
    write_file(d, "tokens.txt", "web tw\n");
    let (mut server, url) = start_server(d);
    let internal = format!("http://127.0.0.1:{}", start_http());
    let web = client(&url, &old_ca, "web", "tw", &["--proxy-host", &internal]);
    let page = format!("{url}/proxy/web/p");
    curl_until(&["--cacert", &old_ca, &page], "internal ok /p", UP);

    // A key that is not the certificate's (a renewal half written): refused.
    let (new_crt, new_key) = certificate();
    replace(&crt_file, &new_crt);
    server.wait_for(REFUSED, UP);
    assert!(
        server.stderr().contains("do not form a usable pair"),
        "{}",
        server.stderr()
    );
    assert_eq!(
        status(&old_ca, &page),
        "200",
        "the old certificate is still served"
    );
    // The key follows: the new pair is served from the next handshake on.
    replace(&key_file, &new_key);
    server.wait_for("new certificate", UP);
    let new_ca = write_file(d, "new.crt", &new_crt).display().to_string();
    assert_eq!(status(&new_ca, &page), "200");
    assert_eq!(status(&old_ca, &page), "000");
    // The Listener connected with the old certificate stays up.
    assert_eq!(
        web.stderr().matches(SESSION_UP).count(),
        1,
        "{}",
        web.stderr()
    );
}

#[test]
fn tcp_forwards_come_and_go_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = "listen = \"127.0.0.1:0\"\nself-signed = true\ntokens = \"tokens.txt\"\n";
    write_file(d, "server.toml", base);
    write_file(d, "tokens.txt", "echo te\n");
    let ca = d.join("h2rev2-server.crt").display().to_string();
    let (mut server, url) = start_server(d);
    let echo = format!("127.0.0.1:{}", start_echo());
    let _client = client(&url, &ca, "echo", "te", &["--tcp-target", &echo]);

    let port = free_port();
    write_file(
        d,
        "server.toml",
        &format!("{base}tcp = [\"127.0.0.1:{port}=echo\"]\n"),
    );
    server.wait_for("TCP forwards: 1 added, 0 removed", UP);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(UP)).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"ping\n").unwrap();
    let mut got = [0u8; 5];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping\n");

    // Removed: the port closes; the connection already forwarded goes on.
    write_file(d, "server.toml", base);
    server.wait_for("TCP forwards: 0 added, 1 removed", UP);
    assert!(port_is_free(port), "the removed forward's port is closed");
    s.write_all(b"pong\n").unwrap();
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pong\n");
}
