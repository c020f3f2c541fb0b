//! Tokens: a wrong or missing token is refused, and both sides say so clearly.

mod common;

use std::time::Duration;

use common::*;

fn server() -> PublicServer {
    PublicServer::start("app right-token\n", &[])
}

fn client(s: &PublicServer, token: Option<&str>, extra: &[&str]) -> Proc {
    let internal = format!("http://127.0.0.1:{}", start_http());
    let mut args = vec![
        "client",
        "--server",
        &s.url,
        "--ca",
        &s.cert,
        "--id",
        "app",
        "--proxy-host",
        &internal,
    ];
    args.extend_from_slice(extra);
    let env: Vec<(&str, &str)> = token.map(|t| ("H2REV2_TOKEN", t)).into_iter().collect();
    Proc::h2rev2("client", &args, &env)
}

#[test]
fn wrong_token_is_refused_with_a_clear_message_on_both_sides() {
    let mut s = server();
    let mut c = client(&s, Some("wrong-token"), &["--max-attempts", "2"]);
    let st = c.wait_exit(Duration::from_secs(30));
    assert_eq!(st.code(), Some(4), "exit code 4: refused by the server");
    let cerr = c.stderr();
    assert!(
        cerr.contains("refused this client: HTTP 403")
            && cerr.contains("credentials not valid for this id")
            && cerr.contains("H2REV2_TOKEN"),
        "client side:\n{cerr}"
    );
    assert!(
        cerr.contains("h2rev2: error: the client stopped: gave up after 2 attempts"),
        "{cerr}"
    );
    s.proc.wait_for(
        "revdial request refused: credentials not valid for this id",
        Duration::from_secs(5),
    );
    let serr = s.proc.stderr();
    assert!(
        serr.contains("id=app") && serr.contains("status=403"),
        "{serr}"
    );
    assert!(!serr.contains("session up"), "{serr}");
}

#[test]
fn missing_token_is_refused_and_retried_until_fixed() {
    let mut s = server();
    // Without --max-attempts the client keeps trying, loudly, on every attempt.
    let mut c = client(&s, None, &[]);
    c.wait_for("HTTP 401", Duration::from_secs(20));
    assert!(c.stderr().contains("pass --token or set H2REV2_TOKEN"));
    s.proc.wait_for(
        "revdial request refused: authentication required",
        Duration::from_secs(5),
    );
    drop(c);
    // The right token works.
    let mut ok = client(&s, Some("right-token"), &[]);
    ok.wait_for("Serving on Reverse connection", Duration::from_secs(20));
    let body = curl_until(
        &[
            "--cacert",
            &s.cert,
            &format!("{}/proxy/app/x", s.url.replace("127.0.0.1", "localhost")),
        ],
        "internal ok /x",
        Duration::from_secs(10),
    );
    assert_eq!(body, "internal ok /x\n");
}
