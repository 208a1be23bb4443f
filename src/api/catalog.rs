//! `/plans` and `/images`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, Auth, ReadErrors, WriteErrors};
use crate::app::AppState;
use crate::error::AppError;
use crate::provision::catalog::{self as service, ImageView, PlanView};

/// Routes of these resources.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_plans, create_plan))
        .routes(routes!(delete_plan))
        .routes(routes!(list_images))
}

/// List plans.
#[utoipa::path(get, path = "/plans", tag = "catalog", security(("bearer" = [])), params(super::Paging),
    responses((status = 200, description = "Plans, smallest first (a page; `Link: rel=\"next\"` when more follow)", body = Vec<PlanView>), ReadErrors))]
async fn list_plans(
    State(app): State<AppState>,
    _auth: Auth,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    super::ApiQuery(q): super::ApiQuery<super::Paging>,
) -> Result<axum::response::Response, AppError> {
    let page = service::list_plans(&app.db, &q.request()?).await?;
    Ok(super::paged(&uri, page))
}

/// Create a plan (admins).
#[utoipa::path(post, path = "/plans", tag = "catalog", security(("bearer" = [])), request_body = CreatePlanRequest,
    responses((status = 201, description = "The plan", body = PlanView), WriteErrors))]
async fn create_plan(
    State(app): State<AppState>,
    Auth(actor): Auth,
    ApiJson(req): ApiJson<CreatePlanRequest>,
) -> Result<(StatusCode, Json<PlanView>), AppError> {
    Ok((
        StatusCode::CREATED,
        Json(service::create_plan(&app.db, &actor, req.into()).await?),
    ))
}

/// Delete a plan (admins); VMs made with it keep their size.
#[utoipa::path(delete, path = "/plans/{id}", tag = "catalog", security(("bearer" = [])),
    params(("id" = String, Path, description = "Plan id")),
    responses((status = 204, description = "Deleted"), WriteErrors))]
async fn delete_plan(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    service::delete_plan(&app.db, &actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List images.
#[utoipa::path(get, path = "/images", tag = "catalog", security(("bearer" = [])), params(super::Paging),
    responses((status = 200, description = "Images by name (a page; `Link: rel=\"next\"` when more follow)", body = Vec<ImageView>), ReadErrors))]
async fn list_images(
    State(app): State<AppState>,
    _auth: Auth,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    super::ApiQuery(q): super::ApiQuery<super::Paging>,
) -> Result<axum::response::Response, AppError> {
    let page = service::list_images(&app.db, &q.request()?).await?;
    Ok(super::paged(&uri, page))
}

/// A request to create a plan.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePlanRequest {
    /// Letters, digits, '.', '_' and '-'; unique.
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    pub name: String,
    /// Virtual CPUs (1-256).
    #[schema(minimum = 1, maximum = 256)]
    pub vcpus: i64,
    /// Memory in MiB (64 to 4194304).
    #[schema(minimum = 64, maximum = 4194304)]
    pub memory_mib: i64,
    /// Disk in GiB (1 to 65536).
    #[schema(minimum = 1, maximum = 65536)]
    pub disk_gib: i64,
}

impl From<CreatePlanRequest> for crate::provision::catalog::CreatePlan {
    fn from(r: CreatePlanRequest) -> Self {
        Self {
            name: r.name,
            vcpus: r.vcpus,
            memory_mib: r.memory_mib,
            disk_gib: r.disk_gib,
        }
    }
}
