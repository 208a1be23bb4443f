//! What the HTTP data plane says and does when it answers a client itself: the reason
//! phrases and texts of its own error pages, and a gentle close of the connection after them.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The text of the page the data plane sends for an upstream failure `status`.
pub fn apology(status: u16) -> &'static str {
    match status {
        503 => "No server of this site is available right now. Please try again in a moment.",
        504 => "The server handling this request took too long to answer. Please try again.",
        _ => "The server handling this request did not answer properly. Please try again.",
    }
}

/// Ends our side of a client connection that may still carry bytes nobody will read, and
/// reads them for a moment: closing with unread bytes would reset the connection and could
/// lose the answer just sent (what HAProxy and nginx call a lingering close).
pub async fn linger(client: &mut TcpStream) {
    const LINGER: Duration = Duration::from_secs(2);
    const MAX_DISCARD: usize = 1 << 20;
    if client.shutdown().await.is_err() {
        return;
    }
    let deadline = tokio::time::Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    let mut discarded = 0;
    while discarded < MAX_DISCARD {
        match tokio::time::timeout_at(deadline, client.read(&mut sink)).await {
            Ok(Ok(n @ 1..)) => discarded += n,
            _ => return,
        }
    }
}

/// The reason phrase of a status the data plane answers itself.
pub fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}
