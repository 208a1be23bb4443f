//! The images table: base images found in the image directory.

use chrono::{DateTime, Utc};

use super::page::{Page, PageRequest};
use super::{Db, now};
use crate::domain::ids::ImageId;

/// An image row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ImageRow {
    pub id: ImageId,
    pub name: String,
    pub os: String,
    pub description: String,
    pub boot: String,
    pub disk_path: String,
    pub kernel_path: Option<String>,
    pub initrd_path: Option<String>,
    pub cmdline: Option<String>,
    pub virtual_size_bytes: i64,
    pub min_memory_mib: i64,
    pub available: bool,
    pub registered_at: DateTime<Utc>,
    pub version: String,
    pub default_user: String,
    pub guest_agent: bool,
}

/// What a manifest says about an image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFacts {
    pub name: String,
    pub os: String,
    pub description: String,
    pub boot: String,
    pub disk_path: String,
    pub kernel_path: Option<String>,
    pub initrd_path: Option<String>,
    pub cmdline: Option<String>,
    pub virtual_size_bytes: i64,
    pub min_memory_mib: i64,
    pub version: String,
    pub default_user: String,
    pub guest_agent: bool,
}

/// The columns every query of this table reads.
macro_rules! image_columns {
    () => {
        "id, name, os, description, boot, disk_path, kernel_path, initrd_path, \
    cmdline, virtual_size_bytes, min_memory_mib, available, registered_at, version, default_user, \
    guest_agent"
    };
}

/// Inserts or refreshes the image with this name, marking it available.
pub async fn upsert(db: &Db, f: &ImageFacts) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO images (id, name, os, description, boot, disk_path, kernel_path, initrd_path,
            cmdline, virtual_size_bytes, min_memory_mib, available, registered_at, version,
            default_user, guest_agent)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 1, ?12, ?13, ?14, ?15)
         ON CONFLICT(name) DO UPDATE SET os = excluded.os, description = excluded.description,
            boot = excluded.boot, disk_path = excluded.disk_path,
            kernel_path = excluded.kernel_path, initrd_path = excluded.initrd_path,
            cmdline = excluded.cmdline, virtual_size_bytes = excluded.virtual_size_bytes,
            min_memory_mib = excluded.min_memory_mib, available = 1, version = excluded.version,
            default_user = excluded.default_user, guest_agent = excluded.guest_agent",
    )
    .bind(ImageId::generate())
    .bind(&f.name)
    .bind(&f.os)
    .bind(&f.description)
    .bind(&f.boot)
    .bind(&f.disk_path)
    .bind(&f.kernel_path)
    .bind(&f.initrd_path)
    .bind(&f.cmdline)
    .bind(f.virtual_size_bytes)
    .bind(f.min_memory_mib)
    .bind(now())
    .bind(&f.version)
    .bind(&f.default_user)
    .bind(f.guest_agent)
    .execute(db)
    .await?;
    Ok(())
}

/// Marks every image not named here unavailable (its files are gone); rows stay for old VMs.
pub async fn mark_missing_except(db: &Db, present: &[String]) -> Result<(), sqlx::Error> {
    let json = serde_json::to_string(present).unwrap_or_else(|_| "[]".into());
    sqlx::query(
        "UPDATE images SET available = 0 WHERE name NOT IN (SELECT value FROM json_each(?1))",
    )
    .bind(json)
    .execute(db)
    .await?;
    Ok(())
}

/// One page of images, by name.
pub async fn page(db: &Db, page: &PageRequest) -> Result<Page<ImageRow>, sqlx::Error> {
    let rows = sqlx::query_as(concat!(
        "SELECT ",
        image_columns!(),
        " FROM images WHERE (?1 IS NULL OR name > ?1) ORDER BY name LIMIT ?2"
    ))
    .bind(page.key(0))
    .bind(page.fetch())
    .fetch_all(db)
    .await?;
    Ok(page.finish(rows, |i: &ImageRow| vec![i.name.clone()]))
}

/// All images, by name.
pub async fn list(db: &Db) -> Result<Vec<ImageRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        image_columns!(),
        " FROM images ORDER BY name"
    ))
    .fetch_all(db)
    .await
}

/// The image with this id or name.
pub async fn find(db: &Db, id_or_name: &str) -> Result<Option<ImageRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        image_columns!(),
        " FROM images WHERE id = ?1 OR name = ?1"
    ))
    .bind(id_or_name)
    .fetch_optional(db)
    .await
}
