//! The smol binding's public types: the shared drivers over smol's sockets and
//! futures-rustls, on a [`Spawner`].

use std::net::SocketAddr;

use smol::net::{TcpListener, TcpStream};

use crate::io::{H2Io, Transport};
use crate::spawn::Spawner;

/// How a [`Listener`] opens its connection to the public server, given `host:port`.
///
/// The default is [`Connector::tcp`] (smol's sockets). Give your own to use another
/// runtime's sockets or a Unix socket; TLS (futures-rustls) is added on top. For an
/// outbound HTTP CONNECT or SOCKS5 proxy, add [`crate::outbound::ProxyRules`] with
/// `.via(rules)`. Vectored writes are passed through in cleartext
/// only (see the crate docs).
///
/// ```
/// use h2rev2_smol::Connector;
/// // Any futures-io stream works: async-std's sockets instead of smol's, say.
/// let c = Connector::new(|addr: String| async_std::net::TcpStream::connect(addr));
/// # drop(c);
/// ```
pub type Connector = h2rev2_driver::Connector<Spawner>;

// smol's (async-io's) sockets and futures-rustls under the drivers, bridged to h2's
// I/O traits by `H2Io` (vectored writes passed through in cleartext only).
h2rev2_driver::impl_stack! {
    Spawner = Spawner::default();
    sockets: TcpListener, TcpStream;
    tls: futures_rustls::TlsAcceptor, futures_rustls::TlsConnector;
    transport: Transport, io: H2Io::new;
}

h2rev2_driver::binding_types! {
    stack: Spawner, tcp_listener: TcpListener,
    /// The public server on smol: [`h2rev2_driver::Server`] (dial, stats, shutdown,
    /// the HTTP proxy... through `Deref`) plus smol's sockets and futures-rustls.
    Server,
    /// The NAT side on smol: [`h2rev2_driver::Listener`] (accept, status, close...
    /// through `Deref`) connected with a futures-io [`Connector`].
    Listener,
}

impl Server {
    /// Serves one established connection (TLS done, or cleartext) from any futures-io
    /// transport. `h2` selects HTTP/2, otherwise HTTP/1.1; `identities` are the
    /// verified client certificate's, for ids bound to certificates.
    pub async fn serve_connection<IO: Transport>(
        &self,
        io: IO,
        peer: SocketAddr,
        h2: bool,
        identities: Vec<String>,
        tls: bool,
    ) {
        self.0
            .serve_connection(H2Io::new(io, !tls), peer, h2, identities, tls)
            .await
    }
}
