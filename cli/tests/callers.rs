//! `server --caller-tokens` / `--caller-users`: Clients of the tunnels need a
//! credential, through the release binary and curl.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn caller_tokens_and_users_guard_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_file(dir.path(), "tokens.txt", "web t0k\n");
    let callers = write_file(dir.path(), "callers.txt", "web reader-token\n");
    let users = write_file(dir.path(), "users.txt", "* ops:s3cret\n");
    let cert = dir.path().join("server.crt").display().to_string();
    let mut server = Proc::h2rev2(
        "server",
        &[
            "server",
            "--listen",
            "127.0.0.1:0",
            "--self-signed",
            "--cert-out",
            &cert,
            "--tokens",
            &tokens.display().to_string(),
            "--caller-tokens",
            &callers.display().to_string(),
            "--caller-users",
            &users.display().to_string(),
        ],
        &[],
    );
    let public = server.wait_value_after("Serving on https://", Duration::from_secs(20));
    let url = format!("https://{public}");
    let internal = format!("http://127.0.0.1:{}", start_http());
    let mut client = Proc::h2rev2(
        "client",
        &[
            "client",
            "--server",
            &url,
            "--ca",
            &cert,
            "--id",
            "web",
            "--proxy-host",
            &internal,
        ],
        &[("H2REV2_TOKEN", "t0k")],
    );
    client.wait_for("Serving on Reverse connection", Duration::from_secs(20));
    let target = format!("{url}/proxy/web/x");
    let status = |extra: &[&str]| {
        let mut args = vec![
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            &cert,
        ];
        args.extend_from_slice(extra);
        args.push(&target);
        curl(&args).1
    };
    assert_eq!(status(&[]), "401");
    assert_eq!(status(&["-H", "Authorization: Bearer wrong"]), "403");
    assert_eq!(status(&["-H", "Authorization: Bearer reader-token"]), "200");
    assert_eq!(status(&["-u", "ops:s3cret"]), "200");
    assert_eq!(status(&["-u", "ops:nope"]), "403");
    // The answer for an id that does not exist is the same as for a live one.
    let ghost = format!("{url}/proxy/ghost/x");
    let (_, body_ghost, _) = curl(&["-s", "--cacert", &cert, &ghost]);
    let (_, body_web, _) = curl(&["-s", "--cacert", &cert, &target]);
    assert_eq!(body_ghost, body_web);
}
