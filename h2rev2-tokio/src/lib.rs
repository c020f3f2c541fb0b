//! # h2rev2-tokio: reverse connections over HTTP/2 for tokio
//!
//! The tokio binding of h2rev2: tokio as the runtime, tokio sockets and tokio-rustls,
//! over [`h2rev2_driver`] (the drivers, conns, HTTP proxy; shared with `h2rev2-smol`)
//! and [`h2rev2_proto`] (every protocol decision). Plus [`nat`]: ready-made NAT-side
//! services on hyper's tokio client.
//!
//! * Public side: [`Server`] accepts Listeners on `B/revdial`, proxies Clients'
//!   requests on `B/proxy/{id}/…`, and [`Server::dial`] returns a reverse conn;
//!   [`DialConnector`] lets a hyper client call NATed servers;
//!   [`Server::service`] mounts the proxy routes in your own hyper or axum server
//!   (Listeners still connect to the built-in HTTP/2 listener, [`Server::serve`]).
//! * NAT side: [`Listener::connect`] dials out, reconnects forever, and
//!   [`Listener::accept`] yields conns; [`nat::serve_http_proxy`] and
//!   [`nat::relay_tcp`] are ready-made services over it.
//! * [`RevConn`] is `AsyncRead + AsyncWrite` with the semantics of PROTOCOL.md 5.
//!
//! ## Both sides in one program
//!
//! A public server, a Listener that serves a tiny echo service through the tunnel, and
//! a dial through it, all on 127.0.0.1. Split it in two for real use: the Listener
//! half behind the NAT, the server half on the public machine.
//!
//! ```
//! use h2rev2_tokio::tls::{self, Identity, ServerTrust};
//! use h2rev2_tokio::{DialerId, Listener, ListenerOptions, Server, ServerConfig};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let id = DialerId::new("sensor-7")?;
//! let (identity, _cert_pem, _key_pem) = Identity::self_signed(&["localhost".into()])?;
//! let trust = ServerTrust::from_certs(&identity.certs)?;
//!
//! // Public side: admit "sensor-7" with its token; serve TLS (HTTP/2 and HTTP/1.1).
//! let mut config = ServerConfig::default();
//! config.dialer.auth.add_token(id.clone(), "s3cret");
//! let server = Server::new(config);
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let url = format!("https://localhost:{}", tcp.local_addr()?.port());
//! tokio::spawn(server.clone().serve(tcp, tls::server_config(identity, None)?));
//!
//! // NAT side: register, reconnect forever, accept reverse conns.
//! let tls = tls::client_config(trust, None, &[tls::ALPN_H2])?;
//! let mut opts = ListenerOptions::new(&url, id.clone(), tls)?;
//! opts.token = Some("s3cret".into());
//! let listener = Listener::connect(opts)?;
//! listener.wait_up().await?;
//! tokio::spawn(async move {
//!     while let Ok(mut conn) = listener.accept().await {
//!         tokio::spawn(async move {
//!             // Echo until the peer half-closes, then close our side.
//!             let (mut r, mut w) = tokio::io::split(&mut conn);
//!             let _ = tokio::io::copy(&mut r, &mut w).await;
//!             let _ = w.shutdown().await;
//!         });
//!     }
//! });
//!
//! // Public side again: a byte connection to the NATed machine, by its id.
//! let mut conn = server.dial(&id).await?;
//! conn.write_all(b"hello through the tunnel").await?;
//! conn.shutdown().await?; // half-close: the answer still comes back
//! let mut answer = String::new();
//! conn.read_to_string(&mut answer).await?;
//! assert_eq!(answer, "hello through the tunnel");
//! # Ok(()) }
//! ```
//!
//! To expose an internal HTTP server instead, hand the Listener to
//! [`nat::serve_http_proxy`]; Clients then reach it at
//! `https://public/proxy/sensor-7/…`, and a hyper client on the public machine through
//! [`DialConnector`].
//!
//! ## Mounting the proxy in axum
//!
//! Your own axum app serves the Clients: its routes first, and the h2rev2 proxy
//! routes (`/proxy/{id}/…`, the default id) as the fallback through
//! [`Server::handle`](h2rev2_driver::Server::handle), which takes axum's body as it is.
//! Listeners still connect to the built-in TLS listener ([`Server::serve`]): reverse
//! connections need raw HTTP/2 streams.
//!
//! ```no_run
//! # use h2rev2_tokio::{Server, ServerConfig};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! # let server = Server::new(ServerConfig::default());
//! use axum::extract::{ConnectInfo, Request, State};
//! use axum::response::IntoResponse;
//! use axum::{Router, routing::get};
//! use std::net::SocketAddr;
//!
//! async fn tunnel(
//!     State(server): State<h2rev2_tokio::Server>,
//!     ConnectInfo(peer): ConnectInfo<SocketAddr>,
//!     req: Request,
//! ) -> impl IntoResponse {
//!     server.handle(req, peer, false).await // false: this app serves cleartext
//! }
//!
//! let app = Router::new()
//!     .route("/health", get(|| async { "ok" }))
//!     .fallback(tunnel)
//!     .with_state(server.clone());
//! let tcp = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! axum::serve(tcp, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
//! # Ok(()) }
//! ```
//!
//! [`Server::service`](h2rev2_driver::Server::service) is the same as a tower service
//! for one connection's peer, for `Router::nest_service` or a hyper server of your own.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod binding;
pub mod nat;

pub use binding::{Connector, Listener, Server, TokioRuntime, Transport};
pub use h2rev2_driver as driver;
pub mod redis_store;
pub use h2rev2_driver::sessions::{self, RecentError, SessionInfo};
pub use h2rev2_driver::{
    BoxError, CertIdentity, ConnectError, DialConnector, H2Settings, ListenerOptions, Metrics,
    OptionsError, ProxyBody, ProxyService, Reloaded, RevConn, ServerConfig, SpreadGroup, Status,
    metrics, outbound, relay, settings, tls,
};
pub use h2rev2_proto as proto;
pub use h2rev2_proto::dialer::{DialError, Stats};
pub use h2rev2_proto::listener::DownReason;
pub use h2rev2_proto::wire::DialerId;
