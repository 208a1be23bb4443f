//! A member at run time: its health state, open work, and the signal that ends what is left
//! of its work when a drain times out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicUsize, Ordering};

use tokio::net::TcpStream;
use tokio::sync::watch;

/// Where a member is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Added; no traffic until its health check has passed `rise` times.
    Joining,
    /// In rotation.
    Healthy,
    /// Out of rotation until its check passes `rise` times again.
    Unhealthy,
    /// Leaving: no new work; open work may finish until the drain timeout.
    Draining,
    /// Drained and forgotten (seen only in the last transition of a member).
    Gone,
}

impl MemberState {
    /// The name clients see.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Joining => "joining",
            MemberState::Healthy => "healthy",
            MemberState::Unhealthy => "unhealthy",
            MemberState::Draining => "draining",
            MemberState::Gone => "gone",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => MemberState::Joining,
            1 => MemberState::Healthy,
            2 => MemberState::Unhealthy,
            3 => MemberState::Draining,
            _ => MemberState::Gone,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            MemberState::Joining => 0,
            MemberState::Healthy => 1,
            MemberState::Unhealthy => 2,
            MemberState::Draining => 3,
            MemberState::Gone => 4,
        }
    }
}

/// One member of a running pool.
#[derive(Debug)]
pub struct Member {
    pub id: String,
    pub addr: SocketAddr,
    weight: AtomicU32,
    state: AtomicU8,
    active: AtomicUsize,
    /// Set to true when whatever is left of this member's work must end now.
    kill: watch::Sender<bool>,
    /// Idle keep-alive connections to the member (HTTP pools), one list per data-plane
    /// thread: a connection is only used on the thread that made it.
    idle: Box<[std::sync::Mutex<Vec<TcpStream>>]>,
    /// What it did.
    pub stats: super::stats::MemberStats,
}

/// Most idle connections kept per member and data-plane thread.
const MAX_IDLE: usize = 256;

impl Member {
    /// A new member, joining, served by `threads` data-plane threads.
    pub fn new(id: String, addr: SocketAddr, weight: u32, threads: usize) -> Arc<Self> {
        Arc::new(Self {
            id,
            addr,
            weight: AtomicU32::new(weight.max(1)),
            state: AtomicU8::new(MemberState::Joining.to_u8()),
            active: AtomicUsize::new(0),
            kill: watch::channel(false).0,
            idle: (0..threads.max(1)).map(|_| Default::default()).collect(),
            stats: Default::default(),
        })
    }

    /// This thread's list of idle connections.
    fn idle_here(&self) -> std::sync::MutexGuard<'_, Vec<TcpStream>> {
        self.idle[super::shards::current() % self.idle.len()]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used idle connection, if one is kept.
    pub fn take_idle(&self) -> Option<TcpStream> {
        self.idle_here().pop()
    }

    /// Keeps a connection whose last answer was read in full, unless the member is leaving.
    pub fn give_back(&self, c: TcpStream) {
        if self.state() == MemberState::Draining {
            return;
        }
        let mut idle = self.idle_here();
        if idle.len() < MAX_IDLE {
            idle.push(c);
        }
    }

    pub fn state(&self) -> MemberState {
        MemberState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Moves to `to` unless the member is draining (a drain is never undone); returns the
    /// state it left, if it changed.
    pub fn set_state(&self, to: MemberState) -> Option<MemberState> {
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            let from = MemberState::from_u8(current);
            if from == to || (from == MemberState::Draining && to != MemberState::Draining) {
                return None;
            }
            match self.state.compare_exchange(
                current,
                to.to_u8(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(from),
                Err(now) => current = now,
            }
        }
    }

    /// Whether new work may go to this member.
    pub fn in_rotation(&self) -> bool {
        self.state() == MemberState::Healthy
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    pub fn set_weight(&self, w: u32) {
        self.weight.store(w.max(1), Ordering::Relaxed);
    }

    /// Open requests or connections.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Counts one piece of work until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Ordering::AcqRel);
        Active(self.clone())
    }

    /// Ends whatever work is left (the drain timed out) and closes idle connections.
    pub fn kill(&self) {
        self.kill.send_replace(true);
        for idle in &self.idle {
            idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }

    /// Resolves when the member's remaining work must end.
    pub fn killed(&self) -> watch::Receiver<bool> {
        self.kill.subscribe()
    }
}

/// One open request or connection on a member.
#[derive(Debug)]
pub struct Active(Arc<Member>);

impl Active {
    pub fn member(&self) -> &Arc<Member> {
        &self.0
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Waits until `rx` says the member's work must end.
pub async fn until_killed(mut rx: watch::Receiver<bool>) {
    until_set(&mut rx).await;
}

/// Waits until `rx` holds true (forever if its sender is gone first).
pub async fn until_set(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_is_never_undone_and_work_is_counted() {
        let m = Member::new("m".into(), "127.0.0.1:1".parse().unwrap(), 1, 1);
        assert_eq!(m.state(), MemberState::Joining);
        assert!(!m.in_rotation());
        assert_eq!(
            m.set_state(MemberState::Healthy),
            Some(MemberState::Joining)
        );
        assert!(m.in_rotation());
        let a = m.begin();
        let b = m.begin();
        assert_eq!(m.active(), 2);
        drop(a);
        assert_eq!(m.active(), 1);
        assert_eq!(
            m.set_state(MemberState::Draining),
            Some(MemberState::Healthy)
        );
        assert_eq!(
            m.set_state(MemberState::Healthy),
            None,
            "a health pass must not undo a drain"
        );
        assert!(!m.in_rotation());
        drop(b);
        assert_eq!(m.active(), 0);
    }
}
