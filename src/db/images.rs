//! The images table: base images built into the image directory or uploaded by an admin.

use chrono::{DateTime, Utc};

use super::page::{Page, PageRequest};
use super::{Db, now};
use crate::domain::ids::ImageId;
use crate::domain::image::{BootMethod, ImageSource};

/// An image row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ImageRow {
    pub id: ImageId,
    pub name: String,
    pub os: String,
    pub description: String,
    pub boot: BootMethod,
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
    pub source: ImageSource,
    /// Offered to customers; hidden images are for admins only.
    pub visible: bool,
    /// SHA-256 of an uploaded base, as received.
    pub sha256: Option<String>,
    pub removed_at: Option<DateTime<Utc>>,
}

impl ImageRow {
    /// Whether this image was uploaded (rather than built into the image directory).
    pub fn is_uploaded(&self) -> bool {
        self.source == ImageSource::Uploaded
    }
}

/// What a manifest says about an image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFacts {
    pub name: String,
    pub os: String,
    pub description: String,
    pub boot: BootMethod,
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
    guest_agent, source, visible, sha256, removed_at"
    };
}

/// Binds an image's id and facts as $1 to $15 ($12: the time of registration).
macro_rules! bind_facts {
    ($q:expr, $id:expr, $f:expr $(,)?) => {{
        let f: &ImageFacts = $f;
        $q.bind($id)
            .bind(&f.name)
            .bind(&f.os)
            .bind(&f.description)
            .bind(f.boot)
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
    }};
}

/// Inserts or refreshes the built image with this name, marking it available. Returns false
/// when an uploaded image already has the name (it is left alone).
pub async fn upsert(db: &Db, f: &ImageFacts) -> Result<bool, sqlx::Error> {
    crate::on_db!(db, db => {
        let id = ImageId::generate();
        let done = bind_facts!(
            sqlx::query(
            "INSERT INTO images (id, name, os, description, boot, disk_path, kernel_path, initrd_path,
            cmdline, virtual_size_bytes, min_memory_mib, available, registered_at, version,
            default_user, guest_agent)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, TRUE, $12, $13, $14, $15)
         ON CONFLICT(name) DO UPDATE SET os = excluded.os, description = excluded.description,
            boot = excluded.boot, disk_path = excluded.disk_path,
            kernel_path = excluded.kernel_path, initrd_path = excluded.initrd_path,
            cmdline = excluded.cmdline, virtual_size_bytes = excluded.virtual_size_bytes,
            min_memory_mib = excluded.min_memory_mib, available = TRUE, version = excluded.version,
            default_user = excluded.default_user, guest_agent = excluded.guest_agent
         WHERE images.source = 'built'",
            ),
            &id,
            f,
        )
        .execute(db)
        .await?;
        Ok(done.rows_affected() == 1)
    })
}

/// Marks every built image not named here unavailable (its files are gone); rows stay for
/// old VMs.
pub async fn mark_missing_except(db: &Db, present: &[String]) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db, pg => {
        let json = serde_json::to_string(present).unwrap_or_else(|_| "[]".into());
        sqlx::query(&super::dialect(pg, "UPDATE images SET available = FALSE
             WHERE source = 'built' AND name NOT IN (SELECT value FROM json_each($1))"))
        .bind(json)
        .execute(db)
        .await?;
        Ok(())
    })
}

/// One page of images, by name: every image not removed, or only visible ones.
pub async fn page(
    db: &Db,
    page: &PageRequest,
    visible_only: bool,
) -> Result<Page<ImageRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        let rows = sqlx::query_as(concat!(
            "SELECT ",
            image_columns!(),
            " FROM images WHERE removed_at IS NULL AND (NOT $3 OR visible)
               AND ($1 IS NULL OR name > $1) ORDER BY name LIMIT $2"
        ))
        .bind(page.key(0))
        .bind(page.fetch())
        .bind(visible_only)
        .fetch_all(db)
        .await?;
        Ok(page.finish(rows, |i: &ImageRow| vec![i.name.clone()]))
    })
}

/// All images, removed ones included, by name.
pub async fn list(db: &Db) -> Result<Vec<ImageRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(concat!(
            "SELECT ",
            image_columns!(),
            " FROM images ORDER BY name"
        ))
        .fetch_all(db)
        .await
    })
}

/// The image with this id (removed or not) or name (not removed).
pub async fn find(db: &Db, id_or_name: &str) -> Result<Option<ImageRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(concat!(
            "SELECT ",
            image_columns!(),
            " FROM images WHERE id = $1 OR (name = $1 AND removed_at IS NULL)"
        ))
        .bind(id_or_name)
        .fetch_optional(db)
        .await
    })
}

/// An uploaded image to record.
#[derive(Debug, Clone)]
pub struct UploadedImage {
    pub id: ImageId,
    pub facts: ImageFacts,
    pub sha256: String,
    pub visible: bool,
}

/// Records an uploaded image (its file is in place).
pub async fn insert_uploaded(db: &Db, u: &UploadedImage) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        bind_facts!(
            sqlx::query(
            "INSERT INTO images (id, name, os, description, boot, disk_path, kernel_path, initrd_path,
            cmdline, virtual_size_bytes, min_memory_mib, available, registered_at, version,
            default_user, guest_agent, source, visible, sha256)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, TRUE, $12, $13, $14, $15, 'uploaded',
            $16, $17)",
            ),
            &u.id,
            &u.facts,
        )
        .bind(u.visible)
        .bind(&u.sha256)
        .execute(db)
        .await?;
        Ok(())
    })
}

/// The fields of an image an admin may change (`None` leaves one as it is).
#[derive(Debug, Clone, Default)]
pub struct ImageChanges {
    pub visible: Option<bool>,
    pub os: Option<String>,
    pub version: Option<String>,
    pub description: Option<String>,
    pub default_user: Option<String>,
    pub min_memory_mib: Option<i64>,
    pub guest_agent: Option<bool>,
}

/// Applies changes to an image that is not removed; false if there is none with this id.
pub async fn update(db: &Db, id: &ImageId, c: &ImageChanges) -> Result<bool, sqlx::Error> {
    crate::on_db!(db, db => {
        let done = sqlx::query(
            "UPDATE images SET visible = COALESCE($2, visible), os = COALESCE($3, os),
            version = COALESCE($4, version), description = COALESCE($5, description),
            default_user = COALESCE($6, default_user),
            min_memory_mib = COALESCE($7, min_memory_mib),
            guest_agent = COALESCE($8, guest_agent)
         WHERE id = $1 AND removed_at IS NULL",
        )
        .bind(id)
        .bind(c.visible)
        .bind(&c.os)
        .bind(&c.version)
        .bind(&c.description)
        .bind(&c.default_user)
        .bind(c.min_memory_mib)
        .bind(c.guest_agent)
        .execute(db)
        .await?;
        Ok(done.rows_affected() == 1)
    })
}

/// What still uses an image, if anything: a VM not deleted, a reinstall under way, or a scale
/// group's template.
pub async fn user_of(
    db: impl Into<super::Ex<'_>>,
    id: &ImageId,
) -> Result<Option<String>, sqlx::Error> {
    crate::on_ex!(db, db, pg => {
        sqlx::query_scalar(&super::dialect(pg, "SELECT 'VM ' || name FROM vms WHERE image_id = $1 AND state <> 'deleted'
         UNION ALL
         SELECT 'the scale group of pool ' || p.name FROM scale_groups g
           JOIN pools p ON p.id = g.pool_id WHERE g.image_id = $1
         UNION ALL
         SELECT 'a reinstall of VM ' || v.name FROM operations o JOIN vms v ON v.id = o.target_id
           WHERE o.kind = 'reinstall' AND o.state IN ('pending', 'running')
             AND json_extract(o.params, '$.image_id') = $1
         LIMIT 1"))
        .bind(id)
        .fetch_optional(db)
        .await
    })
}

/// Removes an uploaded image nothing uses, in one immediate transaction: the row goes, or
/// (when deleted VMs still name it) stays with `removed_at` set and its name freed.
/// `Err(Some(user))` names what still uses it.
pub async fn remove_uploaded(db: &Db, id: &ImageId) -> Result<Result<(), String>, sqlx::Error> {
    crate::on_db!(db, db => {
        let mut tx = super::WritePool::begin_write(db).await?;
        if let Some(user) = user_of(&mut *tx, id).await? {
            return Ok(Err(user));
        }
        let named: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM vms WHERE image_id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        if named == 0 {
            sqlx::query("DELETE FROM images WHERE id = $1 AND source = 'uploaded'")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query(
                "UPDATE images SET removed_at = $2, available = FALSE, visible = FALSE,
                name = name || '@removed-' || id
             WHERE id = $1 AND source = 'uploaded' AND removed_at IS NULL",
            )
            .bind(id)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Ok(()))
    })
}

/// Whether the image can still be used (inside an admission's write transaction, so a
/// removal cannot slip between the check and the new VM).
pub async fn is_usable(db: impl Into<super::Ex<'_>>, id: &str) -> Result<bool, sqlx::Error> {
    crate::on_ex!(db, db => {
        let found: Option<bool> =
            sqlx::query_scalar("SELECT available FROM images WHERE id = $1 AND removed_at IS NULL")
                .bind(id)
                .fetch_optional(db)
                .await?;
        Ok(found == Some(true))
    })
}
