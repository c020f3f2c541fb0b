//! Cross-runtime: a smol Listener against the tokio public server, and a tokio
//! Listener against the smol public server. Each side runs on its own threads: the
//! tokio side in a tokio runtime, the smol side under `smol::block_on` and smol's
//! executor, where every poll is checked to find no tokio runtime. Bytes pass both
//! ways with checksums and half-close, and the Listener survives a restart of the
//! public server on the same port.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio_util::compat::TokioAsyncReadCompatExt;

const ID: &str = "edge";
const TOKEN: &str = "t0k3n";

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// h2rev2-tokio's public server on `port` (0: any), inside `rt`.
fn start_tokio_server(
    rt: &tokio::runtime::Runtime,
    certs: &Certs,
    port: u16,
) -> (h2rev2_tokio::Server, u16) {
    rt.block_on(async {
        let mut config = h2rev2_tokio::ServerConfig::default();
        config.dialer.auth.add_token(id(ID), TOKEN);
        let server = h2rev2_tokio::Server::new(config);
        let tls = h2rev2_tokio::tls::server_config(certs.tokio_identity(), None).unwrap();
        let tcp = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = tcp.local_addr().unwrap().port();
        tokio::spawn(server.clone().serve(tcp, tls));
        (server, port)
    })
}

async fn tokio_wait_session(server: &h2rev2_tokio::Server) {
    for _ in 0..1500 {
        if server.stats().await.sessions >= 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no session on the tokio server after 15 s");
}

#[test]
fn smol_listener_against_tokio_server_survives_its_restart() {
    init_tracing();
    let certs = Certs::new();
    let probe = Arc::new(RuntimeProbe::default());
    let rt = tokio_runtime();
    let (server, port) = start_tokio_server(&rt, &certs, 0);

    // The smol side: its own thread, smol::block_on, tasks on smol's executor.
    let (uploads_tx, uploads) = smol::channel::unbounded();
    let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
    let tls = certs.client_tls();
    let p = probe.clone();
    let smol_side = std::thread::spawn(move || {
        smol::block_on(p.wrap(async {
            assert!(tokio::runtime::Handle::try_current().is_err());
            let url = format!("https://localhost:{port}");
            let mut opts = h2rev2_smol::ListenerOptions::new(&url, id(ID), tls).unwrap();
            opts.token = Some(TOKEN.into());
            opts.machine.backoff_initial = Duration::from_millis(50);
            opts.machine.backoff_max = Duration::from_millis(500);
            let spawner = p.spawner(|t| smol::spawn(t).detach());
            let listener = h2rev2_smol::Listener::connect_with(
                opts,
                h2rev2_smol::Connector::default(),
                spawner,
            )
            .unwrap();
            let serve = async {
                while let Ok(conn) = listener.accept().await {
                    let tx = uploads_tx.clone();
                    smol::spawn(p.wrap(async move {
                        let _ = serve_test_conn(conn, tx).await;
                    }))
                    .detach();
                }
            };
            smol::future::or(serve, async {
                let _ = stop_rx.recv().await;
            })
            .await;
            listener.status()
        }))
    });

    let exercise = |server: h2rev2_tokio::Server, seed: u64| {
        let uploads = uploads.clone();
        async move {
            tokio_wait_session(&server).await;
            let conn = server.dial(&id(ID)).await.unwrap();
            check_echo(conn.compat(), 4 << 20, seed).await.unwrap();
            let conn = server.dial(&id(ID)).await.unwrap();
            check_download_upload(conn.compat(), 2 << 20, 3 << 20, seed + 1, &uploads)
                .await
                .unwrap();
        }
    };
    rt.block_on(with_timeout(
        Duration::from_secs(60),
        exercise(server.clone(), 10),
    ));

    // Restart the public side: its runtime goes away with every socket, and a new
    // server binds the same port.
    drop(server);
    rt.shutdown_timeout(Duration::from_secs(1));
    let rt = tokio_runtime();
    let (server, same) = start_tokio_server(&rt, &certs, port);
    assert_eq!(same, port);
    rt.block_on(with_timeout(
        Duration::from_secs(60),
        exercise(server.clone(), 20),
    ));

    stop_tx.send_blocking(()).unwrap();
    let status = smol_side.join().unwrap();
    assert_eq!(status, h2rev2_smol::Status::Up);
    probe.assert_clean(100);
}

#[test]
fn tokio_listener_against_smol_server_survives_its_restart() {
    init_tracing();
    let certs = Certs::new();
    let probe = Arc::new(RuntimeProbe::default());

    let start_smol_server = |port: u16| {
        let mut config = h2rev2_smol::ServerConfig::default();
        config.dialer.auth.add_token(id(ID), TOKEN);
        let spawner = probe.spawner(|t| smol::spawn(t).detach());
        let server = h2rev2_smol::Server::with_runtime(config, spawner);
        // On a restart `shutdown` returned only after the old accept loop closed its
        // socket: the port is free.
        let tcp = smol::block_on(smol::net::TcpListener::bind(("127.0.0.1", port)))
            .expect("the port is free once shutdown returned");
        let port = tcp.local_addr().unwrap().port();
        smol::spawn(probe.wrap(server.clone().serve(tcp, certs.server_tls()))).detach();
        (server, port)
    };
    let (server, port) = start_smol_server(0);

    // The tokio side: a Listener in its own runtime, serving the same exercises.
    let rt = tokio_runtime();
    let (uploads_tx, uploads) = smol::channel::unbounded();
    let url = format!("https://localhost:{port}");
    let mut opts = h2rev2_tokio::ListenerOptions::new(&url, id(ID), certs.client_tls()).unwrap();
    opts.token = Some(TOKEN.into());
    opts.machine.backoff_initial = Duration::from_millis(50);
    opts.machine.backoff_max = Duration::from_millis(500);
    rt.spawn(async move {
        let listener = h2rev2_tokio::Listener::connect(opts).unwrap();
        while let Ok(conn) = listener.accept().await {
            let tx = uploads_tx.clone();
            tokio::spawn(async move {
                let _ = serve_test_conn(conn.compat(), tx).await;
            });
        }
    });

    // The smol side dials from this thread under smol::block_on: no runtime here.
    let exercise = |server: h2rev2_smol::Server, seed: u64| {
        let uploads = uploads.clone();
        let probe = probe.clone();
        let run = probe.wrap(async move {
            assert!(tokio::runtime::Handle::try_current().is_err());
            eventually(Duration::from_secs(15), async || {
                server.stats().await.sessions >= 1
            })
            .await;
            let conn = server.dial(&id(ID)).await.unwrap();
            check_echo(conn, 4 << 20, seed).await.unwrap();
            let conn = server.dial(&id(ID)).await.unwrap();
            check_download_upload(conn, 2 << 20, 3 << 20, seed + 1, &uploads)
                .await
                .unwrap();
        });
        smol::block_on(with_timeout(Duration::from_secs(60), run))
    };
    exercise(server.clone(), 30);

    // Restart the public side on the same port.
    smol::block_on(server.shutdown(Duration::ZERO));
    assert_eq!(server.connections(), 0);
    drop(server);
    let (server, same) = start_smol_server(port);
    assert_eq!(same, port);
    exercise(server.clone(), 40);

    rt.shutdown_timeout(Duration::from_secs(1));
    probe.assert_clean(100);
}
