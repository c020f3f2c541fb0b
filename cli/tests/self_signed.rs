#![cfg(unix)]
//! `server --self-signed` keeps its key: a restarted server has the same certificate,
//! so clients pinned with `--ca` come back, and a start that fails leaves the running
//! server's files alone.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

struct Files {
    dir: tempfile::TempDir,
    tokens: String,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let tokens = write_file(dir.path(), "tokens.txt", "app s3cret\n")
            .display()
            .to_string();
        Files { dir, tokens }
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    /// The default key file: the certificate's path with the extension `.key`.
    fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    fn server(&self, name: &str, port: u16, extra: &[&str]) -> Proc {
        let listen = format!("127.0.0.1:{port}");
        let cert = self.cert().display().to_string();
        let mut args = vec![
            "server",
            "--listen",
            &listen,
            "--self-signed",
            "--cert-out",
            &cert,
            "--tokens",
            &self.tokens,
        ];
        args.extend_from_slice(extra);
        Proc::h2rev2(name, &args, &[])
    }
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

const FP: &str = "SHA-256 fingerprint ";

#[test]
fn restarted_server_keeps_its_certificate_and_the_pinned_client_comes_back() {
    let f = Files::new();
    let port = free_port();
    let url = format!("https://localhost:{port}");
    let mut server = f.server("server1", port, &[]);
    server.wait_for("Serving on", Duration::from_secs(20));
    let fp1 = server.wait_value_after(FP, Duration::from_secs(5));
    assert!(fp1.len() == 95, "a SHA-256 fingerprint: {fp1:?}");
    assert!(
        server.stderr().contains("new self-signed certificate"),
        "the first start says it made the certificate:\n{}",
        server.stderr()
    );
    assert_eq!(mode(&f.key()), 0o600, "the key file is private");
    let cert1 = read(&f.cert());
    let key1 = read(&f.key());
    // What the client was given, as a user would copy it to the other machine.
    let pinned = f.dir.path().join("pinned.crt");
    std::fs::write(&pinned, &cert1).unwrap();
    let pinned = pinned.display().to_string();

    let internal = format!("http://127.0.0.1:{}", start_http());
    let mut client = Proc::h2rev2(
        "client",
        &[
            "client",
            "--server",
            &url,
            "--ca",
            &pinned,
            "--id",
            "app",
            "--proxy-host",
            &internal,
        ],
        &[("H2REV2_TOKEN", "s3cret")],
    );
    client.wait_for("Serving on Reverse connection", Duration::from_secs(20));
    let through = format!("{url}/proxy/app/before");
    let body = curl_until(
        &["--cacert", &pinned, &through],
        "internal ok /before",
        Duration::from_secs(10),
    );
    assert_eq!(body, "internal ok /before\n");

    // Kill the server (no graceful shutdown) and start it again with the same command.
    drop(server);
    let stderr_before = client.stderr().len();
    let mut server = f.server("server2", port, &[]);
    server.wait_for("Serving on", Duration::from_secs(20));
    let fp2 = server.wait_value_after(FP, Duration::from_secs(5));
    assert_eq!(fp1, fp2, "the restarted server has the same certificate");
    assert!(
        server
            .stderr()
            .contains("reusing the self-signed certificate"),
        "the second start says it reused the certificate:\n{}",
        server.stderr()
    );
    assert_eq!(read(&f.cert()), cert1, "certificate file unchanged");
    assert_eq!(read(&f.key()), key1, "key file unchanged");
    assert_eq!(mode(&f.key()), 0o600);

    // The pinned client reconnects on its own (backoff capped at 5 s).
    server.wait_for("session up", Duration::from_secs(15));
    let through = format!("{url}/proxy/app/after");
    let body = curl_until(
        &["--cacert", &pinned, &through],
        "internal ok /after",
        Duration::from_secs(15),
    );
    assert_eq!(body, "internal ok /after\n");
    let later = &client.stderr()[stderr_before..];
    assert!(
        !["BadSignature", "UnknownIssuer", "invalid peer certificate"]
            .iter()
            .any(|e| later.contains(e)),
        "the client had no certificate trouble after the restart:\n{later}"
    );
}

#[test]
fn failed_second_start_on_a_busy_port_leaves_the_files_alone() {
    let f = Files::new();
    let port = free_port();
    let mut server = f.server("server1", port, &[]);
    server.wait_for("Serving on", Duration::from_secs(20));
    let cert1 = read(&f.cert());
    let key1 = read(&f.key());

    // Same command (same key and certificate), and one that would need a new
    // certificate (another name): neither may touch the running server's files.
    for extra in [&[][..], &["--hostname", "other.example"][..]] {
        let mut second = f.server("server2", port, extra);
        let st = second.wait_exit(Duration::from_secs(20));
        assert_eq!(st.code(), Some(5), "{}", second.stderr());
        assert!(second.stderr().contains("in use"), "{}", second.stderr());
        assert!(
            read(&f.cert()) == cert1,
            "the certificate file was changed by a start that failed ({extra:?})"
        );
        assert!(
            read(&f.key()) == key1,
            "the key file was changed by a start that failed ({extra:?})"
        );
    }
    // And the running server still serves that certificate.
    let body = curl_until(
        &[
            "--cacert",
            &f.cert().display().to_string(),
            &format!("https://localhost:{port}/proxy/nobody/"),
        ],
        "nobody",
        Duration::from_secs(10),
    );
    assert!(!body.is_empty());
    assert!(server.stderr().contains("Serving on"));
}

#[test]
fn new_names_make_a_new_certificate_from_the_same_key() {
    let f = Files::new();
    let mut server = f.server("server1", 0, &[]);
    server.wait_for("Serving on", Duration::from_secs(20));
    let fp1 = server.wait_value_after(FP, Duration::from_secs(5));
    drop(server);
    let key1 = read(&f.key());

    let mut server = f.server("server2", 0, &["--hostname", "tunnel.example"]);
    server.wait_for("Serving on", Duration::from_secs(20));
    let fp2 = server.wait_value_after(FP, Duration::from_secs(5));
    assert_ne!(fp1, fp2, "the certificate names other hosts now");
    assert!(
        server.stderr().contains("new self-signed certificate")
            && server.stderr().contains("existing key"),
        "{}",
        server.stderr()
    );
    assert_eq!(read(&f.key()), key1, "the key is kept");
    drop(server);

    // The same names again: that certificate is reused.
    let mut server = f.server("server3", 0, &["--hostname", "tunnel.example"]);
    server.wait_for("Serving on", Duration::from_secs(20));
    let fp3 = server.wait_value_after(FP, Duration::from_secs(5));
    assert_eq!(fp2, fp3);
}

#[test]
fn a_bad_key_file_is_a_clear_error() {
    let f = Files::new();
    std::fs::write(f.key(), "not a key\n").unwrap();
    std::fs::set_permissions(f.key(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut server = f.server("server", 0, &[]);
    let st = server.wait_exit(Duration::from_secs(20));
    assert_eq!(st.code(), Some(3), "{}", server.stderr());
    let key = f.key().display().to_string();
    assert!(server.stderr().contains(&key), "{}", server.stderr());
    assert!(!f.cert().exists(), "nothing written");
    assert_eq!(read(&f.key()), b"not a key\n");

    // A key that others may read is used, with a warning.
    std::fs::remove_file(f.key()).unwrap();
    let mut server = f.server("server1", 0, &[]);
    server.wait_for("Serving on", Duration::from_secs(20));
    drop(server);
    std::fs::set_permissions(f.key(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut server = f.server("server2", 0, &[]);
    server.wait_for("Serving on", Duration::from_secs(20));
    assert!(
        server.stderr().contains("chmod 600"),
        "warns about the key's permissions:\n{}",
        server.stderr()
    );
}
