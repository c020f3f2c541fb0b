//! A TCP relay that delays every byte by a fixed one-way latency in each direction,
//! emulating a long link on loopback when `tc netem` is not available.
//!
//! Each direction is a reader and a writer joined by a queue of timestamped chunks:
//! the reader stamps a chunk with `arrival + delay` and reads on at once; the writer
//! sleeps until the stamp of the queue's head, then writes it. So the link is
//! pipelined (throughput is not divided by the delay, as a per-chunk sleep in one loop
//! would do) and only what depends on round trips, such as HTTP/2 flow-control window
//! updates, is slowed. Bandwidth is not limited and TCP's own congestion control on
//! the emulated link is not modelled (the sockets at both ends see loopback).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Queue slots per direction. A slot holds up to 64 KiB; the queue fills only when
/// the receiving end stops reading.
const QUEUE: usize = 1 << 14;
const CHUNK: usize = 64 << 10;

/// Starts a delay relay on 127.0.0.1 to `target`; returns its address. It runs until
/// the runtime stops.
pub async fn spawn(target: SocketAddr, one_way: Duration) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(outbound) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let (ir, iw) = inbound.into_split();
                let (or, ow) = outbound.into_split();
                tokio::join!(pipe(ir, ow, one_way), pipe(or, iw, one_way));
            });
        }
    });
    Ok(addr)
}

/// One direction: `None` in the queue is the end of the stream (FIN, passed on).
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Option<Bytes>)>(QUEUE);
    let reader = async move {
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            buf.reserve(CHUNK);
            match from.read_buf(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = tx.send((Instant::now() + delay, None)).await;
                    return;
                }
                Ok(_) => {
                    let chunk = buf.split().freeze();
                    if tx
                        .send((Instant::now() + delay, Some(chunk)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            match chunk {
                Some(c) => {
                    if to.write_all(&c).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = to.shutdown().await;
                    return;
                }
            }
        }
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes pass intact and in order both ways, and a half-close is passed on.
    #[tokio::test]
    async fn relays_bytes_in_order_and_half_close() {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = server.local_addr().unwrap();
        let echo = tokio::spawn(async move {
            let (mut s, _) = server.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            s.write_all(&got).await.unwrap();
            s.shutdown().await.unwrap();
            got.len()
        });
        let proxy = spawn(target, Duration::from_millis(2)).await.unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut c = TcpStream::connect(proxy).await.unwrap();
        let (mut r, mut w) = c.split();
        let send = async {
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let mut back = Vec::new();
        let recv = r.read_to_end(&mut back);
        let (_, n) = tokio::join!(send, recv);
        n.unwrap();
        assert_eq!(echo.await.unwrap(), data.len());
        assert!(back == data, "echoed bytes differ");
    }
}
