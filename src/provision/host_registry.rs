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
use crate::domain::Invalid;
use crate::domain::capacity::Overcommit;
use crate::domain::ids::HostId;
use crate::domain::names::ResourceName;
use crate::error::AppError;
use crate::hypervisor::HypervisorError;

/// The storage pool carve makes on a registered host.
pub const POOL: &str = "carve";
/// Where that pool's directory is on a host reached through a `/system` URI, when the admin
/// does not say.
pub const DEFAULT_SYSTEM_POOL_PATH: &str = "/var/lib/carve/pool";
/// Longest libvirt URI or path accepted.
const MAX_TEXT: usize = 1024;

/// What an admin gives to register a host.
#[derive(Debug, Clone, Default)]
pub struct RegisterHost {
    /// `qemu:///system`, `qemu+ssh://user@host/system`, `qemu+tls://host/system`, or a
    /// `/session` URI.
    pub libvirt_uri: String,
    /// Defaults to the host name libvirt reports.
    pub name: Option<String>,
    /// `kvm` or `qemu`; by default `kvm` when the host offers it, else `qemu`.
    pub domain_type: Option<String>,
    /// The storage pool's directory on the host (needed for a `/session` URI).
    pub storage_path: Option<String>,
    pub labels: Vec<String>,
    /// Where the host's forwards listen (default: `network.forward_address`).
    pub forward_address: Option<String>,
    /// The host ports forwards take, `first-last` (default: `network.forward_ports`).
    pub forward_ports: Option<String>,
    pub cpu_overcommit: Option<f64>,
    pub memory_overcommit: Option<f64>,
    pub disk_overcommit: Option<f64>,
    pub reserved_memory_mib: Option<i64>,
}

/// The request's fields, checked.
struct Checked {
    uri: String,
    name: Option<String>,
    domain_type: Option<&'static str>,
    storage_path: String,
    labels: Vec<String>,
    forward_address: Option<IpAddr>,
    forward_ports: Option<PortRange>,
    ratios: Overcommit,
}

/// Checks a libvirt URI's shape: a QEMU driver URI over a transport libvirt knows, naming
/// `/system` or `/session`; libvirt's test driver only when carve itself runs on it.
fn check_uri(uri: &str, configured: &str, errors: &mut Vec<Invalid>) {
    let field = "libvirt_uri";
    if uri.is_empty() || uri.len() > MAX_TEXT || uri.chars().any(|c| c.is_control() || c == ' ') {
        errors.push(Invalid::new(
            field,
            format!("give a libvirt URI of 1 to {MAX_TEXT} characters without spaces, e.g. qemu+ssh://root@host2/system"),
        ));
        return;
    }
    let Some((scheme, rest)) = uri.split_once("://") else {
        errors.push(Invalid::new(
            field,
            "is not a URI: use e.g. qemu+ssh://root@host2/system",
        ));
        return;
    };
    let testing = configured.starts_with("test:");
    let known = matches!(
        scheme,
        "qemu" | "qemu+ssh" | "qemu+libssh" | "qemu+libssh2" | "qemu+tls" | "qemu+unix"
    ) || (testing && scheme == "test");
    if scheme == "qemu+tcp" {
        errors.push(Invalid::new(
            field,
            "qemu+tcp sends everything (cloud-init seeds with password hashes too) unencrypted: use qemu+ssh:// or qemu+tls://",
        ));
        return;
    }
    if !known {
        errors.push(Invalid::new(
            field,
            format!("scheme {scheme:?} is not a QEMU driver URI: use qemu:// (this machine), qemu+ssh:// or qemu+tls://"),
        ));
        return;
    }
    // Parameters that run programs or open other sockets (command, netcat, socket, ...) are
    // not for an API: only the ones that pick keys and host-key checks.
    if let Some((_, query)) = rest.split_once('?') {
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let key = pair.split('=').next().unwrap_or("");
            let allowed = [
                "keyfile",
                "known_hosts",
                "known_hosts_verify",
                "sshauth",
                "pkipath",
                "no_verify",
                "no_tty",
            ];
            if !allowed.contains(&key) {
                errors.push(Invalid::new(
                    field,
                    format!(
                        "the URI parameter {:?} is not accepted: use {}",
                        key.chars().take(40).collect::<String>(),
                        allowed.join(", ")
                    ),
                ));
                return;
            }
        }
    }
    let path = rest
        .split_once('/')
        .map(|(_, p)| p.split('?').next().unwrap_or(""))
        .unwrap_or("");
    if scheme != "test" && !matches!(path, "system" | "session") {
        errors.push(Invalid::new(
            field,
            format!("{uri:?} names /{path}: a QEMU URI ends in /system or /session"),
        ));
    }
}

/// Checks every field, collecting all the problems at once.
fn check(req: &RegisterHost, p: &Provisioner) -> Result<Checked, AppError> {
    let mut errors = Vec::new();
    check_uri(&req.libvirt_uri, &p.settings.libvirt_uri, &mut errors);
    let name = req
        .name
        .as_deref()
        .and_then(|n| {
            ResourceName::parse(n, "name")
                .map_err(|e| errors.push(e))
                .ok()
        })
        .map(|n| n.as_str().to_string());
    let domain_type = match req.domain_type.as_deref() {
        None => None,
        Some("kvm") => Some("kvm"),
        Some("qemu") => Some("qemu"),
        Some(other) => {
            errors.push(Invalid::new(
                "domain_type",
                format!("{:?} is not a domain type: use kvm (hardware virtualisation) or qemu (software emulation)", other.chars().take(40).collect::<String>()),
            ));
            None
        }
    };
    let session = req
        .libvirt_uri
        .split('?')
        .next()
        .unwrap_or("")
        .ends_with("/session");
    let storage_path = match req.storage_path.as_deref() {
        Some(path) => {
            let ok = path.starts_with('/')
                && path.len() <= MAX_TEXT
                && !path.chars().any(char::is_control)
                && !path.split('/').any(|part| part == ".." || part == ".");
            let system = [
                "", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc",
                "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib",
                "/var/tmp", "/var/log", "/var/run",
            ];
            if !ok {
                errors.push(Invalid::new(
                    "storage_path",
                    format!(
                        "give an absolute directory of at most {MAX_TEXT} characters, without '..'"
                    ),
                ));
            } else if system.contains(&path.trim_end_matches('/')) {
                errors.push(Invalid::new(
                    "storage_path",
                    "that is a system directory: give a directory of carve's own, e.g. /var/lib/carve/pool",
                ));
            }
            path.trim_end_matches('/').to_string()
        }
        None if session => {
            errors.push(Invalid::new(
                "storage_path",
                "a /session URI needs storage_path: a directory on the host its user may create, e.g. /home/user/carve-pool",
            ));
            String::new()
        }
        None => DEFAULT_SYSTEM_POOL_PATH.to_string(),
    };
    let labels = crate::domain::host::labels("labels", &req.labels)
        .map_err(|e| errors.push(e))
        .unwrap_or_default();
    let forward_address = req.forward_address.as_deref().and_then(|a| {
        a.parse::<IpAddr>()
            .map_err(|_| {
                errors.push(Invalid::new(
                    "forward_address",
                    format!(
                        "{:?} is not an IP address",
                        a.chars().take(60).collect::<String>()
                    ),
                ))
            })
            .ok()
    });
    let forward_ports = req.forward_ports.as_deref().and_then(|r| {
        r.parse::<PortRange>()
            .map_err(|e| errors.push(Invalid::new("forward_ports", e)))
            .ok()
    });
    let c = &p.settings.default_ratios;
    let mut ratios = Overcommit {
        cpu: c.cpu,
        memory: c.memory,
        disk: c.disk,
        reserved_memory_mib: c.reserved_memory_mib,
    };
    host::check_ratios(
        req.cpu_overcommit,
        req.memory_overcommit,
        req.disk_overcommit,
        &mut ratios,
        &mut errors,
    );
    if let Some(m) = req.reserved_memory_mib {
        if m >= 0 {
            ratios.reserved_memory_mib = m as u64;
        } else {
            errors.push(Invalid::new("reserved_memory_mib", "use 0 or more"));
        }
    }
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    Ok(Checked {
        uri: req.libvirt_uri.clone(),
        name,
        domain_type,
        storage_path,
        labels,
        forward_address,
        forward_ports,
        ratios,
    })
}

/// Whether two ranges share a port.
fn overlaps(a: PortRange, b: PortRange) -> bool {
    a.first <= b.last && b.first <= a.last
}

/// The forward range and address a host uses (its own, or the configured ones).
fn forwards_of(p: &Provisioner, h: &db::hosts::HostRow) -> (IpAddr, PortRange) {
    let address = h
        .forward_address
        .as_deref()
        .and_then(|a| a.parse().ok())
        .unwrap_or(p.settings.network.forward_address);
    let range = match (h.forward_port_first, h.forward_port_last) {
        (Some(first), Some(last)) => PortRange {
            first: first as u16,
            last: last as u16,
        },
        _ => p.settings.network.forward_ports,
    };
    (address, range)
}

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
        let (a, r) = forwards_of(p, &other);
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
    let (old_address, old_range) = forwards_of(p, row);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn uri_errors(uri: &str, configured: &str) -> Vec<String> {
        let mut errors = Vec::new();
        check_uri(uri, configured, &mut errors);
        errors.into_iter().map(|e| e.message).collect()
    }

    #[test]
    fn uris_must_name_a_qemu_driver_and_system_or_session() {
        for ok in [
            "qemu:///system",
            "qemu+ssh://root@host2/system",
            "qemu+ssh://u@127.0.0.1:2222/session?keyfile=/k&no_verify=1",
            "qemu+tls://host2.example/system",
        ] {
            assert!(uri_errors(ok, "qemu:///system").is_empty(), "{ok}");
        }
        for bad in [
            "",
            "xen:///system",
            "qemu+ssh://root@host2/",
            "not a uri",
            "qemu:///system\n",
            "test:///default",
            "qemu+tcp://host2/system",
            "qemu+ssh://root@host2/system?command=/bin/evil",
            "qemu+ssh://root@host2/system?keyfile=/k&netcat=/bin/nc",
            "qemu+unix:///system?socket=/tmp/other",
        ] {
            assert!(!uri_errors(bad, "qemu:///system").is_empty(), "{bad:?}");
        }
        assert!(uri_errors("test:///default", "test:///default").is_empty());
    }

    #[test]
    fn ranges_overlap_when_they_share_a_port() {
        let r = |first, last| PortRange { first, last };
        assert!(overlaps(r(100, 200), r(200, 300)));
        assert!(overlaps(r(100, 200), r(150, 160)));
        assert!(!overlaps(r(100, 200), r(201, 300)));
    }
}
