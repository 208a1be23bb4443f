//! Provisioning: admission (validate, check capacity and reserve in one transaction),
//! operations carried out by workers, and the reconciler that makes the database and libvirt
//! agree after anything, a crash included.

pub mod catalog;
pub mod crypt;
pub mod custom_images;
pub mod disk_copy;
pub mod disks;
pub mod evacuate;
pub mod fleet;
pub mod host;
pub mod host_registry;
pub mod images;
pub mod owner;
pub mod reconciler;
pub mod stats;
pub mod vms;
pub mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, NetworkConfig};
use crate::db::Db;
use crate::domain::ids::{HostId, OperationId};
use crate::hypervisor::Hv;
use owner::Owner;

pub use crate::domain::vm_state::VmState;

pub use crate::domain::operation::{OpKind, OpState};

/// Settings the provisioner works with, taken from the configuration once.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where VM directories live.
    pub vm_root: PathBuf,
    /// Where built images live.
    pub image_dir: PathBuf,
    pub network: NetworkConfig,
    /// QEMU machine type.
    pub machine: String,
    /// How long an ACPI shutdown may take before a forced power-off.
    pub stop_timeout: Duration,
    /// How long a start may take to be reported running.
    pub start_timeout: Duration,
    /// How long an operation's lease lasts without a heartbeat.
    pub lease: Duration,
    /// Time between reconciler passes.
    pub reconcile_interval: Duration,
    /// The quota of tenants without their own.
    pub default_quota: crate::config::QuotaConfig,
    /// How new VMs are spread over hosts.
    pub placement: crate::config::Placement,
    /// The overcommit ratios and reserve a newly registered host starts with.
    pub default_ratios: crate::domain::capacity::Overcommit,
    /// The configured libvirt URI: the host carve runs on.
    pub libvirt_uri: String,
    /// A private directory for files on their way to a host (seeds).
    pub scratch: PathBuf,
}

impl Settings {
    /// Where a host's forwards listen and the host ports they take: its own, or the
    /// configured ones.
    pub fn forwards_of(
        &self,
        host: &crate::db::hosts::HostRow,
    ) -> (std::net::IpAddr, crate::config::PortRange) {
        let address = host
            .forward_address
            .as_deref()
            .and_then(|a| a.parse().ok())
            .unwrap_or(self.network.forward_address);
        let range = match (host.forward_port_first, host.forward_port_last) {
            (Some(first), Some(last)) => crate::config::PortRange {
                first: first as u16,
                last: last as u16,
            },
            _ => self.network.forward_ports,
        };
        (address, range)
    }

    /// The address to check a port is free on before reserving it: only on the machine carve
    /// runs on can a listening program be seen; elsewhere the range is carve's.
    pub fn port_probe(
        &self,
        host: &crate::db::hosts::HostRow,
        address: std::net::IpAddr,
    ) -> Option<std::net::IpAddr> {
        (host.libvirt_uri == self.libvirt_uri).then_some(address)
    }

    /// The provisioning settings of a configuration.
    pub fn from_config(c: &Config) -> Self {
        Self {
            vm_root: std::path::absolute(c.vm_dir()).unwrap_or_else(|_| c.vm_dir()),
            image_dir: std::path::absolute(c.image_dir()).unwrap_or_else(|_| c.image_dir()),
            network: c.network.clone(),
            machine: c.libvirt.machine.clone(),
            stop_timeout: Duration::from_secs(c.libvirt.stop_timeout_secs),
            start_timeout: Duration::from_secs(c.libvirt.start_timeout_secs),
            lease: Duration::from_secs(c.reconciler.operation_lease_secs),
            reconcile_interval: Duration::from_secs(c.reconciler.interval_secs),
            default_quota: c.quota.clone(),
            placement: c.capacity.placement,
            default_ratios: crate::domain::capacity::Overcommit {
                cpu: c.capacity.cpu_overcommit,
                memory: c.capacity.memory_overcommit,
                disk: c.capacity.disk_overcommit,
                reserved_memory_mib: c.capacity.reserved_memory_mib,
            },
            libvirt_uri: c.libvirt.uri.clone(),
            scratch: std::path::absolute(c.data_dir.join("scratch"))
                .unwrap_or_else(|_| c.data_dir.join("scratch")),
        }
    }
}

/// Shared provisioning state: database, hosts, settings, and who this process is.
pub struct Provisioner {
    pub db: Db,
    /// Every host's libvirt connection.
    pub fleet: fleet::Fleet,
    pub settings: Settings,
    /// This process, as recorded in the leases of the operations it runs.
    pub owner: Owner,
    /// The host behind the configured libvirt URI (the machine carve runs on).
    pub local_host: HostId,
    /// Rendered VM lists, checked against the database's view version on every use.
    pub list_cache: vms::ListCache,
    /// Wakes the reconciler for a pass now (e.g. a tenant was just suspended).
    pub reconcile_now: Arc<tokio::sync::Notify>,
    /// Root password hashes of VMs being created, until their seed holds them.
    pub root_password_hashes: PendingHashes,
    /// Where images admins upload go, and their limits.
    pub uploads: custom_images::Uploads,
}

/// Root password hashes on their way into seeds, by the operation that writes them: in memory
/// only, never stored or logged (a crash before the seed is written loses the hash).
#[derive(Default)]
pub struct PendingHashes(std::sync::Mutex<std::collections::HashMap<OperationId, String>>);

impl PendingHashes {
    pub fn put(&self, op: &OperationId, hash: String) {
        self.lock().insert(op.clone(), hash);
    }

    pub fn get(&self, op: &OperationId) -> Option<String> {
        self.lock().get(op).cloned()
    }

    pub fn forget(&self, op: &OperationId) {
        self.lock().remove(op);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<OperationId, String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Provisioner {
    /// A registered host with its connection and storage pool.
    pub async fn host(&self, id: &HostId) -> anyhow::Result<fleet::Host> {
        let row = crate::db::hosts::get(&self.db, id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("host {id} is not registered"))?;
        Ok(self.fleet.host(row).await?)
    }

    /// The libvirt connection of a VM's host.
    pub async fn hv_of(&self, host: &HostId) -> anyhow::Result<Hv> {
        Ok(self.host(host).await?.hv)
    }

    /// Starts a worker for the operation; `previous_owner` is the dead process it takes over
    /// from (None for a fresh operation).
    pub fn spawn_operation(self: &Arc<Self>, op: OperationId, previous_owner: Option<String>) {
        let this = self.clone();
        tokio::spawn(async move { worker::run(this, op, previous_owner).await });
    }
}
