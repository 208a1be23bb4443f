//! The configuration's sections: the listeners, libvirt and networking, capacity, the
//! reconciler, quotas, authentication and logging, each with defaults that run as-is.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The web panel and REST API listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Seconds a client has to send a request's headers; also how long an idle kept-alive
    /// connection stays open.
    pub header_timeout_secs: u64,
    /// Seconds a request may take until its answer starts (then 408); a streamed body is not cut.
    pub request_timeout_secs: u64,
    /// HTTP connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// HTTP connections one client address may hold at once; more are closed at once.
    pub max_connections_per_client: usize,
    /// Addresses of reverse proxies whose `X-Forwarded-For` names the real client.
    pub trusted_proxies: Vec<IpAddr>,
    /// Live event streams (`/events`, `/api/v1/events`, a VM page's console) held at once;
    /// more get 429.
    pub max_event_streams: usize,
    /// Live streams one user may hold at once (a page open in many tabs holds one each).
    pub max_event_streams_per_user: usize,
    /// Seconds an event stream lasts before the client reconnects (and is checked again).
    pub event_stream_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 256 * 1024,
            header_timeout_secs: 30,
            request_timeout_secs: 120,
            max_connections: 4096,
            max_connections_per_client: 256,
            trusted_proxies: Vec::new(),
            max_event_streams: 2048,
            max_event_streams_per_user: 32,
            event_stream_secs: 300,
        }
    }
}

/// The SFTP server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SftpConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Seconds a connection may stay silent before it is closed.
    pub idle_timeout_secs: u64,
    /// Seconds a client has to log in, counted from the TCP connection.
    pub login_grace_secs: u64,
    /// Connections not yet logged in, in all; more are refused at once.
    pub max_unauthenticated: usize,
    /// Connections not yet logged in from one client address.
    pub max_unauthenticated_per_client: usize,
    /// SFTP sessions open at once for one account.
    pub max_sessions_per_account: usize,
    /// Connections open at once from one client address, logged in or not.
    pub max_connections_per_client: usize,
    /// Where the accounts' homes live (default `<data_dir>/sftp`); clones of carve on one
    /// database point this at one shared filesystem.
    pub root: Option<std::path::PathBuf>,
    /// The server's Ed25519 host key, made if missing (default
    /// `<data_dir>/ssh_host_ed25519_key`); clones share one, so clients see one server.
    pub host_key: Option<std::path::PathBuf>,
}

impl Default for SftpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 2222)),
            idle_timeout_secs: 600,
            login_grace_secs: 60,
            max_unauthenticated: 64,
            max_unauthenticated_per_client: 8,
            max_sessions_per_account: 16,
            max_connections_per_client: 64,
            root: None,
            host_key: None,
        }
    }
}

/// Which virtualisation libvirt should use for guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainTypeSetting {
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation (TCG).
    Qemu,
    /// KVM only if a probe guest really boots under it, else QEMU.
    Auto,
}

/// The libvirt connection and how guests run.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LibvirtConfig {
    /// libvirt connection URI.
    pub uri: String,
    /// `kvm`, `qemu` or `auto`.
    pub domain_type: DomainTypeSetting,
    /// Seconds an ACPI shutdown may take before the guest is powered off.
    pub stop_timeout_secs: u64,
    /// Seconds a started guest may take to be reported running.
    pub start_timeout_secs: u64,
    /// QEMU machine type.
    pub machine: String,
}

impl Default for LibvirtConfig {
    fn default() -> Self {
        Self {
            uri: "qemu:///system".into(),
            domain_type: DomainTypeSetting::Auto,
            stop_timeout_secs: 60,
            start_timeout_secs: 60,
            machine: "pc".into(),
        }
    }
}

/// How guests reach the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// passt user networking; guest ports forwarded from `forward_address`.
    User,
    /// A host bridge; guests get addresses on the bridged network.
    Bridge,
}

/// Guest networking.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// `user` (passt, forwards on `forward_address`) or `bridge`.
    pub mode: NetworkMode,
    /// Host ports handed out for guest port forwards, e.g. `20000-29999`.
    pub forward_ports: PortRange,
    /// Host address the forwards listen on.
    pub forward_address: IpAddr,
    /// Host bridge for `bridge` mode.
    pub bridge: String,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            mode: NetworkMode::User,
            forward_ports: PortRange {
                first: 20000,
                last: 29999,
            },
            forward_address: IpAddr::from([127, 0, 0, 1]),
            bridge: "br0".into(),
        }
    }
}

/// How much of the host may be sold.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapacityConfig {
    /// vCPUs sold per host CPU.
    pub cpu_overcommit: f64,
    /// Guest memory sold per MiB of host memory.
    pub memory_overcommit: f64,
    /// Guest disk sold per GiB of free disk store.
    pub disk_overcommit: f64,
    /// Host memory kept for the host itself, in MiB.
    pub reserved_memory_mib: u64,
    /// Which host a new VM goes to among those with room: `spread` (the most free memory)
    /// or `pack` (the least that still fits). Members of one pool are spread either way.
    pub placement: Placement,
}

/// How new VMs are spread over hosts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// The host with the most free memory.
    #[default]
    Spread,
    /// The host with the least free memory that still fits.
    Pack,
}

impl Default for CapacityConfig {
    fn default() -> Self {
        Self {
            cpu_overcommit: 4.0,
            memory_overcommit: 1.0,
            disk_overcommit: 1.0,
            reserved_memory_mib: 512,
            placement: Placement::Spread,
        }
    }
}

/// The loop that makes the database and libvirt agree.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcilerConfig {
    /// Seconds between passes.
    pub interval_secs: u64,
    /// Seconds without a heartbeat after which another process may take over an operation.
    pub operation_lease_secs: u64,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            interval_secs: 30,
            operation_lease_secs: 30,
        }
    }
}

/// Load-balanced pools: where their listeners go and whether this process runs them.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LbConfig {
    /// Run the balancer in `carve serve` (set false when `carve lb` runs it instead).
    pub embedded: bool,
    /// Address pool listeners bind.
    pub listen_address: IpAddr,
    /// Ports pools may listen on, e.g. `19000-19999`.
    pub ports: PortRange,
    /// Client connections one pool holds at once; more are closed as they arrive.
    pub max_connections_per_pool: usize,
    /// Pools one tenant may have (each takes a port of `ports`).
    pub max_pools_per_tenant: u32,
    /// Threads carrying pool traffic (0: one per core).
    pub threads: usize,
}

impl Default for LbConfig {
    fn default() -> Self {
        Self {
            embedded: true,
            listen_address: IpAddr::from([127, 0, 0, 1]),
            ports: PortRange {
                first: 19000,
                last: 19999,
            },
            max_connections_per_pool: 10_000,
            max_pools_per_tenant: 10,
            threads: 0,
        }
    }
}

/// VM consoles in the browser and over the API.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// A console nobody types into for this long closes.
    pub idle_timeout_secs: u64,
    /// Consoles (viewers) open at once in this process.
    pub max_open: usize,
    /// Consoles one user may hold open at once.
    pub max_open_per_user: usize,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            idle_timeout_secs: 900,
            max_open: 1000,
            max_open_per_user: 16,
        }
    }
}

/// Images admins upload.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagesConfig {
    /// Largest upload accepted, in MiB (the qcow2 file as sent).
    pub max_upload_mib: u64,
    /// Largest virtual size of an uploaded image, in GiB.
    pub max_virtual_gib: u64,
    /// Uploads received at once; more are refused with 429 until one ends.
    pub uploads_at_once: usize,
    /// An upload that sends nothing for this long is abandoned.
    pub upload_idle_secs: u64,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        Self {
            max_upload_mib: 51200,
            max_virtual_gib: 2048,
            uploads_at_once: 2,
            upload_idle_secs: 60,
        }
    }
}

/// The quota of a tenant that has none of its own.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    pub max_vms: u64,
    pub max_vcpus: u64,
    /// In MiB.
    pub max_memory_mib: u64,
    /// In GiB.
    pub max_disk_gib: u64,
    /// SFTP storage in bytes.
    pub max_sftp_bytes: u64,
    /// SFTP files and directories.
    pub max_sftp_files: u64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            max_vms: 10,
            max_vcpus: 16,
            max_memory_mib: 16 * 1024,
            max_disk_gib: 200,
            max_sftp_bytes: 10 << 30,
            max_sftp_files: 100_000,
        }
    }
}

/// Logins, sessions and password hashing.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Failed logins of one account within `window_secs` before it is refused (429).
    pub max_failures_per_account: u32,
    /// Failed logins from one client address within `window_secs` before it is refused.
    pub max_failures_per_client: u32,
    /// Length of the failed-login window, in seconds.
    pub window_secs: u64,
    /// Lifetime of a browser session, in hours.
    pub session_hours: u64,
    /// Mark session cookies Secure even without `X-Forwarded-Proto: https` (set behind TLS).
    pub secure_cookies: bool,
    /// Password hashes computed at once (each uses one core for tens of milliseconds).
    pub concurrent_hashes: usize,
    /// Logins that may wait for a hash; past that they are answered 503 at once.
    pub max_queued_hashes: usize,
    /// Days the audit log is kept.
    pub audit_retention_days: u64,
    /// Most audit entries kept; the oldest go first.
    pub audit_max_entries: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            max_failures_per_account: 5,
            max_failures_per_client: 30,
            window_secs: 900,
            session_hours: 12,
            secure_cookies: false,
            concurrent_hashes: 1,
            max_queued_hashes: 32,
            audit_retention_days: 365,
            audit_max_entries: 5_000_000,
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// tracing filter, e.g. `info` or `carve=debug,info`; `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// An inclusive range of TCP ports, written `first-last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    /// Number of ports in the range.
    pub fn len(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    /// Whether the range holds no port (never true for a parsed range).
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("port range {s:?} must look like 20000-29999 (first-last, 1-65535)");
        let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
        let first: u16 = a.trim().parse().map_err(|_| bad())?;
        let last: u16 = b.trim().parse().map_err(|_| bad())?;
        if first == 0 || last < first {
            return Err(bad());
        }
        Ok(Self { first, last })
    }
}

impl TryFrom<String> for PortRange {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<PortRange> for String {
    fn from(r: PortRange) -> String {
        format!("{}-{}", r.first, r.last)
    }
}
