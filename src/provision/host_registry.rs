//! Adding and removing hypervisor hosts (admins). A host is reached only through its libvirt
//! URI; before carve accepts it, it connects, reads what the host offers, checks that guests
//! of the chosen domain type can be made and that passt is there for port forwards, and finds
//! or makes the storage pool its disks will live in. Each missing piece is a 4xx naming it.

use std::net::IpAddr;

use super::Provisioner;
use super::host::{self, HostView};
use crate::auth::Principal;
use crate::config::{NetworkMode, PortRange};
use crate::db::{self, hosts::NewHost};
use crate::domain::ids::HostId;
use crate::error::AppError;
use crate::hypervisor::HypervisorError;

mod fields;

pub use fields::RegisterHost;
use fields::{check, overlaps};

/// The storage pool carve makes on a registered host.
pub const POOL: &str = "carve";
/// Where that pool's directory is on a host reached through a `/system` URI, when the admin
/// does not say.
pub const DEFAULT_SYSTEM_POOL_PATH: &str = "/var/lib/carve/pool";

/// Refuses a forward range that shares ports with another host's on the same address.
async fn check_forwards(
    p: &Provisioner,
    me: Option<&HostId>,
    address: IpAddr,
    range: PortRange,
) -> Result<(), AppError> {
    for other in db::hosts::list(&p.db).await? {
        if Some(&other.id) == me {
            continue;
        }
        let (a, r) = p.settings.forwards_of(&other);
        if a == address && overlaps(r, range) {
            return Err(AppError::Conflict(format!(
                "forwards on {address} ports {}-{} would share ports with host {} ({}-{}); give the host its own forward_ports or forward_address",
                range.first, range.last, other.name, r.first, r.last
            )));
        }
    }
    Ok(())
}

/// Maps a libvirt failure during the checks to a 422 on `field` that says what to do.
fn refused(field: &'static str, what: String) -> impl FnOnce(HypervisorError) -> AppError {
    move |e| AppError::invalid(field, format!("{what}: {e}"))
}

/// Registers a host after checking it (admins).
pub async fn register(
    p: &Provisioner,
    actor: &Principal,
    req: RegisterHost,
) -> Result<HostView, AppError> {
    actor.require_admin()?;
    let c = check(&req, p)?;
    if let Some(h) = db::hosts::get_by_uri(&p.db, &c.uri).await? {
        return Err(AppError::Conflict(format!(
            "host {} ({}) is already registered with this URI",
            h.name, h.id
        )));
    }
    let address = c
        .forward_address
        .unwrap_or(p.settings.network.forward_address);
    let range = c.forward_ports.unwrap_or(p.settings.network.forward_ports);
    check_forwards(p, None, address, range).await?;
    let hv = super::fleet::connect(&c.uri).await.map_err(|e| {
        AppError::invalid(
            "libvirt_uri",
            format!("{e}. Check that libvirt runs there, that this machine reaches it (for qemu+ssh: user, key and host key) and that the URI is right"),
        )
    })?;
    let caps = hv.call(|h| h.capabilities()).await.map_err(refused(
        "libvirt_uri",
        "cannot read the host's capabilities".into(),
    ))?;
    let offered: Vec<&str> = caps
        .domain_types
        .iter()
        .map(String::as_str)
        .filter(|t| matches!(*t, "kvm" | "qemu" | "test"))
        .collect();
    let domain_type = match c.domain_type {
        Some(t) if offered.contains(&t) => t,
        Some(t) => {
            return Err(AppError::invalid(
                "domain_type",
                if offered.is_empty() {
                    format!(
                        "the host runs no {} guests at all: install qemu-system-x86 and libvirt's QEMU driver there",
                        caps.arch
                    )
                } else {
                    format!(
                        "the host has no {t} for {} guests (it offers {}); register it with one of those, or enable {t} there",
                        caps.arch,
                        offered.join(", ")
                    )
                },
            ));
        }
        None if offered.contains(&"kvm") => "kvm",
        None if offered.contains(&"qemu") => "qemu",
        None if offered.contains(&"test") => "qemu",
        None => {
            return Err(AppError::invalid(
                "libvirt_uri",
                format!(
                    "the host runs no {} guests: install qemu-system-x86 and libvirt's QEMU driver there",
                    caps.arch
                ),
            ));
        }
    };
    let probe_type = if offered == ["test"] {
        "test"
    } else {
        domain_type
    };
    let arch = caps.arch.clone();
    let support = hv
        .call(move |h| h.domain_support(&arch, probe_type))
        .await
        .map_err(refused(
            "domain_type",
            format!("libvirt on the host cannot make {domain_type} guests"),
        ))?;
    if p.settings.network.mode == NetworkMode::User && !support.passt {
        return Err(AppError::invalid(
            "libvirt_uri",
            "the host lacks passt, which carve's user-mode networking and port forwards need: install the passt package there",
        ));
    }
    let path = c.storage_path.clone();
    let pool = hv
        .call(move |h| h.ensure_pool(POOL, &path))
        .await
        .map_err(refused(
            "storage_path",
            format!("cannot make storage pool {POOL} at {} on the host; give a storage_path libvirt there may create", c.storage_path),
        ))?;
    if req.storage_path.is_some() && pool.path != c.storage_path {
        return Err(AppError::invalid(
            "storage_path",
            format!(
                "the host already has a storage pool {POOL} at {}; leave storage_path out, or give that directory",
                pool.path
            ),
        ));
    }
    let shared = db::hosts::list(&p.db)
        .await?
        .into_iter()
        .find(|h| h.machine_id == caps.uuid && h.storage_path == pool.path);
    if let Some(other) = shared {
        return Err(AppError::Conflict(format!(
            "{} on that machine already holds host {}'s disks; two hosts must not share a storage directory (give another storage_path, or it is the same host)",
            pool.path, other.name
        )));
    }
    let (hostname, physical) = host::physical(&hv, POOL).await.map_err(|e| {
        AppError::invalid("libvirt_uri", format!("cannot read the host's size: {e:#}"))
    })?;
    let name = c.name.unwrap_or(hostname);
    let forward_address = c.forward_address.map(|a| a.to_string());
    let inserted = db::hosts::insert(
        &p.db,
        &NewHost {
            name: &name,
            uri: &c.uri,
            domain_type,
            physical,
            ratios: c.ratios,
            labels: &c.labels,
            forward_address: forward_address.as_deref(),
            forward_ports: c.forward_ports.map(|r| (r.first, r.last)),
            storage_pool: POOL,
            storage_path: &pool.path,
            machine_id: &caps.uuid,
        },
    )
    .await;
    let id = match inserted {
        Ok(id) => id,
        Err(e) if db::is_unique_violation(&e) => {
            return Err(AppError::Conflict(format!(
                "a host named {name} or with this URI is already registered; give another name"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(host = %name, uri = %c.uri, domain_type, cpus = physical.cpus, memory_mib = physical.memory_mib, disk_gib = physical.disk_gib, "host registered");
    host::get(p, actor, id.as_str()).await
}

/// Removes a host that holds no VM (admins). The host carve runs on cannot be removed.
pub async fn remove(p: &Provisioner, actor: &Principal, id: &str) -> Result<(), AppError> {
    actor.require_admin()?;
    let host_id = HostId::parse(id).ok_or_else(|| AppError::not_found("host", id))?;
    let row = db::hosts::get(&p.db, &host_id)
        .await?
        .ok_or_else(|| AppError::not_found("host", id))?;
    if host_id == p.local_host {
        return Err(AppError::Conflict(format!(
            "host {} is the one carve runs on (libvirt.uri); it cannot be removed",
            row.name
        )));
    }
    if !db::hosts::delete_if_empty(&p.db, &host_id).await? {
        let live = db::vms::list_on_host(&p.db, &host_id).await?.len();
        return Err(AppError::Conflict(format!(
            "host {} still holds {live} VM(s); move them away (POST /api/v1/hosts/{id}/evacuate) or delete them first",
            row.name
        )));
    }
    p.fleet.forget(&host_id);
    tracing::info!(host = %row.name, uri = %row.libvirt_uri, "host removed");
    Ok(())
}

/// Checks and applies a change of a host's forwards (admins): no overlap with another host's.
pub(crate) async fn check_new_forwards(
    p: &Provisioner,
    row: &db::hosts::HostRow,
    address: Option<Option<IpAddr>>,
    range: Option<Option<PortRange>>,
) -> Result<(), AppError> {
    let (old_address, old_range) = p.settings.forwards_of(row);
    let address = match address {
        None => old_address,
        Some(a) => a.unwrap_or(p.settings.network.forward_address),
    };
    let range = match range {
        None => old_range,
        Some(r) => r.unwrap_or(p.settings.network.forward_ports),
    };
    check_forwards(p, Some(&row.id), address, range).await
}
