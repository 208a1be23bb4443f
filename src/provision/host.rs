//! The local libvirt host: registered at start-up with the capacity libvirt and the disk store
//! report, refreshed by the reconciler.

use std::path::Path;

use anyhow::Context as _;

use super::Settings;
use crate::config::{Config, DomainTypeSetting};
use crate::db::hosts::HostRow;
use crate::db::{self, Db};
use crate::domain::capacity::{Overcommit, Physical};
use crate::domain::ids::HostId;
use crate::domain::image::BootMethod;
use crate::hypervisor::xml::DomainType;
use crate::hypervisor::{Hv, probe, storage};

/// Reads the host's physical facts: CPUs and memory from libvirt, disk from the VM store.
pub async fn physical(hv: &Hv, vm_root: &Path) -> anyhow::Result<(String, Physical)> {
    let node = hv
        .call(|h| h.node())
        .await
        .context("reading host facts from libvirt")?;
    let root = vm_root.to_path_buf();
    let disk_gib = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let free = storage::free_gib(&root)?;
        Ok(free + (storage::used_bytes(&root) >> 30))
    })
    .await??;
    Ok((
        node.hostname,
        Physical {
            cpus: node.cpus,
            memory_mib: node.memory_mib,
            disk_gib,
        },
    ))
}

/// Registers (or refreshes) the host behind the configured libvirt URI, settling its domain
/// type: the configured one, or for `auto` the stored result of an earlier probe, else a probe.
pub async fn register_local(
    db: &Db,
    hv: &Hv,
    config: &Config,
    settings: &Settings,
) -> anyhow::Result<HostRow> {
    let (hostname, phys) = physical(hv, &settings.vm_root).await?;
    let uri = hv.uri().to_string();
    let existing = db::hosts::get_by_uri(db, &uri).await?;
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
            db::hosts::insert(db, &hostname, &uri, domain_type.as_str(), phys, ratios).await?
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

/// A change to a host's ratios (admins); absent fields stay as they are.
#[derive(Debug, Clone)]
pub struct UpdateHost {
    /// vCPUs sold per host CPU (above 0, at most 100).
    pub cpu_overcommit: Option<f64>,
    /// Guest memory per host memory (above 0, at most 100).
    pub memory_overcommit: Option<f64>,
    /// Guest disk per store space (above 0, at most 100).
    pub disk_overcommit: Option<f64>,
    /// Host memory kept back for the host, in MiB.
    pub reserved_memory_mib: Option<i64>,
}

async fn view(db: &Db, host: &HostRow) -> Result<HostView, crate::error::AppError> {
    let mut conn = db.acquire().await?;
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
    })
}

/// One page of hosts (admins).
pub async fn list(
    db: &Db,
    actor: &crate::auth::Principal,
    page: &db::page::PageRequest,
) -> Result<db::page::Page<HostView>, crate::error::AppError> {
    actor.require_admin()?;
    let hosts = db::hosts::page(db, page).await?;
    let mut out = Vec::new();
    for host in &hosts.items {
        out.push(view(db, host).await?);
    }
    Ok(db::page::Page {
        items: out,
        next: hosts.next,
    })
}

/// One host (admins).
pub async fn get(
    db: &Db,
    actor: &crate::auth::Principal,
    id: &str,
) -> Result<HostView, crate::error::AppError> {
    actor.require_admin()?;
    let host_id = HostId::parse(id).ok_or_else(|| crate::error::AppError::not_found("host", id))?;
    let host = db::hosts::get(db, &host_id)
        .await?
        .ok_or_else(|| crate::error::AppError::not_found("host", id))?;
    view(db, &host).await
}

/// Changes a host's overcommit ratios or reserve (admins). Lowering them never evicts VMs; it
/// only refuses new ones until there is room.
pub async fn update(
    db: &Db,
    actor: &crate::auth::Principal,
    id: &str,
    req: UpdateHost,
) -> Result<HostView, crate::error::AppError> {
    use crate::domain::Invalid;
    actor.require_admin()?;
    let host_id = HostId::parse(id).ok_or_else(|| crate::error::AppError::not_found("host", id))?;
    let host = db::hosts::get(db, &host_id)
        .await?
        .ok_or_else(|| crate::error::AppError::not_found("host", id))?;
    let mut r = host.overcommit();
    let mut errors = Vec::new();
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
    ratio("cpu_overcommit", req.cpu_overcommit, &mut r.cpu);
    ratio("memory_overcommit", req.memory_overcommit, &mut r.memory);
    ratio("disk_overcommit", req.disk_overcommit, &mut r.disk);
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
    if !errors.is_empty() {
        return Err(crate::error::AppError::Invalid(errors));
    }
    db::hosts::update_overcommit(db, &host.id, r).await?;
    get(db, actor, id).await
}
