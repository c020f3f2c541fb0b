//! `server --caller-tokens` / `--caller-users`: Clients of the tunnels need a
//! credential, through the release binary and curl.

mod common;

use common::*;

#[test]
fn caller_tokens_and_users_guard_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let callers = write_file(dir.path(), "callers.txt", "web reader-token\n");
    let users = write_file(dir.path(), "users.txt", "* ops:s3cret\n");
    let (callers, users) = (callers.display().to_string(), users.display().to_string());
    let server = PublicServer::start(
        "web t0k\n",
        &["--caller-tokens", &callers, "--caller-users", &users],
    );
    let internal = format!("http://127.0.0.1:{}", start_http());
    let _client = server.client("web", "t0k", &internal);
    let (url, cert) = (&server.url, &server.cert);
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
    let (_, body_ghost, _) = curl(&["-s", "--cacert", cert, &ghost]);
    let (_, body_web, _) = curl(&["-s", "--cacert", cert, &target]);
    assert_eq!(body_ghost, body_web);
}
