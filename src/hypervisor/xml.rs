//! Domain XML, written with an XML writer (every value escaped), never by string formatting.

use std::io;
use std::net::IpAddr;
use std::path::Path;

use quick_xml::Writer;
use quick_xml::events::BytesText;

/// XML namespace of carve's domain metadata.
pub const METADATA_NS: &str = "https://carve.dev/xmlns/domain/1";

/// Hardware virtualisation or software emulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainType {
    Kvm,
    Qemu,
}

impl DomainType {
    /// The libvirt name, as in `<domain type='…'>`.
    pub fn as_str(self) -> &'static str {
        match self {
            DomainType::Kvm => "kvm",
            DomainType::Qemu => "qemu",
        }
    }

    /// Parses `kvm` or `qemu`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "kvm" => Some(DomainType::Kvm),
            "qemu" => Some(DomainType::Qemu),
            _ => None,
        }
    }
}

/// How the guest boots.
#[derive(Debug, Clone, Copy)]
pub enum Boot<'a> {
    /// Direct kernel boot.
    Kernel {
        kernel: &'a Path,
        initrd: Option<&'a Path>,
        cmdline: &'a str,
    },
    /// The disk's own boot loader.
    Disk,
}

/// One guest port reachable on a host address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortForward {
    pub host_port: u16,
    pub guest_port: u16,
}

/// How the guest is networked.
#[derive(Debug, Clone, Copy)]
pub enum Network<'a> {
    /// passt user networking with TCP forwards on `address`.
    User {
        address: IpAddr,
        forwards: &'a [PortForward],
    },
    /// A host bridge.
    Bridge { bridge: &'a str },
    /// No network device.
    None,
}

/// Everything a domain definition is made from.
#[derive(Debug, Clone, Copy)]
pub struct DomainSpec<'a> {
    /// libvirt domain name.
    pub name: &'a str,
    /// libvirt domain UUID; stable for a VM so redefining it updates the same domain.
    pub uuid: &'a str,
    /// The VM's own name, shown as the domain title.
    pub title: &'a str,
    /// carve's VM id, kept in the metadata.
    pub vm_id: &'a str,
    /// Owning tenant, kept in the metadata.
    pub tenant_id: &'a str,
    pub domain_type: DomainType,
    /// QEMU machine type, e.g. `pc`.
    pub machine: &'a str,
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    pub boot: Boot<'a>,
    /// Root disk (qcow2).
    pub disk: Option<&'a Path>,
    /// NoCloud seed (ISO 9660, read-only).
    pub seed: Option<&'a Path>,
    /// File the serial console is written to.
    pub console_log: &'a Path,
    pub network: Network<'a>,
    /// Give the guest a channel for the QEMU guest agent.
    pub guest_agent: bool,
}

/// A stable UUID for a domain name (SHA-256 of it, shaped as a version-8 UUID).
pub fn domain_uuid(name: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(name.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(b).hyphenated().to_string()
}

/// Renders the domain XML.
pub fn domain_xml(spec: &DomainSpec<'_>) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    write_domain(&mut w, spec).expect("writing XML to memory cannot fail");
    String::from_utf8(w.into_inner()).expect("the writer emits UTF-8")
}

/// Text of a path (carve's own paths are UTF-8).
/// The host pty of a running domain's first serial port (`/dev/pts/N`), from its live XML.
pub fn serial_pty(xml: &str) -> Option<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut in_pty_serial = false;
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) if e.name().as_ref() == b"serial" => {
                in_pty_serial = e
                    .try_get_attribute("type")
                    .ok()
                    .flatten()
                    .is_some_and(|a| a.value.as_ref() == b"pty");
            }
            Event::End(e) if e.name().as_ref() == b"serial" => in_pty_serial = false,
            Event::Empty(e) if in_pty_serial && e.name().as_ref() == b"source" => {
                let path = e.try_get_attribute("path").ok().flatten()?;
                let path = String::from_utf8(path.value.into_owned()).ok()?;
                // Only a pty is a console; anything else in the XML is not opened.
                let n = path.strip_prefix("/dev/pts/")?;
                return (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(path);
            }
            Event::Eof => return None,
            _ => {}
        }
    }
}

fn path_text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn write_domain(w: &mut Writer<Vec<u8>>, s: &DomainSpec<'_>) -> io::Result<()> {
    w.create_element("domain")
        .with_attribute(("type", s.domain_type.as_str()))
        .write_inner_content(|w| {
            text(w, "name", s.name)?;
            text(w, "uuid", s.uuid)?;
            text(w, "title", s.title)?;
            w.create_element("metadata").write_inner_content(|w| {
                w.create_element("carve:vm")
                    .with_attribute(("xmlns:carve", METADATA_NS))
                    .with_attribute(("id", s.vm_id))
                    .with_attribute(("tenant", s.tenant_id))
                    .write_empty()?;
                Ok(())
            })?;
            w.create_element("memory")
                .with_attribute(("unit", "MiB"))
                .write_text_content(BytesText::new(&s.memory_mib.to_string()))?;
            text(w, "vcpu", &s.vcpus.to_string())?;
            write_os(w, s)?;
            w.create_element("features").write_inner_content(|w| {
                w.create_element("acpi").write_empty()?;
                w.create_element("apic").write_empty()?;
                Ok(())
            })?;
            if s.domain_type == DomainType::Kvm {
                w.create_element("cpu")
                    .with_attribute(("mode", "host-model"))
                    .write_empty()?;
            }
            w.create_element("clock")
                .with_attribute(("offset", "utc"))
                .write_empty()?;
            text(w, "on_poweroff", "destroy")?;
            text(w, "on_reboot", "restart")?;
            text(w, "on_crash", "destroy")?;
            w.create_element("devices")
                .write_inner_content(|w| write_devices(w, s))?;
            Ok(())
        })?;
    Ok(())
}

fn write_os(w: &mut Writer<Vec<u8>>, s: &DomainSpec<'_>) -> io::Result<()> {
    w.create_element("os").write_inner_content(|w| {
        w.create_element("type")
            .with_attribute(("arch", "x86_64"))
            .with_attribute(("machine", s.machine))
            .write_text_content(BytesText::new("hvm"))?;
        match s.boot {
            Boot::Kernel {
                kernel,
                initrd,
                cmdline,
            } => {
                text(w, "kernel", &path_text(kernel))?;
                if let Some(initrd) = initrd {
                    text(w, "initrd", &path_text(initrd))?;
                }
                text(w, "cmdline", cmdline)?;
            }
            Boot::Disk => {
                w.create_element("boot")
                    .with_attribute(("dev", "hd"))
                    .write_empty()?;
            }
        }
        Ok(())
    })?;
    Ok(())
}

fn write_devices(w: &mut Writer<Vec<u8>>, s: &DomainSpec<'_>) -> io::Result<()> {
    if let Some(disk) = s.disk {
        write_disk(w, disk, "qcow2", "vda", false)?;
    }
    if let Some(seed) = s.seed {
        write_disk(w, seed, "raw", "vdb", true)?;
    }
    match s.network {
        Network::User { address, forwards } => {
            w.create_element("interface")
                .with_attribute(("type", "user"))
                .write_inner_content(|w| {
                    w.create_element("backend")
                        .with_attribute(("type", "passt"))
                        .write_empty()?;
                    w.create_element("model")
                        .with_attribute(("type", "virtio"))
                        .write_empty()?;
                    let address = address.to_string();
                    for f in forwards {
                        w.create_element("portForward")
                            .with_attribute(("proto", "tcp"))
                            .with_attribute(("address", address.as_str()))
                            .write_inner_content(|w| {
                                w.create_element("range")
                                    .with_attribute(("start", f.host_port.to_string().as_str()))
                                    .with_attribute(("to", f.guest_port.to_string().as_str()))
                                    .write_empty()?;
                                Ok(())
                            })?;
                    }
                    Ok(())
                })?;
        }
        Network::Bridge { bridge } => {
            w.create_element("interface")
                .with_attribute(("type", "bridge"))
                .write_inner_content(|w| {
                    w.create_element("source")
                        .with_attribute(("bridge", bridge))
                        .write_empty()?;
                    w.create_element("model")
                        .with_attribute(("type", "virtio"))
                        .write_empty()?;
                    Ok(())
                })?;
        }
        Network::None => {}
    }
    // The serial port is a pty (the interactive console) whose output is also logged.
    w.create_element("serial")
        .with_attribute(("type", "pty"))
        .write_inner_content(|w| {
            w.create_element("log")
                .with_attribute(("file", path_text(s.console_log).as_str()))
                .with_attribute(("append", "on"))
                .write_empty()?;
            w.create_element("target")
                .with_attribute(("port", "0"))
                .write_empty()?;
            Ok(())
        })?;
    w.create_element("console")
        .with_attribute(("type", "pty"))
        .write_inner_content(|w| {
            w.create_element("target")
                .with_attribute(("type", "serial"))
                .with_attribute(("port", "0"))
                .write_empty()?;
            Ok(())
        })?;
    if s.guest_agent {
        // libvirt connects the host side itself (virDomainQemuAgentCommand and friends).
        w.create_element("channel")
            .with_attribute(("type", "unix"))
            .write_inner_content(|w| {
                w.create_element("target")
                    .with_attribute(("type", "virtio"))
                    .with_attribute(("name", "org.qemu.guest_agent.0"))
                    .write_empty()?;
                Ok(())
            })?;
    }
    w.create_element("memballoon")
        .with_attribute(("model", "none"))
        .write_empty()?;
    Ok(())
}

fn write_disk(
    w: &mut Writer<Vec<u8>>,
    path: &Path,
    format: &str,
    dev: &str,
    readonly: bool,
) -> io::Result<()> {
    w.create_element("disk")
        .with_attribute(("type", "file"))
        .with_attribute(("device", "disk"))
        .write_inner_content(|w| {
            let driver = w
                .create_element("driver")
                .with_attribute(("name", "qemu"))
                .with_attribute(("type", format));
            if readonly {
                driver.write_empty()?;
            } else {
                driver.with_attribute(("discard", "unmap")).write_empty()?;
            }
            w.create_element("source")
                .with_attribute(("file", path_text(path).as_str()))
                .write_empty()?;
            w.create_element("target")
                .with_attribute(("dev", dev))
                .with_attribute(("bus", "virtio"))
                .write_empty()?;
            if readonly {
                w.create_element("readonly").write_empty()?;
            }
            Ok(())
        })?;
    Ok(())
}

/// `<name>value</name>`, escaped.
fn text(w: &mut Writer<Vec<u8>>, name: &str, value: &str) -> io::Result<()> {
    w.create_element(name)
        .write_text_content(BytesText::new(value))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(network: Network<'a>, boot: Boot<'a>) -> DomainSpec<'a> {
        DomainSpec {
            name: "carve-vm_0123456789abcdef",
            uuid: "8d3c2f9e-1b7a-4c5d-9e0f-123456789abc",
            title: "web1",
            vm_id: "vm_0123456789abcdef",
            tenant_id: "tn_0000000000000000",
            domain_type: DomainType::Qemu,
            machine: "pc",
            vcpus: 2,
            memory_mib: 256,
            boot,
            disk: Some(Path::new(
                "/var/lib/carve/vms/vm_0123456789abcdef/disk.qcow2",
            )),
            seed: Some(Path::new("/var/lib/carve/vms/vm_0123456789abcdef/seed.iso")),
            console_log: Path::new("/var/lib/carve/vms/vm_0123456789abcdef/console.log"),
            network,
            guest_agent: false,
        }
    }

    #[test]
    fn user_network_kernel_boot_domain() {
        let forwards = [PortForward {
            host_port: 20001,
            guest_port: 80,
        }];
        let boot = Boot::Kernel {
            kernel: Path::new("/img/vmlinuz"),
            initrd: Some(Path::new("/img/initrd.img")),
            cmdline: "console=ttyS0 root=/dev/vda",
        };
        let xml = domain_xml(&spec(
            Network::User {
                address: "127.0.0.1".parse().unwrap(),
                forwards: &forwards,
            },
            boot,
        ));
        for needle in [
            "<domain type=\"qemu\">",
            "<name>carve-vm_0123456789abcdef</name>",
            "<uuid>8d3c2f9e-1b7a-4c5d-9e0f-123456789abc</uuid>",
            "<memory unit=\"MiB\">256</memory>",
            "<vcpu>2</vcpu>",
            "<kernel>/img/vmlinuz</kernel>",
            "<cmdline>console=ttyS0 root=/dev/vda</cmdline>",
            "<backend type=\"passt\"/>",
            "<portForward proto=\"tcp\" address=\"127.0.0.1\">",
            "<range start=\"20001\" to=\"80\"/>",
            "<target dev=\"vdb\" bus=\"virtio\"/>",
            "<readonly/>",
            "<serial type=\"pty\">",
            "<log file=\"/var/lib/carve/vms/vm_0123456789abcdef/console.log\" append=\"on\"/>",
            "<console type=\"pty\">",
            "<target type=\"serial\" port=\"0\"/>",
            "<carve:vm xmlns:carve=\"https://carve.dev/xmlns/domain/1\" id=\"vm_0123456789abcdef\"",
        ] {
            assert!(xml.contains(needle), "missing {needle} in\n{xml}");
        }
        assert!(!xml.contains("<cpu"), "TCG guests use QEMU's default CPU");
    }

    #[test]
    fn the_serial_pty_is_read_from_live_xml() {
        let live = r#"<domain><devices><console type="pty" tty="/dev/pts/9"><source path="/dev/pts/9"/></console><serial type="pty"><source path="/dev/pts/3"/><log file="/x/console.log" append="on"/><target port="0"/></serial></devices></domain>"#;
        assert_eq!(serial_pty(live).as_deref(), Some("/dev/pts/3"));
        let odd = r#"<domain><devices><serial type="pty"><source path="/etc/shadow"/></serial></devices></domain>"#;
        assert_eq!(serial_pty(odd), None, "only a pty is opened");
        let file = r#"<domain><devices><serial type="file"><source path="/dev/pts/1"/></serial></devices></domain>"#;
        assert_eq!(serial_pty(file), None);
    }

    #[test]
    fn domain_uuids_are_stable_and_distinct() {
        let a = domain_uuid("carve-vm_0123456789abcdef");
        assert_eq!(a, domain_uuid("carve-vm_0123456789abcdef"));
        assert_ne!(a, domain_uuid("carve-vm_0123456789abcdee"));
        assert_eq!(uuid::Uuid::parse_str(&a).unwrap().get_version_num(), 8);
    }

    #[test]
    fn bridge_and_disk_boot_and_escaping() {
        let mut s = spec(Network::Bridge { bridge: "br0" }, Boot::Disk);
        s.domain_type = DomainType::Kvm;
        s.title = "a<b>&'\"";
        let xml = domain_xml(&s);
        assert!(xml.contains("<source bridge=\"br0\"/>"), "{xml}");
        assert!(xml.contains("<boot dev=\"hd\"/>"));
        assert!(xml.contains("<cpu mode=\"host-model\"/>"));
        assert!(
            xml.contains("<title>a&lt;b&gt;&amp;&apos;&quot;</title>"),
            "{xml}"
        );
        // The whole document still parses.
        let mut reader = quick_xml::Reader::from_str(&xml);
        loop {
            match reader.read_event().unwrap() {
                quick_xml::events::Event::Eof => break,
                _ => continue,
            }
        }
    }
}
