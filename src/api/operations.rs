//! `/operations`: progress of long actions.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiQuery, Auth, ReadErrors};
use crate::app::AppState;
use crate::db::operations::OperationFilter;
use crate::domain::operation::{OpKind, OpState};
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
    /// Only operations in this state.
    pub state: Option<OpState>,
    /// Only operations of this kind.
    pub kind: Option<OpKind>,
    /// Items per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Where to go on: the `cursor` of the previous answer's `Link` URL.
    #[param(max_length = 2048)]
    pub cursor: Option<String>,
}

/// List operations, newest first.
#[utoipa::path(get, path = "/operations", tag = "operations", security(("bearer" = [])), params(OperationQuery),
    responses((status = 200, description = "Operations, newest first (a page; `Link: rel=\"next\"` when more follow)", body = Vec<OperationView>), ReadErrors))]
async fn list_operations(
    State(app): State<AppState>,
    Auth(actor): Auth,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    ApiQuery(q): ApiQuery<OperationQuery>,
) -> Result<axum::response::Response, AppError> {
    let page = super::page_request(q.limit, q.cursor.as_deref())?;
    let filter = OperationFilter {
        target_id: q.target.as_deref(),
        state: q.state,
        kind: q.kind,
        tenant: None,
    };
    let ops = service::operations(&app.prov, &actor, &filter, &page).await?;
    Ok(super::paged(&uri, ops))
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
