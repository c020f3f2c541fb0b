//! Command-line definitions (clap derive): the `server`, `client` and `demo`
//! subcommands, and the hidden `legacy` form that carries the original Go CLI's flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

/// Text shown after the top-level help.
const TOP_AFTER: &str = "\
Quick start (one command, nothing else needed):
  h2rev2 demo

Two machines:
  public$ h2rev2 server --listen 0.0.0.0:9090 --self-signed --tokens tokens.txt
  nat$    H2REV2_TOKEN=s3cret h2rev2 client --server https://public.example:9090 \\
              --ca h2rev2-server.crt --id web --proxy-host http://127.0.0.1:8000
  anyone$ curl --cacert h2rev2-server.crt https://public.example:9090/proxy/web/

The original Go command line also works as it was (single-dash flags):
  h2rev2 -public -cert server.crt -key server.key -dialer-id 001 localhost 9090
  h2rev2 -cert server.crt -dialer-id 001 -proxy-host http://localhost:8000 localhost 9090

Settings can come from a TOML file (`server --config FILE`, `client --config FILE`),
one key per long flag; `--print-config` shows the result.

Status page, metrics, health checks: `h2rev2 server --admin 127.0.0.1:9100` (then
http://127.0.0.1:9100/), and the sessions as a table:
  h2rev2 status --admin http://127.0.0.1:9100

Shell completions: `h2rev2 completions bash` (zsh, fish, elvish, powershell).

Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more or less detail, and
--log-format json for one JSON object per line. The server reloads its configuration
on SIGHUP and when a file it reads changes (tokens, certificate, config file); sessions
stay up, except those whose token was removed or changed.

Exit codes: 0 ok (also after Ctrl-C/SIGTERM), 1 runtime failure, 2 usage error
(also an unknown key in a config file), 3 certificate/key/token/config file error,
4 refused by the public server (401/403) and gave up, 5 cannot listen on an address
(port in use, permission).";

/// A reverse tunnel over HTTP/2: expose a server that sits behind a NAT through a
/// public machine.
#[derive(Debug, Parser)]
#[command(name = "h2rev2", version, after_help = TOP_AFTER, propagate_version = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the public side: accept reverse connections from clients behind NAT and
    /// expose their servers over HTTPS (and raw TCP ports).
    #[command(after_help = SERVER_AFTER)]
    Server(ServerArgs),
    /// Run the NAT side: connect out to a public server and serve its requests from an
    /// internal HTTP server (--proxy-host) or a TCP service (--tcp-target).
    #[command(after_help = CLIENT_AFTER)]
    Client(ClientArgs),
    /// Try it on this machine: a public server with a self-signed certificate, an
    /// internal hello server and a client, all on loopback. Prints curl commands.
    #[command(after_help = DEMO_AFTER)]
    Demo(DemoArgs),
    /// Show a running server's sessions as a table, from its admin endpoint
    /// (`h2rev2 server --admin ADDR`).
    Status(StatusArgs),
    /// Print a shell completion script: `h2rev2 completions bash > /etc/bash_completion.d/h2rev2`
    /// (also zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// The original Go command line (`h2rev2 [-public] -cert ... HOST PORT`).
    #[command(hide = true)]
    Legacy(LegacyArgs),
}

/// `h2rev2 completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to write a completion script for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

const SERVER_AFTER: &str = "\
Examples:
  # Self-signed certificate, one token per client id, HTTPS on all interfaces:
  printf 'web s3cret\\nssh t0ken\\n' > tokens.txt
  h2rev2 server --listen 0.0.0.0:9090 --self-signed --tokens tokens.txt

  # Your own certificate, and a TCP port forwarded to the client registered as 'ssh':
  h2rev2 server --cert server.crt --key server.key --tokens tokens.txt \\
      --tcp 127.0.0.1:2222=ssh

  # The same from a config file (paths relative to the file), one flag overriding it:
  cat > /etc/h2rev2/server.toml <<'END'
  listen = \"0.0.0.0:9090\"
  cert = \"server.crt\"
  key = \"server.key\"
  tokens = \"tokens.txt\"
  tcp = [\"127.0.0.1:2222=ssh\"]
  END
  h2rev2 server --config /etc/h2rev2/server.toml --max-sessions 100
  h2rev2 server --config /etc/h2rev2/server.toml --print-config   # what is in effect

Clients' servers are reached at https://HOST:PORT/proxy/ID/... ; with --default-id ID
every other path goes to ID unchanged. Without tokens, Listeners are refused unless
--allow-anonymous is given: anyone who knows an id could then take its traffic.";

const CLIENT_AFTER: &str = "\
Examples:
  # Expose a local web server as 'web' (token from the environment):
  H2REV2_TOKEN=s3cret h2rev2 client --server https://public.example:9090 \\
      --ca h2rev2-server.crt --id web --proxy-host http://127.0.0.1:8000

  # Expose sshd as 'ssh' (the server forwards one of its TCP ports with --tcp):
  H2REV2_TOKEN=t0ken h2rev2 client --server https://public.example:9090 \\
      --ca h2rev2-server.crt --id ssh --tcp-target 127.0.0.1:22

  # From a config file (keys named like the flags; `ca` relative to the file):
  cat > client.toml <<'END'
  server = \"https://public.example:9090\"
  id = \"web\"
  ca = \"h2rev2-server.crt\"
  proxy-host = \"http://127.0.0.1:8000\"
  END
  H2REV2_TOKEN=s3cret h2rev2 client --config client.toml

The client may start before the server: it retries with a capped, jittered backoff
until the server is up, and reconnects whenever the connection is lost.";

const DEMO_AFTER: &str = "\
Example:
  h2rev2 demo                 # then run the curl commands it prints
  h2rev2 demo --port 0        # any free port (printed)";

/// `h2rev2 server`.
#[derive(Debug, Clone, Args)]
// Which of these must be given is checked once the config file is merged in
// (`config::check_server`): a file may hold one half and the command line the other.
#[command(group(ArgGroup::new("identity").args(["cert", "self_signed"])))]
pub struct ServerArgs {
    /// Address to listen on for HTTPS (h2rev2 clients and users). Use 0.0.0.0:PORT to
    /// accept connections from other machines.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9090")]
    pub listen: String,
    /// PEM certificate chain of the server (needs --key).
    #[arg(long, value_name = "FILE", help_heading = "TLS")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, value_name = "FILE", help_heading = "TLS")]
    pub key: Option<PathBuf>,
    /// Use a self-signed certificate (instead of --cert/--key), made on the first start
    /// and reused by the next ones, so clients pinned with `client --ca FILE` keep
    /// working across restarts. The certificate is written to --cert-out (give that file
    /// to clients), its key to --self-signed-key, and the SHA-256 fingerprint is
    /// printed. Files are written only once the port is bound.
    #[arg(long, help_heading = "TLS")]
    pub self_signed: bool,
    /// Where --self-signed writes the certificate for clients. Reused at the next start
    /// when it is for the key and names all of --hostname; otherwise replaced by a new
    /// one signed with the same key.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "h2rev2-server.crt",
        help_heading = "TLS"
    )]
    pub cert_out: PathBuf,
    /// Where --self-signed keeps its private key (created with mode 0600, reused at every
    /// start; keep it private, delete it to get a new key). Default: --cert-out with the
    /// extension `.key`, e.g. h2rev2-server.key.
    #[arg(long, value_name = "FILE", help_heading = "TLS")]
    pub self_signed_key: Option<PathBuf>,
    /// Names put in the self-signed certificate (repeatable). Default: localhost,
    /// 127.0.0.1, ::1 and the host of --listen.
    #[arg(long = "hostname", value_name = "NAME", help_heading = "TLS")]
    pub hostnames: Vec<String>,
    /// File of client tokens, one `ID TOKEN` (or `ID=TOKEN`) per line; lines starting
    /// with `#` are comments. A client must send the token of the id it registers.
    /// Tokens may also be given as H2REV2_TOKENS="ID=TOKEN,ID2=TOKEN2".
    #[arg(
        long,
        value_name = "FILE",
        env = "H2REV2_TOKEN_FILE",
        help_heading = "Listeners (the NAT side)"
    )]
    pub tokens: Option<PathBuf>,
    /// Client tokens from the environment: `ID=TOKEN` entries separated by commas or
    /// newlines (added to --tokens).
    #[arg(
        long = "tokens-env",
        env = "H2REV2_TOKENS",
        hide_env_values = true,
        hide = true
    )]
    pub tokens_env: Option<String>,
    /// Access control for Clients of the tunnels: a file of `ID TOKEN` lines (`*` as
    /// the ID: every id). Once given, every /proxy/ID/ request (and the default
    /// target) needs `Authorization: Bearer TOKEN` (or Proxy-Authorization) valid
    /// for that id; others get 401/403, the same for known and unknown ids.
    #[arg(long, value_name = "FILE", help_heading = "Callers (access control)")]
    pub caller_tokens: Option<PathBuf>,
    /// The same with HTTP basic auth: `ID USER:PASSWORD` lines (`*`: every id), for
    /// `curl -u USER:PASSWORD` and browsers.
    #[arg(long, value_name = "FILE", help_heading = "Callers (access control)")]
    pub caller_users: Option<PathBuf>,
    /// The same with TLS client certificates: `ID IDENTITY` lines (`*`: every id),
    /// where IDENTITY is a DNS name in the certificate's subject alternative names.
    /// Needs --client-ca, the CA the certificates must be signed by; for
    /// `curl --cert FILE --key FILE`.
    #[arg(long, value_name = "FILE", help_heading = "Callers (access control)")]
    pub caller_certs: Option<PathBuf>,
    /// PEM CA certificate(s) for client certificates: the server then asks every
    /// connection for one (optional: Clients and Listeners without one still connect)
    /// and refuses, at the TLS handshake, a certificate not signed by this CA.
    #[arg(long, value_name = "FILE", help_heading = "TLS")]
    pub client_ca: Option<PathBuf>,
    /// Accept clients that send no token (unsafe on the internet: whoever knows an id
    /// can register it). A live session is never replaced by an anonymous newcomer.
    #[arg(long, help_heading = "Listeners (the NAT side)")]
    pub allow_anonymous: bool,
    /// Admit a Listener without a token when its TLS client certificate, verified
    /// against --client-ca, names the id it registers as a DNS name in its subject
    /// alternative names (`client --cert FILE --key FILE`). A certificate that names
    /// other ids only is refused for this one.
    #[arg(long, help_heading = "Listeners (the NAT side)")]
    pub listener_certs: bool,
    /// With --allow-anonymous: only these ids may register anonymously (repeatable).
    #[arg(
        long = "anonymous-id",
        value_name = "ID",
        help_heading = "Listeners (the NAT side)"
    )]
    pub anonymous_ids: Vec<String>,
    /// Proxy every request that matches no route (`/revdial`, `/proxy/ID/...`) to this
    /// id, path unchanged.
    #[arg(long, value_name = "ID", help_heading = "Routing")]
    pub default_id: Option<String>,
    /// Host routing: `https://ID.DOMAIN/...` reaches id ID with its path unchanged
    /// (from the Host header, or the TLS server name when a request has none), next to
    /// the path routes, which the bare DOMAIN keeps. Needs a certificate for
    /// `*.DOMAIN` (`--hostname '*.DOMAIN'` with --self-signed) and a wildcard DNS
    /// record. Listeners may use any name: /revdial is never forwarded.
    #[arg(long, value_name = "DOMAIN", help_heading = "Routing")]
    pub domain: Option<String>,
    /// Forward a TCP port to a client id: `LISTEN_ADDR=ID`, e.g. 127.0.0.1:2222=ssh
    /// (repeatable). The client relays each connection to its --tcp-target.
    #[arg(long = "tcp", value_name = "ADDR=ID", help_heading = "Routing")]
    pub tcp: Vec<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub routes: RouteArgs,
    /// Seconds a dial waits for the client's reverse connection (504 after that).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 10,
        help_heading = "Limits"
    )]
    pub dial_timeout: u64,
    /// Seconds to let connections finish after Ctrl-C/SIGTERM.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 5,
        help_heading = "Limits"
    )]
    pub grace: u64,
    /// Seconds between Ctrl-C/SIGTERM and the stop: /readyz answers 503 (a load
    /// balancer takes the server out), Listeners are told it is going away and open a
    /// new session elsewhere while their session here serves on, new sessions are
    /// refused; then connections get --grace to finish. Default: 2 in a cluster
    /// (--cluster-redis), else 0.
    #[arg(long, value_name = "SECS", help_heading = "Limits")]
    pub drain_delay: Option<u64>,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// `--log-format`.
    #[command(flatten)]
    pub log: LogArgs,
    /// `--config`, `--print-config`.
    #[command(flatten)]
    pub file: ConfigArgs,
}

/// The admin endpoint of the public server.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Admin endpoint")]
pub struct AdminArgs {
    /// Serve the admin endpoint on plain HTTP at ADDR (keep it private, e.g.
    /// 127.0.0.1:9100): /metrics (Prometheus), /healthz, /readyz, /api/sessions (JSON)
    /// and a status page at /. Off by default.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// The older name of --admin (the same endpoint, /metrics included); both may be
    /// given, for two addresses.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// A file whose first line is a token: every admin route but /healthz then needs
    /// `Authorization: Bearer TOKEN` (401 otherwise).
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
}

/// Running several public servers as one cluster (shared registry on Redis).
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Cluster")]
pub struct ClusterArgs {
    /// Join a cluster whose registry is this Redis server (redis://HOST:PORT[/DB]):
    /// every replica then serves every id, forwarding a request for an id held by
    /// another replica to it. Needs --cluster-advertise and --cluster-token-file.
    #[arg(long, value_name = "URL")]
    pub cluster_redis: Option<String>,
    /// How the other replicas reach this one: https://HOST:PORT of its --listen.
    #[arg(long, value_name = "URL")]
    pub cluster_advertise: Option<String>,
    /// This replica's name, unique in the cluster. Default: HOST:PORT of
    /// --cluster-advertise.
    #[arg(long, value_name = "NAME")]
    pub cluster_replica: Option<String>,
    /// A file whose first line is the secret every replica shares: forwarded
    /// requests carry it, requests with a wrong one get 403.
    #[arg(long, value_name = "FILE")]
    pub cluster_token_file: Option<PathBuf>,
    /// PEM certificate(s) to trust for the other replicas (their own or their CA).
    /// Default: this server's certificate (replicas sharing one certificate).
    #[arg(long, value_name = "FILE")]
    pub cluster_ca: Option<PathBuf>,
    /// Seconds a registration lives without a refresh: a replica that dies frees
    /// its ids after at most this.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub cluster_lease: u64,
}

/// `h2rev2 status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The server's admin endpoint, e.g. http://127.0.0.1:9100.
    #[arg(long, value_name = "URL")]
    pub admin: String,
    /// The admin token file, if the server has one (--admin-token-file).
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
}

/// Limits of the public server. The defaults are safe on the public internet.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Limits")]
pub struct LimitArgs {
    /// Sessions (connected clients) in total; more are answered 503.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_sessions: usize,
    /// Sessions holding one id (several clients per id need tokens); more get 429.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub max_sessions_per_id: usize,
    /// Dials waiting for a reverse connection, per id; more get 429.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_pending_dials: usize,
    /// Spare reverse connections a client may park ahead of dials; more get 429.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_spares: usize,
    /// Concurrent connections from one IP address; more are closed at once. Each may
    /// make the server buffer 4 MiB of unread upload at most.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_conns_per_ip: usize,
    /// Seconds for the TLS handshake, the HTTP/2 preface and the first request each.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub handshake_timeout: u64,
    /// Seconds after which an HTTP/2 connection without streams is closed.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub idle_timeout: u64,
    /// Seconds between HTTP/2 PINGs on an otherwise quiet connection.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub keepalive: u64,
    /// Seconds without a PING answer after which a connection is dead.
    #[arg(long, value_name = "SECS", default_value_t = 15)]
    pub keepalive_timeout: u64,
    /// Seconds a proxied request may wait for the response's headers; then 504.
    /// Answered streams (SSE, WebSocket, downloads) are not cut by it.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub response_timeout: u64,
    /// Seconds a proxied request or response body may make no progress; then it is
    /// aborted (not applied to text/event-stream responses).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub body_idle_timeout: u64,
    /// Proxied requests in flight per id; more wait --queue-timeout, then get 503.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_requests_per_id: usize,
    /// Milliseconds a proxied request waits for a free slot of its id.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub queue_timeout: u64,
    /// One Client IP address's share of an id's requests in flight: past it, the
    /// address may use the id's free slots but the last quarter; then it waits
    /// --queue-timeout and gets 429.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_requests_per_client: usize,
    /// KiB that the streams of one client's tunnel may hold unread together: each
    /// stream's window is this shared among the open ones (one stream alone gets
    /// 8 MiB), so Clients that stop reading cost little and stall nobody else.
    #[arg(long, value_name = "KIB", default_value_t = 16384)]
    pub tunnel_stream_budget: u32,
}

impl LimitArgs {
    /// Applies the limits to a server configuration.
    pub fn apply(&self, config: &mut h2rev2_tokio::ServerConfig) {
        use std::time::Duration;
        config.dialer.max_sessions = self.max_sessions.max(1);
        config.dialer.max_sessions_per_id = self.max_sessions_per_id.max(1);
        config.dialer.max_pending_dials_per_id = self.max_pending_dials.max(1);
        config.dialer.max_spares_per_session = self.max_spares;
        config.max_connections_per_ip = self.max_conns_per_ip.max(1);
        config.handshake_timeout = Duration::from_secs(self.handshake_timeout.max(1));
        config.idle_timeout = Duration::from_secs(self.idle_timeout.max(1));
        config.h2.keepalive_interval = Duration::from_secs(self.keepalive.max(1));
        config.h2.keepalive_timeout = Duration::from_secs(self.keepalive_timeout.max(1));
        config.proxy.response_timeout = Duration::from_secs(self.response_timeout.max(1));
        config.proxy.body_idle_timeout = Duration::from_secs(self.body_idle_timeout.max(1));
        config.proxy.max_requests_per_id = self.max_requests_per_id.max(1);
        config.proxy.queue_timeout = Duration::from_millis(self.queue_timeout);
        config.proxy.max_requests_per_client = self.max_requests_per_client.max(1);
        config.tunnel_stream_budget = self.tunnel_stream_budget.saturating_mul(1024).max(1);
    }
}

/// Route layout flags shared by server and client (they must agree).
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Routing")]
pub struct RouteArgs {
    /// Serve everything under this path: the reverse-connection endpoint becomes
    /// BASE/revdial and the proxy BASE/proxy/ID/ (the Go revserver's -base-path). The
    /// client may give it here or as the path of --server's URL.
    #[arg(long, value_name = "PATH", default_value = "/")]
    pub base_path: String,
    /// Path segment of the reverse-connection endpoint (the original's -dialer-path).
    #[arg(long, value_name = "PATH", default_value = "/revdial")]
    pub dialer_path: String,
    /// Query key that carries the client id (the original's -dialer-key).
    #[arg(long, value_name = "KEY", default_value = "id")]
    pub dialer_key: String,
}

/// `h2rev2 client`.
#[derive(Debug, Args)]
// --server, --id and one of the services are required, checked once the config file is
// merged in (`config::check_client`, `client::plan`).
#[command(group(ArgGroup::new("service").args(["proxy_host", "tcp_target"])))]
pub struct ClientArgs {
    /// The public server: https://HOST:PORT[/BASE] (required). Repeat it for the
    /// replicas of a cluster: the client keeps a session to each, dials are spread
    /// over them, and when one replica goes the others carry the traffic.
    #[arg(long, value_name = "URL")]
    pub server: Vec<String>,
    /// The id to register under (required; the server's token file must hold a token
    /// for it).
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Token for --id (sent as `Authorization: Bearer`). Prefer the environment
    /// variable: command lines are visible to other users.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "H2REV2_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Trust this certificate: the server's own (e.g. written by `server
    /// --self-signed`) or the CA that signed it. Default: the usual public CAs.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "insecure",
        help_heading = "TLS"
    )]
    pub ca: Option<PathBuf>,
    /// PEM client certificate to present to the server (mutual TLS; needs --key): a
    /// server run with `--client-ca` and `--listener-certs` admits it for the id it
    /// names, without a token.
    #[arg(long, value_name = "FILE", help_heading = "TLS")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, value_name = "FILE", help_heading = "TLS")]
    pub key: Option<PathBuf>,
    /// Do not check the server's certificate at all. Anyone on the path can then read
    /// and change the traffic, token included. For first experiments only.
    #[arg(long, help_heading = "TLS")]
    pub insecure: bool,
    /// Serve reverse connections as HTTP, forwarded to this internal server
    /// (http://HOST:PORT or https://...).
    #[arg(long, value_name = "URL", help_heading = "Service")]
    pub proxy_host: Option<String>,
    /// Relay each reverse connection to this TCP address (HOST:PORT), e.g. sshd.
    #[arg(long, value_name = "HOST:PORT", help_heading = "Service")]
    pub tcp_target: Option<String>,
    /// Strip this path prefix before forwarding to --proxy-host (e.g. /proxy/001 when
    /// the public server is the Go h2rev2, which forwards full paths).
    #[arg(long, value_name = "PATH", help_heading = "Service")]
    pub strip_prefix: Option<String>,
    /// Forward the Client's Host header to --proxy-host unchanged (default: the Host
    /// becomes --proxy-host's HOST:PORT), for internal servers with virtual hosts.
    #[arg(long, help_heading = "Service")]
    pub preserve_host: bool,
    #[command(flatten)]
    pub routes: RouteArgs,
    /// Reach the public server through this outbound proxy (not to be confused with
    /// --proxy-host): http://[USER:PASS@]HOST:PORT (HTTP CONNECT, basic auth),
    /// socks5://[USER:PASS@]HOST:PORT (the server's name resolved here) or
    /// socks5h://... (resolved by the proxy); `none`: no proxy, whatever the
    /// environment says. Default: HTTPS_PROXY, else ALL_PROXY (or their lowercase
    /// forms). Either way NO_PROXY (comma list of hosts, .domains, addresses, CIDR
    /// blocks, `*`) names servers reached directly.
    #[arg(long, value_name = "URL|none", help_heading = "Connection")]
    pub proxy: Option<String>,
    /// Reverse connections kept open ahead of time (faster first byte).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 2,
        help_heading = "Connection"
    )]
    pub spares: usize,
    /// Sessions to keep through each --server (1-16). For a cluster behind one
    /// load-balanced address: each replica names itself, and sessions that land on a
    /// replica another one holds connect again, so that they end up on distinct
    /// replicas and losing one replica loses no request.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(u8).range(1..=16),
        help_heading = "Connection"
    )]
    pub connections: u8,
    /// The public server's wire: `auto` (the control-stream wire, switching to the
    /// 2022 one when the server shows it speaks that), `current`, or `2022` (the Go
    /// h2rev2 as of April 2022: no control stream, --spares streams kept open).
    #[arg(
        long,
        value_name = "WIRE",
        default_value = "auto",
        help_heading = "Connection"
    )]
    pub wire: WireArg,
    /// Give up after this many failed connection attempts in a row (exit 4 if the last
    /// one was refused by the server, 1 otherwise). Default: retry forever.
    #[arg(long, value_name = "N", help_heading = "Connection")]
    pub max_attempts: Option<u32>,
    /// Longest wait between two attempts, in seconds.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 5,
        help_heading = "Connection"
    )]
    pub max_backoff: u64,
    /// `--log-format`.
    #[command(flatten)]
    pub log: LogArgs,
    /// `--config`, `--print-config`.
    #[command(flatten)]
    pub file: ConfigArgs,
}

/// `--config` and `--print-config`, shared by `server` and `client`.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Configuration")]
pub struct ConfigArgs {
    /// Read settings from this TOML file: one key per long flag, named like it
    /// (`max-requests-per-id = 64`, `hostname = ["a.example"]`). Flags and their
    /// environment variables override the file; relative paths in the file (and
    /// default file names such as --cert-out's) are relative to the file's directory.
    /// Unknown keys are errors. The server reloads it (with the files it names) on
    /// SIGHUP and when it changes; an invalid new file is refused and logged.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (config file and flags merged) as TOML and
    /// exit; tokens are shown as "***".
    #[arg(long)]
    pub print_config: bool,
}

/// `--wire`: which wire the public server speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireArg {
    /// The control-stream wire; switch to the 2022 one when an HTTP request arrives
    /// on the control stream (only a 2022 server sends one there).
    #[default]
    Auto,
    /// The control-stream wire, never switching.
    Current,
    /// The Go h2rev2 as of April 2022.
    #[value(name = "2022")]
    #[serde(rename = "2022")]
    Go2022,
}

/// The log format on stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, message and fields).
    Json,
}

/// Logging flags.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Logging")]
pub struct LogArgs {
    /// Log format on stderr. The level comes from RUST_LOG (default info); h2's,
    /// hyper's and rustls's debug output appears only when RUST_LOG names them
    /// (e.g. RUST_LOG=debug,h2=debug).
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `h2rev2 demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// HTTPS port of the demo's public server on 127.0.0.1 (0: any free port).
    #[arg(long, value_name = "PORT", default_value_t = 8443)]
    pub port: u16,
    /// The demo client's id.
    #[arg(long, value_name = "ID", default_value = "demo")]
    pub id: String,
    /// Also serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// `--log-format`.
    #[command(flatten)]
    pub log: LogArgs,
}

/// The original Go CLI: `h2rev2 [options] HOST PORT`.
#[derive(Debug, Args)]
#[command(
    override_usage = "h2rev2 [-public] -cert FILE [-key FILE] [-dialer-key KEY] [-dialer-id ID] \
                      [-dialer-path PATH] [-proxy-host URL] HOST PORT",
    after_help = "In private mode, HOST and PORT tell which public server to connect to.\n\
                  In public mode, HOST and PORT are the address the server binds to."
)]
pub struct LegacyArgs {
    /// Public mode: serve and forward to the private side; otherwise connect to the
    /// public server.
    #[arg(long)]
    pub public: bool,
    /// Certificate file (public: served; private: the server certificate to trust).
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Certificate key file (public mode).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Dialer path used to dial to.
    #[arg(long, value_name = "PATH", default_value = "/revdial")]
    pub dialer_path: String,
    /// Dialer key used in the URL param.
    #[arg(long, value_name = "KEY", default_value = "dialerid")]
    pub dialer_key: String,
    /// Dialer id.
    #[arg(long, value_name = "ID", default_value = "001")]
    pub dialer_id: String,
    /// Path where the reverse proxy is listening (only `/` is supported).
    #[arg(long, value_name = "PATH", default_value = "/")]
    pub proxy_path: String,
    /// Host to reverse proxy (private mode).
    #[arg(long, value_name = "URL")]
    pub proxy_host: Option<String>,
    /// Hostname: the server to connect to (private) or the address to bind (public).
    pub host: String,
    /// Port.
    pub port: u16,
}
