//! `--admin ADDR` (and its older name `--metrics ADDR`): the server's admin endpoint,
//! plain HTTP/1.1 on its own listener.
//!
//! | route | answers |
//! | --- | --- |
//! | `/metrics` | Prometheus (OpenMetrics text) |
//! | `/healthz` | `200 ok`: the process is alive (never needs the token) |
//! | `/readyz` | `200 ready` once the tunnel listener serves, `503` while shutting down |
//! | `/api/sessions` | JSON: live sessions, recent errors, totals ([`Snapshot`]) |
//! | `/` | a self-contained HTML status page built on `/api/sessions` |
//!
//! With `--admin-token-file FILE`, every route but `/healthz` needs
//! `Authorization: Bearer TOKEN` (compared in constant time), else `401`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use h2rev2_tokio::Server;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;
use tracing::{debug, info};

use crate::error::CliError;

/// What the admin routes read: the server, the token, whether the server is ready.
pub struct Admin {
    /// The public server.
    pub server: Server,
    /// The bearer token every route but `/healthz` needs, if any (a reload may
    /// replace it).
    pub token: std::sync::RwLock<Option<String>>,
    /// True once the tunnel listener serves, false again when shutdown begins.
    pub ready: Arc<AtomicBool>,
}

/// Reads the token of `--admin-token-file` (its first line, trimmed).
pub fn read_token(path: &std::path::Path) -> Result<String, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::config(format!(
            "--admin-token-file {}: cannot read it: {e}",
            path.display()
        ))
    })?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(CliError::config(format!(
            "--admin-token-file {}: the file holds no token",
            path.display()
        )));
    }
    Ok(token)
}

/// `/api/sessions`: the live sessions, the recent errors and the server's totals.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// Live Listener sessions, by id then age.
    pub sessions: Vec<SessionJson>,
    /// The latest failures, newest first.
    pub recent_errors: Vec<ErrorJson>,
    /// Totals since start.
    pub totals: Totals,
}

/// One live session.
#[derive(Debug, Serialize, Deserialize)]
pub struct SessionJson {
    /// The id it registered.
    pub id: String,
    /// The session's slot (as `session=` in the logs).
    pub session: u32,
    /// The Listener's address.
    pub peer: String,
    /// When it connected, RFC 3339 in UTC.
    pub connected_since: String,
    /// The same in seconds since the Unix epoch.
    pub connected_unix: u64,
    /// Reverse connections open now.
    pub open_conns: usize,
    /// Bytes from the Listener (responses) since it connected.
    pub bytes_from_listener: u64,
    /// Bytes to the Listener (requests) since it connected.
    pub bytes_to_listener: u64,
    /// Spare reverse connections parked for the next dial.
    pub spares: usize,
    /// The last failure for its id while it was up.
    pub last_error: Option<String>,
}

/// One recent failure.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorJson {
    /// When, RFC 3339 in UTC.
    pub at: String,
    /// The id concerned.
    pub id: String,
    /// What happened.
    pub message: String,
}

/// The server's totals.
#[derive(Debug, Serialize, Deserialize)]
pub struct Totals {
    /// Bytes read from reverse connections.
    pub bytes_from_listeners: u64,
    /// Bytes written to reverse connections.
    pub bytes_to_listeners: u64,
    /// Successful dials.
    pub dials: u64,
    /// HTTP connections being served.
    pub connections: i64,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// `t` as RFC 3339 in UTC, to the second (`2026-12-02T03:04:05Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = unix(t);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl Admin {
    /// The data of `/api/sessions`.
    pub async fn snapshot(&self) -> Snapshot {
        let m = self.server.metrics();
        Snapshot {
            sessions: self
                .server
                .sessions()
                .await
                .into_iter()
                .map(|s| SessionJson {
                    id: s.id.to_string(),
                    session: s.session,
                    peer: s.peer.to_string(),
                    connected_since: rfc3339(s.since),
                    connected_unix: unix(s.since),
                    open_conns: s.open_conns,
                    bytes_from_listener: s.bytes_from_listener,
                    bytes_to_listener: s.bytes_to_listener,
                    spares: s.spares,
                    last_error: s.last_error,
                })
                .collect(),
            recent_errors: self
                .server
                .recent_errors()
                .into_iter()
                .map(|e| ErrorJson {
                    at: rfc3339(e.at),
                    id: e.id.to_string(),
                    message: e.message,
                })
                .collect(),
            totals: Totals {
                bytes_from_listeners: m.bytes_in.load(Relaxed),
                bytes_to_listeners: m.bytes_out.load(Relaxed),
                dials: m.dials_ok.load(Relaxed),
                connections: m.connections.load(Relaxed),
            },
        }
    }

    /// Whether `req` carries the token (always, when there is none).
    fn authorized<B>(&self, req: &Request<B>) -> bool {
        let token = self.token.read().unwrap_or_else(|e| e.into_inner());
        let Some(token) = token.as_ref() else {
            return true;
        };
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        bool::from(given.as_bytes().ct_eq(token.as_bytes()))
    }

    /// Answers one admin request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        if path == "/healthz" {
            return text(StatusCode::OK, "ok\n");
        }
        if !self.authorized(&req) {
            let mut resp = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"h2rev2 admin\""),
            );
            return resp;
        }
        match path {
            "/metrics" => body(
                StatusCode::OK,
                h2rev2_tokio::metrics::Metrics::CONTENT_TYPE,
                self.server.metrics().render(),
            ),
            "/readyz" => {
                if self.ready.load(Relaxed) {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }
            "/api/sessions" => {
                let snap = self.snapshot().await;
                match serde_json::to_string(&snap) {
                    Ok(json) => body(StatusCode::OK, "application/json", json),
                    Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n"),
                }
            }
            "/" => {
                let snap = self.snapshot().await;
                let json = serde_json::to_string(&snap).unwrap_or_else(|_| "null".into());
                body(StatusCode::OK, "text/html; charset=utf-8", page(&json))
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /, /metrics, /healthz, /readyz, /api/sessions\n",
            ),
        }
    }
}

fn body(status: StatusCode, content_type: &'static str, b: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(b)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

fn text(status: StatusCode, s: &'static str) -> Response<Full<Bytes>> {
    body(status, "text/plain; charset=utf-8", s.to_string())
}

/// The status page: the snapshot `json` embedded for the first render, then
/// refreshed from `/api/sessions` every 5 s. No external assets.
fn page(json: &str) -> String {
    // `<` cannot end the script element inside JSON written as \u003c.
    let json = json.replace('<', "\\u003c");
    PAGE.replace("__SNAPSHOT__", &json)
}

const PAGE: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>h2rev2 status</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eee}td.n{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#777}.err{color:#a00}
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{background:#fff;border:1px solid #ddd;padding:.6em 1em;min-width:9em}
.card b{display:block;font-size:1.3em}
</style></head>
<body>
<h1>h2rev2 status</h1>
<div class="muted" id="updated">loading...</div>
<h2>Traffic</h2>
<div class="cards" id="traffic"></div>
<h2>Sessions</h2>
<table id="sessions"><thead><tr><th>id</th><th>session</th><th>peer</th><th>connected since</th>
<th>open conns</th><th>spares</th><th>bytes from Listener</th><th>bytes to Listener</th><th>last error</th></tr></thead>
<tbody></tbody></table>
<h2>Recent errors</h2>
<table id="errors"><thead><tr><th>at</th><th>id</th><th>what</th></tr></thead><tbody></tbody></table>
<script id="snapshot" type="application/json">__SNAPSHOT__</script>
<script>
"use strict";
function fmtBytes(n){const u=["B","KiB","MiB","GiB","TiB"];let i=0;while(n>=1024&&i<u.length-1){n/=1024;i++}return (i?n.toFixed(1):n)+" "+u[i]}
function cell(tr,text,cls){const td=document.createElement("td");td.textContent=text;if(cls)td.className=cls;tr.appendChild(td)}
function fill(id,rows,empty,cols){const tb=document.querySelector("#"+id+" tbody");tb.replaceChildren();
 if(!rows.length){const tr=document.createElement("tr");const td=document.createElement("td");td.colSpan=cols;td.className="muted";td.textContent=empty;tr.appendChild(td);tb.appendChild(tr);return}
 for(const r of rows){const tr=document.createElement("tr");for(const [t,c] of r)cell(tr,t,c);tb.appendChild(tr)}}
function render(s){
 if(!s)return;
 const t=s.totals;const tr=document.getElementById("traffic");tr.replaceChildren();
 for(const [k,v] of [["sessions",s.sessions.length],["from Listeners",fmtBytes(t.bytes_from_listeners)],["to Listeners",fmtBytes(t.bytes_to_listeners)],["dials",t.dials],["connections",t.connections]]){
  const d=document.createElement("div");d.className="card";const b=document.createElement("b");b.textContent=v;d.appendChild(b);d.appendChild(document.createTextNode(k));tr.appendChild(d)}
 fill("sessions",s.sessions.map(x=>[[x.id],[x.session,"n"],[x.peer],[x.connected_since],[x.open_conns,"n"],[x.spares,"n"],[fmtBytes(x.bytes_from_listener),"n"],[fmtBytes(x.bytes_to_listener),"n"],[x.last_error||"","err"]]),"no live sessions",9);
 fill("errors",s.recent_errors.map(e=>[[e.at],[e.id],[e.message,"err"]]),"none",3);
 document.getElementById("updated").textContent="updated "+new Date().toISOString();
}
render(JSON.parse(document.getElementById("snapshot").textContent));
setInterval(()=>fetch("api/sessions",{cache:"no-store"}).then(r=>r.ok?r.json():Promise.reject(r.status)).then(render).catch(e=>{document.getElementById("updated").textContent="refresh failed: "+e}),5000);
</script>
</body></html>
"##;

/// Binds `addr` now (so a busy port is reported at start-up) and serves the admin
/// routes in the background. Returns the bound address.
pub async fn start(addr: SocketAddr, admin: Arc<Admin>) -> Result<SocketAddr, CliError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::bind("the admin endpoint", &addr.to_string(), &e))?;
    let local = listener.local_addr().unwrap_or(addr);
    info!("admin on http://{local}/ (/metrics, /healthz, /readyz, /api/sessions)");
    // The line older tests and scripts look for.
    info!("metrics on http://{local}/metrics");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let admin = admin.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.handle(req).await) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await
                {
                    debug!(error = %e, "admin connection");
                }
            });
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723);
        assert_eq!(rfc3339(t), "2000-02-29T01:02:03Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_798_761_599);
        assert_eq!(rfc3339(t), "2026-12-31T23:59:59Z");
    }

    #[test]
    fn the_page_cannot_be_closed_by_the_data() {
        let p = page(r#"{"x":"</script><b>"}"#);
        assert!(!p.contains("</script><b>"));
        assert!(p.contains("\\u003c/script>"));
    }
}
