//! Measures what forwarding h2's vectored writes to the transport buys (the
//! `vectored_writes` option): one stream, 256 MiB from the public side to the
//! Listener on 127.0.0.1, over TLS and cleartext, each setting run alternately, wall
//! time and process CPU time (the machine may be shared: CPU time is the steadier). Ignored by default
//! (a measurement, not a check); run it with
//! `cargo test --release -p h2rev2-smol --test vectored_writes -- --ignored --nocapture`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use h2rev2_smol::{BoxTransport, Connector, Listener, ListenerOptions, Server, ServerConfig};
use smol::io::{AsyncReadExt, AsyncWriteExt};

/// CPU time of this process so far (user + system), from /proc (Linux), in ticks of
/// 10 ms; 0 elsewhere.
fn cpu_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted after the command name.
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

/// Wall time and CPU ticks of one transfer. TLS is set up here (futures-rustls on
/// both ends) and the adapter sees a plain transport, so that `vectored_writes`
/// applies over TLS too: the adapter itself never forwards them over its own TLS.
async fn run(certs: &Certs, vectored: bool, total: usize, tls: bool) -> (Duration, u64) {
    let mut config = ServerConfig::default();
    config.dialer.auth.add_token(id("bench"), "tok");
    config.vectored_writes = vectored;
    let server = Server::new(config);
    let tcp = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let acceptor = futures_rustls::TlsAcceptor::from(certs.server_tls());
    let s = server.clone();
    smol::spawn(async move {
        while let Ok((tcp, peer)) = tcp.accept().await {
            tcp.set_nodelay(true).unwrap();
            let (s, acceptor) = (s.clone(), acceptor.clone());
            smol::spawn(async move {
                if tls {
                    let t = acceptor.accept(tcp).await.unwrap();
                    s.serve_connection(t, peer, true, Vec::new()).await;
                } else {
                    s.serve_connection(tcp, peer, true, Vec::new()).await;
                }
            })
            .detach();
        }
    })
    .detach();
    let mut opts =
        ListenerOptions::cleartext(&format!("http://localhost:{port}"), id("bench")).unwrap();
    let client_tls = certs.client_tls();
    opts.connector = Connector::new(move |addr: String| {
        let client_tls = client_tls.clone();
        async move {
            let tcp = smol::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            Ok(if tls {
                let name = h2rev2_smol::tls::server_name("localhost").unwrap();
                let t = futures_rustls::TlsConnector::from(client_tls)
                    .connect(name, tcp)
                    .await?;
                Box::new(t) as BoxTransport
            } else {
                Box::new(tcp) as BoxTransport
            })
        }
    });
    opts.token = Some("tok".into());
    opts.vectored_writes = vectored;
    let listener = Listener::bind(opts).unwrap();
    listener.wait_up().await.unwrap();
    let sink = smol::spawn(async move {
        let mut conn = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 256 << 10];
        let mut n = 0;
        loop {
            let k = conn.read(&mut buf).await.unwrap();
            if k == 0 {
                break;
            }
            n += k;
        }
        n
    });
    let mut conn = server.dial(&id("bench")).await.unwrap();
    let chunk = data(1 << 20, 1);
    let started = Instant::now();
    let cpu = cpu_ticks();
    for _ in 0..total >> 20 {
        conn.write_all(&chunk).await.unwrap();
    }
    conn.close().await.unwrap();
    assert_eq!(sink.await, total);
    let took = (started.elapsed(), cpu_ticks() - cpu);
    server.shutdown(Duration::ZERO).await;
    took
}

#[test]
#[ignore = "a measurement; run in release with --ignored --nocapture"]
fn vectored_writes_throughput() {
    let certs = Certs::new();
    let total = 256 << 20;
    for tls in [true, false] {
        let mut on = Vec::new();
        let mut off = Vec::new();
        smol::block_on(async {
            for i in 0..6 {
                // Alternate which goes first, so drift in the machine's load is shared.
                if i % 2 == 0 {
                    on.push(run(&certs, true, total, tls).await);
                    off.push(run(&certs, false, total, tls).await);
                } else {
                    off.push(run(&certs, false, total, tls).await);
                    on.push(run(&certs, true, total, tls).await);
                }
            }
        });
        let mbps = |d: &Duration| total as f64 / d.as_secs_f64() / 1e6;
        let median = |v: &[(Duration, u64)]| {
            let mut w: Vec<Duration> = v.iter().map(|x| x.0).collect();
            w.sort();
            let mut c: Vec<u64> = v.iter().map(|x| x.1).collect();
            c.sort();
            (w[w.len() / 2], c[c.len() / 2])
        };
        let ((w_on, c_on), (w_off, c_off)) = (median(&on), median(&off));
        println!(
            "{}: vectored {:.0} MB/s, {} ms CPU (runs {:?}); not vectored {:.0} MB/s, {} ms CPU (runs {:?})",
            if tls { "TLS" } else { "cleartext" },
            mbps(&w_on),
            c_on * 10,
            on.iter()
                .map(|d| (mbps(&d.0) as u64, d.1 * 10))
                .collect::<Vec<_>>(),
            mbps(&w_off),
            c_off * 10,
            off.iter()
                .map(|d| (mbps(&d.0) as u64, d.1 * 10))
                .collect::<Vec<_>>(),
        );
    }
}
