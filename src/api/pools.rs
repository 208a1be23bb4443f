//! `/pools`: load-balanced pools of a tenant's VMs, and their members.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, AuditNote, Auth, ReadErrors, WriteErrors, with_note};
use crate::app::AppState;
use crate::domain::pool::{CheckKind, PoolAlgorithm, PoolProtocol};
use crate::error::AppError;
use crate::pools::members::{self, AddMember};
use crate::pools::{self as service, CreatePool, HealthCheckInput, PoolView, UpdatePool};

/// An answer noting the pool (and a member, if any) and the pool's tenant for the audit log.
fn noted(status: StatusCode, pool: PoolView, member: Option<&str>) -> Response {
    let note = AuditNote {
        target: Some(match member {
            Some(vm) => format!("{}/{vm}", pool.id),
            None => pool.id.clone(),
        }),
        tenant_id: Some(pool.tenant_id.clone()),
        actor: None,
    };
    with_note((status, Json(pool)).into_response(), note)
}

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_pools, create_pool))
        .routes(routes!(get_pool, update_pool, delete_pool))
        .routes(routes!(add_member))
        .routes(routes!(remove_member))
}

/// List pools (customers: their tenant's).
#[utoipa::path(get, path = "/pools", tag = "pools", security(("bearer" = [])), params(super::Paging),
    responses((status = 200, description = "Pools by name with their members (a page; `Link: rel=\"next\"` when more follow)", body = Vec<PoolView>), ReadErrors))]
async fn list_pools(
    State(app): State<AppState>,
    Auth(actor): Auth,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    super::ApiQuery(q): super::ApiQuery<super::Paging>,
) -> Result<axum::response::Response, AppError> {
    let page = service::list(&app, &actor, &q.request()?).await?;
    Ok(super::paged(&uri, page))
}

/// Create a pool: a listener (HTTP or TCP) on a port from the configured range, in front of
/// members added later or by `POST /vms` with `pool`.
#[utoipa::path(post, path = "/pools", tag = "pools", security(("bearer" = [])), request_body = CreatePoolRequest,
    responses((status = 201, description = "The pool", body = PoolView), WriteErrors))]
async fn create_pool(
    State(app): State<AppState>,
    Auth(actor): Auth,
    ApiJson(req): ApiJson<CreatePoolRequest>,
) -> Result<Response, AppError> {
    let pool = service::create(&app, &actor, req.into()).await?;
    Ok(noted(StatusCode::CREATED, pool, None))
}

/// Read a pool and its members' states.
#[utoipa::path(get, path = "/pools/{id}", tag = "pools", security(("bearer" = [])),
    params(("id" = String, Path, description = "Pool id")),
    responses((status = 200, description = "The pool", body = PoolView), ReadErrors))]
async fn get_pool(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<Json<PoolView>, AppError> {
    Ok(Json(service::get(&app, &actor, &id).await?))
}

/// Change a pool's name, algorithm, health check, drain timeout, sticky cookie or PROXY
/// header; open connections keep going.
#[utoipa::path(patch, path = "/pools/{id}", tag = "pools", security(("bearer" = [])), request_body = UpdatePoolRequest,
    params(("id" = String, Path, description = "Pool id")),
    responses((status = 200, description = "The pool", body = PoolView), WriteErrors))]
async fn update_pool(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdatePoolRequest>,
) -> Result<Response, AppError> {
    let pool = service::update(&app, &actor, &id, req.into()).await?;
    Ok(noted(StatusCode::OK, pool, None))
}

/// Delete a pool: its listener closes; open connections finish within the drain timeout.
#[utoipa::path(delete, path = "/pools/{id}", tag = "pools", security(("bearer" = [])),
    params(("id" = String, Path, description = "Pool id")),
    responses((status = 204, description = "Deleted"), WriteErrors))]
async fn delete_pool(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let pool = service::get(&app, &actor, &id).await?;
    service::delete(&app, &actor, &id).await?;
    let note = AuditNote {
        target: Some(pool.id.clone()),
        tenant_id: Some(pool.tenant_id.clone()),
        actor: None,
    };
    Ok(with_note(StatusCode::NO_CONTENT.into_response(), note))
}

/// Attach a VM of the pool's tenant on a forwarded guest port; it takes traffic once its
/// health check passes.
#[utoipa::path(post, path = "/pools/{id}/members", tag = "pools", security(("bearer" = [])), request_body = AddMemberRequest,
    params(("id" = String, Path, description = "Pool id")),
    responses((status = 201, description = "The pool with the new member", body = PoolView), WriteErrors))]
async fn add_member(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<AddMemberRequest>,
) -> Result<Response, AppError> {
    let vm_id = req.vm_id.clone();
    let req = AddMember {
        vm_id: req.vm_id,
        port: req.port,
        weight: req.weight,
    };
    let pool = members::attach(&app, &actor, &id, req).await?;
    Ok(noted(StatusCode::CREATED, pool, Some(&vm_id)))
}

/// Detach a VM: no new work goes to it, open work drains, then it is gone.
#[utoipa::path(delete, path = "/pools/{id}/members/{vm_id}", tag = "pools", security(("bearer" = [])),
    params(("id" = String, Path, description = "Pool id"), ("vm_id" = String, Path, description = "The member's VM id")),
    responses((status = 202, description = "The pool; the member is draining (`leaving`) until its open work ends", body = PoolView), WriteErrors))]
async fn remove_member(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path((id, vm_id)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let pool = members::detach(&app, &actor, &id, &vm_id).await?;
    Ok(noted(StatusCode::ACCEPTED, pool, Some(&vm_id)))
}

/// A health check; absent fields take defaults (`http`: `GET /` answering 200; every 2 s,
/// 1 s timeout, rise 2, fall 3).
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckRequest {
    /// `http` or `tcp` (default: the pool's protocol).
    pub kind: Option<CheckKind>,
    /// `http`: the path asked, starting with '/'.
    #[schema(max_length = 256)]
    pub path: Option<String>,
    /// `http`: the status that counts as healthy.
    #[schema(minimum = 100, maximum = 599)]
    pub expect_status: Option<u16>,
    /// Seconds between checks, at least 1.
    #[schema(minimum = 1, maximum = 3600)]
    pub interval_s: Option<u32>,
    /// Seconds a check may take.
    #[schema(minimum = 1, maximum = 60)]
    pub timeout_s: Option<u32>,
    /// Consecutive passes that bring a member into rotation.
    #[schema(minimum = 1, maximum = 100)]
    pub rise: Option<u32>,
    /// Consecutive failures that take it out.
    #[schema(minimum = 1, maximum = 100)]
    pub fall: Option<u32>,
}

impl From<HealthCheckRequest> for HealthCheckInput {
    fn from(r: HealthCheckRequest) -> Self {
        Self {
            kind: r.kind,
            path: r.path,
            expect_status: r.expect_status,
            interval_s: r.interval_s,
            timeout_s: r.timeout_s,
            rise: r.rise,
            fall: r.fall,
        }
    }
}

/// A request to create a pool.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePoolRequest {
    /// Letters, digits, '.', '_', '-'; unique in the tenant.
    #[schema(max_length = 64)]
    pub name: String,
    pub protocol: PoolProtocol,
    /// `address:port` with a port from the configured range; left out, carve picks one.
    #[schema(max_length = 64)]
    pub listen: Option<String>,
    /// Default `round_robin`.
    pub algorithm: Option<PoolAlgorithm>,
    pub health_check: Option<HealthCheckRequest>,
    /// Seconds a leaving member's open work may go on (0 to 3600, default 30).
    #[schema(maximum = 3600)]
    pub drain_timeout_s: Option<u32>,
    /// `http` pools: a cookie name that keeps each client on one member.
    #[schema(max_length = 64)]
    pub sticky_cookie: Option<String>,
    /// `tcp` pools: send members a PROXY protocol v2 header naming the client.
    pub proxy_protocol: Option<bool>,
    /// Owning tenant (admins only; a customer's pools go to its tenant).
    pub tenant_id: Option<String>,
}

impl From<CreatePoolRequest> for CreatePool {
    fn from(r: CreatePoolRequest) -> Self {
        Self {
            name: r.name,
            protocol: r.protocol,
            listen: r.listen,
            algorithm: r.algorithm,
            health_check: r.health_check.map(Into::into),
            drain_timeout_s: r.drain_timeout_s,
            sticky_cookie: r.sticky_cookie,
            proxy_protocol: r.proxy_protocol,
            tenant_id: r.tenant_id,
        }
    }
}

/// A change to a pool; absent fields stay. A `health_check` replaces the whole check.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePoolRequest {
    #[schema(max_length = 64)]
    pub name: Option<String>,
    pub algorithm: Option<PoolAlgorithm>,
    pub health_check: Option<HealthCheckRequest>,
    #[schema(maximum = 3600)]
    pub drain_timeout_s: Option<u32>,
    /// A cookie name, or `""` for none.
    #[schema(max_length = 64)]
    pub sticky_cookie: Option<String>,
    pub proxy_protocol: Option<bool>,
}

impl From<UpdatePoolRequest> for UpdatePool {
    fn from(r: UpdatePoolRequest) -> Self {
        Self {
            name: r.name,
            algorithm: r.algorithm,
            health_check: r.health_check.map(Into::into),
            drain_timeout_s: r.drain_timeout_s,
            sticky_cookie: r.sticky_cookie.map(|c| Some(c).filter(|c| !c.is_empty())),
            proxy_protocol: r.proxy_protocol,
        }
    }
}

/// A VM to attach.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    /// A VM of the pool's tenant.
    #[schema(max_length = 64)]
    pub vm_id: String,
    /// The guest port traffic goes to; the VM must forward it.
    #[schema(minimum = 1)]
    pub port: u16,
    /// Share of new work relative to other members (1 to 256, default 1).
    #[schema(minimum = 1, maximum = 256)]
    pub weight: Option<u32>,
}
