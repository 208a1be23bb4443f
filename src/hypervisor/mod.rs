//! The hypervisor boundary: a small blocking trait with a libvirt implementation, called from
//! async code through [`Hv`], which moves every call onto the blocking thread pool.

pub mod host_setup;
pub mod libvirt;
pub mod probe;
pub mod qcow2;
pub mod qcow2_backing;
pub mod storage;
pub mod volumes;
pub mod xml;

use std::io::{Read, Write};
use std::sync::Arc;

pub use host_setup::{DomainSupport, HostCapabilities, PoolFacts};
pub use volumes::Volume;

/// A domain's power state as libvirt reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    Running,
    Paused,
    ShuttingDown,
    Shutoff,
    Crashed,
    Suspended,
    Unknown,
}

impl PowerState {
    /// Whether the guest is using CPU and memory (anything but shut off or crashed).
    pub fn is_active(self) -> bool {
        !matches!(self, PowerState::Shutoff | PowerState::Crashed)
    }
}

/// Host facts from the hypervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    /// The host's name as libvirt knows it.
    pub hostname: String,
    /// Host CPUs.
    pub cpus: u32,
    /// Host memory in MiB.
    pub memory_mib: u64,
}

/// One domain defined on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSummary {
    pub name: String,
    pub state: PowerState,
}

/// A domain's resource use at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainStats {
    /// CPU time used since the domain started, in nanoseconds (all vCPUs).
    pub cpu_time_ns: u64,
    /// Memory the guest uses: its resident set on the host where libvirt reports it, else
    /// its current allocation, in KiB.
    pub memory_used_kib: u64,
    /// Memory given to the guest, in KiB.
    pub memory_total_kib: u64,
    /// Virtual CPUs.
    pub vcpus: u32,
}

/// A hypervisor call that failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HypervisorError {
    /// The named domain does not exist.
    #[error("domain {0} does not exist in libvirt")]
    NoDomain(String),
    /// libvirt refused or failed; its message follows.
    #[error("libvirt: {0}")]
    Libvirt(String),
    /// The blocking call could not complete (the runtime is shutting down).
    #[error("hypervisor call interrupted: {0}")]
    Interrupted(String),
}

/// What carve needs from a hypervisor. Calls block; use [`Hv`] from async code.
pub trait Hypervisor: Send + Sync + 'static {
    /// The connection URI.
    fn uri(&self) -> &str;
    /// CPUs, memory and name of the host.
    fn node(&self) -> Result<NodeFacts, HypervisorError>;
    /// Defines (or redefines) a persistent domain from XML.
    fn define(&self, xml: &str) -> Result<(), HypervisorError>;
    /// Starts a transient domain from XML (it vanishes when it stops).
    fn start_transient(&self, xml: &str) -> Result<(), HypervisorError>;
    /// Starts a defined domain; does nothing if it is running.
    fn start(&self, name: &str) -> Result<(), HypervisorError>;
    /// Asks the guest to shut down: through its QEMU guest agent when `agent` (falling back to
    /// the ACPI power button if the agent does not answer), else by the ACPI power button.
    fn shutdown(&self, name: &str, agent: bool) -> Result<(), HypervisorError>;
    /// Asks the guest to reboot.
    fn reboot(&self, name: &str) -> Result<(), HypervisorError>;
    /// Resets the guest at once, like the reset button.
    fn reset(&self, name: &str) -> Result<(), HypervisorError>;
    /// Powers the guest off at once; does nothing if it is not running or does not exist.
    fn destroy(&self, name: &str) -> Result<(), HypervisorError>;
    /// Removes the domain's definition; does nothing if it does not exist.
    fn undefine(&self, name: &str) -> Result<(), HypervisorError>;
    /// The domain's power state, or `None` if no such domain exists.
    fn state(&self, name: &str) -> Result<Option<PowerState>, HypervisorError>;
    /// Every domain on the host, running or not.
    fn list(&self) -> Result<Vec<DomainSummary>, HypervisorError>;
    /// CPU time and memory of a running domain (`None` when the domain does not exist).
    fn stats(&self, name: &str) -> Result<Option<DomainStats>, HypervisorError>;
    /// The host pty of a running domain's serial console (`None`: not running or no pty).
    fn serial_pty(&self, name: &str) -> Result<Option<String>, HypervisorError>;
    /// What the guest agent of a running domain says (`None`: no agent answers).
    fn guest_info(&self, name: &str) -> Result<Option<GuestInfo>, HypervisorError>;
    /// Sets a guest user's password to a crypt hash through the guest agent.
    fn set_password_hash(&self, name: &str, user: &str, hash: &str) -> Result<(), HypervisorError>;
    /// The host's architecture and the domain types it runs guests of it with.
    fn capabilities(&self) -> Result<HostCapabilities, HypervisorError>;
    /// Whether guests of `domain_type` can be made here, and whether they can use passt.
    fn domain_support(
        &self,
        arch: &str,
        domain_type: &str,
    ) -> Result<DomainSupport, HypervisorError>;
    /// Finds the storage pool `name`, or makes it as a directory pool at `path`; started.
    fn ensure_pool(&self, name: &str, path: &str) -> Result<PoolFacts, HypervisorError>;
    /// A pool's directory, size and free space.
    fn pool_facts(&self, pool: &str) -> Result<PoolFacts, HypervisorError>;
    /// The named volume of a pool, if it exists.
    fn volume(&self, pool: &str, name: &str) -> Result<Option<Volume>, HypervisorError>;
    /// Names of a pool's volumes.
    fn volumes(&self, pool: &str) -> Result<Vec<String>, HypervisorError>;
    /// Makes (or remakes) a qcow2 volume of `capacity` bytes backed by the qcow2 at `backing`.
    fn create_overlay(
        &self,
        pool: &str,
        name: &str,
        backing: &str,
        capacity: u64,
    ) -> Result<Volume, HypervisorError>;
    /// Streams `len` bytes into a raw volume: a new one, or over an existing one `in_place`.
    fn upload(
        &self,
        pool: &str,
        name: &str,
        source: &mut dyn Read,
        len: u64,
        in_place: bool,
    ) -> Result<Volume, HypervisorError>;
    /// Streams up to `max` bytes of a volume from `offset` into `sink`; returns how many.
    fn download(
        &self,
        pool: &str,
        name: &str,
        offset: u64,
        max: u64,
        sink: &mut dyn Write,
    ) -> Result<u64, HypervisorError>;
    /// Grows a volume to `capacity` bytes (never shrinks).
    fn resize_volume(&self, pool: &str, name: &str, capacity: u64) -> Result<(), HypervisorError>;
    /// Deletes a volume; nothing to do if it is gone.
    fn delete_volume(&self, pool: &str, name: &str) -> Result<(), HypervisorError>;
}

/// What a guest's agent reports about it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GuestInfo {
    pub hostname: Option<String>,
    /// Addresses with their prefix length (`10.0.2.15/24`), loopback left out.
    pub addresses: Vec<String>,
}

/// A cloneable handle that runs hypervisor calls on the blocking pool.
#[derive(Clone)]
pub struct Hv(Arc<dyn Hypervisor>);

impl Hv {
    /// Wraps a hypervisor.
    pub fn new(inner: Arc<dyn Hypervisor>) -> Self {
        Self(inner)
    }

    /// The connection URI.
    pub fn uri(&self) -> &str {
        self.0.uri()
    }

    /// Runs `f` against the hypervisor on a blocking thread.
    pub async fn call<T, F>(&self, f: F) -> Result<T, HypervisorError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Hypervisor) -> Result<T, HypervisorError> + Send + 'static,
    {
        let inner = self.0.clone();
        tokio::task::spawn_blocking(move || f(inner.as_ref()))
            .await
            .map_err(|e| HypervisorError::Interrupted(e.to_string()))?
    }
}
