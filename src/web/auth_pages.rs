//! Signing in and out: the login form (a double-submit CSRF token before there is a
//! session), a new session id at every login, and logout that ends the session everywhere.

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::errors::WebError;
use super::layout::page;
use super::session::{
    self, LOGIN_CSRF_COOKIE, MaybeSession, SESSION_COOKIE, cookie, random_secret, same_secret,
    secure, set_cookie,
};
use crate::app::AppState;
use crate::error::AppError;
use crate::request::ClientAddr;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    csrf: &'a str,
    email: &'a str,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "logout.html")]
struct LogoutPage<'a> {
    email: &'a str,
    csrf: &'a str,
}

/// The login form, with a double-submit CSRF token (cookie and hidden field).
pub async fn login_page(
    State(app): State<AppState>,
    headers: HeaderMap,
    MaybeSession(user): MaybeSession,
) -> Response {
    if user.is_some() {
        return Redirect::to("/").into_response();
    }
    login_form(&app, &headers, StatusCode::OK, "", None)
}

fn login_form(
    app: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    email: &str,
    error: Option<String>,
) -> Response {
    let csrf = cookie(headers, LOGIN_CSRF_COOKIE)
        .filter(|c| c.len() == 43)
        .map(str::to_string)
        .unwrap_or_else(random_secret);
    let mut response = page(
        status,
        &LoginPage {
            csrf: &csrf,
            email,
            error,
        },
    );
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_CSRF_COOKIE, &csrf, 3600, secure(app, headers)),
    );
    response
}

/// The login form's fields.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    email: String,
    password: String,
    csrf: String,
}

/// Checks the credentials, starts a session and goes to the landing page.
pub async fn login(
    State(app): State<AppState>,
    headers: HeaderMap,
    ClientAddr(client): ClientAddr,
    Form(form): Form<LoginForm>,
) -> Response {
    let client_ip = client;
    let email = form.email.trim().to_string();
    let csrf_ok = cookie(&headers, LOGIN_CSRF_COOKIE).is_some_and(|c| same_secret(c, &form.csrf));
    if !csrf_ok {
        return login_form(
            &app,
            &headers,
            StatusCode::FORBIDDEN,
            &email,
            Some("The form expired; please try again.".into()),
        );
    }
    let result = crate::tenancy::login::authenticate(&app, &email, form.password, client_ip).await;
    let status = match &result {
        Ok(_) => StatusCode::SEE_OTHER,
        Err(e) => e.status(),
    };
    audit(
        &app,
        result.as_ref().ok().map(|u| {
            (
                u.id.to_string(),
                u.tenant_id.as_ref().map(ToString::to_string),
            )
        }),
        &email,
        "login",
        status,
        client_ip,
    )
    .await;
    let user = match result {
        Ok(user) => user,
        Err(e) => {
            let message = match &e {
                AppError::Internal(_) => {
                    "carve hit an internal error; please try again.".to_string()
                }
                other => other.to_string(),
            };
            let mut response = login_form(&app, &headers, e.status(), &email, Some(message));
            if let AppError::TooManyRequests {
                retry_after_secs, ..
            } = e
            {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, retry_after_secs.into());
            }
            return response;
        }
    };
    match session::start(&app, &user.id).await {
        Ok((value, _expires)) => {
            let max_age = app.config.auth.session_hours as i64 * 3600;
            let secure = secure(&app, &headers);
            let mut response = Redirect::to("/").into_response();
            response.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(SESSION_COOKIE, &value, max_age, secure),
            );
            response.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(LOGIN_CSRF_COOKIE, "", 0, secure),
            );
            response
        }
        Err(e) => WebError(e).into_response(),
    }
}

/// Asks the logged-in user to confirm logging out (a POST with the session's CSRF token).
pub async fn logout_page(MaybeSession(user): MaybeSession) -> Response {
    match user {
        Some(u) => page(
            StatusCode::OK,
            &LogoutPage {
                email: &u.principal.email,
                csrf: &u.csrf,
            },
        ),
        None => Redirect::to("/login").into_response(),
    }
}

/// The logout form's field.
#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    csrf: String,
}

/// Ends the session (in the database, so on every carve process) and clears the cookie.
pub async fn logout(
    State(app): State<AppState>,
    headers: HeaderMap,
    ClientAddr(client): ClientAddr,
    MaybeSession(user): MaybeSession,
    Form(form): Form<LogoutForm>,
) -> Result<Response, WebError> {
    let Some(user) = user else {
        return Ok(Redirect::to("/login").into_response());
    };
    if !same_secret(&user.csrf, &form.csrf) {
        return Err(WebError(AppError::Forbidden(
            "the logout form expired; reload the page and try again".into(),
        )));
    }
    session::end(&app, &user.cookie).await?;
    let p = &user.principal;
    audit(
        &app,
        Some((
            p.user_id.to_string(),
            p.tenant_id.as_ref().map(ToString::to_string),
        )),
        &p.email,
        "logout",
        StatusCode::SEE_OTHER,
        client,
    )
    .await;
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", 0, secure(&app, &headers)),
    );
    Ok(response)
}

/// Records a panel login or logout in the audit log.
async fn audit(
    app: &AppState,
    user: Option<(String, Option<String>)>,
    email: &str,
    action: &str,
    status: StatusCode,
    client: Option<std::net::IpAddr>,
) {
    let (actor_id, tenant_id) = user.map(|(u, t)| (Some(u), t)).unwrap_or((None, None));
    let entry = crate::tenancy::audit::NewEntry {
        actor_id,
        actor: email.chars().take(254).collect(),
        tenant_id,
        action: action.into(),
        target: None,
        outcome: crate::request::outcome(status),
        status: Some(status.as_u16()),
        client: client.map(|c| c.to_string()),
    };
    crate::tenancy::audit::record(&app.db, &entry).await;
}
