//! `/me/ssh-keys`: public keys saved on the caller, offered when creating VMs.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, Auth, ReadErrors, WriteErrors};
use crate::app::AppState;
use crate::error::AppError;
use crate::tenancy::ssh_keys::{self as service, SshKeyView};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_keys, add_key))
        .routes(routes!(delete_key))
}

/// A key to save.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddSshKeyRequest {
    /// A name to recognise it by (default: the key's comment).
    #[schema(max_length = 64)]
    pub name: Option<String>,
    /// One OpenSSH public key line.
    #[schema(max_length = 16384)]
    pub public_key: String,
}

/// The caller's saved SSH keys.
#[utoipa::path(get, path = "/me/ssh-keys", tag = "users", security(("bearer" = [])),
    responses((status = 200, description = "Keys by name", body = Vec<SshKeyView>), ReadErrors))]
async fn list_keys(
    State(app): State<AppState>,
    Auth(actor): Auth,
) -> Result<Json<Vec<SshKeyView>>, AppError> {
    Ok(Json(service::list(&app.db, &actor).await?))
}

/// Save an SSH public key on the caller (at most 50).
#[utoipa::path(post, path = "/me/ssh-keys", tag = "users", security(("bearer" = [])), request_body = AddSshKeyRequest,
    responses((status = 201, description = "The saved key", body = SshKeyView), WriteErrors))]
async fn add_key(
    State(app): State<AppState>,
    Auth(actor): Auth,
    ApiJson(req): ApiJson<AddSshKeyRequest>,
) -> Result<(StatusCode, Json<SshKeyView>), AppError> {
    let key = service::add(&app.db, &actor, req.name.as_deref(), &req.public_key).await?;
    Ok((StatusCode::CREATED, Json(key)))
}

/// Delete one of the caller's saved keys.
#[utoipa::path(delete, path = "/me/ssh-keys/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "Key id")),
    responses((status = 204, description = "Deleted"), WriteErrors))]
async fn delete_key(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    service::delete(&app.db, &actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
