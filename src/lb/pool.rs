//! A pool at run time: its settings and members, changed in place so that open connections
//! never notice, and the drain that takes a member out.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::member::{Member, MemberState};
use super::pick::Picker;
use super::spec::{Algorithm, HealthSpec, MemberSpec, PoolSpec};

/// What may change without rebinding the listener.
#[derive(Debug, Clone)]
pub struct Settings {
    pub algorithm: Algorithm,
    pub health: HealthSpec,
    pub drain_timeout: Duration,
    pub sticky_cookie: Option<String>,
    pub proxy_v2: bool,
}

impl Settings {
    fn of(spec: &PoolSpec) -> Self {
        Self {
            algorithm: spec.algorithm,
            health: spec.health.clone(),
            drain_timeout: spec.drain_timeout,
            sticky_cookie: spec.sticky_cookie.clone(),
            proxy_v2: spec.proxy_v2,
        }
    }
}

/// A member state change, for the log and the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub pool: String,
    pub member: String,
    pub from: MemberState,
    pub to: MemberState,
}

/// A running pool.
#[derive(Debug)]
pub struct Pool {
    pub id: String,
    settings: RwLock<Arc<Settings>>,
    members: RwLock<Arc<Vec<Arc<Member>>>>,
    picker: Picker,
    transitions: tokio::sync::mpsc::UnboundedSender<Transition>,
    /// Connection counters.
    pub stats: super::stats::PoolStats,
    /// Set when the pool stops serving: kept-alive client connections close once idle.
    closing: tokio::sync::watch::Sender<bool>,
    /// Data-plane threads serving it.
    threads: usize,
}

impl Pool {
    /// A pool with no members yet (see [`Pool::apply`]).
    pub fn new(
        spec: &PoolSpec,
        transitions: tokio::sync::mpsc::UnboundedSender<Transition>,
        threads: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            id: spec.id.clone(),
            settings: RwLock::new(Arc::new(Settings::of(spec))),
            members: RwLock::new(Arc::new(Vec::new())),
            picker: Picker::default(),
            transitions,
            stats: Default::default(),
            closing: tokio::sync::watch::channel(false).0,
            threads,
        })
    }

    /// The settings now (shared: reading them per request costs no copy).
    pub fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The members now (joining, in rotation, out of it or draining).
    pub fn members(&self) -> Arc<Vec<Arc<Member>>> {
        self.members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A member for new work, other than `skip`.
    pub fn pick(&self, skip: Option<&Arc<Member>>) -> Option<Arc<Member>> {
        let algorithm = self
            .settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .algorithm;
        self.picker.pick(algorithm, &self.members(), skip)
    }

    /// A member by id, if it may take new work (sticky sessions).
    pub fn member_in_rotation(&self, id: &str) -> Option<Arc<Member>> {
        self.members()
            .iter()
            .find(|m| m.id == id && m.in_rotation())
            .cloned()
    }

    /// Records a state change of a member.
    pub fn moved(&self, member: &Member, from: MemberState, to: MemberState) {
        tracing::info!(pool = %self.id, member = %member.id, from = from.as_str(), to = to.as_str(), "pool member state changed");
        let _ = self.transitions.send(Transition {
            pool: self.id.clone(),
            member: member.id.clone(),
            from,
            to,
        });
    }

    /// Takes the pool to `spec`: new settings, new members (joining, checked by the health
    /// task), changed weights; members no longer listed are drained. Returns the new members.
    pub fn apply(self: &Arc<Self>, spec: &PoolSpec) -> Vec<Arc<Member>> {
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Settings::of(spec));
        let current = self.members();
        let mut next: Vec<Arc<Member>> = Vec::with_capacity(spec.members.len());
        let mut added = Vec::new();
        for want in &spec.members {
            match current
                .iter()
                .find(|m| same_member(m, want) && m.state() != MemberState::Draining)
            {
                Some(m) => {
                    m.set_weight(want.weight);
                    next.push(m.clone());
                }
                None => {
                    let m = Member::new(want.id.clone(), want.addr, want.weight, self.threads);
                    added.push(m.clone());
                    next.push(m);
                }
            }
        }
        let leaving: Vec<Arc<Member>> = current
            .iter()
            .filter(|m| !next.iter().any(|n| Arc::ptr_eq(n, m)))
            .cloned()
            .collect();
        // Leaving members stay listed (draining) until their work is done.
        next.extend(leaving.iter().cloned());
        *self.members.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        for m in leaving {
            // Members already draining have their drain under way.
            if m.state() != MemberState::Draining {
                self.drain(m);
            }
        }
        added
    }

    /// Resolves when the pool stops serving.
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Drains every member (the pool is going away); client connections close once idle.
    pub fn drain_all(self: &Arc<Self>) {
        self.closing.send_replace(true);
        for m in self.members().iter() {
            self.drain(m.clone());
        }
    }

    /// Takes a member out of rotation, lets its open work finish until the drain timeout,
    /// ends what is left, and then forgets it.
    fn drain(self: &Arc<Self>, member: Arc<Member>) {
        // Once per member: a member already draining has its drain under way.
        let Some(from) = member.set_state(MemberState::Draining) else {
            return;
        };
        self.moved(&member, from, MemberState::Draining);
        let pool = self.clone();
        let timeout = self.settings().drain_timeout;
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            while member.active() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if member.active() > 0 {
                tracing::info!(pool = %pool.id, member = %member.id, open = member.active(), "drain timed out; closing what is left");
            }
            member.kill();
            let mut members = pool.members.write().unwrap_or_else(|p| p.into_inner());
            let kept: Vec<Arc<Member>> = members
                .iter()
                .filter(|m| !Arc::ptr_eq(m, &member))
                .cloned()
                .collect();
            *members = Arc::new(kept);
            drop(members);
            pool.moved(&member, MemberState::Draining, MemberState::Gone);
        });
    }
}

/// Whether a running member is the one a spec names (same id and address).
fn same_member(m: &Member, spec: &MemberSpec) -> bool {
    m.id == spec.id && m.addr == spec.addr
}
