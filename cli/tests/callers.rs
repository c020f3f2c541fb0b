//! `server --caller-tokens` / `--caller-users` / `--caller-certs`: Clients of the tunnels need a
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

#[test]
fn caller_certificates_guard_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("callers CA");
    let ca_file = write_file(dir.path(), "ca.crt", &ca.pem);
    let certs = write_file(dir.path(), "certs.txt", "# id identity\nweb alice\n");
    let tokens = write_file(dir.path(), "callers.txt", "web reader-token\n");
    let (ca_file, certs, tokens) = (
        ca_file.display().to_string(),
        certs.display().to_string(),
        tokens.display().to_string(),
    );
    let server = PublicServer::start(
        "web t0k\ndb t1k\n",
        &[
            "--caller-certs",
            &certs,
            "--client-ca",
            &ca_file,
            "--caller-tokens",
            &tokens,
        ],
    );
    let internal = format!("http://127.0.0.1:{}", start_http());
    let _web = server.client("web", "t0k", &internal);
    let _db = server.client("db", "t1k", &internal);
    let alice = ca.client(dir.path(), "alice", "alice");
    let bob = ca.client(dir.path(), "bob", "bob");
    let rogue = TestCa::new("rogue CA").client(dir.path(), "rogue", "alice");
    let (url, cert) = (&server.url, &server.cert);
    let status = |version: &str, id: &str, extra: &[&str]| {
        let target = format!("{url}/proxy/{id}/x");
        let mut args = vec![
            version,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            cert,
        ];
        args.extend_from_slice(extra);
        args.push(&target);
        let (ok, code, err) = curl(&args);
        (ok, code, err)
    };
    let with = |c: &(String, String)| {
        [
            "--cert".to_string(),
            c.0.clone(),
            "--key".into(),
            c.1.clone(),
        ]
    };
    let alice = with(&alice);
    let alice: Vec<&str> = alice.iter().map(String::as_str).collect();
    let bob = with(&bob);
    let bob: Vec<&str> = bob.iter().map(String::as_str).collect();
    let rogue = with(&rogue);
    let rogue: Vec<&str> = rogue.iter().map(String::as_str).collect();
    for version in ["--http2", "--http1.1"] {
        // alice's certificate opens web, and no other id: not the live db, not an
        // unknown one.
        assert_eq!(status(version, "web", &alice).1, "200", "{version}");
        assert_eq!(status(version, "db", &alice).1, "403", "{version}");
        assert_eq!(status(version, "ghost", &alice).1, "403", "{version}");
        assert_eq!(status(version, "web", &bob).1, "403", "{version}");
        assert_eq!(status(version, "web", &[]).1, "401", "{version}");
        // Tokens keep working beside certificate rules.
        let token = ["-H", "Authorization: Bearer reader-token"];
        assert_eq!(status(version, "web", &token).1, "200", "{version}");
        assert_eq!(status(version, "db", &token).1, "403", "{version}");
        // A certificate naming alice from another CA: refused by TLS, no HTTP answer.
        let (ok, code, err) = status(version, "web", &rogue);
        assert!(!ok && code == "000", "{version}: {code} {err}");
    }
}

#[test]
fn caller_certs_need_a_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certs = write_file(dir.path(), "certs.txt", "web alice\n");
    let certs = certs.display().to_string();
    let cert_out = dir.path().join("s.crt").display().to_string();
    let tokens = write_file(dir.path(), "tokens.txt", "web t0k\n");
    let tokens = tokens.display().to_string();
    let mut p = Proc::h2rev2(
        "server",
        &[
            "server",
            "--listen",
            "127.0.0.1:0",
            "--self-signed",
            "--cert-out",
            &cert_out,
            "--tokens",
            &tokens,
            "--caller-certs",
            &certs,
        ],
        &[],
    );
    let st = p.wait_exit(std::time::Duration::from_secs(20));
    let err = p.stderr();
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(err.contains("--client-ca"), "{err}");
}
