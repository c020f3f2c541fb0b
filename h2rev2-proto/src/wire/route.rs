//! Routes on the public server (PROTOCOL.md section 2).
//!
//! ```text
//! B/revdial?{key}={id}[&role=control|data][&conn={token}]   reverse connections (2.1, 4.2)
//! B/proxy/{id}/{rest}                                        reverse HTTP proxy   (2.2)
//! anything else, when a default id is configured             default target       (2.3)
//! ```
//!
//! With a domain set ([`RouteConfig::with_domain`]), a request whose host name is
//! `{id}.{domain}` goes to `id` with its path unchanged, whatever the path, except the
//! revdial route ([`RouteConfig::route_with_host`]).

use std::fmt;

use super::id::{DialerId, IdError};

/// The longest `conn` token accepted on a revdial request, in bytes.
pub const MAX_TOKEN_LEN: usize = 128;

/// How the public server lays out its routes. The Listener uses the same values to
/// build its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    base: String,
    revdial: String,
    proxy: String,
    id_key: String,
    default_id: Option<DialerId>,
    domain: Option<String>,
}

impl Default for RouteConfig {
    fn default() -> Self {
        RouteConfig {
            base: "/".into(),
            revdial: "revdial".into(),
            proxy: "proxy".into(),
            id_key: "id".into(),
            default_id: None,
            domain: None,
        }
    }
}

/// Normalises a segment given as `revdial`, `/revdial` or `/revdial/`.
fn trim_segment(s: &str) -> String {
    s.trim_matches('/').to_string()
}

impl RouteConfig {
    /// The base path `B`. Given as `/`, `/tunnel` or `tunnel/`; stored as `/tunnel/`.
    pub fn with_base(mut self, base: &str) -> Self {
        let t = base.trim_matches('/');
        self.base = if t.is_empty() {
            "/".into()
        } else {
            format!("/{t}/")
        };
        self
    }

    /// The revdial path segment (default `revdial`; the original CLI's `-dialer-path`).
    /// A leading or trailing `/` is ignored.
    pub fn with_revdial_segment(mut self, seg: &str) -> Self {
        self.revdial = trim_segment(seg);
        self
    }

    /// The proxy path segment (default `proxy`).
    pub fn with_proxy_segment(mut self, seg: &str) -> Self {
        self.proxy = trim_segment(seg);
        self
    }

    /// The query parameter that carries the dialer id (default `id`; the original CLI's
    /// `-dialer-key`).
    pub fn with_id_key(mut self, key: &str) -> Self {
        self.id_key = key.to_string();
        self
    }

    /// The id that requests matching no route are proxied to (the original CLI's
    /// `-dialer-id` on the public side).
    pub fn with_default_id(mut self, id: Option<DialerId>) -> Self {
        self.default_id = id;
        self
    }

    /// The domain under which each id has a host name of its own: with
    /// `tunnel.example`, `https://web.tunnel.example/` reaches id `web`
    /// ([`RouteConfig::route_with_host`]). Given as `tunnel.example`,
    /// `*.tunnel.example` or `.tunnel.example.`; compared without case. `None` or an
    /// empty domain turns host routing off (the default).
    pub fn with_domain(mut self, domain: Option<&str>) -> Self {
        self.domain = domain
            .map(|d| d.trim().trim_start_matches("*.").trim_matches('.'))
            .filter(|d| !d.is_empty())
            .map(|d| d.to_ascii_lowercase());
        self
    }

    /// The domain of host routing, normalised (lower case, no leading `*.` or dots).
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// The base path, normalised to start and end with `/`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The query key that carries the id.
    pub fn id_key(&self) -> &str {
        &self.id_key
    }

    /// The default id, if any.
    pub fn default_id(&self) -> Option<&DialerId> {
        self.default_id.as_ref()
    }

    /// The path of `id`'s proxy route, e.g. `/proxy/web/`.
    ///
    /// ```
    /// use h2rev2_proto::wire::{DialerId, RouteConfig};
    /// let cfg = RouteConfig::default().with_base("/tunnel");
    /// assert_eq!(cfg.proxy_path(&DialerId::new("web").unwrap()), "/tunnel/proxy/web/");
    /// ```
    pub fn proxy_path(&self, id: &DialerId) -> String {
        format!("{}{}/{}/", self.base, self.proxy, id.as_str())
    }

    /// The path of the revdial route, e.g. `/revdial`.
    pub fn revdial_path(&self) -> String {
        format!("{}{}", self.base, self.revdial)
    }

    /// The path and query a Listener requests: `B/revdial?{key}={id}`, plus `role` and
    /// `conn` when given (PROTOCOL.md 4.2). Values are form-encoded.
    ///
    /// ```
    /// use h2rev2_proto::wire::{DialerId, Role, RouteConfig};
    /// let cfg = RouteConfig::default().with_id_key("dialerid");
    /// let id = DialerId::new("001").unwrap();
    /// assert_eq!(cfg.revdial_path_and_query(&id, None, None), "/revdial?dialerid=001");
    /// assert_eq!(
    ///     cfg.revdial_path_and_query(&id, Some(Role::Data), Some("t 1")),
    ///     "/revdial?dialerid=001&role=data&conn=t+1"
    /// );
    /// ```
    pub fn revdial_path_and_query(
        &self,
        id: &DialerId,
        role: Option<Role>,
        conn: Option<&str>,
    ) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair(&self.id_key, id.as_str());
        if let Some(role) = role {
            q.append_pair("role", role.as_str());
        }
        if let Some(conn) = conn {
            q.append_pair("conn", conn);
        }
        format!("{}?{}", self.revdial_path(), q.finish())
    }

    /// Routes a request by its path (still percent-encoded) and query.
    ///
    /// ```
    /// use h2rev2_proto::wire::{Route, RouteConfig};
    /// let cfg = RouteConfig::default();
    /// match cfg.route("/proxy/001/a/b", Some("x=1")).unwrap() {
    ///     Route::Proxy { id, path_and_query, prefix } => {
    ///         assert_eq!(id.as_str(), "001");
    ///         assert_eq!(path_and_query, "/a/b?x=1");
    ///         assert_eq!(prefix, "/proxy/001");
    ///     }
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    pub fn route(&self, path: &str, query: Option<&str>) -> Result<Route, RouteError> {
        let Some(rest) = self.rest_after_base(path) else {
            return Ok(self.default_route(path, query));
        };
        if rest == self.revdial || rest.strip_suffix('/') == Some(self.revdial.as_str()) {
            return self.revdial(query).map(Route::Revdial);
        }
        if rest == self.proxy || rest == format!("{}/", self.proxy) {
            return Err(RouteError::MissingProxyId);
        }
        if let Some(after) = rest
            .strip_prefix(self.proxy.as_str())
            .and_then(|r| r.strip_prefix('/'))
        {
            let (raw_id, tail) = match after.find('/') {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, ""),
            };
            let decoded = percent_encoding::percent_decode_str(raw_id)
                .decode_utf8()
                .map_err(|_| RouteError::BadEncoding)?;
            let id = DialerId::new(decoded.into_owned()).map_err(RouteError::BadId)?;
            let mut pq = if tail.is_empty() {
                "/".to_string()
            } else {
                tail.to_string()
            };
            if let Some(q) = query {
                pq.push('?');
                pq.push_str(q);
            }
            let prefix = format!("{}{}/{}", self.base, self.proxy, raw_id);
            return Ok(Route::Proxy {
                id,
                path_and_query: pq,
                prefix,
            });
        }
        Ok(self.default_route(path, query))
    }

    /// Routes a request by its host name, then by its path ([`RouteConfig::route`]).
    ///
    /// `host` is the request's `Host` (HTTP/1.1) or `:authority` (HTTP/2), or, when it
    /// has neither, the TLS server name the Client sent. When a domain is set and
    /// `host` is `{id}.{domain}` (any port, any case, a trailing dot allowed), the
    /// request goes to `id` with its path and query unchanged ([`Route::Host`]): every
    /// path of that host name belongs to the id, `B/proxy/…` and the default target
    /// included. The one exception is the revdial route, which Listeners may reach
    /// under any name: a Listener's request, and the token it carries, are never
    /// forwarded into a tunnel. The domain itself, other names and addresses are
    /// routed by path. The id is everything before `.{domain}`, lower case (a
    /// wildcard certificate covers one label; ids with dots need their own).
    ///
    /// ```
    /// use h2rev2_proto::wire::{Route, RouteConfig};
    /// let cfg = RouteConfig::default().with_domain(Some("tunnel.example"));
    /// match cfg.route_with_host(Some("Web.tunnel.example:8443"), "/a", Some("x=1")).unwrap() {
    ///     Route::Host { id, path_and_query } => {
    ///         assert_eq!(id.as_str(), "web");
    ///         assert_eq!(path_and_query, "/a?x=1");
    ///     }
    ///     other => panic!("{other:?}"),
    /// }
    /// // The domain itself routes by path.
    /// assert!(matches!(
    ///     cfg.route_with_host(Some("tunnel.example"), "/proxy/web/a", None).unwrap(),
    ///     Route::Proxy { .. }
    /// ));
    /// ```
    pub fn route_with_host(
        &self,
        host: Option<&str>,
        path: &str,
        query: Option<&str>,
    ) -> Result<Route, RouteError> {
        if self.is_revdial_path(path) {
            return self.route(path, query);
        }
        match host.and_then(|h| self.host_label(h)) {
            Some(label) => {
                let id = DialerId::new(label).map_err(RouteError::BadId)?;
                let mut path_and_query = if path.is_empty() {
                    "/".to_string()
                } else {
                    path.to_string()
                };
                if let Some(q) = query {
                    path_and_query.push('?');
                    path_and_query.push_str(q);
                }
                Ok(Route::Host { id, path_and_query })
            }
            None => self.route(path, query),
        }
    }

    /// Whether `path` is the revdial route (`B/revdial`, `B/revdial/`), as
    /// [`RouteConfig::route`] tells it.
    fn is_revdial_path(&self, path: &str) -> bool {
        self.rest_after_base(path).is_some_and(|rest| {
            rest == self.revdial || rest.strip_suffix('/') == Some(&self.revdial)
        })
    }

    /// `path` without the base path, if it is under it (`B` itself without its
    /// trailing `/` is the base too).
    fn rest_after_base<'p>(&self, path: &'p str) -> Option<&'p str> {
        path.strip_prefix(self.base.as_str()).or_else(|| {
            // `/tunnel` addresses the base itself.
            (path == self.base.trim_end_matches('/')).then_some("")
        })
    }

    /// The part of `host` before `.{domain}`, lower case, when `host` is a name under
    /// the domain.
    fn host_label(&self, host: &str) -> Option<String> {
        let domain = self.domain.as_deref()?;
        if host.starts_with('[') {
            return None; // an IPv6 literal
        }
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return None,
            None => host,
        };
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        let label = name.strip_suffix(domain)?.strip_suffix('.')?;
        (!label.is_empty()).then(|| label.to_string())
    }

    fn default_route(&self, path: &str, query: Option<&str>) -> Route {
        match &self.default_id {
            Some(id) => {
                let mut pq = path.to_string();
                if let Some(q) = query {
                    pq.push('?');
                    pq.push_str(q);
                }
                Route::Default {
                    id: id.clone(),
                    path_and_query: pq,
                }
            }
            None => Route::NotFound,
        }
    }

    fn revdial(&self, query: Option<&str>) -> Result<RevdialRequest, RouteError> {
        let mut id = None;
        let mut role = None;
        let mut conn = None;
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            // Go's url.Query().Get returns the first value; so do we.
            if k == self.id_key.as_str() {
                if id.is_none() {
                    id = Some(v.into_owned());
                }
            } else if k == "role" {
                if role.is_none() {
                    role = Some(match v.as_ref() {
                        "control" => Role::Control,
                        "data" => Role::Data,
                        other => return Err(RouteError::BadRole(other.to_string())),
                    });
                }
            } else if k == "conn" && conn.is_none() {
                if v.is_empty() || v.len() > MAX_TOKEN_LEN {
                    return Err(RouteError::BadToken);
                }
                conn = Some(v.into_owned());
            }
        }
        let id = id.ok_or_else(|| RouteError::MissingId(self.id_key.clone()))?;
        let id = DialerId::new(id).map_err(RouteError::BadId)?;
        if role == Some(Role::Control) && conn.is_some() {
            return Err(RouteError::BadToken);
        }
        Ok(RevdialRequest {
            id,
            role,
            conn,
            wire: Wire::Current,
        })
    }
}

/// What a request on the public server is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A reverse connection from a Listener (`B/revdial`). HTTP/2 only.
    Revdial(RevdialRequest),
    /// A request to proxy to `id` (`B/proxy/{id}/{rest}`).
    Proxy {
        /// The target dialer id.
        id: DialerId,
        /// The path and query to forward: `/{rest}` plus the original query.
        path_and_query: String,
        /// The stripped prefix, `B/proxy/{id}` as it was sent (for `X-Forwarded-Prefix`).
        prefix: String,
    },
    /// A request that matched no route, proxied to the configured default id with its
    /// path unchanged (PROTOCOL.md 2.3).
    Default {
        /// The default dialer id.
        id: DialerId,
        /// The unchanged path and query.
        path_and_query: String,
    },
    /// A request to a host name under the configured domain, `{id}.{domain}`
    /// ([`RouteConfig::route_with_host`]), proxied to `id` with its path unchanged.
    Host {
        /// The id the host name names.
        id: DialerId,
        /// The unchanged path and query.
        path_and_query: String,
    },
    /// No route matched and no default id is configured: `404`.
    NotFound,
}

/// A parsed revdial request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevdialRequest {
    /// The Listener's dialer id.
    pub id: DialerId,
    /// The role it declared, or `None` for an unmarked (Go) Listener.
    pub role: Option<Role>,
    /// The `conn` token it echoed for exact matching, if any.
    pub conn: Option<String>,
    /// Which generation of the wire the Listener speaks: [`Wire::Current`] from
    /// [`RouteConfig::route`]; [`RevdialRequest::classify`] tells a 2022 Listener by
    /// its headers.
    pub wire: Wire,
}

/// The generation of the revdial wire a Listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Wire {
    /// A control stream first, then data streams on `conn-ready` (PROTOCOL.md 2.1, 3):
    /// the later Go package and every Listener of ours.
    #[default]
    Current,
    /// The Go package as of April 2022: no control stream and no control messages;
    /// every stream is a reverse connection, opened one at a time, each handed to the
    /// next dial for its id.
    Go2022,
}

/// The content type a 2022 Go Listener puts on every revdial request.
pub const GO2022_CONTENT_TYPE: &str = "application/octet-stream";

impl RevdialRequest {
    /// Tells the wire generation from the request's `Content-Type` header (its raw
    /// value, if any) and sets [`RevdialRequest::wire`].
    ///
    /// A request is [`Wire::Go2022`] when it has no `role` and no `conn` token, and its
    /// media type is `application/octet-stream` (case-insensitive, parameters ignored):
    /// the 2022 Go Listener sends exactly that, while the later Go Listener sends no
    /// content type and ours marks every request with a `role`. Anything else stays
    /// [`Wire::Current`], so no request of the current wire can be taken for a 2022 one.
    ///
    /// ```
    /// use h2rev2_proto::wire::{RouteConfig, Route, Wire};
    /// let cfg = RouteConfig::default();
    /// let Ok(Route::Revdial(req)) = cfg.route("/revdial", Some("id=001")) else { panic!() };
    /// assert_eq!(req.clone().classify(Some(b"application/octet-stream")).wire, Wire::Go2022);
    /// assert_eq!(req.clone().classify(None).wire, Wire::Current);
    /// let Ok(Route::Revdial(req)) = cfg.route("/revdial", Some("id=001&role=data")) else { panic!() };
    /// assert_eq!(req.classify(Some(b"application/octet-stream")).wire, Wire::Current);
    /// ```
    pub fn classify(mut self, content_type: Option<&[u8]>) -> Self {
        let octet = content_type.is_some_and(|v| {
            let media = v.split(|b| *b == b';').next().unwrap_or_default();
            media
                .trim_ascii()
                .eq_ignore_ascii_case(GO2022_CONTENT_TYPE.as_bytes())
        });
        self.wire = if octet && self.role.is_none() && self.conn.is_none() {
            Wire::Go2022
        } else {
            Wire::Current
        };
        self
    }
}

/// The role a Listener of ours declares on a revdial request (PROTOCOL.md 4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The session's control stream.
    Control,
    /// A data stream (one reverse connection).
    Data,
}

impl Role {
    /// The query value, `control` or `data`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Control => "control",
            Role::Data => "data",
        }
    }
}

/// Why a request could not be routed. Every variant answers `400`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// The revdial query has no id parameter (named here).
    MissingId(String),
    /// The id is not valid.
    BadId(IdError),
    /// `role` is neither `control` nor `data`.
    BadRole(String),
    /// `conn` is empty, too long, or given with `role=control`.
    BadToken,
    /// `B/proxy/` without an id.
    MissingProxyId,
    /// A percent-encoded id is not UTF-8.
    BadEncoding,
}

impl RouteError {
    /// The HTTP status for this error: always `400`.
    pub fn status(&self) -> u16 {
        400
    }
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::MissingId(key) => write!(f, "missing query parameter `{key}`"),
            RouteError::BadId(e) => e.fmt(f),
            RouteError::BadRole(r) => write!(f, "unknown role {r:?}"),
            RouteError::BadToken => f.write_str("invalid `conn` token"),
            RouteError::MissingProxyId => f.write_str("proxy route without an id"),
            RouteError::BadEncoding => f.write_str("id is not valid percent-encoded UTF-8"),
        }
    }
}

impl std::error::Error for RouteError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> DialerId {
        DialerId::new(s).unwrap()
    }

    #[test]
    fn revdial_default_and_custom() {
        let cfg = RouteConfig::default();
        assert_eq!(
            cfg.route("/revdial", Some("id=001")).unwrap(),
            Route::Revdial(RevdialRequest {
                id: id("001"),
                role: None,
                conn: None,
                wire: Wire::Current,
            })
        );
        let cfg = RouteConfig::default()
            .with_base("/tun/")
            .with_revdial_segment("/rd")
            .with_id_key("dialerid");
        assert_eq!(
            cfg.route("/tun/rd", Some("dialerid=a&role=data&conn=7"))
                .unwrap(),
            Route::Revdial(RevdialRequest {
                id: id("a"),
                role: Some(Role::Data),
                conn: Some("7".into()),
                wire: Wire::Current,
            })
        );
        assert_eq!(
            cfg.route("/tun/rd", Some("id=a")),
            Err(RouteError::MissingId("dialerid".into()))
        );
        assert_eq!(
            cfg.route("/revdial", Some("dialerid=a")),
            Ok(Route::NotFound)
        );
    }

    #[test]
    fn revdial_errors() {
        let cfg = RouteConfig::default();
        assert_eq!(
            cfg.route("/revdial", None),
            Err(RouteError::MissingId("id".into()))
        );
        assert_eq!(
            cfg.route("/revdial", Some("id=")),
            Err(RouteError::BadId(IdError::Empty))
        );
        assert_eq!(
            cfg.route("/revdial", Some("id=a&role=boss")),
            Err(RouteError::BadRole("boss".into()))
        );
        assert_eq!(
            cfg.route("/revdial", Some("id=a&role=control&conn=1")),
            Err(RouteError::BadToken)
        );
        assert_eq!(
            cfg.route("/revdial", Some("id=a%00")),
            Err(RouteError::BadId(IdError::BadChar('\0')))
        );
    }

    #[test]
    fn proxy_paths() {
        let cfg = RouteConfig::default().with_base("/b");
        let r = cfg.route("/b/proxy/x%2Dy", None).unwrap();
        assert_eq!(
            r,
            Route::Proxy {
                id: id("x-y"),
                path_and_query: "/".into(),
                prefix: "/b/proxy/x%2Dy".into()
            }
        );
        let r = cfg.route("/b/proxy/x/", Some("q")).unwrap();
        assert!(matches!(r, Route::Proxy { path_and_query, .. } if path_and_query == "/?q"));
        assert_eq!(cfg.route("/b/proxy", None), Err(RouteError::MissingProxyId));
        assert_eq!(
            cfg.route("/b/proxy/", None),
            Err(RouteError::MissingProxyId)
        );
        assert_eq!(cfg.route("/b/proxyx/1", None), Ok(Route::NotFound));
        assert_eq!(cfg.route("/other", None), Ok(Route::NotFound));
    }

    #[test]
    fn default_target() {
        let cfg = RouteConfig::default().with_default_id(Some(id("001")));
        assert_eq!(
            cfg.route("/get", Some("a=1")).unwrap(),
            Route::Default {
                id: id("001"),
                path_and_query: "/get?a=1".into()
            }
        );
        // The revdial route still wins.
        assert!(matches!(
            cfg.route("/revdial", Some("id=001")).unwrap(),
            Route::Revdial(_)
        ));
    }

    #[test]
    fn host_routing() {
        let cfg = RouteConfig::default()
            .with_domain(Some("*.Tunnel.Example."))
            .with_default_id(Some(id("dflt")));
        assert_eq!(cfg.domain(), Some("tunnel.example"));
        let host = |h: &str, p: &str, q: Option<&str>| cfg.route_with_host(Some(h), p, q);
        let to = |i: &str, pq: &str| {
            Ok(Route::Host {
                id: id(i),
                path_and_query: pq.into(),
            })
        };
        assert_eq!(
            host("web.tunnel.example", "/a/b", Some("q=1")),
            to("web", "/a/b?q=1")
        );
        assert_eq!(host("WEB.tunnel.example.:443", "", None), to("web", "/"));
        assert_eq!(host("a.b.tunnel.example", "/", None), to("a.b", "/"));
        // Every path of the host name belongs to the id, the proxy route's included.
        assert_eq!(
            host("web.tunnel.example", "/proxy/other/x", None),
            to("web", "/proxy/other/x")
        );
        assert_eq!(
            host("web.tunnel.example", "/proxy/", None),
            to("web", "/proxy/")
        );
        // ... except the revdial route: a Listener's request is never forwarded.
        assert!(matches!(
            host("web.tunnel.example", "/revdial", Some("id=ssh")),
            Ok(Route::Revdial(r)) if r.id == id("ssh")
        ));
        assert_eq!(
            host("web.tunnel.example", "/revdial/", None),
            Err(RouteError::MissingId("id".into()))
        );
        // The domain itself, other names, look-alikes and addresses route by path.
        assert!(matches!(
            host("tunnel.example", "/proxy/web/x", None),
            Ok(Route::Proxy { .. })
        ));
        assert!(matches!(
            host("tunnel.example:9090", "/x", None),
            Ok(Route::Default { .. })
        ));
        assert!(matches!(
            host("webtunnel.example", "/x", None),
            Ok(Route::Default { .. })
        ));
        assert!(matches!(
            host("web.tunnel.example.evil", "/x", None),
            Ok(Route::Default { .. })
        ));
        assert!(matches!(
            host(".tunnel.example", "/x", None),
            Ok(Route::Default { .. })
        ));
        assert!(matches!(
            host("[::1]:9090", "/x", None),
            Ok(Route::Default { .. })
        ));
        assert!(matches!(
            host("web.tunnel.example:x", "/x", None),
            Ok(Route::Default { .. })
        ));
        assert!(matches!(
            cfg.route_with_host(None, "/x", None),
            Ok(Route::Default { .. })
        ));
        // Off without a domain.
        let off = RouteConfig::default().with_domain(Some(" "));
        assert_eq!(off.domain(), None);
        assert_eq!(
            off.route_with_host(Some("web.tunnel.example"), "/x", None),
            Ok(Route::NotFound)
        );
    }

    #[test]
    fn path_and_query_roundtrip() {
        let cfg = RouteConfig::default().with_base("/x").with_id_key("k");
        let pq = cfg.revdial_path_and_query(&id("a&b=c"), Some(Role::Control), None);
        let (p, q) = pq.split_once('?').unwrap();
        assert_eq!(
            cfg.route(p, Some(q)).unwrap(),
            Route::Revdial(RevdialRequest {
                id: id("a&b=c"),
                role: Some(Role::Control),
                conn: None,
                wire: Wire::Current,
            })
        );
    }
}
