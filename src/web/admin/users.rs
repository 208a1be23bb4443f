//! Users: create (admin or customer of a tenant), change role or tenant, reset the
//! password, delete.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::Role;
use crate::db::page::PageRequest;
use crate::error::AppError;
use crate::request::{AuditNote, with_note};
use crate::tenancy::accounts::{self, CreateUser, TenantView, UpdateUser, UserView};
use crate::web::errors::WebError;
use crate::web::form::{FieldErrors, Fields, Panel, Posted};
use crate::web::layout::{Nav, page};
use crate::web::session::SessionUser;

/// Narrows the user list to one tenant.
#[derive(Debug, Default, Deserialize)]
pub struct TenantQuery {
    tenant: Option<String>,
}

#[derive(Template)]
#[template(path = "admin_users.html")]
struct ListPage {
    nav: Nav,
    users: Vec<UserView>,
    tenants: Vec<TenantView>,
    form: Fields,
    errors: FieldErrors,
}

impl ListPage {
    fn tenant_name<'a>(&'a self, id: &'a Option<String>) -> &'a str {
        match id {
            None => "",
            Some(id) => self
                .tenants
                .iter()
                .find(|t| &t.id == id)
                .map_or(id.as_str(), |t| t.name.as_str()),
        }
    }
}

async fn list_page(
    app: &AppState,
    user: &SessionUser,
    tenant: Option<&str>,
    form: Fields,
    errors: FieldErrors,
    status: StatusCode,
) -> Result<Response, WebError> {
    let actor = &user.principal;
    let users = accounts::list_users(&app.db, actor, tenant, &PageRequest::FIRST_MAX)
        .await?
        .items;
    let tenants = accounts::list_tenants(&app.db, actor, &PageRequest::FIRST_MAX)
        .await?
        .items;
    Ok(page(
        status,
        &ListPage {
            nav: Nav::of(user, "/admin").at("/admin/users"),
            users,
            tenants,
            form,
            errors,
        },
    ))
}

/// `GET /admin/users` (`?tenant=` for one tenant's).
pub async fn list(
    State(app): State<AppState>,
    Panel(user): Panel,
    Query(q): Query<TenantQuery>,
) -> Result<Response, WebError> {
    let tenant = q.tenant.as_deref().filter(|t| !t.is_empty());
    list_page(
        &app,
        &user,
        tenant,
        Fields::default(),
        FieldErrors::default(),
        StatusCode::OK,
    )
    .await
}

/// The role field.
fn role(fields: &Fields) -> Result<Role, AppError> {
    Role::parse(fields.get("role"))
        .ok_or_else(|| AppError::invalid("role", "choose admin or customer"))
}

/// `POST /admin/users`.
pub async fn create(
    State(app): State<AppState>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let result = match role(&fields) {
        Ok(role) => {
            let req = CreateUser {
                email: fields.get("email").trim().to_string(),
                password: fields.get("password").to_string(),
                role,
                tenant_id: fields.opt("tenant_id").map(str::to_string),
            };
            accounts::create_user(&app, &user.principal, req).await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(u) => Ok(with_note(
            Redirect::to(&format!("/admin/users/{}", u.id)).into_response(),
            AuditNote {
                target: Some(u.id.clone()),
                tenant_id: u.tenant_id.clone(),
                actor: None,
            },
        )),
        Err(e @ (AppError::Internal(_) | AppError::Forbidden(_))) => Err(WebError(e)),
        Err(e) => {
            let status = e.status();
            let mut kept = fields.clone();
            kept.remove("password");
            list_page(&app, &user, None, kept, FieldErrors::from_error(&e), status).await
        }
    }
}

#[derive(Template)]
#[template(path = "admin_user.html")]
struct UserPage {
    nav: Nav,
    shown: UserView,
    tenants: Vec<TenantView>,
    errors: FieldErrors,
    notice: Option<&'static str>,
}

impl UserPage {
    fn in_tenant(&self, id: &str) -> bool {
        self.shown.tenant_id.as_deref() == Some(id)
    }
}

async fn user_page(
    app: &AppState,
    user: &SessionUser,
    id: &str,
    errors: FieldErrors,
    notice: Option<&'static str>,
    status: StatusCode,
) -> Result<Response, WebError> {
    let actor = &user.principal;
    let shown = accounts::get_user(&app.db, actor, id).await?;
    let tenants = accounts::list_tenants(&app.db, actor, &PageRequest::FIRST_MAX)
        .await?
        .items;
    Ok(page(
        status,
        &UserPage {
            nav: Nav::of(user, "/admin").at(format!("/admin/users/{id}")),
            shown,
            tenants,
            errors,
            notice,
        },
    ))
}

/// `GET /admin/users/{id}`.
pub async fn show(
    State(app): State<AppState>,
    Panel(user): Panel,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    user_page(
        &app,
        &user,
        &id,
        FieldErrors::default(),
        None,
        StatusCode::OK,
    )
    .await
}

/// `POST /admin/users/{id}`: changes role and tenant, or resets the password.
pub async fn update(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let (req, done) = if fields.get("what") == "password" {
        (
            Ok(UpdateUser {
                role: None,
                tenant_id: None,
                password: Some(fields.get("password").to_string()),
            }),
            "The password was reset; the user's sessions were signed out.",
        )
    } else {
        (
            role(&fields).map(|role| UpdateUser {
                role: Some(role),
                tenant_id: fields.opt("tenant_id").map(str::to_string),
                password: None,
            }),
            "The user was saved.",
        )
    };
    let result = match req {
        Ok(req) => accounts::update_user(&app, &user.principal, &id, req).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(u) => {
            let r = user_page(
                &app,
                &user,
                &id,
                FieldErrors::default(),
                Some(done),
                StatusCode::OK,
            )
            .await?;
            Ok(with_note(
                r,
                AuditNote {
                    target: Some(u.id.clone()),
                    tenant_id: u.tenant_id.clone(),
                    actor: None,
                },
            ))
        }
        Err(e @ (AppError::NotFound { .. } | AppError::Internal(_) | AppError::Forbidden(_))) => {
            Err(WebError(e))
        }
        Err(e) => {
            let status = e.status();
            user_page(&app, &user, &id, FieldErrors::from_error(&e), None, status).await
        }
    }
}

/// `POST /admin/users/{id}/delete`.
pub async fn delete(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let shown = accounts::get_user(&app.db, &user.principal, &id).await?;
    if fields.get("confirm").trim() != shown.email {
        let e = FieldErrors::field(
            "confirm",
            format!(
                "nothing was deleted: type the user's email, {}, to confirm",
                shown.email
            ),
        );
        return user_page(&app, &user, &id, e, None, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    match accounts::delete_user(&app.db, &user.principal, &id).await {
        Ok(()) => Ok(with_note(
            Redirect::to("/admin/users").into_response(),
            AuditNote {
                target: Some(id.clone()),
                tenant_id: shown.tenant_id.clone(),
                actor: None,
            },
        )),
        Err(e @ (AppError::Conflict(_) | AppError::Invalid(_))) => {
            let status = e.status();
            let errors = FieldErrors::from_error(&e);
            user_page(&app, &user, &id, errors, None, status).await
        }
        Err(e) => Err(WebError(e)),
    }
}
