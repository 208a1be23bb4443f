//! Probes of a member's guest port: a TCP connection that is kept, or the status of an
//! HTTP `GET`. The balancer's health checks and the attach check both use them.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a TCP check waits after connecting for the peer to hang up.
const TCP_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// Whether a TCP connection is accepted and kept: a forwarder (such as a VM's user-mode
/// network) accepts on the host and hangs up at once when nothing listens in the guest.
pub async fn tcp_accepts(addr: SocketAddr) -> bool {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let mut byte = [0u8; 1];
    match tokio::time::timeout(TCP_GRACE, stream.peek(&mut byte)).await {
        // Nothing yet, or a greeting: someone listens.
        Err(_) | Ok(Ok(1..)) => true,
        // Closed or reset at once.
        Ok(Ok(0)) | Ok(Err(_)) => false,
    }
}

/// The status a `GET path` answers with (HTTP/1.0, connection closed after).
pub async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: carve-health-check\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let read = s.read(&mut buf[n..]).await.ok()?;
        if read == 0 {
            break;
        }
        n += read;
    }
    let line = std::str::from_utf8(&buf[..n]).ok()?;
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.get(..3)?.parse().ok()
}
