//! Caller access control (issue 11.6): with a rule configured, Clients of
//! `/proxy/{id}/…` need a bearer token or basic credentials valid for that id; refusals
//! are 401/403 with the same answer for known and unknown ids, and the credential is
//! not passed on to the NATed server. Both runtimes' servers.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{StatusCode, Version};
use http_body_util::BodyExt;

async fn ask(
    s: &Stack,
    v: Version,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut b = http::Request::get(format!("https://localhost:{}{path}", s.public.addr.port()))
        .header("host", format!("localhost:{}", s.public.addr.port()));
    for (k, val) in headers {
        b = b.header(*k, *val);
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(20),
        request(s.public.addr, &s.certs, v, b.body(empty()).unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

async fn callers_need_a_credential_for_the_id(side: Side) {
    let mut config = token_config(&[("app", "tok")]);
    config
        .callers
        .allow_bearer(Some(id("app")), "t1")
        .allow_basic(None, "ops", "pw");
    let s = stack_on(side, config, |_| {}).await;
    for v in [Version::HTTP_11, Version::HTTP_2] {
        // No credential: 401, the same for a live id and an unknown one.
        let (st, h, body) = ask(&s, v, "/proxy/app/hello", &[]).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{v:?}");
        assert!(h.contains_key("www-authenticate"));
        assert_eq!(&body[..], b"h2rev2: authentication required\n");
        let ghost = ask(&s, v, "/proxy/ghost/hello", &[]).await;
        assert_eq!(
            (ghost.0, &ghost.2),
            (st, &body),
            "unknown ids answer the same"
        );
        // A wrong token: 403, the same for both.
        let wrong = [("authorization", "Bearer nope")];
        let a = ask(&s, v, "/proxy/app/hello", &wrong).await;
        let g = ask(&s, v, "/proxy/ghost/hello", &wrong).await;
        assert_eq!(a.0, StatusCode::FORBIDDEN);
        assert_eq!((a.0, &a.2), (g.0, &g.2));
        // `app`'s token opens `app` only.
        let t1 = [("authorization", "Bearer t1")];
        let (st, _, body) = ask(&s, v, "/proxy/app/hello", &t1).await;
        assert_eq!(
            (st, &body[..]),
            (StatusCode::OK, &b"hello from inside\n"[..])
        );
        assert_eq!(
            ask(&s, v, "/proxy/ghost/x", &t1).await.0,
            StatusCode::FORBIDDEN
        );
        // Basic credentials for every id (ops:pw); the credential is not forwarded.
        let basic = [("authorization", "Basic b3BzOnB3")];
        let (st, _, body) = ask(&s, v, "/proxy/app/headers", &basic).await;
        assert_eq!(st, StatusCode::OK);
        let seen = String::from_utf8_lossy(&body).to_lowercase();
        assert!(
            !seen.contains("authorization"),
            "credential leaked upstream: {seen}"
        );
        assert_eq!(
            ask(&s, v, "/proxy/ghost/x", &basic).await.0,
            StatusCode::BAD_GATEWAY
        );
        // Proxy-Authorization carries the tunnel's credential; the backend keeps its own.
        let both = [
            ("proxy-authorization", "Bearer t1"),
            ("authorization", "Bearer for-the-backend"),
        ];
        let (st, _, body) = ask(&s, v, "/proxy/app/headers", &both).await;
        assert_eq!(st, StatusCode::OK);
        let seen = String::from_utf8_lossy(&body).to_lowercase();
        assert!(
            seen.contains("authorization: bearer for-the-backend"),
            "{seen}"
        );
        assert!(!seen.contains("bearer t1"), "{seen}");
    }
}
both!(callers_need_a_credential_for_the_id);

async fn without_rules_every_caller_is_served(side: Side) {
    let s = stack_on(side, token_config(&[("app", "tok")]), |_| {}).await;
    let (st, _, _) = ask(&s, Version::HTTP_2, "/proxy/app/hello", &[]).await;
    assert_eq!(st, StatusCode::OK);
}
both!(without_rules_every_caller_is_served);
