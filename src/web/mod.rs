//! The web panel: server-rendered askama pages over the same service functions as the API,
//! forms that work without JavaScript (each with the session's CSRF token), and live
//! regions refreshed from the event feed.

mod account;
mod admin;
mod assets;
mod auth_pages;
mod dashboard;
mod errors;
mod events;
mod form;
mod layout;
mod pools;
mod scale_groups;
pub mod session;
mod sftp;
mod vm_live;
mod vm_page;
mod vm_reinstall;
mod vms;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

use crate::app::AppState;
use crate::request::{AuditNote, ClientAddr, outcome};
use crate::tenancy::principal::{self, Resolved};

/// The panel's routes.
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(dashboard::show))
        .route(
            "/login",
            get(auth_pages::login_page).post(auth_pages::login),
        )
        .route(
            "/logout",
            get(auth_pages::logout_page).post(auth_pages::logout),
        )
        .route("/events", get(events::stream))
        .route("/static/{file}", get(assets::serve))
        .route("/static/xterm/{file}", get(assets::serve_xterm))
        .route("/vms/new", get(vms::new_form))
        .route("/vms", post(vms::create))
        .route("/vms/{id}", get(vms::show))
        .route("/vms/{id}/actions", post(vms::act))
        .route("/vms/{id}/resize", post(vms::resize))
        .route("/vms/{id}/password", post(vms::reset_password))
        .route("/vms/{id}/delete", post(vms::delete))
        .route("/vms/{id}/reinstall", post(vm_reinstall::reinstall))
        .route("/vms/{id}/live", get(vms::live))
        .route("/vms/{id}/console/ticket", post(vms::console_ticket))
        .route("/pools", get(pools::list).post(pools::create))
        .route("/pools/{id}", get(pools::show))
        .route("/pools/{id}/members", post(pools::attach))
        .route("/pools/{id}/members/{vm_id}/detach", post(pools::detach))
        .route("/pools/{id}/settings", post(pools::settings))
        .route("/pools/{id}/delete", post(pools::delete))
        .route("/pools/{id}/scale-group", post(scale_groups::set))
        .route(
            "/pools/{id}/scale-group/refresh",
            post(scale_groups::refresh),
        )
        .route("/pools/{id}/scale-group/delete", post(scale_groups::delete))
        .route("/sftp", get(sftp::list).post(sftp::create))
        .route("/sftp/{id}", get(sftp::show))
        .route("/sftp/{id}/password", post(sftp::set_password))
        .route("/sftp/{id}/keys", post(sftp::set_keys))
        .route("/sftp/{id}/enabled", post(sftp::set_enabled))
        .route("/sftp/{id}/delete", post(sftp::delete))
        .route("/keys", get(account::keys).post(account::add_key))
        .route("/keys/{id}/delete", post(account::delete_key))
        .route("/tokens", get(account::tokens).post(account::create_token))
        .route("/tokens/{id}/revoke", post(account::revoke_token))
        .route("/account", get(account::show))
        .route("/account/password", post(account::change_password))
        .route(
            "/account/sign-out-everywhere",
            post(account::sign_out_everywhere),
        )
        .route("/activity", get(account::activity))
        .merge(admin::router())
        .fallback(errors::not_found)
        .layer(middleware::from_fn_with_state(state, audit_posts))
        .layer(middleware::from_fn(layout::security_headers))
}

/// Middleware: records every form a signed-in user posts to a panel route (login and logout
/// record themselves) in the audit log, with the user as the actor. An admin's action is
/// filed under the tenant it concerned (from the handler's note), never the admin's own.
async fn audit_posts(
    State(app): State<AppState>,
    ClientAddr(client): ClientAddr,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_string();
    if req.method() != axum::http::Method::POST || path == "/login" || path == "/logout" {
        return next.run(req).await;
    }
    let Some(route) = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_string())
    else {
        return next.run(req).await;
    };
    let actor = match session::cookie(req.headers(), session::SESSION_COOKIE) {
        Some(c) => match principal::from_session(&app.db, c).await {
            Ok(Resolved::User(p, _)) => p,
            _ => return next.run(req).await,
        },
        None => return next.run(req).await,
    };
    let response = next.run(req).await;
    let note = response
        .extensions()
        .get::<AuditNote>()
        .cloned()
        .unwrap_or_default();
    let status = response.status();
    let own_tenant = (!actor.is_admin())
        .then(|| actor.tenant_id.as_ref().map(ToString::to_string))
        .flatten();
    let entry = crate::tenancy::audit::NewEntry {
        actor_id: Some(actor.user_id.to_string()),
        actor: actor.email.clone(),
        tenant_id: note.tenant_id.or(own_tenant),
        action: format!("panel POST {route}"),
        target: note
            .target
            .or_else(|| crate::request::id_in_path(&route, &path)),
        outcome: outcome(status),
        status: Some(status.as_u16()),
        client: client.map(|c| c.to_string()),
    };
    crate::tenancy::audit::record(&app.db, &entry).await;
    response
}
