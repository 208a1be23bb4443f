//! The load balancer's data plane: for each pool a listener (HTTP or TCP) in front of its
//! members, health checks that move members in and out of rotation, and drains that let a
//! leaving member's open work finish. [`Balancer::apply`] takes the running pools to a new
//! set of specs in place: open connections never notice a member or pool change.

pub mod accept;
pub mod body;
mod closing;
pub mod control;
pub mod h1;
pub mod health;
pub mod http;
pub mod member;
pub mod pick;
pub mod pool;
pub mod shards;
pub mod spec;
pub mod stats;
pub mod tcp;
mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use pool::{Pool, Transition};
use spec::{PoolSpec, Protocol};

/// A pool being served.
struct Running {
    pool: Arc<Pool>,
    listen: SocketAddr,
    protocol: Protocol,
    stop: watch::Sender<bool>,
}

/// A pool that could not be served, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub pool: String,
    pub reason: String,
}

/// All pools this process serves.
pub struct Balancer {
    running: Mutex<HashMap<String, Running>>,
    transitions: mpsc::UnboundedSender<Transition>,
    /// The threads that carry the traffic (health checks and drains run on the caller's
    /// runtime).
    shards: shards::Shards,
}

impl Balancer {
    /// A balancer serving nothing yet, with a data-plane thread per core; member state
    /// changes arrive on the receiver.
    pub fn new() -> (Arc<Self>, mpsc::UnboundedReceiver<Transition>) {
        Self::with_threads(0)
    }

    /// The same with `threads` data-plane threads (0: one per core).
    pub fn with_threads(threads: usize) -> (Arc<Self>, mpsc::UnboundedReceiver<Transition>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shards = shards::Shards::start(threads)
            .unwrap_or_else(|e| panic!("cannot start the load balancer's threads: {e}"));
        (
            Arc::new(Self {
                running: Mutex::new(HashMap::new()),
                transitions: tx,
                shards,
            }),
            rx,
        )
    }

    /// Serves exactly `specs`: new pools are bound, changed ones updated in place (a new
    /// listen address or protocol binds anew and stops accepting on the old one), pools
    /// no longer listed stop accepting and drain. Returns the pools that could not be bound.
    pub async fn apply(&self, specs: &[PoolSpec]) -> Vec<Failed> {
        let mut failed = Vec::new();
        let mut to_bind = Vec::new();
        {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            let wanted: Vec<&str> = specs.iter().map(|s| s.id.as_str()).collect();
            let gone: Vec<String> = running
                .keys()
                .filter(|id| !wanted.contains(&id.as_str()))
                .cloned()
                .collect();
            for id in gone {
                if let Some(r) = running.remove(&id) {
                    stop(r);
                }
            }
            for spec in specs {
                match running.get(&spec.id) {
                    Some(r) if r.listen == spec.listen && r.protocol == spec.protocol => {
                        let pool = r.pool.clone();
                        for m in pool.apply(spec) {
                            tokio::spawn(health::watch(pool.clone(), m));
                        }
                    }
                    _ => to_bind.push(spec.clone()),
                }
            }
        }
        for spec in to_bind {
            let listener = match accept::bind(spec.listen) {
                Ok(l) => l,
                Err(e) => {
                    failed.push(Failed {
                        pool: spec.id.clone(),
                        reason: format!("cannot listen on {}: {e}", spec.listen),
                    });
                    continue;
                }
            };
            let pool = Pool::new(&spec, self.transitions.clone(), self.shards.count());
            for m in pool.apply(&spec) {
                tokio::spawn(health::watch(pool.clone(), m));
            }
            let (stop_tx, stop_rx) = watch::channel(false);
            // Every data-plane thread accepts on the same listening socket and hands a new
            // client to the thread holding the fewest of the pool's connections.
            let intake = accept::Intake::new(spec.max_connections, self.shards.handles());
            let protocol = spec.protocol;
            self.shards.on_each(|_| {
                let (listener, pool, intake, stop) = (
                    listener.try_clone(),
                    pool.clone(),
                    intake.clone(),
                    stop_rx.clone(),
                );
                async move {
                    let Ok(listener) = listener.and_then(TcpListener::from_std) else {
                        tracing::error!(pool = %pool.id, "a data-plane thread cannot take the pool's listener");
                        return;
                    };
                    match protocol {
                        Protocol::Http => http::serve(listener, pool, intake, stop).await,
                        Protocol::Tcp => tcp::serve(listener, pool, intake, stop).await,
                    }
                }
            });
            let replaced = self
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    spec.id.clone(),
                    Running {
                        pool,
                        listen: spec.listen,
                        protocol: spec.protocol,
                        stop: stop_tx,
                    },
                );
            if let Some(old) = replaced {
                stop(old);
            }
        }
        failed
    }

    /// Every running pool, by id.
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mut pools: Vec<Arc<Pool>> = running.values().map(|r| r.pool.clone()).collect();
        pools.sort_by(|a, b| a.id.cmp(&b.id));
        pools
    }

    /// The running pool with this id (its members and their states).
    pub fn pool(&self, id: &str) -> Option<Arc<Pool>> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .map(|r| r.pool.clone())
    }
}

/// Stops accepting for a pool and drains its members (open work finishes).
fn stop(r: Running) {
    r.stop.send_replace(true);
    r.pool.drain_all();
}
