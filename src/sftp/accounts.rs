//! SFTP accounts: the service functions behind `/api/v1/sftp-accounts`, and usage rescans.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::quota::Ledger;
use crate::app::App;
use crate::auth::Principal;
use crate::db::sftp_accounts::SftpAccountRow;
use crate::db::{self, Db, Scope};
use crate::domain::Invalid;
use crate::domain::ids::{SftpAccountId, TenantId};
use crate::domain::ssh::{self, SshPublicKey};
use crate::error::AppError;
use crate::tenancy::accounts::check_password;

/// Whether a username is acceptable: 1-32 of `a-z 0-9 . _ -`, starting with a letter or `_`.
pub fn valid_username(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 32
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
}

/// Whether the account lists this public key.
pub fn key_allowed(account: &SftpAccountRow, key: &russh::keys::PublicKey) -> bool {
    account.public_keys().iter().any(|line| {
        russh::keys::PublicKey::from_openssh(line).is_ok_and(|k| k.key_data() == key.key_data())
    })
}

/// An SFTP account, without secrets.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SftpAccountView {
    pub id: String,
    pub tenant_id: String,
    pub username: String,
    pub public_keys: Vec<String>,
    pub has_password: bool,
    pub enabled: bool,
    /// Bytes stored (each file once, however many links).
    pub used_bytes: i64,
    /// Files, directories and links stored.
    pub used_files: i64,
    /// When usage was last counted from the disk.
    pub scanned_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<&SftpAccountRow> for SftpAccountView {
    fn from(a: &SftpAccountRow) -> Self {
        Self {
            id: a.id.to_string(),
            tenant_id: a.tenant_id.to_string(),
            username: a.username.clone(),
            public_keys: a.public_keys(),
            has_password: a.password_hash.is_some(),
            enabled: a.enabled,
            used_bytes: a.used_bytes,
            used_files: a.used_files,
            scanned_at: a.scanned_at,
            created_at: a.created_at,
        }
    }
}

/// A request to create an SFTP account.
#[derive(Debug, Clone)]
pub struct CreateSftpAccount {
    /// 1-32 of lowercase letters, digits, '.', '_', '-', starting with a letter or '_'.
    pub username: String,
    /// 10 to 1024 characters; stored only as an argon2id hash.
    pub password: Option<String>,
    /// OpenSSH public keys allowed to log in.
    pub public_keys: Vec<String>,
    pub enabled: bool,
    /// Owning tenant (admins only; a customer's accounts go to its tenant).
    pub tenant_id: Option<String>,
}

/// A change to an SFTP account; absent fields stay. Takes effect at the next login.
#[derive(Debug, Clone)]
pub struct UpdateSftpAccount {
    /// A new password (10 to 1024 characters).
    pub password: Option<String>,
    /// Remove the password, leaving key logins only.
    pub remove_password: bool,
    /// The full new list of public keys.
    pub public_keys: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

fn check_keys(keys: &[String], errors: &mut Vec<Invalid>) -> Vec<String> {
    if keys.len() > ssh::MAX_KEYS {
        errors.push(Invalid::new(
            "public_keys",
            format!("at most {} keys", ssh::MAX_KEYS),
        ));
    }
    keys.iter()
        .filter_map(|k| {
            SshPublicKey::parse(k)
                .map_err(|e| errors.push(Invalid::new("public_keys", e.message)))
                .ok()
        })
        .map(|k| k.as_str().to_string())
        .collect()
}

async fn load(db: &Db, actor: &Principal, id: &str) -> Result<SftpAccountRow, AppError> {
    let account_id =
        SftpAccountId::parse(id).ok_or_else(|| AppError::not_found("sftp account", id))?;
    db::sftp_accounts::get(db, &actor.scope(), &account_id)
        .await?
        .ok_or_else(|| AppError::not_found("sftp account", id))
}

/// One page of the accounts the actor may see.
pub async fn list(
    app: &App,
    actor: &Principal,
    page: &db::page::PageRequest,
) -> Result<db::page::Page<SftpAccountView>, AppError> {
    Ok(db::sftp_accounts::page(&app.db, &actor.scope(), page)
        .await?
        .map(|a| SftpAccountView::from(&a)))
}

/// One account.
pub async fn get(app: &App, actor: &Principal, id: &str) -> Result<SftpAccountView, AppError> {
    Ok(SftpAccountView::from(&load(&app.db, actor, id).await?))
}

/// Creates an account and its (empty) home.
pub async fn create(
    app: &App,
    actor: &Principal,
    req: CreateSftpAccount,
) -> Result<SftpAccountView, AppError> {
    let mut errors = Vec::new();
    if !valid_username(&req.username) {
        errors.push(Invalid::new(
            "username",
            "use 1 to 32 lowercase letters, digits, '.', '_' or '-', starting with a letter or '_'",
        ));
    }
    if let Some(p) = &req.password
        && let Err(e) = check_password("password", p)
    {
        errors.push(e);
    }
    let keys = check_keys(&req.public_keys, &mut errors);
    if req.password.is_none() && req.public_keys.is_empty() {
        errors.push(Invalid::new(
            "password",
            "give a password, public_keys, or both, so someone can log in",
        ));
    }
    let tenant = match (&req.tenant_id, actor.is_admin()) {
        (Some(_), false) => {
            errors.push(Invalid::new(
                "tenant_id",
                "only admins choose the tenant; leave tenant_id out",
            ));
            None
        }
        (Some(raw), true) => match TenantId::parse(raw) {
            Some(t) if db::tenants::get(&app.db, &t).await?.is_some() => Some(t),
            _ => {
                errors.push(Invalid::new(
                    "tenant_id",
                    format!("no tenant has id {raw:?}"),
                ));
                None
            }
        },
        (None, _) => Some(
            actor
                .tenant_id
                .clone()
                .unwrap_or_else(TenantId::default_tenant),
        ),
    };
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    let tenant = tenant.unwrap_or_else(TenantId::default_tenant);
    let hash = match req.password {
        Some(p) => Some(app.hasher.hash(p).await.map_err(anyhow::Error::from)?),
        None => None,
    };
    let id =
        match db::sftp_accounts::insert(&app.db, &tenant, &req.username, hash.as_deref(), &keys)
            .await
        {
            Ok(id) => id,
            Err(e) if db::is_unique_violation(&e) => {
                return Err(AppError::Conflict(format!(
                    "the SFTP username {} is taken; choose another",
                    req.username
                )));
            }
            Err(e) => return Err(e.into()),
        };
    if !req.enabled {
        db::sftp_accounts::update(&app.db, &id, hash.as_deref(), &keys, false).await?;
    }
    let home = super::home_of(&sftp_homes(app), &id);
    std::fs::create_dir_all(&home)
        .map_err(|e| anyhow::anyhow!("creating the home {}: {e}", home.display()))?;
    get(app, actor, id.as_str()).await
}

/// Where SFTP homes live.
pub fn sftp_homes(app: &App) -> PathBuf {
    std::path::absolute(app.config.sftp_root()).unwrap_or_else(|_| app.config.sftp_root())
}

/// Changes the password, keys or enabled flag; takes effect at the next login.
pub async fn update(
    app: &App,
    actor: &Principal,
    id: &str,
    req: UpdateSftpAccount,
) -> Result<SftpAccountView, AppError> {
    let account = load(&app.db, actor, id).await?;
    let mut errors = Vec::new();
    if let Some(p) = &req.password
        && let Err(e) = check_password("password", p)
    {
        errors.push(e);
    }
    if req.password.is_some() && req.remove_password {
        errors.push(Invalid::new(
            "remove_password",
            "send either password or remove_password, not both",
        ));
    }
    let keys = match &req.public_keys {
        Some(k) => check_keys(k, &mut errors),
        None => account.public_keys(),
    };
    let hash = match (&req.password, req.remove_password) {
        (Some(p), _) if errors.is_empty() => Some(
            app.hasher
                .hash(p.clone())
                .await
                .map_err(anyhow::Error::from)?,
        ),
        (_, true) => None,
        _ => account.password_hash.clone(),
    };
    if hash.is_none() && keys.is_empty() {
        errors.push(Invalid::new(
            "public_keys",
            "the account would have neither a password nor a key",
        ));
    }
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    db::sftp_accounts::update(
        &app.db,
        &account.id,
        hash.as_deref(),
        &keys,
        req.enabled.unwrap_or(account.enabled),
    )
    .await?;
    get(app, actor, id).await
}

/// Deletes an account; its files are removed, or with `keep_files` (admins only) moved aside
/// to `<data_dir>/sftp-deleted/<username>-<time>` (they then no longer count against the quota).
pub async fn delete(
    app: &App,
    actor: &Principal,
    id: &str,
    keep_files: bool,
) -> Result<(), AppError> {
    let account = load(&app.db, actor, id).await?;
    if keep_files && !actor.is_admin() {
        // Kept files leave the tenant's quota but stay on the disk VMs and the database
        // share: only an admin may set them aside.
        return Err(AppError::Forbidden(
            "only an admin can keep a deleted account's files; download what you need, then delete without keep_files".into(),
        ));
    }
    db::sftp_accounts::delete(&app.db, &account.id).await?;
    app.sftp_ledger.forget(&account.tenant_id, &account.id);
    let home = super::home_of(&sftp_homes(app), &account.id);
    let result = if keep_files {
        let kept = app.config.data_dir.join("sftp-deleted");
        std::fs::create_dir_all(&kept).and_then(|_| {
            std::fs::rename(
                &home,
                kept.join(format!(
                    "{}-{}",
                    account.username,
                    Utc::now().format("%Y%m%dT%H%M%S")
                )),
            )
        })
    } else {
        std::fs::remove_dir_all(&home)
    };
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(anyhow::anyhow!(
            "the account is deleted but its files at {} could not be moved or removed: {e}",
            home.display()
        )
        .into()),
        _ => Ok(()),
    }
}

/// Recounts usage from disk for every account (of one tenant, if given) and records it.
pub async fn rescan(
    db: &Db,
    homes: &Path,
    ledger: &Ledger,
    tenant: Option<&TenantId>,
) -> anyhow::Result<usize> {
    let scope = match tenant {
        Some(t) => Scope::Tenant(t.clone()),
        None => Scope::All,
    };
    // Charges made so far go to the database first, so the scan replaces them, not adds.
    // A write during the scan may be counted twice (never too little); a deletion another
    // process has not flushed yet may be counted off twice until the next rescan.
    ledger.flush().await;
    let accounts = db::sftp_accounts::list(db, &scope).await?;
    for account in &accounts {
        let home = super::home_of(homes, &account.id);
        let (bytes, files) = tokio::task::spawn_blocking(move || super::quota::scan(&home)).await?;
        db::sftp_accounts::set_usage(db, &account.id, bytes, files, true).await?;
    }
    Ok(accounts.len())
}

/// Recounts usage from disk (admins), then answers the first page of accounts.
pub async fn rescan_now(
    app: &App,
    actor: &Principal,
) -> Result<db::page::Page<SftpAccountView>, AppError> {
    actor.require_admin()?;
    rescan(&app.db, &sftp_homes(app), &app.sftp_ledger, None).await?;
    list(app, actor, &db::page::PageRequest::default()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_checked() {
        for ok in ["alice", "_svc", "web.deploy-1", &"a".repeat(32)] {
            assert!(valid_username(ok), "{ok}");
        }
        for bad in [
            "",
            "Alice",
            "1abc",
            "a/b",
            "..",
            "a b",
            "a\0",
            &"a".repeat(33),
            "é",
        ] {
            assert!(!valid_username(bad), "{bad}");
        }
    }
}
