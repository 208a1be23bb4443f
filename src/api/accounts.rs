//! `/tenants`, `/users`, `/me` and `/audit`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, ApiQuery, Auth, ReadErrors, WriteErrors};
use crate::app::AppState;
use crate::db::quotas::Quota;
use crate::error::AppError;
use crate::tenancy::accounts::{self as service, MeView, TenantView, UsageView, UserView};
use crate::tenancy::audit::{self, AuditView};

/// Routes of these resources.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tenants, create_tenant))
        .routes(routes!(get_tenant, update_tenant, delete_tenant))
        .routes(routes!(get_quota, put_quota))
        .routes(routes!(tenant_usage))
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(me))
        .routes(routes!(my_usage))
        .routes(routes!(change_password))
        .routes(routes!(list_audit))
}

/// List tenants (admins).
#[utoipa::path(get, path = "/tenants", tag = "tenants", security(("bearer" = [])), params(super::Paging),
    responses((status = 200, description = "Tenants by name (a page; `Link: rel=\"next\"` when more follow)", body = Vec<TenantView>), ReadErrors))]
async fn list_tenants(
    State(app): State<AppState>,
    Auth(actor): Auth,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    ApiQuery(q): ApiQuery<super::Paging>,
) -> Result<Response, AppError> {
    let page = service::list_tenants(&app.db, &actor, &q.request()?).await?;
    Ok(super::paged(&uri, page))
}

/// Create a tenant (admins).
#[utoipa::path(post, path = "/tenants", tag = "tenants", security(("bearer" = [])), request_body = CreateTenantRequest,
    responses((status = 201, description = "The tenant", body = TenantView), WriteErrors))]
async fn create_tenant(
    State(app): State<AppState>,
    Auth(actor): Auth,
    ApiJson(req): ApiJson<CreateTenantRequest>,
) -> Result<(StatusCode, Json<TenantView>), AppError> {
    Ok((
        StatusCode::CREATED,
        Json(service::create_tenant(&app.db, &actor, req.into()).await?),
    ))
}

/// Read a tenant (admins).
#[utoipa::path(get, path = "/tenants/{id}", tag = "tenants", security(("bearer" = [])),
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "The tenant", body = TenantView), ReadErrors))]
async fn get_tenant(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<Json<TenantView>, AppError> {
    Ok(Json(service::get_tenant(&app.db, &actor, &id).await?))
}

/// Rename, suspend or reinstate a tenant (admins); suspending stops its VMs.
#[utoipa::path(patch, path = "/tenants/{id}", tag = "tenants", security(("bearer" = [])), request_body = UpdateTenantRequest,
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "The tenant", body = TenantView), WriteErrors))]
async fn update_tenant(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateTenantRequest>,
) -> Result<Json<TenantView>, AppError> {
    Ok(Json(
        service::update_tenant(&app, &actor, &id, req.into()).await?,
    ))
}

/// Delete a tenant and its users (admins); refused while it has VMs.
#[utoipa::path(delete, path = "/tenants/{id}", tag = "tenants", security(("bearer" = [])),
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 204, description = "Deleted"), WriteErrors))]
async fn delete_tenant(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    service::delete_tenant(&app.db, &actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Read a tenant's quota (admins).
#[utoipa::path(get, path = "/tenants/{id}/quota", tag = "tenants", security(("bearer" = [])),
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "The quota", body = Quota), ReadErrors))]
async fn get_quota(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<Json<Quota>, AppError> {
    Ok(Json(service::get_quota(&app, &actor, &id).await?))
}

/// Set a tenant's quota (admins).
#[utoipa::path(put, path = "/tenants/{id}/quota", tag = "tenants", security(("bearer" = [])), request_body = Quota,
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "The quota", body = Quota), WriteErrors))]
async fn put_quota(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    ApiJson(quota): ApiJson<QuotaBody>,
) -> Result<Json<Quota>, AppError> {
    Ok(Json(
        service::put_quota(&app, &actor, &id, quota.into()).await?,
    ))
}

/// A quota as sent: every field required, unknown ones refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaBody {
    max_vms: i64,
    max_vcpus: i64,
    max_memory_mib: i64,
    max_disk_gib: i64,
    max_sftp_bytes: i64,
    max_sftp_files: i64,
}

impl From<QuotaBody> for Quota {
    fn from(q: QuotaBody) -> Self {
        Quota {
            max_vms: q.max_vms,
            max_vcpus: q.max_vcpus,
            max_memory_mib: q.max_memory_mib,
            max_disk_gib: q.max_disk_gib,
            max_sftp_bytes: q.max_sftp_bytes,
            max_sftp_files: q.max_sftp_files,
        }
    }
}

/// A tenant's usage against its quota (admins).
#[utoipa::path(get, path = "/tenants/{id}/usage", tag = "tenants", security(("bearer" = [])),
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "Usage and quota", body = UsageView), ReadErrors))]
async fn tenant_usage(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<Json<UsageView>, AppError> {
    Ok(Json(service::tenant_usage(&app, &actor, &id).await?))
}

/// Filter for the user list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct UserQuery {
    /// Only users of this tenant.
    tenant_id: Option<String>,
    /// Items per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// Where to go on: the `cursor` of the previous answer's `Link` URL.
    #[param(max_length = 2048)]
    cursor: Option<String>,
}

/// List users (admins).
#[utoipa::path(get, path = "/users", tag = "users", security(("bearer" = [])), params(UserQuery),
    responses((status = 200, description = "Users by email (a page; `Link: rel=\"next\"` when more follow)", body = Vec<UserView>), ReadErrors))]
async fn list_users(
    State(app): State<AppState>,
    Auth(actor): Auth,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> Result<Response, AppError> {
    let page = super::page_request(q.limit, q.cursor.as_deref())?;
    let users = service::list_users(&app.db, &actor, q.tenant_id.as_deref(), &page).await?;
    Ok(super::paged(&uri, users))
}

/// Create a user (admins).
#[utoipa::path(post, path = "/users", tag = "users", security(("bearer" = [])), request_body = CreateUserRequest,
    responses((status = 201, description = "The user", body = UserView), WriteErrors))]
async fn create_user(
    State(app): State<AppState>,
    Auth(actor): Auth,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> Result<(StatusCode, Json<UserView>), AppError> {
    Ok((
        StatusCode::CREATED,
        Json(service::create_user(&app, &actor, req.into()).await?),
    ))
}

/// Read a user (admins).
#[utoipa::path(get, path = "/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, description = "The user", body = UserView), ReadErrors))]
async fn get_user(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<Json<UserView>, AppError> {
    Ok(Json(service::get_user(&app.db, &actor, &id).await?))
}

/// Change a user's role, tenant or password (admins); a new password ends their sessions.
#[utoipa::path(patch, path = "/users/{id}", tag = "users", security(("bearer" = [])), request_body = UpdateUserRequest,
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, description = "The user", body = UserView), WriteErrors))]
async fn update_user(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateUserRequest>,
) -> Result<Json<UserView>, AppError> {
    Ok(Json(
        service::update_user(&app, &actor, &id, req.into()).await?,
    ))
}

/// Delete a user (admins).
#[utoipa::path(delete, path = "/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id")),
    responses((status = 204, description = "Deleted"), WriteErrors))]
async fn delete_user(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    service::delete_user(&app.db, &actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller and its tenant.
#[utoipa::path(get, path = "/me", tag = "users", security(("bearer" = [])),
    responses((status = 200, description = "The caller", body = MeView), ReadErrors))]
async fn me(State(app): State<AppState>, Auth(actor): Auth) -> Result<Json<MeView>, AppError> {
    Ok(Json(service::me(&app.db, &actor).await?))
}

/// The caller's tenant usage against its quota.
#[utoipa::path(get, path = "/me/usage", tag = "users", security(("bearer" = [])),
    responses((status = 200, description = "Usage and quota", body = UsageView), ReadErrors))]
async fn my_usage(
    State(app): State<AppState>,
    Auth(actor): Auth,
) -> Result<Json<UsageView>, AppError> {
    Ok(Json(service::my_usage(&app, &actor).await?))
}

/// Change the caller's password (the current one is required); ends its browser sessions.
#[utoipa::path(put, path = "/me/password", tag = "users", security(("bearer" = [])), request_body = ChangePasswordRequest,
    responses((status = 204, description = "Changed"), WriteErrors))]
async fn change_password(
    State(app): State<AppState>,
    Auth(actor): Auth,
    super::ClientAddr(client): super::ClientAddr,
    ApiJson(req): ApiJson<ChangePasswordRequest>,
) -> Result<StatusCode, AppError> {
    service::change_password(&app, &actor, req.into(), client).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Paging through the audit log.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// Only entries older than this id (same as a cursor).
    before: Option<i64>,
    /// Items per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// Where to go on: the `cursor` of the previous answer's `Link` URL.
    #[param(max_length = 2048)]
    cursor: Option<String>,
}

/// Read the audit log, newest first (customers: their tenant's part).
#[utoipa::path(get, path = "/audit", tag = "audit", security(("bearer" = [])), params(AuditQuery),
    responses((status = 200, description = "Entries, newest first (a page; `Link: rel=\"next\"` when more follow)", body = Vec<AuditView>), ReadErrors))]
async fn list_audit(
    State(app): State<AppState>,
    Auth(actor): Auth,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Response, AppError> {
    let mut page = super::page_request(q.limit, q.cursor.as_deref())?;
    if let Some(before) = q.before {
        page.after = Some(vec![before.to_string()]);
    }
    Ok(super::paged(
        &uri,
        audit::list(&app.db, &actor, &page).await?,
    ))
}

/// A request to create a user (admins).
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    pub email: String,
    /// 10 to 1024 characters; stored only as an argon2id hash.
    #[schema(min_length = 10, max_length = 1024)]
    pub password: String,
    pub role: crate::domain::role::Role,
    /// Required for customers; optional for admins.
    pub tenant_id: Option<String>,
}

impl From<CreateUserRequest> for crate::tenancy::accounts::CreateUser {
    fn from(r: CreateUserRequest) -> Self {
        Self {
            email: r.email,
            password: r.password,
            role: r.role,
            tenant_id: r.tenant_id,
        }
    }
}

/// A change to a user (admins); absent fields stay. A new password ends the user's sessions.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    pub role: Option<crate::domain::role::Role>,
    pub tenant_id: Option<String>,
    pub password: Option<String>,
}

impl From<UpdateUserRequest> for crate::tenancy::accounts::UpdateUser {
    fn from(r: UpdateUserRequest) -> Self {
        Self {
            role: r.role,
            tenant_id: r.tenant_id,
            password: r.password,
        }
    }
}

/// A user's own password change.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    pub current_password: String,
    #[schema(min_length = 10, max_length = 1024)]
    pub new_password: String,
}

impl From<ChangePasswordRequest> for crate::tenancy::accounts::ChangePassword {
    fn from(r: ChangePasswordRequest) -> Self {
        Self {
            current_password: r.current_password,
            new_password: r.new_password,
        }
    }
}

/// A request to create a tenant.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantRequest {
    /// Letters, digits, '.', '_' and '-'; unique.
    pub name: String,
}

impl From<CreateTenantRequest> for crate::tenancy::accounts::CreateTenant {
    fn from(r: CreateTenantRequest) -> Self {
        Self { name: r.name }
    }
}

/// A change to a tenant; absent fields stay.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenantRequest {
    pub name: Option<String>,
    /// Suspending stops the tenant's VMs and refuses its logins and tokens.
    pub suspended: Option<bool>,
}

impl From<UpdateTenantRequest> for crate::tenancy::accounts::UpdateTenant {
    fn from(r: UpdateTenantRequest) -> Self {
        Self {
            name: r.name,
            suspended: r.suspended,
        }
    }
}
