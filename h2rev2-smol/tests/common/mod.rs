//! Test fixtures shared by the smol adapter's tests: certificates, a checking
//! spawner that proves no tokio runtime is present, and a checksummed test service
//! written once over futures-io (tokio conns join through `tokio_util::compat`).
#![allow(dead_code)]

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::task::Poll;
use std::time::Duration;

use futures_io::{AsyncRead, AsyncWrite};
use h2rev2_smol::proto::wire::DialerId;
use h2rev2_smol::tls::{self, Identity, ServerTrust, rustls};
use h2rev2_smol::{Spawner, Task};
use sha2::{Digest, Sha256};
use smol::io::{AsyncReadExt, AsyncWriteExt};

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub fn id(s: &str) -> DialerId {
    DialerId::new(s).unwrap()
}

/// A self-signed identity for localhost and the configs of both sides.
pub struct Certs {
    pub identity: Identity,
}

impl Certs {
    pub fn new() -> Certs {
        let (identity, _, _) =
            Identity::self_signed(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        Certs { identity }
    }

    /// The Listener's config (ALPN h2), trusting exactly this certificate. A plain
    /// rustls config: the tokio Listener takes it as it is.
    pub fn client_tls(&self) -> Arc<rustls::ClientConfig> {
        let trust = ServerTrust::from_certs(&self.identity.certs).unwrap();
        tls::client_config(trust, None).unwrap()
    }

    pub fn server_tls(&self) -> Arc<rustls::ServerConfig> {
        tls::server_config(self.identity.clone()).unwrap()
    }

    /// The same certificate for h2rev2-tokio's server.
    pub fn tokio_identity(&self) -> h2rev2_tokio::tls::Identity {
        h2rev2_tokio::tls::Identity {
            certs: self.identity.certs.clone(),
            key: self.identity.key.clone_key(),
        }
    }
}

/// Counts polls of the adapter's tasks and those that found a tokio runtime.
#[derive(Default)]
pub struct RuntimeProbe {
    pub polls: AtomicUsize,
    pub with_tokio: AtomicUsize,
}

impl RuntimeProbe {
    /// Checks the current thread: no tokio runtime may be entered here.
    pub fn check(&self) {
        self.polls.fetch_add(1, Relaxed);
        if tokio::runtime::Handle::try_current().is_ok() {
            self.with_tokio.fetch_add(1, Relaxed);
        }
    }

    /// Wraps `fut` so that every poll is checked.
    pub fn wrap<'a, F: Future + 'a>(
        self: &Arc<Self>,
        fut: F,
    ) -> impl Future<Output = F::Output> + 'a {
        let probe = self.clone();
        let mut fut = Box::pin(fut);
        std::future::poll_fn(move |cx| {
            probe.check();
            fut.as_mut().poll(cx)
        })
    }

    /// A spawner running tasks on `inner`, each poll checked.
    pub fn spawner(self: &Arc<Self>, inner: impl Fn(Task) + Send + Sync + 'static) -> Spawner {
        let probe = self.clone();
        Spawner::new(move |task| inner(Box::pin(probe.wrap(task))))
    }

    /// Asserts the adapter ran (at least `min` polls) and never with tokio.
    pub fn assert_clean(&self, min: usize) {
        let polls = self.polls.load(Relaxed);
        let bad = self.with_tokio.load(Relaxed);
        assert!(polls >= min, "only {polls} polls were checked");
        assert_eq!(bad, 0, "{bad} of {polls} polls found a tokio runtime");
    }
}

/// Pseudo-random bytes from `seed`.
pub fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v = vec![0u8; n];
    rng.fill(&mut v);
    v
}

pub fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// What the service saw of an upload: its length and digest.
pub type Upload = (u64, [u8; 32]);

/// The NAT-side test service on one conn. The first byte picks the exercise:
///
/// * `E`: echo until the peer's END_STREAM, then close (the dialer half-closes first);
/// * `U` + u64 `m` + u64 `seed`: send `m` bytes of `data(m, seed)` and close our side
///   first, then keep reading the peer's upload until its end, and report its length
///   and digest on `uploads` (the Listener side half-closes first, then reads).
pub async fn serve_test_conn<C: AsyncRead + AsyncWrite + Unpin>(
    mut conn: C,
    uploads: smol::channel::Sender<Upload>,
) -> io::Result<()> {
    let mut kind = [0u8; 1];
    conn.read_exact(&mut kind).await?;
    match &kind {
        b"E" => {
            let mut buf = vec![0u8; 32 << 10];
            loop {
                let n = conn.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                conn.write_all(&buf[..n]).await?;
            }
            conn.close().await
        }
        b"U" => {
            let mut hdr = [0u8; 16];
            conn.read_exact(&mut hdr).await?;
            let m = u64::from_be_bytes(hdr[..8].try_into().unwrap()) as usize;
            let seed = u64::from_be_bytes(hdr[8..].try_into().unwrap());
            conn.write_all(&data(m, seed)).await?;
            conn.close().await?;
            let mut got = Vec::new();
            conn.read_to_end(&mut got).await?;
            let _ = uploads.send((got.len() as u64, sha(&got))).await;
            Ok(())
        }
        other => Err(io::Error::other(format!("unknown exercise {other:?}"))),
    }
}

/// Dialer side of `E`: writes `n` bytes while reading the echo; half-closes; checks
/// the echo's length and digest after the peer's END_STREAM.
pub async fn check_echo<C: AsyncRead + AsyncWrite + Unpin>(
    conn: C,
    n: usize,
    seed: u64,
) -> io::Result<()> {
    let sent = data(n, seed);
    let (mut r, mut w) = smol::io::split(conn);
    let writer = async {
        w.write_all(b"E").await?;
        for chunk in sent.chunks(50_000) {
            w.write_all(chunk).await?;
        }
        w.close().await // half-close: the echo goes on
    };
    let reader = async {
        let mut got = Vec::with_capacity(n);
        r.read_to_end(&mut got).await?;
        Ok::<_, io::Error>(got)
    };
    let (wr, got) = smol::future::zip(writer, reader).await;
    wr?;
    let got = got?;
    assert_eq!(got.len(), n, "echo length");
    assert_eq!(sha(&got), sha(&sent), "echo checksum");
    Ok(())
}

/// Dialer side of `U`: downloads `m` bytes until the peer half-closes, checks them,
/// then uploads `k` bytes on the still-open direction and checks what the service
/// reports.
pub async fn check_download_upload<C: AsyncRead + AsyncWrite + Unpin>(
    mut conn: C,
    m: usize,
    k: usize,
    seed: u64,
    uploads: &smol::channel::Receiver<Upload>,
) -> io::Result<()> {
    let mut hdr = b"U".to_vec();
    hdr.extend_from_slice(&(m as u64).to_be_bytes());
    hdr.extend_from_slice(&seed.to_be_bytes());
    conn.write_all(&hdr).await?;
    conn.flush().await?;
    let mut got = Vec::with_capacity(m);
    conn.read_to_end(&mut got).await?;
    assert_eq!(got.len(), m, "download length");
    assert_eq!(sha(&got), sha(&data(m, seed)), "download checksum");
    let up = data(k, seed ^ 0xabcd);
    conn.write_all(&up).await?;
    conn.close().await?;
    let report = with_timeout(Duration::from_secs(20), uploads.recv())
        .await
        .map_err(|_| io::Error::other("the service reported no upload"))?;
    assert_eq!(report, (k as u64, sha(&up)), "upload seen by the service");
    Ok(())
}

/// Races `fut` against an async-io timer (works under any executor).
pub async fn with_timeout<T>(d: Duration, fut: impl Future<Output = T>) -> T {
    let mut fut = Box::pin(fut);
    let mut timer = smol::Timer::after(d);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(v);
        }
        if Pin::new(&mut timer).poll(cx).is_ready() {
            panic!("timed out after {d:?}");
        }
        Poll::Pending
    })
    .await
}

/// Polls `f` until it returns true, for up to `d`.
pub async fn eventually(d: Duration, mut f: impl AsyncFnMut() -> bool) {
    let end = std::time::Instant::now() + d;
    while !f().await {
        assert!(
            std::time::Instant::now() < end,
            "condition not met within {d:?}"
        );
        smol::Timer::after(Duration::from_millis(10)).await;
    }
}

/// Reads one HTTP/1.1 request head from `conn` and answers `200` with the body
/// `{prefix} {path}` (and `extra_headers`, each ended by CRLF); `false` if the conn
/// ended before a whole head arrived.
pub async fn answer_http(
    conn: &mut h2rev2_smol::RevConn,
    prefix: &str,
    extra_headers: &str,
) -> bool {
    use smol::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).await.unwrap_or(0) == 0 {
            return false;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let path = head.split_whitespace().nth(1).unwrap_or("?").to_string();
    let body = format!("{prefix} {path}");
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{extra_headers}\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(resp.as_bytes()).await;
    let _ = conn.flush().await;
    true
}
