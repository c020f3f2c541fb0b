//! Helpers for process-level tests: run the built `h2rev2` binary as a user would,
//! watch its output, and always kill it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_h2rev2")
}

/// Whether `program` can be run.
pub fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// The environment variables that choose outbound proxies (h2rev2's and curl's).
pub const PROXY_VARS: [&str; 8] = [
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "HTTP_PROXY",
    "http_proxy",
];

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether 127.0.0.1:`port` can be bound now.
pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
        && TcpStream::connect_timeout(
            &format!("127.0.0.1:{port}").parse().unwrap(),
            Duration::from_millis(200),
        )
        .is_err()
}

/// A child process whose stdout and stderr are collected; killed on drop.
pub struct Proc {
    pub name: String,
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    status: Option<ExitStatus>,
}

fn collect(r: impl Read + Send + 'static, into: Arc<Mutex<String>>, echo: String) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { return };
            eprintln!("[{echo}] {line}");
            let mut s = into.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
}

impl Proc {
    /// Starts `program args` with `env` added.
    pub fn spawn(name: &str, program: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        Self::spawn_in(name, program, args, env, None)
    }

    /// Starts it in directory `dir`.
    pub fn spawn_in(
        name: &str,
        program: &str,
        args: &[&str],
        env: &[(&str, &str)],
        dir: Option<&Path>,
    ) -> Proc {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG")
            .env_remove("H2REV2_TOKEN")
            .env_remove("H2REV2_TOKENS")
            .env_remove("H2REV2_TOKEN_FILE");
        // An outbound proxy is what a test says, not what the machine has.
        for k in PROXY_VARS {
            cmd.env_remove(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(d) = dir {
            cmd.current_dir(d);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        collect(
            child.stdout.take().unwrap(),
            stdout.clone(),
            format!("{name} out"),
        );
        collect(
            child.stderr.take().unwrap(),
            stderr.clone(),
            format!("{name} err"),
        );
        Proc {
            name: name.to_string(),
            child,
            stdout,
            stderr,
            status: None,
        }
    }

    /// Starts the h2rev2 binary.
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn h2rev2(name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        Self::spawn(name, bin(), args, env)
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until stderr (or stdout) contains `needle`; panics after `timeout`.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let until = Instant::now() + timeout;
        loop {
            if self.stderr().contains(needle) || self.stdout().contains(needle) {
                return;
            }
            if let Some(st) = self.try_status() {
                // Give the reader threads a moment to catch the last lines.
                std::thread::sleep(Duration::from_millis(200));
                if self.stderr().contains(needle) || self.stdout().contains(needle) {
                    return;
                }
                panic!(
                    "{} exited ({st}) before printing {needle:?}\nstdout:\n{}\nstderr:\n{}",
                    self.name,
                    self.stdout(),
                    self.stderr()
                );
            }
            if Instant::now() > until {
                panic!(
                    "{} did not print {needle:?} within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    self.name,
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits for a line containing `prefix` and returns what follows it on that line.
    pub fn wait_value_after(&mut self, prefix: &str, timeout: Duration) -> String {
        self.wait_for(prefix, timeout);
        let all = format!("{}\n{}", self.stdout(), self.stderr());
        let line = all.lines().find(|l| l.contains(prefix)).unwrap();
        let rest = &line[line.find(prefix).unwrap() + prefix.len()..];
        // Up to a space, or to the quote that ends it in a JSON log line.
        rest.split(|c: char| c.is_whitespace() || c == '"')
            .next()
            .unwrap_or("")
            .to_string()
    }

    /// Whether the process has not exited yet.
    pub fn running(&mut self) -> bool {
        self.try_status().is_none()
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let until = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_status() {
                std::thread::sleep(Duration::from_millis(100));
                return st;
            }
            if Instant::now() > until {
                panic!(
                    "{} still running after {timeout:?}\nstderr:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Sends `signal` (`TERM`, `INT`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A certificate and key for localhost in a temp dir: made with openssl as the
/// original README did when it is installed, else with rcgen.
pub struct Certs {
    pub dir: tempfile::TempDir,
}

impl Certs {
    pub fn new() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let crt = dir.path().join("server.crt");
        let key = dir.path().join("server.key");
        let made = have_openssl()
            && Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .args(["-subj", "/CN=localhost", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&crt)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        if !made {
            eprintln!("note: openssl not available, certificate made with rcgen");
            let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
            std::fs::write(&crt, ck.cert.pem()).unwrap();
            std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        }
        Certs { dir }
    }

    pub fn crt(&self) -> String {
        self.dir.path().join("server.crt").display().to_string()
    }

    pub fn key(&self) -> String {
        self.dir.path().join("server.key").display().to_string()
    }
}

fn have_openssl() -> bool {
    Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs curl with a 20 s limit; returns (success, stdout, stderr).
pub fn curl(args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new("curl");
    for k in PROXY_VARS {
        cmd.env_remove(k);
    }
    let out = cmd
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl is installed");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Retries curl until it succeeds with a body containing `needle` (the tunnel may still
/// be coming up), for at most `timeout`.
pub fn curl_until(args: &[&str], needle: &str, timeout: Duration) -> String {
    let until = Instant::now() + timeout;
    loop {
        let (ok, out, err) = curl(args);
        if ok && out.contains(needle) {
            return out;
        }
        if Instant::now() > until {
            panic!("curl {args:?} never answered {needle:?}: last stdout {out:?}, stderr {err:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A tiny HTTP/1.1 server on 127.0.0.1 answering `internal ok {path}`; returns its port.
pub fn start_http() -> u16 {
    start_http_named("internal ok")
}

/// A tiny HTTP/1.1 server on 127.0.0.1 answering `{name} {path}`; returns its port.
pub fn start_http_named(name: &str) -> u16 {
    let name = name.to_string();
    serve_heads(move |head, s| {
        let path = head.split_whitespace().nth(1).unwrap_or("?").to_string();
        let body = format!("{name} {path}\n");
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    })
}

/// A server on 127.0.0.1 that runs `on_conn` for each connection, on a thread of its
/// own; its port.
pub fn serve_each(on_conn: impl Fn(TcpStream) + Send + Sync + 'static) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let on_conn = Arc::new(on_conn);
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let on_conn = on_conn.clone();
            std::thread::spawn(move || on_conn(s));
        }
    });
    port
}

/// An HTTP/1.1 server on 127.0.0.1 ([`serve_each`]): `answer` gets each connection's
/// first request head (read within 10 s) and the connection; its port.
pub fn serve_heads(answer: impl Fn(String, &mut TcpStream) + Send + Sync + 'static) -> u16 {
    serve_each(move |mut s| {
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let Some(head) = read_head(&mut s) else {
            return;
        };
        let _ = s.set_read_timeout(None);
        answer(head, &mut s);
    })
}

/// Reads a request's head (through the blank line, and nothing after it: an
/// upgraded connection's bytes stay unread); `None` if the connection ends first.
pub fn read_head(s: &mut impl Read) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// A TCP echo server on 127.0.0.1; returns its port.
pub fn start_echo() -> u16 {
    serve_each(|mut s| {
        let mut r = s.try_clone().unwrap();
        let _ = std::io::copy(&mut r, &mut s);
        let _ = s.shutdown(std::net::Shutdown::Write);
    })
}

/// Writes `contents` to `dir/name`; returns the path.
pub fn write_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

/// A public server started as a user would: `server --listen 127.0.0.1:0
/// --self-signed` with its certificate and the `tokens` file (`ID TOKEN` lines) in a
/// temporary directory, plus `extra` flags; up and serving.
pub struct PublicServer {
    pub dir: tempfile::TempDir,
    pub proc: Proc,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The self-signed certificate, for `--ca` and `curl --cacert`.
    pub cert: String,
}

impl PublicServer {
    pub fn start(tokens: &str, extra: &[&str]) -> PublicServer {
        Self::start_env(tokens, extra, &[])
    }

    /// The same with `env` added to the server's environment.
    pub fn start_env(tokens: &str, extra: &[&str], env: &[(&str, &str)]) -> PublicServer {
        let dir = tempfile::tempdir().unwrap();
        let tokens = write_file(dir.path(), "tokens.txt", tokens)
            .display()
            .to_string();
        let cert = dir.path().join("server.crt").display().to_string();
        let mut args = self_signed_args(&cert);
        args.extend(["--tokens", &tokens]);
        args.extend_from_slice(extra);
        let mut proc = Proc::h2rev2("server", &args, env);
        let public = proc.wait_value_after("Serving on https://", Duration::from_secs(20));
        PublicServer {
            url: format!("https://{public}"),
            dir,
            proc,
            cert,
        }
    }

    /// A client registering `id` with `token`, proxying to `internal`; once it is up.
    pub fn client(&self, id: &str, token: &str, internal: &str) -> Proc {
        self.client_env(id, token, internal, &[])
    }

    /// The arguments of a client of this server registering `id` and proxying to
    /// `internal`.
    pub fn client_args<'a>(&'a self, id: &'a str, internal: &'a str) -> Vec<&'a str> {
        vec![
            "client",
            "--server",
            &self.url,
            "--ca",
            &self.cert,
            "--id",
            id,
            "--proxy-host",
            internal,
        ]
    }

    /// The same with `env` added to the client's environment.
    pub fn client_env(&self, id: &str, token: &str, internal: &str, env: &[(&str, &str)]) -> Proc {
        let args = self.client_args(id, internal);
        let mut env = env.to_vec();
        env.push(("H2REV2_TOKEN", token));
        let mut c = Proc::h2rev2(&format!("client {id}"), &args, &env);
        c.wait_for("Serving on Reverse connection", Duration::from_secs(20));
        c
    }
}

/// The first arguments of a test's public server: `server --listen 127.0.0.1:0
/// --self-signed --cert-out CERT`.
pub fn self_signed_args(cert: &str) -> Vec<&str> {
    vec![
        "server",
        "--listen",
        "127.0.0.1:0",
        "--self-signed",
        "--cert-out",
        cert,
    ]
}

/// `h2rev2 server --listen 127.0.0.1:0 --self-signed --allow-anonymous` with its
/// certificate written to `dir/s.crt`, plus `extra`; started, not waited for.
pub fn anonymous_server(dir: &Path, extra: &[&str]) -> Proc {
    let cert = dir.join("s.crt").display().to_string();
    let mut args = self_signed_args(&cert);
    args.push("--allow-anonymous");
    args.extend_from_slice(extra);
    Proc::h2rev2("server", &args, &[])
}

/// A CA made with rcgen, its certificate as PEM.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A client certificate naming `san`, written as `{name}.crt` and `{name}.key` in
    /// `dir`; their paths.
    pub fn client(&self, dir: &std::path::Path, name: &str, san: &str) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec![san.to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, san);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let crt = write_file(dir, &format!("{name}.crt"), &cert.pem());
        let key = write_file(dir, &format!("{name}.key"), &key.serialize_pem());
        (crt.display().to_string(), key.display().to_string())
    }
}
