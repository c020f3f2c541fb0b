//! Logs people can read: no h2 frame dumps under `RUST_LOG=debug` unless h2 is named,
//! `--log-format json`. Through the release binary.

mod common;

use std::time::Duration;

use common::*;

const UP: Duration = Duration::from_secs(20);

/// Runs a server and a client with `RUST_LOG=rust_log`, sends one request through the
/// tunnel; returns both processes' stderr.
fn logs_of_one_request(rust_log: &str) -> String {
    let env = [("RUST_LOG", rust_log)];
    let mut server = PublicServer::start_env("web t0k\n", &[], &env);
    let internal = format!("http://127.0.0.1:{}", start_http());
    let mut client = server.client_env("web", "t0k", &internal, &env);
    let url = format!("{}/proxy/web/logged", server.url);
    curl_until(&["--cacert", &server.cert, &url], "internal ok /logged", UP);
    std::thread::sleep(Duration::from_millis(300));
    server.proc.signal("TERM");
    client.signal("TERM");
    server.proc.wait_exit(UP);
    client.wait_exit(UP);
    format!("{}{}", server.proc.stderr(), client.stderr())
}

#[test]
fn debug_logs_show_h2_frames_only_when_asked_by_name() {
    // h2 logs each frame as `send frame=...` / `received frame=...`.
    let debug = logs_of_one_request("debug");
    assert!(debug.contains("DEBUG"), "debug is on: {debug}");
    assert!(
        !debug.contains("frame="),
        "h2 frames under RUST_LOG=debug: {debug}"
    );
    let named = logs_of_one_request("debug,h2=debug");
    assert!(
        named.contains("frame="),
        "no h2 frames with h2=debug: {named}"
    );
}

#[test]
fn log_format_json_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "tokens.txt", "web t0k\n");
    let config = write_file(
        dir.path(),
        "server.toml",
        "listen = \"127.0.0.1:0\"\nself-signed = true\ncert-out = \"s.crt\"\n\
         tokens = \"tokens.txt\"\nlog-format = \"json\"\n",
    );
    let config = config.display().to_string();
    let mut server = Proc::h2rev2("server", &["server", "--config", &config], &[]);
    server.wait_for("Serving on https://", UP);
    server.signal("TERM");
    server.wait_exit(UP);
    let err = server.stderr();
    let mut serving = None;
    for line in err.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: not JSON: {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        let message = v["message"].as_str().unwrap_or_default();
        if let Some(addr) = message.strip_prefix("Serving on https://") {
            serving = Some(addr.to_string());
        }
    }
    let addr = serving.unwrap_or_else(|| panic!("no serving line: {err}"));
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    // The flag overrides the file's format.
    let mut server = Proc::h2rev2(
        "server",
        &["server", "--config", &config, "--log-format", "text"],
        &[],
    );
    server.wait_for("Serving on https://", UP);
    assert!(!server.stderr().starts_with('{'), "{}", server.stderr());
}

/// A refused client retries forever, but says so once per kind of failure (with the
/// next attempt's delay), not on every attempt.
#[test]
fn a_refused_client_logs_the_refusal_once_not_on_every_retry() {
    let server = PublicServer::start("web right\n", &[]);
    let internal = format!("http://127.0.0.1:{}", start_http());
    let mut args = server.client_args("web", &internal);
    args.extend(["--max-backoff", "1"]);
    let env = [("H2REV2_TOKEN", "wrong"), ("RUST_LOG", "debug")];
    let mut client = Proc::h2rev2("client", &args, &env);
    // At most 1 s between attempts: 5 s make several.
    std::thread::sleep(Duration::from_secs(5));
    let err = client.stderr();
    let count = |needle: &str| err.lines().filter(|l| l.contains(needle)).count();
    let attempts = count("403");
    assert!(
        attempts >= 4,
        "fewer attempts than expected ({attempts}): {err}"
    );
    let warns: Vec<&str> = err.lines().filter(|l| l.contains(" WARN ")).collect();
    assert_eq!(warns.len(), 1, "one warning for one kind of failure: {err}");
    assert!(
        warns[0].contains("403") && warns[0].contains("next attempt in"),
        "{}",
        warns[0]
    );
    assert_eq!(count(" ERROR "), 1, "the refusal explained once: {err}");
    assert!(count("still down") >= 3, "the retries at debug: {err}");
    let connecting = err
        .lines()
        .filter(|l| l.contains(" INFO ") && l.contains("Listener connecting"))
        .count();
    assert_eq!(
        connecting, 1,
        "the first attempt at info, retries at debug: {err}"
    );
    client.signal("TERM");
    client.wait_exit(UP);
}
