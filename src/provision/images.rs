//! Registers the images built into the image directory: each `<dir>/<name>/image.toml`
//! manifest (written by `images/<name>/build.sh`) becomes a row of the images table.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::db::images::ImageFacts;
use crate::db::{self, Db};
use crate::domain::image::BootMethod;
use crate::domain::names::ResourceName;
use crate::hypervisor::storage;

/// An image manifest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    name: String,
    os: String,
    #[serde(default)]
    description: String,
    /// `kernel` (direct kernel boot) or `disk` (the disk's boot loader).
    boot: BootMethod,
    disk: PathBuf,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    cmdline: Option<String>,
    #[serde(default = "default_min_memory")]
    min_memory_mib: i64,
    /// The OS's version, e.g. `12.8`.
    #[serde(default)]
    version: String,
    /// The user to log in as by SSH (`root` when left out).
    #[serde(default = "default_user")]
    default_user: String,
    /// The image runs the QEMU guest agent.
    #[serde(default)]
    guest_agent: bool,
}

fn default_user() -> String {
    "root".into()
}

fn default_min_memory() -> i64 {
    128
}

/// Reads every manifest under `dir`, registers the images, and marks the rest unavailable.
/// Returns the names registered; a broken manifest is logged and skipped.
pub async fn register_all(db: &Db, dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(dir = %dir.display(), "image directory does not exist; build images with images/build.sh");
            db::images::mark_missing_except(db, &[]).await?;
            return Ok(names);
        }
        Err(e) => {
            return Err(anyhow::anyhow!(
                "cannot read image directory {}: {e}",
                dir.display()
            ));
        }
    };
    let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    dirs.sort();
    for image_dir in dirs {
        let manifest = image_dir.join("image.toml");
        if !manifest.is_file() {
            continue;
        }
        match read_manifest(&image_dir, &manifest).await {
            Ok(facts) => {
                if db::images::upsert(db, &facts).await? {
                    names.push(facts.name);
                } else {
                    tracing::warn!(manifest = %manifest.display(), name = %facts.name, "image skipped: an uploaded image has its name; rename one of them");
                }
            }
            Err(e) => tracing::warn!(manifest = %manifest.display(), error = %e, "image skipped"),
        }
    }
    db::images::mark_missing_except(db, &names).await?;
    Ok(names)
}

/// Checks one manifest and the files it names.
async fn read_manifest(image_dir: &Path, manifest: &Path) -> anyhow::Result<ImageFacts> {
    let text = tokio::fs::read_to_string(manifest).await?;
    let m: Manifest = toml::from_str(&text)?;
    ResourceName::parse(&m.name, "name").map_err(|e| anyhow::anyhow!("{e}"))?;
    let resolve = |p: &Path| -> anyhow::Result<String> {
        let full = image_dir.join(p);
        anyhow::ensure!(full.is_file(), "{} is missing", full.display());
        let full = std::path::absolute(&full)?;
        Ok(full.to_string_lossy().into_owned())
    };
    let disk_path = resolve(&m.disk)?;
    let (kernel_path, initrd_path) = match m.boot {
        BootMethod::Kernel => {
            let kernel = m
                .kernel
                .as_deref()
                .ok_or_else(|| anyhow::anyhow!("boot = \"kernel\" needs kernel = …"))?;
            (
                Some(resolve(kernel)?),
                m.initrd.as_deref().map(resolve).transpose()?,
            )
        }
        BootMethod::Disk => (None, None),
    };
    let virtual_size_bytes = storage::virtual_size(Path::new(&disk_path)).await? as i64;
    Ok(ImageFacts {
        name: m.name,
        os: m.os,
        description: m.description,
        boot: m.boot,
        disk_path,
        kernel_path,
        initrd_path,
        cmdline: m.cmdline,
        virtual_size_bytes,
        min_memory_mib: m.min_memory_mib,
        version: m.version,
        default_user: m.default_user,
        guest_agent: m.guest_agent,
    })
}
