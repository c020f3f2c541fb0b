//! `server --config FILE` and `client --config FILE` through the release binary, as
//! an operator uses them: real TLS, curl through the tunnel, flags over the file,
//! unknown keys refused, `--print-config` with secrets masked.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::*;

const UP: Duration = Duration::from_secs(20);

/// Writes the server's config file (self-signed certificate `server.crt` and token
/// file `tokens.txt`, both given relative to the file) into `dir`, plus `extra` lines.
fn server_config(dir: &Path, listen: &str, extra: &str) -> String {
    write_file(dir, "tokens.txt", "web s3cret\n");
    let text = format!(
        "# the public server\n\
         listen = \"{listen}\"\n\
         self-signed = true\n\
         cert-out = \"server.crt\"\n\
         tokens = \"tokens.txt\"\n\
         max-requests-per-id = 8\n\
         {extra}"
    );
    write_file(dir, "server.toml", &text).display().to_string()
}

/// Writes a client's config file into `dir`: `ca` relative to the file.
fn client_config(dir: &Path, server_url: &str, token: &str, internal: u16) -> String {
    let text = format!(
        "server = \"{server_url}\"\n\
         id = \"web\"\n\
         token = \"{token}\"\n\
         ca = \"../server.crt\"\n\
         proxy-host = \"http://127.0.0.1:{internal}\"\n\
         max-backoff = 1\n"
    );
    write_file(dir, "client.toml", &text).display().to_string()
}

/// Runs h2rev2 to completion in `cwd`; returns (exit code, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> (Option<i32>, String, String) {
    let mut p = Proc::spawn_in("h2rev2", bin(), args, env, Some(cwd));
    let st = p.wait_exit(UP);
    (st.code(), p.stdout(), p.stderr())
}

#[test]
fn server_and_client_from_config_files_only() {
    let etc = tempfile::tempdir().unwrap();
    let nat = etc.path().join("nat");
    std::fs::create_dir(&nat).unwrap();
    // Started from another directory: the file's relative paths are the file's.
    let cwd = tempfile::tempdir().unwrap();
    let server_toml = server_config(etc.path(), "127.0.0.1:0", "");
    let mut server = Proc::spawn_in(
        "server",
        bin(),
        &["server", "--config", &server_toml],
        &[],
        Some(cwd.path()),
    );
    let addr = server.wait_value_after("Serving on https://", UP);
    let cert = etc.path().join("server.crt");
    assert!(cert.exists(), "the certificate is written next to the file");
    assert_eq!(
        std::fs::read_dir(cwd.path()).unwrap().count(),
        0,
        "nothing is written to the working directory"
    );

    let internal = start_http();
    let client_toml = client_config(&nat, &format!("https://{addr}"), "s3cret", internal);
    let mut client = Proc::spawn_in(
        "client",
        bin(),
        &["client", "--config", &client_toml],
        &[],
        Some(cwd.path()),
    );
    client.wait_for("Serving on Reverse connection", UP);

    let cert = cert.display().to_string();
    let url = format!("https://{addr}/proxy/web/from-config");
    let body = curl_until(&["--cacert", &cert, &url], "internal ok", UP);
    assert_eq!(body, "internal ok /from-config\n");
}

#[test]
fn flags_and_environment_override_the_file() {
    let etc = tempfile::tempdir().unwrap();
    let in_file = free_port();
    let on_flag = free_port();
    let server_toml = server_config(etc.path(), &format!("127.0.0.1:{in_file}"), "");
    let listen = format!("127.0.0.1:{on_flag}");
    let mut server = Proc::h2rev2(
        "server",
        &["server", "--config", &server_toml, "--listen", &listen],
        &[],
    );
    let addr = server.wait_value_after("Serving on https://", UP);
    assert_eq!(addr, listen, "the flag's address is served");
    assert!(
        TcpStream::connect(("127.0.0.1", in_file)).is_err(),
        "the file's address is not listened on"
    );

    // The client's file has a wrong token; H2REV2_TOKEN (the flag's environment
    // variable) overrides it, so the client is admitted.
    let nat = etc.path().join("nat");
    std::fs::create_dir(&nat).unwrap();
    let internal = start_http();
    let client_toml = client_config(&nat, &format!("https://{addr}"), "wrong", internal);
    let mut client = Proc::h2rev2(
        "client",
        &["client", "--config", &client_toml],
        &[("H2REV2_TOKEN", "s3cret")],
    );
    client.wait_for("Serving on Reverse connection", UP);
    let cert = etc.path().join("server.crt").display().to_string();
    let url = format!("https://{addr}/proxy/web/x");
    curl_until(&["--cacert", &cert, &url], "internal ok /x", UP);
    drop(client);

    // Without the override, the file's wrong token is sent and refused (exit 4).
    let (code, _, err) = run(
        &["client", "--config", &client_toml, "--max-attempts", "1"],
        &[],
        etc.path(),
    );
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("403"), "{err}");
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    let etc = tempfile::tempdir().unwrap();
    let server_toml = server_config(etc.path(), "127.0.0.1:0", "max-sesions = 3\n");
    let (code, _, err) = run(&["server", "--config", &server_toml], &[], etc.path());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&server_toml), "names the file: {err}");
    assert!(err.contains("max-sesions"), "names the key: {err}");
    assert!(err.contains("line 7"), "names the line: {err}");

    let client_toml = write_file(
        etc.path(),
        "client.toml",
        "server = \"https://127.0.0.1:1\"\nid = \"web\"\n[proxy]\nhost = \"x\"\n",
    );
    let client_toml = client_toml.display().to_string();
    let (code, _, err) = run(&["client", "--config", &client_toml], &[], etc.path());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("proxy") && err.contains("line 3"), "{err}");

    // A file that cannot be read is a file error (3) naming it.
    let (code, _, err) = run(
        &["server", "--config", "/nonexistent/h2rev2.toml"],
        &[],
        etc.path(),
    );
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("/nonexistent/h2rev2.toml"), "{err}");
}

#[test]
fn print_config_shows_the_merge_with_secrets_masked() {
    let etc = tempfile::tempdir().unwrap();
    let nat = etc.path().join("nat");
    std::fs::create_dir(&nat).unwrap();
    let client_toml = client_config(&nat, "https://public.example:9090", "file-s3cret", 8000);
    let (code, out, err) = run(
        &[
            "client",
            "--config",
            &client_toml,
            "--spares",
            "5",
            "--print-config",
        ],
        &[("H2REV2_TOKEN", "env-s3cret")],
        etc.path(),
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("token = \"***\""), "{out}");
    assert!(
        !out.contains("s3cret") && !err.contains("s3cret"),
        "a token leaked: {out}{err}"
    );
    assert!(
        out.contains("server = [\"https://public.example:9090\"]"),
        "{out}"
    );
    assert!(out.contains("spares = 5"), "the flag wins: {out}");
    // The relative `ca` is shown resolved against the file's directory.
    let ca = nat.join("../server.crt").display().to_string();
    assert!(out.contains(&format!("ca = \"{ca}\"")), "{out}");

    // The server's tokens from the environment are masked too; the token file's path
    // is not a secret.
    let server_toml = server_config(etc.path(), "127.0.0.1:0", "");
    let (code, out, err) = run(
        &["server", "--config", &server_toml, "--print-config"],
        &[("H2REV2_TOKENS", "ssh=env-t0ken")],
        etc.path(),
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("tokens-env = \"***\""), "{out}");
    assert!(!out.contains("env-t0ken"), "{out}");
    let tokens = etc.path().join("tokens.txt").display().to_string();
    assert!(out.contains(&format!("tokens = \"{tokens}\"")), "{out}");
    assert!(out.contains("max-requests-per-id = 8"), "{out}");
    assert!(
        out.contains("max-sessions = 10000"),
        "defaults shown: {out}"
    );
    // Nothing was started: no certificate written.
    assert!(!etc.path().join("server.crt").exists());
}
