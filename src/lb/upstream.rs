//! Connections to a pool's members for the HTTP balancer: a kept idle one when it is still
//! sound, else a new one, else another member's.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::member::{Active, Member};
use super::pool::Pool;

/// How long a connection to a member may take before another member is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A member's connection taken for one request, counted as its open work.
pub(super) struct Picked {
    pub stream: TcpStream,
    pub active: Active,
}

/// A connection to `first` (a kept one if there is one), or else to another member in
/// rotation.
pub(super) async fn open(pool: &Pool, first: Arc<Member>) -> Option<Picked> {
    if let Some(up) = kept(&first) {
        return Some(up);
    }
    if let Some(up) = connect(&first).await {
        return Some(up);
    }
    // Nothing was sent: another member may take the request.
    first.stats.failed();
    let second = pool.pick(Some(&first))?;
    if let Some(up) = kept(&second) {
        return Some(up);
    }
    let up = connect(&second).await;
    if up.is_none() {
        second.stats.failed();
    }
    up
}

/// A kept connection to `member` that the member has not closed and that holds no stray
/// bytes (which would be read as the next answer).
fn kept(member: &Arc<Member>) -> Option<Picked> {
    while let Some(stream) = member.take_idle() {
        let open = matches!(stream.try_read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        if open {
            return Some(Picked {
                stream,
                active: member.begin(),
            });
        }
    }
    None
}

/// A new connection to `member`.
pub(super) async fn connect(member: &Arc<Member>) -> Option<Picked> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(member.addr))
        .await
        .ok()?
        .ok()?;
    let _ = stream.set_nodelay(true);
    Some(Picked {
        stream,
        active: member.begin(),
    })
}
