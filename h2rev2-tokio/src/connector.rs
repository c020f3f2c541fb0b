//! A hyper connector over [`Server::dial`]: a hyper client reaches NATed HTTP servers
//! with URLs like `http://{id}/path`.

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

/// Connects to the Listener named by the URI's host.
///
/// ```no_run
/// # async fn run(server: h2rev2_tokio::Server) -> Result<(), Box<dyn std::error::Error>> {
/// use http_body_util::Empty;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
///
/// let client: Client<_, Empty<bytes::Bytes>> =
///     Client::builder(TokioExecutor::new()).build(h2rev2_tokio::DialConnector::new(server));
/// let resp = client.get("http://db/health".parse()?).await?;
/// println!("{}", resp.status());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct DialConnector {
    server: Server,
}

impl DialConnector {
    /// A connector dialing through `server`.
    pub fn new(server: Server) -> Self {
        DialConnector { server }
    }
}

/// Why the connector could not connect.
#[derive(Debug)]
pub enum ConnectError {
    /// The URI has no host that is a valid dialer id.
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
            ConnectError::BadHost(h) => write!(f, "{h:?} is not a dialer id"),
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
        Box::pin(async move {
            let host = uri.host().unwrap_or_default();
            let id = DialerId::new(host).map_err(|_| ConnectError::BadHost(host.to_string()))?;
            let conn = server.dial(&id).await.map_err(ConnectError::Dial)?;
            Ok(TokioIo::new(conn))
        })
    }
}
