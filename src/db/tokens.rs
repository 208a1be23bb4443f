//! The api_tokens table: only SHA-256 digests of tokens are stored.

use chrono::{DateTime, Utc};

use super::{Db, now};
use crate::domain::ids::{TenantId, TokenId, UserId};

/// Who a valid token belongs to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenOwner {
    pub token_id: TokenId,
    pub user_id: UserId,
    pub email: String,
    pub role: String,
    pub tenant_id: Option<TenantId>,
}

/// Stores a token's digest.
pub async fn insert(
    db: &Db,
    user_id: &UserId,
    name: &str,
    digest: &[u8],
    expires_at: Option<DateTime<Utc>>,
) -> Result<TokenId, sqlx::Error> {
    let id = TokenId::generate();
    sqlx::query(
        "INSERT INTO api_tokens (id, user_id, name, token_hash, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .bind(&id)
    .bind(user_id)
    .bind(name)
    .bind(digest)
    .bind(now())
    .bind(expires_at)
    .execute(db)
    .await?;
    Ok(id)
}

/// The owner of the unexpired token with this digest.
pub async fn find_owner(db: &Db, digest: &[u8]) -> Result<Option<TokenOwner>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.id AS token_id, u.id AS user_id, u.email, u.role, u.tenant_id
         FROM api_tokens t JOIN users u ON u.id = t.user_id
         WHERE t.token_hash = ?1 AND (t.expires_at IS NULL OR t.expires_at > ?2)",
    )
    .bind(digest)
    .bind(now())
    .fetch_optional(db)
    .await
}
