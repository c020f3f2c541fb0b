//! The smol adapter against itself: a smol Listener and a smol public server, both on
//! smol's executor, over real TLS on 127.0.0.1, with every task's polls checked for a
//! tokio runtime (there must be none: h2 runs through tokio-util's compat only).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use h2rev2_smol::proto::dialer::DialError;
use h2rev2_smol::{Connector, Listener, ListenerOptions, Server, ServerConfig};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};

struct Setup {
    server: Server,
    listener: Listener,
    uploads: smol::channel::Receiver<Upload>,
    port: u16,
}

async fn setup(probe: &Arc<RuntimeProbe>, certs: &Certs) -> Setup {
    setup_with_spares(probe, certs, 2).await
}

/// Without spares, each dial makes the Listener open exactly one stream, so that a
/// dial and an `accept` started together are the two ends of one conn (with spares,
/// the server may hand out one spare while `accept` yields another).
async fn setup_with_spares(probe: &Arc<RuntimeProbe>, certs: &Certs, spares: usize) -> Setup {
    let mut config = ServerConfig::default();
    config.dialer.auth.add_token(id("box"), "tok");
    let server = Server::with_runtime(config, probe.spawner(|t| smol::spawn(t).detach()));
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    smol::spawn(probe.wrap(server.clone().serve(tcp, certs.server_tls()))).detach();

    let url = format!("https://localhost:{port}");
    let mut opts = ListenerOptions::new(&url, id("box"), certs.client_tls()).unwrap();
    opts.token = Some("tok".into());
    opts.machine.spares = spares;
    let listener = Listener::connect_with(
        opts,
        Connector::default(),
        probe.spawner(|t| smol::spawn(t).detach()),
    )
    .unwrap();
    with_timeout(Duration::from_secs(10), listener.wait_up())
        .await
        .unwrap();
    Setup {
        server,
        listener,
        uploads: smol::channel::unbounded().1,
        port,
    }
}

/// Accepts conns and serves the test exercises on them, on smol's executor.
fn serve_accepted(
    probe: &Arc<RuntimeProbe>,
    listener: Listener,
) -> smol::channel::Receiver<Upload> {
    let (tx, rx) = smol::channel::unbounded();
    let p = probe.clone();
    smol::spawn(probe.wrap(async move {
        while let Ok(conn) = listener.accept().await {
            let tx = tx.clone();
            smol::spawn(p.wrap(async move {
                let _ = serve_test_conn(conn, tx).await;
            }))
            .detach();
        }
    }))
    .detach();
    rx
}

#[test]
fn no_tokio_runtime_in_any_task_and_bytes_both_ways() {
    init_tracing();
    let probe = Arc::new(RuntimeProbe::default());
    let certs = Certs::new();
    smol::block_on(probe.wrap(async {
        let Setup {
            server, listener, ..
        } = setup(&probe, &certs).await;
        let uploads = serve_accepted(&probe, listener);
        // Several conns at once, each with both exercises.
        let mut tasks = Vec::new();
        for i in 0..4u64 {
            let server = server.clone();
            tasks.push(smol::spawn(probe.wrap(async move {
                let conn = server.dial(&id("box")).await.unwrap();
                check_echo(conn, 3 << 20, i).await.unwrap();
            })));
        }
        for t in tasks {
            with_timeout(Duration::from_secs(60), t).await;
        }
        let conn = server.dial(&id("box")).await.unwrap();
        let exercise = check_download_upload(conn, 2 << 20, 1 << 20, 7, &uploads);
        with_timeout(Duration::from_secs(60), exercise)
            .await
            .unwrap();
    }));
    probe.assert_clean(100);
}

#[test]
fn unknown_id_fails_at_once_and_the_http_proxy_reaches_the_listener() {
    init_tracing();
    let probe = Arc::new(RuntimeProbe::default());
    let certs = Certs::new();
    smol::block_on(probe.wrap(async {
        let s = setup(&probe, &certs).await;
        let started = Instant::now();
        let e = s.server.dial(&id("nobody")).await.unwrap_err();
        assert_eq!(e, DialError::NoSession);
        assert!(started.elapsed() < Duration::from_secs(1));

        // The HTTP proxy runs on smol too: an HTTP/2 Client's request on the proxy
        // route reaches a tiny HTTP/1.1 responder behind the Listener.
        let listener = s.listener;
        smol::spawn(probe.wrap(async move {
            while let Ok(mut conn) = listener.accept().await {
                smol::spawn(async move {
                    if answer_http(&mut conn, "hello from box", "Connection: close\r\n").await {
                        let _ = conn.close().await;
                    }
                })
                .detach();
            }
        }))
        .detach();
        let tcp = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
        let tls = futures_rustls::TlsConnector::from(certs.client_tls())
            .connect(h2rev2_smol::tls::server_name("localhost").unwrap(), tcp)
            .await
            .unwrap();
        use tokio_util::compat::FuturesAsyncReadCompatExt;
        let (h2, conn) = h2::client::handshake(tls.compat()).await.unwrap();
        smol::spawn(probe.wrap(async move {
            let _ = conn.await;
        }))
        .detach();
        let mut h2 = h2.ready().await.unwrap();
        let req = http::Request::get(format!("https://localhost:{}/proxy/box/x", s.port))
            .body(())
            .unwrap();
        let (resp, _) = h2.send_request(req, true).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = body.data().await {
            text.extend_from_slice(&chunk.unwrap());
        }
        let text = String::from_utf8(text).unwrap();
        assert_eq!(text, "hello from box /x");

        // A revdial request without a token is refused (401), with a reason.
        let req = http::Request::get(format!("https://localhost:{}/revdial?id=box", s.port))
            .body(())
            .unwrap();
        let (resp, _) = h2.send_request(req, false).unwrap();
        assert_eq!(resp.await.unwrap().status(), 401);
    }));
    probe.assert_clean(10);
}

#[test]
fn http1_clients_of_an_unknown_id_get_a_502_at_once() {
    let probe = Arc::new(RuntimeProbe::default());
    smol::block_on(async {
        let config = ServerConfig {
            ..ServerConfig::default()
        };
        let server = Server::with_runtime(config, probe.spawner(|t| smol::spawn(t).detach()));
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        smol::spawn(server.clone().serve_cleartext(tcp)).detach();
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /proxy/a/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).await.unwrap();
        assert!(resp.starts_with("HTTP/1.1 502"), "{resp}");
        assert!(resp.contains("no Listener is connected"), "{resp}");
        server.shutdown(Duration::from_millis(100)).await;
    });
    probe.assert_clean(2);
}

#[test]
fn drop_without_close_resets_and_close_is_a_half_close() {
    init_tracing();
    let probe = Arc::new(RuntimeProbe::default());
    let certs = Certs::new();
    smol::block_on(probe.wrap(async {
        let s = setup_with_spares(&probe, &certs, 0).await;
        let bx = id("box");
        let body = async {
            // Dropped without close: the peer reads ConnectionReset, not a clean end.
            let dial = s.server.dial(&bx);
            let (conn, accepted) = smol::future::zip(dial, s.listener.accept()).await;
            let mut conn = conn.unwrap();
            let mut accepted = accepted.unwrap();
            accepted.write_all(b"partial").await.unwrap();
            accepted.flush().await.unwrap();
            let mut buf = [0u8; 7];
            conn.read_exact(&mut buf).await.unwrap();
            drop(accepted);
            let e = conn.read(&mut buf).await.unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);

            // close() ends our side only: we still read what the peer sends after.
            let dial = s.server.dial(&bx);
            let (conn, accepted) = smol::future::zip(dial, s.listener.accept()).await;
            let (mut conn, mut accepted) = (conn.unwrap(), accepted.unwrap());
            conn.write_all(b"question").await.unwrap();
            conn.close().await.unwrap();
            let mut q = Vec::new();
            accepted.read_to_end(&mut q).await.unwrap();
            assert_eq!(q, b"question");
            accepted
                .write_all(b"answer after your close")
                .await
                .unwrap();
            accepted.close().await.unwrap();
            let mut a = Vec::new();
            conn.read_to_end(&mut a).await.unwrap();
            assert_eq!(a, b"answer after your close");
            // An unflushed small write still goes out (the flush delay) while its writer
            // waits for the answer on the same conn, as a request/response client does.
            let dial = s.server.dial(&bx);
            let (conn, accepted) = smol::future::zip(dial, s.listener.accept()).await;
            let (mut conn, mut accepted) = (conn.unwrap(), accepted.unwrap());
            let asker = async {
                accepted.write_all(b"ping").await.unwrap(); // no flush
                let mut p = [0u8; 4];
                accepted.read_exact(&mut p).await.unwrap();
                p
            };
            let answerer = async {
                let mut p = [0u8; 4];
                conn.read_exact(&mut p).await.unwrap();
                assert_eq!(&p, b"ping");
                conn.write_all(b"pong").await.unwrap();
                conn.flush().await.unwrap();
            };
            let (answer, ()) =
                with_timeout(Duration::from_secs(5), smol::future::zip(asker, answerer)).await;
            assert_eq!(&answer, b"pong");
            // A lone small write after a quiet spell goes out at once, even if its writer
            // never touches the conn again (Nagle's rule, from the core).
            smol::Timer::after(Duration::from_millis(5)).await;
            accepted.write_all(b"lone").await.unwrap();
            let mut l = [0u8; 4];
            with_timeout(Duration::from_secs(5), conn.read_exact(&mut l))
                .await
                .unwrap();
            assert_eq!(&l, b"lone");
        };
        with_timeout(Duration::from_secs(30), body).await;
    }));
    probe.assert_clean(10);
}

#[test]
fn listener_reconnects_after_the_server_restarts_on_the_same_port() {
    init_tracing();
    let probe = Arc::new(RuntimeProbe::default());
    let certs = Certs::new();
    smol::block_on(probe.wrap(async {
        let mut s = setup(&probe, &certs).await;
        s.uploads = serve_accepted(&probe, s.listener);
        let conn = s.server.dial(&id("box")).await.unwrap();
        with_timeout(Duration::from_secs(30), check_echo(conn, 1 << 20, 1))
            .await
            .unwrap();

        s.server.shutdown(Duration::ZERO).await;
        assert_eq!(s.server.connections(), 0);
        // A new server on the same port: the Listener finds it with its backoff.
        let mut config = ServerConfig::default();
        config.dialer.auth.add_token(id("box"), "tok");
        let server = Server::with_runtime(config, probe.spawner(|t| smol::spawn(t).detach()));
        // `shutdown` returned only after the old accept loop closed its socket.
        let tcp = TcpListener::bind(("127.0.0.1", s.port))
            .await
            .expect("the port is free once shutdown returned");
        smol::spawn(probe.wrap(server.clone().serve(tcp, certs.server_tls()))).detach();
        eventually(Duration::from_secs(15), async || {
            server.stats().await.sessions == 1
        })
        .await;
        let conn = server.dial(&id("box")).await.unwrap();
        with_timeout(Duration::from_secs(30), check_echo(conn, 1 << 20, 2))
            .await
            .unwrap();
        let conn = server.dial(&id("box")).await.unwrap();
        let exercise = check_download_upload(conn, 1 << 20, 1 << 20, 3, &s.uploads);
        with_timeout(Duration::from_secs(30), exercise)
            .await
            .unwrap();
    }));
    probe.assert_clean(50);
}

#[test]
fn split_halves_in_separate_tasks_both_make_progress() {
    // h2 keeps one waker for send capacity and the flush timer keeps one: a reader
    // and a writer in different tasks must not take each other's wake-ups.
    init_tracing();
    let probe = Arc::new(RuntimeProbe::default());
    let certs = Certs::new();
    smol::block_on(probe.wrap(async {
        let s = setup(&probe, &certs).await;
        let _uploads = serve_accepted(&probe, s.listener);
        for round in 0..3u64 {
            let conn = s.server.dial(&id("box")).await.unwrap();
            let n = 24 << 20;
            let sent = Arc::new(data(n, round));
            let (mut r, mut w) = smol::io::split(conn);
            let writer = smol::spawn({
                let sent = sent.clone();
                async move {
                    w.write_all(b"E").await.unwrap();
                    for chunk in sent.chunks(64 << 10) {
                        w.write_all(chunk).await.unwrap();
                    }
                    w.close().await.unwrap();
                }
            });
            let reader = smol::spawn(async move {
                let mut got = Vec::with_capacity(n);
                r.read_to_end(&mut got).await.unwrap();
                got
            });
            let got = with_timeout(Duration::from_secs(60), async {
                writer.await;
                reader.await
            })
            .await;
            assert_eq!(got.len(), n);
            assert_eq!(sha(&got), sha(&sent));
        }
    }));
    probe.assert_clean(10);
}

#[test]
fn a_reading_task_does_not_take_the_blocked_writers_wake_up() {
    // The writer blocks on flow control (the peer reads nothing); meanwhile the reader,
    // in another task, is woken by a byte and polls the send side too. When credit
    // comes, the writer must be woken, not only the reader.
    init_tracing();
    let probe = Arc::new(RuntimeProbe::default());
    let certs = Certs::new();
    smol::block_on(probe.wrap(async {
        let s = setup_with_spares(&probe, &certs, 0).await;
        let bx = id("box");
        let (conn, accepted) = smol::future::zip(s.server.dial(&bx), s.listener.accept()).await;
        let (conn, mut accepted) = (conn.unwrap(), accepted.unwrap());
        let n = 12 << 20; // more than the 8 MiB stream window plus buffers
        let (mut r, mut w) = smol::io::split(conn);
        let writer = smol::spawn(async move {
            w.write_all(&data(n, 9)).await.unwrap();
            w.close().await.unwrap();
        });
        let reader = smol::spawn(async move {
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            got
        });
        smol::Timer::after(Duration::from_millis(300)).await; // the writer is blocked
        accepted.write_all(b"x").await.unwrap();
        accepted.flush().await.unwrap();
        smol::Timer::after(Duration::from_millis(200)).await; // the reader polled
        let mut got = Vec::new();
        with_timeout(Duration::from_secs(20), accepted.read_to_end(&mut got))
            .await
            .unwrap();
        assert_eq!(got.len(), n);
        assert_eq!(sha(&got), sha(&data(n, 9)));
        accepted.close().await.unwrap();
        with_timeout(Duration::from_secs(5), writer).await;
        assert_eq!(with_timeout(Duration::from_secs(5), reader).await, b"x");
    }));
    probe.assert_clean(10);
}

#[test]
fn drop_after_close_while_the_peer_still_sends_is_a_clean_end() {
    // A server that answers, closes and drops before the client ended its side (an
    // HTTP/1.1 `Connection: close` exchange): the client reads the whole answer and a
    // clean end, not a reset.
    init_tracing();
    let probe = Arc::new(RuntimeProbe::default());
    let certs = Certs::new();
    smol::block_on(probe.wrap(async {
        let s = setup_with_spares(&probe, &certs, 0).await;
        let bx = id("box");
        for _ in 0..3 {
            let (conn, accepted) = smol::future::zip(s.server.dial(&bx), s.listener.accept()).await;
            let (mut conn, mut accepted) = (conn.unwrap(), accepted.unwrap());
            conn.write_all(b"request").await.unwrap();
            conn.flush().await.unwrap();
            let mut q = [0u8; 7];
            accepted.read_exact(&mut q).await.unwrap();
            accepted.write_all(b"complete answer").await.unwrap();
            accepted.close().await.unwrap();
            drop(accepted);
            let mut a = Vec::new();
            with_timeout(Duration::from_secs(5), conn.read_to_end(&mut a))
                .await
                .unwrap();
            assert_eq!(a, b"complete answer");
            // The other way round: the public side answers, closes and drops.
            let (conn, accepted) = smol::future::zip(s.server.dial(&bx), s.listener.accept()).await;
            let (mut conn, mut accepted) = (conn.unwrap(), accepted.unwrap());
            accepted.write_all(b"request").await.unwrap();
            accepted.flush().await.unwrap();
            conn.read_exact(&mut q).await.unwrap();
            conn.write_all(&data(300_000, 1)).await.unwrap();
            conn.close().await.unwrap();
            drop(conn);
            let mut a = Vec::new();
            with_timeout(Duration::from_secs(5), accepted.read_to_end(&mut a))
                .await
                .unwrap();
            assert_eq!(a, data(300_000, 1));
        }
    }));
    probe.assert_clean(10);
}

/// A TCP proxy whose existing connections can be frozen: bytes stop flowing but
/// nothing is closed, as when a NAT mapping or a path silently dies.
async fn freezable_proxy(
    upstream: std::net::SocketAddr,
) -> (u16, Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    let frozen_before = Arc::new(AtomicU64::new(0)); // connections numbered below are frozen
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let f = frozen_before.clone();
    smol::spawn(async move {
        let mut n = 0u64;
        while let Ok((down, _)) = tcp.accept().await {
            n += 1;
            let me = n;
            let up = TcpStream::connect(upstream).await.unwrap();
            for (mut from, mut to) in [(down.clone(), up.clone()), (up, down)] {
                let f = f.clone();
                smol::spawn(async move {
                    let mut buf = vec![0u8; 16 << 10];
                    loop {
                        let Ok(k) = from.read(&mut buf).await else {
                            return;
                        };
                        if k == 0 {
                            return;
                        }
                        if f.load(Relaxed) >= me {
                            // Frozen: hold the sockets open, pass nothing.
                            std::future::pending::<()>().await;
                        }
                        if to.write_all(&buf[..k]).await.is_err() {
                            return;
                        }
                    }
                })
                .detach();
            }
        }
    })
    .detach();
    (port, frozen_before)
}

#[test]
fn a_silently_dead_path_is_noticed_by_ping_and_the_listener_reconnects() {
    init_tracing();
    let probe = Arc::new(RuntimeProbe::default());
    let certs = Certs::new();
    smol::block_on(probe.wrap(async {
        let h2 = h2rev2_smol::H2Settings {
            keepalive_interval: Duration::from_millis(200),
            keepalive_timeout: Duration::from_millis(300),
            ..Default::default()
        };
        let mut config = ServerConfig::default();
        config.dialer.auth.add_token(id("box"), "tok");
        config.h2 = h2;
        let server = Server::with_runtime(config, probe.spawner(|t| smol::spawn(t).detach()));
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = tcp.local_addr().unwrap();
        smol::spawn(probe.wrap(server.clone().serve(tcp, certs.server_tls()))).detach();
        let (port, frozen_before) = freezable_proxy(upstream).await;

        let url = format!("https://localhost:{port}");
        let mut opts = ListenerOptions::new(&url, id("box"), certs.client_tls()).unwrap();
        opts.token = Some("tok".into());
        opts.h2 = h2;
        opts.machine.backoff_initial = Duration::from_millis(50);
        opts.machine.backoff_max = Duration::from_millis(200);
        let listener = Listener::connect_with(
            opts,
            Connector::default(),
            probe.spawner(|t| smol::spawn(t).detach()),
        )
        .unwrap();
        with_timeout(Duration::from_secs(10), listener.wait_up())
            .await
            .unwrap();

        // The path dies without a FIN or RST: only PING can tell.
        let started = Instant::now();
        frozen_before.store(u64::MAX, std::sync::atomic::Ordering::Relaxed);
        let down = with_timeout(Duration::from_secs(5), listener.wait_down()).await;
        let took = started.elapsed();
        assert!(
            matches!(&down, h2rev2_smol::Status::Down(Some(h2rev2_smol::DownReason::Lost(r)))
                if r.contains("PING")),
            "{down:?}"
        );
        assert!(took < Duration::from_secs(2), "noticed after {took:?}");
        // The server notices too, and the session ends there.
        eventually(Duration::from_secs(5), async || {
            server.stats().await.sessions == 0
        })
        .await;

        // New connections pass again: the Listener comes back on its own.
        frozen_before.store(1, std::sync::atomic::Ordering::Relaxed);
        with_timeout(Duration::from_secs(10), listener.wait_up())
            .await
            .unwrap();
        let _uploads = serve_accepted(&probe, listener);
        eventually(Duration::from_secs(5), async || {
            server.stats().await.sessions == 1
        })
        .await;
        let conn = server.dial(&id("box")).await.unwrap();
        with_timeout(Duration::from_secs(30), check_echo(conn, 1 << 20, 5))
            .await
            .unwrap();
    }));
    probe.assert_clean(10);
}

#[test]
fn a_spare_reset_by_the_listener_is_never_handed_to_a_dial() {
    init_tracing();
    let probe = Arc::new(RuntimeProbe::default());
    let certs = Certs::new();
    smol::block_on(probe.wrap(async {
        let s = setup(&probe, &certs).await; // two spares
        eventually(Duration::from_secs(5), async || {
            s.server.stats().await.spares == 2
        })
        .await;
        // The NAT side gives up on both spares: dropped unused, they are reset.
        for _ in 0..2 {
            drop(s.listener.accept().await.unwrap());
        }
        eventually(Duration::from_secs(5), async || {
            s.server.stats().await.spares == 0
        })
        .await;
        // A dial now waits for a fresh stream instead of taking a dead one.
        let bx = id("box");
        let (conn, accepted) = smol::future::zip(s.server.dial(&bx), s.listener.accept()).await;
        let (mut conn, mut accepted) = (conn.unwrap(), accepted.unwrap());
        let exchange = async {
            conn.write_all(b"alive?").await.unwrap();
            conn.close().await.unwrap();
            let mut q = Vec::new();
            accepted.read_to_end(&mut q).await.unwrap();
            assert_eq!(q, b"alive?");
        };
        with_timeout(Duration::from_secs(10), exchange).await;
    }));
    probe.assert_clean(10);
}

/// An HTTP/2 client that completes the preface but never opens a stream is closed
/// after the handshake timeout (a slowloris holds nothing for long).
#[test]
fn http2_connection_without_a_request_is_closed() {
    let probe = Arc::new(RuntimeProbe::default());
    smol::block_on(async {
        let config = ServerConfig {
            handshake_timeout: Duration::from_millis(300),
            ..ServerConfig::default()
        };
        let server = Server::with_runtime(config, probe.spawner(|t| smol::spawn(t).detach()));
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        smol::spawn(server.clone().serve_cleartext(tcp)).detach();
        let mut c = TcpStream::connect(addr).await.unwrap();
        // The client preface and an empty SETTINGS frame, then silence.
        c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let closed = with_timeout(Duration::from_secs(5), async {
            let mut buf = [0u8; 1024];
            loop {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {} // the server's SETTINGS, its ACK, then GOAWAY
                }
            }
        });
        closed.await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(250),
            "closed before the timeout: {took:?}"
        );
        server.shutdown(Duration::from_millis(100)).await;
    });
    probe.assert_clean(2);
}
