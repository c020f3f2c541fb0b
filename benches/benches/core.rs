//! Criterion benches of the sans-IO core (no I/O, no runtime): control messages, route
//! parsing, the Dialer's dial/match paths with 10,000 sessions, and the `Conn` read and
//! write paths. Every group sets a throughput, so criterion reports one figure per
//! bench (bytes/s or operations/s) besides the time.
//!
//! `cargo bench -p benches --bench core` measures; `-- --test` runs each bench once
//! (what CI does).

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use h2rev2_proto::auth::Credentials;
use h2rev2_proto::conn::{Conn, ConnConfig, Read, Write};
use h2rev2_proto::dialer::{Action, ConnId, DialId, Dialer, DialerConfig, Event, StreamId};
use h2rev2_proto::wire::{
    Command, ControlMessage, Decoder, DialerId, RevdialRequest, Role, RouteConfig,
};

const SESSIONS: usize = 10_000;

fn control(c: &mut Criterion) {
    let msgs = [
        (
            "conn-ready",
            ControlMessage::conn_ready(Some("9f86d081884c7d65")),
        ),
        ("keep-alive", ControlMessage::keep_alive()),
        (
            "pickup-failed",
            ControlMessage::pickup_failed(
                Some("9f86d081884c7d65"),
                "dial tcp 127.0.0.1:8080: connect: connection refused <&>",
            ),
        ),
    ];
    let mut g = c.benchmark_group("control/encode");
    for (name, m) in &msgs {
        g.throughput(Throughput::Bytes(m.to_bytes().len() as u64));
        let mut out = Vec::with_capacity(256);
        g.bench_function(*name, |b| {
            b.iter(|| {
                out.clear();
                black_box(m).encode(&mut out);
                black_box(&out);
            })
        });
    }
    g.finish();

    // A control stream's worth of messages, fed to the incremental decoder in chunks.
    let mut wire = Vec::new();
    for i in 0..1000 {
        msgs[i % msgs.len()].1.encode(&mut wire);
    }
    let mut g = c.benchmark_group("control/decode");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    for chunk in [64usize, 1400, 16 * 1024] {
        g.bench_with_input(BenchmarkId::new("chunks", chunk), &chunk, |b, &chunk| {
            b.iter(|| {
                let mut d = Decoder::new();
                let mut n = 0;
                for piece in wire.chunks(chunk) {
                    d.push(piece);
                    while let Some(m) = d.next_message() {
                        n += usize::from(m.unwrap().command == Command::ConnReady);
                    }
                }
                assert_eq!(n, 334);
            })
        });
    }
    g.finish();
}

fn routes(c: &mut Criterion) {
    let cfg = RouteConfig::default()
        .with_base("/tunnel")
        .with_id_key("dialerid");
    let cases = [
        (
            "revdial-control",
            "/tunnel/revdial",
            Some("dialerid=node-0042&role=control"),
        ),
        (
            "revdial-data-token",
            "/tunnel/revdial",
            Some("dialerid=node-0042&role=data&conn=9f86d081884c7d65"),
        ),
        (
            "proxy",
            "/tunnel/proxy/node-0042/api/v1/items",
            Some("page=2"),
        ),
        ("not-found", "/favicon.ico", None),
    ];
    let mut g = c.benchmark_group("route");
    g.throughput(Throughput::Elements(1));
    for (name, path, query) in cases {
        g.bench_function(name, |b| {
            b.iter(|| black_box(cfg.route(black_box(path), black_box(query))))
        });
    }
    let id = DialerId::new("node-0042").unwrap();
    g.bench_function("build-listener-request", |b| {
        b.iter(|| {
            black_box(cfg.revdial_path_and_query(
                black_box(&id),
                Some(Role::Data),
                Some("9f86d081884c7d65"),
            ))
        })
    });
    g.finish();
}

/// A Dialer with `SESSIONS` sessions (one id each, one connection each), each with
/// `spares` parked data streams.
struct Bench {
    d: Dialer,
    ids: Vec<DialerId>,
    now: Instant,
    next_stream: u64,
    next_dial: u64,
    actions: Vec<Action>,
}

impl Bench {
    fn new(spares: usize) -> Bench {
        let mut config = DialerConfig::default();
        config.auth.allow_anonymous();
        config.max_sessions = SESSIONS;
        let mut b = Bench {
            d: Dialer::new(config, 1),
            ids: (0..SESSIONS)
                .map(|i| DialerId::new(format!("node-{i:05}")).unwrap())
                .collect(),
            now: Instant::now(),
            next_stream: 1,
            next_dial: 1,
            actions: Vec::with_capacity(8),
        };
        for i in 0..SESSIONS {
            b.revdial(i, Some(Role::Control), None);
            for _ in 0..spares {
                b.revdial(i, Some(Role::Data), None);
            }
        }
        let stats = b.d.stats();
        assert_eq!(
            (stats.sessions, stats.spares),
            (SESSIONS, SESSIONS * spares)
        );
        b
    }

    fn revdial(&mut self, i: usize, role: Option<Role>, token: Option<String>) {
        let stream = StreamId(self.next_stream);
        self.next_stream += 1;
        self.d
            .handle_event(
                self.now,
                Event::Revdial {
                    conn: ConnId(i as u64),
                    stream,
                    request: RevdialRequest {
                        id: self.ids[i].clone(),
                        role,
                        conn: token,
                        wire: h2rev2_proto::wire::Wire::Current,
                    },
                    credentials: Credentials::default(),
                },
            )
            .unwrap();
        self.drain();
    }

    fn dial(&mut self, i: usize) -> DialId {
        let dial = DialId(self.next_dial);
        self.next_dial += 1;
        self.d
            .handle_event(
                self.now,
                Event::Dial {
                    dial,
                    id: self.ids[i].clone(),
                },
            )
            .unwrap();
        self.drain();
        dial
    }

    fn drain(&mut self) {
        self.actions.clear();
        while let Some(a) = self.d.poll_action() {
            self.actions.push(a);
        }
    }

    /// The token of the `conn-ready` among the last actions.
    fn token(&self) -> String {
        self.actions
            .iter()
            .find_map(|a| match a {
                Action::SendControl { data, .. } => {
                    let mut dec = Decoder::new();
                    dec.push(data);
                    Some(dec.next_message()?.ok()?.conn_path)
                }
                _ => None,
            })
            .expect("a conn-ready")
    }

    fn ready(&self, dial: DialId) -> bool {
        self.actions
            .iter()
            .any(|a| matches!(a, Action::DialReady { dial: d, .. } if *d == dial))
    }
}

fn dialer(c: &mut Criterion) {
    let mut g = c.benchmark_group(format!("dialer/{SESSIONS}-sessions"));
    g.throughput(Throughput::Elements(1));
    g.sample_size(50);

    // A parked spare answers the dial at once; the replenishing stream arrives and
    // parks again (steady state: one dial, one revdial per iteration).
    let mut b = Bench::new(1);
    let mut i = 0;
    g.bench_function("dial-spare+replenish", |bench| {
        bench.iter(|| {
            i = (i + 7919) % SESSIONS;
            let dial = b.dial(i);
            assert!(b.ready(dial));
            let token = b.token();
            b.revdial(i, Some(Role::Data), Some(token));
        })
    });

    // No spare: conn-ready with a token, the data stream echoes it, the dial is ready.
    let mut b = Bench::new(0);
    let mut i = 0;
    g.bench_function("dial-conn-ready+token", |bench| {
        bench.iter(|| {
            i = (i + 7919) % SESSIONS;
            let dial = b.dial(i);
            let token = b.token();
            b.revdial(i, Some(Role::Data), Some(token));
            assert!(b.ready(dial));
        })
    });

    // The same, for a Go Listener: unmarked stream, FIFO matching.
    let mut b = Bench::new(0);
    let mut i = 0;
    g.bench_function("dial-conn-ready+fifo", |bench| {
        bench.iter(|| {
            i = (i + 7919) % SESSIONS;
            let dial = b.dial(i);
            b.revdial(i, None, None);
            assert!(b.ready(dial));
        })
    });
    g.finish();

    let mut g = c.benchmark_group("dialer/setup");
    g.throughput(Throughput::Elements(SESSIONS as u64));
    g.sample_size(10);
    g.bench_function(format!("register-{SESSIONS}-sessions"), |bench| {
        bench.iter(|| black_box(Bench::new(0)))
    });
    g.finish();
}

fn conn(c: &mut Criterion) {
    const TOTAL: usize = 1 << 20;
    let now = Instant::now();
    let mut g = c.benchmark_group("conn");
    g.throughput(Throughput::Bytes(TOTAL as u64));

    for size in [16usize, 1024] {
        let src = vec![0x5au8; size];
        g.bench_with_input(BenchmarkId::new("write+take_send", size), &size, |b, _| {
            b.iter(|| {
                let mut conn = Conn::new(ConnConfig::default());
                let mut sent = 0;
                let mut frames = 0;
                for _ in 0..TOTAL / size {
                    assert!(matches!(conn.write(now, &src), Write::Accepted(_)));
                    if conn.sendable(now) > 0 {
                        sent += conn.take_send(now, 16 * 1024).len();
                        frames += 1;
                    }
                }
                conn.flush();
                while conn.sendable(now) > 0 {
                    sent += conn.take_send(now, 16 * 1024).len();
                    frames += 1;
                }
                assert_eq!(sent, TOTAL);
                black_box(frames)
            })
        });
    }

    let chunk = Bytes::from(vec![0xa5u8; 16 * 1024]);
    for buf in [1024usize, 16 * 1024] {
        g.bench_with_input(BenchmarkId::new("on_data+read", buf), &buf, |b, &buf| {
            let mut dst = vec![0u8; buf];
            b.iter(|| {
                let mut conn = Conn::new(ConnConfig::default());
                let mut got = 0;
                for _ in 0..TOTAL / chunk.len() {
                    conn.on_data(chunk.clone());
                    while let Read::Data(n) = conn.read(&mut dst) {
                        got += n;
                    }
                    black_box(conn.take_credit());
                }
                assert_eq!(got, TOTAL);
            })
        });
    }
    g.bench_function("on_data+read_chunk", |b| {
        b.iter(|| {
            let mut conn = Conn::new(ConnConfig::default());
            let mut got = 0;
            for _ in 0..TOTAL / chunk.len() {
                conn.on_data(chunk.clone());
                while let Some(c) = conn.read_chunk(usize::MAX) {
                    got += c.len();
                }
            }
            assert_eq!(got, TOTAL);
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = control, routes, dialer, conn
}
criterion_main!(benches);
