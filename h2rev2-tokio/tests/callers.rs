//! Caller access control (issue 11.6): with a rule configured, Clients of
//! `/proxy/{id}/…` need a bearer token or basic credentials valid for that id; refusals
//! are 401/403 with the same answer for known and unknown ids, and the credential is
//! not passed on to the NATed server. Client certificates (verified against the
//! operator's CA) open ids too. Both runtimes' servers.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use h2rev2_tokio::tls::{self, Identity, ServerTrust};
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

/// One request on a fresh TLS connection presenting `client_cert` (or none); the
/// status, headers and body, or why the connection or request failed.
async fn ask_as(
    s: &Stack,
    client_cert: Option<Identity>,
    v: Version,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(StatusCode, http::HeaderMap, Bytes), String> {
    let port = s.public.addr.port();
    let alpn = if v == Version::HTTP_2 {
        tls::ALPN_H2
    } else {
        tls::ALPN_HTTP11
    };
    let trust = ServerTrust::from_certs(&s.certs.identity.certs).unwrap();
    let cfg = tls::client_config(trust, client_cert, &[alpn]).unwrap();
    let mut b = http::Request::get(format!("https://localhost:{port}{path}"))
        .header("host", format!("localhost:{port}"));
    for (k, val) in headers {
        b = b.header(*k, *val);
    }
    let req = b.body(empty()).unwrap();
    let go = async {
        let tcp = tokio::net::TcpStream::connect(s.public.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = tls::server_name("localhost").unwrap();
        let io = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let io = hyper_util::rt::TokioIo::new(io);
        let resp = if v == Version::HTTP_2 {
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
            tokio::spawn(conn);
            send.send_request(req).await
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
            tokio::spawn(conn);
            send.send_request(req).await
        }
        .map_err(|e| format!("request: {e}"))?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((parts.status, parts.headers, body))
    };
    tokio::time::timeout(Duration::from_secs(20), go)
        .await
        .expect("an answer (or an error) within 20 s")
}

/// `app alice` is a certificate rule: a Client whose verified certificate names
/// `alice` (SAN) reaches `app` and nothing else; a Client without a certificate gets
/// 401, one with another name 403; a certificate of another CA is refused by TLS
/// itself. Bearer tokens work beside the certificate rules. HTTP/1.1 and HTTP/2, the
/// `/proxy/{id}/` routes and the default target.
async fn client_certificates_open_their_ids(side: Side) {
    init_tracing();
    let ca = Ca::new("callers CA");
    let mut config = token_config(&[("app", "tok")]);
    config.routes = config.routes.clone().with_default_id(Some(id("app")));
    config
        .callers
        .allow_certificate(Some(id("app")), "alice")
        .allow_bearer(Some(id("app")), "t1");
    let s = stack_on_with(side, config, Some(ca.roots()), |_| {}).await;
    let alice = || Some(ca.client(&["alice"], "not-alice"));
    // CN is not the identity here (SAN is the default).
    let cn_alice = || Some(ca.client(&["carol"], "alice"));
    let bob = || Some(ca.client(&["bob"], "bob"));
    let rogue = || Some(Ca::new("rogue CA").client(&["alice"], "alice"));
    let hello = &b"hello from inside\n"[..];
    for v in [Version::HTTP_11, Version::HTTP_2] {
        for path in ["/proxy/app/hello", "/hello"] {
            let (st, _, body) = ask_as(&s, alice(), v, path, &[]).await.unwrap();
            assert_eq!((st, &body[..]), (StatusCode::OK, hello), "{v:?} {path}");

            let (st, h, body) = ask_as(&s, None, v, path, &[]).await.unwrap();
            assert_eq!(st, StatusCode::UNAUTHORIZED, "{v:?} {path}");
            assert!(h.contains_key("www-authenticate"));
            assert_eq!(&body[..], b"h2rev2: authentication required\n");

            for who in [bob(), cn_alice()] {
                let (st, _, body) = ask_as(&s, who, v, path, &[]).await.unwrap();
                assert_eq!(st, StatusCode::FORBIDDEN, "{v:?} {path}");
                assert_eq!(&body[..], b"h2rev2: not allowed\n");
            }

            // Tokens keep working beside certificate rules, with or without a
            // certificate.
            let t1 = [("authorization", "Bearer t1")];
            for who in [None, bob()] {
                let (st, _, body) = ask_as(&s, who, v, path, &t1).await.unwrap();
                assert_eq!((st, &body[..]), (StatusCode::OK, hello), "{v:?} {path}");
            }
        }
        // alice's certificate opens `app` only: `db` (no such id) answers like any
        // refusal, the same as for a live id.
        let (st, _, body) = ask_as(&s, alice(), v, "/proxy/db/hello", &[])
            .await
            .unwrap();
        assert_eq!(st, StatusCode::FORBIDDEN, "{v:?}");
        assert_eq!(&body[..], b"h2rev2: not allowed\n");
        let (st, _, _) = ask_as(&s, None, v, "/proxy/db/hello", &[]).await.unwrap();
        assert_eq!(st, StatusCode::UNAUTHORIZED);

        // Admitted by the certificate, the Client's own `Authorization` is the NATed
        // server's and is passed on; a tunnel token used to get in is not.
        let own = [("authorization", "Bearer for-the-backend")];
        let (st, _, body) = ask_as(&s, alice(), v, "/proxy/app/headers", &own)
            .await
            .unwrap();
        assert_eq!(st, StatusCode::OK);
        let seen = String::from_utf8_lossy(&body).to_lowercase();
        assert!(
            seen.contains("authorization: bearer for-the-backend"),
            "{seen}"
        );
        let t1 = [("authorization", "Bearer t1")];
        let (st, _, body) = ask_as(&s, alice(), v, "/proxy/app/headers", &t1)
            .await
            .unwrap();
        assert_eq!(st, StatusCode::OK);
        let seen = String::from_utf8_lossy(&body).to_lowercase();
        assert!(!seen.contains("authorization"), "{seen}");

        // A certificate naming alice from another CA: the handshake fails, no answer.
        let r = ask_as(&s, rogue(), v, "/proxy/app/hello", &[]).await;
        assert!(
            r.is_err(),
            "{v:?}: a rogue certificate got an answer: {r:?}"
        );
    }
}
both!(client_certificates_open_their_ids);
