//! Plans (create, delete) and images (what is registered and available, uploads, hiding and
//! removal).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use crate::app::AppState;
use crate::db::page::PageRequest;
use crate::domain::image::{BootMethod, ImageSource};
use crate::error::AppError;
use crate::provision::catalog::{self, CreatePlan, ImageView, PlanView};
use crate::provision::custom_images;
use crate::request::{AuditNote, with_note};
use crate::web::errors::{WebError, describe};
use crate::web::form::{FieldErrors, Fields, Panel, Posted};
use crate::web::layout::{Nav, human_bytes, page};
use crate::web::session::SessionUser;

#[derive(Template)]
#[template(path = "admin_plans.html")]
struct PlansPage {
    nav: Nav,
    plans: Vec<PlanView>,
    form: Fields,
    errors: FieldErrors,
}

async fn plans_page(
    app: &AppState,
    user: &SessionUser,
    form: Fields,
    errors: FieldErrors,
    status: StatusCode,
) -> Result<Response, WebError> {
    user.principal.require_admin()?;
    let plans = catalog::list_plans(&app.db, &PageRequest::FIRST_MAX)
        .await?
        .items;
    Ok(page(
        status,
        &PlansPage {
            nav: Nav::of(user, "/admin").at("/admin/plans"),
            plans,
            form,
            errors,
        },
    ))
}

/// `GET /admin/plans`.
pub async fn plans(State(app): State<AppState>, Panel(user): Panel) -> Result<Response, WebError> {
    plans_page(
        &app,
        &user,
        Fields::default(),
        FieldErrors::default(),
        StatusCode::OK,
    )
    .await
}

/// A whole number from a field, or the field's error.
fn number(fields: &Fields, name: &'static str) -> Result<i64, AppError> {
    fields
        .get(name)
        .trim()
        .parse::<i64>()
        .map_err(|_| AppError::invalid(name, "give a whole number"))
}

/// `POST /admin/plans`.
pub async fn create_plan(
    State(app): State<AppState>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let req = (|| {
        Ok::<_, AppError>(CreatePlan {
            name: fields.get("name").trim().to_string(),
            vcpus: number(&fields, "vcpus")?,
            memory_mib: number(&fields, "memory_mib")?,
            disk_gib: number(&fields, "disk_gib")?,
        })
    })();
    let result = match req {
        Ok(req) => catalog::create_plan(&app.db, &user.principal, req).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(p) => Ok(with_note(
            Redirect::to("/admin/plans").into_response(),
            AuditNote {
                target: Some(p.id.clone()),
                tenant_id: None,
                actor: None,
            },
        )),
        Err(e @ (AppError::Internal(_) | AppError::Forbidden(_))) => Err(WebError(e)),
        Err(e) => {
            let status = e.status();
            plans_page(&app, &user, fields, FieldErrors::from_error(&e), status).await
        }
    }
}

/// `POST /admin/plans/{id}/delete`.
pub async fn delete_plan(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Posted { user, .. }: Posted,
) -> Result<Response, WebError> {
    match catalog::delete_plan(&app.db, &user.principal, &id).await {
        Ok(()) => Ok(Redirect::to("/admin/plans").into_response()),
        Err(e @ AppError::Conflict(_)) => {
            let status = e.status();
            let errors = FieldErrors::general(describe(&e).1);
            plans_page(&app, &user, Fields::default(), errors, status).await
        }
        Err(e) => Err(WebError(e)),
    }
}

#[derive(Template)]
#[template(path = "admin_images.html")]
struct ImagesPage {
    nav: Nav,
    images: Vec<ImageView>,
    /// The upload form as typed (after a refusal).
    form: Fields,
    errors: FieldErrors,
    /// Where carve answers, for the upload command shown.
    origin: String,
}

impl ImagesPage {
    fn size(&self, i: &ImageView) -> String {
        human_bytes(i64::try_from(i.virtual_size_bytes).unwrap_or(i64::MAX))
    }

    /// Images whose kernel an upload may boot with.
    fn kernels(&self) -> impl Iterator<Item = &ImageView> {
        self.images
            .iter()
            .filter(|i| i.boot == BootMethod::Kernel && i.source == ImageSource::Built)
    }
}

/// The images page, with `errors` above the list and the upload form as typed.
pub(super) async fn images_page(
    app: &AppState,
    user: &SessionUser,
    headers: &HeaderMap,
    form: Fields,
    errors: FieldErrors,
    status: StatusCode,
) -> Result<Response, WebError> {
    user.principal.require_admin()?;
    let images = catalog::list_images(&app.db, &user.principal, &PageRequest::FIRST_MAX)
        .await?
        .items;
    Ok(page(
        status,
        &ImagesPage {
            nav: Nav::of(user, "/admin").at("/admin/images"),
            images,
            form,
            errors,
            origin: format!(
                "http://{}",
                headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("127.0.0.1:8080")
            ),
        },
    ))
}

/// `GET /admin/images`.
pub async fn images(
    State(app): State<AppState>,
    headers: HeaderMap,
    Panel(user): Panel,
) -> Result<Response, WebError> {
    images_page(
        &app,
        &user,
        &headers,
        Fields::default(),
        FieldErrors::default(),
        StatusCode::OK,
    )
    .await
}

/// The images page again after a change, or with the refusal above the list.
async fn after_image_change(
    app: &AppState,
    user: &SessionUser,
    headers: &HeaderMap,
    result: Result<(), AppError>,
) -> Result<Response, WebError> {
    match result {
        Ok(()) => Ok(Redirect::to("/admin/images").into_response()),
        Err(e @ (AppError::Conflict(_) | AppError::Invalid(_))) => {
            let status = e.status();
            let errors = FieldErrors::general(describe(&e).1);
            images_page(app, user, headers, Fields::default(), errors, status).await
        }
        Err(e) => Err(WebError(e)),
    }
}

/// `POST /admin/images/{id}/visibility`: `visible` = `1` offers the image to customers, `0`
/// hides it.
pub async fn set_image_visibility(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let changes = custom_images::ImageChanges {
        visible: Some(fields.get("visible") == "1"),
        ..Default::default()
    };
    let result = custom_images::update(&app.db, &user.principal, &id, changes)
        .await
        .map(|_| ());
    after_image_change(&app, &user, &headers, result).await
}

/// `POST /admin/images/{id}/delete`: removes an uploaded image nothing uses.
pub async fn delete_image(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Posted { user, .. }: Posted,
) -> Result<Response, WebError> {
    let result = custom_images::remove(&app.prov, &user.principal, &id).await;
    after_image_change(&app, &user, &headers, result).await
}
