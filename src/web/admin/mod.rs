//! Admin pages: tenants (quota, suspension), users, plans, images, hosts, and every VM,
//! operation and audit entry across tenants, with filters. Every page checks the role
//! through the same services the API uses.

mod catalog;
mod hosts;
mod image_upload;
mod lists;
mod tenants;
mod users;

use axum::Router;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use super::errors::WebError;
use super::form::Panel;
use crate::app::AppState;

/// The admin routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(home))
        .route("/admin/tenants", get(tenants::list).post(tenants::create))
        .route(
            "/admin/tenants/{id}",
            get(tenants::show).post(tenants::rename),
        )
        .route("/admin/tenants/{id}/quota", post(tenants::set_quota))
        .route(
            "/admin/tenants/{id}/suspension",
            post(tenants::set_suspended),
        )
        .route("/admin/tenants/{id}/delete", post(tenants::delete))
        .route("/admin/users", get(users::list).post(users::create))
        .route("/admin/users/{id}", get(users::show).post(users::update))
        .route("/admin/users/{id}/delete", post(users::delete))
        .route(
            "/admin/plans",
            get(catalog::plans).post(catalog::create_plan),
        )
        .route("/admin/plans/{id}/delete", post(catalog::delete_plan))
        .route(
            "/admin/images",
            get(catalog::images).post(image_upload::upload).layer(
                // The upload's own limits hold (images.max_upload_mib), not the form limit.
                axum::extract::DefaultBodyLimit::disable(),
            ),
        )
        .route(
            "/admin/images/{id}/visibility",
            post(catalog::set_image_visibility),
        )
        .route("/admin/images/{id}/delete", post(catalog::delete_image))
        .route("/admin/hosts", get(hosts::hosts).post(hosts::register))
        .route("/admin/hosts/{id}", post(hosts::update_host))
        .route("/admin/hosts/{id}/delete", post(hosts::remove))
        .route("/admin/hosts/{id}/evacuate", post(hosts::evacuate))
        .route("/admin/vms", get(lists::vms))
        .route("/admin/operations", get(lists::operations))
        .route("/admin/audit", get(lists::audit))
}

/// `/admin` starts at the tenants page.
async fn home(Panel(user): Panel) -> Result<Response, WebError> {
    user.principal.require_admin()?;
    Ok(Redirect::to("/admin/tenants").into_response())
}
