//! Plans and images: what VMs are sold as and made from.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::db::images::ImageRow;
use crate::db::plans::PlanRow;
use crate::db::{self, Db};
use crate::domain::Invalid;
use crate::domain::ids::PlanId;
use crate::domain::image::{BootMethod, ImageSource};
use crate::domain::names::ResourceName;
use crate::domain::sizes::Resources;
use crate::error::AppError;

/// A plan: the size VMs are sold in.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanView {
    pub id: String,
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub created_at: DateTime<Utc>,
}

impl From<&PlanRow> for PlanView {
    fn from(p: &PlanRow) -> Self {
        Self {
            id: p.id.to_string(),
            name: p.name.clone(),
            vcpus: p.vcpus as u32,
            memory_mib: p.memory_mib as u64,
            disk_gib: p.disk_gib as u64,
            created_at: p.created_at,
        }
    }
}

/// A request to create a plan.
#[derive(Debug, Clone)]
pub struct CreatePlan {
    /// Letters, digits, '.', '_' and '-'; unique.
    pub name: String,
    /// Virtual CPUs (1-256).
    pub vcpus: i64,
    /// Memory in MiB (64 to 4194304).
    pub memory_mib: i64,
    /// Disk in GiB (1 to 65536).
    pub disk_gib: i64,
}

/// A base image VMs are made from.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImageView {
    pub id: String,
    pub name: String,
    pub os: String,
    pub description: String,
    pub boot: BootMethod,
    /// Size of the base disk as the guest sees it, in bytes.
    pub virtual_size_bytes: u64,
    /// Least memory a plan needs for this image, in MiB.
    pub min_memory_mib: u64,
    /// Least disk a plan needs for this image (its base's size), in GiB.
    pub min_disk_gib: u64,
    /// The OS's version, e.g. `12.8`.
    pub version: String,
    /// The user to log in as by SSH with the VM's keys.
    pub default_user: String,
    /// Whether the image runs the QEMU guest agent (clean shutdown, addresses in the VM view).
    pub guest_agent: bool,
    /// False when the image's files are gone from the image directory.
    pub available: bool,
    /// Built from carve's image directory, or uploaded by an admin.
    pub source: ImageSource,
    /// Offered to customers; a hidden image is for admins only.
    pub visible: bool,
    /// SHA-256 of an uploaded image's qcow2 file, as received.
    pub sha256: Option<String>,
}

impl From<&ImageRow> for ImageView {
    fn from(i: &ImageRow) -> Self {
        Self {
            id: i.id.to_string(),
            name: i.name.clone(),
            os: i.os.clone(),
            description: i.description.clone(),
            boot: i.boot,
            virtual_size_bytes: i.virtual_size_bytes as u64,
            min_memory_mib: i.min_memory_mib as u64,
            min_disk_gib: (i.virtual_size_bytes as u64).div_ceil(1 << 30),
            version: i.version.clone(),
            default_user: i.default_user.clone(),
            guest_agent: i.guest_agent,
            available: i.available,
            source: i.source,
            visible: i.visible,
            sha256: i.sha256.clone(),
        }
    }
}

/// One page of plans, smallest first.
pub async fn list_plans(
    db: &Db,
    page: &db::page::PageRequest,
) -> Result<db::page::Page<PlanView>, AppError> {
    Ok(db::plans::page(db, page).await?.map(|p| PlanView::from(&p)))
}

/// Creates a plan (admins).
pub async fn create_plan(
    db: &Db,
    actor: &Principal,
    req: CreatePlan,
) -> Result<PlanView, AppError> {
    if !actor.is_admin() {
        return Err(AppError::Forbidden("only admins create plans".into()));
    }
    let mut errors: Vec<Invalid> = Vec::new();
    let name = ResourceName::parse(&req.name, "name")
        .map_err(|e| errors.push(e))
        .ok();
    let sizes = Resources::parse(req.vcpus, req.memory_mib, req.disk_gib)
        .map_err(|e| errors.push(e))
        .ok();
    let (Some(name), Some(sizes)) = (name, sizes) else {
        return Err(AppError::Invalid(errors));
    };
    match db::plans::insert(db, name.as_str(), sizes).await {
        Ok(row) => Ok(PlanView::from(&row)),
        Err(e) if db::is_unique_violation(&e) => Err(AppError::Conflict(format!(
            "a plan named {name} already exists; choose another name"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Deletes a plan (admins); VMs made with it keep their size.
pub async fn delete_plan(db: &Db, actor: &Principal, id: &str) -> Result<(), AppError> {
    if !actor.is_admin() {
        return Err(AppError::Forbidden("only admins delete plans".into()));
    }
    let plan_id = PlanId::parse(id).ok_or_else(|| AppError::not_found("plan", id))?;
    if db::plans::delete(db, &plan_id).await? {
        Ok(())
    } else {
        Err(AppError::not_found("plan", id))
    }
}

/// One image by id or name; a hidden one only for admins.
pub async fn get_image(db: &Db, actor: &Principal, id: &str) -> Result<ImageView, AppError> {
    db::images::find(db, id)
        .await?
        .filter(|i| i.removed_at.is_none() && (i.visible || actor.is_admin()))
        .map(|i| ImageView::from(&i))
        .ok_or_else(|| AppError::not_found("image", id))
}

/// Every image a VM can be made from now by this actor (files present; hidden ones for
/// admins only), by name.
pub async fn usable_images(db: &Db, actor: &Principal) -> Result<Vec<ImageView>, AppError> {
    Ok(list_images(db, actor, &db::page::PageRequest::FIRST_MAX)
        .await?
        .items
        .into_iter()
        .filter(|i| i.available)
        .collect())
}

/// One page of images, by name: all of them for admins, the visible ones for others.
pub async fn list_images(
    db: &Db,
    actor: &Principal,
    page: &db::page::PageRequest,
) -> Result<db::page::Page<ImageView>, AppError> {
    Ok(db::images::page(db, page, !actor.is_admin())
        .await?
        .map(|i| ImageView::from(&i)))
}
