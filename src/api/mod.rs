//! The REST API under `/api/v1`: bearer-token authentication, JSON bodies that refuse unknown
//! fields, errors as `application/problem+json`, and the OpenAPI document built from the
//! handlers' annotations.

pub mod catalog;
pub mod hosts;
pub mod operations;
pub mod vms;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;
use crate::auth::{Principal, Role, token_digest};
use crate::error::{AppError, Problem, problem_response};
use crate::provision::vms::OperationView;

/// The document's fixed parts; paths are added by the routers.
#[derive(OpenApi)]
#[openapi(
    info(title = "carve", description = "carve REST API: hosts, plans, images, VMs and their operations."),
    modifiers(&BearerAuth),
    components(schemas(Problem)),
    tags(
        (name = "vms", description = "Virtual private servers"),
        (name = "operations", description = "Long-running actions"),
        (name = "catalog", description = "Plans and images"),
        (name = "hosts", description = "Hypervisor hosts (admins)"),
    )
)]
struct ApiDoc;

/// Declares the bearer token scheme.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The API routes, nested under `/api/v1`, with their OpenAPI document.
pub fn router() -> OpenApiRouter<AppState> {
    let v1 = OpenApiRouter::new()
        .merge(vms::router())
        .merge(operations::router())
        .merge(catalog::router())
        .merge(hosts::router());
    OpenApiRouter::with_openapi(ApiDoc::openapi()).nest("/api/v1", v1)
}

/// Error answers a reading endpoint may give.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ReadErrors {
    /// No valid bearer token.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The caller's role may not use this endpoint.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// No such object visible to the caller.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// Internal error (logged).
    #[response(status = 500, content_type = "application/problem+json")]
    Internal(Problem),
}

/// Error answers a changing endpoint may give.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum WriteErrors {
    /// The body is not valid JSON.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// No valid bearer token.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The caller's role may not do this, or a quota is exhausted.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// No such object visible to the caller.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// Conflicts with the current state: name taken, capacity short, object busy.
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// The body is larger than the server accepts.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// The body is not `application/json`.
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
    /// Fields are missing, unknown or out of range; `errors` lists them.
    #[response(status = 422, content_type = "application/problem+json")]
    Unprocessable(Problem),
    /// Internal error (logged).
    #[response(status = 500, content_type = "application/problem+json")]
    Internal(Problem),
}

/// A JSON body whose rejections are problem documents (400 syntax, 415 content type, 422
/// unknown or missing fields, 413 too large).
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_problem(rejection)),
        }
    }
}

/// Turns axum's JSON rejection into a problem document with the same status.
fn json_problem(rejection: JsonRejection) -> Response {
    let status = rejection.status();
    let detail = match &rejection {
        JsonRejection::JsonDataError(e) => format!(
            "the body does not match the expected fields: {}",
            e.body_text()
        ),
        JsonRejection::JsonSyntaxError(e) => {
            format!("the body is not valid JSON: {}", e.body_text())
        }
        JsonRejection::MissingJsonContentType(_) => {
            "send the body as JSON with the header Content-Type: application/json".to_string()
        }
        other if status == StatusCode::PAYLOAD_TOO_LARGE => {
            format!("the body is too large: {}", other.body_text())
        }
        other => other.body_text(),
    };
    problem_response(status, detail, Vec::new())
}

/// The authenticated caller of an API request.
pub struct Auth(pub Principal);

impl Auth {
    /// 403 unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), AppError> {
        if self.0.is_admin() {
            Ok(())
        } else {
            Err(AppError::Forbidden("only admins may do this".into()))
        }
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = |detail: &str| {
            let mut r = AppError::Unauthorized(detail.to_string()).into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"carve\""),
            );
            r
        };
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(unauthorized(
                "send an API token as Authorization: Bearer <token>",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(unauthorized(
                "the Authorization header must be \"Bearer <token>\"",
            ));
        };
        let owner = crate::db::tokens::find_owner(&app.db, &token_digest(token))
            .await
            .map_err(|e| AppError::from(e).into_response())?;
        let Some(owner) = owner else {
            return Err(unauthorized(
                "the token is unknown, revoked or expired; create a new one",
            ));
        };
        let role = Role::parse(&owner.role).unwrap_or(Role::Customer);
        Ok(Auth(Principal {
            user_id: owner.user_id,
            email: owner.email,
            role,
            tenant_id: owner.tenant_id,
        }))
    }
}

/// 202 Accepted with the operation and `Location: /api/v1/operations/{id}`.
pub fn accepted<T: serde::Serialize>(op: &OperationView, body: T) -> Response {
    let location = format!("/api/v1/operations/{}", op.id);
    let mut response = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}
