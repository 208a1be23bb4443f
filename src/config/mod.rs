//! Typed configuration: a TOML file (every key optional, unknown keys refused) overlaid by
//! `CARVE_<SECTION>_<KEY>` environment variables. Every default runs as-is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod sections;

/// Environment variables that belong to the CLI rather than to the configuration.
const NON_CONFIG_VARS: &[&str] = &["CARVE_CONFIG"];

/// Everything `carve` can be told, with defaults that run on a fresh machine.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for the database, VM disks, SFTP homes and the host key.
    pub data_dir: PathBuf,
    /// SQLite URL; defaults to `sqlite://<data_dir>/carve.db`.
    pub database_url: Option<String>,
    /// Directory of built guest images; defaults to `<data_dir>/images`.
    pub image_dir: Option<PathBuf>,
    pub http: HttpConfig,
    pub sftp: SftpConfig,
    pub libvirt: LibvirtConfig,
    pub network: NetworkConfig,
    pub capacity: CapacityConfig,
    pub reconciler: ReconcilerConfig,
    pub lb: LbConfig,
    pub console: ConsoleConfig,
    pub images: ImagesConfig,
    pub quota: QuotaConfig,
    pub auth: AuthConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            database_url: None,
            image_dir: None,
            http: HttpConfig::default(),
            sftp: SftpConfig::default(),
            libvirt: LibvirtConfig::default(),
            network: NetworkConfig::default(),
            capacity: CapacityConfig::default(),
            reconciler: ReconcilerConfig::default(),
            lb: LbConfig::default(),
            console: ConsoleConfig::default(),
            images: ImagesConfig::default(),
            quota: QuotaConfig::default(),
            auth: AuthConfig::default(),
            log: LogConfig::default(),
        }
    }
}

pub use sections::*;

/// A configuration that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file or an environment variable holds something carve does not understand.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads the file (if given) and applies `CARVE_*` environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let vars: BTreeMap<String, String> = std::env::vars().collect();
        Self::load_with_env(path, &vars)
    }

    /// Like [`Config::load`], with the environment given explicitly (for tests).
    pub fn load_with_env(
        path: Option<&Path>,
        vars: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let mut table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.into(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut table, vars)?;
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_string()))?;
        config.check()?;
        Ok(config)
    }

    /// Rejects combinations that cannot work, saying which setting to change.
    fn check(&self) -> Result<(), ConfigError> {
        let c = &self.capacity;
        for (name, v) in [
            ("capacity.cpu_overcommit", c.cpu_overcommit),
            ("capacity.memory_overcommit", c.memory_overcommit),
            ("capacity.disk_overcommit", c.disk_overcommit),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 100.0) {
                return Err(ConfigError::Invalid(format!(
                    "{name} = {v} must be a number above 0 and at most 100"
                )));
            }
        }
        if self.auth.concurrent_hashes == 0
            || self.auth.window_secs == 0
            || self.auth.session_hours == 0
        {
            return Err(ConfigError::Invalid(
                "auth.concurrent_hashes, auth.window_secs and auth.session_hours must be at least 1".into(),
            ));
        }
        let s = &self.sftp;
        if s.max_unauthenticated == 0
            || s.max_unauthenticated_per_client == 0
            || s.max_sessions_per_account == 0
            || s.max_connections_per_client == 0
            || self.http.max_connections == 0
            || self.http.max_connections_per_client == 0
            || self.http.header_timeout_secs == 0
            || self.http.request_timeout_secs == 0
            || self.auth.audit_retention_days == 0
            || self.auth.audit_max_entries == 0
        {
            return Err(ConfigError::Invalid(
                "the sftp.max_*, http.max_connections, http.*_timeout_secs and auth.audit_* settings must be at least 1".into(),
            ));
        }
        if self.reconciler.interval_secs == 0 || self.reconciler.operation_lease_secs < 3 {
            return Err(ConfigError::Invalid(
                "reconciler.interval_secs must be at least 1 and operation_lease_secs at least 3"
                    .into(),
            ));
        }
        if self.lb.max_connections_per_pool == 0 {
            return Err(ConfigError::Invalid(
                "lb.max_connections_per_pool must be at least 1".into(),
            ));
        }
        if !(1..=7 * 24 * 3600).contains(&self.console.idle_timeout_secs)
            || self.console.max_open == 0
            || self.console.max_open_per_user == 0
        {
            return Err(ConfigError::Invalid(
                "console.idle_timeout_secs must be 1 to 604800 (a week), console.max_open and max_open_per_user at least 1".into(),
            ));
        }
        let i = &self.images;
        if i.max_upload_mib == 0
            || i.max_virtual_gib == 0
            || i.uploads_at_once == 0
            || i.upload_idle_secs == 0
        {
            return Err(ConfigError::Invalid(
                "images.max_upload_mib, max_virtual_gib, uploads_at_once and upload_idle_secs must be at least 1".into(),
            ));
        }
        if self.lb.threads > 256 {
            return Err(ConfigError::Invalid(
                "lb.threads must be at most 256 (0 runs one per core)".into(),
            ));
        }
        let (lb, fw) = (self.lb.ports, self.network.forward_ports);
        if lb.first <= fw.last && fw.first <= lb.last {
            return Err(ConfigError::Invalid(format!(
                "lb.ports ({}) overlaps network.forward_ports ({}); give pools ports of their own",
                String::from(lb),
                String::from(fw)
            )));
        }
        Ok(())
    }

    /// Where SFTP homes live.
    pub fn sftp_root(&self) -> std::path::PathBuf {
        self.sftp
            .root
            .clone()
            .unwrap_or_else(|| self.data_dir.join("sftp"))
    }

    /// The SFTP host key's file.
    pub fn sftp_host_key(&self) -> std::path::PathBuf {
        self.sftp
            .host_key
            .clone()
            .unwrap_or_else(|| self.data_dir.join("ssh_host_ed25519_key"))
    }

    /// The SQLite URL in use.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("carve.db").display()))
    }

    /// Where built guest images are found.
    pub fn image_dir(&self) -> PathBuf {
        self.image_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("images"))
    }

    /// Where images admins upload are kept.
    pub fn upload_dir(&self) -> PathBuf {
        self.data_dir.join("uploaded-images")
    }

    /// Where VM disks, seeds and console logs live.
    pub fn vm_dir(&self) -> PathBuf {
        self.data_dir.join("vms")
    }
}

/// Sections whose keys may be set as `CARVE_<SECTION>_<KEY>`.
const SECTIONS: &[&str] = &[
    "http",
    "sftp",
    "libvirt",
    "network",
    "capacity",
    "reconciler",
    "lb",
    "console",
    "images",
    "quota",
    "auth",
    "log",
];

/// Writes each `CARVE_*` variable into the table, typed as TOML where it parses as TOML.
fn apply_env(table: &mut toml::Table, vars: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix("CARVE_") else {
            continue;
        };
        if NON_CONFIG_VARS.contains(&name.as_str()) {
            continue;
        }
        let rest = rest.to_ascii_lowercase();
        let value = env_value(raw);
        let section = SECTIONS.iter().find(|s| {
            rest.strip_prefix(*s)
                .is_some_and(|tail| tail.starts_with('_') && tail.len() > 1)
        });
        match section {
            Some(section) => {
                let key = rest[section.len() + 1..].to_string();
                let entry = table
                    .entry(section.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let toml::Value::Table(inner) = entry else {
                    return Err(ConfigError::Invalid(format!("[{section}] must be a table")));
                };
                inner.insert(key, value);
            }
            None => {
                table.insert(rest, value);
            }
        }
    }
    Ok(())
}

/// Interprets an environment value as a TOML number, boolean or array, or else a string.
fn env_value(raw: &str) -> toml::Value {
    let parsed = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"));
    match parsed {
        Some(
            v @ (toml::Value::Integer(_)
            | toml::Value::Float(_)
            | toml::Value::Boolean(_)
            | toml::Value::Array(_)),
        ) => v,
        _ => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_run_as_is() {
        let c = Config::load_with_env(None, &env(&[])).unwrap();
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.sftp.listen.to_string(), "127.0.0.1:2222");
        assert_eq!(c.libvirt.uri, "qemu:///system");
        assert_eq!(c.libvirt.domain_type, DomainTypeSetting::Auto);
        assert_eq!(c.network.mode, NetworkMode::User);
        assert_eq!(
            c.network.forward_ports,
            PortRange {
                first: 20000,
                last: 29999
            }
        );
        assert_eq!(c.database_url(), "sqlite://./data/carve.db");
    }

    #[test]
    fn environment_overrides_file_and_types_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("carve.toml");
        std::fs::write(
            &path,
            "data_dir = \"/srv/carve\"\n[http]\nlisten = \"0.0.0.0:80\"\n",
        )
        .unwrap();
        let c = Config::load_with_env(
            Some(&path),
            &env(&[
                ("CARVE_HTTP_LISTEN", "127.0.0.1:9000"),
                ("CARVE_LIBVIRT_DOMAIN_TYPE", "qemu"),
                ("CARVE_NETWORK_FORWARD_PORTS", "30000-30010"),
                ("CARVE_CAPACITY_CPU_OVERCOMMIT", "2"),
                ("CARVE_CONFIG", "/ignored"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/carve"));
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.libvirt.domain_type, DomainTypeSetting::Qemu);
        assert_eq!(c.network.forward_ports.len(), 11);
        assert_eq!(c.capacity.cpu_overcommit, 2.0);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let err = Config::load_with_env(None, &env(&[("CARVE_HTTP_LISTN", "x")])).unwrap_err();
        assert!(err.to_string().contains("listn"), "{err}");
        let err = Config::load_with_env(None, &env(&[("CARVE_NETWORK_FORWARD_PORTS", "9-3")]))
            .unwrap_err();
        assert!(err.to_string().contains("first-last"), "{err}");
        let err =
            Config::load_with_env(None, &env(&[("CARVE_LIBVIRT_DOMAIN_TYPE", "xen")])).unwrap_err();
        assert!(err.to_string().contains("xen"), "{err}");
        let err = Config::load_with_env(None, &env(&[("CARVE_CAPACITY_CPU_OVERCOMMIT", "0")]))
            .unwrap_err();
        assert!(err.to_string().contains("cpu_overcommit"), "{err}");
    }
}
