//! `/tokens`: API tokens, shown once, stored as digests.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, AuditNote, Auth, ClientAddr, MaybeAuth, ReadErrors, WriteErrors, with_note};
use crate::app::AppState;
use crate::error::AppError;
use crate::tenancy::tokens::{self as service, CreatedToken, TokenView};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
}

/// Create a token for the caller, or log in with email and password to get one.
#[utoipa::path(post, path = "/tokens", tag = "tokens", security((), ("bearer" = [])), request_body = CreateTokenRequest,
    responses((status = 201, description = "The token; its secret is shown only now", body = CreatedToken), WriteErrors))]
async fn create_token(
    State(app): State<AppState>,
    MaybeAuth(actor): MaybeAuth,
    ClientAddr(client): ClientAddr,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> Response {
    let attempted = req.email.clone();
    match service::create(&app, actor.as_ref(), req.into(), client).await {
        Ok((token, owner)) => {
            let note = AuditNote {
                target: Some(token.view.id.clone()),
                tenant_id: None,
                actor: Some(owner),
            };
            with_note((StatusCode::CREATED, Json(token)).into_response(), note)
        }
        Err(e) => with_note(
            e.into_response(),
            AuditNote {
                actor: attempted,
                ..AuditNote::default()
            },
        ),
    }
}

/// List the caller's tokens (admins: everyone's), without secrets.
#[utoipa::path(get, path = "/tokens", tag = "tokens", security(("bearer" = [])), params(super::Paging),
    responses((status = 200, description = "Tokens, newest first (a page; `Link: rel=\"next\"` when more follow)", body = Vec<TokenView>), ReadErrors))]
async fn list_tokens(
    State(app): State<AppState>,
    Auth(actor): Auth,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    super::ApiQuery(q): super::ApiQuery<super::Paging>,
) -> Result<Response, AppError> {
    let page = service::list(&app, &actor, &q.request()?).await?;
    Ok(super::paged(&uri, page))
}

/// Revoke a token; it stops working at once.
#[utoipa::path(delete, path = "/tokens/{id}", tag = "tokens", security(("bearer" = [])),
    params(("id" = String, Path, description = "Token id")),
    responses((status = 204, description = "Revoked"), WriteErrors))]
async fn revoke_token(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    service::revoke(&app, &actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A request for a token: by a caller with a token, or with email and password.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// A name to recognise the token by (default `api`).
    pub name: Option<String>,
    /// When the token stops working (default: never).
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// With `password`, when no bearer token is sent.
    pub email: Option<String>,
    pub password: Option<String>,
}

impl From<CreateTokenRequest> for crate::tenancy::tokens::CreateToken {
    fn from(r: CreateTokenRequest) -> Self {
        Self {
            name: r.name,
            expires_at: r.expires_at,
            email: r.email,
            password: r.password,
        }
    }
}
