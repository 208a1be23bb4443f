//! [`Hypervisor`] over libvirt with the `virt` crate. One connection is shared and reopened
//! if libvirtd goes away; libvirt connections are thread-safe.

use std::sync::Mutex;

use virt::connect::Connect;
use virt::domain::{Domain, DomainState};
use virt::error::ErrorNumber;
use virt::sys;

use super::{
    DomainStats, DomainSummary, DomainSupport, GuestInfo, HostCapabilities, Hypervisor,
    HypervisorError, NodeFacts, PoolFacts, PowerState, Volume, host_setup, volumes,
};

/// libvirt through one shared connection.
pub struct Libvirt {
    uri: String,
    conn: Mutex<Option<Connect>>,
}

impl Libvirt {
    /// Connects to `uri` (e.g. `qemu:///system`, or `test:///default` in unit tests).
    pub fn connect(uri: &str) -> Result<Self, HypervisorError> {
        // libvirt prints every error to stderr by default; carve reports them itself.
        virt::error::clear_error_callback();
        let conn = Connect::open(Some(uri)).map_err(|e| {
            HypervisorError::Libvirt(format!("cannot connect to {uri}: {}", e.message()))
        })?;
        Ok(Self {
            uri: uri.to_string(),
            conn: Mutex::new(Some(conn)),
        })
    }

    /// The live connection, reopened if the old one died.
    fn conn(&self) -> Result<Connect, HypervisorError> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(conn) = guard.as_ref()
            && conn.is_alive().unwrap_or(false)
        {
            return Ok(conn.clone());
        }
        let fresh = Connect::open(Some(&self.uri)).map_err(|e| lv(&e))?;
        *guard = Some(fresh.clone());
        Ok(fresh)
    }

    /// The named domain, or `None` if it does not exist.
    fn lookup(&self, name: &str) -> Result<Option<Domain>, HypervisorError> {
        match self.conn()?.lookup_domain_by_name(name) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.code().is_known_and(|c| c == ErrorNumber::NoDomain) => Ok(None),
            Err(e) => Err(lv(&e)),
        }
    }

    /// The named domain, or [`HypervisorError::NoDomain`].
    fn domain(&self, name: &str) -> Result<Domain, HypervisorError> {
        self.lookup(name)?
            .ok_or_else(|| HypervisorError::NoDomain(name.to_string()))
    }
}

/// Turns a libvirt error into ours, keeping libvirt's message.
fn lv(e: &virt::error::Error) -> HypervisorError {
    if e.code().is_known_and(|c| c == ErrorNumber::NoDomain) {
        return HypervisorError::NoDomain(e.message().to_string());
    }
    HypervisorError::Libvirt(e.message().to_string())
}

/// Maps libvirt's domain state to ours.
fn power_state(d: &Domain) -> Result<PowerState, HypervisorError> {
    let (state, _reason) = d.state().map_err(|e| lv(&e))?;
    Ok(match state.unwrap_or(DomainState::NoState) {
        DomainState::Running | DomainState::Blocked => PowerState::Running,
        DomainState::Paused => PowerState::Paused,
        DomainState::Shutdown => PowerState::ShuttingDown,
        DomainState::Shutoff => PowerState::Shutoff,
        DomainState::Crashed => PowerState::Crashed,
        DomainState::PMSuspended => PowerState::Suspended,
        DomainState::NoState => PowerState::Unknown,
    })
}

impl Hypervisor for Libvirt {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn node(&self) -> Result<NodeFacts, HypervisorError> {
        let conn = self.conn()?;
        let info = conn.node_info().map_err(|e| lv(&e))?;
        let hostname = conn.hostname().map_err(|e| lv(&e))?;
        Ok(NodeFacts {
            hostname,
            cpus: info.cpus,
            memory_mib: info.memory / 1024,
        })
    }

    fn define(&self, xml: &str) -> Result<(), HypervisorError> {
        self.conn()?
            .define_domain_xml(xml)
            .map(drop)
            .map_err(|e| lv(&e))
    }

    fn start_transient(&self, xml: &str) -> Result<(), HypervisorError> {
        self.conn()?
            .create_domain_xml(xml, 0)
            .map(drop)
            .map_err(|e| lv(&e))
    }

    fn start(&self, name: &str) -> Result<(), HypervisorError> {
        let d = self.domain(name)?;
        if d.is_active().map_err(|e| lv(&e))? {
            return Ok(());
        }
        d.create().map_err(|e| lv(&e))
    }

    fn shutdown(&self, name: &str, agent: bool) -> Result<(), HypervisorError> {
        let d = self.domain(name)?;
        if agent {
            match d.shutdown_flags(sys::VIR_DOMAIN_SHUTDOWN_GUEST_AGENT) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::debug!(domain = name, error = %e, "the guest agent did not take the shutdown; pressing the power button")
                }
            }
        }
        // No flags: the power button (the test driver takes no flags at all).
        d.shutdown().map_err(|e| lv(&e))
    }

    fn reboot(&self, name: &str) -> Result<(), HypervisorError> {
        self.domain(name)?
            .reboot(sys::VIR_DOMAIN_REBOOT_DEFAULT)
            .map_err(|e| lv(&e))
    }

    fn reset(&self, name: &str) -> Result<(), HypervisorError> {
        self.domain(name)?.reset().map_err(|e| lv(&e))
    }

    fn destroy(&self, name: &str) -> Result<(), HypervisorError> {
        let Some(d) = self.lookup(name)? else {
            return Ok(());
        };
        if !d.is_active().map_err(|e| lv(&e))? {
            return Ok(());
        }
        match d.destroy() {
            Ok(()) => Ok(()),
            // It stopped between the check and the call.
            Err(e)
                if e.code()
                    .is_known_and(|c| c == ErrorNumber::OperationInvalid) =>
            {
                Ok(())
            }
            Err(e) => Err(lv(&e)),
        }
    }

    fn undefine(&self, name: &str) -> Result<(), HypervisorError> {
        let Some(d) = self.lookup(name)? else {
            return Ok(());
        };
        // carve's domains boot with SeaBIOS or a direct kernel, so there is no NVRAM to remove.
        let flags =
            sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA;
        match d.undefine_flags(flags) {
            Ok(()) => Ok(()),
            Err(e) if e.code().is_known_and(|c| c == ErrorNumber::NoDomain) => Ok(()),
            Err(e) => Err(lv(&e)),
        }
    }

    fn state(&self, name: &str) -> Result<Option<PowerState>, HypervisorError> {
        match self.lookup(name)? {
            Some(d) => power_state(&d).map(Some),
            None => Ok(None),
        }
    }

    fn list(&self) -> Result<Vec<DomainSummary>, HypervisorError> {
        let domains = self.conn()?.list_all_domains(0).map_err(|e| lv(&e))?;
        domains
            .iter()
            .map(|d| {
                Ok(DomainSummary {
                    name: d.name().map_err(|e| lv(&e))?,
                    state: power_state(d)?,
                })
            })
            .collect()
    }

    fn serial_pty(&self, name: &str) -> Result<Option<String>, HypervisorError> {
        let Some(d) = self.lookup(name)? else {
            return Ok(None);
        };
        if !d.is_active().map_err(|e| lv(&e))? {
            return Ok(None);
        }
        let xml = d.xml_desc(0).map_err(|e| lv(&e))?;
        Ok(super::xml::serial_pty(&xml))
    }

    fn guest_info(&self, name: &str) -> Result<Option<GuestInfo>, HypervisorError> {
        let Some(d) = self.lookup(name)? else {
            return Ok(None);
        };
        if !d.is_active().map_err(|e| lv(&e))? {
            return Ok(None);
        }
        // Without an agent (or before it answers) both calls fail: nothing to report.
        let Ok(interfaces) =
            d.interface_addresses(sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, 0)
        else {
            return Ok(None);
        };
        let addresses = interfaces
            .iter()
            .filter(|i| i.name != "lo")
            .flat_map(|i| i.addrs.iter())
            .map(|a| format!("{}/{}", a.addr, a.prefix))
            .collect();
        let hostname = d.hostname(sys::VIR_DOMAIN_GET_HOSTNAME_AGENT).ok();
        Ok(Some(GuestInfo {
            hostname,
            addresses,
        }))
    }

    fn set_password_hash(&self, name: &str, user: &str, hash: &str) -> Result<(), HypervisorError> {
        self.domain(name)?
            .set_user_password(user, hash, sys::VIR_DOMAIN_PASSWORD_ENCRYPTED)
            .map_err(|e| lv(&e))
    }

    fn stats(&self, name: &str) -> Result<Option<DomainStats>, HypervisorError> {
        let Some(d) = self.lookup(name)? else {
            return Ok(None);
        };
        let info = d.info().map_err(|e| lv(&e))?;
        // The resident set (tag 7, VIR_DOMAIN_MEMORY_STAT_RSS) is what the guest really costs
        // the host; drivers without memory statistics (the test driver) give the allocation.
        let rss = d
            .memory_stats(0)
            .ok()
            .and_then(|stats| stats.iter().find(|s| s.tag == 7).map(|s| s.val));
        Ok(Some(DomainStats {
            cpu_time_ns: info.cpu_time,
            memory_used_kib: rss
                .unwrap_or(info.memory)
                .min(info.max_mem.max(info.memory)),
            memory_total_kib: info.max_mem,
            vcpus: info.nr_virt_cpu,
        }))
    }

    fn capabilities(&self) -> Result<HostCapabilities, HypervisorError> {
        host_setup::capabilities(&self.conn()?)
    }

    fn domain_support(
        &self,
        arch: &str,
        domain_type: &str,
    ) -> Result<DomainSupport, HypervisorError> {
        host_setup::domain_support(&self.conn()?, arch, domain_type)
    }

    fn ensure_pool(&self, name: &str, path: &str) -> Result<PoolFacts, HypervisorError> {
        host_setup::ensure_pool(&self.conn()?, name, path)
    }

    fn pool_facts(&self, pool: &str) -> Result<PoolFacts, HypervisorError> {
        volumes::pool_facts(&self.conn()?, pool)
    }

    fn volume(&self, pool: &str, name: &str) -> Result<Option<Volume>, HypervisorError> {
        volumes::volume(&self.conn()?, pool, name)
    }

    fn volumes(&self, pool: &str) -> Result<Vec<String>, HypervisorError> {
        volumes::volumes(&self.conn()?, pool)
    }

    fn create_overlay(
        &self,
        pool: &str,
        name: &str,
        backing: &str,
        capacity: u64,
    ) -> Result<Volume, HypervisorError> {
        volumes::create_overlay(&self.conn()?, pool, name, backing, capacity)
    }

    fn upload(
        &self,
        pool: &str,
        name: &str,
        source: &mut dyn std::io::Read,
        len: u64,
        in_place: bool,
    ) -> Result<Volume, HypervisorError> {
        volumes::upload(&self.conn()?, pool, name, source, len, in_place)
    }

    fn download(
        &self,
        pool: &str,
        name: &str,
        offset: u64,
        max: u64,
        sink: &mut dyn std::io::Write,
    ) -> Result<u64, HypervisorError> {
        volumes::download(&self.conn()?, pool, name, offset, max, sink)
    }

    fn resize_volume(&self, pool: &str, name: &str, capacity: u64) -> Result<(), HypervisorError> {
        volumes::resize(&self.conn()?, pool, name, capacity)
    }

    fn delete_volume(&self, pool: &str, name: &str) -> Result<(), HypervisorError> {
        volumes::delete(&self.conn()?, pool, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal domain for libvirt's in-process test driver.
    fn xml(name: &str) -> String {
        format!(
            "<domain type='test'><name>{name}</name><memory unit='MiB'>64</memory>\
             <os><type>hvm</type></os></domain>"
        )
    }

    #[test]
    fn lifecycle_on_the_test_driver() {
        let hv = Libvirt::connect("test:///default").unwrap();
        let name = format!("carve-unit-{}", std::process::id());
        assert_eq!(hv.state(&name).unwrap(), None);
        hv.define(&xml(&name)).unwrap();
        assert_eq!(hv.state(&name).unwrap(), Some(PowerState::Shutoff));
        hv.start(&name).unwrap();
        hv.start(&name).unwrap(); // idempotent
        assert_eq!(hv.state(&name).unwrap(), Some(PowerState::Running));
        assert!(
            hv.list()
                .unwrap()
                .iter()
                .any(|d| d.name == name && d.state.is_active())
        );
        hv.destroy(&name).unwrap();
        hv.destroy(&name).unwrap(); // idempotent
        assert_eq!(hv.state(&name).unwrap(), Some(PowerState::Shutoff));
        hv.undefine(&name).unwrap();
        hv.undefine(&name).unwrap(); // idempotent
        assert_eq!(hv.state(&name).unwrap(), None);
        assert!(matches!(
            hv.shutdown(&name, false),
            Err(HypervisorError::NoDomain(_))
        ));
        let node = hv.node().unwrap();
        assert!(node.cpus > 0 && node.memory_mib > 0);
    }
}
