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
use crate::provision::custom_images;

/// Routes of these resources.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_plans, create_plan))
        .routes(routes!(delete_plan))
        .routes(routes!(list_images, upload_image))
        .routes(routes!(get_image, update_image, delete_image))
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
    Auth(actor): Auth,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    super::ApiQuery(q): super::ApiQuery<super::Paging>,
) -> Result<axum::response::Response, AppError> {
    let page = service::list_images(&app.db, &actor, &q.request()?).await?;
    Ok(super::paged(&uri, page))
}

/// Get an image (hidden ones for admins only).
#[utoipa::path(get, path = "/images/{id}", tag = "catalog", security(("bearer" = [])),
    params(("id" = String, Path, description = "Image id or name")),
    responses((status = 200, description = "The image", body = ImageView), ReadErrors))]
async fn get_image(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<Json<ImageView>, AppError> {
    Ok(Json(service::get_image(&app.db, &actor, &id).await?))
}

/// Upload a custom image (admins): the body is a standalone qcow2 file, streamed; it is
/// checked with `qemu-img` (qcow2, consistent, no backing or external data file, bounded
/// virtual size) before it is offered.
#[utoipa::path(post, path = "/images", tag = "catalog", security(("bearer" = [])), params(UploadImageParams),
    request_body(content = Qcow2File, content_type = "application/octet-stream", description = "The qcow2 file"),
    responses((status = 201, description = "The image, registered", body = ImageView), WriteErrors))]
async fn upload_image(
    State(app): State<AppState>,
    Auth(actor): Auth,
    super::ApiQuery(q): super::ApiQuery<UploadImageParams>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<axum::response::Response, AppError> {
    use axum::response::IntoResponse;
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or(""));
    if content_type.is_some_and(|t| !t.starts_with("application/octet-stream")) {
        return Ok(super::problem_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the qcow2 file as the body with Content-Type: application/octet-stream (curl -X POST -T FILE -H 'Content-Type: application/octet-stream')".into(),
            Vec::new(),
        ));
    }
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let view = custom_images::upload(
        &app.prov,
        &actor,
        q.into(),
        declared,
        body.into_data_stream(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Change an image's catalogue facts, or hide it from customers (admins). A built image takes
/// only `visible`.
#[utoipa::path(patch, path = "/images/{id}", tag = "catalog", security(("bearer" = [])), request_body = UpdateImageRequest,
    params(("id" = String, Path, description = "Image id or name")),
    responses((status = 200, description = "The image", body = ImageView), WriteErrors))]
async fn update_image(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateImageRequest>,
) -> Result<Json<ImageView>, AppError> {
    Ok(Json(
        custom_images::update(&app.db, &actor, &id, req.into()).await?,
    ))
}

/// Delete an uploaded image (admins); refused while a VM or a scale group uses it.
#[utoipa::path(delete, path = "/images/{id}", tag = "catalog", security(("bearer" = [])),
    params(("id" = String, Path, description = "Image id or name")),
    responses((status = 204, description = "Deleted"), WriteErrors))]
async fn delete_image(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    custom_images::remove(&app.prov, &actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A qcow2 file, sent as the raw body.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct Qcow2File(Vec<u8>);

/// What an admin says about an image they upload, in the query string.
#[derive(Debug, Clone, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UploadImageParams {
    /// Letters, digits, '.', '_' and '-'; unique among images.
    #[param(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    pub name: String,
    /// The OS, e.g. `debian` (lower-case letters, digits, '.', '_', '-'; up to 32).
    #[param(max_length = 32)]
    pub os: String,
    /// `disk` (the image's own boot loader, the default) or `kernel` (needs `kernel_from`).
    pub boot: Option<String>,
    /// For `boot=kernel`: the image whose kernel, initramfs and command line boot this one.
    #[param(max_length = 64)]
    pub kernel_from: Option<String>,
    /// The OS's version, e.g. `12.8`.
    #[param(max_length = 32)]
    pub version: Option<String>,
    #[param(max_length = 500)]
    pub description: Option<String>,
    /// The user to log in as by SSH (default `root`).
    #[param(max_length = 32)]
    pub default_user: Option<String>,
    /// Least memory a plan needs for this image, in MiB (default 128).
    #[param(minimum = 64, maximum = 4194304)]
    pub min_memory_mib: Option<i64>,
    /// The image runs the QEMU guest agent (default false).
    pub guest_agent: Option<bool>,
    /// Offered to customers (default true).
    pub visible: Option<bool>,
}

impl From<UploadImageParams> for custom_images::NewImage {
    fn from(q: UploadImageParams) -> Self {
        Self {
            name: q.name,
            os: q.os,
            version: q.version.unwrap_or_default(),
            description: q.description.unwrap_or_default(),
            default_user: q.default_user.unwrap_or_default(),
            boot: q.boot.unwrap_or_else(|| "disk".into()),
            kernel_from: q.kernel_from,
            min_memory_mib: q.min_memory_mib,
            guest_agent: q.guest_agent.unwrap_or(false),
            visible: q.visible.unwrap_or(true),
        }
    }
}

/// A change to an image (admins); absent fields stay as they are.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateImageRequest {
    /// Offered to customers.
    pub visible: Option<bool>,
    /// Uploaded images only: the OS, e.g. `debian`.
    #[schema(max_length = 32)]
    pub os: Option<String>,
    /// Uploaded images only.
    #[schema(max_length = 32)]
    pub version: Option<String>,
    /// Uploaded images only.
    #[schema(max_length = 500)]
    pub description: Option<String>,
    /// Uploaded images only: the user to log in as by SSH.
    #[schema(max_length = 32)]
    pub default_user: Option<String>,
    /// Uploaded images only, in MiB.
    #[schema(minimum = 64, maximum = 4194304)]
    pub min_memory_mib: Option<i64>,
    /// Uploaded images only.
    pub guest_agent: Option<bool>,
}

impl From<UpdateImageRequest> for custom_images::ImageChanges {
    fn from(r: UpdateImageRequest) -> Self {
        Self {
            visible: r.visible,
            os: r.os,
            version: r.version,
            description: r.description,
            default_user: r.default_user,
            min_memory_mib: r.min_memory_mib,
            guest_agent: r.guest_agent,
        }
    }
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
