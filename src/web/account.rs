//! The user's own pages: saved SSH keys, API tokens (shown once, with a copy button),
//! password and sessions, and the tenant's activity log.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::errors::{WebError, describe};
use super::form::{FieldErrors, Fields, Panel, Posted};
use super::layout::{Nav, page, when};
use super::session::{self, SESSION_COOKIE, SessionUser, secure, set_cookie};
use crate::app::AppState;
use crate::db::page::PageRequest;
use crate::error::AppError;
use crate::request::ClientAddr;
use crate::tenancy::accounts::{self, ChangePassword};
use crate::tenancy::audit::{self, AuditView};
use crate::tenancy::ssh_keys::{self, SshKeyView};
use crate::tenancy::tokens::{self, CreateToken, TokenView};

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    nav: Nav,
    keys: Vec<SshKeyView>,
    form: Fields,
    errors: FieldErrors,
}

async fn keys_page(
    app: &AppState,
    user: &SessionUser,
    form: Fields,
    errors: FieldErrors,
    status: StatusCode,
) -> Result<Response, WebError> {
    let keys = ssh_keys::list(&app.db, &user.principal).await?;
    Ok(page(
        status,
        &KeysPage {
            nav: Nav::of(user, "/keys").at("/keys"),
            keys,
            form,
            errors,
        },
    ))
}

/// `GET /keys`.
pub async fn keys(State(app): State<AppState>, Panel(user): Panel) -> Result<Response, WebError> {
    keys_page(
        &app,
        &user,
        Fields::default(),
        FieldErrors::default(),
        StatusCode::OK,
    )
    .await
}

/// `POST /keys`: saves a key.
pub async fn add_key(
    State(app): State<AppState>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    match ssh_keys::add(
        &app.db,
        &user.principal,
        fields.opt("name"),
        fields.get("public_key"),
    )
    .await
    {
        Ok(_) => Ok(Redirect::to("/keys").into_response()),
        Err(e @ AppError::Internal(_)) => Err(WebError(e)),
        Err(e) => {
            let status = e.status();
            keys_page(&app, &user, fields, FieldErrors::from_error(&e), status).await
        }
    }
}

/// `POST /keys/{id}/delete`.
pub async fn delete_key(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Posted { user, .. }: Posted,
) -> Result<Response, WebError> {
    ssh_keys::delete(&app.db, &user.principal, &id).await?;
    Ok(Redirect::to("/keys").into_response())
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    nav: Nav,
    tokens: Vec<TokenView>,
    created: Option<String>,
    form: Fields,
    errors: FieldErrors,
}

impl TokensPage {
    fn created(&self, t: &TokenView) -> String {
        when(&t.created_at)
    }
    fn at(&self, t: &Option<chrono::DateTime<chrono::Utc>>, none: &'static str) -> String {
        t.as_ref().map_or(none.to_string(), when)
    }
}

async fn tokens_page(
    app: &AppState,
    user: &SessionUser,
    created: Option<String>,
    form: Fields,
    errors: FieldErrors,
    status: StatusCode,
) -> Result<Response, WebError> {
    let tokens = tokens::list_own(app, &user.principal, &PageRequest::FIRST_MAX)
        .await?
        .items;
    Ok(page(
        status,
        &TokensPage {
            nav: Nav::of(user, "/tokens").at("/tokens"),
            tokens,
            created,
            form,
            errors,
        },
    ))
}

/// `GET /tokens`.
pub async fn tokens(State(app): State<AppState>, Panel(user): Panel) -> Result<Response, WebError> {
    tokens_page(
        &app,
        &user,
        None,
        Fields::default(),
        FieldErrors::default(),
        StatusCode::OK,
    )
    .await
}

/// `POST /tokens`: creates a token and shows its secret once.
pub async fn create_token(
    State(app): State<AppState>,
    ClientAddr(client): ClientAddr,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let expires_at = match fields.opt("expires_days") {
        None => None,
        Some(d) => match d.parse::<i64>() {
            Ok(days) if (1..=tokens::MAX_TOKEN_DAYS).contains(&days) => {
                Some(chrono::Utc::now() + chrono::Duration::days(days))
            }
            _ => {
                let e = FieldErrors::field(
                    "expires_days",
                    format!(
                        "give a whole number of days from 1 to {}, or leave it empty",
                        tokens::MAX_TOKEN_DAYS
                    ),
                );
                return tokens_page(
                    &app,
                    &user,
                    None,
                    fields,
                    e,
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await;
            }
        },
    };
    let req = CreateToken {
        name: Some(fields.opt("name").unwrap_or("panel").to_string()),
        expires_at,
        email: None,
        password: None,
    };
    match tokens::create(&app, Some(&user.principal), req, client).await {
        Ok((created, _)) => {
            let mut r = tokens_page(
                &app,
                &user,
                Some(created.token),
                Fields::default(),
                FieldErrors::default(),
                StatusCode::CREATED,
            )
            .await?;
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                "no-store".parse().expect("static header"),
            );
            Ok(r)
        }
        Err(e @ AppError::Internal(_)) => Err(WebError(e)),
        Err(e) => {
            let status = e.status();
            tokens_page(
                &app,
                &user,
                None,
                fields,
                FieldErrors::from_error(&e),
                status,
            )
            .await
        }
    }
}

/// `POST /tokens/{id}/revoke`: the token stops working at once.
pub async fn revoke_token(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Posted { user, .. }: Posted,
) -> Result<Response, WebError> {
    tokens::revoke_own(&app, &user.principal, &id).await?;
    Ok(Redirect::to("/tokens").into_response())
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    nav: Nav,
    email: String,
    role: String,
    tenant: Option<String>,
    errors: FieldErrors,
    notice: Option<&'static str>,
}

async fn account_page(
    app: &AppState,
    user: &SessionUser,
    errors: FieldErrors,
    notice: Option<&'static str>,
    status: StatusCode,
) -> Result<Response, WebError> {
    let me = accounts::me(&app.db, &user.principal).await?;
    Ok(page(
        status,
        &AccountPage {
            nav: Nav::of(user, "/account").at("/account"),
            email: me.user.email,
            role: me.user.role.as_str().to_string(),
            tenant: me.tenant.map(|t| t.name),
            errors,
            notice,
        },
    ))
}

/// `GET /account` (`?changed=password` says the change worked).
pub async fn show(
    State(app): State<AppState>,
    Panel(user): Panel,
    Query(q): Query<CursorQuery>,
) -> Result<Response, WebError> {
    let notice = match q.changed.as_deref() {
        Some("password") => Some("Your password was changed; your other sessions were signed out."),
        _ => None,
    };
    account_page(&app, &user, FieldErrors::default(), notice, StatusCode::OK).await
}

/// A fresh session for `user` after its sessions were ended, as a cookie on `response`.
async fn new_session(
    app: &AppState,
    headers: &HeaderMap,
    user: &SessionUser,
    mut response: Response,
) -> Result<Response, WebError> {
    let (value, _) = session::start(app, &user.principal.user_id).await?;
    let max_age = app.config.auth.session_hours as i64 * 3600;
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, &value, max_age, secure(app, headers)),
    );
    Ok(response)
}

/// `POST /account/password`: changes the password; every other session ends.
pub async fn change_password(
    State(app): State<AppState>,
    headers: HeaderMap,
    ClientAddr(client): ClientAddr,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    if fields.get("new_password") != fields.get("repeat_password") {
        let e = FieldErrors::field(
            "repeat_password",
            "the two new passwords differ; type the same one twice",
        );
        return account_page(&app, &user, e, None, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let req = ChangePassword {
        current_password: fields.get("current_password").to_string(),
        new_password: fields.get("new_password").to_string(),
    };
    match accounts::change_password(&app, &user.principal, req, client).await {
        Ok(()) => {
            let r = Redirect::to("/account?changed=password").into_response();
            new_session(&app, &headers, &user, r).await
        }
        Err(e @ AppError::Internal(_)) => Err(WebError(e)),
        Err(e) => {
            let status = e.status();
            let errors = match &e {
                AppError::Invalid(_) => FieldErrors::from_error(&e),
                other => FieldErrors::field("current_password", describe(other).1),
            };
            account_page(&app, &user, errors, None, status).await
        }
    }
}

/// `POST /account/sign-out-everywhere`: ends every session of the user, this one too.
pub async fn sign_out_everywhere(
    State(app): State<AppState>,
    headers: HeaderMap,
    Posted { user, .. }: Posted,
) -> Result<Response, WebError> {
    crate::tenancy::sessions::end_all(&app.db, &user.principal.user_id).await?;
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", 0, secure(&app, &headers)),
    );
    Ok(r)
}

/// Which page of a log to show.
#[derive(Debug, Deserialize)]
pub struct CursorQuery {
    cursor: Option<String>,
    changed: Option<String>,
}

#[derive(Template)]
#[template(path = "activity.html")]
struct ActivityPage {
    nav: Nav,
    entries: Vec<AuditView>,
    next: Option<String>,
}

impl ActivityPage {
    fn at(&self, e: &AuditView) -> String {
        when(&e.at)
    }
}

/// `GET /activity`: the tenant's audit log (admins: their own actions), newest first.
pub async fn activity(
    State(app): State<AppState>,
    Panel(user): Panel,
    Query(q): Query<CursorQuery>,
) -> Result<Response, WebError> {
    let page_req = PageRequest::parse(Some(50), q.cursor.as_deref())
        .map_err(|(f, why)| AppError::invalid(f, why.to_string()))?;
    let actor = &user.principal;
    let filter = crate::db::audit::AuditFilter {
        actor_id: actor.is_admin().then(|| actor.user_id.to_string()),
        ..Default::default()
    };
    let entries = audit::search(&app.db, actor, &filter, &page_req).await?;
    Ok(page(
        StatusCode::OK,
        &ActivityPage {
            nav: Nav::of(&user, "/activity"),
            entries: entries.items,
            next: entries.next,
        },
    ))
}
