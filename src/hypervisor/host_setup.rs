//! What carve checks on a host before it places VMs there, all through libvirt: the domain
//! types it can run, whether passt networking is there, and the storage pool carve keeps its
//! disks in (found, or defined, built and started).

use quick_xml::Reader;
use quick_xml::events::Event;
use virt::connect::Connect;
use virt::error::ErrorNumber;
use virt::storage_pool::StoragePool;

use super::HypervisorError;

/// What a host offers guests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCapabilities {
    /// The machine's UUID as libvirt reports it (the same for every daemon on one machine).
    pub uuid: String,
    /// The host's CPU architecture, e.g. `x86_64`.
    pub arch: String,
    /// Domain types that run full-virtualisation guests of that architecture (`kvm`, `qemu`;
    /// `test` on libvirt's test driver).
    pub domain_types: Vec<String>,
}

/// What a domain type can do on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainSupport {
    /// Guests can use passt for user-mode networking with port forwards.
    pub passt: bool,
}

/// A storage pool as the host reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolFacts {
    /// The pool's directory on the host.
    pub path: String,
    pub capacity_bytes: u64,
    pub available_bytes: u64,
}

/// Reads the host architecture and the domain types of its `hvm` guests from the
/// capabilities XML.
pub fn parse_capabilities(xml: &str) -> Result<HostCapabilities, HypervisorError> {
    let bad = |e: &dyn std::fmt::Display| {
        HypervisorError::Libvirt(format!("unreadable capabilities XML: {e}"))
    };
    let mut reader = Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut host_arch = String::new();
    let mut uuid = String::new();
    // Per guest: its os_type, its arch and that arch's domain types.
    let mut guests: Vec<(String, String, Vec<String>)> = Vec::new();
    loop {
        let event = reader.read_event().map_err(|e| bad(&e))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                let attr = |key: &str| {
                    e.attributes()
                        .flatten()
                        .find(|a| a.key.as_ref() == key.as_bytes())
                        .map(|a| String::from_utf8_lossy(&a.value).into_owned())
                };
                match (path_is(&path, &["capabilities"]), name.as_str()) {
                    (true, "guest") => guests.push((String::new(), String::new(), Vec::new())),
                    _ if path_is(&path, &["capabilities", "guest"]) && name == "arch" => {
                        if let Some(g) = guests.last_mut() {
                            g.1 = attr("name").unwrap_or_default();
                        }
                    }
                    _ if path_is(&path, &["capabilities", "guest", "arch"]) && name == "domain" => {
                        if let (Some(g), Some(t)) = (guests.last_mut(), attr("type")) {
                            g.2.push(t);
                        }
                    }
                    _ => {}
                }
                if matches!(event, Event::Start(_)) {
                    path.push(name);
                }
            }
            Event::Text(t) => {
                let text = t.decode().map_err(|e| bad(&e))?.trim().to_string();
                if path_is(&path, &["capabilities", "host", "cpu", "arch"]) {
                    host_arch = text;
                } else if path_is(&path, &["capabilities", "host", "uuid"]) {
                    uuid = text;
                } else if path_is(&path, &["capabilities", "guest", "os_type"])
                    && let Some(g) = guests.last_mut()
                {
                    g.0 = text;
                }
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let mut domain_types = Vec::new();
    for (os_type, arch, types) in guests {
        if os_type == "hvm" && arch == host_arch {
            for t in types {
                if !domain_types.contains(&t) {
                    domain_types.push(t);
                }
            }
        }
    }
    Ok(HostCapabilities {
        uuid,
        arch: host_arch,
        domain_types,
    })
}

fn path_is(path: &[String], want: &[&str]) -> bool {
    path.len() == want.len() && path.iter().zip(want).all(|(a, b)| a == b)
}

/// Whether the domain capabilities XML offers passt as an interface backend.
pub fn offers_passt(domcaps: &str) -> bool {
    // <interface supported='yes'><enum name='backendType'><value>passt</value>…
    domcaps
        .split("<interface")
        .nth(1)
        .and_then(|rest| rest.split("</interface>").next())
        .is_some_and(|iface| iface.contains("<value>passt</value>"))
}

/// Reads the host's capabilities.
pub fn capabilities(conn: &Connect) -> Result<HostCapabilities, HypervisorError> {
    let xml = conn.capabilities().map_err(|e| lv(&e))?;
    parse_capabilities(&xml)
}

/// Checks that guests of `domain_type` can be made on the host (libvirt probes the emulator
/// for it) and whether they can use passt.
pub fn domain_support(
    conn: &Connect,
    arch: &str,
    domain_type: &str,
) -> Result<DomainSupport, HypervisorError> {
    if domain_type == "test" {
        // libvirt's test driver has no emulator to probe; its guests need no network.
        return Ok(DomainSupport { passt: true });
    }
    let xml = conn
        .domain_capabilities(None, Some(arch), None, Some(domain_type), 0)
        .map_err(|e| lv(&e))?;
    Ok(DomainSupport {
        passt: offers_passt(&xml),
    })
}

/// The storage pool XML of a directory pool only its owner (and QEMU, by path) can enter.
fn pool_xml(name: &str, path: &str) -> Result<String, HypervisorError> {
    let mut w = quick_xml::Writer::new(Vec::new());
    let xml_err = |e: std::io::Error| HypervisorError::Libvirt(format!("pool XML: {e}"));
    w.create_element("pool")
        .with_attribute(("type", "dir"))
        .write_inner_content(|w| {
            w.create_element("name")
                .write_text_content(quick_xml::events::BytesText::new(name))?;
            w.create_element("target").write_inner_content(|w| {
                w.create_element("path")
                    .write_text_content(quick_xml::events::BytesText::new(path))?;
                w.create_element("permissions").write_inner_content(|w| {
                    w.create_element("mode")
                        .write_text_content(quick_xml::events::BytesText::new("0711"))?;
                    Ok(())
                })?;
                Ok(())
            })?;
            Ok(())
        })
        .map_err(xml_err)?;
    String::from_utf8(w.into_inner()).map_err(|e| HypervisorError::Libvirt(e.to_string()))
}

/// The named pool: found (and started if it was not), or defined as a directory pool at
/// `path`, built, started and marked to start with the host's libvirt.
pub fn ensure_pool(conn: &Connect, name: &str, path: &str) -> Result<PoolFacts, HypervisorError> {
    let pool = match conn.lookup_storage_pool_by_name(name) {
        Ok(pool) => pool,
        Err(e) if e.code().is_known_and(|c| c == ErrorNumber::NoStoragePool) => {
            let pool: StoragePool = conn
                .define_storage_pool_xml(&pool_xml(name, path)?, 0)
                .map_err(|e| lv(&e))?;
            if let Err(e) = pool.build(0) {
                let _ = pool.undefine();
                return Err(HypervisorError::Libvirt(format!(
                    "cannot create the storage directory {path}: {}",
                    e.message()
                )));
            }
            pool
        }
        Err(e) => return Err(lv(&e)),
    };
    if !pool.is_active().map_err(|e| lv(&e))? {
        pool.create(0).map_err(|e| {
            HypervisorError::Libvirt(format!("cannot start storage pool {name}: {}", e.message()))
        })?;
    }
    if !pool.autostart().unwrap_or(true) {
        let _ = pool.set_autostart(true);
    }
    let info = pool.info().map_err(|e| lv(&e))?;
    let xml = pool.xml_desc(0).map_err(|e| lv(&e))?;
    let path = pool_path(&xml).unwrap_or_else(|| path.to_string());
    Ok(PoolFacts {
        path,
        capacity_bytes: info.capacity,
        available_bytes: info.available,
    })
}

/// The target directory named in a pool's XML.
pub fn pool_path(xml: &str) -> Option<String> {
    let target = xml.split("<target>").nth(1)?;
    let path = target.split("<path>").nth(1)?.split("</path>").next()?;
    Some(path.trim().to_string())
}

fn lv(e: &virt::error::Error) -> HypervisorError {
    HypervisorError::Libvirt(e.message().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: &str = "<capabilities><host><uuid>x</uuid><cpu><arch>x86_64</arch><model>Skylake</model></cpu></host>
      <guest><os_type>hvm</os_type><arch name='i686'><domain type='qemu'/></arch></guest>
      <guest><os_type>hvm</os_type><arch name='x86_64'><wordsize>64</wordsize>
        <emulator>/usr/bin/qemu-system-x86_64</emulator><machine>pc</machine>
        <domain type='qemu'/><domain type='kvm'/></arch></guest></capabilities>";

    #[test]
    fn capabilities_give_the_host_arch_and_its_domain_types() {
        let caps = parse_capabilities(CAPS).unwrap();
        assert_eq!(caps.arch, "x86_64");
        assert_eq!(caps.uuid, "x");
        assert_eq!(caps.domain_types, vec!["qemu", "kvm"]);
        let none = parse_capabilities(
            "<capabilities><host><cpu><arch>aarch64</arch></cpu></host></capabilities>",
        )
        .unwrap();
        assert!(none.domain_types.is_empty());
    }

    #[test]
    fn passt_is_read_from_the_interface_backends() {
        let with = "<domainCapabilities><devices><interface supported='yes'><enum name='backendType'>\
            <value>default</value><value>passt</value></enum></interface></devices></domainCapabilities>";
        let without = "<domainCapabilities><devices><interface supported='yes'><enum name='backendType'>\
            <value>default</value></enum></interface><x><value>passt</value></x></devices></domainCapabilities>";
        assert!(offers_passt(with));
        assert!(!offers_passt(without));
    }

    #[test]
    fn pools_are_found_or_made_on_the_test_driver() {
        virt::error::clear_error_callback();
        let conn = Connect::open(Some("test:///default")).unwrap();
        let made = ensure_pool(&conn, "carve-unit", "/carve-unit").unwrap();
        assert_eq!(made.path, "/carve-unit");
        let again = ensure_pool(&conn, "carve-unit", "/elsewhere").unwrap();
        assert_eq!(
            again.path, "/carve-unit",
            "an existing pool keeps its directory"
        );
        let caps = capabilities(&conn).unwrap();
        assert!(caps.domain_types.contains(&"test".to_string()), "{caps:?}");
    }
}
