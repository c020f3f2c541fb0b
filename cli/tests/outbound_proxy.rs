//! A client behind a corporate proxy: `h2rev2 client --proxy URL` and the HTTPS_PROXY,
//! ALL_PROXY and NO_PROXY variables, through real proxies started here on 127.0.0.1:
//! tinyproxy (HTTP CONNECT with basic auth) and dante (SOCKS5). Each test checks the
//! proxy's own log, so that a client that went around the proxy fails it. Both
//! proxies must be installed (`.ci/run` installs them): a missing one fails the tests.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const UP: Duration = Duration::from_secs(20);

fn require(program: &str, version_flag: &str, package: &str) {
    let ok = Command::new(program)
        .arg(version_flag)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        ok,
        "{program} is not installed: `apt-get install {package}` (.ci/run does)"
    );
}

fn wait_listening(what: &str, port: u16) {
    let until = Instant::now() + UP;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "{what} never listened on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A proxy process and its log file; stopped with SIGTERM (dante's children follow
/// their parent then), killed if that is not enough.
struct RealProxy {
    proc: Proc,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl RealProxy {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    fn wait_log(&self, needle: &str) {
        let until = Instant::now() + Duration::from_secs(10);
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < until,
                "the proxy never logged {needle:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RealProxy {
    fn drop(&mut self) {
        self.proc.signal("TERM");
        let until = Instant::now() + Duration::from_secs(5);
        while self.proc.running() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// tinyproxy on 127.0.0.1, allowing CONNECT to `connect_port` only, with basic auth
/// `user`/`pass`.
fn tinyproxy(connect_port: u16, user: &str, pass: &str) -> RealProxy {
    require("tinyproxy", "-v", "tinyproxy");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("tinyproxy.log");
    let conf = write_file(
        dir.path(),
        "tinyproxy.conf",
        &format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{}\"\nLogLevel Connect\n\
             MaxClients 20\nAllow 127.0.0.1\nBasicAuth {user} {pass}\n\
             ConnectPort {connect_port}\nDisableViaHeader Yes\n",
            log.display()
        ),
    );
    let conf = conf.display().to_string();
    let proc = Proc::spawn("tinyproxy", "tinyproxy", &["-d", "-c", &conf], &[]);
    wait_listening("tinyproxy", port);
    RealProxy {
        proc,
        port,
        log,
        _dir: dir,
    }
}

/// dante's danted on 127.0.0.1 as a SOCKS5 proxy without authentication.
fn danted() -> RealProxy {
    // In /usr/sbin, which a user's PATH may lack.
    let danted = if Path::new("/usr/sbin/danted").exists() {
        "/usr/sbin/danted"
    } else {
        "danted"
    };
    require(danted, "-v", "dante-server");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("danted.log");
    // Running as root, dante wants the users it switches to named.
    let conf = write_file(
        dir.path(),
        "danted.conf",
        &format!(
            "logoutput: {}\ninternal: 127.0.0.1 port = {port}\nexternal: 127.0.0.1\n\
             socksmethod: none\nclientmethod: none\nuser.privileged: root\n\
             user.unprivileged: nobody\n\
             client pass {{\n  from: 127.0.0.0/8 to: 0.0.0.0/0\n  log: connect error\n}}\n\
             socks pass {{\n  from: 127.0.0.0/8 to: 0.0.0.0/0\n  command: connect\n  \
             log: connect disconnect error\n}}\n",
            log.display()
        ),
    );
    let conf = conf.display().to_string();
    let proc = Proc::spawn("danted", danted, &["-f", &conf, "-N", "1"], &[]);
    wait_listening("danted", port);
    RealProxy {
        proc,
        port,
        log,
        _dir: dir,
    }
}

/// python's http.server on 127.0.0.1 serving `dir`; its URL.
fn python_http(dir: &Path) -> (Proc, String) {
    let port = free_port();
    let p = port.to_string();
    let d = dir.display().to_string();
    let proc = Proc::spawn(
        "python",
        "python3",
        &[
            "-m",
            "http.server",
            &p,
            "--bind",
            "127.0.0.1",
            "--directory",
            &d,
        ],
        &[],
    );
    wait_listening("python3 -m http.server", port);
    (proc, format!("http://127.0.0.1:{port}"))
}

/// The public server, the internal HTTP server behind the client, and the page.
struct Setup {
    server: PublicServer,
    internal: String,
    _python: Proc,
    _files: tempfile::TempDir,
}

fn setup() -> Setup {
    let files = tempfile::tempdir().unwrap();
    write_file(files.path(), "page.txt", "behind the corporate proxy\n");
    let (python, internal) = python_http(files.path());
    let server = PublicServer::start("web t0k\n", &[]);
    Setup {
        server,
        internal,
        _python: python,
        _files: files,
    }
}

impl Setup {
    fn port(&self) -> u16 {
        self.server.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// `h2rev2 client` for id `web` with `extra` flags and `env`, against `server`
    /// (the public server's URL by default).
    fn client(&self, server: Option<&str>, extra: &[&str], env: &[(&str, &str)]) -> Proc {
        let server = server.unwrap_or(&self.server.url);
        let mut args = vec![
            "client",
            "--server",
            server,
            "--ca",
            &self.server.cert,
            "--id",
            "web",
            "--proxy-host",
            &self.internal,
        ];
        args.extend_from_slice(extra);
        let mut env = env.to_vec();
        env.push(("H2REV2_TOKEN", "t0k"));
        Proc::h2rev2("client", &args, &env)
    }

    /// curl through the public server reaches python behind the client.
    fn fetch(&self) {
        let url = format!("{}/proxy/web/page.txt", self.server.url);
        curl_until(
            &["--cacert", &self.server.cert, &url],
            "behind the corporate proxy",
            UP,
        );
    }
}

#[test]
fn http_connect_proxy_with_basic_auth() {
    let s = setup();
    let proxy = tinyproxy(s.port(), "proxyuser", "pr0xy-s3cret");
    let url = format!("http://proxyuser:pr0xy-s3cret@127.0.0.1:{}", proxy.port);
    let mut client = s.client(None, &["--proxy", &url], &[]);
    client.wait_for("Serving on Reverse connection", UP);
    s.fetch();
    // The tunnel went through tinyproxy: it logged the CONNECT to the public server.
    proxy.wait_log(&format!("CONNECT 127.0.0.1:{}", s.port()));
    let err = client.stderr();
    assert!(
        err.contains(&format!(
            "through the HTTP CONNECT proxy http://proxyuser:***@127.0.0.1:{} (from --proxy)",
            proxy.port
        )),
        "{err}"
    );
    assert!(
        !err.contains("pr0xy-s3cret"),
        "the password was logged:\n{err}"
    );
}

#[test]
fn wrong_proxy_password_is_a_clear_407() {
    let s = setup();
    let proxy = tinyproxy(s.port(), "proxyuser", "pr0xy-s3cret");
    let url = format!("http://proxyuser:not-the-password@127.0.0.1:{}", proxy.port);
    let mut client = s.client(None, &["--proxy", &url, "--max-attempts", "1"], &[]);
    let status = client.wait_exit(UP);
    assert!(!status.success());
    let err = client.stderr();
    // tinyproxy 1.11 answers a wrong password with 401 Unauthorized, where RFC 9110
    // has 407 Proxy Authentication Required (which the unit tests cover): the message
    // says what the proxy said.
    let want = format!(
        "proxy 127.0.0.1:{} refused CONNECT to 127.0.0.1:{}: 40",
        proxy.port,
        s.port()
    );
    assert!(err.contains(&want), "no {want:?} in:\n{err}");
    assert!(
        err.contains("407 Proxy Authentication Required") || err.contains("401 Unauthorized"),
        "{err}"
    );
    assert!(
        err.contains("check the proxy user name and password"),
        "{err}"
    );
    assert!(
        !err.contains("not-the-password"),
        "the password was logged:\n{err}"
    );
}

#[test]
fn https_proxy_variable_and_no_proxy_bypass() {
    let s = setup();
    let proxy = tinyproxy(s.port(), "u", "p");
    let url = format!("http://u:p@127.0.0.1:{}", proxy.port);
    let connect = format!("CONNECT 127.0.0.1:{}", s.port());

    // HTTPS_PROXY alone: the client goes through the proxy.
    let mut client = s.client(None, &[], &[("HTTPS_PROXY", &url)]);
    client.wait_for("Serving on Reverse connection", UP);
    s.fetch();
    proxy.wait_log(&connect);
    assert!(
        client.stderr().contains("(from the environment)"),
        "{}",
        client.stderr()
    );
    drop(client);
    let seen = proxy.log().matches(&connect).count();

    // NO_PROXY naming the server: straight there, the proxy untouched.
    let mut client = s.client(
        None,
        &[],
        &[
            ("https_proxy", &url),
            ("NO_PROXY", "example.com, 127.0.0.1"),
        ],
    );
    client.wait_for("Serving on Reverse connection", UP);
    s.fetch();
    assert!(
        client
            .stderr()
            .contains("NO_PROXY entry \"127.0.0.1\" exempts the public server"),
        "{}",
        client.stderr()
    );
    drop(client);

    // `--proxy none` overrides the environment.
    let mut client = s.client(None, &["--proxy", "none"], &[("ALL_PROXY", &url)]);
    client.wait_for("Serving on Reverse connection", UP);
    s.fetch();
    drop(client);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        proxy.log().matches(&connect).count(),
        seen,
        "a bypassed client went through the proxy:\n{}",
        proxy.log()
    );
}

#[test]
fn socks5_through_dante() {
    let s = setup();
    let proxy = danted();
    let to_server = format!("127.0.0.1.{}", s.port());

    // socks5://: the client sends the address.
    let url = format!("socks5://127.0.0.1:{}", proxy.port);
    let mut client = s.client(None, &["--proxy", &url], &[]);
    client.wait_for("Serving on Reverse connection", UP);
    s.fetch();
    proxy.wait_log(&to_server);
    assert!(
        client
            .stderr()
            .contains("through the SOCKS5 proxy socks5://127.0.0.1:"),
        "{}",
        client.stderr()
    );
    drop(client);

    // socks5h:// with a name: dante resolves `localhost` (ALL_PROXY this time). TLS
    // still checks the server's certificate for localhost, not for the proxy.
    let url = format!("socks5h://127.0.0.1:{}", proxy.port);
    let server = format!("https://localhost:{}", s.port());
    let before = proxy.log().matches(&to_server).count();
    let mut client = s.client(Some(&server), &[], &[("ALL_PROXY", &url)]);
    client.wait_for("Serving on Reverse connection", UP);
    s.fetch();
    let until = Instant::now() + Duration::from_secs(10);
    while proxy.log().matches(&to_server).count() == before {
        assert!(
            Instant::now() < until,
            "dante did not log the tunnel:\n{}",
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn socks5_refusal_is_explained() {
    let s = setup();
    let proxy = danted();
    // Nothing listens on this port: dante answers "connection refused".
    let dead = free_port();
    let url = format!("socks5://127.0.0.1:{}", proxy.port);
    let server = format!("https://127.0.0.1:{dead}");
    let mut client = s.client(
        Some(&server),
        &["--proxy", &url, "--max-attempts", "1"],
        &[],
    );
    client.wait_exit(UP);
    let err = client.stderr();
    let want = format!(
        "SOCKS5 proxy 127.0.0.1:{}: could not connect to 127.0.0.1:{dead}:",
        proxy.port
    );
    assert!(err.contains(&want), "no {want:?} in:\n{err}");
}
