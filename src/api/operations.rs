//! `/operations`: progress of long actions.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiQuery, Auth, ReadErrors};
use crate::app::AppState;
use crate::error::AppError;
use crate::provision::vms::{self as service, OperationView};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_operations))
        .routes(routes!(get_operation))
}

/// Filters for the operation list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OperationQuery {
    /// Only operations on this object id.
    pub target: Option<String>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<i64>,
}

/// List operations, newest first.
#[utoipa::path(get, path = "/operations", tag = "operations", security(("bearer" = [])), params(OperationQuery),
    responses((status = 200, description = "Operations, newest first", body = Vec<OperationView>), ReadErrors))]
async fn list_operations(
    State(app): State<AppState>,
    Auth(actor): Auth,
    ApiQuery(q): ApiQuery<OperationQuery>,
) -> Result<Json<Vec<OperationView>>, AppError> {
    Ok(Json(
        service::operations(
            &app.prov,
            &actor,
            q.target.as_deref(),
            q.limit.unwrap_or(100),
        )
        .await?,
    ))
}

/// Read one operation.
#[utoipa::path(get, path = "/operations/{id}", tag = "operations", security(("bearer" = [])),
    params(("id" = String, Path, description = "Operation id")),
    responses((status = 200, description = "The operation", body = OperationView), ReadErrors))]
async fn get_operation(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<Json<OperationView>, AppError> {
    Ok(Json(service::operation(&app.prov, &actor, &id).await?))
}
