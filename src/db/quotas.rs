//! The quotas table, and usage counted from the rows that exist.

use super::now;
use crate::domain::ids::TenantId;

/// A tenant's limits.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    sqlx::FromRow,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
pub struct Quota {
    pub max_vms: i64,
    pub max_vcpus: i64,
    /// In MiB.
    pub max_memory_mib: i64,
    /// In GiB.
    pub max_disk_gib: i64,
    /// SFTP storage in bytes.
    pub max_sftp_bytes: i64,
    /// SFTP files and directories.
    pub max_sftp_files: i64,
}

/// What a tenant uses now.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    sqlx::FromRow,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
pub struct Usage {
    pub vms: i64,
    pub vcpus: i64,
    pub memory_mib: i64,
    pub disk_gib: i64,
    pub sftp_bytes: i64,
    pub sftp_files: i64,
}

/// The tenant's own quota, if it has one.
pub async fn get(
    conn: impl Into<super::Ex<'_>>,
    tenant: &TenantId,
) -> Result<Option<Quota>, sqlx::Error> {
    crate::on_ex!(conn, conn => {
        sqlx::query_as(
            "SELECT max_vms, max_vcpus, max_memory_mib, max_disk_gib, max_sftp_bytes, max_sftp_files
             FROM quotas WHERE tenant_id = $1",
        )
        .bind(tenant)
        .fetch_optional(conn)
        .await
    })
}

/// Sets the tenant's quota.
pub async fn put(
    conn: impl Into<super::Ex<'_>>,
    tenant: &TenantId,
    q: &Quota,
) -> Result<(), sqlx::Error> {
    crate::on_ex!(conn, conn => {
        sqlx::query(
            "INSERT INTO quotas (tenant_id, max_vms, max_vcpus, max_memory_mib, max_disk_gib, max_sftp_bytes,
            max_sftp_files, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT(tenant_id) DO UPDATE SET max_vms = excluded.max_vms, max_vcpus = excluded.max_vcpus,
            max_memory_mib = excluded.max_memory_mib, max_disk_gib = excluded.max_disk_gib,
            max_sftp_bytes = excluded.max_sftp_bytes, max_sftp_files = excluded.max_sftp_files,
            updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(q.max_vms)
        .bind(q.max_vcpus)
        .bind(q.max_memory_mib)
        .bind(q.max_disk_gib)
        .bind(q.max_sftp_bytes)
        .bind(q.max_sftp_files)
        .bind(now())
        .execute(conn)
        .await?;
        Ok(())
    })
}

/// The tenant's usage counted from its live VMs (and SFTP accounts, once they exist).
pub async fn usage(conn: &mut super::Tx, tenant: &TenantId) -> Result<Usage, sqlx::Error> {
    crate::on_tx!(conn, conn => {
        let (vms, vcpus, memory_mib, disk_gib): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), CAST(COALESCE(SUM(vcpus), 0) AS BIGINT), CAST(COALESCE(SUM(memory_mib), 0) AS BIGINT), CAST(COALESCE(SUM(disk_gib), 0) AS BIGINT)
             FROM vms WHERE tenant_id = $1 AND deleted_at IS NULL",
        )
        .bind(tenant)
        .fetch_one(&mut *conn)
        .await?;
        let (sftp_bytes, sftp_files) = super::sftp_accounts::tenant_usage(&mut *conn, tenant).await?;
        Ok(Usage {
            vms,
            vcpus,
            memory_mib,
            disk_gib,
            sftp_bytes,
            sftp_files,
        })
    })
}
