//! The smol binding's public types: the server and the Listener over smol's sockets
//! and futures-rustls, on a [`Spawner`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use h2rev2_driver::io::TcpClient;
use h2rev2_driver::{Accepted, ListenerOptions, OptionsError, ServerConfig, TlsPeer};
use h2rev2_proto::wire::DialerId;
use smol::net::{TcpListener, TcpStream};

use crate::io::{Connector, H2Io, Transport};
use crate::spawn::Spawner;

h2rev2_driver::binding_type! {
/// The public server on smol: [`h2rev2_driver::Server`] (dial, stats, shutdown, the
/// HTTP proxy... through `Deref`) plus smol's sockets and futures-rustls.
#[derive(Clone, Debug)]
Server(h2rev2_driver::Server)
}

impl Server {
    /// Starts the server, its tasks on smol's global executor.
    pub fn new(config: ServerConfig) -> Server {
        Server::with_spawner(config, Spawner::default())
    }

    /// Starts the server, its tasks spawned by `spawner`.
    pub fn with_spawner(config: ServerConfig, spawner: Spawner) -> Server {
        Server(h2rev2_driver::Server::new(config, spawner.rt()))
    }

    /// Accepts TLS connections on `listener` until shutdown: HTTP/2 (ALPN `h2`) for
    /// Listeners and Clients, HTTP/1.1 for Clients. Client certificates are verified
    /// by rustls and their identities passed on (ids bound to certificates).
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
    ) -> io::Result<()> {
        let acceptor = futures_rustls::TlsAcceptor::from(tls);
        let which = self.config().cert_identity;
        let handshake = move |tcp: TcpStream| {
            let acceptor = acceptor.clone();
            async move {
                let tls = acceptor.accept(tcp).await?;
                let peer = TlsPeer::of(tls.get_ref().1, which);
                Ok(Accepted::tls(H2Io::new(tls, false), peer))
            }
        };
        self.0.serve_with(|| accept(&listener), handshake).await
    }

    /// Accepts cleartext HTTP/2 (prior knowledge) and HTTP/1.1 connections. Only for
    /// tests and for deployments behind a TLS-terminating front proxy: opt-in.
    pub async fn serve_cleartext(self, listener: TcpListener) -> io::Result<()> {
        let handshake = |tcp: TcpStream| async move {
            // The HTTP/2 preface starts with "PRI"; bounded by the handshake timeout.
            let mut first = [0u8; 3];
            let n = tcp.peek(&mut first).await?;
            Ok(Accepted::cleartext(H2Io::new(tcp, true), &first[..n]))
        };
        self.0.serve_with(|| accept(&listener), handshake).await
    }

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
        let io = H2Io::new(io, !tls);
        self.0.serve_connection(io, peer, h2, identities, tls).await
    }

    /// Forwards TCP connections accepted on `listener` to the Listener `id`, until
    /// shutdown: raw TCP forwarding.
    pub async fn forward_tcp(self, listener: TcpListener, id: DialerId) -> io::Result<()> {
        let next = || async {
            let (tcp, peer) = accept(&listener).await?;
            Ok((Box::new(H2Io::new(tcp, true)) as Box<dyn TcpClient>, peer))
        };
        self.0.forward_with(next, id).await
    }
}

async fn accept(listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
    let (tcp, peer) = listener.accept().await?;
    let _ = tcp.set_nodelay(true);
    Ok((tcp, peer))
}

h2rev2_driver::binding_type! {
/// The NAT side on smol: [`h2rev2_driver::Listener`] (accept, status, close...
/// through `Deref`) connected with a futures-io [`Connector`].
#[derive(Debug)]
Listener(h2rev2_driver::Listener)
}

impl Listener {
    /// Starts connecting to the public server over smol TCP + futures-rustls, its
    /// tasks on smol's global executor; returns at once and keeps reconnecting.
    pub fn connect(opts: ListenerOptions) -> Result<Listener, OptionsError> {
        Listener::connect_with(opts, Connector::default(), Spawner::default())
    }

    /// The same through `connector`, its tasks spawned by `spawner`.
    pub fn connect_with(
        opts: ListenerOptions,
        connector: Connector,
        spawner: Spawner,
    ) -> Result<Listener, OptionsError> {
        h2rev2_driver::Listener::connect(opts, spawner.rt(), Arc::new(connector)).map(Listener)
    }
}
