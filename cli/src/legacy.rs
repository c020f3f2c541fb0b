//! The original Go CLI's command line, kept working as it was:
//!
//! ```text
//! h2rev2 -cert server.crt -dialer-key dialerid -dialer-id 001 -dialer-path /revdial \
//!        -proxy-host http://localhost:8000 localhost 9090                  # private side
//! h2rev2 -public -cert server.crt -key server.key -dialer-key dialerid \
//!        -dialer-id 001 -dialer-path /revdial localhost 9090              # public side
//! ```
//!
//! Same behaviour, with two safety changes: the public side lets only its `-dialer-id`
//! register (still without authentication, as the original, and it says so), and an
//! anonymous newcomer never replaces a live session. The private side checks the server
//! certificate against `-cert` (the Go client skipped verification).

use std::time::Duration;

use h2rev2_tokio::ServerConfig;
use h2rev2_tokio::proto::wire::RouteConfig;
use tracing::warn;

use crate::cli::{LegacyArgs, RouteArgs};
use crate::client::{self, ClientPlan, Service};
use crate::error::CliError;
use crate::server::{self, ServerPlan, parse_id};

/// Runs the original form.
pub async fn run(args: LegacyArgs) -> Result<(), CliError> {
    if args.proxy_path != "/" {
        warn!(
            "-proxy-path {:?} is not supported: every path is proxied",
            args.proxy_path
        );
    }
    let id = parse_id("-dialer-id", &args.dialer_id)?;
    if args.public {
        let (Some(cert), Some(key)) = (&args.cert, &args.key) else {
            return Err(CliError::usage(
                "-public needs -cert FILE and -key FILE (or run `h2rev2 server --self-signed`)",
            ));
        };
        let identity = crate::certs::load_identity(cert, key)?;
        let mut config = ServerConfig {
            routes: RouteConfig::default()
                .with_revdial_segment(&args.dialer_path)
                .with_id_key(&args.dialer_key)
                .with_default_id(Some(id.clone())),
            ..ServerConfig::default()
        };
        config.dialer.auth.allow_anonymous_for(vec![id.clone()]);
        warn!(
            "original command-line form: clients are NOT authenticated; only id {id} may \
             register, and a live session is never replaced by a newcomer. Use `h2rev2 \
             server --tokens FILE` to require tokens"
        );
        let host = if args.host.contains(':') {
            format!("[{}]", args.host)
        } else {
            args.host.clone()
        };
        let plan = ServerPlan {
            listen: format!("{host}:{}", args.port),
            identity,
            client_roots: None,
            self_signed: None,
            config,
            tcp: Vec::new(),
            admin: Vec::new(),
            admin_token: None,
            cluster: None,
        };
        server::start(plan)
            .await?
            .until_signal(Duration::ZERO, Duration::from_secs(5))
            .await
    } else {
        let Some(cert) = &args.cert else {
            return Err(CliError::usage(
                "-cert FILE is required: the server's certificate (or its CA) to trust",
            ));
        };
        let Some(proxy_host) = &args.proxy_host else {
            return Err(CliError::usage(
                "-proxy-host URL is required: the internal server to expose, e.g. \
                 http://localhost:8000",
            ));
        };
        let target = client::parse_proxy_target("-proxy-host", proxy_host)?;
        let tls = crate::certs::client_tls(Some(cert), false, None)?;
        let host = if args.host.contains(':') {
            format!("[{}]", args.host)
        } else {
            args.host.clone()
        };
        let plan = ClientPlan {
            connections: 1,
            servers: vec![format!("https://{host}:{}", args.port)],
            id,
            token: None,
            tls,
            routes: RouteArgs {
                base_path: "/".into(),
                dialer_path: args.dialer_path,
                dialer_key: args.dialer_key,
            },
            service: Service::Http {
                target,
                strip_prefix: None,
                preserve_host: false,
            },
            spares: 2,
            wire: crate::cli::WireArg::Auto,
            max_attempts: None,
            max_backoff: Duration::from_secs(5),
            proxy: (h2rev2_tokio::outbound::ProxyRules::none(), "no proxy"),
        };
        client::run_plan(plan).await
    }
}
