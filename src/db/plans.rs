//! The plans table: the sizes VMs are sold in.

use chrono::{DateTime, Utc};

use super::page::{Page, PageRequest};
use super::{Db, now};
use crate::domain::ids::PlanId;
use crate::domain::sizes::Resources;

/// A plan row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PlanRow {
    pub id: PlanId,
    pub name: String,
    pub vcpus: i64,
    pub memory_mib: i64,
    pub disk_gib: i64,
    pub created_at: DateTime<Utc>,
}

impl PlanRow {
    /// The resources a VM of this plan takes.
    pub fn resources(&self) -> Resources {
        Resources {
            vcpus: self.vcpus as u32,
            memory_mib: self.memory_mib as u64,
            disk_gib: self.disk_gib as u64,
        }
    }
}

/// Inserts a plan; the name must be unused.
pub async fn insert(db: &Db, name: &str, r: Resources) -> Result<PlanRow, sqlx::Error> {
    crate::on_db!(db, db => {
        let row = PlanRow {
            id: PlanId::generate(),
            name: name.to_string(),
            vcpus: i64::from(r.vcpus),
            memory_mib: r.memory_mib as i64,
            disk_gib: r.disk_gib as i64,
            created_at: now(),
        };
        sqlx::query(
            "INSERT INTO plans (id, name, vcpus, memory_mib, disk_gib, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&row.id)
        .bind(&row.name)
        .bind(row.vcpus)
        .bind(row.memory_mib)
        .bind(row.disk_gib)
        .bind(row.created_at)
        .execute(db)
        .await?;
        Ok(row)
    })
}

/// One page of plans, smallest first.
pub async fn page(db: &Db, page: &PageRequest) -> Result<Page<PlanRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        let rows = sqlx::query_as(
            "SELECT id, name, vcpus, memory_mib, disk_gib, created_at FROM plans
         WHERE ($1 IS NULL OR (memory_mib, vcpus, disk_gib, name) > ($1, $2, $3, $4))
         ORDER BY memory_mib, vcpus, disk_gib, name LIMIT $5",
        )
        .bind(page.int(0))
        .bind(page.int(1))
        .bind(page.int(2))
        .bind(page.key(3))
        .bind(page.fetch())
        .fetch_all(db)
        .await?;
        Ok(page.finish(rows, |p: &PlanRow| {
            vec![
                p.memory_mib.to_string(),
                p.vcpus.to_string(),
                p.disk_gib.to_string(),
                p.name.clone(),
            ]
        }))
    })
}

/// The plan with this id or name.
pub async fn find(db: &Db, id_or_name: &str) -> Result<Option<PlanRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(
            "SELECT id, name, vcpus, memory_mib, disk_gib, created_at FROM plans
             WHERE id = $1 OR name = $1",
        )
        .bind(id_or_name)
        .fetch_optional(db)
        .await
    })
}

/// Deletes a plan; VMs keep the sizes they were made with.
pub async fn delete(db: &Db, id: &PlanId) -> Result<bool, sqlx::Error> {
    crate::on_db!(db, db => {
        let done = sqlx::query("DELETE FROM plans WHERE id = $1")
            .bind(id)
            .execute(db)
            .await?;
        Ok(done.rows_affected() == 1)
    })
}
