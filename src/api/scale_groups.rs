//! `/pools/{id}/scale-group`: a pool's group of identical VMs, its template, counts, health
//! replacement, rolling refresh and target tracking.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, AuditNote, Auth, ReadErrors, WriteErrors, with_note};
use crate::app::AppState;
use crate::domain::pool::TargetMetric;
use crate::error::AppError;
use crate::scaling::{
    self as service, GroupInput, GroupView, RefreshAction, TargetInput, TemplateInput,
};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_group, put_group, delete_group))
        .routes(routes!(refresh_group))
}

/// An answer noting the group's pool and tenant for the audit log.
fn noted(status: StatusCode, g: GroupView) -> Response {
    let note = AuditNote {
        target: Some(g.pool_id.clone()),
        tenant_id: Some(g.tenant_id.clone()),
        actor: None,
    };
    with_note((status, Json(g)).into_response(), note)
}

/// Read a pool's scale group: template, counts, members and their health, refresh, load.
#[utoipa::path(get, path = "/pools/{id}/scale-group", tag = "scale groups", security(("bearer" = [])),
    params(("id" = String, Path, description = "Pool id")),
    responses((status = 200, description = "The group", body = GroupView), ReadErrors))]
async fn get_group(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<Json<GroupView>, AppError> {
    Ok(Json(service::get(&app, &actor, &id).await?))
}

/// Create or change a pool's scale group. Raising `desired` creates VMs (within the quota;
/// a shortfall is reported on the group and retried), lowering it drains and deletes the
/// newest. A changed template starts a rolling refresh.
#[utoipa::path(put, path = "/pools/{id}/scale-group", tag = "scale groups", security(("bearer" = [])),
    request_body = ScaleGroupRequest,
    params(("id" = String, Path, description = "Pool id")),
    responses((status = 201, description = "The new group", body = GroupView),
        (status = 200, description = "The changed group", body = GroupView), WriteErrors))]
async fn put_group(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ScaleGroupRequest>,
) -> Result<Response, AppError> {
    let (g, created) = service::put(&app, &actor, &id, req.into()).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(noted(status, g))
}

/// Delete a pool's scale group: its VMs are drained and deleted, then the group is gone (the
/// pool stays).
#[utoipa::path(delete, path = "/pools/{id}/scale-group", tag = "scale groups", security(("bearer" = [])),
    params(("id" = String, Path, description = "Pool id")),
    responses((status = 202, description = "The group, `deleting` until its members are gone", body = GroupView), WriteErrors))]
async fn delete_group(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let g = service::delete(&app, &actor, &id).await?;
    Ok(noted(StatusCode::ACCEPTED, g))
}

/// Start (the default), pause, resume or cancel a rolling refresh: members are replaced
/// `max_surge` at a time, never leaving fewer than `min_healthy_percent` of `desired` healthy.
#[utoipa::path(post, path = "/pools/{id}/scale-group/refresh", tag = "scale groups", security(("bearer" = [])),
    request_body(content = Option<RefreshRequest>, description = "Left out: start"),
    params(("id" = String, Path, description = "Pool id")),
    responses((status = 202, description = "The group with its refresh", body = GroupView), WriteErrors))]
async fn refresh_group(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    let action = if body.iter().all(u8::is_ascii_whitespace) {
        RefreshAction::Start
    } else {
        let req: RefreshRequest = serde_json::from_slice(&body).map_err(|e| {
            AppError::BadRequest(format!(
                "the body is not a refresh request ({e}); send {{\"action\": \"start\" | \"pause\" | \"resume\" | \"cancel\"}} or nothing"
            ))
        })?;
        req.action
    };
    let g = service::refresh(&app, &actor, &id, action).await?;
    Ok(noted(StatusCode::ACCEPTED, g))
}

/// What a refresh request asks.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub action: RefreshAction,
}

/// What every member is made of.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateRequest {
    /// Plan name or id.
    #[schema(max_length = 64)]
    pub plan: String,
    /// Image name or id.
    #[schema(max_length = 64)]
    pub image: String,
    /// cloud-init user-data (at most 64 KiB).
    #[schema(max_length = 65536)]
    pub user_data: Option<String>,
    /// SSH public keys for root.
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// The guest port the pool sends traffic to (forwarded on every member).
    #[schema(minimum = 1, maximum = 65535)]
    pub port: u32,
    /// Root's console password on every member; only a SHA-512 crypt hash is kept. Left out
    /// on a change, the previous one stays.
    #[serde(default)]
    #[schema(value_type = Option<String>, min_length = 10, max_length = 1024, format = Password)]
    pub root_password: Option<crate::domain::secret::Secret>,
}

/// Target tracking: `desired` follows the balancer's measure per healthy member.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetRequest {
    pub metric: TargetMetric,
    /// The measure per healthy member to keep near.
    #[schema(minimum = 1, maximum = 1000000)]
    pub value: u32,
    /// Seconds after a scaling before scaling out again (default 60).
    #[schema(maximum = 86400)]
    pub scale_out_cooldown_s: Option<u32>,
    /// Seconds after a scaling before scaling in (default 300).
    #[schema(maximum = 86400)]
    pub scale_in_cooldown_s: Option<u32>,
}

/// A scale group: its template and numbers. Absent numbers take defaults.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleGroupRequest {
    pub template: TemplateRequest,
    /// Fewest members (0 to 100).
    #[schema(maximum = 100)]
    pub min: u32,
    /// Most members (0 to 100).
    #[schema(maximum = 100)]
    pub max: u32,
    /// Members wanted, within min..max (left out: min for a new group, else unchanged).
    #[schema(maximum = 100)]
    pub desired: Option<u32>,
    /// Seconds a member may fail the pool's health check before it is replaced (5 to 86400,
    /// default 60).
    #[schema(minimum = 5, maximum = 86400)]
    pub replace_after_s: Option<u32>,
    /// Seconds a new member may take to pass its first health check (default 300).
    #[schema(maximum = 3600)]
    pub health_grace_s: Option<u32>,
    /// Members a refresh may add beyond `desired` at once (0 to 10, default 1).
    #[schema(maximum = 10)]
    pub max_surge: Option<u32>,
    /// Share of `desired` that must stay healthy during a refresh (default 100).
    #[schema(maximum = 100)]
    pub min_healthy_percent: Option<u32>,
    pub target: Option<TargetRequest>,
}

impl From<ScaleGroupRequest> for GroupInput {
    fn from(r: ScaleGroupRequest) -> Self {
        Self {
            template: TemplateInput {
                plan: r.template.plan,
                image: r.template.image,
                user_data: r.template.user_data,
                ssh_keys: r.template.ssh_keys,
                port: r.template.port,
                root_password: r.template.root_password,
            },
            min: r.min,
            max: r.max,
            desired: r.desired,
            replace_after_s: r.replace_after_s,
            health_grace_s: r.health_grace_s,
            max_surge: r.max_surge,
            min_healthy_percent: r.min_healthy_percent,
            target: r.target.map(|t| TargetInput {
                metric: t.metric,
                value: t.value,
                scale_out_cooldown_s: t.scale_out_cooldown_s,
                scale_in_cooldown_s: t.scale_in_cooldown_s,
            }),
        }
    }
}
