//! Raw TCP forwarding: `server --tcp ADDR=ID` and `client --tcp-target`, with a byte
//! stream checked end to end by SHA-256, and the metrics that count it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use sha2::{Digest, Sha256};

#[test]
fn tcp_forwarding_carries_a_byte_stream_intact() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_file(dir.path(), "tokens.txt", "# id token\nssh t0ken\n");
    let cert = dir.path().join("server.crt").display().to_string();
    let tokens = tokens.display().to_string();
    let mut args = self_signed_args(&cert);
    args.extend(["--tokens", &tokens]);
    args.extend(["--tcp", "127.0.0.1:0=ssh", "--metrics", "127.0.0.1:0"]);
    let mut server = Proc::h2rev2("server", &args, &[]);
    let public = server.wait_value_after("Serving on https://", Duration::from_secs(20));
    let forward = server.wait_value_after("forwarding TCP ", Duration::from_secs(5));
    let metrics = server.wait_value_after("metrics on http://", Duration::from_secs(5));
    assert!(
        server.stderr().contains("fingerprint"),
        "prints the fingerprint"
    );

    let echo = start_echo();
    let target = format!("127.0.0.1:{echo}");
    let url = format!("https://{public}");
    let mut client = Proc::h2rev2(
        "client",
        &[
            "client",
            "--server",
            &url,
            "--ca",
            &cert,
            "--id",
            "ssh",
            "--tcp-target",
            &target,
        ],
        &[("H2REV2_TOKEN", "t0ken")],
    );
    server.wait_for("session up", Duration::from_secs(20));
    client.wait_for("Serving on Reverse connection", Duration::from_secs(5));

    // 16 MiB through: a writer thread and a reader, as iperf would.
    const N: usize = 16 << 20;
    let data: Vec<u8> = (0..N).map(|i| (i * 7 + i / 4099) as u8).collect();
    let want = Sha256::digest(&data);
    let mut tcp = TcpStream::connect(&forward).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = tcp.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        for chunk in data.chunks(100_003) {
            w.write_all(chunk).unwrap();
        }
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let started = std::time::Instant::now();
    let mut got = Vec::with_capacity(N);
    tcp.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    eprintln!(
        "16 MiB echoed in {:?} ({:.0} MiB/s each way)",
        started.elapsed(),
        16.0 / started.elapsed().as_secs_f64()
    );
    assert_eq!(got.len(), N);
    assert_eq!(Sha256::digest(&got), want, "sha256 of the echoed stream");
    server.wait_for(" dial id=", Duration::from_secs(5));

    let (ok, text, err) = curl(&[&format!("http://{metrics}")]);
    assert!(ok, "{err}");
    assert!(text.contains("h2rev2_sessions 1"), "{text}");
    let bytes = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(bytes("h2rev2_bytes_in_total ") >= N as u64, "{text}");
    assert!(bytes("h2rev2_bytes_out_total ") >= N as u64, "{text}");
    assert!(text.contains("h2rev2_dial_seconds_count 1"), "{text}");

    client.signal("TERM");
    assert!(client.wait_exit(Duration::from_secs(10)).success());
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(15)).success());
}
