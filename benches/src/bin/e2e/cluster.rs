//! The `cluster` phase: the cost of forwarding between replicas. A real
//! `redis-server`, two replicas of the release `h2rev2` binary sharing one certificate,
//! and a Listener (`h2rev2 client`) on the first, in front of the harness's internal
//! server. Small requests go through the replica that holds the session (the owner) and
//! through the other one (forwarded over the replicas' HTTP/2 connection), in
//! interleaved rounds; the report gives both and their ratio.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::Res;
use crate::load::Endpoint;

/// The processes of the phase; killed on drop.
pub struct Cluster {
    procs: Vec<Child>,
    _dir: tempfile::TempDir,
    /// The replica that holds the session.
    pub owner: SocketAddr,
    /// The replica that forwards to it.
    pub forwarder: SocketAddr,
}

fn free_port() -> Res<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The release `h2rev2` binary next to this one.
fn h2rev2() -> Res<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("h2rev2");
    if !bin.exists() {
        return Err(format!(
            "{} is missing: build it with `cargo build --release --workspace --bins`",
            bin.display()
        )
        .into());
    }
    Ok(bin)
}

fn spawn(program: &Path, args: &[&str]) -> Res<Child> {
    Ok(Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?)
}

async fn wait_port(port: u16) -> Res<()> {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("nothing listens on 127.0.0.1:{port} after 10 s").into())
}

impl Cluster {
    /// Starts Redis, two replicas and a Listener for id `c` proxying to `internal`.
    pub async fn start(internal: SocketAddr) -> Res<Cluster> {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        let bin = h2rev2()?;
        let f = |n: &str| d.join(n).display().to_string();
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()])?;
        std::fs::write(d.join("s.crt"), ck.cert.pem())?;
        std::fs::write(d.join("s.key"), ck.signing_key.serialize_pem())?;
        std::fs::write(d.join("tokens.txt"), "c tc\n")?;
        std::fs::write(d.join("cluster.token"), "bench-cluster\n")?;
        let mut procs = Vec::new();
        let redis_port = free_port()?;
        let rp = redis_port.to_string();
        procs.push(spawn(
            Path::new("redis-server"),
            &[
                "--port",
                &rp,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
        )?);
        wait_port(redis_port).await?;
        let redis = format!("redis://127.0.0.1:{redis_port}");
        let mut addrs = Vec::new();
        for n in 1..=2 {
            let port = free_port()?;
            let listen = format!("127.0.0.1:{port}");
            let url = format!("https://{listen}");
            let name = format!("r{n}");
            let (crt, key, tokens, ct) =
                (f("s.crt"), f("s.key"), f("tokens.txt"), f("cluster.token"));
            procs.push(spawn(
                &bin,
                &[
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
                    "--max-requests-per-client",
                    "4096",
                    "--max-requests-per-id",
                    "8192",
                ],
            )?);
            wait_port(port).await?;
            addrs.push(SocketAddr::from(([127, 0, 0, 1], port)));
        }
        let server = format!("https://{}", addrs[0]);
        let target = format!("http://{internal}");
        let crt = f("s.crt");
        let mut client = Command::new(&bin);
        client
            .args([
                "client",
                "--server",
                &server,
                "--ca",
                &crt,
                "--id",
                "c",
                "--proxy-host",
                &target,
            ])
            .env("H2REV2_TOKEN", "tc");
        procs.push(
            client
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()?,
        );
        Ok(Cluster {
            procs,
            _dir: dir,
            owner: addrs[0],
            forwarder: addrs[1],
        })
    }

    /// The two endpoints: (owner, forwarded).
    pub fn endpoints(&self) -> (Endpoint, Endpoint) {
        let ep = |addr| Endpoint {
            addr,
            tls: true,
            prefix: "/proxy/c".into(),
            from: None,
        };
        (ep(self.owner), ep(self.forwarder))
    }

    /// Stops everything.
    pub async fn stop(mut self) {
        for p in &mut self.procs {
            let _ = p.kill().await;
        }
    }
}
