//! `/sftp-accounts`: SFTP logins of a tenant, with their usage.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, ApiQuery, Auth, ReadErrors, WriteErrors};
use crate::app::AppState;
use crate::error::AppError;
use crate::sftp::accounts::{self as service, SftpAccountView};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_accounts, create_account))
        .routes(routes!(get_account, update_account, delete_account))
        .routes(routes!(rescan))
}

/// List SFTP accounts (customers: their tenant's).
#[utoipa::path(get, path = "/sftp-accounts", tag = "sftp", security(("bearer" = [])), params(super::Paging),
    responses((status = 200, description = "Accounts by username (a page; `Link: rel=\"next\"` when more follow)", body = Vec<SftpAccountView>), ReadErrors))]
async fn list_accounts(
    State(app): State<AppState>,
    Auth(actor): Auth,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    super::ApiQuery(q): super::ApiQuery<super::Paging>,
) -> Result<axum::response::Response, AppError> {
    let page = service::list(&app, &actor, &q.request()?).await?;
    Ok(super::paged(&uri, page))
}

/// Create an SFTP account with a password and/or public keys.
#[utoipa::path(post, path = "/sftp-accounts", tag = "sftp", security(("bearer" = [])), request_body = CreateSftpAccountRequest,
    responses((status = 201, description = "The account", body = SftpAccountView), WriteErrors))]
async fn create_account(
    State(app): State<AppState>,
    Auth(actor): Auth,
    ApiJson(req): ApiJson<CreateSftpAccountRequest>,
) -> Result<(StatusCode, Json<SftpAccountView>), AppError> {
    Ok((
        StatusCode::CREATED,
        Json(service::create(&app, &actor, req.into()).await?),
    ))
}

/// Read an SFTP account and its usage.
#[utoipa::path(get, path = "/sftp-accounts/{id}", tag = "sftp", security(("bearer" = [])),
    params(("id" = String, Path, description = "SFTP account id")),
    responses((status = 200, description = "The account", body = SftpAccountView), ReadErrors))]
async fn get_account(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<Json<SftpAccountView>, AppError> {
    Ok(Json(service::get(&app, &actor, &id).await?))
}

/// Enable or disable an account, reset its password or replace its keys (next login).
#[utoipa::path(patch, path = "/sftp-accounts/{id}", tag = "sftp", security(("bearer" = [])), request_body = UpdateSftpAccountRequest,
    params(("id" = String, Path, description = "SFTP account id")),
    responses((status = 200, description = "The account", body = SftpAccountView), WriteErrors))]
async fn update_account(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateSftpAccountRequest>,
) -> Result<Json<SftpAccountView>, AppError> {
    Ok(Json(service::update(&app, &actor, &id, req.into()).await?))
}

/// Whether to keep a deleted account's files.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    /// Keep the files (moved aside under the data directory) instead of removing them.
    keep_files: Option<bool>,
}

/// Delete an SFTP account, removing its files unless `keep_files=true` (admins only: kept files leave the quota).
#[utoipa::path(delete, path = "/sftp-accounts/{id}", tag = "sftp", security(("bearer" = [])),
    params(("id" = String, Path, description = "SFTP account id"), DeleteQuery),
    responses((status = 204, description = "Deleted"), WriteErrors))]
async fn delete_account(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> Result<StatusCode, AppError> {
    service::delete(&app, &actor, &id, q.keep_files.unwrap_or(false)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Recount every account's usage from disk (admins).
#[utoipa::path(post, path = "/sftp-accounts/rescan", tag = "sftp", security(("bearer" = [])),
    responses((status = 200, description = "The first page of accounts with fresh usage (`Link: rel=\"next\"` to GET the rest)", body = Vec<SftpAccountView>), WriteErrors))]
async fn rescan(
    State(app): State<AppState>,
    Auth(actor): Auth,
) -> Result<axum::response::Response, AppError> {
    let page = service::rescan_now(&app, &actor).await?;
    let list_uri = axum::http::Uri::from_static("/api/v1/sftp-accounts");
    Ok(super::paged(&list_uri, page))
}

/// A request to create an SFTP account.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSftpAccountRequest {
    /// 1-32 of lowercase letters, digits, '.', '_', '-', starting with a letter or '_'.
    #[schema(pattern = r"^[a-z_][a-z0-9._-]{0,31}$")]
    pub username: String,
    /// 10 to 1024 characters; stored only as an argon2id hash.
    #[schema(min_length = 10, max_length = 1024)]
    pub password: Option<String>,
    /// OpenSSH public keys allowed to log in.
    #[serde(default)]
    #[schema(max_items = 32)]
    pub public_keys: Vec<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Owning tenant (admins only; a customer's accounts go to its tenant).
    pub tenant_id: Option<String>,
}

impl From<CreateSftpAccountRequest> for crate::sftp::accounts::CreateSftpAccount {
    fn from(r: CreateSftpAccountRequest) -> Self {
        Self {
            username: r.username,
            password: r.password,
            public_keys: r.public_keys,
            enabled: r.enabled,
            tenant_id: r.tenant_id,
        }
    }
}

/// A change to an SFTP account; absent fields stay. Takes effect at the next login.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSftpAccountRequest {
    /// A new password (10 to 1024 characters).
    #[schema(min_length = 10, max_length = 1024)]
    pub password: Option<String>,
    /// Remove the password, leaving key logins only.
    #[serde(default)]
    pub remove_password: bool,
    /// The full new list of public keys.
    pub public_keys: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

impl From<UpdateSftpAccountRequest> for crate::sftp::accounts::UpdateSftpAccount {
    fn from(r: UpdateSftpAccountRequest) -> Self {
        Self {
            password: r.password,
            remove_password: r.remove_password,
            public_keys: r.public_keys,
            enabled: r.enabled,
        }
    }
}

/// Accounts are enabled unless the request says otherwise.
fn yes() -> bool {
    true
}
