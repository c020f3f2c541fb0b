//! # h2rev2-tokio: reverse connections over HTTP/2 for tokio
//!
//! The tokio adapter of [`h2rev2_proto`]: TCP, TLS (rustls), HTTP/2 (h2), hyper for
//! HTTP semantics, and the loops that feed the core's state machines.
//!
//! * Public side: [`Server`] accepts Listeners on `B/revdial`, proxies Clients'
//!   requests on `B/proxy/{id}/…`, and [`Server::dial`] returns a reverse conn;
//!   [`DialConnector`] lets a hyper client call NATed servers;
//!   [`Server::service`] mounts the proxy routes in your own hyper or axum server
//!   (Listeners still connect to the built-in HTTP/2 listener, [`Server::serve`]).
//! * NAT side: [`Listener`] dials out, reconnects forever, and
//!   [`Listener::accept`] yields conns; [`nat::serve_http_proxy`] and
//!   [`nat::relay_tcp`] are ready-made services over it.
//! * [`RevConn`] is `AsyncRead + AsyncWrite` with the semantics of PROTOCOL.md 5.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod conn;
mod connector;
mod identity;
mod keepalive;
mod listener;
pub mod metrics;
pub mod nat;
mod proxy;
mod relay;
mod server;
pub mod settings;
pub mod tls;

pub use conn::RevConn;
pub use connector::{ConnectError, DialConnector};
pub use h2rev2_proto as proto;
pub use identity::CertIdentity;
pub use listener::{Listener, ListenerOptions, OptionsError, Status};
pub use proxy::{BoxError, ProxyBody, ProxyService};
pub use relay::relay;
pub use server::{Server, ServerConfig};
pub use settings::H2Settings;
