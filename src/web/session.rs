//! Browser sessions in the database: a random cookie (HttpOnly, SameSite=Lax, Secure behind
//! TLS, with an expiry) whose SHA-256 digest keys the `sessions` row, so any carve process on
//! the same database serves the same logged-in user.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use chrono::{DateTime, Utc};

use crate::app::AppState;
use crate::auth::Principal;
use crate::domain::ids::UserId;
use crate::error::AppError;
use crate::tenancy::principal::{self, Resolved};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "carve_session";
/// The login form's double-submit CSRF cookie.
pub const LOGIN_CSRF_COOKIE: &str = "carve_login_csrf";

pub use crate::tenancy::sessions::random_secret;

/// The value of a cookie in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether cookies must be marked Secure: configured so, or the request came over TLS to a
/// proxy in front of carve.
pub fn secure(app: &AppState, headers: &HeaderMap) -> bool {
    app.config.auth.secure_cookies
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value; `max_age` 0 deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age_secs: i64, secure: bool) -> HeaderValue {
    let mut v = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}");
    if secure {
        v.push_str("; Secure");
    }
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Starts a session for a user; returns the cookie value and its expiry.
pub async fn start(app: &AppState, user: &UserId) -> Result<(String, DateTime<Utc>), AppError> {
    crate::tenancy::sessions::start(&app.db, user, app.config.auth.session_hours).await
}

/// Ends the session whose cookie this is.
pub async fn end(app: &AppState, cookie_value: &str) -> Result<(), AppError> {
    crate::tenancy::sessions::end(&app.db, cookie_value).await
}

/// The logged-in user of a browser request, with the session's CSRF token.
#[derive(Debug, Clone)]
pub struct SessionUser {
    pub principal: Principal,
    pub csrf: String,
    /// The cookie value (to end the session).
    pub cookie: String,
    /// The newest event the feed had sent when the request arrived: a page rendered now
    /// shows every change up to it, and its event stream resumes from it.
    pub seen_event: i64,
}

/// The session user, if the request carries a live session of a user whose tenant is not
/// suspended.
pub struct MaybeSession(pub Option<SessionUser>);

impl FromRequestParts<AppState> for MaybeSession {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let seen_event = app.feed.position();
        let Some(value) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Ok(MaybeSession(None));
        };
        let Resolved::User(principal, csrf) = principal::from_session(&app.db, value).await? else {
            return Ok(MaybeSession(None));
        };
        Ok(MaybeSession(Some(SessionUser {
            principal,
            csrf,
            cookie: value.to_string(),
            seen_event,
        })))
    }
}
