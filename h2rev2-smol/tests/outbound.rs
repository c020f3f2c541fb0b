//! The driver's outbound proxies on smol, with no code of this binding's: a smol
//! Listener reaching a smol public server through an HTTP CONNECT proxy and a SOCKS5
//! proxy written here (smol sockets), over real TLS checked for the server's name.

mod common;

use std::time::Duration;

use common::*;
use h2rev2_smol::outbound::{NoProxy, OutboundProxy, ProxyRules};
use h2rev2_smol::{Connector, Listener, ListenerOptions, Server, ServerConfig};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};

/// Relays bytes both ways until either side ends.
async fn relay(a: TcpStream, b: TcpStream) {
    let (ra, wa) = (a.clone(), a);
    let (rb, wb) = (b.clone(), b);
    let up = smol::io::copy(ra, wb);
    let down = smol::io::copy(rb, wa);
    let _ = futures_util::future::select(Box::pin(up), Box::pin(down)).await;
}

/// An HTTP CONNECT proxy on 127.0.0.1 that wants `Proxy-Authorization: Basic
/// dTpw` (u:p); each request head it got goes to the channel.
async fn connect_proxy() -> (u16, smol::channel::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = smol::channel::unbounded();
    smol::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let tx = tx.clone();
            smol::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if c.read_exact(&mut b).await.is_err() {
                        return;
                    }
                    head.push(b[0]);
                }
                let head = String::from_utf8(head).unwrap();
                let _ = tx.send(head.clone()).await;
                if !head.contains("\r\nProxy-Authorization: Basic dTpw\r\n") {
                    let _ = c
                        .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
                        .await;
                    return;
                }
                let target = head.split_whitespace().nth(1).unwrap().to_string();
                let Ok(up) = TcpStream::connect(target).await else {
                    let _ = c.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                c.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .unwrap();
                relay(c, up).await;
            })
            .detach();
        }
    })
    .detach();
    (port, rx)
}

/// A SOCKS5 proxy on 127.0.0.1 without authentication, for domain-name CONNECTs only
/// (socks5h://); each name:port asked for goes to the channel.
async fn socks_proxy() -> (u16, smol::channel::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = smol::channel::unbounded();
    smol::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let tx = tx.clone();
            smol::spawn(async move {
                let mut hello = [0u8; 3];
                c.read_exact(&mut hello).await.unwrap();
                assert_eq!(hello, [5, 1, 0]);
                c.write_all(&[5, 0]).await.unwrap();
                let mut req = [0u8; 5];
                c.read_exact(&mut req).await.unwrap();
                assert_eq!(req[..4], [5, 1, 0, 3]);
                let mut name = vec![0u8; usize::from(req[4]) + 2];
                c.read_exact(&mut name).await.unwrap();
                let port = u16::from_be_bytes([name[name.len() - 2], name[name.len() - 1]]);
                let host = String::from_utf8(name[..name.len() - 2].to_vec()).unwrap();
                let _ = tx.send(format!("{host}:{port}")).await;
                let up = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                c.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 0])
                    .await
                    .unwrap();
                relay(c, up).await;
            })
            .detach();
        }
    })
    .detach();
    (port, rx)
}

async fn server(certs: &Certs) -> u16 {
    let mut config = ServerConfig::default();
    config.dialer.auth.add_token(id("box"), "tok");
    let server = Server::new(config);
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    smol::spawn(server.serve(tcp, certs.server_tls())).detach();
    port
}

fn listener(certs: &Certs, port: u16, rules: ProxyRules) -> Listener {
    let url = format!("https://localhost:{port}");
    let mut opts = ListenerOptions::new(&url, id("box"), certs.client_tls()).unwrap();
    opts.token = Some("tok".into());
    Listener::connect_with(opts, Connector::default().via(rules), Default::default()).unwrap()
}

#[test]
fn http_connect_and_socks5h_on_smol() {
    smol::block_on(async {
        let certs = Certs::new();
        let port = server(&certs).await;

        let (proxy, heads) = connect_proxy().await;
        let url = format!("http://u:p@127.0.0.1:{proxy}");
        let rules = ProxyRules::new(OutboundProxy::parse(&url).unwrap());
        let l = listener(&certs, port, rules);
        with_timeout(Duration::from_secs(10), l.wait_up())
            .await
            .unwrap();
        let head = heads.recv().await.unwrap();
        assert!(
            head.starts_with(&format!("CONNECT localhost:{port} HTTP/1.1\r\n")),
            "{head}"
        );
        l.close();

        // A wrong password: the proxy's refusal, named.
        let url = format!("http://u:wrong@127.0.0.1:{proxy}");
        let rules = ProxyRules::new(OutboundProxy::parse(&url).unwrap());
        let l = listener(&certs, port, rules);
        let mut status = l.watch_status();
        let reason = with_timeout(Duration::from_secs(10), async {
            loop {
                if let h2rev2_smol::Status::Down(Some(r)) = &*status.borrow_and_update() {
                    return r.to_string();
                }
                status.changed().await.unwrap();
            }
        })
        .await;
        assert!(
            reason.contains(&format!(
                "proxy 127.0.0.1:{proxy} refused CONNECT to localhost:{port}: 407 Proxy \
                 Authentication Required"
            )),
            "{reason}"
        );
        assert!(!reason.contains("wrong"), "{reason}");
        l.close();

        // SOCKS5, the name resolved by the proxy.
        let (socks, names) = socks_proxy().await;
        let url = format!("socks5h://127.0.0.1:{socks}");
        let rules = ProxyRules::new(OutboundProxy::parse(&url).unwrap());
        let l = listener(&certs, port, rules);
        with_timeout(Duration::from_secs(10), l.wait_up())
            .await
            .unwrap();
        assert_eq!(names.recv().await.unwrap(), format!("localhost:{port}"));
        l.close();

        // NO_PROXY: straight to the server, the (dead) proxy never asked.
        let rules = ProxyRules::new(OutboundProxy::parse("http://127.0.0.1:1").unwrap())
            .bypass(NoProxy::parse("localhost"));
        let l = listener(&certs, port, rules);
        with_timeout(Duration::from_secs(10), l.wait_up())
            .await
            .unwrap();
        l.close();
    });
}
