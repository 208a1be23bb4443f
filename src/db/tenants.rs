//! The tenants table.

use chrono::{DateTime, Utc};

use super::page::{Page, PageRequest};
use super::{Db, now};
use crate::domain::ids::TenantId;

/// A tenant row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantRow {
    pub id: TenantId,
    pub name: String,
    pub suspended: bool,
    pub created_at: DateTime<Utc>,
}

/// The tenant with this id.
pub async fn get(
    db: impl Into<super::Ex<'_>>,
    id: &TenantId,
) -> Result<Option<TenantRow>, sqlx::Error> {
    crate::on_ex!(db, db => {
        sqlx::query_as("SELECT id, name, suspended, created_at FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await
    })
}

/// One page of tenants, by name.
pub async fn page(db: &Db, page: &PageRequest) -> Result<Page<TenantRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        let rows = sqlx::query_as(
            "SELECT id, name, suspended, created_at FROM tenants
             WHERE ($1 IS NULL OR name > $1) ORDER BY name LIMIT $2",
        )
        .bind(page.key(0))
        .bind(page.fetch())
        .fetch_all(db)
        .await?;
        Ok(page.finish(rows, |t: &TenantRow| vec![t.name.clone()]))
    })
}

/// Inserts a tenant; the name must be unused.
pub async fn insert(db: &Db, name: &str) -> Result<TenantRow, sqlx::Error> {
    crate::on_db!(db, db => {
        let row = TenantRow {
            id: TenantId::generate(),
            name: name.into(),
            suspended: false,
            created_at: now(),
        };
        sqlx::query("INSERT INTO tenants (id, name, suspended, created_at) VALUES ($1, $2, FALSE, $3)")
            .bind(&row.id)
            .bind(&row.name)
            .bind(row.created_at)
            .execute(db)
            .await?;
        Ok(row)
    })
}

/// Renames a tenant.
pub async fn rename(db: &Db, id: &TenantId, name: &str) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query("UPDATE tenants SET name = $2 WHERE id = $1")
            .bind(id)
            .bind(name)
            .execute(db)
            .await?;
        Ok(())
    })
}

/// Suspends or reinstates a tenant.
pub async fn set_suspended(db: &Db, id: &TenantId, suspended: bool) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query("UPDATE tenants SET suspended = $2 WHERE id = $1")
            .bind(id)
            .bind(suspended)
            .execute(db)
            .await?;
        Ok(())
    })
}

/// Deletes a tenant with its users, their tokens and sessions, its quota, and the records of
/// its deleted VMs and finished operations. The caller checks it has no live VMs.
pub async fn delete(conn: &mut super::Tx, id: &TenantId) -> Result<(), sqlx::Error> {
    crate::on_tx!(conn, conn => {
        for sql in [
            "DELETE FROM users WHERE tenant_id = $1",
            "DELETE FROM sftp_accounts WHERE tenant_id = $1",
            "DELETE FROM quotas WHERE tenant_id = $1",
            "DELETE FROM operations WHERE tenant_id = $1",
            "DELETE FROM port_forwards WHERE vm_id IN (SELECT id FROM vms WHERE tenant_id = $1)",
            "DELETE FROM pool_members WHERE vm_id IN (SELECT id FROM vms WHERE tenant_id = $1)",
            "DELETE FROM vms WHERE tenant_id = $1",
            "DELETE FROM tenants WHERE id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *conn).await?;
        }
        Ok(())
    })
}
