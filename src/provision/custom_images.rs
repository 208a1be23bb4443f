//! Images admins upload: received as a stream into carve's data directory (size-limited,
//! digested as it arrives), checked with `qemu-img`, then offered like a built image; hidden
//! from customers or removed when nothing uses them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

mod checks;

use checks::{check_new, check_texts};

use super::Provisioner;
use super::catalog::ImageView;
use crate::auth::Principal;
use crate::config::Config;
pub use crate::db::images::ImageChanges;
use crate::db::images::{ImageRow, UploadedImage};
use crate::db::{self, Db};
use crate::domain::Invalid;
use crate::domain::ids::ImageId;
use crate::error::AppError;
use crate::hypervisor::{qcow2, storage};

/// Where uploads go and how much they may take.
pub struct Uploads {
    dir: PathBuf,
    max_bytes: u64,
    max_virtual_bytes: u64,
    idle: Duration,
    permits: Arc<tokio::sync::Semaphore>,
}

impl Uploads {
    /// The upload settings of a configuration.
    pub fn from_config(c: &Config) -> Self {
        let dir = c.upload_dir();
        Self {
            dir: std::path::absolute(&dir).unwrap_or(dir),
            max_bytes: c.images.max_upload_mib.saturating_mul(1 << 20),
            max_virtual_bytes: c.images.max_virtual_gib.saturating_mul(1 << 30),
            idle: Duration::from_secs(c.images.upload_idle_secs),
            permits: Arc::new(tokio::sync::Semaphore::new(c.images.uploads_at_once)),
        }
    }
}

/// What an admin says about an image they upload.
#[derive(Debug, Clone, Default)]
pub struct NewImage {
    pub name: String,
    pub os: String,
    pub version: String,
    pub description: String,
    /// The user to log in as by SSH; `root` when empty.
    pub default_user: String,
    /// `disk` (the image's own boot loader) or `kernel` (the kernel of `kernel_from`).
    pub boot: String,
    /// For `boot = kernel`: the registered image whose kernel, initramfs and command line boot
    /// this one.
    pub kernel_from: Option<String>,
    /// 128 when not given.
    pub min_memory_mib: Option<i64>,
    pub guest_agent: bool,
    pub visible: bool,
}

/// Receives, checks and registers an uploaded qcow2 base (admins). Nothing is left behind
/// when anything fails, the client going away included.
pub async fn upload<S, E>(
    p: &Provisioner,
    actor: &Principal,
    req: NewImage,
    declared_len: Option<u64>,
    body: S,
) -> Result<ImageView, AppError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    actor.require_admin()?;
    let u = &p.uploads;
    let facts = check_new(&p.db, &req).await?;
    if let Some(len) = declared_len
        && len > u.max_bytes
    {
        return Err(too_large(u.max_bytes));
    }
    let _permit = u
        .permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| AppError::TooManyRequests {
            detail: "as many image uploads as carve takes at once are under way; try again when one ends".into(),
            retry_after_secs: 30,
        })?;
    make_dir(&u.dir, 0o711).await?;
    if let Some(len) = declared_len {
        let free = storage::free_gib(&u.dir).map_err(|e| AppError::Internal(e.into()))?;
        if len >> 30 >= free {
            return Err(no_space(free));
        }
    }
    let id = ImageId::generate();
    let home = Leftover {
        dir: u.dir.join(id.as_str()),
        armed: true,
    };
    make_dir(&home.dir, 0o711).await?;
    let sha256 = receive(u, body, &home.dir.join("disk.qcow2.part")).await?;
    // From here the work finishes even if the client goes away: the row and the files are
    // kept together or removed together.
    let row = UploadedImage {
        id,
        facts,
        sha256,
        visible: req.visible,
    };
    let (db, max_virtual) = (p.db.clone(), u.max_virtual_bytes);
    tokio::spawn(async move { register(&db, home, row, max_virtual).await })
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("registering an upload failed: {e}")))?
}

/// Checks a received upload, gives it its own copy of the kernel it boots with, and records it.
async fn register(
    db: &Db,
    home: Leftover,
    mut row: UploadedImage,
    max_virtual_bytes: u64,
) -> Result<ImageView, AppError> {
    let part = home.dir.join("disk.qcow2.part");
    let disk = home.dir.join("disk.qcow2");
    let virtual_size = qcow2::check_base(&part, max_virtual_bytes)
        .await
        .map_err(|e| match e {
            qcow2::CheckError::Refused(r) => AppError::invalid("file", r.0),
            qcow2::CheckError::Tool(t) => AppError::Internal(anyhow::anyhow!(t)),
        })?;
    let internal = |e: std::io::Error| AppError::Internal(e.into());
    tokio::fs::rename(&part, &disk).await.map_err(internal)?;
    tokio::fs::set_permissions(&disk, std::fs::Permissions::from_mode(0o644))
        .await
        .map_err(internal)?;
    // The kernel and initramfs are copied, so the image boots even when the image it took them
    // from is rebuilt or removed.
    for (path, name) in [
        (&mut row.facts.kernel_path, "vmlinuz"),
        (&mut row.facts.initrd_path, "initrd.img"),
    ] {
        if let Some(from) = path.as_deref() {
            let to = home.dir.join(name);
            tokio::fs::copy(from, &to).await.map_err(write_failed)?;
            tokio::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644))
                .await
                .map_err(internal)?;
            *path = Some(to.to_string_lossy().into_owned());
        }
    }
    row.facts.disk_path = disk.to_string_lossy().into_owned();
    row.facts.virtual_size_bytes = virtual_size as i64;
    match db::images::insert_uploaded(db, &row).await {
        Ok(()) => {}
        Err(e) if db::is_unique_violation(&e) => return Err(name_taken(&row.facts.name)),
        Err(e) => return Err(e.into()),
    }
    home.keep();
    tracing::info!(image = %row.id, name = %row.facts.name, virtual_gib = virtual_size.div_ceil(1 << 30), "image uploaded");
    let image = db::images::find(db, row.id.as_str())
        .await?
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("uploaded image {} vanished", row.id)))?;
    Ok(ImageView::from(&image))
}

/// At start-up: removes files of uploads that never became an image (carve stopped
/// mid-upload) and of removed images.
pub async fn sweep(p: &Provisioner) {
    let Ok(mut entries) = tokio::fs::read_dir(&p.uploads.dir).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        let live = match db::images::find(&p.db, &name).await {
            Ok(found) => found.is_some_and(|i| i.removed_at.is_none() && i.is_uploaded()),
            Err(_) => true,
        };
        if !live && ImageId::parse(&name).is_some() {
            tracing::info!(dir = %entry.path().display(), "removing the files of an unfinished or removed upload");
            let _ = tokio::fs::remove_dir_all(entry.path()).await;
        }
    }
}

/// Changes what the catalogue says about an image or whether customers see it (admins). A
/// built image's facts come from its manifest: only `visible` changes there.
pub async fn update(
    db: &Db,
    actor: &Principal,
    id: &str,
    changes: ImageChanges,
) -> Result<ImageView, AppError> {
    actor.require_admin()?;
    let image = find_live(db, id).await?;
    let mut errors = Vec::new();
    if changes.os.as_deref() == Some("") {
        errors.push(Invalid::new(
            "os",
            "say which OS the image holds, e.g. debian",
        ));
    }
    if changes.default_user.as_deref() == Some("") {
        errors.push(Invalid::new(
            "default_user",
            "give the user to log in as, e.g. root",
        ));
    }
    if !image.is_uploaded() {
        let set = [
            ("os", changes.os.is_some()),
            ("version", changes.version.is_some()),
            ("description", changes.description.is_some()),
            ("default_user", changes.default_user.is_some()),
            ("min_memory_mib", changes.min_memory_mib.is_some()),
            ("guest_agent", changes.guest_agent.is_some()),
        ];
        for (field, given) in set {
            if given {
                errors.push(Invalid::new(
                    field,
                    format!(
                        "image {} is built into the image directory; change its recipe under images/ (only visible can be set here)",
                        image.name
                    ),
                ));
            }
        }
    }
    check_texts(
        changes.os.as_deref(),
        changes.version.as_deref(),
        changes.description.as_deref(),
        changes.default_user.as_deref(),
        changes.min_memory_mib,
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    if !db::images::update(db, &image.id, &changes).await? {
        return Err(AppError::not_found("image", id));
    }
    let image = find_live(db, image.id.as_str()).await?;
    Ok(ImageView::from(&image))
}

/// Removes an uploaded image that no VM or scale group uses (admins), file and all.
pub async fn remove(p: &Provisioner, actor: &Principal, id: &str) -> Result<(), AppError> {
    actor.require_admin()?;
    let image = find_live(&p.db, id).await?;
    if !image.is_uploaded() {
        return Err(AppError::Conflict(format!(
            "image {} is built into the image directory; hide it (PATCH {{\"visible\": false}}) or remove its directory there",
            image.name
        )));
    }
    if let Err(user) = db::images::remove_uploaded(&p.db, &image.id).await? {
        return Err(AppError::Conflict(format!(
            "image {} is still used by {user}; delete or reinstall what uses it first",
            image.name
        )));
    }
    let home = p.uploads.dir.join(image.id.as_str());
    if let Err(e) = tokio::fs::remove_dir_all(&home).await {
        tracing::warn!(path = %home.display(), error = %e, "cannot remove a removed image's files");
    }
    tracing::info!(image = %image.id, name = %image.name, "image removed");
    Ok(())
}

/// An image that is not removed, by id or name.
async fn find_live(db: &Db, id: &str) -> Result<ImageRow, AppError> {
    db::images::find(db, id)
        .await?
        .filter(|i| i.removed_at.is_none())
        .ok_or_else(|| AppError::not_found("image", id))
}

/// Streams the body into `part`, bounded in size and idle time; returns its SHA-256.
async fn receive<S, E>(u: &Uploads, mut body: S, part: &Path) -> Result<String, AppError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(part)
        .await
        .map_err(|e| AppError::Internal(e.into()))?;
    let mut hash = Sha256::new();
    let mut received: u64 = 0;
    loop {
        let chunk = match tokio::time::timeout(u.idle, body.next()).await {
            Err(_) => {
                return Err(AppError::BadRequest(format!(
                    "the upload stalled after {received} bytes (nothing for {} s); send it again",
                    u.idle.as_secs()
                )));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(AppError::BadRequest(format!(
                    "the upload broke off after {received} bytes ({e}); send it again"
                )));
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        received += chunk.len() as u64;
        if received > u.max_bytes {
            return Err(too_large(u.max_bytes));
        }
        hash.update(&chunk);
        file.write_all(&chunk).await.map_err(write_failed)?;
    }
    if received == 0 {
        return Err(AppError::invalid(
            "file",
            "the body is empty; send the qcow2 file as the request body",
        ));
    }
    file.sync_all().await.map_err(write_failed)?;
    Ok(hex::encode(hash.finalize()))
}

/// A write to the image store that failed: out of space is the admin's to fix.
fn write_failed(e: std::io::Error) -> AppError {
    if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) {
        AppError::Conflict(
            "the image store ran out of space during the upload; free space in carve's data directory and send it again".into(),
        )
    } else {
        AppError::Internal(e.into())
    }
}

fn too_large(max: u64) -> AppError {
    AppError::TooLarge(format!(
        "the upload is larger than images.max_upload_mib ({} MiB); compress it with `qemu-img convert -c -O qcow2 IN OUT` or raise the limit",
        max >> 20
    ))
}

fn no_space(free_gib: u64) -> AppError {
    AppError::Conflict(format!(
        "the image store has {free_gib} GiB free, not enough for this upload; free space in carve's data directory first"
    ))
}

fn name_taken(name: &str) -> AppError {
    AppError::Conflict(format!(
        "an image named {name} already exists; choose another name"
    ))
}

/// Creates a directory with these permissions (parents as needed).
async fn make_dir(dir: &Path, mode: u32) -> Result<(), AppError> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("creating {}: {e}", dir.display())))?;
    tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .await
        .map_err(|e| AppError::Internal(e.into()))
}

/// An upload's directory, removed when dropped unless kept (an error, a refusal, or the
/// client going away mid-upload leave nothing behind).
struct Leftover {
    dir: PathBuf,
    armed: bool,
}

impl Leftover {
    fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for Leftover {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
