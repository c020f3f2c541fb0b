//! `h2rev2 status --admin URL`: a running server's sessions as a table, from its admin
//! endpoint's `/api/sessions`.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::admin::Snapshot;
use crate::cli::StatusArgs;
use crate::error::{CliError, Code};

/// How long the whole exchange may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// `http://HOST:PORT[/base]` to (`HOST:PORT`, `/base`).
fn split_url(url: &str) -> Result<(String, String), CliError> {
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            return Err(CliError::usage(format!(
                "--admin {url:?}: the admin endpoint is plain HTTP, not {scheme}"
            )));
        }
        None => url,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() || !authority.contains(':') {
        return Err(CliError::usage(format!(
            "--admin {url:?}: expected http://HOST:PORT, e.g. http://127.0.0.1:9100"
        )));
    }
    Ok((authority.to_string(), path.to_string()))
}

async fn fetch(authority: &str, path: &str, token: Option<&str>) -> Result<Bytes, CliError> {
    let tcp = TcpStream::connect(authority).await.map_err(|e| {
        CliError::runtime(format!("cannot reach the admin endpoint {authority}: {e}"))
    })?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| CliError::runtime(format!("admin endpoint {authority}: {e}")))?;
    tokio::spawn(conn);
    let mut req = Request::get(path).header(header::HOST, authority);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| CliError::usage(format!("--admin: {e}")))?;
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| CliError::runtime(format!("admin endpoint {authority}: {e}")))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| CliError::runtime(format!("admin endpoint {authority}: {e}")))?
        .to_bytes();
    match status {
        StatusCode::OK => Ok(body),
        StatusCode::UNAUTHORIZED => Err(CliError {
            code: Code::AuthRefused,
            message: format!(
                "the admin endpoint {authority} refused the request (401): give its token with --admin-token-file"
            ),
        }),
        s => Err(CliError::runtime(format!(
            "the admin endpoint {authority} answered {s}"
        ))),
    }
}

/// Bytes in a short human form.
fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// The sessions of `snap` as an aligned text table.
pub fn table(snap: &Snapshot) -> String {
    let mut rows = vec![[
        "ID".to_string(),
        "PEER".into(),
        "CONNECTED SINCE".into(),
        "CONNS".into(),
        "SPARES".into(),
        "FROM LISTENER".into(),
        "TO LISTENER".into(),
        "LAST ERROR".into(),
    ]];
    for s in &snap.sessions {
        rows.push([
            s.id.clone(),
            s.peer.clone(),
            s.connected_since.clone(),
            s.open_conns.to_string(),
            s.spares.to_string(),
            human(s.bytes_from_listener),
            human(s.bytes_to_listener),
            s.last_error.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut widths = [0usize; 8];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(widths).enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if snap.sessions.is_empty() {
        out.push_str("(no live sessions)\n");
    }
    out
}

/// `h2rev2 status`.
pub async fn run(args: StatusArgs) -> Result<(), CliError> {
    let (authority, base) = split_url(&args.admin)?;
    let token = args
        .admin_token_file
        .as_deref()
        .map(crate::admin::read_token)
        .transpose()?;
    let path = format!("{base}/api/sessions");
    let body = tokio::time::timeout(TIMEOUT, fetch(&authority, &path, token.as_deref()))
        .await
        .map_err(|_| {
            CliError::runtime(format!(
                "the admin endpoint {authority} did not answer in time"
            ))
        })??;
    let snap: Snapshot = serde_json::from_slice(&body).map_err(|e| {
        CliError::runtime(format!(
            "the admin endpoint {authority} sent something else than sessions: {e}"
        ))
    })?;
    print!("{}", table(&snap));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            split_url("http://127.0.0.1:9100").unwrap(),
            ("127.0.0.1:9100".into(), "".into())
        );
        assert_eq!(
            split_url("127.0.0.1:9100/admin/").unwrap(),
            ("127.0.0.1:9100".into(), "/admin".into())
        );
        assert!(split_url("https://x:1").is_err());
        assert!(split_url("http://nohost").is_err());
    }
}
