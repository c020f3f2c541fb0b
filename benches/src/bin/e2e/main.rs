//! End-to-end benchmark harness of h2rev2 (issue 7).
//!
//! `cargo run --release -p benches --bin e2e [-- --smoke] [--out DIR]`
//!
//! Starts, on 127.0.0.1, three processes (this binary re-executed with a hidden
//! `--role`): a fast internal hyper server (plain and TLS ports), the public server
//! (h2rev2-tokio `Server`, TLS, with `forward_tcp` ports) and the NAT side (Listeners
//! serving `nat::relay_tcp`, `nat::serve_http_proxy`, or holding conns). Load clients run
//! in this process. Every tunnel figure is set beside the same internal server reached
//! directly, plain and TLS. Prints a table with PASS/MISS per target, writes
//! `e2e.json` and `e2e.svg` (or `e2e-smoke.*`) into `--out` (default `target/e2e`).

mod child;
mod cluster;
mod delay;
mod load;
mod report;
mod roles;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::child::{Child, Mem};
use crate::load::{ClientTls, Endpoint, LoadSpec, Proto};
use crate::report::{
    Cpu, DialRow, FAR, PLAIN, PROXY, PerItem, RELAYS, Report, RequestRow, SINGLE, Sides, TCP, TLS,
    ThroughputRow,
};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The global allocator of this binary (and so of the role processes).
const ALLOCATOR: &str = if cfg!(feature = "mimalloc") {
    "mimalloc"
} else {
    "system (glibc malloc)"
};

/// The harness's error type.
pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Parser, Debug)]
#[command(about = "End-to-end benchmark of the h2rev2 tunnel against direct connections")]
struct Args {
    /// Tiny sizes and short runs (CI): every measurement path, a few seconds in all.
    #[arg(long)]
    smoke: bool,
    /// Directory for the JSON and SVG outputs.
    #[arg(long, default_value = "target/e2e")]
    out: PathBuf,
    /// Run only these phases (comma-separated): streams-memory, sessions-memory, dial,
    /// small, single, aggregate, far, stalled. Idle and end memory always run.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Measure only these paths (comma-separated): plain, tls, tcp, proxy, relays. For
    /// profiling one path; ratios need the direct ones.
    #[arg(long, value_delimiter = ',', value_parser = ["plain", "tls", "tcp", "proxy", "relays"])]
    paths: Vec<String>,
    /// tokio worker threads of the role processes (a number, or `current` for a
    /// current-thread runtime). Default: one per CPU.
    #[arg(long)]
    role_threads: Option<String>,
    /// Extra environment of the role processes, `KEY=VALUE` (repeatable), e.g.
    /// `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=65536` for allocator experiments.
    #[arg(long, value_parser = parse_env)]
    role_env: Vec<(String, String)>,
    /// Seconds to wait after the last phase before the end memory figure (default 3;
    /// the proxies' connection pools keep idle conns for 60 s).
    #[arg(long)]
    end_wait: Option<u64>,
    /// Internal: run as a role process.
    #[arg(long, hide = true, value_enum)]
    role: Option<roles::Role>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))
}

/// Phase names for `--only`.
const PHASES: [&str; 9] = [
    "streams-memory",
    "sessions-memory",
    "dial",
    "small",
    "single",
    "aggregate",
    "far",
    "stalled",
    "cluster",
];

/// Sizes and durations of one run.
#[derive(Debug, Clone, serde::Serialize)]
struct Sizes {
    single_bytes: u64,
    aggregate_total: u64,
    aggregate_streams: Vec<usize>,
    far_bytes: u64,
    one_way_delay_ms: u64,
    small_clients: Vec<usize>,
    small_warmup_ms: u64,
    small_duration_ms: u64,
    /// Interleaved rounds per figure (each path in turn, once per round).
    rounds: usize,
    dial_n: usize,
    sessions: usize,
    streams: usize,
    /// Clients that ask for a large download through one id and never read.
    stalled_clients: usize,
    /// How long another Client's requests are measured while they sit.
    stalled_measure_ms: u64,
}

impl Sizes {
    fn full() -> Sizes {
        Sizes {
            single_bytes: 1 << 30,
            aggregate_total: 1 << 30,
            aggregate_streams: vec![16, 256],
            far_bytes: 1 << 30,
            one_way_delay_ms: 10,
            small_clients: vec![1, 50, 500],
            small_warmup_ms: 500,
            small_duration_ms: 6000,
            rounds: 3,
            dial_n: 2000,
            sessions: 1000,
            streams: 10_000,
            stalled_clients: 64,
            stalled_measure_ms: 5000,
        }
    }

    fn smoke() -> Sizes {
        Sizes {
            single_bytes: 4 << 20,
            aggregate_total: 4 << 20,
            aggregate_streams: vec![16, 256],
            far_bytes: 4 << 20,
            one_way_delay_ms: 10,
            small_clients: vec![1, 50, 500],
            small_warmup_ms: 50,
            small_duration_ms: 200,
            rounds: 1,
            dial_n: 50,
            sessions: 50,
            streams: 500,
            stalled_clients: 64,
            stalled_measure_ms: 1000,
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(role) = args.role {
        // A role logs (to the harness's stderr) only when asked, e.g.
        // `--role-env RUST_LOG=h2rev2_driver=debug`.
        if std::env::var_os("RUST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_writer(std::io::stderr)
                .init();
        }
        return match roles::run(role) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("e2e role {role:?}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // 500 clients, 1,000 Listeners and their peers' sockets; children inherit it.
    if let Err(e) = rlimit::increase_nofile_limit(1 << 20) {
        eprintln!("e2e: cannot raise RLIMIT_NOFILE: {e}");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("e2e: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("e2e: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What the harness set up.
struct Bench {
    role_env: Vec<(String, String)>,
    /// Seconds to wait before the end memory figure (`--end-wait`).
    end_wait: Option<u64>,
    /// Path labels to measure (all when empty).
    path_filter: Vec<String>,
    sizes: Sizes,
    smoke: bool,
    tls: ClientTls,
    internal: Child,
    public: Child,
    nat: Child,
    direct_plain: Endpoint,
    direct_tls: Endpoint,
    tcp_fwd: Endpoint,
    relays: Endpoint,
    http_proxy: Endpoint,
    far_plain: Endpoint,
    far_tls: Endpoint,
    far_tcp: Endpoint,
    far_proxy: Endpoint,
    report: Report,
}

fn ep(addr: SocketAddr, tls: bool, prefix: &str) -> Endpoint {
    Endpoint {
        addr,
        tls,
        prefix: prefix.to_string(),
        from: None,
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

const CMD: Duration = Duration::from_secs(30);

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn cpu_model() -> String {
    read_trim("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into())
}

async fn run(args: Args) -> Res<bool> {
    let started = Instant::now();
    let sizes = if args.smoke {
        Sizes::smoke()
    } else {
        Sizes::full()
    };
    for p in &args.only {
        if !PHASES.contains(&p.as_str()) {
            return Err(format!("--only {p}: phases are {}", PHASES.join(", ")).into());
        }
    }
    let mut role_env = args.role_env.clone();
    if let Some(t) = &args.role_threads {
        role_env.push((roles::THREADS_ENV.to_string(), t.clone()));
    }
    let mut report = Report::default();
    report.meta = report::Meta {
        role_env: role_env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        allocator: ALLOCATOR.into(),
        mode: if args.smoke { "smoke" } else { "full" }.into(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu: cpu_model(),
        loadavg_start: read_trim("/proc/loadavg"),
        kernel: read_trim("/proc/sys/kernel/osrelease"),
        link_emulation: format!(
            "in-harness delay relay, {} ms each way on the Listener-to-public-server TCP \
             connection (and on the direct baseline's); {}",
            sizes.one_way_delay_ms,
            netem_probe().await
        ),
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        sizes: serde_json::to_value(&sizes)?,
        ..Default::default()
    };
    eprintln!("e2e: {} mode; setting up", report.meta.mode);
    let mut b = setup(sizes, args.smoke, report, role_env).await?;
    b.end_wait = args.end_wait;
    b.path_filter = args
        .paths
        .iter()
        .map(|p| match p.as_str() {
            "plain" => PLAIN,
            "tls" => TLS,
            "tcp" => TCP,
            "relays" => RELAYS,
            _ => PROXY,
        })
        .map(str::to_string)
        .collect();

    type Phase = for<'a> fn(
        &'a mut Bench,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Res<()>> + Send + 'a>,
    >;
    // Small requests come before the bulk transfers, so "RSS after 500 clients" is not
    // the high-water mark of 256 concurrent 4 MiB downloads.
    let phases: [(&str, Phase, u64); 10] = [
        ("idle", |b| Box::pin(b.idle_memory()), 60),
        ("streams-memory", |b| Box::pin(b.streams_memory()), 300),
        ("sessions-memory", |b| Box::pin(b.sessions_memory()), 600),
        ("dial", |b| Box::pin(b.dial_latency()), 120),
        ("small", |b| Box::pin(b.small_requests()), 600),
        ("single", |b| Box::pin(b.single_stream()), 300),
        ("aggregate", |b| Box::pin(b.aggregate()), 300),
        ("far", |b| Box::pin(b.far_link()), 300),
        ("stalled", |b| Box::pin(b.stalled_clients()), 120),
        ("cluster", |b| Box::pin(b.cluster_forwarding()), 300),
    ];
    for (name, phase, limit) in phases {
        if name != "idle" && !args.only.is_empty() && !args.only.iter().any(|o| o == name) {
            continue;
        }
        eprintln!("e2e: {name} (t+{:.1}s)", started.elapsed().as_secs_f64());
        let limit = Duration::from_secs(if b.smoke { limit.min(60) } else { limit });
        match tokio::time::timeout(limit, phase(&mut b)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => b.report.errors.push(format!("{name}: {e}")),
            Err(_) => b
                .report
                .errors
                .push(format!("{name}: not done within {limit:?}")),
        }
        match b.sides() {
            Ok(sides) => b.report.memory.timeline.push(report::Snapshot {
                after: name.to_string(),
                sides,
            }),
            Err(e) => b.report.errors.push(format!("{name}: memory: {e}")),
        }
    }
    if let Err(e) = b.end_memory().await {
        b.report.errors.push(format!("end memory: {e}"));
    }

    let Bench {
        mut report,
        internal,
        public,
        nat,
        ..
    } = b;
    for c in [internal, public, nat] {
        c.stop().await;
    }
    report.meta.loadavg_end = read_trim("/proc/loadavg");
    report.meta.wall_secs = started.elapsed().as_secs_f64();
    report.evaluate();
    print!("{}", report.table());

    std::fs::create_dir_all(&args.out)?;
    let stem = if args.smoke { "e2e-smoke" } else { "e2e" };
    let json_path = args.out.join(format!("{stem}.json"));
    let svg_path = args.out.join(format!("{stem}.svg"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)?;
    std::fs::write(&svg_path, report.svg()?)?;
    println!("wrote {} and {}", json_path.display(), svg_path.display());
    Ok(report.errors.is_empty())
}

/// Whether `tc netem` could be used (in a network namespace the harness makes and
/// removes at once). The harness always uses its delay relay, so that every machine
/// measures the same thing; this only says what the machine offers.
async fn netem_probe() -> String {
    let run = |args: Vec<String>| async move {
        match tokio::process::Command::new(&args[0])
            .args(&args[1..])
            .stdin(std::process::Stdio::null())
            .output()
            .await
        {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
            Err(e) => Err(format!("{}: {e}", args[0])),
        }
    };
    let ns = format!("h2rev2-e2e-probe-{}", std::process::id());
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    if let Err(e) = run(s(&["ip", "netns", "add", &ns])).await {
        return format!("tc netem not tried: cannot create a network namespace ({e})");
    }
    let r = run(s(&[
        "ip", "netns", "exec", &ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay",
        "10ms",
    ]))
    .await;
    let _ = run(s(&["ip", "netns", "del", &ns])).await;
    match r {
        Ok(()) => "tc netem is available on this machine but not used".into(),
        Err(e) => format!("tc netem unavailable on this kernel ({e})"),
    }
}

async fn setup(
    sizes: Sizes,
    smoke: bool,
    report: Report,
    role_env: Vec<(String, String)>,
) -> Res<Bench> {
    let internal = Child::spawn("internal", &role_env).await?;
    let public = Child::spawn("public", &role_env).await?;
    let mut nat = Child::spawn("nat", &role_env).await?;
    eprintln!(
        "e2e: pids: internal {}, public {}, nat {}",
        internal.pid, public.pid, nat.pid
    );
    let plain = local(internal.port("plain")?);
    let itls = local(internal.port("tls")?);
    let paddr = local(public.port("tls")?);
    let public_url = roles::public_url(paddr);
    let delay = Duration::from_millis(sizes.one_way_delay_ms);
    let far_public = delay::spawn(paddr, delay).await?;
    let far_url = roles::public_url(far_public);
    let listeners = [
        ("tcp", &public_url, format!("tcp:{plain}"), 2),
        ("http", &public_url, format!("http:http://{plain}"), 2),
        ("dial-spare", &public_url, "hold".to_string(), 2),
        ("dial-nospare", &public_url, "hold".to_string(), 0),
        ("far-tcp", &far_url, format!("tcp:{plain}"), 2),
        ("far-http", &far_url, format!("http:http://{plain}"), 2),
    ];
    let base_sessions = listeners.len();
    for (id, url, service, spares) in &listeners {
        nat.cmd(&format!("listen {id} {url} {service} {spares}"), CMD)
            .await?;
    }
    let mut public = public;
    let fwd = |v: serde_json::Value| -> Res<u16> {
        v["port"]
            .as_u64()
            .map(|p| p as u16)
            .ok_or_else(|| "no port".into())
    };
    let tcp_port = fwd(public.cmd("forward tcp", CMD).await?)?;
    let nat_relay = fwd(nat.cmd(&format!("relay {plain}"), CMD).await?)?;
    let relays_port = fwd(public
        .cmd(&format!("relay {}", local(nat_relay)), CMD)
        .await?)?;
    let far_tcp_port = fwd(public.cmd("forward far-tcp", CMD).await?)?;
    public
        .cmd(&format!("wait-sessions {base_sessions} 20000"), CMD)
        .await?;
    let far_plain = delay::spawn(plain, delay).await?;
    let far_tls = delay::spawn(itls, delay).await?;
    let mut b = Bench {
        role_env,
        end_wait: None,
        path_filter: Vec::new(),
        tls: ClientTls::new()?,
        sizes,
        smoke,
        internal,
        public,
        nat,
        direct_plain: ep(plain, false, ""),
        direct_tls: ep(itls, true, ""),
        tcp_fwd: ep(local(tcp_port), false, ""),
        relays: ep(local(relays_port), false, ""),
        http_proxy: ep(paddr, true, "/proxy/http"),
        far_plain: ep(far_plain, false, ""),
        far_tls: ep(far_tls, true, ""),
        far_tcp: ep(local(far_tcp_port), false, ""),
        far_proxy: ep(paddr, true, "/proxy/far-http"),
        report,
    };
    b.warm_up().await?;
    Ok(b)
}

impl Bench {
    fn selected<const N: usize>(
        &self,
        all: [(&'static str, Endpoint); N],
    ) -> Vec<(&'static str, Endpoint)> {
        all.into_iter()
            .filter(|(name, _)| {
                self.path_filter.is_empty() || self.path_filter.iter().any(|p| p == name)
            })
            .collect()
    }

    fn paths(&self) -> Vec<(&'static str, Endpoint)> {
        self.selected([
            (PLAIN, self.direct_plain.clone()),
            (TLS, self.direct_tls.clone()),
            (TCP, self.tcp_fwd.clone()),
            (PROXY, self.http_proxy.clone()),
            (RELAYS, self.relays.clone()),
        ])
    }

    fn far_paths(&self) -> Vec<(&'static str, Endpoint)> {
        self.selected([
            (PLAIN, self.far_plain.clone()),
            (TLS, self.far_tls.clone()),
            (TCP, self.far_tcp.clone()),
            (PROXY, self.far_proxy.clone()),
        ])
    }

    /// One small request per path and version: everything answers before measuring.
    async fn warm_up(&mut self) -> Res<()> {
        let all: Vec<_> = self.paths().into_iter().chain(self.far_paths()).collect();
        for (name, ep) in all {
            for proto in [Proto::H1, Proto::H2] {
                let mut c = load::Client::open(&ep, proto, &self.tls)
                    .await
                    .map_err(|e| format!("warm-up {name} {}: {e}", proto.label()))?;
                let (status, n) = c.get("/small").await?;
                if status != http::StatusCode::OK || n as usize != roles::SMALL_BODY.len() {
                    return Err(format!("warm-up {name}: status {status}, {n} bytes").into());
                }
            }
        }
        Ok(())
    }

    /// CPU seconds used so far by each process.
    fn cpu(&self) -> Res<Cpu> {
        Ok(Cpu {
            client: child::cpu_secs(std::process::id())?,
            public: child::cpu_secs(self.public.pid)?,
            nat: child::cpu_secs(self.nat.pid)?,
            internal: child::cpu_secs(self.internal.pid)?,
        })
    }

    fn sides(&self) -> Res<Sides> {
        Ok(Sides {
            public: self.public.mem()?,
            nat: self.nat.mem()?,
        })
    }

    async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(if self.smoke { 200 } else { 1000 })).await;
    }

    async fn idle_memory(&mut self) -> Res<()> {
        self.settle().await;
        self.report.memory.idle = self.sides()?;
        self.report.memory.internal_idle = self.internal.mem()?;
        Ok(())
    }

    async fn dial_latency(&mut self) -> Res<()> {
        let n = self.sizes.dial_n;
        // A 2 ms pause lets the Listener replace the spare the previous dial took.
        for (id, with_spare, pause_us) in [("dial-spare", true, 2000), ("dial-nospare", false, 0)] {
            let stats = self
                .public
                .cmd(
                    &format!("dial-bench {id} {n} {pause_us}"),
                    Duration::from_secs(120),
                )
                .await?;
            self.report.dial.push(DialRow { with_spare, stats });
        }
        Ok(())
    }

    /// Each round downloads once on every path, in turn, so that a change of the
    /// machine's load during the phase falls on every path alike. A path's figure is
    /// its bytes over its time summed over the rounds.
    async fn throughput(
        &mut self,
        scenario: &str,
        paths: Vec<(&str, Endpoint)>,
        streams: usize,
        bytes_each: u64,
        rounds: usize,
    ) -> Res<()> {
        let mut per_path: Vec<Vec<load::Transfer>> = vec![Vec::new(); paths.len()];
        let mut cpu = vec![Cpu::default(); paths.len()];
        for _ in 0..rounds.max(1) {
            for (i, (name, ep)) in paths.iter().enumerate() {
                let c0 = self.cpu()?;
                let t = load::download(ep, &self.tls, streams, bytes_each)
                    .await
                    .map_err(|e| format!("{scenario}, {name}: {e}"))?;
                cpu[i] = cpu[i].add(&self.cpu()?.since(&c0));
                per_path[i].push(t);
            }
        }
        for (((name, _), ts), cpu) in paths.iter().zip(per_path).zip(cpu) {
            let bytes: u64 = ts.iter().map(|t| t.bytes).sum();
            let secs: f64 = ts.iter().map(|t| t.secs).sum();
            let row = ThroughputRow {
                scenario: scenario.to_string(),
                streams,
                path: name.to_string(),
                bytes,
                secs,
                mb_s: bytes as f64 / secs / 1e6,
                rounds: ts.iter().map(|t| t.mb_per_s()).collect(),
                cpu,
            };
            eprintln!(
                "e2e:   {scenario:<26} {name:<13} {:>9.1} MB/s (rounds {})",
                row.mb_s,
                report::spread(&row.rounds)
            );
            self.report.throughput.push(row);
        }
        Ok(())
    }

    async fn single_stream(&mut self) -> Res<()> {
        let paths = self.paths();
        self.throughput(SINGLE, paths, 1, self.sizes.single_bytes, self.sizes.rounds)
            .await
    }

    async fn aggregate(&mut self) -> Res<()> {
        for streams in self.sizes.aggregate_streams.clone() {
            let paths = self.paths();
            let each = (self.sizes.aggregate_total / streams as u64).max(1);
            let rounds = self.sizes.rounds;
            self.throughput(&format!("{streams} streams"), paths, streams, each, rounds)
                .await?;
        }
        Ok(())
    }

    async fn far_link(&mut self) -> Res<()> {
        let paths = self.far_paths();
        self.throughput(FAR, paths, 1, self.sizes.far_bytes, self.sizes.rounds)
            .await
    }

    /// Like [`Bench::throughput`], in interleaved rounds; a path's rate is its
    /// requests over its measured time, its latency histogram the merge of its rounds.
    async fn small_requests(&mut self) -> Res<()> {
        let rounds = self.sizes.rounds.max(1);
        let spec = |proto, clients| LoadSpec {
            proto,
            clients,
            warmup: Duration::from_millis(self.sizes.small_warmup_ms),
            duration: Duration::from_millis(self.sizes.small_duration_ms) / rounds as u32,
        };
        let max_clients = self.sizes.small_clients.iter().copied().max().unwrap_or(0);
        for proto in [Proto::H1, Proto::H2] {
            for clients in self.sizes.small_clients.clone() {
                let sample = proto == Proto::H1 && clients == max_clients;
                let sampler = sample.then(|| PeakSampler::start(self.public.pid, self.nat.pid));
                let paths = self.paths();
                let mut per_path: Vec<Vec<load::LoadResult>> = vec![Vec::new(); paths.len()];
                let mut cpu = vec![Cpu::default(); paths.len()];
                for _ in 0..rounds {
                    for (i, (name, ep)) in paths.iter().enumerate() {
                        let c0 = self.cpu()?;
                        let r = load::small_requests(ep, &self.tls, spec(proto, clients))
                            .await
                            .map_err(|e| format!("{} x{clients} {name}: {e}", proto.label()))?;
                        cpu[i] = cpu[i].add(&self.cpu()?.since(&c0));
                        per_path[i].push(r);
                    }
                }
                for (((name, _), rs), cpu) in paths.iter().zip(per_path).zip(cpu) {
                    let mut hist = load::new_histogram();
                    for r in &rs {
                        hist.add(&r.hist)?;
                    }
                    let requests: u64 = rs.iter().map(|r| r.requests).sum();
                    let errors: u64 = rs.iter().map(|r| r.errors).sum();
                    let secs = spec(proto, clients).duration.as_secs_f64() * rs.len() as f64;
                    let row = RequestRow {
                        proto: proto.label().into(),
                        clients,
                        path: name.to_string(),
                        requests,
                        rps: requests as f64 / secs,
                        p50_us: load::quantile_us(&hist, 0.5),
                        p99_us: load::quantile_us(&hist, 0.99),
                        p999_us: load::quantile_us(&hist, 0.999),
                        errors,
                        rounds: rs.iter().map(|r| r.rps).collect(),
                        cpu,
                        requests_all: rs.iter().map(|r| r.requests_all).sum(),
                    };
                    eprintln!(
                        "e2e:   {} x{clients:<4} {name:<13} {:>9.0} req/s (rounds {}) p99 {:.3} ms, {} errors",
                        row.proto,
                        row.rps,
                        report::spread(&row.rounds),
                        row.p99_us / 1e3,
                        row.errors
                    );
                    if errors > 0 {
                        self.report.errors.push(format!(
                            "{} x{clients} {name}: {errors} failed requests",
                            row.proto
                        ));
                    }
                    if requests == 0 {
                        self.report
                            .errors
                            .push(format!("{} x{clients} {name}: no request done", row.proto));
                    }
                    self.report.requests.push(row);
                }
                if let Some(s) = sampler {
                    self.report.memory.peak_500_clients = s.stop().await;
                    // The clients' connections are closed; let both sides notice.
                    self.settle().await;
                    self.report.memory.after_500_clients = self.sides()?;
                }
            }
        }
        Ok(())
    }

    /// Small requests through the replica of a cluster that holds the session and
    /// through another one that forwards to it (see `cluster.rs`), interleaved.
    async fn cluster_forwarding(&mut self) -> Res<()> {
        let internal = local(self.internal.port("plain")?);
        let c = cluster::Cluster::start(internal).await?;
        let (owner, forwarded) = c.endpoints();
        let paths = [("cluster-owner", owner), ("cluster-forwarded", forwarded)];
        // Both answer (the Listener connects, the registry learns of it) first.
        for (name, ep) in &paths {
            let mut last = String::new();
            let mut ok = false;
            for _ in 0..100 {
                match load::Client::open(ep, Proto::H2, &self.tls).await {
                    Ok(mut cl) => match cl.get("/small").await {
                        Ok((http::StatusCode::OK, _)) => {
                            ok = true;
                            break;
                        }
                        Ok((s, _)) => last = s.to_string(),
                        Err(e) => last = e.to_string(),
                    },
                    Err(e) => last = e.to_string(),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if !ok {
                c.stop().await;
                return Err(format!("{name} never answered: {last}").into());
            }
        }
        let rounds = self.sizes.rounds.max(1);
        let clients = 50;
        let spec = LoadSpec {
            proto: Proto::H2,
            clients,
            warmup: Duration::from_millis(self.sizes.small_warmup_ms),
            duration: Duration::from_millis(self.sizes.small_duration_ms) / rounds as u32,
        };
        let mut per_path: Vec<Vec<load::LoadResult>> = vec![Vec::new(); paths.len()];
        for _ in 0..rounds {
            for (i, (name, ep)) in paths.iter().enumerate() {
                match load::small_requests(ep, &self.tls, spec).await {
                    Ok(r) => per_path[i].push(r),
                    Err(e) => {
                        c.stop().await;
                        return Err(format!("{name}: {e}").into());
                    }
                }
            }
        }
        c.stop().await;
        let mut rps = Vec::new();
        for ((name, _), rs) in paths.iter().zip(per_path) {
            let mut hist = load::new_histogram();
            for r in &rs {
                hist.add(&r.hist)?;
            }
            let requests: u64 = rs.iter().map(|r| r.requests).sum();
            let errors: u64 = rs.iter().map(|r| r.errors).sum();
            let secs = spec.duration.as_secs_f64() * rs.len() as f64;
            let row = RequestRow {
                proto: Proto::H2.label().into(),
                clients,
                path: name.to_string(),
                requests,
                rps: requests as f64 / secs,
                p50_us: load::quantile_us(&hist, 0.5),
                p99_us: load::quantile_us(&hist, 0.99),
                p999_us: load::quantile_us(&hist, 0.999),
                errors,
                rounds: rs.iter().map(|r| r.rps).collect(),
                cpu: Cpu::default(),
                requests_all: rs.iter().map(|r| r.requests_all).sum(),
            };
            eprintln!(
                "e2e:   h2 x{clients:<4} {name:<18} {:>9.0} req/s p99 {:.3} ms, {} errors",
                row.rps,
                row.p99_us / 1e3,
                row.errors
            );
            if errors > 0 {
                self.report
                    .errors
                    .push(format!("h2 x{clients} {name}: {errors} failed requests"));
            }
            rps.push((row.rps, row.p99_us));
            self.report.requests.push(row);
        }
        if let [(owner_rps, owner_p99), (fwd_rps, fwd_p99)] = rps[..] {
            eprintln!(
                "e2e:   forwarding through another replica: {:.2}x the owner's request rate, \
                 p99 {:.2}x",
                fwd_rps / owner_rps.max(1e-9),
                fwd_p99 / owner_p99.max(1e-9)
            );
        }
        Ok(())
    }

    /// A fresh public server and NAT process with one Listener `hold` (2 spares, conns
    /// held open), so per-item memory is not blurred by what earlier load left in the
    /// allocator.
    async fn fresh_pair(&self) -> Res<Pair> {
        let public = Child::spawn("public", &self.role_env).await?;
        let mut nat = Child::spawn("nat", &self.role_env).await?;
        let url = roles::public_url(local(public.port("tls")?));
        nat.cmd(&format!("listen hold {url} hold 2"), CMD).await?;
        let mut pair = Pair { public, nat, url };
        pair.public.cmd("wait-sessions 1 20000", CMD).await?;
        // Both sides have served a dial, so lazily made state exists before "before".
        pair.public.cmd("dial-bench hold 10 1000", CMD).await?;
        self.settle().await;
        Ok(pair)
    }

    async fn streams_memory(&mut self) -> Res<()> {
        let n = self.sizes.streams;
        let mut p = PerItem {
            n,
            ..Default::default()
        };
        let mut pair = self.fresh_pair().await?;
        let held0 = pair.wait_held(|_| true, CMD).await?;
        p.before = pair.sides()?;
        pair.public
            .cmd(&format!("hold hold {n} 256"), Duration::from_secs(240))
            .await?;
        pair.wait_held(|h| h >= held0 + n as u64, Duration::from_secs(60))
            .await?;
        self.settle().await;
        p.with = pair.sides()?;
        pair.public.cmd("release", CMD).await?;
        pair.wait_held(|h| h <= held0, Duration::from_secs(60))
            .await?;
        self.settle().await;
        p.after = pair.sides()?;
        p.compute();
        self.report.memory.streams = p;
        pair.stop().await;
        Ok(())
    }

    async fn sessions(&mut self, spares: usize) -> Res<PerItem> {
        let n = self.sizes.sessions;
        let mut p = PerItem {
            n,
            ..Default::default()
        };
        let mut pair = self.fresh_pair().await?;
        p.before = pair.sides()?;
        pair.nat
            .cmd(
                &format!("idle {n} {} idle {spares}", pair.url),
                Duration::from_secs(240),
            )
            .await?;
        pair.public
            .cmd(
                &format!("wait-sessions {} 60000", 1 + n),
                Duration::from_secs(70),
            )
            .await?;
        self.settle().await;
        p.with = pair.sides()?;
        pair.nat.cmd("close-idle", CMD).await?;
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let s = pair.public.cmd("stats", CMD).await?;
            if s["sessions"].as_u64().unwrap_or(u64::MAX) <= 1 {
                break;
            }
            if Instant::now() > until {
                return Err(format!("sessions still open after close: {s}").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.settle().await;
        p.after = pair.sides()?;
        p.compute();
        pair.stop().await;
        Ok(p)
    }

    async fn sessions_memory(&mut self) -> Res<()> {
        // The Listener's default: 2 spare streams per session (the target's figure).
        self.report.memory.sessions = self.sessions(2).await?;
        // Without spares, for the breakdown: connection alone vs its parked streams.
        self.report.memory.sessions_no_spares = self.sessions(0).await?;
        Ok(())
    }

    /// Issue 11, item 2: `stalled_clients` HTTP/2 Clients (one connection each, each
    /// from its own address, so the per-address cap plays no part) ask
    /// for a 1 GiB download through one id and never read; meanwhile another Client
    /// does `GET /small` to the same id back to back. Fresh processes, so the public
    /// server's RSS above its own idle is what the stalled Clients cost.
    async fn stalled_clients(&mut self) -> Res<()> {
        let public = Child::spawn("public", &self.role_env).await?;
        let mut nat = Child::spawn("nat", &self.role_env).await?;
        let paddr = local(public.port("tls")?);
        let url = roles::public_url(paddr);
        let plain = local(self.internal.port("plain")?);
        nat.cmd(&format!("listen stall {url} http:http://{plain} 2"), CMD)
            .await?;
        let mut pair = Pair { public, nat, url };
        pair.public.cmd("wait-sessions 1 20000", CMD).await?;
        let ep = ep(paddr, true, "/proxy/stall");
        let mut other = load::Client::open(&ep, Proto::H2, &self.tls).await?;
        other.get("/small").await?;
        self.settle().await;
        let mut row = report::StalledRow {
            clients: self.sizes.stalled_clients,
            idle: pair.sides()?,
            ..Default::default()
        };
        let sampler = PeakSampler::start(pair.public.pid, pair.nat.pid);
        let held = load::hold_downloads(&ep, &self.tls, row.clients, 1 << 30).await?;
        // Let every stalled download fill what it can (its Client's windows, the
        // buffers on the way): measured once the public and NAT processes are quiet.
        row.fill_secs = quiet(&[pair.public.pid, pair.nat.pid], Duration::from_secs(20)).await?;
        let measured = load::serial_latency(
            &mut other,
            "/small",
            Duration::from_millis(self.sizes.stalled_measure_ms),
            Duration::from_secs(5),
        )
        .await;
        row.during = pair.sides()?;
        row.answered = held.answered.load(std::sync::atomic::Ordering::Relaxed);
        drop(held);
        row.peak = sampler.stop().await;
        self.settle().await;
        self.settle().await;
        row.after = pair.sides()?;
        row.requests = measured.hist.len();
        row.errors = measured.errors;
        row.p50_us = load::quantile_us(&measured.hist, 0.5);
        row.p99_us = load::quantile_us(&measured.hist, 0.99);
        row.max_us = measured.hist.max() as f64 / 1000.0;
        eprintln!(
            "e2e:   {} stalled Clients ({} answered, quiet after {:.1} s): another Client p99 {:.1} ms ({} requests, {} errors), public RSS idle {:.1} peak {:.1} after {:.1} MiB",
            row.clients,
            row.answered,
            row.fill_secs,
            row.p99_us / 1e3,
            row.requests,
            row.errors,
            row.idle.public.rss_mib(),
            row.peak.public.rss_mib(),
            row.after.public.rss_mib()
        );
        if row.requests == 0 {
            self.report
                .errors
                .push("stalled: the other Client finished no request".into());
        }
        self.report.stalled = Some(row);
        pair.stop().await;
        Ok(())
    }

    async fn end_memory(&mut self) -> Res<()> {
        let wait = self.end_wait.unwrap_or(if self.smoke { 1 } else { 3 });
        tokio::time::sleep(Duration::from_secs(wait)).await;
        self.report.memory.end = self.sides()?;
        Ok(())
    }
}

/// Waits until the processes `pids` together use under 10% of a CPU over 200 ms, at
/// most `limit`; returns how long that took, in seconds.
async fn quiet(pids: &[u32], limit: Duration) -> Res<f64> {
    let t0 = Instant::now();
    let busy = || -> Res<f64> { pids.iter().map(|&p| child::cpu_secs(p)).sum() };
    loop {
        let c0 = busy()?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        if busy()? - c0 < 0.02 || t0.elapsed() > limit {
            return Ok(t0.elapsed().as_secs_f64());
        }
    }
}

/// A public server and a NAT process of their own (memory phases).
struct Pair {
    public: Child,
    nat: Child,
    url: String,
}

impl Pair {
    fn sides(&self) -> Res<Sides> {
        Ok(Sides {
            public: self.public.mem()?,
            nat: self.nat.mem()?,
        })
    }

    /// Polls the NAT side's count of held conns until `ok(count)`, at most `limit`.
    async fn wait_held(&mut self, ok: impl Fn(u64) -> bool, limit: Duration) -> Res<u64> {
        let until = Instant::now() + limit;
        loop {
            let v = self.nat.cmd("held", CMD).await?;
            let n = v["held"].as_u64().ok_or("no held count")?;
            if ok(n) {
                return Ok(n);
            }
            if Instant::now() > until {
                return Err(format!("NAT side holds {n} conns after {limit:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.public.stop().await;
        self.nat.stop().await;
    }
}

/// Samples both sides' RSS every 50 ms and keeps the highest.
struct PeakSampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Sides>,
}

impl PeakSampler {
    fn start(public: u32, nat: u32) -> PeakSampler {
        let (stop, mut rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut peak = Sides::default();
            let max = |a: Mem, b: Mem| if b.rss_kib > a.rss_kib { b } else { a };
            loop {
                if let (Ok(p), Ok(n)) = (child::mem_of(public), child::mem_of(nat)) {
                    peak.public = max(peak.public, p);
                    peak.nat = max(peak.nat, n);
                }
                tokio::select! {
                    _ = &mut rx => return peak,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        });
        PeakSampler { stop, task }
    }

    async fn stop(self) -> Sides {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}
