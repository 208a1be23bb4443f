//! The fields of a host registration, checked before carve connects anywhere: the URI's
//! shape and parameters, the storage path, labels, forwards and ratios.

use std::net::IpAddr;

use super::super::Provisioner;
use super::super::host;
use super::DEFAULT_SYSTEM_POOL_PATH;
use crate::config::PortRange;
use crate::domain::Invalid;
use crate::domain::capacity::Overcommit;
use crate::domain::names::ResourceName;
use crate::error::AppError;

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
pub(super) struct Checked {
    pub uri: String,
    pub name: Option<String>,
    pub domain_type: Option<&'static str>,
    pub storage_path: String,
    pub labels: Vec<String>,
    pub forward_address: Option<IpAddr>,
    pub forward_ports: Option<PortRange>,
    pub ratios: Overcommit,
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
pub(super) fn check(req: &RegisterHost, p: &Provisioner) -> Result<Checked, AppError> {
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
pub(super) fn overlaps(a: PortRange, b: PortRange) -> bool {
    a.first <= b.last && b.first <= a.last
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
