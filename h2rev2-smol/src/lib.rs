//! # h2rev2-smol: reverse connections over HTTP/2, without tokio's runtime
//!
//! The smol adapter of [`h2rev2_proto`], for small tools and embedded programs that do
//! not run tokio. A **Listener** behind a NAT dials out to a public server over TLS
//! HTTP/2 and accepts reverse connections from it; the **public server** serves
//! `B/revdial` and [`Server::dial`]s them by id. Conns are futures-io
//! `AsyncRead + AsyncWrite` ([`RevConn`]), TLS is futures-rustls, and every protocol
//! decision is the core's: this crate moves bytes.
//!
//! It interoperates with `h2rev2-tokio` both ways (a smol Listener behind a tokio
//! public server, a tokio Listener behind a smol one) and with the Go package.
//!
//! ## A complete program
//!
//! One process playing both sides on 127.0.0.1: a public server, a Listener that
//! exposes an echo service through the tunnel, and a dial through it. Split it in two
//! for real use: the Listener half runs behind the NAT, the server half on the public
//! machine (or use the `h2rev2` binary there, which also proxies HTTP).
//!
//! ```
//! use h2rev2_smol::proto::wire::DialerId;
//! use h2rev2_smol::tls::{self, Identity, ServerTrust};
//! use h2rev2_smol::{Listener, ListenerOptions, Server, ServerConfig};
//! use smol::io::{AsyncReadExt, AsyncWriteExt};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//!     smol::block_on(async {
//!         let id = DialerId::new("sensor-7")?;
//!         let (identity, _cert_pem, _key_pem) = Identity::self_signed(&["localhost".into()])?;
//!         let trust = ServerTrust::from_certs(&identity.certs)?;
//!
//!         // Public side: admit "sensor-7" with its token, serve TLS HTTP/2.
//!         let mut config = ServerConfig::default();
//!         config.dialer.auth.add_token(id.clone(), "s3cret");
//!         let server = Server::new(config);
//!         let tcp = smol::net::TcpListener::bind("127.0.0.1:0").await?;
//!         let url = format!("https://localhost:{}", tcp.local_addr()?.port());
//!         smol::spawn(server.clone().serve(tcp, tls::server_config(identity)?)).detach();
//!
//!         // NAT side: register, reconnect forever, accept reverse conns.
//!         let mut opts = ListenerOptions::new(&url, id.clone(), tls::client_config(trust, None)?)?;
//!         opts.token = Some("s3cret".into());
//!         let listener = Listener::connect(opts)?;
//!         listener.wait_up().await?; // registered: the server can dial it now
//!         smol::spawn(async move {
//!             while let Ok(mut conn) = listener.accept().await {
//!                 smol::spawn(async move {
//!                     // A tiny service: echo until the peer half-closes, then close.
//!                     let mut buf = vec![0u8; 16 << 10];
//!                     while let Ok(n @ 1..) = conn.read(&mut buf).await {
//!                         if conn.write_all(&buf[..n]).await.is_err() {
//!                             return;
//!                         }
//!                     }
//!                     let _ = conn.close().await;
//!                 })
//!                 .detach();
//!             }
//!         })
//!         .detach();
//!
//!         // Public side again: a byte connection to the NATed machine, by its id.
//!         let mut conn = server.dial(&id).await?;
//!         conn.write_all(b"hello through the tunnel").await?;
//!         conn.close().await?; // half-close: the answer still comes back
//!         let mut answer = String::new();
//!         conn.read_to_string(&mut answer).await?;
//!         assert_eq!(answer, "hello through the tunnel");
//!         Ok(())
//!     })
//! }
//! ```
//!
//! `examples/embedded_service.rs` is a runnable tool built the same way: an HTTP
//! status page exposed through the tunnel, reachable with `curl` through the tokio
//! public server's `/proxy/{id}/`.
//!
//! ## What is here
//!
//! | item | what |
//! | --- | --- |
//! | [`Listener`], [`ListenerOptions`], [`Status`] | the NAT side: connect, control stream, spares, reconnect with backoff, `accept()` |
//! | [`Server`], [`ServerConfig`] | the public side: `B/revdial`, the HTTP proxy, `dial`, graceful `shutdown` (through `Deref` to [`driver::Server`]) |
//! | [`RevConn`] | one HTTP/2 stream as a byte connection, futures-io (and tokio) `AsyncRead + AsyncWrite` (PROTOCOL.md 5) |
//! | [`relay`] | copy both ways with half-close, to expose a local TCP service |
//! | [`Spawner`] | where background tasks run: smol's global executor, your [`smol::Executor`], or any executor |
//! | [`Connector`], [`Transport`] | how the Listener reaches the server (smol TCP by default; any futures-io stream) |
//! | [`tls`] | certificates and rustls configs (ring), shared with `h2rev2-tokio` as plain rustls types |
//! | [`H2Settings`] | the core's HTTP/2 settings (windows, flood limits, PING keep-alive) |
//!
//! The public server is the same as `h2rev2-tokio`'s (both are the shared
//! `h2rev2-driver`): the HTTP reverse proxy (`B/proxy/{id}/…`, the default route),
//! metrics, [`DialConnector`], TCP forwarding, ids bound to client certificates.
//! This crate adds smol's sockets, futures-rustls and the [`Spawner`].
//!
//! ## No tokio runtime
//!
//! h2 is written against tokio's I/O *traits*. They are bridged with
//! `tokio_util::compat` (the crate `async-compat` is avoided: it starts a hidden tokio
//! runtime), and `tokio` is a dependency with no runtime feature. Timers and sockets
//! are async-io's; channels are tokio's runtime-agnostic `sync` types and
//! async-channel's. The tests prove it: a probe
//! (`tests/common`) wraps every task of the Listener and the server, in every test,
//! cross-runtime ones included, and checks at each poll that
//! `tokio::runtime::Handle::try_current()` fails
//! (`tests/smol_pair.rs`, `no_tokio_runtime_in_any_task_and_bytes_both_ways`).
//!
//! ## Any executor
//!
//! Tasks are spawned through a [`Spawner`] (default: `smol::spawn`). With async-std,
//! for instance:
//!
//! ```no_run
//! # fn tls() -> std::sync::Arc<h2rev2_smol::tls::rustls::ClientConfig> {
//! #     let trust = h2rev2_smol::tls::ServerTrust::Insecure;
//! #     h2rev2_smol::tls::client_config(trust, None).unwrap()
//! # }
//! use h2rev2_smol::proto::wire::DialerId;
//! use h2rev2_smol::{Connector, Listener, ListenerOptions, Spawner};
//! let id = DialerId::new("sensor-7").unwrap();
//! let opts = ListenerOptions::new("https://public.example:9090", id, tls()).unwrap();
//! let spawner = Spawner::new(|task| {
//!     async_std::task::spawn(task);
//! });
//! let connector = Connector::new(|addr: String| async_std::net::TcpStream::connect(addr));
//! let listener = Listener::connect_with(opts, connector, spawner).unwrap();
//! # drop(listener);
//! ```
//!
//! ## Vectored writes
//!
//! h2 writes a DATA frame's header and payload as one vectored write when its
//! transport says it can. `tokio_util::compat` passes only the first slice on, so this
//! crate forwards vectored writes itself, on cleartext transports only: measured in
//! the previous release (256 MiB through one stream on 127.0.0.1), they saved 10-20%
//! of CPU per byte in cleartext and cost 5-15% more over futures-rustls, where they are
//! therefore not forwarded.
//!
//! ## The run loop, for the curious
//!
//! Each side is a driver task of `h2rev2-driver` that owns a core state machine
//! ([`h2rev2_proto::listener::Listener`], [`h2rev2_proto::dialer::Dialer`]), feeds it
//! events from a channel, and carries out its actions on h2; each [`RevConn`] carries
//! out the steps of a [`h2rev2_proto::conn::Conn`]. The tasks and timers are the
//! [`Spawner`]'s and async-io's.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod binding;
mod io;
mod relay;
mod spawn;
pub mod tls;

pub use binding::{Connector, Listener, Server};
pub use h2rev2_driver as driver;
pub use h2rev2_driver::sessions::{self, RecentError, SessionInfo};
pub use h2rev2_driver::{
    BoxError, CertIdentity, ConnectError, DialConnector, H2Settings, ListenerOptions, Metrics,
    OptionsError, ProxyBody, ProxyService, Reloaded, RevConn, ServerConfig, SpreadGroup, Status,
    metrics, outbound, settings,
};
pub use h2rev2_proto as proto;
pub use h2rev2_proto::dialer::{DialError, Stats};
pub use h2rev2_proto::listener::DownReason;
pub use h2rev2_proto::wire::DialerId;
pub use io::{BoxTransport, Transport};
pub use relay::relay;
pub use spawn::{Spawner, Task};
