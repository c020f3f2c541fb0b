//! Attacks on the public server (issue 6): hijacking, authentication probing, limits,
//! slowloris, and HTTP/2 floods played with raw frames. Every attack test asserts that
//! the attacker is refused or cut off *and* that a legitimate tunnel on the same server
//! still works afterwards.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use h2rev2_tokio::proto::LimitError;
use h2rev2_tokio::proto::dialer::DialError;
use h2rev2_tokio::proto::wire::{Command, Decoder};
use h2rev2_tokio::tls::{self, Identity, ServerTrust};
use h2rev2_tokio::{CertIdentity, ServerConfig};
use http::{Request, StatusCode, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

// ---------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------

/// A short handshake / first-request timeout, so slowloris tests run fast.
const SHORT: Duration = Duration::from_millis(500);

/// `app` (the legitimate tunnel, token `tok`) and `evil` (a registered but hostile
/// Listener, token `evil-tok`).
fn config() -> ServerConfig {
    token_config(&[("app", "tok"), ("evil", "evil-tok")])
}

/// GET `/proxy/app/hello` on a fresh HTTP/2 connection *and* a fresh HTTP/1.1
/// connection, and checks the session of `app` is still there: the tunnel works.
async fn assert_healthy(s: &Stack) {
    for v in [Version::HTTP_2, Version::HTTP_11] {
        let (status, body) = get(s.public.addr, &s.certs, v, "/proxy/app/hello").await;
        assert_eq!(status, StatusCode::OK, "{v:?}: {body:?}");
        assert_eq!(&body[..], b"hello from inside\n", "{v:?}");
    }
    assert!(s.public.server.stats().await.sessions >= 1);
}

/// The resident set size of this process (server and attackers alike), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// An h2 client connection (the `h2` crate) with `tls`; the connection is driven by a
/// task whose handle is returned (it ends when the server closes the connection).
async fn h2_conn_with(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> Result<(SendRequest<Bytes>, tokio::task::JoinHandle<()>), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = tls::server_name("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (send, conn) = h2::client::handshake(tls)
        .await
        .map_err(|e| format!("HTTP/2: {e}"))?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((send, task))
}

async fn h2_conn(addr: SocketAddr, certs: &Certs) -> SendRequest<Bytes> {
    h2_conn_with(addr, certs.client_tls()).await.unwrap().0
}

/// The answer to one request opened by a hand-driven Listener.
struct Opened {
    status: StatusCode,
    /// The text body, when the status is not 200.
    body: String,
    /// The stream, when the status is 200.
    stream: Option<(SendStream<Bytes>, RecvStream)>,
}

/// Opens `path_and_query` (a revdial request, say) the way a Listener does: GET,
/// HEADERS without END_STREAM, optional bearer token and extra headers.
async fn open_with(
    send: &SendRequest<Bytes>,
    port: u16,
    path_and_query: &str,
    token: Option<&str>,
    extra: &[(&str, String)],
) -> Result<Opened, String> {
    let mut b = Request::get(format!("https://localhost:{port}{path_and_query}"));
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in extra {
        b = b.header(*k, v);
    }
    let req = b.body(()).unwrap();
    let mut send = send.clone().ready().await.map_err(|e| e.to_string())?;
    let (resp, stream) = send.send_request(req, false).map_err(|e| e.to_string())?;
    let resp = timeout(Duration::from_secs(10), resp)
        .await
        .map_err(|_| "no answer within 10 s".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let mut recv = resp.into_body();
    if status == StatusCode::OK {
        return Ok(Opened {
            status,
            body: String::new(),
            stream: Some((stream, recv)),
        });
    }
    let mut body = Vec::new();
    while let Some(Ok(chunk)) = timeout(Duration::from_secs(10), recv.data())
        .await
        .ok()
        .flatten()
    {
        let _ = recv.flow_control().release_capacity(chunk.len());
        body.extend_from_slice(&chunk);
    }
    Ok(Opened {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        stream: None,
    })
}

async fn open(
    send: &SendRequest<Bytes>,
    port: u16,
    path_and_query: &str,
    token: Option<&str>,
) -> Opened {
    open_with(send, port, path_and_query, token, &[])
        .await
        .unwrap()
}

/// Reads the control stream until a `conn-ready`; returns its token.
async fn next_conn_ready(recv: &mut RecvStream, decoder: &mut Decoder) -> String {
    loop {
        while let Some(m) = decoder.next_message() {
            let m = m.unwrap();
            if m.command == Command::ConnReady {
                return m.conn_path;
            }
        }
        let chunk = timeout(Duration::from_secs(10), recv.data())
            .await
            .expect("a control message within 10 s")
            .expect("control stream open")
            .unwrap();
        let _ = recv.flow_control().release_capacity(chunk.len());
        decoder.push(&chunk);
    }
}

/// Whether a stream the server answered 200 is reset (or ended) within `within`.
async fn stream_ends_within(recv: &mut RecvStream, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, recv.data()).await {
            Err(_) => return false,
            Ok(None) | Ok(Some(Err(_))) => return true,
            Ok(Some(Ok(chunk))) => {
                let _ = recv.flow_control().release_capacity(chunk.len());
            }
        }
    }
}

/// Waits until `cond` holds on the server's stats (5 s at most).
async fn wait_stats(
    server: &h2rev2_driver::Server,
    what: &str,
    cond: impl Fn(&h2rev2_tokio::proto::dialer::Stats) -> bool,
) {
    for _ in 0..500 {
        if cond(&server.stats().await) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: stats stayed at {:?}", server.stats().await);
}

// ---------------------------------------------------------------------------------
// A hand-written HTTP/2 client: frames as bytes on a TLS socket.
// ---------------------------------------------------------------------------------

mod raw {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
    use tokio::net::TcpStream;
    use tokio_rustls::client::TlsStream;

    use super::Certs;

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const CONTINUATION: u8 = 0x9;
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const REFUSED_STREAM: u32 = 0x7;
    pub const CANCEL: u32 = 0x8;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;

    pub type Reader = ReadHalf<TlsStream<TcpStream>>;
    pub type Writer = WriteHalf<TlsStream<TcpStream>>;

    /// One frame: 9-byte header (RFC 9113 4.1) and payload.
    pub fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(9 + payload.len());
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        f.push(ty);
        f.push(flags);
        f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// HPACK integer with an `n`-bit prefix (RFC 7541 5.1).
    fn int(out: &mut Vec<u8>, n: u8, first: u8, mut v: usize) {
        let max = (1usize << n) - 1;
        if v < max {
            out.push(first | v as u8);
            return;
        }
        out.push(first | max as u8);
        v -= max;
        while v >= 128 {
            out.push((v % 128 + 128) as u8);
            v /= 128;
        }
        out.push(v as u8);
    }

    /// A header block of literal fields without indexing, new names, no Huffman
    /// (RFC 7541 6.2.2): no HPACK state needed on our side.
    pub fn hpack(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in fields {
            out.push(0x00);
            int(&mut out, 7, 0, n.len());
            out.extend_from_slice(n.as_bytes());
            int(&mut out, 7, 0, v.len());
            out.extend_from_slice(v.as_bytes());
        }
        out
    }

    /// The header block of `GET path` with extra fields.
    pub fn get(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
        let mut fields = vec![
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "localhost"),
            (":path", path),
        ];
        fields.extend_from_slice(extra);
        hpack(&fields)
    }

    #[derive(Debug)]
    pub struct Frame {
        pub ty: u8,
        pub flags: u8,
        pub stream: u32,
        pub payload: Vec<u8>,
    }

    pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Frame> {
        let mut h = [0u8; 9];
        r.read_exact(&mut h).await?;
        let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
        let mut payload = vec![0; len];
        r.read_exact(&mut payload).await?;
        Ok(Frame {
            ty: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
            payload,
        })
    }

    /// TLS with ALPN h2, the preface and an empty SETTINGS; reads until the server's
    /// SETTINGS and acknowledges it (so that its windows apply).
    pub async fn connect(addr: SocketAddr, certs: &Certs) -> (Reader, Writer) {
        let tls = super::tls_connect(addr, certs, super::tls::ALPN_H2).await;
        let (mut r, mut w) = tokio::io::split(tls);
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        w.write_all(&hello).await.unwrap();
        loop {
            let f = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut r))
                .await
                .expect("server SETTINGS within 5 s")
                .unwrap();
            if f.ty == SETTINGS && f.flags & ACK == 0 {
                break;
            }
        }
        w.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
        w.flush().await.unwrap();
        (r, w)
    }

    /// How a connection ended.
    #[derive(Debug)]
    pub struct Closed {
        /// The error code of the GOAWAY the server sent, if one was read.
        pub goaway: Option<u32>,
    }

    /// Reads (and drops) frames until the server closes the connection: `Ok` with the
    /// GOAWAY seen, if any; `Err` if it is still open after `within`.
    pub async fn wait_closed<R: AsyncRead + Unpin>(
        r: &mut R,
        within: Duration,
    ) -> Result<Closed, String> {
        let mut goaway = None;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, read_frame(r)).await {
                Err(_) => return Err(format!("still open after {within:?} (GOAWAY {goaway:?})")),
                Ok(Err(_)) => return Ok(Closed { goaway }),
                Ok(Ok(f)) => {
                    // GOAWAY is a connection frame: stream 0 (RFC 9113 6.8).
                    if f.ty == GOAWAY && f.stream == 0 && f.payload.len() >= 8 {
                        let code = u32::from_be_bytes(f.payload[4..8].try_into().unwrap());
                        goaway.get_or_insert(code);
                    }
                }
            }
        }
    }

    /// Writes `bytes` in the background (a flood), in 64 KiB writes; the task ends when
    /// all is written or the server cut the connection.
    pub fn spawn_writer(mut w: Writer, bytes: Vec<u8>) -> tokio::task::JoinHandle<usize> {
        tokio::spawn(async move {
            let mut sent = 0;
            for chunk in bytes.chunks(64 << 10) {
                if w.write_all(chunk).await.is_err() {
                    break;
                }
                sent += chunk.len();
            }
            let _ = w.flush().await;
            // Keep the write half (and so the socket) open until the server closes it.
            std::future::pending::<()>().await;
            sent
        })
    }
}

// ---------------------------------------------------------------------------------
// Mutual TLS: ids bound to the client certificate
// ---------------------------------------------------------------------------------

/// A public server whose TLS asks for client certificates signed by `ca`, with ids bound
/// to certificates by `which`; `app` also has a token.
async fn start_mtls(side: Side, certs: &Certs, ca: &Ca, which: CertIdentity) -> Public {
    let mut config = config();
    config.dialer.auth.bind_ids_to_certificates(true);
    config.cert_identity = which;
    start_public_with(side, certs, config, Some(ca.roots())).await
}

fn mtls_client(certs: &Certs, identity: Option<Identity>) -> Arc<rustls::ClientConfig> {
    let trust = ServerTrust::from_certs(&certs.identity.certs).unwrap();
    tls::client_config(trust, identity, &[tls::ALPN_H2]).unwrap()
}

/// Registers `id` as a control stream with `tls`; the status (or the connection error).
async fn register_with(
    public: &Public,
    tls: Arc<rustls::ClientConfig>,
    id: &str,
) -> Result<(StatusCode, String), String> {
    let (send, _task) = h2_conn_with(public.addr, tls).await?;
    let o = open_with(
        &send,
        public.addr.port(),
        &format!("/revdial?id={id}&role=control"),
        None,
        &[],
    )
    .await?;
    Ok((o.status, o.body))
}

/// A Listener with a client certificate reaches `Up`, and a dial through it works.
async fn mtls_listener_works(public: &Public, certs: &Certs, id: &str, cert: Identity) {
    let mut opts = h2rev2_tokio::ListenerOptions::new(
        &public.url(),
        common::id(id),
        mtls_client(certs, Some(cert)),
    )
    .unwrap();
    // No spares: the dial's stream is the next accepted conn.
    opts.machine.spares = 0;
    let listener = bind_listener(opts);
    timeout(Duration::from_secs(10), listener.wait_up())
        .await
        .expect("Listener with a client certificate up within 10 s")
        .unwrap();
    let target = common::id(id);
    let (c, l) = timeout(Duration::from_secs(10), async {
        tokio::join!(public.server.dial(&target), listener.accept())
    })
    .await
    .unwrap();
    let (mut c, mut l) = (c.unwrap(), l.unwrap());
    c.write_all(b"ping").await.unwrap();
    c.flush().await.unwrap();
    let mut buf = [0u8; 4];
    l.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
}

async fn mtls_ids_bound_to_the_san(side: Side) {
    init_tracing();
    let certs = Certs::new();
    let ca = Ca::new("test CA");
    let public = start_mtls(side, &certs, &ca, CertIdentity::San).await;
    let node1 = || ca.client(&["node-1"], "cn-of-node-1");

    mtls_listener_works(&public, &certs, "node-1", node1()).await;

    // The same certificate cannot register another id...
    let (status, body) = register_with(&public, mtls_client(&certs, Some(node1())), "node-2")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // ...nor its CN, which is not the chosen identity here.
    let (status, _) = register_with(&public, mtls_client(&certs, Some(node1())), "cn-of-node-1")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Without a certificate (and without a token): 401.
    let (status, _) = register_with(&public, mtls_client(&certs, None), "node-1")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A certificate for "node-1" signed by another CA is refused by TLS itself.
    let rogue = Ca::new("rogue CA").client(&["node-1"], "node-1");
    let r = register_with(&public, mtls_client(&certs, Some(rogue)), "node-1").await;
    assert!(
        r.is_err(),
        "a certificate of an unknown CA was accepted: {r:?}"
    );
    // A token still works beside certificates (for the ids that have one).
    let (status, _) = {
        let (send, _t) = h2_conn_with(public.addr, mtls_client(&certs, None))
            .await
            .unwrap();
        let o = open(
            &send,
            public.addr.port(),
            "/revdial?id=app&role=control",
            Some("tok"),
        )
        .await;
        (o.status, o.body)
    };
    assert_eq!(status, StatusCode::OK);
    assert!(public.server.metrics().auth_failures.load(Relaxed) >= 3);
}
both!(mtls_ids_bound_to_the_san);

async fn mtls_ids_bound_to_the_cn(side: Side) {
    init_tracing();
    let certs = Certs::new();
    let ca = Ca::new("test CA");
    let public = start_mtls(side, &certs, &ca, CertIdentity::Cn).await;
    let cert = || ca.client(&["san-name"], "node-cn");

    mtls_listener_works(&public, &certs, "node-cn", cert()).await;
    // The SAN is not the chosen identity.
    let (status, _) = register_with(&public, mtls_client(&certs, Some(cert())), "san-name")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = register_with(&public, mtls_client(&certs, Some(cert())), "other")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
}
both!(mtls_ids_bound_to_the_cn);

// ---------------------------------------------------------------------------------
// Hijacking
// ---------------------------------------------------------------------------------

/// Anonymous mode: whoever comes second cannot take, join, or feed a live id, even
/// while one of its dials waits for a stream.
async fn anonymous_newcomer_cannot_take_join_or_feed_a_live_id(side: Side) {
    init_tracing();
    let certs = Certs::new();
    let mut config = ServerConfig::default();
    config.dialer.auth.allow_anonymous();
    let public = start_public_with(side, &certs, config, None).await;
    let port = public.addr.port();

    // The victim: a Go-style Listener (unmarked requests), driven by hand so that its
    // dials wait for a stream.
    let victim = h2_conn(public.addr, &certs).await;
    let o = open(&victim, port, "/revdial?id=app", None).await;
    assert_eq!(o.status, StatusCode::OK);
    let (_vsend, mut vrecv) = o.stream.unwrap();

    let attacker = h2_conn(public.addr, &certs).await;
    for pq in [
        "/revdial?id=app",
        "/revdial?id=app&role=control",
        "/revdial?id=app&role=data",
    ] {
        let o = open(&attacker, port, pq, None).await;
        assert_eq!(o.status, StatusCode::CONFLICT, "{pq}: {}", o.body);
    }

    // A dial waits for the victim's data stream...
    let server = public.server.clone();
    let dial = tokio::spawn(async move { server.dial(&id("app")).await });
    let mut decoder = Decoder::new();
    let token = next_conn_ready(&mut vrecv, &mut decoder).await;
    // ...and the attacker races it with unmarked streams from its own connection, with
    // and without the stolen `conn` token: none may become that dial's stream.
    for pq in [
        "/revdial?id=app".to_string(),
        format!("/revdial?id=app&conn={token}"),
        format!("/revdial?id=app&role=data&conn={token}"),
    ] {
        let o = open(&attacker, port, &pq, None).await;
        assert_eq!(o.status, StatusCode::CONFLICT, "{pq}: {}", o.body);
    }
    assert!(!dial.is_finished(), "the dial was answered by someone");

    // The victim's own data stream answers the dial.
    let o = open(&victim, port, "/revdial?id=app", None).await;
    assert_eq!(o.status, StatusCode::OK);
    let (mut dsend, _drecv) = o.stream.unwrap();
    let mut conn = timeout(Duration::from_secs(5), dial)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    dsend
        .send_data(Bytes::from_static(b"from the victim"), false)
        .unwrap();
    let mut buf = [0u8; 15];
    timeout(Duration::from_secs(5), conn.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"from the victim");
    assert_eq!(public.server.stats().await.sessions, 1);
}
both!(anonymous_newcomer_cannot_take_join_or_feed_a_live_id);

/// Token mode: data streams cannot be injected into a live session with a wrong token,
/// with another id's valid token, with the stolen `conn` token of a dial, or from
/// another connection even with the id's valid token.
async fn data_streams_cannot_be_injected(side: Side) {
    init_tracing();
    let certs = Certs::new();
    let public = start_public_with(side, &certs, config(), None).await;
    let port = public.addr.port();

    let victim = h2_conn(public.addr, &certs).await;
    let o = open(&victim, port, "/revdial?id=app&role=control", Some("tok")).await;
    assert_eq!(o.status, StatusCode::OK);
    let (_vsend, mut vrecv) = o.stream.unwrap();
    let server = public.server.clone();
    let dial = tokio::spawn(async move { server.dial(&id("app")).await });
    let mut decoder = Decoder::new();
    let token = next_conn_ready(&mut vrecv, &mut decoder).await;
    assert!(!token.is_empty());

    // The attacker holds a valid registration of its own: `evil`.
    let attacker = h2_conn(public.addr, &certs).await;
    let o = open(
        &attacker,
        port,
        "/revdial?id=evil&role=control",
        Some("evil-tok"),
    )
    .await;
    assert_eq!(o.status, StatusCode::OK);
    let _evil_control = o.stream.unwrap();

    let data = format!("/revdial?id=app&role=data&conn={token}");
    let cases: [(&str, Option<&str>, StatusCode); 4] = [
        (&data, Some("wrong"), StatusCode::FORBIDDEN),
        (&data, Some("evil-tok"), StatusCode::FORBIDDEN),
        (&data, None, StatusCode::UNAUTHORIZED),
        // The valid token of `app`, but not on the session's connection.
        (&data, Some("tok"), StatusCode::CONFLICT),
    ];
    for (pq, tok, want) in cases {
        let o = open(&attacker, port, pq, tok).await;
        assert_eq!(o.status, want, "{pq} with {tok:?}: {}", o.body);
    }
    // The stolen token on the attacker's own session: it names another session's dial.
    let o = open(
        &attacker,
        port,
        &format!("/revdial?id=evil&role=data&conn={token}"),
        Some("evil-tok"),
    )
    .await;
    assert_eq!(o.status, StatusCode::FORBIDDEN, "{}", o.body);
    assert!(!dial.is_finished(), "the dial was answered by the attacker");

    // The victim answers its dial.
    let o = open(&victim, port, &data, Some("tok")).await;
    assert_eq!(o.status, StatusCode::OK);
    let (mut dsend, _drecv) = o.stream.unwrap();
    let mut conn = timeout(Duration::from_secs(5), dial)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    dsend
        .send_data(Bytes::from_static(b"genuine"), false)
        .unwrap();
    let mut buf = [0u8; 7];
    timeout(Duration::from_secs(5), conn.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"genuine");
    // Three failed authentications, and the stolen `conn` token (403 too).
    assert_eq!(public.server.metrics().auth_failures.load(Relaxed), 4);
}
both!(data_streams_cannot_be_injected);

/// With the id's credentials, the core's takeover rules apply: `role=control` joins,
/// an unmarked control stream (a reconnecting Go Listener) replaces every live session.
async fn authenticated_newcomer_joins_or_replaces(side: Side) {
    init_tracing();
    let s = stack_on(side, token_config(&[("app", "tok")]), |_| {}).await;
    let port = s.public.addr.port();
    wait_sessions(&s.public.server, 1).await;

    let a = h2_conn(s.public.addr, &s.certs).await;
    let o = open(&a, port, "/revdial?id=app&role=control", Some("tok")).await;
    assert_eq!(o.status, StatusCode::OK);
    let (_asend, mut arecv) = o.stream.unwrap();
    wait_sessions(&s.public.server, 2).await;

    let b = h2_conn(s.public.addr, &s.certs).await;
    let o = open(&b, port, "/revdial?id=app", Some("tok")).await;
    assert_eq!(o.status, StatusCode::OK, "{}", o.body);
    let (_bsend, _brecv) = o.stream.unwrap();
    // Both older sessions (the stack's Listener and `a`) were replaced: their control
    // streams are reset.
    assert!(stream_ends_within(&mut arecv, Duration::from_secs(5)).await);
    // The stack's Listener reconnects (role=control: it joins beside `b`) and serves
    // again.
    wait_sessions(&s.public.server, 2).await;
    // Dials spread over both sessions; `b` never answers, so retry until a dial lands
    // on the Listener.
    let mut ok = false;
    for _ in 0..10 {
        let (status, body) =
            get(s.public.addr, &s.certs, Version::HTTP_2, "/proxy/app/hello").await;
        if status == StatusCode::OK {
            assert_eq!(&body[..], b"hello from inside\n");
            ok = true;
            break;
        }
    }
    assert!(ok, "the reconnected Listener never answered");
}
both!(authenticated_newcomer_joins_or_replaces);

// ---------------------------------------------------------------------------------
// Authentication failures reveal nothing and are logged with the peer
// ---------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    /// Captures this thread's INFO-level log lines while the guard lives.
    fn install() -> (Capture, tracing::subscriber::DefaultGuard) {
        let logs = Capture::default();
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// A current-thread runtime: every task of the server runs on this thread, so the
// thread's log subscriber sees their events.
async fn auth_failures_are_identical_for_existing_and_unknown_ids(side: Side) {
    let (logs, _guard) = Capture::install();

    let certs = Certs::new();
    let mut config = config();
    // Every refusal logged and answered at once (the throttle has its own test).
    config.refusals.interval = Duration::ZERO;
    let public = start_public_with(side, &certs, config, None).await;
    let port = public.addr.port();
    // `app` is configured and live; `ghost` is neither.
    let live = h2_conn(public.addr, &certs).await;
    let o = open(&live, port, "/revdial?id=app&role=control", Some("tok")).await;
    assert_eq!(o.status, StatusCode::OK);
    let _live = o.stream;

    let probe = h2_conn(public.addr, &certs).await;
    for tok in [Some("wrong"), Some("evil-tok"), None] {
        let mut answers = Vec::new();
        for pq in [
            "/revdial?id=app&role=control",
            "/revdial?id=ghost&role=control",
            "/revdial?id=app&role=data",
            "/revdial?id=ghost&role=data",
            "/revdial?id=app",
            "/revdial?id=ghost",
        ] {
            let o = open(&probe, port, pq, tok).await;
            answers.push((o.status, o.body));
        }
        let want = if tok.is_some() {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(answers[0].0, want);
        for a in &answers {
            assert_eq!(a, &answers[0], "answers differ with token {tok:?}");
        }
        assert!(!answers[0].1.contains("app") && !answers[0].1.contains("ghost"));
    }
    assert_eq!(public.server.metrics().auth_failures.load(Relaxed), 18);

    // Every refusal is logged with the peer address; the lines for the live id and for
    // the unknown one differ only in the id named.
    let text = logs.text();
    let refused: Vec<&str> = text.lines().filter(|l| l.contains("refused")).collect();
    assert_eq!(refused.len(), 18, "{text}");
    for l in &refused {
        assert!(l.contains("peer=127.0.0.1:"), "no peer address in {l:?}");
    }
    let strip = |l: &str| {
        let l = l.split_once(" WARN ").map_or(l, |(_, rest)| rest);
        let l = l.replace("ghost", "ID").replace("app", "ID");
        // The peer's port is the same for all (one connection): keep it.
        l
    };
    assert_eq!(strip(refused[0]), strip(refused[1]));
    assert_eq!(strip(refused[2]), strip(refused[3]));
    assert!(!text.contains("unknown id") && !text.contains("no such id"));
}
// Tokio only, on one thread: the log capture is the test thread's subscriber, which
// tasks on smol's executor threads would not see (the refusals themselves are the
// driver's, the same code on both runtimes).
#[tokio::test]
async fn auth_failures_are_identical_for_existing_and_unknown_ids_tokio() {
    auth_failures_are_identical_for_existing_and_unknown_ids(Side::Tokio).await
}

// A Listener that retries its refusal at once (the 2022 Go Listener does, thousands of
// times a second): past 20 refusals in 10 s its answers wait 1 s, and the log has one
// line per address and interval, not one per refusal.
async fn refusals_retried_at_once_are_slowed_and_logged_once(side: Side) {
    let (logs, _guard) = Capture::install();
    let certs = Certs::new();
    let public = start_public_with(side, &certs, config(), None).await;
    let port = public.addr.port();
    let conn = h2_conn(public.addr, &certs).await;
    let answer_at_once = ServerConfig::default().refusals.answer_at_once;
    for i in 0..answer_at_once + 3 {
        let started = Instant::now();
        let o = open(&conn, port, "/revdial?id=app&role=control", Some("wrong")).await;
        let took = started.elapsed();
        assert_eq!(o.status, StatusCode::FORBIDDEN, "{}", o.body);
        if i < answer_at_once {
            assert!(
                took < Duration::from_millis(900),
                "refusal {i} took {took:?}"
            );
        } else {
            assert!(
                took >= Duration::from_millis(900),
                "refusal {i} was answered after {took:?}"
            );
        }
    }
    assert_eq!(
        public.server.metrics().auth_failures.load(Relaxed),
        u64::from(answer_at_once + 3),
        "every refusal is counted"
    );
    // A legitimate Listener from the same address is not slowed.
    let started = Instant::now();
    let ok = open(&conn, port, "/revdial?id=app&role=control", Some("tok")).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_millis(900));
    if side == Side::Tokio {
        // The server's tasks run on this thread: its log lines are captured.
        let text = logs.text();
        let lines = text.matches("revdial request refused").count();
        assert_eq!(lines, 1, "{text}");
    }
}
// Tokio on one thread (the log capture sees the server's tasks); smol without it.
#[tokio::test]
async fn refusals_retried_at_once_are_slowed_and_logged_once_tokio() {
    refusals_retried_at_once_are_slowed_and_logged_once(Side::Tokio).await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_retried_at_once_are_slowed_and_logged_once_smol() {
    refusals_retried_at_once_are_slowed_and_logged_once(Side::Smol).await
}

// ---------------------------------------------------------------------------------
// Limits with clear answers
// ---------------------------------------------------------------------------------

async fn limit_sessions_in_total_and_per_id(side: Side) {
    init_tracing();
    let certs = Certs::new();
    let mut config = token_config(&[("a", "ta"), ("b", "tb"), ("c", "tc")]);
    config.dialer.max_sessions = 2;
    config.dialer.max_sessions_per_id = 2;
    let public = start_public_with(side, &certs, config, None).await;
    let port = public.addr.port();
    let conn = h2_conn(public.addr, &certs).await;

    let a1 = open(&conn, port, "/revdial?id=a&role=control", Some("ta")).await;
    assert_eq!(a1.status, StatusCode::OK);
    let a2 = open(&conn, port, "/revdial?id=a&role=control", Some("ta")).await;
    assert_eq!(a2.status, StatusCode::OK);
    // A third Listener for `a`: 429 (per id)...
    let a3 = open(&conn, port, "/revdial?id=a&role=control", Some("ta")).await;
    assert_eq!(a3.status, StatusCode::TOO_MANY_REQUESTS, "{}", a3.body);
    assert!(
        a3.body.contains("too many sessions for this id"),
        "{}",
        a3.body
    );
    // ...and any other id: 503 (the server is full).
    let b1 = open(&conn, port, "/revdial?id=b&role=control", Some("tb")).await;
    assert_eq!(b1.status, StatusCode::SERVICE_UNAVAILABLE, "{}", b1.body);
    assert!(
        b1.body.contains("too many sessions on this server"),
        "{}",
        b1.body
    );

    // A session that ends frees its place.
    drop(a1);
    wait_stats(&public.server, "a1 gone", |s| s.sessions == 1).await;
    let c1 = open(&conn, port, "/revdial?id=c&role=control", Some("tc")).await;
    assert_eq!(c1.status, StatusCode::OK, "{}", c1.body);
    assert!(public.server.metrics().limit_refusals.load(Relaxed) >= 2);
}
both!(limit_sessions_in_total_and_per_id);

async fn limit_pending_dials_per_id_and_spares(side: Side) {
    init_tracing();
    let certs = Certs::new();
    let mut config = config();
    config.dialer.max_pending_dials_per_id = 2;
    config.dialer.max_spares_per_session = 2;
    let public = start_public_with(side, &certs, config, None).await;
    let port = public.addr.port();
    let l = h2_conn(public.addr, &certs).await;
    let o = open(&l, port, "/revdial?id=app&role=control", Some("tok")).await;
    let (_csend, mut crecv) = o.stream.unwrap();

    // Two dials wait (nobody opens their streams); the third is refused at once.
    let s1 = public.server.clone();
    let s2 = public.server.clone();
    let d1 = tokio::spawn(async move { s1.dial(&id("app")).await });
    let d2 = tokio::spawn(async move { s2.dial(&id("app")).await });
    let mut dec = Decoder::new();
    next_conn_ready(&mut crecv, &mut dec).await;
    next_conn_ready(&mut crecv, &mut dec).await;
    let started = Instant::now();
    let e = public.server.dial(&id("app")).await.unwrap_err();
    assert_eq!(e, DialError::Limit(LimitError::PendingDials));
    assert!(started.elapsed() < Duration::from_secs(2));
    // A Client of the proxy hears 429.
    let (status, body) = get(public.addr, &certs, Version::HTTP_2, "/proxy/app/x").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body:?}");
    d1.abort();
    d2.abort();
    wait_stats(&public.server, "dials cancelled", |s| s.pending_dials == 0).await;

    // Spares: two are parked, the third is refused.
    let mut spares = Vec::new();
    for i in 0..3 {
        let o = open(&l, port, "/revdial?id=app&role=data", Some("tok")).await;
        if i < 2 {
            assert_eq!(o.status, StatusCode::OK, "{}", o.body);
            spares.push(o);
        } else {
            assert_eq!(o.status, StatusCode::TOO_MANY_REQUESTS, "{}", o.body);
            assert!(o.body.contains("too many spare streams"), "{}", o.body);
        }
    }
    wait_stats(&public.server, "two spares", |s| s.spares == 2).await;
}
both!(limit_pending_dials_per_id_and_spares);

async fn header_list_over_16_kib_is_refused(side: Side) {
    init_tracing();
    let s = stack_on(side, token_config(&[("app", "tok")]), |_| {}).await;
    let port = s.public.addr.port();
    let conn = h2_conn(s.public.addr, &s.certs).await;
    let big = "x".repeat(20 << 10);
    match open_with(
        &conn,
        port,
        "/revdial?id=app&role=control",
        Some("tok"),
        &[("x-big", big)],
    )
    .await
    {
        Ok(o) => assert_eq!(o.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        Err(e) => assert!(e.contains("refused") || e.contains("REFUSED"), "{e}"),
    }
    // Headers just under the limit pass, on the same connection.
    let o = open_with(
        &conn,
        port,
        "/proxy/app/hello",
        None,
        &[("x-fine", "y".repeat(8 << 10))],
    )
    .await
    .unwrap();
    assert_eq!(o.status, StatusCode::OK);
    assert_healthy(&s).await;
}
both!(header_list_over_16_kib_is_refused);

/// A Listener that writes a control line over 64 KiB loses its own session, and only
/// its own.
async fn control_line_over_64_kib_resets_only_that_session(side: Side) {
    init_tracing();
    let s = stack_on(side, config(), |_| {}).await;
    let port = s.public.addr.port();
    let evil = h2_conn(s.public.addr, &s.certs).await;
    let o = open(
        &evil,
        port,
        "/revdial?id=evil&role=control",
        Some("evil-tok"),
    )
    .await;
    assert_eq!(o.status, StatusCode::OK);
    let (mut send, mut recv) = o.stream.unwrap();
    wait_sessions(&s.public.server, 2).await;

    let line = vec![b'{'; 70 << 10];
    send.reserve_capacity(line.len());
    send.send_data(Bytes::from(line), false).unwrap();
    assert!(
        stream_ends_within(&mut recv, Duration::from_secs(5)).await,
        "the oversized control line did not reset the session"
    );
    wait_sessions(&s.public.server, 1).await;
    assert_healthy(&s).await;
    // The attacker's connection itself lives on (only the stream was reset): it may
    // register again.
    let o = open(
        &evil,
        port,
        "/revdial?id=evil&role=control",
        Some("evil-tok"),
    )
    .await;
    assert_eq!(o.status, StatusCode::OK);
}
both!(control_line_over_64_kib_resets_only_that_session);

// ---------------------------------------------------------------------------------
// Slowloris and connection limits
// ---------------------------------------------------------------------------------

fn short_config() -> ServerConfig {
    let mut c = config();
    c.handshake_timeout = SHORT;
    c
}

/// Reads from a socket until EOF or error; `Err` if still open after `within`.
async fn closed_within<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    within: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match timeout(within.saturating_sub(started.elapsed()), r.read(&mut buf)).await {
            Err(_) => return Err(format!("still open after {within:?}")),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

async fn slowloris_clients_are_cut_after_the_handshake_timeout(side: Side) {
    init_tracing();
    let s = stack_on(side, short_config(), |_| {}).await;
    let addr = s.public.addr;
    let bound = SHORT * 6;

    // 1. TCP only: no ClientHello.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let t = closed_within(&mut tcp, bound).await.unwrap();
    assert!(t >= SHORT / 2, "closed before the timeout: {t:?}");

    // 2. Half a ClientHello.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    closed_within(&mut tcp, bound).await.unwrap();

    // 3. TLS done (ALPN h2), no HTTP/2 preface.
    let mut tls = tls_connect(addr, &s.certs, tls::ALPN_H2).await;
    closed_within(&mut tls, bound).await.unwrap();

    // 4. Preface and SETTINGS, then no request at all.
    let (mut r, _w) = raw::connect(addr, &s.certs).await;
    raw::wait_closed(&mut r, bound).await.unwrap();

    // 5. A request whose header block never ends (HEADERS without END_HEADERS): no
    //    stream is opened until it does.
    let (mut r, mut w) = raw::connect(addr, &s.certs).await;
    let block = raw::get("/proxy/app/hello", &[]);
    w.write_all(&raw::frame(raw::HEADERS, 0, 1, &block[..block.len() / 2]))
        .await
        .unwrap();
    w.flush().await.unwrap();
    raw::wait_closed(&mut r, bound).await.unwrap();

    // 6. HTTP/1.1, headers dribbled one byte at a time.
    let mut tls = tls_connect(addr, &s.certs, tls::ALPN_HTTP11).await;
    let dribble = async {
        for b in b"GET /proxy/app/hello HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
            .iter()
            .cycle()
        {
            if tls.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert!(
        timeout(bound, dribble).await.is_ok(),
        "a dribbling HTTP/1.1 client was still connected after {bound:?}"
    );

    // 7. HTTP/1.1 keep-alive: after a response, the wait for the next request's
    //    headers is bounded the same way.
    let mut tls = tls_connect(addr, &s.certs, tls::ALPN_HTTP11).await;
    tls.write_all(b"GET /proxy/app/hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"hello from inside\n") {
        let n = timeout(Duration::from_secs(5), tls.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before the response: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    closed_within(&mut tls, bound).await.unwrap();

    // The Listener's connection, older than all of these, is untouched.
    assert_eq!(s.public.server.stats().await.sessions, 1);
    assert_healthy(&s).await;
}
both!(slowloris_clients_are_cut_after_the_handshake_timeout);

async fn idle_http2_client_connection_is_closed(side: Side) {
    init_tracing();
    let mut config = config();
    config.idle_timeout = Duration::from_secs(1);
    let s = stack_on(side, config, |_| {}).await;
    let (send, task) = h2_conn_with(s.public.addr, s.certs.client_tls())
        .await
        .unwrap();
    let o = open_with(&send, s.public.addr.port(), "/proxy/app/hello", None, &[])
        .await
        .unwrap();
    assert_eq!(o.status, StatusCode::OK);
    drop(o);
    // The connection has no stream left: closed after the idle timeout.
    timeout(Duration::from_secs(6), task)
        .await
        .expect("idle HTTP/2 client connection closed within 6 s")
        .unwrap();
    // The Listener's connection (its control stream open, nothing else) stays.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.public.server.stats().await.sessions, 1);
    assert_healthy(&s).await;
}
both!(idle_http2_client_connection_is_closed);

async fn connections_per_ip_are_limited(side: Side) {
    init_tracing();
    let mut config = config();
    config.max_connections_per_ip = 4;
    let s = stack_on(side, config, |_| {}).await;
    let addr = s.public.addr;
    // The Listener holds one slot of 127.0.0.1; three silent connections take the rest.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refusals = s.public.server.metrics().limit_refusals.load(Relaxed);
    let mut fifth = TcpStream::connect(addr).await.unwrap();
    closed_within(&mut fifth, Duration::from_secs(2))
        .await
        .expect("the fifth connection from one address is closed at once");
    assert!(s.public.server.metrics().limit_refusals.load(Relaxed) > refusals);

    // Another address is not affected.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = sock.connect(addr).await.unwrap();
    assert!(
        closed_within(&mut other, Duration::from_millis(300))
            .await
            .is_err(),
        "a connection from 127.0.0.2 was refused"
    );
    drop(other);

    // Slots come back when connections end.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_healthy(&s).await;
}
both!(connections_per_ip_are_limited);

/// 500 Clients from one address (a load test, a corporate NAT, a load balancer in
/// front) at the default settings: each holds a connection of its own open, and every
/// one of them is served.
async fn five_hundred_clients_from_one_address_are_served_at_default_settings(side: Side) {
    init_tracing();
    let s = stack_on(side, config(), |_| {}).await;
    assert_eq!(
        ServerConfig::default().max_connections_per_ip,
        config().max_connections_per_ip,
        "the default limit"
    );
    let (addr, certs) = (s.public.addr, &s.certs);
    // All connections open at once (the Listener's holds one more slot).
    let clients = futures_util::future::join_all((0..500).map(|_| h1_client(addr, certs))).await;
    let answers = futures_util::future::join_all(clients.into_iter().map(|mut c| async move {
        let req = Request::get(format!("https://localhost:{}/proxy/app/hello", addr.port()))
            .header("host", format!("localhost:{}", addr.port()))
            .body(empty())
            .unwrap();
        let resp = timeout(Duration::from_secs(30), c.send_request(req))
            .await
            .map_err(|_| "no answer in 30 s".to_string())?
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .map_err(|e| e.to_string())?;
        // The connection stays open until every Client has its answer.
        Ok::<_, String>((status, body.to_bytes(), c))
    }))
    .await;
    let mut failed = Vec::new();
    for a in &answers {
        match a {
            Ok((StatusCode::OK, body, _)) if &body[..] == b"hello from inside\n" => {}
            Ok((status, body, _)) => failed.push(format!("{status} {body:?}")),
            Err(e) => failed.push(e.clone()),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of 500 failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(s.public.server.metrics().limit_refusals.load(Relaxed), 0);
    drop(answers);
    assert_healthy(&s).await;
}
both!(five_hundred_clients_from_one_address_are_served_at_default_settings);

/// Streams per connection (a Listener's session and its reverse conns, or a Client's
/// requests) are bounded by `SETTINGS_MAX_CONCURRENT_STREAMS`: one more is refused
/// (`REFUSED_STREAM`) and the others go on.
async fn streams_per_connection_are_limited(side: Side) {
    init_tracing();
    let mut config = config();
    config.h2.max_concurrent_streams = 8;
    let s = stack_on(side, config, |_| {}).await;
    let (mut r, mut w) = raw::connect(s.public.addr, &s.certs).await;
    // Nine event streams (each lasts 1.5 s), opened at once.
    let block = raw::get("/proxy/app/sse", &[]);
    let mut frames = Vec::new();
    for i in 0..9u32 {
        frames.extend(raw::frame(
            raw::HEADERS,
            raw::END_HEADERS | raw::END_STREAM,
            2 * i + 1,
            &block,
        ));
    }
    w.write_all(&frames).await.unwrap();
    w.flush().await.unwrap();
    let mut refused = Vec::new();
    let mut answered = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while answered.len() < 8 || refused.is_empty() {
        let f = tokio::time::timeout_at(deadline, raw::read_frame(&mut r))
            .await
            .expect("answers within 5 s")
            .unwrap();
        match f.ty {
            raw::RST_STREAM => refused.push((
                f.stream,
                u32::from_be_bytes(f.payload[..4].try_into().unwrap()),
            )),
            raw::HEADERS => {
                answered.insert(f.stream);
            }
            _ => {}
        }
    }
    assert_eq!(refused, vec![(17, raw::REFUSED_STREAM)]);
    assert_eq!(answered.len(), 8);
    drop((r, w));
    assert_healthy(&s).await;
}
both!(streams_per_connection_are_limited);

// ---------------------------------------------------------------------------------
// HTTP/2 floods with raw frames
// ---------------------------------------------------------------------------------

/// Rapid reset (CVE-2023-44487): requests opened and reset at once, in bulk.
async fn rapid_reset_is_cut_off(side: Side) {
    init_tracing();
    let s = stack_on(side, token_config(&[("app", "tok")]), |_| {}).await;
    let (mut r, w) = raw::connect(s.public.addr, &s.certs).await;
    let block = raw::get("/proxy/app/hello", &[]);
    let mut flood = Vec::new();
    for i in 0..5_000u32 {
        let stream = 2 * i + 1;
        flood.extend(raw::frame(
            raw::HEADERS,
            raw::END_HEADERS | raw::END_STREAM,
            stream,
            &block,
        ));
        flood.extend(raw::frame(
            raw::RST_STREAM,
            0,
            stream,
            &raw::CANCEL.to_be_bytes(),
        ));
    }
    let writer = raw::spawn_writer(w, flood);
    let closed = raw::wait_closed(&mut r, Duration::from_secs(10))
        .await
        .expect("rapid reset connection closed");
    assert_eq!(closed.goaway, Some(raw::ENHANCE_YOUR_CALM), "{closed:?}");
    writer.abort();
    assert_healthy(&s).await;
    // Streams the server had accepted before the GOAWAY leave no work behind.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.public.server.stats().await.pending_dials, 0);
}
both!(rapid_reset_is_cut_off);

/// Rapid reset spread out in time: each request is accepted (a dial starts) before its
/// reset arrives. The server must drop the work of reset requests instead of piling it
/// up.
async fn slow_rapid_reset_leaves_no_work_behind(side: Side) {
    init_tracing();
    let certs = Certs::new();
    let public = start_public_with(side, &certs, config(), None).await;
    // `app` is a Listener that never answers conn-ready: every dial waits.
    let l = h2_conn(public.addr, &certs).await;
    let o = open(
        &l,
        public.addr.port(),
        "/revdial?id=app&role=control",
        Some("tok"),
    )
    .await;
    let _control = o.stream.unwrap();

    let (r, mut w) = raw::connect(public.addr, &certs).await;
    let block = raw::get("/proxy/app/hello", &[]);
    for i in 0..50u32 {
        let stream = 2 * i + 1;
        w.write_all(&raw::frame(
            raw::HEADERS,
            raw::END_HEADERS | raw::END_STREAM,
            stream,
            &block,
        ))
        .await
        .unwrap();
        w.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        w.write_all(&raw::frame(
            raw::RST_STREAM,
            0,
            stream,
            &raw::CANCEL.to_be_bytes(),
        ))
        .await
        .unwrap();
        w.flush().await.unwrap();
    }
    // Every dial of a reset request is cancelled.
    wait_stats(&public.server, "dials of reset requests cancelled", |s| {
        s.pending_dials == 0
    })
    .await;
    drop((r, w));
}
both!(slow_rapid_reset_leaves_no_work_behind);

/// CONTINUATION flood: a header block that never ends.
async fn continuation_flood_is_cut_off(side: Side) {
    init_tracing();
    let s = stack_on(side, token_config(&[("app", "tok")]), |_| {}).await;
    let rss = rss_kib();
    for payload_len in [0usize, 1000] {
        let (mut r, w) = raw::connect(s.public.addr, &s.certs).await;
        let mut flood = raw::frame(raw::HEADERS, 0, 1, &raw::get("/proxy/app/hello", &[]));
        let filler = raw::hpack(&[("x-flood", &"a".repeat(payload_len.saturating_sub(12)))]);
        let filler = if payload_len == 0 { Vec::new() } else { filler };
        let one = raw::frame(raw::CONTINUATION, 0, 1, &filler);
        for _ in 0..20_000 {
            flood.extend_from_slice(&one);
        }
        let writer = raw::spawn_writer(w, flood);
        let closed = raw::wait_closed(&mut r, Duration::from_secs(10))
            .await
            .expect("CONTINUATION flood closed");
        assert!(
            closed.goaway == Some(raw::ENHANCE_YOUR_CALM) || closed.goaway == Some(0x9),
            "payload {payload_len}: {closed:?}"
        );
        writer.abort();
    }
    let grown = rss_kib().saturating_sub(rss);
    assert!(grown < 64 << 10, "memory grew by {grown} KiB");
    assert_healthy(&s).await;
}
both!(continuation_flood_is_cut_off);

/// Small-DATA flood: one-byte DATA frames on a stream the server does not read (a
/// parked spare of a registered, hostile Listener).
async fn small_data_flood_is_cut_off(side: Side) {
    init_tracing();
    let s = stack_on(side, config(), |_| {}).await;
    let (mut r, mut w) = raw::connect(s.public.addr, &s.certs).await;
    let auth = [("authorization", "Bearer evil-tok")];
    let mut open = raw::frame(
        raw::HEADERS,
        raw::END_HEADERS,
        1,
        &raw::get("/revdial?id=evil&role=control", &auth),
    );
    open.extend(raw::frame(
        raw::HEADERS,
        raw::END_HEADERS,
        3,
        &raw::get("/revdial?id=evil&role=data", &auth),
    ));
    w.write_all(&open).await.unwrap();
    w.flush().await.unwrap();
    wait_stats(&s.public.server, "evil's spare parked", |st| {
        st.spares >= 1 && st.sessions == 2
    })
    .await;

    let one = raw::frame(raw::DATA, 0, 3, b"x");
    let mut flood = Vec::with_capacity(one.len() * 200_000);
    for _ in 0..200_000 {
        flood.extend_from_slice(&one);
    }
    let writer = raw::spawn_writer(w, flood);
    let closed = raw::wait_closed(&mut r, Duration::from_secs(20))
        .await
        .expect("small-DATA flood closed");
    assert_eq!(closed.goaway, Some(raw::ENHANCE_YOUR_CALM), "{closed:?}");
    writer.abort();
    // Only the attacker's connection went: its session is gone, `app` serves.
    wait_sessions(&s.public.server, 1).await;
    assert_healthy(&s).await;
}
both!(small_data_flood_is_cut_off);

/// SETTINGS and PING floods from a peer that never reads the ACKs: the server answers
/// each before reading the next frame, so it stops reading once its socket buffer is
/// full (memory stays bounded) and the PING keep-alive it cannot get answered closes
/// the connection.
async fn settings_and_ping_floods_are_bounded_and_cut_off(side: Side) {
    init_tracing();
    let mut config = config();
    config.h2.keepalive_interval = Duration::from_millis(300);
    config.h2.keepalive_timeout = Duration::from_millis(300);
    let s = stack_on(side, config, |_| {}).await;
    let rss = rss_kib();
    let floods: [(&str, Vec<u8>); 2] = [
        (
            "SETTINGS",
            raw::frame(raw::SETTINGS, 0, 0, &[0, 0x3, 0, 0, 0, 100]),
        ),
        ("PING", raw::frame(raw::PING, 0, 0, &[7; 8])),
    ];
    for (name, one) in floods {
        let (r, w) = raw::connect(s.public.addr, &s.certs).await;
        // The attacker also opens a stream, so that only the flood defences (not the
        // first-request timeout) can close it.
        let mut flood = raw::frame(
            raw::HEADERS,
            raw::END_HEADERS,
            1,
            &raw::get(
                "/revdial?id=evil&role=control",
                &[("authorization", "Bearer evil-tok")],
            ),
        );
        for _ in 0..300_000 {
            flood.extend_from_slice(&one);
        }
        let writer = raw::spawn_writer(w, flood);
        // Other connections are served meanwhile.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_healthy(&s).await;
        // The flooder is cut off (it answers no PING): its session ends and the server
        // serves only the Listener's connection again. (The attacker never reads.)
        let started = Instant::now();
        while s.public.server.stats().await.sessions != 1
            || s.public.server.metrics().connections.load(Relaxed) > 1
        {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "{name} flood: the connection is still open after 15 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        writer.abort();
        drop(r);
    }
    let grown = rss_kib().saturating_sub(rss);
    assert!(grown < 64 << 10, "memory grew by {grown} KiB");
    assert_healthy(&s).await;
}
both!(settings_and_ping_floods_are_bounded_and_cut_off);

/// A Listener that registers and then ignores `conn-ready` (a stalled or malicious
/// NAT side): the dial fails with `Timeout` after the configured dial timeout, a
/// proxy Client hears `504` with the id named, and nothing is left pending.
async fn dial_timeout_answers_504(side: Side) {
    init_tracing();
    let certs = Certs::new();
    let mut config = config();
    config.dialer.dial_timeout = Duration::from_millis(300);
    let public = start_public_with(side, &certs, config, None).await;
    let port = public.addr.port();
    let l = h2_conn(public.addr, &certs).await;
    let o = open(&l, port, "/revdial?id=app&role=control", Some("tok")).await;
    let (_csend, mut crecv) = o.stream.unwrap();

    let started = Instant::now();
    let e = public.server.dial(&id("app")).await.unwrap_err();
    assert_eq!(e, DialError::Timeout);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // The conn-ready was sent; nobody answered it.
    next_conn_ready(&mut crecv, &mut Decoder::new()).await;

    for v in [Version::HTTP_11, Version::HTTP_2] {
        let (status, body) = get(public.addr, &certs, v, "/proxy/app/x").await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{v:?}: {body:?}");
        assert!(
            String::from_utf8_lossy(&body).contains("app"),
            "{v:?}: the body names the id: {body:?}"
        );
    }
    wait_stats(&public.server, "no dial left pending", |s| {
        s.pending_dials == 0 && s.sessions == 1
    })
    .await;
}
both!(dial_timeout_answers_504);
