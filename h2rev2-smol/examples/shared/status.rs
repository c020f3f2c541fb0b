//! The examples' status service: HTTP/1.1 over one reverse connection.

use h2rev2_smol::RevConn;
use smol::io::{AsyncReadExt, AsyncWriteExt};

/// Answers the HTTP/1.1 requests of one reverse connection (keep-alive, no request
/// bodies) with `200` and the text `body()` gives for each, until the client ends
/// (or asks for `connection: close`).
pub async fn answer(
    mut conn: RevConn,
    mut body: impl FnMut() -> String,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 16 << 10 {
                return Err("request head too large".into());
            }
            let n = match conn.read(&mut chunk).await {
                Ok(n) => n,
                // An idle conn (a spare, or kept alive between requests) may be cut
                // when the public server goes away: nothing was lost.
                Err(_) if buf.is_empty() => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                conn.close().await?; // the client is done: end our side too
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let close = head.contains("\r\nconnection: close");
        buf.drain(..end);
        let body = body();
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        conn.write_all(resp.as_bytes()).await?;
        conn.flush().await?;
        if close {
            conn.close().await?;
            return Ok(());
        }
    }
}
