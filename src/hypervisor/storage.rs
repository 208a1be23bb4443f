//! Files of a VM: its qcow2 overlay on the read-only base image, its NoCloud seed and its
//! console log, all in one directory per VM. External tools are run with argument lists,
//! never through a shell. Every write goes to a temporary name first, then is renamed, so a
//! crash never leaves a half-written file under the final name.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::domain::ids::VmId;

/// A storage step that failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// An external tool failed.
    #[error("{tool} failed: {detail}")]
    Tool { tool: &'static str, detail: String },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StorageError {
    let path = path.to_path_buf();
    move |source| StorageError::Io {
        action,
        path,
        source,
    }
}

/// Where one VM's files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmFiles {
    pub dir: PathBuf,
    pub disk: PathBuf,
    pub seed: PathBuf,
    pub console: PathBuf,
}

impl VmFiles {
    /// The files of `vm` under the VM store `root`.
    pub fn new(root: &Path, vm: &VmId) -> Self {
        let dir = root.join(vm.as_str());
        Self {
            disk: dir.join("disk.qcow2"),
            seed: dir.join("seed.iso"),
            console: dir.join("console.log"),
            dir,
        }
    }

    /// Creates the VM's directory: traversable (not listable) by the QEMU user.
    pub async fn create_dir(&self) -> Result<(), StorageError> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(io_err("create", &self.dir))?;
        tokio::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o711))
            .await
            .map_err(io_err("set permissions of", &self.dir))
    }

    /// Removes the directory and everything in it; nothing to do if it is gone.
    pub async fn remove(&self) -> Result<(), StorageError> {
        match tokio::fs::remove_dir_all(&self.dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io_err("remove", &self.dir)(e))
            }
            _ => Ok(()),
        }
    }
}

/// Runs a tool, turning a failure into a message with its stderr.
async fn run(tool: &'static str, cmd: &mut Command) -> Result<Vec<u8>, StorageError> {
    let out = cmd
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| StorageError::Tool {
            tool,
            detail: format!("cannot run it: {e}"),
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(StorageError::Tool {
            tool,
            detail: format!("{} ({})", stderr.trim(), out.status),
        });
    }
    Ok(out.stdout)
}

/// Temporary sibling of `path`, renamed over it when complete.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    path.with_file_name(name)
}

/// Creates a qcow2 overlay of `size_gib` backed by `base` (copy-on-write: no data is copied).
/// Does nothing if the overlay already exists.
pub async fn create_overlay(base: &Path, disk: &Path, size_gib: u64) -> Result<(), StorageError> {
    if tokio::fs::try_exists(disk).await.unwrap_or(false) {
        return Ok(());
    }
    let part = temp_path(disk);
    let _ = tokio::fs::remove_file(&part).await;
    run(
        "qemu-img create",
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(base)
            .arg(&part)
            .arg(format!("{size_gib}G")),
    )
    .await?;
    tokio::fs::rename(&part, disk)
        .await
        .map_err(io_err("rename into place", disk))
}

/// The virtual size of a disk image, in bytes.
pub async fn virtual_size(path: &Path) -> Result<u64, StorageError> {
    let out = run(
        "qemu-img info",
        Command::new("qemu-img")
            .args(["info", "--output=json", "-U"])
            .arg(path),
    )
    .await?;
    let info: serde_json::Value = serde_json::from_slice(&out).map_err(|e| StorageError::Tool {
        tool: "qemu-img info",
        detail: format!("unreadable output: {e}"),
    })?;
    info["virtual-size"]
        .as_u64()
        .ok_or_else(|| StorageError::Tool {
            tool: "qemu-img info",
            detail: "no virtual-size in its output".into(),
        })
}

/// Grows a disk to `size_gib`; a disk already that large is left alone (disks never shrink).
pub async fn grow(disk: &Path, size_gib: u64) -> Result<(), StorageError> {
    if virtual_size(disk).await? >= size_gib << 30 {
        return Ok(());
    }
    run(
        "qemu-img resize",
        Command::new("qemu-img")
            .args(["resize", "-q"])
            .arg(disk)
            .arg(format!("{size_gib}G")),
    )
    .await
    .map(drop)
}

/// What goes into a NoCloud seed.
#[derive(Debug, Clone)]
pub struct Seed<'a> {
    pub instance_id: &'a str,
    pub hostname: &'a str,
    pub ssh_keys: &'a [String],
    pub user_data: Option<&'a str>,
    /// A SHA-512 crypt hash of root's password (never the password).
    pub root_password_hash: Option<&'a str>,
}

impl Seed<'_> {
    /// The `meta-data` document (YAML; every value is a JSON-quoted string, which YAML reads
    /// verbatim).
    pub fn meta_data(&self) -> String {
        let q = |s: &str| serde_json::Value::from(s).to_string();
        let mut out = format!(
            "instance-id: {}\nlocal-hostname: {}\n",
            q(self.instance_id),
            q(self.hostname)
        );
        if !self.ssh_keys.is_empty() {
            out.push_str("public-keys:\n");
            for key in self.ssh_keys {
                out.push_str(&format!("  - {}\n", q(key)));
            }
        }
        out
    }

    /// The `vendor-data` document: cloud-config setting root's password hash, if any (at
    /// every boot, so that a reset reaches a guest whose instance is not new).
    pub fn vendor_data(&self) -> String {
        let Some(hash) = self.root_password_hash else {
            return String::new();
        };
        let q = serde_json::Value::from(hash).to_string();
        format!(
            "#cloud-config\nchpasswd:\n  expire: false\n  users:\n    - name: root\n      password: {q}\n      type: HASH\nbootcmd:\n  - [usermod, -p, {q}, root]\n"
        )
    }
}

/// Writes the seed as an ISO 9660 volume labelled `cidata`, readable by its owner alone
/// (it may hold a password hash).
pub async fn write_seed(path: &Path, seed: &Seed<'_>) -> Result<(), StorageError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let staging = tempfile::Builder::new()
        .prefix(".seed-")
        .tempdir_in(parent)
        .map_err(io_err("create staging dir in", parent))?;
    let meta = staging.path().join("meta-data");
    let user = staging.path().join("user-data");
    let vendor = staging.path().join("vendor-data");
    tokio::fs::write(&vendor, seed.vendor_data())
        .await
        .map_err(io_err("write", &vendor))?;
    tokio::fs::write(&meta, seed.meta_data())
        .await
        .map_err(io_err("write", &meta))?;
    tokio::fs::write(&user, seed.user_data.unwrap_or(""))
        .await
        .map_err(io_err("write", &user))?;
    let part = temp_path(path);
    run(
        "genisoimage",
        Command::new("genisoimage")
            .args([
                "-quiet",
                "-input-charset",
                "utf-8",
                "-V",
                "cidata",
                "-r",
                "-J",
                "-o",
            ])
            .arg(&part)
            .arg(&meta)
            .arg(&user)
            .arg(&vendor),
    )
    .await?;
    tokio::fs::set_permissions(&part, std::fs::Permissions::from_mode(0o600))
        .await
        .map_err(io_err("set permissions of", &part))?;
    tokio::fs::rename(&part, path)
        .await
        .map_err(io_err("rename into place", path))
}

/// Free space of the filesystem holding `path`, in GiB.
pub fn free_gib(path: &Path) -> Result<u64, StorageError> {
    let st = rustix::fs::statvfs(path).map_err(|e| StorageError::Io {
        action: "statvfs",
        path: path.into(),
        source: e.into(),
    })?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize) >> 30)
}

/// Space the files under `dir` really occupy on disk, in bytes.
pub fn used_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => used_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// Fails unless every directory from `/` down to `path` can be traversed by other users (QEMU
/// runs as its own user and must reach disks, kernels and seeds).
pub fn check_traversable(path: &Path) -> Result<(), String> {
    let absolute = std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for dir in absolute.ancestors() {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        if meta.permissions().mode() & 0o001 == 0 {
            return Err(format!(
                "{} is mode {:o}, so QEMU (user libvirt-qemu) cannot reach {}; put data_dir and \
                 image_dir elsewhere (e.g. /var/lib/carve) or run `chmod o+x {}`",
                dir.display(),
                meta.permissions().mode() & 0o7777,
                absolute.display(),
                dir.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_data_quotes_every_value() {
        let keys = vec!["ssh-ed25519 AAAA me@x".to_string()];
        let seed = Seed {
            instance_id: "vm_1",
            hostname: "web1",
            ssh_keys: &keys,
            user_data: None,
            root_password_hash: None,
        };
        assert_eq!(
            seed.meta_data(),
            "instance-id: \"vm_1\"\nlocal-hostname: \"web1\"\npublic-keys:\n  - \"ssh-ed25519 AAAA me@x\"\n"
        );
    }

    #[tokio::test]
    async fn overlay_is_copy_on_write_and_grows_only() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        run(
            "qemu-img create",
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2"])
                .arg(&base)
                .arg("1G"),
        )
        .await
        .unwrap();
        let disk = dir.path().join("disk.qcow2");
        create_overlay(&base, &disk, 2).await.unwrap();
        create_overlay(&base, &disk, 2).await.unwrap(); // idempotent
        assert_eq!(virtual_size(&disk).await.unwrap(), 2 << 30);
        assert!(
            std::fs::metadata(&disk).unwrap().len() < 1 << 20,
            "an overlay holds no data"
        );
        grow(&disk, 3).await.unwrap();
        grow(&disk, 1).await.unwrap(); // never shrinks
        assert_eq!(virtual_size(&disk).await.unwrap(), 3 << 30);
        let err = create_overlay(&dir.path().join("missing"), &dir.path().join("x.qcow2"), 1)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("qemu-img create failed"), "{err}");
        assert!(!dir.path().join("x.qcow2").exists());
    }

    #[tokio::test]
    async fn seed_is_an_iso_labelled_cidata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.iso");
        let seed = Seed {
            instance_id: "vm_1",
            hostname: "web1",
            ssh_keys: &[],
            user_data: Some("#!/bin/sh\n"),
            root_password_hash: Some("$6$salt$hash"),
        };
        write_seed(&path, &seed).await.unwrap();
        let iso = std::fs::read(&path).unwrap();
        // The ISO 9660 primary volume descriptor at 32 KiB holds the volume id at offset 40.
        assert_eq!(&iso[32768 + 1..32768 + 6], b"CD001");
        assert_eq!(&iso[32768 + 40..32768 + 46], b"cidata");
        let vendor = "password: \"$6$salt$hash\"";
        assert!(
            iso.windows(vendor.len()).any(|w| w == vendor.as_bytes()),
            "the vendor-data carries the hash"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the seed is carve's alone");
        assert_eq!(
            Seed {
                root_password_hash: None,
                ..seed
            }
            .vendor_data(),
            ""
        );
    }

    #[test]
    fn traversability_is_checked() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let closed = dir.path().join("closed");
        std::fs::create_dir(&closed).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(check_traversable(dir.path()).is_ok());
        let err = check_traversable(&closed.join("data")).unwrap_err();
        assert!(err.contains("mode 700"), "{err}");
    }
}
