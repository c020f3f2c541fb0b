//! The smol Listener on async-std's executor, with async-std's types: its sockets (a
//! custom `Connector`), its `task::spawn` (a custom `Spawner`), and an async-std TCP
//! service exposed through the tunnel with `h2rev2_smol::relay`. async-std is
//! discontinued; it is only a dev-dependency here, to prove that nothing in the
//! adapter is tied to smol's executor or reactor.

mod common;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use async_std::prelude::*;
use common::*;
use h2rev2_smol::{Connector, Listener, ListenerOptions, Server, ServerConfig, Spawner};

#[test]
fn smol_listener_serves_on_async_std() {
    init_tracing();
    let certs = Certs::new();

    // The public side: the smol server, on smol's executor threads.
    let mut config = ServerConfig::default();
    config.dialer.auth.add_token(id("nas"), "tok");
    let server = Server::new(config);
    let tcp = smol::block_on(smol::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = tcp.local_addr().unwrap().port();
    smol::spawn(server.clone().serve(tcp, certs.server_tls())).detach();

    // Every poll of the Listener's tasks must be inside an async-std task, and none
    // may see a tokio runtime.
    let polls = Arc::new(AtomicUsize::new(0));
    let outside = Arc::new(AtomicUsize::new(0));
    let probe = Arc::new(RuntimeProbe::default());
    let (pc, oc, pr) = (polls.clone(), outside.clone(), probe.clone());
    let spawner = Spawner::new(move |task| {
        let (pc, oc) = (pc.clone(), oc.clone());
        let mut task = Box::pin(pr.wrap(task));
        async_std::task::spawn(std::future::poll_fn(move |cx| {
            pc.fetch_add(1, Relaxed);
            if async_std::task::try_current().is_none() {
                oc.fetch_add(1, Relaxed);
            }
            task.as_mut().poll(cx)
        }));
    });

    let tls = certs.client_tls();
    async_std::task::block_on(async {
        // The service behind the NAT: an async-std TCP echo server.
        let echo = async_std::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap();
        let echo_addr = echo.local_addr().unwrap();
        async_std::task::spawn(async move {
            let mut incoming = echo.incoming();
            while let Some(Ok(s)) = incoming.next().await {
                async_std::task::spawn(async move {
                    let _ = async_std::io::copy(&mut &s, &mut &s).await;
                    let _ = s.shutdown(std::net::Shutdown::Write);
                });
            }
        });

        let url = format!("https://localhost:{port}");
        let mut opts = ListenerOptions::new(&url, id("nas"), tls).unwrap();
        opts.token = Some("tok".into());
        let connector = Connector::new(|addr: String| async move {
            let tcp = async_std::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            Ok(tcp)
        });
        let listener = Listener::connect_with(opts, connector, spawner).unwrap();
        with_timeout(Duration::from_secs(10), listener.wait_up())
            .await
            .unwrap();
        async_std::task::spawn(async move {
            while let Ok(conn) = listener.accept().await {
                async_std::task::spawn(async move {
                    let tcp = async_std::net::TcpStream::connect(echo_addr).await?;
                    h2rev2_smol::relay(conn, HalfClose(tcp)).await
                });
            }
        });

        // Through the tunnel to the async-std echo service, and back, with half-close.
        for seed in 0..3 {
            let conn = server.dial(&id("nas")).await.unwrap();
            check_plain_echo(conn, (1 << 20) + seed as usize, seed).await;
        }
    });
    assert!(polls.load(Relaxed) > 10, "the Listener's tasks ran");
    assert_eq!(
        outside.load(Relaxed),
        0,
        "every poll was on async-std's executor"
    );
    probe.assert_clean(10);
}

/// async-std's `TcpStream` with a `close` that half-closes (FIN), as
/// `h2rev2_smol::relay` expects: async-std's own `close` only flushes.
struct HalfClose(async_std::net::TcpStream);

impl futures_io::AsyncRead for HalfClose {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl futures_io::AsyncWrite for HalfClose {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(Pin::new(&mut self.0).poll_flush(cx))?;
        Poll::Ready(self.0.shutdown(std::net::Shutdown::Write))
    }
}

/// Writes `n` bytes while reading the echo, half-closes, checks the echo (with
/// async-std's I/O extension traits).
async fn check_plain_echo(conn: h2rev2_smol::RevConn, n: usize, seed: u64) {
    let sent = data(n, seed);
    let (mut r, mut w) = smol::io::split(conn);
    let writer = async {
        w.write_all(&sent).await.unwrap();
        // Half-close (futures-io `poll_close`; async-std's `WriteExt` has no `close`).
        std::future::poll_fn(|cx| {
            futures_io::AsyncWrite::poll_close(std::pin::Pin::new(&mut w), cx)
        })
        .await
        .unwrap();
    };
    let reader = async {
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        got
    };
    let ((), got) = with_timeout(Duration::from_secs(30), smol::future::zip(writer, reader)).await;
    assert_eq!(got.len(), n);
    assert_eq!(sha(&got), sha(&sent));
}
