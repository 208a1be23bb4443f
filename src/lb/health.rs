//! Health checks: every interval each member not draining is checked (an HTTP `GET` that must
//! answer the expected status, or a TCP connect); `rise` passes in a row bring it into
//! rotation, `fall` failures in a row take it out.

use std::net::SocketAddr;
use std::sync::Arc;

use super::member::{Member, MemberState, until_killed};
use super::pool::Pool;
use super::spec::Check;
use crate::pools::probe;

/// Checks `member` of `pool` until it is draining.
pub async fn watch(pool: Arc<Pool>, member: Arc<Member>) {
    let (mut passes, mut failures) = (0u32, 0u32);
    loop {
        let health = pool.settings().health.clone();
        if member.state() == MemberState::Draining {
            return;
        }
        let ok = matches!(
            tokio::time::timeout(health.timeout, check(member.addr, &health.check)).await,
            Ok(true)
        );
        if ok {
            passes = passes.saturating_add(1);
            failures = 0;
        } else {
            failures = failures.saturating_add(1);
            passes = 0;
        }
        let state = member.state();
        let to = match state {
            MemberState::Joining | MemberState::Unhealthy if passes >= health.rise.max(1) => {
                Some(MemberState::Healthy)
            }
            MemberState::Healthy if failures >= health.fall.max(1) => Some(MemberState::Unhealthy),
            _ => None,
        };
        if let Some(to) = to
            && let Some(from) = member.set_state(to)
        {
            pool.moved(&member, from, to);
        }
        // A joining member is checked at once the first time; then every interval, until the
        // member's drain ends (a long interval must not keep the task and member alive).
        tokio::select! {
            _ = tokio::time::sleep(health.interval) => {}
            _ = until_killed(member.killed()) => return,
        }
    }
}

/// One check.
pub async fn check(addr: SocketAddr, check: &Check) -> bool {
    match check {
        Check::Tcp => probe::tcp_accepts(addr).await,
        Check::Http {
            path,
            expect_status,
        } => probe::http_status(addr, path).await == Some(*expect_status),
    }
}
