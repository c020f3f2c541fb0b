//! # h2rev2-driver: the runtime-generic layer of h2rev2
//!
//! Between the sans-IO core ([`h2rev2_proto`], which decides) and a runtime binding
//! (`h2rev2-tokio`, `h2rev2-smol`, which supply tasks, timers, sockets and TLS), this
//! crate carries the core's decisions out on h2, once for every runtime:
//!
//! | module | holds |
//! | --- | --- |
//! | [`runtime`] | the [`Runtime`] trait a binding implements: spawn, a timer, `now` |
//! | [`io`] | [`BoxIo`], the byte stream under HTTP/2, and [`Connect`], how a Listener reaches the server |
//! | `server` | the public side: [`Server`] (the Dialer driver, HTTP/2 and HTTP/1.1 connections, limits, timeouts, shutdown) |
//! | `listener` | the NAT side: [`Listener`] (the Listener driver: connect, control stream, spares, reconnect) |
//! | `conn` | [`RevConn`]: one h2 stream pair as a byte connection, tokio and futures-io |
//! | `proxy`, `connector` | the HTTP reverse proxy on hyper (over [`Rt`] as hyper's executor and timer), [`DialConnector`] |
//! | [`settings`], `keepalive` | h2 builders with the core's [`H2Settings`], PING keep-alive |
//! | [`outbound`] | outbound HTTP CONNECT and SOCKS5 proxies for a Listener ([`ProxyRules`], `NO_PROXY`) |
//! | [`metrics`], [`sessions`], `identity` | counters with a Prometheus rendering (prometheus-client); live sessions for an admin view; client-certificate identities |
//!
//! No tokio runtime is started here: channels are tokio's runtime-agnostic `sync`
//! types, I/O is tokio's traits (which h2 needs), and every task and timer comes from
//! the [`Rt`] given by the binding. A feature is added here once and both bindings
//! have it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cluster;
mod conn;
mod connector;
pub mod identity;
pub mod io;
mod keepalive;
mod listener;
pub mod metrics;
pub mod outbound;
mod proxy;
mod relay;
pub mod runtime;
mod server;
pub mod sessions;
pub mod settings;
pub mod stack;
mod tunnel;
pub mod wake;

pub use conn::RevConn;
pub use connector::{ConnectError, DialConnector};
pub use h2rev2_proto as proto;
pub use h2rev2_proto::listener::DownReason;
/// TLS configuration (certificates, ALPN, how a Listener trusts the server).
pub use h2rev2_tls as tls;
pub use identity::CertIdentity;
pub use io::{BoxIo, Connect, Connected, Target};
pub use listener::{Listener, ListenerOptions, OptionsError, SpreadGroup, Status};
pub use metrics::Metrics;
pub use outbound::{NoProxy, OutboundProxy, ProxyError, ProxyRules};
pub use proxy::{
    BoxError, ProxyBody, ProxyLimits, ProxyService, strip_hop_by_hop, text as text_response,
    upstream_failure,
};
pub use relay::relay;
pub use runtime::{Rt, Runtime, Task, Timer};
/// The rustls crate the drivers are built with (its config types are in their API).
pub use rustls;
pub use server::{Accepted, Reloaded, Server, ServerConfig, TlsPeer};
pub use sessions::{RecentError, SessionInfo};
pub use settings::H2Settings;
pub use stack::{Connector, Stack};
