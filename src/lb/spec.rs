//! What the control plane hands the data plane: pools with their listen address, protocol,
//! algorithm, health check, drain timeout and members.

use std::net::SocketAddr;
use std::time::Duration;

/// What a pool balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 requests over keep-alive connections to members.
    Http,
    /// TCP connections, each to one member.
    Tcp,
}

/// How a member is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// In turn, in proportion to weight.
    RoundRobin,
    /// The member with the fewest open requests or connections per weight.
    LeastConnections,
}

/// How a member's health is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// `GET path` must answer `expect_status`.
    Http { path: String, expect_status: u16 },
    /// A TCP connection must be accepted.
    Tcp,
}

/// A pool's health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSpec {
    pub check: Check,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive passes that bring a member into rotation.
    pub rise: u32,
    /// Consecutive failures that take it out.
    pub fall: u32,
}

/// A member: a VM's guest port as the host reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSpec {
    pub id: String,
    pub addr: SocketAddr,
    pub weight: u32,
}

/// A pool as the data plane serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    pub id: String,
    pub protocol: Protocol,
    pub listen: SocketAddr,
    pub algorithm: Algorithm,
    pub health: HealthSpec,
    /// How long a leaving member's open requests or connections may go on.
    pub drain_timeout: Duration,
    /// HTTP: a cookie that keeps a client on one member.
    pub sticky_cookie: Option<String>,
    /// TCP: send a PROXY protocol v2 header to members.
    pub proxy_v2: bool,
    /// Client connections held at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    pub members: Vec<MemberSpec>,
}
