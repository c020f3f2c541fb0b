//! # h2rev2-smol: reverse connections over HTTP/2 without tokio's runtime
//!
//! Work in progress.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod conn;
mod io;
mod listener;
mod relay;
mod server;
pub mod settings;
mod spawn;
mod status;
pub mod tls;

pub use conn::RevConn;
pub use h2rev2_proto as proto;
pub use io::{BoxTransport, Connector, Transport};
pub use listener::{Listener, ListenerOptions, OptionsError, Status};
pub use relay::relay;
pub use server::{NO_PROXY_HERE, Server, ServerConfig};
pub use settings::H2Settings;
pub use spawn::{Spawner, Task};
