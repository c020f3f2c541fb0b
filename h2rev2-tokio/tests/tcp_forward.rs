//! TCP forwarding never hides a truncation (issue 11.7): when the reverse connection
//! breaks mid-stream, the forwarded Client's TCP connection is reset (RST), not closed
//! (FIN) as if the stream were complete; a clean end stays a clean end. Both runtimes.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;

/// A public server of `side` serving TLS and forwarding a TCP port to `app`.
async fn start(side: Side, certs: &Certs) -> (Public, SocketAddr) {
    let config = token_config(&[("app", "tok")]);
    let https = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, fwd) = (https.local_addr().unwrap(), tcp.local_addr().unwrap());
    let tls = h2rev2_tokio::tls::server_config(certs.identity.clone(), None).unwrap();
    let (server, task): (h2rev2_tokio::driver::Server, _) = match side {
        Side::Tokio => {
            let s = h2rev2_tokio::Server::new(config);
            tokio::spawn(s.clone().forward_tcp(tcp, id("app")));
            (s.clone().into(), tokio::spawn(s.serve(https, tls)))
        }
        Side::Smol => {
            let s = h2rev2_smol::Server::new(config);
            let smol_of = |l: tokio::net::TcpListener| {
                smol::net::TcpListener::try_from(l.into_std().unwrap()).unwrap()
            };
            tokio::spawn(s.clone().forward_tcp(smol_of(tcp), id("app")));
            (s.clone().into(), tokio::spawn(s.serve(smol_of(https), tls)))
        }
    };
    (Public { server, addr, task }, fwd)
}

/// A Client of the forwarded port: sends nothing, half-closes, reads to the end.
fn client_reads(fwd: SocketAddr) -> std::thread::JoinHandle<(Vec<u8>, std::io::Result<()>)> {
    std::thread::spawn(move || {
        let mut c = std::net::TcpStream::connect(fwd).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let end = loop {
            match c.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break Err(e),
            }
        };
        (got, end)
    })
}

async fn a_broken_reverse_conn_resets_the_client(side: Side) {
    init_tracing();
    let certs = Certs::new();
    let (public, fwd) = start(side, &certs).await;
    let mut opts = listener_opts(&public, &certs, "app", Some("tok"));
    opts.machine.spares = 0;
    let listener = bind_listener(opts);
    tokio::time::timeout(Duration::from_secs(10), listener.wait_up())
        .await
        .unwrap()
        .unwrap();

    // The NAT side dies mid-stream: 1,000 bytes, then the conn is dropped unfinished.
    let client = client_reads(fwd);
    let mut conn = listener.accept().await.unwrap();
    conn.write_all(&[7u8; 1000]).await.unwrap();
    conn.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(conn);
    let (got, end) = tokio::task::spawn_blocking(move || client.join().unwrap())
        .await
        .unwrap();
    assert_eq!(got.len(), 1000, "the bytes sent before the break arrive");
    let e = end.expect_err("a truncated stream must not end like a complete one");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");

    // A clean end (shutdown) stays a clean end.
    let client = client_reads(fwd);
    let mut conn = listener.accept().await.unwrap();
    conn.write_all(&[8u8; 1000]).await.unwrap();
    conn.shutdown().await.unwrap();
    let (got, end) = tokio::task::spawn_blocking(move || client.join().unwrap())
        .await
        .unwrap();
    assert_eq!(got.len(), 1000);
    end.expect("a complete stream ends cleanly");
    drop(listener);
}
both!(a_broken_reverse_conn_resets_the_client);

/// The Client's side of the same: a forwarded Client that resets its connection makes
/// the NAT side's conn fail (the stream is reset), not end cleanly.
async fn a_vanishing_client_resets_the_stream(side: Side) {
    let certs = Certs::new();
    let (public, fwd) = start(side, &certs).await;
    let mut opts = listener_opts(&public, &certs, "app", Some("tok"));
    opts.machine.spares = 0;
    let listener = bind_listener(opts);
    tokio::time::timeout(Duration::from_secs(10), listener.wait_up())
        .await
        .unwrap()
        .unwrap();
    let client = std::thread::spawn(move || {
        let mut c = std::net::TcpStream::connect(fwd).unwrap();
        c.write_all(b"partial request").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        // Vanish: an abortive close (RST).
        socket2::SockRef::from(&c)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(c);
    });
    let mut conn = listener.accept().await.unwrap();
    let mut got = Vec::new();
    let end = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut conn, &mut got),
    )
    .await
    .expect("the NAT side still waiting 10 s after the Client vanished");
    client.join().unwrap();
    assert_eq!(got, b"partial request");
    assert!(
        end.is_err(),
        "a vanished Client must reset the stream, got a clean end"
    );
}
both!(a_vanishing_client_resets_the_stream);
