//! Tenants: create, rename, edit the quota, suspend and resume, delete; with their usage.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use crate::app::AppState;
use crate::db::page::PageRequest;
use crate::db::quotas::Quota;
use crate::error::AppError;
use crate::request::{AuditNote, with_note};
use crate::tenancy::accounts::{self, CreateTenant, TenantView, UpdateTenant};
use crate::web::dashboard::{Meter, meters};
use crate::web::errors::{WebError, describe};
use crate::web::form::{FieldErrors, Fields, Panel, Posted};
use crate::web::layout::{Nav, page};
use crate::web::session::SessionUser;

#[derive(Template)]
#[template(path = "admin_tenants.html")]
struct ListPage {
    nav: Nav,
    tenants: Vec<TenantView>,
    form: Fields,
    errors: FieldErrors,
}

async fn list_page(
    app: &AppState,
    user: &SessionUser,
    form: Fields,
    errors: FieldErrors,
    status: StatusCode,
) -> Result<Response, WebError> {
    let tenants = accounts::list_tenants(&app.db, &user.principal, &PageRequest::FIRST_MAX)
        .await?
        .items;
    Ok(page(
        status,
        &ListPage {
            nav: Nav::of(user, "/admin").at("/admin/tenants"),
            tenants,
            form,
            errors,
        },
    ))
}

/// `GET /admin/tenants`.
pub async fn list(State(app): State<AppState>, Panel(user): Panel) -> Result<Response, WebError> {
    list_page(
        &app,
        &user,
        Fields::default(),
        FieldErrors::default(),
        StatusCode::OK,
    )
    .await
}

/// `POST /admin/tenants`.
pub async fn create(
    State(app): State<AppState>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let req = CreateTenant {
        name: fields.get("name").trim().to_string(),
    };
    match accounts::create_tenant(&app.db, &user.principal, req).await {
        Ok(t) => Ok(with_note(
            Redirect::to(&format!("/admin/tenants/{}", t.id)).into_response(),
            AuditNote {
                target: Some(t.id.clone()),
                tenant_id: Some(t.id.clone()),
                actor: None,
            },
        )),
        Err(e @ (AppError::Internal(_) | AppError::Forbidden(_))) => Err(WebError(e)),
        Err(e) => {
            let status = e.status();
            list_page(&app, &user, fields, FieldErrors::from_error(&e), status).await
        }
    }
}

#[derive(Template)]
#[template(path = "admin_tenant.html")]
struct TenantPage {
    nav: Nav,
    tenant: TenantView,
    quota: Quota,
    meters: Vec<Meter>,
    errors: FieldErrors,
    notice: Option<&'static str>,
}

async fn tenant_page(
    app: &AppState,
    user: &SessionUser,
    id: &str,
    errors: FieldErrors,
    notice: Option<&'static str>,
    status: StatusCode,
) -> Result<Response, WebError> {
    let actor = &user.principal;
    let tenant = accounts::get_tenant(&app.db, actor, id).await?;
    let usage = accounts::tenant_usage(app, actor, id).await?;
    Ok(page(
        status,
        &TenantPage {
            nav: Nav::of(user, "/admin").at(format!("/admin/tenants/{id}")),
            meters: meters(&usage.usage, &usage.quota),
            quota: usage.quota,
            tenant,
            errors,
            notice,
        },
    ))
}

/// `GET /admin/tenants/{id}`.
pub async fn show(
    State(app): State<AppState>,
    Panel(user): Panel,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    tenant_page(
        &app,
        &user,
        &id,
        FieldErrors::default(),
        None,
        StatusCode::OK,
    )
    .await
}

/// Shows the tenant again after a change, or with the change's error.
async fn after(
    app: &AppState,
    user: &SessionUser,
    id: &str,
    result: Result<(), AppError>,
    done: &'static str,
) -> Result<Response, WebError> {
    match result {
        Ok(()) => {
            let r = tenant_page(
                app,
                user,
                id,
                FieldErrors::default(),
                Some(done),
                StatusCode::OK,
            )
            .await?;
            Ok(with_note(
                r,
                AuditNote {
                    target: Some(id.to_string()),
                    tenant_id: Some(id.to_string()),
                    actor: None,
                },
            ))
        }
        Err(e @ (AppError::NotFound { .. } | AppError::Internal(_) | AppError::Forbidden(_))) => {
            Err(WebError(e))
        }
        Err(e) => {
            let status = e.status();
            tenant_page(app, user, id, FieldErrors::from_error(&e), None, status).await
        }
    }
}

/// `POST /admin/tenants/{id}`: renames the tenant.
pub async fn rename(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let req = UpdateTenant {
        name: Some(fields.get("name").trim().to_string()),
        suspended: None,
    };
    let r = accounts::update_tenant(&app, &user.principal, &id, req)
        .await
        .map(|_| ());
    after(&app, &user, &id, r, "The tenant was renamed.").await
}

/// A whole number from a quota field, or the field's error.
fn number(fields: &Fields, name: &'static str) -> Result<i64, AppError> {
    fields
        .get(name)
        .trim()
        .parse::<i64>()
        .map_err(|_| AppError::invalid(name, "give a whole number (0 or more)"))
}

/// `POST /admin/tenants/{id}/quota`: sets every limit.
pub async fn set_quota(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let quota = (|| {
        Ok::<_, AppError>(Quota {
            max_vms: number(&fields, "max_vms")?,
            max_vcpus: number(&fields, "max_vcpus")?,
            max_memory_mib: number(&fields, "max_memory_mib")?,
            max_disk_gib: number(&fields, "max_disk_gib")?,
            max_sftp_bytes: number(&fields, "max_sftp_bytes")?,
            max_sftp_files: number(&fields, "max_sftp_files")?,
        })
    })();
    let r = match quota {
        Ok(q) => accounts::put_quota(&app, &user.principal, &id, q)
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    after(&app, &user, &id, r, "The quota was saved.").await
}

/// `POST /admin/tenants/{id}/suspension`: suspends (stops VMs, refuses logins) or resumes.
pub async fn set_suspended(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let suspend = fields.get("suspended") == "true";
    let req = UpdateTenant {
        name: None,
        suspended: Some(suspend),
    };
    let r = accounts::update_tenant(&app, &user.principal, &id, req)
        .await
        .map(|_| ());
    let done = if suspend {
        "The tenant is suspended: its VMs are being stopped and its users signed out."
    } else {
        "The tenant is active again."
    };
    after(&app, &user, &id, r, done).await
}

/// `POST /admin/tenants/{id}/delete`: deletes an empty tenant after its name is typed.
pub async fn delete(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let tenant = accounts::get_tenant(&app.db, &user.principal, &id).await?;
    if fields.get("confirm").trim() != tenant.name {
        let e = FieldErrors::field(
            "confirm",
            format!(
                "nothing was deleted: type the tenant's name, {}, to confirm",
                tenant.name
            ),
        );
        return tenant_page(&app, &user, &id, e, None, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    match accounts::delete_tenant(&app.db, &user.principal, &id).await {
        Ok(()) => Ok(with_note(
            Redirect::to("/admin/tenants").into_response(),
            AuditNote {
                target: Some(id.clone()),
                tenant_id: Some(id.clone()),
                actor: None,
            },
        )),
        Err(e @ (AppError::Conflict(_) | AppError::Invalid(_))) => {
            let status = e.status();
            let errors = FieldErrors::field("confirm", describe(&e).1);
            tenant_page(&app, &user, &id, errors, None, status).await
        }
        Err(e) => Err(WebError(e)),
    }
}
