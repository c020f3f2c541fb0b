//! `Server::reload` on both runtimes: a new configuration applies while everything
//! keeps serving, and ends exactly the sessions whose credential it withdrew.

mod common;

use std::time::Duration;

use common::*;
use h2rev2_tokio::{Listener, Status};
use tokio::time::{sleep, timeout};

/// Starts a Listener for `name` and serves the hyper fixture behind it.
async fn serve(public: &Public, certs: &Certs, name: &str, token: &str) -> Listener {
    let listener = bind_listener(listener_opts(public, certs, name, Some(token)));
    timeout(Duration::from_secs(10), listener.wait_up())
        .await
        .unwrap()
        .unwrap();
    listener
}

async fn get(public: &Public, certs: &Certs, id: &str) -> String {
    let cacert = certs.cert_path();
    let (_, out, _) = curl(&[
        "--cacert",
        cacert.to_str().unwrap(),
        "-w",
        " %{http_code}",
        &format!("{}/proxy/{id}/get", public.url()),
    ])
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn reload_ends_exactly_the_revoked_sessions(side: Side) {
    init_tracing();
    let internal = start_internal().await;
    let certs = Certs::new();
    let config = token_config(&[("a", "ta"), ("b", "tb")]);
    let public = start_public_with(side, &certs, config, None).await;
    let target: http::Uri = format!("http://{internal}").parse().unwrap();
    let mut up = Vec::new();
    for (name, token) in [("a", "ta"), ("b", "tb")] {
        let l = serve(&public, &certs, name, token).await;
        up.push(l.watch_status());
        tokio::spawn(h2rev2_tokio::nat::serve_http_proxy(
            l,
            h2rev2_tokio::nat::HttpProxyOptions::new(target.clone()),
        ));
    }
    // Both serve, and each has an idle pooled conn afterwards.
    for id in ["a", "b"] {
        assert_eq!(get(&public, &certs, id).await, "GET /get\n 200");
    }
    let before = public.server.sessions().await;
    let b_before = before
        .iter()
        .find(|s| s.id.as_str() == "b")
        .unwrap()
        .clone();
    assert_eq!(public.server.generation(), 0);

    // a's token changes, b's stays; a limit changes too.
    let mut new = token_config(&[("a", "ta2"), ("b", "tb")]);
    new.proxy.max_requests_per_id = 7;
    let done = public.server.reload(new).await;
    assert_eq!(done.generation, 1);
    assert_eq!(done.ended, vec![id("a")]);
    assert_eq!(public.server.generation(), 1);
    assert_eq!(public.server.config().proxy.max_requests_per_id, 7);

    // a's Listener is down and refused from now on (its old token), even through the
    // idle conn the proxy had pooled for it.
    let mut a_status = up[0].clone();
    timeout(Duration::from_secs(10), async {
        loop {
            if let Status::Down(Some(r)) = &*a_status.borrow_and_update() {
                if r.refusal().is_some_and(|(s, _)| s == 403) {
                    return;
                }
            }
            a_status.changed().await.unwrap();
        }
    })
    .await
    .expect("a's Listener is refused with its old token");
    let a_now = get(&public, &certs, "a").await;
    assert!(
        a_now.ends_with(" 502") || a_now.ends_with(" 503"),
        "{a_now}"
    );

    // b never noticed: the same session, still up, still serving.
    assert!(matches!(*up[1].borrow(), Status::Up));
    assert_eq!(get(&public, &certs, "b").await, "GET /get\n 200");
    let after = public.server.sessions().await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].id.as_str(), "b");
    assert_eq!(
        (after[0].session, after[0].since, after[0].peer),
        (b_before.session, b_before.since, b_before.peer)
    );

    // The new token registers a.
    let l = serve(&public, &certs, "a", "ta2").await;
    tokio::spawn(h2rev2_tokio::nat::serve_http_proxy(
        l,
        h2rev2_tokio::nat::HttpProxyOptions::new(target),
    ));
    let mut served = String::new();
    for _ in 0..50 {
        served = get(&public, &certs, "a").await;
        if served == "GET /get\n 200" {
            break;
        }
        sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served, "GET /get\n 200");

    let metrics = public.server.metrics().render();
    for line in [
        "\nh2rev2_reloads_total{outcome=\"applied\"} 1\n",
        "\nh2rev2_reloads_total{outcome=\"refused\"} 0\n",
        "\nh2rev2_sessions_revoked_total 1\n",
        "\nh2rev2_config_generation 1\n",
    ] {
        assert!(metrics.contains(line), "no {line:?} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_ends_exactly_the_revoked_sessions_tokio() {
    reload_ends_exactly_the_revoked_sessions(Side::Tokio).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_ends_exactly_the_revoked_sessions_smol() {
    reload_ends_exactly_the_revoked_sessions(Side::Smol).await;
}

/// A certificate rotated through a `CertSlot` is served from the next handshake on,
/// while a Listener connected with the old one stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_serves_new_handshakes() {
    init_tracing();
    let old = Certs::new();
    let new = Certs::new();
    let slot = h2rev2_tokio::tls::CertSlot::new(old.identity.clone()).unwrap();
    let tls = h2rev2_tokio::tls::server_config_with(slot.clone(), None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = h2rev2_tokio::Server::new(token_config(&[("a", "ta")]));
    tokio::spawn(server.clone().serve(listener, tls));
    let public = Public {
        server: server.into(),
        addr,
        task: tokio::spawn(async { Ok(()) }),
    };
    let l = serve(&public, &old, "a", "ta").await;
    let status = l.watch_status();
    let url = format!("{}/healthz-none", public.url());
    let code = |c: &Certs| {
        let ca = c.cert_path();
        let url = url.clone();
        async move {
            let (ok, out, err) = curl(&[
                "--cacert",
                ca.to_str().unwrap(),
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &url,
            ])
            .await;
            (ok, String::from_utf8_lossy(&out).into_owned(), err)
        }
    };
    assert!(code(&old).await.0);
    assert!(!code(&new).await.0, "the new certificate is not served yet");
    slot.replace(new.identity.clone()).unwrap();
    let (ok, _, err) = code(&new).await;
    assert!(ok, "the new certificate is served: {err}");
    assert!(!code(&old).await.0, "the old one is not");
    sleep(Duration::from_millis(200)).await;
    assert!(matches!(*status.borrow(), Status::Up));
    drop(l);
}
