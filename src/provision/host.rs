//! The local libvirt host: registered at start-up with the capacity libvirt and the disk store
//! report, refreshed by the reconciler.

use std::path::Path;

use anyhow::Context as _;

use super::{Provisioner, Settings};
use crate::auth::Principal;
use crate::config::{Config, DomainTypeSetting};
use crate::db::hosts::HostRow;
use crate::db::{self, Db};
use crate::domain::Invalid;
use crate::domain::capacity::{Overcommit, Physical};
use crate::domain::host::HostState;
use crate::domain::ids::HostId;
use crate::domain::image::BootMethod;
use crate::domain::names::ResourceName;
use crate::error::AppError;
use crate::hypervisor::xml::DomainType;
use crate::hypervisor::{Hv, probe};

/// Reads a host's physical facts from its libvirt: CPUs and memory, and disk from the size
/// of its carve storage pool.
pub async fn physical(hv: &Hv, pool: &str) -> anyhow::Result<(String, Physical)> {
    let pool = pool.to_string();
    let (node, store) = hv
        .call(move |h| Ok((h.node()?, h.pool_facts(&pool)?)))
        .await
        .context("reading host facts from libvirt")?;
    Ok((
        node.hostname,
        Physical {
            cpus: node.cpus,
            memory_mib: node.memory_mib,
            disk_gib: store.capacity_bytes >> 30,
        },
    ))
}

/// The name of the local host's storage pool: `carve-` and a digest of its directory, so
/// several installations on one machine (a test run beside `make run`) never share one.
pub fn local_pool_name(vm_root: &Path) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(vm_root.to_string_lossy().as_bytes());
    format!("carve-{}", &hex::encode(digest)[..12])
}

/// Registers (or refreshes) the host behind the configured libvirt URI, settling its domain
/// type: the configured one, or for `auto` the stored result of an earlier probe, else a probe.
pub async fn register_local(
    db: &Db,
    hv: &Hv,
    config: &Config,
    settings: &Settings,
) -> anyhow::Result<HostRow> {
    let machine = hv.call(|h| h.capabilities()).await?.uuid;
    let uri = hv.uri().to_string();
    let existing = db::hosts::get_by_uri(db, &uri).await?;
    // A clone of carve (another process on the same database) that reaches the same libvirt
    // daemon shares the host and its pool; one whose URI reaches another machine is refused.
    let shared = existing.as_ref().filter(|h| !h.storage_pool.is_empty());
    if let Some(h) = shared {
        anyhow::ensure!(
            h.machine_id.is_empty() || machine.is_empty() || h.machine_id == machine,
            "the host {uri} is registered as libvirt machine {}, but this libvirt is machine {machine}: \
             carve processes sharing a database must reach the same hypervisors, so set \
             libvirt.uri to one every clone reaches (such as qemu+ssh://host/system)",
            h.machine_id
        );
    }
    let (pool, path) = match shared {
        Some(h) => (h.storage_pool.clone(), h.storage_path.clone()),
        None => (
            local_pool_name(&settings.vm_root),
            settings.vm_root.to_string_lossy().into_owned(),
        ),
    };
    let (p, want) = (pool.clone(), path.clone());
    let made = hv.call(move |h| h.ensure_pool(&p, &want)).await?;
    anyhow::ensure!(
        made.path == path,
        "libvirt already has a storage pool {pool} for {}, not {path}; remove it (virsh pool-undefine {pool}) or move carve's data directory",
        made.path
    );
    let (hostname, phys) = physical(hv, &pool).await?;
    let domain_type = match config.libvirt.domain_type {
        DomainTypeSetting::Kvm => DomainType::Kvm,
        DomainTypeSetting::Qemu => DomainType::Qemu,
        DomainTypeSetting::Auto => match existing
            .as_ref()
            .and_then(|h| DomainType::parse(&h.domain_type))
        {
            Some(known) => known,
            None => probe_domain_type(db, hv, settings).await,
        },
    };
    let id: HostId = match existing {
        Some(host) => {
            db::hosts::update_physical(db, &host.id, phys).await?;
            db::hosts::update_domain_type(db, &host.id, domain_type.as_str()).await?;
            db::hosts::set_storage(db, &host.id, &pool, &path, &machine).await?;
            host.id
        }
        None => {
            let c = &config.capacity;
            let ratios = Overcommit {
                cpu: c.cpu_overcommit,
                memory: c.memory_overcommit,
                disk: c.disk_overcommit,
                reserved_memory_mib: c.reserved_memory_mib,
            };
            db::hosts::insert(
                db,
                &db::hosts::NewHost {
                    name: &hostname,
                    uri: &uri,
                    domain_type: domain_type.as_str(),
                    physical: phys,
                    ratios,
                    labels: &[],
                    forward_address: None,
                    forward_ports: None,
                    storage_pool: &pool,
                    storage_path: &path,
                    machine_id: &machine,
                },
            )
            .await?
        }
    };
    let host = db::hosts::get(db, &id)
        .await?
        .context("host row vanished after registration")?;
    tracing::info!(
        host = %host.name, uri = %host.libvirt_uri, domain_type = %host.domain_type,
        cpus = host.cpus, memory_mib = host.memory_mib, disk_gib = host.disk_gib,
        "host registered"
    );
    Ok(host)
}

/// `auto`: KVM if a probe guest boots under it, else QEMU (software emulation) with a warning.
async fn probe_domain_type(db: &Db, hv: &Hv, settings: &Settings) -> DomainType {
    let images = db::images::list(db).await.unwrap_or_default();
    let Some((kernel, initrd)) = images.iter().find_map(|i| {
        (i.available && i.boot == BootMethod::Kernel)
            .then(|| Some((i.kernel_path.clone()?, i.initrd_path.clone()?)))
            .flatten()
    }) else {
        tracing::warn!(
            "domain_type = auto but no kernel-boot image to probe with: using qemu (software emulation)"
        );
        return DomainType::Qemu;
    };
    tracing::info!("probing whether guests boot under KVM (up to 20 s)");
    match probe::kvm_boots(
        hv,
        Path::new(&kernel),
        Path::new(&initrd),
        &settings.vm_root,
    )
    .await
    {
        Ok(true) => {
            tracing::info!("KVM works: guests use hardware virtualisation");
            DomainType::Kvm
        }
        Ok(false) => {
            tracing::warn!(
                "a probe guest did not boot under KVM: using qemu (software emulation, much slower); set libvirt.domain_type to override"
            );
            DomainType::Qemu
        }
        Err(e) => {
            tracing::warn!(error = %e, "KVM probe failed: using qemu (software emulation)");
            DomainType::Qemu
        }
    }
}

/// A host as admins see it: physical facts, ratios, and what is sold and free.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct HostView {
    pub id: String,
    pub name: String,
    pub libvirt_uri: String,
    /// `kvm` or `qemu`.
    pub domain_type: String,
    /// Physical resources (disk: the VM store's space).
    pub physical: Amounts,
    pub overcommit: OvercommitView,
    /// What may be sold after overcommit and reserve.
    pub sellable: Amounts,
    /// What live VMs hold.
    pub allocated: Amounts,
    /// Sellable minus allocated.
    pub free: Amounts,
    /// libvirt domains on this host that carve does not manage.
    pub unmanaged_domains: Vec<String>,
    pub refreshed_at: chrono::DateTime<chrono::Utc>,
    /// `active` (takes new VMs), `maintenance` (set by an admin) or `unreachable` (libvirt
    /// there does not answer).
    pub state: HostState,
    /// Why the host is unreachable, while it is.
    pub state_reason: Option<String>,
    /// Labels a create can ask for (`host_labels`).
    pub labels: Vec<String>,
    /// Where the host's forwards listen.
    pub forward_address: String,
    /// The host ports its forwards take, `first-last`.
    pub forward_ports: String,
    /// The libvirt storage pool holding its VMs' disks, and that pool's directory there.
    pub storage_pool: String,
    pub storage_path: String,
}

/// An amount of each resource.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Amounts {
    pub vcpus: u64,
    pub memory_mib: u64,
    pub disk_gib: u64,
}

impl From<crate::domain::sizes::Resources> for Amounts {
    fn from(r: crate::domain::sizes::Resources) -> Self {
        Self {
            vcpus: u64::from(r.vcpus),
            memory_mib: r.memory_mib,
            disk_gib: r.disk_gib,
        }
    }
}

/// A host's overcommit ratios and memory reserve.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct OvercommitView {
    pub cpu: f64,
    pub memory: f64,
    pub disk: f64,
    pub reserved_memory_mib: u64,
}

/// A change to a host (admins); absent fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct UpdateHost {
    pub name: Option<String>,
    /// `active` or `maintenance` (no new VMs).
    pub state: Option<String>,
    pub labels: Option<Vec<String>>,
    /// An IP address, or empty for the configured default.
    pub forward_address: Option<String>,
    /// `first-last`, or empty for the configured default.
    pub forward_ports: Option<String>,
    /// vCPUs sold per host CPU (above 0, at most 100).
    pub cpu_overcommit: Option<f64>,
    /// Guest memory per host memory (above 0, at most 100).
    pub memory_overcommit: Option<f64>,
    /// Guest disk per store space (above 0, at most 100).
    pub disk_overcommit: Option<f64>,
    /// Host memory kept back for the host, in MiB.
    pub reserved_memory_mib: Option<i64>,
}

async fn view(p: &Provisioner, host: &HostRow) -> Result<HostView, AppError> {
    let (forward_address, forward_ports) = p.settings.forwards_of(host);
    let mut conn = p.db.acquire().await?;
    let allocated = db::hosts::allocated(&mut conn, &host.id).await?;
    let sellable = crate::domain::capacity::sellable(host.physical(), host.overcommit());
    let r = host.overcommit();
    Ok(HostView {
        id: host.id.to_string(),
        name: host.name.clone(),
        libvirt_uri: host.libvirt_uri.clone(),
        domain_type: host.domain_type.clone(),
        physical: Amounts {
            vcpus: host.cpus as u64,
            memory_mib: host.memory_mib as u64,
            disk_gib: host.disk_gib as u64,
        },
        overcommit: OvercommitView {
            cpu: r.cpu,
            memory: r.memory,
            disk: r.disk,
            reserved_memory_mib: r.reserved_memory_mib,
        },
        sellable: sellable.into(),
        allocated: allocated.into(),
        free: Amounts {
            vcpus: u64::from(sellable.vcpus.saturating_sub(allocated.vcpus)),
            memory_mib: sellable.memory_mib.saturating_sub(allocated.memory_mib),
            disk_gib: sellable.disk_gib.saturating_sub(allocated.disk_gib),
        },
        unmanaged_domains: host.unmanaged(),
        refreshed_at: host.refreshed_at,
        state: host.state,
        state_reason: host.state_reason.clone(),
        labels: host.labels(),
        forward_address: forward_address.to_string(),
        forward_ports: format!("{}-{}", forward_ports.first, forward_ports.last),
        storage_pool: host.storage_pool.clone(),
        storage_path: host.storage_path.clone(),
    })
}

/// One page of hosts (admins).
pub async fn list(
    p: &Provisioner,
    actor: &Principal,
    page: &db::page::PageRequest,
) -> Result<db::page::Page<HostView>, AppError> {
    actor.require_admin()?;
    let hosts = db::hosts::page(&p.db, page).await?;
    let mut out = Vec::new();
    for host in &hosts.items {
        out.push(view(p, host).await?);
    }
    Ok(db::page::Page {
        items: out,
        next: hosts.next,
    })
}

/// One host (admins).
pub async fn get(p: &Provisioner, actor: &Principal, id: &str) -> Result<HostView, AppError> {
    actor.require_admin()?;
    let host_id = HostId::parse(id).ok_or_else(|| AppError::not_found("host", id))?;
    let host = db::hosts::get(&p.db, &host_id)
        .await?
        .ok_or_else(|| AppError::not_found("host", id))?;
    view(p, &host).await
}

/// Checks requested overcommit ratios into `r`: each above 0 and at most 100.
pub(crate) fn check_ratios(
    cpu: Option<f64>,
    memory: Option<f64>,
    disk: Option<f64>,
    r: &mut Overcommit,
    errors: &mut Vec<Invalid>,
) {
    let mut ratio = |field: &'static str, v: Option<f64>, slot: &mut f64| {
        if let Some(v) = v {
            if v.is_finite() && v > 0.0 && v <= 100.0 {
                *slot = v;
            } else {
                errors.push(Invalid::new(
                    field,
                    format!("{v} is out of range: use a number above 0 and at most 100"),
                ));
            }
        }
    };
    ratio("cpu_overcommit", cpu, &mut r.cpu);
    ratio("memory_overcommit", memory, &mut r.memory);
    ratio("disk_overcommit", disk, &mut r.disk);
}

/// Changes a host (admins): its name, state (`active` or `maintenance`), labels, forwards,
/// overcommit ratios or reserve. Lowering ratios never evicts VMs; it only refuses new ones
/// until there is room.
pub async fn update(
    p: &Provisioner,
    actor: &Principal,
    id: &str,
    req: UpdateHost,
) -> Result<HostView, AppError> {
    actor.require_admin()?;
    let host_id = HostId::parse(id).ok_or_else(|| AppError::not_found("host", id))?;
    let host = db::hosts::get(&p.db, &host_id)
        .await?
        .ok_or_else(|| AppError::not_found("host", id))?;
    let mut r = host.overcommit();
    let mut errors = Vec::new();
    check_ratios(
        req.cpu_overcommit,
        req.memory_overcommit,
        req.disk_overcommit,
        &mut r,
        &mut errors,
    );
    if let Some(m) = req.reserved_memory_mib {
        if (0..=host.memory_mib).contains(&m) {
            r.reserved_memory_mib = m as u64;
        } else {
            errors.push(Invalid::new(
                "reserved_memory_mib",
                format!("{m} is out of range: use 0 to {}", host.memory_mib),
            ));
        }
    }
    let name = req
        .name
        .as_deref()
        .and_then(|n| {
            ResourceName::parse(n, "name")
                .map_err(|e| errors.push(e))
                .ok()
        })
        .map(|n| n.as_str().to_string());
    let state = match req.state.as_deref() {
        None => None,
        Some("active") => Some(HostState::Active),
        Some("maintenance") => Some(HostState::Maintenance),
        Some(other) => {
            errors.push(Invalid::new(
                "state",
                format!(
                    "{:?} cannot be set: use active or maintenance (carve marks a host unreachable itself)",
                    other.chars().take(40).collect::<String>()
                ),
            ));
            None
        }
    };
    let labels = req.labels.as_ref().and_then(|l| {
        crate::domain::host::labels("labels", l)
            .map_err(|e| errors.push(e))
            .ok()
    });
    let forward_address = req.forward_address.as_deref().map(|a| match a.trim() {
        "" => None,
        a => a
            .parse::<std::net::IpAddr>()
            .map_err(|_| {
                errors.push(Invalid::new(
                    "forward_address",
                    format!(
                        "{:?} is not an IP address (empty: the configured default)",
                        a.chars().take(60).collect::<String>()
                    ),
                ))
            })
            .ok(),
    });
    let forward_ports = req.forward_ports.as_deref().map(|r| match r.trim() {
        "" => None,
        r => r
            .parse::<crate::config::PortRange>()
            .map_err(|e| errors.push(Invalid::new("forward_ports", e)))
            .ok(),
    });
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    if state.is_some() && host.state == HostState::Unreachable {
        return Err(AppError::Conflict(format!(
            "host {} is unreachable; it becomes active again by itself when its libvirt answers",
            host.name
        )));
    }
    if forward_address.is_some() || forward_ports.is_some() {
        if !db::vms::list_on_host(&p.db, &host.id).await?.is_empty() {
            return Err(AppError::Conflict(format!(
                "host {} holds VMs whose forwards use its address and ports; change them while it holds none",
                host.name
            )));
        }
        super::host_registry::check_new_forwards(p, &host, forward_address, forward_ports).await?;
    }
    let settings = db::hosts::HostSettings {
        name,
        labels,
        forward_address: forward_address.map(|a| a.map(|a| a.to_string())),
        forward_ports: forward_ports.map(|r| r.map(|r| (r.first, r.last))),
    };
    if let Err(e) = db::hosts::update_settings(&p.db, &host.id, &settings).await {
        return Err(if db::is_unique_violation(&e) {
            AppError::Conflict("another host has that name; choose another".into())
        } else {
            e.into()
        });
    }
    if let Some(state) = state {
        db::hosts::set_state(&p.db, &host.id, state, None).await?;
        tracing::info!(host = %host.name, state = %state, "host state changed");
    }
    db::hosts::update_overcommit(&p.db, &host.id, r).await?;
    get(p, actor, id).await
}

/// The labels active hosts offer, sorted (what a create may ask for in `host_labels`).
pub async fn offered_labels(db: &Db) -> Result<Vec<String>, AppError> {
    let mut labels: Vec<String> = db::hosts::list(db)
        .await?
        .into_iter()
        .filter(|h| h.state == HostState::Active)
        .flat_map(|h| h.labels())
        .collect();
    labels.sort();
    labels.dedup();
    Ok(labels)
}
