//! Route parsing: never a panic, every error a `400`, results consistent with the
//! request, and the Listener's requests always route back to what it meant.

use arbitrary::Arbitrary;
use h2rev2_proto::wire::{DialerId, Role, Route, RouteConfig};

/// A route configuration, a request, and a Listener request to build.
#[derive(Debug, Clone, Arbitrary)]
pub struct Input {
    /// Base path.
    pub base: String,
    /// Revdial segment.
    pub revdial: String,
    /// Proxy segment.
    pub proxy: String,
    /// Id query key.
    pub key: String,
    /// Default id.
    pub default_id: Option<String>,
    /// Request path.
    pub path: String,
    /// Request query.
    pub query: Option<String>,
    /// An id for the Listener's request.
    pub id: String,
    /// Its role: 0 none, 1 control, 2 data.
    pub role: u8,
    /// Its `conn` token.
    pub conn: Option<String>,
    /// The domain of host routing.
    pub domain: Option<String>,
    /// The request's host name.
    pub host: Option<String>,
}

impl Input {
    /// Parses the target's input format (see `route_parser` in lib.rs).
    pub fn from_bytes(data: &[u8]) -> Input {
        let text = String::from_utf8_lossy(data);
        let mut lines = text.split('\n').map(str::to_string);
        let mut next = || lines.next().unwrap_or_default();
        let opt = |s: String| (!s.is_empty()).then_some(s);
        Input {
            base: next(),
            revdial: next(),
            proxy: next(),
            key: next(),
            default_id: opt(next()),
            path: next(),
            query: opt(next()),
            id: next(),
            role: match next().as_str() {
                "control" => 1,
                "data" => 2,
                _ => 0,
            },
            conn: opt(next()),
            domain: opt(next()),
            host: opt(next()),
        }
    }
}

fn config(input: &Input) -> RouteConfig {
    let mut cfg = RouteConfig::default()
        .with_base(&input.base)
        .with_revdial_segment(&input.revdial)
        .with_proxy_segment(&input.proxy)
        .with_id_key(&input.key);
    if let Some(d) = input
        .default_id
        .as_deref()
        .and_then(|d| DialerId::new(d).ok())
    {
        cfg = cfg.with_default_id(Some(d));
    }
    cfg.with_domain(input.domain.as_deref())
}

/// The checks.
pub fn check(input: &Input) {
    let cfg = config(input);
    check_route(&cfg, &input.path, input.query.as_deref());
    check_host_route(
        &cfg,
        input.host.as_deref(),
        &input.path,
        input.query.as_deref(),
    );

    // A Listener's request, built with the same configuration, routes back to itself.
    let Ok(id) = DialerId::new(input.id.as_str()) else {
        return;
    };
    let role = match input.role % 3 {
        0 => None,
        1 => Some(Role::Control),
        _ => Some(Role::Data),
    };
    let conn = match (role, &input.conn) {
        (Some(Role::Control), _) => None,
        (_, Some(c)) if !c.is_empty() && c.len() <= 128 => Some(c.as_str()),
        _ => None,
    };
    let pq = cfg.revdial_path_and_query(&id, role, conn);
    // Segments that hold `?` or `#`, or an id key that shadows `role` or `conn`, cannot
    // round-trip: a configuration problem, not the parser's.
    let sane =
        !cfg.revdial_path().contains(['?', '#']) && !["role", "conn"].contains(&cfg.id_key());
    if !sane {
        return;
    }
    let (path, query) = pq.split_once('?').expect("a revdial request has a query");
    // Under any host name: a Listener's request is never taken for a host route.
    let by_host = cfg.route_with_host(input.host.as_deref(), path, Some(query));
    assert_eq!(
        by_host,
        cfg.route(path, Some(query)),
        "{pq} on {:?}",
        input.host
    );
    match cfg.route(path, Some(query)) {
        Ok(Route::Revdial(r)) => {
            assert_eq!(r.id, id, "{pq}");
            assert_eq!(r.role, role, "{pq}");
            assert_eq!(r.conn.as_deref(), conn, "{pq}");
        }
        other => panic!("the Listener's own request {pq:?} routes to {other:?}"),
    }
}

/// Host routing: a host route only for a name under the domain, with the path kept;
/// anything else exactly as path routing decides.
fn check_host_route(cfg: &RouteConfig, host: Option<&str>, path: &str, query: Option<&str>) {
    match cfg.route_with_host(host, path, query) {
        Ok(Route::Host { id, path_and_query }) => {
            let domain = cfg.domain().expect("a host route without a domain");
            let host = host
                .expect("a host route without a host")
                .to_ascii_lowercase();
            assert!(
                host.contains(&format!("{}.{domain}", id.as_str())),
                "{host:?} routed to {id:?}"
            );
            assert_eq!(id.as_str(), id.as_str().to_ascii_lowercase());
            let p = if path.is_empty() { "/" } else { path };
            let expected = match query {
                Some(q) => format!("{p}?{q}"),
                None => p.to_string(),
            };
            assert_eq!(path_and_query, expected);
        }
        Err(e) => assert_eq!(e.status(), 400),
        // Not a host route: what the path alone decides.
        other => assert_eq!(other, cfg.route(path, query)),
    }
}

fn check_route(cfg: &RouteConfig, path: &str, query: Option<&str>) {
    let with_query = |p: &str| match query {
        Some(q) => format!("{p}?{q}"),
        None => p.to_string(),
    };
    match cfg.route(path, query) {
        Err(e) => assert_eq!(e.status(), 400),
        Ok(Route::Revdial(r)) => {
            assert!(DialerId::new(r.id.as_str()).is_ok());
            if let Some(c) = &r.conn {
                assert!(!c.is_empty() && c.len() <= 128, "token {c:?}");
                assert_ne!(r.role, Some(Role::Control), "a control stream has no token");
            }
            assert!(
                path.starts_with(cfg.base().trim_end_matches('/')),
                "revdial outside the base path"
            );
        }
        Ok(Route::Proxy {
            id,
            path_and_query,
            prefix,
        }) => {
            assert!(DialerId::new(id.as_str()).is_ok());
            assert!(
                path.starts_with(&prefix),
                "{prefix:?} is not a prefix of {path:?}"
            );
            let rest = &path[prefix.len()..];
            let rest = if rest.is_empty() { "/" } else { rest };
            assert!(rest.starts_with('/'));
            assert_eq!(path_and_query, with_query(rest));
        }
        Ok(Route::Default { id, path_and_query }) => {
            assert_eq!(Some(&id), cfg.default_id());
            assert_eq!(path_and_query, with_query(path));
        }
        Ok(Route::Host { .. }) => panic!("a host route without a host"),
        Ok(Route::NotFound) => assert!(cfg.default_id().is_none()),
    }
}
