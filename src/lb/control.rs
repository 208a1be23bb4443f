//! The balancer's control loop: serves the pools the database holds, applies a change within
//! a fraction of a second whichever carve process made it (it watches the change feed), and
//! writes back what the data plane sees: member states, one audit entry per transition, and
//! the removal of a detached member once drained.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::Balancer;
use super::member::MemberState;
use super::pool::Transition;
use super::spec::{Algorithm, Check, HealthSpec, MemberSpec, PoolSpec, Protocol};
use crate::config::Config;
use crate::db::pools::{MemberRow, PoolRow};
use crate::db::{self, Db};
use crate::domain::ids::{PoolId, VmId};
use crate::domain::pool::{CheckKind, MemberStatus, PoolAlgorithm, PoolProtocol};
use crate::domain::vm_state::VmState;
use crate::tenancy::audit::{self, NewEntry};

/// How often the change feed is looked at.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);
/// How often everything is compared even without a change (a missed event heals).
const FULL_SYNC: Duration = Duration::from_secs(5);

/// The balancer of this process and what feeds it.
pub struct Control {
    db: Db,
    balancer: Arc<Balancer>,
    transitions: mpsc::UnboundedReceiver<Transition>,
    forward_address: IpAddr,
    max_connections: usize,
    /// The last reason each pool could not be served, logged once.
    failures: HashMap<String, String>,
    /// Audit entries written per member in the current window (a flapping member must not
    /// flood the shared audit log).
    audited: std::sync::Mutex<HashMap<(PoolId, VmId), (Instant, u32)>>,
}

/// How often the load of pools whose scale group tracks a target is written.
const LOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Audit entries one member may write per [`AUDIT_WINDOW`]; its states are still stored.
const AUDIT_PER_WINDOW: u32 = 30;
const AUDIT_WINDOW: Duration = Duration::from_secs(600);

impl Control {
    /// A control loop for the pools in `db`, serving nothing until [`Control::run`].
    pub fn new(db: Db, config: &Config) -> Self {
        let (balancer, transitions) = Balancer::with_threads(config.lb.threads);
        Self {
            db,
            balancer,
            transitions,
            forward_address: config.network.forward_address,
            max_connections: config.lb.max_connections_per_pool,
            failures: HashMap::new(),
            audited: Default::default(),
        }
    }

    /// The data plane (its pools, members and counters).
    pub fn balancer(&self) -> Arc<Balancer> {
        self.balancer.clone()
    }

    /// Serves the stored pools and follows every change until the task is dropped.
    pub async fn run(mut self) {
        let mut seen = db::events::last_id(&self.db).await.unwrap_or(0);
        self.sync().await;
        let mut synced_at = Instant::now();
        let mut changes = db::events::ChangeWait::new(&self.db).await;
        let mut measure = tokio::time::interval(LOAD_INTERVAL);
        measure.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sent_before: HashMap<String, (u64, Instant)> = HashMap::new();
        loop {
            tokio::select! {
                Some(t) = self.transitions.recv() => self.record(t).await,
                _ = measure.tick() => self.write_load(&mut sent_before).await,
                _ = changes.wait(WATCH_INTERVAL) => {
                    let newest = match db::pools::changed_since(&self.db, seen).await {
                        Ok(n) => n,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read the change feed for pools");
                            continue;
                        }
                    };
                    if newest > seen || synced_at.elapsed() >= FULL_SYNC {
                        seen = seen.max(newest);
                        self.sync().await;
                        synced_at = Instant::now();
                    }
                }
            }
        }
    }

    /// Writes what the data plane measures for each pool whose scale group follows a target:
    /// open requests or connections, requests (or connections) per second since the last
    /// write, and members in rotation.
    async fn write_load(&self, sent_before: &mut HashMap<String, (u64, Instant)>) {
        let tracked = match db::pool_load::tracked_pools(&self.db).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read which pools to measure");
                return;
            }
        };
        sent_before.retain(|id, _| tracked.iter().any(|p| p.as_str() == id));
        for id in tracked {
            let Some(pool) = self.balancer.pool(id.as_str()) else {
                continue;
            };
            let members = pool.members();
            let open: usize = members.iter().map(|m| m.active()).sum();
            let sent: u64 = members
                .iter()
                .map(|m| m.stats.sent.load(std::sync::atomic::Ordering::Relaxed))
                .sum();
            let healthy = members.iter().filter(|m| m.in_rotation()).count();
            let now = Instant::now();
            // No rate without an earlier sample, nor when the count went down (a member left):
            // a false zero would make the group scale in.
            let rate = match sent_before.insert(id.to_string(), (sent, now)) {
                Some((before, at)) if sent >= before => {
                    (sent - before) as f64 / now.duration_since(at).as_secs_f64().max(0.001)
                }
                _ => continue,
            };
            if let Err(e) =
                db::pool_load::put(&self.db, &id, open as i64, rate, healthy as i64).await
            {
                tracing::warn!(pool = %id, error = %e, "cannot record a pool's load");
            }
        }
    }

    /// Takes the data plane to the stored pools, then the stored member states to the data
    /// plane's.
    async fn sync(&mut self) {
        // Members first: a member's pool existed when the member was added, so reading pools
        // after them finds every pool a member names (unless it is gone since).
        let read = async {
            let members = db::pools::all_members(&self.db).await?;
            let pools = db::pools::all(&self.db).await?;
            Ok::<_, sqlx::Error>((pools, members))
        };
        let (pools, members) = match read.await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read pools; serving the last ones read");
                return;
            }
        };
        let mut by_pool: HashMap<&PoolId, Vec<&MemberRow>> = HashMap::new();
        for m in &members {
            by_pool.entry(&m.pool_id).or_default().push(m);
        }
        let specs: Vec<PoolSpec> = pools
            .iter()
            .filter_map(|p| self.spec_of(p, by_pool.get(&p.id).map_or(&[][..], |v| v)))
            .collect();
        let failed = self.balancer.apply(&specs).await;
        let mut failures = HashMap::new();
        for f in failed {
            if self.failures.get(&f.pool) != Some(&f.reason) {
                tracing::warn!(pool = %f.pool, reason = %f.reason, "pool cannot be served");
            }
            failures.insert(f.pool, f.reason);
        }
        self.failures = failures;
        // Transitions reported before now are older than what settling reads: record them
        // first, so none lands after (and over) a newer state.
        while let Ok(t) = self.transitions.try_recv() {
            self.record(t).await;
        }
        for m in &members {
            self.settle(m, &specs).await;
        }
    }

    /// The data plane's spec of a stored pool: members whose VM runs, are not leaving and
    /// forward the member's port.
    fn spec_of(&self, p: &PoolRow, members: &[&MemberRow]) -> Option<PoolSpec> {
        let ip: IpAddr = match p.listen_address.parse() {
            Ok(ip) => ip,
            Err(_) => {
                tracing::warn!(pool = %p.id, address = %p.listen_address, "pool has an unreadable listen address");
                return None;
            }
        };
        let secs = |v: i64| Duration::from_secs(v.clamp(0, 86_400) as u64);
        let count = |v: i64| u32::try_from(v.clamp(1, 1000)).unwrap_or(1);
        Some(PoolSpec {
            id: p.id.to_string(),
            protocol: match p.protocol {
                PoolProtocol::Http => Protocol::Http,
                PoolProtocol::Tcp => Protocol::Tcp,
            },
            listen: SocketAddr::new(ip, u16::try_from(p.listen_port).unwrap_or(0)),
            algorithm: match p.algorithm {
                PoolAlgorithm::RoundRobin => Algorithm::RoundRobin,
                PoolAlgorithm::LeastConnections => Algorithm::LeastConnections,
            },
            health: HealthSpec {
                check: match p.check_kind {
                    CheckKind::Http => Check::Http {
                        path: p.check_path.clone().unwrap_or_else(|| "/".into()),
                        expect_status: p
                            .check_expect_status
                            .and_then(|s| u16::try_from(s).ok())
                            .unwrap_or(200),
                    },
                    CheckKind::Tcp => Check::Tcp,
                },
                interval: secs(p.check_interval_s).max(Duration::from_secs(1)),
                timeout: secs(p.check_timeout_s).max(Duration::from_secs(1)),
                rise: count(p.check_rise),
                fall: count(p.check_fall),
            },
            drain_timeout: secs(p.drain_timeout_s),
            sticky_cookie: p.sticky_cookie.clone(),
            proxy_v2: p.proxy_protocol,
            max_connections: self.max_connections,
            members: members
                .iter()
                .filter(|m| m.vm_state == VmState::Running && !m.leaving)
                .filter_map(|m| {
                    Some(MemberSpec {
                        id: m.vm_id.to_string(),
                        addr: SocketAddr::new(
                            m.forward_address
                                .as_deref()
                                .and_then(|a| a.parse().ok())
                                .unwrap_or(self.forward_address),
                            u16::try_from(m.host_port?).ok()?,
                        ),
                        weight: u32::try_from(m.weight.clamp(1, 256)).unwrap_or(1),
                    })
                })
                .collect(),
        })
    }

    /// Brings one stored member to what the data plane shows of it.
    async fn settle(&self, m: &MemberRow, specs: &[PoolSpec]) {
        let pool_id = m.pool_id.to_string();
        let vm_id = m.vm_id.to_string();
        let wanted = specs
            .iter()
            .find(|s| s.id == pool_id)
            .is_some_and(|s| s.members.iter().any(|ms| ms.id == vm_id));
        let running = self.balancer.pool(&pool_id).and_then(|p| {
            let members = p.members();
            // A member being drained and its successor (same VM back) may both be listed.
            members
                .iter()
                .find(|rm| rm.id == vm_id && rm.state() != MemberState::Draining)
                .or_else(|| members.iter().find(|rm| rm.id == vm_id))
                .map(|rm| rm.state())
        });
        let state = match running {
            Some(MemberState::Joining) => MemberStatus::Joining,
            // In rotation or out of it: the transition that said so is on its way, unless
            // the member is only now seen to have joined.
            Some(MemberState::Healthy | MemberState::Unhealthy) => match m.state {
                MemberStatus::Inactive | MemberStatus::Draining => MemberStatus::Joining,
                _ => return,
            },
            Some(MemberState::Draining) => MemberStatus::Draining,
            Some(MemberState::Gone) | None if wanted => return, // not bound yet
            Some(MemberState::Gone) | None if m.leaving => {
                self.remove(&m.pool_id, &m.vm_id).await;
                return;
            }
            Some(MemberState::Gone) | None => MemberStatus::Inactive,
        };
        self.set(&m.pool_id, &m.vm_id, state).await;
    }

    /// Records a transition the data plane reports.
    async fn record(&self, t: Transition) {
        let (Some(pool), Some(vm)) = (PoolId::parse(&t.pool), VmId::parse(&t.member)) else {
            return;
        };
        let state = match t.to {
            MemberState::Joining => MemberStatus::Joining,
            MemberState::Healthy => MemberStatus::Healthy,
            MemberState::Unhealthy => MemberStatus::Unhealthy,
            MemberState::Draining => MemberStatus::Draining,
            MemberState::Gone => {
                let back = self.balancer.pool(&t.pool).is_some_and(|p| {
                    p.members()
                        .iter()
                        .any(|m| m.id == t.member && m.state() != MemberState::Draining)
                });
                if back {
                    // The VM is already in again (say, after a reboot): this was its old self.
                    return;
                }
                let leaving = db::pools::members(&self.db, &pool)
                    .await
                    .ok()
                    .and_then(|ms| ms.into_iter().find(|m| m.vm_id == vm))
                    .is_some_and(|m| m.leaving);
                if leaving {
                    self.remove(&pool, &vm).await;
                    return;
                }
                MemberStatus::Inactive
            }
        };
        self.set(&pool, &vm, state).await;
    }

    /// Stores a member's state; a real change is audited.
    async fn set(&self, pool: &PoolId, vm: &VmId, state: MemberStatus) {
        match db::pools::set_member_state(&self.db, pool, vm, state).await {
            Ok(Some(from)) => {
                self.audit(pool, vm, &format!("pool member {from} -> {state}"))
                    .await
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(pool = %pool, vm = %vm, error = %e, "cannot record a pool member's state")
            }
        }
    }

    /// Removes a detached member once drained.
    async fn remove(&self, pool: &PoolId, vm: &VmId) {
        match db::pools::remove_member(&self.db, pool, vm).await {
            Ok(true) => self.audit(pool, vm, "pool member removed").await,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(pool = %pool, vm = %vm, error = %e, "cannot remove a drained pool member")
            }
        }
    }

    /// Whether a member may write another audit entry in this window.
    fn audit_allowed(&self, pool: &PoolId, vm: &VmId) -> bool {
        let mut map = self.audited.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 10_000 {
            map.retain(|_, (since, _)| since.elapsed() < AUDIT_WINDOW);
        }
        let entry = map
            .entry((pool.clone(), vm.clone()))
            .or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= AUDIT_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
        if entry.1 == AUDIT_PER_WINDOW + 1 {
            tracing::warn!(pool = %pool, vm = %vm, "pool member changes state too often; its further transitions in the next minutes are stored but not audited");
        }
        entry.1 <= AUDIT_PER_WINDOW
    }

    /// One audit entry about a member, filed under the pool's tenant.
    async fn audit(&self, pool: &PoolId, vm: &VmId, action: &str) {
        if !self.audit_allowed(pool, vm) {
            return;
        }
        let tenant = db::pools::get(&self.db, &db::Scope::All, pool)
            .await
            .ok()
            .flatten()
            .map(|p| p.tenant_id.to_string());
        let entry = NewEntry {
            actor_id: None,
            actor: "carve balancer".into(),
            tenant_id: tenant,
            action: action.into(),
            target: Some(format!("{pool}/{vm}")),
            outcome: crate::domain::outcome::Outcome::Succeeded,
            status: None,
            client: None,
        };
        audit::record(&self.db, &entry).await;
    }
}
