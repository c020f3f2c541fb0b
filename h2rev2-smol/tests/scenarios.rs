//! One scenario suite, run on both runtimes: each scenario is written once against the
//! shared driver's types (`h2rev2_driver::Server`, `h2rev2_driver::Listener`) and
//! instantiated for the tokio binding and the smol binding (`scenario!` at the end).
//!
//! The first scenarios are the regressions of the bugs that the two copies of the
//! drivers had drifted into (issue 10): each failed on one runtime before the drivers
//! were shared.

mod common;

use std::future::Future;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Certs, answer_http, id, init_tracing, with_timeout};
use h2rev2_driver::tls::{self, Identity, ServerTrust};
use h2rev2_driver::{ListenerOptions, ServerConfig, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a scenario needs from a runtime binding.
trait Binding {
    /// Runs `f` to completion on this runtime.
    fn block_on<F: Future<Output = ()> + Send + 'static>(f: F);
    /// A public server with `config`, serving `tls` (or cleartext) on 127.0.0.1.
    fn serve(
        config: ServerConfig,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> impl Future<Output = (h2rev2_driver::Server, SocketAddr)> + Send;
    /// A Listener connecting with `opts`.
    fn listener(opts: ListenerOptions) -> h2rev2_driver::Listener;
}

struct Tokio;

impl Binding for Tokio {
    fn block_on<F: Future<Output = ()> + Send + 'static>(f: F) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    async fn serve(
        config: ServerConfig,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> (h2rev2_driver::Server, SocketAddr) {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let server = h2rev2_tokio::Server::new(config);
        match tls {
            Some(tls) => drop(tokio::spawn(server.clone().serve(tcp, tls))),
            None => drop(tokio::spawn(server.clone().serve_cleartext(tcp))),
        }
        (server.into(), addr)
    }

    fn listener(opts: ListenerOptions) -> h2rev2_driver::Listener {
        h2rev2_tokio::Listener::connect(opts).unwrap().into()
    }
}

struct Smol;

impl Binding for Smol {
    fn block_on<F: Future<Output = ()> + Send + 'static>(f: F) {
        smol::block_on(f)
    }

    async fn serve(
        config: ServerConfig,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> (h2rev2_driver::Server, SocketAddr) {
        let tcp = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let server = h2rev2_smol::Server::new(config);
        match tls {
            Some(tls) => smol::spawn(server.clone().serve(tcp, tls)).detach(),
            None => smol::spawn(server.clone().serve_cleartext(tcp)).detach(),
        }
        (server.into(), addr)
    }

    fn listener(opts: ListenerOptions) -> h2rev2_driver::Listener {
        h2rev2_smol::Listener::connect(opts).unwrap().into()
    }
}

fn token_config(name: &str, token: &str) -> ServerConfig {
    let mut c = ServerConfig::default();
    c.dialer.auth.add_token(id(name), token);
    c
}

fn opts(addr: SocketAddr, certs: &Certs, name: &str, token: &str) -> ListenerOptions {
    let url = format!("https://localhost:{}", addr.port());
    let mut o = ListenerOptions::new(&url, id(name), certs.client_tls()).unwrap();
    o.token = Some(token.into());
    o.machine.spares = 0;
    o.machine.backoff_initial = Duration::from_millis(50);
    o.machine.backoff_max = Duration::from_millis(300);
    o
}

async fn up(listener: &h2rev2_driver::Listener) {
    with_timeout(Duration::from_secs(10), listener.wait_up())
        .await
        .unwrap();
}

/// Drift bug: the smol Listener aborted its HTTP/2 connection when its driver tore
/// down, killing conns already accepted. Closing a Listener must let an accepted conn
/// finish: bytes written after the close still arrive, both ways.
async fn accepted_conns_outlive_a_closed_listener<B: Binding>() {
    let certs = Certs::new();
    let (server, addr) = B::serve(token_config("box", "tok"), Some(certs.server_tls())).await;
    let listener = B::listener(opts(addr, &certs, "box", "tok"));
    up(&listener).await;
    let name = id("box");
    let (dialed, accepted) = futures_util::join!(server.dial(&name), listener.accept());
    let (mut dialed, mut accepted) = (dialed.unwrap(), accepted.unwrap());
    listener.close();
    with_timeout(Duration::from_secs(5), listener.wait_down()).await;
    // The session is gone; the accepted conn is not.
    let payload = vec![7u8; 256 << 10];
    let echo = async {
        let mut buf = Vec::new();
        accepted.read_to_end(&mut buf).await.unwrap();
        accepted.write_all(&buf).await.unwrap();
        accepted.shutdown().await.unwrap();
        buf.len()
    };
    let client = async {
        dialed.write_all(&payload).await.unwrap();
        dialed.shutdown().await.unwrap();
        let mut back = Vec::new();
        dialed.read_to_end(&mut back).await.unwrap();
        back
    };
    let (n, back) = with_timeout(Duration::from_secs(10), async {
        futures_util::join!(echo, client)
    })
    .await;
    assert_eq!(n, payload.len());
    assert_eq!(
        back, payload,
        "the accepted conn was cut by the Listener's close"
    );
}

/// A test CA issuing client certificates.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    cert: rustls::pki_types::CertificateDer<'static>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            issuer: rcgen::Issuer::new(params, key),
            cert: cert.der().clone(),
        }
    }

    fn client(&self, san: &str) -> Identity {
        let mut params = rcgen::CertificateParams::new(vec![san.to_string()]).unwrap();
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Identity {
            certs: vec![cert.der().clone()],
            key: rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        }
    }
}

/// Drift bug: the smol server's `serve` passed no client-certificate identities, so
/// ids bound to certificates never matched over its TLS. A Listener whose certificate
/// names its id registers without a token; one whose certificate names another id is
/// refused.
async fn ids_bound_to_client_certificates<B: Binding>() {
    let certs = Certs::new();
    let ca = Ca::new();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.clone()).unwrap();
    let mut config = ServerConfig::default();
    config.dialer.auth.bind_ids_to_certificates(true);
    let tls = tls::server_config(certs.identity.clone(), Some(roots)).unwrap();
    let (server, addr) = B::serve(config, Some(tls)).await;
    let url = format!("https://localhost:{}", addr.port());
    let trust = || ServerTrust::from_certs(&certs.identity.certs).unwrap();

    let client_tls = tls::client_config(trust(), Some(ca.client("node-1")), &[tls::ALPN_H2]);
    let mut o = ListenerOptions::new(&url, id("node-1"), client_tls.unwrap()).unwrap();
    o.machine.spares = 0;
    let good = B::listener(o);
    up(&good).await;
    assert_eq!(server.stats().await.sessions, 1);

    let client_tls = tls::client_config(trust(), Some(ca.client("node-2")), &[tls::ALPN_H2]);
    let mut o = ListenerOptions::new(&url, id("node-1-impostor"), client_tls.unwrap()).unwrap();
    o.machine.max_attempts = Some(1);
    let bad = B::listener(o);
    let status = with_timeout(Duration::from_secs(10), async {
        loop {
            match bad.status() {
                Status::Down(Some(reason)) | Status::Closed(reason) => break reason,
                _ => smol::Timer::after(Duration::from_millis(20)).await,
            };
        }
    })
    .await;
    assert!(matches!(status.refusal(), Some((401 | 403, _))), "{status}");
    assert_eq!(server.stats().await.sessions, 1);
}

/// Drift bug: the tokio server's `serve_cleartext` waited for a first byte with no
/// timeout. A client that connects and sends nothing is closed after the handshake
/// timeout, and the server keeps serving others.
async fn silent_cleartext_clients_are_cut_after_the_handshake_timeout<B: Binding>() {
    let config = ServerConfig {
        handshake_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let (_server, addr) = B::serve(config, None).await;
    let started = Instant::now();
    let closed = std::thread::spawn(move || {
        let mut silent = std::net::TcpStream::connect(addr).unwrap();
        silent
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 16];
        silent.read(&mut buf).map(|n| n == 0).unwrap_or(false)
    });
    // Meanwhile another Client is served (HTTP/1.1: no such id, at once).
    let answered = std::thread::spawn(move || {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"GET /proxy/nobody/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut resp = String::new();
        let _ = c.read_to_string(&mut resp);
        resp
    });
    let resp = answered.join().unwrap();
    assert!(resp.starts_with("HTTP/1.1 502"), "{resp}");
    assert!(closed.join().unwrap(), "the silent client was not closed");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
}

/// Drift bug: metrics existed only on tokio. Sessions, dials and reverse-conn bytes
/// are counted on both.
async fn metrics_count_sessions_dials_and_bytes<B: Binding>() {
    let certs = Certs::new();
    let (server, addr) = B::serve(token_config("box", "tok"), Some(certs.server_tls())).await;
    let listener = B::listener(opts(addr, &certs, "box", "tok"));
    up(&listener).await;
    let name = id("box");
    let (dialed, accepted) = futures_util::join!(server.dial(&name), listener.accept());
    let (mut dialed, mut accepted) = (dialed.unwrap(), accepted.unwrap());
    dialed.write_all(b"0123456789").await.unwrap();
    dialed.flush().await.unwrap();
    let mut buf = [0u8; 10];
    accepted.read_exact(&mut buf).await.unwrap();
    let text = server.metrics().render();
    for line in [
        "\nh2rev2_sessions 1\n",
        "\nh2rev2_dials_total 1\n",
        "\nh2rev2_open_conns 1\n",
        "\nh2rev2_bytes_out_total 10\n",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
}

/// `Server::sessions` on both runtimes: the live session with its peer, open conns
/// and bytes each way; gone once the Listener closes.
async fn sessions_report_peers_conns_and_bytes<B: Binding>() {
    let certs = Certs::new();
    let (server, addr) = B::serve(token_config("box", "tok"), Some(certs.server_tls())).await;
    let listener = B::listener(opts(addr, &certs, "box", "tok"));
    up(&listener).await;
    let name = id("box");
    let (dialed, accepted) = futures_util::join!(server.dial(&name), listener.accept());
    let (mut dialed, mut accepted) = (dialed.unwrap(), accepted.unwrap());
    dialed.write_all(b"0123456789").await.unwrap();
    dialed.flush().await.unwrap();
    let mut buf = [0u8; 10];
    accepted.read_exact(&mut buf).await.unwrap();
    accepted.write_all(b"abc").await.unwrap();
    accepted.flush().await.unwrap();
    let mut back = [0u8; 3];
    dialed.read_exact(&mut back).await.unwrap();
    let sessions = server.sessions().await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let s = &sessions[0];
    assert_eq!(s.id, name);
    assert!(s.peer.ip().is_loopback(), "{s:?}");
    assert_eq!(s.open_conns, 1, "{s:?}");
    assert_eq!(
        (s.bytes_to_listener, s.bytes_from_listener),
        (10, 3),
        "{s:?}"
    );
    assert!(s.since <= std::time::SystemTime::now());
    drop((dialed, accepted));
    listener.close();
    let until = Instant::now() + Duration::from_secs(10);
    while !server.sessions().await.is_empty() {
        assert!(Instant::now() < until, "the session never ended");
        server.runtime().sleep(Duration::from_millis(20)).await;
    }
    let recent = server.recent_errors();
    assert!(
        recent
            .iter()
            .any(|e| e.id == name && e.message.starts_with("session down")),
        "{recent:?}"
    );
}

/// The HTTP proxy on both runtimes: an HTTP/1.1 Client's request on
/// `/proxy/{id}/…` reaches a tiny HTTP/1.1 server behind the Listener, path stripped.
async fn http_proxy_reaches_the_internal_server<B: Binding>() {
    let (server, addr) = B::serve(token_config("web", "tok"), None).await;
    let url = format!("http://127.0.0.1:{}", addr.port());
    let mut o = ListenerOptions::cleartext(&url, id("web")).unwrap();
    o.token = Some("tok".into());
    let listener = Arc::new(B::listener(o));
    up(&listener).await;
    let serving = listener.clone();
    let rt = server.runtime().clone();
    // Each conn served in a task of its own, spawned through the driver's runtime.
    let responder = async move {
        while let Ok(mut conn) = serving.accept().await {
            rt.spawn(async move {
                if !answer_http(&mut conn, "internal", "").await {
                    return;
                }
                // Keep the conn until the proxy's pool lets go of it.
                let mut rest = Vec::new();
                let _ = conn.read_to_end(&mut rest).await;
            });
        }
    };
    let client = std::thread::spawn(move || {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"GET /proxy/web/hello?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut resp = String::new();
        let _ = c.read_to_string(&mut resp);
        resp
    });
    let resp = with_timeout(Duration::from_secs(15), async {
        futures_util::future::select(
            Box::pin(responder),
            Box::pin(async {
                while !client.is_finished() {
                    smol::Timer::after(Duration::from_millis(10)).await;
                }
            }),
        )
        .await;
        client.join().unwrap()
    })
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("internal /hello?x=1"), "{resp}");
}

/// Waits until the server holds `n` parked spares.
async fn spares(server: &h2rev2_driver::Server, n: usize) {
    for _ in 0..500 {
        if server.stats().await.spares == n {
            return;
        }
        smol::Timer::after(Duration::from_millis(10)).await;
    }
    panic!("spares stayed at {:?}", server.stats().await);
}

/// Issue 14: our Listener on the 2022 wire (no control stream) against our server,
/// which tells it by its content type: its spares are parked, each dial takes one,
/// and the Listener replaces it once used.
async fn a_2022_wire_listener_against_our_server<B: Binding>() {
    let certs = Certs::new();
    let (server, addr) = B::serve(token_config("old", "tok"), Some(certs.server_tls())).await;
    let mut o = opts(addr, &certs, "old", "tok");
    o.machine.wire = h2rev2_proto::wire::Wire::Go2022;
    o.machine.spares = 2;
    let listener = Arc::new(B::listener(o));
    up(&listener).await;
    spares(&server, 2).await;
    let serving = listener.clone();
    let rt = server.runtime().clone();
    // Echoes every conn (which dial gets which spare is the server's choice).
    rt.clone().spawn(async move {
        while let Ok(mut conn) = serving.accept().await {
            rt.spawn(async move {
                let mut buf = Vec::new();
                if conn.read_to_end(&mut buf).await.is_ok() {
                    let _ = conn.write_all(&buf).await;
                    let _ = conn.shutdown().await;
                }
            });
        }
    });
    for i in 0..5u8 {
        let mut d = with_timeout(Duration::from_secs(5), server.dial(&id("old")))
            .await
            .unwrap();
        d.write_all(&[i; 1000]).await.unwrap();
        d.shutdown().await.unwrap();
        let mut back = Vec::new();
        with_timeout(Duration::from_secs(5), d.read_to_end(&mut back))
            .await
            .unwrap();
        assert_eq!(back, vec![i; 1000]);
        // Replaced: two spares again, still one session (no control stream).
        spares(&server, 2).await;
    }
    let stats = server.stats().await;
    assert_eq!((stats.sessions, stats.pending_dials), (1, 0), "{stats:?}");
}

macro_rules! scenario {
    ($name:ident) => {
        mod $name {
            use super::*;

            #[test]
            fn tokio() {
                init_tracing();
                Tokio::block_on(super::$name::<Tokio>());
            }

            #[test]
            fn smol() {
                init_tracing();
                Smol::block_on(super::$name::<Smol>());
            }
        }
    };
}

scenario!(accepted_conns_outlive_a_closed_listener);
scenario!(ids_bound_to_client_certificates);
scenario!(silent_cleartext_clients_are_cut_after_the_handshake_timeout);
scenario!(metrics_count_sessions_dials_and_bytes);
scenario!(sessions_report_peers_conns_and_bytes);
scenario!(http_proxy_reaches_the_internal_server);
scenario!(a_2022_wire_listener_against_our_server);
