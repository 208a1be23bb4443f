//! The TCP data plane: each accepted connection goes to one member (optionally announced with
//! a PROXY protocol v2 header), bytes flow both ways, and each side's close is passed on as a
//! half-close. A drain that times out ends what is left.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::member::until_killed;
use super::pool::Pool;

/// How long a connection to a member may take before another member is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Accepts connections on `listener` for `pool` until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    pool: Arc<Pool>,
    intake: Arc<super::accept::Intake>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    super::accept::accept_loop(listener, pool, intake, stop, carry).await;
}

/// Connects a client to a member (a second member if the first cannot be reached) and
/// copies both ways.
async fn carry(mut client: TcpStream, peer: SocketAddr, pool: Arc<Pool>) {
    let _ = client.set_nodelay(true);
    let Some((mut upstream, active)) = connect(&pool).await else {
        // No member can take it: close at once rather than hold the client.
        pool.stats.unavailable.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if pool.settings().proxy_v2
        && let Ok(local) = client.local_addr()
        && upstream
            .write_all(&proxy_v2_header(peer, local))
            .await
            .is_err()
    {
        return;
    }
    let killed = active.member().killed();
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        _ = until_killed(killed) => {}
    }
    drop(active);
}

/// A connection to a member in rotation, retried once on another when it cannot be made.
async fn connect(pool: &Pool) -> Option<(TcpStream, super::member::Active)> {
    let first = pool.pick(None)?;
    let active = first.begin();
    first.stats.sent();
    if let Ok(Ok(s)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(first.addr)).await {
        let _ = s.set_nodelay(true);
        return Some((s, active));
    }
    first.stats.failed();
    drop(active);
    let second = pool.pick(Some(&first))?;
    let active = second.begin();
    second.stats.sent();
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(second.addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Some((s, active))
        }
        _ => {
            second.stats.failed();
            None
        }
    }
}

/// A PROXY protocol v2 header saying the connection came from `client` to `server`.
pub fn proxy_v2_header(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21); // version 2, PROXY command
    match (client, server) {
        (SocketAddr::V4(c), SocketAddr::V4(s)) => {
            h.push(0x11); // TCP over IPv4
            h.extend_from_slice(&12u16.to_be_bytes());
            h.extend_from_slice(&c.ip().octets());
            h.extend_from_slice(&s.ip().octets());
            h.extend_from_slice(&c.port().to_be_bytes());
            h.extend_from_slice(&s.port().to_be_bytes());
        }
        (c, s) => {
            let v6 = |a: SocketAddr| match a {
                SocketAddr::V4(v) => v.ip().to_ipv6_mapped(),
                SocketAddr::V6(v) => *v.ip(),
            };
            h.push(0x21); // TCP over IPv6
            h.extend_from_slice(&36u16.to_be_bytes());
            h.extend_from_slice(&v6(c).octets());
            h.extend_from_slice(&v6(s).octets());
            h.extend_from_slice(&c.port().to_be_bytes());
            h.extend_from_slice(&s.port().to_be_bytes());
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_v2_header_names_both_ends() {
        let h = proxy_v2_header(
            "10.1.2.3:40000".parse().unwrap(),
            "127.0.0.1:8443".parse().unwrap(),
        );
        assert_eq!(&h[..12], b"\r\n\r\n\0\r\nQUIT\n");
        assert_eq!(h[12], 0x21);
        assert_eq!(h[13], 0x11);
        assert_eq!(u16::from_be_bytes([h[14], h[15]]), 12);
        assert_eq!(&h[16..20], &[10, 1, 2, 3]);
        assert_eq!(&h[20..24], &[127, 0, 0, 1]);
        assert_eq!(u16::from_be_bytes([h[24], h[25]]), 40000);
        assert_eq!(u16::from_be_bytes([h[26], h[27]]), 8443);
        assert_eq!(h.len(), 28);
    }
}
