//! A VM's files on its host, all libvirt volumes in the host's carve pool: the image's base
//! files (uploaded once per host through a libvirt stream and checked by their digest), the
//! VM's qcow2 overlay on that base, its cloud-init seed and its console log. The local host
//! and remote ones go the same way.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use anyhow::{Context as _, anyhow};
use sha2::{Digest as _, Sha256};

use super::owner::Owner;
use crate::db::{self, images::ImageRow};
use crate::domain::ids::{HostId, VmId};
use crate::hypervisor::storage::{self, Seed};
use crate::hypervisor::{Hv, Volume};

/// Where one VM's files are on its host.
#[derive(Debug, Clone)]
pub struct VmVolumes {
    pub disk: String,
    pub seed: String,
    pub console: String,
}

impl VmVolumes {
    /// The volume names of `vm`.
    pub fn of(vm: &VmId) -> Self {
        Self {
            disk: format!("{vm}.qcow2"),
            seed: format!("{vm}-seed.iso"),
            console: format!("{vm}-console.log"),
        }
    }

    /// The VM a volume name belongs to, if it is one of carve's.
    pub fn owner(volume: &str) -> Option<VmId> {
        let stem = volume
            .strip_suffix(".qcow2")
            .or_else(|| volume.strip_suffix("-seed.iso"))
            .or_else(|| volume.strip_suffix("-console.log"))?;
        VmId::parse(stem)
    }
}

/// The image's files as paths on one host.
#[derive(Debug, Clone)]
pub struct BaseOnHost {
    pub disk: String,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
}

/// SHA-256 digests of local files, kept while the file's length and time stay the same.
#[derive(Default)]
pub struct Digests(Mutex<HashMap<PathBuf, (u64, SystemTime, String)>>);

impl Digests {
    /// The file's SHA-256 (hex), computed on a blocking thread the first time.
    pub async fn of(&self, path: &Path) -> anyhow::Result<String> {
        let meta = tokio::fs::metadata(path)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        let stamp = (meta.len(), meta.modified()?);
        if let Some((len, at, hex)) = self.lock().get(path)
            && (*len, *at) == stamp
        {
            return Ok(hex.clone());
        }
        let owned = path.to_path_buf();
        let hex = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
            let mut file = std::fs::File::open(&owned)?;
            let mut hasher = Sha256::new();
            std::io::copy(&mut file, &mut hasher)?;
            Ok(hex::encode(hasher.finalize()))
        })
        .await??;
        self.lock()
            .insert(path.to_path_buf(), (stamp.0, stamp.1, hex.clone()));
        Ok(hex)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, (u64, SystemTime, String)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One host's carve pool, reached through its libvirt.
#[derive(Clone)]
pub struct HostStore {
    pub hv: Hv,
    pub pool: String,
    /// Serialises base uploads per host and volume within this process.
    pub upload_locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// What claims a base copy across processes.
    pub claims: Claims,
}

/// Who claims base copies to a host, in the database every carve process shares.
#[derive(Clone)]
pub struct Claims {
    pub db: crate::db::Db,
    pub host: HostId,
    /// This process, as recorded in claims.
    pub owner: String,
    /// The pool's directory on the host.
    pub pool_dir: String,
}

/// How long a process waits for another's base copy (and after which a claim is stale).
const BASE_COPY_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);

/// A `Write` that only hashes (for checking what a host holds).
struct HashSink(Sha256);

impl Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl HostStore {
    /// The image's base disk (and kernel and initramfs, for a kernel boot) on this host,
    /// uploaded first when the host lacks them.
    pub async fn base(&self, image: &ImageRow, digests: &Digests) -> anyhow::Result<BaseOnHost> {
        let disk = self
            .file(Path::new(&image.disk_path), "qcow2", digests)
            .await
            .context("putting the image's base disk on the host")?;
        let mut kernel = None;
        let mut initrd = None;
        if let Some(k) = &image.kernel_path {
            kernel = Some(self.file(Path::new(k), "kernel", digests).await?);
        }
        if let Some(i) = &image.initrd_path {
            initrd = Some(self.file(Path::new(i), "initrd", digests).await?);
        }
        Ok(BaseOnHost {
            disk,
            kernel,
            initrd,
        })
    }

    /// A local base file (a disk's backing file) as a checked volume of this host.
    pub async fn upload_base_file(
        &self,
        local: &Path,
        digests: &Digests,
    ) -> anyhow::Result<String> {
        self.file(local, "qcow2", digests).await
    }

    /// Base volume `name` of `from`'s pool on this host: found (checked), or copied from
    /// there and marked checked once whole.
    pub async fn copy_base_from(&self, from: &HostStore, name: &str) -> anyhow::Result<String> {
        self.once(name, || async {
            let (pool, n) = (from.pool.clone(), name.to_string());
            let source = from
                .hv
                .call(move |h| h.volume(&pool, &n))
                .await?
                .ok_or_else(|| anyhow!("base {name} is missing on the source host"))?;
            let copied = super::disk_copy::copy_volume(from, self, name, None).await?;
            anyhow::ensure!(
                copied == source.length_bytes,
                "base {name} was cut short on its way ({copied} of {} bytes)",
                source.length_bytes
            );
            let (pool, m) = (self.pool.clone(), format!("{name}.checked"));
            self.hv
                .call(move |h| h.upload(&pool, &m, &mut std::io::empty(), 0, false))
                .await?;
            Ok(())
        })
        .await
    }

    /// A local file as a volume named by its digest: found, or uploaded, read back and
    /// checked, then marked as checked (a cut-off upload is never mistaken for a whole one).
    async fn file(&self, local: &Path, ext: &str, digests: &Digests) -> anyhow::Result<String> {
        let digest = digests.of(local).await?;
        let name = format!("base-{}.{ext}", &digest[..32]);
        self.once(&name, || async {
            let len = tokio::fs::metadata(local).await?.len();
            let (pool, n, path) = (self.pool.clone(), name.clone(), local.to_path_buf());
            let want = digest.clone();
            self.hv
                .call(move |h| {
                    let mut file = std::fs::File::open(&path).map_err(|e| {
                        crate::hypervisor::HypervisorError::Libvirt(format!(
                            "cannot read {}: {e}",
                            path.display()
                        ))
                    })?;
                    h.upload(&pool, &n, &mut file, len, false)?;
                    let mut sink = HashSink(Sha256::new());
                    let read = h.download(&pool, &n, 0, len, &mut sink)?;
                    // The test driver keeps no bytes: nothing to read back there.
                    if read > 0 {
                        let got = hex::encode(sink.0.finalize());
                        if read != len || got != want {
                            let _ = h.delete_volume(&pool, &n);
                            return Err(crate::hypervisor::HypervisorError::Libvirt(format!(
                                "the copy of {} on the host does not match it (sha256 {got}, {read} bytes; want {want}, {len} bytes)",
                                path.display()
                            )));
                        }
                    }
                    h.upload(&pool, &format!("{n}.checked"), &mut want.as_bytes(), 64, false)?;
                    Ok(())
                })
                .await?;
            tracing::info!(volume = %name, bytes = len, "base file uploaded to the host and checked");
            Ok(())
        })
        .await
    }

    /// The path of base `name` if it is on this host and checked.
    async fn checked(&self, name: &str) -> anyhow::Result<Option<String>> {
        let (pool, n, m) = (
            self.pool.clone(),
            name.to_string(),
            format!("{name}.checked"),
        );
        let found = self
            .hv
            .call(move |h| Ok((h.volume(&pool, &n)?, h.volume(&pool, &m)?.is_some())))
            .await?;
        Ok(match found {
            (Some(vol), true) => Some(vol.path),
            _ => None,
        })
    }

    /// Base `name` on this host: there and checked already, or put there by `put` (which
    /// writes it and its check mark) while this task holds it, in this process and across
    /// the carve processes on the database; others wait for the check mark meanwhile.
    async fn once<F, Fut>(&self, name: &str, put: F) -> anyhow::Result<String>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        let lock = {
            let mut locks = self.upload_locks.lock().unwrap_or_else(|p| p.into_inner());
            let key = format!("{}/{name}", self.claims.host);
            locks.entry(key).or_default().clone()
        };
        let _held = lock.lock().await;
        let deadline = Instant::now() + BASE_COPY_WAIT;
        loop {
            if let Some(path) = self.checked(name).await? {
                return Ok(path);
            }
            let c = &self.claims;
            let now_ms = chrono::Utc::now().timestamp_millis();
            let stale = BASE_COPY_WAIT.as_millis() as i64;
            if db::base_copies::claim(
                &c.db,
                &c.host,
                name,
                &c.owner,
                now_ms,
                stale,
                Owner::is_dead,
            )
            .await?
            {
                let put = match self.checked(name).await? {
                    Some(path) => Ok(path),
                    None => put().await.map(|()| self.pool_path(name)),
                };
                let _ = db::base_copies::release(&c.db, &c.host, name, &c.owner).await;
                let put = put?;
                // The path as libvirt names it (the check above proved it exists).
                return Ok(self.checked(name).await?.unwrap_or(put));
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "another carve process has been putting {name} on the host for {} minutes; try again later",
                BASE_COPY_WAIT.as_secs() / 60
            );
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }

    /// A volume's path in this pool, by name.
    fn pool_path(&self, name: &str) -> String {
        format!("{}/{name}", self.claims.pool_dir.trim_end_matches('/'))
    }

    /// Makes the VM's disk: a fresh qcow2 overlay of `gib` on the base (replacing any).
    pub async fn create_disk(
        &self,
        vm: &VmId,
        base: &BaseOnHost,
        gib: u64,
    ) -> anyhow::Result<String> {
        let (pool, name, backing) = (self.pool.clone(), VmVolumes::of(vm).disk, base.disk.clone());
        let vol = self
            .hv
            .call(move |h| h.create_overlay(&pool, &name, &backing, gib << 30))
            .await?;
        Ok(vol.path)
    }

    /// The VM's disk, if it exists.
    pub async fn disk(&self, vm: &VmId) -> anyhow::Result<Option<Volume>> {
        let (pool, name) = (self.pool.clone(), VmVolumes::of(vm).disk);
        Ok(self.hv.call(move |h| h.volume(&pool, &name)).await?)
    }

    /// The path of the VM's seed, if it has one.
    pub async fn seed_path(&self, vm: &VmId) -> anyhow::Result<Option<String>> {
        let (pool, name) = (self.pool.clone(), VmVolumes::of(vm).seed);
        Ok(self
            .hv
            .call(move |h| h.volume(&pool, &name))
            .await?
            .map(|v| v.path))
    }

    /// Grows the VM's disk to `gib` (never shrinks it).
    pub async fn grow_disk(&self, vm: &VmId, gib: u64) -> anyhow::Result<()> {
        let (pool, name) = (self.pool.clone(), VmVolumes::of(vm).disk);
        Ok(self
            .hv
            .call(move |h| h.resize_volume(&pool, &name, gib << 30))
            .await?)
    }

    /// Writes the VM's NoCloud seed; `in_place` writes over the seed a running guest has open.
    pub async fn write_seed(
        &self,
        vm: &VmId,
        seed: &Seed<'_>,
        scratch: &Path,
        in_place: bool,
    ) -> anyhow::Result<String> {
        let iso = seed_bytes(seed, scratch).await?;
        let (pool, name) = (self.pool.clone(), VmVolumes::of(vm).seed);
        let len = iso.len() as u64;
        let vol = self
            .hv
            .call(move |h| h.upload(&pool, &name, &mut iso.as_slice(), len, in_place))
            .await?;
        Ok(vol.path)
    }

    /// The path of the VM's console log on the host, made empty if it does not exist yet.
    pub async fn console_log(&self, vm: &VmId) -> anyhow::Result<String> {
        let (pool, name) = (self.pool.clone(), VmVolumes::of(vm).console);
        Ok(self
            .hv
            .call(move |h| match h.volume(&pool, &name)? {
                Some(v) => Ok(v.path),
                None => Ok(h
                    .upload(&pool, &name, &mut std::io::empty(), 0, false)?
                    .path),
            })
            .await?)
    }

    /// Up to `max` bytes of the VM's console log from `offset` (clamped to its last `max`
    /// bytes), with the offset they start at and the log's length.
    pub async fn read_console(
        &self,
        vm: &VmId,
        offset: Option<u64>,
        max: u64,
    ) -> anyhow::Result<(u64, u64, Vec<u8>)> {
        let (pool, name) = (self.pool.clone(), VmVolumes::of(vm).console);
        Ok(self
            .hv
            .call(move |h| {
                let Some(vol) = h.volume(&pool, &name)? else {
                    return Ok((0, 0, Vec::new()));
                };
                let len = vol.capacity_bytes;
                let tail = len.saturating_sub(max);
                let start = match offset {
                    Some(o) if o <= len => o.max(tail),
                    _ => tail,
                };
                let mut bytes = Vec::new();
                h.download(&pool, &name, start, len - start, &mut bytes)?;
                Ok((start, len, bytes))
            })
            .await?)
    }

    /// Removes the VM's disk, seed and console log (those that exist).
    pub async fn remove(&self, vm: &VmId) -> anyhow::Result<()> {
        let pool = self.pool.clone();
        let v = VmVolumes::of(vm);
        Ok(self
            .hv
            .call(move |h| {
                for name in [&v.disk, &v.seed, &v.console] {
                    h.delete_volume(&pool, name)?;
                }
                Ok(())
            })
            .await?)
    }
}

/// The seed as an ISO image, made in a private scratch directory.
async fn seed_bytes(seed: &Seed<'_>, scratch: &Path) -> anyhow::Result<Vec<u8>> {
    let dir = tempfile::Builder::new()
        .prefix(".seed-")
        .tempdir_in(scratch)
        .with_context(|| format!("making a scratch directory in {}", scratch.display()))?;
    let path = dir.path().join("seed.iso");
    storage::write_seed(&path, seed).await?;
    let bytes = tokio::fs::read(&path).await?;
    if bytes.is_empty() {
        return Err(anyhow!("genisoimage made an empty seed"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_lead_back_to_their_vm() {
        let vm = VmId::generate();
        let v = VmVolumes::of(&vm);
        for name in [&v.disk, &v.seed, &v.console] {
            assert_eq!(VmVolumes::owner(name), Some(vm.clone()), "{name}");
        }
        assert_eq!(VmVolumes::owner("base-0123.qcow2"), None);
        assert_eq!(VmVolumes::owner("vm_nothex.qcow2"), None);
    }
}
