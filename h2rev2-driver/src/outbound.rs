//! Outbound proxies: how a Listener behind a corporate proxy reaches the public server.
//!
//! [`OutboundProxy`] is one proxy: HTTP `CONNECT` (`http://[user:pass@]host:port`,
//! basic auth), SOCKS5 resolving the target here (`socks5://`) or at the proxy
//! (`socks5h://`), with RFC 1929 username/password. [`ProxyRules`] says which proxy,
//! if any, to use for a host: one proxy (from `--proxy` or the environment's
//! `HTTPS_PROXY`/`ALL_PROXY`) and the [`NoProxy`] exceptions (`NO_PROXY`).
//! [`Connector::via`](crate::stack::Connector::via) puts the rules under a Listener's
//! connector, for every runtime: the proxy is reached with the connector's own
//! transport (TCP by default), the handshake runs on it, and TLS then runs end to end
//! with the public server under the public server's name, never the proxy's.
//!
//! Every wait here is bounded by the Listener's `connect_timeout`, which covers the
//! whole connection attempt (reaching the proxy, its handshake, TLS and HTTP/2). The
//! CONNECT answer is read up to [`MAX_HEAD`] bytes; SOCKS5 answers have known sizes.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::io::BoxIo;

/// The longest HTTP CONNECT response head read from a proxy (status line and headers).
pub const MAX_HEAD: usize = 16 * 1024;

/// An invalid proxy URL or proxy variable; the message never holds a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyError(String);

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProxyError {}

/// The protocol spoken to an [`OutboundProxy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// HTTP `CONNECT host:port` (`http://`).
    HttpConnect,
    /// SOCKS5 (RFC 1928): `socks5://` resolves the target's name here and sends the
    /// address, `socks5h://` (`remote_dns`) sends the name for the proxy to resolve.
    Socks5 {
        /// Send the name, not an address (`socks5h://`).
        remote_dns: bool,
    },
}

#[derive(Clone, PartialEq, Eq)]
struct Credentials {
    user: String,
    pass: String,
}

/// One outbound proxy, parsed from `http://[user:pass@]host[:port]`,
/// `socks5://[user:pass@]host[:port]` or `socks5h://...` (credentials
/// percent-decoded; default ports 80 and 1080; no scheme means `http://`).
///
/// `Display` and `Debug` show the URL with the password as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct OutboundProxy {
    kind: ProxyKind,
    host: String,
    port: u16,
    auth: Option<Credentials>,
}

impl OutboundProxy {
    /// Parses a proxy URL (see the type's docs).
    pub fn parse(url: &str) -> Result<OutboundProxy, ProxyError> {
        let url = url.trim();
        let bad = |why: &str| ProxyError(format!("proxy URL {:?}: {why}", mask(url)));
        let (scheme, rest) = match url.split_once("://") {
            Some((s, r)) => (s.to_ascii_lowercase(), r),
            None => ("http".to_string(), url),
        };
        let kind = match scheme.as_str() {
            "http" => ProxyKind::HttpConnect,
            "socks5" => ProxyKind::Socks5 { remote_dns: false },
            "socks5h" => ProxyKind::Socks5 { remote_dns: true },
            "https" => {
                return Err(bad(
                    "https:// proxies (TLS to the proxy) are not supported; use http://: the \
                     tunnel through it is still TLS to the public server",
                ));
            }
            _ => return Err(bad("expected http://, socks5:// or socks5h://")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(bad(
                "a proxy URL has no path: give SCHEME://[USER:PASS@]HOST:PORT",
            ));
        }
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let user = percent_decode(user).ok_or_else(|| bad("bad %-escape in the user"))?;
                let pass =
                    percent_decode(pass).ok_or_else(|| bad("bad %-escape in the password"))?;
                if user.is_empty() {
                    return Err(bad("empty user name"));
                }
                if kind != ProxyKind::HttpConnect && (user.len() > 255 || pass.len() > 255) {
                    return Err(bad(
                        "SOCKS5 user names and passwords have at most 255 bytes",
                    ));
                }
                (Some(Credentials { user, pass }), hostport)
            }
            None => (None, rest),
        };
        let default_port = match kind {
            ProxyKind::HttpConnect => 80,
            ProxyKind::Socks5 { .. } => 1080,
        };
        let (host, port) = split_host_port(hostport).ok_or_else(|| bad("expected HOST:PORT"))?;
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| bad("bad port"))?,
            None => default_port,
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(bad("bad host"));
        }
        Ok(OutboundProxy {
            kind,
            host: host.to_ascii_lowercase(),
            port,
            auth,
        })
    }

    /// The protocol it speaks.
    pub fn kind(&self) -> ProxyKind {
        self.kind
    }

    /// `host:port` to connect to (IPv6 in brackets).
    pub fn addr(&self) -> String {
        join_host_port(&self.host, self.port)
    }

    /// The user name given, if any.
    pub fn user(&self) -> Option<&str> {
        self.auth.as_ref().map(|a| a.user.as_str())
    }

    fn scheme(&self) -> &'static str {
        match self.kind {
            ProxyKind::HttpConnect => "http",
            ProxyKind::Socks5 { remote_dns: false } => "socks5",
            ProxyKind::Socks5 { remote_dns: true } => "socks5h",
        }
    }

    fn name(&self) -> String {
        match self.kind {
            ProxyKind::HttpConnect => format!("proxy {}", self.addr()),
            ProxyKind::Socks5 { .. } => format!("SOCKS5 proxy {}", self.addr()),
        }
    }
}

impl FromStr for OutboundProxy {
    type Err = ProxyError;
    fn from_str(s: &str) -> Result<Self, ProxyError> {
        OutboundProxy::parse(s)
    }
}

impl fmt::Display for OutboundProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme())?;
        if let Some(a) = &self.auth {
            write!(f, "{}:***@", a.user)?;
        }
        f.write_str(&self.addr())
    }
}

impl fmt::Debug for OutboundProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OutboundProxy({self})")
    }
}

/// `url` with the password of its user info replaced by `***`, for messages.
fn mask(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), url),
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}{user}:***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `host[:port]`, `[v6][:port]` or a bare IPv6 address; the host without brackets.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        return match after {
            "" => Some((host, None)),
            p => Some((host, Some(p.strip_prefix(':')?))),
        };
    }
    if s.parse::<std::net::Ipv6Addr>().is_ok() {
        return Some((s, None));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Some((h, Some(p))),
        None => Some((s, None)),
    }
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn normalize_host(host: &str) -> String {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.trim_end_matches('.').to_ascii_lowercase()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// A name and every name under it.
    Domain(String),
    /// One address.
    Ip(IpAddr),
    /// An address block (`10.0.0.0/8`).
    Cidr(IpAddr, u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    text: String,
    pattern: Pattern,
    port: Option<u16>,
}

/// The hosts to reach without a proxy, from a `NO_PROXY`-style list: comma or space
/// separated entries, case-insensitive, each `*` (every host), a name (`example.com`
/// or `.example.com`: that name and every name under it, on label boundaries), an IP
/// address or a CIDR block (`10.0.0.0/8`), optionally with `:PORT` (`[v6]:PORT` for
/// IPv6) to match that port only. Entries that cannot be read are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    all: bool,
    entries: Vec<Entry>,
}

impl NoProxy {
    /// Parses a list (see the type's docs).
    pub fn parse(list: &str) -> NoProxy {
        let mut out = NoProxy::default();
        for raw in list.split([',', ' ', '\t']).map(str::trim) {
            if raw.is_empty() {
                continue;
            }
            if raw == "*" {
                out.all = true;
                continue;
            }
            let lower = raw.to_ascii_lowercase();
            let Some(entry) = Self::entry(&lower) else {
                tracing::debug!("NO_PROXY entry {raw:?} ignored: not a host, address or block");
                continue;
            };
            out.entries.push(entry);
        }
        out
    }

    fn entry(s: &str) -> Option<Entry> {
        if let Some((ip, bits)) = s.split_once('/') {
            let ip: IpAddr = ip.parse().ok()?;
            let bits: u8 = bits.parse().ok()?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            if bits > max {
                return None;
            }
            return Some(Entry {
                text: s.to_string(),
                pattern: Pattern::Cidr(ip, bits),
                port: None,
            });
        }
        let (host, port) = split_host_port(s)?;
        let port = match port {
            Some(p) => Some(p.parse::<u16>().ok()?),
            None => None,
        };
        let pattern = match host.parse::<IpAddr>() {
            Ok(ip) => Pattern::Ip(ip),
            Err(_) => {
                let d = host.trim_start_matches("*.").trim_start_matches('.');
                let d = d.trim_end_matches('.');
                if d.is_empty() || d.contains(['/', '[', ']', '@']) {
                    return None;
                }
                Pattern::Domain(d.to_string())
            }
        };
        Some(Entry {
            text: s.to_string(),
            pattern,
            port,
        })
    }

    /// `NO_PROXY`, else `no_proxy`, from the environment (empty when neither is set).
    pub fn from_env() -> NoProxy {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// The same, reading variables through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> NoProxy {
        let list = ["NO_PROXY", "no_proxy"]
            .iter()
            .find_map(|k| var(k).filter(|v| !v.trim().is_empty()));
        NoProxy::parse(&list.unwrap_or_default())
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        !self.all && self.entries.is_empty()
    }

    /// The entry that exempts `host:port` (`*` for all), if any. `host` may be in
    /// brackets (an IPv6 address from a URL).
    pub fn matching(&self, host: &str, port: u16) -> Option<&str> {
        if self.all {
            return Some("*");
        }
        let host = normalize_host(host);
        let ip = host.parse::<IpAddr>().ok();
        self.entries
            .iter()
            .find(|e| {
                e.port.is_none_or(|p| p == port)
                    && match (&e.pattern, ip) {
                        (Pattern::Domain(d), None) => {
                            host == *d
                                || host
                                    .strip_suffix(d.as_str())
                                    .is_some_and(|pre| pre.ends_with('.'))
                        }
                        (Pattern::Ip(a), Some(ip)) => *a == ip,
                        (Pattern::Cidr(net, bits), Some(ip)) => in_block(ip, *net, *bits),
                        _ => false,
                    }
            })
            .map(|e| e.text.as_str())
    }

    /// Whether `host:port` is reached without a proxy.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        self.matching(host, port).is_some()
    }
}

fn in_block(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let (a, n, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => (u32::from(a) as u128, u32::from(n) as u128, 32),
        (IpAddr::V6(a), IpAddr::V6(n)) => (u128::from(a), u128::from(n), 128),
        _ => return false,
    };
    if bits == 0 {
        return true;
    }
    let shift = width - u32::from(bits);
    (a >> shift) == (n >> shift)
}

/// How a connection to a host is made, by [`ProxyRules::route`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// Directly: no proxy is configured.
    Direct,
    /// Directly: this `NO_PROXY` entry exempts the host.
    Bypass(&'a str),
    /// Through this proxy.
    Proxy(&'a OutboundProxy),
}

/// Which proxy a Listener uses for a host: at most one [`OutboundProxy`] and the
/// [`NoProxy`] hosts reached directly.
///
/// An explicit proxy (`--proxy URL`) replaces the environment's `HTTPS_PROXY` and
/// `ALL_PROXY`; `NO_PROXY` applies to either (as for curl).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyRules {
    proxy: Option<OutboundProxy>,
    no_proxy: NoProxy,
}

impl ProxyRules {
    /// No proxy: every connection is direct.
    pub fn none() -> ProxyRules {
        ProxyRules::default()
    }

    /// Every connection through `proxy`, no exceptions (add them with
    /// [`ProxyRules::bypass`]).
    pub fn new(proxy: OutboundProxy) -> ProxyRules {
        ProxyRules {
            proxy: Some(proxy),
            no_proxy: NoProxy::default(),
        }
    }

    /// The same rules with `no_proxy` as the hosts reached directly.
    pub fn bypass(mut self, no_proxy: NoProxy) -> ProxyRules {
        self.no_proxy = no_proxy;
        self
    }

    /// The environment's rules: the proxy from `HTTPS_PROXY`, `https_proxy`,
    /// `ALL_PROXY` or `all_proxy` (the first one set and not empty), the exceptions
    /// from `NO_PROXY` or `no_proxy`. An invalid proxy variable is an error naming it.
    pub fn from_env() -> Result<ProxyRules, ProxyError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// The same, reading variables through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<ProxyRules, ProxyError> {
        let no_proxy = NoProxy::from_vars(&var);
        let found = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
            .iter()
            .find_map(|k| var(k).filter(|v| !v.trim().is_empty()).map(|v| (k, v)));
        let proxy = match found {
            Some((k, v)) => {
                Some(OutboundProxy::parse(&v).map_err(|e| ProxyError(format!("{k}: {e}")))?)
            }
            None => None,
        };
        Ok(ProxyRules { proxy, no_proxy })
    }

    /// The proxy, if one is configured.
    pub fn proxy(&self) -> Option<&OutboundProxy> {
        self.proxy.as_ref()
    }

    /// The hosts reached directly.
    pub fn no_proxy(&self) -> &NoProxy {
        &self.no_proxy
    }

    /// How to reach `host:port` (`host` may be an IPv6 address in brackets).
    pub fn route(&self, host: &str, port: u16) -> Route<'_> {
        let Some(proxy) = &self.proxy else {
            return Route::Direct;
        };
        match self.no_proxy.matching(host, port) {
            Some(entry) => Route::Bypass(entry),
            None => Route::Proxy(proxy),
        }
    }
}

/// The port of `host:port`.
pub(crate) fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

/// Runs `proxy`'s handshake on `io` (already connected to the proxy) for a tunnel to
/// `host:port`; returns the bytes that came after the proxy's answer (the tunnel's
/// first bytes: none but in an HTTP CONNECT answer followed at once by data).
pub(crate) async fn handshake<T>(
    io: &mut T,
    proxy: &OutboundProxy,
    host: &str,
    port: u16,
) -> io::Result<Vec<u8>>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + ?Sized,
{
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match proxy.kind {
        ProxyKind::HttpConnect => http_connect(io, proxy, host, port).await,
        ProxyKind::Socks5 { remote_dns } => {
            let addr = if remote_dns || host.parse::<IpAddr>().is_ok() {
                Dest::Name(host.to_string())
            } else {
                Dest::Ip(resolve(host, port).await?)
            };
            socks5(io, proxy, &addr, host, port).await?;
            Ok(Vec::new())
        }
    }
}

async fn http_connect<T>(
    io: &mut T,
    proxy: &OutboundProxy,
    host: &str,
    port: u16,
) -> io::Result<Vec<u8>>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + ?Sized,
{
    let authority = join_host_port(host, port);
    if authority.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad host {authority:?}"),
        ));
    }
    let mut req = format!(
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: h2rev2/{}\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(a) = &proxy.auth {
        let creds = base64(format!("{}:{}", a.user, a.pass).as_bytes());
        req.push_str(&format!("Proxy-Authorization: Basic {creds}\r\n"));
    }
    req.push_str("\r\n");
    io.write_all(req.as_bytes()).await?;
    io.flush().await?;
    let name = proxy.name();
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        match parse_connect_response(&buf) {
            Ok(Some(head)) => {
                if !(200..300).contains(&head.status) {
                    let hint = match (head.status, &proxy.auth) {
                        (407, None) => " (the proxy wants credentials: http://USER:PASS@HOST:PORT)",
                        (401 | 407, Some(_)) => " (check the proxy user name and password)",
                        _ => "",
                    };
                    return Err(io::Error::new(
                        if matches!(head.status, 401 | 407) {
                            io::ErrorKind::PermissionDenied
                        } else {
                            io::ErrorKind::ConnectionRefused
                        },
                        format!(
                            "{name} refused CONNECT to {authority}: {} {}{hint}",
                            head.status, head.reason
                        ),
                    ));
                }
                return Ok(buf.split_off(head.len));
            }
            Ok(None) if buf.len() >= MAX_HEAD => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{name} sent a CONNECT response head over {MAX_HEAD} bytes"),
                ));
            }
            Ok(None) => {}
            Err(why) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{name} answered CONNECT with {why}"),
                ));
            }
        }
        let room = (MAX_HEAD - buf.len()).min(chunk.len());
        let n = io.read(&mut chunk[..room]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{name} closed the connection before answering CONNECT to {authority}"),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A CONNECT response head.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    status: u16,
    /// The reason phrase, printable ASCII only, at most 100 characters.
    reason: String,
    /// Bytes up to and including the empty line.
    len: usize,
}

/// Parses the response head at the start of `buf`: `None` until it is complete.
fn parse_connect_response(buf: &[u8]) -> Result<Option<Head>, String> {
    // The status line must look right from its first bytes: a peer that is no HTTP
    // proxy is refused at once, not after 16 KiB.
    let prefix = &buf[..buf.len().min(5)];
    if prefix != &b"HTTP/"[..prefix.len()] {
        return Err("something other than HTTP".into());
    }
    let end = (0..buf.len()).find_map(|i| {
        if buf[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if buf[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    });
    let Some(len) = end else {
        return Ok(None);
    };
    let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(len);
    let line = String::from_utf8_lossy(&buf[..line_end]);
    let line = line.trim_end_matches('\r');
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    let reason = parts.next().unwrap_or("");
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1")
        || code.len() != 3
        || !code.bytes().all(|b| b.is_ascii_digit())
    {
        let shown: String = line.chars().take(60).collect();
        return Err(format!("a bad status line {shown:?}"));
    }
    let reason: String = reason
        .chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control())
        .take(100)
        .collect();
    Ok(Some(Head {
        status: code.parse().expect("three digits"),
        reason,
        len,
    }))
}

/// What a SOCKS5 CONNECT names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dest {
    Name(String),
    Ip(IpAddr),
}

async fn resolve(host: &str, port: u16) -> io::Result<IpAddr> {
    // Name resolution blocks: it runs on a thread of its own, for every runtime.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let name = host.to_string();
    std::thread::Builder::new()
        .name("h2rev2-resolve".into())
        .spawn(move || {
            let _ = tx.send(
                (name.as_str(), port)
                    .to_socket_addrs()
                    .map(|mut a| a.next()),
            );
        })?;
    let found = rx
        .await
        .map_err(|_| io::Error::other("name resolution stopped"))?;
    match found {
        Ok(Some(SocketAddr::V4(a))) => Ok(IpAddr::V4(*a.ip())),
        Ok(Some(SocketAddr::V6(a))) => Ok(IpAddr::V6(*a.ip())),
        Ok(None) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} has no address (for socks5://; socks5h:// lets the proxy resolve it)"),
        )),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!(
                "cannot resolve {host}: {e} (for socks5://; socks5h:// lets the proxy resolve it)"
            ),
        )),
    }
}

const SOCKS_VERSION: u8 = 5;
const NO_AUTH: u8 = 0;
const USER_PASS: u8 = 2;
const NO_ACCEPTABLE: u8 = 0xff;

async fn socks5<T>(
    io: &mut T,
    proxy: &OutboundProxy,
    dest: &Dest,
    host: &str,
    port: u16,
) -> io::Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + ?Sized,
{
    let name = proxy.name();
    let target = join_host_port(host, port);
    let err = |kind: io::ErrorKind, msg: String| io::Error::new(kind, format!("{name}: {msg}"));
    let greeting: &[u8] = match proxy.auth {
        Some(_) => &[SOCKS_VERSION, 2, NO_AUTH, USER_PASS],
        None => &[SOCKS_VERSION, 1, NO_AUTH],
    };
    io.write_all(greeting).await?;
    io.flush().await?;
    let mut choice = [0u8; 2];
    read_exact(io, &mut choice, &name).await?;
    if choice[0] != SOCKS_VERSION {
        return Err(err(
            io::ErrorKind::InvalidData,
            format!("not a SOCKS5 answer (version byte {})", choice[0]),
        ));
    }
    match (choice[1], &proxy.auth) {
        (NO_AUTH, _) => {}
        (USER_PASS, Some(a)) => {
            let mut msg = vec![1, a.user.len() as u8];
            msg.extend_from_slice(a.user.as_bytes());
            msg.push(a.pass.len() as u8);
            msg.extend_from_slice(a.pass.as_bytes());
            io.write_all(&msg).await?;
            io.flush().await?;
            let mut status = [0u8; 2];
            read_exact(io, &mut status, &name).await?;
            if status[1] != 0 {
                return Err(err(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "user name or password refused (user {:?}; RFC 1929 status {})",
                        a.user, status[1]
                    ),
                ));
            }
        }
        (NO_ACCEPTABLE, None) => {
            return Err(err(
                io::ErrorKind::PermissionDenied,
                "no acceptable authentication method: the proxy may want a user name and \
                 password (socks5://USER:PASS@HOST:PORT)"
                    .into(),
            ));
        }
        (NO_ACCEPTABLE, Some(_)) => {
            return Err(err(
                io::ErrorKind::PermissionDenied,
                "accepts neither no authentication nor a user name and password".into(),
            ));
        }
        (m, _) => {
            return Err(err(
                io::ErrorKind::InvalidData,
                format!("chose authentication method {m}, which was not offered"),
            ));
        }
    }
    let mut req = vec![SOCKS_VERSION, 1, 0];
    match dest {
        Dest::Ip(IpAddr::V4(a)) => {
            req.push(1);
            req.extend_from_slice(&a.octets());
        }
        Dest::Ip(IpAddr::V6(a)) => {
            req.push(4);
            req.extend_from_slice(&a.octets());
        }
        Dest::Name(n) => match n.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => {
                req.push(1);
                req.extend_from_slice(&a.octets());
            }
            Ok(IpAddr::V6(a)) => {
                req.push(4);
                req.extend_from_slice(&a.octets());
            }
            Err(_) => {
                let len = u8::try_from(n.len()).map_err(|_| {
                    err(
                        io::ErrorKind::InvalidInput,
                        format!("host name too long: {n}"),
                    )
                })?;
                req.push(3);
                req.push(len);
                req.extend_from_slice(n.as_bytes());
            }
        },
    }
    req.extend_from_slice(&port.to_be_bytes());
    io.write_all(&req).await?;
    io.flush().await?;
    let mut reply = [0u8; 4];
    read_exact(io, &mut reply, &name).await?;
    if reply[0] != SOCKS_VERSION {
        return Err(err(
            io::ErrorKind::InvalidData,
            format!("not a SOCKS5 reply (version byte {})", reply[0]),
        ));
    }
    if reply[1] != 0 {
        return Err(err(
            io::ErrorKind::ConnectionRefused,
            format!(
                "could not connect to {target}: {} (reply {})",
                socks_reply(reply[1]),
                reply[1]
            ),
        ));
    }
    // The bound address, which is of no use here, then the tunnel.
    let rest = match reply[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            read_exact(io, &mut len, &name).await?;
            usize::from(len[0]) + 2
        }
        t => {
            return Err(err(
                io::ErrorKind::InvalidData,
                format!("unknown address type {t} in its reply"),
            ));
        }
    };
    let mut bound = vec![0u8; rest];
    read_exact(io, &mut bound, &name).await?;
    Ok(())
}

async fn read_exact<T>(io: &mut T, buf: &mut [u8], name: &str) -> io::Result<()>
where
    T: AsyncRead + Unpin + Send + ?Sized,
{
    match io.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{name} closed the connection during the SOCKS5 handshake"),
        )),
        Err(e) => Err(e),
    }
}

/// RFC 1928's reply codes.
fn socks_reply(code: u8) -> &'static str {
    match code {
        1 => "general SOCKS server failure",
        2 => "connection not allowed by the proxy's rules",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown error",
    }
}

fn base64(input: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A stream whose first bytes were already read (a proxy's tunnel data that came with
/// its CONNECT answer): those, then the stream's.
pub(crate) struct Prefixed {
    head: Vec<u8>,
    pos: usize,
    inner: BoxIo,
}

impl Prefixed {
    pub(crate) fn new(head: Vec<u8>, inner: BoxIo) -> Prefixed {
        Prefixed {
            head,
            pos: 0,
            inner,
        }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.head.len() {
            let n = (this.head.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.head[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

    fn p(url: &str) -> OutboundProxy {
        OutboundProxy::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn parses_proxy_urls() {
        let x = p("http://us%40er:p%3Ass@Proxy.Example:3128/");
        assert_eq!(x.kind(), ProxyKind::HttpConnect);
        assert_eq!(x.addr(), "proxy.example:3128");
        assert_eq!(x.user(), Some("us@er"));
        assert_eq!(x.auth.as_ref().unwrap().pass, "p:ss");
        assert_eq!(x.to_string(), "http://us@er:***@proxy.example:3128");
        assert!(!format!("{x:?}").contains("p:ss"));
        assert_eq!(p("127.0.0.1:3128").kind(), ProxyKind::HttpConnect);
        assert_eq!(p("http://10.0.0.1").addr(), "10.0.0.1:80");
        let s = p("socks5://[::1]");
        assert_eq!(s.kind(), ProxyKind::Socks5 { remote_dns: false });
        assert_eq!(s.addr(), "[::1]:1080");
        assert_eq!(
            p("SOCKS5H://u:@h:9").kind(),
            ProxyKind::Socks5 { remote_dns: true }
        );
        assert_eq!(p("socks5h://u:@h:9").auth.unwrap().pass, "");
        // A password with an '@' unescaped: the last '@' ends the user info.
        assert_eq!(p("http://u:a@b@h:1").auth.unwrap().pass, "a@b");
        for bad in [
            "https://h:1",
            "socks4://h:1",
            "http://h:1/path",
            "http://h:port",
            "http://h:99999",
            "http://:1",
            "http://u:p%zz@h:1",
            "http://:p@h:1",
            "",
        ] {
            assert!(OutboundProxy::parse(bad).is_err(), "{bad} accepted");
        }
        let e = OutboundProxy::parse("http://u:s3cret@h:port").unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(e.to_string().contains("u:***@h:port"), "{e}");
        let long = "x".repeat(256);
        assert!(OutboundProxy::parse(&format!("socks5://{long}:p@h:1")).is_err());
        assert!(OutboundProxy::parse(&format!("http://{long}:p@h:1")).is_ok());
    }

    #[test]
    fn no_proxy_matching() {
        let n = NoProxy::parse(
            " Example.com, .corp.local,internal:8443, 10.1.2.3,[::1]:9, 192.168.0.0/16, \
             *.wild.test, bogus/99, fd00::/8",
        );
        let yes = |h: &str, port: u16| assert!(n.matches(h, port), "{h}:{port} not exempt");
        let no = |h: &str, port: u16| assert!(!n.matches(h, port), "{h}:{port} exempt");
        yes("example.com", 443);
        yes("EXAMPLE.COM.", 443);
        yes("www.example.com", 1);
        no("notexample.com", 443);
        no("example.com.evil", 443);
        yes("corp.local", 1);
        yes("a.b.corp.local", 1);
        no("xcorp.local", 1);
        yes("internal", 8443);
        no("internal", 443);
        yes("10.1.2.3", 9);
        no("10.1.2.4", 9);
        yes("[::1]", 9);
        yes("::1", 9);
        no("[::1]", 10);
        yes("192.168.44.5", 80);
        no("192.169.0.1", 80);
        yes("fd12::1", 1);
        yes("x.wild.test", 1);
        yes("wild.test", 1);
        assert_eq!(n.matching("www.example.com", 1), Some("example.com"));
        assert!(NoProxy::parse("*").matches("anything", 1));
        assert!(NoProxy::parse("").is_empty());
        assert!(!NoProxy::parse("").matches("a", 1));
        assert!(NoProxy::parse("0.0.0.0/0").matches("8.8.8.8", 1));
        assert!(!NoProxy::parse("0.0.0.0/0").matches("::1", 1));
    }

    #[test]
    fn environment_and_routes() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let r = ProxyRules::from_vars(env(&[
            ("HTTPS_PROXY", ""),
            ("https_proxy", "http://a:1"),
            ("ALL_PROXY", "socks5://b:2"),
            ("no_proxy", "public.example"),
        ]))
        .unwrap();
        assert_eq!(r.proxy().unwrap().addr(), "a:1");
        assert_eq!(
            r.route("public.example", 9090),
            Route::Bypass("public.example")
        );
        assert_eq!(
            r.route("other.example", 9090),
            Route::Proxy(r.proxy().unwrap())
        );
        let r = ProxyRules::from_vars(env(&[("ALL_PROXY", "socks5h://b:2")])).unwrap();
        assert_eq!(
            r.proxy().unwrap().kind(),
            ProxyKind::Socks5 { remote_dns: true }
        );
        let r = ProxyRules::from_vars(env(&[("NO_PROXY", "*")])).unwrap();
        assert_eq!(r.route("x", 1), Route::Direct);
        let e = ProxyRules::from_vars(env(&[("HTTPS_PROXY", "ftp://u:pw@x")])).unwrap_err();
        assert!(e.to_string().starts_with("HTTPS_PROXY: "), "{e}");
        assert!(!e.to_string().contains("pw"), "{e}");
        let r = ProxyRules::new(p("http://h:1")).bypass(NoProxy::parse("*.x"));
        assert_eq!(r.route("a.x", 1), Route::Bypass("*.x"));
        assert_eq!(ProxyRules::none().route("a", 1), Route::Direct);
    }

    #[test]
    fn connect_response_heads() {
        let h = parse_connect_response(b"HTTP/1.1 200 Connection established\r\n\r\nXY")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.status, h.reason.as_str(), h.len),
            (200, "Connection established", 39)
        );
        let h = parse_connect_response(
            b"HTTP/1.0 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.status, 407);
        assert_eq!(h.reason, "Proxy Authentication Required");
        let h = parse_connect_response(b"HTTP/1.1 200\n\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.status, h.len), (200, 14));
        assert_eq!(
            parse_connect_response(b"HTTP/1.1 200 OK\r\nVia: x\r\n"),
            Ok(None)
        );
        assert_eq!(parse_connect_response(b"HT"), Ok(None));
        assert!(parse_connect_response(b"SSH-2.0-OpenSSH").is_err());
        assert!(parse_connect_response(b"\x16\x03\x01").is_err());
        assert!(parse_connect_response(b"HTTP/2 200\r\n\r\n").is_err());
        assert!(parse_connect_response(b"HTTP/1.1 2000 OK\r\n\r\n").is_err());
        assert!(parse_connect_response(b"HTTP/1.1 abc OK\r\n\r\n").is_err());
        let h = parse_connect_response(b"HTTP/1.1 403 \x1b[31mred\x07\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.reason, "[31mred");
    }

    #[test]
    fn base64_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("user:pass", "dXNlcjpwYXNz"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    /// Reads the CONNECT request head the client sent.
    async fn read_request(peer: &mut DuplexStream) -> String {
        let mut buf = Vec::new();
        let mut b = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            peer.read_exact(&mut b).await.unwrap();
            buf.push(b[0]);
        }
        String::from_utf8(buf).unwrap()
    }

    #[tokio::test]
    async fn http_connect_with_basic_auth_keeps_early_bytes() {
        let (mut ours, mut peer) = duplex(64 * 1024);
        let proxy = p("http://user:p%40ss@127.0.0.1:3128");
        let script = tokio::spawn(async move {
            let req = read_request(&mut peer).await;
            peer.write_all(b"HTTP/1.1 200 Connection established\r\nVia: t\r\n\r\nEARLY")
                .await
                .unwrap();
            req
        });
        let early = handshake(&mut ours, &proxy, "public.example", 9090)
            .await
            .unwrap();
        let req = script.await.unwrap();
        assert!(
            req.starts_with("CONNECT public.example:9090 HTTP/1.1\r\n"),
            "{req}"
        );
        assert!(req.contains("\r\nHost: public.example:9090\r\n"), "{req}");
        // base64("user:p@ss")
        assert!(
            req.contains("\r\nProxy-Authorization: Basic dXNlcjpwQHNz\r\n"),
            "{req}"
        );
        // Whatever came with the answer is kept, as the tunnel's first bytes.
        assert_eq!(early, b"EARLY");
        let mut io = Prefixed::new(early, Box::new(ours));
        let mut got = [0u8; 5];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"EARLY");
    }

    #[tokio::test]
    async fn http_connect_ipv6_and_no_credentials() {
        let (mut ours, mut peer) = duplex(64 * 1024);
        let proxy = p("http://h:1");
        let script = tokio::spawn(async move {
            let req = read_request(&mut peer).await;
            peer.write_all(b"HTTP/1.0 200 OK\r\n\r\n").await.unwrap();
            req
        });
        let early = handshake(&mut ours, &proxy, "[::1]", 443).await.unwrap();
        let req = script.await.unwrap();
        assert!(req.starts_with("CONNECT [::1]:443 HTTP/1.1\r\n"), "{req}");
        assert!(!req.contains("Proxy-Authorization"), "{req}");
        assert!(early.is_empty());
    }

    async fn connect_error(answer: Vec<u8>, proxy: &str) -> String {
        let (mut ours, mut peer) = duplex(64 * 1024);
        let proxy = p(proxy);
        tokio::spawn(async move {
            let _ = read_request(&mut peer).await;
            let _ = peer.write_all(&answer).await;
            // Then close.
        });
        handshake(&mut ours, &proxy, "public.example", 9090)
            .await
            .unwrap_err()
            .to_string()
    }

    #[tokio::test]
    async fn http_connect_refusals() {
        let e = connect_error(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\n\r\n"
                .to_vec(),
            "http://user:wrongpass@127.0.0.1:3128",
        )
        .await;
        assert!(
            e.starts_with(
                "proxy 127.0.0.1:3128 refused CONNECT to public.example:9090: 407 Proxy \
                 Authentication Required"
            ),
            "{e}"
        );
        assert!(e.contains("check the proxy user name and password"), "{e}");
        assert!(!e.contains("wrongpass"), "{e}");
        let e = connect_error(b"HTTP/1.1 407 Auth\r\n\r\n".to_vec(), "http://h:1").await;
        assert!(e.contains("wants credentials"), "{e}");
        let e = connect_error(b"HTTP/1.1 403 Forbidden\r\n\r\n".to_vec(), "http://h:1").await;
        assert!(e.ends_with("403 Forbidden"), "{e}");
        let e = connect_error(b"garbage\r\n\r\n".to_vec(), "http://h:1").await;
        assert!(e.contains("something other than HTTP"), "{e}");
        let e = connect_error(b"HTTP/1.1 200 OK\r\n".to_vec(), "http://h:1").await;
        assert!(e.contains("closed the connection before answering"), "{e}");
        let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
        while big.len() < 40_000 {
            big.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        let e = connect_error(big, "http://h:1").await;
        assert!(e.contains("over 16384 bytes"), "{e}");
    }

    /// A scripted SOCKS5 proxy: expects `expect` (in order), answers with `answers`.
    async fn socks_peer(mut peer: DuplexStream, steps: Vec<(Vec<u8>, Vec<u8>)>) {
        for (expect, answer) in steps {
            let mut got = vec![0u8; expect.len()];
            if peer.read_exact(&mut got).await.is_err() {
                return;
            }
            assert_eq!(got, expect);
            if peer.write_all(&answer).await.is_err() {
                return;
            }
        }
    }

    async fn socks(proxy: &str, host: &str, steps: Vec<(Vec<u8>, Vec<u8>)>) -> io::Result<Vec<u8>> {
        let (mut ours, peer) = duplex(64 * 1024);
        let script = tokio::spawn(socks_peer(peer, steps));
        let r = handshake(&mut ours, &p(proxy), host, 9090).await;
        drop(ours);
        script.await.unwrap();
        r
    }

    const OK_V4: [u8; 10] = [5, 0, 0, 1, 127, 0, 0, 1, 0x23, 0x82];

    #[tokio::test]
    async fn socks5_domain_without_auth() {
        let mut connect = vec![5, 1, 0, 3, 14];
        connect.extend_from_slice(b"public.example");
        connect.extend_from_slice(&9090u16.to_be_bytes());
        let early = socks(
            "socks5h://127.0.0.1:1080",
            "public.example",
            vec![(vec![5, 1, 0], vec![5, 0]), (connect, OK_V4.to_vec())],
        )
        .await
        .unwrap();
        assert!(early.is_empty());
    }

    #[tokio::test]
    async fn socks5_username_password() {
        let mut auth = vec![1, 4];
        auth.extend_from_slice(b"user");
        auth.push(4);
        auth.extend_from_slice(b"pass");
        let mut connect = vec![5, 1, 0, 4];
        connect.extend_from_slice(&"::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        connect.extend_from_slice(&9090u16.to_be_bytes());
        // The bound address as a name this time.
        let mut reply = vec![5, 0, 0, 3, 3];
        reply.extend_from_slice(b"abc\x00\x01");
        socks(
            "socks5://user:pass@h:1",
            "[::1]",
            vec![
                (vec![5, 2, 0, 2], vec![5, 2]),
                (auth.clone(), vec![1, 0]),
                (connect, reply),
            ],
        )
        .await
        .unwrap();
        let e = socks(
            "socks5://user:pass@h:1",
            "[::1]",
            vec![(vec![5, 2, 0, 2], vec![5, 2]), (auth, vec![1, 1])],
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("user name or password refused"), "{e}");
        assert!(!e.contains("pass\""), "{e}");
    }

    #[tokio::test]
    async fn socks5_local_resolution_and_refusals() {
        // socks5:// sends an address: an IP literal as it is, IPv4 here.
        let mut connect = vec![5, 1, 0, 1, 127, 0, 0, 1];
        connect.extend_from_slice(&9090u16.to_be_bytes());
        let mut refused = OK_V4;
        refused[1] = 5;
        let e = socks(
            "socks5://h:1",
            "127.0.0.1",
            vec![
                (vec![5, 1, 0], vec![5, 0]),
                (connect.clone(), refused.to_vec()),
            ],
        )
        .await
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "SOCKS5 proxy h:1: could not connect to 127.0.0.1:9090: connection refused (reply 5)"
        );
        // "localhost" is resolved here, to an address.
        let (mut ours, mut peer) = duplex(1024);
        let script = tokio::spawn(async move {
            let mut hello = [0u8; 3];
            peer.read_exact(&mut hello).await.unwrap();
            peer.write_all(&[5, 0]).await.unwrap();
            let mut head = [0u8; 4];
            peer.read_exact(&mut head).await.unwrap();
            let len = if head[3] == 1 { 4 } else { 16 };
            let mut rest = vec![0u8; len + 2];
            peer.read_exact(&mut rest).await.unwrap();
            peer.write_all(&OK_V4).await.unwrap();
            head[3]
        });
        handshake(&mut ours, &p("socks5://h:1"), "localhost", 9090)
            .await
            .unwrap();
        let atyp = script.await.unwrap();
        assert!(atyp == 1 || atyp == 4, "address type {atyp}");
        let e = socks("socks5://h:1", "no-such-host.invalid", vec![])
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot resolve no-such-host.invalid"), "{e}");
        let e = socks("socks5h://h:1", "x", vec![(vec![5, 1, 0], vec![5, 0xff])])
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("may want a user name and password"), "{e}");
        let e = socks("socks5h://h:1", "x", vec![(vec![5, 1, 0], vec![5, 2])])
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("not offered"), "{e}");
        let e = socks("socks5h://h:1", "x", vec![(vec![5, 1, 0], b"HT".to_vec())])
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a SOCKS5 answer"), "{e}");
    }
}
