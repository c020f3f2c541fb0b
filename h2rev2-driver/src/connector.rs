//! A hyper connector over [`Server::dial`]: a hyper client reaches NATed HTTP servers.
//!
//! The id to dial is a typed [`DialerId`], never read back out of a URI authority:
//! an authority reinterprets what an id may contain (`alice@corp` is user-info `alice`
//! at host `corp`, `db:1` is host `db` port 1) and hyper's pool compares authorities
//! without case, so `DB` and `db` would share pooled connections. A connector made with
//! [`DialConnector::to`] dials exactly one id whatever the URI says; one client per id
//! is then one pool per id.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use h2rev2_proto::dialer::DialError;
use h2rev2_proto::wire::DialerId;
use http::Uri;
use hyper_util::rt::TokioIo;

use crate::conn::RevConn;
use crate::server::Server;

/// Connects hyper clients to Listeners.
///
/// [`DialConnector::to`] dials one id for every URI (exact for every id); it is what
/// the built-in proxy uses, one client per id:
///
/// ```no_run
/// # async fn run(server: h2rev2_driver::Server) -> Result<(), Box<dyn std::error::Error>> {
/// use h2rev2_driver::proto::wire::DialerId;
/// use http_body_util::Empty;
/// use hyper_util::client::legacy::Client;
///
/// let to_db = h2rev2_driver::DialConnector::to(server.clone(), DialerId::new("Alice@Corp")?);
/// let client: Client<_, Empty<bytes::Bytes>> =
///     Client::builder(server.runtime().clone()).build(to_db);
/// let resp = client.get("http://internal/health".parse()?).await?;
/// println!("{}", resp.status());
/// # Ok(()) }
/// ```
///
/// [`DialConnector::new`] takes the id from the URI's host (`http://db/health`) and
/// accepts only hosts that cannot be misread: lowercase, no user-info, no port, no
/// percent sign. Any other id needs [`DialConnector::to`].
#[derive(Clone, Debug)]
pub struct DialConnector {
    server: Server,
    target: Option<DialerId>,
}

impl DialConnector {
    /// A connector dialing the id named by each URI's host (see the type's docs for
    /// which hosts are accepted).
    pub fn new(server: impl Into<Server>) -> Self {
        DialConnector {
            server: server.into(),
            target: None,
        }
    }

    /// A connector dialing `id` for every URI.
    pub fn to(server: impl Into<Server>, id: DialerId) -> Self {
        DialConnector {
            server: server.into(),
            target: Some(id),
        }
    }

    /// The id this connector dials whatever the URI, if it was made with
    /// [`DialConnector::to`].
    pub fn target(&self) -> Option<&DialerId> {
        self.target.as_ref()
    }
}

/// The id that `uri`'s host names, when it is unambiguous: the whole authority is
/// the host, and it stays the same under the pool's case-insensitive comparison and
/// percent-decoding.
fn id_from_uri(uri: &Uri) -> Result<DialerId, ConnectError> {
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let plain = !authority.is_empty()
        && !authority
            .bytes()
            .any(|b| matches!(b, b'@' | b':' | b'%' | b'[' | b']') || b.is_ascii_uppercase());
    if !plain {
        return Err(ConnectError::BadHost(authority.to_string()));
    }
    DialerId::new(authority).map_err(|_| ConnectError::BadHost(authority.to_string()))
}

/// Why the connector could not connect.
#[derive(Debug)]
pub enum ConnectError {
    /// The URI's authority is not an unambiguous dialer id (see [`DialConnector`]).
    BadHost(String),
    /// The dial failed.
    Dial(DialError),
}

impl ConnectError {
    /// The dial error, if that is what failed.
    pub fn dial_error(&self) -> Option<&DialError> {
        match self {
            ConnectError::Dial(d) => Some(d),
            ConnectError::BadHost(_) => None,
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::BadHost(h) => write!(
                f,
                "{h:?} cannot name a dialer id in a URI (use DialConnector::to)"
            ),
            ConnectError::Dial(d) => d.fmt(f),
        }
    }
}

impl std::error::Error for ConnectError {}

impl tower_service::Service<Uri> for DialConnector {
    type Response = TokioIo<RevConn>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let server = self.server.clone();
        let target = self.target.clone();
        Box::pin(async move {
            let id = match target {
                Some(id) => id,
                None => id_from_uri(&uri)?,
            };
            let conn = server.dial(&id).await.map_err(ConnectError::Dial)?;
            Ok(TokioIo::new(conn))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> Result<String, String> {
        // A URI that does not even parse never reaches a connector.
        let uri: Uri = s.parse().map_err(|_| "unparsable".to_string())?;
        id_from_uri(&uri)
            .map(|i| i.as_str().to_string())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn only_unambiguous_hosts_name_an_id() {
        assert_eq!(host("http://db/x"), Ok("db".into()));
        assert_eq!(host("http://db.internal/"), Ok("db.internal".into()));
        for bad in [
            "http://alice@corp/",
            "http://corp:80/",
            "http://DB/",
            "http://a%40b/",
            "http://[::1]/",
            "/no-authority",
        ] {
            assert!(host(bad).is_err(), "{bad} must be refused");
        }
    }
}
