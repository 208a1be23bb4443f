//! The api_tokens table: only SHA-256 digests of tokens are stored.

use chrono::{DateTime, Utc};

use super::page::{Page, PageRequest, time_key};
use super::{Db, now};
use crate::domain::ids::{TenantId, TokenId, UserId};

/// Who a valid token belongs to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenOwner {
    pub token_id: TokenId,
    pub user_id: UserId,
    pub email: String,
    pub role: crate::domain::role::Role,
    pub tenant_id: Option<TenantId>,
    /// Whether the user's tenant is suspended.
    pub suspended: bool,
    /// Version of the data the user may see (see migration 0003).
    pub view_version: i64,
    /// When the token was last used (recorded at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A token's public facts.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    pub id: TokenId,
    pub user_id: UserId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Stores a token's digest.
pub async fn insert(
    db: &Db,
    user_id: &UserId,
    name: &str,
    digest: &[u8],
    expires_at: Option<DateTime<Utc>>,
) -> Result<TokenRow, sqlx::Error> {
    crate::on_db!(db, db => {
        let row = TokenRow {
            id: TokenId::generate(),
            user_id: user_id.clone(),
            name: name.into(),
            created_at: now(),
            expires_at,
            last_used_at: None,
        };
        sqlx::query(
            "INSERT INTO api_tokens (id, user_id, name, token_hash, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&row.id)
        .bind(user_id)
        .bind(name)
        .bind(digest)
        .bind(row.created_at)
        .bind(expires_at)
        .execute(db)
        .await?;
        Ok(row)
    })
}

/// The owner of the unexpired token with this digest.
pub async fn find_owner(db: &Db, digest: &[u8]) -> Result<Option<TokenOwner>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(
            "SELECT t.id AS token_id, u.id AS user_id, u.email, u.role, u.tenant_id,
                COALESCE(tn.suspended, FALSE) AS suspended, COALESCE(vv.version, 0) AS view_version,
                t.last_used_at
         FROM api_tokens t JOIN users u ON u.id = t.user_id LEFT JOIN tenants tn ON tn.id = u.tenant_id
         LEFT JOIN view_versions vv
            ON vv.scope = CASE WHEN u.role = 'admin' THEN '*' ELSE COALESCE(u.tenant_id, '') END
         WHERE t.token_hash = $1 AND (t.expires_at IS NULL OR t.expires_at > $2)",
        )
        .bind(digest)
        .bind(now())
        .fetch_optional(db)
        .await
    })
}

/// One page of the tokens of one user (or everyone's), newest first.
pub async fn page(
    db: &Db,
    user: Option<&UserId>,
    page: &PageRequest,
) -> Result<Page<TokenRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        let rows = sqlx::query_as(
            "SELECT id, user_id, name, created_at, expires_at, last_used_at FROM api_tokens
         WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR (created_at, id) < ($2, $3))
         ORDER BY created_at DESC, id DESC LIMIT $4",
        )
        .bind(user)
        .bind(page.time(0))
        .bind(page.key(1))
        .bind(page.fetch())
        .fetch_all(db)
        .await?;
        Ok(page.finish(rows, |t: &TokenRow| {
            vec![time_key(&t.created_at), t.id.to_string()]
        }))
    })
}

/// Deletes a token of one user (or anyone's when `user` is None); false if there is none.
pub async fn delete(db: &Db, id: &TokenId, user: Option<&UserId>) -> Result<bool, sqlx::Error> {
    crate::on_db!(db, db => {
        let done = sqlx::query("DELETE FROM api_tokens WHERE id = $1 AND ($2 IS NULL OR user_id = $2)")
            .bind(id)
            .bind(user)
            .execute(db)
            .await?;
        Ok(done.rows_affected() == 1)
    })
}

/// Records that a token was used now.
pub async fn touch(db: &Db, id: &TokenId) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query("UPDATE api_tokens SET last_used_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now())
            .execute(db)
            .await?;
        Ok(())
    })
}
