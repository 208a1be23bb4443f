//! Quotas: every tenant's limits (its own or the configured default) and the check every
//! service makes, inside the write transaction that then creates the resource, so usage and
//! limit are read and used at one moment.

use crate::config::QuotaConfig;
use crate::db::{
    self,
    quotas::{Quota, Usage},
};
use crate::domain::ids::TenantId;
use crate::error::AppError;

/// The configured default quota.
pub fn default_quota(c: &QuotaConfig) -> Quota {
    let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    Quota {
        max_vms: i(c.max_vms),
        max_vcpus: i(c.max_vcpus),
        max_memory_mib: i(c.max_memory_mib),
        max_disk_gib: i(c.max_disk_gib),
        max_sftp_bytes: i(c.max_sftp_bytes),
        max_sftp_files: i(c.max_sftp_files),
    }
}

/// The tenant's quota: its own, or the configured default.
pub async fn quota_of(
    conn: &mut crate::db::Tx,
    defaults: &QuotaConfig,
    tenant: &TenantId,
) -> Result<Quota, sqlx::Error> {
    Ok(db::quotas::get(&mut *conn, tenant)
        .await?
        .unwrap_or_else(|| default_quota(defaults)))
}

/// Refuses `need` more of each resource if the tenant's quota would be exceeded; call inside
/// the write transaction that then creates the resource.
pub async fn check_quota(
    conn: &mut crate::db::Tx,
    defaults: &QuotaConfig,
    tenant: &TenantId,
    need: Usage,
) -> Result<(), AppError> {
    let quota = quota_of(conn, defaults, tenant).await?;
    let used = db::quotas::usage(conn, tenant).await?;
    let rows = [
        ("max_vms", quota.max_vms, used.vms, need.vms, ""),
        ("max_vcpus", quota.max_vcpus, used.vcpus, need.vcpus, ""),
        (
            "max_memory_mib",
            quota.max_memory_mib,
            used.memory_mib,
            need.memory_mib,
            " MiB",
        ),
        (
            "max_disk_gib",
            quota.max_disk_gib,
            used.disk_gib,
            need.disk_gib,
            " GiB",
        ),
    ];
    for (limit, max, used, need, unit) in rows {
        if need > 0 && used + need > max {
            return Err(AppError::Forbidden(format!(
                "quota exceeded: {limit} is {max}{unit}, the tenant uses {used}{unit} and this needs {need}{unit} more; \
                 free some or ask an admin to raise the quota"
            )));
        }
    }
    Ok(())
}
