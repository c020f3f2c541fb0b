//! The public side: `h2rev2 server`, the original form's `-public`, and the demo's
//! server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use h2rev2_tokio::proto::wire::{DialerId, RouteConfig};
use h2rev2_tokio::tls::{self, Identity};
use h2rev2_tokio::{Server, ServerConfig};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::certs;
use crate::cli::ServerArgs;
use crate::error::CliError;
use crate::signal;
use crate::tokens;

/// Everything needed to start a public server.
pub struct ServerPlan {
    /// HTTPS address, as given (`localhost` binds 127.0.0.1).
    pub listen: String,
    /// Its certificate.
    pub identity: Identity,
    /// CA roots for client certificates (`--client-ca`): requested, not required.
    pub client_roots: Option<rustls::RootCertStore>,
    /// With `--self-signed`: the files to write (and report) once every port is bound.
    pub self_signed: Option<certs::SelfSigned>,
    /// Routes, auth, timeouts.
    pub config: ServerConfig,
    /// TCP forwards: listen address, id.
    pub tcp: Vec<(String, DialerId)>,
    /// Admin endpoints (`--admin`, `--metrics`): each serves every admin route.
    pub admin: Vec<SocketAddr>,
    /// The admin endpoints' bearer token (`--admin-token-file`).
    pub admin_token: Option<String>,
    /// The cluster to join (`--cluster-redis`).
    pub cluster: Option<ClusterPlan>,
}

/// How the server joins a cluster.
pub struct ClusterPlan {
    /// The Redis URL.
    pub redis: String,
    /// The replica's registry settings.
    pub config: h2rev2_tokio::driver::cluster::ClusterConfig,
}

/// The cluster settings of `args`, checked.
fn cluster_plan(args: &ServerArgs, identity: &Identity) -> Result<Option<ClusterPlan>, CliError> {
    let c = &args.cluster;
    let Some(redis) = &c.cluster_redis else {
        for (given, flag) in [
            (c.cluster_advertise.is_some(), "--cluster-advertise"),
            (c.cluster_replica.is_some(), "--cluster-replica"),
            (c.cluster_token_file.is_some(), "--cluster-token-file"),
            (c.cluster_ca.is_some(), "--cluster-ca"),
        ] {
            if given {
                return Err(CliError::usage(format!("{flag} needs --cluster-redis URL")));
            }
        }
        return Ok(None);
    };
    let (Some(advertise), Some(token_file)) = (&c.cluster_advertise, &c.cluster_token_file) else {
        return Err(CliError::usage(
            "--cluster-redis needs --cluster-advertise https://HOST:PORT (how the other \
             replicas reach this one) and --cluster-token-file FILE (the secret they share)",
        ));
    };
    let uri: http::Uri = advertise
        .parse()
        .map_err(|e| CliError::usage(format!("--cluster-advertise {advertise:?}: {e}")))?;
    let (Some("https"), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(CliError::usage(format!(
            "--cluster-advertise {advertise:?}: expected https://HOST:PORT"
        )));
    };
    let token = crate::admin::read_token(token_file).map_err(|e| {
        CliError::config(
            e.message
                .replace("--admin-token-file", "--cluster-token-file"),
        )
    })?;
    let trust = match &c.cluster_ca {
        Some(path) => {
            tls::load_certs(path).map_err(|e| CliError::config(format!("--cluster-ca: {e}")))?
        }
        None => identity.certs.clone(),
    };
    let peer_tls = tls::client_config(
        tls::ServerTrust::PinnedOrChained(trust),
        None,
        &[tls::ALPN_H2],
    )
    .map_err(|e| CliError::config(e.to_string()))?;
    let replica = c
        .cluster_replica
        .clone()
        .unwrap_or_else(|| authority.as_str().to_string());
    if replica.is_empty() || replica.contains(char::is_whitespace) {
        return Err(CliError::usage(format!(
            "--cluster-replica {replica:?}: a name without spaces"
        )));
    }
    let mut registry =
        h2rev2_tokio::proto::cluster::Config::new(replica, advertise.trim_end_matches('/'));
    registry.lease = Duration::from_secs(c.cluster_lease.max(1));
    Ok(Some(ClusterPlan {
        redis: redis.clone(),
        config: h2rev2_tokio::driver::cluster::ClusterConfig::new(registry, token, peer_tls),
    }))
}

/// A started public server.
pub struct Running {
    /// The server handle.
    pub server: Server,
    /// Where HTTPS is served.
    pub addr: SocketAddr,
    serve: tokio::task::JoinHandle<std::io::Result<()>>,
    /// What `/readyz` reports: cleared when shutdown begins.
    ready: Arc<AtomicBool>,
    /// What a reload may replace.
    pub live: Arc<Live>,
}

/// The parts of a running server that a reload replaces besides its configuration.
pub struct Live {
    /// The server handle.
    pub server: Server,
    /// The certificate served.
    pub cert: Arc<tls::CertSlot>,
    /// The TCP forwards being served.
    pub forwards: std::sync::Mutex<Vec<Forward>>,
    /// The admin endpoint's state, when one is served.
    pub admin: Option<Arc<crate::admin::Admin>>,
}

/// One TCP forward being served: `--tcp ADDR=ID`.
pub struct Forward {
    /// The address as given.
    pub addr: String,
    /// The id it reaches.
    pub id: DialerId,
    /// Its accept loop: aborting it closes the port (connections already forwarded
    /// go on).
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds the TCP forwards `tcp` (nothing served yet).
pub async fn bind_forwards(
    tcp: &[(String, DialerId)],
) -> Result<Vec<(String, TcpListener, DialerId)>, CliError> {
    let mut out = Vec::new();
    for (a, id) in tcp {
        let l = bind(&format!("TCP forwarding to {id}"), a).await?;
        out.push((a.clone(), l, id.clone()));
    }
    Ok(out)
}

/// Serves bound TCP forwards.
pub fn serve_forwards(
    server: &Server,
    bound: Vec<(String, TcpListener, DialerId)>,
) -> Result<Vec<Forward>, CliError> {
    let mut out = Vec::new();
    for (addr, l, id) in bound {
        let local = l
            .local_addr()
            .map_err(|e| CliError::runtime(e.to_string()))?;
        info!("forwarding TCP {local} to id {id}");
        let task = tokio::spawn(server.clone().forward_tcp(l, id.clone()));
        out.push(Forward { addr, id, task });
    }
    Ok(out)
}

/// Parses a dialer id given on the command line.
pub fn parse_id(flag: &str, s: &str) -> Result<DialerId, CliError> {
    DialerId::new(s).map_err(|e| CliError::usage(format!("{flag} {s:?}: {e}")))
}

/// The roots of `--client-ca FILE`.
fn client_roots(path: &std::path::Path) -> Result<rustls::RootCertStore, CliError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in tls::load_certs(path).map_err(|e| CliError::config(format!("--client-ca: {e}")))? {
        roots.add(cert).map_err(|e| {
            CliError::config(format!(
                "--client-ca {}: not a usable CA certificate: {e}",
                path.display()
            ))
        })?;
    }
    Ok(roots)
}

/// Builds the plan of `h2rev2 server`.
pub fn plan(args: &ServerArgs) -> Result<ServerPlan, CliError> {
    let mut config = ServerConfig::default();
    let default_id = args
        .default_id
        .as_deref()
        .map(|s| parse_id("--default-id", s))
        .transpose()?;
    config.routes = RouteConfig::default()
        .with_base(&args.routes.base_path)
        .with_revdial_segment(&args.routes.dialer_path)
        .with_id_key(&args.routes.dialer_key)
        .with_default_id(default_id)
        .with_domain(args.domain.as_deref());
    if let Some(d) = &args.domain {
        let bare = d.trim().trim_start_matches("*.").trim_matches('.');
        let probe = format!("x.{bare}");
        if bare.is_empty()
            || bare.contains(['/', ':', ' '])
            || http::uri::Authority::try_from(probe).is_err()
        {
            return Err(CliError::config(format!(
                "--domain {d:?}: not a domain name (e.g. tunnel.example)"
            )));
        }
    }
    config.dialer.dial_timeout = Duration::from_secs(args.dial_timeout.max(1));
    args.limits.apply(&mut config);

    let mut entries = Vec::new();
    if let Some(path) = &args.tokens {
        entries.extend(tokens::from_file(path)?);
    }
    if let Some(v) = &args.tokens_env {
        entries.extend(tokens::from_env(v)?);
    }
    for (id, token) in &entries {
        config.dialer.auth.add_token(id.clone(), token);
    }
    // `*` names every id.
    let scope = |id: &DialerId| (id.as_str() != "*").then(|| id.clone());
    if let Some(path) = &args.caller_tokens {
        for (id, token) in tokens::from_file(path)? {
            config.callers.allow_bearer(scope(&id), &token);
        }
    }
    if let Some(path) = &args.caller_users {
        for (id, pair) in tokens::from_file(path)? {
            let Some((user, password)) = pair.split_once(':') else {
                return Err(CliError::config(format!(
                    "{}: the entry for {id} is not USER:PASSWORD",
                    path.display()
                )));
            };
            config.callers.allow_basic(scope(&id), user, password);
        }
    }
    if let Some(path) = &args.caller_certs {
        if args.client_ca.is_none() {
            return Err(CliError::usage(
                "--caller-certs needs --client-ca FILE: the CA (PEM) that signs the \
                 callers' client certificates, against which the server verifies them",
            ));
        }
        for (id, identity) in tokens::from_file(path)? {
            config.callers.allow_certificate(scope(&id), &identity);
        }
    }
    let client_roots = args.client_ca.as_deref().map(client_roots).transpose()?;
    if args.listener_certs {
        if args.client_ca.is_none() {
            return Err(CliError::usage(
                "--listener-certs needs --client-ca FILE: the CA (PEM) that signs the \
                 Listeners' client certificates, against which the server verifies them",
            ));
        }
        config.dialer.auth.bind_ids_to_certificates(true);
        info!("a Listener whose client certificate names its id registers without a token");
    }
    if args.allow_anonymous {
        if args.anonymous_ids.is_empty() {
            config.dialer.auth.allow_anonymous();
            warn!(
                "--allow-anonymous: any client may register any id without a token; \
                 whoever knows an id can take its traffic (a live session is never \
                 replaced by an anonymous newcomer)"
            );
        } else {
            let ids = args
                .anonymous_ids
                .iter()
                .map(|s| parse_id("--anonymous-id", s))
                .collect::<Result<Vec<_>, _>>()?;
            warn!(
                ids = ?args.anonymous_ids,
                "--allow-anonymous: these ids may register without a token (a live \
                 session is never replaced by an anonymous newcomer)"
            );
            config.dialer.auth.allow_anonymous_for(ids);
        }
    } else if entries.is_empty() && !args.listener_certs {
        return Err(CliError::usage(
            "no client could ever register: give tokens with --tokens FILE (lines `ID TOKEN`) \
             or H2REV2_TOKENS=ID=TOKEN,..., or accept clients without a token with \
             --allow-anonymous",
        ));
    } else {
        let mut ids: Vec<&str> = entries.iter().map(|(i, _)| i.as_str()).collect();
        ids.dedup();
        info!(?ids, "clients must send their token");
    }

    let (identity, self_signed) = match (&args.cert, &args.key) {
        (Some(c), Some(k)) => (certs::load_identity(c, k)?, None),
        _ => {
            let names = certs::self_signed_names(&args.hostnames, &args.listen);
            let key = args
                .self_signed_key
                .clone()
                .unwrap_or_else(|| certs::default_key_path(&args.cert_out));
            let ss = certs::SelfSigned::load_or_make(&names, &args.cert_out, &key)?;
            (ss.identity.clone(), Some(ss))
        }
    };

    let mut tcp = Vec::new();
    for spec in &args.tcp {
        let (addr, id) = spec.rsplit_once('=').ok_or_else(|| {
            CliError::usage(format!(
                "--tcp {spec:?}: expected LISTEN_ADDR=ID, e.g. 127.0.0.1:2222=ssh"
            ))
        })?;
        tcp.push((addr.to_string(), parse_id("--tcp", id)?));
    }
    let cluster = cluster_plan(args, &identity)?;
    Ok(ServerPlan {
        cluster,
        listen: args.listen.clone(),
        identity,
        client_roots,
        self_signed,
        config,
        tcp,
        admin: admin_addrs(args.admin.admin, args.admin.metrics),
        admin_token: args
            .admin
            .admin_token_file
            .as_deref()
            .map(crate::admin::read_token)
            .transpose()?,
    })
}

/// The admin listeners of `--admin` and its older name `--metrics` (one when equal).
pub fn admin_addrs(admin: Option<SocketAddr>, metrics: Option<SocketAddr>) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = admin.into_iter().chain(metrics).collect();
    v.dedup();
    v
}

/// Binds `addr` (`localhost:PORT` binds 127.0.0.1).
pub async fn bind(what: &str, addr: &str) -> Result<TcpListener, CliError> {
    let target = match addr.rsplit_once(':') {
        Some(("localhost", port)) => format!("127.0.0.1:{port}"),
        Some((_, port)) if port.parse::<u16>().is_ok() => addr.to_string(),
        _ => {
            return Err(CliError::usage(format!(
                "{addr:?} is not an address to listen on: expected HOST:PORT, e.g. 127.0.0.1:9090"
            )));
        }
    };
    TcpListener::bind(&target)
        .await
        .map_err(|e| CliError::bind(what, addr, &e))
}

/// Binds every port and starts serving.
pub async fn start(plan: ServerPlan) -> Result<Running, CliError> {
    let listener = bind("HTTPS", &plan.listen).await?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::runtime(e.to_string()))?;
    let forwards = bind_forwards(&plan.tcp).await?;
    let cert = tls::CertSlot::new(plan.identity).map_err(|e| CliError::config(e.to_string()))?;
    let tls = tls::server_config_with(cert.clone(), plan.client_roots)
        .map_err(|e| CliError::config(e.to_string()))?;
    let server = Server::new(plan.config);
    if let Some(c) = plan.cluster {
        let store = h2rev2_tokio::redis_store::RedisStore::new(&c.redis)
            .map_err(|e| CliError::usage(format!("--cluster-redis {:?}: {e}", c.redis)))?;
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        server
            .join_cluster(
                Arc::new(store),
                c.config,
                Arc::new(h2rev2_tokio::Connector::default()),
                generation,
            )
            .map_err(CliError::runtime)?;
    }
    let ready = Arc::new(AtomicBool::new(false));
    let mut admin = None;
    if !plan.admin.is_empty() {
        let a = Arc::new(crate::admin::Admin {
            server: server.clone(),
            token: std::sync::RwLock::new(plan.admin_token),
            ready: ready.clone(),
        });
        for addr in plan.admin {
            crate::admin::start(addr, a.clone()).await?;
        }
        admin = Some(a);
    }
    // Only now that every port is ours: a start that fails to bind must not replace the
    // certificate or key of a server still running with them.
    if let Some(ss) = &plan.self_signed {
        ss.write()?;
        ss.report();
    }
    let forwards = serve_forwards(&server, forwards)?;
    let serve = tokio::spawn(server.clone().serve(listener, tls));
    ready.store(true, Relaxed);
    info!("Serving on https://{addr}");
    let live = Arc::new(Live {
        server: server.clone(),
        cert,
        forwards: std::sync::Mutex::new(forwards),
        admin,
    });
    Ok(Running {
        server,
        addr,
        serve,
        ready,
        live,
    })
}

impl Running {
    /// Serves until SIGINT/SIGTERM, then goes away for `drain` (not ready; Listeners
    /// told to move; serving on) and shuts down within `grace` (a second signal quits
    /// at once).
    pub async fn until_signal(mut self, drain: Duration, grace: Duration) -> Result<(), CliError> {
        let sig = tokio::select! {
            r = &mut self.serve => {
                let why = match r {
                    Ok(Ok(())) => "stopped".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                return Err(CliError::runtime(format!("the server stopped: {why}")));
            }
            sig = signal::wait() => sig,
        };
        self.ready.store(false, Relaxed);
        let stop = async {
            if !drain.is_zero() {
                info!(
                    "received {sig}: going away; serving {}s more while Listeners move \
                     (send it again to quit now)",
                    drain.as_secs()
                );
                self.server.go_away();
                tokio::time::sleep(drain).await;
            }
            info!(
                "shutting down (up to {}s; send the signal again to quit now)",
                grace.as_secs()
            );
            self.server.shutdown(grace).await;
        };
        tokio::select! {
            _ = stop => info!("shut down"),
            sig = signal::wait() => info!("received {sig} again: quitting now"),
        }
        Ok(())
    }
}

/// `h2rev2 server`.
pub async fn run(args: ServerArgs) -> Result<(), CliError> {
    let grace = Duration::from_secs(args.grace);
    let in_cluster = args.cluster.cluster_redis.is_some();
    let drain = Duration::from_secs(args.drain_delay.unwrap_or(if in_cluster { 2 } else { 0 }));
    let plan = plan(&args)?;
    let running = start(plan).await?;
    crate::reload::spawn(running.live.clone(), args);
    running.until_signal(drain, grace).await
}
