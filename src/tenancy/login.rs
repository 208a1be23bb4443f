//! Password logins (the panel and `POST /tokens`), throttled per account and per client
//! address in the database. An unknown email costs as much as a wrong password.

use std::net::IpAddr;

use chrono::Duration;

use crate::app::App;
use crate::db::users::UserRow;
use crate::db::{self};
use crate::error::AppError;

/// The throttling keys of one attempt.
fn keys(email: &str, client: Option<IpAddr>) -> (String, Option<String>) {
    (
        format!("account:{}", email.trim().to_lowercase()),
        client.map(|c| format!("client:{c}")),
    )
}

/// Checks an email and password; on success the user (whose tenant is not suspended).
pub async fn authenticate(
    app: &App,
    email: &str,
    password: String,
    client: Option<IpAddr>,
) -> Result<UserRow, AppError> {
    let cfg = &app.config.auth;
    let window = Duration::seconds(cfg.window_secs as i64);
    let (account_key, client_key) = keys(email, client);
    let mut wait = db::login_failures::retry_after(
        &app.db,
        &account_key,
        cfg.max_failures_per_account,
        window,
    )
    .await?;
    if let Some(key) = &client_key {
        let client_wait =
            db::login_failures::retry_after(&app.db, key, cfg.max_failures_per_client, window)
                .await?;
        wait = wait.max(client_wait);
    }
    if let Some(secs) = wait {
        return Err(AppError::TooManyRequests {
            detail: format!("too many failed logins; try again in {secs} s"),
            retry_after_secs: secs,
        });
    }
    let user = db::users::find_by_email(&app.db, email.trim()).await?;
    let ok = app
        .hasher
        .verify(user.as_ref().map(|u| u.password_hash.clone()), password)
        .await;
    let user = match (ok, user) {
        (true, Some(user)) => user,
        _ => {
            db::login_failures::record(&app.db, &account_key, window).await?;
            if let Some(key) = &client_key {
                db::login_failures::record(&app.db, key, window).await?;
            }
            return Err(AppError::Unauthorized(
                "the email or password is wrong".into(),
            ));
        }
    };
    db::login_failures::clear(&app.db, &account_key).await?;
    if let Some(tenant) = &user.tenant_id
        && db::tenants::get(&app.db, tenant)
            .await?
            .is_some_and(|t| t.suspended)
    {
        return Err(AppError::Forbidden(
            "your tenant is suspended; contact your provider".into(),
        ));
    }
    Ok(user)
}
