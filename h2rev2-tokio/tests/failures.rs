//! Failure paths: a NAT side that dies mid-transfer, a public server that restarts,
//! several Listeners for one id and the loss of one, refused credentials.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use h2rev2_tokio::{Listener, Server, Status};
use http::{Request, StatusCode, Version};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::timeout;

const BIG: usize = 256 << 20;

/// The NAT side dies (its runtime is shut down, as a process exits) while a Client
/// downloads through it: the download fails promptly, never as a clean short body, and
/// later requests get `502`.
async fn nat_side_killed_mid_download(side: Side) {
    init_tracing();
    let certs = Certs::new();
    let public = start_public_with(side, &certs, token_config(&[("app", "tok")]), None).await;
    let internal = start_internal().await;
    for v in [Version::HTTP_11, Version::HTTP_2] {
        let mut nat = NatSide::proxy(listener_opts(&public, &certs, "app", Some("tok")), internal);
        nat.wait_up().await;
        wait_sessions(&public.server, 1).await;
        let req = Request::get(format!(
            "https://localhost:{}/proxy/app/big/{BIG}",
            public.addr.port()
        ))
        .body(empty())
        .unwrap();
        let resp = timeout(
            Duration::from_secs(10),
            request(public.addr, &certs, v, req),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        let mut got = 0usize;
        while got < (1 << 20) {
            let f = timeout(Duration::from_secs(10), body.frame())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            got += f.into_data().map(|d| d.len()).unwrap_or(0);
        }
        nat.kill();
        let killed = Instant::now();
        let outcome = timeout(Duration::from_secs(5), async {
            loop {
                match body.frame().await {
                    Some(Ok(f)) => got += f.into_data().map(|d| d.len()).unwrap_or(0),
                    Some(Err(e)) => return Err(e),
                    None => return Ok(()),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{v:?}: the download hung after the NAT side died"));
        assert!(
            outcome.is_err(),
            "{v:?}: a cut download ended cleanly after {got} of {BIG} bytes"
        );
        assert!(got < BIG, "{v:?}");
        eprintln!(
            "{v:?}: download failed {:?} after the kill",
            killed.elapsed()
        );
        wait_sessions(&public.server, 0).await;
        let (status, body) = get(public.addr, &certs, v, "/proxy/app/hello").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body:?}");
    }
}
both!(nat_side_killed_mid_download);

/// The public server as a process of its own: a runtime on its own thread.
struct PublicSide {
    rt: Option<tokio::runtime::Runtime>,
    server: Server,
}

impl PublicSide {
    fn start(certs: &Certs, addr: SocketAddr) -> PublicSide {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = {
            let _g = rt.enter();
            // The old process's runtime drops its listening socket in the background
            // (`shutdown_background`): retry briefly, as a restarted process would.
            let listener = (0..200)
                .find_map(|_| {
                    std::net::TcpListener::bind(addr).ok().or_else(|| {
                        std::thread::sleep(Duration::from_millis(10));
                        None
                    })
                })
                .expect("the port is free again within 2 s");
            listener.set_nonblocking(true).unwrap();
            let listener = TcpListener::from_std(listener).unwrap();
            let server = Server::new(token_config(&[("app", "tok")]));
            let tls = h2rev2_tokio::tls::server_config(certs.identity.clone(), None).unwrap();
            rt.spawn(server.clone().serve(listener, tls));
            server
        };
        PublicSide {
            rt: Some(rt),
            server,
        }
    }
}

impl Drop for PublicSide {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn hello_works(addr: SocketAddr, certs: &Certs) {
    for v in [Version::HTTP_11, Version::HTTP_2] {
        let (status, body) = get(addr, certs, v, "/proxy/app/hello").await;
        assert_eq!(status, StatusCode::OK, "{v:?}: {body:?}");
        assert_eq!(body, "hello from inside\n");
    }
}

async fn wait_status(listener: &Listener, what: &str, f: impl Fn(&Status) -> bool) {
    let mut w = listener.watch_status();
    timeout(Duration::from_secs(10), w.wait_for(|s| f(s)))
        .await
        .unwrap_or_else(|_| panic!("Listener not {what} within 10 s: {:?}", listener.status()))
        .unwrap();
}

/// The public server's process dies and a new one binds the same port: the Listener
/// notices, reconnects by itself, and requests work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_server_process_restart() {
    init_tracing();
    let certs = Certs::new();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let first = PublicSide::start(&certs, addr);
    let internal = start_internal().await;
    let public = Public {
        server: first.server.clone().into(),
        addr,
        task: tokio::spawn(async { Ok(()) }),
    };
    let listener = bind_listener(listener_opts(&public, &certs, "app", Some("tok")));
    let status = listener.watch_status();
    timeout(Duration::from_secs(10), listener.wait_up())
        .await
        .unwrap()
        .unwrap();
    tokio::spawn(h2rev2_tokio::nat::serve_http_proxy(
        listener,
        h2rev2_tokio::nat::HttpProxyOptions::new(format!("http://{internal}").parse().unwrap()),
    ));
    hello_works(addr, &certs).await;

    drop(first);
    let mut w = status.clone();
    timeout(
        Duration::from_secs(5),
        w.wait_for(|s| matches!(s, Status::Down(_))),
    )
    .await
    .expect("the Listener noticed the server's death")
    .unwrap();

    let second = PublicSide::start(&certs, addr);
    timeout(Duration::from_secs(10), w.wait_for(|s| *s == Status::Up))
        .await
        .expect("the Listener reconnected by itself")
        .unwrap();
    wait_sessions(&second.server, 1).await;
    hello_works(addr, &certs).await;
}

/// The in-process way: shut the Server down with a short deadline, abort its serve
/// task, drop it, and bind a new Server on the same port.
async fn public_server_restart_in_process(side: Side) {
    init_tracing();
    let certs = Certs::new();
    let public = start_public_with(side, &certs, token_config(&[("app", "tok")]), None).await;
    let addr = public.addr;
    let internal = start_internal().await;
    let listener = bind_listener(listener_opts(&public, &certs, "app", Some("tok")));
    let status = listener.watch_status();
    timeout(Duration::from_secs(10), listener.wait_up())
        .await
        .unwrap()
        .unwrap();
    tokio::spawn(h2rev2_tokio::nat::serve_http_proxy(
        listener,
        h2rev2_tokio::nat::HttpProxyOptions::new(format!("http://{internal}").parse().unwrap()),
    ));
    hello_works(addr, &certs).await;

    let started = Instant::now();
    timeout(
        Duration::from_secs(5),
        public.server.shutdown(Duration::from_millis(200)),
    )
    .await
    .expect("shutdown keeps its deadline");
    public.task.abort();
    drop(public);
    let mut w = status.clone();
    timeout(
        Duration::from_secs(5),
        w.wait_for(|s| matches!(s, Status::Down(_))),
    )
    .await
    .expect("connections are cut once the shutdown deadline passed")
    .unwrap();
    eprintln!("Listener down {:?} after shutdown began", started.elapsed());

    let tcp = TcpListener::bind(addr).await.unwrap();
    let public = start_public_on(&certs, token_config(&[("app", "tok")]), tcp).await;
    timeout(Duration::from_secs(10), w.wait_for(|s| *s == Status::Up))
        .await
        .expect("the Listener reconnected by itself")
        .unwrap();
    wait_sessions(&public.server, 1).await;
    hello_works(addr, &certs).await;
}
both!(public_server_restart_in_process);

/// A NAT side that answers each conn with its tag, then echoes until EOF.
fn tagged_nat(public: &Public, certs: &Certs, tag: u8, count: Arc<AtomicUsize>) -> NatSide {
    let mut opts = listener_opts(public, certs, "app", Some("tok"));
    opts.machine.spares = 1;
    NatSide::start(opts, move |l: Listener| async move {
        while let Ok(mut conn) = l.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut b = [0u8; 1];
                if conn.read_exact(&mut b).await.is_err() {
                    return; // a spare that was never used
                }
                count.fetch_add(1, Ordering::SeqCst);
                let _ = conn.write_all(&[tag]).await;
                let _ = conn.flush().await;
                let mut buf = [0u8; 1024];
                loop {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                            let _ = conn.flush().await;
                        }
                    }
                }
                let _ = conn.shutdown().await;
            });
        }
    })
}

async fn dial_tagged(server: &h2rev2_driver::Server) -> (h2rev2_tokio::RevConn, u8) {
    let mut c = timeout(Duration::from_secs(5), server.dial(&id("app")))
        .await
        .unwrap()
        .unwrap();
    c.write_all(b"?").await.unwrap();
    c.flush().await.unwrap();
    let mut tag = [0u8; 1];
    timeout(Duration::from_secs(5), c.read_exact(&mut tag))
        .await
        .unwrap()
        .unwrap();
    (c, tag[0])
}

/// Two Listeners hold the same id (token credentials, `role=control` joins): dials
/// are spread over both; killing one fails only the streams it carried.
async fn two_listeners_share_an_id(side: Side) {
    init_tracing();
    let certs = Certs::new();
    let public = start_public_with(side, &certs, token_config(&[("app", "tok")]), None).await;
    let counts = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let mut a = tagged_nat(&public, &certs, b'A', counts[0].clone());
    let b = tagged_nat(&public, &certs, b'B', counts[1].clone());
    a.wait_up().await;
    b.wait_up().await;
    wait_sessions(&public.server, 2).await;

    let mut conns = Vec::new();
    for _ in 0..20 {
        conns.push(dial_tagged(&public.server).await);
    }
    let (na, nb) = (
        counts[0].load(Ordering::SeqCst),
        counts[1].load(Ordering::SeqCst),
    );
    assert_eq!(na + nb, 20);
    assert!(na >= 5 && nb >= 5, "dials not spread: A {na}, B {nb}");
    let tags: Vec<u8> = conns.iter().map(|(_, t)| *t).collect();
    assert_eq!(tags.iter().filter(|t| **t == b'A').count(), na);

    a.kill();
    for (c, tag) in conns.iter_mut() {
        let r = timeout(Duration::from_secs(5), async {
            c.write_all(b"hi").await?;
            c.flush().await?;
            let mut buf = [0u8; 2];
            c.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        })
        .await
        .expect("no hang after a Listener died");
        if *tag == b'A' {
            assert!(r.is_err(), "a stream of the dead Listener still works");
        } else {
            assert_eq!(&r.expect("B's streams are untouched"), b"hi");
        }
    }
    wait_sessions(&public.server, 1).await;
    for _ in 0..10 {
        let (_, tag) = dial_tagged(&public.server).await;
        assert_eq!(tag, b'B');
    }
}
both!(two_listeners_share_an_id);

/// A wrong token: the Listener's status says why (403), and the server counted it.
async fn wrong_token_is_refused(side: Side) {
    init_tracing();
    let certs = Certs::new();
    let public = start_public_with(side, &certs, token_config(&[("app", "tok")]), None).await;
    let listener = bind_listener(listener_opts(&public, &certs, "app", Some("wrong")));
    wait_status(&listener, "refused", |s| matches!(s, Status::Down(Some(_)))).await;
    match listener.status() {
        Status::Down(Some(reason)) => {
            assert_eq!(reason.refusal().map(|(s, _)| s), Some(403), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(
        public
            .server
            .metrics()
            .auth_failures
            .load(Ordering::Relaxed)
            >= 1
    );
    assert_eq!(public.server.stats().await.sessions, 0);
    // No token at all is refused too.
    let anon = bind_listener(listener_opts(&public, &certs, "app", None));
    wait_status(&anon, "refused", |s| matches!(s, Status::Down(Some(_)))).await;
    match anon.status() {
        Status::Down(Some(reason)) => {
            assert!(matches!(reason.refusal(), Some((401 | 403, _))), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(public.server.stats().await.sessions, 0);
}
both!(wrong_token_is_refused);

/// `Listener::close` ends the session at once: later requests get `502`.
async fn closed_listener_leaves(side: Side) {
    init_tracing();
    let certs = Certs::new();
    let public = start_public_with(side, &certs, token_config(&[("app", "tok")]), None).await;
    let listener = bind_listener(listener_opts(&public, &certs, "app", Some("tok")));
    timeout(Duration::from_secs(10), listener.wait_up())
        .await
        .unwrap()
        .unwrap();
    wait_sessions(&public.server, 1).await;
    listener.close();
    wait_sessions(&public.server, 0).await;
    let (status, _) = get(public.addr, &certs, Version::HTTP_2, "/proxy/app/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(matches!(listener.status(), Status::Closed(_)));
}
both!(closed_listener_leaves);

/// A public server whose certificate the Listener does not trust: Down with the TLS
/// error, retried; plain `http://` is refused up front.
async fn untrusted_certificate_and_plain_http(side: Side) {
    init_tracing();
    let certs = Certs::new();
    let other = Certs::new();
    let public = start_public_with(side, &certs, token_config(&[("app", "tok")]), None).await;
    let opts = listener_opts(&public, &other, "app", Some("tok"));
    let listener = bind_listener(opts);
    wait_status(&listener, "down", |s| matches!(s, Status::Down(Some(_)))).await;
    match listener.status() {
        Status::Down(Some(reason)) => assert!(
            matches!(&reason, h2rev2_tokio::DownReason::Connect(d) if d.contains("TLS")),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(public.server.stats().await.sessions, 0);
    let plain = h2rev2_tokio::ListenerOptions::new(
        &format!("http://localhost:{}", public.addr.port()),
        id("app"),
        certs.client_tls(),
    );
    let err = plain.expect_err("plain http must be refused").to_string();
    assert!(err.contains("https"), "{err}");
}
both!(untrusted_certificate_and_plain_http);
