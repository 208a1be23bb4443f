//! Tenants, their quotas and usage, and users: the service functions behind `/tenants`,
//! `/users` and `/me`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::App;
use crate::auth::{Principal, Role};
use crate::config::QuotaConfig;
use crate::db::page::{Page, PageRequest};
use crate::db::quotas::{Quota, Usage};
use crate::db::tenants::TenantRow;
use crate::db::users::UserRow;
use crate::db::{self, Db, Scope};
use crate::domain::Invalid;
use crate::domain::ids::{TenantId, UserId};
use crate::domain::names::ResourceName;
use crate::error::AppError;
use crate::provision::VmState;
use crate::provision::vms::VmAction;

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 10;
/// Longest password accepted (argon2 hashes anything, but bodies are bounded anyway).
pub const MAX_PASSWORD: usize = 1024;

/// 403 unless the actor is an admin.
pub fn admin_only(actor: &Principal) -> Result<(), AppError> {
    if actor.is_admin() {
        Ok(())
    } else {
        Err(AppError::Forbidden("only admins may do this".into()))
    }
}

/// Checks a new password's length.
pub fn check_password(field: &'static str, password: &str) -> Result<(), Invalid> {
    let n = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&n) {
        return Err(Invalid::new(
            field,
            format!("must be {MIN_PASSWORD} to {MAX_PASSWORD} characters long (got {n})"),
        ));
    }
    Ok(())
}

/// Checks an email address enough to catch typos.
pub fn check_email(email: &str) -> Result<(), Invalid> {
    let parts: Vec<&str> = email.split('@').collect();
    let ok = email.len() <= 254
        && parts.len() == 2
        && parts.iter().all(|p| !p.is_empty())
        && !email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>\"'`;,()[]\\".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(
            "email",
            format!("{email:?} is not an email address"),
        ))
    }
}

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
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantRequest {
    /// Letters, digits, '.', '_' and '-'; unique.
    pub name: String,
}

/// A change to a tenant; absent fields stay.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenantRequest {
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

fn parse_tenant_id(id: &str) -> Result<TenantId, AppError> {
    TenantId::parse(id).ok_or_else(|| AppError::not_found("tenant", id))
}

async fn load_tenant(db: &Db, id: &str) -> Result<TenantRow, AppError> {
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
    admin_only(actor)?;
    Ok(db::tenants::page(db, page)
        .await?
        .map(|t| TenantView::from(&t)))
}

/// One tenant (admins).
pub async fn get_tenant(db: &Db, actor: &Principal, id: &str) -> Result<TenantView, AppError> {
    admin_only(actor)?;
    Ok(TenantView::from(&load_tenant(db, id).await?))
}

/// Creates a tenant (admins).
pub async fn create_tenant(
    db: &Db,
    actor: &Principal,
    req: CreateTenantRequest,
) -> Result<TenantView, AppError> {
    admin_only(actor)?;
    let name = ResourceName::parse(&req.name, "name")?;
    match db::tenants::insert(db, name.as_str()).await {
        Ok(row) => Ok(TenantView::from(&row)),
        Err(e) if db::is_unique_violation(&e) => Err(AppError::Conflict(format!(
            "a tenant named {name} already exists"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Renames, suspends or reinstates a tenant (admins). Suspending stops its running VMs.
pub async fn update_tenant(
    app: &App,
    actor: &Principal,
    id: &str,
    req: UpdateTenantRequest,
) -> Result<TenantView, AppError> {
    admin_only(actor)?;
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
            stop_tenant_vms(app, actor, &tenant.id).await?;
        }
    }
    get_tenant(&app.db, actor, id).await
}

/// Asks every running VM of the tenant to stop (those busy with another operation are left).
async fn stop_tenant_vms(app: &App, actor: &Principal, tenant: &TenantId) -> Result<(), AppError> {
    for vm in db::vms::list(&app.db, &Scope::Tenant(tenant.clone())).await? {
        if VmState::parse(&vm.state) != Some(VmState::Running) {
            continue;
        }
        if let Err(e) =
            crate::provision::vms::act(&app.prov, actor, vm.id.as_str(), VmAction::Stop).await
        {
            tracing::warn!(vm = %vm.id, error = %e, "could not stop a VM of a suspended tenant");
        }
    }
    Ok(())
}

/// Deletes a tenant with its users (admins); refused while it has VMs.
pub async fn delete_tenant(db: &Db, actor: &Principal, id: &str) -> Result<(), AppError> {
    admin_only(actor)?;
    let tenant = load_tenant(db, id).await?;
    if tenant.id == TenantId::default_tenant() {
        return Err(AppError::Conflict(
            "the default tenant cannot be deleted".into(),
        ));
    }
    let mut tx = db::begin_write(db).await?;
    let usage = db::quotas::usage(&mut tx, &tenant.id).await?;
    if usage.sftp_files > 0
        || !db::sftp_accounts::list(&mut *tx, &Scope::Tenant(tenant.id.clone()))
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
    db::tenants::delete(&mut tx, &tenant.id).await?;
    tx.commit().await?;
    Ok(())
}

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
    admin_only(actor)?;
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
    admin_only(actor)?;
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
    admin_only(actor)?;
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

/// A user, without secrets.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub role: Role,
    pub tenant_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<&UserRow> for UserView {
    fn from(u: &UserRow) -> Self {
        Self {
            id: u.id.to_string(),
            email: u.email.clone(),
            role: Role::parse(&u.role).unwrap_or(Role::Customer),
            tenant_id: u.tenant_id.as_ref().map(ToString::to_string),
            created_at: u.created_at,
        }
    }
}

/// A request to create a user (admins).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    pub email: String,
    /// 10 to 1024 characters; stored only as an argon2id hash.
    #[schema(min_length = 10, max_length = 1024)]
    pub password: String,
    pub role: Role,
    /// Required for customers; optional for admins.
    pub tenant_id: Option<String>,
}

/// A change to a user (admins); absent fields stay. A new password ends the user's sessions.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    pub role: Option<Role>,
    pub tenant_id: Option<String>,
    pub password: Option<String>,
}

/// A user's own password change.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    pub current_password: String,
    #[schema(min_length = 10, max_length = 1024)]
    pub new_password: String,
}

/// The caller and its tenant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MeView {
    pub user: UserView,
    pub tenant: Option<TenantView>,
}

async fn existing_tenant(db: &Db, raw: &str) -> Result<TenantId, AppError> {
    let unknown = || AppError::invalid("tenant_id", format!("no tenant has id {raw:?}"));
    let id = TenantId::parse(raw).ok_or_else(unknown)?;
    db::tenants::get(db, &id).await?.ok_or_else(unknown)?;
    Ok(id)
}

fn parse_user_id(id: &str) -> Result<UserId, AppError> {
    UserId::parse(id).ok_or_else(|| AppError::not_found("user", id))
}

async fn load_user(db: &Db, id: &str) -> Result<UserRow, AppError> {
    db::users::get(db, &parse_user_id(id)?)
        .await?
        .ok_or_else(|| AppError::not_found("user", id))
}

/// One page of users (admins), optionally of one tenant.
pub async fn list_users(
    db: &Db,
    actor: &Principal,
    tenant: Option<&str>,
    page: &PageRequest,
) -> Result<Page<UserView>, AppError> {
    admin_only(actor)?;
    let tenant = match tenant {
        Some(t) => Some(existing_tenant(db, t).await?),
        None => None,
    };
    Ok(db::users::page(db, tenant.as_ref(), page)
        .await?
        .map(|u| UserView::from(&u)))
}

/// One user (admins).
pub async fn get_user(db: &Db, actor: &Principal, id: &str) -> Result<UserView, AppError> {
    admin_only(actor)?;
    Ok(UserView::from(&load_user(db, id).await?))
}

/// Creates a user (admins).
pub async fn create_user(
    app: &App,
    actor: &Principal,
    req: CreateUserRequest,
) -> Result<UserView, AppError> {
    admin_only(actor)?;
    let mut errors = Vec::new();
    if let Err(e) = check_email(&req.email) {
        errors.push(e);
    }
    if let Err(e) = check_password("password", &req.password) {
        errors.push(e);
    }
    if req.role == Role::Customer && req.tenant_id.is_none() {
        errors.push(Invalid::new(
            "tenant_id",
            "a customer belongs to a tenant: give tenant_id",
        ));
    }
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    let tenant = match &req.tenant_id {
        Some(t) => Some(existing_tenant(&app.db, t).await?),
        None => None,
    };
    let hash = app
        .hasher
        .hash(req.password)
        .await
        .map_err(anyhow::Error::from)?;
    match db::users::insert(
        &app.db,
        &req.email,
        req.role.as_str(),
        tenant.as_ref(),
        &hash,
    )
    .await
    {
        Ok(id) => get_user(&app.db, actor, id.as_str()).await,
        Err(e) if db::is_unique_violation(&e) => Err(AppError::Conflict(format!(
            "a user with email {} already exists",
            req.email
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Changes a user's role, tenant or password (admins).
pub async fn update_user(
    app: &App,
    actor: &Principal,
    id: &str,
    req: UpdateUserRequest,
) -> Result<UserView, AppError> {
    admin_only(actor)?;
    let user = load_user(&app.db, id).await?;
    if let Some(p) = &req.password {
        check_password("password", p)?;
    }
    let role = req
        .role
        .unwrap_or(Role::parse(&user.role).unwrap_or(Role::Customer));
    let tenant = match &req.tenant_id {
        Some(t) => Some(existing_tenant(&app.db, t).await?),
        None => user.tenant_id.clone(),
    };
    if role == Role::Customer && tenant.is_none() {
        return Err(AppError::invalid(
            "tenant_id",
            "a customer belongs to a tenant: give tenant_id",
        ));
    }
    if role == Role::Customer
        && user.role == "admin"
        && db::users::count_admins(&app.db).await? <= 1
    {
        return Err(AppError::Conflict(
            "this is the last admin; make another admin first".into(),
        ));
    }
    db::users::set_role(&app.db, &user.id, role.as_str(), tenant.as_ref()).await?;
    if let Some(p) = req.password {
        let hash = app.hasher.hash(p).await.map_err(anyhow::Error::from)?;
        db::users::set_password(&app.db, &user.id, &hash).await?;
    }
    get_user(&app.db, actor, id).await
}

/// Deletes a user (admins); their tokens and sessions end with them.
pub async fn delete_user(db: &Db, actor: &Principal, id: &str) -> Result<(), AppError> {
    admin_only(actor)?;
    let user = load_user(db, id).await?;
    if user.role == "admin" && db::users::count_admins(db).await? <= 1 {
        return Err(AppError::Conflict(
            "this is the last admin; make another admin first".into(),
        ));
    }
    db::users::delete(db, &user.id).await?;
    Ok(())
}

/// The caller and its tenant.
pub async fn me(db: &Db, actor: &Principal) -> Result<MeView, AppError> {
    let user = db::users::get(db, &actor.user_id)
        .await?
        .ok_or_else(|| AppError::Unauthorized("your account is gone".into()))?;
    let tenant = match &user.tenant_id {
        Some(t) => db::tenants::get(db, t)
            .await?
            .as_ref()
            .map(TenantView::from),
        None => None,
    };
    Ok(MeView {
        user: UserView::from(&user),
        tenant,
    })
}

/// The caller's tenant usage against its quota.
pub async fn my_usage(app: &App, actor: &Principal) -> Result<UsageView, AppError> {
    let tenant = actor
        .tenant_id
        .clone()
        .unwrap_or_else(TenantId::default_tenant);
    usage_of(app, &tenant).await
}

/// Changes the caller's own password after checking the current one; ends its sessions.
pub async fn change_password(
    app: &App,
    actor: &Principal,
    req: ChangePasswordRequest,
    client: Option<std::net::IpAddr>,
) -> Result<(), AppError> {
    check_password("new_password", &req.new_password)?;
    let user = db::users::get(&app.db, &actor.user_id)
        .await?
        .ok_or_else(|| AppError::Unauthorized("your account is gone".into()))?;
    if !super::login::check_current_password(app, &user, req.current_password, client).await? {
        return Err(AppError::invalid(
            "current_password",
            "is not your current password",
        ));
    }
    let hash = app
        .hasher
        .hash(req.new_password)
        .await
        .map_err(anyhow::Error::from)?;
    db::users::set_password(&app.db, &user.id, &hash).await?;
    Ok(())
}
