//! Quotas: each tenant's limits (its own or the configured default), its usage, and the
//! check that refuses what would pass them, inside the transaction that creates it.

use super::*;

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
    conn: &mut sqlx::SqliteConnection,
    defaults: &QuotaConfig,
    tenant: &TenantId,
) -> Result<Quota, sqlx::Error> {
    Ok(db::quotas::get(&mut *conn, tenant)
        .await?
        .unwrap_or_else(|| default_quota(defaults)))
}

/// A tenant's quota (admins).
pub async fn get_quota(app: &App, actor: &Principal, id: &str) -> Result<Quota, AppError> {
    actor.require_admin()?;
    let tenant = load_tenant(&app.db, id).await?;
    let mut conn = app.db.acquire().await?;
    Ok(quota_of(&mut conn, &app.config.quota, &tenant.id).await?)
}

/// Sets a tenant's quota (admins). Lowering it below usage refuses new resources only.
pub async fn put_quota(
    app: &App,
    actor: &Principal,
    id: &str,
    quota: Quota,
) -> Result<Quota, AppError> {
    actor.require_admin()?;
    let tenant = load_tenant(&app.db, id).await?;
    let fields = [
        ("max_vms", quota.max_vms),
        ("max_vcpus", quota.max_vcpus),
        ("max_memory_mib", quota.max_memory_mib),
        ("max_disk_gib", quota.max_disk_gib),
        ("max_sftp_bytes", quota.max_sftp_bytes),
        ("max_sftp_files", quota.max_sftp_files),
    ];
    let errors: Vec<Invalid> = fields
        .iter()
        .filter(|(_, v)| *v < 0)
        .map(|(f, v)| Invalid::new(f, format!("{v} is negative: use 0 or more")))
        .collect();
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    db::quotas::put(&app.db, &tenant.id, &quota).await?;
    Ok(quota)
}

/// A tenant's usage against its quota.
pub async fn usage_of(app: &App, tenant: &TenantId) -> Result<UsageView, AppError> {
    let mut conn = app.db.acquire().await?;
    let quota = quota_of(&mut conn, &app.config.quota, tenant).await?;
    let usage = db::quotas::usage(&mut conn, tenant).await?;
    Ok(UsageView {
        tenant_id: tenant.to_string(),
        quota,
        usage,
    })
}

/// A tenant's usage (admins).
pub async fn tenant_usage(app: &App, actor: &Principal, id: &str) -> Result<UsageView, AppError> {
    actor.require_admin()?;
    let tenant = load_tenant(&app.db, id).await?;
    usage_of(app, &tenant.id).await
}

/// Refuses `need` more of each resource if the tenant's quota would be exceeded; call inside
/// the write transaction that then creates the resource.
pub async fn check_quota(
    conn: &mut sqlx::SqliteConnection,
    defaults: &QuotaConfig,
    tenant: &TenantId,
    need: Usage,
) -> Result<(), AppError> {
    let quota = quota_of(conn, defaults, tenant).await?;
    let used = db::quotas::usage(conn, tenant).await?;
    let rows = [
        ("max_vms", quota.max_vms, used.vms, need.vms, " VMs"),
        (
            "max_vcpus",
            quota.max_vcpus,
            used.vcpus,
            need.vcpus,
            " vCPUs",
        ),
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
                "quota exceeded: {limit} is {max}{unit} and the tenant uses {used}{unit}, so {need}{unit} more do not fit; \
                 free some or ask an admin to raise the quota"
            )));
        }
    }
    Ok(())
}
