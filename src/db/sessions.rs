//! The sessions table: browser sessions, keyed by a SHA-256 digest of the cookie.

use chrono::{DateTime, Utc};

use super::{Db, now};
use crate::domain::ids::{TenantId, UserId};

/// A live session and its user.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionOwner {
    pub user_id: UserId,
    pub email: String,
    pub role: crate::domain::role::Role,
    pub tenant_id: Option<TenantId>,
    pub suspended: bool,
    /// Version of the data the user may see (see migration 0003).
    pub view_version: i64,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

/// Records a session.
pub async fn insert(
    db: &Db,
    digest: &[u8],
    user: &UserId,
    csrf: &str,
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query("INSERT INTO sessions (id_hash, user_id, csrf_token, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(digest)
            .bind(user)
            .bind(csrf)
            .bind(now())
            .bind(expires_at)
            .execute(db)
            .await?;
        Ok(())
    })
}

/// The unexpired session with this digest.
pub async fn find(db: &Db, digest: &[u8]) -> Result<Option<SessionOwner>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(
            "SELECT u.id AS user_id, u.email, u.role, u.tenant_id, COALESCE(tn.suspended, FALSE) AS suspended,
                COALESCE(vv.version, 0) AS view_version, s.csrf_token, s.expires_at
         FROM sessions s JOIN users u ON u.id = s.user_id LEFT JOIN tenants tn ON tn.id = u.tenant_id
         LEFT JOIN view_versions vv
            ON vv.scope = CASE WHEN u.role = 'admin' THEN '*' ELSE COALESCE(u.tenant_id, '') END
         WHERE s.id_hash = $1 AND s.expires_at > $2",
        )
        .bind(digest)
        .bind(now())
        .fetch_optional(db)
        .await
    })
}

/// Ends a session.
pub async fn delete(db: &Db, digest: &[u8]) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(digest)
            .execute(db)
            .await?;
        Ok(())
    })
}

/// Removes expired sessions and expired tokens.
pub async fn purge_expired(db: &Db) -> Result<u64, sqlx::Error> {
    crate::on_db!(db, db => {
        let at = now();
        let a = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(at)
            .execute(db)
            .await?;
        let b = sqlx::query("DELETE FROM api_tokens WHERE expires_at IS NOT NULL AND expires_at <= $1")
            .bind(at)
            .execute(db)
            .await?;
        Ok(a.rows_affected() + b.rows_affected())
    })
}

/// Ends every browser session of a user; returns how many.
pub async fn delete_for_user(db: &Db, user: &UserId) -> Result<u64, sqlx::Error> {
    crate::on_db!(db, db => {
        let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user)
            .execute(db)
            .await?;
        Ok(done.rows_affected())
    })
}

/// Ends every browser session of a tenant's users; returns how many.
pub async fn delete_for_tenant(db: &Db, tenant: &TenantId) -> Result<u64, sqlx::Error> {
    crate::on_db!(db, db => {
        let done = sqlx::query(
            "DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE tenant_id = $1)",
        )
        .bind(tenant)
        .execute(db)
        .await?;
        Ok(done.rows_affected())
    })
}
