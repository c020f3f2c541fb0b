//! TLS for the smol adapter: the shared [`h2rev2_tls`] configuration (certificates,
//! ALPN, how a Listener trusts the server), used through futures-rustls.
//!
//! The configs are plain [`rustls`] configs: one built by `h2rev2_tokio::tls` works
//! here too, and the other way round.

use std::sync::Arc;

pub use futures_rustls::rustls;
pub use h2rev2_tls::{
    ALPN_H2, ALPN_HTTP11, Identity, ServerTrust, TlsError, load_certs, server_name,
};
use rustls::{ClientConfig, ServerConfig};

/// The public server's TLS config: ALPN `h2` and `http/1.1` (HTTP/1.1 Clients reach
/// the HTTP proxy).
pub fn server_config(identity: Identity) -> Result<Arc<ServerConfig>, TlsError> {
    h2rev2_tls::server_config(identity, None)
}

/// A Listener's TLS config: ALPN `h2`, and a client certificate if given.
pub fn client_config(
    trust: ServerTrust,
    client_identity: Option<Identity>,
) -> Result<Arc<ClientConfig>, TlsError> {
    h2rev2_tls::client_config(trust, client_identity, &[ALPN_H2])
}
