//! The NAT side: `h2rev2 client`, the original form without `-public`, and the demo's
//! client.

use std::sync::Arc;
use std::time::Duration;

use h2rev2_tokio::nat::{self, HttpProxyOptions};
use h2rev2_tokio::outbound::{NoProxy, OutboundProxy, ProxyKind, ProxyRules, Route};
use h2rev2_tokio::proto::wire::{DialerId, RouteConfig, Wire};
use h2rev2_tokio::{
    Connector, DownReason, Listener, ListenerOptions, SpreadGroup, Status, TokioRuntime,
};
use http::Uri;
use tracing::{error, info, warn};

use crate::cli::{ClientArgs, RouteArgs, WireArg};
use crate::error::{CliError, Code};
use crate::server::parse_id;
use crate::signal;

/// What the client serves on each reverse connection.
#[derive(Debug, Clone)]
pub enum Service {
    /// HTTP, forwarded to this internal server.
    Http {
        /// `http://host:port[/base]` or `https://…`.
        target: Uri,
        /// A path prefix to strip before forwarding.
        strip_prefix: Option<String>,
        /// Keep the Client's `Host` header.
        preserve_host: bool,
    },
    /// Raw bytes, relayed to this TCP address.
    Tcp(String),
}

/// Everything needed to start a client.
pub struct ClientPlan {
    /// `https://host:port[/base]`: one, or the replicas of a cluster (a session to
    /// each).
    pub servers: Vec<String>,
    /// Sessions through each server (`--connections`), spread over replicas.
    pub connections: usize,
    /// The id to register.
    pub id: DialerId,
    /// Bearer token.
    pub token: Option<String>,
    /// TLS config (ALPN h2).
    pub tls: Arc<rustls::ClientConfig>,
    /// Route layout.
    pub routes: RouteArgs,
    /// What to serve.
    pub service: Service,
    /// Spare streams.
    pub spares: usize,
    /// `--wire`.
    pub wire: WireArg,
    /// Give up after this many failed attempts in a row.
    pub max_attempts: Option<u32>,
    /// Backoff cap.
    pub max_backoff: Duration,
    /// Outbound proxy rules, and where they came from (for the log).
    pub proxy: (ProxyRules, &'static str),
}

/// The outbound proxy rules of `--proxy` (`none`, or a URL, with NO_PROXY from the
/// environment), else of the environment (HTTPS_PROXY, ALL_PROXY, NO_PROXY).
pub fn proxy_rules(flag: Option<&str>) -> Result<(ProxyRules, &'static str), CliError> {
    match flag.map(str::trim) {
        Some(v) if v.eq_ignore_ascii_case("none") => Ok((ProxyRules::none(), "--proxy")),
        Some(url) => {
            let proxy =
                OutboundProxy::parse(url).map_err(|e| CliError::usage(format!("--proxy: {e}")))?;
            Ok((
                ProxyRules::new(proxy).bypass(NoProxy::from_env()),
                "--proxy",
            ))
        }
        None => ProxyRules::from_env()
            .map(|r| (r, "the environment"))
            .map_err(|e| CliError::usage(e.to_string())),
    }
}

/// Checks `--proxy-host`.
pub fn parse_proxy_target(flag: &str, s: &str) -> Result<Uri, CliError> {
    let uri: Uri = s
        .parse()
        .map_err(|e| CliError::usage(format!("{flag} {s:?} is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.authority().is_some() => Ok(uri),
        _ => Err(CliError::usage(format!(
            "{flag} {s:?}: expected http://HOST:PORT or https://HOST:PORT"
        ))),
    }
}

/// Checks `--tcp-target`.
pub fn parse_tcp_target(s: &str) -> Result<String, CliError> {
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(s.to_string()),
        _ => Err(CliError::usage(format!(
            "--tcp-target {s:?}: expected HOST:PORT, e.g. 127.0.0.1:22"
        ))),
    }
}

/// Builds the plan of `h2rev2 client`.
pub fn plan(args: ClientArgs) -> Result<ClientPlan, CliError> {
    let (false, Some(id)) = (args.server.is_empty(), args.id) else {
        return Err(CliError::usage("--server and --id are required"));
    };
    let mut servers = args.server;
    servers.dedup();
    let id = parse_id("--id", &id)?;
    let service = match (&args.proxy_host, &args.tcp_target) {
        (Some(p), None) => Service::Http {
            target: parse_proxy_target("--proxy-host", p)?,
            strip_prefix: args.strip_prefix.clone(),
            preserve_host: args.preserve_host,
        },
        (None, Some(t)) => Service::Tcp(parse_tcp_target(t)?),
        _ => {
            return Err(CliError::usage(
                "give exactly one of --proxy-host URL and --tcp-target HOST:PORT",
            ));
        }
    };
    if args.insecure {
        warn!(
            "--insecure: the server's certificate is NOT checked; anyone on the path can \
             read and change the traffic{}. Use --ca FILE instead.",
            if args.token.is_some() {
                " and steal the token"
            } else {
                ""
            }
        );
    }
    let identity = match (&args.cert, &args.key) {
        (Some(c), Some(k)) => Some(crate::certs::load_identity(c, k)?),
        _ => None,
    };
    let tls = crate::certs::client_tls(args.ca.as_deref(), args.insecure, identity)?;
    let token = args.token.filter(|t| !t.is_empty());
    let proxy = proxy_rules(args.proxy.as_deref())?;
    Ok(ClientPlan {
        servers,
        connections: args.connections.into(),
        id,
        token,
        tls,
        routes: args.routes,
        service,
        spares: args.spares,
        wire: args.wire,
        max_attempts: args.max_attempts,
        max_backoff: Duration::from_secs(args.max_backoff.max(1)),
        proxy,
    })
}

/// Starts `connections` Listeners per server (connecting in the background), each
/// with the server it connects to.
pub fn bind(plan: &ClientPlan) -> Result<Vec<(String, Listener)>, CliError> {
    let mut out = Vec::new();
    for server in &plan.servers {
        let group = (plan.connections > 1).then(SpreadGroup::new);
        for _ in 0..plan.connections.max(1) {
            out.push((server.clone(), bind_one(plan, server, group.clone())?));
        }
    }
    Ok(out)
}

fn bind_one(
    plan: &ClientPlan,
    server: &str,
    spread: Option<SpreadGroup>,
) -> Result<Listener, CliError> {
    let mut opts = ListenerOptions::new(server, plan.id.clone(), plan.tls.clone())
        .map_err(|e| CliError::usage(format!("--server: {e}")))?;
    opts.token = plan.token.clone();
    opts.spread = spread;
    let mut routes = opts.machine.routes.clone();
    if !plan.routes.base_path.trim_matches('/').is_empty() {
        let given = RouteConfig::default().with_base(&plan.routes.base_path);
        if routes.base() != "/" && routes.base() != given.base() {
            return Err(CliError::usage(format!(
                "--base-path {:?} and the path of --server {:?} disagree: give the base \
                 path once",
                plan.routes.base_path, server
            )));
        }
        routes = routes.with_base(&plan.routes.base_path);
    }
    opts.machine.routes = routes
        .with_revdial_segment(&plan.routes.dialer_path)
        .with_id_key(&plan.routes.dialer_key);
    opts.machine.spares = plan.spares;
    (opts.machine.wire, opts.machine.detect_2022) = match plan.wire {
        WireArg::Auto => (Wire::Current, true),
        WireArg::Current => (Wire::Current, false),
        WireArg::Go2022 => (Wire::Go2022, false),
    };
    opts.machine.max_attempts = plan.max_attempts;
    opts.machine.backoff_max = plan.max_backoff;
    opts.machine.stable_after = plan.max_backoff.max(Duration::from_secs(5));
    let (rules, from) = &plan.proxy;
    let addr = opts.addr();
    let host = opts.url.host().unwrap_or_default();
    let port = opts
        .url
        .port_u16()
        .unwrap_or(if opts.cleartext { 80 } else { 443 });
    match rules.route(host, port) {
        Route::Proxy(p) => {
            let kind = match p.kind() {
                ProxyKind::HttpConnect => "HTTP CONNECT",
                ProxyKind::Socks5 { .. } => "SOCKS5",
            };
            info!("reaching the public server {addr} through the {kind} proxy {p} (from {from})");
        }
        Route::Bypass(entry) => {
            info!(
                "NO_PROXY entry {entry:?} exempts the public server {addr}: connecting \
                 directly, not through the proxy {}",
                rules.proxy().map(ToString::to_string).unwrap_or_default()
            );
        }
        Route::Direct => {}
    }
    let connector = Connector::default().via(rules.clone());
    Listener::connect_with(opts, connector, TokioRuntime::current())
        .map_err(|e| CliError::usage(format!("--server: {e}")))
}

/// Explains a failed attempt when the user can fix it.
fn explain(plan_id: &DialerId, server: &str, reason: &DownReason) {
    match reason.refusal() {
        Some((401, body)) => {
            error!(
                "the public server {server} refused this client: HTTP 401 ({body}). It \
                 requires a token for id {plan_id}: pass --token or set H2REV2_TOKEN"
            );
        }
        Some((403, body)) => {
            error!(
                "the public server {server} refused this client: HTTP 403 ({body}). The \
                 token sent for id {plan_id} is wrong, or this id may not register there: \
                 check --token/H2REV2_TOKEN against the server's token file"
            );
        }
        Some((409, body)) => {
            error!(
                "the public server {server} refused this client: HTTP 409 ({body}). Another \
                 live client holds id {plan_id}; retrying until it is gone"
            );
        }
        Some((404, _)) => {
            error!(
                "the public server {server} has no reverse-connection endpoint at this path \
                 (HTTP 404): check --dialer-path and the URL's base path"
            );
        }
        Some((400, body)) => {
            error!(
                "the public server {server} rejected the request (HTTP 400: {body}): check \
                 --dialer-key and --id"
            );
        }
        _ => {
            if matches!(reason, DownReason::Connect(d) if d.contains("invalid peer certificate")) {
                error!(
                    "the server's certificate is not trusted ({reason}): pass --ca FILE with \
                     the server's certificate (or the CA that signed it)"
                );
            }
        }
    }
}

/// Explains every failed attempt the user can fix, in the background.
fn watch(listener: &Listener, id: DialerId, server: String) {
    let mut status = listener.watch_status();
    tokio::spawn(async move {
        // Each reason is explained once until it changes or the session is up again
        // (the driver logs the retries themselves on changes too).
        let mut explained: Option<String> = None;
        loop {
            let s = status.borrow_and_update().clone();
            match s {
                Status::Down(Some(reason)) => {
                    let text = reason.to_string();
                    if explained.as_deref() != Some(text.as_str()) {
                        explain(&id, &server, &reason);
                        explained = Some(text);
                    }
                }
                Status::Closed(reason) => {
                    if explained.as_deref() != Some(reason.to_string().as_str()) {
                        explain(&id, &server, &reason);
                    }
                    return;
                }
                Status::Up => explained = None,
                Status::Down(None) => {}
            }
            if status.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Serves `listeners` until a signal (`Ok`) or until every one gave up (`Err`, for
/// the last one).
pub async fn serve(listeners: Vec<Listener>, service: Service) -> Result<(), CliError> {
    let all = futures_util::future::join_all(
        listeners.into_iter().map(|l| serve_one(l, service.clone())),
    );
    tokio::select! {
        results = all => Err(results
            .into_iter()
            .last()
            .unwrap_or_else(|| CliError::usage("no server to connect to"))),
        sig = signal::wait() => {
            info!("received {sig}: closing");
            Ok(())
        }
    }
}

/// Serves one Listener until it gives up; why.
async fn serve_one(listener: Listener, service: Service) -> CliError {
    let status = listener.watch_status();
    let served = async move {
        match service {
            Service::Http {
                target,
                strip_prefix,
                preserve_host,
            } => {
                let mut opts = HttpProxyOptions::new(target);
                opts.strip_prefix = strip_prefix;
                opts.preserve_host = preserve_host;
                nat::serve_http_proxy(listener, opts).await
            }
            Service::Tcp(target) => {
                info!("relaying reverse connections to TCP {target}");
                nat::relay_tcp(listener, target).await
            }
        }
    };
    let why = match served.await {
        Ok(()) => "the reverse connection closed".to_string(),
        Err(e) => e.to_string(),
    };
    let code = match &*status.borrow() {
        Status::Closed(r) if matches!(r.refusal(), Some((401 | 403, _))) => Code::AuthRefused,
        _ => Code::Runtime,
    };
    CliError {
        code,
        message: format!("the client stopped: {why}"),
    }
}

/// `h2rev2 client`.
pub async fn run(args: ClientArgs) -> Result<(), CliError> {
    let plan = plan(args)?;
    run_plan(plan).await
}

/// Runs a client plan until a signal.
pub async fn run_plan(plan: ClientPlan) -> Result<(), CliError> {
    let bound = bind(&plan)?;
    for (server, l) in &bound {
        watch(l, plan.id.clone(), server.clone());
    }
    let listeners = bound.into_iter().map(|(_, l)| l).collect();
    serve(listeners, plan.service).await
}
