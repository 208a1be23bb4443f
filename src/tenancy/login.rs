//! Password logins (the panel, `POST /tokens` and password changes), throttled per account and
//! per client address in the database. Each attempt is counted before its password is
//! checked, so a concurrent burst cannot slip past the limit; an unknown email costs as much
//! as a wrong password; a full check queue turns logins away at once.

use std::net::IpAddr;

use chrono::Duration;

use crate::app::App;
use crate::auth::{HashQueueFull, QueuedCheck};
use crate::config::AuthConfig;
use crate::db::users::UserRow;
use crate::db::{self, Db};
use crate::error::AppError;

/// Longest email accepted anywhere (RFC 5321's path limit), in bytes.
pub const MAX_EMAIL: usize = 254;

/// The throttling keys of one attempt.
fn keys(email: &str, client: Option<IpAddr>) -> (String, Option<String>) {
    (
        format!("account:{}", email.trim().to_lowercase()),
        client.map(|c| format!("client:{c}")),
    )
}

/// Refuses an email longer than any address can be, before anything is written.
pub fn check_email_length(email: &str) -> Result<(), AppError> {
    if email.len() > MAX_EMAIL {
        return Err(AppError::invalid(
            "email",
            format!(
                "is {} bytes long; an email address has at most {MAX_EMAIL}",
                email.len()
            ),
        ));
    }
    Ok(())
}

/// The answer when the password-check queue is full.
impl From<HashQueueFull> for AppError {
    fn from(e: HashQueueFull) -> Self {
        AppError::TooManyRequests {
            detail: e.to_string(),
            retry_after_secs: 1,
        }
    }
}

/// One counted login attempt: its keys, and the place in the check queue it holds.
pub struct Attempt<'a> {
    db: &'a Db,
    account_key: String,
    client_key: Option<String>,
    check: QueuedCheck<'a>,
}

impl<'a> Attempt<'a> {
    /// Takes a place in the check queue and counts the attempt against the account and the
    /// client address; 429 when either has used up its failures.
    pub async fn start(
        app: &'a App,
        account_key: String,
        client: Option<IpAddr>,
    ) -> Result<Attempt<'a>, AppError> {
        Self::start_with(&app.db, &app.config.auth, &app.hasher, account_key, client).await
    }

    /// [`Attempt::start`] with its parts (the SFTP server has no `App`).
    pub async fn start_with(
        db: &'a Db,
        cfg: &AuthConfig,
        hasher: &'a crate::auth::PasswordHasher,
        account_key: String,
        client: Option<IpAddr>,
    ) -> Result<Attempt<'a>, AppError> {
        let check = hasher.reserve()?;
        let client_key = client.map(|c| format!("client:{c}"));
        let wait = count(db, cfg, &account_key, client_key.as_deref()).await?;
        if let Some(secs) = wait {
            return Err(AppError::TooManyRequests {
                detail: format!("too many failed logins; try again in {secs} s"),
                retry_after_secs: secs,
            });
        }
        Ok(Attempt {
            db,
            account_key,
            client_key,
            check,
        })
    }

    /// Checks the password; on success the attempt is taken back (the account's count is
    /// cleared), on failure it stays counted.
    pub async fn verify(self, hash: Option<String>, password: String) -> Result<bool, AppError> {
        let ok = self.check.verify(hash, password).await;
        if ok {
            db::login_failures::clear(self.db, &self.account_key).await?;
            if let Some(key) = &self.client_key {
                db::login_failures::forgive(self.db, key).await?;
            }
        }
        Ok(ok)
    }
}

/// Counts an attempt for the account and the client; the seconds to wait if either is over
/// (the attempt is then not counted).
pub async fn count(
    db: &Db,
    cfg: &AuthConfig,
    account_key: &str,
    client_key: Option<&str>,
) -> Result<Option<u64>, sqlx::Error> {
    // A refused attempt counts against neither key.
    let window = Duration::seconds(cfg.window_secs as i64);
    let wait =
        db::login_failures::attempt(db, account_key, cfg.max_failures_per_account, window).await?;
    if wait.is_some() {
        return Ok(wait);
    }
    if let Some(key) = client_key {
        let client =
            db::login_failures::attempt(db, key, cfg.max_failures_per_client, window).await?;
        if client.is_some() {
            db::login_failures::forgive(db, account_key).await?;
            return Ok(client);
        }
    }
    Ok(None)
}

/// Checks an email and password; on success the user (whose tenant is not suspended).
pub async fn authenticate(
    app: &App,
    email: &str,
    password: String,
    client: Option<IpAddr>,
) -> Result<UserRow, AppError> {
    check_email_length(email)?;
    let (account_key, _) = keys(email, client);
    let attempt = Attempt::start(app, account_key, client).await?;
    let user = db::users::find_by_email(&app.db, email.trim()).await?;
    let ok = attempt
        .verify(user.as_ref().map(|u| u.password_hash.clone()), password)
        .await?;
    let user = match (ok, user) {
        (true, Some(user)) => user,
        _ => {
            return Err(AppError::Unauthorized(
                "the email or password is wrong".into(),
            ));
        }
    };
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

/// Checks a logged-in user's current password (before a change), throttled like a login.
pub async fn check_current_password(
    app: &App,
    user: &UserRow,
    password: String,
    client: Option<IpAddr>,
) -> Result<bool, AppError> {
    let (account_key, _) = keys(&user.email, client);
    Attempt::start(app, account_key, client)
        .await?
        .verify(Some(user.password_hash.clone()), password)
        .await
}
