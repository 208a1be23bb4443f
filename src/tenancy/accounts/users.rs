//! Users: admins manage them; each user reads itself and changes its own password.

use super::*;

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
            role: u.role,
            tenant_id: u.tenant_id.as_ref().map(ToString::to_string),
            created_at: u.created_at,
        }
    }
}

/// A request to create a user (admins).
#[derive(Debug, Clone)]
pub struct CreateUser {
    pub email: String,
    /// 10 to 1024 characters; stored only as an argon2id hash.
    pub password: String,
    pub role: Role,
    /// Required for customers; optional for admins.
    pub tenant_id: Option<String>,
}

/// A change to a user (admins); absent fields stay. A new password ends the user's sessions.
#[derive(Debug, Clone)]
pub struct UpdateUser {
    pub role: Option<Role>,
    pub tenant_id: Option<String>,
    pub password: Option<String>,
}

/// A user's own password change.
#[derive(Debug, Clone)]
pub struct ChangePassword {
    pub current_password: String,
    pub new_password: String,
}

/// The caller and its tenant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MeView {
    pub user: UserView,
    pub tenant: Option<TenantView>,
}

pub(crate) async fn existing_tenant(db: &Db, raw: &str) -> Result<TenantId, AppError> {
    let unknown = || AppError::invalid("tenant_id", format!("no tenant has id {raw:?}"));
    let id = TenantId::parse(raw).ok_or_else(unknown)?;
    db::tenants::get(db, &id).await?.ok_or_else(unknown)?;
    Ok(id)
}

pub(crate) fn parse_user_id(id: &str) -> Result<UserId, AppError> {
    UserId::parse(id).ok_or_else(|| AppError::not_found("user", id))
}

pub(crate) async fn load_user(db: &Db, id: &str) -> Result<UserRow, AppError> {
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
    actor.require_admin()?;
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
    actor.require_admin()?;
    Ok(UserView::from(&load_user(db, id).await?))
}

/// Creates a user (admins).
pub async fn create_user(
    app: &App,
    actor: &Principal,
    req: CreateUser,
) -> Result<UserView, AppError> {
    actor.require_admin()?;
    let id = add_user(&app.db, &app.hasher, req).await?;
    get_user(&app.db, actor, id.as_str()).await
}

/// Checks, hashes and records a new user: what an admin's request and the bootstrap CLI
/// (`carve admin create-user`, which has no principal yet) both do.
pub async fn add_user(
    db: &Db,
    hasher: &crate::auth::PasswordHasher,
    req: CreateUser,
) -> Result<UserId, AppError> {
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
        Some(t) => Some(existing_tenant(db, t).await?),
        None => None,
    };
    let hash = hasher
        .hash(req.password)
        .await
        .map_err(anyhow::Error::from)?;
    match db::users::insert(db, &req.email, req.role, tenant.as_ref(), &hash).await {
        Ok(id) => Ok(id),
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
    req: UpdateUser,
) -> Result<UserView, AppError> {
    actor.require_admin()?;
    let user = load_user(&app.db, id).await?;
    if let Some(p) = &req.password {
        check_password("password", p)?;
    }
    let role = req.role.unwrap_or(user.role);
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
        && user.role == Role::Admin
        && db::users::count_admins(&app.db).await? <= 1
    {
        return Err(AppError::Conflict(
            "this is the last admin; make another admin first".into(),
        ));
    }
    db::users::set_role(&app.db, &user.id, role, tenant.as_ref()).await?;
    if let Some(p) = req.password {
        let hash = app.hasher.hash(p).await.map_err(anyhow::Error::from)?;
        db::users::set_password(&app.db, &user.id, &hash).await?;
    }
    get_user(&app.db, actor, id).await
}

/// Deletes a user (admins); their tokens and sessions end with them.
pub async fn delete_user(db: &Db, actor: &Principal, id: &str) -> Result<(), AppError> {
    actor.require_admin()?;
    let user = load_user(db, id).await?;
    if user.role == Role::Admin && db::users::count_admins(db).await? <= 1 {
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
    req: ChangePassword,
    client: Option<std::net::IpAddr>,
) -> Result<(), AppError> {
    check_password("new_password", &req.new_password)?;
    let user = db::users::get(&app.db, &actor.user_id)
        .await?
        .ok_or_else(|| AppError::Unauthorized("your account is gone".into()))?;
    if !crate::tenancy::login::check_current_password(app, &user, req.current_password, client)
        .await?
    {
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
