//! An embedded tool that exposes a tiny service through the tunnel, on smol, with no
//! tokio runtime anywhere: a status page answered over HTTP/1.1 on every reverse
//! connection, so the tokio public server's `/proxy/{id}/` route (or anything that
//! dials the id) reaches it.
//!
//! Self-contained demo (a public server, this tool and a client in one process, on
//! 127.0.0.1):
//!
//! ```sh
//! cargo run -p h2rev2-smol --example embedded_service
//! ```
//!
//! Against a real public server (the `h2rev2` binary, see the README):
//!
//! ```sh
//! # public machine
//! printf 'sensor-7 s3cret\n' > tokens.txt
//! h2rev2 server --listen 0.0.0.0:9090 --self-signed --tokens tokens.txt
//! # this machine (behind the NAT)
//! H2REV2_TOKEN=s3cret cargo run -p h2rev2-smol --example embedded_service -- \
//!     https://public.example:9090 sensor-7 --ca h2rev2-server.crt
//! # anyone
//! curl --cacert h2rev2-server.crt https://public.example:9090/proxy/sensor-7/
//! ```

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use h2rev2_smol::proto::wire::DialerId;
use h2rev2_smol::tls::{self, ServerTrust};
use h2rev2_smol::{Listener, ListenerOptions, Server, ServerConfig};
use smol::io::{AsyncReadExt, AsyncWriteExt};

#[path = "shared/status.rs"]
mod status;

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "usage: embedded_service [URL ID [--ca FILE | --insecure]]\n\
             token from $H2REV2_TOKEN; without URL, a self-contained demo on 127.0.0.1"
        );
        return Ok(());
    }
    smol::block_on(async {
        if args.is_empty() {
            demo().await
        } else {
            expose(&args).await
        }
    })
}

/// Registers with a real public server and serves until killed.
async fn expose(args: &[String]) -> Result<()> {
    let (url, id) = match args {
        [url, id, ..] => (url.as_str(), DialerId::new(id.as_str())?),
        _ => return Err("usage: embedded_service URL ID [--ca FILE | --insecure]".into()),
    };
    let trust = match args.get(2).map(String::as_str) {
        Some("--ca") => {
            let path = args.get(3).ok_or("--ca needs a file")?;
            ServerTrust::from_pem_file(path.as_ref())?
        }
        Some("--insecure") => {
            eprintln!("warning: --insecure: the server's certificate is not checked");
            ServerTrust::Insecure
        }
        Some(other) => return Err(format!("unknown option {other}").into()),
        None => return Err("give --ca FILE (the server's certificate) or --insecure".into()),
    };
    let mut opts = ListenerOptions::new(url, id.clone(), tls::client_config(trust, None)?)?;
    opts.token = std::env::var("H2REV2_TOKEN").ok();
    let listener = Listener::connect(opts)?;
    eprintln!("registering as {id} at {url} ...");
    serve(listener, id).await
}

/// The status service: every reverse connection is an HTTP/1.1 connection.
async fn serve(listener: Listener, id: DialerId) -> Result<()> {
    let started = Instant::now();
    let served = Arc::new(AtomicU64::new(0));
    loop {
        let conn = listener.accept().await?;
        let (id, served) = (id.clone(), served.clone());
        smol::spawn(async move {
            let status = || {
                let n = served.fetch_add(1, Relaxed) + 1;
                format!(
                    "{id}: up {}s, {n} requests served, from a smol program with no tokio runtime\n",
                    started.elapsed().as_secs()
                )
            };
            if let Err(e) = status::answer(conn, status).await {
                eprintln!("connection ended: {e}");
            }
        })
        .detach();
    }
}

/// The whole path in one process: a public server, this tool behind it, a client.
async fn demo() -> Result<()> {
    let id = DialerId::new("sensor-7")?;
    let (identity, _, _) = tls::Identity::self_signed(&["localhost".into()])?;
    let trust = ServerTrust::from_certs(&identity.certs)?;

    let mut config = ServerConfig::default();
    config.dialer.auth.add_token(id.clone(), "s3cret");
    let server = Server::new(config);
    let tcp = smol::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("https://localhost:{}", tcp.local_addr()?.port());
    smol::spawn(server.clone().serve(tcp, tls::server_config(identity)?)).detach();
    println!("public server on {url}");

    let mut opts = ListenerOptions::new(&url, id.clone(), tls::client_config(trust, None)?)?;
    opts.token = Some("s3cret".into());
    let listener = Listener::connect(opts)?;
    listener.wait_up().await?;
    println!("{id} registered; its status service is reachable through the tunnel");
    smol::spawn(serve(listener, id.clone())).detach();

    for _ in 0..3 {
        let mut conn = server.dial(&id).await?;
        conn.write_all(b"GET / HTTP/1.1\r\nhost: sensor-7\r\nconnection: close\r\n\r\n")
            .await?;
        conn.flush().await?;
        let mut resp = String::new();
        conn.read_to_string(&mut resp).await?;
        print!("{}", resp.split("\r\n\r\n").nth(1).unwrap_or(&resp));
        smol::Timer::after(Duration::from_millis(300)).await;
    }
    server.shutdown(Duration::from_millis(100)).await;
    Ok(())
}
