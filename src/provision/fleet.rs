//! Every registered host's libvirt connection, opened when first needed and kept, and the one
//! way the rest of carve reaches a VM's host: [`Host`], its row with its libvirt and its
//! storage pool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::disks::{Claims, Digests, HostStore};
use crate::db::Db;
use crate::db::hosts::HostRow;
use crate::domain::ids::HostId;
use crate::hypervisor::libvirt::Libvirt;
use crate::hypervisor::{Hv, HypervisorError};

/// How long opening a connection to a host may take (an ssh URI to a dead host hangs).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// A host as the worker, the reconciler and the faces use it.
#[derive(Clone)]
pub struct Host {
    pub row: HostRow,
    pub hv: Hv,
    pub store: HostStore,
}

/// How long a failed connection is remembered: calls for that host fail at once meanwhile,
/// instead of each waiting for a host that did not answer a moment ago.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(15);

/// Failed passes in a row before the reconciler calls a host unreachable (one missed answer,
/// e.g. libvirtd restarting, is not enough).
pub const FAILURES_TO_UNREACHABLE: u32 = 2;

/// The open connections, by host.
pub struct Fleet {
    db: Db,
    /// This process, as recorded in base copy claims.
    owner: String,
    conns: Mutex<HashMap<HostId, (String, Hv)>>,
    /// Per host: failures in a row, when the last was, and what it said.
    failures: Mutex<HashMap<HostId, (u32, Instant, String)>>,
    /// Digests of local base files, for uploads to every host.
    pub digests: Digests,
    upload_locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Fleet {
    /// A fleet that already holds the local host's connection.
    pub fn new(local: &HostId, uri: &str, hv: Hv, db: Db, owner: String) -> Self {
        let mut conns = HashMap::new();
        conns.insert(local.clone(), (uri.to_string(), hv));
        Self {
            db,
            owner,
            conns: Mutex::new(conns),
            failures: Mutex::default(),
            digests: Digests::default(),
            upload_locks: Arc::default(),
        }
    }

    /// The host's connection: the kept one, or a new one (on a blocking thread, at most
    /// [`CONNECT_TIMEOUT`]); fails at once while a failure is fresh.
    pub async fn hv(&self, host: &HostRow) -> Result<Hv, HypervisorError> {
        if let Some((_, at, why)) = self.failed().get(&host.id)
            && at.elapsed() < FAILURE_MEMORY
        {
            return Err(HypervisorError::Libvirt(format!(
                "host {} did not answer a moment ago: {why}",
                host.name
            )));
        }
        self.connect(host).await
    }

    /// The host's connection, tried now whatever happened before (the reconciler's probe).
    pub async fn connect(&self, host: &HostRow) -> Result<Hv, HypervisorError> {
        if let Some((uri, hv)) = self.lock().get(&host.id)
            && *uri == host.libvirt_uri
        {
            return Ok(hv.clone());
        }
        let hv = connect(&host.libvirt_uri).await?;
        self.lock()
            .insert(host.id.clone(), (host.libvirt_uri.clone(), hv.clone()));
        Ok(hv)
    }

    /// Records a failed probe of a host; returns how many in a row it has failed.
    pub fn failed_once(&self, id: &HostId, why: &str) -> u32 {
        self.forget(id);
        let mut failed = self.failed();
        let entry = failed
            .entry(id.clone())
            .or_insert((0, Instant::now(), String::new()));
        *entry = (entry.0 + 1, Instant::now(), why.to_string());
        entry.0
    }

    /// Records that a host answered.
    pub fn answered(&self, id: &HostId) {
        self.failed().remove(id);
    }

    fn failed(&self) -> std::sync::MutexGuard<'_, HashMap<HostId, (u32, Instant, String)>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The host with its connection and storage pool.
    pub async fn host(&self, row: HostRow) -> Result<Host, HypervisorError> {
        let hv = self.hv(&row).await?;
        let store = HostStore {
            hv: hv.clone(),
            pool: row.storage_pool.clone(),
            upload_locks: self.upload_locks.clone(),
            claims: Claims {
                db: self.db.clone(),
                host: row.id.clone(),
                owner: self.owner.clone(),
                pool_dir: row.storage_path.clone(),
            },
        };
        Ok(Host { row, hv, store })
    }

    /// Drops the kept connection of a host (removed, or its connection broke).
    pub fn forget(&self, id: &HostId) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<HostId, (String, Hv)>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Opens a connection to `uri` on a blocking thread, giving up after [`CONNECT_TIMEOUT`].
pub async fn connect(uri: &str) -> Result<Hv, HypervisorError> {
    let owned = uri.to_string();
    let opening = tokio::task::spawn_blocking(move || Libvirt::connect(&owned));
    match tokio::time::timeout(CONNECT_TIMEOUT, opening).await {
        Ok(Ok(Ok(libvirt))) => Ok(Hv::new(Arc::new(libvirt))),
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(e)) => Err(HypervisorError::Interrupted(e.to_string())),
        Err(_) => Err(HypervisorError::Libvirt(format!(
            "no answer from {uri} within {} s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}
