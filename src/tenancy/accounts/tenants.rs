//! Tenants (admins): create, list, read, rename, suspend (stopping their VMs), delete.

use super::*;

/// A tenant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantView {
    pub id: String,
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    pub name: String,
    /// A suspended tenant's VMs are stopped and its users cannot log in.
    pub suspended: bool,
    pub created_at: DateTime<Utc>,
}

impl From<&TenantRow> for TenantView {
    fn from(t: &TenantRow) -> Self {
        Self {
            id: t.id.to_string(),
            name: t.name.clone(),
            suspended: t.suspended,
            created_at: t.created_at,
        }
    }
}

/// A request to create a tenant.
#[derive(Debug, Clone)]
pub struct CreateTenant {
    /// Letters, digits, '.', '_' and '-'; unique.
    pub name: String,
}

/// A change to a tenant; absent fields stay.
#[derive(Debug, Clone)]
pub struct UpdateTenant {
    pub name: Option<String>,
    /// Suspending stops the tenant's VMs and refuses its logins and tokens.
    pub suspended: Option<bool>,
}

/// A tenant's limits against what it uses.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UsageView {
    pub tenant_id: String,
    pub quota: Quota,
    pub usage: Usage,
}

pub(crate) fn parse_tenant_id(id: &str) -> Result<TenantId, AppError> {
    TenantId::parse(id).ok_or_else(|| AppError::not_found("tenant", id))
}

pub(crate) async fn load_tenant(db: &Db, id: &str) -> Result<TenantRow, AppError> {
    let tenant_id = parse_tenant_id(id)?;
    db::tenants::get(db, &tenant_id)
        .await?
        .ok_or_else(|| AppError::not_found("tenant", id))
}

/// One page of tenants (admins).
pub async fn list_tenants(
    db: &Db,
    actor: &Principal,
    page: &PageRequest,
) -> Result<Page<TenantView>, AppError> {
    actor.require_admin()?;
    Ok(db::tenants::page(db, page)
        .await?
        .map(|t| TenantView::from(&t)))
}

/// One tenant (admins).
pub async fn get_tenant(db: &Db, actor: &Principal, id: &str) -> Result<TenantView, AppError> {
    actor.require_admin()?;
    Ok(TenantView::from(&load_tenant(db, id).await?))
}

/// Creates a tenant (admins).
pub async fn create_tenant(
    db: &Db,
    actor: &Principal,
    req: CreateTenant,
) -> Result<TenantView, AppError> {
    actor.require_admin()?;
    let name = ResourceName::parse(&req.name, "name")?;
    match db::tenants::insert(db, name.as_str()).await {
        Ok(row) => Ok(TenantView::from(&row)),
        Err(e) if db::is_unique_violation(&e) => Err(AppError::Conflict(format!(
            "a tenant named {name} already exists"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Renames, suspends or reinstates a tenant (admins). Suspending has the reconciler stop its
/// running VMs at once (every process's reconciler stops them on its next pass too).
pub async fn update_tenant(
    app: &App,
    actor: &Principal,
    id: &str,
    req: UpdateTenant,
) -> Result<TenantView, AppError> {
    actor.require_admin()?;
    let tenant = load_tenant(&app.db, id).await?;
    if let Some(name) = &req.name {
        let name = ResourceName::parse(name, "name")?;
        match db::tenants::rename(&app.db, &tenant.id, name.as_str()).await {
            Err(e) if db::is_unique_violation(&e) => {
                return Err(AppError::Conflict(format!(
                    "a tenant named {name} already exists"
                )));
            }
            other => other?,
        }
    }
    if let Some(suspended) = req.suspended {
        db::tenants::set_suspended(&app.db, &tenant.id, suspended).await?;
        if suspended && !tenant.suspended {
            // Its users are signed out for good (resuming does not bring old sessions back).
            db::sessions::delete_for_tenant(&app.db, &tenant.id).await?;
            app.reconcile_now.notify_one();
        }
    }
    get_tenant(&app.db, actor, id).await
}

/// Deletes a tenant with its users (admins); refused while it has VMs.
pub async fn delete_tenant(db: &Db, actor: &Principal, id: &str) -> Result<(), AppError> {
    actor.require_admin()?;
    let tenant = load_tenant(db, id).await?;
    if tenant.id == TenantId::default_tenant() {
        return Err(AppError::Conflict(
            "the default tenant cannot be deleted".into(),
        ));
    }
    let mut tx = db::begin_write(db).await?;
    let usage = db::quotas::usage(&mut tx, &tenant.id).await?;
    if usage.sftp_files > 0
        || !db::sftp_accounts::list(&mut tx, &Scope::Tenant(tenant.id.clone()))
            .await?
            .is_empty()
    {
        return Err(AppError::Conflict(format!(
            "tenant {} still has SFTP accounts; delete them first",
            tenant.id
        )));
    }
    if usage.vms > 0 {
        return Err(AppError::Conflict(format!(
            "tenant {} still has {} VMs; delete them first",
            tenant.id, usage.vms
        )));
    }
    let pools = db::pools::count_of_tenant(&mut tx, &tenant.id).await?;
    if pools > 0 {
        return Err(AppError::Conflict(format!(
            "tenant {} still has {pools} load-balanced pools; delete them first",
            tenant.id
        )));
    }
    db::tenants::delete(&mut tx, &tenant.id).await?;
    tx.commit().await?;
    Ok(())
}
