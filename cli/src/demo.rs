//! `h2rev2 demo`: the whole tunnel in one process, on loopback.
//!
//! ```text
//! curl ──HTTPS──► public server (127.0.0.1:PORT, self-signed)
//!                      │  reverse connection (HTTP/2 stream, token-authenticated)
//!                      ▼
//!                 client "demo" ──HTTP──► hello server (127.0.0.1:random)
//! ```

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use h2rev2_tokio::ServerConfig;
use h2rev2_tokio::proto::wire::RouteConfig;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::debug;

use crate::cli::{DemoArgs, RouteArgs};
use crate::client::{self, ClientPlan, Service};
use crate::error::CliError;
use crate::server::{self, ServerPlan, parse_id};

async fn hello(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = format!(
        "Hello from the internal server behind the NAT!\n\
         You asked for {} {}; it came to me through an h2rev2 reverse connection.\n",
        req.method(),
        req.uri()
    );
    Ok(Response::builder()
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(text)))
        .expect("static response"))
}

/// Starts the hello server on 127.0.0.1 (any port).
async fn start_hello() -> Result<SocketAddr, CliError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| CliError::bind("the internal hello server", "127.0.0.1:0", &e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::runtime(e.to_string()))?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            tokio::spawn(async move {
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), hyper::service::service_fn(hello))
                    .await
                {
                    debug!(error = %e, "hello connection");
                }
            });
        }
    });
    Ok(addr)
}

/// `h2rev2 demo`.
pub async fn run(args: DemoArgs) -> Result<(), CliError> {
    let id = parse_id("--id", &args.id)?;
    let dir = tempfile::Builder::new()
        .prefix("h2rev2-demo-")
        .tempdir()
        .map_err(|e| CliError::runtime(format!("cannot make a temporary directory: {e}")))?;
    let cert_path = dir.path().join("server.crt");
    let names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    let cert = crate::certs::SelfSigned::ephemeral(&names, &cert_path)?;
    let fingerprint = cert.fingerprint.clone();
    let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));

    let mut config = ServerConfig {
        routes: RouteConfig::default().with_default_id(Some(id.clone())),
        ..ServerConfig::default()
    };
    config.dialer.auth.add_token(id.clone(), &token);
    let running = server::start(ServerPlan {
        listen: format!("127.0.0.1:{}", args.port),
        identity: cert.identity.clone(),
        client_roots: None,
        // Written below, without the server's report: the demo prints its own.
        self_signed: None,
        config,
        tcp: Vec::new(),
        admin: crate::server::admin_addrs(None, args.metrics),
        admin_token: None,
        cluster: None,
    })
    .await
    .map_err(|mut e| {
        if e.code == crate::error::Code::Bind {
            e.message
                .push_str("; try `h2rev2 demo --port 0` for any free port");
        }
        e
    })?;
    // In a new temporary directory, but still only once the port is bound.
    cert.write()?;
    let port = running.addr.port();
    let hello = start_hello().await?;

    let plan = ClientPlan {
        connections: 1,
        servers: vec![format!("https://localhost:{port}")],
        id: id.clone(),
        token: Some(token),
        tls: crate::certs::client_tls(Some(&cert_path), false, None)?,
        routes: RouteArgs {
            base_path: "/".into(),
            dialer_path: "/revdial".into(),
            dialer_key: "id".into(),
        },
        service: Service::Http {
            target: format!("http://{hello}")
                .parse()
                .map_err(|e| CliError::runtime(format!("{e}")))?,
            strip_prefix: None,
            preserve_host: false,
        },
        spares: 2,
        wire: crate::cli::WireArg::Auto,
        max_attempts: None,
        max_backoff: Duration::from_secs(2),
        proxy: (h2rev2_tokio::outbound::ProxyRules::none(), "no proxy"),
    };
    let listeners: Vec<_> = client::bind(&plan)?.into_iter().map(|(_, l)| l).collect();
    let up = futures_util::future::try_join_all(listeners.iter().map(|l| l.wait_up()));
    match tokio::time::timeout(Duration::from_secs(10), up).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(CliError::runtime(format!("the demo client stopped: {e}"))),
        Err(_) => {
            return Err(CliError::runtime(
                "the demo client did not connect within 10 s (see the log above)",
            ));
        }
    }
    let cert = cert_path.display();
    let mut out = format!(
        "\n\
         h2rev2 demo is running. Press Ctrl-C to stop.\n\
         \n\
         \x20 public server    https://localhost:{port}  (self-signed certificate {cert})\n\
         \x20 certificate      SHA-256 {fingerprint}\n\
         \x20 client id        {id}  (authenticated with a random token)\n\
         \x20 internal server  http://{hello}  (reached only through the tunnel)\n\
         \n\
         Try:\n\
         \x20 curl --cacert {cert} https://localhost:{port}/proxy/{id}/hello\n\
         \x20 curl -k https://localhost:{port}/anything\n\
         \n\
         The same tunnel as separate processes (an internal server on port 8000):\n\
         \x20 H2REV2_TOKENS={id}=s3cret h2rev2 server --listen 127.0.0.1:9090 --self-signed\n\
         \x20 H2REV2_TOKEN=s3cret h2rev2 client --server https://localhost:9090 --ca h2rev2-server.crt \\\n\
         \x20     --id {id} --proxy-host http://127.0.0.1:8000\n"
    );
    if let Some(m) = args.metrics {
        out.push_str(&format!(
            "\nMetrics: curl http://{m}/metrics\nStatus page: http://{m}/\n"
        ));
    }
    out.push('\n');
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    drop(stdout);

    let serving = tokio::spawn(client::serve(listeners, plan.service));
    let result = running
        .until_signal(Duration::ZERO, Duration::from_secs(1))
        .await;
    serving.abort();
    drop(dir);
    result
}
