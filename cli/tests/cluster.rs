//! A cluster of 3 public servers on a real `redis-server` (and haproxy in front where a
//! load balancer belongs), through the binary: any replica serves any id (bodies
//! checked), a wrong cluster token is refused, a Listener with sessions on two
//! replicas loses no request to `kill -9` of one, Redis stopped and restarted under
//! load (local sessions serve, forwarded requests fail fast with 503, then recover),
//! a rolling restart under load fails no request, `--connections` spreads sessions,
//! and an `Upgrade` and a TCP forward reach the id through a replica without it.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use sha2::Digest;

const UP: Duration = Duration::from_secs(20);

fn sha(b: &[u8]) -> String {
    format!("{:x}", sha2::Sha256::digest(b))
}

/// `curl -o FILE URL` trusting `ca`; (http code, sha256 of the body).
fn fetch(ca: &str, url: &str, out: &Path) -> (String, String) {
    let out_s = out.display().to_string();
    let (_, code, _) = curl(&["--cacert", ca, "-o", &out_s, "-w", "%{http_code}", url]);
    let body = std::fs::read(out).unwrap_or_default();
    (code, sha(&body))
}

fn redis(port: u16) -> Proc {
    let port_s = port.to_string();
    let mut p = Proc::spawn(
        "redis",
        "redis-server",
        &[
            "--port",
            &port_s,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        &[],
    );
    p.wait_for("Ready to accept connections", UP);
    p
}

/// A directory with the replicas' certificate and key (`s.crt`, also the Clients'
/// CA), `tokens` as their tokens file and the cluster token, and a redis-server:
/// (directory, CA path, Redis port, Redis).
fn setup(tokens: &str) -> (tempfile::TempDir, String, u16, Proc) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let ca = write_file(d, "s.crt", &ck.cert.pem()).display().to_string();
    write_file(d, "s.key", &ck.signing_key.serialize_pem());
    write_file(d, "tokens.txt", tokens);
    write_file(d, "cluster.token", "cluster-s3cret\n");
    let redis_port = free_port();
    let redis = redis(redis_port);
    (dir, ca, redis_port, redis)
}

/// python's `http.server` serving `root` (an internal server): the process and its
/// URL.
fn http_server(name: &str, root: &Path) -> (Proc, String) {
    let port = free_port();
    let (port_s, root_s) = (port.to_string(), root.display().to_string());
    let args = [
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        "--directory",
        &root_s,
        &port_s,
    ];
    let mut py = Proc::spawn(name, "python3", &args, &[]);
    py.wait_for("Serving HTTP", UP);
    (py, format!("http://127.0.0.1:{port}"))
}

struct Replica {
    proc: Proc,
    url: String,
    /// Its tunnel and admin ports, kept across restarts.
    port: u16,
    admin: u16,
}

fn replica(dir: &Path, n: usize, redis_port: u16) -> Replica {
    start_replica(dir, n, redis_port, free_port(), free_port(), &[])
}

/// Replica `r{n}` on `port`, with its admin (`/readyz`) on `admin`, and `extra` flags.
fn start_replica(
    dir: &Path,
    n: usize,
    redis_port: u16,
    port: u16,
    admin: u16,
    extra: &[&str],
) -> Replica {
    let url = format!("https://127.0.0.1:{port}");
    let admin_s = format!("127.0.0.1:{admin}");
    let f = |name: &str| dir.join(name).display().to_string();
    let listen = format!("127.0.0.1:{port}");
    let redis = format!("redis://127.0.0.1:{redis_port}");
    let (crt, key, tokens, ct) = (f("s.crt"), f("s.key"), f("tokens.txt"), f("cluster.token"));
    let name = format!("r{n}");
    let args = [
        "server",
        "--listen",
        &listen,
        "--cert",
        &crt,
        "--key",
        &key,
        "--tokens",
        &tokens,
        "--cluster-redis",
        &redis,
        "--cluster-advertise",
        &url,
        "--cluster-token-file",
        &ct,
        "--cluster-replica",
        &name,
        "--cluster-lease",
        "3",
        "--admin",
        &admin_s,
    ];
    let args: Vec<&str> = args.iter().chain(extra).copied().collect();
    let mut proc = Proc::h2rev2(&name, &args, &[]);
    proc.wait_for("Serving on https://", UP);
    Replica {
        proc,
        url,
        port,
        admin,
    }
}

fn client(servers: &[&str], ca: &str, id: &str, token: &str, internal: &str) -> Proc {
    let mut args = vec![
        "client",
        "--ca",
        ca,
        "--id",
        id,
        "--proxy-host",
        internal,
        "--max-backoff",
        "1",
    ];
    for s in servers {
        args.extend(["--server", s]);
    }
    let mut c = Proc::h2rev2(&format!("client {id}"), &args, &[("H2REV2_TOKEN", token)]);
    c.wait_for("Serving on Reverse connection", UP);
    c
}

/// Retries `fetch` until it answers 200 with `want`; how long it took.
fn until_ok(ca: &str, url: &str, out: &Path, want: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let (code, got) = fetch(ca, url, out);
        if code == "200" && got == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < timeout, "{url}: {code} after {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn three_replicas_on_redis_serve_every_id_and_survive_a_replica_and_redis() {
    let (dir, ca, redis_port, mut redis) = setup("a ta\nb tb\nc tc\n");
    let d = dir.path();
    let mut rs: Vec<Replica> = (1..=3).map(|n| replica(d, n, redis_port)).collect();

    // Internal servers with a 1 MiB file of their own.
    let mut files = Vec::new();
    let mut internals = Vec::new();
    for (i, id) in ["a", "b", "c"].iter().enumerate() {
        let root = d.join(format!("www-{id}"));
        std::fs::create_dir(&root).unwrap();
        let data: Vec<u8> = (0..1 << 20)
            .map(|n: u32| (n.wrapping_mul(2654435761) >> (8 + i)) as u8)
            .collect();
        std::fs::write(root.join("data.bin"), &data).unwrap();
        files.push(sha(&data));
        internals.push(http_server(&format!("http {id}"), &root));
    }
    let _a = client(&[&rs[0].url], &ca, "a", "ta", &internals[0].1);
    let _b = client(&[&rs[1].url], &ca, "b", "tb", &internals[1].1);
    // c holds sessions on replicas 1 and 2.
    let c = client(&[&rs[0].url, &rs[1].url], &ca, "c", "tc", &internals[2].1);
    let mut waited = 0;
    while c.stderr().matches("Serving on Reverse connection").count() < 2 {
        std::thread::sleep(Duration::from_millis(50));
        waited += 1;
        assert!(waited < 400, "c has no second session:\n{}", c.stderr());
    }

    // Every id through every replica, bodies intact.
    let out = d.join("out.bin");
    for r in &rs {
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            let url = format!("{}/proxy/{id}/data.bin", r.url);
            until_ok(&ca, &url, &out, &files[i], Duration::from_secs(10));
        }
    }
    // A forwarded request with a wrong cluster token is refused.
    let (_, code, _) = curl(&[
        "--cacert",
        &ca,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "h2rev2-cluster-token: guess",
        "-H",
        "h2rev2-cluster-hop: r9",
        &format!("{}/proxy/a/data.bin", rs[1].url),
    ]);
    assert_eq!(code, "403");

    // kill -9 of replica 1. c, with sessions on replicas 1 and 2, loses no request
    // through replica 3: the dead holder is skipped (replica 2 serves) although its
    // registration lives until its lease ends.
    rs[0].proc.signal("KILL");
    rs[0].proc.wait_exit(UP);
    let url = format!("{}/proxy/c/data.bin", rs[2].url);
    let start = Instant::now();
    for n in 0..20 {
        let (code, got) = fetch(&ca, &url, &out);
        assert_eq!(
            (code.as_str(), got.as_str()),
            ("200", files[2].as_str()),
            "request {n} for c through r3 after kill -9 of r1"
        );
    }
    eprintln!(
        "failover: 20 of 20 requests for c through r3 served in {:?} after kill -9 of r1",
        start.elapsed()
    );
    // b, held by replica 2 only, never stopped.
    let (code, got) = fetch(&ca, &format!("{}/proxy/b/data.bin", rs[2].url), &out);
    assert_eq!((code.as_str(), got.as_str()), ("200", files[1].as_str()));

    // Redis stopped and restarted under load: a Client of r2 (which holds b) and one
    // of r3 (which forwards to it) send requests all along.
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    // 503s the forwarded Client got so far: Redis stays down until it saw one.
    let unavailable = std::sync::Arc::new(AtomicUsize::new(0));
    let load = |r: &Replica, name: &str| {
        let (stop, ca, want) = (stop.clone(), ca.clone(), files[1].clone());
        let unavailable = unavailable.clone();
        let url = format!("{}/proxy/b/data.bin", r.url);
        let out = d.join(format!("load-{name}.bin"));
        std::thread::spawn(move || {
            let mut codes = Vec::new();
            while !stop.load(Relaxed) {
                let (code, got) = fetch(&ca, &url, &out);
                if code == "503" {
                    unavailable.fetch_add(1, Relaxed);
                }
                codes.push(if code == "200" && got != want {
                    "200 with a wrong body".to_string()
                } else {
                    code
                });
                std::thread::sleep(Duration::from_millis(20));
            }
            codes
        })
    };
    let (local, forwarded) = (load(&rs[1], "local"), load(&rs[2], "forwarded"));
    std::thread::sleep(Duration::from_millis(300));
    // Redis stopped: local sessions serve, forwarded requests get 503 at once.
    redis.signal("KILL");
    redis.wait_exit(UP);
    let (code, got) = fetch(&ca, &format!("{}/proxy/b/data.bin", rs[1].url), &out);
    assert_eq!((code.as_str(), got.as_str()), ("200", files[1].as_str()));
    // Cached routes may still serve for a moment; then the registry is needed.
    let start = Instant::now();
    let code = loop {
        let t = Instant::now();
        let (code, _) = fetch(&ca, &format!("{}/proxy/b/data.bin", rs[2].url), &out);
        if code == "503" {
            assert!(
                t.elapsed() < Duration::from_secs(3),
                "503 took {:?}",
                t.elapsed()
            );
            break code;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never 503: {code}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(code, "503");
    // The forwarded Client meets the outage too before Redis comes back (only the
    // local Client's requests go to replica 2).
    let start = Instant::now();
    while unavailable.load(Relaxed) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the forwarded Client never got 503"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Redis back: the cluster recovers by itself (registrations rewritten).
    let _redis = self::redis(redis_port);
    let took = until_ok(
        &ca,
        &format!("{}/proxy/b/data.bin", rs[2].url),
        &out,
        &files[1],
        Duration::from_secs(10),
    );
    eprintln!("recovery: b served through r3 again {took:?} after Redis restarted");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Relaxed);
    let (local, forwarded) = (local.join().unwrap(), forwarded.join().unwrap());
    // The local Client never noticed; the forwarded one got only 200s and quick 503s
    // (never a hang, a 502 or a wrong body), and 200s again at the end.
    assert!(local.iter().all(|c| c == "200"), "local: {local:?}");
    assert!(
        forwarded.iter().all(|c| c == "200" || c == "503"),
        "forwarded: {forwarded:?}"
    );
    assert!(forwarded.contains(&"503".to_string()), "{forwarded:?}");
    assert!(
        forwarded.iter().rev().take(5).all(|c| c == "200"),
        "forwarded, at the end: {forwarded:?}"
    );
    eprintln!(
        "under load: {} local requests, all 200; {} forwarded, {} of them 503 while Redis was down",
        local.len(),
        forwarded.len(),
        forwarded.iter().filter(|c| *c == "503").count()
    );
    for r in rs.iter_mut().skip(1) {
        assert!(r.proc.running(), "{}", r.proc.stderr());
    }
}

/// An internal server that switches every request to an echo of raw bytes
/// (`101 Switching Protocols`, like a WebSocket server would); its port.
fn start_upgrade_echo() -> u16 {
    use std::io::Write;
    serve_heads(|head, s| {
        if !head.to_ascii_lowercase().contains("upgrade: echo") {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
            return;
        }
        let _ = s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\n",
        );
        let mut r = s.try_clone().unwrap();
        let _ = std::io::copy(&mut r, s);
    })
}

/// A Client (python's ssl module) asking `url`'s server to switch `path` to the echo
/// protocol, then sending two messages; what it read, or why it failed.
fn upgrade_client(ca: &str, port: u16, path: &str) -> String {
    let script = r#"
import socket, ssl, sys
ca, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["http/1.1"])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost")
s.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n" % path).encode())
head = b""
while b"\r\n\r\n" not in head:
    chunk = s.recv(1)
    if not chunk:
        break
    head += chunk
status = head.split(b"\r\n")[0].decode()
out = [status]
if " 101 " in status:
    for msg in (b"hello through the cluster", b"and back again"):
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            chunk = s.recv(len(msg) - len(got))
            if not chunk:
                break
            got += chunk
        out.append(got.decode())
print("|".join(out))
"#;
    let port_s = port.to_string();
    let out = std::process::Command::new("python3")
        .args(["-c", script, ca, &port_s, path])
        .output()
        .expect("python3 runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn an_upgrade_reaches_the_id_through_a_replica_that_does_not_hold_it() {
    let (dir, ca, redis_port, _redis) = setup("ws tw\n");
    let d = dir.path();
    let rs: Vec<Replica> = (1..=2).map(|n| replica(d, n, redis_port)).collect();
    let internal = format!("http://127.0.0.1:{}", start_upgrade_echo());
    let _ws = client(&[&rs[0].url], &ca, "ws", "tw", &internal);
    let port = |r: &Replica| r.url.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let want = "HTTP/1.1 101 Switching Protocols|hello through the cluster|and back again";
    // On the replica that holds the id, then through the other one.
    assert_eq!(upgrade_client(&ca, port(&rs[0]), "/proxy/ws/chat"), want);
    let start = Instant::now();
    loop {
        let got = upgrade_client(&ca, port(&rs[1]), "/proxy/ws/chat");
        if got == want {
            break;
        }
        // Until the registry tells replica 2 where `ws` is (a moment at start).
        assert!(start.elapsed() < Duration::from_secs(10), "{got}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An internal server answering each request with the `X-Forwarded-For` it got; its
/// port.
fn start_forwarded_for_echo() -> u16 {
    use std::io::Write;
    serve_heads(|head, s| {
        let xff = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("x-forwarded-for")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default();
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xff}",
            xff.len()
        );
    })
}

#[test]
fn a_forwarded_request_is_for_the_clients_address_not_the_replicas() {
    let (dir, ca, redis_port, _redis) = setup("h th\n");
    let d = dir.path();
    let rs: Vec<Replica> = (1..=2).map(|n| replica(d, n, redis_port)).collect();
    let internal = format!("http://127.0.0.1:{}", start_forwarded_for_echo());
    let _h = client(&[&rs[0].url], &ca, "h", "th", &internal);
    // The Client comes from 127.0.0.2; the replicas talk to each other from 127.0.0.1.
    let get = |r: &Replica, extra: &[&str]| {
        let url = format!("{}/proxy/h/who", r.url);
        let mut args = vec!["--cacert", ca.as_str(), "--interface", "127.0.0.2"];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    };
    let (ok, body, err) = get(&rs[0], &[]);
    assert!(ok, "{err}");
    assert_eq!(body, "127.0.0.2");
    let start = Instant::now();
    loop {
        let (ok, body, err) = get(&rs[1], &[]);
        if ok && body == "127.0.0.2" {
            break;
        }
        // Until the registry tells replica 2 where `h` is (a moment at start).
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "through replica 2: {body:?} {err}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A Client cannot claim another address with the cluster's own header.
    let forged = ["-H", "h2rev2-cluster-client: 192.0.2.9:1 https"];
    let (_, body, _) = get(&rs[0], &forged);
    assert_eq!(body, "127.0.0.2");
    let (_, body, _) = get(&rs[1], &forged);
    assert_eq!(body, "127.0.0.2");
}

/// haproxy in front of `rs` (TCP mode: TLS passes through), as a deployment runs
/// replicas: `balance` (roundrobin, random...) over the replicas whose `/readyz` answers 200 (checked every
/// 200 ms), and a connection a replica refuses is retried on another one. Its port.
fn haproxy(dir: &Path, rs: &[Replica], balance: &str) -> (Proc, u16) {
    let port = free_port();
    let mut cfg = format!(
        "global\n    maxconn 4096\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 60s\n    \
         timeout server 60s\n    timeout check 1s\n    retries 3\n    option redispatch 1\n\
         frontend tunnel\n    bind 127.0.0.1:{port}\n    default_backend replicas\n\
         backend replicas\n    balance {balance}\n    option httpchk GET /readyz\n"
    );
    for (i, r) in rs.iter().enumerate() {
        cfg.push_str(&format!(
            "    server r{} 127.0.0.1:{} check port {} inter 200ms fall 1 rise 2\n",
            i + 1,
            r.port,
            r.admin
        ));
    }
    let path = write_file(dir, "haproxy.cfg", &cfg).display().to_string();
    let program = if Path::new("/usr/sbin/haproxy").exists() {
        "/usr/sbin/haproxy"
    } else {
        "haproxy"
    };
    let p = Proc::spawn("haproxy", program, &["-f", &path, "-db"], &[]);
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < UP, "haproxy does not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    (p, port)
}

/// Whether the replica's admin lists a live session of `id`.
fn holds(r: &Replica, id: &str) -> bool {
    let url = format!("http://127.0.0.1:{}/api/sessions", r.admin);
    let (_, body, _) = curl(&[&url]);
    body.contains(&format!("\"id\":\"{id}\""))
}

/// A Listener behind a load balancer moves without downtime: 3 replicas are
/// restarted one after another (SIGTERM, then the same ports again) while 3 Clients
/// send requests through the load balancer, and not one request fails; each time the
/// replica that holds the session tells the Listener it is going away, and the
/// Listener opens its new session before the old one ends (make before break). Then
/// `kill -9` of the replica that holds the session: requests work again within 5 s.
#[test]
fn a_rolling_restart_of_every_replica_under_load_fails_no_request() {
    let (dir, ca, redis_port, _redis) = setup("a ta\n");
    let d = dir.path();
    let mut rs: Vec<Replica> = (1..=3).map(|n| replica(d, n, redis_port)).collect();
    let (_lb, lb_port) = haproxy(d, &rs, "roundrobin");
    let lb = format!("https://127.0.0.1:{lb_port}");

    let root = d.join("www");
    std::fs::create_dir(&root).unwrap();
    let data: Vec<u8> = (0..64 << 10).map(|n: u32| (n % 251) as u8).collect();
    std::fs::write(root.join("data.bin"), &data).unwrap();
    let want = sha(&data);
    let (_py, internal) = http_server("http", &root);
    let listener = client(&[&lb], &ca, "a", "ta", &internal);
    let url = format!("{lb}/proxy/a/data.bin");
    // Every replica knows where `a` is before the load starts.
    for r in &rs {
        let direct = format!("{}/proxy/a/data.bin", r.url);
        until_ok(
            &ca,
            &direct,
            &d.join("warm.bin"),
            &want,
            Duration::from_secs(10),
        );
    }

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..3)
        .map(|w| {
            let (stop, ca, url, want) = (stop.clone(), ca.clone(), url.clone(), want.clone());
            let out = d.join(format!("load-{w}.bin"));
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0usize, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (code, got) = fetch(&ca, &url, &out);
                    if code == "200" && got == want {
                        ok += 1;
                    } else {
                        failed.push(format!("{code} {got}"));
                    }
                }
                (ok, failed)
            })
        })
        .collect();

    let moves_before = listener
        .stderr()
        .matches("the public server is going away")
        .count();
    let mut made_before_break = 0;
    let mut restarted = [false; 3];
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(700));
        // The replica holding `a` first, so that the Listener moves.
        let left: Vec<usize> = (0..3).filter(|i| !restarted[*i]).collect();
        let i = *left
            .iter()
            .find(|i| holds(&rs[**i], "a"))
            .unwrap_or(&left[0]);
        restarted[i] = true;
        let held = holds(&rs[i], "a");
        let (port, admin) = (rs[i].port, rs[i].admin);
        rs[i].proc.signal("TERM");
        if held {
            // Make before break: another replica holds a session of `a` while this
            // one still runs (it serves for its drain delay, then its grace).
            let start = Instant::now();
            while !(0..3).any(|j| j != i && holds(&rs[j], "a")) {
                assert!(start.elapsed() < Duration::from_secs(5), "no new session");
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(
                rs[i].proc.running(),
                "r{} ended before the new session",
                i + 1
            );
            made_before_break += 1;
        }
        let status = rs[i].proc.wait_exit(UP);
        assert!(status.success(), "r{} exited with {status}", i + 1);
        rs[i] = start_replica(d, i + 1, redis_port, port, admin, &[]);
        // haproxy sends it requests again after two good checks.
        std::thread::sleep(Duration::from_millis(700));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for t in load {
        let (o, f) = t.join().unwrap();
        ok += o;
        failed.extend(f);
    }
    eprintln!(
        "rolling restart: {ok} requests served, {} failed",
        failed.len()
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(ok >= 30, "only {ok} requests in the whole restart");
    let moves = listener
        .stderr()
        .matches("the public server is going away")
        .count()
        - moves_before;
    assert!(
        made_before_break >= 1,
        "no restart stopped the replica holding `a`"
    );
    assert_eq!(moves, made_before_break, "{}", listener.stderr());

    // kill -9 of the replica that holds the session: the Listener reconnects
    // through the load balancer, and requests through it work again.
    let holder = (0..3)
        .find(|i| holds(&rs[*i], "a"))
        .expect("a replica holds a");
    rs[holder].proc.signal("KILL");
    rs[holder].proc.wait_exit(UP);
    let took = until_ok(
        &ca,
        &url,
        &d.join("after.bin"),
        &want,
        Duration::from_secs(5),
    );
    eprintln!(
        "failover: a served again through the load balancer {took:?} after kill -9 of its replica"
    );
}

/// A TCP forward (`--tcp`) on a replica that does not hold its id carries the byte
/// stream to the replica that does: 4 MiB echoed intact, both directions, with the
/// Client's half-close passed along.
#[test]
fn a_tcp_forward_reaches_the_id_through_a_replica_that_does_not_hold_it() {
    use std::io::{Read, Write};
    let (dir, ca, redis_port, _redis) = setup("t tt\n");
    let d = dir.path();
    let r1 = replica(d, 1, redis_port);
    let forward = free_port();
    let tcp = format!("127.0.0.1:{forward}=t");
    let _r2 = start_replica(d, 2, redis_port, free_port(), free_port(), &["--tcp", &tcp]);
    let echo = format!("127.0.0.1:{}", start_echo());
    let mut listener = Proc::h2rev2(
        "client t",
        &[
            "client",
            "--ca",
            &ca,
            "--id",
            "t",
            "--tcp-target",
            &echo,
            "--server",
            &r1.url,
        ],
        &[("H2REV2_TOKEN", "tt")],
    );
    listener.wait_for("Serving on Reverse connection", UP);

    const N: usize = 4 << 20;
    let data: Vec<u8> = (0..N).map(|i| (i * 13 + i / 7919) as u8).collect();
    let want = sha(&data);
    let start = Instant::now();
    let got = loop {
        // Until replica 2 learns where `t` is (a moment at start).
        let mut s = std::net::TcpStream::connect(("127.0.0.1", forward)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut w = s.try_clone().unwrap();
        let data = data.clone();
        let writer = std::thread::spawn(move || {
            for chunk in data.chunks(65_521) {
                if w.write_all(chunk).is_err() {
                    return;
                }
            }
            let _ = w.shutdown(std::net::Shutdown::Write);
        });
        let mut got = Vec::new();
        let read = s.read_to_end(&mut got);
        writer.join().unwrap();
        if read.is_ok() && got.len() == N {
            break got;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{read:?}, {} bytes",
            got.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(sha(&got), want, "sha256 of the echoed stream");
    eprintln!(
        "4 MiB echoed through replica 2 to replica 1 in {:?}",
        start.elapsed()
    );
}

/// `--connections 3` through a load balancer that picks replicas at random: each
/// replica names itself, sessions that land where another one is connect again, and
/// the three end up on the three replicas. Then `kill -9` of one replica fails no
/// request through the load balancer: the others hold sessions of their own.
#[test]
fn connections_through_one_address_spread_over_the_replicas() {
    let (dir, ca, redis_port, _redis) = setup("s ts\n");
    let d = dir.path();
    let mut rs: Vec<Replica> = (1..=3).map(|n| replica(d, n, redis_port)).collect();
    let (_lb, lb_port) = haproxy(d, &rs, "random");
    let lb = format!("https://127.0.0.1:{lb_port}");
    let internal = format!("http://127.0.0.1:{}", start_forwarded_for_echo());
    let args = [
        "client",
        "--ca",
        &ca,
        "--id",
        "s",
        "--proxy-host",
        &internal,
        "--server",
        &lb,
        "--connections",
        "3",
        "--max-backoff",
        "1",
    ];
    let _listener = Proc::h2rev2("client s", &args, &[("H2REV2_TOKEN", "ts")]);
    let start = Instant::now();
    while !rs.iter().all(|r| holds(r, "s")) {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "sessions not on every replica: {:?}",
            rs.iter().map(|r| holds(r, "s")).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("3 sessions on 3 replicas after {:?}", start.elapsed());
    rs[0].proc.signal("KILL");
    rs[0].proc.wait_exit(UP);
    let url = format!("{lb}/proxy/s/who");
    for n in 0..20 {
        let (ok, body, err) = curl(&["--cacert", &ca, "--fail", &url]);
        assert!(
            ok && body == "127.0.0.1",
            "request {n} after kill -9: {body:?} {err}"
        );
    }
}
