//! `/hosts` (admins): capacity, ratios and unmanaged domains.

use axum::Json;
use axum::extract::{Path, State};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, Auth, ReadErrors, WriteErrors};
use crate::app::AppState;
use crate::error::AppError;
use crate::provision::host::{self as service, HostView};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_hosts))
        .routes(routes!(get_host, update_host))
}

/// List hosts with capacity and allocation (admins).
#[utoipa::path(get, path = "/hosts", tag = "hosts", security(("bearer" = [])), params(super::Paging),
    responses((status = 200, description = "Hosts, oldest first (a page; `Link: rel=\"next\"` when more follow)", body = Vec<HostView>), ReadErrors))]
async fn list_hosts(
    State(app): State<AppState>,
    Auth(actor): Auth,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    super::ApiQuery(q): super::ApiQuery<super::Paging>,
) -> Result<axum::response::Response, AppError> {
    let page = service::list(&app.db, &actor, &q.request()?).await?;
    Ok(super::paged(&uri, page))
}

/// Read one host (admins).
#[utoipa::path(get, path = "/hosts/{id}", tag = "hosts", security(("bearer" = [])),
    params(("id" = String, Path, description = "Host id")),
    responses((status = 200, description = "The host", body = HostView), ReadErrors))]
async fn get_host(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<Json<HostView>, AppError> {
    Ok(Json(service::get(&app.db, &actor, &id).await?))
}

/// Change a host's overcommit ratios or memory reserve (admins).
#[utoipa::path(patch, path = "/hosts/{id}", tag = "hosts", security(("bearer" = [])), request_body = UpdateHostRequest,
    params(("id" = String, Path, description = "Host id")),
    responses((status = 200, description = "The host", body = HostView), WriteErrors))]
async fn update_host(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateHostRequest>,
) -> Result<Json<HostView>, AppError> {
    Ok(Json(
        service::update(&app.db, &actor, &id, req.into()).await?,
    ))
}

/// A change to a host's ratios (admins); absent fields stay as they are.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateHostRequest {
    /// vCPUs sold per host CPU (above 0, at most 100).
    pub cpu_overcommit: Option<f64>,
    /// Guest memory per host memory (above 0, at most 100).
    pub memory_overcommit: Option<f64>,
    /// Guest disk per store space (above 0, at most 100).
    pub disk_overcommit: Option<f64>,
    /// Host memory kept back for the host, in MiB.
    pub reserved_memory_mib: Option<i64>,
}

impl From<UpdateHostRequest> for crate::provision::host::UpdateHost {
    fn from(r: UpdateHostRequest) -> Self {
        Self {
            cpu_overcommit: r.cpu_overcommit,
            memory_overcommit: r.memory_overcommit,
            disk_overcommit: r.disk_overcommit,
            reserved_memory_mib: r.reserved_memory_mib,
        }
    }
}
