//! SFTP account pages: the list with usage, create (password and/or keys), and per account
//! reset password, edit keys, enable or disable, delete, with the exact `sftp` line to use.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::errors::{WebError, describe};
use super::form::{FieldErrors, Fields, Panel, Posted};
use super::layout::{Nav, human_bytes, page};
use super::session::SessionUser;
use crate::app::AppState;
use crate::db::page::PageRequest;
use crate::error::AppError;
use crate::request::{AuditNote, with_note};
use crate::sftp::accounts::{
    self as service, CreateSftpAccount, SftpAccountView, UpdateSftpAccount,
};

/// An account with what the page shows beside it.
pub struct AccountRow {
    pub account: SftpAccountView,
    pub used: String,
    pub command: String,
}

/// The `sftp` command line for `username`: carve's SFTP port on the host the browser used
/// (or the listen address when it is a specific one).
fn command(app: &AppState, headers: &HeaderMap, username: &str) -> String {
    let listen = app.sftp_addr;
    let host = if listen.ip().is_unspecified() {
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| match h.rsplit_once(':') {
                Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
                _ => h,
            })
            .unwrap_or("localhost")
            .to_string()
    } else {
        listen.ip().to_string()
    };
    format!("sftp -P {} {username}@{host}", listen.port())
}

fn row(app: &AppState, headers: &HeaderMap, account: SftpAccountView) -> AccountRow {
    AccountRow {
        used: format!(
            "{} in {} files",
            human_bytes(account.used_bytes),
            account.used_files
        ),
        command: command(app, headers, &account.username),
        account,
    }
}

#[derive(Template)]
#[template(path = "sftp_list.html")]
struct ListPage {
    nav: Nav,
    accounts: Vec<AccountRow>,
    form: Fields,
    errors: FieldErrors,
}

async fn list_page(
    app: &AppState,
    user: &SessionUser,
    headers: &HeaderMap,
    form: Fields,
    errors: FieldErrors,
    status: StatusCode,
) -> Result<Response, WebError> {
    let accounts = service::list(app, &user.principal, &PageRequest::FIRST_MAX)
        .await?
        .items
        .into_iter()
        .map(|a| row(app, headers, a))
        .collect();
    Ok(page(
        status,
        &ListPage {
            nav: Nav::of(user, "/sftp").at("/sftp"),
            accounts,
            form,
            errors,
        },
    ))
}

/// `GET /sftp`.
pub async fn list(
    State(app): State<AppState>,
    Panel(user): Panel,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    list_page(
        &app,
        &user,
        &headers,
        Fields::default(),
        FieldErrors::default(),
        StatusCode::OK,
    )
    .await
}

/// Public keys typed one per line.
fn keys_of(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// `POST /sftp`: creates an account.
pub async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let req = CreateSftpAccount {
        username: fields.get("username").trim().to_string(),
        password: fields.opt("password").map(str::to_string),
        public_keys: keys_of(fields.get("public_keys")),
        enabled: true,
        tenant_id: None,
    };
    match service::create(&app, &user.principal, req).await {
        Ok(a) => Ok(with_note(
            Redirect::to(&format!("/sftp/{}", a.id)).into_response(),
            AuditNote {
                target: Some(a.id.clone()),
                tenant_id: Some(a.tenant_id.clone()),
                actor: None,
            },
        )),
        Err(e @ AppError::Internal(_)) => Err(WebError(e)),
        Err(e) => {
            let status = e.status();
            let mut kept = fields.clone();
            kept.remove("password");
            list_page(
                &app,
                &user,
                &headers,
                kept,
                FieldErrors::from_error(&e),
                status,
            )
            .await
        }
    }
}

#[derive(Template)]
#[template(path = "sftp_account.html")]
struct AccountPage {
    nav: Nav,
    row: AccountRow,
    keys_text: String,
    message: Option<String>,
    notice: Option<&'static str>,
}

async fn account_page(
    app: &AppState,
    user: &SessionUser,
    headers: &HeaderMap,
    id: &str,
    message: Option<String>,
    notice: Option<&'static str>,
    status: StatusCode,
) -> Result<Response, WebError> {
    let account = service::get(app, &user.principal, id).await?;
    Ok(page(
        status,
        &AccountPage {
            nav: Nav::of(user, "/sftp").at(format!("/sftp/{id}")),
            keys_text: account.public_keys.join("\n"),
            row: row(app, headers, account),
            message,
            notice,
        },
    ))
}

/// `GET /sftp/{id}`.
pub async fn show(
    State(app): State<AppState>,
    Panel(user): Panel,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    account_page(&app, &user, &headers, &id, None, None, StatusCode::OK).await
}

/// Applies a change and shows the account again, with the outcome.
async fn change(
    app: &AppState,
    user: &SessionUser,
    headers: &HeaderMap,
    id: &str,
    req: UpdateSftpAccount,
    done: &'static str,
) -> Result<Response, WebError> {
    match service::update(app, &user.principal, id, req).await {
        Ok(a) => {
            let r = account_page(app, user, headers, id, None, Some(done), StatusCode::OK).await?;
            Ok(with_note(
                r,
                AuditNote {
                    target: Some(a.id.clone()),
                    tenant_id: Some(a.tenant_id.clone()),
                    actor: None,
                },
            ))
        }
        Err(e @ (AppError::NotFound { .. } | AppError::Internal(_))) => Err(WebError(e)),
        Err(e) => {
            let status = e.status();
            account_page(app, user, headers, id, Some(describe(&e).1), None, status).await
        }
    }
}

/// `POST /sftp/{id}/password`: sets a new password, or removes it.
pub async fn set_password(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let remove = fields.checked("remove_password");
    let req = UpdateSftpAccount {
        password: if remove {
            None
        } else {
            Some(fields.get("password").to_string())
        },
        remove_password: remove,
        public_keys: None,
        enabled: None,
    };
    let done = if remove {
        "The password was removed: only keys log in now."
    } else {
        "The new password works from the next login."
    };
    change(&app, &user, &headers, &id, req, done).await
}

/// `POST /sftp/{id}/keys`: replaces the account's public keys.
pub async fn set_keys(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let req = UpdateSftpAccount {
        password: None,
        remove_password: false,
        public_keys: Some(keys_of(fields.get("public_keys"))),
        enabled: None,
    };
    change(&app, &user, &headers, &id, req, "The keys were saved.").await
}

/// `POST /sftp/{id}/enabled`: enables or disables logins (disabling ends open sessions).
pub async fn set_enabled(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let enabled = fields.get("enabled") == "true";
    let req = UpdateSftpAccount {
        password: None,
        remove_password: false,
        public_keys: None,
        enabled: Some(enabled),
    };
    let done = if enabled {
        "The account is enabled."
    } else {
        "The account is disabled; its open sessions were ended."
    };
    change(&app, &user, &headers, &id, req, done).await
}

/// `POST /sftp/{id}/delete`: deletes the account and its files.
pub async fn delete(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let account = service::get(&app, &user.principal, &id).await?;
    if fields.get("confirm").trim() != account.username {
        let message = format!(
            "Nothing was deleted: type the account's name, {}, to confirm.",
            account.username
        );
        return account_page(
            &app,
            &user,
            &headers,
            &id,
            Some(message),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    service::delete(&app, &user.principal, &id, false).await?;
    Ok(with_note(
        Redirect::to("/sftp").into_response(),
        AuditNote {
            target: Some(account.id.clone()),
            tenant_id: Some(account.tenant_id.clone()),
            actor: None,
        },
    ))
}
