//! Reverse connections as byte streams: `Server::dial` on the public side,
//! `Listener::accept` on the NAT side, and PROTOCOL.md section 5 between them.

mod common;

use std::time::Duration;

use common::*;
use h2rev2_tokio::{Listener, RevConn, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

/// A public server and a Listener `app` without spares, so that each dial pairs with
/// the next accepted conn.
async fn pair_setup(go_wire: bool) -> (Certs, Public, Listener) {
    let certs = Certs::new();
    let config = if go_wire {
        let mut c = ServerConfig::default();
        c.dialer.auth.allow_anonymous();
        c
    } else {
        token_config(&[("app", "tok")])
    };
    let public = start_public(&certs, config).await;
    let mut opts = listener_opts(&public, &certs, "app", (!go_wire).then_some("tok"));
    opts.machine.spares = 0;
    if go_wire {
        opts.machine.mark_roles = false;
    }
    let listener = bind_listener(opts);
    timeout(Duration::from_secs(10), listener.wait_up())
        .await
        .unwrap()
        .unwrap();
    (certs, public, listener)
}

/// One dial and the conn it became on the NAT side.
async fn pair(server: &h2rev2_driver::Server, listener: &mut Listener) -> (RevConn, RevConn) {
    let app = id("app");
    let (a, b) = timeout(Duration::from_secs(10), async {
        tokio::join!(server.dial(&app), listener.accept())
    })
    .await
    .expect("dial and accept within 10 s");
    (a.unwrap(), b.unwrap())
}

async fn read_to_end(c: &mut RevConn) -> Vec<u8> {
    let mut v = Vec::new();
    timeout(Duration::from_secs(10), c.read_to_end(&mut v))
        .await
        .expect("EOF within 10 s")
        .expect("clean EOF");
    v
}

async fn half_close_both_ways(server: &h2rev2_driver::Server, listener: &mut Listener) {
    // The public side shuts down first.
    let (mut a, mut b) = pair(server, listener).await;
    a.write_all(b"request").await.unwrap();
    a.shutdown().await.unwrap();
    assert!(a.write_all(b"x").await.is_err(), "write after shutdown");
    assert_eq!(read_to_end(&mut b).await, b"request");
    // b still writes after seeing EOF; a still reads after its shutdown.
    b.write_all(b"response part 1, ").await.unwrap();
    b.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    b.write_all(b"part 2").await.unwrap();
    b.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut a).await, b"response part 1, part 2");
    // Reading past EOF stays EOF.
    let mut buf = [0u8; 8];
    assert_eq!(a.read(&mut buf).await.unwrap(), 0);
    drop((a, b));

    // The NAT side shuts down first, with a big payload.
    let (mut a, mut b) = pair(server, listener).await;
    let payload = pattern(3 << 20);
    let writer = {
        let payload = payload.clone();
        tokio::spawn(async move {
            b.write_all(&payload).await.unwrap();
            b.shutdown().await.unwrap();
            // Keep reading: the other direction is open.
            let got = read_to_end(&mut b).await;
            (b, got)
        })
    };
    let got = read_to_end(&mut a).await;
    assert!(got == payload, "payload differs ({} bytes)", got.len());
    a.write_all(b"late answer").await.unwrap();
    a.shutdown().await.unwrap();
    let (_b, late) = timeout(Duration::from_secs(10), writer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(late, b"late answer");

    // Dropping without shutdown aborts: the peer reads an error, not a clean EOF.
    let (mut a, b) = pair(server, listener).await;
    drop(b);
    let mut v = Vec::new();
    let r = timeout(Duration::from_secs(5), a.read_to_end(&mut v))
        .await
        .unwrap();
    assert!(r.is_err(), "a dropped conn must not read as a clean EOF");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close() {
    init_tracing();
    let (_certs, public, mut listener) = pair_setup(false).await;
    half_close_both_ways(&public.server, &mut listener).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_go_wire_behaviour() {
    init_tracing();
    let (_certs, public, mut listener) = pair_setup(true).await;
    half_close_both_ways(&public.server, &mut listener).await;
}

/// 10,000 one-byte writes, with a flush after each or not, while the reader pauses
/// 300 ms: the connection survives (no GOAWAY ENHANCE_YOUR_CALM), other streams keep
/// working, and every byte arrives in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_one_byte_writes() {
    init_tracing();
    const N: usize = 10_000;
    let (_certs, public, mut listener) = pair_setup(false).await;
    let server = public.server.clone();
    for flush_each in [true, false] {
        for public_writes in [true, false] {
            let (a, b) = pair(&server, &mut listener).await;
            let (mut w, mut r) = if public_writes { (a, b) } else { (b, a) };
            let writer = tokio::spawn(async move {
                for i in 0..N {
                    w.write_all(&[(i % 251) as u8]).await.unwrap();
                    if flush_each {
                        w.flush().await.unwrap();
                    }
                }
                w.shutdown().await.unwrap();
                w
            });
            // The reader pauses while the burst arrives.
            tokio::time::sleep(Duration::from_millis(300)).await;

            // Meanwhile another stream on the same connection works.
            let (mut c, mut d) = pair(&server, &mut listener).await;
            c.write_all(b"ping").await.unwrap();
            c.flush().await.unwrap();
            let mut buf = [0u8; 4];
            timeout(Duration::from_secs(5), d.read_exact(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf, b"ping");

            let got = read_to_end(&mut r).await;
            assert_eq!(got.len(), N, "flush_each={flush_each}");
            assert!(
                got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8),
                "bytes out of order (flush_each={flush_each})"
            );
            let _w = timeout(Duration::from_secs(10), writer)
                .await
                .unwrap()
                .unwrap();
        }
    }
    // The Listener's connection survived all of it.
    assert_eq!(listener.status(), h2rev2_tokio::Status::Up);
    assert_eq!(public.server.stats().await.sessions, 1);
}

/// A write that is neither flushed nor followed by more writes still goes out after
/// the coalescing delay while the writer waits on a read (hyper-style usage).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unflushed_write_goes_out_while_reading() {
    init_tracing();
    let (_certs, public, mut listener) = pair_setup(false).await;
    let (mut a, mut b) = pair(&public.server, &mut listener).await;
    a.write_all(b"question").await.unwrap(); // no flush
    let mut buf = [0u8; 8];
    let echo = tokio::spawn(async move {
        let mut q = [0u8; 8];
        b.read_exact(&mut q).await.unwrap();
        b.write_all(b"answer!!").await.unwrap(); // no flush either
        let mut rest = Vec::new();
        let _ = b.read_to_end(&mut rest).await;
        q
    });
    timeout(Duration::from_secs(5), a.read_exact(&mut buf))
        .await
        .expect("unflushed bytes were sent")
        .unwrap();
    assert_eq!(&buf, b"answer!!");
    a.shutdown().await.unwrap();
    assert_eq!(&echo.await.unwrap(), b"question");
}

/// A slow reader slows its writer only: a 32 MiB write to a reader that reads a little
/// at a time completes, and a second stream is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_backpressure() {
    init_tracing();
    let (_certs, public, mut listener) = pair_setup(false).await;
    let (mut a, mut b) = pair(&public.server, &mut listener).await;
    const N: usize = 32 << 20;
    let writer = tokio::spawn(async move {
        let chunk = pattern(1 << 20);
        for _ in 0..N >> 20 {
            a.write_all(&chunk).await.unwrap();
        }
        a.shutdown().await.unwrap();
        a
    });
    // Read slowly at first: the writer must block, not buffer everything.
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0usize;
    for _ in 0..10 {
        let n = b.read(&mut buf).await.unwrap();
        total += n;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !writer.is_finished(),
        "32 MiB were buffered for a slow reader"
    );
    let (mut c, mut d) = pair(&public.server, &mut listener).await;
    d.write_all(b"other").await.unwrap();
    d.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut c).await, b"other");
    loop {
        let n = timeout(Duration::from_secs(10), b.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    assert_eq!(total, N);
    timeout(Duration::from_secs(10), writer)
        .await
        .unwrap()
        .unwrap();
}

/// The NAT application drops its first conns (the spares, never used): the public side
/// sees the resets and never hands those dead streams to a dial.
async fn spares_reset_by_the_listener_are_not_handed_out(side: Side) {
    init_tracing();
    let certs = Certs::new();
    let public = start_public_with(side, &certs, token_config(&[("app", "tok")]), None).await;
    let mut opts = listener_opts(&public, &certs, "app", Some("tok"));
    opts.machine.spares = 2;
    let listener = bind_listener(opts);
    timeout(Duration::from_secs(10), listener.wait_up())
        .await
        .unwrap()
        .unwrap();
    // Drop the two spares as they arrive.
    for _ in 0..2 {
        let spare = timeout(Duration::from_secs(5), listener.accept())
            .await
            .unwrap()
            .unwrap();
        drop(spare);
    }
    // Wait until the public side forgot them.
    for _ in 0..500 {
        if public.server.stats().await.spares == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        public.server.stats().await.spares,
        0,
        "reset spares still parked"
    );
    tokio::spawn(async move {
        while let Ok(mut c) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n) = c.read(&mut buf).await {
                    if n == 0 || c.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    let _ = c.flush().await;
                }
                let _ = c.shutdown().await;
            });
        }
    });
    for i in 0..5 {
        let mut c = timeout(Duration::from_secs(5), public.server.dial(&id("app")))
            .await
            .unwrap()
            .unwrap();
        let r = timeout(Duration::from_secs(5), async {
            c.write_all(b"echo").await?;
            c.flush().await?;
            let mut buf = [0u8; 4];
            c.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        })
        .await
        .unwrap();
        assert_eq!(
            &r.unwrap_or_else(|e| panic!("dial {i}: dead conn: {e}")),
            b"echo"
        );
    }
}
both!(spares_reset_by_the_listener_are_not_handed_out);

/// A small message written without a flush, after which the writer waits on something
/// else entirely, still reaches the peer (a write after a quiet spell is sent at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_unflushed_write_is_sent() {
    init_tracing();
    let (_certs, public, mut listener) = pair_setup(false).await;
    let (mut a, mut b) = pair(&public.server, &mut listener).await;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        a.write_all(b"hello").await.unwrap(); // no flush
        let _ = done_rx.await; // waits elsewhere, never polls `a`
        a
    });
    let mut buf = [0u8; 5];
    timeout(Duration::from_secs(2), b.read_exact(&mut buf))
        .await
        .expect("an isolated unflushed write was left in the buffer")
        .unwrap();
    assert_eq!(&buf, b"hello");
    let _ = done_tx.send(());
    drop(writer.await.unwrap());
}

/// A pooled conn that received more than the tunnel's smallest stream window (all of
/// it read) keeps flowing after many conns open and the window shrinks below what it
/// received: h2 does not look for the window update it then owes by itself (it would
/// stall for good), so the driver makes it look again after each decrease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conn_keeps_flowing_after_the_stream_window_shrinks_below_what_it_received() {
    init_tracing();
    let certs = Certs::new();
    let mut config = token_config(&[("app", "tok")]);
    // One conn: a 256 KiB window, whose update h2 owes once what was read reaches
    // half of what is left (a third of it, 87,380 bytes); four conns: 64 KiB.
    config.tunnel_stream_budget = 4 * 65_535;
    let public = start_public(&certs, config).await;
    let mut opts = listener_opts(&public, &certs, "app", Some("tok"));
    opts.machine.spares = 0;
    let mut listener = bind_listener(opts);
    timeout(Duration::from_secs(10), listener.wait_up())
        .await
        .unwrap()
        .unwrap();

    let (mut a, mut b) = pair(&public.server, &mut listener).await;
    // Let the one-conn window settle, then 80 kB from the NAT side, all read: more
    // than 64 KiB, too little for a window update.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent = pattern(80_000);
    b.write_all(&sent).await.unwrap();
    b.flush().await.unwrap();
    let mut got = vec![0u8; sent.len()];
    timeout(Duration::from_secs(10), a.read_exact(&mut got))
        .await
        .expect("80 kB within 10 s")
        .unwrap();
    assert_eq!(got, sent);

    // Three more conns: the window drops to 64 KiB, below the 80 kB `a` received.
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(pair(&public.server, &mut listener).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // `a` still carries the next answer.
    let mut buf = [0u8; 11];
    timeout(Duration::from_secs(5), async {
        b.write_all(b"next answer").await.unwrap();
        b.flush().await.unwrap();
        a.read_exact(&mut buf).await.unwrap();
    })
    .await
    .expect("the conn stalled after the stream window shrank");
    assert_eq!(&buf, b"next answer");
    // And the other way.
    a.write_all(b"request").await.unwrap();
    a.flush().await.unwrap();
    let mut buf = [0u8; 7];
    timeout(Duration::from_secs(5), b.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"request");
    drop(others);
}
