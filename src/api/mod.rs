//! The REST API under `/api/v1`: bearer-token authentication, JSON bodies that refuse unknown
//! fields, errors as `application/problem+json`, and the OpenAPI document built from the
//! handlers' annotations.

pub mod accounts;
pub mod catalog;
pub mod console;
pub mod events;
pub mod hosts;
pub mod operations;
pub mod pools;
pub mod problem;
pub mod scale_groups;
pub mod sftp_accounts;
pub mod ssh_keys;
pub mod tokens;
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
use crate::auth::Principal;
use crate::db::page::{Page, PageRequest};
use crate::error::AppError;
use crate::provision::vms::OperationView;
use crate::tenancy::principal::{self, Resolved};
pub use problem::{FieldError, Problem, problem_response};

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
        (name = "tenants", description = "Tenants, quotas and usage (admins)"),
        (name = "users", description = "Users (admins) and the caller (`/me`)"),
        (name = "tokens", description = "API tokens"),
        (name = "audit", description = "The audit log"),
        (name = "sftp", description = "SFTP accounts"),
        (name = "events", description = "Live changes as server-sent events"),
        (name = "pools", description = "Load-balanced pools of VMs"),
        (name = "scale groups", description = "A pool's identical VMs, kept at a count, healed, refreshed and following load"),
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
        .merge(console::router())
        .merge(operations::router())
        .merge(catalog::router())
        .merge(hosts::router())
        .merge(accounts::router())
        .merge(tokens::router())
        .merge(sftp_accounts::router())
        .merge(ssh_keys::router())
        .merge(pools::router())
        .merge(scale_groups::router())
        .merge(events::router());
    OpenApiRouter::with_openapi(ApiDoc::openapi()).nest("/api/v1", v1)
}

/// Error answers a reading endpoint may give.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ReadErrors {
    /// The query string cannot be read.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// A query parameter is out of range (e.g. `limit`), or the cursor is not valid.
    #[response(status = 422, content_type = "application/problem+json")]
    Unprocessable(Problem),
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
    /// Too many failed logins; retry after the seconds in Retry-After.
    #[response(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Problem),
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

/// Who an API request comes from, as its bearer token says; set by [`authenticate`].
#[derive(Debug, Clone)]
pub enum Caller {
    /// No Authorization header.
    Anonymous,
    /// A token was sent but not accepted: the status and reason.
    Rejected(StatusCode, String),
    /// A valid token's owner.
    User(Principal),
}

impl Caller {
    /// The principal, if authenticated.
    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Caller::User(p) => Some(p),
            _ => None,
        }
    }
}

/// Resolves the bearer token of a request.
async fn resolve_caller(
    app: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<Caller, AppError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(Caller::Anonymous);
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
        return Ok(Caller::Rejected(
            StatusCode::UNAUTHORIZED,
            "the Authorization header must be \"Bearer <token>\"".into(),
        ));
    };
    Ok(match principal::from_token(&app.db, token).await? {
        Resolved::Unknown => Caller::Rejected(
            StatusCode::UNAUTHORIZED,
            "the token is unknown, revoked or expired; create a new one".into(),
        ),
        Resolved::Suspended => Caller::Rejected(
            StatusCode::FORBIDDEN,
            "your tenant is suspended; contact your provider".into(),
        ),
        Resolved::User(p, ()) => Caller::User(p),
    })
}

pub use crate::request::{AuditNote, with_note};

/// Middleware: resolves the caller once per request, then records every state-changing
/// request in the audit log (actor, action, target, outcome; never a body).
pub async fn authenticate(
    axum::extract::State(app): axum::extract::State<AppState>,
    mut req: Request,
    next: axum::middleware::Next,
) -> Response {
    let caller = match resolve_caller(&app, req.headers()).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    req.extensions_mut().insert(caller.clone());
    let method = req.method().clone();
    if matches!(
        method,
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    ) {
        return next.run(req).await;
    }
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_string());
    let path_target = route
        .as_deref()
        .and_then(|r| crate::request::id_in_path(r, req.uri().path()));
    let (parts, body) = req.into_parts();
    let client = client_of(&parts, &app.config.http.trusted_proxies).map(|c| c.to_string());
    let req = Request::from_parts(parts, body);
    let response = next.run(req).await;
    let note = response
        .extensions()
        .get::<AuditNote>()
        .cloned()
        .unwrap_or_default();
    let principal = caller.principal();
    let status = response.status();
    let entry = crate::tenancy::audit::NewEntry {
        actor_id: principal.map(|p| p.user_id.to_string()),
        actor: note
            .actor
            .or_else(|| principal.map(|p| p.email.clone()))
            .unwrap_or_else(|| "anonymous".into()),
        tenant_id: note
            .tenant_id
            .or_else(|| principal.and_then(|p| p.tenant_id.as_ref().map(ToString::to_string))),
        action: format!("{method} {}", route.unwrap_or_else(|| "unmatched".into())),
        target: note.target.or(path_target),
        outcome: outcome(status),
        status: Some(status.as_u16()),
        client,
    };
    crate::tenancy::audit::record(&app.db, &entry).await;
    response
}

/// The authenticated caller of an API request.
pub struct Auth(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Caller>() {
            Some(Caller::User(p)) => Ok(Auth(p.clone())),
            Some(Caller::Rejected(status, detail)) if *status == StatusCode::FORBIDDEN => {
                Err(AppError::Forbidden(detail.clone()).into_response())
            }
            Some(Caller::Rejected(_, detail)) => Err(unauthorized(detail)),
            _ => Err(unauthorized(
                "send an API token as Authorization: Bearer <token>",
            )),
        }
    }
}

/// The caller if a valid token was sent; an invalid one is still refused.
pub struct MaybeAuth(pub Option<Principal>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeAuth {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Caller>() {
            None | Some(Caller::Anonymous) => Ok(MaybeAuth(None)),
            _ => Auth::from_request_parts(parts, state)
                .await
                .map(|Auth(p)| MaybeAuth(Some(p))),
        }
    }
}

/// 401 with a `WWW-Authenticate` challenge.
fn unauthorized(detail: &str) -> Response {
    let mut r = AppError::Unauthorized(detail.to_string()).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"carve\""),
    );
    r
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

/// Query parameters whose rejections are problem documents (400).
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(e) => Err(problem_response(
                StatusCode::BAD_REQUEST,
                format!("the query string is not valid: {}", e.body_text()),
                Vec::new(),
            )),
        }
    }
}

/// Paging of a list: `?limit=` and `?cursor=` (from the previous answer's `Link` header).
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Paging {
    /// Items per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Where to go on: the `cursor` in the previous answer's `Link: <…>; rel="next"` URL.
    #[param(max_length = 2048)]
    pub cursor: Option<String>,
}

impl Paging {
    /// The page asked for, or a 422 naming the parameter to fix.
    pub fn request(&self) -> Result<PageRequest, AppError> {
        page_request(self.limit, self.cursor.as_deref())
    }
}

/// Checks `limit` and `cursor` (a 422 naming the one to fix).
pub fn page_request(limit: Option<i64>, cursor: Option<&str>) -> Result<PageRequest, AppError> {
    PageRequest::parse(limit, cursor)
        .map_err(|(field, why)| AppError::invalid(field, why.to_string()))
}

/// A page as a plain JSON array, with `Link: <…>; rel="next"` when more follow.
pub fn paged<T: serde::Serialize>(uri: &axum::http::Uri, page: Page<T>) -> Response {
    let mut response = axum::Json(page.items).into_response();
    add_next_link(&mut response, uri, page.next.as_deref());
    response
}

/// Adds the `Link` header of the next page: this request's URL with the new cursor.
pub fn add_next_link(response: &mut Response, uri: &axum::http::Uri, next: Option<&str>) {
    let Some(next) = next else {
        return;
    };
    let mut query: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("cursor="))
        .collect();
    let cursor = format!("cursor={next}");
    query.push(&cursor);
    let link = format!("<{}?{}>; rel=\"next\"", uri.path(), query.join("&"));
    if let Ok(v) = HeaderValue::from_str(&link) {
        response.headers_mut().insert(header::LINK, v);
    }
}

pub use crate::request::{ClientAddr, client_of, outcome};
