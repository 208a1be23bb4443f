//! The sftp_accounts table.

use chrono::{DateTime, Utc};

use super::page::{Page, PageRequest};
use super::{Db, Scope, now};
use crate::domain::ids::{SftpAccountId, TenantId};

/// An SFTP account row (with the password hash: never serialise it).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SftpAccountRow {
    pub id: SftpAccountId,
    pub tenant_id: TenantId,
    pub username: String,
    pub password_hash: Option<String>,
    pub public_keys: String,
    pub enabled: bool,
    pub used_bytes: i64,
    pub used_files: i64,
    pub scanned_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl SftpAccountRow {
    /// The authorised public keys, one OpenSSH line each.
    pub fn public_keys(&self) -> Vec<String> {
        serde_json::from_str(&self.public_keys).unwrap_or_default()
    }
}

/// The columns every query of this table reads.
macro_rules! sftp_columns {
    () => {
        "id, tenant_id, username, password_hash, public_keys, enabled, used_bytes, used_files, \
         scanned_at, created_at, updated_at"
    };
}

/// Inserts an account; the username must be unused.
pub async fn insert(
    db: &Db,
    tenant: &TenantId,
    username: &str,
    password_hash: Option<&str>,
    public_keys: &[String],
) -> Result<SftpAccountId, sqlx::Error> {
    crate::on_db!(db, db => {
        let id = SftpAccountId::generate();
        let at = now();
        sqlx::query(
            "INSERT INTO sftp_accounts (id, tenant_id, username, password_hash, public_keys, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(&id)
        .bind(tenant)
        .bind(username)
        .bind(password_hash)
        .bind(serde_json::to_string(public_keys).unwrap_or_else(|_| "[]".into()))
        .bind(at)
        .execute(db)
        .await?;
        Ok(id)
    })
}

/// The account with this id, if the scope may see it.
pub async fn get(
    db: &Db,
    scope: &Scope,
    id: &SftpAccountId,
) -> Result<Option<SftpAccountRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(concat!(
            "SELECT ",
            sftp_columns!(),
            " FROM sftp_accounts WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)"
        ))
        .bind(id)
        .bind(scope.tenant())
        .fetch_optional(db)
        .await
    })
}

/// The account with this username (logins).
pub async fn find_by_username(
    db: &Db,
    username: &str,
) -> Result<Option<SftpAccountRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(concat!(
            "SELECT ",
            sftp_columns!(),
            " FROM sftp_accounts WHERE username = $1"
        ))
        .bind(username)
        .fetch_optional(db)
        .await
    })
}

/// Of `ids`, the accounts that may still log in: present, enabled, tenant not suspended.
pub async fn usable_among(
    db: &Db,
    ids: &[SftpAccountId],
) -> Result<Vec<SftpAccountId>, sqlx::Error> {
    crate::on_db!(db, db, pg => {
        let list = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
        sqlx::query_scalar(&super::dialect(pg, "SELECT a.id FROM sftp_accounts a JOIN tenants t ON t.id = a.tenant_id
             WHERE a.enabled AND NOT t.suspended AND a.id IN (SELECT value FROM json_each($1))"))
        .bind(list)
        .fetch_all(db)
        .await
    })
}

/// One page of the accounts the scope may see, by username.
pub async fn page(
    db: &Db,
    scope: &Scope,
    page: &PageRequest,
) -> Result<Page<SftpAccountRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        let rows = sqlx::query_as(concat!(
            "SELECT ",
            sftp_columns!(),
            " FROM sftp_accounts WHERE ($1 IS NULL OR tenant_id = $1) AND ($2 IS NULL OR username > $2)
              ORDER BY username LIMIT $3"
        ))
        .bind(scope.tenant())
        .bind(page.key(0))
        .bind(page.fetch())
        .fetch_all(db)
        .await?;
        Ok(page.finish(rows, |a: &SftpAccountRow| vec![a.username.clone()]))
    })
}

/// The accounts the scope may see, by username.
pub async fn list(
    db: impl Into<super::Ex<'_>>,
    scope: &Scope,
) -> Result<Vec<SftpAccountRow>, sqlx::Error> {
    crate::on_ex!(db, db => {
        sqlx::query_as(concat!(
            "SELECT ",
            sftp_columns!(),
            " FROM sftp_accounts WHERE ($1 IS NULL OR tenant_id = $1) ORDER BY username"
        ))
        .bind(scope.tenant())
        .fetch_all(db)
        .await
    })
}

/// Changes the password hash, keys and enabled flag.
pub async fn update(
    db: &Db,
    id: &SftpAccountId,
    password_hash: Option<&str>,
    public_keys: &[String],
    enabled: bool,
) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query(
            "UPDATE sftp_accounts SET password_hash = $2, public_keys = $3, enabled = $4, updated_at = $5 WHERE id = $1",
        )
        .bind(id)
        .bind(password_hash)
        .bind(serde_json::to_string(public_keys).unwrap_or_else(|_| "[]".into()))
        .bind(enabled)
        .bind(now())
        .execute(db)
        .await?;
        Ok(())
    })
}

/// Records an account's usage; `scanned` when it comes from a scan of the disk.
pub async fn set_usage(
    db: &Db,
    id: &SftpAccountId,
    bytes: i64,
    files: i64,
    scanned: bool,
) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query(
            "UPDATE sftp_accounts SET used_bytes = $2, used_files = $3,
                scanned_at = CASE WHEN $4 THEN $5 ELSE scanned_at END WHERE id = $1",
        )
        .bind(id)
        .bind(bytes)
        .bind(files)
        .bind(scanned)
        .bind(now())
        .execute(db)
        .await?;
        Ok(())
    })
}

/// Adds flushed charges (negative: releases) to an account's usage, never below zero.
pub async fn add_usage(
    conn: impl Into<super::Ex<'_>>,
    id: &SftpAccountId,
    bytes: i64,
    files: i64,
) -> Result<(), sqlx::Error> {
    crate::on_ex!(conn, conn => {
        sqlx::query(
            "UPDATE sftp_accounts SET used_bytes = CASE WHEN used_bytes + $2 > 0 THEN used_bytes + $2 ELSE 0 END,
                used_files = CASE WHEN used_files + $3 > 0 THEN used_files + $3 ELSE 0 END WHERE id = $1",
        )
        .bind(id)
        .bind(bytes)
        .bind(files)
        .execute(conn)
        .await?;
        Ok(())
    })
}

/// Deletes an account.
pub async fn delete(db: &Db, id: &SftpAccountId) -> Result<bool, sqlx::Error> {
    crate::on_db!(db, db => {
        let done = sqlx::query("DELETE FROM sftp_accounts WHERE id = $1")
            .bind(id)
            .execute(db)
            .await?;
        Ok(done.rows_affected() == 1)
    })
}

/// A tenant's SFTP usage: bytes and files summed over its accounts.
pub async fn tenant_usage(
    conn: impl Into<super::Ex<'_>>,
    tenant: &TenantId,
) -> Result<(i64, i64), sqlx::Error> {
    crate::on_ex!(conn, conn => {
        sqlx::query_as("SELECT CAST(COALESCE(SUM(used_bytes), 0) AS BIGINT), CAST(COALESCE(SUM(used_files), 0) AS BIGINT) FROM sftp_accounts WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(conn)
            .await
    })
}
