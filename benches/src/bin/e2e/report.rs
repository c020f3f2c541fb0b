//! Results: the data model (written as JSON), the printed table, the targets of issue 7
//! with PASS/MISS, and the SVG chart of tunnel/direct ratios.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::child::Mem;

/// Path labels: how a client reaches the internal server.
pub const PLAIN: &str = "direct plain";
/// The internal server's TLS port.
pub const TLS: &str = "direct TLS";
/// Plain TCP to a `Server::forward_tcp` port; `nat::relay_tcp` on the NAT side.
pub const TCP: &str = "TCP fwd";
/// HTTPS to the public server's `/proxy/{id}/`; `nat::serve_http_proxy` on the NAT side.
pub const PROXY: &str = "HTTP proxy";

/// Plain TCP through two relay processes (public, then NAT) to the internal server's
/// plain port: the floor of any two-process tunnel, with no TLS and no HTTP/2.
pub const RELAYS: &str = "2 TCP relays";

/// Scenario names of throughput rows.
pub const SINGLE: &str = "single stream";
/// Single stream over the emulated 20 ms round-trip link.
pub const FAR: &str = "single stream, 20 ms RTT";

/// Machine and run facts.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Meta {
    /// `full` or `smoke`.
    pub mode: String,
    /// The command line.
    pub command: String,
    /// Logical CPUs.
    pub nproc: usize,
    /// From /proc/cpuinfo.
    pub cpu: String,
    /// /proc/loadavg at the start and at the end.
    pub loadavg_start: String,
    /// /proc/loadavg at the end.
    pub loadavg_end: String,
    /// Kernel release.
    pub kernel: String,
    /// How the 20 ms link was made.
    pub link_emulation: String,
    /// Seconds since the epoch at the start.
    pub started_unix: u64,
    /// Wall time of the whole run.
    pub wall_secs: f64,
    /// Sizes and durations used.
    pub sizes: Value,
    /// Extra environment of the role processes.
    pub role_env: Vec<String>,
    /// The global allocator of all processes.
    pub allocator: String,
}

/// CPU seconds used by each process during a measurement.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Cpu {
    /// The harness (load clients; for the 20 ms link also the delay relays).
    pub client: f64,
    /// The public server process.
    pub public: f64,
    /// The NAT process.
    pub nat: f64,
    /// The internal server process.
    pub internal: f64,
}

impl Cpu {
    /// All processes.
    pub fn total(&self) -> f64 {
        self.client + self.public + self.nat + self.internal
    }

    /// `self - earlier`.
    pub fn since(&self, earlier: &Cpu) -> Cpu {
        Cpu {
            client: self.client - earlier.client,
            public: self.public - earlier.public,
            nat: self.nat - earlier.nat,
            internal: self.internal - earlier.internal,
        }
    }

    /// `self + other`.
    pub fn add(&self, other: &Cpu) -> Cpu {
        Cpu {
            client: self.client + other.client,
            public: self.public + other.public,
            nat: self.nat + other.nat,
            internal: self.internal + other.internal,
        }
    }

    /// Each figure times `k`.
    pub fn scale(&self, k: f64) -> Cpu {
        Cpu {
            client: self.client * k,
            public: self.public * k,
            nat: self.nat * k,
            internal: self.internal * k,
        }
    }

    /// `client/public/nat/internal` with `d` decimals.
    fn parts(&self, d: usize) -> String {
        format!(
            "{:.d$}/{:.d$}/{:.d$}/{:.d$}",
            self.client, self.public, self.nat, self.internal
        )
    }
}

/// A throughput figure.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputRow {
    /// `single stream`, `16 streams`, …
    pub scenario: String,
    /// Concurrent streams.
    pub streams: usize,
    /// Path label.
    pub path: String,
    /// Bytes received.
    pub bytes: u64,
    /// Seconds.
    pub secs: f64,
    /// Decimal MB/s (all rounds).
    pub mb_s: f64,
    /// MB/s of each round.
    pub rounds: Vec<f64>,
    /// CPU used by each process over all rounds, seconds.
    pub cpu: Cpu,
}

impl ThroughputRow {
    /// CPU nanoseconds per byte moved, each process.
    pub fn cpu_ns_per_byte(&self) -> Cpu {
        self.cpu.scale(1e9 / self.bytes.max(1) as f64)
    }
}

/// A small-request figure.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRow {
    /// `h1` or `h2`.
    pub proto: String,
    /// Concurrent clients (HTTP/1.1 connections or HTTP/2 streams in flight).
    pub clients: usize,
    /// Path label.
    pub path: String,
    /// Requests measured.
    pub requests: u64,
    /// Requests per second.
    pub rps: f64,
    /// Latency quantiles, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Failed requests.
    pub errors: u64,
    /// Requests per second of each round.
    pub rounds: Vec<f64>,
    /// CPU used by each process over all rounds (warm-up included), seconds.
    pub cpu: Cpu,
    /// Requests done over all rounds, warm-up included (the CPU's denominator).
    pub requests_all: u64,
}

impl RequestRow {
    /// CPU microseconds per request, each process.
    pub fn cpu_us_per_request(&self) -> Cpu {
        self.cpu.scale(1e6 / self.requests_all.max(1) as f64)
    }
}

/// Dial latency figures (in the public process).
#[derive(Debug, Clone, Serialize)]
pub struct DialRow {
    /// A spare stream was parked when each dial started.
    pub with_spare: bool,
    /// `n`, `mean_us`, `p50_us`, `p90_us`, `p99_us`, `p999_us`, `max_us`.
    pub stats: Value,
}

/// RSS of the public and NAT processes at one moment.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Sides {
    /// The public server process.
    pub public: Mem,
    /// The NAT process (its Listeners and services).
    pub nat: Mem,
}

/// A per-item memory measurement (sessions or streams).
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct PerItem {
    /// How many items were open.
    pub n: usize,
    /// Before opening them.
    pub before: Sides,
    /// With all of them open.
    pub with: Sides,
    /// After closing them.
    pub after: Sides,
    /// (with - before) / n, KiB, public side.
    pub public_kib_each: f64,
    /// (with - before) / n, KiB, NAT side.
    pub nat_kib_each: f64,
}

impl PerItem {
    /// Fills the per-item figures from the snapshots.
    pub fn compute(&mut self) {
        let each = |a: Mem, b: Mem| (b.rss_kib as f64 - a.rss_kib as f64) / self.n.max(1) as f64;
        self.public_kib_each = each(self.before.public, self.with.public);
        self.nat_kib_each = each(self.before.nat, self.with.nat);
    }
}

/// RSS after a phase.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Snapshot {
    /// The phase.
    pub after: String,
    /// RSS of both sides.
    pub sides: Sides,
}

/// Memory figures.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Memory {
    /// Everything up and warmed, no load.
    pub idle: Sides,
    /// The internal server, idle (for reference).
    pub internal_idle: Mem,
    /// Highest RSS sampled while 500 HTTP/1.1 clients ran.
    pub peak_500_clients: Sides,
    /// Right after the 500-client runs ended.
    pub after_500_clients: Sides,
    /// Concurrent streams held open (Server::dial in the public process, a reading
    /// task per conn on the NAT side).
    pub streams: PerItem,
    /// Idle Listeners (sessions) on one public server, each with its own HTTP/2
    /// connection and the default 2 spare streams.
    pub sessions: PerItem,
    /// The same with no spare streams (what the connection alone costs).
    pub sessions_no_spares: PerItem,
    /// Both sides after each phase of the main processes.
    pub timeline: Vec<Snapshot>,
    /// At the end, after every load.
    pub end: Sides,
}

/// A target of issue 7 and how the run did.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is measured.
    pub name: String,
    /// The figure.
    pub value: f64,
    /// `>=` or `<`.
    pub op: &'static str,
    /// The bound.
    pub bound: f64,
    /// Unit of value and bound (`x` for ratios).
    pub unit: &'static str,
    /// Met.
    pub pass: bool,
}

impl Target {
    fn new(
        name: impl Into<String>,
        value: Option<f64>,
        op: &'static str,
        bound: f64,
        unit: &'static str,
    ) -> Target {
        let value = value.unwrap_or(f64::NAN);
        let pass = match op {
            ">=" => value >= bound,
            _ => value < bound,
        };
        Target {
            name: name.into(),
            value,
            op,
            bound,
            unit,
            pass,
        }
    }
}

/// One bar of the chart: a tunnel figure over its direct baseline.
#[derive(Debug, Clone, Serialize)]
pub struct RatioBar {
    /// What it shows.
    pub label: String,
    /// tunnel / direct.
    pub ratio: f64,
    /// The target ratio, if the issue sets one.
    pub target: Option<f64>,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    /// Machine and run facts.
    pub meta: Meta,
    /// Throughput rows.
    pub throughput: Vec<ThroughputRow>,
    /// Small-request rows.
    pub requests: Vec<RequestRow>,
    /// Dial latency.
    pub dial: Vec<DialRow>,
    /// Memory.
    pub memory: Memory,
    /// Ratios drawn in the chart.
    pub ratios: Vec<RatioBar>,
    /// Targets with PASS/MISS.
    pub targets: Vec<Target>,
    /// Clients that stop reading, and what they cost another Client (issue 11).
    pub stalled: Option<StalledRow>,
    /// Phases that failed, with why.
    pub errors: Vec<String>,
}

/// The stalled-Clients phase: HTTP/2 Clients that never read a large download through
/// one id, and another Client's serial requests to the same id meanwhile.
#[derive(Debug, Clone, Serialize, Default)]
pub struct StalledRow {
    /// Stalled Clients (one connection each).
    pub clients: usize,
    /// Of those, how many had their response headers (the rest wait for them).
    pub answered: usize,
    /// Seconds until both sides were quiet after they came (their buffers full).
    pub fill_secs: f64,
    /// Both sides before the stalled Clients came.
    pub idle: Sides,
    /// Highest RSS while they sat.
    pub peak: Sides,
    /// While they sat, after the measurement.
    pub during: Sides,
    /// After they left.
    pub after: Sides,
    /// The other Client's requests done (errors included).
    pub requests: u64,
    /// Of those, failed or over 5 s.
    pub errors: u64,
    /// The other Client's latency, in µs.
    pub p50_us: f64,
    /// p99 in µs.
    pub p99_us: f64,
    /// Slowest, in µs.
    pub max_us: f64,
}

impl Report {
    /// MB/s of `path` in `scenario`.
    pub fn mb_s(&self, scenario: &str, path: &str) -> Option<f64> {
        self.throughput
            .iter()
            .find(|r| r.scenario == scenario && r.path == path)
            .map(|r| r.mb_s)
    }

    fn request_row(&self, proto: &str, clients: usize, path: &str) -> Option<&RequestRow> {
        self.requests
            .iter()
            .find(|r| r.proto == proto && r.clients == clients && r.path == path)
    }

    fn rps(&self, proto: &str, clients: usize, path: &str) -> Option<f64> {
        self.request_row(proto, clients, path).map(|r| r.rps)
    }

    fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
        match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        }
    }

    fn dial_p50(&self, with_spare: bool) -> Option<f64> {
        self.dial
            .iter()
            .find(|d| d.with_spare == with_spare)
            .and_then(|d| d.stats["p50_us"].as_f64())
    }

    /// Computes the chart's ratios and the targets from the rows.
    pub fn evaluate(&mut self) {
        let mut ratios = Vec::new();
        let mut scenarios: Vec<String> = Vec::new();
        for r in &self.throughput {
            if !scenarios.contains(&r.scenario) {
                scenarios.push(r.scenario.clone());
            }
        }
        for s in &scenarios {
            let tls = self.mb_s(s, TLS);
            let (tt, tp) = if s == SINGLE {
                (Some(0.6), Some(0.4))
            } else {
                (None, None)
            };
            if let Some(r) = Self::ratio(self.mb_s(s, TCP), tls) {
                ratios.push(RatioBar {
                    label: format!("{s}: TCP fwd / direct TLS"),
                    ratio: r,
                    target: tt,
                });
            }
            if let Some(r) = Self::ratio(self.mb_s(s, PROXY), tls) {
                ratios.push(RatioBar {
                    label: format!("{s}: HTTP proxy / direct TLS"),
                    ratio: r,
                    target: tp,
                });
            }
            if let Some(r) = Self::ratio(self.mb_s(s, RELAYS), self.mb_s(s, PLAIN)) {
                ratios.push(RatioBar {
                    label: format!("{s}: 2 TCP relays / direct plain"),
                    ratio: r,
                    target: None,
                });
            }
        }
        let mut groups: Vec<(String, usize)> = Vec::new();
        for r in &self.requests {
            let g = (r.proto.clone(), r.clients);
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
        for (proto, clients) in &groups {
            let (tt, tp) = match (proto.as_str(), clients) {
                ("h1", 1) => (Some(0.6), Some(0.5)),
                ("h1", 50) => (Some(0.45), Some(0.3)),
                _ => (None, None),
            };
            let name = format!("{proto} x{clients} req/s");
            if let Some(r) = Self::ratio(
                self.rps(proto, *clients, TCP),
                self.rps(proto, *clients, PLAIN),
            ) {
                ratios.push(RatioBar {
                    label: format!("{name}: TCP fwd / direct plain"),
                    ratio: r,
                    target: tt,
                });
            }
            if let Some(r) = Self::ratio(
                self.rps(proto, *clients, PROXY),
                self.rps(proto, *clients, TLS),
            ) {
                ratios.push(RatioBar {
                    label: format!("{name}: HTTP proxy / direct TLS"),
                    ratio: r,
                    target: tp,
                });
            }
            if let Some(r) = Self::ratio(
                self.rps(proto, *clients, RELAYS),
                self.rps(proto, *clients, PLAIN),
            ) {
                ratios.push(RatioBar {
                    label: format!("{name}: 2 TCP relays / direct plain"),
                    ratio: r,
                    target: None,
                });
            }
        }
        self.ratios = ratios;

        let mut t = Vec::new();
        let r = |a, b| Self::ratio(a, b);
        t.push(Target::new(
            "single stream: TCP fwd / direct TLS",
            r(self.mb_s(SINGLE, TCP), self.mb_s(SINGLE, TLS)),
            ">=",
            0.6,
            "x",
        ));
        t.push(Target::new(
            "single stream: HTTP proxy / direct TLS",
            r(self.mb_s(SINGLE, PROXY), self.mb_s(SINGLE, TLS)),
            ">=",
            0.4,
            "x",
        ));
        t.push(Target::new(
            "50 clients req/s: TCP fwd / direct plain",
            r(self.rps("h1", 50, TCP), self.rps("h1", 50, PLAIN)),
            ">=",
            0.45,
            "x",
        ));
        t.push(Target::new(
            "50 clients req/s: HTTP proxy / direct TLS",
            r(self.rps("h1", 50, PROXY), self.rps("h1", 50, TLS)),
            ">=",
            0.3,
            "x",
        ));
        for path in [TCP, PROXY] {
            let p99 = self.request_row("h1", 50, path).map(|r| r.p99_us / 1000.0);
            t.push(Target::new(
                format!("50 clients p99: {path}"),
                p99,
                "<",
                5.0,
                "ms",
            ));
        }
        t.push(Target::new(
            "1 client serial: TCP fwd / direct plain",
            r(self.rps("h1", 1, TCP), self.rps("h1", 1, PLAIN)),
            ">=",
            0.6,
            "x",
        ));
        t.push(Target::new(
            "1 client serial: HTTP proxy / direct TLS",
            r(self.rps("h1", 1, PROXY), self.rps("h1", 1, TLS)),
            ">=",
            0.5,
            "x",
        ));
        t.push(Target::new(
            "dial with a spare: p50",
            self.dial_p50(true),
            "<",
            100.0,
            "us",
        ));
        let m = &self.memory;
        let mib = |x: Mem| (x.rss_kib > 0).then(|| x.rss_kib as f64 / 1024.0);
        t.push(Target::new(
            "RSS after 500 clients: public",
            mib(m.after_500_clients.public),
            "<",
            32.0,
            "MiB",
        ));
        t.push(Target::new(
            "RSS after 500 clients: NAT",
            mib(m.after_500_clients.nat),
            "<",
            32.0,
            "MiB",
        ));
        let some_n = |p: &PerItem, v: f64| (p.n > 0).then_some(v);
        t.push(Target::new(
            format!("per idle session at {} sessions: public", m.sessions.n),
            some_n(&m.sessions, m.sessions.public_kib_each),
            "<",
            16.0,
            "KiB",
        ));
        t.push(Target::new(
            format!("per open stream at {} streams: public", m.streams.n),
            some_n(&m.streams, m.streams.public_kib_each),
            "<",
            64.0,
            "KiB",
        ));
        t.push(Target::new(
            format!("per open stream at {} streams: NAT", m.streams.n),
            some_n(&m.streams, m.streams.nat_kib_each),
            "<",
            64.0,
            "KiB",
        ));
        let growth = |idle: Mem, end: Mem| {
            (idle.rss_kib > 0 && end.rss_kib > 0)
                .then(|| (end.rss_kib as f64 / idle.rss_kib as f64 - 1.0) * 100.0)
        };
        t.push(Target::new(
            "RSS after all load vs idle: public",
            growth(m.idle.public, m.end.public),
            "<",
            10.0,
            "%",
        ));
        t.push(Target::new(
            "RSS after all load vs idle: NAT",
            growth(m.idle.nat, m.end.nat),
            "<",
            10.0,
            "%",
        ));
        if let Some(st) = &self.stalled {
            let above = |m: Mem| (m.rss_kib as f64 - st.idle.public.rss_kib as f64) / 1024.0;
            t.push(Target::new(
                format!("{} stalled Clients: other Client p99", st.clients),
                Some(st.p99_us / 1e3),
                "<",
                200.0,
                "ms",
            ));
            t.push(Target::new(
                format!("{} stalled Clients: public peak above idle", st.clients),
                Some(above(st.peak.public)),
                "<",
                64.0,
                "MiB",
            ));
            t.push(Target::new(
                "stalled Clients gone: public above idle",
                Some(above(st.after.public)),
                "<",
                4.0,
                "MiB",
            ));
        }
        t.push(Target::new(
            "20 ms RTT single stream: TCP fwd",
            self.mb_s(FAR, TCP),
            ">=",
            200.0,
            "MB/s",
        ));
        self.targets = t;
    }

    /// The human-readable report.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let m = &self.meta;
        let _ = writeln!(o, "h2rev2 end-to-end benchmark ({} mode)", m.mode);
        let _ = writeln!(o, "command: {}", m.command);
        let _ = writeln!(
            o,
            "machine: {} CPUs, {}, kernel {}",
            m.nproc, m.cpu, m.kernel
        );
        let _ = writeln!(
            o,
            "loadavg: start {}, end {}",
            m.loadavg_start, m.loadavg_end
        );
        let _ = writeln!(o, "20 ms link: {}", m.link_emulation);
        if !m.role_env.is_empty() {
            let _ = writeln!(o, "role processes' environment: {}", m.role_env.join(" "));
        }
        let _ = writeln!(o, "allocator: {}", m.allocator);
        let _ = writeln!(o, "wall time: {:.1} s", m.wall_secs);

        let _ = writeln!(
            o,
            "\n== Throughput: GET /big/N over HTTP/1.1, one connection per stream \
             (MB/s = 10^6 B/s over all rounds; rounds = min-max per round; ratio = this / direct)"
        );
        let _ = writeln!(
            o,
            "{:<26} {:<13} {:>10} {:>9} {:>13} {:>9} {:>9} {:>7}  cli/pub/nat/int (CPU ns/B)",
            "scenario", "path", "bytes", "MB/s", "rounds", "/plain", "/TLS", "CPU",
        );
        for r in &self.throughput {
            let plain = Self::ratio(Some(r.mb_s), self.mb_s(&r.scenario, PLAIN));
            let tls = Self::ratio(Some(r.mb_s), self.mb_s(&r.scenario, TLS));
            let _ = writeln!(
                o,
                "{:<26} {:<13} {:>10} {:>9.1} {:>13} {:>9} {:>9} {:>7.2}  {}",
                r.scenario,
                r.path,
                human_bytes(r.bytes),
                r.mb_s,
                spread(&r.rounds),
                fmt_ratio(plain),
                fmt_ratio(tls),
                r.cpu_ns_per_byte().total(),
                r.cpu_ns_per_byte().parts(2)
            );
        }

        let _ = writeln!(
            o,
            "\n== Small requests: GET /small back to back per client (latency in ms; CPU = \
             CPU µs per request, all processes, warm-up included)"
        );
        let _ = writeln!(
            o,
            "{:<5} {:>7} {:<13} {:>10} {:>13} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7} {:>6}  cli/pub/nat/int (CPU µs/req)",
            "proto",
            "clients",
            "path",
            "req/s",
            "rounds",
            "p50",
            "p99",
            "p99.9",
            "errors",
            "/plain",
            "/TLS",
            "CPU",
        );
        for r in &self.requests {
            let plain = Self::ratio(Some(r.rps), self.rps(&r.proto, r.clients, PLAIN));
            let tls = Self::ratio(Some(r.rps), self.rps(&r.proto, r.clients, TLS));
            let _ = writeln!(
                o,
                "{:<5} {:>7} {:<13} {:>10.0} {:>13} {:>8.3} {:>8.3} {:>8.3} {:>7} {:>7} {:>7} {:>6.1}  {}",
                r.proto,
                r.clients,
                r.path,
                r.rps,
                spread(&r.rounds),
                r.p50_us / 1e3,
                r.p99_us / 1e3,
                r.p999_us / 1e3,
                r.errors,
                fmt_ratio(plain),
                fmt_ratio(tls),
                r.cpu_us_per_request().total(),
                r.cpu_us_per_request().parts(0)
            );
        }

        let _ = writeln!(
            o,
            "\n== Dial latency: Server::dial in the public process, request to conn in hand (µs)"
        );
        let _ = writeln!(
            o,
            "{:<22} {:>7} {:>9} {:>9} {:>9} {:>9}",
            "", "n", "p50", "p99", "p99.9", "max"
        );
        for d in &self.dial {
            let f = |k: &str| d.stats[k].as_f64().unwrap_or(f64::NAN);
            let label = if d.with_spare {
                "with a spare"
            } else {
                "no spare (round trip)"
            };
            let _ = writeln!(
                o,
                "{:<22} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                label,
                d.stats["n"],
                f("p50_us"),
                f("p99_us"),
                f("p999_us"),
                f("max_us")
            );
        }

        let mm = &self.memory;
        let _ = writeln!(o, "\n== Memory: RSS (MiB) of each side");
        let _ = writeln!(o, "{:<34} {:>9} {:>9}", "", "public", "NAT");
        let row = |o: &mut String, name: &str, s: Sides| {
            let _ = writeln!(
                o,
                "{:<34} {:>9.1} {:>9.1}",
                name,
                s.public.rss_mib(),
                s.nat.rss_mib()
            );
        };
        row(&mut o, "idle", mm.idle);
        row(&mut o, "peak during 500 clients", mm.peak_500_clients);
        row(&mut o, "after 500 clients", mm.after_500_clients);
        for s in &mm.timeline {
            row(&mut o, &format!("after phase {}", s.after), s.sides);
        }
        let _ = writeln!(o, "fresh processes for each of these:");
        for (name, one, p) in [
            ("streams", "stream", &mm.streams),
            ("sessions", "session", &mm.sessions),
            (
                "sessions (no spares)",
                "session (no spares)",
                &mm.sessions_no_spares,
            ),
        ] {
            row(&mut o, &format!("before {} {name}", p.n), p.before);
            row(&mut o, &format!("with {} {name}", p.n), p.with);
            row(&mut o, &format!("after closing the {name}"), p.after);
            let _ = writeln!(
                o,
                "{:<34} {:>9.1} {:>9.1}",
                format!("KiB per {one}"),
                p.public_kib_each,
                p.nat_kib_each
            );
        }
        row(&mut o, "end (after all load)", mm.end);
        if let Some(st) = &self.stalled {
            let _ = writeln!(
                o,
                "fresh processes, {} Clients that stop reading ({} answered, quiet after {:.1} s):",
                st.clients, st.answered, st.fill_secs
            );
            row(&mut o, "before the stalled Clients", st.idle);
            row(&mut o, "peak while they sit", st.peak);
            row(&mut o, "after they leave", st.after);
            let _ = writeln!(
                o,
                "another Client meanwhile: {} requests, {} errors, p50 {:.2} p99 {:.2} max {:.2} ms",
                st.requests,
                st.errors,
                st.p50_us / 1e3,
                st.p99_us / 1e3,
                st.max_us / 1e3
            );
        }
        let _ = writeln!(
            o,
            "internal server idle: {:.1} MiB",
            mm.internal_idle.rss_mib()
        );

        let _ = writeln!(o, "\n== Targets (issue 7)");
        for t in &self.targets {
            let _ = writeln!(
                o,
                "{}  {:<44} {:>10} {} {} {}",
                if t.pass { "PASS" } else { "MISS" },
                t.name,
                fmt_value(t.value),
                t.op,
                t.bound,
                t.unit
            );
        }
        let pass = self.targets.iter().filter(|t| t.pass).count();
        let _ = writeln!(o, "{pass} of {} targets met", self.targets.len());
        if !self.errors.is_empty() {
            let _ = writeln!(o, "\n== Errors");
            for e in &self.errors {
                let _ = writeln!(o, "{e}");
            }
        }
        o
    }

    /// The ratios as an SVG bar chart.
    pub fn svg(&self) -> Result<String, String> {
        draw_ratios(
            &self.ratios,
            &format!("h2rev2 tunnel / direct ({} mode)", self.meta.mode),
        )
    }
}

/// `min-max` of per-round figures (`-` for one round).
pub fn spread(v: &[f64]) -> String {
    if v.len() < 2 {
        return "-".into();
    }
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.0}-{max:.0}")
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}x")).unwrap_or_default()
}

fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// 1.0 GiB, 64 MiB, 16 KiB, 100 B.
pub fn human_bytes(n: u64) -> String {
    let units = [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (u, name) in units {
        if n >= u {
            let v = n as f64 / u as f64;
            return if v.fract() == 0.0 {
                format!("{v:.0} {name}")
            } else {
                format!("{v:.1} {name}")
            };
        }
    }
    format!("{n} B")
}

/// Horizontal bars, one per ratio, with a mark at the target (green: met, red:
/// missed, grey: no target) and a line at 1.0 (as fast as direct).
fn draw_ratios(bars: &[RatioBar], title: &str) -> Result<String, String> {
    use plotters::prelude::*;
    let row_h = 26i32;
    let label_w = 420i32;
    let plot_w = 520i32;
    let top = 50i32;
    let width = (label_w + plot_w + 80) as u32;
    let height = (top + row_h * bars.len().max(1) as i32 + 50) as u32;
    let max = bars
        .iter()
        .map(|b| b.ratio.max(b.target.unwrap_or(0.0)))
        .fold(1.2f64, f64::max)
        .min(5.0);
    let x = |r: f64| label_w + (r.clamp(0.0, max) / max * plot_w as f64) as i32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        root.fill(&WHITE).map_err(e)?;
        let font = ("sans-serif", 14).into_font();
        let small = ("sans-serif", 12).into_font();
        root.draw(&Text::new(
            title.to_string(),
            (10, 12),
            ("sans-serif", 18).into_font(),
        ))
        .map_err(e)?;
        // Grid every 0.25.
        let bottom = top + row_h * bars.len() as i32;
        let mut g = 0.0;
        while g <= max + 1e-9 {
            let color = if (g - 1.0).abs() < 1e-9 {
                BLACK
            } else {
                RGBColor(220, 220, 220)
            };
            root.draw(&PathElement::new(
                vec![(x(g), top - 5), (x(g), bottom)],
                color.stroke_width(1),
            ))
            .map_err(e)?;
            root.draw(&Text::new(
                format!("{g:.2}"),
                (x(g) - 12, bottom + 6),
                small.clone(),
            ))
            .map_err(e)?;
            g += 0.25;
        }
        for (i, b) in bars.iter().enumerate() {
            let y = top + row_h * i as i32;
            let color = match b.target {
                Some(t) if b.ratio >= t => RGBColor(60, 160, 80),
                Some(_) => RGBColor(210, 60, 50),
                None => RGBColor(120, 140, 170),
            };
            root.draw(&Text::new(b.label.clone(), (10, y + 6), font.clone()))
                .map_err(e)?;
            root.draw(&Rectangle::new(
                [(x(0.0), y + 4), (x(b.ratio), y + row_h - 4)],
                color.filled(),
            ))
            .map_err(e)?;
            root.draw(&Text::new(
                format!("{:.2}", b.ratio),
                (x(b.ratio) + 4, y + 6),
                small.clone(),
            ))
            .map_err(e)?;
            if let Some(t) = b.target {
                root.draw(&PathElement::new(
                    vec![(x(t), y + 1), (x(t), y + row_h - 1)],
                    BLACK.stroke_width(3),
                ))
                .map_err(e)?;
            }
        }
        root.draw(&Text::new(
            "bar: tunnel / direct; black tick: target; green met, red missed, blue no target"
                .to_string(),
            (10, bottom + 26),
            small,
        ))
        .map_err(e)?;
        root.present().map_err(e)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(scenario: &str, path: &str, mb_s: f64) -> ThroughputRow {
        ThroughputRow {
            scenario: scenario.into(),
            streams: 1,
            path: path.into(),
            bytes: 1,
            secs: 1.0,
            mb_s,
            rounds: vec![mb_s],
            cpu: Cpu::default(),
        }
    }

    #[test]
    fn targets_compare_against_the_right_baseline() {
        let mut r = Report {
            throughput: vec![
                tp(SINGLE, PLAIN, 2000.0),
                tp(SINGLE, TLS, 1000.0),
                tp(SINGLE, TCP, 700.0),
                tp(SINGLE, PROXY, 300.0),
            ],
            ..Default::default()
        };
        r.evaluate();
        let get = |name: &str| r.targets.iter().find(|t| t.name == name).unwrap().clone();
        let t = get("single stream: TCP fwd / direct TLS");
        assert!((t.value - 0.7).abs() < 1e-9 && t.pass);
        let t = get("single stream: HTTP proxy / direct TLS");
        assert!((t.value - 0.3).abs() < 1e-9 && !t.pass);
        // Not measured: MISS with no value, never a silent PASS.
        let t = get("20 ms RTT single stream: TCP fwd");
        assert!(t.value.is_nan() && !t.pass);
        assert_eq!(r.ratios.len(), 2);
        assert_eq!(r.ratios[0].target, Some(0.6));
    }

    #[test]
    fn per_item_memory_is_the_delta_over_n() {
        let mut p = PerItem {
            n: 1000,
            ..Default::default()
        };
        p.before.public.rss_kib = 10_000;
        p.with.public.rss_kib = 26_000;
        p.compute();
        assert_eq!(p.public_kib_each, 16.0);
    }

    #[test]
    fn chart_and_table_render() {
        let mut r = Report {
            throughput: vec![tp(SINGLE, TLS, 1000.0), tp(SINGLE, TCP, 700.0)],
            ..Default::default()
        };
        r.evaluate();
        let svg = r.svg().unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("TCP fwd / direct TLS"));
        let table = r.table();
        assert!(table.contains("PASS  single stream: TCP fwd / direct TLS"));
        assert!(table.contains("MISS  single stream: HTTP proxy / direct TLS"));
    }

    #[test]
    fn spread_is_min_to_max() {
        assert_eq!(spread(&[5.0]), "-");
        assert_eq!(spread(&[300.0, 100.4, 200.0]), "100-300");
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(1 << 30), "1 GiB");
        assert_eq!(human_bytes(64 << 20), "64 MiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(13), "13 B");
    }
}
