//! Quotas as admins manage them: read and set a tenant's limits, and its usage against them.

use super::*;
use crate::quota::quota_of;

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
